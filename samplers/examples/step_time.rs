//! Times one sampler step on a `[1, 4, 16, 64, 64]` f32 latent with the network excluded (the
//! denoiser returns a precomputed x₀), and prints the median time and the bytes-moved rate.
//! The criterion version of the same cases is `benches/benches/samplers.rs`.
//!
//! `cargo run -p samplers --example step_time` (`--release` for release codegen of this crate;
//! candle itself is optimised in every profile of this workspace).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use samplers::diffusers::{DdimConfig, EulerDiscreteConfig, StepMemory};
use samplers::{randn, DdimScheduler, EdmSampler, EulerDiscreteScheduler, Scheduler, Solver};
use video_core::{Conditioning, Denoiser};

const SHAPE: [usize; 5] = [1, 4, 16, 64, 64];

struct Fixed(Tensor);
impl Denoiser for Fixed {
    fn denoise(&self, _x: &Tensor, _s: &Tensor, _c: &Conditioning) -> video_core::Result<Tensor> {
        Ok(self.0.clone())
    }
}

fn time(name: &str, passes: usize, mut f: impl FnMut()) {
    for _ in 0..10 {
        f();
    }
    let mut t: Vec<f64> = (0..100)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    let med = t[t.len() / 2];
    let bytes = (passes * 4 * SHAPE.iter().product::<usize>()) as f64;
    println!(
        "{name:<34} median {:>8.3} ms  {:>6.2} GB/s  ({passes} passes of 1 MiB)",
        med * 1e3,
        bytes / med / 1e9
    );
}

fn main() {
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x = randn(&mut rng, &SHAPE, &dev)
        .unwrap()
        .affine(10.0, 0.0)
        .unwrap();
    let x0 = randn(&mut rng, &SHAPE, &dev).unwrap();
    let den = Fixed(x0.clone());
    let cond = Conditioning::none();
    println!("threads: {} (rayon)", rayon_threads());

    let euler = EdmSampler::karras(25, 0.002, 80.0, 7.0, Solver::Euler).unwrap();
    time("edm_euler_step", 10, || {
        euler.step(&den, &x, 3, &cond, None).unwrap();
    });
    let heun = EdmSampler::karras(25, 0.002, 80.0, 7.0, Solver::Heun).unwrap();
    time("edm_heun_step", 30, || {
        heun.step(&den, &x, 3, &cond, None).unwrap();
    });
    let cfg: EulerDiscreteConfig = serde_json::from_str(
        r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "prediction_type": "v_prediction", "use_karras_sigmas": true, "sigma_min": 0.002,
            "sigma_max": 700.0, "timestep_spacing": "leading", "timestep_type": "continuous",
            "steps_offset": 1}"#,
    )
    .unwrap();
    let mut ed = EulerDiscreteScheduler::new(cfg).unwrap();
    ed.set_timesteps(25).unwrap();
    let mut mem = StepMemory::default();
    time("euler_discrete_svd_step", 17, || {
        ed.step(&x0, 3, &x, None, &mut mem).unwrap();
    });
    let cfg: DdimConfig = serde_json::from_str(
        r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "clip_sample": false, "set_alpha_to_one": false, "steps_offset": 1}"#,
    )
    .unwrap();
    let mut ddim = DdimScheduler::new(cfg).unwrap();
    ddim.set_timesteps(25).unwrap();
    time("ddim_step", 14, || {
        ddim.step(&x0, 3, &x, None, &mut mem).unwrap();
    });
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .unwrap_or_else(|_| "?".into())
    })
}
