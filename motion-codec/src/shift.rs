//! Whole-frame translation: the single integer shift that best maps one RGB frame onto the
//! next. Block matching ([`crate::estimate_motion`]) needs blocks of 8–16 px with texture in
//! each; this estimator uses every pixel of the overlap at once, so it still works on tiny
//! frames (the 16×16 frames of the Vid-ICL miniature) and on flat-coloured objects, where it
//! is the automatic evaluator of "which way did the picture move".

use vidgen_video_core::{Error, Result};
use vidgen_video_io::Frame;

use crate::global::{direction_of, Direction};

/// Settings of [`frame_shift`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameShiftConfig {
    /// Largest shift searched in each axis, pixels (exhaustive search over
    /// `(2·max_shift + 1)²` shifts).
    pub max_shift: i32,
    /// A shift counts only when its cost is below `min_gain` × the cost of standing still
    /// (otherwise the frame is taken as not moving).
    pub min_gain: f64,
    /// The overlap of the shifted frames must cover at least this fraction of the frame, so a
    /// large shift cannot win on a sliver.
    pub min_overlap: f64,
}

impl Default for FrameShiftConfig {
    /// ±6 px, gain 0.5, overlap ≥ 1/4 of the frame.
    fn default() -> Self {
        Self {
            max_shift: 6,
            min_gain: 0.5,
            min_overlap: 0.25,
        }
    }
}

/// The shift `(sx, sy)` (pixels, `y` down: content at `(x, y)` in `a` is at `(x + sx, y + sy)`
/// in `b`) with `|sx|, |sy| ≤ max_shift` minimising the mean absolute RGB difference over the
/// overlap; `(0, 0)` when no shift is clearly better than standing still. Ties go to the
/// shorter shift (L1), then to the first in raster order of `(sy, sx)`.
///
/// # Errors
/// Frames of different sizes; a negative `max_shift`, a `min_overlap` outside `(0, 1]` or a
/// non-finite `min_gain`.
pub fn frame_shift(a: &Frame, b: &Frame, cfg: &FrameShiftConfig) -> Result<(i32, i32)> {
    if (a.width(), a.height()) != (b.width(), b.height()) {
        return Err(Error::shape(
            "frame_shift second frame",
            &[a.height() as usize, a.width() as usize, 3],
            &[b.height() as usize, b.width() as usize, 3],
        ));
    }
    if cfg.max_shift < 0 || !(cfg.min_overlap > 0.0 && cfg.min_overlap <= 1.0) {
        return Err(Error::invalid(
            "frame shift config",
            format!(
                "max_shift must be ≥ 0 and min_overlap in (0, 1], found {} and {}",
                cfg.max_shift, cfg.min_overlap
            ),
        ));
    }
    if !cfg.min_gain.is_finite() {
        return Err(Error::invalid("min_gain", "must be finite"));
    }
    let (w, h) = (a.width() as i64, a.height() as i64);
    let (da, db) = (a.data(), b.data());
    let min_px = cfg.min_overlap * (w * h) as f64;
    let cost = |sx: i64, sy: i64| -> Option<f64> {
        let (x0, x1) = (sx.max(0), (w + sx).min(w));
        let (y0, y1) = (sy.max(0), (h + sy).min(h));
        let n = (x1 - x0).max(0) * (y1 - y0).max(0);
        if n == 0 || (n as f64) < min_px {
            return None;
        }
        let mut s = 0u64;
        for y in y0..y1 {
            let rb = ((y * w + x0) * 3) as usize;
            let ra = (((y - sy) * w + (x0 - sx)) * 3) as usize;
            let len = ((x1 - x0) * 3) as usize;
            for (p, q) in da[ra..ra + len].iter().zip(&db[rb..rb + len]) {
                s += p.abs_diff(*q) as u64;
            }
        }
        Some(s as f64 / n as f64)
    };
    let still = cost(0, 0).unwrap_or(0.0);
    if still == 0.0 {
        return Ok((0, 0));
    }
    let m = cfg.max_shift as i64;
    let mut best = ((0i64, 0i64), still);
    for sy in -m..=m {
        for sx in -m..=m {
            if let Some(c) = cost(sx, sy) {
                let shorter =
                    c == best.1 && sx.abs() + sy.abs() < best.0 .0.abs() + best.0 .1.abs();
                if c < best.1 || shorter {
                    best = ((sx, sy), c);
                }
            }
        }
    }
    Ok(if best.1 < cfg.min_gain * still {
        (best.0 .0 as i32, best.0 .1 as i32)
    } else {
        (0, 0)
    })
}

/// The dominant 8-way direction of a run of frames: [`frame_shift`] of every consecutive pair,
/// summed, then [`direction_of`] the total. `None` when nothing moves (or fewer than two
/// frames).
///
/// # Errors
/// As [`frame_shift`].
pub fn sequence_direction(frames: &[&Frame], cfg: &FrameShiftConfig) -> Result<Option<Direction>> {
    let (mut sx, mut sy) = (0i32, 0i32);
    for pair in frames.windows(2) {
        let (x, y) = frame_shift(pair[0], pair[1], cfg)?;
        sx += x;
        sy += y;
    }
    Ok(direction_of(sx as f32, sy as f32))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A 24×20 frame of blobs, content shifted by `(sx, sy)`.
    fn frame(sx: i32, sy: i32) -> Frame {
        let (w, h) = (24u32, 20u32);
        let mut d = vec![0u8; (w * h * 3) as usize];
        for y in 0..h as i32 {
            for x in 0..w as i32 {
                let (u, v) = ((x - sx) as f32, (y - sy) as f32);
                let i = ((y as u32 * w + x as u32) * 3) as usize;
                d[i] = (128.0 + 90.0 * (0.5 * u).sin() * (0.4 * v).cos()) as u8;
                d[i + 1] = (128.0 + 80.0 * (0.3 * (u + v)).cos()) as u8;
                d[i + 2] = (128.0 + 70.0 * (0.7 * u - 0.2 * v).sin()) as u8;
            }
        }
        Frame::new(w, h, d).unwrap()
    }

    #[test]
    fn recovers_integer_shifts_and_all_eight_directions() {
        let cfg = FrameShiftConfig::default();
        let a = frame(0, 0);
        for d in Direction::ALL {
            let (dx, dy) = d.delta();
            for step in 1..=3 {
                let b = frame(dx * step, dy * step);
                assert_eq!(frame_shift(&a, &b, &cfg).unwrap(), (dx * step, dy * step));
            }
            let run = [frame(0, 0), frame(dx, dy), frame(2 * dx, 2 * dy)];
            let refs: Vec<&Frame> = run.iter().collect();
            assert_eq!(sequence_direction(&refs, &cfg).unwrap(), Some(d));
        }
        assert_eq!(frame_shift(&a, &a, &cfg).unwrap(), (0, 0));
        assert_eq!(sequence_direction(&[&a], &cfg).unwrap(), None);
    }

    #[test]
    fn rejects_bad_input() {
        let a = frame(0, 0);
        let small = Frame::new(4, 4, vec![0; 48]).unwrap();
        assert!(frame_shift(&a, &small, &FrameShiftConfig::default()).is_err());
        let bad = FrameShiftConfig {
            max_shift: -1,
            ..Default::default()
        };
        assert!(frame_shift(&a, &a, &bad).is_err());
        let bad = FrameShiftConfig {
            min_overlap: 0.0,
            ..Default::default()
        };
        assert!(frame_shift(&a, &a, &bad).is_err());
    }
}
