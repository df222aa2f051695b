//! diffusers-compatible schedulers for parity and for pipelines written the diffusers way:
//! [`EulerDiscreteScheduler`], [`DdimScheduler`], [`DdpmScheduler`], [`HeunDiscreteScheduler`],
//! [`EdmEulerScheduler`], [`EulerAncestralDiscreteScheduler`], behind one [`Scheduler`] trait and built from a saved
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
//!
//! Configs are validated when read ([`SchedulerConfig::from_value`]) and again by each
//! scheduler's `new` (configs built in code): a bad field is `Error::BadConfig` naming it (β and σ
//! ranges, `trained_betas` length and values, thresholding and clipping bounds, ρ,
//! `num_train_timesteps` in `1..=`[`MAX_TRAIN_TIMESTEPS`]), an unknown class or option
//! `Error::Unsupported`.
//!
//! One file per scheduler (`euler`, `ddim`, `ddpm`, `heun`, `edm_euler`, `euler_ancestral`); what they share (config
//! defaults and validation, training tables, timestep spacing, the discrete σ schedule, x₀
//! clipping and [`threshold_sample`]) is in `common`.

use std::path::Path;

use candle_core::{DType, Tensor};
use vidgen_video_core::{Error, Result};

use crate::util::check_index;

mod common;
mod ddim;
mod ddpm;
mod edm_euler;
mod euler;
mod euler_ancestral;
mod heun;

pub use common::{threshold_sample, FinalSigmas, InterpolationType, MAX_TRAIN_TIMESTEPS};
pub use ddim::{DdimConfig, DdimScheduler};
pub use ddpm::{DdpmConfig, DdpmScheduler, VarianceType};
pub use edm_euler::{EdmEulerConfig, EdmEulerScheduler, EdmSigmaSchedule};
pub use euler::{EulerDiscreteConfig, EulerDiscreteScheduler, TimestepType};
pub use euler_ancestral::{EulerAncestralConfig, EulerAncestralDiscreteScheduler};
pub use heun::{HeunDiscreteConfig, HeunDiscreteScheduler};

use common::parse;

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
    heun: Option<heun::HeunPredictor>,
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
    /// t > 0, Euler churn > 0, Euler ancestral σ_next > 0) and ignored otherwise.
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
    /// `EulerAncestralDiscreteScheduler`.
    EulerAncestral(EulerAncestralConfig),
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

    /// From a parsed JSON object, validated ([`SchedulerConfig::validate`]).
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
        let cfg = match class {
            "EulerDiscreteScheduler" => SchedulerConfig::EulerDiscrete(parse(v)?),
            "DDIMScheduler" => SchedulerConfig::Ddim(parse(v)?),
            "DDPMScheduler" => SchedulerConfig::Ddpm(parse(v)?),
            "HeunDiscreteScheduler" => SchedulerConfig::HeunDiscrete(parse(v)?),
            "EDMEulerScheduler" => SchedulerConfig::EdmEuler(parse(v)?),
            "EulerAncestralDiscreteScheduler" => SchedulerConfig::EulerAncestral(parse(v)?),
            other => {
                return Err(Error::Unsupported {
                    field: "_class_name".into(),
                    value: other.into(),
                    supported: "EulerDiscreteScheduler, DDIMScheduler, DDPMScheduler, HeunDiscreteScheduler, EDMEulerScheduler, EulerAncestralDiscreteScheduler"
                        .into(),
                })
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field of the config (the class's own `validate`).
    ///
    /// # Errors
    /// `BadConfig` naming the first bad field; `Unsupported` for options vidgen does not
    /// implement (`use_beta_sigmas`).
    pub fn validate(&self) -> Result<()> {
        match self {
            SchedulerConfig::EulerDiscrete(c) => c.validate(),
            SchedulerConfig::Ddim(c) => c.validate(),
            SchedulerConfig::Ddpm(c) => c.validate(),
            SchedulerConfig::HeunDiscrete(c) => c.validate(),
            SchedulerConfig::EdmEuler(c) => c.validate(),
            SchedulerConfig::EulerAncestral(c) => c.validate(),
        }
    }

    /// Builds the scheduler.
    ///
    /// # Errors
    /// As [`SchedulerConfig::validate`] (for a config changed after loading).
    pub fn build(&self) -> Result<Box<dyn Scheduler + Send + Sync>> {
        Ok(match self {
            SchedulerConfig::EulerDiscrete(c) => Box::new(EulerDiscreteScheduler::new(c.clone())?),
            SchedulerConfig::Ddim(c) => Box::new(DdimScheduler::new(c.clone())?),
            SchedulerConfig::Ddpm(c) => Box::new(DdpmScheduler::new(c.clone())?),
            SchedulerConfig::HeunDiscrete(c) => Box::new(HeunDiscreteScheduler::new(c.clone())?),
            SchedulerConfig::EdmEuler(c) => Box::new(EdmEulerScheduler::new(c.clone())?),
            SchedulerConfig::EulerAncestral(c) => {
                Box::new(EulerAncestralDiscreteScheduler::new(c.clone())?)
            }
        })
    }
}

/// The network timestep input tensor for call `i` (shape `[B]`, f32), for networks that take a
/// per-sample timestep.
///
/// # Shapes
/// Returns `[batch]`.
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
