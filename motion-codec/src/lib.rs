#![doc = include_str!("../README.md")]
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
mod train;

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
pub use train::{
    evaluate_reconstruction, named_vars, to_grid_units, train_motion_tokenizer, MotionStep,
    MotionTrainConfig, ReconLoss, ReconstructionReport, TrainedMotionTokenizer,
};
