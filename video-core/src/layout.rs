//! A parallel `contiguous`: candle's strided copy (behind `Tensor::contiguous` and the reshape
//! of a permuted tensor) runs on one thread, and the video models permute between
//! `[B, C, T, H, W]`, `[B·T, H·W, C]` and `[B·H·W, T, C]` many times per forward.

use crate::Result;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

/// Output elements per parallel task (a few tens of KiB of writes).
const CHUNK: usize = 1 << 14;
/// Below this many elements candle's single-threaded copy is as fast.
const MIN_PAR: usize = 1 << 12;

/// `t` laid out contiguously (row-major over its dims), as `Tensor::contiguous`, with the copy
/// split over rayon's threads for f32 CPU tensors. Other dtypes / devices, and tensors that are
/// already contiguous or small, take candle's path.
///
/// # Errors
/// Candle errors of the fallback path.
pub fn contiguous(t: &Tensor) -> Result<Tensor> {
    if t.is_contiguous()
        || t.dtype() != DType::F32
        || !t.device().is_cpu()
        || t.elem_count() < MIN_PAR
    {
        return Ok(t.contiguous()?);
    }
    // A custom op so that autograd flows through it (its gradient is the identity).
    Ok(t.apply_op1(ParContiguous)?)
}

struct ParContiguous;

impl CustomOp1 for ParContiguous {
    fn name(&self) -> &'static str {
        "par-contiguous"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = storage.as_slice::<f32>()?;
        let out = strided_copy(src, layout.dims(), layout.stride(), layout.start_offset());
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.clone()))
    }
}

/// The row-major copy of the strided view `(dims, strides, start)` of `src`, in parallel.
fn strided_copy(src: &[f32], dims: &[usize], strides: &[usize], start: usize) -> Vec<f32> {
    let n: usize = dims.iter().product();
    let r = dims.len();
    if r == 0 {
        return vec![src[start]; n];
    }
    // Each task walks its part of the output in row-major order: it decodes its first index
    // once and then steps like an odometer, one innermost row at a time.
    let write = |first: usize, dst: &mut [f32]| {
        let mut idx = vec![0usize; r];
        let mut rem = first;
        for d in (0..r).rev() {
            idx[d] = rem % dims[d];
            rem /= dims[d];
        }
        let mut off = start + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        let (last_n, last_s) = (dims[r - 1], strides[r - 1]);
        let mut k = 0;
        while k < dst.len() {
            // The rest of this innermost row, as one strided run.
            let run = (last_n - idx[r - 1]).min(dst.len() - k);
            if last_s == 1 {
                dst[k..k + run].copy_from_slice(&src[off..off + run]);
            } else {
                for (j, v) in dst[k..k + run].iter_mut().enumerate() {
                    *v = src[off + j * last_s];
                }
            }
            k += run;
            // Advance the odometer by `run` along the last dim, carrying upwards.
            idx[r - 1] += run;
            off += run * last_s;
            let mut d = r - 1;
            while d > 0 && idx[d] == dims[d] {
                off -= dims[d] * strides[d];
                idx[d] = 0;
                idx[d - 1] += 1;
                off += strides[d - 1];
                d -= 1;
            }
        }
    };
    // SAFETY: each task assigns every element of its chunk (its runs cover `dst`) and reads
    // only `src`.
    unsafe { crate::buffer::par_write(n, CHUNK, write) }
}
