#![doc = include_str!("../README.md")]
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
    DdimScheduler, DdpmScheduler, EdmEulerScheduler, EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler, HeunDiscreteScheduler, Scheduler, SchedulerConfig, SchedulerOutput,
    StepMemory,
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
