//! AVX-512 twin of [`super::corr_plane`]: the same register-blocked correlation, written with
//! intrinsics because LLVM's auto-vectoriser splits the `[[f32; 16]; NV]` accumulators of the
//! generic version into mixed scalar / 128-bit / 512-bit pieces (a third of its speed).
#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::{Corr, LANES};
use crate::simd::avx512::lane_mask;

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
/// `super::corr_plane`, `R` output rows × `NV` vectors at a time: the `R·NV` accumulators are
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

/// Whether [`wgrad_plane`] applies and the buffers cover what it reads: `kW ≤ 8` (its
/// accumulators are `2·kW` vectors), `xpad` as for [`corr_plane`], and `dy` one output plane.
pub(crate) fn covers_wgrad(c: &Corr, xpad: &[f32], dy: &[f32], dwk: &[f32]) -> bool {
    let [t, h, _] = c.n_in;
    (1..=8).contains(&c.k[2])
        && xpad.len() >= (t * h + 1) * c.wp
        && dy.len() >= c.n_out.iter().product::<usize>()
        && dwk.len() >= c.k.iter().product::<usize>()
        && c.wp >= c.n_out[2].div_ceil(LANES) * LANES + (c.k[2] - 1) * c.d[2]
}

/// `dwk[tap] += Σ_o dy[o] · x[o·s + j·d − p]` over one (output-gradient plane, W-padded input
/// plane) pair: the weight gradient of the correlation `c`. For each `(jT, jH)` tap pair the
/// `kW` taps along W keep two vector accumulators each (independent FMA chains, alternate
/// vectors of a row) over every output row, so each `dy` vector is loaded once per `kW` taps and
/// each accumulator is reduced once, where the elementwise form loaded and stored a row-long
/// accumulator per product.
///
/// # Safety
/// AVX-512F must be available and [`covers_wgrad`] must hold. `dy`'s last vector of a row is
/// loaded through a lane mask (zeros past `W'`), so the padded `x` it meets there adds nothing.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn wgrad_plane(c: &Corr, xpad: &[f32], dy: &[f32], dwk: &mut [f32]) {
    // SAFETY: the caller's contract is `wgrad`'s.
    unsafe {
        match c.k[2] {
            1 => wgrad::<1>(c, xpad, dy, dwk),
            2 => wgrad::<2>(c, xpad, dy, dwk),
            3 => wgrad::<3>(c, xpad, dy, dwk),
            4 => wgrad::<4>(c, xpad, dy, dwk),
            5 => wgrad::<5>(c, xpad, dy, dwk),
            6 => wgrad::<6>(c, xpad, dy, dwk),
            7 => wgrad::<7>(c, xpad, dy, dwk),
            _ => wgrad::<8>(c, xpad, dy, dwk),
        }
    }
}

/// [`wgrad_plane`] for `kW = KW`.
///
/// # Safety
/// As [`wgrad_plane`].
#[target_feature(enable = "avx512f")]
unsafe fn wgrad<const KW: usize>(c: &Corr, xpad: &[f32], dy: &[f32], dwk: &mut [f32]) {
    let [to, ho, wo] = c.n_out;
    let [_, h, _] = c.n_in;
    let [kt, kh, _] = c.k;
    let (wp, dw) = (c.wp, c.d[2]);
    let nvec = wo.div_ceil(LANES);
    let tail = lane_mask(wo - (nvec - 1) * LANES);
    let (xp, dyp) = (xpad.as_ptr(), dy.as_ptr());
    // SAFETY: rows come from `Corr::src` (inside the input), every x read ends at or before
    // `nvec·16 + (kW − 1)·d ≤ wp`, and `dy` reads stay in the plane (tail masked).
    unsafe {
        for jt in 0..kt {
            for jh in 0..kh {
                let mut acc = [[_mm512_setzero_ps(); 2]; KW];
                for ot in 0..to {
                    let Some(it) = c.src(0, ot, jt) else { continue };
                    for oh in 0..ho {
                        let Some(ih) = c.src(1, oh, jh) else { continue };
                        let row = xp.add((it * h + ih) * wp);
                        let dyrow = dyp.add((ot * ho + oh) * wo);
                        let mut v = 0;
                        while v + 2 <= nvec {
                            let m1 = if v + 2 == nvec { tail } else { 0xFFFF };
                            let d0 = _mm512_loadu_ps(dyrow.add(v * LANES));
                            let d1 = _mm512_maskz_loadu_ps(m1, dyrow.add((v + 1) * LANES));
                            for (jw, a) in acc.iter_mut().enumerate() {
                                let x = row.add(v * LANES + jw * dw);
                                a[0] = _mm512_fmadd_ps(d0, _mm512_loadu_ps(x), a[0]);
                                a[1] = _mm512_fmadd_ps(d1, _mm512_loadu_ps(x.add(LANES)), a[1]);
                            }
                            v += 2;
                        }
                        if v < nvec {
                            let d0 = _mm512_maskz_loadu_ps(tail, dyrow.add(v * LANES));
                            for (jw, a) in acc.iter_mut().enumerate() {
                                let x = _mm512_loadu_ps(row.add(v * LANES + jw * dw));
                                a[0] = _mm512_fmadd_ps(d0, x, a[0]);
                            }
                        }
                    }
                }
                let taps = &mut dwk[(jt * kh + jh) * KW..][..KW];
                for (t, a) in taps.iter_mut().zip(&acc) {
                    *t += _mm512_reduce_add_ps(_mm512_add_ps(a[0], a[1]));
                }
            }
        }
    }
}
