//! The fused attention as a candle [`CustomOp3`] over `(q, k, v)`, so candle's autograd calls our
//! backward.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp3, DType, Error as CError, Layout, Result as CResult, Shape, Tensor,
};

use super::cpu::{Backend, Heads, MaskData, Problem};
use super::Dims;
use crate::storage::f32_slice;

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

    fn problem<'a>(&'a self, q: &'a [f32], k: Heads<'a>, v: Heads<'a>) -> Problem<'a> {
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

/// `k` or `v` `[B, Hkv, Nk, D]` as per-head slices: contiguous, or with row-contiguous heads at
/// any head / batch strides (a KV cache narrowed to its filled length), read in place.
fn kv_heads<'a>(s: &'a CpuStorage, l: &Layout, name: &str, dims: &Dims) -> CResult<Heads<'a>> {
    let CpuStorage::F32(data) = s else {
        return Err(CError::Msg(format!(
            "video-kernels attention: `{name}` must be f32 inside the fused op, found {:?}",
            s.dtype()
        )));
    };
    let head_len = dims.nk * dims.d;
    if let Some(x) = l.contiguous_offsets().and_then(|(a, b)| data.get(a..b)) {
        return Heads::contiguous(x, dims.b * dims.hkv, head_len);
    }
    match (l.dims(), l.stride()) {
        ([_, _, nk, d], [sb, sh, sn, 1]) if *d == dims.d && (*sn == dims.d || *nk <= 1) => {
            Heads::strided(
                data,
                l.start_offset(),
                (dims.b, dims.hkv),
                (*sb, *sh),
                head_len,
            )
        }
        _ => Err(CError::Msg(format!(
            "video-kernels attention: `{name}` must have row-contiguous heads inside the fused op"
        ))),
    }
}

/// Whether [`kv_heads`] reads `t` in place (no copy needed before the op).
pub(crate) fn kv_in_place(t: &Tensor) -> bool {
    let l = t.layout();
    l.is_contiguous()
        || matches!((l.dims(), l.stride()), ([_, _, nk, d], [_, _, sn, 1]) if sn == d || *nk <= 1)
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
            f32_slice(s1, l1, "attention q")?,
            kv_heads(s2, l2, "k", &self.dims)?,
            kv_heads(s3, l3, "v", &self.dims)?,
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
        let Dims { b, hkv, nk, d, .. } = self.dims;
        let p = self.problem(
            &qv,
            Heads::contiguous(&kv, b * hkv, nk * d)?,
            Heads::contiguous(&vv, b * hkv, nk * d)?,
        );
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
