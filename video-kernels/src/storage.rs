//! Borrowing the f32 elements of candle CPU storages and tensors, for the fused ops.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Error as CError, Layout, Result as CResult, Storage, Tensor};

/// The elements of a contiguous f32 CPU storage, in logical order. `what` names the operand in
/// the error (`"attention q"`).
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> CResult<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        return Err(CError::Msg(format!(
            "video-kernels: `{what}` must be f32 inside the fused op, found {:?}",
            s.dtype()
        )));
    };
    l.contiguous_offsets()
        .and_then(|(a, b)| data.get(a..b))
        .ok_or_else(|| {
            CError::Msg(format!(
                "video-kernels: `{what}` must be contiguous inside the fused op (shape {:?}, \
                 stride {:?})",
                l.dims(),
                l.stride()
            ))
        })
}

/// Calls `f` with the elements of an f32 CPU tensor, made contiguous first when it is not.
pub(crate) fn with_f32<R, E: From<CError>>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> Result<R, E>,
) -> Result<R, E> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*st else {
        return Err(CError::Msg(format!("video-kernels: `{what}` must be on the CPU")).into());
    };
    f(f32_slice(cpu, l, what)?)
}

/// Our error as candle's, for custom ops' `cpu_fwd` / `bwd` (a wrapped candle error is
/// unwrapped, anything else boxed).
pub(crate) fn to_candle(e: vidgen_video_core::Error) -> CError {
    match e {
        vidgen_video_core::Error::Candle(c) => c,
        other => CError::wrap(other),
    }
}
