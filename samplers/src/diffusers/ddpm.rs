//! diffusers' `DDPMScheduler` (Ho et al. 2020): ancestral sampling with caller-supplied noise.

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

impl DdpmConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// As [`super::DdimConfig::validate`].
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

/// diffusers' `DDPMScheduler` (Ho et al. 2020): ancestral sampling with caller-supplied noise.
#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    /// The config it was built from.
    pub config: DdpmConfig,
    schedule: VpSchedule,
    timesteps: Vec<f64>,
}

impl DdpmScheduler {
    /// Validates the config and builds the training tables.
    ///
    /// # Errors
    /// As [`DdpmConfig::validate`].
    pub fn new(config: DdpmConfig) -> Result<Self> {
        config.validate()?;
        let schedule = train_fields!(config, config.rescale_betas_zero_snr).build()?;
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
        self.timesteps =
            discrete_timesteps(c.timestep_spacing, n, self.schedule.len(), c.steps_offset)?;
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

    /// One ancestral step. With `variance_type` `learned` / `learned_range`, `model_output` may
    /// carry the predicted variance as a second half of its channels (`[B, 2C, …]`).
    ///
    /// # Shapes
    /// `sample`: `[B, C, …]`; `model_output`: `[B, C, …]`, or `[B, 2C, …]` with a learned
    /// variance; `noise` like `sample`; outputs like `sample`.
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
        let pred_x0 = c.x0_clip().apply(pred_x0)?;
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
