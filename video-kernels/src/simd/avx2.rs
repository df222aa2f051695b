//! AVX2 + FMA helpers shared by the kernels: `vmaskmovps` lane masks, the 8-lane `exp` (the
//! vector twin of [`super::exp_f32`]) and a horizontal sum.

use std::arch::x86_64::*;

use super::exp::{EXP_HI, EXP_LO, EXP_POLY, LN2_HI, LN2_LO};

/// The `vmaskmovps` mask of the first `n` lanes (`n ≥ 8` gives all lanes).
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) fn lane_mask(n: usize) -> __m256i {
    let n = n.min(8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// 8 lanes of `e^x`, the same method and range handling as [`super::exp_f32`] (0 below the normal
/// range and for `-inf`, `+inf` above it, NaN propagated).
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) fn exp8(x: __m256) -> __m256 {
    // max(LO, x) then min(HI, ·) return x itself when x is NaN.
    let xc = _mm256_min_ps(
        _mm256_set1_ps(EXP_HI),
        _mm256_max_ps(_mm256_set1_ps(EXP_LO), x),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        xc,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(EXP_POLY[0]);
    for &cf in &EXP_POLY[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(cf));
    }
    let r2 = _mm256_mul_ps(r, r);
    let er = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
    // 2ⁿ in the exponent bits; n ∈ [-126, 127] after the clamp.
    let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    )));
    let y = _mm256_mul_ps(er, two_n);
    let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_LO));
    let over = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(EXP_HI));
    let y = _mm256_andnot_ps(under, y);
    _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), over)
}

/// Horizontal sum of 8 lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}
