//! # vq-tokenizer
//!
//! Discrete visual tokens (planned; see the vq-tokenizer issue): a `VectorQuantizer` (fused
//! nearest-code search, straight-through estimator, EMA updates, k-means init, usage statistics)
//! and VQGAN frame tokenizers loading diffusers `VQModel` directories, exposed as a
//! `video_core::Codec` from `[B, C, T, H, W]` video to `[B, T, h, w]` token grids.
