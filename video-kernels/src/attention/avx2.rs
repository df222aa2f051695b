//! AVX2 + FMA micro-kernels of the attention tiles, for x86-64 CPUs without AVX-512 (AMD Zen 1–3,
//! Intel client cores): the same register-blocked product and softmax row helpers as `avx512.rs`,
//! on 8-lane vectors.
//!
//! The register block is 6 rows × 2 vectors (12 accumulators + 2 loads of `B` + 1 broadcast:
//! 15 of the 16 `ymm` registers). Ragged edges use `vmaskmovps` loads and stores, which never
//! touch memory outside the mask. Every function is `unsafe` only because the CPU must have AVX2
//! and FMA (checked once by [`crate::simd::has_avx2_fma`]) and because the pointers must cover the ranges the
//! safe wrappers in `cpu.rs` check before each call.

use std::arch::x86_64::*;

use crate::simd::avx2::{exp8, hsum, lane_mask};

/// Rows of the register block.
const ROWS: usize = 6;

/// `C[r, c] (+)= Σ_p A[r, p] · B[p, c]` for `r < m`, `c < n`, `p < k`, with the same strides and
/// contract as `avx512::matmul`.
///
/// # Safety
/// AVX2 and FMA must be available, and for every `r < m`, `p < k`, `col < n` the addresses
/// `a + r·a_rs + p·a_cs`, `b + p·ldb + col` (reads) and `c + r·ldc + col` (reads and writes) must
/// be valid, with `C` not aliasing `A` or `B`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    // SAFETY: forwarded caller ranges.
    unsafe { strips(m, n, k, (a, a_rs, a_cs), b, ldb, c, ldc, accumulate) }
}

/// `A` as (pointer, row stride, column stride): `A[r, p]` at `a + r·a_rs + p·a_cs`.
type AMat = (*const f32, usize, usize);

/// Every column strip of `C`.
///
/// # Safety
/// As [`matmul`].
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn strips(
    m: usize,
    n: usize,
    k: usize,
    a: AMat,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut c0 = 0;
    while c0 < n {
        let rem = n - c0;
        let nv = rem.div_ceil(8).min(2);
        let last = lane_mask(rem - (nv - 1) * 8);
        // SAFETY: columns c0 .. c0 + (nv-1)·8 + |last| ≤ n: within the caller's ranges.
        unsafe {
            let (b, c) = (b.add(c0), c.add(c0));
            // Full strips use plain loads and stores: `vmaskmovps` is slow on AMD cores and
            // keeping its mask live costs a register in the inner loop.
            match (nv, rem >= nv * 8) {
                (1, true) => strip::<1, false>(m, k, a, b, ldb, c, ldc, accumulate, last),
                (1, false) => strip::<1, true>(m, k, a, b, ldb, c, ldc, accumulate, last),
                (_, true) => strip::<2, false>(m, k, a, b, ldb, c, ldc, accumulate, last),
                _ => strip::<2, true>(m, k, a, b, ldb, c, ldc, accumulate, last),
            }
        }
        c0 += nv * 8;
    }
}

/// One column strip of `NV` vectors (the last masked by `last` when `MASKED`), all rows.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn strip<const NV: usize, const MASKED: bool>(
    m: usize,
    k: usize,
    a: AMat,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    last: __m256i,
) {
    let mut r0 = 0;
    // SAFETY: rows r0 .. r0 + R ≤ m; ranges forwarded as documented on `matmul`.
    unsafe {
        while r0 + ROWS <= m {
            let (ar, rs, cs) = (a.0.add(r0 * a.1), a.1, a.2);
            let cr = c.add(r0 * ldc);
            block::<ROWS, NV, MASKED>(k, ar, rs, cs, b, ldb, cr, ldc, accumulate, last);
            r0 += ROWS;
        }
        let (ar, rs, cs) = (a.0.add(r0 * a.1), a.1, a.2);
        let cr = c.add(r0 * ldc);
        match m - r0 {
            1 => block::<1, NV, MASKED>(k, ar, rs, cs, b, ldb, cr, ldc, accumulate, last),
            2 => block::<2, NV, MASKED>(k, ar, rs, cs, b, ldb, cr, ldc, accumulate, last),
            3 => block::<3, NV, MASKED>(k, ar, rs, cs, b, ldb, cr, ldc, accumulate, last),
            4 => block::<4, NV, MASKED>(k, ar, rs, cs, b, ldb, cr, ldc, accumulate, last),
            5 => block::<5, NV, MASKED>(k, ar, rs, cs, b, ldb, cr, ldc, accumulate, last),
            _ => {}
        }
    }
}

/// The register block: `R` rows × `NV` vectors of `C` held over the whole `k` loop.
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const R: usize, const NV: usize, const MASKED: bool>(
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    last: __m256i,
) {
    let masked = |v: usize| MASKED && v + 1 == NV;
    let mut acc = [[_mm256_setzero_ps(); NV]; R];
    // SAFETY: every offset is inside the ranges documented on `matmul`; masked lanes are neither
    // read nor written.
    unsafe {
        let load = |p: *const f32, v: usize| {
            if masked(v) {
                _mm256_maskload_ps(p, last)
            } else {
                _mm256_loadu_ps(p)
            }
        };
        if accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = load(c.add(r * ldc + v * 8), v);
                }
            }
        }
        for p in 0..k {
            let bp = b.add(p * ldb);
            let mut bv = [_mm256_setzero_ps(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = load(bp.add(v * 8), v);
            }
            let ap = a.add(p * a_cs);
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*ap.add(r * a_rs));
                for (x, &bx) in row.iter_mut().zip(bv.iter()) {
                    *x = _mm256_fmadd_ps(av, bx, *x);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                let dst = c.add(r * ldc + v * 8);
                if masked(v) {
                    _mm256_maskstore_ps(dst, last, x);
                } else {
                    _mm256_storeu_ps(dst, x);
                }
            }
        }
    }
}

/// Largest value of `row` (`-inf` when empty).
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn row_max(row: &[f32]) -> f32 {
    let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut chunks = row.chunks_exact(8);
    for ch in &mut chunks {
        // SAFETY: `ch` holds exactly 8 values.
        acc = _mm256_max_ps(acc, unsafe { _mm256_loadu_ps(ch.as_ptr()) });
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 values.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    lanes
        .iter()
        .chain(chunks.remainder())
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// `row[j] ← exp(row[j] − m)`; returns the sum of the new values.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp_sub_sum(row: &mut [f32], m: f32) -> f32 {
    // SAFETY: forwarded.
    unsafe { exp_scaled_sum::<false>(row, m) }
}

/// `row[j] ← 2^(row[j] − m)`; returns the sum of the new values.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp2_sub_sum(row: &mut [f32], m: f32) -> f32 {
    // SAFETY: forwarded.
    unsafe { exp_scaled_sum::<true>(row, m) }
}

/// `exp(row[j] − m)`, or `2^(row[j] − m) = exp((row[j] − m)·ln 2)` with `BASE2`, in place.
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_scaled_sum<const BASE2: bool>(row: &mut [f32], m: f32) -> f32 {
    let mv = _mm256_set1_ps(m);
    let ln2 = _mm256_set1_ps(std::f32::consts::LN_2);
    let shifted = |x: __m256| {
        let t = _mm256_sub_ps(x, mv);
        if BASE2 {
            _mm256_mul_ps(t, ln2)
        } else {
            t
        }
    };
    let mut sum = _mm256_setzero_ps();
    let len = row.len();
    let ptr = row.as_mut_ptr();
    let full = len / 8 * 8;
    let mut j = 0;
    // SAFETY: plain loads / stores cover lanes j .. j + 8 ≤ full ≤ len; the masked tail touches
    // lanes full .. len only (`vmaskmovps` is slow on AMD cores, so only the tail uses it).
    unsafe {
        while j < full {
            let e = exp8(shifted(_mm256_loadu_ps(ptr.add(j))));
            _mm256_storeu_ps(ptr.add(j), e);
            sum = _mm256_add_ps(sum, e);
            j += 8;
        }
        if full < len {
            let mk = lane_mask(len - full);
            let x = _mm256_maskload_ps(ptr.add(full), mk);
            let e = _mm256_and_ps(exp8(shifted(x)), _mm256_castsi256_ps(mk));
            _mm256_maskstore_ps(ptr.add(full), mk, e);
            sum = _mm256_add_ps(sum, e);
        }
    }
    hsum(sum)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_rows_match_the_portable_versions() {
        if !crate::simd::has_avx2_fma() {
            eprintln!("SKIPPED: no AVX2 + FMA on this CPU");
            return;
        }
        let xs: Vec<f32> = (0..1000)
            .map(|i| -90.0 + i as f32 * 0.181)
            .chain([f32::NEG_INFINITY, 0.0, 100.0, f32::INFINITY])
            .collect();
        for len in [0usize, 1, 7, 8, 9, 31, xs.len()] {
            let mut a = xs[..len].to_vec();
            let mut b = a.clone();
            // SAFETY: AVX2 + FMA checked above.
            let (ma, sa) = unsafe { (row_max(&a), exp_sub_sum(&mut a, 0.5)) };
            let mb = super::super::softmax::row_max(&b);
            let sb = super::super::softmax::exp_sub_sum(&mut b, 0.5);
            assert_eq!(ma, mb, "len {len}");
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x == y) || ((x - y).abs() <= 1e-6 * y.abs()),
                    "len {len}: {x} vs {y}"
                );
            }
            let tol = 1e-5 * sb.abs().max(1.0);
            assert!(
                (sa - sb).abs() <= tol || sa == sb,
                "len {len}: {sa} vs {sb}"
            );
        }
        // NaN propagates
        let mut n = vec![f32::NAN; 3];
        // SAFETY: as above.
        unsafe { exp_sub_sum(&mut n, 0.0) };
        assert!(n.iter().all(|x| x.is_nan()));
    }

    #[test]
    fn matmul_matches_naive_on_ragged_shapes() {
        if !crate::simd::has_avx2_fma() {
            eprintln!("SKIPPED: no AVX2 + FMA on this CPU");
            return;
        }
        for (m, n, k) in [
            (1, 1, 1),
            (6, 16, 8),
            (7, 17, 5),
            (13, 3, 64),
            (48, 256, 64),
            (5, 9, 0),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32) - 6.0).collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32) * 0.5 - 2.0)
                .collect();
            for accumulate in [false, true] {
                // padded C with a guard column to catch writes past n
                let ldc = n + 1;
                let mut c = vec![1.0f32; m * ldc];
                if k > 0 {
                    // SAFETY: AVX2 + FMA checked; a is m×k (a_rs = k, a_cs = 1), b k×n, c m×ldc.
                    unsafe {
                        matmul(
                            m,
                            n,
                            k,
                            a.as_ptr(),
                            k,
                            1,
                            b.as_ptr(),
                            n,
                            c.as_mut_ptr(),
                            ldc,
                            accumulate,
                        )
                    };
                }
                for r in 0..m {
                    for col in 0..n {
                        let want: f32 = (0..k).map(|p| a[r * k + p] * b[p * n + col]).sum::<f32>()
                            + if accumulate || k == 0 { 1.0 } else { 0.0 };
                        assert!((c[r * ldc + col] - want).abs() < 1e-3, "{m}x{n}x{k}");
                    }
                    assert_eq!(c[r * ldc + n], 1.0, "guard column written");
                }
            }
        }
    }
}
