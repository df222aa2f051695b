#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The parsers that read user files never panic: safetensors headers and index files through
//! `ModelDir` (arbitrary bytes, truncations, lying and huge lengths, bad offsets, shapes and
//! dtypes) and `config.json` through `parse_config` / `read_config` / `ModelDir::config`. Each
//! input gets a typed error or a value.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use vidgen_video_core::loading::{parse_config, read_config};
use vidgen_video_core::{Error, ModelDir};

/// A scratch folder in memory where there is one (`/dev/shm`): these tests rewrite a file per
/// case, and rewriting a file on a disk-backed `/tmp` costs milliseconds (3 ms measured here).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

/// Opens `dir` and, if that works, loads every tensor directly and through a strict load.
fn open_and_load(dir: &Path) -> vidgen_video_core::Result<()> {
    let md = ModelDir::open(dir)?;
    for t in md.tensors() {
        let _ = md.get(&t.name, &Device::Cpu);
    }
    let names: Vec<(String, Vec<usize>)> = md
        .tensors()
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect();
    let _ = md.load(DType::F32, &Device::Cpu, |vb| {
        for (n, s) in &names {
            vb.get(s.as_slice(), n)?;
        }
        Ok::<(), candle_core::Error>(())
    });
    Ok(())
}

fn valid_safetensors() -> Vec<u8> {
    let dev = Device::Cpu;
    let map: HashMap<String, Tensor> = [
        ("a.weight", Tensor::ones((3, 2), DType::F32, &dev).unwrap()),
        ("a.bias", Tensor::zeros(3, DType::F16, &dev).unwrap()),
        ("ids", Tensor::zeros(2, DType::I64, &dev).unwrap()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let dir = scratch();
    let p = dir.path().join("x.safetensors");
    candle_core::safetensors::save(&map, &p).unwrap();
    std::fs::read(p).unwrap()
}

/// Every failure of a weights file is `Malformed` or `Io`, never a panic or a candle error
/// (which would not name the file).
fn assert_typed(r: vidgen_video_core::Result<()>) {
    match r {
        Ok(()) | Err(Error::Malformed { .. }) | Err(Error::Io { .. }) => {}
        Err(e) => panic!("untyped error: {e:?}"),
    }
}

#[test]
fn safetensors_bytes_never_panic() {
    let dir = scratch();
    let p = dir.path().join("model.safetensors");
    video_testkit::assert_parser_never_panics("safetensors", &valid_safetensors(), |b| {
        std::fs::write(&p, b).unwrap();
        assert_typed(open_and_load(dir.path()));
    });
}

#[test]
fn index_json_bytes_never_panic() {
    let dir = scratch();
    std::fs::write(dir.path().join("s1.safetensors"), valid_safetensors()).unwrap();
    let p = dir.path().join("model.safetensors.index.json");
    let sample = br#"{"metadata": {"total_size": 40}, "weight_map": {"a.weight": "s1.safetensors", "a.bias": "s1.safetensors", "ids": "s1.safetensors"}}"#;
    std::fs::write(&p, sample).unwrap();
    open_and_load(dir.path()).unwrap();
    video_testkit::assert_parser_never_panics("safetensors index", sample, |b| {
        std::fs::write(&p, b).unwrap();
        assert_typed(open_and_load(dir.path()));
    });
}

/// A safetensors file from parts: the 8-byte header length (true, or a lie), the header JSON,
/// and the data bytes.
fn file_from(len: Option<u64>, header: &str, data_len: usize) -> Vec<u8> {
    let h = header.as_bytes();
    let mut b = len.unwrap_or(h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(h);
    b.extend(std::iter::repeat_n(0x3fu8, data_len));
    b
}

fn dtype_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64",
            "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64", "XYZ", "",
        ])
        .prop_map(str::to_string),
        "[A-Z0-9_]{0,6}",
    ]
}

fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..6,
        1 => prop::sample::select(vec![u64::MAX, u64::MAX / 2, 1 << 32, 1 << 62, 1 << 31]),
    ]
}

/// One header entry: `(name, dtype, shape, [start, end])`.
type Entry = (String, String, Vec<u64>, (u64, u64));

fn entry() -> impl Strategy<Value = Entry> {
    (
        prop_oneof!["[a-z.]{1,8}", Just("__metadata__".to_string())],
        dtype_name(),
        prop::collection::vec(dim(), 0..4),
        prop_oneof![
            3 => (0u64..64, 0u64..64),
            1 => (any::<u64>(), any::<u64>()),
        ],
    )
}

fn header_json(entries: &[Entry]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|(n, d, s, (a, b))| {
            format!(r#""{n}": {{"dtype": "{d}", "shape": {s:?}, "data_offsets": [{a}, {b}]}}"#)
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    /// Headers with arbitrary entries (overflowing shapes, offsets past the end, overlapping
    /// tensors, unknown dtypes, `__metadata__` of the wrong type) and true, short, long or
    /// huge header lengths.
    #[test]
    fn structured_safetensors_headers_never_panic(
        entries in prop::collection::vec(entry(), 0..4),
        lie in prop_oneof![
            3 => Just(None),
            1 => any::<u64>().prop_map(Some),
            1 => (0u64..200).prop_map(Some),
            1 => Just(Some(u64::MAX)),
            1 => Just(Some(100_000_001)),
        ],
        data_len in 0usize..80,
    ) {
        let dir = scratch();
        let bytes = file_from(lie, &header_json(&entries), data_len);
        std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
        assert_typed(open_and_load(dir.path()));
    }
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(64))]

    /// Consistent files of every dtype safetensors knows (some candle cannot load): they open,
    /// and loading each tensor directly or through a strict load gives a value or an error.
    #[test]
    fn consistent_files_of_any_dtype_open(
        entries in prop::collection::vec(
            (
                "[a-z]{1,6}",
                prop::sample::select(vec![
                    ("F32", 4u64), ("F16", 2), ("BF16", 2), ("F64", 8), ("I64", 8), ("I32", 4),
                    ("I16", 2), ("I8", 1), ("U8", 1), ("U16", 2), ("U32", 4), ("U64", 8),
                    ("BOOL", 1), ("F8_E4M3", 1), ("F8_E5M2", 1), ("F8_E8M0", 1),
                ]),
                prop::collection::vec(0u64..4, 0..3),
            ),
            1..5,
        ),
    ) {
        let mut start = 0u64;
        let mut names = std::collections::BTreeSet::new();
        let mut items = Vec::new();
        for (name, (dt, size), shape) in entries {
            if !names.insert(name.clone()) {
                continue;
            }
            let n = shape.iter().product::<u64>() * size;
            items.push((name, dt.to_string(), shape, (start, start + n)));
            start += n;
        }
        let dir = scratch();
        let bytes = file_from(None, &header_json(&items), start as usize);
        std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
        prop_assert!(ModelDir::open(dir.path()).is_ok());
        assert_typed(open_and_load(dir.path()));
    }
}

#[test]
fn huge_and_lying_header_lengths_are_malformed() {
    let dir = scratch();
    let p = dir.path().join("model.safetensors");
    let header = r#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#;
    for lie in [
        Some(u64::MAX),
        Some(1 << 40),
        Some(100_000_001),
        Some(3),
        Some(0),
        None,
    ] {
        for data in [0, 7, 8, 9] {
            std::fs::write(&p, file_from(lie, header, data)).unwrap();
            let r = ModelDir::open(dir.path());
            if lie.is_none() && data == 8 {
                assert!(r.is_ok());
            } else {
                assert!(
                    matches!(r, Err(Error::Malformed { .. })),
                    "{lie:?} {data}: {r:?}"
                );
            }
        }
    }
    // a shape whose byte size overflows
    let header =
        r#"{"w": {"dtype": "F32", "shape": [4611686018427387904, 8], "data_offsets": [0, 0]}}"#;
    std::fs::write(&p, file_from(None, header, 0)).unwrap();
    assert!(matches!(
        ModelDir::open(dir.path()),
        Err(Error::Malformed { .. })
    ));
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct UNetLike {
    block_out_channels: Vec<usize>,
    layers_per_block: usize,
    #[serde(default)]
    attention_head_dim: Option<serde_json::Value>,
    norm_eps: f64,
    act_fn: String,
    sample_size: Option<[usize; 2]>,
}

const UNET_SAMPLE: &str = r#"{
  "_class_name": "UNetSpatioTemporalConditionModel",
  "block_out_channels": [32, 32],
  "layers_per_block": 1,
  "attention_head_dim": [2, 2],
  "norm_eps": 1e-5,
  "act_fn": "silu",
  "sample_size": [16, 12]
}"#;

#[test]
fn config_bytes_never_panic() {
    video_testkit::assert_config_never_panics(UNET_SAMPLE, |b| parse_config::<UNetLike>(b, None));
    video_testkit::assert_config_never_panics(UNET_SAMPLE, |b| {
        parse_config::<serde_json::Value>(b, Some(Path::new("config.json")))
    });
}

#[test]
fn config_files_of_every_fixture_never_panic() {
    // the real config.json of every vendored model, mutated, through parse_config (what
    // read_config runs on the file's bytes)
    let mut seen = 0;
    for kind in ["svd_unet", "sd_vae", "llama"] {
        for fx in video_testkit::fixtures(kind) {
            let path = fx.dir.join("model/config.json");
            let text = std::fs::read_to_string(&path).unwrap();
            read_config::<serde_json::Value>(&path).unwrap();
            video_testkit::assert_parser_never_panics("parse_config", text.as_bytes(), |b| {
                match parse_config::<serde_json::Value>(b, Some(&path)) {
                    Ok(_) | Err(Error::BadConfig { .. }) => {}
                    Err(e) => panic!("untyped: {e:?}"),
                }
            });
            seen += 1;
        }
    }
    assert!(seen >= 3);
}

#[test]
fn config_errors_name_field_and_file() {
    let cases: [(&[u8], &str); 4] = [
        (b"\xff\xfe{}", "<root>"),
        (
            b"{\"block_out_channels\": [32, -1]}",
            "block_out_channels[1]",
        ),
        (b"{} trailing", "<root>"),
        (b"", "<root>"),
    ];
    for (bytes, field_want) in cases {
        match parse_config::<UNetLike>(bytes, Some(Path::new("unet/config.json"))) {
            Err(Error::BadConfig { field, file, .. }) => {
                assert_eq!(field, field_want);
                assert_eq!(file.as_deref(), Some("unet/config.json"));
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }
    // through ModelDir::config as well
    let dir = scratch();
    std::fs::write(dir.path().join("model.safetensors"), valid_safetensors()).unwrap();
    std::fs::write(dir.path().join("config.json"), b"\xc3\x28").unwrap();
    let md = ModelDir::open(dir.path()).unwrap();
    assert!(matches!(
        md.config::<UNetLike>(),
        Err(Error::BadConfig { .. })
    ));
}
