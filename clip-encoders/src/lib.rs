#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod config;
pub mod encoder;
pub mod interpolate;
mod loading;
pub mod text;
pub mod vision;

pub use config::{CLIPConfig, CLIPTextConfig, CLIPVisionConfig};
pub use interpolate::interpolate_bicubic;
pub use text::{CLIPTextModel, CLIPTextModelWithProjection, CLIPTextOutput, CLIPTextTransformer};
pub use vision::{
    CLIPVisionModel, CLIPVisionModelWithProjection, CLIPVisionOutput, CLIPVisionTransformer,
};
pub mod tokenizer;
pub use tokenizer::{CLIPTokenizer, SpecialTokens, TextTokens};
pub mod svd_resize;
pub use svd_resize::resize_with_antialiasing;
pub mod image_processor;
pub use image_processor::{
    CLIPImageProcessor, ImageProcessorConfig, ImageU8, Resample, ResizeBackend, ResizeTo,
};
pub mod clip_model;
pub use clip_model::{l2_normalize, CLIPModel, CLIPModelOutput};
// BERT / sentence-transformers text encoders (all-MiniLM-L6-v2), for VIMI's retrieval.
pub mod bert;
pub mod minilm;
pub use bert::{BertConfig, BertModel, BertOutput};
pub use minilm::{BertTokenizer, BertTokens, PoolingConfig, SentenceEncoder, SentenceOutput};
