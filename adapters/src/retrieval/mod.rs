//! Example retrieval for VIMI-style multimodal instructions: exact top-k cosine search
//! ([`ExampleBank`]), a saved corpus index with several embedding spaces and BM25 over
//! captions ([`RetrievalIndex`], [`Bm25`]), self-exclusion and near-duplicate removal.
//!
//! This module is model-agnostic: the embeddings come from any encoder (CLIP image / text
//! from `vidgen-clip-encoders`, a sentence encoder such as all-MiniLM-L6-v2, a fixed pixel
//! embedding); each space records the [`EmbeddingModel`] that made it, and queries from
//! another model are refused.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use vidgen_adapters::retrieval::{EmbeddingModel, IndexItem, Modality, Query, RetrievalIndex,
//!     SearchOptions};
//! # fn main() -> vidgen_video_core::Result<()> {
//! let items: Vec<IndexItem> = ["a red circle", "a blue triangle", "a blue square"]
//!     .iter()
//!     .enumerate()
//!     .map(|(i, c)| IndexItem { id: format!("clip{i}"), caption: c.to_string(), media: None,
//!         labels: serde_json::Value::Null })
//!     .collect();
//! let mut index = RetrievalIndex::new(items)?;
//! let model = EmbeddingModel::new("toy", 2);
//! let emb = Tensor::new(&[[1f32, 0.0], [0.0, 1.0], [0.1, 1.0]], &Device::Cpu)?;
//! index.add_space("text", Modality::Text, model.clone(), &emb)?;
//! let q = Tensor::new(&[[0f32, 1.0]], &Device::Cpu)?;
//! let opts = SearchOptions { k: 2, ..SearchOptions::default() };
//! let hits = index.search(Query::Embeddings { space: "text", model: &model, queries: &q }, &opts)?;
//! assert_eq!(hits[0][0].item, 1);
//! let bm = index.search(Query::Bm25(&["blue triangle"]), &opts)?;
//! assert_eq!(bm[0][0].item, 1);
//! // another model's embeddings are refused
//! let other = EmbeddingModel::new("other", 2);
//! assert!(index.search(Query::Embeddings { space: "text", model: &other, queries: &q }, &opts).is_err());
//! # Ok(()) }
//! ```

mod bank;
mod bm25;
mod index;

pub use bank::{ExampleBank, TopK};
pub use bm25::{terms, Bm25, Bm25Params};
pub use index::{
    Dedup, EmbeddingModel, Hit, IndexItem, Modality, Query, RetrievalIndex, SearchOptions, Space,
    EMBEDDINGS_FILE, INDEX_FORMAT, INDEX_VERSION, MANIFEST_FILE,
};
