#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Real-weight files: a skip when absent, a failure when `VIDGEN_REQUIRE_WEIGHTS=1`.

use video_testkit::weights_file_in;

#[test]
fn present_weights_are_found() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.safetensors"), b"x").unwrap();
    assert_eq!(
        weights_file_in(dir.path(), "w.safetensors", true),
        Some(dir.path().join("w.safetensors"))
    );
}

#[test]
fn absent_weights_skip_when_not_required() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(weights_file_in(dir.path(), "w.safetensors", false), None);
}

#[test]
fn absent_weights_fail_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let err = std::panic::catch_unwind(|| weights_file_in(dir.path(), "w.safetensors", true))
        .unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    let want = dir.path().join("w.safetensors").display().to_string();
    assert!(msg.contains(&want), "{msg}");
    assert!(msg.contains("VIDGEN_REQUIRE_WEIGHTS=1"), "{msg}");
}
