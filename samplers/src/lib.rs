//! # samplers
//!
//! Noise schedules, solvers, guidance and training targets for diffusion models, written against
//! [`vidgen_video_core::Denoiser`] so they work with any network. Use this crate if you sample or train a
//! diffusion model in vidgen: SVD / AID (EDM preconditioning, Euler, per-frame or dual guidance),
//! SD-based video UNets (DDIM, Euler discrete, DDPM, text + video guidance), long videos clip by
//! clip (VIDiff), or if you need diffusers-exact scheduler numerics.
//!
//! - [`schedule`]: Karras σ, VP β schedules (`linear`, `scaled_linear`, `squaredcos_cap_v2`),
//!   `alphas_cumprod`, zero-terminal-SNR rescaling, timestep spacings, σ ↔ t.
//! - [`precond`]: wrappers turning a raw ε / v / F network into a `Denoiser`
//!   ([`EdmPrecond`], [`SvdPrecond`], [`DiscretePrecond`]).
//! - [`edm`]: EDM Euler, Heun and [`Churn`] steps by explicit index with caller-supplied noise,
//!   and the loops: [`sample`] (EDM σ schedule over a `Denoiser`) and [`sample_scheduler`] (any
//!   diffusers scheduler over a raw network). Loops report each step to a callback
//!   ([`StepInfo`]) and take their noise from a [`NoiseSource`] (an `Rng`, or [`RecordedNoise`]
//!   to replay a reference run).
//! - [`diffusers`]: `EulerDiscreteScheduler`, `DDIMScheduler`, `DDPMScheduler`,
//!   `HeunDiscreteScheduler`, `EDMEulerScheduler` (one file each) with diffusers' `set_timesteps /
//!   scale_model_input / step`, built from a saved `scheduler_config.json` that is validated on
//!   load (a bad field is `Error::BadConfig` naming it); no hidden step counter.
//! - [`guidance`]: [`Cfg`], [`DualGuidance`] (InstructPix2Pix form), [`PerFrameGuidance`] (SVD),
//!   themselves `Denoiser`s; passes batched into one network call.
//! - [`long_video`]: clip plans with overlap, iterative translation, noise sharing across clips.
//! - [`training`]: EDM log-normal σ, λ(σ), ε / v / x₀ targets, a loss over any `Denoiser`.
//!
//! Sampling with a perfect denoiser (it knows x₀) recovers x₀; the step callback sees every step
//! (a CLI advances an `indicatif` bar there: `|s| bar.set_position(s.index as u64 + 1)`):
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use rand::{rngs::StdRng, SeedableRng};
//! use vidgen_samplers::{randn, sample, EdmSampler, Solver};
//! use vidgen_video_core::{Conditioning, Denoiser};
//!
//! struct Oracle(Tensor);
//! impl Denoiser for Oracle {
//!     fn denoise(&self, _x: &Tensor, _sigma: &Tensor, _c: &Conditioning) -> vidgen_video_core::Result<Tensor> {
//!         Ok(self.0.clone())
//!     }
//! }
//!
//! # fn main() -> vidgen_video_core::Result<()> {
//! let dev = Device::Cpu;
//! let mut rng = StdRng::seed_from_u64(0);
//! let x0 = randn(&mut rng, &[1, 4, 3, 8, 8], &dev)?; // [B, C, T, H, W]
//! let steps = EdmSampler::karras(12, 0.002, 80.0, 7.0, Solver::Heun)?;
//! let noise = randn(&mut rng, x0.dims(), &dev)?;
//! let x_t = (x0.clone() + (noise * steps.init_noise_sigma())?)?;
//! let mut sigmas = Vec::new();
//! let out = sample(&Oracle(x0.clone()), &x_t, &Conditioning::none(), &steps, &mut rng, |s| {
//!     sigmas.push(s.sigma); // also s.index, s.total, s.sample, s.denoised
//! })?;
//! let err = (out - &x0)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(err < 1e-4);
//! assert_eq!(sigmas.len(), 12);
//! assert_eq!(sigmas[0], Some(80.0));
//! # Ok(()) }
//! ```
//!
//! Numerics: float32 tensors; schedule tables follow diffusers' float32 / float64 steps exactly
//! (the `schedulers` fixtures match to a few float32 ulps). Randomness is always passed in (an
//! `Rng`, noise tensors, or [`RecordedNoise`]), never global.
//!
//! Errors are typed (`vidgen_video_core::Error`), never panics: a bad scheduler config field is
//! `BadConfig` naming it, a step index out of range or missing noise `InvalidArgument`, and the
//! loops check every step's sample for NaN / Inf (`NonFinite`, naming the step).
//!
//! This crate has no cargo features.
#![deny(missing_docs)]

pub mod diffusers;
pub mod edm;
pub mod guidance;
pub mod long_video;
pub mod precond;
pub mod schedule;
pub mod training;
mod util;

pub use diffusers::{
    DdimScheduler, DdpmScheduler, EdmEulerScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler,
    Scheduler, SchedulerConfig, SchedulerOutput, StepMemory,
};
pub use edm::{
    euler_step, heun_step, sample, sample_scheduler, Churn, EdmSampler, EdmStep, NoiseSource,
    RecordedNoise, Solver, StepInfo,
};
pub use guidance::{Cfg, DualGuidance, PerFrameGuidance};
pub use long_video::{
    iterate_clips, plan_clips, translate_long_video, Clip, ClipNoise, NoiseSharing,
};
pub use precond::{DiscretePrecond, EdmPrecond, Network, PredictionType, SvdPrecond};
pub use schedule::{karras_sigmas, BetaSchedule, TimestepSpacing, VpSchedule};
pub use training::{add_noise, training_target, training_target_sigma, EdmTraining};
pub use util::{randn, randn_like};
