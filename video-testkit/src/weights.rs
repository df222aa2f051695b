//! Downloaded real weights for real-weight tests: skipped where they cannot be present, required
//! where CI has fetched them.

use std::path::PathBuf;

use crate::from_repo_root;

/// The weights cache: `$VIDGEN_WEIGHTS` if set and non-empty (a relative path is taken from the
/// workspace root), else `~/.cache/vidgen/weights` (as `vidgen_eval_metrics::weights::weights_dir`
/// and its `fetch_weights` example use).
pub fn weights_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("VIDGEN_WEIGHTS").filter(|p| !p.is_empty()) {
        return from_repo_root(&PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("vidgen").join("weights")
}

/// Whether `VIDGEN_REQUIRE_WEIGHTS=1` (set by CI once the weights were fetched): absent
/// weights are then a failure instead of a skip.
pub fn require_weights() -> bool {
    std::env::var_os("VIDGEN_REQUIRE_WEIGHTS").is_some_and(|v| v == "1")
}

/// The path of the weight file `name` in [`weights_dir`] if it exists. When it does not:
/// `None` with a `SKIPPED: …` note on stderr, so the test returns early; but with
/// `VIDGEN_REQUIRE_WEIGHTS=1` a panic naming the missing path.
///
/// ```no_run
/// let Some(path) = video_testkit::weights_file("pt_inception-2015-12-05.safetensors") else {
///     return; // SKIPPED was printed
/// };
/// ```
///
/// # Panics
/// With `VIDGEN_REQUIRE_WEIGHTS=1`, when the file is absent.
pub fn weights_file(name: &str) -> Option<PathBuf> {
    weights_file_in(&weights_dir(), name, require_weights())
}

/// [`weights_file`] with the folder and the requirement given.
///
/// # Panics
/// When `required` and the file is absent.
pub fn weights_file_in(dir: &std::path::Path, name: &str, required: bool) -> Option<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        return Some(p);
    }
    assert!(
        !required,
        "weights {} absent while VIDGEN_REQUIRE_WEIGHTS=1 (VIDGEN_WEIGHTS={}); \
         run `cargo run --release -p vidgen-eval-metrics --example fetch_weights`",
        p.display(),
        dir.display()
    );
    eprintln!(
        "SKIPPED: weights {} absent; run `cargo run --release -p vidgen-eval-metrics --example \
         fetch_weights` (or set VIDGEN_WEIGHTS); VIDGEN_REQUIRE_WEIGHTS=1 makes this a failure",
        p.display()
    );
    None
}
