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

/// Makes glibc's `malloc` keep freed memory for reuse instead of handing it back to the system
/// after every step: blocks up to 32 MiB come from the heap instead of fresh `mmap`s, the heap is
/// trimmed only when 2 GiB at its top are free, and it grows 256 MiB at a time. Skipped (returns
/// `false`) where any of `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` or `MALLOC_TOP_PAD_`
/// is set (the user's choice stands) and on targets other than Linux with glibc. Call it first
/// thing in `main`, like [`prefer_rayon_threads`]; returns whether every setting was applied.
///
/// Why: a training step allocates and frees the same few hundred activation and gradient
/// buffers every step. With glibc's defaults each large buffer is a new `mmap`, and the kernel
/// faults in and zeroes its pages again on first touch (about 20% of an AID training step in
/// `perf`). Measured on 2 cores, the AID miniature's base stage (batch 8): 0.63 s → 0.43 s a
/// step. The cost: the process's resident memory stays at its peak instead of shrinking
/// between steps.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const VARS: [&str; 3] = [
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_TOP_PAD_",
        ];
        if VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            return false;
        }
        let set = |param: libc::c_int, value: libc::c_int| {
            // SAFETY: `mallopt` only changes glibc's allocator parameters; it is safe to call
            // at any time, from any thread, and reports an unsupported value by returning 0.
            unsafe { libc::mallopt(param, value) == 1 }
        };
        let mmap = set(libc::M_MMAP_THRESHOLD, 32 << 20);
        let trim = set(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        let pad = set(libc::M_TOP_PAD, 256 << 20);
        mmap && trim && pad
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
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
