//! diffusers' `HeunDiscreteScheduler` (Karras et al. Algorithm 1 on the VP σ scale).

use candle_core::Tensor;
use serde::Deserialize;
use vidgen_video_core::{Error, Result};

use super::common::{
    check_same, default_1000, default_linear, default_linspace, default_one, sigma_at,
    sigma_init_noise, sigma_schedule, sigma_spacing, train_fields, validate_clip_range,
    InterpolationType, SigmaOptions, SigmaSpacing,
};
use super::{Scheduler, SchedulerOutput, StepMemory};
use crate::precond::PredictionType;
use crate::schedule::{BetaSchedule, TimestepSpacing, VpSchedule};
use crate::util::{check_index, div, f32_of, mul};

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

impl HeunDiscreteConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// `BadConfig` naming the field: the training schedule (`num_train_timesteps`,
    /// `trained_betas`, β range), `clip_sample_range` not > 0, conflicting σ spacings;
    /// `Unsupported` for `use_beta_sigmas`.
    pub fn validate(&self) -> Result<()> {
        train_fields!(self, false).validate()?;
        validate_clip_range(self.clip_sample_range)?;
        sigma_spacing(
            self.use_karras_sigmas,
            self.use_exponential_sigmas,
            self.use_beta_sigmas,
        )?;
        Ok(())
    }
}

/// The predictor half of a Heun step, kept in [`StepMemory`] for the corrector call.
#[derive(Debug, Clone)]
pub(super) struct HeunPredictor {
    index: usize,
    derivative: Tensor,
    dt: f32,
    sample: Tensor,
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
    /// Validates the config and builds the training tables.
    ///
    /// # Errors
    /// As [`HeunDiscreteConfig::validate`].
    pub fn new(config: HeunDiscreteConfig) -> Result<Self> {
        config.validate()?;
        let spacing = sigma_spacing(
            config.use_karras_sigmas,
            config.use_exponential_sigmas,
            config.use_beta_sigmas,
        )?;
        let schedule = train_fields!(config, false).build()?;
        Ok(Self {
            config,
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

impl Scheduler for HeunDiscreteScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let c = &self.config;
        // diffusers' Heun has no σ-range or ρ config: ρ = 7 and the interpolated ends.
        let s = sigma_schedule(
            &self.schedule,
            n,
            &SigmaOptions {
                spacing: c.timestep_spacing,
                steps_offset: c.steps_offset,
                interpolation: InterpolationType::Linear,
                sigma_spacing: self.spacing,
                sigma_min: None,
                sigma_max: None,
                rho: 7.0,
            },
        )?;
        // σ: [σ0, σ1, σ1, …, σ_{n−1}, σ_{n−1}, 0]; timesteps: [t0, t1, t1, …, t_{n−1}, t_{n−1}].
        let mut sigmas = Vec::with_capacity(2 * s.sigmas.len());
        let mut timesteps = Vec::with_capacity(2 * s.timesteps.len());
        for (k, (sig, t)) in s.sigmas.iter().zip(&s.timesteps).enumerate() {
            let reps = if k == 0 { 1 } else { 2 };
            sigmas.extend(std::iter::repeat_n(*sig as f32, reps));
            timesteps.extend(std::iter::repeat_n(*t, reps));
        }
        sigmas.push(0.0);
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
        sigma_init_noise(&self.sigmas, self.config.timestep_spacing)
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        check_index(i, self.timesteps.len(), "HeunDiscreteScheduler")?;
        let s = sigma_at(&self.sigmas, i, "HeunDiscreteScheduler")?;
        div(sample, (s * s + 1.0).sqrt())
    }

    /// One predictor (even `step_index`) or corrector (odd `step_index`) call. The predictor
    /// leaves its derivative in `memory` for the corrector of the next call.
    ///
    /// # Shapes
    /// `model_output`, `sample`: same shape (any); outputs have that shape.
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
        let what = "HeunDiscreteScheduler";
        let (sigma, sigma_next) = if first {
            (
                sigma_at(&self.sigmas, i, what)?,
                sigma_at(&self.sigmas, i + 1, what)?,
            )
        } else {
            (
                sigma_at(&self.sigmas, i - 1, what)?,
                sigma_at(&self.sigmas, i, what)?,
            )
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
