//! EDM solvers over any [`Denoiser`]: Euler, Heun (2nd order) and stochastic [`Churn`] (Karras
//! et al. 2022, Algorithms 1 and 2), each step addressed by an explicit index with caller-supplied
//! noise, plus the high-level [`sample`] loop and [`sample_scheduler`] for diffusers-style
//! schedulers.
//!
//! The loops report each step to a callback ([`StepInfo`]: index, total, σ / timestep, the sample
//! and its x₀ estimate) instead of drawing any UI; a CLI puts a progress bar on it. Their noise
//! comes from a [`NoiseSource`]: any `Rng` (fresh Gaussian noise) or [`RecordedNoise`] (a
//! reference run's per-step noise, for exact reproduction).

use candle_core::Tensor;
use rand::Rng;
use vidgen_video_core::{check_finite, Conditioning, Denoiser, Error, Result};

use crate::diffusers::{Scheduler, StepMemory};
use crate::precond::Network;
use crate::schedule::{exponential_sigmas, karras_sigmas};
use crate::util::{check_index, div, f32_of, mul, need_noise, randn_like, sigma_batch};

/// Stochastic churn of Karras et al. Algorithm 2 (`s_churn`, `s_tmin`, `s_tmax`, `s_noise`), used
/// by [`EdmSampler`] and by diffusers' Euler schedulers (their `step(s_churn=…)` arguments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    /// Total amount of churn (0 = deterministic).
    pub s_churn: f64,
    /// Lowest σ that gets churn.
    pub s_tmin: f64,
    /// Highest σ that gets churn.
    pub s_tmax: f64,
    /// Scale of the added noise.
    pub s_noise: f64,
}

impl Default for Churn {
    fn default() -> Self {
        Self {
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            s_noise: 1.0,
        }
    }
}

impl Churn {
    /// `γ_i = min(S_churn / N, √2 − 1)` inside `[S_tmin, S_tmax]`, else 0 (`n_sigmas` = N + 1).
    pub fn gamma(&self, sigma: f64, n_sigmas: usize) -> f64 {
        if self.s_tmin <= sigma && sigma <= self.s_tmax && n_sigmas > 1 {
            (self.s_churn / (n_sigmas - 1) as f64).min(std::f64::consts::SQRT_2 - 1.0)
        } else {
            0.0
        }
    }

    /// Applies churn in float32 as diffusers' Euler schedulers do: returns `(σ̂, x̂)` with
    /// `x̂ = x + √(σ̂² − σ²)·(S_noise·noise)`.
    pub(crate) fn apply_f32(
        &self,
        sigma: f32,
        n_sigmas: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<(f32, Tensor)> {
        let gamma = self.gamma(sigma as f64, n_sigmas);
        let sigma_hat = sigma * (gamma + 1.0) as f32;
        if gamma > 0.0 {
            let n = f32_of(need_noise(noise, sample, "churn (s_churn > 0)")?)?;
            let eps = mul(&n, self.s_noise as f32)?;
            let amp = (sigma_hat * sigma_hat - sigma * sigma).max(0.0).sqrt();
            Ok((sigma_hat, sample.add(&mul(&eps, amp)?)?))
        } else {
            Ok((sigma_hat, sample.clone()))
        }
    }
}

/// What a sampling loop reports after each step (to a progress bar, a preview, a logger).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct StepInfo<'a> {
    /// The step just taken, from 0.
    pub index: usize,
    /// Steps in the run: solver steps for [`sample`], network calls for [`sample_scheduler`]
    /// (2N−1 for Heun).
    pub total: usize,
    /// The σ the step started from; `None` for schedulers without a σ schedule (DDIM, DDPM).
    pub sigma: Option<f64>,
    /// The network's timestep input of the step (diffusers schedulers); `None` for [`sample`].
    pub timestep: Option<f64>,
    /// The sample after the step (shaped like the loop's input).
    pub sample: &'a Tensor,
    /// The step's x₀ estimate (shaped like the sample).
    pub denoised: &'a Tensor,
}

/// Where a sampling loop gets the noise of its stochastic steps (churn, DDIM with η > 0, DDPM).
///
/// Any `Rng` is one (fresh standard normal noise, [`randn_like`]); [`RecordedNoise`] replays a
/// reference run's.
pub trait NoiseSource {
    /// Noise for step `index`, shaped and typed like `like`.
    ///
    /// # Errors
    /// No noise for that step, or noise of another shape.
    fn noise(&mut self, index: usize, like: &Tensor) -> Result<Tensor>;
}

impl<R: Rng + ?Sized> NoiseSource for R {
    fn noise(&mut self, _index: usize, like: &Tensor) -> Result<Tensor> {
        randn_like(self, like)
    }
}

/// Per-step noise recorded beforehand (e.g. a diffusers run's `variance_noise`): step `i` gets
/// `steps[i]`.
#[derive(Debug, Clone)]
pub struct RecordedNoise {
    steps: Tensor,
}

impl RecordedNoise {
    /// From a stacked tensor.
    ///
    /// # Shapes
    /// `steps`: `[N, …]`, one sample-shaped slice per step (a step that takes no noise may hold
    /// anything of that shape).
    pub fn new(steps: Tensor) -> Self {
        Self { steps }
    }
}

impl NoiseSource for RecordedNoise {
    fn noise(&mut self, index: usize, like: &Tensor) -> Result<Tensor> {
        let n = self.steps.dims().first().copied().unwrap_or(0);
        if index >= n {
            return Err(Error::invalid(
                "noise",
                format!("step {index} needs noise, and {n} steps were recorded"),
            ));
        }
        let step = self.steps.get(index)?;
        if step.dims() != like.dims() {
            return Err(Error::shape("noise", like.dims(), step.dims()));
        }
        Ok(step.to_dtype(like.dtype())?)
    }
}

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
/// is integrated down the σ schedule. Churn noise comes from `noise` (an `Rng`, or
/// [`RecordedNoise`]); `on_step` is called after every step. Each step's output is checked for
/// NaN / Inf.
///
/// # Shapes
/// `x_t`: `[B, …]` (video `[B, C, T, H, W]`); returns the same shape.
///
/// # Errors
/// Denoiser or noise errors, or non-finite values (naming the step).
pub fn sample<D, S, F>(
    denoiser: &D,
    x_t: &Tensor,
    cond: &Conditioning,
    steps: &EdmSampler,
    noise: &mut S,
    mut on_step: F,
) -> Result<Tensor>
where
    D: Denoiser + ?Sized,
    S: NoiseSource + ?Sized,
    F: FnMut(StepInfo<'_>),
{
    let total = steps.steps();
    let mut x = x_t.clone();
    for i in 0..total {
        let n = if steps.needs_noise(i) {
            Some(noise.noise(i, &x)?)
        } else {
            None
        };
        let step = steps.step(denoiser, &x, i, cond, n.as_ref())?;
        x = step.x_next;
        check_finite(&x, &format!("sample after step {i}"))?;
        on_step(StepInfo {
            index: i,
            total,
            sigma: Some(steps.sigmas[i]),
            timestep: None,
            sample: &x,
            denoised: &step.denoised,
        });
    }
    Ok(x)
}

/// The diffusers loop with any [`Scheduler`] and a raw [`Network`]: `x = noise · init_noise_sigma`
/// must already be applied to `x_t`; each call gets `scale_model_input(x, i)` and the timestep
/// `timesteps()[i]` as a `[B]` tensor. Noise for stochastic steps comes from `noise` (an `Rng`,
/// or [`RecordedNoise`] indexed by call); `on_step` is called after every call.
///
/// # Shapes
/// `x_t`: `[B, …]`; returns the same shape.
///
/// # Errors
/// Scheduler / network / noise errors, or non-finite values (naming the call).
pub fn sample_scheduler<N, S, F>(
    scheduler: &dyn Scheduler,
    net: &N,
    x_t: &Tensor,
    cond: &Conditioning,
    noise: &mut S,
    mut on_step: F,
) -> Result<Tensor>
where
    N: Network + ?Sized,
    S: NoiseSource + ?Sized,
    F: FnMut(StepInfo<'_>),
{
    let total = scheduler.timesteps().len();
    if total == 0 {
        return Err(Error::invalid(
            "num_inference_steps",
            "call set_timesteps with at least 1 step first",
        ));
    }
    let b = x_t.dims().first().copied().unwrap_or(1);
    let mut mem = StepMemory::default();
    let mut x = x_t.clone();
    for i in 0..total {
        let x_in = scheduler.scale_model_input(&x, i)?;
        let t = crate::diffusers::timestep_tensor(scheduler, i, b, x.device())?;
        let out = net.forward(&x_in, &t, cond)?;
        let n = if scheduler.needs_noise(i) {
            Some(noise.noise(i, &x)?)
        } else {
            None
        };
        let step = scheduler.step(&out, i, &x, n.as_ref(), &mut mem)?;
        x = step.prev_sample;
        check_finite(&x, &format!("sample after scheduler call {i}"))?;
        on_step(StepInfo {
            index: i,
            total,
            sigma: scheduler.sigmas().and_then(|s| s.get(i)).map(|s| *s as f64),
            timestep: scheduler.timesteps().get(i).copied(),
            sample: &x,
            denoised: &step.pred_original_sample,
        });
    }
    Ok(x)
}
