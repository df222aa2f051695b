//! Dense conv3d kernels built on gemm: the temporal / pointwise path and the general path.
//!
//! * **Temporal** `(kT, 1, 1)` (pointwise is `kT = 1`): for each temporal tap, output frames are
//!   `W_tap [Cout/g, Cin/g] · X [Cin/g, frames·H·W]` read straight from the `[B, C, T, H, W]`
//!   buffers (rows strided by `T·H·W`); with temporal stride 1 all frames of a tap form one gemm.
//! * **General**: the input is copied once into a zero-padded channels-last buffer
//!   `[B, G, T+2p, H+2p, W+2p, Cin/g]`. There, the `kW` taps of one `(kt, kh)` row and the channels
//!   form one contiguous run of `kW·Cin/g` floats per output position, so each `(kt, kh)` is a single
//!   gemm `[Cout/g, kW·Cin/g] · [kW·Cin/g, positions]` without an im2col copy. With unit spatial
//!   stride, several output rows are one gemm over the flat padded grid (the `W+2p − W'` columns
//!   between rows are computed and dropped). The input gradient is the same kernel run on the
//!   zero-upsampled, padded `dy` with the flipped, transposed weight; the weight gradient is
//!   `dy_tile · X_tapᵀ` per tile, summed over tiles.

use rayon::prelude::*;
use vidgen_video_core::Result;

use super::geom::{valid_range, Geom};
use crate::gemm::{gemm, Threads, View};

/// Positions per gemm in the general path (a few hundred keeps the output tile in L2).
const TARGET_N: usize = 512;

/// Runs of output frames `(first output frame, first input frame, count)` of temporal tap `j`.
fn frame_runs(g: &Geom, j: usize) -> Vec<(usize, usize, usize)> {
    let (lo, hi) = valid_range(g.inp[0], g.out[0], g.stride[0], g.dil[0], g.pad[0], j);
    let src = |o: usize| o * g.stride[0] + j * g.dil[0] - g.pad[0];
    if lo >= hi {
        Vec::new()
    } else if g.stride[0] == 1 {
        vec![(lo, src(lo), hi - lo)]
    } else {
        (lo..hi).map(|o| (o, src(o), 1)).collect()
    }
}

/// Temporal / pointwise forward.
pub(crate) fn temporal_forward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let s = g.inp[1] * g.inp[2];
    let (t, to, kt) = (g.inp[0], g.out[0], g.k[0]);
    let (cig, cog) = (g.cin_g, g.cout_g);
    let mut y = super::geom::output_init(g, bias);
    for b in 0..g.b {
        for gi in 0..g.groups {
            for j in 0..kt {
                for (o0, i0, len) in frame_runs(g, j) {
                    gemm(
                        cog,
                        len * s,
                        cig,
                        &mut y,
                        View::new(((b * g.cout + gi * cog) * to + o0) * s, to * s, 1),
                        w,
                        View::new(gi * cog * cig * kt + j, cig * kt, kt),
                        x,
                        View::new(((b * g.cin + gi * cig) * t + i0) * s, t * s, 1),
                        true,
                        Threads::Auto,
                    )?;
                }
            }
        }
    }
    Ok(y)
}

/// Temporal / pointwise input gradient.
pub(crate) fn temporal_backward_input(g: &Geom, dy: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    let s = g.inp[1] * g.inp[2];
    let (t, to, kt) = (g.inp[0], g.out[0], g.k[0]);
    let (cig, cog) = (g.cin_g, g.cout_g);
    let mut dx = vec![0f32; g.in_len()];
    for b in 0..g.b {
        for gi in 0..g.groups {
            for j in 0..kt {
                for (o0, i0, len) in frame_runs(g, j) {
                    gemm(
                        cig,
                        len * s,
                        cog,
                        &mut dx,
                        View::new(((b * g.cin + gi * cig) * t + i0) * s, t * s, 1),
                        w,
                        View::new(gi * cog * cig * kt + j, kt, cig * kt),
                        dy,
                        View::new(((b * g.cout + gi * cog) * to + o0) * s, to * s, 1),
                        true,
                        Threads::Auto,
                    )?;
                }
            }
        }
    }
    Ok(dx)
}

/// Temporal / pointwise weight gradient.
pub(crate) fn temporal_backward_weight(g: &Geom, x: &[f32], dy: &[f32]) -> Result<Vec<f32>> {
    let s = g.inp[1] * g.inp[2];
    let (t, to, kt) = (g.inp[0], g.out[0], g.k[0]);
    let (cig, cog) = (g.cin_g, g.cout_g);
    let mut dw = vec![0f32; g.w_len()];
    for gi in 0..g.groups {
        for j in 0..kt {
            for b in 0..g.b {
                for (o0, i0, len) in frame_runs(g, j) {
                    gemm(
                        cog,
                        cig,
                        len * s,
                        &mut dw,
                        View::new(gi * cog * cig * kt + j, cig * kt, kt),
                        dy,
                        View::new(((b * g.cout + gi * cog) * to + o0) * s, to * s, 1),
                        x,
                        View::new(((b * g.cin + gi * cig) * t + i0) * s, 1, t * s),
                        true,
                        Threads::Auto,
                    )?;
                }
            }
        }
    }
    Ok(dw)
}

/// A stride-`up` zero-upsampled, zero-padded (or cropped, for negative `lo`), channels-last copy
/// `[B, G, P0, P1, P2, C/G]` of `src [B, C, n0, n1, n2]`: source index `i` lands at `lo + i·up`
/// when that lies in `[0, P)`.
#[allow(clippy::too_many_arguments)]
fn pad_channels_last(
    src: &[f32],
    b: usize,
    c: usize,
    groups: usize,
    n: [usize; 3],
    p: [usize; 3],
    lo: [isize; 3],
    up: [usize; 3],
) -> Vec<f32> {
    let cg = c / groups;
    let frame = p[1] * p[2] * cg;
    let plane = n[0] * n[1] * n[2];
    let place = |d: usize, i: usize| -> Option<usize> {
        let q = lo[d] + (i * up[d]) as isize;
        (q >= 0 && (q as usize) < p[d]).then_some(q as usize)
    };
    let map1: Vec<Option<usize>> = (0..n[1]).map(|i| place(1, i)).collect();
    let map2: Vec<Option<usize>> = (0..n[2]).map(|i| place(2, i)).collect();
    // Padded frame q0 → source frame, the inverse of `place(0, ·)`.
    let inv0: Vec<Option<usize>> = (0..p[0])
        .map(|q| {
            let r = q as isize - lo[0];
            (r >= 0 && (r as usize).is_multiple_of(up[0]) && (r as usize / up[0]) < n[0])
                .then_some(r as usize / up[0])
        })
        .collect();
    let mut out = vec![0f32; b * groups * p[0] * frame];
    out.par_chunks_mut(frame)
        .enumerate()
        .for_each(|(idx, chunk)| {
            let (bg, q0) = (idx / p[0], idx % p[0]);
            let Some(i0) = inv0[q0] else { return };
            let (bi, gi) = (bg / groups, bg % groups);
            for cc in 0..cg {
                let sp = &src[(bi * c + gi * cg + cc) * plane..][..plane];
                for (i1, q1) in map1.iter().enumerate() {
                    let Some(q1) = q1 else { continue };
                    let row = &sp[(i0 * n[1] + i1) * n[2]..][..n[2]];
                    let obase = q1 * p[2];
                    for (v, q2) in row.iter().zip(&map2) {
                        if let Some(q2) = q2 {
                            chunk[(obase + q2) * cg + cc] = *v;
                        }
                    }
                }
            }
        });
    out
}

/// One implicit-gemm convolution over a channels-last padded input (no padding left to apply).
#[derive(Clone, Copy)]
struct Implicit {
    b: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    /// Padded input dims.
    p: [usize; 3],
    k: [usize; 3],
    stride: [usize; 3],
    dil: [usize; 3],
    out: [usize; 3],
}

/// A block of `r` consecutive output rows of one output frame of one (batch, group).
#[derive(Clone, Copy)]
struct Tile {
    b: usize,
    g: usize,
    ot: usize,
    oh0: usize,
    r: usize,
}

impl Implicit {
    /// Output rows per tile: several when the spatial stride is 1 (the flat-grid trick).
    fn rows_per_tile(&self) -> usize {
        if self.stride[1] == 1 && self.stride[2] == 1 {
            TARGET_N.div_ceil(self.p[2]).clamp(1, self.out[1])
        } else {
            1
        }
    }

    fn tiles(&self) -> Vec<Tile> {
        let rpt = self.rows_per_tile();
        let mut v = Vec::new();
        for b in 0..self.b {
            for g in 0..self.groups {
                for ot in 0..self.out[0] {
                    let mut oh0 = 0;
                    while oh0 < self.out[1] {
                        let r = rpt.min(self.out[1] - oh0);
                        v.push(Tile { b, g, ot, oh0, r });
                        oh0 += r;
                    }
                }
            }
        }
        v
    }

    /// Gemm columns of a tile: `(r−1)·P2 + W'` (row `rr`, column `ow` is column `rr·P2 + ow`).
    fn cols(&self, t: &Tile) -> usize {
        (t.r - 1) * self.p[2] + self.out[2]
    }

    /// Offset in the channels-last input of tap `(jt, jh, 0)` for the tile's first position.
    fn base(&self, t: &Tile, jt: usize, jh: usize) -> usize {
        let it = t.ot * self.stride[0] + jt * self.dil[0];
        let ih = t.oh0 * self.stride[1] + jh * self.dil[1];
        (((t.b * self.groups + t.g) * self.p[0] + it) * self.p[1] + ih) * self.p[2] * self.cin_g
    }

    /// Start of the `[Cout/g, kW·Cin/g]` weight block of `(g, jt, jh)` in the rearranged weight.
    fn wblock(&self, g: usize, jt: usize, jh: usize) -> usize {
        ((g * self.k[0] + jt) * self.k[1] + jh) * self.cout_g * self.k[2] * self.cin_g
    }

    /// `y [B, G·Cout/g, T', H', W']` from the channels-last input and the rearranged weight
    /// `[G, kT, kH, Cout/g, kW, Cin/g]`.
    /// `bias` (`[Cout]`) is added on the way out.
    fn forward(&self, xcl: &[f32], wr: &[f32], bias: Option<&[f32]>) -> Result<Vec<f32>> {
        let (cig, cog) = (self.cin_g, self.cout_g);
        let kw = self.k[2];
        let pos_stride = self.stride[2] * cig;
        let tiles = self.tiles();
        let outs: Vec<Vec<f32>> = tiles
            .par_iter()
            .map(|t| -> Result<Vec<f32>> {
                let nn = self.cols(t);
                let mut yt = vec![0f32; cog * nn];
                for jt in 0..self.k[0] {
                    for jh in 0..self.k[1] {
                        let base = self.base(t, jt, jh);
                        let wb = self.wblock(t.g, jt, jh);
                        if self.dil[2] == 1 {
                            gemm(
                                cog,
                                nn,
                                kw * cig,
                                &mut yt,
                                View::new(0, 1, cog),
                                wr,
                                View::new(wb, kw * cig, 1),
                                xcl,
                                View::new(base, 1, pos_stride),
                                true,
                                Threads::One,
                            )?;
                        } else {
                            for jw in 0..kw {
                                gemm(
                                    cog,
                                    nn,
                                    cig,
                                    &mut yt,
                                    View::new(0, 1, cog),
                                    wr,
                                    View::new(wb + jw * cig, kw * cig, 1),
                                    xcl,
                                    View::new(base + jw * self.dil[2] * cig, 1, pos_stride),
                                    true,
                                    Threads::One,
                                )?;
                            }
                        }
                    }
                }
                Ok(yt)
            })
            .collect::<Result<_>>()?;
        let [to, ho, wo] = self.out;
        let cout = self.groups * cog;
        let plane = to * ho * wo;
        let mut y = vec![0f32; self.b * cout * plane];
        // Tiles of one (batch, group) are consecutive in `tiles`, in (frame, row block) order.
        let per_bg = tiles.len() / (self.b * self.groups).max(1);
        // Tiles are stored position-major (`[positions, Cout/g]`): the gemm then reads the input
        // positions in the order its kernel wants them and only packs the small weight block.
        y.par_chunks_mut(plane).enumerate().for_each(|(bc, yp)| {
            let (b, c) = (bc / cout, bc % cout);
            let (gi, co) = (c / cog, c % cog);
            let add = bias.map_or(0.0, |bv| bv[c]);
            let first = (b * self.groups + gi) * per_bg;
            for (t, yt) in tiles[first..first + per_bg]
                .iter()
                .zip(&outs[first..first + per_bg])
            {
                for rr in 0..t.r {
                    let dst = (t.ot * ho + t.oh0 + rr) * wo;
                    let srcp = rr * self.p[2];
                    for (ow, v) in yp[dst..dst + wo].iter_mut().enumerate() {
                        *v = yt[(srcp + ow) * cog + co] + add;
                    }
                }
            }
        });
        Ok(y)
    }

    /// Weight gradient in the rearranged layout `[G, kT, kH, Cout/g, kW, Cin/g]`.
    fn weight_grad(&self, xcl: &[f32], dy: &[f32]) -> Result<Vec<f32>> {
        let (cig, cog) = (self.cin_g, self.cout_g);
        let kw = self.k[2];
        let [to, ho, wo] = self.out;
        let cout = self.groups * cog;
        let pos_stride = self.stride[2] * cig;
        let len = self.groups * self.k[0] * self.k[1] * cog * kw * cig;
        let tiles = self.tiles();
        // Fixed contiguous runs of tiles, one partial sum each, added in run order: rayon's
        // `fold` / `reduce` would group tiles as work stealing happens to split them, and the
        // f32 sums (the gradient) would change in their last bits from run to run. The runs
        // depend only on the tile count and the pool's size.
        let parts = (2 * rayon::current_num_threads()).clamp(1, tiles.len().max(1));
        let run = tiles.len().div_ceil(parts).max(1);
        let partials = tiles
            .par_chunks(run)
            .map(|ts| -> Result<Vec<f32>> {
                let mut acc = vec![0f32; len];
                for t in ts {
                    let nn = self.cols(t);
                    // dy of the tile on the flat grid, zero in the dropped columns.
                    let mut dyt = vec![0f32; cog * nn];
                    for co in 0..cog {
                        for rr in 0..t.r {
                            let s = (((t.b * cout + t.g * cog + co) * to + t.ot) * ho + t.oh0 + rr)
                                * wo;
                            let d = co * nn + rr * self.p[2];
                            dyt[d..d + wo].copy_from_slice(&dy[s..s + wo]);
                        }
                    }
                    for jt in 0..self.k[0] {
                        for jh in 0..self.k[1] {
                            let base = self.base(t, jt, jh);
                            let wb = self.wblock(t.g, jt, jh);
                            if self.dil[2] == 1 {
                                gemm(
                                    cog,
                                    kw * cig,
                                    nn,
                                    &mut acc,
                                    View::new(wb, kw * cig, 1),
                                    &dyt,
                                    View::new(0, nn, 1),
                                    xcl,
                                    View::new(base, pos_stride, 1),
                                    true,
                                    Threads::One,
                                )?;
                            } else {
                                for jw in 0..kw {
                                    gemm(
                                        cog,
                                        cig,
                                        nn,
                                        &mut acc,
                                        View::new(wb + jw * cig, kw * cig, 1),
                                        &dyt,
                                        View::new(0, nn, 1),
                                        xcl,
                                        View::new(base + jw * self.dil[2] * cig, pos_stride, 1),
                                        true,
                                        Threads::One,
                                    )?;
                                }
                            }
                        }
                    }
                }
                Ok(acc)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut sum = vec![0f32; len];
        sum.par_chunks_mut(4096).enumerate().for_each(|(i, dst)| {
            let o = i * 4096;
            for p in &partials {
                for (d, v) in dst.iter_mut().zip(&p[o..]) {
                    *d += v;
                }
            }
        });
        Ok(sum)
    }
}

/// `w [Cout, Cin/g, kT, kH, kW]` → `[G, kT, kH, Cout/g, kW, Cin/g]`.
fn rearrange_weight(g: &Geom, w: &[f32]) -> Vec<f32> {
    let [kt, kh, kw] = g.k;
    let (cig, cog) = (g.cin_g, g.cout_g);
    let mut wr = vec![0f32; g.w_len()];
    for gi in 0..g.groups {
        for co in 0..cog {
            for c in 0..cig {
                for jt in 0..kt {
                    for jh in 0..kh {
                        for jw in 0..kw {
                            let s = (((((gi * cog + co) * cig + c) * kt + jt) * kh + jh) * kw) + jw;
                            let d = (((((gi * kt + jt) * kh + jh) * cog + co) * kw + jw) * cig) + c;
                            wr[d] = w[s];
                        }
                    }
                }
            }
        }
    }
    wr
}

/// `[G, kT, kH, Cout/g, kW, Cin/g]` → `w [Cout, Cin/g, kT, kH, kW]`.
fn unrearrange_weight(g: &Geom, wr: &[f32]) -> Vec<f32> {
    let [kt, kh, kw] = g.k;
    let (cig, cog) = (g.cin_g, g.cout_g);
    let mut w = vec![0f32; g.w_len()];
    for gi in 0..g.groups {
        for co in 0..cog {
            for c in 0..cig {
                for jt in 0..kt {
                    for jh in 0..kh {
                        for jw in 0..kw {
                            let d = (((((gi * cog + co) * cig + c) * kt + jt) * kh + jh) * kw) + jw;
                            let s = (((((gi * kt + jt) * kh + jh) * cog + co) * kw + jw) * cig) + c;
                            w[d] = wr[s];
                        }
                    }
                }
            }
        }
    }
    w
}

/// The flipped, transposed weight of the input gradient, rearranged:
/// `[G, kT, kH, Cin/g, kW, Cout/g]` holding `w[g·Cout/g + co, c, kT−1−jt, kH−1−jh, kW−1−jw]`.
fn transposed_weight(g: &Geom, w: &[f32]) -> Vec<f32> {
    let [kt, kh, kw] = g.k;
    let (cig, cog) = (g.cin_g, g.cout_g);
    let mut wr = vec![0f32; g.w_len()];
    for gi in 0..g.groups {
        for co in 0..cog {
            for c in 0..cig {
                for jt in 0..kt {
                    for jh in 0..kh {
                        for jw in 0..kw {
                            let s = (((((gi * cog + co) * cig + c) * kt + (kt - 1 - jt)) * kh
                                + (kh - 1 - jh))
                                * kw)
                                + (kw - 1 - jw);
                            let d = (((((gi * kt + jt) * kh + jh) * cig + c) * kw + jw) * cog) + co;
                            wr[d] = w[s];
                        }
                    }
                }
            }
        }
    }
    wr
}

fn forward_problem(g: &Geom) -> Implicit {
    Implicit {
        b: g.b,
        groups: g.groups,
        cin_g: g.cin_g,
        cout_g: g.cout_g,
        p: [0, 1, 2].map(|d| g.inp[d] + 2 * g.pad[d]),
        k: g.k,
        stride: g.stride,
        dil: g.dil,
        out: g.out,
    }
}

fn padded_input(g: &Geom, x: &[f32]) -> Vec<f32> {
    let ip = forward_problem(g);
    pad_channels_last(
        x,
        g.b,
        g.cin,
        g.groups,
        g.inp,
        ip.p,
        g.pad.map(|p| p as isize),
        [1, 1, 1],
    )
}

/// General forward (implicit gemm), plus `bias` `[Cout]` when given.
pub(crate) fn general_forward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let xcl = padded_input(g, x);
    forward_problem(g).forward(&xcl, &rearrange_weight(g, w), bias)
}

/// General input gradient: a stride-1 convolution of the upsampled, padded `dy` with the flipped,
/// transposed weight.
pub(crate) fn general_backward_input(g: &Geom, dy: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    let span = [0, 1, 2].map(|d| g.dil[d] * (g.k[d] - 1));
    let p = [0, 1, 2].map(|d| g.inp[d] + span[d]);
    let lo = [0, 1, 2].map(|d| span[d] as isize - g.pad[d] as isize);
    let ycl = pad_channels_last(dy, g.b, g.cout, g.groups, g.out, p, lo, g.stride);
    let ip = Implicit {
        b: g.b,
        groups: g.groups,
        cin_g: g.cout_g,
        cout_g: g.cin_g,
        p,
        k: g.k,
        stride: [1, 1, 1],
        dil: g.dil,
        out: g.inp,
    };
    ip.forward(&ycl, &transposed_weight(g, w), None)
}

/// General weight gradient.
pub(crate) fn general_backward_weight(g: &Geom, x: &[f32], dy: &[f32]) -> Result<Vec<f32>> {
    let xcl = padded_input(g, x);
    let wr = forward_problem(g).weight_grad(&xcl, dy)?;
    Ok(unrearrange_weight(g, &wr))
}
