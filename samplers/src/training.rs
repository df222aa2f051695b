//! Training: EDM's log-normal σ sampling and loss weight, the VP forward process with ε / v / x₀
//! targets, and a denoising loss that takes any [`Denoiser`].

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;
use vidgen_video_core::{Conditioning, Denoiser, Error, Result};

use crate::precond::PredictionType;
use crate::schedule::VpSchedule;
use crate::util::{per_sample, randn_like, sigma_values};

/// EDM training (Karras et al. 2022): `ln σ ~ N(P_mean, P_std²)`, loss weight
/// `λ(σ) = (σ² + σ_d²)/(σ·σ_d)²`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdmTraining {
    /// Mean of ln σ (EDM: −1.2).
    pub p_mean: f64,
    /// Standard deviation of ln σ (EDM: 1.2).
    pub p_std: f64,
    /// σ_data (EDM: 0.5).
    pub sigma_data: f64,
}

impl Default for EdmTraining {
    fn default() -> Self {
        Self {
            p_mean: -1.2,
            p_std: 1.2,
            sigma_data: 0.5,
        }
    }
}

impl EdmTraining {
    /// Draws `batch` noise levels `σ = exp(P_mean + P_std·n)`.
    ///
    /// # Shapes
    /// Returns `[batch]` float32.
    ///
    /// # Errors
    /// Tensor creation failures.
    pub fn sample_sigmas<R: Rng + ?Sized>(
        &self,
        batch: usize,
        rng: &mut R,
        device: &Device,
    ) -> Result<Tensor> {
        let v: Vec<f32> = (0..batch)
            .map(|_| {
                let n: f64 = rng.sample(StandardNormal);
                (self.p_mean + self.p_std * n).exp() as f32
            })
            .collect();
        Ok(Tensor::from_vec(v, batch, device)?)
    }

    /// `λ(σ) = (σ² + σ_d²)/(σ·σ_d)²`.
    pub fn loss_weight(&self, sigma: f64) -> f64 {
        let sd = self.sigma_data;
        (sigma * sigma + sd * sd) / (sigma * sd).powi(2)
    }

    /// λ per sample.
    ///
    /// # Shapes
    /// `sigmas` `[B]` → `[B]` float32.
    ///
    /// # Errors
    /// Empty σ.
    pub fn loss_weights(&self, sigmas: &Tensor) -> Result<Tensor> {
        let v: Vec<f32> = sigma_values(sigmas)?
            .iter()
            .map(|s| self.loss_weight(*s) as f32)
            .collect();
        let n = v.len();
        Ok(Tensor::from_vec(v, n, sigmas.device())?)
    }

    /// The EDM loss `mean(λ(σ)·(D(x₀ + σ·n; σ) − x₀)²)` with caller-supplied σ and noise.
    ///
    /// # Shapes
    /// `x0`, `noise`: `[B, …]`; `sigmas`: `[B]`; returns a scalar `[]` float32.
    ///
    /// # Errors
    /// Shape mismatches (named) or denoiser errors.
    pub fn loss<D: Denoiser + ?Sized>(
        &self,
        denoiser: &D,
        x0: &Tensor,
        cond: &Conditioning,
        sigmas: &Tensor,
        noise: &Tensor,
    ) -> Result<Tensor> {
        self.loss_weighted(denoiser, x0, cond, sigmas, noise, None)
    }

    /// [`EdmTraining::loss`] with a per-element weight `w`:
    /// `mean(λ(σ)·w·(D(x₀ + σ·n; σ) − x₀)²)` (`None`: 1 everywhere). A region weight (the
    /// object's latents up-weighted against a background that is merely copied) spends the
    /// loss where the task is.
    ///
    /// # Shapes
    /// As [`EdmTraining::loss`]; `weight` broadcastable to `x0` (e.g. `[B, 1, T, h, w]` for
    /// `x0 [B, C, T, h, w]`).
    ///
    /// # Errors
    /// As [`EdmTraining::loss`]; a weight that does not broadcast to `x0`.
    pub fn loss_weighted<D: Denoiser + ?Sized>(
        &self,
        denoiser: &D,
        x0: &Tensor,
        cond: &Conditioning,
        sigmas: &Tensor,
        noise: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<Tensor> {
        if noise.dims() != x0.dims() {
            return Err(Error::shape("noise", x0.dims(), noise.dims()));
        }
        let b = x0.dims().first().copied().unwrap_or(1);
        if sigmas.elem_count() != b {
            return Err(Error::shape("sigmas", &[b], sigmas.dims()));
        }
        let s = per_sample(sigmas, x0)?;
        let x = x0.add(&noise.broadcast_mul(&s)?)?;
        let d = denoiser.denoise(&x, sigmas, cond)?;
        if d.dims() != x0.dims() {
            return Err(Error::shape("denoiser output", x0.dims(), d.dims()));
        }
        let w = per_sample(&self.loss_weights(sigmas)?, x0)?;
        let err = weighted(d.sub(x0)?.to_dtype(DType::F32)?.sqr()?, weight)?;
        Ok(err.broadcast_mul(&w.to_dtype(DType::F32)?)?.mean_all()?)
    }

    /// [`EdmTraining::loss`] with σ and noise drawn from `rng`.
    ///
    /// # Shapes
    /// `x0`: `[B, …]`; returns a scalar.
    ///
    /// # Errors
    /// As [`EdmTraining::loss`].
    pub fn loss_with_rng<D: Denoiser + ?Sized, R: Rng + ?Sized>(
        &self,
        denoiser: &D,
        x0: &Tensor,
        cond: &Conditioning,
        rng: &mut R,
    ) -> Result<Tensor> {
        let b = x0.dims().first().copied().unwrap_or(1);
        let sigmas = self.sample_sigmas(b, rng, x0.device())?;
        let noise = randn_like(rng, x0)?;
        self.loss(denoiser, x0, cond, &sigmas, &noise)
    }
}

/// `err · weight` (f32) for a per-element loss weight broadcastable to `err`; `err` itself
/// for `None`.
///
/// # Errors
/// A weight that does not broadcast to `err`'s shape (named "loss weight").
pub fn weighted(err: Tensor, weight: Option<&Tensor>) -> Result<Tensor> {
    let Some(m) = weight else {
        return Ok(err);
    };
    let m = m
        .to_dtype(DType::F32)?
        .broadcast_as(err.dims())
        .map_err(|_| Error::shape("loss weight", err.dims(), m.dims()))?;
    Ok(err.mul(&m)?)
}

fn alpha_columns(
    schedule: &VpSchedule,
    timesteps: &[usize],
    x: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let b = x.dims().first().copied().unwrap_or(1);
    if timesteps.len() != b {
        return Err(Error::shape("timesteps", &[b], &[timesteps.len()]));
    }
    let mut sa = Vec::with_capacity(b);
    let mut sb = Vec::with_capacity(b);
    for t in timesteps {
        let a = schedule.alpha_cumprod_at(*t)?;
        sa.push(a.sqrt());
        sb.push((1.0 - a).sqrt());
    }
    let dev = x.device();
    Ok((
        per_sample(&Tensor::from_vec(sa, b, dev)?, x)?,
        per_sample(&Tensor::from_vec(sb, b, dev)?, x)?,
    ))
}

/// The VP forward process `x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε` (diffusers' `add_noise`), one training
/// step per sample.
///
/// # Shapes
/// `x0`, `noise`: `[B, …]`; `timesteps`: B values; returns `[B, …]`.
///
/// # Errors
/// Mismatched shapes or a timestep outside the schedule.
pub fn add_noise(
    schedule: &VpSchedule,
    x0: &Tensor,
    noise: &Tensor,
    timesteps: &[usize],
) -> Result<Tensor> {
    if noise.dims() != x0.dims() {
        return Err(Error::shape("noise", x0.dims(), noise.dims()));
    }
    let (sa, sb) = alpha_columns(schedule, timesteps, x0)?;
    Ok(x0.broadcast_mul(&sa)?.add(&noise.broadcast_mul(&sb)?)?)
}

/// The regression target of a network trained with `prediction`: ε, `v = √ᾱ·ε − √(1−ᾱ)·x₀`
/// (diffusers' `get_velocity`), or x₀.
///
/// # Shapes
/// `x0`, `noise`: `[B, …]`; `timesteps`: B values; returns `[B, …]`.
///
/// # Errors
/// Mismatched shapes or a timestep outside the schedule.
pub fn training_target(
    prediction: PredictionType,
    schedule: &VpSchedule,
    x0: &Tensor,
    noise: &Tensor,
    timesteps: &[usize],
) -> Result<Tensor> {
    if noise.dims() != x0.dims() {
        return Err(Error::shape("noise", x0.dims(), noise.dims()));
    }
    Ok(match prediction {
        PredictionType::Epsilon => noise.clone(),
        PredictionType::Sample => x0.clone(),
        PredictionType::VPrediction => {
            let (sa, sb) = alpha_columns(schedule, timesteps, x0)?;
            noise.broadcast_mul(&sa)?.sub(&x0.broadcast_mul(&sb)?)?
        }
    })
}

/// The same targets on the σ scale (`x = x₀ + σ·ε`, so `ᾱ = 1/(1+σ²)`): ε, `v = (ε − σ·x₀)/√(1+σ²)`, x₀.
///
/// # Shapes
/// `x0`, `noise`: `[B, …]`; `sigmas`: `[B]`; returns `[B, …]`.
///
/// # Errors
/// Mismatched shapes.
pub fn training_target_sigma(
    prediction: PredictionType,
    x0: &Tensor,
    noise: &Tensor,
    sigmas: &Tensor,
) -> Result<Tensor> {
    if noise.dims() != x0.dims() {
        return Err(Error::shape("noise", x0.dims(), noise.dims()));
    }
    Ok(match prediction {
        PredictionType::Epsilon => noise.clone(),
        PredictionType::Sample => x0.clone(),
        PredictionType::VPrediction => {
            let s = sigma_values(sigmas)?;
            let n = s.len();
            let dev = x0.device();
            let inv: Vec<f32> = s
                .iter()
                .map(|v| (1.0 / (1.0 + v * v).sqrt()) as f32)
                .collect();
            let sig: Vec<f32> = s.iter().map(|v| *v as f32).collect();
            let inv = per_sample(&Tensor::from_vec(inv, n, dev)?, x0)?;
            let sig = per_sample(&Tensor::from_vec(sig, n, dev)?, x0)?;
            noise.sub(&x0.broadcast_mul(&sig)?)?.broadcast_mul(&inv)?
        }
    })
}
