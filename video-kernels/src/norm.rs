//! Row norms over the last dim: RMSNorm (Llama's `LlamaRMSNorm`), alone or fused with the
//! residual add before it, and LayerNorm (`torch.nn.LayerNorm`, [`layer_norm`]).
//!
//! `rms_norm(x)[r, j] = x[r, j] / sqrt(mean_j x[r, j]² + eps) · weight[j]` over the last dim,
//! statistics in f32. A decoder layer computes `x = x + attn(..)` and then normalises the new
//! `x`: [`add_rms_norm`] does both in one pass over the rows (two reads and two writes of a
//! row instead of three reads and two writes in two operations), rows split over rayon's
//! threads. Tracked gradients, other dtypes / devices and [`crate::force_reference`] run the
//! twins ([`rms_norm_reference`], [`add_rms_norm_reference`]).

use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;
use vidgen_video_core::{Error, Result};

use crate::simd::sum8;

/// `x / sqrt(mean(x², last dim) + eps) · weight` with candle ops (differentiable; the
/// definition the fast paths are tested against).
///
/// # Shapes
/// `x`: `[..., d]`, `weight`: `[d]` → `[..., d]`.
pub fn rms_norm_reference(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    check(x, weight)?;
    let dt = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xf.broadcast_div(&(ms + eps)?.sqrt()?)?;
    Ok(y.to_dtype(dt)?.broadcast_mul(weight)?)
}

/// RMSNorm over the last dim (see the module docs). With tracked f32 CPU tensors, the twin's
/// ops with the weight applied by [`crate::mul_channel`] (same values, a parallel weight
/// gradient).
///
/// # Shapes
/// `x`: `[..., d]`, `weight`: `[d]` → `[..., d]`.
///
/// # Errors
/// A weight that is not `[d]`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    check(x, weight)?;
    if !fast(&[x, weight]) {
        let f32_cpu = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu();
        if (x.track_op() || weight.track_op())
            && f32_cpu(x)
            && f32_cpu(weight)
            && x.elem_count() > 0
            && !crate::reference_forced()
        {
            return rms_norm_tracked(x, weight, eps);
        }
        return rms_norm_reference(x, weight, eps);
    }
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let w = weight.to_vec1::<f32>()?;
    let d = w.len();
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(rows_per_task(d) * d)
        .zip(xs.par_chunks(rows_per_task(d) * d))
        .for_each(|(o, s)| {
            for (orow, srow) in o.chunks_exact_mut(d).zip(s.chunks_exact(d)) {
                normalise(srow, &w, eps as f32, orow);
            }
        });
    Ok(Tensor::from_vec(out, x.dims(), x.device())?)
}

/// [`rms_norm_reference`] for training: the weight applied by `mul_channel`, whose backward
/// reduces the weight's gradient in one parallel pass (candle's broadcast reduces it over the
/// leading dims on one thread, element by element). The same values.
fn rms_norm_tracked(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let y = x.broadcast_div(&(ms + eps)?.sqrt()?)?;
    let last = x.rank() - 1;
    crate::channel::mul_channel(&y, weight, last)
}

/// [`layer_norm_reference`] for training in f32, with the weight and bias applied by
/// `mul_channel` / `add_channel` (see [`rms_norm_tracked`]). The same values.
fn layer_norm_tracked(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let mut y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    let last = x.rank() - 1;
    if let Some(w) = weight {
        y = crate::channel::mul_channel(&y, w, last)?;
    }
    if let Some(b) = bias {
        y = crate::channel::add_channel(&y, b, last)?;
    }
    Ok(y)
}

/// `s = x + residual` and `rms_norm_reference(s, weight, eps)` with candle ops, returned as
/// `(s, normed)` (the definition [`add_rms_norm`] is tested against; differentiable).
///
/// # Shapes
/// As [`add_rms_norm`].
///
/// # Errors
/// As [`add_rms_norm`].
pub fn add_rms_norm_reference(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    check(x, weight)?;
    if x.dims() != residual.dims() {
        return Err(Error::shape(
            "add_rms_norm residual",
            x.dims(),
            residual.dims(),
        ));
    }
    let s = (x + residual)?;
    let n = rms_norm_reference(&s, weight, eps)?;
    Ok((s, n))
}

/// `s = x + residual` and `rms_norm(s, weight, eps)`, returned as `(s, normed)`.
///
/// # Shapes
/// `x`, `residual`: `[..., d]` (the same shape), `weight`: `[d]` → two `[..., d]`.
///
/// # Errors
/// Different shapes of `x` and `residual`, a weight that is not `[d]`.
pub fn add_rms_norm(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    check(x, weight)?;
    if x.dims() != residual.dims() {
        return Err(Error::shape(
            "add_rms_norm residual",
            x.dims(),
            residual.dims(),
        ));
    }
    if !fast(&[x, residual, weight]) {
        if [x, residual, weight].iter().any(|t| t.track_op()) {
            // Training: the sum by candle, the norm through `rms_norm`'s tracked path.
            let s = (x + residual)?;
            let n = rms_norm(&s, weight, eps)?;
            return Ok((s, n));
        }
        return add_rms_norm_reference(x, residual, weight, eps);
    }
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let rs = residual.flatten_all()?.to_vec1::<f32>()?;
    let w = weight.to_vec1::<f32>()?;
    let d = w.len();
    let mut sum = vec![0f32; xs.len()];
    let mut out = vec![0f32; xs.len()];
    let chunk = rows_per_task(d) * d;
    sum.par_chunks_mut(chunk)
        .zip(out.par_chunks_mut(chunk))
        .zip(xs.par_chunks(chunk).zip(rs.par_chunks(chunk)))
        .for_each(|((sc, oc), (xc, rc))| {
            for (((srow, orow), xrow), rrow) in sc
                .chunks_exact_mut(d)
                .zip(oc.chunks_exact_mut(d))
                .zip(xc.chunks_exact(d))
                .zip(rc.chunks_exact(d))
            {
                for ((s, &a), &b) in srow.iter_mut().zip(xrow).zip(rrow) {
                    *s = a + b;
                }
                normalise(srow, &w, eps as f32, orow);
            }
        });
    let dev = x.device();
    Ok((
        Tensor::from_vec(sum, x.dims(), dev)?,
        Tensor::from_vec(out, x.dims(), dev)?,
    ))
}

fn check(x: &Tensor, weight: &Tensor) -> Result<()> {
    let d = x.dims().last().copied().unwrap_or(0);
    if weight.dims() != [d] || x.rank() == 0 {
        return Err(Error::shape("rms_norm weight", &[d], weight.dims()));
    }
    Ok(())
}

/// Whether the fused path takes these tensors: f32 on the CPU, no gradient tracking, not
/// empty, twins not forced.
fn fast(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| !t.track_op() && t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu))
        && ts.first().is_some_and(|t| t.elem_count() > 0)
        && !crate::reference_forced()
}

/// Rows per rayon task: ~16 Ki elements.
fn rows_per_task(d: usize) -> usize {
    (16_384 / d.max(1)).max(1)
}

/// `out = x / sqrt(mean(x²) + eps) · w` for one row; the sum of squares in eight lanes so
/// that it vectorises.
#[inline]
fn normalise(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let ms = (acc.iter().sum::<f32>() + tail) / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv * g;
    }
}

/// Checks `x [..., d]` and optional `weight`, `bias` `[d]`; returns `d`.
fn check_layer(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<usize> {
    let d = match x.dims().last() {
        Some(&d) if d > 0 => d,
        _ => {
            return Err(Error::invalid(
                "layer_norm input",
                format!("expected [..., d] with d ≥ 1, found {:?}", x.dims()),
            ))
        }
    };
    for (name, t) in [("layer_norm weight", weight), ("layer_norm bias", bias)] {
        let Some(t) = t else { continue };
        if t.dims() != [d] {
            return Err(Error::shape(name, &[d], t.dims()));
        }
        if !t.dtype().is_float() || !t.device().same_device(x.device()) {
            return Err(Error::invalid(
                name,
                format!(
                    "must be a float tensor on the input's device, found {:?} on {:?}",
                    t.dtype(),
                    t.device()
                ),
            ));
        }
    }
    if !x.dtype().is_float() {
        return Err(Error::DType {
            key: "layer_norm input".into(),
            expected: "a float dtype".into(),
            found: format!("{:?}", x.dtype()),
        });
    }
    Ok(d)
}

/// LayerNorm over the last dim with plain candle ops, statistics in f32 (differentiable; the
/// definition [`layer_norm`] is tested against):
/// `(x − mean) / sqrt(mean((x − mean)²) + eps) · weight + bias`.
///
/// # Shapes
/// As [`layer_norm`].
///
/// # Errors
/// As [`layer_norm`].
pub fn layer_norm_reference(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    check_layer(x, weight, bias)?;
    let dt = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let xc = xf.broadcast_sub(&xf.mean_keepdim(D::Minus1)?)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let mut y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(&w.to_dtype(DType::F32)?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(&b.to_dtype(DType::F32)?)?;
    }
    Ok(y.to_dtype(dt)?)
}

/// `torch.nn.LayerNorm(d, eps)` over the last dim, with an optional affine `weight` and `bias`
/// (`elementwise_affine=False` or `bias=False` leave them out): rows in parallel, each row's mean
/// and variance in two f32 passes over eight partial sums, then one pass that normalises and
/// applies the affine map. Any float dtype (computed in f32, returned in the input dtype).
/// Tracked f32 gradients on the CPU run the twin's ops with the affine map by
/// [`crate::mul_channel`] / [`crate::add_channel`] (same values, a parallel weight / bias
/// gradient); other tracked dtypes, other devices and [`crate::force_reference`] run
/// [`layer_norm_reference`].
///
/// # Shapes
/// `x`: `[..., d]`, `weight`, `bias`: `[d]` → the shape and dtype of `x`.
///
/// # Errors
/// A rank-0 input or `d = 0`, a weight / bias other than `[d]`, non-float dtypes, operands on
/// other devices.
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let d = check_layer(x, weight, bias)?;
    let tracked =
        x.track_op() || weight.is_some_and(Tensor::track_op) || bias.is_some_and(Tensor::track_op);
    if tracked
        && x.dtype() == DType::F32
        && x.device().is_cpu()
        && weight.is_none_or(|w| w.dtype() == DType::F32)
        && bias.is_none_or(|b| b.dtype() == DType::F32)
        && !crate::reference_forced()
    {
        return layer_norm_tracked(x, weight, bias, eps);
    }
    if tracked || !x.device().is_cpu() || crate::reference_forced() {
        return layer_norm_reference(x, weight, bias, eps);
    }
    if x.elem_count() == 0 {
        return Ok(x.zeros_like()?);
    }
    let dt = x.dtype();
    let vec = |t: Option<&Tensor>| -> Result<Option<Vec<f32>>> {
        Ok(match t {
            Some(t) => Some(t.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        })
    };
    let (w, b) = (vec(weight)?, vec(bias)?);
    let eps = eps as f32;
    // Read in place (no copy of `x` when it is already contiguous f32).
    let out = crate::storage::with_f32(&x.to_dtype(DType::F32)?, "layer_norm x", |xs| {
        let write = |first: usize, o: &mut [f32]| {
            for (orow, srow) in o.chunks_exact_mut(d).zip(xs[first..].chunks_exact(d)) {
                layer_row(srow, w.as_deref(), b.as_deref(), eps, orow);
            }
        };
        // SAFETY: `layer_row` assigns each element of its output row and reads only `x`, `w`,
        // `b`; the chunks are whole rows (`rows_per_task(d) · d` divides into rows of `d`).
        Ok::<_, Error>(unsafe {
            vidgen_video_core::buffer::par_write(xs.len(), rows_per_task(d) * d, write)
        })
    })?;
    let y = Tensor::from_vec(out, x.dims(), x.device())?;
    Ok(if dt == DType::F32 { y } else { y.to_dtype(dt)? })
}

/// One LayerNorm row: two-pass mean and variance, then `(x − mean)·inv·w + b`.
#[inline]
fn layer_row(x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = sum8(x, |v| v) / n;
    let var = sum8(x, |v| (v - mean) * (v - mean)) / n;
    let inv = 1.0 / (var + eps).sqrt();
    match (w, b) {
        (Some(w), Some(b)) => {
            for (((o, &v), &g), &c) in out.iter_mut().zip(x).zip(w).zip(b) {
                *o = (v - mean) * inv * g + c;
            }
        }
        (Some(w), None) => {
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
                *o = (v - mean) * inv * g;
            }
        }
        (None, Some(b)) => {
            for ((o, &v), &c) in out.iter_mut().zip(x).zip(b) {
                *o = (v - mean) * inv + c;
            }
        }
        (None, None) => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (v - mean) * inv;
            }
        }
    }
}
