//! # video-kernels
//!
//! Fast attention, 3D convolution, linear layers, RMSNorm, SwiGLU / GEGLU / GELU for video models, each with a `*_reference` twin built from
//! plain candle ops that documents what it computes and is compared with it in tests.
#![deny(missing_docs)]

mod activation;
mod attention;
mod conv3d;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod gemm;
mod linear;
mod norm;
pub mod simd;

pub use activation::{
    geglu, geglu_reference, gelu_erf, gelu_erf_reference, silu, silu_slice, swiglu,
    swiglu_reference,
};
pub use attention::*;
pub use conv3d::*;
pub use linear::{linear, linear_reference, SKINNY_ROWS};
pub use norm::{add_rms_norm, rms_norm, rms_norm_reference};
pub use vidgen_video_core::contiguous;
