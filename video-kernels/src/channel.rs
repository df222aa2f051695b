//! `x + b` and `x · w` with a per-channel vector broadcast along one axis of `x`, differentiable,
//! with backward passes that reduce the channel's gradient in one parallel pass.
//!
//! Why these exist: candle's autograd turns a broadcast into a `sum_keepdim` over the broadcast
//! dims, and its CPU reduction over any dims but the trailing ones walks the gradient element by
//! element with two integer divisions per element per reduced dim, on one thread. The bias of a
//! linear layer and the weight and bias of a layer / RMS norm broadcast over the *leading* dims,
//! so under training that reduction was the largest single cost of a step: 12% of the samples
//! of a LaVIT detokenizer training step (a tiny SVD UNet, `perf`), all on the main thread while
//! the other core waited. Here the forward is one parallel pass and the channel gradient is a
//! sum over fixed chunks of the leading dims, added in chunk order: the same bits whatever the
//! thread count.

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;
use vidgen_video_core::{Error, Result};

use crate::storage::{f32_slice, to_candle, with_f32};

/// Elements of `x` per rayon task, forward and backward (~32 Ki).
const CHUNK_ELEMS: usize = 32_768;

/// `x + b`, `b [C]` broadcast along `axis` of `x` (`C = x.dims()[axis]`): a linear layer's bias
/// (`axis` the last), a conv's (`axis` 1). Differentiable in both; the result is bit-identical to
/// `x.broadcast_add(b reshaped to [1, …, C, …, 1])`.
///
/// For f32 CPU tensors a custom op whose backward sums `b`'s gradient in one parallel pass (see
/// the module docs); candle's broadcast otherwise and under [`crate::force_reference`].
///
/// # Errors
/// `axis` out of range, `b` not `[C]`, mismatched dtypes or devices.
pub fn add_channel(x: &Tensor, b: &Tensor, axis: usize) -> Result<Tensor> {
    let shape = check(x, b, axis, "add_channel")?;
    if !fast(x, b) {
        return Ok(x.broadcast_add(&b.reshape(shape)?)?);
    }
    Ok(x.contiguous()?
        .apply_op2(&b.contiguous()?, ChannelOp { axis, mul: false })?)
}

/// `x · w`, `w [C]` broadcast along `axis` of `x`: a norm's weight. Differentiable in both; the
/// result is bit-identical to `x.broadcast_mul(w reshaped to [1, …, C, …, 1])`.
///
/// For f32 CPU tensors a custom op whose backward computes `w`'s gradient `Σ dy · x` in one
/// parallel pass; candle's broadcast otherwise and under [`crate::force_reference`].
///
/// # Errors
/// As [`add_channel`].
pub fn mul_channel(x: &Tensor, w: &Tensor, axis: usize) -> Result<Tensor> {
    let shape = check(x, w, axis, "mul_channel")?;
    if !fast(x, w) {
        return Ok(x.broadcast_mul(&w.reshape(shape)?)?);
    }
    Ok(x.contiguous()?
        .apply_op2(&w.contiguous()?, ChannelOp { axis, mul: true })?)
}

/// `x`'s elements summed over every dim but `axis` (`[C]`), or with `y` given, `Σ x · y` so:
/// the gradient of a channel bias or scale, in one parallel pass with a fixed summation order.
/// Not differentiable (a gradient, not a layer).
///
/// # Errors
/// `axis` out of range, `y` of another shape, non-f32 or non-CPU tensors.
pub fn channel_sum(x: &Tensor, y: Option<&Tensor>, axis: usize) -> Result<Tensor> {
    let dims = x.dims();
    if axis >= dims.len() {
        return Err(Error::invalid(
            "axis",
            format!("axis {axis} out of range for shape {dims:?}"),
        ));
    }
    if let Some(y) = y {
        if y.dims() != dims {
            return Err(Error::shape("channel_sum y", dims, y.dims()));
        }
    }
    let geom = Geom::new(dims, axis);
    let sums = with_f32(x, "channel_sum x", |xs| match y {
        Some(y) => with_f32(y, "channel_sum y", |ys| {
            Ok::<_, Error>(geom.sum(xs, Some(ys)))
        }),
        None => Ok(geom.sum(xs, None)),
    })?;
    Ok(Tensor::from_vec(sums, geom.c, x.device())?)
}

/// Shape checks; returns `b`'s broadcastable shape `[1, …, C, …, 1]`.
fn check(x: &Tensor, b: &Tensor, axis: usize, what: &str) -> Result<Vec<usize>> {
    let dims = x.dims();
    if axis >= dims.len() {
        return Err(Error::invalid(
            "axis",
            format!("{what}: axis {axis} out of range for shape {dims:?}"),
        ));
    }
    if b.dims() != [dims[axis]] {
        return Err(Error::invalid(
            "channel vector",
            format!(
                "{what}: the vector must be [{}] (axis {axis} of {dims:?}), found {:?}",
                dims[axis],
                b.dims()
            ),
        ));
    }
    if x.dtype() != b.dtype() {
        return Err(Error::invalid(
            "dtype",
            format!("{what}: x is {:?}, the vector {:?}", x.dtype(), b.dtype()),
        ));
    }
    if !x.device().same_device(b.device()) {
        return Err(Error::invalid(
            "device",
            format!("{what}: x and the vector are on different devices"),
        ));
    }
    let mut shape = vec![1usize; dims.len()];
    shape[axis] = dims[axis];
    Ok(shape)
}

fn fast(x: &Tensor, b: &Tensor) -> bool {
    x.dtype() == DType::F32
        && matches!(x.device(), Device::Cpu)
        && x.elem_count() > 0
        && b.dtype() == DType::F32
        && !crate::reference_forced()
}

/// `[outer, C, inner]` view of a shape around `axis`.
#[derive(Clone, Copy, Debug)]
struct Geom {
    outer: usize,
    c: usize,
    inner: usize,
}

impl Geom {
    fn new(dims: &[usize], axis: usize) -> Self {
        Geom {
            outer: dims[..axis].iter().product(),
            c: dims[axis],
            inner: dims[axis + 1..].iter().product(),
        }
    }

    /// Outer rows per task: whole `[C, inner]` blocks of ~[`CHUNK_ELEMS`] elements.
    fn rows_per_task(&self) -> usize {
        (CHUNK_ELEMS / (self.c * self.inner).max(1)).max(1)
    }

    /// `out = x ∘ v` (`+` or `·`) with `v` along the channel axis.
    fn apply(&self, xs: &[f32], v: &[f32], mul: bool) -> Vec<f32> {
        let block = self.c * self.inner;
        let inner = self.inner;
        let write = |first: usize, out: &mut [f32]| {
            for (o, x) in out
                .chunks_exact_mut(block)
                .zip(xs[first..].chunks_exact(block))
            {
                for ((orow, xrow), &vc) in
                    o.chunks_exact_mut(inner).zip(x.chunks_exact(inner)).zip(v)
                {
                    if mul {
                        for (o, &x) in orow.iter_mut().zip(xrow) {
                            *o = x * vc;
                        }
                    } else {
                        for (o, &x) in orow.iter_mut().zip(xrow) {
                            *o = x + vc;
                        }
                    }
                }
            }
        };
        // SAFETY: each chunk is whole `[C, inner]` blocks (`rows_per_task · block` elements, the
        // last one shorter but still whole blocks since `xs.len()` is a multiple of `block`), and
        // `write` assigns every element of them without reading `out`.
        unsafe {
            vidgen_video_core::buffer::par_write(xs.len(), self.rows_per_task() * block, write)
        }
    }

    /// `Σ x` (or `Σ x · y`) per channel, over fixed chunks of outer rows summed in order.
    fn sum(&self, xs: &[f32], ys: Option<&[f32]>) -> Vec<f32> {
        let block = self.c * self.inner;
        let rows = self.rows_per_task();
        let partial = |k: usize| -> Vec<f32> {
            let mut acc = vec![0f32; self.c];
            let lo = k * rows;
            let hi = ((k + 1) * rows).min(self.outer);
            for o in lo..hi {
                let xb = &xs[o * block..(o + 1) * block];
                let yb = ys.map(|y| &y[o * block..(o + 1) * block]);
                if self.inner == 1 {
                    match yb {
                        Some(yb) => {
                            for ((a, &x), &y) in acc.iter_mut().zip(xb).zip(yb) {
                                *a += x * y;
                            }
                        }
                        None => {
                            for (a, &x) in acc.iter_mut().zip(xb) {
                                *a += x;
                            }
                        }
                    }
                } else {
                    for (ci, a) in acc.iter_mut().enumerate() {
                        let xr = &xb[ci * self.inner..(ci + 1) * self.inner];
                        *a += match yb {
                            Some(yb) => {
                                crate::simd::dot(xr, &yb[ci * self.inner..(ci + 1) * self.inner])
                            }
                            None => crate::simd::sum8(xr, |v| v),
                        };
                    }
                }
            }
            acc
        };
        let tasks = self.outer.div_ceil(rows);
        let partials: Vec<Vec<f32>> = (0..tasks).into_par_iter().map(partial).collect();
        let mut total = vec![0f32; self.c];
        for p in partials {
            for (t, v) in total.iter_mut().zip(p) {
                *t += v;
            }
        }
        total
    }
}

/// The custom op: `x ∘ v` along `axis`, `∘` being `+` or `·`.
struct ChannelOp {
    axis: usize,
    mul: bool,
}

impl CustomOp2 for ChannelOp {
    fn name(&self) -> &'static str {
        if self.mul {
            "video-kernels-mul-channel"
        } else {
            "video-kernels-add-channel"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let xs = f32_slice(s1, l1, "channel op x")?;
        let v = f32_slice(s2, l2, "channel op vector")?;
        let geom = Geom::new(l1.dims(), self.axis);
        if v.len() != geom.c {
            return Err(candle_core::Error::Msg(format!(
                "video-kernels: channel vector of {} for {} channels",
                v.len(),
                geom.c
            )));
        }
        Ok((
            CpuStorage::F32(geom.apply(xs, v, self.mul)),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // Only the tracked operands' gradients are computed: a frozen norm weight on a
        // trained input (adapter training) costs no reduction.
        if self.mul {
            // dx = dy · w (no graph: a gradient), dw = Σ dy · x.
            let dx = if x.track_op() {
                Some(grad.contiguous()?.apply_op2_no_bwd(
                    v,
                    &ChannelOp {
                        axis: self.axis,
                        mul: true,
                    },
                )?)
            } else {
                None
            };
            let dw = if v.track_op() {
                Some(channel_sum(grad, Some(x), self.axis).map_err(to_candle)?)
            } else {
                None
            };
            Ok((dx, dw))
        } else {
            let db = if v.track_op() {
                Some(channel_sum(grad, None, self.axis).map_err(to_candle)?)
            } else {
                None
            };
            Ok((x.track_op().then(|| grad.clone()), db))
        }
    }
}
