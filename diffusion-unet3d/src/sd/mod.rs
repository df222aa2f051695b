//! Stable Diffusion inflated to video: [`UNet3DConditionModel`] (ModelScope / VideoCrafter),
//! [`UNetMotionModel`] (an SD UNet plus AnimateDiff motion modules, also built by inflating a
//! 2-D checkpoint alone), and SD's VAE [`AutoencoderKL`] applied per frame.
//!
//! All video tensors are `[B, C, T, H, W]`. Inside the UNets the per-frame (2-D) layers see the
//! frame batch `[B·T, C, H, W]` made by [`vidgen_video_core::VideoShape::fold`], and the temporal layers
//! see `[B, C, T, H, W]`, with attention over `[B·H·W, T, C]`.

mod common;
pub mod config;
pub mod temporal;
pub mod unet3d;
pub mod unet_motion;
pub mod vae;

pub use config::{
    MotionAdapterConfig, PerBlock, UNet2DConditionConfig, UNet3DConfig, UNetMotionConfig,
};
pub use temporal::{TemporalConvLayer, TransformerTemporalConfig, TransformerTemporalModel};
pub use unet3d::UNet3DConditionModel;
pub use unet_motion::{InflateConfig, MotionSpec, MotionUNetSpec, UNetMotionModel};
pub use vae::{
    AutoencoderKL, AutoencoderKLConfig, Decoder, DecoderConfig, DiagonalGaussian, Encoder,
    EncoderConfig, VaeMidBlock,
};
