//! RMSNorm (Llama's `LlamaRMSNorm`), alone or fused with the residual add before it.
//!
//! `rms_norm(x)[r, j] = x[r, j] / sqrt(mean_j x[r, j]² + eps) · weight[j]` over the last dim,
//! statistics in f32. A decoder layer computes `x = x + attn(..)` and then normalises the new
//! `x`: [`add_rms_norm`] does both in one pass over the rows (two reads and two writes of a
//! row instead of three reads and two writes in two operations), rows split over rayon's
//! threads. Tracked gradients and other dtypes / devices run [`rms_norm_reference`].

use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;
use vidgen_video_core::{Error, Result};

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

/// RMSNorm over the last dim (see the module docs).
///
/// # Shapes
/// `x`: `[..., d]`, `weight`: `[d]` → `[..., d]`.
///
/// # Errors
/// A weight that is not `[d]`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    check(x, weight)?;
    if !fast(&[x, weight]) {
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
        let s = (x + residual)?;
        let n = rms_norm_reference(&s, weight, eps)?;
        return Ok((s, n));
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

fn fast(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| !t.track_op() && t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu))
        && ts[0].elem_count() > 0
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
