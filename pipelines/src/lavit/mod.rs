//! Video-LaVIT (arXiv 2402.03161) end to end: a video becomes keyframes and motion, both
//! become tokens of one vocabulary, one LLM models text, keyframe and motion tokens, and a
//! detokenizer turns tokens back into pixels (the keyframe by the image tokenizer's decoder,
//! the clip by a video diffusion model conditioned on the keyframe and the decoded motion).
//!
//! Modules:
//! - [`world`]: the miniature's synthetic world and its prompts;
//! - [`motion`]: keyframes, clips, motion vectors and Video-LaVIT's preprocessing;
//! - [`sequence`]: the vocabulary layout, text table, sequences and training samples;
//! - [`keyframe`], [`llm`], [`detokenizer`]: the keyframe tokenizer (a diffusers `VQModel`),
//!   the LLM (a transformers Llama) and the video detokenizer, each with its training;
//! - [`pipeline`]: [`LavitPipeline`] (tokenize, detokenize, generate) and its folder;
//! - [`train`]: the miniature trained end to end; [`eval`]: its measurement.

pub mod detokenizer;
pub mod eval;
pub mod keyframe;
pub mod llm;
pub mod motion;
pub mod pipeline;
pub mod sequence;
pub mod text;
pub mod train;
pub mod world;

pub use motion::{ClipSpan, MotionConfig, MotionSource};
pub use pipeline::{Generated, LavitConfig, LavitPipeline, TokenFile};
pub use sequence::{
    ClipTokens, LavitSequence, SampleKind, TextTable, Token, TrainingSample, VocabLayout,
};
pub use world::{LavitWorld, LavitWorldConfig, PromptSpec};
