//! VIMI (arXiv 2407.06304): grounding video generation in multimodal instructions by
//! retrieval, end to end and in miniature.
//!
//! - [`index`]: retrieval indexes over captioned images / clips with real encoders
//!   (all-MiniLM-L6-v2 captions, CLIP text / image through `clip-encoders`, the model's own
//!   vision tower, a pixel embedding for near-duplicates) on
//!   [`vidgen_adapters::retrieval`] (exact top-k, BM25, self-exclusion, dedup, saved as
//!   safetensors + JSON manifest).
//! - [`dataset`]: the retrieval-augmented dataset (every clip with the examples its caption
//!   retrieves, itself and its near-duplicates excluded) as JSON Lines.
//! - [`conditioning`]: prompt tokens + per-example tokens in one cross-attention context (the
//!   mixing and why), example / text dropout for guidance.
//! - [`denoiser`]: [`ContextDenoiser`] (a UNet3D, or the miniature's [`VideoDiT`]).
//! - [`model`], [`text`]: the trained parts and their folder; the frozen prompt encoder.
//! - [`pipeline`]: [`VimiPipeline`]: prompt + given or retrieved examples → video, with text
//!   and example guidance.
//! - [`mod@train`]: the two stages on `vidgen-trainer`: retrieval-augmented pre-training, then
//!   three instruction tasks (text-to-video, text + subject image, text + example clip).
//! - [`world`], [`probe`], [`eval`]: the miniature's synthetic world, the pixel probe that
//!   reads colour / shape / direction off a clip, and `vidgen vimi eval`.

pub mod conditioning;
pub mod dataset;
pub mod denoiser;
pub mod eval;
pub mod index;
pub mod model;
pub mod pipeline;
pub mod probe;
pub mod text;
pub mod train;
pub mod world;

pub use conditioning::{VimiConditioner, VimiConditionerConfig};
pub use dataset::{build_manifest, read_manifest, write_manifest, DatasetOptions, ManifestRow};
pub use denoiser::{ContextDenoiser, VideoDiT, VideoDiTConfig};
pub use eval::{evaluate, format_report, Condition, EvalOptions, EvalReport};
pub use index::{search_text, ClipEmbedder, TextRetrieval};
pub use model::{VimiConfig, VimiModel};
pub use pipeline::{Contexts, Example, VimiGuidance, VimiOptions, VimiOutput, VimiPipeline};
pub use text::{default_minilm_dir, SentenceStates};
pub use train::{train, Stages, TrainOptions, TrainReport};
pub use world::{CaptionStyle, MiniWorld, Scene, WorldSpec};
