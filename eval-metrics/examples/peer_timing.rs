//! Timing run of the d = 2048 FID and KID cases against their PyTorch / numpy peers, the same
//! work as the `eval_metrics` criterion suite in `benches/` (usable when that crate does not
//! build). Run with optimisation, e.g.
//! `cargo run -p eval-metrics --example peer_timing --release` (add `-- --no-peer` to skip peers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use eval_metrics::{
    frechet_distance_with, kernel_distance, FeatureStats, FrechetOptions, GaussianStats,
    KidOptions, SqrtMethod,
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

fn main() {
    let no_peer = std::env::args().any(|a| a == "--no-peer");
    let th = threads();
    let t0 = Instant::now();
    let (g1, g2) = fid_stats();
    println!(
        "statistics of 2 x [4096, 2048] f64 features: {:.3} s",
        t0.elapsed().as_secs_f64()
    );
    let auto = FrechetOptions::default();
    let eigh = FrechetOptions {
        method: SqrtMethod::Eigh,
        ..FrechetOptions::default()
    };
    let fd = frechet_distance_with(&g1, &g2, &auto).expect("fd");
    let fd_e = frechet_distance_with(&g1, &g2, &eigh).expect("fd");
    let ours_fid = median_secs(5, || {
        frechet_distance_with(&g1, &g2, &auto).expect("fd");
    });
    let ours_fid_eigh = median_secs(3, || {
        frechet_distance_with(&g1, &g2, &eigh).expect("fd");
    });
    println!("fid_d2048 (cholesky + eigvalsh): {ours_fid:.3} s  FD {fd:.9}");
    println!("fid_d2048 (eigh + eigvalsh):     {ours_fid_eigh:.3} s  FD {fd_e:.9}");
    let (k1, k2) = kid_features();
    let kopts = KidOptions::default();
    let kid = kernel_distance(&k1, &k2, &kopts).expect("kid");
    let ours_kid = median_secs(3, || {
        kernel_distance(&k1, &k2, &kopts).expect("kid");
    });
    println!(
        "kid_d2048_100x1000: {ours_kid:.3} s  KID {:.7} +- {:.7}",
        kid.mean, kid.std
    );
    if no_peer {
        return;
    }
    for (case, ours) in [
        ("fid_sqrtm_d2048", ours_fid),
        ("fid_eigh_d2048", ours_fid),
        ("kid_d2048_100x1000", ours_kid),
    ] {
        if let Some(v) = torch_peer(case, th) {
            let peer = v["median_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "{case}: peer {peer:.3} s ({}), ours {ours:.3} s, ratio peer/ours = {:.2}x ({th} threads)",
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
