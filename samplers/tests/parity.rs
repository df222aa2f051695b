//! Parity with diffusers on every `schedulers` fixture: timesteps, σ, every per-call tensor of the
//! full loop, the final sample; plus the same trajectories through the `Denoiser` path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use video_testkit::{fixtures, take, Fixture};
use vidgen_samplers::diffusers::{EdmEulerConfig, SchedulerConfig, StepMemory};
use vidgen_samplers::{
    DiscretePrecond, EdmEulerScheduler, EdmPrecond, EdmSampler, PredictionType, Scheduler, Solver,
    SvdPrecond, VpSchedule,
};
use vidgen_video_core::{Conditioning, Denoiser, Result};

const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-5;

/// The fixtures' stand-in UNet: `0.8·tanh(x_in) + 0.1·x_in` (float32, torch's order).
fn toy(x_in: &Tensor) -> Result<Tensor> {
    Ok(x_in
        .tanh()?
        .affine(0.8, 0.0)?
        .add(&x_in.affine(0.1, 0.0)?)?)
}

fn toy_net(x_in: &Tensor, _c_noise: &Tensor, _cond: &Conditioning) -> Result<Tensor> {
    toy(x_in)
}

fn f32_vec(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .map(|v| *v as f32)
        .collect()
}

fn vec_tensor(v: &[f32]) -> Tensor {
    Tensor::new(v, &candle_core::Device::Cpu).unwrap()
}

/// `Parity::check`, also printing each tensor's figures when `SAMPLERS_PARITY_VERBOSE` is set.
fn check(p: &mut video_testkit::Parity, id: &str, what: &str, got: &Tensor, want: &Tensor) {
    if std::env::var_os("SAMPLERS_PARITY_VERBOSE").is_some() {
        let c = video_testkit::assert_close(&format!("{id} {what}"), got, want, ATOL, RTOL);
        println!(
            "  {id} {what}: max_abs={:.3e} max_rel={:.3e}",
            c.max_abs, c.max_rel
        );
    }
    p.check(what, got, want, ATOL, RTOL);
}

fn train_tables(cfg: &SchedulerConfig) -> Option<VpSchedule> {
    match cfg {
        SchedulerConfig::EulerDiscrete(c) => Some(
            vidgen_samplers::EulerDiscreteScheduler::new(c.clone())
                .unwrap()
                .schedule()
                .clone(),
        ),
        SchedulerConfig::Ddim(c) => Some(
            vidgen_samplers::DdimScheduler::new(c.clone())
                .unwrap()
                .schedule()
                .clone(),
        ),
        SchedulerConfig::Ddpm(c) => Some(
            vidgen_samplers::DdpmScheduler::new(c.clone())
                .unwrap()
                .schedule()
                .clone(),
        ),
        _ => None,
    }
}

fn scheduler_loop(fx: &Fixture, traj: &HashMap<String, Tensor>) {
    let cfg = SchedulerConfig::from_file(fx.dir.join("scheduler_config.json")).unwrap();
    let mut sched = cfg.build().unwrap();
    let n = fx
        .meta_at("num_inference_steps")
        .and_then(|v| v.as_u64())
        .expect("num_inference_steps") as usize;
    sched.set_timesteps(n).unwrap();
    let mut p = fx.parity();

    let want_ts = take(traj, "timesteps", &fx.id());
    let got_ts: Vec<f32> = sched.timesteps().iter().map(|t| *t as f32).collect();
    check(
        &mut p,
        &fx.id(),
        "timesteps",
        &vec_tensor(&got_ts),
        &want_ts.to_dtype(DType::F32).unwrap(),
    );
    if let Some(want) = traj.get("sigmas") {
        check(
            &mut p,
            &fx.id(),
            "sigmas",
            &vec_tensor(sched.sigmas().expect("σ scheduler")),
            want,
        );
    }
    if let Some(want) = fx.meta_at("init_noise_sigma").and_then(|v| v.as_f64()) {
        let got = sched.init_noise_sigma();
        assert!(
            (got - want).abs() <= 1e-6 * want.abs(),
            "init_noise_sigma {got} vs {want}"
        );
    }
    if let (Some(want), Some(tables)) = (traj.get("train_alphas_cumprod"), train_tables(&cfg)) {
        check(
            &mut p,
            &fx.id(),
            "train_alphas_cumprod",
            &vec_tensor(&tables.alphas_cumprod),
            want,
        );
    }
    if let (Some(want), Some(tables)) = (traj.get("train_sigmas"), train_tables(&cfg)) {
        let mut s: Vec<f32> = tables.sigmas().into_iter().rev().collect();
        s.push(0.0);
        check(&mut p, &fx.id(), "train_sigmas", &vec_tensor(&s), want);
        if let Some(want_t) = traj.get("train_timesteps") {
            let t: Vec<f32> = s[..s.len() - 1].iter().map(|v| 0.25 * v.ln()).collect();
            check(&mut p, &fx.id(), "train_timesteps", &vec_tensor(&t), want_t);
        }
    }

    let noise = take(traj, "noise", &fx.id());
    let mut x = noise
        .affine(sched.init_noise_sigma() as f32 as f64, 0.0)
        .unwrap();
    check(
        &mut p,
        &fx.id(),
        "initial_sample",
        &x,
        take(traj, "initial_sample", &fx.id()),
    );
    let calls = sched.timesteps().len();
    let mut rec: HashMap<&str, Vec<Tensor>> = HashMap::new();
    let mut mem = StepMemory::default();
    for i in 0..calls {
        let x_in = sched.scale_model_input(&x, i).unwrap();
        let out = toy(&x_in).unwrap();
        let step = sched.step(&out, i, &x, None, &mut mem).unwrap();
        rec.entry("sample_in").or_default().push(x.clone());
        rec.entry("model_input").or_default().push(x_in);
        rec.entry("model_output").or_default().push(out);
        rec.entry("prev_sample")
            .or_default()
            .push(step.prev_sample.clone());
        rec.entry("pred_original_sample")
            .or_default()
            .push(step.pred_original_sample);
        x = step.prev_sample;
    }
    for key in [
        "sample_in",
        "model_input",
        "model_output",
        "prev_sample",
        "pred_original_sample",
    ] {
        let got = Tensor::stack(&rec[key], 0).unwrap();
        check(&mut p, &fx.id(), key, &got, take(traj, key, &fx.id()));
    }
    check(
        &mut p,
        &fx.id(),
        "final_sample",
        &x,
        take(traj, "final_sample", &fx.id()),
    );
    p.finish();
}

/// k-diffusion `sample_heun` on EDM-preconditioned toy model (the hand-written reference).
fn edm_heun_reference(fx: &Fixture, traj: &HashMap<String, Tensor>) {
    let c = |k: &str| {
        fx.meta_at(&format!("config/{k}"))
            .and_then(|v| v.as_f64())
            .expect(k)
    };
    let n = fx
        .meta_at("config/num_inference_steps")
        .and_then(|v| v.as_u64())
        .unwrap() as usize;
    let cfg: EdmEulerConfig = serde_json::from_value(serde_json::json!({
        "sigma_min": c("sigma_min"), "sigma_max": c("sigma_max"), "rho": c("rho"),
        "sigma_data": c("sigma_data"),
        "sigma_schedule": fx.meta_at("config/sigma_schedule").and_then(|v| v.as_str()).unwrap(),
    }))
    .unwrap();
    let mut sched = EdmEulerScheduler::new(cfg).unwrap();
    sched.set_timesteps(n).unwrap();
    let sig32 = sched.sigmas().unwrap().to_vec();
    let mut p = fx.parity();
    check(
        &mut p,
        &fx.id(),
        "sigmas",
        &vec_tensor(&sig32),
        take(traj, "sigmas", &fx.id()),
    );
    let sampler =
        EdmSampler::from_sigmas(sig32.iter().map(|s| *s as f64).collect(), Solver::Heun).unwrap();
    let den = EdmPrecond::new(toy_net, c("sigma_data"));
    let noise = take(traj, "noise", &fx.id());
    let mut x = noise.affine(sig32[0] as f64, 0.0).unwrap();
    let mut trajectory = vec![x.clone()];
    let mut denoised = Vec::new();
    for i in 0..sampler.steps() {
        let s = sampler
            .step(&den, &x, i, &Conditioning::none(), None)
            .unwrap();
        denoised.push(s.denoised);
        x = s.x_next;
        trajectory.push(x.clone());
    }
    check(
        &mut p,
        &fx.id(),
        "trajectory",
        &Tensor::stack(&trajectory, 0).unwrap(),
        take(traj, "trajectory", &fx.id()),
    );
    check(
        &mut p,
        &fx.id(),
        "denoised",
        &Tensor::stack(&denoised, 0).unwrap(),
        take(traj, "denoised", &fx.id()),
    );
    p.finish();
}

#[test]
fn schedulers_match_diffusers() {
    let all = fixtures("schedulers");
    for fx in &all {
        let traj = fx.load("trajectory.safetensors");
        if fx.has("scheduler_config.json") {
            scheduler_loop(fx, &traj);
        } else {
            edm_heun_reference(fx, &traj);
        }
    }
}

/// The high-level diffusers loop (`sample_scheduler` with a raw network) reproduces every
/// fixture's final sample.
#[test]
fn scheduler_loop_helper_matches() {
    for fx in fixtures("schedulers") {
        if !fx.has("scheduler_config.json") {
            continue;
        }
        let traj = fx.load("trajectory.safetensors");
        let mut sched = SchedulerConfig::from_file(fx.dir.join("scheduler_config.json"))
            .unwrap()
            .build()
            .unwrap();
        let n = fx
            .meta_at("num_inference_steps")
            .and_then(|v| v.as_u64())
            .unwrap() as usize;
        sched.set_timesteps(n).unwrap();
        let x_t = take(&traj, "initial_sample", &fx.id());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let out = vidgen_samplers::sample_scheduler(
            sched.as_ref(),
            &toy_net,
            x_t,
            &Conditioning::none(),
            &mut rng,
            None,
        )
        .unwrap();
        video_testkit::assert_close(
            &fx.id(),
            &out,
            take(&traj, "final_sample", &fx.id()),
            ATOL,
            RTOL,
        );
    }
}

/// The same sampling runs written with `Denoiser` wrappers and the EDM Euler solver reproduce the
/// diffusers trajectories (the toy network ignores its timestep input).
#[test]
fn denoiser_path_matches_diffusers() {
    for fx in fixtures("schedulers") {
        if !fx.has("scheduler_config.json") {
            continue;
        }
        let cfg = SchedulerConfig::from_file(fx.dir.join("scheduler_config.json")).unwrap();
        let traj = fx.load("trajectory.safetensors");
        let Some(want_sigmas) = traj.get("sigmas") else {
            continue;
        };
        let sigmas: Vec<f64> = f32_vec(want_sigmas).iter().map(|s| *s as f64).collect();
        let den: Box<dyn Denoiser> = match &cfg {
            SchedulerConfig::EdmEuler(c) => Box::new(EdmPrecond {
                net: toy_net,
                sigma_data: c.sigma_data,
                prediction: c.prediction_type,
            }),
            SchedulerConfig::EulerDiscrete(c)
                if c.prediction_type == PredictionType::VPrediction =>
            {
                Box::new(SvdPrecond::new(toy_net))
            }
            SchedulerConfig::EulerDiscrete(c) => {
                let s = vidgen_samplers::EulerDiscreteScheduler::new(c.clone()).unwrap();
                Box::new(DiscretePrecond::new(toy_net, s.schedule(), c.prediction_type).unwrap())
            }
            _ => continue,
        };
        let sampler = EdmSampler::from_sigmas(sigmas, Solver::Euler).unwrap();
        let x_t = take(&traj, "initial_sample", &fx.id());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let out = vidgen_samplers::sample(
            den.as_ref(),
            x_t,
            &Conditioning::none(),
            &sampler,
            &mut rng,
            None,
        )
        .unwrap();
        let mut p = video_testkit::Fixture {
            name: format!("{}+denoiser", fx.name),
            ..fx.clone()
        }
        .parity();
        p.check(
            "final_sample",
            &out,
            take(&traj, "final_sample", &fx.id()),
            ATOL,
            RTOL,
        );
        p.finish();
    }
}
