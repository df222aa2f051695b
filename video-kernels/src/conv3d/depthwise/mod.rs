//! Depthwise conv3d (`groups == Cin`, `Cout = m·Cin`): direct loops over one channel plane at a
//! time, the inner loop a `y[w] += k·x[w·s + off]` sweep over one output row (vectorised for unit
//! stride). Output channel `o` reads input channel `o / m`.
//!
//! All indexing is safe Rust on slices; the ranges come from [`valid_range`], so padding is never
//! materialised.

use rayon::prelude::*;

use super::geom::{valid_range, Geom};

#[cfg(target_arch = "x86_64")]
mod avx512;

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
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

fn isa() -> Isa {
    match crate::simd::level() {
        #[cfg(target_arch = "x86_64")]
        crate::simd::Level::Avx512 => Isa::Avx512,
        #[cfg(target_arch = "x86_64")]
        crate::simd::Level::Avx2Fma => Isa::Avx2Fma,
        _ => Isa::Baseline,
    }
}

/// Defines `$name(isa, args…)`, which runs the `#[inline(always)]` generic `$generic::<FMA>`
/// compiled for the baseline target, or re-compiled with AVX2 + FMA, or with AVX-512F too.
macro_rules! multiversion {
    ($name:ident, $avx:ident, $generic:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx($($arg: $ty),*) {
            $generic::<true>($($arg),*)
        }

        fn $name(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            #[allow(clippy::incompatible_msrv)]
            unsafe fn avx512($($arg: $ty),*) {
                $generic::<true>($($arg),*)
            }
            match isa {
                Isa::Baseline => $generic::<false>($($arg),*),
                // SAFETY: `Isa::Avx2Fma` / `Isa::Avx512` are only chosen after
                // `crate::simd::level()` confirmed their features on this CPU, which is the
                // one requirement of a `#[target_feature]` function.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2Fma => unsafe { $avx($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512($($arg),*) },
            }
        }
    };
}

/// Lanes of one accumulator of the register-blocked plane kernel (one AVX-512 vector, two AVX2).
pub(crate) const LANES: usize = 16;

/// One depthwise correlation of a plane, in the form both the forward and the unit-stride input
/// gradient take: `out[o] = Σ_j wk[j] · inp[o·s + j·d − p]` per dim (`inp` zero outside its
/// range), with unit stride along W.
#[derive(Clone, Copy)]
pub(crate) struct Corr {
    pub n_in: [usize; 3],
    pub n_out: [usize; 3],
    pub k: [usize; 3],
    /// Strides along T and H (W's is 1).
    pub s: [usize; 2],
    pub d: [usize; 3],
    pub p: [isize; 3],
    /// Accumulator vectors per output-row block (1..=4).
    pub nv: usize,
    /// Row length of the W-padded input copy.
    pub wp: usize,
}

impl Corr {
    fn new(
        n_in: [usize; 3],
        n_out: [usize; 3],
        k: [usize; 3],
        s: [usize; 2],
        d: [usize; 3],
        p: [isize; 3],
    ) -> Self {
        let nv = n_out[2].div_ceil(LANES).clamp(1, 4);
        let block = nv * LANES;
        let wp = n_out[2].div_ceil(block) * block + (k[2] - 1) * d[2];
        Corr {
            n_in,
            n_out,
            k,
            s,
            d,
            p,
            nv,
            wp,
        }
    }

    /// The forward of a stride-1-along-W depthwise call.
    fn forward(g: &Geom) -> Self {
        Self::new(
            g.inp,
            g.out,
            g.k,
            [g.stride[0], g.stride[1]],
            g.dil,
            g.pad.map(|p| p as isize),
        )
    }

    /// The input gradient of a unit-stride call: a correlation of `dy` with the flipped taps,
    /// padded by `(k − 1)·d − p`.
    fn backward_input(g: &Geom) -> Self {
        let p = [0, 1, 2].map(|i| ((g.k[i] - 1) * g.dil[i]) as isize - g.pad[i] as isize);
        Self::new(g.out, g.inp, g.k, [1, 1], g.dil, p)
    }

    /// Input index of output `o`, tap `j` along T (`dim` 0) or H (1), if inside the input.
    #[inline(always)]
    pub(crate) fn src(&self, dim: usize, o: usize, j: usize) -> Option<usize> {
        let i = (o * self.s[dim] + j * self.d[dim]) as isize - self.p[dim];
        (i >= 0 && (i as usize) < self.n_in[dim]).then_some(i as usize)
    }

    /// `buf ← inp [T, H, W]` with each row re-laid at `q = w + p_W` in rows of `wp` (zeros
    /// elsewhere), so that every tap of every output block reads one in-range contiguous run;
    /// one more row of zeros at the end stands in for rows outside the input.
    fn pad_rows(&self, inp: &[f32], buf: &mut Vec<f32>) {
        let [t, h, w] = self.n_in;
        buf.clear();
        buf.resize((t * h + 1) * self.wp, 0.0);
        let pw = self.p[2];
        // Source columns that land inside [0, wp).
        let lo = (-pw).max(0) as usize;
        let hi = ((self.wp as isize - pw).max(0) as usize).min(w);
        if lo >= hi {
            return;
        }
        let q0 = (lo as isize + pw) as usize;
        for (dst, src) in buf.chunks_exact_mut(self.wp).zip(inp.chunks_exact(w)) {
            dst[q0..q0 + (hi - lo)].copy_from_slice(&src[lo..hi]);
        }
    }
}

/// The correlation `c` of the W-padded plane `xpad` with taps `wk`, written to `out` plus
/// `init` (a bias), or with `init = None` added to `out`. Each block of `NV·16` outputs of a row
/// stays in registers over all taps and is stored once (the axpy form reloads and stores the
/// output row once per tap).
#[inline(always)]
fn corr_plane<const FMA: bool, const NV: usize>(
    c: &Corr,
    xpad: &[f32],
    wk: &[f32],
    out: &mut [f32],
    init: Option<f32>,
) {
    let [to, ho, wo] = c.n_out;
    let [_, h, _] = c.n_in;
    let [kt, kh, kw] = c.k;
    let (wp, dw) = (c.wp, c.d[2]);
    let block = NV * LANES;
    for ot in 0..to {
        for oh in 0..ho {
            let orow = &mut out[(ot * ho + oh) * wo..][..wo];
            let mut ow0 = 0;
            while ow0 < wo {
                let mut acc = [[init.unwrap_or(0.0); LANES]; NV];
                for jt in 0..kt {
                    let Some(it) = c.src(0, ot, jt) else { continue };
                    for jh in 0..kh {
                        let Some(ih) = c.src(1, oh, jh) else { continue };
                        let row = &xpad[(it * h + ih) * wp..][..wp];
                        let taps = &wk[(jt * kh + jh) * kw..][..kw];
                        for (jw, &a) in taps.iter().enumerate() {
                            let seg = &row[ow0 + jw * dw..][..block];
                            for (av, xv) in acc.iter_mut().zip(seg.chunks_exact(LANES)) {
                                for (y, &x) in av.iter_mut().zip(xv) {
                                    *y = madd::<FMA>(a, x, *y);
                                }
                            }
                        }
                    }
                }
                let n = (wo - ow0).min(block);
                for (v, av) in acc.iter().enumerate() {
                    let lo = v * LANES;
                    if lo >= n {
                        break;
                    }
                    let dst = &mut orow[ow0 + lo..ow0 + n.min(lo + LANES)];
                    if init.is_none() {
                        for (o, &y) in dst.iter_mut().zip(av) {
                            *o += y;
                        }
                    } else {
                        dst.copy_from_slice(&av[..dst.len()]);
                    }
                }
                ow0 += block;
            }
        }
    }
}

#[inline(always)]
fn corr_plane_any<const FMA: bool>(
    c: &Corr,
    xpad: &[f32],
    wk: &[f32],
    out: &mut [f32],
    init: Option<f32>,
) {
    match c.nv {
        1 => corr_plane::<FMA, 1>(c, xpad, wk, out, init),
        2 => corr_plane::<FMA, 2>(c, xpad, wk, out, init),
        3 => corr_plane::<FMA, 3>(c, xpad, wk, out, init),
        _ => corr_plane::<FMA, 4>(c, xpad, wk, out, init),
    }
}

multiversion!(corr_plane_mv_generic, corr_plane_avx2, corr_plane_any, (c: &Corr, xpad: &[f32], wk: &[f32], out: &mut [f32], init: Option<f32>));

/// [`corr_plane`] on the hand-written AVX-512 kernel where available.
fn corr_plane_mv(isa: Isa, c: &Corr, xpad: &[f32], wk: &[f32], out: &mut [f32], init: Option<f32>) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && avx512::covers(c, xpad, wk, out) {
        use avx512::corr_plane as k;
        // SAFETY: `Isa::Avx512` was detected at run time and `covers` checked the ranges.
        unsafe {
            match c.nv {
                1 => k::<1, 8>(c, xpad, wk, out, init),
                2 => k::<2, 4>(c, xpad, wk, out, init),
                3 => k::<3, 4>(c, xpad, wk, out, init),
                _ => k::<4, 3>(c, xpad, wk, out, init),
            }
        }
        return;
    }
    corr_plane_mv_generic(isa, c, xpad, wk, out, init)
}

/// Whether the register-blocked kernel applies: unit W stride, and a vector ISA (the scalar
/// baseline gains nothing from the padded copy).
fn use_corr(g: &Geom, isa: Isa) -> bool {
    g.stride[2] == 1 && isa != Isa::Baseline
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

/// Forward: `y [B, Cout, T', H', W']` from `x [B, Cin, T, H, W]`, `w [Cout, 1, kT, kH, kW]`,
/// plus `bias` `[Cout]` when given.
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let m = g.cout / g.cin;
    let (plane_in, plane_out, taps) = (
        g.inp.iter().product::<usize>(),
        g.out.iter().product::<usize>(),
        g.taps(),
    );
    let isa = isa();
    if use_corr(g, isa) {
        let mut y = vec![0f32; g.out_len()];
        let c = Corr::forward(g);
        y.par_chunks_mut(plane_out)
            .enumerate()
            .for_each_init(Vec::new, |buf, (bc, yp)| {
                let (b, co) = (bc / g.cout, bc % g.cout);
                let xp = &x[(b * g.cin + co / m) * plane_in..][..plane_in];
                c.pad_rows(xp, buf);
                let init = bias.map_or(0.0, |b| b[co]);
                corr_plane_mv(isa, &c, buf, &w[co * taps..][..taps], yp, Some(init));
            });
        return y;
    }
    let mut y = super::geom::output_init(g, bias);
    let c = Ctx::new(g);
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
    let isa = isa();
    let mut dx = vec![0f32; g.in_len()];
    if g.stride == [1, 1, 1] && use_corr(g, isa) {
        let c = Corr::backward_input(g);
        dx.par_chunks_mut(plane_in).enumerate().for_each_init(
            || (Vec::new(), vec![0f32; taps]),
            |(buf, flipped), (bc, dxp)| {
                let (b, ci) = (bc / g.cin, bc % g.cin);
                for (n, co) in (ci * m..(ci + 1) * m).enumerate() {
                    let dyp = &dy[(b * g.cout + co) * plane_out..][..plane_out];
                    for (f, &v) in flipped.iter_mut().zip(w[co * taps..][..taps].iter().rev()) {
                        *f = v;
                    }
                    c.pad_rows(dyp, buf);
                    // The first output channel writes the plane, the others add to it.
                    let init = if n == 0 { Some(0.0) } else { None };
                    corr_plane_mv(isa, &c, buf, flipped, dxp, init);
                }
            },
        );
        return dx;
    }
    let c = Ctx::new(g);
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
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && use_corr(g, isa) {
        let corr = Corr::forward(g);
        dw.par_chunks_mut(taps)
            .enumerate()
            .for_each_init(Vec::new, |buf, (co, dwk)| {
                let ci = co / m;
                for b in 0..g.b {
                    let dyp = &dy[(b * g.cout + co) * plane_out..][..plane_out];
                    let xp = &x[(b * g.cin + ci) * plane_in..][..plane_in];
                    corr.pad_rows(xp, buf);
                    if avx512::covers_wgrad(&corr, buf, dyp, dwk) {
                        // SAFETY: AVX-512F was detected at run time and `covers_wgrad` held.
                        unsafe { avx512::wgrad_plane(&corr, buf, dyp, dwk) };
                    } else {
                        dw_plane_mv(isa, &c, dyp, xp, dwk);
                    }
                }
            });
        return dw;
    }
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
