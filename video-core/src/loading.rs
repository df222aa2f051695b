//! Model directories as `save_pretrained` writes them, loaded strictly into a `VarBuilder`.
//!
//! A diffusers directory holds `config.json` + `diffusion_pytorch_model.safetensors`, a
//! transformers one `config.json` + `model.safetensors`; large checkpoints are sharded with a
//! `*.safetensors.index.json` whose `weight_map` names the shard of every key. [`ModelDir`]
//! reads all of these, memory-maps the weights, and hands out a [`VarBuilder`] that records every
//! key the model asks for. [`ModelDir::load`] then returns a [`LoadReport`] (missing, unused and
//! shape-mismatched keys, each with its file) and fails, naming the keys, when anything the model
//! needs is missing or has the wrong shape.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// One tensor of a checkpoint, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The checkpoint key (`down_blocks.0.resnets.0.conv1.weight`).
    pub name: String,
    /// The stored shape.
    pub shape: Vec<usize>,
    /// The stored dtype (`F32`, `F16`, `BF16`, ...).
    pub dtype: String,
    /// The file that holds it.
    pub file: PathBuf,
}

struct WeightFile {
    path: PathBuf,
    st: MmapedSafetensors,
}

struct Inner {
    root: PathBuf,
    files: Vec<WeightFile>,
    /// key → index into `files`
    index: HashMap<String, usize>,
}

/// A model directory (or a set of safetensors files) opened for loading.
#[derive(Clone)]
pub struct ModelDir {
    inner: Arc<Inner>,
}

impl fmt::Debug for ModelDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelDir")
            .field("root", &self.inner.root)
            .field(
                "files",
                &self.inner.files.iter().map(|w| &w.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.inner.index.len())
            .finish()
    }
}

const WEIGHT_NAMES: [&str; 2] = ["diffusion_pytorch_model.safetensors", "model.safetensors"];

impl ModelDir {
    /// Opens a directory written by diffusers' or transformers' `save_pretrained`.
    ///
    /// Weight files are found in this order: a `*.safetensors.index.json` (sharded), then
    /// `diffusion_pytorch_model.safetensors` or `model.safetensors`, then every `*.safetensors`
    /// in the directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut names: Vec<String> = Vec::new();
        for e in entries {
            let e = e.map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        let files: Vec<PathBuf> = if let Some(index) = names
            .iter()
            .find(|n| n.ends_with(".safetensors.index.json"))
        {
            let path = dir.join(index);
            let json = read_json(&path)?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Malformed {
                    path: path.clone(),
                    reason: "no `weight_map` object".into(),
                })?;
            let shards: BTreeSet<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else if let Some(n) = WEIGHT_NAMES.iter().find(|n| names.iter().any(|x| x == *n)) {
            vec![dir.join(n)]
        } else {
            names
                .iter()
                .filter(|n| n.ends_with(".safetensors"))
                .map(|n| dir.join(n))
                .collect()
        };
        if files.is_empty() {
            return Err(Error::Malformed {
                path: dir.to_path_buf(),
                reason: "no *.safetensors weights in this directory".into(),
            });
        }
        Self::from_files(dir, &files)
    }

    /// Opens explicit safetensors files; `root` is where `config.json` is looked for.
    pub fn from_files(root: impl AsRef<Path>, files: &[PathBuf]) -> Result<Self> {
        let mut wf = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, path) in files.iter().enumerate() {
            if !path.exists() {
                return Err(Error::Io {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
                });
            }
            // SAFETY: the file is mapped read-only; like every mmap-based loader (candle,
            // safetensors) we require that it is not modified while the model is loading.
            let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| Error::Malformed {
                path: path.clone(),
                reason: format!("not a valid safetensors file ({e})"),
            })?;
            for (name, _) in st.tensors() {
                index.insert(name, i);
            }
            wf.push(WeightFile {
                path: path.clone(),
                st,
            });
        }
        Ok(ModelDir {
            inner: Arc::new(Inner {
                root: root.as_ref().to_path_buf(),
                files: wf,
                index,
            }),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The weight files, in load order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.inner.files.iter().map(|f| f.path.clone()).collect()
    }

    /// Every stored tensor with its shape, dtype and file, sorted by name.
    pub fn tensors(&self) -> Vec<TensorInfo> {
        let mut out = Vec::with_capacity(self.inner.index.len());
        for f in &self.inner.files {
            for (name, view) in f.st.tensors() {
                out.push(TensorInfo {
                    name,
                    shape: view.shape().to_vec(),
                    dtype: format!("{:?}", view.dtype()),
                    file: f.path.clone(),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether the checkpoint has `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.inner.index.contains_key(key)
    }

    /// Loads one tensor by key (as stored, on `device`); a missing key names its nearest keys.
    pub fn get(&self, key: &str, device: &Device) -> Result<Tensor> {
        match self.inner.index.get(key) {
            Some(&i) => Ok(self.inner.files[i].st.load(key, device)?),
            None => Err(self.missing(key)),
        }
    }

    /// `config.json` of the directory, deserialised into `T`; a bad field is named with its path.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        read_config(self.inner.root.join("config.json"))
    }

    /// A [`VarBuilder`] over the weights that records every access, and the tracker to read
    /// the [`LoadReport`] from once the model is built. Tensors are converted to `dtype`.
    ///
    /// Missing or mismatched keys are recorded and replaced by zeros so that construction goes
    /// on and one load reports every problem; use [`ModelDir::load`], which turns them into an
    /// error, unless you inspect the report yourself.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> (VarBuilder<'static>, LoadTracker) {
        let state = Arc::new(Mutex::new(State::default()));
        let backend = TrackingBackend {
            dir: self.inner.clone(),
            state: state.clone(),
        };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        (
            vb,
            LoadTracker {
                dir: self.inner.clone(),
                state,
            },
        )
    }

    /// Builds a model strictly: runs `build` on a tracking [`VarBuilder`] and fails if any key it
    /// asked for is missing or has another shape. Unused keys are listed in the report, not an
    /// error (checkpoints often carry extra buffers).
    pub fn load<M, E>(
        &self,
        dtype: DType,
        device: &Device,
        build: impl FnOnce(VarBuilder<'static>) -> std::result::Result<M, E>,
    ) -> Result<(M, LoadReport)>
    where
        E: Into<Error>,
    {
        let (vb, tracker) = self.var_builder(dtype, device);
        let res = build(vb);
        let report = tracker.report();
        if !report.is_clean() {
            return Err(report.into_error());
        }
        match res {
            Ok(m) => Ok((m, report)),
            Err(e) => Err(e.into()),
        }
    }

    fn missing(&self, key: &str) -> Error {
        Error::MissingTensor {
            key: key.to_string(),
            file: self.describe_files(),
            nearest: nearest_keys(key, self.inner.index.keys().map(String::as_str), 3),
        }
    }

    fn describe_files(&self) -> String {
        describe_files(&self.inner)
    }
}

fn describe_files(inner: &Inner) -> String {
    match inner.files.as_slice() {
        [one] => one.path.display().to_string(),
        many => format!("{} ({} shards)", inner.root.display(), many.len()),
    }
}

/// Reads a JSON config file into `T`. A wrong-typed or invalid field gives
/// [`Error::BadConfig`] naming the field's path and the file.
pub fn read_config<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        Error::BadConfig {
            field: if field == "." { "<root>".into() } else { field },
            reason: e.inner().to_string(),
            file: Some(path.display().to_string()),
        }
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[derive(Default)]
struct State {
    used: BTreeSet<String>,
    missing: BTreeSet<String>,
    mismatched: BTreeMap<String, (Vec<usize>, Vec<usize>)>,
}

struct TrackingBackend {
    dir: Arc<Inner>,
    state: Arc<Mutex<State>>,
}

impl TrackingBackend {
    fn with_state(&self, f: impl FnOnce(&mut State)) {
        // A poisoned lock only means another thread panicked mid-record; the data is still usable.
        let mut g = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }
}

impl SimpleBackend for TrackingBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(&i) = self.dir.index.get(name) else {
            self.with_state(|st| {
                st.missing.insert(name.to_string());
            });
            return Tensor::zeros(s, dtype, dev);
        };
        let t = self.dir.files[i].st.load(name, dev)?;
        if t.shape() != &s {
            self.with_state(|st| {
                st.mismatched
                    .insert(name.to_string(), (s.dims().to_vec(), t.dims().to_vec()));
            });
            return Tensor::zeros(s, dtype, dev);
        }
        self.with_state(|st| {
            st.used.insert(name.to_string());
        });
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(&i) = self.dir.index.get(name) else {
            self.with_state(|st| {
                st.missing.insert(name.to_string());
            });
            return Err(candle_core::Error::Msg(format!(
                "missing `{name}` in {}",
                describe_files(&self.dir)
            )));
        };
        self.with_state(|st| {
            st.used.insert(name.to_string());
        });
        self.dir.files[i].st.load(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.dir.index.contains_key(name)
    }
}

/// Reads the [`LoadReport`] of a [`VarBuilder`] made by [`ModelDir::var_builder`].
pub struct LoadTracker {
    dir: Arc<Inner>,
    state: Arc<Mutex<State>>,
}

impl LoadTracker {
    /// The report so far: what was loaded, missing, mismatched, and what the model never asked for.
    pub fn report(&self) -> LoadReport {
        let st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let file_of = |k: &str| -> PathBuf {
            self.dir
                .index
                .get(k)
                .map(|&i| self.dir.files[i].path.clone())
                .unwrap_or_else(|| self.dir.root.clone())
        };
        let all_keys: Vec<&str> = self.dir.index.keys().map(String::as_str).collect();
        let missing = st
            .missing
            .iter()
            .map(|k| MissingKey {
                key: k.clone(),
                file: describe_files(&self.dir),
                nearest: nearest_keys(k, all_keys.iter().copied(), 3),
            })
            .collect();
        let mismatched = st
            .mismatched
            .iter()
            .map(|(k, (e, f))| MismatchedKey {
                key: k.clone(),
                expected: e.clone(),
                found: f.clone(),
                file: file_of(k),
            })
            .collect();
        let mut unused: Vec<(String, PathBuf)> = self
            .dir
            .index
            .keys()
            .filter(|k| !st.used.contains(*k) && !st.mismatched.contains_key(*k))
            .map(|k| (k.clone(), file_of(k)))
            .collect();
        unused.sort();
        LoadReport {
            root: self.dir.root.clone(),
            loaded: st.used.len(),
            missing,
            mismatched,
            unused,
        }
    }
}

/// A key the model asked for that the checkpoint does not have.
#[derive(Debug, Clone)]
pub struct MissingKey {
    /// The key.
    pub key: String,
    /// The file(s) searched.
    pub file: String,
    /// Closest existing keys, best first.
    pub nearest: Vec<String>,
}

/// A key whose stored shape differs from the model's.
#[derive(Debug, Clone)]
pub struct MismatchedKey {
    /// The key.
    pub key: String,
    /// The shape the model needs.
    pub expected: Vec<usize>,
    /// The stored shape.
    pub found: Vec<usize>,
    /// The file holding it.
    pub file: PathBuf,
}

/// What a strict load found: tensors loaded, missing, shape-mismatched, and unused.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The model directory.
    pub root: PathBuf,
    /// Number of tensors loaded.
    pub loaded: usize,
    /// Keys the model needs that the checkpoint lacks.
    pub missing: Vec<MissingKey>,
    /// Keys with another shape than the model's.
    pub mismatched: Vec<MismatchedKey>,
    /// Keys in the checkpoint the model never asked for, with their files.
    pub unused: Vec<(String, PathBuf)>,
}

impl LoadReport {
    /// True when nothing is missing or mismatched (unused keys are allowed).
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.mismatched.is_empty()
    }

    /// The error for an unclean report: the specific variant when there is one problem,
    /// [`Error::Load`] listing all of them otherwise.
    pub fn into_error(self) -> Error {
        match (self.missing.as_slice(), self.mismatched.as_slice()) {
            ([m], []) => Error::MissingTensor {
                key: m.key.clone(),
                file: m.file.clone(),
                nearest: m.nearest.clone(),
            },
            ([], [m]) => Error::ShapeMismatch {
                key: m.key.clone(),
                expected: m.expected.clone(),
                found: m.found.clone(),
                file: Some(m.file.display().to_string()),
            },
            _ => Error::Load(Box::new(self)),
        }
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "loading {}: {} loaded, {} missing, {} shape-mismatched, {} unused",
            self.root.display(),
            self.loaded,
            self.missing.len(),
            self.mismatched.len(),
            self.unused.len()
        )?;
        for m in self.missing.iter().take(20) {
            write!(f, "  missing `{}` in {}", m.key, m.file)?;
            if let Some(n) = m.nearest.first() {
                write!(f, " (did you mean `{n}`?)")?;
            }
            writeln!(f)?;
        }
        for m in self.mismatched.iter().take(20) {
            writeln!(
                f,
                "  shape of `{}` in {}: expected {:?}, found {:?}",
                m.key,
                m.file.display(),
                m.expected,
                m.found
            )?;
        }
        for (k, p) in self.unused.iter().take(20) {
            writeln!(f, "  unused `{k}` in {}", p.display())?;
        }
        Ok(())
    }
}

/// The `n` keys closest to `key`: most shared dotted components, then smallest edit distance.
pub fn nearest_keys<'a>(key: &str, keys: impl Iterator<Item = &'a str>, n: usize) -> Vec<String> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut scored: Vec<(usize, usize, &str)> = keys
        .map(|k| {
            let kp: Vec<&str> = k.split('.').collect();
            let shared = parts.iter().filter(|p| kp.contains(p)).count();
            (parts.len().saturating_sub(shared), levenshtein(key, k), k)
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(n)
        .map(|(_, _, k)| k.to_string())
        .collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a = a.as_bytes();
    let b = b.as_bytes();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
