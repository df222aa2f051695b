//! Criterion suite for `samplers`: the cost of one sampler step on a `[1, 4, 16, 64, 64]` f32
//! latent (SVD-sized video latent, 1 MiB), network excluded (the denoiser returns a precomputed
//! x₀ estimate / model output), so the figure is the solver's own arithmetic. A step must cost
//! nothing next to a network call.
//!
//! Throughput is reported as bytes moved: each elementwise pass reads its inputs and writes its
//! output once (4 bytes per element per tensor touched); the per-step pass counts are listed per
//! case below.
// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use samplers::diffusers::{DdimConfig, EulerDiscreteConfig, StepMemory};
use samplers::{DdimScheduler, EdmSampler, EulerDiscreteScheduler, Scheduler, Solver};
use video_core::{Conditioning, Denoiser, Error, Result};

const SHAPE: [usize; 5] = [1, 4, 16, 64, 64];

/// A denoiser that costs nothing: returns a fixed x₀ estimate.
struct Fixed(Tensor);
impl Denoiser for Fixed {
    fn denoise(&self, _x: &Tensor, _s: &Tensor, _c: &Conditioning) -> video_core::Result<Tensor> {
        Ok(self.0.clone())
    }
}

fn bytes(passes: usize) -> Throughput {
    Throughput::Bytes((passes * 4 * SHAPE.iter().product::<usize>()) as u64)
}

/// Deterministic pseudo-random values `amp·sin(0.37·i + phase)` shaped as the latent.
fn wave(phase: f64, amp: f64, dev: &Device) -> Result<Tensor> {
    let n: usize = SHAPE.iter().product();
    let t = Tensor::arange(0u32, n as u32, dev)?.to_dtype(DType::F32)?;
    Ok(t.affine(0.37, phase)?
        .sin()?
        .affine(amp, 0.0)?
        .reshape(&SHAPE[..])?)
}

fn samplers_steps(c: &mut Criterion) {
    if let Err(e) = run(c) {
        eprintln!("samplers bench skipped: {e}");
    }
}

fn run(c: &mut Criterion) -> Result<()> {
    let dev = Device::Cpu;
    let x = wave(0.0, 10.0, &dev)?;
    let x0 = wave(1.0, 1.0, &dev)?;
    let den = Fixed(x0.clone());
    let cond = Conditioning::none();
    let mut g = c.benchmark_group("samplers");

    // EDM Euler: x − D, ÷σ, ×dt, + x  → 10 passes.
    let euler = EdmSampler::karras(25, 0.002, 80.0, 7.0, Solver::Euler)?;
    g.throughput(bytes(10));
    g.bench_function("cpu/edm_euler_step_b1c4t16h64w64", |b| {
        b.iter(|| black_box(euler.step(&den, &x, 3, &cond, None)))
    });

    // EDM Heun: two Euler-type evaluations plus the averaged update → 30 passes.
    let heun = EdmSampler::karras(25, 0.002, 80.0, 7.0, Solver::Heun)?;
    g.throughput(bytes(30));
    g.bench_function("cpu/edm_heun_step_b1c4t16h64w64", |b| {
        b.iter(|| black_box(heun.step(&den, &x, 3, &cond, None)))
    });

    // diffusers EulerDiscreteScheduler, SVD config (v-prediction, karras): 17 passes.
    let cfg: EulerDiscreteConfig = serde_json::from_str(
        r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "prediction_type": "v_prediction", "use_karras_sigmas": true, "sigma_min": 0.002,
            "sigma_max": 700.0, "timestep_spacing": "leading", "timestep_type": "continuous",
            "steps_offset": 1}"#,
    )
    .map_err(|e| Error::config("bench config", e.to_string()))?;
    let mut ed = EulerDiscreteScheduler::new(cfg)?;
    ed.set_timesteps(25)?;
    g.throughput(bytes(17));
    g.bench_function("cpu/euler_discrete_svd_step_b1c4t16h64w64", |b| {
        let mut mem = StepMemory::default();
        b.iter(|| black_box(ed.step(&x0, 3, &x, None, &mut mem)))
    });

    // diffusers DDIMScheduler, SD config (ε): 14 passes.
    let cfg: DdimConfig = serde_json::from_str(
        r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "clip_sample": false, "set_alpha_to_one": false, "steps_offset": 1}"#,
    )
    .map_err(|e| Error::config("bench config", e.to_string()))?;
    let mut ddim = DdimScheduler::new(cfg)?;
    ddim.set_timesteps(25)?;
    g.throughput(bytes(14));
    g.bench_function("cpu/ddim_step_b1c4t16h64w64", |b| {
        let mut mem = StepMemory::default();
        b.iter(|| black_box(ddim.step(&x0, 3, &x, None, &mut mem)))
    });
    g.finish();
    Ok(())
}

criterion_group!(benches, samplers_steps);
criterion_main!(benches);
