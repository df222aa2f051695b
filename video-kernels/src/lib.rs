//! # video-kernels
//!
//! The fast operations under vidgen's models: fused CPU kernels (AVX-512 / AVX2 micro-kernels
//! chosen at run time, rayon threads) for attention, 3D / 2D convolution, linear layers, norms,
//! activations and nearest-code search, each with a `*_reference` twin built from plain candle
//! ops that says what the op computes and that the tests compare it with.
//!
//! Use this crate if you write a layer or a model on candle and want PyTorch-speed CPU ops with
//! PyTorch semantics (the bar is PyTorch, not candle: see `BENCHMARKS.md`). For layers with
//! checkpoint names (`Linear`, `Conv2d`, `GroupNorm`, attention blocks) use `vidgen-video-nn`,
//! which is built on these ops.
//!
//! | op | twin | what |
//! | --- | --- | --- |
//! | [`attention()`] | [`attention_reference`] | `softmax(scale·q·kᵀ + mask + causal)·v`, GQA, f32 / f16 / bf16, FlashAttention-2 style forward and backward |
//! | [`conv3d()`], [`conv2d`] | [`conv3d_reference`], [`conv2d_reference`] | `torch.nn.functional.conv3d` / `conv2d` (any stride / padding / dilation / groups, bias fused), with backward |
//! | [`linear()`] | [`linear_reference`] | `x·Wᵀ + b`, a streaming kernel for decoding's few rows |
//! | [`rms_norm`], [`add_rms_norm`] | [`rms_norm_reference`], [`add_rms_norm_reference`] | Llama's RMSNorm, alone or after the residual add |
//! | [`layer_norm`] | [`layer_norm_reference`] | `torch.nn.LayerNorm` over the last dim |
//! | [`group_norm`] | [`group_norm_reference`] | `torch.nn.GroupNorm` with an optional fused SiLU, with backward |
//! | [`swiglu`], [`geglu`], [`gelu_erf`], [`silu`] | [`swiglu_reference`], [`geglu_reference`], [`gelu_erf_reference`], [`silu_reference`] | activations, the GLUs on a fused gate / up projection |
//! | [`nearest_code()`], [`PreparedCodebook`] | [`nearest_code_reference`] | `argmin_k ‖z − e_k‖²` without an `N × K` matrix |
//!
//! Below the ops: [`simd`] (CPU features detected once, shared vector helpers) and [`gemm`] (the
//! one checked wrapper over the `gemm` crate that every matrix product of the workspace goes
//! through). Tensors on other devices than the CPU run the twins (the CUDA kernels below are
//! called explicitly).
//!
//! **Comparing fast and reference.** [`force_reference`] returns a guard under which every op
//! above runs its twin (process-wide, rayon workers included); `VIDGEN_REFERENCE_KERNELS=1` does
//! the same for a whole run. A model's output with and without the guard tells whether a
//! difference comes from the kernels.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use vidgen_video_kernels::{attention, attention_reference, force_reference, AttentionOpts};
//!
//! # fn main() -> vidgen_video_core::Result<()> {
//! let dev = Device::Cpu;
//! // [B, heads, seq, head_dim]: 8 query heads sharing 2 kv heads, causal.
//! let q = Tensor::randn(0f32, 1.0, (1, 8, 64, 32), &dev)?;
//! let kv = Tensor::randn(0f32, 1.0, (1, 2, 64, 32), &dev)?;
//! let opts = AttentionOpts::causal();
//! let fast = attention(&q, &kv, &kv, &opts)?;
//! let twin = attention_reference(&q, &kv, &kv, &opts)?;
//! let err = (&fast - &twin)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(err < 1e-5);
//! // Under the guard the op is its twin, bit for bit.
//! let forced = {
//!     let _g = force_reference();
//!     attention(&q, &kv, &kv, &opts)?
//! };
//! assert_eq!(forced.flatten_all()?.to_vec1::<f32>()?, twin.flatten_all()?.to_vec1::<f32>()?);
//! # Ok(()) }
//! ```
//!
//! ## Features
//! - `cuda` (off by default): the `cuda` module, attention and depthwise / temporal conv3d
//!   kernels compiled at run time with NVRTC through cudarc. The CUDA driver and NVRTC are opened
//!   at run time, so the feature builds (and its tests skip) on machines without CUDA.
//!
//! The CPU kernels need no feature: the AVX-512 and AVX2 + FMA variants are compiled in and
//! chosen at run time ([`simd::level`]); other CPUs run portable code.
#![deny(missing_docs)]

mod activation;
mod attention;
mod conv3d;
#[cfg(feature = "cuda")]
pub mod cuda;
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
pub use conv3d::*;
pub use group_norm::{group_norm, group_norm_reference};
pub use linear::{linear, linear_reference, SKINNY_ROWS};
pub use nearest_code::{nearest_code, nearest_code_reference, PreparedCodebook, SMALL_DIM};
pub use norm::{
    add_rms_norm, add_rms_norm_reference, layer_norm, layer_norm_reference, rms_norm,
    rms_norm_reference,
};
pub use reference::{force_reference, reference_forced, ReferenceGuard, REFERENCE_ENV};
pub use vidgen_video_core::contiguous;
