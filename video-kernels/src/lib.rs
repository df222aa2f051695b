//! # video-kernels
//!
//! Fast attention and 3D convolution (in progress; see the kernels issue).
