#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Fixture discovery fails loudly: a missing or empty kind, or a bad `meta.json`, is a panic
//! naming the path; a relative `VIDGEN_FIXTURES` is taken from the workspace root.

use std::ffi::OsString;
use std::path::PathBuf;

use video_testkit::{fixtures, fixtures_in, repo_root, resolve_fixtures_root};

#[test]
#[should_panic(expected = "no `no_such_kind` fixtures: cannot read")]
fn missing_kind_fails() {
    // Before: an empty list, so every parity loop over it passed with nothing compared.
    let _ = fixtures("no_such_kind");
}

#[test]
fn missing_kind_message_names_the_path() {
    let root = tempfile::tempdir().unwrap();
    let err = std::panic::catch_unwind(|| fixtures_in(root.path(), "attention")).unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    let want = root.path().join("attention");
    assert!(msg.contains(&want.display().to_string()), "{msg}");
}

#[test]
#[should_panic(expected = "holds no fixture folder")]
fn empty_kind_fails() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("conv3d")).unwrap();
    // a stray file is not a fixture folder
    std::fs::write(root.path().join("conv3d/README"), "x").unwrap();
    let _ = fixtures_in(root.path(), "conv3d");
}

#[test]
#[should_panic(expected = "not valid JSON")]
fn malformed_meta_fails() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("llama/base")).unwrap();
    std::fs::write(root.path().join("llama/base/meta.json"), "{\"a\": ").unwrap();
    let _ = fixtures_in(root.path(), "llama");
}

#[test]
fn folders_are_sorted_with_meta() {
    let root = tempfile::tempdir().unwrap();
    for n in ["b", "a", "c"] {
        std::fs::create_dir_all(root.path().join("k").join(n)).unwrap();
    }
    std::fs::write(
        root.path().join("k/a/meta.json"),
        r#"{"opts": {"causal": true}}"#,
    )
    .unwrap();
    let f = fixtures_in(root.path(), "k");
    let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(
        f[0].meta_at("opts/causal"),
        Some(&serde_json::Value::Bool(true))
    );
    assert!(f[1].meta.is_null());
    assert_eq!(f[2].id(), "k/c");
}

#[test]
fn relative_root_is_taken_from_the_workspace_root() {
    // Before: relative to each test binary's crate folder.
    let rel = resolve_fixtures_root(Some(OsString::from("../shared/fixtures")));
    assert_eq!(rel, repo_root().join("../shared/fixtures"));
    let abs = resolve_fixtures_root(Some(OsString::from("/nonexistent")));
    assert_eq!(abs, PathBuf::from("/nonexistent"));
    assert_eq!(resolve_fixtures_root(None), repo_root().join("fixtures"));
    assert_eq!(
        resolve_fixtures_root(Some(OsString::new())),
        repo_root().join("fixtures")
    );
    if rel.is_dir() {
        assert!(!fixtures_in(&rel, "attention").is_empty());
    }
}

#[test]
fn vendored_kinds_are_present() {
    let root = resolve_fixtures_root(None);
    for kind in [
        "attention",
        "conv3d",
        "schedulers",
        "svd_unet",
        "llama",
        "metrics",
    ] {
        assert!(!fixtures_in(&root, kind).is_empty(), "{kind}");
    }
}
