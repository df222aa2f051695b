//! # llama-video
//!
//! A Llama decoder over discrete video tokens, for Vid-ICL-style in-context video generation.
//! Use this crate if you have frame tokens (a [`vidgen_video_core::TokenGrid`] from a VQ tokenizer)
//! and want to train or run a decoder-only transformer on them, or if you want to load a
//! transformers `LlamaForCausalLM` directory into candle and get the same logits.
//!
//! - [`LlamaForCausalLM`]: RMSNorm, rotary embeddings (`default`, `linear`, `dynamic`,
//!   `llama3`, partial rotary), SwiGLU, grouped-query attention through
//!   [`vidgen_video_kernels::attention`], attention / MLP biases, tied embeddings. Loads
//!   `save_pretrained` directories unchanged ([`LlamaForCausalLM::from_pretrained`]) and matches
//!   transformers' logits on the `llama` fixtures.
//! - [`gguf`]: llama.cpp GGUF files ([`LlamaForCausalLM::from_gguf`]): config from the
//!   `llama.*` metadata, tensors renamed to transformers' keys and dequantised, llama.cpp's q / k
//!   row permutation undone; SmolLM2-135M-Instruct's logits and greedy continuation match
//!   transformers' dequantised model.
//! - [`tokenizer`]: the GGUF's byte-level BPE tokenizer rebuilt for Hugging Face's `tokenizers`
//!   ([`gguf_tokenizer`]), and SmolLM2-Instruct's chat template ([`smollm2_chat_prompt`]);
//!   [`LlamaForCausalLM::generate`] continues a token sequence (text generation with a KV cache
//!   and any [`SamplingConfig`], stopping at end-of-turn ids).
//! - [`KvCache`]: preallocated per-layer key / value buffers with a maximum length; prefill then
//!   token-by-token decoding gives the same logits as a full forward.
//! - [`VideoPrompt`]: demo clips then a query clip flattened into one sequence (raster order
//!   per frame, frames in order, no separators), an optional text prefix, and the bookkeeping
//!   from sequence positions back to frames. [`TextProjection`] maps any text encoder's
//!   embeddings to the hidden size (linear or two-layer MLP).
//! - [`SamplingConfig`] / [`sample`]: greedy, temperature, top-k, top-p, repetition penalty
//!   (off by default), classifier-free guidance; randomness only from an RNG you pass in.
//! - [`VideoLm`]: generation ([`VideoLm::generate_frames`], with a progress callback) and
//!   training ([`TrainBatch`], masked next-token cross-entropy, [`VideoLm::train_step`] with
//!   any candle-nn optimiser).
//!
//! Layouts: token ids `[B, T]` (`u32`, `i64` accepted), embeddings `[B, T, hidden]`, logits
//! `[B, T, vocab]`, attention `[B, heads, T, head_dim]`. f32 by default; f16 / bf16 weights work
//! with f32 softmax and norm statistics.
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::{VarBuilder, VarMap};
//! use vidgen_llama_video::{LlamaConfig, LlamaForCausalLM, SamplingConfig, VideoLm, VideoPrompt};
//! use rand::SeedableRng;
//! use vidgen_video_core::TokenGrid;
//!
//! # fn main() -> vidgen_video_core::Result<()> {
//! // A tiny random model: 64 tokens, width 32, 2 layers, 4 query / 2 kv heads.
//! let cfg = LlamaConfig::tiny(64, 32, 2, 4, 2);
//! let vars = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
//! let lm = VideoLm::new(LlamaForCausalLM::new(&cfg, vb)?);
//!
//! // One demo clip of 2 frames and a query clip of 1 frame, 2×3 tokens per frame.
//! let demo = TokenGrid::from_vec((0..12).collect(), 2, 2, 3)?;
//! let query = TokenGrid::from_vec((20..26).collect(), 1, 2, 3)?;
//! let prompt = VideoPrompt::builder().demo(demo).query(query).build()?;
//! assert_eq!(prompt.len(), 18);
//!
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let frames = lm.generate_frames(&prompt, 2, &SamplingConfig::greedy(), &mut rng, |_| {})?;
//! assert_eq!(frames.dims4(), (1, 2, 2, 3));
//! # Ok(()) }
//! ```
//!
//! ## Speed
//! `cargo run --release -p benches --bin bench-report -- --filter llama` times a 512-token
//! prefill and 128 greedy decode steps of the peers' 25M-parameter config beside transformers
//! (figures in the workspace's `BENCHMARKS.md`). Generation computes `lm_head` for the last
//! position only and writes keys / values in place into the preallocated cache.
//!
//! This crate has no cargo features.
#![deny(missing_docs)]

pub mod cache;
pub mod config;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod prompt;
pub mod rope;
pub mod sampling;
pub mod tokenizer;
pub mod train;

pub use cache::KvCache;
pub use config::{LlamaConfig, RopeConfig, RopeKind, RopeParameters};
pub use generate::{Progress, UncondPrefix, VideoLm};
pub use gguf::GgufFile;
pub use model::{
    LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaMlp, LlamaModel, LogitsToKeep,
};
pub use prompt::{
    Location, ProjectionKind, Segment, SegmentKind, TextProjection, TextProjectionConfig,
    VideoPrompt, VideoPromptBuilder,
};
pub use rope::{rope_reference, RotaryEmbedding};
pub use sampling::{guide, sample, SamplingConfig};
pub use tokenizer::{gguf_tokenizer, smollm2_chat_prompt, ChatMessage};
pub use train::{next_token_loss, LossOn, TrainBatch};
