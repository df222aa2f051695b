//! # examples
//!
//! Runnable vidgen pipelines (the binaries in `src/bin/`) and the library code they share.
//! Use this crate to see the workspace's crates work together end to end; start with
//!
//! ```text
//! cargo run --release -p examples --bin quickstart
//! ```
//!
//! which loads the shipped Vid-ICL miniature (`assets/vidicl-mini/`: a patch-VQ tokenizer and
//! a 4-layer Llama decoder trained on the synthetic world) and measures in-context video
//! generation: does the continuation of a query clip move the way a demo clip moved?
//! `train-vidicl-mini` reproduces those weights from a seed; `inspect-model` lists the
//! tensors of any model directory.
//!
//! The pieces are in [`vidicl`]:
//!
//! ```
//! use examples::vidicl::world::{MiniConfig, MiniWorld};
//!
//! # fn main() -> vidgen_video_core::Result<()> {
//! let world = MiniWorld::new(MiniConfig::default())?;
//! // Episode 0 of stream 7 with a demo moving the same way as the query's ground truth.
//! let e = world.episode(7, 0, |d, _| Some(d))?;
//! assert_eq!(e.demo_direction, Some(e.query_direction));
//! assert_eq!(e.query.len(), 1); // the query object is at rest in what the model sees
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features.
#![deny(missing_docs)]

pub mod aidmini;
pub mod cli;
pub mod minis;
pub mod vidicl;
pub mod vidiffmini;
