//! Parity against transformers 5.23 / diffusers 0.42.1 on every fixture folder of the kinds
//! `clip_text`, `clip_vision`, `clip_tokenizer` and `svd_resize` (one `parity` line each).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use video_testkit::{fixtures, take};
use vidgen_clip_encoders::{
    resize_with_antialiasing, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer,
    CLIPVisionModel, CLIPVisionModelWithProjection,
};

const TOL: f64 = 2e-5;

fn model_dir(f: &video_testkit::Fixture) -> std::path::PathBuf {
    let m = f.dir.join("model");
    if m.is_dir() {
        m
    } else {
        f.dir.clone()
    }
}

fn class_of(f: &video_testkit::Fixture) -> String {
    f.meta_at("model_dirs/model/class")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn clip_text_matches_transformers() {
    let dev = Device::Cpu;
    for f in fixtures("clip_text") {
        let inputs = f.inputs();
        let outputs = f.outputs();
        let ids = take(&inputs, "input_ids", &f.id());
        let dir = model_dir(&f);
        let out = if class_of(&f) == "CLIPTextModelWithProjection" {
            let (m, _) =
                CLIPTextModelWithProjection::from_pretrained(&dir, DType::F32, &dev).unwrap();
            m.forward(ids).unwrap()
        } else {
            let (m, report) = CLIPTextModel::from_pretrained(&dir, DType::F32, &dev).unwrap();
            assert!(report.unused.is_empty(), "{report}");
            m.forward(ids).unwrap()
        };
        let mut p = f.parity();
        let mut compared = 0;
        for (name, want) in &outputs {
            let got: &Tensor = match name.as_str() {
                "last_hidden_state" => &out.last_hidden_state,
                "pooler_output" => &out.pooler_output,
                "text_embeds" => out.text_embeds.as_ref().expect("text_embeds"),
                other => {
                    let i: usize = other
                        .strip_prefix("hidden_states.")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("{}: unexpected output {other}", f.id()));
                    &out.hidden_states[i]
                }
            };
            p.check(name, got, want, TOL, 0.0);
            compared += 1;
        }
        assert_eq!(compared, outputs.len());
        assert_eq!(out.hidden_states.len(), outputs.len() - 2);
        p.finish();
    }
}

#[test]
fn clip_vision_matches_transformers() {
    let dev = Device::Cpu;
    for f in fixtures("clip_vision") {
        let inputs = f.inputs();
        let outputs = f.outputs();
        let px = take(&inputs, "pixel_values", &f.id());
        let dir = model_dir(&f);
        let out = if class_of(&f) == "CLIPVisionModel" {
            let (m, _) = CLIPVisionModel::from_pretrained(&dir, DType::F32, &dev).unwrap();
            m.forward(px).unwrap()
        } else {
            let (m, report) =
                CLIPVisionModelWithProjection::from_pretrained(&dir, DType::F32, &dev).unwrap();
            assert!(report.unused.is_empty(), "{report}");
            m.forward(px).unwrap()
        };
        let mut p = f.parity();
        for (name, want) in &outputs {
            let got: &Tensor = match name.as_str() {
                "last_hidden_state" => &out.last_hidden_state,
                "pooler_output" => &out.pooler_output,
                "image_embeds" => out.image_embeds.as_ref().expect("image_embeds"),
                other => {
                    let i: usize = other
                        .strip_prefix("hidden_states.")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("{}: unexpected output {other}", f.id()));
                    &out.hidden_states[i]
                }
            };
            p.check(name, got, want, TOL, 0.0);
        }
        p.finish();
    }
}

/// Every case of `cases.json`, through `tokenizer.json` and through `vocab.json` +
/// `merges.txt`; the line's `max_abs` is the number of mismatching cases.
#[test]
fn clip_tokenizer_matches_transformers() {
    for f in fixtures("clip_tokenizer") {
        let cases: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f.dir.join("cases.json")).unwrap()).unwrap();
        let cases = cases.as_array().expect("cases.json is a list");
        assert!(!cases.is_empty());
        let dir = f.dir.join("tokenizer");
        let from_json = CLIPTokenizer::from_dir(&dir).unwrap();
        // The same folder without tokenizer.json: the vocab.json + merges.txt path.
        let tmp = tempfile::tempdir().unwrap();
        for name in ["vocab.json", "merges.txt", "tokenizer_config.json"] {
            std::fs::copy(dir.join(name), tmp.path().join(name)).unwrap();
        }
        let from_files = CLIPTokenizer::from_dir(tmp.path()).unwrap();
        let ids = |v: &serde_json::Value| -> Vec<u32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        };
        let mut mismatches = 0usize;
        for (i, case) in cases.iter().enumerate() {
            let text = case["text"].as_str().unwrap();
            let want_ids = ids(&case["input_ids"]);
            let want_mask = ids(&case["attention_mask"]);
            let want_unpadded = ids(&case["unpadded_ids"]);
            for (which, tok) in [
                ("tokenizer.json", &from_json),
                ("vocab+merges", &from_files),
            ] {
                let (got_ids, got_mask) = tok.encode_padded(text).unwrap();
                let got_unpadded = tok.encode(text).unwrap();
                if got_ids != want_ids || got_mask != want_mask || got_unpadded != want_unpadded {
                    mismatches += 1;
                    eprintln!(
                        "{} case {i} ({which}) {text:?}:\n  got  {got_ids:?} mask {got_mask:?} unpadded {got_unpadded:?}\n  want {want_ids:?} mask {want_mask:?} unpadded {want_unpadded:?}",
                        f.id()
                    );
                }
            }
        }
        println!("parity {} max_abs={mismatches} max_rel=0", f.id());
        if let Some(log) = std::env::var_os("VIDGEN_PARITY_LOG").filter(|v| !v.is_empty()) {
            video_testkit::append_line(
                &video_testkit::from_repo_root(std::path::Path::new(&log)),
                &format!("parity {} max_abs={mismatches} max_rel=0", f.id()),
            );
        }
        assert_eq!(mismatches, 0, "{}: {mismatches} mismatching cases", f.id());
    }
}

/// `_resize_with_antialiasing(x_i, (224, 224))` on every input `x_i` of the fixture.
#[test]
fn svd_resize_matches_diffusers() {
    for f in fixtures("svd_resize") {
        let inputs = f.inputs();
        let outputs = f.outputs();
        let mut p = f.parity();
        let mut names: Vec<&String> = inputs.keys().collect();
        names.sort();
        for name in names {
            let x = &inputs[name];
            let want = take(&outputs, &name.replacen('x', "y", 1), &f.id());
            let (oh, ow) = (want.dims()[2], want.dims()[3]);
            let got = resize_with_antialiasing(x, (oh, ow)).unwrap();
            p.check(name, &got, want, 1e-5, 0.0);
        }
        p.finish();
    }
}
