#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Strict loading of real `save_pretrained` directories, and every error from a real bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::{check_finite, Error, ModelDir};

fn model_dirs(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    let has_cfg = entries.iter().any(|p| p.ends_with("config.json"));
    let has_st = entries.iter().any(|p| {
        let n = p.file_name().unwrap().to_string_lossy();
        n == "model.safetensors" || n == "diffusion_pytorch_model.safetensors"
    });
    if has_cfg && has_st {
        out.push(root.to_path_buf());
    }
    for p in entries.into_iter().filter(|p| p.is_dir()) {
        model_dirs(&p, out);
    }
}

#[test]
fn opens_every_fixture_model_directory() {
    let mut dirs = Vec::new();
    let root = video_testkit::fixtures_root();
    model_dirs(&root, &mut dirs);
    // Before: an empty tree passed silently.
    assert!(
        !dirs.is_empty(),
        "no model directories under {} (VIDGEN_FIXTURES)",
        root.display()
    );
    for d in &dirs {
        let md = ModelDir::open(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        let tensors = md.tensors();
        assert!(!tensors.is_empty(), "{}", d.display());
        let params: usize = tensors
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        for t in &tensors {
            assert!(!t.dtype.is_empty());
            assert!(md.contains(&t.name));
        }
        let cfg: serde_json::Value = md.config().unwrap();
        assert!(cfg.is_object());
        println!(
            "opened {}: {} tensors, {} parameters, first {} {:?} {}",
            d.display(),
            tensors.len(),
            params,
            tensors[0].name,
            tensors[0].shape,
            tensors[0].dtype
        );
    }
    // the vendored tree holds ten model directories (animatediff has three)
    if std::env::var_os("VIDGEN_FIXTURES").is_none() {
        assert!(dirs.len() >= 10, "found only {dirs:?}");
    }
}

fn write_st(path: &Path, tensors: &[(&str, Tensor)]) {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn tiny_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    write_st(
        &dir.path().join("model.safetensors"),
        &[
            (
                "layer.weight",
                Tensor::ones((3, 2), DType::F32, &dev).unwrap(),
            ),
            ("layer.bias", Tensor::zeros(3, DType::F32, &dev).unwrap()),
            ("extra.buffer", Tensor::zeros(1, DType::F32, &dev).unwrap()),
        ],
    );
    std::fs::write(dir.path().join("config.json"), r#"{"hidden": 2, "out": 3}"#).unwrap();
    dir
}

fn build(vb: VarBuilder, in_dim: usize, out_dim: usize) -> candle_core::Result<candle_nn::Linear> {
    candle_nn::linear(in_dim, out_dim, vb.pp("layer"))
}

#[test]
fn strict_load_reports_unused_keys() {
    let dir = tiny_dir();
    let md = ModelDir::open(dir.path()).unwrap();
    let (_lin, report) = md
        .load(DType::F32, &Device::Cpu, |vb| build(vb, 2, 3))
        .unwrap();
    assert_eq!(report.loaded, 2);
    assert!(report.is_clean());
    assert_eq!(report.unused.len(), 1);
    assert_eq!(report.unused[0].0, "extra.buffer");
    assert!(report.to_string().contains("unused `extra.buffer`"));
}

#[test]
fn missing_key_names_key_file_and_nearest() {
    let dir = tiny_dir();
    let md = ModelDir::open(dir.path()).unwrap();
    let err = md
        .load(DType::F32, &Device::Cpu, |vb| {
            candle_nn::linear(2, 3, vb.pp("layr"))
        })
        .unwrap_err();
    match &err {
        Error::Load(report) => {
            // both weight and bias are missing: one report lists them all
            assert_eq!(report.missing.len(), 2);
            assert_eq!(report.missing[0].nearest[0], "layer.bias");
        }
        other => panic!("expected Load, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("missing `layr.weight`"), "{msg}");
    assert!(msg.contains("did you mean `layer.weight`"), "{msg}");

    // a single missing key gives the specific variant
    let err = md
        .load(DType::F32, &Device::Cpu, |vb| {
            vb.pp("layer").get((3, 2), "weights")
        })
        .unwrap_err();
    match &err {
        Error::MissingTensor { key, file, nearest } => {
            assert_eq!(key, "layer.weights");
            assert!(file.ends_with("model.safetensors"));
            assert_eq!(nearest[0], "layer.weight");
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    // direct lookup too
    assert!(matches!(
        md.get("nope", &Device::Cpu),
        Err(Error::MissingTensor { .. })
    ));
}

#[test]
fn wrong_shape_names_both_shapes_and_file() {
    let dir = tiny_dir();
    let md = ModelDir::open(dir.path()).unwrap();
    let err = md
        .load(DType::F32, &Device::Cpu, |vb| {
            vb.pp("layer").get((4, 2), "weight")
        })
        .unwrap_err();
    match &err {
        Error::ShapeMismatch {
            key,
            expected,
            found,
            file,
        } => {
            assert_eq!(key, "layer.weight");
            assert_eq!(expected, &vec![4, 2]);
            assert_eq!(found, &vec![3, 2]);
            assert!(file.as_deref().unwrap().ends_with("model.safetensors"));
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("expected [4, 2], found [3, 2]"));
}

#[test]
fn truncated_safetensors_is_malformed_not_panic() {
    let dir = tiny_dir();
    let p = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        match ModelDir::open(dir.path()) {
            Err(Error::Malformed { path, reason }) => {
                assert_eq!(path, p);
                assert!(!reason.is_empty());
            }
            other => panic!("cut {cut}: expected Malformed, got {other:?}"),
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Cfg {
    hidden: usize,
    #[serde(default)]
    blocks: Vec<usize>,
}

#[test]
fn wrong_typed_config_field_is_named() {
    let dir = tiny_dir();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"hidden": 2, "blocks": [1, "two"], "ignored": true}"#,
    )
    .unwrap();
    let md = ModelDir::open(dir.path()).unwrap();
    match md.config::<Cfg>() {
        Err(Error::BadConfig {
            field,
            reason,
            file,
        }) => {
            assert_eq!(field, "blocks[1]");
            assert!(reason.contains("invalid type"), "{reason}");
            assert!(file.unwrap().ends_with("config.json"));
        }
        other => panic!("expected BadConfig, got {other:?}"),
    }
    std::fs::write(dir.path().join("config.json"), r#"{"hidden": "2"}"#).unwrap();
    let err = md.config::<Cfg>().unwrap_err();
    assert!(err.to_string().contains("`hidden`"), "{err}");
}

#[test]
fn missing_directory_and_config_are_io_errors() {
    assert!(matches!(
        ModelDir::open("/definitely/not/here"),
        Err(Error::Io { .. })
    ));
    let dir = tiny_dir();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let md = ModelDir::open(dir.path()).unwrap();
    match md.config::<Cfg>() {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("config.json")),
        other => panic!("expected Io, got {other:?}"),
    }
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        ModelDir::open(empty.path()),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn sharded_checkpoint_with_index() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let w = Tensor::arange(0f32, 6., &dev)
        .unwrap()
        .reshape((3, 2))
        .unwrap();
    let b = Tensor::new(&[1f32, 2., 3.], &dev).unwrap();
    write_st(
        &dir.path()
            .join("diffusion_pytorch_model-00001-of-00002.safetensors"),
        &[("layer.weight", w.clone())],
    );
    write_st(
        &dir.path()
            .join("diffusion_pytorch_model-00002-of-00002.safetensors"),
        &[("layer.bias", b.clone())],
    );
    std::fs::write(
        dir.path()
            .join("diffusion_pytorch_model.safetensors.index.json"),
        r#"{"metadata": {"total_size": 36}, "weight_map": {
            "layer.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
            "layer.bias": "diffusion_pytorch_model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let md = ModelDir::open(dir.path()).unwrap();
    assert_eq!(md.files().len(), 2);
    let (lin, report) = md.load(DType::F32, &dev, |vb| build(vb, 2, 3)).unwrap();
    assert_eq!(report.loaded, 2);
    assert!(report.unused.is_empty());
    let y = candle_core::Module::forward(&lin, &Tensor::ones((1, 2), DType::F32, &dev).unwrap())
        .unwrap();
    assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![2f32, 7., 12.]]);
    // a key that only the other shard has is found with its shard named in the report
    let tensors = md.tensors();
    assert!(tensors[0].file.to_string_lossy().contains("00002"));
}

#[test]
fn dtype_conversion_on_load() {
    let dir = tiny_dir();
    let md = ModelDir::open(dir.path()).unwrap();
    let (lin, _) = md
        .load(DType::BF16, &Device::Cpu, |vb| build(vb, 2, 3))
        .unwrap();
    assert_eq!(lin.weight().dtype(), DType::BF16);
}

#[test]
fn nan_tensor_is_reported_with_location_and_counts() {
    let t = Tensor::new(&[1f32, f32::NAN, f32::INFINITY, f32::NAN], &Device::Cpu).unwrap();
    match check_finite(&t, "unet output") {
        Err(Error::NonFinite {
            location,
            nan,
            inf,
            total,
        }) => {
            assert_eq!(
                (location.as_str(), nan, inf, total),
                ("unet output", 2, 1, 4)
            );
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    let bf = t.to_dtype(DType::BF16).unwrap();
    assert!(check_finite(&bf, "x").is_err());
    assert!(check_finite(&Tensor::zeros(3, DType::F16, &Device::Cpu).unwrap(), "x").is_ok());
    assert!(check_finite(&Tensor::zeros(3, DType::U32, &Device::Cpu).unwrap(), "x").is_ok());
}

#[test]
fn candle_errors_convert() {
    let a = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::zeros((4, 5), DType::F32, &Device::Cpu).unwrap();
    let e: Error = a.matmul(&b).unwrap_err().into();
    assert!(matches!(e, Error::Candle(_)));
}

fn tensor(v: f32, n: usize) -> Tensor {
    Tensor::full(v, n, &Device::Cpu).unwrap()
}

fn file_names(md: &ModelDir) -> Vec<String> {
    md.files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn malformed_reason<T: std::fmt::Debug>(r: vidgen_video_core::Result<T>) -> (PathBuf, String) {
    match r {
        Err(Error::Malformed { path, reason }) => (path, reason),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn variants_are_chosen_like_diffusers() {
    // Before: without the plain file every *.safetensors was loaded, fp16 and non_ema together,
    // the later file silently winning each shared key.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_st(
        &d.join("diffusion_pytorch_model.fp16.safetensors"),
        &[("w", tensor(16., 2))],
    );
    write_st(
        &d.join("diffusion_pytorch_model.non_ema.safetensors"),
        &[("w", tensor(32., 2))],
    );
    let (path, reason) = malformed_reason(ModelDir::open(d));
    assert_eq!(path, d);
    assert!(
        reason.contains("`diffusion_pytorch_model.safetensors`"),
        "{reason}"
    );
    assert!(reason.contains("variants `fp16`, `non_ema`"), "{reason}");

    let md = ModelDir::open_variant(d, Some("fp16")).unwrap();
    assert_eq!(
        file_names(&md),
        ["diffusion_pytorch_model.fp16.safetensors"]
    );
    let w = md.get("w", &Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(w, [16., 16.]);
    let md = ModelDir::open_variant(d, Some("non_ema")).unwrap();
    assert_eq!(
        md.get("w", &Device::Cpu).unwrap().to_vec1::<f32>().unwrap(),
        [32., 32.]
    );
    // an absent variant is an error, not a fallback
    let (_, reason) = malformed_reason(ModelDir::open_variant(d, Some("bf16")));
    assert!(reason.contains("variant `bf16`"), "{reason}");
    assert!(
        reason.contains("`diffusion_pytorch_model.bf16.safetensors`"),
        "{reason}"
    );

    // with the plain file present, open() takes it alone
    write_st(
        &d.join("diffusion_pytorch_model.safetensors"),
        &[("w", tensor(1., 2))],
    );
    let md = ModelDir::open(d).unwrap();
    assert_eq!(file_names(&md), ["diffusion_pytorch_model.safetensors"]);
    assert_eq!(
        md.get("w", &Device::Cpu).unwrap().to_vec1::<f32>().unwrap(),
        [1., 1.]
    );

    // variants that are not file-name parts
    for bad in ["", "../x", "a/b"] {
        assert!(matches!(
            ModelDir::open_variant(d, Some(bad)),
            Err(Error::InvalidArgument { .. })
        ));
    }
}

#[test]
fn transformers_variant_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_st(&d.join("model.fp16.safetensors"), &[("w", tensor(16., 1))]);
    write_st(&d.join("model.safetensors"), &[("w", tensor(1., 1))]);
    assert_eq!(
        file_names(&ModelDir::open(d).unwrap()),
        ["model.safetensors"]
    );
    assert_eq!(
        file_names(&ModelDir::open_variant(d, Some("fp16")).unwrap()),
        ["model.fp16.safetensors"]
    );
    // transformers prefers the single file over an index
    write_st(
        &d.join("model-00001-of-00001.safetensors"),
        &[("w", tensor(2., 1))],
    );
    std::fs::write(
        d.join("model.safetensors.index.json"),
        r#"{"weight_map": {"w": "model-00001-of-00001.safetensors"}}"#,
    )
    .unwrap();
    assert_eq!(
        file_names(&ModelDir::open(d).unwrap()),
        ["model.safetensors"]
    );
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    assert_eq!(
        file_names(&ModelDir::open(d).unwrap()),
        ["model-00001-of-00001.safetensors"]
    );
}

/// A two-shard diffusers checkpoint named for `variant`, indexed by `index_name`.
fn sharded(d: &Path, variant: &str, index_name: &str) {
    let s1 = format!("diffusion_pytorch_model-00001-of-00002.{variant}.safetensors");
    let s2 = format!("diffusion_pytorch_model-00002-of-00002.{variant}.safetensors");
    write_st(&d.join(&s1), &[("a", tensor(1., 2))]);
    write_st(&d.join(&s2), &[("b", tensor(2., 3))]);
    std::fs::write(
        d.join(index_name),
        format!(r#"{{"metadata": {{}}, "weight_map": {{"a": "{s1}", "b": "{s2}"}}}}"#),
    )
    .unwrap();
}

#[test]
fn sharded_variants_current_and_legacy_index_names() {
    for index in [
        "diffusion_pytorch_model.safetensors.index.fp16.json",
        "diffusion_pytorch_model.safetensors.fp16.index.json",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        sharded(d, "fp16", index);
        // a plain single file too: diffusers takes the index of the variant asked for
        write_st(
            &d.join("diffusion_pytorch_model.safetensors"),
            &[("a", tensor(0., 2))],
        );
        let md = ModelDir::open_variant(d, Some("fp16")).unwrap();
        assert_eq!(md.files().len(), 2, "{index}");
        assert_eq!(md.get("b", &Device::Cpu).unwrap().dims(), &[3]);
        assert_eq!(
            file_names(&ModelDir::open(d).unwrap()),
            ["diffusion_pytorch_model.safetensors"]
        );
    }
    // diffusers prefers the index over the single file
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sharded(d, "x", "diffusion_pytorch_model.safetensors.index.json");
    write_st(
        &d.join("diffusion_pytorch_model.safetensors"),
        &[("a", tensor(0., 2))],
    );
    assert_eq!(ModelDir::open(d).unwrap().files().len(), 2);
}

#[test]
fn duplicate_keys_across_files_are_an_error() {
    // Before: the later file silently won.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (f1, f2) = (d.join("a.safetensors"), d.join("b.safetensors"));
    write_st(&f1, &[("x", tensor(1., 1)), ("shared.key", tensor(1., 1))]);
    write_st(&f2, &[("shared.key", tensor(2., 1)), ("y", tensor(1., 1))]);
    let (path, reason) = malformed_reason(ModelDir::from_files(d, &[f1.clone(), f2.clone()]));
    assert_eq!(path, f2);
    assert!(reason.contains("`shared.key`"), "{reason}");
    assert!(reason.contains(&f1.display().to_string()), "{reason}");
    assert!(reason.contains(&f2.display().to_string()), "{reason}");

    // and through an index whose shards overlap
    let s1 = "diffusion_pytorch_model-00001-of-00002.safetensors";
    let s2 = "diffusion_pytorch_model-00002-of-00002.safetensors";
    std::fs::rename(&f1, d.join(s1)).unwrap();
    std::fs::rename(&f2, d.join(s2)).unwrap();
    std::fs::write(
        d.join("diffusion_pytorch_model.safetensors.index.json"),
        format!(r#"{{"weight_map": {{"x": "{s1}", "y": "{s2}", "shared.key": "{s1}"}}}}"#),
    )
    .unwrap();
    let (_, reason) = malformed_reason(ModelDir::open(d));
    assert!(reason.contains("`shared.key` is in both"), "{reason}");
}

#[test]
fn bad_indexes_are_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let idx = d.join("diffusion_pytorch_model.safetensors.index.json");
    write_st(&d.join("s1.safetensors"), &[("a", tensor(1., 1))]);
    write_st(&d.join("s2.safetensors"), &[("b", tensor(1., 1))]);
    for (json, want) in [
        (
            r#"{"weight_map": {"a": "../s1.safetensors"}}"#,
            "not a plain file name",
        ),
        (
            r#"{"weight_map": {"a": "/tmp/s1.safetensors"}}"#,
            "not a plain file name",
        ),
        (r#"{"weight_map": {"a": 3}}"#, "is not a file name"),
        (r#"{"weight_map": {}}"#, "names no shard"),
        (r#"{"metadata": {}}"#, "no `weight_map`"),
        (
            r#"{"weight_map": {"a": "s2.safetensors", "b": "s2.safetensors"}}"#,
            "puts `a` in `s2.safetensors`, which lacks it",
        ),
        (
            r#"{"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}}"#,
            "puts `b` in `s1.safetensors`",
        ),
        ("[1, 2", "EOF"),
    ] {
        std::fs::write(&idx, json).unwrap();
        let (path, reason) = malformed_reason(ModelDir::open(d));
        assert_eq!(path, idx, "{json}");
        assert!(reason.contains(want), "{json}: {reason}");
    }
    std::fs::write(&idx, r#"{"weight_map": {"a": "gone.safetensors"}}"#).unwrap();
    assert!(matches!(ModelDir::open(d), Err(Error::Io { .. })));
}

#[test]
fn diffusers_and_transformers_weights_together_are_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_st(&d.join("model.safetensors"), &[("a", tensor(1., 1))]);
    write_st(
        &d.join("diffusion_pytorch_model.safetensors"),
        &[("a", tensor(1., 1))],
    );
    let (_, reason) = malformed_reason(ModelDir::open(d));
    assert!(reason.contains("both a diffusers checkpoint"), "{reason}");
}

#[test]
fn other_safetensors_names_are_not_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_st(&d.join("weights.safetensors"), &[("a", tensor(1., 1))]);
    let (_, reason) = malformed_reason(ModelDir::open(d));
    assert!(
        reason.contains("present: `weights.safetensors`"),
        "{reason}"
    );
    // explicit files still open
    let md = ModelDir::from_files(d, &[d.join("weights.safetensors")]).unwrap();
    assert!(md.contains("a"));
}
