#![doc = include_str!("../README.md")]
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
