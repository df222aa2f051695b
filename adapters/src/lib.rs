#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod adapter;
pub mod dqformer;
pub mod instruction;
pub mod params;
pub mod set;

pub use adapter::{
    adapter_param_counts, AdapterConfig, LongTermTemporalAdapter, ShortTermTemporalAdapter,
    SpatialAdapter,
};
pub use dqformer::{DQFormer, DQFormerConfig};
pub use instruction::{ExampleBank, MultimodalInstruction, MultimodalInstructionConfig, TopK};
pub use params::{count_params, frozen_builder, ParamReport};
pub use set::{Adapter, AdapterSet, SiteRecorder};
