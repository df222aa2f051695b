//! AVX-512 twin of `depthwise::corr_plane`: the same register-blocked correlation, written with
//! intrinsics because LLVM's auto-vectoriser splits the `[[f32; 16]; NV]` accumulators of the
//! generic version into mixed scalar / 128-bit / 512-bit pieces (a third of its speed).
#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::depthwise::{Corr, LANES};

use crate::attention::x86::lane_mask;

/// Whether the buffers cover everything [`corr_plane`] reads and writes (`xpad` ends with one
/// zero row of `wp`, read in place of rows outside the input).
pub(crate) fn covers(c: &Corr, xpad: &[f32], wk: &[f32], out: &[f32]) -> bool {
    let [t, h, _] = c.n_in;
    xpad.len() >= (t * h + 1) * c.wp
        && wk.len() >= c.k.iter().product::<usize>()
        && out.len() >= c.n_out.iter().product::<usize>()
        && c.wp >= c.n_out[2].div_ceil(c.nv * LANES) * c.nv * LANES + (c.k[2] - 1) * c.d[2]
}

/// `out` ← (or, with `init = None`, +=) the correlation `c` of `xpad` with `wk`, as
/// `depthwise::corr_plane`, `R` output rows × `NV` vectors at a time: the `R·NV` accumulators are
/// independent chains of fused multiply-adds (two vectors of one row alone would wait on the
/// FMA latency), and rows outside the input read the trailing zero row instead of branching.
///
/// # Safety
/// AVX-512F must be available and [`covers`] must hold: every row read is `wp` long and lies in
/// `xpad`, every block read `ow0 + jw·d + NV·16 ≤ wp`, and output rows lie in `out` (the last
/// block of a row is stored through a lane mask).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn corr_plane<const NV: usize, const R: usize>(
    c: &Corr,
    xpad: &[f32],
    wk: &[f32],
    out: &mut [f32],
    init: Option<f32>,
) {
    let [to, ho, wo] = c.n_out;
    let [t, h, _] = c.n_in;
    let [kt, kh, kw] = c.k;
    let (wp, dw) = (c.wp, c.d[2]);
    let block = NV * LANES;
    let (xp, wptr, op) = (xpad.as_ptr(), wk.as_ptr(), out.as_mut_ptr());
    let start = _mm512_set1_ps(init.unwrap_or(0.0));
    // SAFETY: the offsets below stay inside the ranges that `covers` checked (see # Safety).
    unsafe {
        let zero_row = xp.add(t * h * wp);
        for ot in 0..to {
            let mut oh0 = 0;
            while oh0 < ho {
                let rows_here = (ho - oh0).min(R);
                let mut ow0 = 0;
                while ow0 < wo {
                    let mut acc = [[start; NV]; R];
                    for jt in 0..kt {
                        let Some(it) = c.src(0, ot, jt) else { continue };
                        for jh in 0..kh {
                            let mut rows = [zero_row; R];
                            for (r, row) in rows.iter_mut().enumerate().take(rows_here) {
                                if let Some(ih) = c.src(1, oh0 + r, jh) {
                                    *row = xp.add((it * h + ih) * wp);
                                }
                            }
                            let taps = wptr.add((jt * kh + jh) * kw);
                            for jw in 0..kw {
                                let a = _mm512_set1_ps(*taps.add(jw));
                                let off = ow0 + jw * dw;
                                for (row, accr) in rows.iter().zip(acc.iter_mut()) {
                                    let seg = row.add(off);
                                    for (v, x) in accr.iter_mut().enumerate() {
                                        *x = _mm512_fmadd_ps(
                                            a,
                                            _mm512_loadu_ps(seg.add(v * 16)),
                                            *x,
                                        );
                                    }
                                }
                            }
                        }
                    }
                    let n = (wo - ow0).min(block);
                    for (r, accr) in acc.iter().enumerate().take(rows_here) {
                        let orow = op.add((ot * ho + oh0 + r) * wo + ow0);
                        for (v, &x) in accr.iter().enumerate() {
                            let lo = v * LANES;
                            if lo >= n {
                                break;
                            }
                            let m = lane_mask(n - lo);
                            let dst = orow.add(lo);
                            let y = if init.is_none() {
                                _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst), x)
                            } else {
                                x
                            };
                            _mm512_mask_storeu_ps(dst, m, y);
                        }
                    }
                    ow0 += block;
                }
                oh0 += R;
            }
        }
    }
}
