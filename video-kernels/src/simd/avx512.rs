//! AVX-512F helpers shared by the kernels: lane masks for ragged edges and the 16-lane `exp` /
//! `2^x` (the vector twins of [`super::exp_f32`] / `exp2_f32`).
//!
//! The AVX-512 intrinsics are stable since Rust 1.89, newer than the workspace's declared
//! `rust-version` (1.85): building these modules needs 1.89.
#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::exp::{EXP2_POLY, EXP_POLY, LN2_HI, LN2_LO};

/// The mask of the first `n` lanes (`n ≥ 16` gives all lanes).
#[inline(always)]
pub(crate) fn lane_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// 16 lanes of `e^x` (`x` may be `-inf`: the result is then 0). Same method as [`super::exp_f32`];
/// `scalef` applies `2ⁿ` with correct underflow to 0 and overflow to `+inf`.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn exp16(x: __m512) -> __m512 {
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

/// 16 lanes of `2^x` for `x ≤ 0` or `-inf` (the softmax's shifted scores in base 2): `n` the
/// nearest integer, `2^(x−n)` by a degree-6 polynomial on `[−½, ½]`, `scalef` applies `2ⁿ`.
/// Clamping at −150 sends `-inf` (and anything that small) to exactly 0. Three fewer operations
/// than [`exp16`]: no `log₂ e` multiply, no two-step `ln 2` reduction, no upper clamp.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn exp2_16(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-150.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    let r = _mm512_sub_ps(x, n);
    let mut p = _mm512_set1_ps(EXP2_POLY[0]);
    for &cf in &EXP2_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(cf));
    }
    _mm512_scalef_ps(p, n)
}
