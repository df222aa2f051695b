//! Keyframe / shot detection from luma histograms or frame differences.

use vidgen_video_core::{Error, Result};

use crate::field::{FrameType, LumaFrame};

/// Which frame-difference measure detects a cut.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum ShotMetric {
    /// Half the L1 distance of the 64-bin luma histograms, in `[0, 1]` (robust to motion
    /// inside a shot, blind to cuts between shots with the same histogram).
    #[default]
    Histogram,
    /// Mean absolute luma difference per pixel divided by 255, in `[0, 1]` (sensitive to fast
    /// motion, sees every content change).
    Sad,
}

/// Settings of [`detect_keyframes`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShotConfig {
    /// The difference measure.
    pub metric: ShotMetric,
    /// A frame whose difference to the one before exceeds this starts a new shot.
    pub threshold: f32,
    /// Fewest frames between two keyframes (suppresses flashes that flag several cuts).
    pub min_gap: usize,
}

impl Default for ShotConfig {
    /// Histogram metric, threshold 0.4, at least 4 frames between keyframes.
    fn default() -> Self {
        Self {
            metric: ShotMetric::Histogram,
            threshold: 0.4,
            min_gap: 4,
        }
    }
}

fn histogram(f: &LumaFrame) -> [f32; 64] {
    let mut h = [0f32; 64];
    for &p in f.data() {
        h[(p >> 2) as usize] += 1.0;
    }
    let n = f.data().len().max(1) as f32;
    h.iter_mut().for_each(|v| *v /= n);
    h
}

/// The difference between consecutive frames under `metric`: `out[i]` compares frame `i` with
/// frame `i + 1`.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the frames differ in size.
pub fn frame_differences(frames: &[LumaFrame], metric: ShotMetric) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(frames.len().saturating_sub(1));
    for w in frames.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.width() != b.width() || a.height() != b.height() {
            return Err(Error::shape(
                "frame",
                &[a.height(), a.width()],
                &[b.height(), b.width()],
            ));
        }
        out.push(match metric {
            ShotMetric::Histogram => {
                let (ha, hb) = (histogram(a), histogram(b));
                0.5 * ha.iter().zip(&hb).map(|(x, y)| (x - y).abs()).sum::<f32>()
            }
            ShotMetric::Sad => {
                let s: u64 = a
                    .data()
                    .iter()
                    .zip(b.data())
                    .map(|(&x, &y)| x.abs_diff(y) as u64)
                    .sum();
                s as f32 / (a.data().len() as f32 * 255.0)
            }
        });
    }
    Ok(out)
}

/// Indices of the frames that start a shot: frame 0, and every frame whose difference to the
/// previous one exceeds the threshold (at least `min_gap` frames after the last keyframe).
///
/// # Errors
/// [`Error::InvalidArgument`] for zero frames; [`Error::ShapeMismatch`] for mixed sizes.
pub fn detect_keyframes(frames: &[LumaFrame], cfg: &ShotConfig) -> Result<Vec<usize>> {
    if frames.is_empty() {
        return Err(Error::invalid("frames", "zero frames: nothing to detect"));
    }
    let diffs = frame_differences(frames, cfg.metric)?;
    let mut keys = vec![0usize];
    for (i, d) in diffs.iter().enumerate() {
        let t = i + 1;
        if *d > cfg.threshold && keys.last().is_some_and(|&k| t - k >= cfg.min_gap.max(1)) {
            keys.push(t);
        }
    }
    Ok(keys)
}

/// Keyframes from coded frame types when a codec provides them (the I-frames), else from the
/// content ([`detect_keyframes`]).
///
/// # Errors
/// As [`detect_keyframes`]; [`Error::ShapeMismatch`] when `types` and `frames` differ in length.
pub fn keyframes_from_types_or_content(
    frames: &[LumaFrame],
    types: Option<&[FrameType]>,
    cfg: &ShotConfig,
) -> Result<Vec<usize>> {
    match types {
        Some(t) => {
            if t.len() != frames.len() {
                return Err(Error::shape("frame types", &[frames.len()], &[t.len()]));
            }
            let keys: Vec<usize> = (0..t.len()).filter(|&i| t[i] == FrameType::I).collect();
            if keys.is_empty() {
                detect_keyframes(frames, cfg)
            } else {
                Ok(keys)
            }
        }
        None => detect_keyframes(frames, cfg),
    }
}
