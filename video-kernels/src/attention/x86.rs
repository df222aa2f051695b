//! AVX-512 micro-kernels of the attention tiles: a register-blocked matrix product and the
//! vector `exp` / row maximum of the online softmax.
//!
//! Every function here is `unsafe` for two reasons only: the CPU must have AVX-512F (checked once
//! by [`available`]) and the pointers must cover the ranges described on each function (checked
//! by the safe wrappers in `cpu.rs` before any call). Ragged edges use AVX-512 masked loads and
//! stores, which never touch memory outside the mask.
//!
//! The AVX-512 intrinsics are stable since Rust 1.89, newer than the workspace's declared
//! `rust-version` (1.85): building this module needs 1.89 (the workspace MSRV should say so).
#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::exp::{EXP_POLY, LN2_HI, LN2_LO};

/// Rows of the register block: `ROWS × NV` accumulators of 16 lanes (24 of 32 registers).
const ROWS: usize = 6;

/// Whether this CPU has AVX-512F (the micro-kernels need nothing else).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// The mask of the first `n` lanes (`n ≥ 16` gives all lanes).
#[inline(always)]
fn lane_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

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
    let mut c0 = 0;
    while c0 < n {
        let rem = n - c0;
        let nv = rem.div_ceil(16).min(4);
        let last = lane_mask(rem - (nv - 1) * 16);
        // SAFETY: column c0 + nv·16 - 16 + last lanes ≤ n: within the caller's ranges.
        unsafe {
            let (b, c) = (b.add(c0), c.add(c0));
            match nv {
                1 => strip::<1>(m, k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate, last),
                2 => strip::<2>(m, k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate, last),
                3 => strip::<3>(m, k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate, last),
                _ => strip::<4>(m, k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate, last),
            }
        }
        c0 += nv * 16;
    }
}

/// One column strip of `NV` vectors (the last one masked by `last`), all rows.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn strip<const NV: usize>(
    m: usize,
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
) {
    let mut r0 = 0;
    // SAFETY: rows r0..r0+R < m, forwarded ranges as documented on `matmul`.
    unsafe {
        while r0 + ROWS <= m {
            let (ar, cr) = (a.add(r0 * a_rs), c.add(r0 * ldc));
            block::<ROWS, NV>(k, ar, a_rs, a_cs, b, ldb, cr, ldc, accumulate, last);
            r0 += ROWS;
        }
        let (ar, cr) = (a.add(r0 * a_rs), c.add(r0 * ldc));
        match m - r0 {
            1 => block::<1, NV>(k, ar, a_rs, a_cs, b, ldb, cr, ldc, accumulate, last),
            2 => block::<2, NV>(k, ar, a_rs, a_cs, b, ldb, cr, ldc, accumulate, last),
            3 => block::<3, NV>(k, ar, a_rs, a_cs, b, ldb, cr, ldc, accumulate, last),
            4 => block::<4, NV>(k, ar, a_rs, a_cs, b, ldb, cr, ldc, accumulate, last),
            5 => block::<5, NV>(k, ar, a_rs, a_cs, b, ldb, cr, ldc, accumulate, last),
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
unsafe fn block<const R: usize, const NV: usize>(
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
    }
}

/// 16 lanes of `e^x` (`x` may be `-inf`: the result is then 0). Same method as `exp::exp_f32`;
/// `scalef` applies `2ⁿ` with correct underflow to 0 and overflow to `+inf`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn exp16(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-104.0));
    let x = _mm512_min_ps(x, _mm512_set1_ps(104.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(EXP_POLY[0]);
    for &cf in &EXP_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(cf));
    }
    let r2 = _mm512_mul_ps(r, r);
    let er = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
    _mm512_scalef_ps(er, n)
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
