//! Model directories as `save_pretrained` writes them, loaded strictly into a `VarBuilder`.
//!
//! A diffusers directory holds `config.json` + `diffusion_pytorch_model.safetensors`, a
//! transformers one `config.json` + `model.safetensors`; large checkpoints are sharded with a
//! `*.safetensors.index.json` whose `weight_map` names the shard of every key; a `variant`
//! (`fp16`, `non_ema`) adds its name to the files (`diffusion_pytorch_model.fp16.safetensors`).
//! [`ModelDir`] picks the files as diffusers / transformers do (see [`ModelDir::open_variant`]),
//! memory-maps the weights, and hands out a [`VarBuilder`] that records every
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

/// The weight-file stems of the two libraries: diffusers' `diffusion_pytorch_model`, then
/// transformers' `model`.
const DIFFUSERS_STEM: &str = "diffusion_pytorch_model";
const TRANSFORMERS_STEM: &str = "model";

/// The files that hold one checkpoint: a single safetensors file, or an index and its shards.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selection {
    Single(String),
    Index(String),
}

impl Selection {
    fn name(&self) -> &str {
        match self {
            Selection::Single(n) | Selection::Index(n) => n,
        }
    }
}

/// The candidate file names of `stem` for `variant`, in the order the library that writes them
/// tries them when loading a local directory:
///
/// - diffusers (`ModelMixin.from_pretrained`: `_fetch_index_file`, `_fetch_index_file_legacy`,
///   then `_get_model_file` with `_add_variant`): the index
///   `diffusion_pytorch_model.safetensors.index[.<variant>].json`, with a variant also the
///   legacy `diffusion_pytorch_model.safetensors.<variant>.index.json`, then the single file
///   `diffusion_pytorch_model[.<variant>].safetensors`;
/// - transformers (`_get_resolved_checkpoint_files`): the single file
///   `model[.<variant>].safetensors`, then the index `model.safetensors.index[.<variant>].json`.
fn candidates(stem: &str, variant: Option<&str>) -> Vec<Selection> {
    let single = match variant {
        Some(v) => format!("{stem}.{v}.safetensors"),
        None => format!("{stem}.safetensors"),
    };
    let index = match variant {
        Some(v) => format!("{stem}.safetensors.index.{v}.json"),
        None => format!("{stem}.safetensors.index.json"),
    };
    if stem == DIFFUSERS_STEM {
        let mut c = vec![Selection::Index(index)];
        if let Some(v) = variant {
            c.push(Selection::Index(format!(
                "{stem}.safetensors.{v}.index.json"
            )));
        }
        c.push(Selection::Single(single));
        c
    } else {
        vec![Selection::Single(single), Selection::Index(index)]
    }
}

/// The error for a directory with no weight file of `variant`: what was looked for, the
/// safetensors files present, and the variants they hold.
fn no_weights_error(dir: &Path, variant: Option<&str>, names: &BTreeSet<String>) -> Error {
    let looked: Vec<String> = [DIFFUSERS_STEM, TRANSFORMERS_STEM]
        .iter()
        .flat_map(|s| candidates(s, variant))
        .map(|c| format!("`{}`", c.name()))
        .collect();
    let present: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".safetensors") || n.ends_with(".json") && n.contains(".index"))
        .collect();
    let mut variants: BTreeSet<&str> = BTreeSet::new();
    for n in names {
        for stem in [DIFFUSERS_STEM, TRANSFORMERS_STEM] {
            let v = n
                .strip_prefix(stem)
                .and_then(|r| r.strip_prefix('.'))
                .and_then(|r| {
                    r.strip_suffix(".safetensors")
                        .or_else(|| {
                            r.strip_prefix("safetensors.index.")
                                .and_then(|r| r.strip_suffix(".json"))
                        })
                        .or_else(|| {
                            r.strip_prefix("safetensors.")
                                .and_then(|r| r.strip_suffix(".index.json"))
                        })
                });
            if let Some(v) = v.filter(|v| !v.is_empty() && !v.contains('.')) {
                variants.insert(v);
            }
        }
    }
    let mut reason = format!(
        "no weights{}: looked for {}",
        variant
            .map(|v| format!(" of variant `{v}`"))
            .unwrap_or_default(),
        looked.join(", ")
    );
    if present.is_empty() {
        reason.push_str("; the directory holds no *.safetensors file");
    } else {
        let p: Vec<String> = present.iter().map(|n| format!("`{n}`")).collect();
        reason.push_str(&format!("; present: {}", p.join(", ")));
    }
    if !variants.is_empty() {
        let v: Vec<String> = variants.iter().map(|v| format!("`{v}`")).collect();
        reason.push_str(&format!(
            " (variants {}: open with ModelDir::open_variant)",
            v.join(", ")
        ));
    }
    Error::Malformed {
        path: dir.to_path_buf(),
        reason,
    }
}

impl ModelDir {
    /// Opens a directory written by diffusers' or transformers' `save_pretrained`, without a
    /// variant: the same as [`ModelDir::open_variant`]`(dir, None)`.
    ///
    /// # Errors
    /// See [`ModelDir::open_variant`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_variant(dir, None)
    }

    /// Opens a directory written by diffusers' or transformers' `save_pretrained`, choosing the
    /// weight files as those libraries do for a local directory:
    ///
    /// - diffusers: `diffusion_pytorch_model.safetensors.index.json` (sharded) if present, else
    ///   `diffusion_pytorch_model.safetensors`;
    /// - transformers: `model.safetensors` if present, else `model.safetensors.index.json`;
    /// - with `variant = Some("fp16")`: `diffusion_pytorch_model.safetensors.index.fp16.json`
    ///   (or the legacy `diffusion_pytorch_model.safetensors.fp16.index.json`), else
    ///   `diffusion_pytorch_model.fp16.safetensors`; `model.fp16.safetensors`, else
    ///   `model.safetensors.index.fp16.json`.
    ///
    /// Nothing else is loaded: other `*.safetensors` in the folder (another variant, an
    /// `.non_ema` copy) are ignored, and a variant that is absent is an error, not a fallback
    /// to the plain weights (as in diffusers). Use [`ModelDir::from_files`] for other names.
    ///
    /// # Errors
    /// - [`Error::Io`] if the directory or a shard named by the index cannot be read;
    /// - [`Error::InvalidArgument`] for a variant that is empty or holds a path separator;
    /// - [`Error::Malformed`] when no weight file of the variant is present (naming the
    ///   variants that are), when both a diffusers and a transformers checkpoint are present,
    ///   for an index without a `weight_map` or naming a shard outside the directory, for an
    ///   invalid safetensors file, and for a key stored in two files.
    pub fn open_variant(dir: impl AsRef<Path>, variant: Option<&str>) -> Result<Self> {
        let dir = dir.as_ref();
        if let Some(v) = variant {
            if v.is_empty() || v.contains(['/', '\\']) || v == "." || v == ".." {
                return Err(Error::invalid(
                    "variant",
                    format!("`{v}` is not a file-name part (like `fp16`)"),
                ));
            }
        }
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut names: BTreeSet<String> = BTreeSet::new();
        for e in entries {
            let e = e.map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            names.insert(e.file_name().to_string_lossy().into_owned());
        }
        let found: Vec<Selection> = [DIFFUSERS_STEM, TRANSFORMERS_STEM]
            .iter()
            .filter_map(|stem| {
                candidates(stem, variant)
                    .into_iter()
                    .find(|c| names.contains(c.name()))
            })
            .collect();
        let selection = match found.as_slice() {
            [one] => one.clone(),
            [a, b] => {
                return Err(Error::Malformed {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "holds both a diffusers checkpoint (`{}`) and a transformers one (`{}`); \
                         open the files meant with ModelDir::from_files",
                        a.name(),
                        b.name()
                    ),
                })
            }
            _ => return Err(no_weights_error(dir, variant, &names)),
        };
        match &selection {
            Selection::Single(n) => Self::from_files(dir, &[dir.join(n)]),
            Selection::Index(n) => Self::from_index(dir, &dir.join(n)),
        }
    }

    /// Opens a sharded checkpoint from its `*.safetensors.index.json`: every shard its
    /// `weight_map` names (plain file names in `root`, as diffusers requires), each key checked to
    /// be in the shard the map names.
    fn from_index(root: &Path, index: &Path) -> Result<Self> {
        let json = read_json(index)?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Malformed {
                path: index.to_path_buf(),
                reason: "no `weight_map` object".into(),
            })?;
        let mut shards: BTreeSet<&str> = BTreeSet::new();
        for (key, v) in map {
            let Some(s) = v.as_str() else {
                return Err(Error::Malformed {
                    path: index.to_path_buf(),
                    reason: format!("`weight_map` entry of `{key}` is not a file name"),
                });
            };
            let plain = Path::new(s).file_name().is_some_and(|f| f == s) && s != "." && s != "..";
            if !plain || s.contains(['/', '\\']) {
                return Err(Error::Malformed {
                    path: index.to_path_buf(),
                    reason: format!(
                        "shard `{s}` of `{key}` is not a plain file name in the directory"
                    ),
                });
            }
            shards.insert(s);
        }
        if shards.is_empty() {
            return Err(Error::Malformed {
                path: index.to_path_buf(),
                reason: "`weight_map` names no shard".into(),
            });
        }
        let files: Vec<PathBuf> = shards.iter().map(|s| root.join(s)).collect();
        let md = Self::from_files(root, &files)?;
        for (key, v) in map {
            let shard = v.as_str().unwrap_or_default();
            let held = md.inner.index.get(key).map(|&i| &md.inner.files[i].path);
            if held != Some(&root.join(shard)) {
                return Err(Error::Malformed {
                    path: index.to_path_buf(),
                    reason: match held {
                        Some(p) => format!(
                            "`weight_map` puts `{key}` in `{shard}` but it is in {}",
                            p.display()
                        ),
                        None => format!("`weight_map` puts `{key}` in `{shard}`, which lacks it"),
                    },
                });
            }
        }
        Ok(md)
    }

    /// Opens explicit safetensors files; `root` is where `config.json` is looked for.
    ///
    /// # Errors
    /// [`Error::Io`] for a file that does not exist, [`Error::Malformed`] for an invalid
    /// safetensors file or a key that two of the files hold (naming both files and the key).
    pub fn from_files(root: impl AsRef<Path>, files: &[PathBuf]) -> Result<Self> {
        let mut wf: Vec<WeightFile> = Vec::with_capacity(files.len());
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
            let mut keys: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
            keys.sort();
            for name in keys {
                if let Some(&j) = index.get(&name) {
                    let first: &WeightFile = &wf[j];
                    return Err(Error::Malformed {
                        path: path.clone(),
                        reason: format!(
                            "key `{name}` is in both {} and {}",
                            first.path.display(),
                            path.display()
                        ),
                    });
                }
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
        tracked_var_builder(self.inner.clone(), dtype, device)
    }

    /// Builds a model strictly: runs `build` on a tracking [`VarBuilder`] and fails if any key it
    /// asked for is missing or has another shape. Unused keys are listed in the report, not an
    /// error (checkpoints often carry extra buffers).
    ///
    /// # Errors
    /// As [`load_tracked`].
    pub fn load<M, E>(
        &self,
        dtype: DType,
        device: &Device,
        build: impl FnOnce(VarBuilder<'static>) -> std::result::Result<M, E>,
    ) -> Result<(M, LoadReport)>
    where
        E: Into<Error>,
    {
        load_tracked(self.inner.clone(), dtype, device, build)
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
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; otherwise as [`parse_config`].
pub fn read_config<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_config(&bytes, Some(path))
}

/// Parses the bytes of a JSON config into `T` (what [`read_config`] does once the file is read);
/// `file` is only named in errors. Never panics, whatever the bytes.
///
/// # Errors
/// [`Error::BadConfig`] naming the field's path (`block_out_channels[2]`, or `<root>` for text
/// that is not JSON or not UTF-8) and the file.
pub fn parse_config<T: DeserializeOwned>(bytes: &[u8], file: Option<&Path>) -> Result<T> {
    let file = file.map(|p| p.display().to_string());
    let text = std::str::from_utf8(bytes).map_err(|e| Error::BadConfig {
        field: "<root>".into(),
        reason: format!("not UTF-8 text ({e})"),
        file: file.clone(),
    })?;
    let de = &mut serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let field = e.path().to_string();
        Error::BadConfig {
            field: if field == "." { "<root>".into() } else { field },
            reason: e.inner().to_string(),
            file: file.clone(),
        }
    })?;
    // Trailing text after the object (`{..} x`) is an error, as in `serde_json::from_str`.
    de.end().map_err(|e| Error::BadConfig {
        field: "<root>".into(),
        reason: e.to_string(),
        file,
    })?;
    Ok(value)
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

/// Where a tracked [`VarBuilder`] reads tensors from: a model directory's safetensors files
/// ([`ModelDir`]), a GGUF file, a converted pickle, … Implement it to get strict loading with a
/// [`LoadReport`] for any checkpoint format ([`tracked_var_builder`]).
pub trait TensorSource: Send + Sync + 'static {
    /// The tensor stored under the model key `name`, as stored, on `device`; `None` when the
    /// source does not hold it.
    ///
    /// # Errors
    /// A stored tensor that cannot be read or converted.
    fn load(&self, name: &str, device: &Device) -> candle_core::Result<Option<Tensor>>;

    /// Whether the source holds `name`.
    fn contains(&self, name: &str) -> bool;

    /// Every key the source holds (under the model's names where the format uses others) and
    /// the file each one is in: what the report lists as unused when the model never asks.
    fn keys(&self) -> Vec<(String, PathBuf)>;

    /// The file or folder to name in errors (`model.safetensors`, `dir (3 shards)`).
    fn describe(&self) -> String;

    /// The checkpoint's folder or file (the report's `root`).
    fn root(&self) -> PathBuf;
}

impl TensorSource for Inner {
    fn load(&self, name: &str, device: &Device) -> candle_core::Result<Option<Tensor>> {
        match self.index.get(name) {
            Some(&i) => Ok(Some(self.files[i].st.load(name, device)?)),
            None => Ok(None),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn keys(&self) -> Vec<(String, PathBuf)> {
        self.index
            .iter()
            .map(|(k, &i)| (k.clone(), self.files[i].path.clone()))
            .collect()
    }

    fn describe(&self) -> String {
        describe_files(self)
    }

    fn root(&self) -> PathBuf {
        self.root.clone()
    }
}

#[derive(Default)]
struct State {
    used: BTreeSet<String>,
    missing: BTreeSet<String>,
    mismatched: BTreeMap<String, (Vec<usize>, Vec<usize>)>,
}

struct TrackingBackend {
    source: Arc<dyn TensorSource>,
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
        let Some(t) = self.source.load(name, dev)? else {
            self.with_state(|st| {
                st.missing.insert(name.to_string());
            });
            return Tensor::zeros(s, dtype, dev);
        };
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
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(t) = self.source.load(name, dev)? else {
            self.with_state(|st| {
                st.missing.insert(name.to_string());
            });
            return Err(candle_core::Error::Msg(format!(
                "missing `{name}` in {}",
                self.source.describe()
            )));
        };
        self.with_state(|st| {
            st.used.insert(name.to_string());
        });
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.source.contains(name)
    }
}

/// A [`VarBuilder`] over `source` that records every access, and the tracker to read the
/// [`LoadReport`] from once the model is built. Tensors are converted to `dtype` on `device`.
///
/// Missing or mismatched keys are recorded and replaced by zeros so that construction goes on
/// and one load reports every problem; [`load_tracked`] turns them into an error.
pub fn tracked_var_builder(
    source: Arc<dyn TensorSource>,
    dtype: DType,
    device: &Device,
) -> (VarBuilder<'static>, LoadTracker) {
    let state = Arc::new(Mutex::new(State::default()));
    let backend = TrackingBackend {
        source: source.clone(),
        state: state.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
    (vb, LoadTracker { source, state })
}

/// Builds a model strictly from `source`: runs `build` on a [`tracked_var_builder`] and fails
/// if any key it asked for is missing or has another shape. Unused keys are listed in the
/// report, not an error (checkpoints often carry extra buffers).
///
/// # Errors
/// [`Error::Load`] listing every missing / mismatched key; whatever `build` returns.
pub fn load_tracked<M, E>(
    source: Arc<dyn TensorSource>,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder<'static>) -> std::result::Result<M, E>,
) -> Result<(M, LoadReport)>
where
    E: Into<Error>,
{
    let (vb, tracker) = tracked_var_builder(source, dtype, device);
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

/// Reads the [`LoadReport`] of a [`VarBuilder`] made by [`tracked_var_builder`] (or
/// [`ModelDir::var_builder`]).
pub struct LoadTracker {
    source: Arc<dyn TensorSource>,
    state: Arc<Mutex<State>>,
}

impl LoadTracker {
    /// The report so far: what was loaded, missing, mismatched, and what the model never asked for.
    pub fn report(&self) -> LoadReport {
        let st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let keys: BTreeMap<String, PathBuf> = self.source.keys().into_iter().collect();
        let root = self.source.root();
        let file_of = |k: &str| -> PathBuf { keys.get(k).cloned().unwrap_or_else(|| root.clone()) };
        let described = self.source.describe();
        let missing = st
            .missing
            .iter()
            .map(|k| MissingKey {
                key: k.clone(),
                file: described.clone(),
                nearest: nearest_keys(k, keys.keys().map(String::as_str), 3),
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
        let mut unused: Vec<(String, PathBuf)> = keys
            .iter()
            .filter(|(k, _)| !st.used.contains(*k) && !st.mismatched.contains_key(*k))
            .map(|(k, f)| (k.clone(), f.clone()))
            .collect();
        unused.sort();
        LoadReport {
            root,
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
