//! # video-core
//!
//! The shared contracts of vidgen. Use this crate if you write a model, codec or sampler that
//! should compose with the rest of vidgen, or if you want strict, well-reported loading of
//! diffusers / transformers checkpoints into candle.
//!
//! - [`Error`] / [`Result`]: one non-exhaustive error type whose variants name the key, file,
//!   field or shapes involved.
//! - [`VideoShape`]: checked `[B, C, T, H, W]` shapes and the only fold / unfold between video
//!   and frame batches `[B·T, C, H, W]`; [`TokenGrid`]: `[B, t, h, w]` `u32` token ids.
//! - [`Codec`], [`Denoiser`], [`Conditioning`]: how tokenizers / VAEs, networks and samplers meet.
//! - [`loading::ModelDir`]: `save_pretrained` directories (single or sharded safetensors,
//!   memory-mapped; the files chosen as diffusers / transformers do, a named variant such as
//!   `fp16` with [`ModelDir::open_variant`]) into a [`candle_nn::VarBuilder`], with a
//!   [`loading::LoadReport`]; [`loading::read_config`] / [`loading::parse_config`] for
//!   `config.json`, naming the bad field. No file content makes them panic.
//! - [`check_finite`]: turn NaN / Inf in a model output into an error that says where (one
//!   in-place pass over a CPU tensor's storage, cheap enough for every output and step).
//! - [`contiguous`]: a parallel strided copy for the permutes between layouts.
//! - [`hooks`]: the UNet hook contract ([`UNetHooks`], [`HookSite`], [`AttentionSite`]) through
//!   which adapters plug into UNets without either crate depending on the other.
//! - [`in_pool`]: run a forward pass on a rayon worker (no thread hand-off per operation).
//!
//! Layouts are fixed once for the whole workspace: video `[B, C, T, H, W]`, frames
//! `[B·T, C, H, W]`, tokens `[B, t, h, w]`, attention `[B, heads, seq, head_dim]`; pixels are in
//! `[-1, 1]` inside models and `u8` at I/O boundaries.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use vidgen_video_core::VideoShape;
//!
//! # fn main() -> vidgen_video_core::Result<()> {
//! let video = Tensor::zeros((2, 3, 4, 8, 8), candle_core::DType::F32, &Device::Cpu)?;
//! let (frames, shape) = VideoShape::fold(&video)?; // [B·T, C, H, W] = [8, 3, 8, 8]
//! assert_eq!(frames.dims(), &[8, 3, 8, 8]);
//! let back = VideoShape::unfold(&frames, shape.t)?;
//! assert_eq!(back.dims(), video.dims());
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features.
#![deny(missing_docs)]

mod error;
mod finite;
pub mod hooks;
mod layout;
pub mod loading;
mod pool;
mod shape;
mod traits;

pub use error::{Error, Result};
pub use finite::check_finite;
pub use hooks::{AttentionSite, HookPoint, HookSite, NoHooks, UNetHooks};
pub use layout::contiguous;
pub use loading::{LoadReport, ModelDir};
pub use pool::in_pool;
pub use shape::{TokenGrid, VideoShape};
pub use traits::{Codec, CodecStrides, CondDrop, Conditioning, Denoiser};
