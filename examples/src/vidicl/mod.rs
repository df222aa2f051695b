//! The Vid-ICL miniature: a patch-VQ frame tokenizer and a tiny Llama decoder trained on the
//! synthetic world, and the evaluation that measures whether generated continuations follow
//! the demo's direction of motion.
//!
//! - [`world`]: sprites from `vidgen_video_io::synth`, moved one token cell per frame on a flat
//!   background; demo / query episodes (the query object is at rest in the given frames, so
//!   the direction can only come from the demo).
//! - [`patch_vq`]: the tokenizer (`vidgen_vq_tokenizer::VectorQuantizer` + k-means).
//! - [`train`]: tokenizer fitting, decoder training (`vidgen_llama_video::VideoLm::train_step`),
//!   checkpoint writing, the loss-curve plot.
//! - [`motion`]: the direction estimator used to score generations.
//! - [`eval`]: conditions (a)–(d), Wilson intervals, PSNR / SSIM, the report table and GIF
//!   strips.

use std::path::Path;

use vidgen_video_core::Error;

pub mod classifier;
pub mod eval;
pub mod instruct;
pub mod motion;
pub mod patch_vq;
pub mod recipes;
pub mod sharp;
pub mod sim;
pub mod train;
pub mod vqgan;
pub mod world;
pub mod world32;

/// Where the shipped weights live (`examples/assets/vidicl-mini`).
pub fn shipped_weights() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join("vidicl-mini")
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
