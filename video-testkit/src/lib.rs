//! # video-testkit (dev-only)
//!
//! Helpers shared by vidgen's tests:
//!
//! - [`fixtures`]: every parity fixture folder of a kind, with its `meta.json`; a kind that is
//!   missing or empty under the fixtures root fails the test, naming the path, so a parity
//!   suite can never pass with nothing compared.
//! - [`assert_close`] / [`Parity`]: tolerance checks that print the first differing values, and
//!   one `parity <kind>/<name> max_abs=<e> max_rel=<r>` line per fixture, also appended to the
//!   file named by `VIDGEN_PARITY_LOG` (for `.ci/parity-check`, which counts them).
//! - [`weights_file`]: downloaded real weights for real-weight tests: skipped with a note when
//!   absent, a failure when `VIDGEN_REQUIRE_WEIGHTS=1`.
//! - [`uniform`] / [`f32_bits`]: seeded random input tensors, and bit patterns for exact
//!   comparisons.
//! - [`seeded_var_builder`] / [`SeededVarMap`]: random weights for any model, the same for the
//!   same seed, whatever the order the model asks for its tensors.
//! - [`assert_config_never_panics`] / [`assert_parser_never_panics`]: seeded proptest runs of
//!   arbitrary bytes, arbitrary JSON and mutations of a sample through a parser;
//!   [`proptest_config`]: a fixed-seed proptest configuration for every property test.
//!
//! Fixtures live in `<repo>/fixtures/<kind>/<name>/`. When the environment variable
//! `VIDGEN_FIXTURES` names a folder, fixtures are read from `$VIDGEN_FIXTURES/<kind>/<name>/`
//! instead (a relative path is taken from the workspace root, so `VIDGEN_FIXTURES=../shared/fixtures`
//! means the same for every test binary), and new fixtures of the same kinds are tested without
//! code changes.
//!
//! Test helpers panic with a descriptive message on failure, which is what a test wants; this
//! crate is never a dependency of library code.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod mpi;
mod never_panics;
mod weights;

pub use mpi::{is_mpi_child, mpirun, MPI_CHILD_VAR};

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

pub use never_panics::{assert_config_never_panics, assert_parser_never_panics, PARSER_CASES};
/// Seeded random weights live in video-nn (library code uses them too); re-exported for tests.
pub use vidgen_video_nn::init::{seeded_var_builder, SeededVarMap};
pub use weights::{require_weights, weights_dir, weights_file, weights_file_in};

/// The seed of [`proptest_config`] unless `PROPTEST_RNG_SEED` is set.
pub const PROPTEST_SEED: u64 = 0x5eed_7e57;

/// A proptest configuration for CI: `cases` cases, a fixed seed (so a failure reproduces: the
/// value of `PROPTEST_RNG_SEED` when set, else [`PROPTEST_SEED`]) and no failure-persistence
/// files. Use as `#![proptest_config(video_testkit::proptest_config(256))]`.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(PROPTEST_SEED);
    proptest::test_runner::Config {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// The folder holding fixture kinds: `$VIDGEN_FIXTURES` if set (relative paths taken from the
/// workspace root), else `<repo>/fixtures`.
pub fn fixtures_root() -> PathBuf {
    resolve_fixtures_root(std::env::var_os("VIDGEN_FIXTURES"))
}

/// [`fixtures_root`] for a given value of `VIDGEN_FIXTURES` (`None` or empty: unset).
pub fn resolve_fixtures_root(var: Option<OsString>) -> PathBuf {
    match var {
        Some(p) if !p.is_empty() => from_repo_root(Path::new(&p)),
        _ => repo_root().join("fixtures"),
    }
}

/// `p` if absolute, else `p` relative to the workspace root (test binaries run in their crate's
/// folder, so a path given on the command line at the workspace root must not depend on it).
pub fn from_repo_root(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        repo_root().join(p)
    }
}

/// The repository root (the workspace folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// One fixture folder `<kind>/<name>/`.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The kind (`attention`, `conv3d`, `llama`, ...).
    pub kind: String,
    /// The folder name inside the kind.
    pub name: String,
    /// The folder.
    pub dir: PathBuf,
    /// `meta.json`, or `Null` when absent.
    pub meta: serde_json::Value,
}

/// Every fixture folder of `kind` under [`fixtures_root`], sorted by name.
///
/// # Panics
/// When `<root>/<kind>` is missing, unreadable or holds no fixture folder (naming the path and
/// `VIDGEN_FIXTURES`), or a folder's `meta.json` is not valid JSON: a parity test must compare
/// something.
pub fn fixtures(kind: &str) -> Vec<Fixture> {
    fixtures_in(&fixtures_root(), kind)
}

/// Every fixture folder of `kind` under `root`, sorted by name; panics as [`fixtures`].
pub fn fixtures_in(root: &Path, kind: &str) -> Vec<Fixture> {
    let dir = root.join(kind);
    let env_note = match std::env::var_os("VIDGEN_FIXTURES") {
        Some(v) if !v.is_empty() => format!("VIDGEN_FIXTURES={}", v.to_string_lossy()),
        _ => "VIDGEN_FIXTURES unset: the vendored fixtures".to_string(),
    };
    let rd = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "no `{kind}` fixtures: cannot read {} ({e}; {env_note})",
            dir.display()
        )
    });
    let mut out: Vec<Fixture> = rd
        .map(|e| e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())))
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let dir = e.path();
            let meta_path = dir.join("meta.json");
            let meta = match std::fs::read_to_string(&meta_path) {
                Ok(s) => serde_json::from_str(&s)
                    .unwrap_or_else(|e| panic!("{}: not valid JSON: {e}", meta_path.display())),
                Err(_) => serde_json::Value::Null,
            };
            Fixture {
                kind: kind.to_string(),
                name: e.file_name().to_string_lossy().into_owned(),
                dir,
                meta,
            }
        })
        .collect();
    assert!(
        !out.is_empty(),
        "no `{kind}` fixtures: {} holds no fixture folder ({env_note})",
        dir.display()
    );
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

impl Fixture {
    /// `<kind>/<name>`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// Loads every tensor of a safetensors file in the folder (`inputs.safetensors`, ...).
    pub fn load(&self, file: &str) -> HashMap<String, Tensor> {
        let p = self.dir.join(file);
        candle_core::safetensors::load(&p, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: cannot read {}: {e}", self.id(), p.display()))
    }

    /// Whether the folder has `file`.
    pub fn has(&self, file: &str) -> bool {
        self.dir.join(file).exists()
    }

    /// `inputs.safetensors`.
    pub fn inputs(&self) -> HashMap<String, Tensor> {
        self.load("inputs.safetensors")
    }

    /// `outputs.safetensors`.
    pub fn outputs(&self) -> HashMap<String, Tensor> {
        self.load("outputs.safetensors")
    }

    /// `intermediates.safetensors` (empty when absent).
    pub fn intermediates(&self) -> HashMap<String, Tensor> {
        if self.has("intermediates.safetensors") {
            self.load("intermediates.safetensors")
        } else {
            HashMap::new()
        }
    }

    /// A value of `meta.json` by a `/`-separated pointer (`opts/causal`).
    pub fn meta_at(&self, pointer: &str) -> Option<&serde_json::Value> {
        let p = if pointer.starts_with('/') {
            pointer.to_string()
        } else {
            format!("/{pointer}")
        };
        self.meta.pointer(&p)
    }

    /// Starts the parity record of this fixture.
    pub fn parity(&self) -> Parity {
        Parity {
            id: self.id(),
            max_abs: 0.0,
            max_rel: 0.0,
            compared: 0,
        }
    }
}

/// Gets a tensor from a map, panicking with the fixture's name and the keys present.
pub fn take<'a>(map: &'a HashMap<String, Tensor>, key: &str, what: &str) -> &'a Tensor {
    map.get(key).unwrap_or_else(|| {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        panic!("{what}: no tensor `{key}` (have {keys:?})")
    })
}

/// Worst-case comparison figures of one tensor.
#[derive(Debug, Clone, Copy)]
pub struct Closeness {
    /// Largest absolute difference.
    pub max_abs: f64,
    /// `max_abs` divided by the largest magnitude of the reference.
    pub max_rel: f64,
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .unwrap_or_else(|e| panic!("cannot read tensor as f64: {e}"))
}

/// Compares `got` to `want` elementwise, numpy style: `|got − want| ≤ atol + rtol·|want|`
/// (NaN never passes, matching infinities do). On failure panics, printing the shapes, the
/// first differing indices with both values, and the worst figures.
pub fn assert_close(name: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) -> Closeness {
    assert_eq!(
        got.dims(),
        want.dims(),
        "{name}: shape mismatch: got {:?}, want {:?}",
        got.dims(),
        want.dims()
    );
    let g = to_f64(got);
    let w = to_f64(want);
    let dims = want.dims().to_vec();
    let ref_max = w
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs()));
    let mut max_abs = 0f64;
    let mut bad: Vec<(usize, f64, f64)> = Vec::new();
    let mut n_bad = 0usize;
    for (i, (&a, &b)) in g.iter().zip(w.iter()).enumerate() {
        let ok = if a.is_infinite() || b.is_infinite() {
            a == b
        } else {
            let d = (a - b).abs();
            if d.is_finite() {
                max_abs = max_abs.max(d);
            } else {
                max_abs = f64::INFINITY;
            }
            d <= atol + rtol * b.abs()
        };
        if !ok {
            n_bad += 1;
            if bad.len() < 8 {
                bad.push((i, a, b));
            }
        }
    }
    let max_rel = if ref_max > 0.0 {
        max_abs / ref_max
    } else {
        max_abs
    };
    if n_bad > 0 {
        let mut msg = format!(
            "{name}: {n_bad} of {} values differ beyond atol={atol:e} rtol={rtol:e} \
             (max_abs={max_abs:e}, max_rel={max_rel:e}, shape {dims:?})\n",
            g.len()
        );
        for (i, a, b) in bad {
            msg.push_str(&format!(
                "  at {:?}: got {a:.9e}, want {b:.9e}\n",
                unravel(i, &dims)
            ));
        }
        panic!("{msg}");
    }
    Closeness { max_abs, max_rel }
}

/// Row-major multi-index of flat index `i`.
pub fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for (k, &d) in dims.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = i % d;
            i /= d;
        }
    }
    idx
}

/// The running worst-case over the tensors of one fixture; prints the `parity` line on
/// [`Parity::finish`].
#[derive(Debug)]
pub struct Parity {
    id: String,
    max_abs: f64,
    max_rel: f64,
    compared: usize,
}

impl Parity {
    /// [`assert_close`] and record its figures.
    pub fn check(&mut self, what: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) {
        let c = assert_close(&format!("{} {what}", self.id), got, want, atol, rtol);
        self.max_abs = self.max_abs.max(c.max_abs);
        self.max_rel = self.max_rel.max(c.max_rel);
        self.compared += 1;
    }

    /// Prints `parity <kind>/<name> max_abs=<e> max_rel=<r>` and returns the worst figures;
    /// also appends the line to the file named by `VIDGEN_PARITY_LOG` when that is set (a
    /// relative path is taken from the workspace root).
    ///
    /// # Panics
    /// When nothing was compared, or the log cannot be written.
    pub fn finish(self) -> Closeness {
        assert!(self.compared > 0, "{}: nothing was compared", self.id);
        let line = format!(
            "parity {} max_abs={:.3e} max_rel={:.3e}",
            self.id, self.max_abs, self.max_rel
        );
        println!("{line}");
        if let Some(log) = std::env::var_os("VIDGEN_PARITY_LOG").filter(|v| !v.is_empty()) {
            append_line(&from_repo_root(Path::new(&log)), &line);
        }
        Closeness {
            max_abs: self.max_abs,
            max_rel: self.max_rel,
        }
    }
}

/// Appends `line` and a newline to `path` with one `write_all` on a file opened for appending,
/// so that lines from parallel test threads and processes never interleave.
pub fn append_line(path: &Path, line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("VIDGEN_PARITY_LOG: cannot open {}: {e}", path.display()));
    f.write_all(buf.as_bytes())
        .and_then(|()| f.flush())
        .unwrap_or_else(|e| panic!("VIDGEN_PARITY_LOG: cannot write {}: {e}", path.display()));
}

/// An f32 CPU tensor of `shape` with values uniform in `[-1, 1)`, drawn by ChaCha8 from `seed`
/// (the same seed gives the same tensor on every machine).
///
/// # Panics
/// Never for a shape whose element count fits in memory.
#[allow(clippy::expect_used)] // test helper: a shape that does not fit is the test's bug
pub fn uniform(shape: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| r.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("n elements for the shape")
}

/// The bit patterns of an f32 tensor's elements in row-major order, for bit-exact comparisons.
///
/// # Panics
/// When `t` is not f32.
#[allow(clippy::expect_used)] // test helper: the dtype is the test's choice
pub fn f32_bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("an f32 tensor")
        .into_iter()
        .map(f32::to_bits)
        .collect()
}
