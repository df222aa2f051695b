//! Release-mode timing of the feature networks beside their PyTorch peers, in one window:
//! FID Inception-v3 features of one 299×299 image and I3D logits of one 16-frame 224×224
//! clip, median of several runs, then `benches/peers/feature_peers.py` (when the peer venv
//! exists) with the same thread count, and the ratio peer/ours.
//!
//! ```text
//! cargo run --release -p eval-metrics --example feature_timing
//! ```
//! The criterion versions of the same cases are in `benches/benches/eval_metrics.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use eval_metrics::weights::{weights_dir, FID_INCEPTION_FILE, I3D_FILE};
use eval_metrics::{FidInceptionV3, I3d};

fn median(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
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

fn main() {
    let dir = weights_dir();
    let inc = FidInceptionV3::load(dir.join(FID_INCEPTION_FILE)).expect("run fetch_weights first");
    let i3d = I3d::load(dir.join(I3D_FILE)).expect("run fetch_weights first");
    let dev = Device::Cpu;
    let img = (Tensor::rand(0f32, 1.99, (1, 3, 299, 299), &dev).unwrap() - 1.0).unwrap();
    let clip = (Tensor::rand(0f32, 2.0, (1, 3, 16, 224, 224), &dev).unwrap() - 1.0).unwrap();
    let th = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let t_inc = median(5, || {
        inc.features(&img).unwrap();
    });
    let t_i3d = median(3, || {
        i3d.logits(&clip).unwrap();
    });
    println!(
        "ours ({th} threads): inception_features_b1 {t_inc:.4} s, i3d_logits_b1t16 {t_i3d:.3} s"
    );
    let venv = std::env::var_os("VIDGEN_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/vidgen-peers/venv")
        });
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/peers/feature_peers.py");
    for (case, ours) in [
        ("inception_features_b1", t_inc),
        ("i3d_logits_b1t16", t_i3d),
    ] {
        let out = Command::new(venv.join("bin/python"))
            .arg(&script)
            .args([case, "--json", "--threads", &th.to_string()])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let s = String::from_utf8_lossy(&o.stdout);
                let v: serde_json::Value =
                    serde_json::from_str(s.lines().last().unwrap_or("{}")).unwrap_or_default();
                let peer = v["median_s"].as_f64().unwrap_or(f64::NAN);
                println!(
                    "{case}: peer {peer:.4} s ({}), ours {ours:.4} s, ratio peer/ours = {:.2}x",
                    v["variant"].as_str().unwrap_or("-"),
                    peer / ours
                );
            }
            Ok(o) => eprintln!("peer {case} failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => eprintln!("peer {case}: skipped ({e}); run ../shared/peers/setup.sh"),
        }
    }
}
