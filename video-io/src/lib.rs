//! # video-io
//!
//! Video in and out of tensors (planned; see the video-io issue): `u8` RGB frames to and from
//! `[B, C, T, H, W]` f32 in `[-1, 1]`, PNG frame folders, animated GIF, side-by-side grids,
//! mp4/avi/webm decode and mp4 encode through FFmpeg behind the `ffmpeg` feature, and the
//! synthetic "moving shapes" world with motion labels used by tests and the quickstart.
