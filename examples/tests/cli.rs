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

/// `--exact-decode` decodes one frame at a time and writes the frames of the whole-clip decode;
/// diffusers' chunking (`--decode-chunk-size 1` alone) writes others.
#[test]
fn svd_exact_decode_writes_the_whole_pass_frames() {
    let fx = root().join("fixtures/svd_pipeline/base");
    let dir = tempfile::tempdir().unwrap();
    let (model, image) = (fx.join("pipeline"), fx.join("image.png"));
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "svd",
            "--model",
            model.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "--steps",
            "2",
            "--frames",
            "3",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = vidgen(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(&out).unwrap()
    };
    let whole = run("whole.gif", &[]);
    let exact = run("exact.gif", &["--decode-chunk-size", "1", "--exact-decode"]);
    let chunked = run("chunked.gif", &["--decode-chunk-size", "1"]);
    assert_eq!(exact, whole, "exact decode changed the frames");
    assert_ne!(
        chunked, whole,
        "diffusers' chunking is expected to change them"
    );
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

/// `vidgen train` on a tiny UNet3D config and the synthetic world: the run finishes, writes its
/// loss log, curve and final weights, and a resumed run with more steps continues from them.
#[test]
fn train_runs_a_tiny_recipe_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("unet.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "_class_name": "UNet3DConditionModel",
            "in_channels": 3, "out_channels": 3,
            "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
            "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
            "block_out_channels": [8, 8], "layers_per_block": 1, "norm_num_groups": 4,
            "cross_attention_dim": 8, "attention_head_dim": 4
        })
        .to_string(),
    )
    .unwrap();
    let out = dir.path().join("run");
    let args = |steps: &str| -> Vec<String> {
        [
            "train",
            "unet3d",
            "--unet-config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--steps",
            steps,
            "--frames",
            "2",
            "--width",
            "8",
            "--height",
            "8",
            "--synthetic-clips",
            "4",
            "--checkpoint-every",
            "2",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = args("2");
    let o = vidgen(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["command"], "train");
    assert_eq!(report["steps_done"], 2);
    assert!(report["last_loss"].as_f64().unwrap().is_finite());
    for f in ["loss.csv", "loss.png", "final"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let mut b = args("4");
    b.extend(["--resume".to_string(), out.to_str().unwrap().to_string()]);
    let o = vidgen(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["steps_done"], 4);
    assert_eq!(report["session_steps"], 2);
}

/// `vidgen train` refuses bad flags with one line and exit status 1.
#[test]
fn train_bad_flags_are_one_line() {
    for args in [
        vec![
            "train",
            "nosuchrecipe",
            "--unet-config",
            "x.json",
            "--out",
            "o",
        ],
        vec!["train", "unet3d", "--out", "o"],
        vec![
            "train",
            "unet3d",
            "--unet-config",
            "/no/such.json",
            "--out",
            "o",
        ],
        vec![
            "train",
            "unet3d",
            "--unet-config",
            "x.json",
            "--out",
            "o",
            "--steps",
            "0",
        ],
    ] {
        let o = vidgen(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
