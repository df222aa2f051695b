//! `y = x · Wᵀ + b` (PyTorch `nn.Linear`, weight `[out, in]`), with a streaming kernel for the
//! few-row products of token-by-token decoding.
//!
//! With one to [`SKINNY_ROWS`] rows of `x`, a product is a handful of dot products per weight
//! row: nothing is reused across weight rows, so a GEMM library's packing of `W` is pure
//! overhead and the whole cost is reading `W` from memory once. [`linear`] then runs its own
//! kernel: output rows in parallel chunks, four weight rows per step sharing every load of `x`,
//! 16-lane (AVX-512F) or 8-lane (AVX2 + FMA) fused multiply-adds, masked tails for any `in`.
//! More rows go straight to the `gemm` crate (the GEMM candle uses) into an output buffer that
//! is not zero-filled first. Trained f32 weights on the CPU run candle's matmul with the bias
//! added by [`crate::add_channel`] (whose backward sums the bias gradient in one parallel pass);
//! other dtypes or devices, and tracked gradients without a bias, run [`linear_reference`].

use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;
use vidgen_video_core::{Error, Result};

use crate::gemm::{gemm, gemm_uninit, Threads, View};
use crate::simd::{self, dot, Level};
use crate::storage::{to_candle, with_f32};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// The most rows of `x` (product of its leading dims) that take the streaming kernel.
pub const SKINNY_ROWS: usize = 8;

/// `y = x · weightᵀ (+ bias)` as candle ops (the definition [`linear`] is tested against).
///
/// # Shapes
/// `x`: `[..., in]`, `weight`: `[out, in]`, `bias`: `[out]` → `[..., out]`.
pub fn linear_reference(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (rows, in_dim, out_dim, out_shape) = check(x, weight, bias)?;
    let y = x.reshape((rows, in_dim))?.matmul(&weight.t()?)?;
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    debug_assert_eq!(y.dim(1)?, out_dim);
    Ok(y.reshape(out_shape)?)
}

/// `y = x · weightᵀ (+ bias)`: for f32 on the CPU without gradient tracking, the streaming
/// kernel for at most [`SKINNY_ROWS`] rows and a direct `gemm` call beyond; with tracked
/// gradients, a frozen-weight op or candle's matmul with [`crate::add_channel`]'s bias;
/// [`linear_reference`] otherwise and under [`crate::force_reference`] (see the module docs).
///
/// # Shapes
/// `x`: `[..., in]`, `weight`: `[out, in]` (PyTorch layout), `bias`: `[out]` → `[..., out]`.
///
/// # Errors
/// A last dim of `x` other than `in`, a weight that is not rank 2, a bias other than `[out]`,
/// mismatched dtypes: each names the shapes.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (rows, in_dim, out_dim, out_shape) = check(x, weight, bias)?;
    let params_tracked = weight.track_op() || bias.is_some_and(|b| b.track_op());
    let tracked = x.track_op() || params_tracked;
    let f32_cpu = |t: &Tensor| t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu);
    if x.track_op()
        && !params_tracked
        && rows > 0
        && in_dim > 0
        && out_dim > 0
        && f32_cpu(x)
        && f32_cpu(weight)
        && bias.is_none_or(f32_cpu)
        && !crate::reference_forced()
    {
        // Frozen weights, tracked input (adapter training on a frozen model): the fast
        // forward, and a backward that computes only the input's gradient (candle's matmul
        // would also compute the weight's, a third of the work, for nothing).
        let op = FrozenLinear {
            weight: weight.contiguous()?,
            bias: bias.map(|b| b.to_vec1::<f32>()).transpose()?,
            rows,
            in_dim,
            out_dim,
        };
        let y = x.reshape((rows, in_dim))?.contiguous()?.apply_op1(op)?;
        return Ok(y.reshape(out_shape)?);
    }
    if tracked
        && rows > 0
        && f32_cpu(x)
        && f32_cpu(weight)
        && bias.is_some_and(f32_cpu)
        && !crate::reference_forced()
    {
        // Trained weights: candle's matmul (and its backward), with the bias added by
        // `add_channel`, whose backward sums the bias gradient over the rows in one parallel
        // pass instead of candle's one-thread strided reduction over the leading dim.
        let mut y = x.reshape((rows, in_dim))?.matmul(&weight.t()?)?;
        if let Some(b) = bias {
            y = crate::channel::add_channel(&y, b, 1)?;
        }
        return Ok(y.reshape(out_shape)?);
    }
    if rows == 0
        || tracked
        || !f32_cpu(x)
        || !f32_cpu(weight)
        || !bias.is_none_or(f32_cpu)
        || in_dim == 0
        || out_dim == 0
        || crate::reference_forced()
    {
        return linear_reference(x, weight, bias);
    }
    let bias = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
    let w = weight.contiguous()?;
    let y = with_f32(&w, "linear weight", |ws| {
        if rows <= SKINNY_ROWS {
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            Ok(skinny(&xs, rows, ws, out_dim, in_dim, bias.as_deref()))
        } else {
            let xc = x.contiguous()?;
            with_f32(&xc, "linear input", |xs| {
                gemm_rows(xs, rows, ws, out_dim, in_dim, bias.as_deref())
            })
        }
    })?;
    Ok(Tensor::from_vec(y, out_shape, x.device())?)
}

/// `y = x · Wᵀ + b` with a frozen `W` / `b` as a custom op on a tracked `x [rows, in]`: its
/// backward is `dx = dy · W` only.
struct FrozenLinear {
    weight: Tensor,
    bias: Option<Vec<f32>>,
    rows: usize,
    in_dim: usize,
    out_dim: usize,
}

impl candle_core::CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "video-kernels-linear-frozen"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (rows, in_dim, out) = (self.rows, self.in_dim, self.out_dim);
        if l.dims() != [rows, in_dim] {
            candle_core::bail!(
                "frozen linear: x {:?}, expected [{rows}, {in_dim}]",
                l.dims()
            );
        }
        let x = crate::storage::f32_slice(s, l, "linear input")?;
        let y = with_f32(&self.weight, "linear weight", |ws| {
            if rows <= SKINNY_ROWS {
                Ok(skinny(x, rows, ws, out, in_dim, self.bias.as_deref()))
            } else {
                gemm_rows(x, rows, ws, out, in_dim, self.bias.as_deref()).map_err(to_candle)
            }
        })?;
        Ok((
            candle_core::CpuStorage::F32(y),
            candle_core::Shape::from((rows, out)),
        ))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (rows, in_dim, out) = (self.rows, self.in_dim, self.out_dim);
        let dy = dy.to_dtype(DType::F32)?.contiguous()?;
        let n = rows * in_dim;
        let dx = with_f32(&dy, "linear dy", |dys| {
            with_f32(&self.weight, "linear weight", |ws| {
                let mut dx: Vec<f32> = Vec::with_capacity(n);
                // dx (rows × in) = dy (rows × out) · W (out × in), both row-major.
                gemm_uninit(
                    rows,
                    in_dim,
                    out,
                    &mut dx.spare_capacity_mut()[..n],
                    View::row_major(in_dim),
                    dys,
                    View::row_major(out),
                    ws,
                    View::row_major(in_dim),
                    Threads::All,
                )
                .map_err(to_candle)?;
                // SAFETY: `gemm_uninit` returned Ok: the rows × in row-major view, the first
                // `n` elements, is initialised.
                unsafe { dx.set_len(n) };
                Ok::<_, candle_core::Error>(dx)
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, (rows, in_dim), dy.device())?))
    }
}

/// `y = x · wᵀ (+ bias)` through the `gemm` crate for many rows, into a buffer that is not
/// zeroed first (candle's matmul zero-fills a fresh output: a memory pass, and page faults on
/// a fresh mapping). With a bias the rows start as the bias and the product is accumulated
/// onto them.
fn gemm_rows(
    x: &[f32],
    rows: usize,
    w: &[f32],
    out: usize,
    in_dim: usize,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let (Some(nx), Some(nw), Some(ny)) = (
        rows.checked_mul(in_dim),
        out.checked_mul(in_dim),
        rows.checked_mul(out),
    ) else {
        return Err(Error::invalid("linear", "size overflows usize"));
    };
    if x.len() != nx || w.len() != nw || bias.is_some_and(|b| b.len() != out) {
        return Err(Error::invalid(
            "linear",
            format!(
                "buffers of {} / {} elements for [{rows}, {in_dim}] · [{out}, {in_dim}]ᵀ",
                x.len(),
                w.len()
            ),
        ));
    }
    // Column blocks of the output (row blocks of w), one single-threaded product per thread:
    // every thread packs only its part of w, and measured at the Llama's shapes this is
    // 5–15% faster than the gemm crate's own threading of the whole product.
    let threads = rayon::current_num_threads().max(1);
    let parts = threads.min(out / MIN_PART_COLS).max(1);
    let part = out.div_ceil(parts).next_multiple_of(16).min(out);
    let threads = if parts == 1 {
        Threads::All
    } else {
        Threads::ColumnBlocks(part)
    };
    // y (rows × out, row-major) = x (rows × in) · wᵀ, wᵀ read as a column-major view of w.
    let (yv, xv, wv) = (
        View::row_major(out),
        View::row_major(in_dim),
        View::col_major(in_dim),
    );
    match bias {
        Some(b) => {
            // The bias rows, filled in parallel (the product accumulates onto them).
            let write = |_: usize, c: &mut [f32]| {
                for row in c.chunks_exact_mut(out) {
                    row.copy_from_slice(b);
                }
            };
            // SAFETY: chunks are whole rows of `out` (a multiple of `out` elements) and each
            // row is assigned from `b` (length `out`, checked above) without being read.
            let mut y = unsafe {
                vidgen_video_core::buffer::par_write(ny, out * (16_384 / out.max(1)).max(1), write)
            };
            gemm(rows, out, in_dim, &mut y, yv, x, xv, w, wv, true, threads)?;
            Ok(y)
        }
        None => {
            let mut y: Vec<f32> = Vec::with_capacity(ny);
            gemm_uninit(
                rows,
                out,
                in_dim,
                &mut y.spare_capacity_mut()[..ny],
                yv,
                x,
                xv,
                w,
                wv,
                threads,
            )?;
            // SAFETY: `gemm_uninit` returned Ok, so it initialised every element of the
            // `rows × out` row-major view, which is exactly the first `ny` elements.
            unsafe { y.set_len(ny) };
            Ok(y)
        }
    }
}

/// Checks the shapes; returns `(rows, in, out, output shape)`.
fn check(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<(usize, usize, usize, Vec<usize>)> {
    let (out_dim, in_dim) = match weight.dims() {
        &[o, i] => (o, i),
        d => {
            return Err(Error::invalid(
                "linear weight",
                format!("expected [out, in], found shape {d:?}"),
            ))
        }
    };
    if x.rank() == 0 || x.dim(D::Minus1)? != in_dim {
        return Err(Error::invalid(
            "linear input",
            format!(
                "last dim of {:?} must equal in_features {in_dim} of weight {:?}",
                x.dims(),
                weight.dims()
            ),
        ));
    }
    if let Some(b) = bias {
        if b.dims() != [out_dim] {
            return Err(Error::shape("linear bias", &[out_dim], b.dims()));
        }
        if b.dtype() != weight.dtype() {
            return Err(Error::DType {
                key: "linear bias".into(),
                expected: format!("{:?}", weight.dtype()),
                found: format!("{:?}", b.dtype()),
            });
        }
    }
    if x.dtype() != weight.dtype() {
        return Err(Error::DType {
            key: "linear input".into(),
            expected: format!("{:?} (the weight's)", weight.dtype()),
            found: format!("{:?}", x.dtype()),
        });
    }
    let mut out_shape = x.dims().to_vec();
    let rows = out_shape[..out_shape.len() - 1].iter().product();
    if let Some(l) = out_shape.last_mut() {
        *l = out_dim;
    }
    Ok((rows, in_dim, out_dim, out_shape))
}

/// The narrowest column block [`linear`]'s many-row path gives one thread.
const MIN_PART_COLS: usize = 128;

/// Weight rows per step of the kernels (each load of `x` feeds this many accumulators).
const ROW_STEP: usize = 4;

/// `y[r, o] = Σ_i x[r, i] · w[o, i] + bias[o]` for `r < rows`, `o < out`; row-major `x`
/// (`rows × in`), `w` (`out × in`), `y` (`rows × out`).
fn skinny(
    x: &[f32],
    rows: usize,
    w: &[f32],
    out: usize,
    in_dim: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let kernel = Kernel::detect();
    // Tasks of whole weight-row steps: enough of them to balance the threads, each long enough
    // (≥ 16 rows) that rayon's scheduling stays small against the memory traffic.
    let threads = rayon::current_num_threads().max(1);
    let chunk = (out.div_ceil(threads * 4))
        .max(16)
        .next_multiple_of(ROW_STEP);
    // Computed as yᵀ (`out × rows`) so that every task writes one contiguous range.
    let mut yt = vec![0f32; out * rows];
    let work = |(c, dst): (usize, &mut [f32])| {
        let o0 = c * chunk;
        let n = dst.len() / rows;
        let mut o = 0;
        while o < n {
            let step = ROW_STEP.min(n - o);
            let wr = &w[(o0 + o) * in_dim..(o0 + o + step) * in_dim];
            for r in 0..rows {
                let xr = &x[r * in_dim..(r + 1) * in_dim];
                let mut acc = [0f32; ROW_STEP];
                kernel.dots(xr, wr, step, &mut acc);
                for (s, a) in acc.iter().take(step).enumerate() {
                    dst[(o + s) * rows + r] = *a;
                }
            }
            o += step;
        }
        if let Some(b) = bias {
            for (q, yrow) in dst.chunks_exact_mut(rows).enumerate() {
                yrow.iter_mut().for_each(|v| *v += b[o0 + q]);
            }
        }
    };
    if out <= chunk {
        work((0, &mut yt[..]));
    } else {
        yt.par_chunks_mut(chunk * rows).enumerate().for_each(work);
    }
    if rows == 1 {
        return yt;
    }
    let mut y = vec![0f32; rows * out];
    for (o, col) in yt.chunks_exact(rows).enumerate() {
        for (r, &v) in col.iter().enumerate() {
            y[r * out + o] = v;
        }
    }
    y
}

/// Which dot-product kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    fn detect() -> Self {
        match simd::level() {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => Kernel::Avx512,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2Fma => Kernel::Avx2,
            _ => Kernel::Portable,
        }
    }

    /// `acc[s] = x · w[s·len ..][..len]` for `s < step` (`len = x.len()`, `w` holds `step` rows).
    fn dots(self, x: &[f32], w: &[f32], step: usize, acc: &mut [f32; ROW_STEP]) {
        let len = x.len();
        debug_assert!(w.len() >= step * len && step <= ROW_STEP);
        match self {
            // SAFETY: the features were detected; `w` holds `step` rows of `len` (sliced by the
            // caller: a short slice panics here instead of reading out of bounds).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if step == ROW_STEP => unsafe {
                avx512::dots4(x, &w[..ROW_STEP * len], acc)
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if step == ROW_STEP => unsafe {
                avx2::dots4(x, &w[..ROW_STEP * len], acc)
            },
            _ => {
                for (s, a) in acc.iter_mut().take(step).enumerate() {
                    *a = dot(x, &w[s * len..(s + 1) * len]);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// Every kernel this CPU has gives the portable dot products, on every tail length.
    #[test]
    fn kernels_match_portable() {
        for len in [1, 7, 8, 15, 16, 17, 33, 64, 100] {
            let x = data(len, 1);
            let w = data(ROW_STEP * len, 2);
            let mut want = [0f32; ROW_STEP];
            Kernel::Portable.dots(&x, &w, ROW_STEP, &mut want);
            let mut got = [0f32; ROW_STEP];
            Kernel::detect().dots(&x, &w, ROW_STEP, &mut got);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "len {len}: {a} vs {b}"
                );
            }
        }
    }
}
