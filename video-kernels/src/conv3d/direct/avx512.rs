//! AVX-512 microkernel of [`super`] (the direct forward): `R` output channels × `NV` vectors of 16 positions
//! accumulated in 24 registers over every input channel and tap.
#![allow(clippy::incompatible_msrv)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per microtile (weights are broadcast, one per channel and reduction step).
pub(crate) const R: usize = 8;
/// Vectors of 16 positions per microtile (loaded once per step, shared by the `R` channels).
pub(crate) const NV: usize = 3;

/// What every microtile of one call shares.
pub(crate) struct Tile<'a> {
    /// Input channels.
    pub cin: usize,
    /// Floats per padded input channel (`P0·P1·P2`).
    pub chan: usize,
    /// Offset of each tap from the output position, in the padded channel.
    pub offs: &'a [usize],
    /// Positions of one frame on the padded grid.
    pub nq: usize,
    /// `nq` rounded up to whole microtiles: the row length of the output buffer.
    pub ldq: usize,
}

/// `out[r·ldq + q] = init[r] + Σ_{c, tap} w[(c·taps + tap)·R + r] · xpad[x0 + c·chan + offs[tap]
/// + q]` for `q < ldq`: one frame of `R` output channels on the padded grid.
///
/// # Panics
/// Never on well-formed calls from [`super::forward`]; a buffer too short for what the
/// kernel would read or write is a bug there and is caught by the checks below (a panic, not an
/// out-of-bounds access).
pub(crate) fn tile(c: &Tile, xpad: &[f32], x0: usize, w: &[f32], init: &[f32; R], out: &mut [f32]) {
    let taps = c.offs.len();
    let max_off = c.offs.iter().copied().max().unwrap_or(0);
    assert!(c.ldq.is_multiple_of(NV * 16) && c.ldq >= c.nq);
    assert!(c.cin > 0 && x0 + (c.cin - 1) * c.chan + max_off + c.ldq <= xpad.len());
    assert!(w.len() >= c.cin * taps * R && out.len() >= R * c.ldq);
    #[cfg(target_arch = "x86_64")]
    {
        assert!(crate::simd::has_avx512f());
        // SAFETY: AVX-512F is present, and the asserts above bound every read
        // (`x0 + c·chan + off + q < xpad.len()` for `q < ldq`, weights `< cin·taps·R`) and
        // write (`r·ldq + q < R·ldq`).
        unsafe { tile_avx512(c, xpad.as_ptr().add(x0), w.as_ptr(), init, out.as_mut_ptr()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (init, taps);
        unreachable!("the direct conv3d kernel is only dispatched on x86-64");
    }
}

/// # Safety
/// AVX-512F; the ranges checked in [`tile`], with `x` at `xpad + x0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(c: &Tile, x: *const f32, w: *const f32, init: &[f32; R], out: *mut f32) {
    let start = init.map(|v| _mm512_set1_ps(v));
    let mut q0 = 0;
    // SAFETY: see `tile`; every pointer below is `x + c·chan + off + q` with `q < ldq`, a weight
    // index below `cin·taps·R`, or an output index below `R·ldq`.
    unsafe {
        while q0 < c.ldq {
            let mut acc = [[_mm512_setzero_ps(); NV]; R];
            for (a, s) in acc.iter_mut().zip(&start) {
                *a = [*s; NV];
            }
            let mut wp = w;
            for ci in 0..c.cin {
                let xc = x.add(ci * c.chan + q0);
                for &off in c.offs {
                    let xs = xc.add(off);
                    let mut xv = [_mm512_setzero_ps(); NV];
                    for (v, xr) in xv.iter_mut().enumerate() {
                        *xr = _mm512_loadu_ps(xs.add(v * 16));
                    }
                    for (r, a) in acc.iter_mut().enumerate() {
                        let wr = _mm512_set1_ps(*wp.add(r));
                        for (av, &xr) in a.iter_mut().zip(&xv) {
                            *av = _mm512_fmadd_ps(wr, xr, *av);
                        }
                    }
                    wp = wp.add(R);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let o = out.add(r * c.ldq + q0);
                for (v, &av) in a.iter().enumerate() {
                    _mm512_storeu_ps(o.add(v * 16), av);
                }
            }
            q0 += NV * 16;
        }
    }
}
