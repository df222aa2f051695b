//! # motion-codec
//!
//! Motion for video models, after Video-LaVIT. Use this crate to **measure** motion (which way
//! did the camera or the object move, and how fast? block matching plus a robust global
//! summary, usable as an automatic evaluator of generated videos), to **read** the motion
//! vectors an MPEG codec already computed, to **preprocess** them exactly as Video-LaVIT does,
//! and to **tokenize** motion into 135 discrete tokens per 24-frame clip (and back).
//!
//! - [`estimate_motion`]: block matching on luma ([`LumaFrame`]), SAD cost, full or diamond
//!   search with zero / median / neighbour predictors, optional half-pixel refinement, rayon
//!   over blocks → [`MotionField`] `[2, H / 16, W / 16]`. **Sign convention**: vectors are the
//!   content's displacement from the previous frame to the current one (`x` right, `y` down).
//! - [`estimate_global_motion`] / [`video_global_motion`]: dominant direction (8-way
//!   [`Direction`]) and magnitude by medians, with camera pan / object motion / zoom / static
//!   told apart ([`MotionKind`]).
//! - [`frame_shift`] / [`sequence_direction`]: the one whole-frame integer translation between
//!   RGB frames, by exhaustive search over every pixel of the overlap: the evaluator for frames
//!   too small or too flat for block matching (the Vid-ICL quickstart scores with it).
//! - [`compensate_blocks`], [`warp_bilinear`], [`reconstruct_from_keyframe`], [`psnr`]:
//!   motion-compensated prediction, the baseline detokenizer.
//! - [`detect_keyframes`]: shot cuts by histogram or SAD difference (or codec I-frames).
//! - [`preprocess`]: Video-LaVIT's motion preprocessing into `[2, T, 20, 36]`, 24-frame clips
//!   ([`bicubic_resize`] and [`LavitMotion::tokenizer_clips`] return typed errors for empty
//!   sizes, short buffers or a frame-type list of the wrong length).
//! - [`MotionTokenizer`]: the spatio-temporal transformer + 1024 × 32 VQ tokenizer,
//!   implementing [`vidgen_video_core::Codec`], built from video-nn layers like every vidgen
//!   model: [`MotionTokenizer::new`]`(&cfg, vb)` for any `VarBuilder`,
//!   [`MotionTokenizer::from_pretrained`] (strict, through `ModelDir`, with a `LoadReport`),
//!   [`MotionTokenizer::random`] (seeded ChaCha8, this crate's own RNG) and
//!   [`MotionTokenizer::save`], which writes the keys `new` reads (listed in its docs).
//! - [`read_codec_motion`], [`encode_mpeg4`]: FFmpeg side-data vectors with I / P / B frame
//!   types, and MPEG-4 Part 2 re-encoding at 6 fps (`ffmpeg` feature). Asking for
//!   `Some(0)` frames is [`vidgen_video_core::Error::InvalidArgument`], as in video-io's
//!   `read_video`.
//!
//! ```
//! use vidgen_motion_codec::{estimate_global_motion, Direction, GlobalMotionConfig, LumaFrame, MotionKind};
//!
//! # fn main() -> vidgen_video_core::Result<()> {
//! // A smooth textured 64×64 picture, and the same picture moved 3 px right and 2 px down.
//! let tex = |x: f32, y: f32| {
//!     128.0 + 60.0 * (0.31 * x).sin() * (0.23 * y).cos() + 40.0 * (0.17 * (x + 2.0 * y)).sin()
//! };
//! let make = |sx: f32, sy: f32| {
//!     let data = (0..64 * 64)
//!         .map(|i| tex((i % 64) as f32 - sx, (i / 64) as f32 - sy) as u8)
//!         .collect();
//!     LumaFrame::new(64, 64, data)
//! };
//! let cfg = GlobalMotionConfig::default();
//! let g = estimate_global_motion(&make(0.0, 0.0)?, &make(3.0, 2.0)?, &cfg)?;
//! assert_eq!((g.dx, g.dy), (3.0, 2.0));
//! assert_eq!(g.direction, Some(Direction::DownRight));
//! assert_eq!(g.kind, MotionKind::CameraPan); // the whole picture moved
//! # Ok(()) }
//! ```
//!
//! ## Features
//! - `ffmpeg` (off by default): codec motion vectors and MPEG-4 re-encoding through the system
//!   FFmpeg libraries (≥ 5.1) via `video-io/ffmpeg`; needs FFmpeg's development files,
//!   `pkg-config` and libclang. Without it [`read_codec_motion`] and [`encode_mpeg4`] return
//!   `Error::FeatureDisabled`; the side-data parser [`parse_motion_vectors`] is pure Rust and
//!   always works (tested on arbitrary bytes; the cargo-fuzz targets in `fuzz/` run longer).
#![deny(missing_docs)]

mod block;
mod codec_mv;
mod field;
mod global;
mod keyframe;
mod lavit;
mod recon;
mod shift;
mod tokenizer;

pub use block::{estimate_motion, estimate_sequence, BlockMatchConfig, SearchMethod};
pub use codec_mv::{
    encode_mpeg4, field_from_vectors, frame_vectors, parse_motion_vectors, read_codec_motion,
    CodecMotion, RawMotionVector, AV_MOTION_VECTOR_SIZE,
};
pub use field::{FrameType, LumaFrame, MotionField};
pub use global::{
    combine, direction_of, estimate_global_motion, summarize_field, textured_blocks,
    video_global_motion, Direction, GlobalMotion, GlobalMotionConfig, MotionKind,
};
pub use keyframe::{
    detect_keyframes, frame_differences, keyframes_from_types_or_content, ShotConfig, ShotMetric,
};
pub use lavit::{
    bicubic_resize, pooled_grid, preprocess, BlockVector, FrameVectors, LavitConfig, LavitMotion,
};
pub use recon::{compensate_blocks, psnr, reconstruct_from_keyframe, warp_bilinear, Compensation};
pub use shift::{frame_shift, sequence_direction, FrameShiftConfig};
pub use tokenizer::{MotionTokenizer, MotionTokenizerConfig};
