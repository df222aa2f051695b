//! Nearest-code search speed: the fused search vs candle's composed ops (matmul + argmin) and,
//! when the peer venv exists, PyTorch (`../shared/peers/torch_peers.py`) in the same run.
//!
//! `cargo run --release -p vq-tokenizer --example bench_nn [-- --no-peer]`
//!
//! Also times encode / decode of a 16-frame 64×64 clip with the fixture-sized `VQModel`
//! (`fixtures/vqmodel/base/model`) beside diffusers on the same machine (2 threads).
//!
//! Cases (../shared/peers/README.md): `vq_nn_n4096_k16384_d8` and `vq_nn_n4096_k1024_d256`,
//! z and codebook standard normal; FLOPs `2·N·K·D`. Timings are medians; the fused time
//! includes preparing the codebook (transpose + norms), as PyTorch's includes `‖E‖²`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use video_core::Codec;
use vq_tokenizer::nearest_composed;
use vq_tokenizer::search::PreparedCodebook;
use vq_tokenizer::{FrameTokenizer, VQModel};

fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            // Box–Muller.
            let u: f64 = r.random_range(f64::EPSILON..1.0);
            let v: f64 = r.random_range(0.0..1.0);
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time<F: FnMut()>(warm: usize, reps: usize, mut f: F) -> f64 {
    for _ in 0..warm {
        f();
    }
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Median seconds of the PyTorch peer, if its venv is installed.
fn peer(case: &str) -> Option<f64> {
    let home = std::env::var("HOME").ok()?;
    let py = std::env::var("VIDGEN_PEERS_VENV")
        .map(|p| format!("{p}/bin/python"))
        .unwrap_or(format!("{home}/.cache/vidgen-peers/venv/bin/python"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/torch_peers.py");
    if !Path::new(&py).exists() || !script.exists() {
        return None;
    }
    let out = Command::new(py)
        .arg(script)
        .arg(case)
        .arg("--json")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().last()?).ok()?;
    v.get("median_s").and_then(|m| m.as_f64())
}

const DIFFUSERS_CODEC: &str = r#"
import sys, time, statistics, torch
from diffusers import VQModel
torch.set_num_threads(2)
m = VQModel.from_pretrained(sys.argv[1]).eval()
x = torch.rand(16, 3, 64, 64) * 2 - 1
def enc():
    h = m.encode(x).latents
    return m.quantize(h)[2][2]
def dec(h):
    return m.decode(h).sample
with torch.no_grad():
    h = m.encode(x).latents
    for f, a in ((enc, ()), (lambda: dec(h), ())):
        f(); ts = []
        for _ in range(5):
            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
        print(statistics.median(ts))
"#;

/// diffusers encode (to ids) and decode medians, if the peer venv exists.
fn diffusers_codec(model_dir: &Path) -> Option<(f64, f64)> {
    let home = std::env::var("HOME").ok()?;
    let py = std::env::var("VIDGEN_PEERS_VENV")
        .map(|p| format!("{p}/bin/python"))
        .unwrap_or(format!("{home}/.cache/vidgen-peers/venv/bin/python"));
    let out = Command::new(py)
        .arg("-c")
        .arg(DIFFUSERS_CODEC)
        .arg(model_dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    (v.len() == 2).then(|| (v[0], v[1]))
}

fn codec_bench(no_peer: bool) -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/vqmodel/base/model");
    let (model, _) = VQModel::from_pretrained(&dir, candle_core::DType::F32, &Device::Cpu)?;
    let tok = FrameTokenizer::new(model, 16)?;
    let video = Tensor::rand(-1f32, 1.0, (1, 3, 16, 64, 64), &Device::Cpu)?;
    let mut grid = tok.encode(&video)?;
    let enc = time(1, 5, || {
        if let Ok(g) = tok.encode(&video) {
            grid = g;
        }
    });
    let dec = time(1, 5, || {
        let _ = tok.decode(&grid);
    });
    let peer = if no_peer { None } else { diffusers_codec(&dir) };
    match peer {
        Some((pe, pd)) => println!(
            "vqmodel fixture, 16 frames 64x64: encode→ids {:.1} ms (diffusers {:.1} ms, {:.2}x) | \
             decode ids→video {:.1} ms (diffusers {:.1} ms, {:.2}x)",
            enc * 1e3, pe * 1e3, pe / enc, dec * 1e3, pd * 1e3, pd / dec
        ),
        None => println!(
            "vqmodel fixture, 16 frames 64x64: encode→ids {:.1} ms | decode {:.1} ms (no diffusers peer)",
            enc * 1e3,
            dec * 1e3
        ),
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let no_peer = std::env::args().any(|a| a == "--no-peer");
    println!("threads: {}", rayon::current_num_threads());
    for &(case, n, k, d, reps, anchor) in &[
        (
            "vq_nn_n4096_k16384_d8",
            4096usize,
            16384usize,
            8usize,
            10usize,
            0.194f64,
        ),
        ("vq_nn_n4096_k1024_d256", 4096, 1024, 256, 20, 0.0142),
    ] {
        let z = randn(n * d, 1);
        let e = randn(k * d, 2);
        let flops = 2.0 * (n * k * d) as f64;
        let mut ids = Vec::new();
        let fused = time(2, reps, || {
            let cb = PreparedCodebook::new(&e, k, d);
            ids = cb.nearest(&z).0;
        });
        let zt = Tensor::from_vec(z.clone(), (n, d), &Device::Cpu)?;
        let et = Tensor::from_vec(e.clone(), (k, d), &Device::Cpu)?;
        let mut cids = Vec::new();
        let composed = time(1, reps.min(5), || {
            cids = nearest_composed(&zt, &et)
                .and_then(|t| t.to_vec1::<u32>())
                .unwrap_or_default();
        });
        let agree = ids.iter().zip(&cids).filter(|(a, b)| a == b).count() as f64 / n as f64;
        let (torch, src) = match (!no_peer).then(|| peer(case)).flatten() {
            Some(t) => (t, "same run"),
            None => (anchor, "README anchor"),
        };
        println!(
            "{case}: fused {:.2} ms ({:.1} GFLOP/s) | candle matmul+argmin {:.2} ms ({:.1} GFLOP/s) | \
             PyTorch {:.2} ms ({src}) | speedup vs PyTorch {:.2}x, vs candle {:.2}x | ids agree {:.4}",
            fused * 1e3,
            flops / fused / 1e9,
            composed * 1e3,
            flops / composed / 1e9,
            torch * 1e3,
            torch / fused,
            composed / fused,
            agree
        );
    }
    codec_bench(no_peer)
}
