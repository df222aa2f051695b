//! The AVX2 + FMA kernel of [`super::linear`]'s few-row path: four dot products sharing each load
//! of `x`, scalar tail.

use std::arch::x86_64::*;

use super::ROW_STEP;

/// As `avx512::dots4` with 8-lane AVX2 + FMA (scalar tail).
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dots4(x: &[f32], w: &[f32], acc: &mut [f32; ROW_STEP]) {
    let len = x.len();
    assert!(w.len() == ROW_STEP * len);
    let mut a = [_mm256_setzero_ps(); ROW_STEP];
    let mut i = 0;
    // SAFETY: loads read i..i+8 ≤ len of every row (the assert above bounds `w`).
    unsafe {
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        while i + 8 <= len {
            let xv = _mm256_loadu_ps(xp.add(i));
            for (s, av) in a.iter_mut().enumerate() {
                *av = _mm256_fmadd_ps(_mm256_loadu_ps(wp.add(s * len + i)), xv, *av);
            }
            i += 8;
        }
    }
    for (s, (o, av)) in acc.iter_mut().zip(a).enumerate() {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` is 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), av) };
        let tail: f32 = (i..len).map(|j| x[j] * w[s * len + j]).sum();
        *o = lanes.iter().sum::<f32>() + tail;
    }
}
