#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod activation;
mod attention;
mod channel;
mod conv3d;
#[cfg(feature = "cuda")]
pub mod cuda;
mod elementwise;
pub mod gemm;
mod group_norm;
mod linear;
mod nearest_code;
mod norm;
mod reference;
pub mod simd;
mod storage;

pub use activation::{
    geglu, geglu_reference, gelu_erf, gelu_erf_reference, silu, silu_reference, silu_slice, swiglu,
    swiglu_reference,
};
pub use attention::*;
pub use channel::{add_channel, channel_sum, mul_channel};
pub use conv3d::*;
pub use elementwise::{add, add_reference, blend, blend_reference};
pub use group_norm::{
    group_norm, group_norm_moments, group_norm_reference, group_norm_with_moments,
    merge_group_moments, GroupMoments,
};
pub use linear::{linear, linear_reference, SKINNY_ROWS};
pub use nearest_code::{nearest_code, nearest_code_reference, PreparedCodebook, SMALL_DIM};
pub use norm::{
    add_rms_norm, add_rms_norm_reference, layer_norm, layer_norm_reference, rms_norm,
    rms_norm_reference,
};
pub use reference::{force_reference, reference_forced, ReferenceGuard, REFERENCE_ENV};
pub use vidgen_video_core::contiguous;
