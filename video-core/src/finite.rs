//! Detecting NaN / Inf in model outputs.
//!
//! Every model output and every sampler step is checked, so the check reads the tensor's own
//! storage in place (CPU f32 / f16 / bf16 / f64, contiguous): one pass over the bits, no dtype
//! conversion and no copy. NaN and Inf are told apart only when something non-finite was found.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::{Error, Result};

/// Elements per parallel task of the scan (a few hundred KiB of reads).
const CHUNK: usize = 1 << 16;

/// Returns [`Error::NonFinite`] naming `location` if `x` holds any NaN or infinite value.
///
/// Works for any float dtype; integer tensors are always finite. A contiguous CPU tensor of
/// dtype f32, f16, bf16 or f64 is scanned in place (in parallel when large); other layouts and
/// devices are first copied to a contiguous host tensor of the same dtype.
///
/// # Errors
/// [`Error::NonFinite`] with the NaN and infinity counts; candle errors of the copy.
pub fn check_finite(x: &Tensor, location: &str) -> Result<()> {
    let dt = x.dtype();
    if !dt.is_float() {
        return Ok(());
    }
    let counts = {
        let (storage, layout) = x.storage_and_layout();
        match (&*storage, layout.contiguous_offsets()) {
            (Storage::Cpu(cpu), Some((start, end))) => match cpu {
                CpuStorage::F32(v) => Some(count_bits(&v[start..end], |a| {
                    let b = a.to_bits();
                    (b & 0x7f80_0000 == 0x7f80_0000, b & 0x007f_ffff != 0)
                })),
                CpuStorage::F16(v) => Some(count_bits(&v[start..end], |a| {
                    let b = a.to_bits();
                    (b & 0x7c00 == 0x7c00, b & 0x03ff != 0)
                })),
                CpuStorage::BF16(v) => Some(count_bits(&v[start..end], |a| {
                    let b = a.to_bits();
                    (b & 0x7f80 == 0x7f80, b & 0x007f != 0)
                })),
                CpuStorage::F64(v) => Some(count_bits(&v[start..end], |a| {
                    let b = a.to_bits();
                    (
                        b & 0x7ff0_0000_0000_0000 == 0x7ff0_0000_0000_0000,
                        b & 0x000f_ffff_ffff_ffff != 0,
                    )
                })),
                _ => None,
            },
            _ => None,
        }
    };
    let (nan, inf) = match counts {
        Some(c) => c,
        None if x.device().is_cpu()
            && x.is_contiguous()
            && !matches!(dt, DType::F32 | DType::F16 | DType::BF16 | DType::F64) =>
        {
            // Other float dtypes (f8): count in f32, where every value is representable.
            let v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            count_bits(&v, |a| {
                let b = a.to_bits();
                (b & 0x7f80_0000 == 0x7f80_0000, b & 0x007f_ffff != 0)
            })
        }
        // A strided view or a device tensor: one contiguous host copy, same dtype, then the scan.
        None => return check_finite(&x.to_device(&Device::Cpu)?.contiguous()?, location),
    };
    if nan + inf > 0 {
        return Err(Error::NonFinite {
            location: location.to_string(),
            nan,
            inf,
            total: x.elem_count(),
        });
    }
    Ok(())
}

/// `(NaN count, infinity count)` of `v`; `class(a)` is `(exponent all ones, mantissa non-zero)`.
///
/// The first pass only counts non-finite values, a branch-free sum the compiler vectorises;
/// the split into NaN and infinity runs only when that count is non-zero.
fn count_bits<T: Copy + Sync>(v: &[T], class: impl Fn(T) -> (bool, bool) + Sync) -> (usize, usize) {
    let non_finite = |c: &[T]| -> usize { c.iter().map(|&a| usize::from(class(a).0)).sum() };
    let bad: usize = if v.len() > 4 * CHUNK {
        v.par_chunks(CHUNK).map(non_finite).sum()
    } else {
        non_finite(v)
    };
    if bad == 0 {
        return (0, 0);
    }
    let nan = v
        .iter()
        .filter(|&&a| {
            let (e, m) = class(a);
            e && m
        })
        .count();
    (nan, bad - nan)
}
