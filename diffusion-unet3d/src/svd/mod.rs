//! Stable Video Diffusion: [`UNetSpatioTemporalConditionModel`], [`AutoencoderKLTemporalDecoder`]
//! and their spatio-temporal blocks.
//!
//! At the model boundary tensors are in the reference's `[B, F, C, H, W]`; inside, frames are
//! folded into the batch (`[B·F, C, H, W]`) for per-frame layers and unfolded to vidgen's
//! `[B, C, F, H, W]` for temporal ones.

pub mod blocks;
pub mod config;
pub mod unet;
pub mod vae;

pub use blocks::{
    AlphaBlender, MergeStrategy, SpatioTemporalResBlock, SpatioTemporalResOpts,
    TemporalBasicTransformerBlock, TemporalResnetBlock, TransformerSpatioTemporalModel,
};
pub use config::{
    svd_xt_unet_config, PerBlock, TemporalVaeConfig, UNetSpatioTemporalConfig, SVD_XT_UNET_CONFIG,
};
pub use unet::UNetSpatioTemporalConditionModel;
pub use vae::{AutoencoderKLTemporalDecoder, TemporalDecoder};
