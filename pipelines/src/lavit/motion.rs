//! From frames to the motion tokenizer's input: keyframes (shot starts), clips of 24 frames,
//! motion vectors per frame, Video-LaVIT's preprocessing.
//!
//! Motion comes from block matching (`vidgen_motion_codec::estimate_motion`, the default: no
//! codec needed, what the miniature is trained on) or, with the `ffmpeg` feature of
//! `vidgen-motion-codec`, from the MPEG-4 Part 2 motion vectors of a re-encode at the clip's
//! frame rate (Video-LaVIT's source). Either way each frame's vectors go through
//! `vidgen_motion_codec::preprocess` (normalise, max-pool, bicubic resize to `20 × 36`); the
//! clip's first frame, its keyframe, is all zeros (as Video-LaVIT's extraction writes the
//! I-frame that starts a clip), and the result is divided by 10 (the tokenizer's input).

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use vidgen_motion_codec::{
    detect_keyframes, estimate_motion, preprocess, BlockMatchConfig, FrameType, FrameVectors,
    LavitConfig, LumaFrame, SearchMethod, ShotConfig,
};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::Video;

/// Where motion vectors come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MotionSource {
    /// Exhaustive block matching on luma (no codec).
    #[default]
    Block,
    /// The motion vectors of an MPEG-4 Part 2 re-encode (`ffmpeg` feature of
    /// `vidgen-motion-codec`; [`Error::FeatureDisabled`] without it).
    Codec,
}

/// Settings of motion extraction (saved in the pipeline's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MotionConfig {
    /// Vector source.
    pub source: MotionSource,
    /// Block side for block matching, pixels.
    pub block_size: usize,
    /// Search range of block matching, pixels.
    pub search_range: usize,
    /// Video-LaVIT's max-pool window, pixels (16 on its 576×320 frames; the miniature's
    /// 72×40 frames use 8, one block per cell).
    pub pool: usize,
    /// The `[out_h, out_w]` grid (`[20, 36]`).
    pub grid: [usize; 2],
    /// Frames per clip (24).
    pub clip_len: usize,
    /// The tokenizer divisor (10).
    pub divisor: f32,
    /// Zero the clip's first frame (Video-LaVIT writes the keyframe's motion as zeros).
    pub zero_keyframe: bool,
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self {
            source: MotionSource::Block,
            block_size: 8,
            search_range: 4,
            pool: 8,
            grid: [20, 36],
            clip_len: 24,
            divisor: 10.0,
            zero_keyframe: true,
        }
    }
}

impl MotionConfig {
    /// Video-LaVIT's preprocessing constants with this config's pool, grid and clip length.
    pub fn lavit(&self) -> LavitConfig {
        LavitConfig {
            pool: self.pool,
            out_h: self.grid[0],
            out_w: self.grid[1],
            clip_len: self.clip_len,
            tokenizer_divisor: self.divisor,
            ..LavitConfig::default()
        }
    }

    fn block_match(&self) -> BlockMatchConfig {
        BlockMatchConfig {
            block_size: self.block_size,
            search_range: self.search_range,
            method: SearchMethod::Full,
            half_pel: false,
        }
    }
}

/// Per-frame vectors of `video` by block matching: frame 0 is an I-frame (no vectors), frame
/// `i` carries the vectors from frame `i − 1` (frames cropped to a multiple of the block).
///
/// # Errors
/// Frames smaller than one block.
pub fn block_vectors(video: &Video, cfg: &MotionConfig) -> Result<Vec<FrameVectors>> {
    let (lumas, cw, ch) = LumaFrame::from_video_in_blocks(video, cfg.block_size)?;
    let bm = cfg.block_match();
    let mut out = Vec::with_capacity(lumas.len());
    out.push(FrameVectors {
        width: cw,
        height: ch,
        frame_type: FrameType::I,
        vectors: Vec::new(),
    });
    for p in lumas.windows(2) {
        let f = estimate_motion(&p[0], &p[1], &bm)?;
        out.push(FrameVectors::from_field(&f));
    }
    Ok(out)
}

/// Per-frame vectors from the MPEG-4 Part 2 re-encode of `video` (at its own frame rate, one
/// I-frame then P-frames), with the frame types the codec chose.
///
/// # Errors
/// [`Error::FeatureDisabled`] without `vidgen-motion-codec`'s `ffmpeg` feature; encoding /
/// decoding errors; a decode that returns another number of frames.
pub fn codec_vectors(video: &Video) -> Result<Vec<FrameVectors>> {
    let dir = std::env::temp_dir().join(format!(
        "vidgen-lavit-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let path = dir.join("clip.avi");
    let res = (|| {
        vidgen_motion_codec::encode_mpeg4(video, &path, video.fps(), 2, video.len().max(1) as u32)?;
        let cm = vidgen_motion_codec::read_codec_motion(&path, 16, Some(video.len()))?;
        if cm.vectors.len() != video.len() {
            return Err(Error::Malformed {
                path: path.clone(),
                reason: format!(
                    "the re-encode decoded to {} frames, not {}",
                    cm.vectors.len(),
                    video.len()
                ),
            });
        }
        Ok(cm.vectors)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// The tokenizer input of one clip: its frames' vectors preprocessed, keyframe zeroed,
/// divided by the divisor.
///
/// # Shapes
/// `vectors.len() = clip_len` → `[2, clip_len, out_h, out_w]`.
///
/// # Errors
/// A clip of another length; preprocessing errors.
pub fn clip_motion(
    vectors: &[FrameVectors],
    cfg: &MotionConfig,
    device: &Device,
) -> Result<Tensor> {
    if vectors.len() != cfg.clip_len {
        return Err(Error::invalid(
            "clip",
            format!("{} frames, a clip has {}", vectors.len(), cfg.clip_len),
        ));
    }
    let lm = preprocess(vectors, &cfg.lavit())?;
    let mut data = lm.data;
    if cfg.zero_keyframe {
        let plane = cfg.grid[0] * cfg.grid[1];
        for ch in 0..2 {
            let off = ch * cfg.clip_len * plane;
            data[off..off + plane].iter_mut().for_each(|v| *v = 0.0);
        }
    }
    let t = Tensor::from_vec(data, (2, cfg.clip_len, cfg.grid[0], cfg.grid[1]), device)?;
    Ok((t / cfg.divisor as f64)?)
}

/// The motion tokenizer input of a clip of frames (the clip's own vectors: block matching
/// within it, or its codec re-encode).
///
/// # Shapes
/// `clip.len() = clip_len` → `[2, clip_len, 20, 36]`.
///
/// # Errors
/// As [`block_vectors`] / [`codec_vectors`] and [`clip_motion`].
pub fn motion_of_clip(clip: &Video, cfg: &MotionConfig, device: &Device) -> Result<Tensor> {
    let v = match cfg.source {
        MotionSource::Block => block_vectors(clip, cfg)?,
        MotionSource::Codec => codec_vectors(clip)?,
    };
    clip_motion(&v, cfg, device)
}

/// One clip of a video as the tokenizer sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipSpan {
    /// First frame (the clip's keyframe) in the video.
    pub start: usize,
    /// Frames of the video the clip covers (≤ `clip_len`; shorter clips are padded with
    /// their last frame for tokenization).
    pub frames: usize,
}

/// Clips of `clip_len` frames covering `n` frames: each shot (from one keyframe to the next)
/// is cut into consecutive clips starting at its keyframe; a shot's last clip may be short.
///
/// # Errors
/// `n == 0`, `clip_len == 0`, keyframes not strictly increasing from 0 or beyond `n`.
pub fn plan_spans(n: usize, keyframes: &[usize], clip_len: usize) -> Result<Vec<ClipSpan>> {
    if n == 0 || clip_len == 0 {
        return Err(Error::invalid("video", "zero frames or a zero clip length"));
    }
    if keyframes.first() != Some(&0)
        || keyframes.windows(2).any(|w| w[1] <= w[0])
        || keyframes.last().is_some_and(|&k| k >= n)
    {
        return Err(Error::invalid(
            "keyframes",
            format!("{keyframes:?}: need strictly increasing frame indices from 0 below {n}"),
        ));
    }
    let mut out = Vec::new();
    for (i, &k) in keyframes.iter().enumerate() {
        let end = keyframes.get(i + 1).copied().unwrap_or(n);
        let mut s = k;
        while s < end {
            let f = clip_len.min(end - s);
            out.push(ClipSpan {
                start: s,
                frames: f,
            });
            s += f;
        }
    }
    Ok(out)
}

/// The frames of `span`, padded to `clip_len` with the last one.
///
/// # Errors
/// A span outside the video.
pub fn span_clip(video: &Video, span: &ClipSpan, clip_len: usize) -> Result<Video> {
    if span.frames == 0 || span.start + span.frames > video.len() {
        return Err(Error::invalid(
            "clip span",
            format!("{span:?} is outside {} frames", video.len()),
        ));
    }
    let mut frames: Vec<_> = video.frames()[span.start..span.start + span.frames].to_vec();
    while frames.len() < clip_len {
        let last = frames[frames.len() - 1].clone();
        frames.push(last);
    }
    Video::new(frames, video.fps())
}

/// Shot starts of `video` from its content (`vidgen_motion_codec::detect_keyframes`, luma
/// histograms).
///
/// # Errors
/// An empty video.
pub fn keyframes(video: &Video) -> Result<Vec<usize>> {
    detect_keyframes(&LumaFrame::from_video(video), &ShotConfig::default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::lavit::world::{LavitWorld, LavitWorldConfig, PromptSpec};
    use vidgen_video_io::synth::{seeded_rng, Colour, Direction, Shape};

    #[test]
    fn spans_cover_each_shot() {
        let s = plan_spans(60, &[0, 30], 24).unwrap();
        let got: Vec<(usize, usize)> = s.iter().map(|c| (c.start, c.frames)).collect();
        assert_eq!(got, vec![(0, 24), (24, 6), (30, 24), (54, 6)]);
        assert_eq!(plan_spans(12, &[0], 24).unwrap().len(), 1);
        assert!(plan_spans(12, &[1], 24).is_err());
        assert!(plan_spans(12, &[0, 0], 24).is_err());
        assert!(plan_spans(0, &[0], 24).is_err());
    }

    #[test]
    fn motion_points_the_way_the_object_moves() {
        let world = LavitWorld::new(LavitWorldConfig::default()).unwrap();
        let cfg = MotionConfig::default();
        let mut rng = seeded_rng(1);
        for d in [Direction::Left, Direction::Down, Direction::UpRight] {
            let spec = PromptSpec {
                colour: Colour::Red,
                shape: Shape::Square,
                direction: d,
            };
            let v = world.render(&spec, 1, &mut rng).unwrap();
            let m = motion_of_clip(&v.video, &cfg, &Device::Cpu).unwrap();
            assert_eq!(m.dims(), &[2, 24, 20, 36]);
            let sum: Vec<f32> = m.sum((1, 2, 3)).unwrap().to_vec1().unwrap();
            assert_eq!(
                vidgen_motion_codec::direction_of(sum[0], sum[1]),
                Some(d),
                "{sum:?}"
            );
            let k: f32 = m
                .narrow(1, 0, 1)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(k, 0.0);
        }
    }
}
