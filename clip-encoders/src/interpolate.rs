//! `torch.nn.functional.interpolate(mode="bicubic", antialias=False)` on CPU, exactly as
//! PyTorch computes it (`aten/src/ATen/native/cpu/UpSampleKernel.cpp`, `UpSample.h`):
//!
//! - source coordinate of output index `i`: `scale · i` with `align_corners=True`
//!   (`scale = (in − 1)/(out − 1)`, 0 for `out = 1`), else `scale · (i + ½) − ½` with
//!   `scale = in/out`; all in f32;
//! - `x₀ = min(⌊src⌋, in − 1)`, `t = clamp(src − x₀, 0, 1)`;
//! - Keys' cubic convolution with `A = −0.75` on the taps `x₀−1 … x₀+2`, clamped to the edge;
//! - the four row sums over width first, then the weighted sum over height, in f32.

use candle_core::{DType, Tensor};
use vidgen_video_core::{Error, Result};

const A: f32 = -0.75;

fn cubic1(x: f32) -> f32 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

fn cubic2(x: f32) -> f32 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

/// The four taps (clamped indices) and weights of each output index along one axis.
pub(crate) fn axis_taps(
    input: usize,
    output: usize,
    align_corners: bool,
) -> Vec<([usize; 4], [f32; 4])> {
    let scale: f32 = if align_corners {
        if output > 1 {
            (input - 1) as f32 / (output - 1) as f32
        } else {
            0.0
        }
    } else {
        input as f32 / output as f32
    };
    let last = input as i64 - 1;
    (0..output)
        .map(|i| {
            let src = if align_corners {
                scale * i as f32
            } else {
                scale * (i as f32 + 0.5) - 0.5
            };
            let x0 = (src.floor() as i64).min(last);
            let t = (src - x0 as f32).clamp(0.0, 1.0);
            let w = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
            let idx = [-1i64, 0, 1, 2].map(|o| (x0 + o).clamp(0, last) as usize);
            (idx, w)
        })
        .collect()
}

/// Bicubic interpolation of `planes` images `[planes, h, w]` (row-major f32) to `[planes, oh, ow]`.
pub(crate) fn bicubic_planes(
    src: &[f32],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    align_corners: bool,
) -> Vec<f32> {
    let ty = axis_taps(h, oh, align_corners);
    let tx = axis_taps(w, ow, align_corners);
    let mut out = vec![0f32; planes * oh * ow];
    for p in 0..planes {
        let img = &src[p * h * w..(p + 1) * h * w];
        let dst = &mut out[p * oh * ow..(p + 1) * oh * ow];
        for (oy, (iy, wy)) in ty.iter().enumerate() {
            for (ox, (ix, wx)) in tx.iter().enumerate() {
                let mut acc = 0f32;
                for k in 0..4 {
                    let row = &img[iy[k] * w..(iy[k] + 1) * w];
                    let mut r = row[ix[0]] * wx[0];
                    r += row[ix[1]] * wx[1];
                    r += row[ix[2]] * wx[2];
                    r += row[ix[3]] * wx[3];
                    if k == 0 {
                        acc = r * wy[0];
                    } else {
                        acc += r * wy[k];
                    }
                }
                dst[oy * ow + ox] = acc;
            }
        }
    }
    out
}

/// `F.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=…)` (no antialiasing), in f32
/// whatever the input dtype, returned in the input's dtype and device.
///
/// # Shapes
/// `x [B, C, H, W]` → `[B, C, oh, ow]`.
///
/// # Errors
/// A rank other than 4, an empty input or a zero output size ([`Error::InvalidArgument`]).
pub fn interpolate_bicubic(
    x: &Tensor,
    (oh, ow): (usize, usize),
    align_corners: bool,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4().map_err(|_| {
        Error::invalid(
            "interpolate input",
            format!("expected [B, C, H, W], found {:?}", x.dims()),
        )
    })?;
    if h == 0 || w == 0 || oh == 0 || ow == 0 {
        return Err(Error::invalid(
            "interpolate size",
            format!("input {h}×{w} and output {oh}×{ow} must be non-empty"),
        ));
    }
    let dt = x.dtype();
    let src = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let out = bicubic_planes(&src, b * c, (h, w), (oh, ow), align_corners);
    Ok(Tensor::from_vec(out, (b, c, oh, ow), x.device())?.to_dtype(dt)?)
}
