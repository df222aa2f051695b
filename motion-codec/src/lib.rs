//! # motion-codec
//!
//! Video-LaVIT motion (planned; see the motion-codec issue): keyframe / shot detection,
//! block-matching motion estimation, codec motion vectors through FFmpeg side data, the LaVIT
//! motion-vector preprocessing, the motion tokenizer, and motion-compensated reconstruction.
