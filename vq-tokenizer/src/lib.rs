#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod kmeans;
pub mod prune;
mod quantizer;
pub mod search;
mod stats;
mod tokenizer;
pub mod vqmodel;

pub use kmeans::{kmeans, KMeans};
pub use prune::{
    prune_codes, prune_vqmodel, write_folder_with_codebook, FrameErrors, PruneReport, PruneSample,
};
pub use quantizer::{
    nearest_composed, EmaConfig, EmaReport, Quantized, QuantizerConfig, VectorQuantizer,
};
pub use stats::CodebookUsage;
pub use tokenizer::FrameTokenizer;
pub use vqmodel::{VQModel, VQModelConfig};
