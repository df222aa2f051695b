//! # video-kernels
//!
//! Fast attention and 3D convolution for video models, each with a `*_reference` twin built from
//! plain candle ops that documents what it computes and is compared with it in tests.
#![deny(missing_docs)]

mod attention;
mod conv3d;
#[cfg(feature = "cuda")]
pub mod cuda;

pub use attention::*;
pub use conv3d::*;
