//! The candle custom op: f32 forward on CPU, backward returning `dx` and `dw`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::geom::{Geom, Path};
use super::{dense, depthwise, direct};
use crate::storage::{f32_slice, with_f32};

/// Forward kernel dispatch on f32 buffers in `[B, C, T, H, W]` / PyTorch weight layout; the
/// kernels add `bias` `[Cout]` as they write the output (no extra pass, no extra buffer).
pub(crate) fn forward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> vidgen_video_core::Result<Vec<f32>> {
    match g.path() {
        Path::Depthwise => Ok(depthwise::forward(g, x, w, bias)),
        Path::Temporal => dense::temporal_forward(g, x, w, bias),
        Path::General if direct::applies(g) => Ok(direct::forward(g, x, w, bias)),
        Path::General => dense::general_forward(g, x, w, bias),
    }
}

/// `dbias[c] = Σ dy[b, c, …]`, one channel per task, in f64 partial sums.
fn bias_grad(g: &Geom, dy: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    let plane = g.out.iter().product::<usize>();
    (0..g.cout)
        .into_par_iter()
        .map(|c| {
            (0..g.b)
                .map(|b| {
                    let p = &dy[(b * g.cout + c) * plane..][..plane];
                    p.chunks(1024)
                        .map(|ch| ch.iter().sum::<f32>() as f64)
                        .sum::<f64>()
                })
                .sum::<f64>() as f32
        })
        .collect()
}

/// Input gradient dispatch.
pub(crate) fn backward_input(
    g: &Geom,
    dy: &[f32],
    w: &[f32],
) -> vidgen_video_core::Result<Vec<f32>> {
    match g.path() {
        Path::Depthwise => Ok(depthwise::backward_input(g, dy, w)),
        Path::Temporal => dense::temporal_backward_input(g, dy, w),
        Path::General => match direct::backward_input(g, dy, w) {
            Some(dx) => Ok(dx),
            None => dense::general_backward_input(g, dy, w),
        },
    }
}

/// Weight gradient dispatch.
pub(crate) fn backward_weight(
    g: &Geom,
    x: &[f32],
    dy: &[f32],
) -> vidgen_video_core::Result<Vec<f32>> {
    match g.path() {
        Path::Depthwise => Ok(depthwise::backward_weight(g, x, dy)),
        Path::Temporal => dense::temporal_backward_weight(g, x, dy),
        Path::General => dense::general_backward_weight(g, x, dy),
    }
}

/// `y = conv3d(x, w)` without bias, in f32 on contiguous CPU tensors.
pub(crate) struct Conv3dOp {
    pub geom: Geom,
}

impl CustomOp2 for Conv3dOp {
    fn name(&self) -> &'static str {
        "video-kernels-conv3d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        if l1.dims() != g.in_dims() || l2.dims() != g.w_dims() {
            candle_core::bail!(
                "conv3d kernel: x {:?} / weight {:?} differ from the validated {:?} / {:?}",
                l1.dims(),
                l2.dims(),
                g.in_dims(),
                g.w_dims()
            );
        }
        let x = f32_slice(s1, l1, "conv3d x")?;
        let w = f32_slice(s2, l2, "conv3d weight")?;
        let y = forward(g, x, w, None).map_err(crate::storage::to_candle)?;
        Ok((CpuStorage::F32(y), Shape::from(g.out_dims().to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = &self.geom;
        let dy = dy.to_dtype(candle_core::DType::F32)?;
        if dy.dims() != g.out_dims() {
            candle_core::bail!(
                "conv3d backward: dy {:?}, expected {:?}",
                dy.dims(),
                g.out_dims()
            );
        }
        // A gradient nobody asked for is not computed: a frozen weight (a plain tensor, as in
        // adapter training on a frozen UNet) needs no weight gradient, the first layer's input
        // no input gradient. candle's own convolution computes both whatever is tracked.
        let (dx, dw) = with_f32(&dy, "conv3d dy", |dyv| {
            let dx = if x.track_op() {
                Some(with_f32(w, "conv3d weight", |wv| {
                    backward_input(g, dyv, wv).map_err(crate::storage::to_candle)
                })?)
            } else {
                None
            };
            let dw = if w.track_op() {
                Some(with_f32(x, "conv3d x", |xv| {
                    backward_weight(g, xv, dyv).map_err(crate::storage::to_candle)
                })?)
            } else {
                None
            };
            Ok::<_, candle_core::Error>((dx, dw))
        })?;
        let dx = dx
            .map(|v| Tensor::from_vec(v, g.in_dims().to_vec(), x.device()))
            .transpose()?;
        let dw = dw
            .map(|v| Tensor::from_vec(v, g.w_dims().to_vec(), w.device()))
            .transpose()?;
        Ok((dx, dw))
    }
}

/// `y = conv3d(x, w) + bias` in f32 on contiguous CPU tensors: the bias is added inside the
/// kernels and its gradient is a per-channel sum of `dy` (a separate broadcast add costs a full
/// pass over the output, a second output-sized buffer and a slow multi-axis reduction backward).
pub(crate) struct Conv3dBiasOp {
    pub geom: Geom,
}

impl CustomOp3 for Conv3dBiasOp {
    fn name(&self) -> &'static str {
        "video-kernels-conv3d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        if l1.dims() != g.in_dims() || l2.dims() != g.w_dims() || l3.dims() != [g.cout] {
            candle_core::bail!(
                "conv3d kernel: x {:?} / weight {:?} / bias {:?} differ from the validated {:?} / {:?} / [{}]",
                l1.dims(),
                l2.dims(),
                l3.dims(),
                g.in_dims(),
                g.w_dims(),
                g.cout
            );
        }
        let x = f32_slice(s1, l1, "conv3d x")?;
        let w = f32_slice(s2, l2, "conv3d weight")?;
        let b = f32_slice(s3, l3, "conv3d bias")?;
        let y = forward(g, x, w, Some(b)).map_err(crate::storage::to_candle)?;
        Ok((CpuStorage::F32(y), Shape::from(g.out_dims().to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = Conv3dOp { geom: self.geom }.bwd(x, w, res, dy)?;
        if !b.track_op() {
            return Ok((dx, dw, None));
        }
        let g = &self.geom;
        let dy = dy.to_dtype(candle_core::DType::F32)?;
        let db = with_f32(&dy, "conv3d dy", |dyv| {
            Ok::<_, candle_core::Error>(bias_grad(g, dyv))
        })?;
        let db = Tensor::from_vec(db, g.cout, b.device())?;
        Ok((dx, dw, Some(db)))
    }
}
