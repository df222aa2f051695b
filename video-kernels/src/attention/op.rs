//! The fused attention as a candle [`CustomOp3`] over `(q, k, v)`, so candle's autograd calls our
//! backward.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp3, DType, Error as CError, Layout, Result as CResult, Shape, Tensor,
};

use super::cpu::{Backend, MaskData, Problem};
use super::Dims;

/// `softmax(scale · q·kᵀ + mask + causal) · v` on contiguous f32 CPU tensors. The mask is a
/// constant of the op; the forward's log-sum-exp is kept for the backward.
pub(crate) struct FlashAttention {
    dims: Dims,
    scale: f32,
    causal: bool,
    mask: Option<MaskData>,
    backend: Backend,
    /// `lse [B, Hq, Nq]` of the last forward run by this op (one op per `attention` call).
    lse: Mutex<Option<Vec<f32>>>,
}

impl FlashAttention {
    pub(crate) fn new(dims: Dims, scale: f32, causal: bool, mask: Option<MaskData>) -> Self {
        Self {
            dims,
            scale,
            causal,
            mask,
            backend: Backend::detect(),
            lse: Mutex::new(None),
        }
    }

    fn problem<'a>(&'a self, q: &'a [f32], k: &'a [f32], v: &'a [f32]) -> Problem<'a> {
        Problem {
            dims: self.dims,
            scale: self.scale,
            causal: self.causal,
            mask: self.mask.as_ref(),
            q,
            k,
            v,
            backend: self.backend,
        }
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, name: &str) -> CResult<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        return Err(CError::Msg(format!(
            "video-kernels attention: `{name}` must be f32 inside the fused op, found {:?}",
            s.dtype()
        )));
    };
    l.contiguous_offsets()
        .and_then(|(a, b)| data.get(a..b))
        .ok_or_else(|| {
            CError::Msg(format!(
                "video-kernels attention: `{name}` must be contiguous inside the fused op"
            ))
        })
}

fn to_vec(t: &Tensor) -> CResult<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "video-kernels-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (q, k, v) = (
            f32_slice(s1, l1, "q")?,
            f32_slice(s2, l2, "k")?,
            f32_slice(s3, l3, "v")?,
        );
        let (out, lse) = self.problem(q, k, v).forward()?;
        if let Ok(mut slot) = self.lse.lock() {
            *slot = Some(lse);
        }
        let Dims { b, hq, nq, d, .. } = self.dims;
        Ok((CpuStorage::F32(out), Shape::from((b, hq, nq, d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        dout: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (qv, kv, vv) = (to_vec(q)?, to_vec(k)?, to_vec(v)?);
        let (out_v, dout_v) = (to_vec(out)?, to_vec(dout)?);
        let p = self.problem(&qv, &kv, &vv);
        let saved = self.lse.lock().ok().and_then(|slot| slot.clone());
        let lse = match saved {
            Some(lse) => lse,
            None => p.forward()?.1,
        };
        let (dq, dk, dv) = p.backward(&out_v, &dout_v, &lse)?;
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), q.device())?),
            Some(Tensor::from_vec(dk, k.shape(), k.device())?),
            Some(Tensor::from_vec(dv, v.shape(), v.device())?),
        ))
    }
}
