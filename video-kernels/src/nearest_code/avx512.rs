//! The AVX-512 variants of the nearest-code search: the small-dim register block (4 rows × 16
//! codes) in intrinsics, and the gemm path's tile scan compiled for AVX-512.
//!
//! The AVX-512 intrinsics are stable since Rust 1.89, newer than the workspace's declared
//! `rust-version` (1.85).
#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::{scan_tile, PreparedCodebook, RowBest, CODE_TILE, LANES, MR, SMALL_DIM};

/// The small-dim kernel in AVX-512 intrinsics: LLVM does not vectorise the portable version's
/// 4 × 16 accumulator block across lanes on its own (measured ~20× slower).
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn small(cb: &PreparedCodebook, z: &[f32], ids: &mut [u32], best: &mut [f32]) {
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
            let mut bv = [_mm512_set1_ps(f32::INFINITY); MR];
            let mut bg = [_mm512_setzero_si512(); MR];
            for g in 0..kt / LANES {
                let col0 = c0 + g * LANES;
                // SAFETY: kp and kt are multiples of LANES, so col0 + LANES ≤ kp: the 16 floats
                // read from `norms` [kp] and from row j of `cols` [d, kp] are in bounds.
                let nv = unsafe { _mm512_loadu_ps(norms.add(col0)) };
                let mut acc = [nv; MR];
                for j in 0..d {
                    // SAFETY: as above, j < d.
                    let e = unsafe { _mm512_loadu_ps(cols.add(j * kp + col0)) };
                    for (a, zr) in acc.iter_mut().zip(zm.iter()) {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(zr[j]), e, *a);
                    }
                }
                let gi = _mm512_set1_epi32((col0 / LANES) as i32);
                for i in 0..MR {
                    let m = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(acc[i], bv[i]);
                    bv[i] = _mm512_mask_blend_ps(m, bv[i], acc[i]);
                    bg[i] = _mm512_mask_blend_epi32(m, bg[i], gi);
                }
            }
            for i in 0..mr {
                let mut v = [0f32; LANES];
                let mut gv = [0u32; LANES];
                // SAFETY: both arrays hold exactly 16 lanes.
                unsafe {
                    _mm512_storeu_ps(v.as_mut_ptr(), bv[i]);
                    _mm512_storeu_si512(gv.as_mut_ptr().cast(), bg[i]);
                }
                let st = &mut state[r0 + i];
                for l in 0..LANES {
                    if v[l].is_finite() {
                        st.merge(v[l], gv[l] * LANES as u32 + l as u32);
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

/// [`super::scan_tile`] compiled for AVX-512 (with AVX2 + FMA).
///
/// # Safety
/// AVX-512F, AVX2 and FMA must be available.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn scan(dots: &[f32], norms: &[f32], base: usize, st: &mut RowBest) {
    scan_tile(dots, norms, base, st)
}
