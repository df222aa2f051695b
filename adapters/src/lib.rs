#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod adapter;
pub mod dqformer;
pub mod instruction;
pub mod params;
pub mod retrieval;
pub mod set;

pub use adapter::{
    adapter_param_counts, AdapterConfig, LongTermTemporalAdapter, ShortTermTemporalAdapter,
    SpatialAdapter,
};
pub use dqformer::{DQFormer, DQFormerConfig};
pub use instruction::{MultimodalInstruction, MultimodalInstructionConfig};
pub use params::{count_params, frozen_builder, ParamReport};
pub use retrieval::{ExampleBank, TopK};
pub use set::{Adapter, AdapterSet, SiteRecorder};
