//! EDM solvers over any [`Denoiser`]: Euler, Heun (2nd order) and stochastic churn (Karras et al.
//! 2022, Algorithms 1 and 2), each step addressed by an explicit index with caller-supplied noise,
//! plus the high-level [`sample`] loop and [`sample_scheduler`] for diffusers-style schedulers.

use candle_core::Tensor;
use indicatif::ProgressBar;
use rand::Rng;
use vidgen_video_core::{check_finite, Conditioning, Denoiser, Error, Result};

use crate::diffusers::{Churn, Scheduler, StepMemory};
use crate::precond::Network;
use crate::schedule::{exponential_sigmas, karras_sigmas};
use crate::util::{check_index, div, f32_of, mul, need_noise, randn_like, sigma_batch};

/// The ODE solver of an [`EdmSampler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Solver {
    /// First order: one denoiser call per step.
    #[default]
    Euler,
    /// Heun's second-order method: two calls per step, Euler on the last step to σ = 0.
    Heun,
}

/// The result of one solver step.
#[derive(Debug, Clone)]
pub struct EdmStep {
    /// The sample at the next σ.
    pub x_next: Tensor,
    /// The first denoiser output of the step (x₀ estimate at σ̂).
    pub denoised: Tensor,
}

/// A σ schedule (descending, ending in 0) with a solver and churn: the sampler of EDM.
#[derive(Debug, Clone)]
pub struct EdmSampler {
    sigmas: Vec<f64>,
    /// The solver.
    pub solver: Solver,
    /// Stochastic churn (default: none, a deterministic ODE solve).
    pub churn: Churn,
}

impl EdmSampler {
    /// Karras σ for `steps` steps from `sigma_max` to `sigma_min`, then 0.
    ///
    /// # Errors
    /// `steps == 0`, `sigma_min ≥ sigma_max`, non-positive σ_min or ρ.
    pub fn karras(
        steps: usize,
        sigma_min: f64,
        sigma_max: f64,
        rho: f64,
        solver: Solver,
    ) -> Result<Self> {
        let mut s = karras_sigmas(steps, sigma_min, sigma_max, rho)?;
        s.push(0.0);
        Self::from_sigmas(s, solver)
    }

    /// Log-uniform σ for `steps` steps, then 0.
    ///
    /// # Errors
    /// As [`EdmSampler::karras`].
    pub fn exponential(
        steps: usize,
        sigma_min: f64,
        sigma_max: f64,
        solver: Solver,
    ) -> Result<Self> {
        let mut s = exponential_sigmas(steps, sigma_min, sigma_max)?;
        s.push(0.0);
        Self::from_sigmas(s, solver)
    }

    /// An explicit σ schedule: at least two values, finite, non-increasing, last ≥ 0, all others
    /// > 0 (usually ending in 0).
    ///
    /// # Errors
    /// A schedule that breaks those rules.
    pub fn from_sigmas(sigmas: Vec<f64>, solver: Solver) -> Result<Self> {
        if sigmas.len() < 2 {
            return Err(Error::invalid(
                "sigmas",
                "need at least one step (two σ values)",
            ));
        }
        let n = sigmas.len();
        for (i, s) in sigmas.iter().enumerate() {
            let ok = s.is_finite() && if i + 1 == n { *s >= 0.0 } else { *s > 0.0 };
            if !ok {
                return Err(Error::invalid(
                    "sigmas",
                    format!("σ[{i}] = {s} is not a valid noise level"),
                ));
            }
        }
        if sigmas.windows(2).any(|w| w[1] > w[0]) {
            return Err(Error::invalid("sigmas", "σ must be non-increasing"));
        }
        Ok(Self {
            sigmas,
            solver,
            churn: Churn::default(),
        })
    }

    /// With churn options.
    pub fn with_churn(mut self, churn: Churn) -> Self {
        self.churn = churn;
        self
    }

    /// The σ schedule (steps + 1 values).
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// Number of steps.
    pub fn steps(&self) -> usize {
        self.sigmas.len() - 1
    }

    /// The initial noise scale: `x_T = noise · σ_0`.
    pub fn init_noise_sigma(&self) -> f64 {
        self.sigmas[0]
    }

    /// Whether step `i` adds churn noise (and so needs `noise`).
    pub fn needs_noise(&self, i: usize) -> bool {
        i < self.steps() && self.churn.gamma(self.sigmas[i], self.sigmas.len()) > 0.0
    }

    /// Step `i`: from `x` at `σ_i` to `σ_{i+1}`.
    ///
    /// `noise` (like `x`) is needed only when churn applies at this step ([`Self::needs_noise`]).
    ///
    /// # Shapes
    /// `x`: `[B, …]` (video `[B, C, T, H, W]`); outputs have the same shape.
    ///
    /// # Errors
    /// `i` out of range, missing noise, denoiser errors.
    pub fn step<D: Denoiser + ?Sized>(
        &self,
        denoiser: &D,
        x: &Tensor,
        i: usize,
        cond: &Conditioning,
        noise: Option<&Tensor>,
    ) -> Result<EdmStep> {
        check_index(i, self.steps(), "the EDM sampler")?;
        let (sigma, sigma_next) = (self.sigmas[i], self.sigmas[i + 1]);
        let gamma = self.churn.gamma(sigma, self.sigmas.len());
        let sigma_hat = sigma * (gamma + 1.0);
        let x = if gamma > 0.0 {
            let n = need_noise(noise, x, "churn (s_churn > 0)")?;
            let amp = (sigma_hat * sigma_hat - sigma * sigma).max(0.0).sqrt() * self.churn.s_noise;
            x.add(&n.affine(amp, 0.0)?)?
        } else {
            x.clone()
        };
        match self.solver {
            Solver::Euler => euler_step(denoiser, &x, sigma_hat, sigma_next, cond),
            Solver::Heun => heun_step(denoiser, &x, sigma_hat, sigma_next, cond),
        }
    }
}

/// `d = (x − D(x; σ)) / σ`, the probability-flow ODE derivative.
fn derivative(x: &Tensor, denoised: &Tensor, sigma: f64) -> Result<Tensor> {
    div(&x.sub(denoised)?, sigma as f32)
}

/// One Euler step from σ to σ_next.
///
/// # Shapes
/// `x`: `[B, …]`; returns tensors of the same shape.
///
/// # Errors
/// σ ≤ 0 or denoiser errors.
pub fn euler_step<D: Denoiser + ?Sized>(
    denoiser: &D,
    x: &Tensor,
    sigma: f64,
    sigma_next: f64,
    cond: &Conditioning,
) -> Result<EdmStep> {
    if sigma.is_nan() || sigma <= 0.0 {
        return Err(Error::invalid(
            "sigma",
            format!("{sigma} must be positive for a solver step"),
        ));
    }
    let dtype = x.dtype();
    let denoised = f32_of(&denoiser.denoise(x, &sigma_batch(sigma, x)?, cond)?)?;
    let xf = f32_of(x)?;
    let d = derivative(&xf, &denoised, sigma)?;
    let dt = (sigma_next as f32) - (sigma as f32);
    let x_next = xf.add(&mul(&d, dt)?)?.to_dtype(dtype)?;
    Ok(EdmStep { x_next, denoised })
}

/// One Heun step from σ to σ_next (plain Euler when σ_next = 0), as k-diffusion's `sample_heun`.
///
/// # Shapes
/// `x`: `[B, …]`; returns tensors of the same shape.
///
/// # Errors
/// σ ≤ 0 or denoiser errors.
pub fn heun_step<D: Denoiser + ?Sized>(
    denoiser: &D,
    x: &Tensor,
    sigma: f64,
    sigma_next: f64,
    cond: &Conditioning,
) -> Result<EdmStep> {
    if sigma_next == 0.0 {
        return euler_step(denoiser, x, sigma, sigma_next, cond);
    }
    let first = euler_step(denoiser, x, sigma, sigma_next, cond)?;
    let dtype = x.dtype();
    let xf = f32_of(x)?;
    let d = derivative(&xf, &first.denoised, sigma)?;
    let x2 = f32_of(&first.x_next)?;
    let den2 =
        f32_of(&denoiser.denoise(&x2.to_dtype(dtype)?, &sigma_batch(sigma_next, x)?, cond)?)?;
    let d2 = derivative(&x2, &den2, sigma_next)?;
    let dt = (sigma_next as f32) - (sigma as f32);
    let d_prime = div(&d.add(&d2)?, 2.0)?;
    let x_next = xf.add(&mul(&d_prime, dt)?)?.to_dtype(dtype)?;
    Ok(EdmStep {
        x_next,
        denoised: first.denoised,
    })
}

/// Samples with an EDM sampler: `x_T` (already at σ_0, i.e. `noise · sampler.init_noise_sigma()`)
/// is integrated down the σ schedule. Churn noise is drawn from `rng`; `progress` (if given) is
/// advanced once per step. Each step's output is checked for NaN / Inf.
///
/// # Shapes
/// `x_t`: `[B, …]` (video `[B, C, T, H, W]`); returns the same shape.
///
/// # Errors
/// Denoiser errors, or non-finite values (naming the step).
pub fn sample<D, R>(
    denoiser: &D,
    x_t: &Tensor,
    cond: &Conditioning,
    steps: &EdmSampler,
    rng: &mut R,
    progress: Option<&ProgressBar>,
) -> Result<Tensor>
where
    D: Denoiser + ?Sized,
    R: Rng + ?Sized,
{
    if let Some(p) = progress {
        p.set_length(steps.steps() as u64);
    }
    let mut x = x_t.clone();
    for i in 0..steps.steps() {
        let noise = if steps.needs_noise(i) {
            Some(randn_like(rng, &x)?)
        } else {
            None
        };
        x = steps.step(denoiser, &x, i, cond, noise.as_ref())?.x_next;
        check_finite(&x, &format!("sample after step {i}"))?;
        if let Some(p) = progress {
            p.inc(1);
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    Ok(x)
}

/// The diffusers loop with any [`Scheduler`] and a raw [`Network`]: `x = noise · init_noise_sigma`
/// must already be applied to `x_t`; each call gets `scale_model_input(x, i)` and the timestep
/// `timesteps()[i]` as a `[B]` tensor. Noise for stochastic steps is drawn from `rng`.
///
/// # Shapes
/// `x_t`: `[B, …]`; returns the same shape.
///
/// # Errors
/// Scheduler / network errors, or non-finite values (naming the call).
pub fn sample_scheduler<N, R>(
    scheduler: &dyn Scheduler,
    net: &N,
    x_t: &Tensor,
    cond: &Conditioning,
    rng: &mut R,
    progress: Option<&ProgressBar>,
) -> Result<Tensor>
where
    N: Network + ?Sized,
    R: Rng + ?Sized,
{
    let n = scheduler.timesteps().len();
    if n == 0 {
        return Err(Error::invalid(
            "num_inference_steps",
            "call set_timesteps with at least 1 step first",
        ));
    }
    if let Some(p) = progress {
        p.set_length(n as u64);
    }
    let b = x_t.dims().first().copied().unwrap_or(1);
    let mut mem = StepMemory::default();
    let mut x = x_t.clone();
    for i in 0..n {
        let x_in = scheduler.scale_model_input(&x, i)?;
        let t = crate::diffusers::timestep_tensor(scheduler, i, b, x.device())?;
        let out = net.forward(&x_in, &t, cond)?;
        let noise = if scheduler.needs_noise(i) {
            Some(randn_like(rng, &x)?)
        } else {
            None
        };
        x = scheduler
            .step(&out, i, &x, noise.as_ref(), &mut mem)?
            .prev_sample;
        check_finite(&x, &format!("sample after scheduler call {i}"))?;
        if let Some(p) = progress {
            p.inc(1);
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    Ok(x)
}
