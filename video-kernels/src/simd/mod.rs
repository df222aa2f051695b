//! CPU feature detection, done once and cached, and the small vector helpers the kernels share.
//!
//! Every kernel of this crate that has a hand-written or re-compiled AVX-512 / AVX2 variant asks
//! [`level`] (or [`has_avx512f`] / [`has_avx2_fma`]) which one may run; other crates with their own
//! `#[target_feature]` code use the same functions, so the whole workspace detects features in
//! one place. On other architectures every answer is "no" and the portable code runs.
//!
//! Besides detection: [`dot`] (eight independent accumulators, so that it vectorises without
//! fast-math) and [`exp_f32`] (a branch-free Cody–Waite `exp`, about 1 ulp, that loops
//! auto-vectorise), plus, inside the crate, their AVX-512 / AVX2 counterparts (`avx512`, `avx2`:
//! lane masks for ragged edges, 16- and 8-lane `exp`).

use std::sync::atomic::{AtomicU8, Ordering};

mod exp;
pub(crate) use exp::exp2_f32;
pub use exp::exp_f32;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

/// The widest instruction-set level the kernels may use on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// No x86 SIMD beyond the compile-time baseline (or not x86-64): portable code.
    Portable,
    /// AVX2 and FMA (x86-64-v3 class: AMD Zen 1–3, Intel client cores without AVX-512).
    Avx2Fma,
    /// AVX-512F together with AVX2 and FMA (every AVX-512 CPU has both): kernels compiled for
    /// this level may use all three.
    Avx512,
}

/// `0` until detected, then `1 + Level as u8`.
static LEVEL: AtomicU8 = AtomicU8::new(0);

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2_fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if avx2_fma && is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if avx2_fma {
            return Level::Avx2Fma;
        }
    }
    Level::Portable
}

/// The instruction-set level of this CPU, detected on the first call and cached (one relaxed
/// atomic load afterwards).
#[inline]
pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        1 => Level::Portable,
        2 => Level::Avx2Fma,
        3 => Level::Avx512,
        _ => {
            let l = detect();
            LEVEL.store(1 + l as u8, Ordering::Relaxed);
            l
        }
    }
}

/// Whether code compiled with `#[target_feature(enable = "avx512f,avx2,fma")]` (or any subset)
/// may run: AVX-512F with AVX2 and FMA.
#[inline]
pub fn has_avx512f() -> bool {
    level() >= Level::Avx512
}

/// Whether code compiled with `#[target_feature(enable = "avx2,fma")]` may run.
#[inline]
pub fn has_avx2_fma() -> bool {
    level() >= Level::Avx2Fma
}

/// `Σ a[i]·b[i]` over the common length, with eight independent accumulators so that the loop
/// vectorises without fast-math (a single running sum is a chain of dependent adds).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ f(x[i])` over eight interleaved partial sums (added at the end), so that the loop
/// vectorises without fast-math.
#[inline(always)]
pub(crate) fn sum8(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn detection_is_cached_and_consistent() {
        let l = level();
        assert_eq!(level(), l);
        assert_eq!(has_avx512f(), l == Level::Avx512);
        assert_eq!(has_avx2_fma(), l >= Level::Avx2Fma);
        #[cfg(target_arch = "x86_64")]
        if has_avx512f() {
            assert!(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma"));
        }
    }

    #[test]
    fn dot_matches_f64_on_every_tail() {
        for n in [0usize, 1, 7, 8, 9, 31, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert_eq!(dot(&a, &b) as f64, want, "n = {n}");
        }
    }
}
