//! diffusers' `EulerDiscreteScheduler` (Karras et al. Algorithm 2 on the VP σ scale): SD, SVD.

use candle_core::Tensor;
use serde::Deserialize;
use vidgen_video_core::Result;

use super::common::{
    check_same, default_1000, default_beta_end, default_beta_start, default_linear,
    default_linspace, default_rho, euler_update, positive_finite, sigma_at, sigma_init_noise,
    sigma_range, sigma_schedule, sigma_spacing, train_fields, FinalSigmas, InterpolationType,
    SigmaOptions, SigmaSpacing,
};
use super::{Scheduler, SchedulerOutput, StepMemory};
use crate::edm::Churn;
use crate::precond::PredictionType;
use crate::schedule::{BetaSchedule, TimestepSpacing, VpSchedule};
use crate::util::{check_index, div, f32_of, mul};

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

impl EulerDiscreteConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// `BadConfig` naming the field: the training schedule (`num_train_timesteps`,
    /// `trained_betas`, β range), `sigma_min` / `sigma_max` (positive, finite, min < max),
    /// `rho` (positive, finite), conflicting σ spacings; `Unsupported` for `use_beta_sigmas`.
    pub fn validate(&self) -> Result<()> {
        train_fields!(self, self.rescale_betas_zero_snr).validate()?;
        if let Some(s) = self.sigma_min {
            positive_finite("sigma_min", s)?;
        }
        if let Some(s) = self.sigma_max {
            positive_finite("sigma_max", s)?;
        }
        if let (Some(lo), Some(hi)) = (self.sigma_min, self.sigma_max) {
            sigma_range(lo, hi)?;
        }
        positive_finite("rho", self.rho)?;
        sigma_spacing(
            self.use_karras_sigmas,
            self.use_exponential_sigmas,
            self.use_beta_sigmas,
        )?;
        Ok(())
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
    /// Validates the config and builds the training tables.
    ///
    /// # Errors
    /// As [`EulerDiscreteConfig::validate`].
    pub fn new(config: EulerDiscreteConfig) -> Result<Self> {
        config.validate()?;
        let spacing = sigma_spacing(
            config.use_karras_sigmas,
            config.use_exponential_sigmas,
            config.use_beta_sigmas,
        )?;
        let mut schedule = train_fields!(config, config.rescale_betas_zero_snr).build()?;
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
        let s = sigma_schedule(
            &self.schedule,
            n,
            &SigmaOptions {
                spacing: c.timestep_spacing,
                steps_offset: c.steps_offset,
                interpolation: c.interpolation_type,
                sigma_spacing: self.spacing,
                sigma_min: c.sigma_min,
                sigma_max: c.sigma_max,
                rho: c.rho,
            },
        )?;
        let last = match c.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => s.train_sigmas.first().copied().unwrap_or(0.0),
        };
        let mut sigmas: Vec<f32> = s.sigmas.iter().map(|s| *s as f32).collect();
        sigmas.push(last);
        self.timesteps = if c.timestep_type == TimestepType::Continuous
            && c.prediction_type == PredictionType::VPrediction
        {
            sigmas[..sigmas.len() - 1]
                .iter()
                .map(|s| (0.25 * s.ln()) as f64)
                .collect()
        } else {
            s.timesteps.iter().map(|t| *t as f32 as f64).collect()
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
        sigma_init_noise(&self.sigmas, self.config.timestep_spacing)
    }

    fn needs_noise(&self, i: usize) -> bool {
        i < self.timesteps.len()
            && self
                .sigmas
                .get(i)
                .is_some_and(|s| self.churn.gamma(*s as f64, self.sigmas.len()) > 0.0)
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        check_index(i, self.timesteps.len(), "EulerDiscreteScheduler")?;
        let s = sigma_at(&self.sigmas, i, "EulerDiscreteScheduler")?;
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
        let sigma = sigma_at(&self.sigmas, i, "EulerDiscreteScheduler")?;
        let sigma_next = sigma_at(&self.sigmas, i + 1, "EulerDiscreteScheduler")?;
        let (sigma_hat, x) = self.churn.apply_f32(sigma, self.sigmas.len(), &x, noise)?;
        let pred = match self.config.prediction_type {
            PredictionType::Sample => out.clone(),
            PredictionType::Epsilon => x.sub(&mul(&out, sigma_hat)?)?,
            PredictionType::VPrediction => {
                let s2p1 = sigma * sigma + 1.0;
                mul(&out, -sigma / s2p1.sqrt())?.add(&div(&x, s2p1)?)?
            }
        };
        euler_update(&x, pred, sigma_hat, sigma_next, dtype)
    }
}
