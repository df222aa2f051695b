//! diffusers-compatible schedulers for parity and for pipelines written the diffusers way:
//! [`EulerDiscreteScheduler`], [`DdimScheduler`], [`DdpmScheduler`], [`HeunDiscreteScheduler`],
//! [`EdmEulerScheduler`], behind one [`Scheduler`] trait and built from a saved
//! `scheduler_config.json` by [`SchedulerConfig`] (dispatching on `_class_name`).
//!
//! The API is diffusers' `set_timesteps / scale_model_input / step`, **without hidden step
//! counters**: every call takes the step index `i` into [`Scheduler::timesteps`]. Stochastic steps
//! take caller-supplied noise; the only per-run memory (Heun's predictor) lives in a
//! [`StepMemory`] the caller owns. The loop of a pipeline is:
//!
//! ```
//! # use candle_core::{Device, Tensor};
//! # use vidgen_samplers::diffusers::{Scheduler, SchedulerConfig, StepMemory};
//! # fn main() -> vidgen_video_core::Result<()> {
//! let cfg = SchedulerConfig::from_json_str(
//!     r#"{"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear",
//!         "beta_start": 0.00085, "beta_end": 0.012, "timestep_spacing": "leading", "steps_offset": 1}"#,
//! )?;
//! let mut sched = cfg.build()?;
//! sched.set_timesteps(10)?;
//! let noise = Tensor::ones((1, 4, 8, 8), candle_core::DType::F32, &Device::Cpu)?;
//! let mut x = (noise * sched.init_noise_sigma())?;
//! let mut mem = StepMemory::default();
//! for i in 0..sched.timesteps().len() {
//!     let x_in = sched.scale_model_input(&x, i)?;
//!     let eps = x_in.zeros_like()?; // the network call, given sched.timesteps()[i]
//!     x = sched.step(&eps, i, &x, None, &mut mem)?.prev_sample;
//! }
//! # Ok(()) }
//! ```
//!
//! Numerics follow diffusers 0.42: tables in float32 torch, spacings and interpolation in numpy
//! float64, per-step arithmetic in float32 in the same operation order.

use std::path::Path;

use candle_core::{DType, Tensor};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use vidgen_video_core::{Error, Result};

use crate::precond::PredictionType;
use crate::schedule::{
    interp_index, karras_from_ramp, np_linspace, sigma_to_t, sigmas_from_alphas_cumprod,
    spaced_timesteps, torch_linspace_f32, torch_linspace_f64, BetaSchedule, TimestepSpacing,
    VpSchedule,
};
use crate::util::{check_index, div, f32_of, mul, need_noise};

/// The outputs of one scheduler step.
#[derive(Debug, Clone)]
pub struct SchedulerOutput {
    /// The sample to feed to the next step (`x_{t−1}`).
    pub prev_sample: Tensor,
    /// The x₀ estimate of this step.
    pub pred_original_sample: Tensor,
}

/// Per-run memory of multi-stage schedulers, owned by the caller (Heun's predictor). Start each
/// sampling run with `StepMemory::default()`.
#[derive(Debug, Clone, Default)]
pub struct StepMemory {
    heun: Option<HeunPredictor>,
}

#[derive(Debug, Clone)]
struct HeunPredictor {
    index: usize,
    derivative: Tensor,
    dt: f32,
    sample: Tensor,
}

/// The diffusers-style scheduler interface.
pub trait Scheduler {
    /// Computes the inference schedule for `num_inference_steps`.
    ///
    /// # Errors
    /// Zero steps, more steps than training steps, or an unsupported configuration.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;

    /// The network's timestep input for each model call (length = number of calls; 2N−1 for
    /// Heun). Empty before [`Scheduler::set_timesteps`].
    fn timesteps(&self) -> &[f64];

    /// The σ schedule (one more than the timesteps) for σ-based schedulers; `None` for DDIM/DDPM.
    fn sigmas(&self) -> Option<&[f32]>;

    /// Scale of the initial noise: `x_T = noise · init_noise_sigma`.
    fn init_noise_sigma(&self) -> f64;

    /// The network input for call `step_index`.
    ///
    /// # Shapes
    /// `sample` any shape; returns the same shape.
    ///
    /// # Errors
    /// `step_index` out of range.
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor>;

    /// One step from call `step_index`'s network output.
    ///
    /// `noise` (shaped like `sample`) is required only by stochastic steps (DDIM η > 0, DDPM
    /// t > 0, Euler churn > 0) and ignored otherwise.
    ///
    /// # Shapes
    /// `model_output`, `sample`: same shape (any); outputs have that shape.
    ///
    /// # Errors
    /// `step_index` out of range, missing noise where needed, shape mismatches, a Heun corrector
    /// call without its predictor in `memory`.
    fn step(
        &self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
        memory: &mut StepMemory,
    ) -> Result<SchedulerOutput>;

    /// Whether call `step_index` consumes noise (so a loop draws it only when needed).
    fn needs_noise(&self, step_index: usize) -> bool {
        let _ = step_index;
        false
    }
}

fn check_same(a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(Error::shape("model_output", b.dims(), a.dims()));
    }
    Ok(())
}

/// Deserialises a config struct from JSON, naming the failing field's path.
fn parse<T: DeserializeOwned>(v: &serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        Error::config(
            if field == "." {
                "<root>".to_string()
            } else {
                field
            },
            e.inner().to_string(),
        )
    })
}

fn default_1000() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_linear() -> BetaSchedule {
    BetaSchedule::Linear
}
fn default_true() -> bool {
    true
}
fn default_one() -> f64 {
    1.0
}
fn default_ratio() -> f64 {
    0.995
}
fn default_rho() -> f64 {
    7.0
}
fn default_linspace() -> TimestepSpacing {
    TimestepSpacing::Linspace
}
fn default_leading() -> TimestepSpacing {
    TimestepSpacing::Leading
}

/// The σ (or log-σ) interpolation of [`EulerDiscreteConfig::interpolation_type`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterpolationType {
    /// `np.interp` of σ over t.
    #[default]
    Linear,
    /// Log-uniform σ from σ_max to σ_min (N+1 values, as diffusers).
    LogLinear,
}

/// What the network's timestep input is ([`EulerDiscreteConfig::timestep_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepType {
    /// Training-step units.
    #[default]
    Discrete,
    /// `¼ ln σ` (with v-prediction, SVD).
    Continuous,
}

/// The last σ of the inference schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmas {
    /// 0: the last step fully denoises.
    #[default]
    Zero,
    /// The smallest training σ.
    SigmaMin,
}

/// The σ-spacing option shared by Euler and Heun (`use_karras_sigmas` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigmaSpacing {
    Interp,
    Karras,
    Exponential,
}

fn sigma_spacing(karras: bool, exponential: bool, beta: bool) -> Result<SigmaSpacing> {
    if beta {
        return Err(Error::Unsupported {
            field: "use_beta_sigmas".into(),
            value: "true".into(),
            supported: "use_karras_sigmas, use_exponential_sigmas, or neither".into(),
        });
    }
    match (karras, exponential) {
        (true, true) => Err(Error::config(
            "use_karras_sigmas",
            "only one of use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas may be set",
        )),
        (true, false) => Ok(SigmaSpacing::Karras),
        (false, true) => Ok(SigmaSpacing::Exponential),
        _ => Ok(SigmaSpacing::Interp),
    }
}

fn vp_from(
    trained_betas: &Option<Vec<f64>>,
    schedule: BetaSchedule,
    start: f64,
    end: f64,
    n: usize,
    zsnr: bool,
) -> Result<VpSchedule> {
    match trained_betas {
        Some(b) => {
            let mut b: Vec<f32> = b.iter().map(|v| *v as f32).collect();
            if b.is_empty() {
                return Err(Error::config("trained_betas", "an empty β table"));
            }
            if zsnr {
                b = crate::schedule::rescale_betas_zero_snr(&b);
            }
            Ok(VpSchedule::from_betas(b))
        }
        None => VpSchedule::new(schedule, start, end, n, zsnr),
    }
}

/// `EulerDiscreteScheduler`'s saved config (diffusers defaults; unknown keys ignored).
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct EulerDiscreteConfig {
    #[serde(default = "default_1000")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_linear")]
    pub beta_schedule: BetaSchedule,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default)]
    pub prediction_type: PredictionType,
    #[serde(default)]
    pub interpolation_type: InterpolationType,
    #[serde(default)]
    pub use_karras_sigmas: bool,
    #[serde(default)]
    pub use_exponential_sigmas: bool,
    #[serde(default)]
    pub use_beta_sigmas: bool,
    #[serde(default)]
    pub sigma_min: Option<f64>,
    #[serde(default)]
    pub sigma_max: Option<f64>,
    #[serde(default = "default_rho")]
    pub rho: f64,
    #[serde(default = "default_linspace")]
    pub timestep_spacing: TimestepSpacing,
    #[serde(default)]
    pub timestep_type: TimestepType,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    #[serde(default)]
    pub final_sigmas_type: FinalSigmas,
}

/// Stochastic churn of Karras et al. Algorithm 2 (`s_churn`, `s_tmin`, `s_tmax`, `s_noise`).
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
}

/// Applies churn: returns `(σ̂, x̂)` with `x̂ = x + √(σ̂² − σ²)·S_noise·noise`.
fn churn_sample(
    churn: &Churn,
    sigma: f32,
    n_sigmas: usize,
    sample: &Tensor,
    noise: Option<&Tensor>,
) -> Result<(f32, Tensor)> {
    let gamma = churn.gamma(sigma as f64, n_sigmas);
    let sigma_hat = sigma * (gamma as f32 + 1.0);
    if gamma > 0.0 {
        let n = f32_of(need_noise(noise, sample, "churn (s_churn > 0)")?)?;
        let eps = mul(&n, churn.s_noise as f32)?;
        let amp = (sigma_hat * sigma_hat - sigma * sigma).max(0.0).sqrt();
        Ok((sigma_hat, sample.add(&mul(&eps, amp)?)?))
    } else {
        Ok((sigma_hat, sample.clone()))
    }
}

/// diffusers' `EulerDiscreteScheduler` (Karras Algorithm 2 on the VP σ scale): SD, SVD.
#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler {
    /// The config it was built from.
    pub config: EulerDiscreteConfig,
    /// Churn options (diffusers' `step(s_churn=…)` arguments).
    pub churn: Churn,
    schedule: VpSchedule,
    spacing: SigmaSpacing,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
}

impl EulerDiscreteScheduler {
    /// Builds the training tables.
    ///
    /// # Errors
    /// Invalid β range or conflicting σ options.
    pub fn new(config: EulerDiscreteConfig) -> Result<Self> {
        let spacing = sigma_spacing(
            config.use_karras_sigmas,
            config.use_exponential_sigmas,
            config.use_beta_sigmas,
        )?;
        let mut schedule = vp_from(
            &config.trained_betas,
            config.beta_schedule,
            config.beta_start,
            config.beta_end,
            config.num_train_timesteps,
            config.rescale_betas_zero_snr,
        )?;
        if config.rescale_betas_zero_snr {
            // diffusers: close to 0 without being 0 so the first σ is not infinite.
            if let Some(last) = schedule.alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        Ok(Self {
            config,
            churn: Churn::default(),
            schedule,
            spacing,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        })
    }

    /// The training schedule.
    pub fn schedule(&self) -> &VpSchedule {
        &self.schedule
    }
}

impl Scheduler for EulerDiscreteScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let c = &self.config;
        let nt = self.schedule.len();
        let ts: Vec<f32> = spaced_timesteps(c.timestep_spacing, n, nt, c.steps_offset)?
            .into_iter()
            .map(|t| t as f32)
            .collect();
        let table = sigmas_from_alphas_cumprod(&self.schedule.alphas_cumprod);
        let log_table: Vec<f32> = table.iter().map(|s| s.ln()).collect();
        let mut sig: Vec<f64> = match c.interpolation_type {
            InterpolationType::Linear => {
                ts.iter().map(|t| interp_index(*t as f64, &table)).collect()
            }
            InterpolationType::LogLinear => {
                let (first, last) = (table[0].ln(), table[nt - 1].ln());
                torch_linspace_f32(last, first, n + 1)
                    .into_iter()
                    .map(|l| l.exp() as f64)
                    .collect()
            }
        };
        let mut ts_f64: Vec<f64> = ts.iter().map(|t| *t as f64).collect();
        if self.spacing != SigmaSpacing::Interp {
            let lo = c.sigma_min.unwrap_or(*sig.last().unwrap_or(&0.0));
            let hi = c.sigma_max.unwrap_or(*sig.first().unwrap_or(&0.0));
            sig = match self.spacing {
                SigmaSpacing::Karras => karras_from_ramp(&np_linspace(0.0, 1.0, n), lo, hi, c.rho),
                _ => np_linspace(hi.ln(), lo.ln(), n)
                    .into_iter()
                    .map(f64::exp)
                    .collect(),
            };
            ts_f64 = sig.iter().map(|s| sigma_to_t(*s, &log_table)).collect();
        }
        let last = match c.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => table[0],
        };
        let mut sigmas: Vec<f32> = sig.iter().map(|s| *s as f32).collect();
        sigmas.push(last);
        self.timesteps = if c.timestep_type == TimestepType::Continuous
            && c.prediction_type == PredictionType::VPrediction
        {
            sigmas[..sigmas.len() - 1]
                .iter()
                .map(|s| (0.25 * s.ln()) as f64)
                .collect()
        } else {
            ts_f64.iter().map(|t| *t as f32 as f64).collect()
        };
        self.sigmas = sigmas;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().fold(0f32, |m, s| m.max(*s));
        match self.config.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }

    fn needs_noise(&self, i: usize) -> bool {
        self.sigmas
            .get(i)
            .is_some_and(|s| self.churn.gamma(*s as f64, self.sigmas.len()) > 0.0)
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        check_index(i, self.timesteps.len(), "EulerDiscreteScheduler")?;
        let s = self.sigmas[i];
        div(sample, (s * s + 1.0).sqrt())
    }

    fn step(
        &self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
        _memory: &mut StepMemory,
    ) -> Result<SchedulerOutput> {
        check_index(i, self.timesteps.len(), "EulerDiscreteScheduler")?;
        check_same(model_output, sample)?;
        let dtype = sample.dtype();
        let x = f32_of(sample)?;
        let out = f32_of(model_output)?;
        let sigma = self.sigmas[i];
        let (sigma_hat, x) = churn_sample(&self.churn, sigma, self.sigmas.len(), &x, noise)?;
        let pred = match self.config.prediction_type {
            PredictionType::Sample => out.clone(),
            PredictionType::Epsilon => x.sub(&mul(&out, sigma_hat)?)?,
            PredictionType::VPrediction => {
                let s2p1 = sigma * sigma + 1.0;
                mul(&out, -sigma / s2p1.sqrt())?.add(&div(&x, s2p1)?)?
            }
        };
        let derivative = div(&x.sub(&pred)?, sigma_hat)?;
        let dt = self.sigmas[i + 1] - sigma_hat;
        let prev = x.add(&mul(&derivative, dt)?)?;
        Ok(SchedulerOutput {
            prev_sample: prev.to_dtype(dtype)?,
            pred_original_sample: pred,
        })
    }
}

/// `DDIMScheduler`'s saved config (diffusers defaults; unknown keys ignored).
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct DdimConfig {
    #[serde(default = "default_1000")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_linear")]
    pub beta_schedule: BetaSchedule,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "default_true")]
    pub clip_sample: bool,
    #[serde(default = "default_true")]
    pub set_alpha_to_one: bool,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default)]
    pub prediction_type: PredictionType,
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default = "default_ratio")]
    pub dynamic_thresholding_ratio: f64,
    #[serde(default = "default_one")]
    pub clip_sample_range: f64,
    #[serde(default = "default_one")]
    pub sample_max_value: f64,
    #[serde(default = "default_leading")]
    pub timestep_spacing: TimestepSpacing,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

/// Clips or dynamically thresholds an x₀ estimate (diffusers' `clip_sample` / `thresholding`).
fn clip_or_threshold(
    x0: Tensor,
    thresholding: bool,
    ratio: f64,
    max_value: f64,
    clip: bool,
    range: f64,
) -> Result<Tensor> {
    if thresholding {
        threshold_sample(&x0, ratio, max_value)
    } else if clip {
        Ok(x0.clamp(-range as f32, range as f32)?)
    } else {
        Ok(x0)
    }
}

/// Imagen's dynamic thresholding: per sample, `s = clamp(quantile(|x₀|, ratio), 1, max)`, then
/// `clamp(x₀, −s, s) / s` (torch `quantile` with linear interpolation).
pub fn threshold_sample(x0: &Tensor, ratio: f64, max_value: f64) -> Result<Tensor> {
    let dims = x0.dims().to_vec();
    let b = dims.first().copied().unwrap_or(1);
    let flat = f32_of(x0)?.reshape((b, ()))?;
    let rows = flat.to_vec2::<f32>()?;
    let mut out = Vec::with_capacity(flat.elem_count());
    for row in rows {
        let mut a: Vec<f32> = row.iter().map(|v| v.abs()).collect();
        a.sort_by(|p, q| p.total_cmp(q));
        let s = if a.is_empty() {
            1.0
        } else {
            let pos = ratio * (a.len() - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(a.len() - 1);
            let w = (pos - lo as f64) as f32;
            a[lo] + (a[hi] - a[lo]) * w
        };
        let s = s.clamp(1.0, max_value as f32);
        out.extend(row.iter().map(|v| v.clamp(-s, s) / s));
    }
    Ok(Tensor::from_vec(out, dims, x0.device())?.to_dtype(x0.dtype())?)
}

/// diffusers' `DDIMScheduler` (Song et al. 2021) with η, clipping / thresholding,
/// `set_alpha_to_one` and `steps_offset`.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    /// The config it was built from.
    pub config: DdimConfig,
    /// η: 0 is deterministic DDIM, 1 is DDPM-like (needs noise at every step).
    pub eta: f64,
    /// Re-derive ε from the clipped x₀ (Glide).
    pub use_clipped_model_output: bool,
    schedule: VpSchedule,
    final_alpha_cumprod: f32,
    timesteps: Vec<f64>,
    num_inference_steps: usize,
}

impl DdimScheduler {
    /// Builds the training tables.
    ///
    /// # Errors
    /// Invalid β range.
    pub fn new(config: DdimConfig) -> Result<Self> {
        let schedule = vp_from(
            &config.trained_betas,
            config.beta_schedule,
            config.beta_start,
            config.beta_end,
            config.num_train_timesteps,
            config.rescale_betas_zero_snr,
        )?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        };
        Ok(Self {
            config,
            eta: 0.0,
            use_clipped_model_output: false,
            schedule,
            final_alpha_cumprod,
            timesteps: Vec::new(),
            num_inference_steps: 0,
        })
    }

    /// The training schedule.
    pub fn schedule(&self) -> &VpSchedule {
        &self.schedule
    }

    /// `ᾱ` used after the last step (1 with `set_alpha_to_one`, else `ᾱ_0`).
    pub fn final_alpha_cumprod(&self) -> f32 {
        self.final_alpha_cumprod
    }
}

impl Scheduler for DdimScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let c = &self.config;
        let ts = spaced_timesteps(c.timestep_spacing, n, self.schedule.len(), c.steps_offset)?;
        self.timesteps = match c.timestep_spacing {
            TimestepSpacing::Linspace => ts.into_iter().map(f64::round_ties_even).collect(),
            _ => ts,
        };
        if self
            .timesteps
            .iter()
            .any(|t| *t < 0.0 || *t >= self.schedule.len() as f64)
        {
            return Err(Error::config(
                "steps_offset",
                format!(
                    "timesteps {:?} leave the {} training steps",
                    self.timesteps,
                    self.schedule.len()
                ),
            ));
        }
        self.num_inference_steps = n;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        None
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn needs_noise(&self, i: usize) -> bool {
        self.eta > 0.0 && i < self.timesteps.len()
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        check_index(i, self.timesteps.len(), "DDIMScheduler")?;
        Ok(sample.clone())
    }

    fn step(
        &self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
        _memory: &mut StepMemory,
    ) -> Result<SchedulerOutput> {
        check_index(i, self.timesteps.len(), "DDIMScheduler")?;
        check_same(model_output, sample)?;
        let c = &self.config;
        let dtype = sample.dtype();
        let x = f32_of(sample)?;
        let out = f32_of(model_output)?;
        let t = self.timesteps[i] as i64;
        let prev_t = t - (self.schedule.len() / self.num_inference_steps) as i64;
        let a_t = self.schedule.alpha_cumprod_at(t as usize)?;
        let a_prev = if prev_t >= 0 {
            self.schedule.alpha_cumprod_at(prev_t as usize)?
        } else {
            self.final_alpha_cumprod
        };
        let b_t = 1.0 - a_t;
        let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
        let (pred_x0, mut pred_eps) = match c.prediction_type {
            PredictionType::Epsilon => (div(&x.sub(&mul(&out, sb)?)?, sa)?, out.clone()),
            PredictionType::Sample => (out.clone(), div(&x.sub(&mul(&out, sa)?)?, sb)?),
            PredictionType::VPrediction => (
                mul(&x, sa)?.sub(&mul(&out, sb)?)?,
                mul(&out, sa)?.add(&mul(&x, sb)?)?,
            ),
        };
        let pred_x0 = clip_or_threshold(
            pred_x0,
            c.thresholding,
            c.dynamic_thresholding_ratio,
            c.sample_max_value,
            c.clip_sample,
            c.clip_sample_range,
        )?;
        let b_prev = 1.0 - a_prev;
        let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
        let std_dev = self.eta as f32 * variance.sqrt();
        if self.use_clipped_model_output {
            pred_eps = div(&x.sub(&mul(&pred_x0, sa)?)?, sb)?;
        }
        let direction = mul(&pred_eps, (1.0 - a_prev - std_dev * std_dev).sqrt())?;
        let mut prev = mul(&pred_x0, a_prev.sqrt())?.add(&direction)?;
        if self.eta > 0.0 {
            let n = f32_of(need_noise(noise, sample, "DDIM with eta > 0")?)?;
            prev = prev.add(&mul(&n, std_dev)?)?;
        }
        Ok(SchedulerOutput {
            prev_sample: prev.to_dtype(dtype)?,
            pred_original_sample: pred_x0,
        })
    }
}

/// DDPM posterior variance choices (diffusers' `variance_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarianceType {
    /// `β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t`.
    #[default]
    FixedSmall,
    /// `exp(½ ln β̃_t)` used directly as the noise scale (rl-diffuser).
    FixedSmallLog,
    /// `β_t`.
    FixedLarge,
    /// `ln β_t` (Glide), used as the noise scale `√(ln β_t)` as diffusers does.
    FixedLargeLog,
    /// The network predicts the variance (second half of its channels).
    Learned,
    /// The network interpolates between `ln β̃_t` and `ln β_t` (second half of its channels).
    LearnedRange,
}

/// `DDPMScheduler`'s saved config (diffusers defaults; unknown keys ignored).
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct DdpmConfig {
    #[serde(default = "default_1000")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_linear")]
    pub beta_schedule: BetaSchedule,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default)]
    pub variance_type: VarianceType,
    #[serde(default = "default_true")]
    pub clip_sample: bool,
    #[serde(default)]
    pub prediction_type: PredictionType,
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default = "default_ratio")]
    pub dynamic_thresholding_ratio: f64,
    #[serde(default = "default_one")]
    pub clip_sample_range: f64,
    #[serde(default = "default_one")]
    pub sample_max_value: f64,
    #[serde(default = "default_leading")]
    pub timestep_spacing: TimestepSpacing,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

/// diffusers' `DDPMScheduler` (Ho et al. 2020): ancestral sampling with caller-supplied noise.
#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    /// The config it was built from.
    pub config: DdpmConfig,
    schedule: VpSchedule,
    timesteps: Vec<f64>,
}

impl DdpmScheduler {
    /// Builds the training tables.
    ///
    /// # Errors
    /// Invalid β range.
    pub fn new(config: DdpmConfig) -> Result<Self> {
        let schedule = vp_from(
            &config.trained_betas,
            config.beta_schedule,
            config.beta_start,
            config.beta_end,
            config.num_train_timesteps,
            config.rescale_betas_zero_snr,
        )?;
        Ok(Self {
            config,
            schedule,
            timesteps: Vec::new(),
        })
    }

    /// The training schedule.
    pub fn schedule(&self) -> &VpSchedule {
        &self.schedule
    }

    /// The posterior variance term at call `i` (before `variance_type` post-processing).
    fn variance(&self, a_t: f32, a_prev: f32) -> (f32, f32) {
        let current_beta = 1.0 - a_t / a_prev;
        let v = ((1.0 - a_prev) / (1.0 - a_t) * current_beta).max(1e-20);
        (v, current_beta)
    }
}

impl Scheduler for DdpmScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let c = &self.config;
        let ts = spaced_timesteps(c.timestep_spacing, n, self.schedule.len(), c.steps_offset)?;
        self.timesteps = match c.timestep_spacing {
            TimestepSpacing::Linspace => ts.into_iter().map(f64::round_ties_even).collect(),
            _ => ts,
        };
        if self
            .timesteps
            .iter()
            .any(|t| *t < 0.0 || *t >= self.schedule.len() as f64)
        {
            return Err(Error::config(
                "steps_offset",
                format!(
                    "timesteps {:?} leave the {} training steps",
                    self.timesteps,
                    self.schedule.len()
                ),
            ));
        }
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        None
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn needs_noise(&self, i: usize) -> bool {
        self.timesteps.get(i).is_some_and(|t| *t > 0.0)
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        check_index(i, self.timesteps.len(), "DDPMScheduler")?;
        Ok(sample.clone())
    }

    fn step(
        &self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
        _memory: &mut StepMemory,
    ) -> Result<SchedulerOutput> {
        check_index(i, self.timesteps.len(), "DDPMScheduler")?;
        let c = &self.config;
        let dtype = sample.dtype();
        let x = f32_of(sample)?;
        let mut out = f32_of(model_output)?;
        let mut predicted_variance = None;
        let ch = sample.dims().get(1).copied().unwrap_or(0);
        if matches!(
            c.variance_type,
            VarianceType::Learned | VarianceType::LearnedRange
        ) && model_output.dims().get(1) == Some(&(2 * ch))
        {
            predicted_variance = Some(out.narrow(1, ch, ch)?);
            out = out.narrow(1, 0, ch)?;
        }
        check_same(&out, sample)?;
        let t = self.timesteps[i] as i64;
        let prev_t = self.timesteps.get(i + 1).map(|p| *p as i64).unwrap_or(-1);
        let a_t = self.schedule.alpha_cumprod_at(t as usize)?;
        let a_prev = if prev_t >= 0 {
            self.schedule.alpha_cumprod_at(prev_t as usize)?
        } else {
            1.0
        };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let cur_alpha = a_t / a_prev;
        let cur_beta = 1.0 - cur_alpha;
        let pred_x0 = match c.prediction_type {
            PredictionType::Epsilon => div(&x.sub(&mul(&out, b_t.sqrt())?)?, a_t.sqrt())?,
            PredictionType::Sample => out.clone(),
            PredictionType::VPrediction => mul(&x, a_t.sqrt())?.sub(&mul(&out, b_t.sqrt())?)?,
        };
        let pred_x0 = clip_or_threshold(
            pred_x0,
            c.thresholding,
            c.dynamic_thresholding_ratio,
            c.sample_max_value,
            c.clip_sample,
            c.clip_sample_range,
        )?;
        let x0_coeff = (a_prev.sqrt() * cur_beta) / b_t;
        let xt_coeff = cur_alpha.sqrt() * b_prev / b_t;
        let mut prev = mul(&pred_x0, x0_coeff)?.add(&mul(&x, xt_coeff)?)?;
        if t > 0 {
            let n = f32_of(need_noise(noise, sample, "DDPM at t > 0")?)?;
            let (var, beta) = self.variance(a_t, a_prev);
            let add = match c.variance_type {
                VarianceType::FixedSmall => mul(&n, var.sqrt())?,
                VarianceType::FixedSmallLog => mul(&n, (0.5 * var.ln()).exp())?,
                VarianceType::FixedLarge => mul(&n, beta.sqrt())?,
                VarianceType::FixedLargeLog => mul(&n, beta.ln().sqrt())?,
                VarianceType::Learned | VarianceType::LearnedRange => {
                    let pv = predicted_variance.ok_or_else(|| {
                        Error::shape(
                            "model_output (learned variance)",
                            &[2 * ch],
                            &[model_output.dims().get(1).copied().unwrap_or(0)],
                        )
                    })?;
                    if c.variance_type == VarianceType::Learned {
                        pv.sqrt()?.mul(&n)?
                    } else {
                        let (min_log, max_log) = (var.ln(), beta.ln());
                        let frac = pv.affine(0.5, 0.5)?;
                        let log_v = frac.affine((max_log - min_log) as f64, min_log as f64)?;
                        log_v.affine(0.5, 0.0)?.exp()?.mul(&n)?
                    }
                }
            };
            prev = prev.add(&add)?;
        }
        Ok(SchedulerOutput {
            prev_sample: prev.to_dtype(dtype)?,
            pred_original_sample: pred_x0,
        })
    }
}

/// `HeunDiscreteScheduler`'s saved config (diffusers defaults; unknown keys ignored).
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct HeunDiscreteConfig {
    #[serde(default = "default_1000")]
    pub num_train_timesteps: usize,
    #[serde(default = "heun_beta_start")]
    pub beta_start: f64,
    #[serde(default = "heun_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_linear")]
    pub beta_schedule: BetaSchedule,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default)]
    pub prediction_type: PredictionType,
    #[serde(default)]
    pub use_karras_sigmas: bool,
    #[serde(default)]
    pub use_exponential_sigmas: bool,
    #[serde(default)]
    pub use_beta_sigmas: bool,
    #[serde(default)]
    pub clip_sample: bool,
    #[serde(default = "default_one")]
    pub clip_sample_range: f64,
    #[serde(default = "default_linspace")]
    pub timestep_spacing: TimestepSpacing,
    #[serde(default)]
    pub steps_offset: usize,
}

fn heun_beta_start() -> f64 {
    0.00085
}
fn heun_beta_end() -> f64 {
    0.012
}

/// diffusers' `HeunDiscreteScheduler` (Karras Algorithm 1 on the VP σ scale). Each interior σ is
/// visited twice (predictor at even call indices, corrector at odd ones), so there are 2N−1 calls.
#[derive(Debug, Clone)]
pub struct HeunDiscreteScheduler {
    /// The config it was built from.
    pub config: HeunDiscreteConfig,
    schedule: VpSchedule,
    spacing: SigmaSpacing,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
}

impl HeunDiscreteScheduler {
    /// Builds the training tables.
    ///
    /// # Errors
    /// Invalid β range or conflicting σ options.
    pub fn new(config: HeunDiscreteConfig) -> Result<Self> {
        let spacing = sigma_spacing(
            config.use_karras_sigmas,
            config.use_exponential_sigmas,
            config.use_beta_sigmas,
        )?;
        let schedule = vp_from(
            &config.trained_betas,
            config.beta_schedule,
            config.beta_start,
            config.beta_end,
            config.num_train_timesteps,
            false,
        )?;
        Ok(Self {
            config,
            schedule,
            spacing,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        })
    }
}

impl Scheduler for HeunDiscreteScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let c = &self.config;
        let ts: Vec<f32> =
            spaced_timesteps(c.timestep_spacing, n, self.schedule.len(), c.steps_offset)?
                .into_iter()
                .map(|t| t as f32)
                .collect();
        let table = sigmas_from_alphas_cumprod(&self.schedule.alphas_cumprod);
        let log_table: Vec<f32> = table.iter().map(|s| s.ln()).collect();
        let mut sig: Vec<f64> = ts.iter().map(|t| interp_index(*t as f64, &table)).collect();
        let mut ts64: Vec<f64> = ts.iter().map(|t| *t as f64).collect();
        if self.spacing != SigmaSpacing::Interp {
            let lo = *sig.last().unwrap_or(&0.0);
            let hi = *sig.first().unwrap_or(&0.0);
            // diffusers' Heun has no σ-range or ρ config: ρ = 7 and the interpolated ends.
            sig = match self.spacing {
                SigmaSpacing::Karras => karras_from_ramp(&np_linspace(0.0, 1.0, n), lo, hi, 7.0),
                _ => np_linspace(hi.ln(), lo.ln(), n)
                    .into_iter()
                    .map(f64::exp)
                    .collect(),
            };
            ts64 = sig.iter().map(|s| sigma_to_t(*s, &log_table)).collect();
        }
        let mut s32: Vec<f32> = sig.iter().map(|s| *s as f32).collect();
        s32.push(0.0);
        // [σ0, σ1, σ1, …, σ_{n−1}, σ_{n−1}, 0]
        let mut sigmas = vec![s32[0]];
        for s in &s32[1..s32.len() - 1] {
            sigmas.push(*s);
            sigmas.push(*s);
        }
        sigmas.push(0.0);
        let mut timesteps = vec![ts64[0]];
        for t in &ts64[1..] {
            timesteps.push(*t);
            timesteps.push(*t);
        }
        self.sigmas = sigmas;
        self.timesteps = timesteps;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().fold(0f32, |m, s| m.max(*s));
        match self.config.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        check_index(i, self.timesteps.len(), "HeunDiscreteScheduler")?;
        let s = self.sigmas[i];
        div(sample, (s * s + 1.0).sqrt())
    }

    fn step(
        &self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        _noise: Option<&Tensor>,
        memory: &mut StepMemory,
    ) -> Result<SchedulerOutput> {
        check_index(i, self.timesteps.len(), "HeunDiscreteScheduler")?;
        check_same(model_output, sample)?;
        let c = &self.config;
        let dtype = sample.dtype();
        let x = f32_of(sample)?;
        let out = f32_of(model_output)?;
        let first = i.is_multiple_of(2);
        let (sigma, sigma_next) = if first {
            (self.sigmas[i], self.sigmas[i + 1])
        } else {
            (self.sigmas[i - 1], self.sigmas[i])
        };
        let sigma_hat = sigma;
        let sigma_input = if first { sigma_hat } else { sigma_next };
        let pred = match c.prediction_type {
            PredictionType::Epsilon => x.sub(&mul(&out, sigma_input)?)?,
            PredictionType::VPrediction => {
                let s2p1 = sigma_input * sigma_input + 1.0;
                mul(&out, -sigma_input / s2p1.sqrt())?.add(&div(&x, s2p1)?)?
            }
            PredictionType::Sample => out.clone(),
        };
        let pred = if c.clip_sample {
            pred.clamp(-c.clip_sample_range as f32, c.clip_sample_range as f32)?
        } else {
            pred
        };
        let prev = if first {
            let derivative = div(&x.sub(&pred)?, sigma_hat)?;
            let dt = sigma_next - sigma_hat;
            memory.heun = Some(HeunPredictor {
                index: i,
                derivative: derivative.clone(),
                dt,
                sample: x.clone(),
            });
            x.add(&mul(&derivative, dt)?)?
        } else {
            let p = match memory.heun.take() {
                Some(p) if p.index + 1 == i => p,
                _ => {
                    return Err(Error::invalid(
                        "step_index",
                        format!(
                            "Heun corrector call {i} needs the predictor of call {} in `memory`",
                            i - 1
                        ),
                    ))
                }
            };
            let d2 = div(&x.sub(&pred)?, sigma_next)?;
            let derivative = mul(&p.derivative.add(&d2)?, 0.5)?;
            p.sample.add(&mul(&derivative, p.dt)?)?
        };
        Ok(SchedulerOutput {
            prev_sample: prev.to_dtype(dtype)?,
            pred_original_sample: pred,
        })
    }
}

/// The σ schedule family of [`EdmEulerConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdmSigmaSchedule {
    /// Karras ρ-schedule.
    #[default]
    Karras,
    /// Log-uniform (CosXL).
    Exponential,
}

/// `EDMEulerScheduler`'s saved config (diffusers defaults; unknown keys ignored).
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct EdmEulerConfig {
    #[serde(default = "edm_sigma_min")]
    pub sigma_min: f64,
    #[serde(default = "edm_sigma_max")]
    pub sigma_max: f64,
    #[serde(default = "edm_sigma_data")]
    pub sigma_data: f64,
    #[serde(default)]
    pub sigma_schedule: EdmSigmaSchedule,
    #[serde(default = "default_1000")]
    pub num_train_timesteps: usize,
    #[serde(default)]
    pub prediction_type: PredictionType,
    #[serde(default = "default_rho")]
    pub rho: f64,
    #[serde(default)]
    pub final_sigmas_type: FinalSigmas,
}

fn edm_sigma_min() -> f64 {
    0.002
}
fn edm_sigma_max() -> f64 {
    80.0
}
fn edm_sigma_data() -> f64 {
    0.5
}

/// diffusers' `EDMEulerScheduler`: EDM preconditioning applied by the scheduler
/// (`scale_model_input` multiplies by `c_in`; `step` forms `c_skip·x + c_out·F`), timesteps
/// `¼ ln σ`.
#[derive(Debug, Clone)]
pub struct EdmEulerScheduler {
    /// The config it was built from.
    pub config: EdmEulerConfig,
    /// Churn options.
    pub churn: Churn,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
}

impl EdmEulerScheduler {
    /// Validates the config.
    ///
    /// # Errors
    /// `sigma_min ≥ sigma_max` or non-positive σ / σ_data.
    pub fn new(config: EdmEulerConfig) -> Result<Self> {
        if !(config.sigma_min > 0.0 && config.sigma_min < config.sigma_max) {
            return Err(Error::config(
                "sigma_min",
                format!(
                    "need 0 < sigma_min < sigma_max, got {} and {}",
                    config.sigma_min, config.sigma_max
                ),
            ));
        }
        if config.sigma_data <= 0.0 || config.prediction_type == PredictionType::Sample {
            return Err(Error::config(
                "sigma_data",
                "σ_data must be positive and prediction epsilon / v_prediction",
            ));
        }
        Ok(Self {
            config,
            churn: Churn::default(),
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        })
    }

    fn c_in(&self, s: f32) -> f32 {
        let sd2 = (self.config.sigma_data * self.config.sigma_data) as f32;
        1.0 / (s * s + sd2).sqrt()
    }

    /// `c_skip·x + c_out·F` at σ (diffusers' `precondition_outputs`).
    ///
    /// # Shapes
    /// `sample`, `model_output`: same shape; returns it.
    ///
    /// # Errors
    /// Shape mismatch.
    pub fn precondition_outputs(
        &self,
        sample: &Tensor,
        model_output: &Tensor,
        sigma: f32,
    ) -> Result<Tensor> {
        let sd = self.config.sigma_data as f32;
        let sd2 = (self.config.sigma_data * self.config.sigma_data) as f32;
        let denom = sigma * sigma + sd2;
        let c_skip = (1.0 / denom) * sd2;
        let mut c_out = sigma * sd / denom.sqrt();
        if self.config.prediction_type == PredictionType::VPrediction {
            c_out = -sigma * sd / denom.sqrt();
        }
        Ok(mul(sample, c_skip)?.add(&mul(model_output, c_out)?)?)
    }
}

impl Scheduler for EdmEulerScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid("num_inference_steps", "must be at least 1"));
        }
        let c = &self.config;
        let ramp = torch_linspace_f64(0.0, 1.0, n);
        let sig: Vec<f32> = match c.sigma_schedule {
            EdmSigmaSchedule::Karras => karras_from_ramp(&ramp, c.sigma_min, c.sigma_max, c.rho)
                .into_iter()
                .map(|s| s as f32)
                .collect(),
            EdmSigmaSchedule::Exponential => {
                let mut v: Vec<f32> =
                    torch_linspace_f32(c.sigma_min.ln() as f32, c.sigma_max.ln() as f32, n)
                        .into_iter()
                        .map(f32::exp)
                        .collect();
                v.reverse();
                v
            }
        };
        self.timesteps = sig.iter().map(|s| (0.25 * s.ln()) as f64).collect();
        let last = match c.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => *sig.last().unwrap_or(&0.0),
        };
        self.sigmas = sig;
        self.sigmas.push(last);
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        (self.config.sigma_max * self.config.sigma_max + 1.0).sqrt()
    }

    fn needs_noise(&self, i: usize) -> bool {
        self.sigmas
            .get(i)
            .is_some_and(|s| self.churn.gamma(*s as f64, self.sigmas.len()) > 0.0)
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        check_index(i, self.timesteps.len(), "EDMEulerScheduler")?;
        mul(sample, self.c_in(self.sigmas[i]))
    }

    fn step(
        &self,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
        _memory: &mut StepMemory,
    ) -> Result<SchedulerOutput> {
        check_index(i, self.timesteps.len(), "EDMEulerScheduler")?;
        check_same(model_output, sample)?;
        let dtype = model_output.dtype();
        let x = f32_of(sample)?;
        let out = f32_of(model_output)?;
        let sigma = self.sigmas[i];
        let (sigma_hat, x) = churn_sample(&self.churn, sigma, self.sigmas.len(), &x, noise)?;
        let pred = self.precondition_outputs(&x, &out, sigma_hat)?;
        let derivative = div(&x.sub(&pred)?, sigma_hat)?;
        let dt = self.sigmas[i + 1] - sigma_hat;
        let prev = x.add(&mul(&derivative, dt)?)?;
        Ok(SchedulerOutput {
            prev_sample: prev.to_dtype(dtype)?,
            pred_original_sample: pred,
        })
    }
}

/// A diffusers scheduler config, dispatched on `_class_name`.
#[derive(Debug, Clone)]
pub enum SchedulerConfig {
    /// `EulerDiscreteScheduler`.
    EulerDiscrete(EulerDiscreteConfig),
    /// `DDIMScheduler`.
    Ddim(DdimConfig),
    /// `DDPMScheduler`.
    Ddpm(DdpmConfig),
    /// `HeunDiscreteScheduler`.
    HeunDiscrete(HeunDiscreteConfig),
    /// `EDMEulerScheduler`.
    EdmEuler(EdmEulerConfig),
}

impl SchedulerConfig {
    /// Parses a `scheduler_config.json` text.
    ///
    /// # Errors
    /// Malformed JSON, a missing / unknown `_class_name`, or a field with a wrong type (named).
    pub fn from_json_str(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::config("scheduler_config", e.to_string()))?;
        Self::from_value(&v)
    }

    /// Reads a `scheduler_config.json` file.
    ///
    /// # Errors
    /// As [`SchedulerConfig::from_json_str`], plus I/O errors naming the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text).map_err(|e| match e {
            Error::BadConfig { field, reason, .. } => Error::BadConfig {
                field,
                reason,
                file: Some(path.display().to_string()),
            },
            other => other,
        })
    }

    /// From a parsed JSON object.
    ///
    /// # Errors
    /// As [`SchedulerConfig::from_json_str`].
    pub fn from_value(v: &serde_json::Value) -> Result<Self> {
        let class = v
            .get("_class_name")
            .and_then(|c| c.as_str())
            .ok_or_else(|| {
                Error::config(
                    "_class_name",
                    "missing (which diffusers scheduler is this?)",
                )
            })?;
        Ok(match class {
            "EulerDiscreteScheduler" => SchedulerConfig::EulerDiscrete(parse(v)?),
            "DDIMScheduler" => SchedulerConfig::Ddim(parse(v)?),
            "DDPMScheduler" => SchedulerConfig::Ddpm(parse(v)?),
            "HeunDiscreteScheduler" => SchedulerConfig::HeunDiscrete(parse(v)?),
            "EDMEulerScheduler" => SchedulerConfig::EdmEuler(parse(v)?),
            other => {
                return Err(Error::Unsupported {
                    field: "_class_name".into(),
                    value: other.into(),
                    supported: "EulerDiscreteScheduler, DDIMScheduler, DDPMScheduler, HeunDiscreteScheduler, EDMEulerScheduler"
                        .into(),
                })
            }
        })
    }

    /// Builds the scheduler.
    ///
    /// # Errors
    /// Invalid values (β range, σ range, conflicting options).
    pub fn build(&self) -> Result<Box<dyn Scheduler + Send + Sync>> {
        Ok(match self {
            SchedulerConfig::EulerDiscrete(c) => Box::new(EulerDiscreteScheduler::new(c.clone())?),
            SchedulerConfig::Ddim(c) => Box::new(DdimScheduler::new(c.clone())?),
            SchedulerConfig::Ddpm(c) => Box::new(DdpmScheduler::new(c.clone())?),
            SchedulerConfig::HeunDiscrete(c) => Box::new(HeunDiscreteScheduler::new(c.clone())?),
            SchedulerConfig::EdmEuler(c) => Box::new(EdmEulerScheduler::new(c.clone())?),
        })
    }
}

/// The network timestep input tensor for call `i` (shape `[B]`, f32), for networks that take a
/// per-sample timestep.
///
/// # Errors
/// `i` out of range.
pub fn timestep_tensor(
    sched: &dyn Scheduler,
    i: usize,
    batch: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let ts = sched.timesteps();
    check_index(i, ts.len(), "scheduler")?;
    Ok(Tensor::full(ts[i] as f32, batch, device)?.to_dtype(DType::F32)?)
}
