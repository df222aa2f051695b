//! # vq-tokenizer
//!
//! Discrete visual tokens. Use this crate if you need to turn images or video frames into
//! codebook ids and back: a standalone [`VectorQuantizer`] for your own VQ-VAE / motion
//! tokenizer, or a diffusers `VQModel` (VQGAN) checkpoint as a video [`vidgen_video_core::Codec`].
//!
//! - [`VectorQuantizer`]: nearest code by `‖z‖² − 2 z·E + ‖E‖²` in a fused, tiled search that
//!   never materialises the `N × K` distance matrix ([`search`]; memory bounded for 2^14 – 2^18
//!   codes), optional l2-normalised codes and inputs (LlamaGen), straight-through estimator,
//!   codebook / commitment losses with diffusers' `legacy` weighting, EMA codebook updates with
//!   dead-code restarts, k-means++ initialisation ([`kmeans()`]), usage statistics
//!   ([`CodebookUsage`]: histogram, perplexity, dead fraction) and id → vector lookup.
//! - [`VQModel`]: diffusers' `VQModel` loaded from a `save_pretrained` directory unchanged
//!   (encoder, `quant_conv`, `quantize`, `post_quant_conv`, decoder; GroupNorm or SpatialNorm).
//! - [`FrameTokenizer`]: video `[B, C, T, H, W]` in `[-1, 1]` ↔ [`vidgen_video_core::TokenGrid`]
//!   `[B, T, h, w]`, frames batched in chunks.
//!
//! Round trip on a tiny random model:
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use vidgen_video_core::Codec;
//! use vidgen_vq_tokenizer::{FrameTokenizer, VQModel, VQModelConfig};
//!
//! # fn main() -> vidgen_video_core::Result<()> {
//! let cfg: VQModelConfig = serde_json::from_str(
//!     r#"{"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
//!        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "norm_num_groups": 4,
//!        "latent_channels": 4, "num_vq_embeddings": 32}"#,
//! ).map_err(|e| vidgen_video_core::Error::config("config", e.to_string()))?;
//! let dev = Device::Cpu;
//! let vm = VarMap::new();
//! let model = VQModel::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
//! let tok = FrameTokenizer::new(model, 4)?;
//!
//! let video = Tensor::rand(-1f32, 1.0, (1, 3, 5, 16, 16), &dev)?; // [B, C, T, H, W]
//! let tokens = tok.encode(&video)?; // TokenGrid [1, 5, 8, 8], ids < 32
//! assert_eq!(tokens.dims4(), (1, 5, 8, 8));
//! let recon = tok.decode(&tokens)?; // [1, 3, 5, 16, 16]
//! assert_eq!(recon.dims(), video.dims());
//! // Decoding is deterministic and re-encoding a decoded code map gives the same ids.
//! let again = tok.model().quantizer().lookup(tokens.ids())?;
//! assert_eq!(again.dims(), &[1, 5, 8, 8, 4]);
//! # Ok(()) }
//! ```
//!
//! ## Features
//! This crate has no cargo features. The search kernels pick AVX-512 or AVX2+FMA at run time
//! and fall back to portable code elsewhere; tensors on other devices are searched on the CPU.
#![deny(missing_docs)]

pub mod kmeans;
mod quantizer;
pub mod search;
mod stats;
mod tokenizer;
pub mod vqmodel;

pub use kmeans::{kmeans, KMeans};
pub use quantizer::{
    nearest_composed, EmaConfig, EmaReport, Quantized, QuantizerConfig, VectorQuantizer,
};
pub use stats::CodebookUsage;
pub use tokenizer::FrameTokenizer;
pub use vqmodel::{VQModel, VQModelConfig};
