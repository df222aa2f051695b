//! # adapters
//!
//! Parameter-efficient additions to video diffusion UNets. Use this crate to adapt a frozen
//! Stable Video Diffusion UNet (from `vidgen-diffusion-unet3d`) with AID's adapters and train only
//! them (about 1% new parameters), or to build instruction contexts (AID's DQFormer, VIDiff /
//! VIMI multimodal instructions with retrieved examples).
//!
//! - [`adapter`]: [`SpatialAdapter`], [`ShortTermTemporalAdapter`] (depthwise 3D conv),
//!   [`LongTermTemporalAdapter`] (temporal self-attention); all `[B, C, T, H, W]` residual
//!   bottlenecks with zero-initialised up-projections (a new adapter is the identity).
//! - [`set`]: [`AdapterSet`], adapters keyed by UNet hook site; it implements
//!   [`vidgen_video_core::hooks::UNetHooks`], so `unet.forward_with_hooks(.., &set)` runs them.
//!   [`AdapterSet::aid_for_attention_sites`] builds AID's layout from a UNet config's
//!   `attention_sites()` ([`vidgen_video_core::AttentionSite`]); this crate never depends on a
//!   UNet crate. [`SiteRecorder`] records the sites any UNet actually calls in one forward pass.
//! - [`dqformer`]: [`DQFormer`], AID's dual-query transformer building the UNet's
//!   cross-attention context from instruction tokens, visual features and state features.
//! - [`instruction`]: [`MultimodalInstruction`] (VIDiff: image embedding → MLP, concatenated
//!   with the text embedding; VIMI: plus retrieved examples) and [`ExampleBank`], exact top-k
//!   cosine retrieval by chunked matmul.
//! - [`params`]: freezing a base `VarMap` ([`frozen_builder`]), counting parameters
//!   ([`count_params`], [`ParamReport::aid`] for AID's share of a base model's parameters).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use vidgen_adapters::SpatialAdapter;
//! # fn main() -> vidgen_video_core::Result<()> {
//! let adapters = VarMap::new(); // give only this map's vars to the optimiser
//! let vb = VarBuilder::from_varmap(&adapters, DType::F32, &Device::Cpu);
//! let a = SpatialAdapter::new(32, 8, vb.pp("spatial"))?;
//! let x = Tensor::ones((1, 32, 2, 4, 4), DType::F32, &Device::Cpu)?;
//! let y = a.forward(&x)?; // zero-initialised up-projection: y == x
//! assert_eq!(y.dims(), x.dims());
//! assert_eq!(vidgen_adapters::count_params(&adapters), 32 * 8 + 8 + 8 * 32 + 32);
//! # Ok(()) }
//! ```
//!
//! # Training only the adapters
//! Build the base UNet from [`frozen_builder`] (detached copies of its `VarMap`, or a
//! checkpoint loaded with `from_pretrained`) and the adapters from their own `VarMap`; give
//! only the latter's `all_vars()` to the optimiser. Autograd runs through the frozen base to
//! reach the adapters (its layers take differentiable paths for tracked inputs), but no
//! gradient is kept for the base's detached tensors.
//!
//! This crate has no cargo features.
#![deny(missing_docs)]

pub mod adapter;
pub mod dqformer;
pub mod instruction;
pub mod params;
pub mod set;

pub use adapter::{
    adapter_param_counts, AdapterConfig, LongTermTemporalAdapter, ShortTermTemporalAdapter,
    SpatialAdapter,
};
pub use dqformer::{DQFormer, DQFormerConfig};
pub use instruction::{ExampleBank, MultimodalInstruction, MultimodalInstructionConfig, TopK};
pub use params::{count_params, frozen_builder, ParamReport};
pub use set::{Adapter, AdapterSet, SiteRecorder};
