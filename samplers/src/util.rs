//! Small tensor helpers shared by the solvers: scalar arithmetic in float32 with the rounding
//! torch uses, per-sample σ broadcasting, and seeded Gaussian noise.

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;
use vidgen_video_core::{Error, Result};

/// `x · c` elementwise, `c` rounded to float32 first (torch's `tensor_f32 * scalar`).
pub(crate) fn mul(x: &Tensor, c: f32) -> Result<Tensor> {
    Ok(x.affine(c as f64, 0.0)?)
}

/// `x / c` elementwise as a true division (not a multiplication by `1/c`).
pub(crate) fn div(x: &Tensor, c: f32) -> Result<Tensor> {
    let c = Tensor::new(c, x.device())?.to_dtype(x.dtype())?;
    Ok(x.broadcast_div(&c)?)
}

/// Converts to float32 (no copy when already f32).
pub(crate) fn f32_of(x: &Tensor) -> Result<Tensor> {
    Ok(if x.dtype() == DType::F32 {
        x.clone()
    } else {
        x.to_dtype(DType::F32)?
    })
}

/// The σ values of a `[B]` or scalar `[]` (or `[1]`) σ tensor, as f64.
pub(crate) fn sigma_values(sigma: &Tensor) -> Result<Vec<f64>> {
    let v = sigma
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    if v.is_empty() {
        return Err(Error::invalid("sigma", "an empty σ tensor"));
    }
    Ok(v)
}

/// Reshapes a `[B]` / scalar tensor of per-sample coefficients to `[B, 1, 1, …]` (rank of `x`) so
/// it broadcasts over a sample; a single value broadcasts over the whole batch.
pub(crate) fn per_sample(coef: &Tensor, x: &Tensor) -> Result<Tensor> {
    let n = coef.elem_count();
    let b = x.dims().first().copied().unwrap_or(1);
    if n != 1 && n != b {
        return Err(Error::shape("sigma", &[b], coef.dims()));
    }
    let mut shape = vec![1usize; x.rank().max(1)];
    shape[0] = n;
    Ok(coef.reshape(shape)?.to_dtype(x.dtype())?)
}

/// A σ tensor `[B]` holding the same value for every sample of `x`.
pub(crate) fn sigma_batch(sigma: f64, x: &Tensor) -> Result<Tensor> {
    let b = x.dims().first().copied().unwrap_or(1);
    Ok(Tensor::full(sigma as f32, b, x.device())?)
}

/// Standard normal noise of `shape` drawn from `rng` (float32), so runs are reproducible from a
/// seed without candle's global generator.
pub fn randn<R: Rng + ?Sized>(rng: &mut R, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// Noise shaped and typed like `x`.
pub fn randn_like<R: Rng + ?Sized>(rng: &mut R, x: &Tensor) -> Result<Tensor> {
    Ok(randn(rng, x.dims(), x.device())?.to_dtype(x.dtype())?)
}

/// Checks that an optional noise tensor is present and shaped like `x`.
pub(crate) fn need_noise<'a>(
    noise: Option<&'a Tensor>,
    x: &Tensor,
    why: &str,
) -> Result<&'a Tensor> {
    let n = noise
        .ok_or_else(|| Error::invalid("noise", format!("{why} needs caller-supplied noise")))?;
    if n.dims() != x.dims() {
        return Err(Error::shape("noise", x.dims(), n.dims()));
    }
    Ok(n)
}

/// Checks a step index against a schedule length.
pub(crate) fn check_index(index: usize, len: usize, what: &str) -> Result<()> {
    if index >= len {
        return Err(Error::invalid(
            "step_index",
            format!("{index} is out of range for {what} with {len} steps"),
        ));
    }
    Ok(())
}
