//! # video-nn
//!
//! The one layer family of vidgen, as candle-nn is candle's: layers that load reference
//! checkpoints unchanged (field and key names as PyTorch / diffusers / transformers write them)
//! and run on [`vidgen_video_kernels`]' fast CPU ops, each op with a plain-candle reference twin
//! (switch every layer to the twins for a scope with `vidgen_video_kernels::force_reference`
//! where that crate provides it).
//!
//! Should I use this crate? Use it if you build a model on candle and want PyTorch-compatible
//! layers with f32 accumulation for f16 / bf16 weights and fast CPU paths; the model crates of
//! vidgen (UNets and VAEs, VQ tokenizers, Llama, CLIP, the metric networks) are all built from it.
//!
//! - Layers ([`nn`]): [`Linear`], [`Conv2d`], [`Conv3d`], [`GroupNorm`] (with fused SiLU),
//!   [`LayerNorm`], [`RmsNorm`], [`Embedding`], [`Activation`] (SiLU, GELU exact / tanh,
//!   QuickGELU, ReLU, Mish) and the gated [`geglu`] / [`swiglu`].
//! - Attention: [`MultiHeadAttention`] (separate or fused q/k/v projections, any key names) and
//!   diffusers' [`Attention`] (`to_q` / `to_k` / `to_v` / `to_out.0`, group / spatial norm,
//!   residual, rescale).
//! - diffusers blocks several models share: [`ResnetBlock2D`], [`ResnetBlockCondNorm2D`],
//!   [`Downsample2D`], [`Upsample2D`], [`FeedForward`], [`BasicTransformerBlock`],
//!   [`Transformer2DModel`], [`Timesteps`] / [`TimestepEmbedding`],
//!   [`SinusoidalPositionalEmbedding`], [`SpatialNorm`], and the VAE [`Encoder`] / [`Decoder`]
//!   of diffusers' `vae.py` (KL and VQ autoencoders, optionally MoVQ's SpatialNorm).
//!
//! Every constructor is `Type::new(&cfg_or_sizes, vb)`: configuration first, a
//! [`candle_nn::VarBuilder`] last, so one path serves random initialisation (PyTorch's default
//! inits, as hints to the builder) and checkpoint loading (strict, through
//! `vidgen_video_core::ModelDir`).
//!
//! Layouts: sequences `[…, features]`, images `[B, C, H, W]`, videos `[B, C, T, H, W]`,
//! attention heads `[B, heads, seq, head_dim]`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use vidgen_video_nn::{GroupNorm, Linear};
//!
//! # fn main() -> vidgen_video_core::Result<()> {
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
//! let lin = Linear::new(16, 8, true, vb.pp("proj"))?; // keys proj.weight [8, 16], proj.bias [8]
//! let x = Tensor::ones((2, 5, 16), DType::F32, &Device::Cpu)?;
//! assert_eq!(lin.forward(&x)?.dims(), &[2, 5, 8]);
//! let gn = GroupNorm::new(4, 8, 1e-5, vb.pp("norm"))?;
//! let img = Tensor::ones((1, 8, 4, 4), DType::F32, &Device::Cpu)?;
//! assert_eq!(gn.forward_silu(&img)?.dims(), &[1, 8, 4, 4]);
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features.
#![deny(missing_docs)]

pub mod attention;
pub mod embeddings;
pub mod mha;
pub mod nn;
pub mod resnet;
pub mod transformer2d;
pub mod vae;

pub use attention::{
    Attention, AttentionConfig, BasicTransformerBlock, BasicTransformerBlockConfig, FeedForward,
    FeedForwardActivation, SinusoidalPositionalEmbedding,
};
pub use embeddings::{timestep_embedding, TimestepEmbedding, Timesteps};
pub use mha::{MhaConfig, MultiHeadAttention};
pub use nn::{
    geglu, swiglu, to_f32, Activation, Conv2d, Conv2dConfig, Conv3d, Conv3dConfig, Embedding,
    GroupNorm, LayerNorm, Linear, RmsNorm, TemporalConv,
};
pub use resnet::{
    upsample_nearest2x, Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, ResnetBlockCondNorm2D,
    SpatialNorm, TimeEmbeddingNorm, Upsample2D,
};
pub use transformer2d::{Transformer2DConfig, Transformer2DModel};
pub use vae::{Decoder, DecoderConfig, Encoder, EncoderConfig, VaeMidBlock};

/// Maps a vidgen error into a candle error (for `candle_nn::Module` impls).
pub(crate) fn into_candle(e: vidgen_video_core::Error) -> candle_core::Error {
    match e {
        vidgen_video_core::Error::Candle(c) => c,
        other => candle_core::Error::wrap(other),
    }
}

mod count;
pub use count::count_by_construction;
