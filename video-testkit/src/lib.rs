//! # video-testkit (dev-only)
//!
//! Helpers shared by vidgen's tests: discover parity fixtures of a kind, read their
//! `meta.json`, load their tensors, and compare with tolerances, printing the first differing
//! values and one `parity <kind>/<name> max_abs=<e> max_rel=<r>` line per fixture.
//!
//! Fixtures live in `<repo>/fixtures/<kind>/<name>/`. When the environment variable
//! `VIDGEN_FIXTURES` names a folder, fixtures are read from `$VIDGEN_FIXTURES/<kind>/<name>/`
//! instead, so new fixtures of the same kinds are tested without code changes.
//!
//! Test helpers panic with a descriptive message on failure, which is what a test wants; this
//! crate is never a dependency of library code.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

/// The folder holding fixture kinds: `$VIDGEN_FIXTURES` if set, else `<repo>/fixtures`.
pub fn fixtures_root() -> PathBuf {
    match std::env::var_os("VIDGEN_FIXTURES") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join("fixtures"),
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

/// Every fixture folder of `kind`, sorted by name. Empty (with a note on stderr) when the kind
/// has none under the current root, so a suite run on a partial `VIDGEN_FIXTURES` tree skips.
pub fn fixtures(kind: &str) -> Vec<Fixture> {
    let root = fixtures_root().join(kind);
    let Ok(rd) = std::fs::read_dir(&root) else {
        eprintln!("no `{kind}` fixtures under {}: skipped", root.display());
        return Vec::new();
    };
    let mut out: Vec<Fixture> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let dir = e.path();
            let meta = std::fs::read_to_string(dir.join("meta.json"))
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(serde_json::Value::Null);
            Fixture {
                kind: kind.to_string(),
                name: e.file_name().to_string_lossy().into_owned(),
                dir,
                meta,
            }
        })
        .collect();
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

    /// Prints `parity <kind>/<name> max_abs=<e> max_rel=<r>` and returns the worst figures.
    pub fn finish(self) -> Closeness {
        println!(
            "parity {} max_abs={:.3e} max_rel={:.3e}",
            self.id, self.max_abs, self.max_rel
        );
        assert!(self.compared > 0, "{}: nothing was compared", self.id);
        Closeness {
            max_abs: self.max_abs,
            max_rel: self.max_rel,
        }
    }
}
