//! The machine's measured f32 multiply-add peak, printed beside the achieved rates.

use std::time::Instant;

/// Independent accumulator vectors per thread: enough to cover the FMA latency × throughput of
/// current x86 cores (4 cycles × 2 per cycle).
const CHAINS: usize = 12;

/// Fused multiply-adds per accumulator per timed call.
const STEPS: usize = 1 << 16;

/// The f32 FMA throughput (GFLOP/s, 2 flops per lane) of `threads` OS threads, each running `CHAINS` independent chains of the widest vector FMA this CPU has
/// (AVX-512, else AVX2 + FMA, else scalar `mul_add`), the best of a few ~50 ms runs. Returns the
/// rate and the instruction set it used.
pub fn fma_peak_gflops(threads: usize) -> (f64, &'static str) {
    let (lanes, isa) = widest();
    let mut best = 0f64;
    for _ in 0..5 {
        let calls = 256;
        let t0 = Instant::now();
        // Plain OS threads, one per core: rayon's scope may run two spawned jobs on one worker.
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(move || {
                    for _ in 0..calls {
                        std::hint::black_box(chains(std::hint::black_box(1.0)));
                    }
                });
            }
        });
        let dt = t0.elapsed().as_secs_f64();
        let flops = (threads * calls * CHAINS * STEPS * lanes * 2) as f64;
        best = best.max(flops / dt / 1e9);
    }
    (best, isa)
}

fn widest() -> (usize, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        if vidgen_video_kernels::simd::has_avx512f() {
            return (16, "AVX-512");
        }
        if vidgen_video_kernels::simd::has_avx2_fma() {
            return (8, "AVX2 + FMA");
        }
    }
    (1, "scalar")
}

/// `CHAINS` accumulators of `STEPS` dependent FMAs each; returns their sum so nothing is dead.
fn chains(seed: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if vidgen_video_kernels::simd::has_avx512f() {
            // SAFETY: AVX-512F was just detected.
            return unsafe { x86::chains512(seed) };
        }
        if vidgen_video_kernels::simd::has_avx2_fma() {
            // SAFETY: AVX2 and FMA were just detected.
            return unsafe { x86::chains256(seed) };
        }
    }
    let mut acc = [seed; CHAINS];
    for _ in 0..STEPS {
        for a in &mut acc {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::incompatible_msrv)]
mod x86 {
    use std::arch::x86_64::*;

    use super::{CHAINS, STEPS};

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn chains512(seed: f32) -> f32 {
        let (m, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(seed); CHAINS];
        for _ in 0..STEPS {
            for a in &mut acc {
                *a = _mm512_fmadd_ps(*a, m, c);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn chains256(seed: f32) -> f32 {
        let (m, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(seed); CHAINS];
        for _ in 0..STEPS {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, m, c);
            }
        }
        let mut s = 0.0;
        for &a in &acc {
            let lo = _mm256_castps256_ps128(a);
            let hi = _mm256_extractf128_ps(a, 1);
            let q = _mm_add_ps(lo, hi);
            s += _mm_cvtss_f32(_mm_add_ps(q, _mm_movehl_ps(q, q)));
            s += _mm_cvtss_f32(_mm_shuffle_ps(q, q, 0b01))
                + _mm_cvtss_f32(_mm_shuffle_ps(q, q, 0b11));
        }
        s
    }
}
