//! The AVX2 + FMA variants of the nearest-code search: the small-dim register block (4 rows × 8
//! codes) in intrinsics, and the gemm path's tile scan compiled for AVX2 + FMA.

use std::arch::x86_64::*;

use super::{scan_tile, PreparedCodebook, RowBest, CODE_TILE, MR, SMALL_DIM};

/// The small-dim kernel in AVX2 + FMA: register block of [`MR`] rows × 8 codes (one `ymm` of
/// scores per row, plus its running min and group index: 12 of the 16 registers).
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn small(cb: &PreparedCodebook, z: &[f32], ids: &mut [u32], best: &mut [f32]) {
    const L8: usize = 8;
    let d = cb.d;
    let kp = cb.kp;
    let rows = ids.len();
    let cols = cb.cols.as_ptr();
    let norms = cb.norms.as_ptr();
    let mut state = vec![RowBest::default(); rows];
    let mut c0 = 0;
    while c0 < kp {
        let kt = CODE_TILE.min(kp - c0);
        let mut r0 = 0;
        while r0 < rows {
            let mr = MR.min(rows - r0);
            let mut zm = [[0f32; SMALL_DIM]; MR];
            for (i, zrow) in zm.iter_mut().enumerate().take(mr) {
                for (j, v) in zrow.iter_mut().enumerate().take(d) {
                    *v = -2.0 * z[(r0 + i) * d + j];
                }
            }
            let mut bv = [_mm256_set1_ps(f32::INFINITY); MR];
            let mut bg = [_mm256_setzero_si256(); MR];
            for g in 0..kt / L8 {
                let col0 = c0 + g * L8;
                // SAFETY: kp and kt are multiples of 16, so col0 + 8 ≤ kp: the 8 floats read
                // from `norms` [kp] and from row j of `cols` [d, kp] are in bounds.
                let nv = unsafe { _mm256_loadu_ps(norms.add(col0)) };
                let mut acc = [nv; MR];
                for j in 0..d {
                    // SAFETY: as above, j < d.
                    let e = unsafe { _mm256_loadu_ps(cols.add(j * kp + col0)) };
                    for (a, zr) in acc.iter_mut().zip(zm.iter()) {
                        *a = _mm256_fmadd_ps(_mm256_set1_ps(zr[j]), e, *a);
                    }
                }
                let gi = _mm256_set1_epi32((col0 / L8) as i32);
                for i in 0..MR {
                    let m = _mm256_cmp_ps::<_CMP_LT_OQ>(acc[i], bv[i]);
                    bv[i] = _mm256_blendv_ps(bv[i], acc[i], m);
                    bg[i] = _mm256_blendv_epi8(bg[i], gi, _mm256_castps_si256(m));
                }
            }
            for i in 0..mr {
                let mut v = [0f32; L8];
                let mut gv = [0u32; L8];
                // SAFETY: both arrays hold exactly 8 lanes.
                unsafe {
                    _mm256_storeu_ps(v.as_mut_ptr(), bv[i]);
                    _mm256_storeu_si256(gv.as_mut_ptr().cast(), bg[i]);
                }
                let st = &mut state[r0 + i];
                for l in 0..L8 {
                    if v[l].is_finite() {
                        st.merge(v[l], gv[l] * L8 as u32 + l as u32);
                    }
                }
            }
            r0 += mr;
        }
        c0 += kt;
    }
    for ((st, id), b) in state.iter().zip(ids.iter_mut()).zip(best.iter_mut()) {
        *id = st.idx;
        *b = st.val;
    }
}

/// [`super::scan_tile`] compiled for AVX2 + FMA.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn scan(dots: &[f32], norms: &[f32], base: usize, st: &mut RowBest) {
    scan_tile(dots, norms, base, st)
}
