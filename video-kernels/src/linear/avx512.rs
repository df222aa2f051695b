//! The AVX-512F kernel of [`super::linear`]'s few-row path: four dot products sharing each load
//! of `x`, masked tail.
#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::ROW_STEP;
use crate::simd::avx512::lane_mask;

/// Four dot products of `x` with the four consecutive rows of `w` (`w.len() == 4·x.len()`).
///
/// # Safety
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dots4(x: &[f32], w: &[f32], acc: &mut [f32; ROW_STEP]) {
    let len = x.len();
    assert!(w.len() == ROW_STEP * len);
    let mut a = [_mm512_setzero_ps(); ROW_STEP];
    let mut i = 0;
    // SAFETY: full loads read i..i+16 ≤ len of every row; the masked tail reads lanes below
    // len only (the assert above bounds `w`).
    unsafe {
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        while i + 16 <= len {
            let xv = _mm512_loadu_ps(xp.add(i));
            for (s, av) in a.iter_mut().enumerate() {
                *av = _mm512_fmadd_ps(_mm512_loadu_ps(wp.add(s * len + i)), xv, *av);
            }
            i += 16;
        }
        if i < len {
            let m = lane_mask(len - i);
            let xv = _mm512_maskz_loadu_ps(m, xp.add(i));
            for (s, av) in a.iter_mut().enumerate() {
                *av = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, wp.add(s * len + i)), xv, *av);
            }
        }
    }
    for (o, av) in acc.iter_mut().zip(a) {
        *o = _mm512_reduce_add_ps(av);
    }
}
