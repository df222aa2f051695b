//! `vidgen vimi index` / `search` end to end without model weights (BM25 and pixel spaces only),
//! and typed, one-line errors for bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

fn vidgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vidgen"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap()
}

#[test]
fn vimi_index_and_search() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("index");
    let d = dir.to_str().unwrap();
    let out = vidgen(&["vimi", "index", d, "--clips", "60", "--no-minilm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("index.json").is_file());
    assert!(dir.join("embeddings.safetensors").is_file());
    assert!(dir.join("clips/item0.gif").is_file());
    let out = vidgen(&[
        "vimi",
        "search",
        "a blue triangle moving left",
        "-k",
        "3",
        "--index",
        d,
        "--dedup",
        "0.98",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["method"], "bm25");
    let hits = v["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    // scores come best first, every hit has a caption and a media file
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    for h in hits {
        assert!(h["caption"].as_str().unwrap().starts_with("a "));
        assert!(dir.join(h["media"].as_str().unwrap()).is_file());
    }
    // a missing index: exit 1, one line naming the file
    let out = vidgen(&["vimi", "search", "x", "--index", "/nonexistent/vimi-index"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("index.json"), "{err}");
    // --retrieve without --index, and an unknown eval condition: errors naming the flag
    let model = tmp.path().join("no-model");
    let out = vidgen(&[
        "vimi",
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--conditions",
        "nonsense",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = vidgen(&["vimi", "train", "--stages", "3", "--out", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stages"));
}
