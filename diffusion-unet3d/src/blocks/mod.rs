//! The diffusers building blocks shared by the SVD and the inflated-SD models, with diffusers'
//! module and parameter names so checkpoints load unchanged.
//!
//! - [`nn`]: [`GroupNorm`], [`LayerNorm`], [`Linear`], [`Conv2d`], [`TemporalConv`],
//!   [`Activation`]: layers that accumulate in f32 for f16 / bf16 inputs.
//! - [`embeddings`]: [`Timesteps`] (sinusoidal) and [`TimestepEmbedding`] (MLP).
//! - [`resnet`]: [`ResnetBlock2D`], [`Downsample2D`], [`Upsample2D`].
//! - [`attention`]: [`Attention`] (`to_q`/`to_k`/`to_v`/`to_out.0`), [`FeedForward`]
//!   (`ff.net.0.proj`, `ff.net.2`), [`BasicTransformerBlock`], [`SinusoidalPositionalEmbedding`].
//! - [`transformer2d`]: [`Transformer2DModel`] (GroupNorm, `proj_in`, blocks, `proj_out`).
//!
//! Every constructor takes its configuration first and a [`candle_nn::VarBuilder`] last, so one
//! path serves random initialisation (a `VarMap`-backed builder) and checkpoint loading.

pub mod attention;
pub mod embeddings;
pub mod nn;
pub mod resnet;
pub mod transformer2d;

pub use attention::{
    Attention, AttentionConfig, BasicTransformerBlock, BasicTransformerBlockConfig, FeedForward,
    FeedForwardActivation, SinusoidalPositionalEmbedding,
};
pub use embeddings::{timestep_embedding, TimestepEmbedding, Timesteps};
pub use nn::{Activation, Conv2d, GroupNorm, LayerNorm, Linear, TemporalConv};
pub use resnet::{
    upsample_nearest2x, Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, TimeEmbeddingNorm,
    Upsample2D,
};
pub use transformer2d::{Transformer2DConfig, Transformer2DModel};
