#![doc = include_str!("../README.md")]
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
