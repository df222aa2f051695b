//! AVX-512 micro-kernels of the attention tiles: a register-blocked matrix product and the
//! softmax rows (`exp`, row maximum) on 16-lane vectors.
//!
//! Every function here is `unsafe` for two reasons only: the CPU must have AVX-512F (checked once
//! by [`crate::simd::has_avx512f`]) and the pointers must cover the ranges described on each function (checked
//! by the safe wrappers in `cpu.rs` before any call). Ragged edges use AVX-512 masked loads and
//! stores, which never touch memory outside the mask.
//!
//! The AVX-512 intrinsics are stable since Rust 1.89, newer than the workspace's declared
//! `rust-version` (1.85): building this module needs 1.89 (the workspace MSRV should say so).
#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use crate::simd::avx512::{exp16, exp2_16, lane_mask};

/// Rows of the register block: `ROWS × NV` accumulators of 16 lanes (24 of 32 registers).
const ROWS: usize = 6;

/// `C[r, c] (+)= Σ_p A[r, p] · B[p, c]` for `r < m`, `c < n`, `p < k`.
///
/// `A[r, p]` is read at `a + r·a_rs + p·a_cs` (any strides: rows of a matrix or of its transpose),
/// `B[p, c]` at `b + p·ldb + c` and `C[r, c]` at `c + r·ldc + c`. With `accumulate` the product is
/// added to `C`, else `C` is overwritten.
///
/// # Safety
/// AVX-512F must be available, and for every `r < m`, `p < k`, `col < n` the addresses above must be
/// valid (reads for `a`, `b`; reads and writes for `c`), with `C` not aliasing `A` or `B`.
#[target_feature(enable = "avx512f")]
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
    // SAFETY: forwarded; `MAX = false` never touches the row-maximum pointer.
    unsafe {
        matmul_impl::<false>(
            m,
            n,
            k,
            a,
            a_rs,
            a_cs,
            b,
            ldb,
            c,
            ldc,
            accumulate,
            std::ptr::null_mut(),
        )
    }
}

/// [`matmul`] (overwriting `C`) that also folds every written row into running maxima:
/// `rowmax[16·r .. 16·r + 16]` is a 16-lane running maximum of row `r` (initialise it to `-inf`,
/// reduce its lanes when done). Fusing the maximum into the product saves the softmax a pass
/// over the score tile.
///
/// # Safety
/// As [`matmul`], and `rowmax` must be valid for reads and writes of `16·m` values.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_rowmax(
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
    rowmax: *mut f32,
) {
    // SAFETY: forwarded.
    unsafe { matmul_impl::<true>(m, n, k, a, a_rs, a_cs, b, ldb, c, ldc, false, rowmax) }
}

#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_impl<const MAX: bool>(
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
    rowmax: *mut f32,
) {
    let mut c0 = 0;
    while c0 < n {
        let rem = n - c0;
        let nv = rem.div_ceil(16).min(4);
        let last = lane_mask(rem - (nv - 1) * 16);
        let acc = accumulate;
        // SAFETY: column c0 + nv·16 - 16 + last lanes ≤ n: within the caller's ranges.
        unsafe {
            let (b, c) = (b.add(c0), c.add(c0));
            match nv {
                1 => strip::<1, MAX>(m, k, a, a_rs, a_cs, b, ldb, c, ldc, acc, last, rowmax),
                2 => strip::<2, MAX>(m, k, a, a_rs, a_cs, b, ldb, c, ldc, acc, last, rowmax),
                3 => strip::<3, MAX>(m, k, a, a_rs, a_cs, b, ldb, c, ldc, acc, last, rowmax),
                _ => strip::<4, MAX>(m, k, a, a_rs, a_cs, b, ldb, c, ldc, acc, last, rowmax),
            }
        }
        c0 += nv * 16;
    }
}

/// One column strip of `NV` vectors (the last one masked by `last`), all rows.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn strip<const NV: usize, const MAX: bool>(
    m: usize,
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    acc: bool,
    last: __mmask16,
    rowmax: *mut f32,
) {
    let mut r0 = 0;
    // SAFETY: rows r0..r0+R < m, forwarded ranges as documented on `matmul` / `matmul_rowmax`
    // (`rowmax` is only offset, never dereferenced, when `MAX` is false).
    unsafe {
        while r0 + ROWS <= m {
            let (ar, cr, mx) = (
                a.add(r0 * a_rs),
                c.add(r0 * ldc),
                rowmax.wrapping_add(r0 * 16),
            );
            block::<ROWS, NV, MAX>(k, ar, a_rs, a_cs, b, ldb, cr, ldc, acc, last, mx);
            r0 += ROWS;
        }
        let (ar, cr, mx) = (
            a.add(r0 * a_rs),
            c.add(r0 * ldc),
            rowmax.wrapping_add(r0 * 16),
        );
        match m - r0 {
            1 => block::<1, NV, MAX>(k, ar, a_rs, a_cs, b, ldb, cr, ldc, acc, last, mx),
            2 => block::<2, NV, MAX>(k, ar, a_rs, a_cs, b, ldb, cr, ldc, acc, last, mx),
            3 => block::<3, NV, MAX>(k, ar, a_rs, a_cs, b, ldb, cr, ldc, acc, last, mx),
            4 => block::<4, NV, MAX>(k, ar, a_rs, a_cs, b, ldb, cr, ldc, acc, last, mx),
            5 => block::<5, NV, MAX>(k, ar, a_rs, a_cs, b, ldb, cr, ldc, acc, last, mx),
            _ => {}
        }
    }
}

/// The register block: `R` rows × `NV` vectors of `C`, kept in registers over the whole `k` loop;
/// each step loads `NV` vectors of one row of `B`, broadcasts `R` values of `A` and issues `R·NV`
/// fused multiply-adds.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const R: usize, const NV: usize, const MAX: bool>(
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    last: __mmask16,
    rowmax: *mut f32,
) {
    let mask = |v: usize| if v + 1 == NV { last } else { 0xFFFF };
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    // SAFETY: all offsets are below the ranges documented on `matmul`; masked lanes are not read.
    unsafe {
        if accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_ps(mask(v), c.add(r * ldc + v * 16));
                }
            }
        }
        for p in 0..k {
            let bp = b.add(p * ldb);
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm512_maskz_loadu_ps(mask(v), bp.add(v * 16));
            }
            let ap = a.add(p * a_cs);
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(r * a_rs));
                for (x, &bx) in row.iter_mut().zip(bv.iter()) {
                    *x = _mm512_fmadd_ps(av, bx, *x);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(c.add(r * ldc + v * 16), mask(v), x);
            }
        }
        if MAX {
            for (r, row) in acc.iter().enumerate() {
                let mp = rowmax.add(r * 16);
                let mut mx = _mm512_loadu_ps(mp);
                for (v, &x) in row.iter().enumerate() {
                    mx = _mm512_mask_max_ps(mx, mask(v), mx, x);
                }
                _mm512_storeu_ps(mp, mx);
            }
        }
    }
}

/// `row[j] ← 2^(row[j] − m)` (`m` at least the row's maximum); returns the sum of the new values.
///
/// # Safety
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp2_sub_sum(row: &mut [f32], m: f32) -> f32 {
    let mv = _mm512_set1_ps(m);
    let mut sum = _mm512_setzero_ps();
    let mut j = 0;
    let len = row.len();
    let ptr = row.as_mut_ptr();
    // SAFETY: loads / stores touch lanes j..min(j+16, len) only.
    unsafe {
        while j + 16 <= len {
            let e = exp2_16(_mm512_sub_ps(_mm512_loadu_ps(ptr.add(j)), mv));
            _mm512_storeu_ps(ptr.add(j), e);
            sum = _mm512_add_ps(sum, e);
            j += 16;
        }
        if j < len {
            let mk = lane_mask(len - j);
            let x = _mm512_maskz_loadu_ps(mk, ptr.add(j));
            let e = exp2_16(_mm512_sub_ps(x, mv));
            _mm512_mask_storeu_ps(ptr.add(j), mk, e);
            sum = _mm512_mask_add_ps(sum, mk, sum, e);
        }
    }
    _mm512_reduce_add_ps(sum)
}

/// Largest value of `row` (`-inf` when empty).
///
/// # Safety
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn row_max(row: &[f32]) -> f32 {
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut acc = ninf;
    let mut j = 0;
    // SAFETY: masked loads read lanes j..min(j+16, len) only.
    unsafe {
        while j < row.len() {
            let m = lane_mask(row.len() - j);
            acc = _mm512_max_ps(acc, _mm512_mask_loadu_ps(ninf, m, row.as_ptr().add(j)));
            j += 16;
        }
    }
    _mm512_reduce_max_ps(acc)
}

/// `row[j] ← exp(row[j] − m)`; returns the sum of the new values.
///
/// # Safety
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp_sub_sum(row: &mut [f32], m: f32) -> f32 {
    let mv = _mm512_set1_ps(m);
    let mut sum = _mm512_setzero_ps();
    let mut j = 0;
    let len = row.len();
    let ptr = row.as_mut_ptr();
    // SAFETY: masked loads / stores touch lanes j..min(j+16, len) only.
    unsafe {
        while j < len {
            let mk = lane_mask(len - j);
            let x = _mm512_maskz_loadu_ps(mk, ptr.add(j));
            let e = exp16(_mm512_sub_ps(x, mv));
            _mm512_mask_storeu_ps(ptr.add(j), mk, e);
            sum = _mm512_mask_add_ps(sum, mk, sum, e);
            j += 16;
        }
    }
    _mm512_reduce_add_ps(sum)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn exp2_is_accurate_and_sends_minus_inf_to_zero() {
        if !crate::simd::has_avx512f() {
            eprintln!("SKIPPED: no AVX-512F");
            return;
        }
        let mut xs: Vec<f32> = (0..20_000).map(|i| -i as f32 * 0.0071).collect();
        xs.extend([f32::NEG_INFINITY, -149.0, -150.0, -1e30, 0.0]);
        let want: Vec<f64> = xs.iter().map(|&x| (x as f64).exp2()).collect();
        let mut got = xs.clone();
        // SAFETY: AVX-512F checked above.
        let sum = unsafe { exp2_sub_sum(&mut got, 0.0) };
        let mut worst = 0f64;
        for ((&g, &w), &x) in got.iter().zip(&want).zip(&xs) {
            if x >= -126.0 {
                worst = worst.max((g as f64 - w).abs() / w);
            } else {
                assert!(
                    g as f64 <= 2.0 * w.max(f32::from_bits(1) as f64),
                    "2^{x} = {g}"
                );
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(got[20_000], 0.0);
        let want_sum: f64 = want.iter().sum();
        assert!((sum as f64 - want_sum).abs() / want_sum < 1e-5);
    }

    #[test]
    fn matmul_rowmax_reports_each_rows_maximum() {
        if !crate::simd::has_avx512f() {
            eprintln!("SKIPPED: no AVX-512F");
            return;
        }
        for (m, n, k) in [
            (1, 1, 1),
            (7, 17, 3),
            (13, 70, 9),
            (48, 256, 64),
            (6, 33, 5),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 19) as f32 - 9.0) * 0.1)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53 % 23) as f32 - 11.0) * 0.1)
                .collect();
            let mut c = vec![0f32; m * n];
            let mut lanes = vec![f32::NEG_INFINITY; 16 * m];
            // SAFETY: AVX-512F checked; a is m×k, b is k×n, c is m×n, lanes is 16·m.
            unsafe {
                matmul_rowmax(
                    m,
                    n,
                    k,
                    a.as_ptr(),
                    k,
                    1,
                    b.as_ptr(),
                    n,
                    c.as_mut_ptr(),
                    n,
                    lanes.as_mut_ptr(),
                )
            };
            for r in 0..m {
                let row: Vec<f32> = (0..n)
                    .map(|j| (0..k).map(|p| a[r * k + p] * b[p * n + j]).sum())
                    .collect();
                for (g, w) in c[r * n..(r + 1) * n].iter().zip(&row) {
                    assert!((g - w).abs() < 1e-4, "({m},{n},{k}) row {r}: {g} vs {w}");
                }
                let want = row.iter().fold(f32::NEG_INFINITY, |x, &y| x.max(y));
                let got = lanes[16 * r..16 * (r + 1)]
                    .iter()
                    .fold(f32::NEG_INFINITY, |x, &y| x.max(y));
                assert!(
                    (got - want).abs() < 1e-4,
                    "({m},{n},{k}) row {r} max {got} vs {want}"
                );
            }
        }
    }
}
