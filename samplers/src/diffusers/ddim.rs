//! diffusers' `DDIMScheduler` (Song et al. 2021): SD, ModelScope, AnimateDiff.

use candle_core::Tensor;
use serde::Deserialize;
use vidgen_video_core::{Error, Result};

use super::common::{
    check_same, default_1000, default_beta_end, default_beta_start, default_leading,
    default_linear, default_one, default_ratio, default_true, discrete_timesteps, train_fields,
    validate_clip_range, validate_thresholding, X0Clip,
};
use super::{Scheduler, SchedulerOutput, StepMemory};
use crate::precond::PredictionType;
use crate::schedule::{BetaSchedule, TimestepSpacing, VpSchedule};
use crate::util::{check_index, div, f32_of, mul, need_noise};

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

impl DdimConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// `BadConfig` naming the field: the training schedule (`num_train_timesteps`,
    /// `trained_betas`, β range), `dynamic_thresholding_ratio` outside `[0, 1]`,
    /// `sample_max_value` or `clip_sample_range` not > 0.
    pub fn validate(&self) -> Result<()> {
        train_fields!(self, self.rescale_betas_zero_snr).validate()?;
        validate_thresholding(self.dynamic_thresholding_ratio, self.sample_max_value)?;
        validate_clip_range(self.clip_sample_range)
    }

    fn x0_clip(&self) -> X0Clip {
        X0Clip {
            thresholding: self.thresholding,
            ratio: self.dynamic_thresholding_ratio,
            max_value: self.sample_max_value,
            clip: self.clip_sample,
            range: self.clip_sample_range,
        }
    }
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
    /// Validates the config and builds the training tables.
    ///
    /// # Errors
    /// As [`DdimConfig::validate`].
    pub fn new(config: DdimConfig) -> Result<Self> {
        config.validate()?;
        let schedule = train_fields!(config, config.rescale_betas_zero_snr).build()?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alpha_cumprod_at(0)?
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
        self.timesteps =
            discrete_timesteps(c.timestep_spacing, n, self.schedule.len(), c.steps_offset)?;
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
        if !self.eta.is_finite() {
            return Err(Error::invalid("eta", format!("{} is not finite", self.eta)));
        }
        let dtype = sample.dtype();
        let x = f32_of(sample)?;
        let out = f32_of(model_output)?;
        let t = self.timesteps[i] as i64;
        let prev_t = t - (self.schedule.len() / self.num_inference_steps.max(1)) as i64;
        let a_t = self.schedule.alpha_cumprod_at(t as usize)?;
        let a_prev = if prev_t >= 0 {
            self.schedule.alpha_cumprod_at(prev_t as usize)?
        } else {
            self.final_alpha_cumprod
        };
        let b_t = 1.0 - a_t;
        let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
        let (pred_x0, mut pred_eps) = match self.config.prediction_type {
            PredictionType::Epsilon => (div(&x.sub(&mul(&out, sb)?)?, sa)?, out.clone()),
            PredictionType::Sample => (out.clone(), div(&x.sub(&mul(&out, sa)?)?, sb)?),
            PredictionType::VPrediction => (
                mul(&x, sa)?.sub(&mul(&out, sb)?)?,
                mul(&out, sa)?.add(&mul(&x, sb)?)?,
            ),
        };
        let pred_x0 = self.config.x0_clip().apply(pred_x0)?;
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
