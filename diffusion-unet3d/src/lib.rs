//! # diffusion-unet3d
//!
//! Spatio-temporal diffusion denoisers and their VAEs, loading diffusers directories unchanged.
//! Use this crate to run (or fine-tune) Stable Video Diffusion's
//! [`svd::UNetSpatioTemporalConditionModel`] and [`svd::AutoencoderKLTemporalDecoder`] on candle,
//! or the inflated SD UNets; the layers and diffusers blocks they are built from live in
//! `vidgen-video-nn`.
//!
//! - [`svd`]: the SVD UNet (input / output `[B, F, C, H, W]` as the reference) and the temporal
//!   VAE with chunked and streaming decode.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use vidgen_video_nn::Timesteps;
//! # fn main() -> vidgen_video_core::Result<()> {
//! let t = Tensor::new(&[0f32, 10.0], &Device::Cpu)?;
//! let emb = Timesteps::new(8, true, 0.0).forward(&t)?; // [2, 8]: [cos, sin]
//! assert_eq!(emb.dims(), &[2, 8]);
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features.
#![deny(missing_docs)]

mod limits;
pub mod sd;
mod sites;
pub mod svd;
