//! SwiGLU on a fused gate / up projection: `silu(x[..., :I]) · x[..., I:]` in one pass.
//!
//! Llama-style MLPs compute `silu(gate(x)) · up(x)`. With the two projections fused into one
//! product (weights concatenated on the output dim, one packing of `x`), the result holds gate
//! and up side by side in each row; candle's element-wise ops on those two strided halves are
//! slow, and `silu` then `·` are two passes with an intermediate buffer. [`swiglu`] reads each
//! row once and writes the product, with a vectorised `exp` (the attention kernels' Cody–Waite
//! `exp`, about 1 ulp), rows split over rayon's threads.

use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;
use video_core::{Error, Result};

use crate::attention::exp_f32;

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
    let i = half_width(x)?;
    if x.track_op() || x.dtype() != DType::F32 || !matches!(x.device(), Device::Cpu) || i == 0 {
        return swiglu_reference(x);
    }
    let x = x.contiguous()?;
    let mut out_shape = x.dims().to_vec();
    if let Some(l) = out_shape.last_mut() {
        *l = i;
    }
    let out = {
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return Err(Error::invalid(
                "swiglu input",
                "CPU tensor without CPU storage",
            ));
        };
        let all = cpu.as_slice::<f32>()?;
        let src = match layout.contiguous_offsets() {
            Some((a, b)) => &all[a..b],
            None => return Err(Error::invalid("swiglu input", "not contiguous after copy")),
        };
        let rows = src.len() / (2 * i);
        let mut out = vec![0f32; rows * i];
        // ~64 Ki outputs per task: long enough that rayon's scheduling is noise.
        let per_task = (65_536 / i).max(1);
        out.par_chunks_mut(per_task * i)
            .zip(src.par_chunks(per_task * 2 * i))
            .for_each(|(o, s)| {
                for (orow, srow) in o.chunks_exact_mut(i).zip(s.chunks_exact(2 * i)) {
                    let (g, u) = srow.split_at(i);
                    silu_mul(g, u, orow);
                }
            });
        out
    };
    Ok(Tensor::from_vec(out, out_shape, x.device())?)
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
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected.
            return unsafe { silu_mul_avx512(g, u, out) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
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
