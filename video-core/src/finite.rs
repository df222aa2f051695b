//! Detecting NaN / Inf in model outputs.

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// Returns [`Error::NonFinite`] naming `location` if `x` holds any NaN or infinite value.
///
/// Works for any float dtype (values are counted in f32); integer tensors are always finite.
pub fn check_finite(x: &Tensor, location: &str) -> Result<()> {
    if !x.dtype().is_float() {
        return Ok(());
    }
    let v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let (mut nan, mut inf) = (0usize, 0usize);
    for a in &v {
        if a.is_nan() {
            nan += 1;
        } else if a.is_infinite() {
            inf += 1;
        }
    }
    if nan + inf > 0 {
        return Err(Error::NonFinite {
            location: location.to_string(),
            nan,
            inf,
            total: v.len(),
        });
    }
    Ok(())
}
