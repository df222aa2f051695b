//! Criterion suite for `eval-metrics`, mirroring the PyTorch / numpy peers of
//! `../shared/peers/torch_peers.py` with the same shapes:
//!
//! * `fid_d2048`: Fréchet distance of two Gaussians at d = 2048 from `[4096, 2048]` features
//!   (f1 = N(0,1), f2 = 0.9·N(0,1) + 0.05; ddof-1 covariances), statistics built untimed. Two
//!   variants: the default (Cholesky of Σa + one symmetric eigenvalue solve) and the eigh path
//!   (eigendecomposition of Σa + eigenvalue solve, the rank-deficient route). Peers:
//!   `fid_sqrtm_d2048` (pytorch-fid `scipy.linalg.sqrtm`) and `fid_eigh_d2048` (torch-fidelity
//!   `eigvals`, plus numpy / torch symmetric `eigh` variants).
//! * `kid_d2048_100x1000`: KID with 100 subsets of 1000 from two `[5000, 2048]` f32 sets
//!   (f1 = N(0,1), f2 = 1.1·N(0,1) + 0.05). Peer: torch-fidelity `kid_features_to_metric`.
//! * `psnr_ssim_b1c3t16h64w64`: per-frame PSNR and the three SSIM flavours on a 16-frame
//!   64×64 RGB clip (no peer; for regressions).
//!
//! After the criterion groups, each peer case is run (when the peer venv exists) with the
//! same thread count and a `ratio peer/ours` line is printed, our time being the median of
//! three untimed-by-criterion runs. Run: `cargo bench -p benches --bench eval_metrics`.

// `criterion_group!` generates an undocumented `pub fn`; bench setup may panic on its own data.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use eval_metrics::{
    frechet_distance_with, kernel_distance, psnr, ssim, DataRange, FeatureStats, FrechetOptions,
    GaussianStats, KidOptions, SqrtMethod, SsimFlavour,
};

/// Deterministic standard normals (xorshift64* + Box–Muller); the peers' numpy draws cannot
/// be reproduced, and the values do not change the work done.
fn normals(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (next().max(1e-300), next());
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect()
}

fn fid_stats() -> (GaussianStats, GaussianStats) {
    let (n, d) = (4096usize, 2048usize);
    let f1 = normals(1, n * d);
    let f2: Vec<f64> = normals(2, n * d).iter().map(|x| 0.9 * x + 0.05).collect();
    let mut s1 = FeatureStats::new(d).expect("dim");
    s1.add_rows(&f1, n).expect("stats 1");
    let mut s2 = FeatureStats::new(d).expect("dim");
    s2.add_rows(&f2, n).expect("stats 2");
    (s1.gaussian().expect("g1"), s2.gaussian().expect("g2"))
}

fn kid_features() -> (Tensor, Tensor) {
    let (n, d) = (5000usize, 2048usize);
    let f1: Vec<f32> = normals(3, n * d).iter().map(|&x| x as f32).collect();
    let f2: Vec<f32> = normals(4, n * d)
        .iter()
        .map(|&x| (1.1 * x + 0.05) as f32)
        .collect();
    let dev = Device::Cpu;
    (
        Tensor::from_vec(f1, (n, d), &dev).expect("f1"),
        Tensor::from_vec(f2, (n, d), &dev).expect("f2"),
    )
}

fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

/// Median seconds of a PyTorch peer case (and its JSON), or None when the venv is absent.
fn torch_peer(case: &str, threads: usize) -> Option<serde_json::Value> {
    let venv = std::env::var_os("VIDGEN_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/vidgen-peers/venv")
        });
    let python = venv.join("bin/python");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/torch_peers.py");
    if !python.exists() || !script.exists() {
        eprintln!("peer {case}: skipped (run ../shared/peers/setup.sh for PyTorch peer figures)");
        return None;
    }
    let out = Command::new(python)
        .arg(script)
        .args([case, "--json", "--threads", &threads.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "peer {case}: failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last()?).ok()
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn eval_metrics(c: &mut Criterion) {
    let (g1, g2) = fid_stats();
    let auto = FrechetOptions::default();
    let eigh = FrechetOptions {
        method: SqrtMethod::Eigh,
        ..FrechetOptions::default()
    };
    let mut group = c.benchmark_group("eval_metrics");
    group.sample_size(10);
    group.bench_function("fid_d2048", |b| {
        b.iter(|| frechet_distance_with(&g1, &g2, &auto).expect("fd"))
    });
    group.bench_function("fid_d2048_eigh", |b| {
        b.iter(|| frechet_distance_with(&g1, &g2, &eigh).expect("fd"))
    });
    let (k1, k2) = kid_features();
    let kopts = KidOptions::default();
    group.bench_function("kid_d2048_100x1000", |b| {
        b.iter(|| kernel_distance(&k1, &k2, &kopts).expect("kid"))
    });
    let dev = Device::Cpu;
    let shape = (1usize, 3usize, 16usize, 64usize, 64usize);
    let n = 3 * 16 * 64 * 64;
    let a: Vec<f32> = normals(5, n)
        .iter()
        .map(|x| (0.5 + 0.15 * x).clamp(0.0, 1.0) as f32)
        .collect();
    let bnoise: Vec<f32> = normals(6, n)
        .iter()
        .zip(&a)
        .map(|(x, y)| (y + 0.05 * *x as f32).clamp(0.0, 1.0))
        .collect();
    let va = Tensor::from_vec(a, shape, &dev).expect("a");
    let vb = Tensor::from_vec(bnoise, shape, &dev).expect("b");
    group.bench_function("psnr_ssim_b1c3t16h64w64", |b| {
        b.iter(|| {
            let p = psnr(&va, &vb, DataRange::UNIT).expect("psnr").global;
            let s: f64 = [
                SsimFlavour::SkimageGaussian,
                SsimFlavour::SkimageDefault,
                SsimFlavour::Torchmetrics,
            ]
            .iter()
            .map(|f| ssim(&va, &vb, DataRange::UNIT, *f).expect("ssim").mean)
            .sum();
            p + s
        })
    });
    group.finish();

    // Ratios against the peers, timed here back to back with the same thread count.
    let th = threads();
    let fd_value = frechet_distance_with(&g1, &g2, &auto).expect("fd");
    let ours_fid = median_secs(3, || {
        frechet_distance_with(&g1, &g2, &auto).expect("fd");
    });
    let ours_fid_eigh = median_secs(3, || {
        frechet_distance_with(&g1, &g2, &eigh).expect("fd");
    });
    let kid = kernel_distance(&k1, &k2, &kopts).expect("kid");
    let ours_kid = median_secs(3, || {
        kernel_distance(&k1, &k2, &kopts).expect("kid");
    });
    println!(
        "ours ({th} threads): fid_d2048 {ours_fid:.3} s (FD {fd_value:.6}), fid_d2048_eigh {ours_fid_eigh:.3} s, \
         kid_d2048_100x1000 {ours_kid:.3} s (KID {:.7} ± {:.7})",
        kid.mean, kid.std
    );
    for (case, ours) in [
        ("fid_sqrtm_d2048", ours_fid),
        ("fid_eigh_d2048", ours_fid),
        ("kid_d2048_100x1000", ours_kid),
    ] {
        if let Some(v) = torch_peer(case, th) {
            let peer = v["median_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "{case}: peer {peer:.3} s ({}), ours {ours:.3} s, ratio peer/ours = {:.2}x",
                v["variant"].as_str().unwrap_or("-"),
                peer / ours
            );
            if let Some(vars) = v["variants"].as_object() {
                for (name, fig) in vars {
                    let m = fig["median_s"].as_f64().unwrap_or(f64::NAN);
                    println!(
                        "  variant {name}: {m:.3} s, ratio peer/ours = {:.2}x",
                        m / ours
                    );
                }
            }
        }
    }
}

criterion_group!(benches, eval_metrics);
criterion_main!(benches);
