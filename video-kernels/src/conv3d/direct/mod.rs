//! Direct (register-blocked) forward of the general path, for unit spatial stride and one
//! group, on AVX-512.
//!
//! The input is copied once into a zero-padded channels-first buffer `[B, Cin, P0, P1, P2]`.
//! Output positions of one frame are numbered on the padded grid, `q = oh·P2 + ow`: then for
//! every tap `(jt, jh, jw)` the inputs of consecutive `q` are consecutive floats at offset
//! `jt·d0·P1·P2 + jh·d1·P2 + jw·d2`, so a vector of 16 outputs reads one contiguous vector per
//! tap and channel. The `P2 − W'` positions between rows are computed and dropped (the flat-grid
//! trick of the gemm path). The microkernel keeps `R` output channels × `NV` vectors of
//! positions in registers over the whole reduction (`Cin·kT·kH·kW`) and stores each output
//! once; the gemm path instead accumulates into its output tile once per `(jt, jh)` and packs
//! both operands on every call.

use rayon::prelude::*;

use super::geom::Geom;

mod avx512;
use avx512::{tile, Tile, NV, R};

/// Whether the direct kernel takes this call.
pub(crate) fn applies(g: &Geom) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        g.groups == 1 && g.stride[1] == 1 && g.stride[2] == 1 && crate::simd::has_avx512f()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// `y [B, Cout, T', H', W']` (plus `bias`) from `x [B, Cin, T, H, W]` and `w [Cout, Cin, kT, kH,
/// kW]`; the caller checked [`applies`].
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let [t, h, wi] = g.inp;
    let [to, ho, wo] = g.out;
    let p = [0, 1, 2].map(|d| g.inp[d] + 2 * g.pad[d]);
    let (p12, chan) = (p[1] * p[2], p[0] * p[1] * p[2]);
    let taps = g.taps();
    let offs: Vec<usize> = (0..taps)
        .map(|i| {
            let (jt, jh, jw) = (i / (g.k[1] * g.k[2]), (i / g.k[2]) % g.k[1], i % g.k[2]);
            jt * g.dil[0] * p12 + jh * g.dil[1] * p[2] + jw * g.dil[2]
        })
        .collect();
    // Positions of one frame on the padded grid, rounded up to whole microtiles.
    let nq = (ho - 1) * p[2] + wo;
    let ldq = nq.div_ceil(NV * 16) * NV * 16;
    // Reads of the last microtile of the last frame may pass the last padded plane (they only
    // feed dropped positions): zeros up to there keep them in the buffer.
    let max_off = offs.iter().copied().max().unwrap_or(0);
    let need = (g.b * g.cin - 1) * chan + (to - 1) * g.stride[0] * p12 + max_off + ldq;
    let mut xpad = vec![0f32; need.max(g.b * g.cin * chan)];
    let (plane_in, frame_in) = (t * h * wi, h * wi);
    xpad[..g.b * g.cin * chan]
        .par_chunks_mut(chan)
        .enumerate()
        .for_each(|(bc, dst)| {
            let src = &x[bc * plane_in..][..plane_in];
            for it in 0..t {
                for ih in 0..h {
                    let d = ((it + g.pad[0]) * p[1] + ih + g.pad[1]) * p[2] + g.pad[2];
                    dst[d..d + wi].copy_from_slice(&src[it * frame_in + ih * wi..][..wi]);
                }
            }
        });
    // Weights as [Cout / R blocks, Cin, taps, R], output channels past Cout zero.
    let blocks = g.cout.div_ceil(R);
    let red = g.cin * taps;
    let mut wpk = vec![0f32; blocks * red * R];
    for co in 0..g.cout {
        let (blk, r) = (co / R, co % R);
        for (i, &v) in w[co * red..][..red].iter().enumerate() {
            wpk[(blk * red + i) * R + r] = v;
        }
    }
    let plane_out = to * ho * wo;
    let cfg = Tile {
        cin: g.cin,
        chan,
        offs: &offs,
        nq,
        ldq,
    };
    // One task per (batch, block of R output channels); each walks its frames in parallel.
    let per_batch = g.cout * plane_out;
    let write = |first: usize, yb: &mut [f32]| {
        let b = first / per_batch.max(1);
        yb.par_chunks_mut(R * plane_out)
            .enumerate()
            .for_each(|(blk, ych)| {
                let co0 = blk * R;
                let mut frames: Vec<Vec<&mut [f32]>> = (0..to).map(|_| Vec::new()).collect();
                for plane in ych.chunks_mut(plane_out) {
                    for (ot, f) in plane.chunks_mut(ho * wo).enumerate() {
                        frames[ot].push(f);
                    }
                }
                let mut init = [0f32; R];
                if let Some(bv) = bias {
                    for (r, v) in init.iter_mut().enumerate() {
                        *v = bv.get(co0 + r).copied().unwrap_or(0.0);
                    }
                }
                let wblk = &wpk[blk * red * R..][..red * R];
                frames.into_par_iter().enumerate().for_each_init(
                    || vec![0f32; R * ldq],
                    |buf, (ot, mut rows)| {
                        let x0 = b * g.cin * chan + ot * g.stride[0] * p12;
                        tile(&cfg, &xpad, x0, wblk, &init, buf);
                        for (r, dst) in rows.iter_mut().enumerate() {
                            let src = &buf[r * ldq..][..ldq];
                            for (oh, drow) in dst.chunks_exact_mut(wo).enumerate() {
                                drow.copy_from_slice(&src[oh * p[2]..][..wo]);
                            }
                        }
                    },
                );
            });
    };
    // SAFETY: each chunk is one batch's `[Cout, T', H', W']`; its channel planes split into
    // frames of `H'·W'` and every frame row of `W'` is assigned by `copy_from_slice`, nothing
    // read before.
    unsafe { vidgen_video_core::buffer::par_write(g.b * per_batch, per_batch, write) }
}

/// The input gradient as a direct forward, when it is one: with unit stride and
/// `pad ≤ (k − 1)·dil` in every dim, `dx` is the convolution of `dy` padded by
/// `(k − 1)·dil − pad` with the flipped weight transposed to `[Cin, Cout, kT, kH, kW]`.
/// `None` where that does not hold (the caller then uses the gemm path).
pub(crate) fn backward_input(g: &Geom, dy: &[f32], w: &[f32]) -> Option<Vec<f32>> {
    if g.stride != [1, 1, 1] || (0..3).any(|d| g.pad[d] > (g.k[d] - 1) * g.dil[d]) {
        return None;
    }
    let gt = Geom {
        cin: g.cout,
        cout: g.cin,
        cin_g: g.cout,
        cout_g: g.cin,
        inp: g.out,
        out: g.inp,
        pad: [0, 1, 2].map(|d| (g.k[d] - 1) * g.dil[d] - g.pad[d]),
        ..*g
    };
    if !applies(&gt) {
        return None;
    }
    let taps = g.taps();
    let mut wt = vec![0f32; w.len()];
    for co in 0..g.cout {
        for ci in 0..g.cin {
            let src = &w[(co * g.cin + ci) * taps..][..taps];
            let dst = &mut wt[(ci * g.cout + co) * taps..][..taps];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    Some(forward(&gt, dy, &wt, None))
}
