//! # vidgen-trainer
//!
//! Diffusion training for vidgen's video UNets. Use this crate to fine-tune or train a model
//! of `vidgen-diffusion-unet3d` (SVD, UNet3D, AnimateDiff / UNetMotion, an SD UNet per frame)
//! on a folder of videos, fully or only in named parts (AID's adapters and DQFormer, VIDiff's
//! temporal layers, motion modules), and to continue an interrupted run exactly.
//!
//! - [`data`]: datasets over video folders, frame folders and GIFs ([`data::FolderSource`],
//!   video files with the `ffmpeg` feature) or videos in memory ([`data::MemorySource`], e.g.
//!   the synthetic moving-shapes world), with clip sampling, resize / centre-crop, flips,
//!   captions, seeded per-epoch shuffling, batching and a prefetching worker thread.
//! - [`objective`]: [`EdmObjective`] (SVD / AID: log-normal σ, `λ(σ)`, `samplers`'
//!   preconditioning), [`DiscreteObjective`] (ε / v / x₀ over discrete timesteps: SD,
//!   VIDiff, AnimateDiff) and [`CondDropout`] (text and frame conditions dropped for
//!   classifier-free guidance). Objectives take any raw network, `samplers`'
//!   [`vidgen_samplers::Network`] (`F(x_in, c_noise, cond)`; closures qualify).
//! - [`params`]: [`ParamStore`], the `VarBuilder` backend models are built from: checkpoint
//!   tensors or seeded initialisation, trainable [`Var`](candle_core::Var)s chosen by
//!   [`Selection`] patterns (`adapters`, `*motion_modules*`, `!*.norm*`), the rest frozen;
//!   [`ParamReport`].
//! - [`optim`]: [`AdamW`] (PyTorch's update, exact state save / load), gradient accumulation
//!   and clipping by global norm ([`Gradients`]), warm-up + constant / cosine
//!   [`LrSchedule`], [`Ema`].
//! - [`trainer`]: [`Trainer`] (one optimiser step), [`ModelCache`] (f32 master weights, bf16
//!   compute by rebuilding from them), [`fit`] (the loop: `loss.csv`, `loss.png`, an
//!   `indicatif` bar, checkpoints).
//! - [`checkpoint`]: trained weights (the model's keys), optimiser state, data position and
//!   generator state; resuming continues bit for bit.
//! - [`recipes`]: the runs behind `vidgen train svd|aid|vidiff|animate|unet3d`, from a
//!   [`TrainConfig`] (the CLI parses into it and calls [`train`]).
//!
//! Train a tiny network on the synthetic world (the loop, with your own network: any closure
//! `F(x_in, c_noise, cond)` whose weights come from the store's builder):
//!
//! ```
//! use std::sync::Arc;
//! use candle_core::{DType, Device, Tensor};
//! use vidgen_trainer::data::{ClipSpec, DataPosition, Dataset, Loader, LoaderConfig, MemorySource};
//! use vidgen_trainer::{fit, CondDropout, EdmObjective, Loss, ModelCache, Objective, OptimConfig,
//!     ParamStore, RunOptions, Selection, Trainer};
//! use vidgen_video_core::Conditioning;
//! use vidgen_video_io::synth::WorldConfig;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let src = MemorySource::synthetic(&WorldConfig::new(16, 16, 4), 8, 0)?;
//! let spec = ClipSpec { frames: 2, width: 8, height: 8, ..ClipSpec::default() };
//! let data = Arc::new(Dataset::new(Arc::new(src), spec)?);
//! let store = ParamStore::new(0, &Device::Cpu).create(Selection::all()).trainable(Selection::all());
//! // a per-pixel "network": one 3x3 channel mix
//! let mut model = ModelCache::new(store.clone(), DType::F32, |vb| {
//!     let w = vb.get_with_hints((3, 3), "mix.weight", candle_nn::Init::Const(0.0))?;
//!     Ok(move |x: &Tensor, _c: &Tensor, _cond: &Conditioning| -> vidgen_video_core::Result<Tensor> {
//!         let (b, c, t, h, w_) = x.dims5()?;
//!         let flat = x.permute((0, 2, 3, 4, 1))?.reshape(((), c))?;
//!         Ok(flat.matmul(&w.t()?)?.reshape((b, t, h, w_, c))?.permute((0, 4, 1, 2, 3))?.contiguous()?)
//!     })
//! })?;
//! let mut trainer = Trainer::new(store, &OptimConfig { lr: 1e-2, ..OptimConfig::default() }, 5, 0)?;
//! let loss = Loss::new(Objective::Edm(EdmObjective::karras()), CondDropout::none())?;
//! let mut loader = Loader::spawn(data, LoaderConfig { batch: 2, seed: 0, prefetch: 2 },
//!     DataPosition::default(), Device::Cpu)?;
//! let out = tempfile::tempdir()?;
//! let opts = RunOptions { steps: 5, stop_after: None, out_dir: out.path().into(),
//!     checkpoint_every: None, progress: false, plot: true, title: "tiny".into() };
//! let mut prepare = |b: &vidgen_trainer::data::Batch, _: &mut rand_chacha::ChaCha8Rng| {
//!     Ok((b.video.clone(), Conditioning::none()))
//! };
//! let summary = fit(&mut trainer, &mut model, &loss, &mut loader, &mut prepare, &opts)?;
//! assert_eq!(summary.rows.len(), 5);
//! assert!(out.path().join("loss.csv").is_file() && out.path().join("loss.png").is_file());
//! # Ok(()) }
//! ```
//!
//! ## Features
//! - `ffmpeg` (off by default): video files in dataset folders, decoded through the system
//!   FFmpeg libraries (`vidgen-video-io/ffmpeg`; see that crate for the build requirements).
//!   Without it, a video file in a dataset is `Error::FeatureDisabled`; frame folders, GIFs and
//!   in-memory sources work.
#![deny(missing_docs)]

pub mod checkpoint;
pub mod data;
pub mod log;
pub mod objective;
pub mod optim;
pub mod params;
pub mod recipes;
pub mod trainer;

/// Makes candle run its large element-wise operations on the calling thread instead of its own
/// spin-waiting worker pool, by setting `CANDLE_NUM_THREADS=1` unless the variable is already
/// set. Matmuls, convolutions and vidgen's kernels still use every rayon thread. Call it first
/// thing in `main`, before any tensor operation (candle reads the variable once, at its pool's
/// first use) and before spawning threads; returns whether it set the variable.
///
/// Why: candle 0.11 hands element-wise ops of ≥ 64 Ki elements to a pool of its own that the
/// caller spin-waits on, next to rayon's pool. With every core busy (rayon's threads, the data
/// worker, other processes) the spinning caller keeps the worker it waits for off the CPU.
/// Measured on 2 shared cores: a tiny UNet training step 3.3 s → 0.7 s; one training step of
/// `unet_svd_small` with AID adapters 82 s → 15 s, of `unet3d_small` 50 s → 17 s.
pub fn prefer_rayon_threads() -> bool {
    if std::env::var_os("CANDLE_NUM_THREADS").is_some() {
        return false;
    }
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    true
}

pub use objective::{
    CondDropout, CondField, DiscreteObjective, DropoutScheme, EdmObjective, EdmPreconditioning,
    Loss, LossOutput, Objective,
};
pub use optim::{AdamW, AdamWConfig, Ema, Gradients, LrDecay, LrSchedule};
pub use params::{Origin, ParamReport, ParamStore, Pattern, Selection};
pub use recipes::{train, DataConfig, Precision, Recipe, Session, TrainConfig, TrainOutcome};
pub use trainer::{
    fit, ModelCache, OptimConfig, Prepare, RunOptions, RunSummary, StepStats, Trainer,
};
