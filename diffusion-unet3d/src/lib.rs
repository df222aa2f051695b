//! # diffusion-unet3d
//!
//! Spatio-temporal denoisers and their VAEs (planned; see the two diffusion-unet3d issues):
//! Stable Video Diffusion `UNetSpatioTemporalConditionModel` and `AutoencoderKLTemporalDecoder`,
//! inflated SD UNets (`UNet3DConditionModel`, AnimateDiff motion modules), `AutoencoderKL`, and
//! chunked decoding with bounded memory, all loading diffusers directories unchanged.
