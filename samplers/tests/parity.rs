//! Parity with diffusers on every `schedulers` fixture: timesteps, σ, training tables, every
//! per-call tensor of the full loop, the final sample; plus the same trajectories through the
//! `sample_scheduler` loop and the `Denoiser` path.
//!
//! Fixture configs vary, so the tests read every argument a fixture records and fail on one they
//! do not know: the step arguments in `meta.json` (`eta`, `use_clipped_model_output`, churn), the
//! recorded per-step noise (`variance_noise`), `final_alpha_cumprod`, `init_noise_sigma`; every
//! tensor in `trajectory.safetensors` (as listed in `meta.json`) is compared or used as an input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use video_testkit::{fixtures, Fixture};
use vidgen_samplers::diffusers::{EdmEulerConfig, SchedulerConfig, StepMemory};
use vidgen_samplers::{
    Churn, DdimScheduler, DiscretePrecond, EdmEulerScheduler, EdmPrecond, EdmSampler,
    EulerDiscreteScheduler, NoiseSource, PredictionType, RecordedNoise, Scheduler, Solver,
    SvdPrecond, VpSchedule,
};
use vidgen_video_core::{Conditioning, Denoiser, Result};

/// `../shared/fixtures/README.md`: schedulers `rtol 1e-5, atol 1e-5`.
const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-5;

/// Top-level `meta.json` keys of a scheduler fixture that this test reads (or that only
/// describe the run); any other key is an argument the test would silently ignore.
const META_KEYS: &[&str] = &[
    // read
    "config",
    "tensors",
    "num_inference_steps",
    "eta",
    "use_clipped_model_output",
    "s_churn",
    "s_tmin",
    "s_tmax",
    "s_noise",
    "final_alpha_cumprod",
    "init_noise_sigma",
    "scheduler",
    // descriptions
    "versions",
    "loop",
    "notes",
    "precond",
    "generator",
];

/// `meta.json` `config` keys of the hand-written EDM Heun reference.
const EDM_REFERENCE_CONFIG_KEYS: &[&str] = &[
    "sigma_min",
    "sigma_max",
    "rho",
    "sigma_data",
    "sigma_schedule",
    "num_inference_steps",
    "s_churn",
    "s_tmin",
    "s_tmax",
    "s_noise",
];

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

/// The tensors of `trajectory.safetensors`, checked against `meta.json`'s `tensors` listing, with
/// a record of which were used: [`Recorded::finish`] fails on any tensor left unread.
struct Recorded {
    id: String,
    map: HashMap<String, Tensor>,
    used: RefCell<BTreeSet<String>>,
}

impl Recorded {
    fn load(fx: &Fixture) -> Self {
        let map = fx.load("trajectory.safetensors");
        let id = fx.id();
        let listed = fx
            .meta_at("tensors")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{id}: meta.json lists no `tensors`"));
        let in_file: BTreeSet<&String> = map.keys().collect();
        let in_meta: BTreeSet<&String> = listed.keys().collect();
        assert_eq!(
            in_file, in_meta,
            "{id}: trajectory.safetensors and meta.json list different tensors"
        );
        for (k, info) in listed {
            let shape: Vec<usize> = info["shape"]
                .as_array()
                .unwrap_or_else(|| panic!("{id}: tensors/{k}/shape"))
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(map[k].dims(), shape.as_slice(), "{id}: shape of {k}");
        }
        Self {
            id,
            map,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    fn get(&self, key: &str) -> Option<&Tensor> {
        let t = self.map.get(key);
        if t.is_some() {
            self.used.borrow_mut().insert(key.to_string());
        }
        t
    }

    fn take(&self, key: &str) -> &Tensor {
        self.get(key)
            .unwrap_or_else(|| panic!("{}: missing tensor `{key}`", self.id))
    }

    fn finish(&self) {
        let used = self.used.borrow();
        let unused: Vec<&String> = self.map.keys().filter(|k| !used.contains(*k)).collect();
        assert!(
            unused.is_empty(),
            "{}: recorded tensors not compared or used: {unused:?}",
            self.id
        );
    }
}

/// Fails on a top-level `meta.json` key outside `known`.
fn assert_known_keys(id: &str, v: Option<&Value>, known: &[&str], what: &str) {
    let Some(obj) = v.and_then(Value::as_object) else {
        return;
    };
    let unknown: Vec<&String> = obj
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "{id}: {what} records {unknown:?}, which this test does not read"
    );
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

/// Churn arguments recorded at `prefix` (`""` or `"config/"`), `None` when none is.
fn churn_from(fx: &Fixture, prefix: &str) -> Option<Churn> {
    let get = |k: &str| fx.meta_at(&format!("{prefix}{k}")).and_then(Value::as_f64);
    let keys = ["s_churn", "s_tmin", "s_tmax", "s_noise"];
    if keys.iter().all(|k| get(k).is_none()) {
        return None;
    }
    let d = Churn::default();
    Some(Churn {
        s_churn: get("s_churn").unwrap_or(d.s_churn),
        s_tmin: get("s_tmin").unwrap_or(d.s_tmin),
        s_tmax: get("s_tmax").unwrap_or(d.s_tmax),
        s_noise: get("s_noise").unwrap_or(d.s_noise),
    })
}

/// The fixture's scheduler with the step arguments its `meta.json` records applied; fails when
/// one is recorded for a scheduler that does not take it.
fn build(fx: &Fixture, cfg: &SchedulerConfig) -> Box<dyn Scheduler + Send + Sync> {
    let id = fx.id();
    let eta = fx.meta_at("eta").map(|v| v.as_f64().expect("eta"));
    let clipped = fx
        .meta_at("use_clipped_model_output")
        .map(|v| v.as_bool().expect("use_clipped_model_output"));
    let churn = churn_from(fx, "");
    match cfg {
        SchedulerConfig::Ddim(c) => {
            assert!(churn.is_none(), "{id}: churn recorded for DDIM");
            let mut s = DdimScheduler::new(c.clone()).unwrap();
            s.eta = eta.unwrap_or(0.0);
            s.use_clipped_model_output = clipped.unwrap_or(false);
            return Box::new(s);
        }
        SchedulerConfig::EulerDiscrete(c) => {
            let mut s = EulerDiscreteScheduler::new(c.clone()).unwrap();
            s.churn = churn.unwrap_or_default();
            assert!(eta.is_none() && clipped.is_none(), "{id}: DDIM arguments");
            return Box::new(s);
        }
        SchedulerConfig::EdmEuler(c) => {
            let mut s = EdmEulerScheduler::new(c.clone()).unwrap();
            s.churn = churn.unwrap_or_default();
            assert!(eta.is_none() && clipped.is_none(), "{id}: DDIM arguments");
            return Box::new(s);
        }
        _ => {}
    }
    assert!(
        eta.is_none() && clipped.is_none() && churn.is_none(),
        "{id}: step arguments recorded for a scheduler that takes none"
    );
    cfg.build().unwrap()
}

/// Reads the fixture's config, checking it against the copy in `meta.json`.
fn read_config(fx: &Fixture) -> SchedulerConfig {
    let path = fx.dir.join("scheduler_config.json");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    if let Some(Value::Object(meta)) = fx.meta_at("config") {
        for (k, v) in meta.iter().filter(|(k, _)| !k.starts_with('_')) {
            assert_eq!(
                saved.get(k),
                Some(v),
                "{}: meta.json config/{k} differs from scheduler_config.json",
                fx.id()
            );
        }
    }
    if let Some(class) = fx.meta_at("scheduler").and_then(Value::as_str) {
        assert_eq!(saved["_class_name"].as_str(), Some(class), "{}", fx.id());
    }
    SchedulerConfig::from_file(&path).unwrap()
}

fn train_tables(cfg: &SchedulerConfig) -> Option<VpSchedule> {
    match cfg {
        SchedulerConfig::EulerDiscrete(c) => Some(
            EulerDiscreteScheduler::new(c.clone())
                .unwrap()
                .schedule()
                .clone(),
        ),
        SchedulerConfig::Ddim(c) => Some(DdimScheduler::new(c.clone()).unwrap().schedule().clone()),
        SchedulerConfig::Ddpm(c) => Some(
            vidgen_samplers::DdpmScheduler::new(c.clone())
                .unwrap()
                .schedule()
                .clone(),
        ),
        SchedulerConfig::HeunDiscrete(c) => Some(
            vidgen_samplers::HeunDiscreteScheduler::new(c.clone())
                .unwrap()
                .schedule()
                .clone(),
        ),
        SchedulerConfig::EdmEuler(_) => None,
        SchedulerConfig::EulerAncestral(c) => Some(
            vidgen_samplers::EulerAncestralDiscreteScheduler::new(c.clone())
                .unwrap()
                .schedule()
                .clone(),
        ),
    }
}

fn num_inference_steps(fx: &Fixture, pointer: &str) -> usize {
    fx.meta_at(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{}: {pointer}", fx.id())) as usize
}

/// Names of recorded per-call noise: DDIM / DDPM's `variance_noise`, Euler's churn noise, Euler
/// ancestral's noise.
const NOISE_KEYS: &[&str] = &["variance_noise", "churn_noise", "ancestral_noise"];

/// The recorded per-call noise, checked against what the scheduler consumes: present exactly
/// when some call needs noise.
fn recorded_noise(fx: &Fixture, traj: &Recorded, sched: &dyn Scheduler) -> Option<RecordedNoise> {
    let calls = sched.timesteps().len();
    let needs = (0..calls).any(|i| sched.needs_noise(i));
    let mut found = NOISE_KEYS.iter().filter_map(|k| traj.get(k));
    let recorded = found.next();
    assert!(found.next().is_none(), "{}: two recorded noises", fx.id());
    match (recorded, needs) {
        (Some(n), true) => {
            assert_eq!(n.dim(0).unwrap(), calls, "{}: noise per call", fx.id());
            Some(RecordedNoise::new(n.clone()))
        }
        (None, false) => None,
        (Some(_), false) => panic!(
            "{}: noise recorded, but the configured scheduler takes no noise",
            fx.id()
        ),
        (None, true) => panic!(
            "{}: the scheduler needs noise, and the fixture records none",
            fx.id()
        ),
    }
}

fn scheduler_loop(fx: &Fixture, traj: &Recorded) {
    let id = fx.id();
    let cfg = read_config(fx);
    let mut sched = build(fx, &cfg);
    sched
        .set_timesteps(num_inference_steps(fx, "num_inference_steps"))
        .unwrap();
    let mut p = fx.parity();

    let want_ts = traj.take("timesteps");
    let got_ts: Vec<f32> = sched.timesteps().iter().map(|t| *t as f32).collect();
    check(
        &mut p,
        &id,
        "timesteps",
        &vec_tensor(&got_ts),
        &want_ts.to_dtype(DType::F32).unwrap(),
    );
    if let Some(want) = traj.get("sigmas") {
        let got = sched.sigmas().unwrap_or_else(|| panic!("{id}: σ recorded"));
        check(&mut p, &id, "sigmas", &vec_tensor(got), want);
    }
    if let Some(want) = fx.meta_at("init_noise_sigma") {
        let want = want.as_f64().unwrap();
        let got = sched.init_noise_sigma();
        assert!(
            (got - want).abs() <= 1e-6 * want.abs(),
            "{id}: init_noise_sigma {got} vs {want}"
        );
    }
    if let Some(want) = fx.meta_at("final_alpha_cumprod") {
        let want = want.as_f64().unwrap();
        let SchedulerConfig::Ddim(c) = &cfg else {
            panic!("{id}: final_alpha_cumprod recorded for a scheduler without one");
        };
        let got = DdimScheduler::new(c.clone()).unwrap().final_alpha_cumprod() as f64;
        assert!(
            (got - want).abs() <= ATOL + RTOL * want.abs(),
            "{id}: final_alpha_cumprod {got} vs {want}"
        );
    }
    let tables = train_tables(&cfg);
    if let Some(want) = traj.get("train_alphas_cumprod") {
        let t = tables.as_ref().expect("a VP scheduler");
        check(
            &mut p,
            &id,
            "train_alphas_cumprod",
            &vec_tensor(&t.alphas_cumprod),
            want,
        );
    }
    if let Some(want) = traj.get("train_sigmas") {
        let t = tables.as_ref().expect("a VP scheduler");
        let mut s: Vec<f32> = t.sigmas().into_iter().rev().collect();
        s.push(0.0);
        check(&mut p, &id, "train_sigmas", &vec_tensor(&s), want);
        if let Some(want_t) = traj.get("train_timesteps") {
            let t: Vec<f32> = s[..s.len() - 1].iter().map(|v| 0.25 * v.ln()).collect();
            check(&mut p, &id, "train_timesteps", &vec_tensor(&t), want_t);
        }
    }

    let mut noise_src = recorded_noise(fx, traj, sched.as_ref());
    let noise = traj.take("noise");
    let mut x = noise
        .affine(sched.init_noise_sigma() as f32 as f64, 0.0)
        .unwrap();
    check(
        &mut p,
        &id,
        "initial_sample",
        &x,
        traj.take("initial_sample"),
    );
    let calls = sched.timesteps().len();
    let mut rec: HashMap<&str, Vec<Tensor>> = HashMap::new();
    let mut mem = StepMemory::default();
    for i in 0..calls {
        let x_in = sched.scale_model_input(&x, i).unwrap();
        let out = toy(&x_in).unwrap();
        let n = match (&mut noise_src, sched.needs_noise(i)) {
            (Some(src), true) => Some(src.noise(i, &x).unwrap()),
            _ => None,
        };
        let step = sched.step(&out, i, &x, n.as_ref(), &mut mem).unwrap();
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
        check(&mut p, &id, key, &got, traj.take(key));
    }
    check(&mut p, &id, "final_sample", &x, traj.take("final_sample"));
    p.finish();
}

/// k-diffusion `sample_heun` on EDM-preconditioned toy model (the hand-written reference).
fn edm_heun_reference(fx: &Fixture, traj: &Recorded) {
    let id = fx.id();
    assert_known_keys(
        &id,
        fx.meta_at("config"),
        EDM_REFERENCE_CONFIG_KEYS,
        "meta.json config",
    );
    let c = |k: &str| {
        fx.meta_at(&format!("config/{k}"))
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{id}: config/{k}"))
    };
    let n = num_inference_steps(fx, "config/num_inference_steps");
    let cfg: EdmEulerConfig = serde_json::from_value(serde_json::json!({
        "sigma_min": c("sigma_min"), "sigma_max": c("sigma_max"), "rho": c("rho"),
        "sigma_data": c("sigma_data"),
        "sigma_schedule": fx.meta_at("config/sigma_schedule").and_then(Value::as_str).unwrap(),
    }))
    .unwrap();
    let mut sched = EdmEulerScheduler::new(cfg).unwrap();
    sched.set_timesteps(n).unwrap();
    let sig32 = sched.sigmas().unwrap().to_vec();
    let mut p = fx.parity();
    check(
        &mut p,
        &id,
        "sigmas",
        &vec_tensor(&sig32),
        traj.take("sigmas"),
    );
    let mut sampler =
        EdmSampler::from_sigmas(sig32.iter().map(|s| *s as f64).collect(), Solver::Heun).unwrap();
    if let Some(churn) = churn_from(fx, "config/") {
        sampler = sampler.with_churn(churn);
    }
    let mut noise_src = match traj.get("churn_noise") {
        Some(n) => Some(RecordedNoise::new(n.clone())),
        None => {
            assert!(
                (0..sampler.steps()).all(|i| !sampler.needs_noise(i)),
                "{id}: churn needs noise, and the fixture records none (`churn_noise`)"
            );
            None
        }
    };
    let den = EdmPrecond::new(toy_net, c("sigma_data"));
    let noise = traj.take("noise");
    let mut x = noise.affine(sig32[0] as f64, 0.0).unwrap();
    let mut trajectory = vec![x.clone()];
    let mut denoised = Vec::new();
    for i in 0..sampler.steps() {
        let n = match (&mut noise_src, sampler.needs_noise(i)) {
            (Some(src), true) => Some(src.noise(i, &x).unwrap()),
            _ => None,
        };
        let s = sampler
            .step(&den, &x, i, &Conditioning::none(), n.as_ref())
            .unwrap();
        denoised.push(s.denoised);
        x = s.x_next;
        trajectory.push(x.clone());
    }
    check(
        &mut p,
        &id,
        "trajectory",
        &Tensor::stack(&trajectory, 0).unwrap(),
        traj.take("trajectory"),
    );
    check(
        &mut p,
        &id,
        "denoised",
        &Tensor::stack(&denoised, 0).unwrap(),
        traj.take("denoised"),
    );
    p.finish();
}

#[test]
fn schedulers_match_diffusers() {
    for fx in &fixtures("schedulers") {
        assert_known_keys(&fx.id(), Some(&fx.meta), META_KEYS, "meta.json");
        let traj = Recorded::load(fx);
        if fx.has("scheduler_config.json") {
            scheduler_loop(fx, &traj);
        } else {
            edm_heun_reference(fx, &traj);
        }
        traj.finish();
    }
}

/// The high-level diffusers loop (`sample_scheduler` with a raw network) reproduces every
/// scheduler fixture's final sample (with the fixture's recorded noise where it has some) and
/// reports every call to its callback.
#[test]
fn scheduler_loop_helper_matches() {
    for fx in fixtures("schedulers") {
        if !fx.has("scheduler_config.json") {
            continue; // the hand-written EDM reference has no scheduler; the next test covers it
        }
        let traj = Recorded::load(&fx);
        let mut sched = build(&fx, &read_config(&fx));
        sched
            .set_timesteps(num_inference_steps(&fx, "num_inference_steps"))
            .unwrap();
        let x_t = traj.take("initial_sample");
        let mut seen = Vec::new();
        let on_step = |s: vidgen_samplers::StepInfo<'_>| {
            assert_eq!(s.sample.dims(), x_t.dims());
            assert_eq!(s.denoised.dims(), x_t.dims());
            seen.push((s.index, s.total, s.timestep));
        };
        let out = match recorded_noise(&fx, &traj, sched.as_ref()) {
            Some(mut n) => vidgen_samplers::sample_scheduler(
                sched.as_ref(),
                &toy_net,
                x_t,
                &Conditioning::none(),
                &mut n,
                on_step,
            ),
            None => vidgen_samplers::sample_scheduler(
                sched.as_ref(),
                &toy_net,
                x_t,
                &Conditioning::none(),
                &mut ChaCha8Rng::seed_from_u64(0),
                on_step,
            ),
        }
        .unwrap();
        let calls = sched.timesteps().len();
        let want: Vec<_> = (0..calls)
            .map(|i| (i, calls, Some(sched.timesteps()[i])))
            .collect();
        assert_eq!(seen, want, "{}: step callbacks", fx.id());
        video_testkit::assert_close(&fx.id(), &out, traj.take("final_sample"), ATOL, RTOL);
    }
}

/// The same sampling runs written with `Denoiser` wrappers and the EDM Euler solver reproduce the
/// diffusers trajectories of the deterministic Euler σ schedulers (the toy network ignores its
/// timestep input).
#[test]
fn denoiser_path_matches_diffusers() {
    let mut compared = 0;
    for fx in fixtures("schedulers") {
        if !fx.has("scheduler_config.json") {
            continue;
        }
        let cfg = read_config(&fx);
        let traj = Recorded::load(&fx);
        let Some(want_sigmas) = traj.get("sigmas") else {
            continue; // DDIM / DDPM: no σ schedule to hand to the EDM solver
        };
        if churn_from(&fx, "").is_some_and(|c| c.s_churn > 0.0) {
            // Not the same sampler: diffusers' Euler calls the network at σ on the sample before
            // churn and only then adds the churn noise (ε reused at σ̂), while the EDM solver
            // (Karras et al. Alg. 2) churns first and evaluates at σ̂. `schedulers_match_diffusers`
            // covers the diffusers form.
            continue;
        }
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
                let s = EulerDiscreteScheduler::new(c.clone()).unwrap();
                Box::new(DiscretePrecond::new(toy_net, s.schedule(), c.prediction_type).unwrap())
            }
            _ => continue, // Heun visits each σ twice: not a plain Euler run
        };
        let sampler = EdmSampler::from_sigmas(sigmas, Solver::Euler).unwrap();
        let x_t = traj.take("initial_sample");
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut calls = 0;
        let out = vidgen_samplers::sample(
            den.as_ref(),
            x_t,
            &Conditioning::none(),
            &sampler,
            &mut rng,
            |s| {
                assert_eq!((s.index, s.total), (calls, sampler.steps()));
                assert_eq!(s.sigma, Some(sampler.sigmas()[calls]));
                calls += 1;
            },
        )
        .unwrap();
        assert_eq!(calls, sampler.steps());
        let mut p = video_testkit::Fixture {
            name: format!("{}+denoiser", fx.name),
            ..fx.clone()
        }
        .parity();
        p.check("final_sample", &out, traj.take("final_sample"), ATOL, RTOL);
        p.finish();
        compared += 1;
    }
    assert!(compared > 0, "no σ-scheduler fixture to compare");
}
