#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The motion tokenizer's construction: one `new(&cfg, vb)` for every weight source, the
//! documented checkpoint keys, strict `from_pretrained` with a `LoadReport`, and `save` of a
//! trained model reading back the same.

use candle_core::{DType, Device, Tensor};
use vidgen_motion_codec::{MotionTokenizer, MotionTokenizerConfig};
use vidgen_video_core::Error;

/// A tiny configuration (fast in the dev profile): 8 × 8 × 8 motion, two stages.
fn tiny() -> MotionTokenizerConfig {
    MotionTokenizerConfig {
        frames: 8,
        height: 8,
        width: 8,
        hidden: 8,
        heads: 2,
        depth: 1,
        mlp_ratio: 2,
        strides: vec![[1, 2, 2], [2, 1, 1]],
        num_codes: 16,
        code_dim: 4,
        ..MotionTokenizerConfig::default()
    }
}

fn motion(cfg: &MotionTokenizerConfig, b: usize) -> Tensor {
    let n = b * cfg.in_channels * cfg.frames * cfg.height * cfg.width;
    let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.71).sin() * 0.4).collect();
    Tensor::from_vec(
        v,
        (b, cfg.in_channels, cfg.frames, cfg.height, cfg.width),
        &Device::Cpu,
    )
    .unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The keys and shapes of the module docs' table, written out for `cfg`.
fn documented_keys(cfg: &MotionTokenizerConfig) -> Vec<(String, Vec<usize>)> {
    let (d, r, c) = (cfg.hidden, cfg.mlp_ratio, cfg.in_channels);
    let (t, h, w) = cfg.code_dims();
    let mut keys = vec![
        ("encoder.embed.weight".to_string(), vec![d, c]),
        ("encoder.embed.bias".into(), vec![d]),
        (
            "encoder.pos_spatial".into(),
            vec![cfg.height * cfg.width, d],
        ),
        ("encoder.pos_temporal".into(), vec![cfg.frames, d]),
        ("encoder.norm.weight".into(), vec![d]),
        ("encoder.norm.bias".into(), vec![d]),
        ("encoder.to_code.weight".into(), vec![cfg.code_dim, d]),
        ("encoder.to_code.bias".into(), vec![cfg.code_dim]),
        (
            "quantize.embedding.weight".into(),
            vec![cfg.num_codes, cfg.code_dim],
        ),
        ("decoder.from_code.weight".into(), vec![d, cfg.code_dim]),
        ("decoder.from_code.bias".into(), vec![d]),
        ("decoder.pos_spatial".into(), vec![h * w, d]),
        ("decoder.pos_temporal".into(), vec![t, d]),
        ("decoder.norm.weight".into(), vec![d]),
        ("decoder.norm.bias".into(), vec![d]),
        ("decoder.out.weight".into(), vec![c, d]),
        ("decoder.out.bias".into(), vec![c]),
    ];
    for side in ["encoder", "decoder"] {
        for i in 0..cfg.strides.len() {
            let conv = if side == "encoder" { "down" } else { "up" };
            keys.push((
                format!("{side}.stages.{i}.{conv}.weight"),
                vec![d, d, 3, 3, 3],
            ));
            keys.push((format!("{side}.stages.{i}.{conv}.bias"), vec![d]));
            for j in 0..cfg.depth {
                let p = format!("{side}.stages.{i}.blocks.{j}");
                for n in ["norm_t", "norm_s", "norm_mlp"] {
                    keys.push((format!("{p}.{n}.weight"), vec![d]));
                    keys.push((format!("{p}.{n}.bias"), vec![d]));
                }
                for a in ["attn_t", "attn_s"] {
                    keys.push((format!("{p}.{a}.qkv.weight"), vec![3 * d, d]));
                    keys.push((format!("{p}.{a}.qkv.bias"), vec![3 * d]));
                    keys.push((format!("{p}.{a}.proj.weight"), vec![d, d]));
                    keys.push((format!("{p}.{a}.proj.bias"), vec![d]));
                }
                keys.push((format!("{p}.mlp.fc1.weight"), vec![r * d, d]));
                keys.push((format!("{p}.mlp.fc1.bias"), vec![r * d]));
                keys.push((format!("{p}.mlp.fc2.weight"), vec![d, r * d]));
                keys.push((format!("{p}.mlp.fc2.bias"), vec![d]));
            }
        }
    }
    keys.sort();
    keys
}

#[test]
fn checkpoint_keys_are_the_documented_ones_and_the_count_follows() {
    for cfg in [tiny(), MotionTokenizerConfig::default()] {
        let mut got: Vec<(String, Vec<usize>)> = Vec::new();
        let n = vidgen_video_nn::count_by_construction(|vb| {
            let m = MotionTokenizer::new(&cfg, vb)?;
            got = m
                .named_tensors()
                .iter()
                .map(|(k, t)| (k.clone(), t.dims().to_vec()))
                .collect();
            Ok(m.num_parameters())
        })
        .unwrap();
        got.sort();
        let want = documented_keys(&cfg);
        assert_eq!(got, want);
        let total: usize = want.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(n, total);
    }
}

#[test]
fn any_seeded_var_builder_builds_it_reproducibly() {
    let cfg = tiny();
    let dev = Device::Cpu;
    let x = motion(&cfg, 2);
    let a =
        MotionTokenizer::new(&cfg, video_testkit::seeded_var_builder(5, DType::F32, &dev)).unwrap();
    let b =
        MotionTokenizer::new(&cfg, video_testkit::seeded_var_builder(5, DType::F32, &dev)).unwrap();
    let (za, zb) = (
        a.encode_continuous(&x).unwrap(),
        b.encode_continuous(&x).unwrap(),
    );
    assert_eq!(max_abs(&za, &zb), 0.0);
    let c =
        MotionTokenizer::new(&cfg, video_testkit::seeded_var_builder(6, DType::F32, &dev)).unwrap();
    assert!(max_abs(&za, &c.encode_continuous(&x).unwrap()) > 0.0);
    // `random` is seeded the same way: same seed, same weights; another seed, others.
    let r1 = MotionTokenizer::random(&cfg, 9, &dev).unwrap();
    let r2 = MotionTokenizer::random(&cfg, 9, &dev).unwrap();
    let r3 = MotionTokenizer::random(&cfg, 10, &dev).unwrap();
    for ((k, t1), (_, t2)) in r1.named_tensors().iter().zip(r2.named_tensors()) {
        assert_eq!(max_abs(t1, t2), 0.0, "{k}");
    }
    let w = |m: &MotionTokenizer| m.named_tensors()[0].1.clone();
    assert!(max_abs(&w(&r1), &w(&r3)) > 0.0);
}

#[test]
fn a_trained_tokenizer_saves_and_loads_back() {
    let cfg = tiny();
    let dev = Device::Cpu;
    let x = motion(&cfg, 1);
    let map = video_testkit::SeededVarMap::new(1);
    let tok = MotionTokenizer::new(&cfg, map.var_builder(DType::F32, &dev)).unwrap();
    let before = tok.encode_continuous(&x).unwrap();
    // "Training": every variable moves; the model (sharing the variables) follows.
    for v in map.all_vars() {
        v.set(&(v.as_tensor() * 1.1).unwrap()).unwrap();
    }
    let trained = tok.encode_continuous(&x).unwrap();
    assert!(max_abs(&before, &trained) > 1e-4);
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    let (back, report) = MotionTokenizer::from_pretrained(dir.path(), DType::F32, &dev).unwrap();
    assert_eq!(report.loaded, tok.named_tensors().len());
    assert!(report.is_clean() && report.unused.is_empty(), "{report}");
    assert_eq!(back.config(), &cfg);
    // Not bit-equal: layers over training variables (gradients tracked) take candle's
    // matmul, loaded weights video-kernels' gemm; the sums differ in order only.
    assert!(max_abs(&trained, &back.encode_continuous(&x).unwrap()) < 1e-5);
    let ids = tok.tokenize(&x).unwrap();
    assert_eq!(
        ids.ids().flatten_all().unwrap().to_vec1::<u32>().unwrap(),
        back.tokenize(&x)
            .unwrap()
            .ids()
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap()
    );
    assert!(
        max_abs(
            &tok.detokenize(&ids).unwrap(),
            &back.detokenize(&ids).unwrap()
        ) < 1e-5
    );
}

#[test]
fn loading_is_strict_and_reports() {
    let cfg = tiny();
    let dev = Device::Cpu;
    let tok = MotionTokenizer::random(&cfg, 2, &dev).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("model.safetensors");
    tok.save(dir.path()).unwrap();
    let full: std::collections::HashMap<String, Tensor> =
        tok.named_tensors().iter().cloned().collect();

    // An extra key is listed as unused, not an error.
    let mut extra = full.clone();
    extra.insert(
        "encoder.extra".into(),
        Tensor::zeros(3, DType::F32, &dev).unwrap(),
    );
    candle_core::safetensors::save(&extra, &st).unwrap();
    let (_, report) = MotionTokenizer::from_pretrained(dir.path(), DType::F32, &dev).unwrap();
    assert_eq!(report.unused.len(), 1);
    assert_eq!(report.unused[0].0, "encoder.extra");

    // A missing key is named.
    let mut missing = full.clone();
    missing.remove("decoder.out.bias");
    candle_core::safetensors::save(&missing, &st).unwrap();
    match MotionTokenizer::from_pretrained(dir.path(), DType::F32, &dev) {
        Err(Error::MissingTensor { key, .. }) => assert_eq!(key, "decoder.out.bias"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }

    // A config that disagrees with the weights: every mismatched key is reported.
    candle_core::safetensors::save(&full, &st).unwrap();
    let wider = MotionTokenizerConfig {
        hidden: 12,
        ..cfg.clone()
    };
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&wider).unwrap(),
    )
    .unwrap();
    let e = MotionTokenizer::from_pretrained(dir.path(), DType::F32, &dev).unwrap_err();
    assert!(
        matches!(e, Error::Load(_) | Error::ShapeMismatch { .. }),
        "{e}"
    );

    // A bad config field is named.
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"heads": 3, "hidden": 8}"#,
    )
    .unwrap();
    let e = MotionTokenizer::from_pretrained(dir.path(), DType::F32, &dev).unwrap_err();
    assert!(matches!(e, Error::BadConfig { .. }), "{e}");
    std::fs::write(dir.path().join("config.json"), r#"{"hidden": "wide"}"#).unwrap();
    let e = MotionTokenizer::from_pretrained(dir.path(), DType::F32, &dev).unwrap_err();
    assert!(matches!(e, Error::BadConfig { .. }), "{e}");

    // No folder at all.
    let e =
        MotionTokenizer::from_pretrained(dir.path().join("nope"), DType::F32, &dev).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn half_precision_weights_track_f32() {
    let cfg = tiny();
    let dev = Device::Cpu;
    let tok = MotionTokenizer::random(&cfg, 4, &dev).unwrap();
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    let x = motion(&cfg, 1);
    let z = tok.encode_continuous(&x).unwrap();
    let scale = z
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    for dt in [DType::BF16, DType::F16] {
        let (half, _) = MotionTokenizer::from_pretrained(dir.path(), dt, &dev).unwrap();
        assert_eq!(half.dtype(), dt);
        let zh = half.encode_continuous(&x).unwrap();
        assert_eq!(zh.dtype(), DType::F32);
        let err = max_abs(&z, &zh);
        // bf16 keeps 8 mantissa bits: a few per cent of the output's scale.
        assert!(err < 0.05 * scale, "{dt:?}: max_abs {err} vs scale {scale}");
        let ids = half.tokenize(&x).unwrap();
        let y = half.detokenize(&ids).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        assert_eq!(y.dims(), x.dims());
    }
}
