//! # diffusion-unet3d
//!
//! Spatio-temporal diffusion denoisers and their VAEs, loading diffusers directories unchanged.
//! Use this crate to run (or fine-tune) Stable Video Diffusion's
//! [`svd::UNetSpatioTemporalConditionModel`] and [`svd::AutoencoderKLTemporalDecoder`] on candle,
//! or to build other diffusers-style video models from the shared [`blocks`].
//!
//! - [`blocks`]: diffusers building blocks (timestep embeddings, ResNet blocks, attention,
//!   transformer blocks, resamplers) with diffusers' key names and f32 accumulation.
//! - [`svd`]: the SVD UNet (input / output `[B, F, C, H, W]` as the reference) and the temporal
//!   VAE with chunked and streaming decode.
//! - [`hooks`]: hook points inside the SVD UNet for adapters.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use vidgen_diffusion_unet3d::blocks::Timesteps;
//! # fn main() -> vidgen_video_core::Result<()> {
//! let t = Tensor::new(&[0f32, 10.0], &Device::Cpu)?;
//! let emb = Timesteps::new(8, true, 0.0).forward(&t)?; // [2, 8]: [cos, sin]
//! assert_eq!(emb.dims(), &[2, 8]);
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features.
#![deny(missing_docs)]

pub mod blocks;
pub mod hooks;
pub mod sd;
pub mod svd;
