//! Scheduler config parsing never panics (issue 25): arbitrary bytes, arbitrary JSON, and every
//! class's full config with fields replaced by arbitrary values go through
//! `SchedulerConfig::from_json_str` (serde, then validation) and come back as a config or a typed
//! error. Whatever loads is then built and run for a few calls on a tiny sample, which must not
//! panic either (errors are fine: a σ range that makes NaN is still a valid config).
//!
//! Seeded (`video_testkit::assert_config_never_panics`): a failure reproduces and prints the
//! smallest input found. About 1 500 inputs per class; a few seconds in the dev profile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use vidgen_samplers::diffusers::{SchedulerConfig, StepMemory};
use vidgen_video_core::Result;

/// Parses, validates, builds, and runs up to three inference steps.
fn load_and_run(bytes: &[u8]) -> Result<SchedulerConfig> {
    let text = String::from_utf8_lossy(bytes);
    let cfg = SchedulerConfig::from_json_str(&text)?;
    let mut sched = cfg.build()?;
    let x = Tensor::ones((1, 2, 2, 2), DType::F32, &Device::Cpu)?;
    for n in [1usize, 3] {
        sched.set_timesteps(n)?;
        let mut x = (&x * sched.init_noise_sigma())?;
        let mut mem = StepMemory::default();
        for i in 0..sched.timesteps().len() {
            let x_in = sched.scale_model_input(&x, i)?;
            let out = x_in.tanh()?;
            let noise = sched.needs_noise(i).then(|| x.ones_like()).transpose()?;
            x = sched
                .step(&out, i, &x, noise.as_ref(), &mut mem)?
                .prev_sample;
        }
    }
    Ok(cfg)
}

/// Every field of each class (diffusers' names and defaults, some switched on so that the
/// mutations reach the code they guard).
const SAMPLES: &[&str] = &[
    r#"{"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000,
        "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "trained_betas": null, "prediction_type": "v_prediction", "interpolation_type": "linear",
        "use_karras_sigmas": true, "use_exponential_sigmas": false, "use_beta_sigmas": false,
        "sigma_min": 0.002, "sigma_max": 700.0, "rho": 7.0, "timestep_spacing": "leading",
        "timestep_type": "continuous", "steps_offset": 1, "rescale_betas_zero_snr": false,
        "final_sigmas_type": "zero"}"#,
    r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
        "beta_end": 0.012, "beta_schedule": "scaled_linear", "trained_betas": null,
        "clip_sample": true, "set_alpha_to_one": false, "steps_offset": 1,
        "prediction_type": "epsilon", "thresholding": true, "dynamic_thresholding_ratio": 0.995,
        "clip_sample_range": 1.0, "sample_max_value": 1.0, "timestep_spacing": "trailing",
        "rescale_betas_zero_snr": true}"#,
    r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 4,
        "trained_betas": [0.1, 0.2, 0.3, 0.4], "timestep_spacing": "linspace"}"#,
    r#"{"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_start": 0.0001,
        "beta_end": 0.02, "beta_schedule": "squaredcos_cap_v2", "trained_betas": null,
        "variance_type": "fixed_large", "clip_sample": true, "prediction_type": "sample",
        "thresholding": true, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0,
        "sample_max_value": 1.0, "timestep_spacing": "leading", "steps_offset": 0,
        "rescale_betas_zero_snr": false}"#,
    r#"{"_class_name": "HeunDiscreteScheduler", "num_train_timesteps": 1000,
        "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "trained_betas": null, "prediction_type": "epsilon", "use_karras_sigmas": true,
        "use_exponential_sigmas": false, "use_beta_sigmas": false, "clip_sample": true,
        "clip_sample_range": 1.0, "timestep_spacing": "linspace", "steps_offset": 0}"#,
    r#"{"_class_name": "EDMEulerScheduler", "sigma_min": 0.002, "sigma_max": 80.0,
        "sigma_data": 0.5, "sigma_schedule": "exponential", "num_train_timesteps": 1000,
        "prediction_type": "v_prediction", "rho": 7.0, "final_sigmas_type": "sigma_min"}"#,
    r#"{"_class_name": "EulerAncestralDiscreteScheduler", "num_train_timesteps": 1000,
        "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "trained_betas": null, "prediction_type": "epsilon", "timestep_spacing": "leading",
        "steps_offset": 1, "rescale_betas_zero_snr": false}"#,
];

#[test]
fn scheduler_configs_never_panic() {
    for sample in SAMPLES {
        video_testkit::assert_config_never_panics(sample, load_and_run);
    }
}
