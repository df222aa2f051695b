//! # benches: one registry of benchmark cases, two ways to run it
//!
//! Every case is defined once here: how to set up our operation, the peers that do the same
//! work in the same process (candle's composed ops, our `*_reference` twins), the PyTorch peer
//! case of `../shared/peers/torch_peers.py` with exactly the same shapes, and the work done
//! (FLOPs or bytes). Two front ends use the registry:
//!
//! - the criterion suites in `benches/benches/<crate>.rs` (`cargo bench -p benches`), with
//!   device-prefixed names (`cpu/attn_f32_b1h8n1024d64`) and throughput set;
//! - the `bench-report` binary, which alternates ours, the in-process peers and the PyTorch
//!   peer over several rounds and writes `BENCHMARKS.md` with **ratio = peer / ours**.
//!
//! Thread parity: ours runs on rayon's global pool (which candle and our kernels use); its size is
//! `RAYON_NUM_THREADS` when set, else every core. `bench-report --threads N` sets
//! `RAYON_NUM_THREADS=N` for itself and passes `--threads N` to the PyTorch peer, which calls
//! `torch.set_num_threads(N)` (and sets the OMP / MKL / OpenBLAS thread counts before import).
#![deny(missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use vidgen_video_core::Result;

pub mod cases;
pub mod cases_clip;
pub mod cases_diffusion;
pub mod cases_lavit;
pub mod cases_misc;
pub mod cases_models;
pub mod cases_pipelines;
pub mod cases_retrieval;
pub mod cases_sd_pipelines;
pub mod cases_trainer;
pub mod peak;

/// What a case's timed closure does once per call.
pub type Work = Box<dyn FnMut() -> Result<()>>;

/// Builds the timed closure (inputs are created here, outside the clock).
pub type Setup = fn(&Device) -> Result<Work>;

/// How much work one call does, for throughput figures.
#[derive(Debug, Clone, Copy)]
pub enum Amount {
    /// Floating-point operations per call (2 per multiply-add).
    Flops(f64),
    /// Bytes read plus written per call.
    Bytes(f64),
}

/// One benchmark case.
pub struct Case {
    /// The crate it measures (a `BENCHMARKS.md` section).
    pub krate: &'static str,
    /// The case name; equal to the PyTorch peer's case name where one exists.
    pub name: &'static str,
    /// Shapes and options in words.
    pub shape: &'static str,
    /// Work per call.
    pub amount: Option<Amount>,
    /// Our operation.
    pub ours: Setup,
    /// Peers timed in the same process: (name, setup).
    pub twins: Vec<(&'static str, Setup)>,
    /// The `torch_peers.py` case, if any.
    pub torch: Option<&'static str>,
}

/// Every registered case.
pub fn all_cases() -> Vec<Case> {
    let mut v = cases::video_kernels();
    v.extend(cases_models::vq_tokenizer());
    v.extend(cases_models::eval_metrics());
    v.extend(cases_models::llama_video());
    v.extend(cases_diffusion::diffusion_unet3d());
    v.extend(cases_misc::samplers());
    v.extend(cases_misc::motion_codec());
    v.extend(cases_misc::adapters());
    v.extend(cases_trainer::trainer());
    v.extend(cases_clip::clip_encoders());
    v.extend(cases_pipelines::pipelines());
    v.extend(cases_lavit::lavit());
    v.extend(cases_lavit::vidicl32());
    v.extend(cases_retrieval::retrieval());
    v.extend(cases_sd_pipelines::sd_pipelines());
    v
}

/// The cases of one crate.
pub fn cases_of(krate: &str) -> Vec<Case> {
    all_cases()
        .into_iter()
        .filter(|c| c.krate == krate)
        .collect()
}

/// The benchmark name used by criterion and the report: `<device>/<case>`.
pub fn bench_id(device: &Device, case: &str) -> String {
    format!("{}/{case}", device_name(device))
}

/// `cpu`, `cuda:0`, `metal:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Waits for queued device work, so a timing covers the work and not just its launch.
pub fn sync(device: &Device) -> Result<()> {
    device.synchronize()?;
    Ok(())
}

/// Threads our side uses: rayon's global pool size.
pub fn our_threads() -> usize {
    rayon_threads()
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A randomly initialised model for inference: `build` runs on a seeded builder
/// ([`vidgen_video_nn::seeded_var_builder`], seed 0, each layer's own initialiser hints), so the
/// returned model holds plain tensors, as a loaded checkpoint does (variables would select the
/// autograd-friendly paths of some layers), and the same values every run.
///
/// # Errors
/// Whatever `build` returns.
pub fn random_model<T>(
    device: &Device,
    build: impl Fn(candle_nn::VarBuilder<'static>) -> Result<T>,
) -> Result<T> {
    build(vidgen_video_nn::seeded_var_builder(0, DType::F32, device))
}

/// A seeded normal tensor (our own generator: values do not change the work done).
pub fn randn(shape: &[usize], seed: u64, scale: f32, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64*: fast, seedable, good enough for benchmark inputs
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        // Box–Muller
        let (u1, u2) = (next().max(1e-300), next());
        let r = (-2.0 * u1.ln()).sqrt();
        let th = 2.0 * std::f64::consts::PI * u2;
        v.push((r * th.cos()) as f32 * scale);
        if v.len() < n {
            v.push((r * th.sin()) as f32 * scale);
        }
    }
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// A seeded normal [`Var`] (a leaf that requires grad).
pub fn randn_var(shape: &[usize], seed: u64, scale: f32, device: &Device) -> Result<Var> {
    Ok(Var::from_tensor(&randn(shape, seed, scale, device)?)?)
}

/// Forces evaluation of a result (CPU tensors are eager; this also syncs accelerators).
pub fn consume(t: &Tensor) -> Result<()> {
    sync(t.device())?;
    std::hint::black_box(t.dtype() == DType::F32);
    Ok(())
}

/// Median, min and max seconds of `repeat` calls after `warmup` untimed ones.
pub fn time_calls(
    work: &mut Work,
    warmup: usize,
    repeat: usize,
    device: &Device,
) -> Result<Timing> {
    for _ in 0..warmup {
        work()?;
    }
    sync(device)?;
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let t0 = Instant::now();
        work()?;
        sync(device)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    Ok(Timing::from_times(times))
}

/// Figures of repeated timings, in seconds.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

impl Timing {
    /// From raw times (seconds).
    pub fn from_times(mut t: Vec<f64>) -> Self {
        t.sort_by(f64::total_cmp);
        let n = t.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            t[n / 2]
        } else {
            0.5 * (t[n / 2 - 1] + t[n / 2])
        };
        Timing {
            median,
            min: t.first().copied().unwrap_or(f64::NAN),
            max: t.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The PyTorch peer venv's python, if it exists (`$VIDGEN_PEERS_VENV` or
/// `~/.cache/vidgen-peers/venv`, made by `../shared/peers/setup.sh`).
pub fn peer_python() -> Option<PathBuf> {
    let venv = std::env::var_os("VIDGEN_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/vidgen-peers/venv")
        });
    let py = venv.join("bin/python");
    py.exists().then_some(py)
}

/// Peer cases of our own script `benches/peers/feature_peers.py` (the FID Inception-v3 and FVD
/// I3D networks and the fixture VQModel, which `torch_peers.py` does not cover); every other case is `torch_peers.py`'s.
pub const LOCAL_PEER_CASES: &[&str] = &[
    "inception_features_b1",
    "i3d_logits_b1t16",
    "vqmodel_encode_b16h64",
    "vqmodel_decode_b16h64",
];

/// Peer cases of `benches/peers/clip_peers.py` (transformers' CLIP towers at ViT-B/32 sizes).
pub const CLIP_PEER_CASES: &[&str] = &["clip_text_b8_vitb32", "clip_vision_b8_vitb32"];

/// Peer cases of `benches/peers/pipeline_peers.py` (whole diffusers pipelines).
pub const PIPELINE_PEER_CASES: &[&str] = &["svd_pipeline_small"];

/// Peer cases of `benches/peers/sd_pipeline_peers.py` (InstructPix2Pix, AnimateDiff).
pub const SD_PIPELINE_PEER_CASES: &[&str] = &["ip2p_pipeline_small", "animatediff_pipeline_small"];

/// Peer cases of `benches/peers/train_peers.py` (one training step of the small UNets).
pub const TRAIN_PEER_CASES: &[&str] = &["train_step_unet_svd_small_aid", "train_step_unet3d_small"];

/// Peer cases of `benches/peers/retrieval_peers.py` (exact top-k search in torch / numpy).
pub const RETRIEVAL_PEER_CASES: &[&str] = &["retrieval_topk_n100k_d512_q1000_k10"];

/// The peer script that runs `case`: `benches/peers/feature_peers.py` for
/// [`LOCAL_PEER_CASES`], `benches/peers/clip_peers.py` for [`CLIP_PEER_CASES`],
/// `benches/peers/train_peers.py` for [`TRAIN_PEER_CASES`], else
/// `../shared/peers/torch_peers.py` beside the repository; `None` when that file is absent.
pub fn peer_script(case: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let p = if RETRIEVAL_PEER_CASES.contains(&case) {
        dir.join("peers/retrieval_peers.py")
    } else if TRAIN_PEER_CASES.contains(&case) {
        dir.join("peers/train_peers.py")
    } else if SD_PIPELINE_PEER_CASES.contains(&case) {
        dir.join("peers/sd_pipeline_peers.py")
    } else if PIPELINE_PEER_CASES.contains(&case) {
        dir.join("peers/pipeline_peers.py")
    } else if CLIP_PEER_CASES.contains(&case) {
        dir.join("peers/clip_peers.py")
    } else if LOCAL_PEER_CASES.contains(&case) {
        dir.join("peers/feature_peers.py")
    } else {
        dir.join("../../shared/peers/torch_peers.py")
    };
    p.exists().then_some(p)
}

/// One PyTorch peer measurement: the parsed `--json` line.
#[derive(Debug, Clone)]
pub struct PeerResult {
    /// Median seconds per call.
    pub median_s: f64,
    /// Threads torch used.
    pub threads: usize,
    /// The whole JSON record (versions, variants, info).
    pub json: serde_json::Value,
}

/// Runs a `torch_peers.py` case; `Err` carries the reason it could not (no venv, failure).
pub fn torch_peer(
    case: &str,
    threads: usize,
    repeat: Option<usize>,
    warmup: Option<usize>,
) -> std::result::Result<PeerResult, String> {
    let py = peer_python().ok_or("no peer venv (run ../shared/peers/setup.sh)")?;
    let script = peer_script(case).ok_or_else(|| {
        format!("no peer script for {case} (../shared/peers/ beside the repository?)")
    })?;
    let mut cmd = Command::new(py);
    cmd.arg(script)
        .arg(case)
        .args(["--json", "--threads", &threads.to_string()]);
    if let Some(r) = repeat {
        cmd.args(["--repeat", &r.to_string()]);
    }
    if let Some(w) = warmup {
        cmd.args(["--warmup", &w.to_string()]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run python: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        return Err(format!("peer {case} failed: {tail}"));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().ok_or("peer printed nothing")?;
    let json: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("peer output is not JSON: {e}"))?;
    let median_s = json["median_s"]
        .as_f64()
        .ok_or("peer JSON has no median_s")?;
    let threads = json["threads"].as_u64().unwrap_or(threads as u64) as usize;
    Ok(PeerResult {
        median_s,
        threads,
        json,
    })
}

/// Sets criterion throughput for a case.
pub fn throughput(amount: Option<Amount>) -> Option<criterion::Throughput> {
    match amount {
        Some(Amount::Flops(f)) => Some(criterion::Throughput::Elements(f as u64)),
        Some(Amount::Bytes(b)) => Some(criterion::Throughput::Bytes(b as u64)),
        None => None,
    }
}

/// Runs every case of `krate` (ours and its in-process twins) as a criterion group named after
/// the crate. Throughput "elements" are FLOPs, so criterion's `elem/s` reads as FLOP/s.
pub fn criterion_suite(c: &mut criterion::Criterion, krate: &str) {
    let device = Device::Cpu;
    let mut group = c.benchmark_group(krate);
    group.sample_size(10);
    for case in cases_of(krate) {
        if let Some(t) = throughput(case.amount) {
            group.throughput(t);
        }
        let mut runs: Vec<(String, Setup)> = vec![(bench_id(&device, case.name), case.ours)];
        for (twin, setup) in &case.twins {
            runs.push((format!("{}/{twin}", bench_id(&device, case.name)), *setup));
        }
        for (id, setup) in runs {
            match setup(&device) {
                Ok(mut work) => {
                    group.bench_function(id.as_str(), |b| {
                        b.iter(|| {
                            if let Err(e) = work() {
                                eprintln!("{id}: {e}");
                            }
                        })
                    });
                }
                Err(e) => eprintln!("{id}: setup failed: {e}"),
            }
        }
    }
    group.finish();
}
