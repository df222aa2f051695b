//! SwiGLU on a fused gate / up projection: `silu(x[..., :I]) · x[..., I:]` in one pass; GEGLU
//! (`x[..., :I] · gelu(x[..., I:])`, diffusers' `GEGLU`) and the exact (erf) GELU likewise.
//!
//! Llama-style MLPs compute `silu(gate(x)) · up(x)`. With the two projections fused into one
//! product (weights concatenated on the output dim, one packing of `x`), the result holds gate
//! and up side by side in each row; candle's element-wise ops on those two strided halves are
//! slow, and `silu` then `·` are two passes with an intermediate buffer. [`swiglu`] reads each
//! row once and writes the product, with a vectorised `exp` (the attention kernels' Cody–Waite
//! `exp`, about 1 ulp), rows split over rayon's threads.
//!
//! Under gradient tracking (f32, CPU), [`geglu`] and [`gelu_erf`] are custom ops with the same
//! vectorised forward and a one-pass backward (`gelu'(x) = Φ(x) + x·φ(x)`), instead of candle's
//! `gelu_erf`, which calls libm's scalar `erff` per element forward and backward.

use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;
use vidgen_video_core::{Error, Result};

use crate::simd::exp_f32;

/// `silu(x[..., :I]) · x[..., I:]` with candle ops (the definition [`swiglu`] is tested
/// against; differentiable).
///
/// # Shapes
/// `x`: `[..., 2·I]` → `[..., I]`.
pub fn swiglu_reference(x: &Tensor) -> Result<Tensor> {
    let i = half_width(x)?;
    let g = x.narrow(D::Minus1, 0, i)?;
    let u = x.narrow(D::Minus1, i, i)?;
    Ok((g.silu()? * u)?)
}

/// `silu(x[..., :I]) · x[..., I:]` where `silu(g) = g / (1 + e^(−g))`: one pass over
/// contiguous f32 on the CPU without gradient tracking, [`swiglu_reference`] otherwise.
///
/// # Shapes
/// `x`: `[..., 2·I]` (gate then up, e.g. a fused `[gate_proj; up_proj]` output) → `[..., I]`.
///
/// # Errors
/// A rank-0 input or an odd last dimension.
pub fn swiglu(x: &Tensor) -> Result<Tensor> {
    if !fast(x) {
        return swiglu_reference(x);
    }
    glu_rows(x, "swiglu input", silu_mul)
}

/// For each row `[a, b]` (halves of the last dim) of contiguous-able f32 `x`, `f(a, b, out)`
/// writes the output row; rows in parallel. The shared body of [`swiglu`] and [`geglu`].
fn glu_rows(
    x: &Tensor,
    what: &str,
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> Result<Tensor> {
    let i = half_width(x)?;
    let x = x.contiguous()?;
    let mut out_shape = x.dims().to_vec();
    if let Some(l) = out_shape.last_mut() {
        *l = i;
    }
    if i == 0 {
        return Ok(Tensor::zeros(out_shape, DType::F32, x.device())?);
    }
    let out = {
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return Err(Error::invalid(what, "CPU tensor without CPU storage"));
        };
        let all = cpu.as_slice::<f32>()?;
        let src = match layout.contiguous_offsets() {
            Some((a, b)) => &all[a..b],
            None => return Err(Error::invalid(what, "not contiguous after copy")),
        };
        glu_slice(src, i, f)
    };
    Ok(Tensor::from_vec(out, out_shape, x.device())?)
}

/// The rows `[a, b]` (halves of width `i ≥ 1`) of `src` → `f(a, b, out)` per row, rows in
/// parallel.
fn glu_slice(src: &[f32], i: usize, f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let rows = src.len() / (2 * i);
    // ~64 Ki outputs per task: long enough that rayon's scheduling is noise.
    let per_task = (65_536 / i).max(1);
    let write = |first: usize, o: &mut [f32]| {
        for (orow, srow) in o
            .chunks_exact_mut(i)
            .zip(src[2 * first..].chunks_exact(2 * i))
        {
            let (a, b) = srow.split_at(i);
            f(a, b, orow);
        }
    };
    // SAFETY: the chunks are whole rows of `i`, and every `f` of this module assigns each
    // element of its output row from `a` and `b` without reading it.
    unsafe { vidgen_video_core::buffer::par_write(rows * i, per_task * i, write) }
}

/// `gelu(x)` element-wise, in parallel chunks.
fn gelu_vec(xs: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(65_536)
        .zip(xs.par_chunks(65_536))
        .for_each(|(o, s)| gelu_into(s, None, o));
    out
}

/// Whether the fused path takes `x`: f32 on the CPU, no gradient tracking, twins not forced.
fn fast(x: &Tensor) -> bool {
    !x.track_op()
        && x.dtype() == DType::F32
        && matches!(x.device(), Device::Cpu)
        && !crate::reference_forced()
}

/// Whether the tracked custom ops take `x`: f32 on the CPU under gradient tracking, twins not
/// forced. candle's own `gelu_erf` calls libm's scalar `erff` per element, forward and again in
/// its backward (5% of an AID adapter-training step, `perf`); these use the vectorised `erfc`.
fn tracked_fast(x: &Tensor) -> bool {
    x.track_op()
        && x.dtype() == DType::F32
        && matches!(x.device(), Device::Cpu)
        && !crate::reference_forced()
}

fn half_width(x: &Tensor) -> Result<usize> {
    let last = match x.dims().last() {
        Some(&l) => l,
        None => {
            return Err(Error::invalid(
                "swiglu input",
                "rank 0, expected [..., 2·I]",
            ))
        }
    };
    if !last.is_multiple_of(2) {
        return Err(Error::invalid(
            "swiglu input",
            format!(
                "last dim of {:?} is odd; expected [..., 2·I] (gate then up)",
                x.dims()
            ),
        ));
    }
    Ok(last / 2)
}

/// `out = g / (1 + e^(−g)) · u`, dispatched to the widest SIMD this CPU has (the same loop,
/// compiled per feature set).
fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::simd::has_avx512f() {
            // SAFETY: the feature was detected.
            return unsafe { silu_mul_avx512(g, u, out) };
        }
        if crate::simd::has_avx2_fma() {
            // SAFETY: the features were detected.
            return unsafe { silu_mul_avx2(g, u, out) };
        }
    }
    silu_mul_loop(g, u, out)
}

#[inline(always)]
fn silu_mul_loop(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + exp_f32(-g)) * u;
    }
}

/// # Safety
/// AVX-512F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_mul_avx512(g: &[f32], u: &[f32], out: &mut [f32]) {
    silu_mul_loop(g, u, out)
}

/// # Safety
/// AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul_avx2(g: &[f32], u: &[f32], out: &mut [f32]) {
    silu_mul_loop(g, u, out)
}

/// `xs[i] ← xs[i] / (1 + e^(−xs[i]))` (SiLU) in place, vectorised with the widest SIMD this
/// CPU has; for fused kernels that produce a row and activate it (e.g. GroupNorm + SiLU).
pub fn silu_slice(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::simd::has_avx512f() {
            // SAFETY: the feature was detected.
            return unsafe { silu_inplace_avx512(xs) };
        }
        if crate::simd::has_avx2_fma() {
            // SAFETY: the features were detected.
            return unsafe { silu_inplace_avx2(xs) };
        }
    }
    silu_inplace_loop(xs)
}

#[inline(always)]
fn silu_inplace_loop(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = *x / (1.0 + exp_f32(-*x));
    }
}

/// # Safety
/// AVX-512F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_inplace_avx512(xs: &mut [f32]) {
    silu_inplace_loop(xs)
}

/// # Safety
/// AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_inplace_avx2(xs: &mut [f32]) {
    silu_inplace_loop(xs)
}

/// SiLU `x / (1 + e^(−x))` with candle's op (the definition [`silu`] is tested against;
/// differentiable).
///
/// # Shapes
/// Any shape → the same shape.
pub fn silu_reference(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::silu(x)?)
}

/// SiLU `x / (1 + e^(−x))`: vectorised and row-parallel for f32 on the CPU without gradient
/// tracking, [`silu_reference`] otherwise.
///
/// # Shapes
/// Any shape → the same shape.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if !fast(x) {
        return silu_reference(x);
    }
    let mut xs = x.flatten_all()?.to_vec1::<f32>()?;
    xs.par_chunks_mut(65_536).for_each(silu_slice);
    Ok(Tensor::from_vec(xs, x.dims(), x.device())?)
}

/// `Φ(x) = ½·erfc(−x/√2)`, the standard normal CDF, branch-free so loops vectorise.
///
/// `erfc` is Numerical Recipes' `erfcc` Chebyshev fit (fractional error < 1.2e-7 everywhere,
/// so the tail `x ≪ 0` keeps its relative accuracy) on top of the Cody–Waite `exp`.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the coefficients as published
fn normal_cdf(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let p = -0.822_152_23 + t * 0.170_872_77;
    let p = 1.488_515_87 + t * p;
    let p = -1.135_203_98 + t * p;
    let p = 0.278_868_07 + t * p;
    let p = -0.186_288_06 + t * p;
    let p = 0.096_784_18 + t * p;
    let p = 0.374_091_96 + t * p;
    let p = 1.000_023_68 + t * p;
    let p = -1.265_512_23 + t * p;
    // erfc(|z|); erfc(−z) is that for z ≤ 0 and 2 − that for z > 0.
    let e = t * exp_f32(-a * a + p);
    let erfc_neg_z = if z > 0.0 { 2.0 - e } else { e };
    0.5 * erfc_neg_z
}

/// `x · Φ(x)` (exact GELU).
#[inline(always)]
fn gelu_erf_f32(x: f32) -> f32 {
    x * normal_cdf(x)
}

/// `1 / √(2π)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `(gelu(x), gelu'(x))` with `gelu'(x) = Φ(x) + x·φ(x)`, `φ` the standard normal density.
#[inline(always)]
fn gelu_and_derivative(x: f32) -> (f32, f32) {
    let cdf = normal_cdf(x);
    let pdf = INV_SQRT_2PI * exp_f32(-0.5 * x * x);
    (x * cdf, cdf + x * pdf)
}

/// Exact GELU with candle ops (the definition [`gelu_erf`] is tested against).
///
/// # Shapes
/// Any shape → the same shape.
pub fn gelu_erf_reference(x: &Tensor) -> Result<Tensor> {
    Ok(x.gelu_erf()?)
}

/// Exact (erf) GELU, `x · Φ(x)`, vectorised over f32 on the CPU without gradient tracking
/// (absolute error ≲ 1e-7·|x| against libm's `erf`); [`gelu_erf_reference`] otherwise.
///
/// # Shapes
/// Any shape → the same shape.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if tracked_fast(x) {
        return Ok(x.contiguous()?.apply_op1(GeluOp { gated: false })?);
    }
    if !fast(x) {
        return gelu_erf_reference(x);
    }
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    Ok(Tensor::from_vec(gelu_vec(&xs), x.dims(), x.device())?)
}

/// `x[..., :I] · gelu(x[..., I:])` with candle ops (differentiable; the definition [`geglu`]
/// is tested against).
///
/// # Shapes
/// `x`: `[..., 2·I]` → `[..., I]`.
pub fn geglu_reference(x: &Tensor) -> Result<Tensor> {
    let i = half_width(x)?;
    let h = x.narrow(D::Minus1, 0, i)?;
    let gate = x.narrow(D::Minus1, i, i)?;
    Ok((h * gate.gelu_erf()?)?)
}

/// diffusers' `GEGLU` after its projection: `x[..., :I] · gelu(x[..., I:])` (exact GELU), one
/// pass over contiguous f32 on the CPU without gradient tracking; [`geglu_reference`]
/// otherwise.
///
/// # Shapes
/// `x`: `[..., 2·I]` (hidden then gate) → `[..., I]`.
///
/// # Errors
/// A rank-0 input or an odd last dimension.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    if tracked_fast(x) {
        half_width(x)?;
        return Ok(x.contiguous()?.apply_op1(GeluOp { gated: true })?);
    }
    if !fast(x) {
        return geglu_reference(x);
    }
    glu_rows(x, "geglu input", |h, gate, out| {
        gelu_into(gate, Some(h), out)
    })
}

/// `out = gelu(x) (· h)`, dispatched to the widest SIMD this CPU has.
fn gelu_into(x: &[f32], h: Option<&[f32]>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::simd::has_avx512f() {
            // SAFETY: the feature was detected.
            return unsafe { gelu_avx512(x, h, out) };
        }
        if crate::simd::has_avx2_fma() {
            // SAFETY: the features were detected.
            return unsafe { gelu_avx2(x, h, out) };
        }
    }
    gelu_loop(x, h, out)
}

#[inline(always)]
fn gelu_loop(x: &[f32], h: Option<&[f32]>, out: &mut [f32]) {
    match h {
        Some(h) => {
            for ((o, &x), &h) in out.iter_mut().zip(x).zip(h) {
                *o = h * gelu_erf_f32(x);
            }
        }
        None => {
            for (o, &x) in out.iter_mut().zip(x) {
                *o = gelu_erf_f32(x);
            }
        }
    }
}

/// # Safety
/// AVX-512F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_avx512(x: &[f32], h: Option<&[f32]>, out: &mut [f32]) {
    gelu_loop(x, h, out)
}

/// # Safety
/// AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(x: &[f32], h: Option<&[f32]>, out: &mut [f32]) {
    gelu_loop(x, h, out)
}

/// Exact GELU (`gated: false`, any shape) or GEGLU (`gated: true`, `[..., 2·I]` → `[..., I]`)
/// on a tracked input: the vectorised forward, and a backward in one pass,
/// `d gelu(x) = dy · gelu'(x)`, and for GEGLU `dh = dy · gelu(g)`, `dg = dy · h · gelu'(g)`.
/// The values are those of the untracked path; the gradient agrees with candle's autograd of
/// the reference within the `erfc` fit's error.
struct GeluOp {
    gated: bool,
}

/// Elements per rayon task of the tracked ops (~64 Ki).
const GELU_TASK: usize = 65_536;

impl candle_core::CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        if self.gated {
            "video-kernels-geglu"
        } else {
            "video-kernels-gelu-erf"
        }
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let xs = crate::storage::f32_slice(s, l, "gelu input")?;
        let dims = l.dims();
        if !self.gated {
            return Ok((
                candle_core::CpuStorage::F32(gelu_vec(xs)),
                l.shape().clone(),
            ));
        }
        let i = dims.last().copied().unwrap_or(0) / 2;
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = i;
        }
        // The same kernel as the untracked `geglu`.
        let out = if i == 0 {
            Vec::new()
        } else {
            glu_slice(xs, i, |h, g, o| gelu_into(g, Some(h), o))
        };
        Ok((candle_core::CpuStorage::F32(out), out_dims.into()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let arg = arg.contiguous()?;
        let grad = grad.contiguous()?;
        let gated = self.gated;
        let i = arg.dims().last().copied().unwrap_or(0) / 2;
        let dx = crate::storage::with_f32(&arg, "gelu input", |xs| {
            crate::storage::with_f32(&grad, "gelu gradient", |dy| {
                let mut dx = vec![0f32; xs.len()];
                if !gated {
                    dx.par_chunks_mut(GELU_TASK)
                        .zip(xs.par_chunks(GELU_TASK))
                        .zip(dy.par_chunks(GELU_TASK))
                        .for_each(|((d, x), g)| gelu_bwd_into(x, None, g, d));
                    return Ok::<_, Error>(dx);
                }
                if let Some(rows_per) = GELU_TASK.checked_div(i) {
                    let rows_per = rows_per.max(1);
                    dx.par_chunks_mut(rows_per * 2 * i)
                        .zip(xs.par_chunks(rows_per * 2 * i))
                        .zip(dy.par_chunks(rows_per * i))
                        .for_each(|((d, x), g)| {
                            for ((drow, xrow), grow) in d
                                .chunks_exact_mut(2 * i)
                                .zip(x.chunks_exact(2 * i))
                                .zip(g.chunks_exact(i))
                            {
                                let (h, gate) = xrow.split_at(i);
                                gelu_bwd_into(gate, Some(h), grow, drow);
                            }
                        });
                }
                Ok(dx)
            })
        })
        .map_err(crate::storage::to_candle)?;
        Ok(Some(Tensor::from_vec(dx, arg.dims(), arg.device())?))
    }
}

/// Backward of `gelu` (`h: None`; `d[j] = dy[j] · gelu'(x[j])`, `d` as long as `x`) or of
/// `h · gelu(x)` (`d = [dh | dx]`, twice as long as `x`), dispatched to the widest SIMD.
fn gelu_bwd_into(x: &[f32], h: Option<&[f32]>, dy: &[f32], d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::simd::has_avx512f() {
            // SAFETY: the feature was detected.
            return unsafe { gelu_bwd_avx512(x, h, dy, d) };
        }
        if crate::simd::has_avx2_fma() {
            // SAFETY: the features were detected.
            return unsafe { gelu_bwd_avx2(x, h, dy, d) };
        }
    }
    gelu_bwd_loop(x, h, dy, d)
}

#[inline(always)]
fn gelu_bwd_loop(x: &[f32], h: Option<&[f32]>, dy: &[f32], d: &mut [f32]) {
    match h {
        Some(h) => {
            let (dh, dx) = d.split_at_mut(x.len());
            for ((((dh, dx), &x), &h), &g) in dh.iter_mut().zip(dx).zip(x).zip(h).zip(dy) {
                let (v, dv) = gelu_and_derivative(x);
                *dh = g * v;
                *dx = g * h * dv;
            }
        }
        None => {
            for ((d, &x), &g) in d.iter_mut().zip(x).zip(dy) {
                *d = g * gelu_and_derivative(x).1;
            }
        }
    }
}

/// # Safety
/// AVX-512F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_bwd_avx512(x: &[f32], h: Option<&[f32]>, dy: &[f32], d: &mut [f32]) {
    gelu_bwd_loop(x, h, dy, d)
}

/// # Safety
/// AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_bwd_avx2(x: &[f32], h: Option<&[f32]>, dy: &[f32], d: &mut [f32]) {
    gelu_bwd_loop(x, h, dy, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Against libm's f64 `erf` on a dense grid: absolute error below 2e-7·max(1, |x|), and the
    /// negative tail keeps its relative accuracy.
    #[test]
    fn gelu_matches_f64_erf() {
        let xs: Vec<f64> = (0..=24_000).map(|i| -12.0 + i as f64 * 0.001).collect();
        let want = Tensor::new(xs.as_slice(), &Device::Cpu)
            .unwrap()
            .gelu_erf()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for (&x, &w) in xs.iter().zip(&want) {
            let got = gelu_erf_f32(x as f32) as f64;
            let err = (got - w).abs();
            assert!(err <= 2e-7 * x.abs().max(1.0), "x {x}: {got} vs {w}");
            if (-5.0..-0.5).contains(&x) {
                assert!(err <= 2e-5 * w.abs(), "tail x {x}: {got} vs {w}");
            }
        }
    }
}
