//! Depthwise conv3d (`groups == Cin`, `Cout = m·Cin`): direct loops over one channel plane at a
//! time, the inner loop a `y[w] += k·x[w·s + off]` sweep over one output row (vectorised for unit
//! stride). Output channel `o` reads input channel `o / m`.
//!
//! All indexing is safe Rust on slices; the ranges come from [`valid_range`], so padding is never
//! materialised.

use rayon::prelude::*;

use super::geom::{valid_range, Geom};

/// Per-dim valid output ranges for every tap index of that dim.
fn ranges(g: &Geom, d: usize) -> Vec<(usize, usize)> {
    (0..g.k[d])
        .map(|j| valid_range(g.inp[d], g.out[d], g.stride[d], g.dil[d], g.pad[d], j))
        .collect()
}

/// Input index of output `o`, tap `j` in dim `d` (only called inside its valid range).
#[inline(always)]
fn src(g: &Geom, d: usize, o: usize, j: usize) -> usize {
    o * g.stride[d] + j * g.dil[d] - g.pad[d]
}

/// `acc + a·b`, fused when the caller was compiled with FMA (`f32::mul_add` without hardware
/// FMA is a slow library call, hence the switch).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, acc: f32) -> f32 {
    if FMA {
        a.mul_add(b, acc)
    } else {
        acc + a * b
    }
}

/// `y[i] += a·x[i]` over equal-length slices.
#[inline(always)]
fn axpy<const FMA: bool>(y: &mut [f32], x: &[f32], a: f32) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv = madd::<FMA>(a, *xv, *yv);
    }
}

/// Instruction sets the plane kernels are compiled for, picked once per call at run time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isa {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2Fma;
        }
    }
    Isa::Baseline
}

/// Defines `$name(isa, args…)`, which runs the `#[inline(always)]` generic `$generic::<FMA>` either
/// as compiled for the baseline target or re-compiled with AVX2 + FMA enabled.
macro_rules! multiversion {
    ($name:ident, $avx:ident, $generic:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx($($arg: $ty),*) {
            $generic::<true>($($arg),*)
        }

        fn $name(isa: Isa, $($arg: $ty),*) {
            match isa {
                Isa::Baseline => $generic::<false>($($arg),*),
                // SAFETY: `Isa::Avx2Fma` is only chosen after `is_x86_feature_detected!` confirmed
                // both features on this CPU, which is the one requirement of a
                // `#[target_feature]` function.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2Fma => unsafe { $avx($($arg),*) },
            }
        }
    };
}

/// What the plane kernels share: the geometry and each dim's valid output range per tap.
struct Ctx<'a> {
    g: &'a Geom,
    rt: Vec<(usize, usize)>,
    rh: Vec<(usize, usize)>,
    rw: Vec<(usize, usize)>,
}

impl<'a> Ctx<'a> {
    fn new(g: &'a Geom) -> Self {
        Ctx {
            g,
            rt: ranges(g, 0),
            rh: ranges(g, 1),
            rw: ranges(g, 2),
        }
    }
}

/// One output plane `yp [T', H', W']` of output channel `co` from its input plane `xp`.
#[inline(always)]
fn fwd_plane<const FMA: bool>(c: &Ctx, xp: &[f32], wk: &[f32], yp: &mut [f32]) {
    let g = c.g;
    let [to, ho, wo] = g.out;
    let [_, h, wi] = g.inp;
    let [kt, kh, kw] = g.k;
    let sw = g.stride[2];
    for ot in 0..to {
        for oh in 0..ho {
            let yrow = &mut yp[(ot * ho + oh) * wo..][..wo];
            for jt in 0..kt {
                if ot < c.rt[jt].0 || ot >= c.rt[jt].1 {
                    continue;
                }
                let it = src(g, 0, ot, jt);
                for jh in 0..kh {
                    if oh < c.rh[jh].0 || oh >= c.rh[jh].1 {
                        continue;
                    }
                    let ih = src(g, 1, oh, jh);
                    let xrow = &xp[(it * h + ih) * wi..][..wi];
                    for (jw, &(lo, hi)) in c.rw.iter().enumerate() {
                        if lo >= hi {
                            continue;
                        }
                        let a = wk[(jt * kh + jh) * kw + jw];
                        let s0 = src(g, 2, lo, jw);
                        if sw == 1 {
                            axpy::<FMA>(&mut yrow[lo..hi], &xrow[s0..s0 + (hi - lo)], a);
                        } else {
                            for (yv, xv) in
                                yrow[lo..hi].iter_mut().zip(xrow[s0..].iter().step_by(sw))
                            {
                                *yv = madd::<FMA>(a, *xv, *yv);
                            }
                        }
                    }
                }
            }
        }
    }
}

multiversion!(fwd_plane_mv, fwd_plane_avx2, fwd_plane, (c: &Ctx, xp: &[f32], wk: &[f32], yp: &mut [f32]));

/// Forward: `y [B, Cout, T', H', W']` from `x [B, Cin, T, H, W]`, `w [Cout, 1, kT, kH, kW]`.
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let m = g.cout / g.cin;
    let (plane_in, plane_out, taps) = (
        g.inp.iter().product::<usize>(),
        g.out.iter().product::<usize>(),
        g.taps(),
    );
    let (c, isa) = (Ctx::new(g), isa());
    let mut y = vec![0f32; g.out_len()];
    y.par_chunks_mut(plane_out)
        .enumerate()
        .for_each(|(bc, yp)| {
            let (b, co) = (bc / g.cout, bc % g.cout);
            let xp = &x[(b * g.cin + co / m) * plane_in..][..plane_in];
            fwd_plane_mv(isa, &c, xp, &w[co * taps..][..taps], yp);
        });
    y
}

/// Adds the input-gradient contribution of output channel plane `dyp` (weights `wk`) to the
/// input plane `dxp` (scatter form).
#[inline(always)]
fn dx_plane<const FMA: bool>(c: &Ctx, dyp: &[f32], wk: &[f32], dxp: &mut [f32]) {
    let g = c.g;
    let [to, ho, wo] = g.out;
    let [_, h, wi] = g.inp;
    let [kt, kh, kw] = g.k;
    let sw = g.stride[2];
    for ot in 0..to {
        for oh in 0..ho {
            let dyrow = &dyp[(ot * ho + oh) * wo..][..wo];
            for jt in 0..kt {
                if ot < c.rt[jt].0 || ot >= c.rt[jt].1 {
                    continue;
                }
                let it = src(g, 0, ot, jt);
                for jh in 0..kh {
                    if oh < c.rh[jh].0 || oh >= c.rh[jh].1 {
                        continue;
                    }
                    let ih = src(g, 1, oh, jh);
                    let dxrow = &mut dxp[(it * h + ih) * wi..][..wi];
                    for (jw, &(lo, hi)) in c.rw.iter().enumerate() {
                        if lo >= hi {
                            continue;
                        }
                        let a = wk[(jt * kh + jh) * kw + jw];
                        let s0 = src(g, 2, lo, jw);
                        if sw == 1 {
                            axpy::<FMA>(&mut dxrow[s0..s0 + (hi - lo)], &dyrow[lo..hi], a);
                        } else {
                            for (xv, yv) in dxrow[s0..].iter_mut().step_by(sw).zip(&dyrow[lo..hi]) {
                                *xv = madd::<FMA>(a, *yv, *xv);
                            }
                        }
                    }
                }
            }
        }
    }
}

multiversion!(dx_plane_mv, dx_plane_avx2, dx_plane, (c: &Ctx, dyp: &[f32], wk: &[f32], dxp: &mut [f32]));

/// Input gradient: `dx [B, Cin, T, H, W]` from `dy [B, Cout, T', H', W']` (one input plane per
/// task, so writes never overlap).
pub(crate) fn backward_input(g: &Geom, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let m = g.cout / g.cin;
    let (plane_in, plane_out, taps) = (
        g.inp.iter().product::<usize>(),
        g.out.iter().product::<usize>(),
        g.taps(),
    );
    let (c, isa) = (Ctx::new(g), isa());
    let mut dx = vec![0f32; g.in_len()];
    dx.par_chunks_mut(plane_in)
        .enumerate()
        .for_each(|(bc, dxp)| {
            let (b, ci) = (bc / g.cin, bc % g.cin);
            for co in ci * m..(ci + 1) * m {
                let dyp = &dy[(b * g.cout + co) * plane_out..][..plane_out];
                dx_plane_mv(isa, &c, dyp, &w[co * taps..][..taps], dxp);
            }
        });
    dx
}

/// Adds `Σ dy·x` over one (output plane, input plane) pair to the taps `dwk` of its channel.
///
/// For unit W stride the products are summed elementwise into one row-long accumulator per tap
/// (`acc[tap][w] += dy[w]·x[w + off]`, a vectorised multiply-add) and each accumulator is reduced
/// once at the end, instead of one horizontal reduction per row and tap.
#[inline(always)]
fn dw_plane<const FMA: bool>(c: &Ctx, dyp: &[f32], xp: &[f32], dwk: &mut [f32]) {
    let g = c.g;
    let [to, ho, wo] = g.out;
    let [_, h, wi] = g.inp;
    let [kt, kh, kw] = g.k;
    let sw = g.stride[2];
    let mut acc = vec![0f32; if sw == 1 { dwk.len() * wo } else { 0 }];
    for ot in 0..to {
        for oh in 0..ho {
            let dyrow = &dyp[(ot * ho + oh) * wo..][..wo];
            for jt in 0..kt {
                if ot < c.rt[jt].0 || ot >= c.rt[jt].1 {
                    continue;
                }
                let it = src(g, 0, ot, jt);
                for jh in 0..kh {
                    if oh < c.rh[jh].0 || oh >= c.rh[jh].1 {
                        continue;
                    }
                    let ih = src(g, 1, oh, jh);
                    let xrow = &xp[(it * h + ih) * wi..][..wi];
                    for (jw, &(lo, hi)) in c.rw.iter().enumerate() {
                        if lo >= hi {
                            continue;
                        }
                        let tap = (jt * kh + jh) * kw + jw;
                        let s0 = src(g, 2, lo, jw);
                        if sw == 1 {
                            let a = &mut acc[tap * wo..][lo..hi];
                            for ((s, d), x) in a.iter_mut().zip(&dyrow[lo..hi]).zip(&xrow[s0..]) {
                                *s = madd::<FMA>(*d, *x, *s);
                            }
                        } else {
                            dwk[tap] += dyrow[lo..hi]
                                .iter()
                                .zip(xrow[s0..].iter().step_by(sw))
                                .fold(0.0, |s, (a, b)| madd::<FMA>(*a, *b, s));
                        }
                    }
                }
            }
        }
    }
    if sw == 1 {
        for (d, a) in dwk.iter_mut().zip(acc.chunks_exact(wo)) {
            *d += sum(a);
        }
    }
}

/// `Σ a[i]` with 16 partial sums.
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let ch = a.chunks_exact(16);
    let rest: f32 = ch.remainder().iter().sum();
    for c in ch {
        for (s, v) in acc.iter_mut().zip(c) {
            *s += v;
        }
    }
    acc.iter().sum::<f32>() + rest
}

multiversion!(dw_plane_mv, dw_plane_avx2, dw_plane, (c: &Ctx, dyp: &[f32], xp: &[f32], dwk: &mut [f32]));

/// Weight gradient: `dw [Cout, 1, kT, kH, kW]` from `x` and `dy` (one output channel per task).
pub(crate) fn backward_weight(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let m = g.cout / g.cin;
    let (plane_in, plane_out, taps) = (
        g.inp.iter().product::<usize>(),
        g.out.iter().product::<usize>(),
        g.taps(),
    );
    let (c, isa) = (Ctx::new(g), isa());
    let mut dw = vec![0f32; g.w_len()];
    dw.par_chunks_mut(taps).enumerate().for_each(|(co, dwk)| {
        let ci = co / m;
        for b in 0..g.b {
            let dyp = &dy[(b * g.cout + co) * plane_out..][..plane_out];
            let xp = &x[(b * g.cin + ci) * plane_in..][..plane_in];
            dw_plane_mv(isa, &c, dyp, xp, dwk);
        }
    });
    dw
}
