//! diffusers' `EulerAncestralDiscreteScheduler` (k-diffusion `sample_euler_ancestral` on the VP
//! σ scale): each step goes down to `σ_down` with Euler, then adds fresh noise of scale `σ_up`,
//! with `σ_up² + σ_down² = σ_next²`. The noise is the caller's (`step(…, noise)`), one draw per
//! call whose `σ_next > 0`.

use candle_core::Tensor;
use serde::Deserialize;
use vidgen_video_core::{Error, Result};

use super::common::{
    check_same, default_1000, default_beta_end, default_beta_start, default_linear,
    default_linspace, euler_update, sigma_at, sigma_init_noise, sigma_schedule, train_fields,
    InterpolationType, SigmaOptions, SigmaSpacing,
};
use super::{Scheduler, SchedulerOutput, StepMemory};
use crate::precond::PredictionType;
use crate::schedule::{BetaSchedule, TimestepSpacing, VpSchedule};
use crate::util::{check_index, div, f32_of, mul, need_noise};

/// `EulerAncestralDiscreteScheduler`'s saved config (diffusers defaults; unknown keys ignored).
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct EulerAncestralConfig {
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
    #[serde(default = "default_linspace")]
    pub timestep_spacing: TimestepSpacing,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

impl EulerAncestralConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// `BadConfig` naming the field for the training schedule (`num_train_timesteps`,
    /// `trained_betas`, β range); `Unsupported` for `prediction_type = "sample"` (diffusers
    /// does not implement it either).
    pub fn validate(&self) -> Result<()> {
        train_fields!(self, self.rescale_betas_zero_snr).validate()?;
        if self.prediction_type == PredictionType::Sample {
            return Err(Error::Unsupported {
                field: "prediction_type".into(),
                value: "sample".into(),
                supported: "epsilon, v_prediction".into(),
            });
        }
        Ok(())
    }
}

/// diffusers' `EulerAncestralDiscreteScheduler`.
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscreteScheduler {
    /// The config it was built from.
    pub config: EulerAncestralConfig,
    schedule: VpSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
}

impl EulerAncestralDiscreteScheduler {
    /// Validates the config and builds the training tables.
    ///
    /// # Errors
    /// As [`EulerAncestralConfig::validate`].
    pub fn new(config: EulerAncestralConfig) -> Result<Self> {
        config.validate()?;
        let mut schedule = train_fields!(config, config.rescale_betas_zero_snr).build()?;
        if config.rescale_betas_zero_snr {
            // diffusers: close to 0 without being 0 so the first σ is not infinite.
            if let Some(last) = schedule.alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        Ok(Self {
            config,
            schedule,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        })
    }

    /// The training schedule.
    pub fn schedule(&self) -> &VpSchedule {
        &self.schedule
    }

    /// `(σ_up, σ_down)` of call `i`, in float32 as diffusers computes them on 0-d tensors:
    /// `σ_up = (σ_to²·(σ_from² − σ_to²) / σ_from²)^½`, `σ_down = (σ_to² − σ_up²)^½`.
    fn ancestral(&self, i: usize) -> Result<(f32, f32)> {
        let from = sigma_at(&self.sigmas, i, "EulerAncestralDiscreteScheduler")?;
        let to = sigma_at(&self.sigmas, i + 1, "EulerAncestralDiscreteScheduler")?;
        let (f2, t2) = (from * from, to * to);
        let up = (t2 * (f2 - t2) / f2).sqrt();
        let down = (t2 - up * up).sqrt();
        Ok((up, down))
    }
}

impl Scheduler for EulerAncestralDiscreteScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let c = &self.config;
        let s = sigma_schedule(
            &self.schedule,
            n,
            &SigmaOptions {
                spacing: c.timestep_spacing,
                steps_offset: c.steps_offset,
                interpolation: InterpolationType::Linear,
                sigma_spacing: SigmaSpacing::Interp,
                sigma_min: None,
                sigma_max: None,
                rho: 7.0,
            },
        )?;
        let mut sigmas: Vec<f32> = s.sigmas.iter().map(|s| *s as f32).collect();
        sigmas.push(0.0);
        self.timesteps = s.timesteps.iter().map(|t| *t as f32 as f64).collect();
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

    /// Every call but one ending at σ = 0 adds noise.
    fn needs_noise(&self, i: usize) -> bool {
        i < self.timesteps.len() && self.sigmas.get(i + 1).is_some_and(|s| *s > 0.0)
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        check_index(i, self.timesteps.len(), "EulerAncestralDiscreteScheduler")?;
        let s = sigma_at(&self.sigmas, i, "EulerAncestralDiscreteScheduler")?;
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
        check_index(i, self.timesteps.len(), "EulerAncestralDiscreteScheduler")?;
        check_same(model_output, sample)?;
        let dtype = model_output.dtype();
        let x = f32_of(sample)?;
        let out = f32_of(model_output)?;
        let sigma = sigma_at(&self.sigmas, i, "EulerAncestralDiscreteScheduler")?;
        // 1. x̂₀ from the network output.
        let pred = match self.config.prediction_type {
            PredictionType::Epsilon => x.sub(&mul(&out, sigma)?)?,
            PredictionType::VPrediction => {
                let s2p1 = sigma * sigma + 1.0;
                mul(&out, -sigma / s2p1.sqrt())?.add(&div(&x, s2p1)?)?
            }
            PredictionType::Sample => {
                return Err(Error::Unsupported {
                    field: "prediction_type".into(),
                    value: "sample".into(),
                    supported: "epsilon, v_prediction".into(),
                })
            }
        };
        // 2. Euler down to σ_down, 3. noise up by σ_up.
        let (up, down) = self.ancestral(i)?;
        let stepped = euler_update(&x, pred, sigma, down, candle_core::DType::F32)?;
        let prev = if up > 0.0 {
            let z = f32_of(need_noise(noise, sample, "Euler ancestral")?)?;
            stepped.prev_sample.add(&mul(&z, up)?)?
        } else {
            stepped.prev_sample
        };
        Ok(SchedulerOutput {
            prev_sample: prev.to_dtype(dtype)?,
            pred_original_sample: stepped.pred_original_sample,
        })
    }
}
