//! Running a whole forward pass on a worker of rayon's global pool.

/// Runs `f` on a worker thread of rayon's global pool (directly when the caller already is
/// one) and returns its result.
///
/// Why: candle's CPU ops, the `gemm` crate and vidgen's kernels parallelise each operation
/// with rayon. Called from an outside thread (a program's main thread), every parallel
/// operation is injected into the pool while the caller sleeps until it finishes: two thread
/// wake-ups per operation, a few tens of microseconds each. A forward pass of small
/// operations (decoding one token, a UNet at small resolution) runs hundreds of them. Run on
/// a worker, the operations are ordinary nested rayon jobs that the other workers steal, and
/// the caller's core does work instead of waiting. Measured on the 25M Llama of BENCHMARKS.md: 128
/// decode steps took 1.09 s from the main thread and 0.98–1.02 s pooled.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}
