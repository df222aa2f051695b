//! diffusers' `EDMEulerScheduler`: EDM preconditioning applied by the scheduler.

use candle_core::Tensor;
use serde::Deserialize;
use vidgen_video_core::{Error, Result};

use super::common::{
    check_same, default_1000, default_rho, euler_update, positive_finite, sigma_at, sigma_range,
    FinalSigmas,
};
use super::{Scheduler, SchedulerOutput, StepMemory};
use crate::edm::Churn;
use crate::precond::PredictionType;
use crate::schedule::{karras_from_ramp, torch_linspace_f32, torch_linspace_f64};
use crate::util::{check_index, f32_of, mul};

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
    /// Stored as diffusers does; the EDM schedule does not read it.
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

impl EdmEulerConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// `BadConfig` naming the field: `sigma_min`, `sigma_max`, `sigma_data` or `rho` not a finite
    /// positive number, `sigma_min ≥ sigma_max`, `prediction_type` `sample` (diffusers'
    /// `EDMEulerScheduler` takes epsilon or v_prediction only).
    pub fn validate(&self) -> Result<()> {
        positive_finite("sigma_min", self.sigma_min)?;
        positive_finite("sigma_max", self.sigma_max)?;
        sigma_range(self.sigma_min, self.sigma_max)?;
        positive_finite("sigma_data", self.sigma_data)?;
        positive_finite("rho", self.rho)?;
        if self.prediction_type == PredictionType::Sample {
            return Err(Error::config(
                "prediction_type",
                "EDMEulerScheduler takes epsilon or v_prediction",
            ));
        }
        Ok(())
    }
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
    /// As [`EdmEulerConfig::validate`].
    pub fn new(config: EdmEulerConfig) -> Result<Self> {
        config.validate()?;
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
        i < self.timesteps.len()
            && self
                .sigmas
                .get(i)
                .is_some_and(|s| self.churn.gamma(*s as f64, self.sigmas.len()) > 0.0)
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        check_index(i, self.timesteps.len(), "EDMEulerScheduler")?;
        mul(
            sample,
            self.c_in(sigma_at(&self.sigmas, i, "EDMEulerScheduler")?),
        )
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
        let sigma = sigma_at(&self.sigmas, i, "EDMEulerScheduler")?;
        let sigma_next = sigma_at(&self.sigmas, i + 1, "EDMEulerScheduler")?;
        let (sigma_hat, x) = self.churn.apply_f32(sigma, self.sigmas.len(), &x, noise)?;
        let pred = self.precondition_outputs(&x, &out, sigma_hat)?;
        euler_update(&x, pred, sigma_hat, sigma_next, dtype)
    }
}
