//! Motion-compensated reconstruction: predict a frame from a reference (a keyframe) and a
//! motion field, by block copy or by a bilinear warp; PSNR to measure the prediction.

use vidgen_video_core::{Error, Result};

use crate::field::{LumaFrame, MotionField};

fn check(reference: &LumaFrame, field: &MotionField) -> Result<()> {
    let bs = field.block_size;
    if bs == 0 || field.rows * bs != reference.height() || field.cols * bs != reference.width() {
        return Err(Error::invalid(
            "field",
            format!(
                "a {}x{} grid of {bs}-pixel blocks does not cover a {}x{} frame",
                field.cols,
                field.rows,
                reference.width(),
                reference.height()
            ),
        ));
    }
    if field.data.len() != 2 * field.rows * field.cols {
        return Err(Error::shape(
            "field.data",
            &[2, field.rows, field.cols],
            &[field.data.len()],
        ));
    }
    Ok(())
}

/// Bilinear sample of `f` at `(x, y)` with edge replication.
#[inline]
fn sample(f: &LumaFrame, x: f32, y: f32) -> f32 {
    let x0 = x.floor();
    let y0 = y.floor();
    let (ax, ay) = (x - x0, y - y0);
    let (xi, yi) = (x0 as isize, y0 as isize);
    let p = |dx: isize, dy: isize| f.clamped(xi + dx, yi + dy) as f32;
    (1.0 - ay) * ((1.0 - ax) * p(0, 0) + ax * p(1, 0)) + ay * ((1.0 - ax) * p(0, 1) + ax * p(1, 1))
}

/// Block-copy motion compensation, as a decoder does: each block of the prediction is the
/// reference at `(x − dx, y − dy)` (bilinear for fractional vectors, edge-replicated outside
/// the frame). Invalid blocks (intra, no vector) copy the co-located block.
///
/// # Shapes
/// `reference` `[H, W]`, `field` `[2, H / bs, W / bs]` → `[H, W]`.
///
/// # Errors
/// [`Error::InvalidArgument`] when the field's grid does not cover the frame.
pub fn compensate_blocks(reference: &LumaFrame, field: &MotionField) -> Result<LumaFrame> {
    check(reference, field)?;
    let (w, h, bs) = (reference.width(), reference.height(), field.block_size);
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let (r, c) = (y / bs, x / bs);
            let i = r * field.cols + c;
            let (dx, dy) = if field.valid[i] {
                field.get(r, c).unwrap_or((0.0, 0.0))
            } else {
                (0.0, 0.0)
            };
            let v = sample(reference, x as f32 - dx, y as f32 - dy);
            out[y * w + x] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    LumaFrame::new(w, h, out)
}

/// Dense per-pixel flow from a block field: the vectors sit at block centres and are
/// interpolated bilinearly between them (clamped at the borders).
fn dense_flow(field: &MotionField, w: usize, h: usize) -> Vec<(f32, f32)> {
    let bs = field.block_size as f32;
    let n = field.rows * field.cols;
    let at = |r: isize, c: isize| {
        let r = r.clamp(0, field.rows as isize - 1) as usize;
        let c = c.clamp(0, field.cols as isize - 1) as usize;
        let i = r * field.cols + c;
        if field.valid[i] {
            (field.data[i], field.data[n + i])
        } else {
            (0.0, 0.0)
        }
    };
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let gy = (y as f32 + 0.5) / bs - 0.5;
        let r0 = gy.floor();
        let ay = gy - r0;
        for x in 0..w {
            let gx = (x as f32 + 0.5) / bs - 0.5;
            let c0 = gx.floor();
            let ax = gx - c0;
            let (r, c) = (r0 as isize, c0 as isize);
            let (a, b, cc, d) = (at(r, c), at(r, c + 1), at(r + 1, c), at(r + 1, c + 1));
            let lerp = |p: f32, q: f32, s: f32, t: f32| {
                (1.0 - ay) * ((1.0 - ax) * p + ax * q) + ay * ((1.0 - ax) * s + ax * t)
            };
            out.push((lerp(a.0, b.0, cc.0, d.0), lerp(a.1, b.1, cc.1, d.1)));
        }
    }
    out
}

/// Bilinear warp: the field is interpolated to a smooth per-pixel flow (vectors at block
/// centres) and the reference is sampled bilinearly at `(x − dx, y − dy)`. Smoother than block
/// copy (no block edges), slightly blurrier on sharp motion boundaries.
///
/// # Shapes
/// `reference` `[H, W]`, `field` `[2, H / bs, W / bs]` → `[H, W]`.
///
/// # Errors
/// [`Error::InvalidArgument`] when the field's grid does not cover the frame.
pub fn warp_bilinear(reference: &LumaFrame, field: &MotionField) -> Result<LumaFrame> {
    check(reference, field)?;
    let (w, h) = (reference.width(), reference.height());
    let flow = dense_flow(field, w, h);
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = flow[y * w + x];
            out[y * w + x] = sample(reference, x as f32 - dx, y as f32 - dy)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    LumaFrame::new(w, h, out)
}

/// How a prediction is formed from a reference and a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compensation {
    /// [`compensate_blocks`].
    #[default]
    BlockCopy,
    /// [`warp_bilinear`].
    Bilinear,
}

/// The baseline motion detokenizer: starting from `keyframe`, apply `fields[0]`, then
/// `fields[1]` to that prediction, and so on (errors accumulate, as in an open-loop decoder).
/// Returns `fields.len()` predicted frames (the keyframe is not repeated).
///
/// # Errors
/// As [`compensate_blocks`] for any field that does not fit the keyframe.
pub fn reconstruct_from_keyframe(
    keyframe: &LumaFrame,
    fields: &[MotionField],
    mode: Compensation,
) -> Result<Vec<LumaFrame>> {
    let mut out: Vec<LumaFrame> = Vec::with_capacity(fields.len());
    let mut cur = keyframe.clone();
    for f in fields {
        cur = match mode {
            Compensation::BlockCopy => compensate_blocks(&cur, f)?,
            Compensation::Bilinear => warp_bilinear(&cur, f)?,
        };
        out.push(cur.clone());
    }
    Ok(out)
}

/// Peak signal-to-noise ratio of two 8-bit planes, dB (`10 log10(255² / MSE)`); infinite
/// for identical planes.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the sizes differ.
pub fn psnr(a: &LumaFrame, b: &LumaFrame) -> Result<f64> {
    if a.width() != b.width() || a.height() != b.height() {
        return Err(Error::shape(
            "b",
            &[a.height(), a.width()],
            &[b.height(), b.width()],
        ));
    }
    let se: u64 = a
        .data()
        .iter()
        .zip(b.data())
        .map(|(&x, &y)| {
            let d = x.abs_diff(y) as u64;
            d * d
        })
        .sum();
    if se == 0 {
        return Ok(f64::INFINITY);
    }
    let mse = se as f64 / a.data().len() as f64;
    Ok(10.0 * (255.0f64 * 255.0 / mse).log10())
}
