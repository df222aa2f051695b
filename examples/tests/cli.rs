//! The `vidgen` binary end to end on the vendored pipeline fixtures: it writes the video and a
//! JSON report, and bad input is one readable line with exit status 1, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vidgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vidgen"))
        .args(args)
        .output()
        .expect("run vidgen")
}

#[test]
fn svd_writes_a_gif_and_a_json_report() {
    let fx = root().join("fixtures/svd_pipeline/base");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("svd.gif");
    let o = vidgen(&[
        "svd",
        "--model",
        fx.join("pipeline").to_str().unwrap(),
        "--image",
        fx.join("image.png").to_str().unwrap(),
        "--steps",
        "2",
        "--frames",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["command"], "svd");
    assert_eq!(report["frames"], 3);
    let gif = vidgen_video_io::read_gif(&out).unwrap();
    assert_eq!(gif.len(), 3);
}

#[test]
fn bad_input_is_one_line_and_exit_1() {
    let fx = root().join("fixtures/svd_pipeline/base");
    let cases: Vec<Vec<String>> = vec![
        // a folder that is not a pipeline
        vec![
            "svd",
            "--model",
            "/no/such/folder",
            "--image",
            fx.join("image.png").to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        // an image that does not exist
        vec![
            "svd",
            "--model",
            fx.join("pipeline").to_str().unwrap(),
            "--image",
            "/no/image.png",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        // zero steps
        vec![
            "svd",
            "--model",
            fx.join("pipeline").to_str().unwrap(),
            "--image",
            fx.join("image.png").to_str().unwrap(),
            "--steps",
            "0",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
    ];
    for args in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = vidgen(&refs);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("vidgen: "), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
