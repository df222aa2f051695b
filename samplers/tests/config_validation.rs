//! Scheduler configs are validated on load: every bad field is a `BadConfig` naming it (issue 25),
//! and dynamic thresholding never panics (`sample_max_value < 1`, `dynamic_thresholding_ratio > 1`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{Device, Tensor};
use vidgen_samplers::diffusers::{
    threshold_sample, DdimConfig, EdmEulerConfig, EulerDiscreteConfig, SchedulerConfig, StepMemory,
};
use vidgen_samplers::{DdimScheduler, EdmEulerScheduler, EulerDiscreteScheduler};
use vidgen_video_core::Error;

/// The field a `BadConfig` names, or a panic showing what came instead.
fn bad_field(r: vidgen_video_core::Result<SchedulerConfig>, what: &str) -> String {
    match r {
        Err(Error::BadConfig { field, .. }) => field,
        Err(e) => panic!("{what}: expected BadConfig, got {e:?}"),
        Ok(c) => panic!("{what}: accepted {c:?}"),
    }
}

fn load(class: &str, fields: &str) -> vidgen_video_core::Result<SchedulerConfig> {
    let sep = if fields.is_empty() { "" } else { ", " };
    SchedulerConfig::from_json_str(&format!(r#"{{"_class_name": "{class}"{sep}{fields}}}"#))
}

fn x() -> Tensor {
    Tensor::new(
        &[[3.0f32, -0.25, 0.5, -2.0], [0.1, 0.2, -0.3, 0.05]],
        &Device::Cpu,
    )
    .unwrap()
}

/// `torch.clamp(s, min=1, max=m)` with `m < 1` is `m`: every row is clipped to ±m and divided by m.
#[test]
fn threshold_with_max_below_one_follows_torch() {
    let got = threshold_sample(&x(), 0.995, 0.5)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let want: Vec<Vec<f32>> = x()
        .to_vec2::<f32>()
        .unwrap()
        .iter()
        .map(|r| r.iter().map(|v| v.clamp(-0.5, 0.5) / 0.5).collect())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn threshold_rejects_bad_arguments() {
    for (ratio, max) in [
        (1.5, 1.0),
        (-0.1, 1.0),
        (f64::NAN, 1.0),
        (0.995, f64::NAN),
        (0.995, 0.0),
        (0.995, -1.0),
    ] {
        let r = threshold_sample(&x(), ratio, max);
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "ratio {ratio}, max {max}: {r:?}"
        );
    }
    // The ends of the valid range.
    assert!(threshold_sample(&x(), 1.0, 1.0).is_ok());
    assert!(threshold_sample(&x(), 0.0, 1.0).is_ok());
}

#[test]
fn thresholding_fields_are_validated() {
    for class in ["DDIMScheduler", "DDPMScheduler"] {
        for (fields, field) in [
            (
                r#""thresholding": true, "dynamic_thresholding_ratio": 1.5"#,
                "dynamic_thresholding_ratio",
            ),
            (
                r#""thresholding": true, "dynamic_thresholding_ratio": -0.5"#,
                "dynamic_thresholding_ratio",
            ),
            (
                r#""thresholding": true, "sample_max_value": 0.0"#,
                "sample_max_value",
            ),
            (
                r#""thresholding": true, "sample_max_value": -2.0"#,
                "sample_max_value",
            ),
            (
                r#""clip_sample": true, "clip_sample_range": 0.0"#,
                "clip_sample_range",
            ),
            (
                r#""clip_sample": true, "clip_sample_range": -1.0"#,
                "clip_sample_range",
            ),
        ] {
            assert_eq!(bad_field(load(class, fields), fields), field, "{class}");
        }
    }
    assert_eq!(
        bad_field(
            load("HeunDiscreteScheduler", r#""clip_sample_range": -1.0"#),
            "heun"
        ),
        "clip_sample_range"
    );
}

/// A config with `sample_max_value < 1` (torch accepts it) samples: the x₀ estimate is clipped to
/// ±`sample_max_value` and rescaled to ±1.
#[test]
fn ddim_thresholding_with_small_max_runs() {
    let cfg = load(
        "DDIMScheduler",
        r#""thresholding": true, "sample_max_value": 0.5, "prediction_type": "sample""#,
    )
    .unwrap();
    let mut s = cfg.build().unwrap();
    s.set_timesteps(4).unwrap();
    let out = s
        .step(&x(), 0, &x(), None, &mut StepMemory::default())
        .unwrap();
    let got = out.pred_original_sample.to_vec2::<f32>().unwrap();
    for (g, w) in got
        .iter()
        .flatten()
        .zip(x().to_vec2::<f32>().unwrap().iter().flatten())
    {
        assert_eq!(*g, w.clamp(-0.5, 0.5) / 0.5);
    }
}

/// Directly built configs (struct fields, e.g. NaN) are validated by the scheduler constructors.
#[test]
fn constructors_validate() {
    let mut d: DdimConfig = serde_json::from_str("{}").unwrap();
    d.sample_max_value = f64::NAN;
    d.thresholding = true;
    assert!(matches!(
        DdimScheduler::new(d),
        Err(Error::BadConfig { field, .. }) if field == "sample_max_value"
    ));
    let mut e: EulerDiscreteConfig = serde_json::from_str("{}").unwrap();
    e.rho = f64::NAN;
    assert!(matches!(
        EulerDiscreteScheduler::new(e),
        Err(Error::BadConfig { field, .. }) if field == "rho"
    ));
    let mut m: EdmEulerConfig = serde_json::from_str("{}").unwrap();
    m.sigma_max = f64::INFINITY;
    assert!(matches!(
        EdmEulerScheduler::new(m),
        Err(Error::BadConfig { field, .. }) if field == "sigma_max"
    ));
}

#[test]
fn euler_sigma_fields_are_validated() {
    let e = "EulerDiscreteScheduler";
    for (fields, field) in [
        (r#""sigma_min": -1.0"#, "sigma_min"),
        (r#""sigma_min": 0.0"#, "sigma_min"),
        (r#""sigma_max": -3.0"#, "sigma_max"),
        (r#""sigma_min": 5.0, "sigma_max": 1.0"#, "sigma_min"),
        (r#""sigma_min": 2.0, "sigma_max": 2.0"#, "sigma_min"),
        (r#""rho": 0.0"#, "rho"),
        (r#""rho": -7.0"#, "rho"),
    ] {
        assert_eq!(bad_field(load(e, fields), fields), field);
    }
    let m = "EDMEulerScheduler";
    for (fields, field) in [
        (r#""sigma_min": 90.0"#, "sigma_min"),
        (r#""sigma_min": 0.0"#, "sigma_min"),
        (r#""sigma_data": 0.0"#, "sigma_data"),
        (r#""rho": 0.0"#, "rho"),
        (r#""prediction_type": "sample""#, "prediction_type"),
    ] {
        assert_eq!(bad_field(load(m, fields), fields), field);
    }
}

#[test]
fn training_schedule_fields_are_validated() {
    for class in [
        "EulerDiscreteScheduler",
        "DDIMScheduler",
        "DDPMScheduler",
        "HeunDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
    ] {
        for (fields, field) in [
            (r#""num_train_timesteps": 0"#, "num_train_timesteps"),
            // 4 TB of tables: refused, not an allocation failure.
            (
                r#""num_train_timesteps": 1000000000000"#,
                "num_train_timesteps",
            ),
            (r#""beta_start": 1.5"#, "beta_start"),
            (r#""beta_start": -0.1"#, "beta_start"),
            (r#""beta_end": 1.0"#, "beta_end"),
            (r#""beta_schedule": "cubic""#, "beta_schedule"),
            (r#""timestep_spacing": "middle""#, "timestep_spacing"),
            (r#""prediction_type": "noise""#, "prediction_type"),
            (
                r#""num_train_timesteps": 4, "trained_betas": [0.1, 0.2]"#,
                "trained_betas",
            ),
            (
                r#""num_train_timesteps": 2, "trained_betas": [0.1, 1.5]"#,
                "trained_betas[1]",
            ),
            (
                r#""num_train_timesteps": 2, "trained_betas": [-0.1, 0.5]"#,
                "trained_betas[0]",
            ),
            (
                r#""num_train_timesteps": 1, "trained_betas": []"#,
                "trained_betas",
            ),
        ] {
            assert_eq!(bad_field(load(class, fields), fields), field, "{class}");
        }
        // trained_betas of the right length replace the named schedule (and its β range).
        let ok = load(
            class,
            r#""num_train_timesteps": 3, "beta_start": 7.0, "trained_betas": [0.1, 0.2, 0.3]"#,
        );
        assert!(ok.is_ok(), "{class}: {ok:?}");
    }
    for (class, fields, field) in [
        (
            "EulerDiscreteScheduler",
            r#""interpolation_type": "cubic""#,
            "interpolation_type",
        ),
        (
            "EulerDiscreteScheduler",
            r#""timestep_type": "fractional""#,
            "timestep_type",
        ),
        (
            "EulerDiscreteScheduler",
            r#""final_sigmas_type": "one""#,
            "final_sigmas_type",
        ),
        (
            "DDPMScheduler",
            r#""variance_type": "huge""#,
            "variance_type",
        ),
        (
            "EDMEulerScheduler",
            r#""sigma_schedule": "linear""#,
            "sigma_schedule",
        ),
        (
            "EulerDiscreteScheduler",
            r#""use_karras_sigmas": true, "use_exponential_sigmas": true"#,
            "use_karras_sigmas",
        ),
    ] {
        assert_eq!(bad_field(load(class, fields), fields), field, "{class}");
    }
}

/// A `from_file` error names the file as well as the field.
#[test]
fn file_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("vidgen-samplers-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scheduler_config.json");
    std::fs::write(
        &path,
        r#"{"_class_name": "DDIMScheduler", "thresholding": true, "dynamic_thresholding_ratio": 2.0}"#,
    )
    .unwrap();
    let err = SchedulerConfig::from_file(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).ok();
    match err {
        Error::BadConfig { field, file, .. } => {
            assert_eq!(field, "dynamic_thresholding_ratio");
            assert_eq!(file.as_deref(), Some(path.display().to_string().as_str()));
        }
        e => panic!("{e:?}"),
    }
}

/// `threshold_sample` equals diffusers' `_threshold_sample` (torch's quantile and clamp) bit for
/// bit, including `sample_max_value < 1` and the ends of the quantile range
/// (`tests/data/threshold_torch.json`, written by `tests/data/make_threshold_torch.py`).
#[test]
fn threshold_matches_torch() {
    let data: serde_json::Value =
        serde_json::from_str(include_str!("data/threshold_torch.json")).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| f32::from_bits(b.as_u64().unwrap() as u32))
            .collect()
    };
    let shape: Vec<usize> = data["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let x = Tensor::from_vec(floats(&data["x_bits"]), shape, &Device::Cpu).unwrap();
    let cases = data["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let ratio = case["ratio"].as_f64().unwrap();
        let max = case["sample_max_value"].as_f64().unwrap();
        let got = threshold_sample(&x, ratio, max)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = floats(&case["out_bits"]);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "ratio {ratio}, max {max}, [{i}]: {g} vs {w}"
            );
        }
    }
}
