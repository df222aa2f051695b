//! What is trained: name patterns selecting the trainable variables, and [`ParamStore`], the
//! [`VarBuilder`] backend every model of a run is built from. It serves each tensor a model asks
//! for from a checkpoint (strictly: a missing or mis-shaped key is an error naming it, unless a
//! pattern allows it to be created) or from a seeded initialiser, and keeps it either as a
//! trainable [`Var`] (f32 master weight, given to the optimiser) or as a frozen plain tensor
//! (detached: autograd records nothing for it, no gradient is ever computed or kept for it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, ModelDir, Result};

/// A variable-name pattern.
///
/// - `*` matches any run of characters, dots included (`*.motion_modules.*`,
///   `*temporal*`, `adapters.*`).
/// - A pattern without `*` matches the name itself and every name below it at a dot
///   boundary: `down_blocks.1` matches `down_blocks.1.resnets.0.conv1.weight` but not
///   `down_blocks.10.…`.
/// - In a [`Selection`], a leading `!` makes it an exclusion.
///
/// ```
/// use vidgen_trainer::Pattern;
/// assert!(Pattern::new("adapters").matches("adapters.mid_block.attentions.0.spatial.up.weight"));
/// assert!(!Pattern::new("down_blocks.1").matches("down_blocks.10.resnets.0.conv1.weight"));
/// assert!(Pattern::new("*motion_modules*").matches("up_blocks.2.motion_modules.1.proj_out.bias"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pattern(String);

impl Pattern {
    /// A pattern (see the type's docs for the syntax).
    pub fn new(p: impl Into<String>) -> Self {
        Self(p.into())
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let p = self.0.as_str();
        if !p.contains('*') {
            return name == p
                || (name.len() > p.len()
                    && name.starts_with(p)
                    && name.as_bytes().get(p.len()) == Some(&b'.'));
        }
        glob(p.as_bytes(), name.as_bytes())
    }
}

/// `*`-only glob, iterative with backtracking to the last star.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut i, mut j) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == s[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == b'*' {
        i += 1;
    }
    i == p.len()
}

/// A set of variable names: those matching any included pattern and no excluded one.
///
/// ```
/// use vidgen_trainer::Selection;
/// let s = Selection::parse(&["*motion_modules*", "!*.pos_embed"]);
/// assert!(s.selects("down_blocks.0.motion_modules.0.proj_in.weight"));
/// assert!(!s.selects("down_blocks.0.motion_modules.0.pos_embed"));
/// assert!(!s.selects("conv_in.weight"));
/// assert!(Selection::all().selects("anything"));
/// assert!(!Selection::none().selects("anything"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Selection {
    /// Names matching any of these are selected…
    pub include: Vec<Pattern>,
    /// …unless they match one of these.
    pub exclude: Vec<Pattern>,
}

impl Selection {
    /// Every name.
    pub fn all() -> Self {
        Self {
            include: vec![Pattern::new("*")],
            exclude: Vec::new(),
        }
    }

    /// No name.
    pub fn none() -> Self {
        Self::default()
    }

    /// From pattern strings; a leading `!` excludes. `["*"]` is [`Selection::all`].
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Self {
        let mut s = Self::none();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            match p.strip_prefix('!') {
                Some(x) => s.exclude.push(Pattern::new(x)),
                None => s.include.push(Pattern::new(p)),
            }
        }
        s
    }

    /// Whether `name` is in the set.
    pub fn selects(&self, name: &str) -> bool {
        self.include.iter().any(|p| p.matches(name))
            && !self.exclude.iter().any(|p| p.matches(name))
    }

    /// True when no name can be selected (no include pattern).
    pub fn is_empty(&self) -> bool {
        self.include.is_empty()
    }
}

/// Where a variable's initial value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Read from this checkpoint file (or directory).
    Checkpoint(String),
    /// Read from a checkpoint and zero-padded along dim 1 (a widened `conv_in`).
    Widened(String),
    /// Drawn from the layer's initialiser (seeded).
    Initialised,
}

/// Trainable versus total parameters of a run, printed at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParamReport {
    /// Elements in trainable variables.
    pub trainable: usize,
    /// Elements in frozen tensors.
    pub frozen: usize,
    /// Trainable variables (tensors).
    pub trainable_tensors: usize,
    /// Frozen tensors.
    pub frozen_tensors: usize,
    /// Elements created by an initialiser (not read from a checkpoint).
    pub initialised: usize,
}

impl ParamReport {
    /// `trainable + frozen`.
    pub fn total(&self) -> usize {
        self.trainable + self.frozen
    }

    /// `trainable / total` (0 for an empty store).
    pub fn trainable_fraction(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            self.trainable as f64 / self.total() as f64
        }
    }
}

impl std::fmt::Display for ParamReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "parameters: {} trainable / {} total ({:.3}%); {} trainable tensors, {} frozen, {} elements newly initialised",
            self.trainable,
            self.total(),
            100.0 * self.trainable_fraction(),
            self.trainable_tensors,
            self.frozen_tensors,
            self.initialised
        )
    }
}

struct Source {
    prefix: String,
    dir: ModelDir,
    keys: BTreeMap<String, Vec<usize>>,
}

struct Inner {
    sources: Vec<Source>,
    seed: u64,
    create: Selection,
    trainable_sel: Selection,
    widen: Selection,
    trainable: BTreeMap<String, Var>,
    frozen: BTreeMap<String, Tensor>,
    origin: BTreeMap<String, Origin>,
    used: BTreeSet<(usize, String)>,
    device: Device,
}

/// The variables of a training run, and the [`VarBuilder`] backend its models are built from.
///
/// Each tensor a model asks for (by its full name, e.g. `down_blocks.0.resnets.0.conv1.weight`)
/// is made once and then reused:
/// 1. from the first checkpoint whose prefix the name starts with (the prefix is stripped to
///    find the key), checked for shape (a tensor narrower along dim 1 than asked for is
///    zero-padded when the name matches [`ParamStore::widen`]: a widened `conv_in`);
/// 2. else, when the name matches [`ParamStore::create`], drawn from the layer's
///    initialiser hint with a ChaCha8 stream keyed by `(seed, name)` (the values of
///    `video_testkit::SeededVarMap` with the same seed);
/// 3. else it is an error naming the key, the checkpoint and the nearest keys.
///
/// Tensors whose names the trainable [`Selection`] selects become [`Var`]s (float32 master
/// weights); the others are stored detached (frozen). A builder may ask for another dtype
/// (bf16 compute): trainable tensors are then converted through a tracked op, so gradients
/// still reach the f32 masters, but the converted copies go stale after an optimiser step, so
/// such a model is rebuilt every step (the trainer does).
///
/// ```
/// use candle_core::{DType, Device};
/// use vidgen_trainer::{ParamStore, Selection};
/// # fn main() -> vidgen_video_core::Result<()> {
/// let store = ParamStore::new(0, &Device::Cpu)
///     .create(Selection::all())
///     .trainable(Selection::parse(&["head"]));
/// let vb = store.var_builder(DType::F32);
/// let _body = vidgen_video_nn::Linear::new(8, 8, true, vb.pp("body"))?;
/// let _head = vidgen_video_nn::Linear::new(8, 2, true, vb.pp("head"))?;
/// let r = store.report();
/// assert_eq!((r.trainable, r.frozen), (8 * 2 + 2, 8 * 8 + 8));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParamStore({})", self.report())
    }
}

impl ParamStore {
    /// An empty store on `device`: no checkpoint, nothing may be created, nothing trains.
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                sources: Vec::new(),
                seed,
                create: Selection::none(),
                trainable_sel: Selection::none(),
                widen: Selection::none(),
                trainable: BTreeMap::new(),
                frozen: BTreeMap::new(),
                origin: BTreeMap::new(),
                used: BTreeSet::new(),
                device: device.clone(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a builder panicked mid-insert; the maps are still whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves names starting with `prefix` from the checkpoint directory `dir` (config.json
    /// and safetensors, as [`ModelDir::open`] reads them; the prefix is stripped to find the
    /// key). The first matching source wins.
    ///
    /// # Errors
    /// As [`ModelDir::open`].
    pub fn with_checkpoint(self, prefix: &str, dir: impl AsRef<Path>) -> Result<Self> {
        let md = ModelDir::open(dir.as_ref())?;
        Ok(self.with_model_dir(prefix, md))
    }

    /// As [`ParamStore::with_checkpoint`], with an opened [`ModelDir`].
    pub fn with_model_dir(self, prefix: &str, dir: ModelDir) -> Self {
        let keys = dir
            .tensors()
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        self.lock().sources.push(Source {
            prefix: prefix.to_string(),
            dir,
            keys,
        });
        self
    }

    /// Names (full, prefix included) that may be created by their initialiser when no
    /// checkpoint has them: [`Selection::all`] to train from scratch, `adapters` for new
    /// adapters on a pretrained base.
    pub fn create(self, sel: Selection) -> Self {
        self.lock().create = sel;
        self
    }

    /// Names that train; every other tensor is frozen.
    pub fn trainable(self, sel: Selection) -> Self {
        self.lock().trainable_sel = sel;
        self
    }

    /// Names that may be zero-padded along dim 1 from a narrower checkpoint tensor
    /// (`conv_in.weight` widened for channel-concat conditioning).
    pub fn widen(self, sel: Selection) -> Self {
        self.lock().widen = sel;
        self
    }

    /// The master seed of created tensors.
    pub fn seed(&self) -> u64 {
        self.lock().seed
    }

    /// The device tensors live on.
    pub fn device(&self) -> Device {
        self.lock().device.clone()
    }

    /// A builder serving this store's tensors in `dtype` (float32 masters, converted).
    pub fn var_builder(&self, dtype: DType) -> VarBuilder<'static> {
        let dev = self.device();
        VarBuilder::from_backend(Box::new(self.clone()), dtype, dev)
    }

    /// The trainable variables, sorted by name.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.lock()
            .trainable
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Current values of the trainable variables, by name.
    pub fn trainable_tensors(&self) -> BTreeMap<String, Tensor> {
        self.lock()
            .trainable
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// The frozen tensors, by name.
    pub fn frozen_tensors(&self) -> BTreeMap<String, Tensor> {
        self.lock().frozen.clone()
    }

    /// Every tensor (trainable current values and frozen), by name.
    pub fn all_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut m = self.frozen_tensors();
        m.extend(self.trainable_tensors());
        m
    }

    /// Where each tensor's initial value came from.
    pub fn origins(&self) -> BTreeMap<String, Origin> {
        self.lock().origin.clone()
    }

    /// Counts of trainable, frozen and newly created parameters.
    pub fn report(&self) -> ParamReport {
        let g = self.lock();
        let mut r = ParamReport {
            trainable: g.trainable.values().map(|v| v.elem_count()).sum(),
            frozen: g.frozen.values().map(|t| t.elem_count()).sum(),
            trainable_tensors: g.trainable.len(),
            frozen_tensors: g.frozen.len(),
            initialised: 0,
        };
        for (k, o) in &g.origin {
            if *o == Origin::Initialised {
                r.initialised += g
                    .trainable
                    .get(k)
                    .map(|v| v.elem_count())
                    .or_else(|| g.frozen.get(k).map(|t| t.elem_count()))
                    .unwrap_or(0);
            }
        }
        r
    }

    /// Checkpoint keys (full names, prefix included) that no model asked for, per checkpoint
    /// directory: a non-empty list usually means the checkpoint belongs to another config.
    pub fn unused_checkpoint_keys(&self) -> Vec<(String, Vec<String>)> {
        let g = self.lock();
        g.sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let unused: Vec<String> = s
                    .keys
                    .keys()
                    .filter(|k| !g.used.contains(&(i, (*k).clone())))
                    .map(|k| format!("{}{k}", s.prefix))
                    .collect();
                (!unused.is_empty()).then(|| (s.dir.root().display().to_string(), unused))
            })
            .collect()
    }

    /// Sets the trainable variables from `values` (a resumed checkpoint): every trainable
    /// variable must be there with its shape.
    ///
    /// # Errors
    /// A missing or mis-shaped tensor (named, with `file`).
    pub fn load_trainable(&self, values: &BTreeMap<String, Tensor>, file: &Path) -> Result<()> {
        let g = self.lock();
        for (k, v) in &g.trainable {
            let t = values.get(k).ok_or_else(|| Error::MissingTensor {
                key: k.clone(),
                file: file.display().to_string(),
                nearest: vidgen_video_core::loading::nearest_keys(
                    k,
                    values.keys().map(String::as_str),
                    3,
                ),
            })?;
            if t.dims() != v.dims() {
                return Err(Error::ShapeMismatch {
                    key: k.clone(),
                    expected: v.dims().to_vec(),
                    found: t.dims().to_vec(),
                    file: Some(file.display().to_string()),
                });
            }
            v.set(&t.to_dtype(v.dtype())?.to_device(v.device())?)?;
        }
        Ok(())
    }

    /// Sets to zero every tensor that was created by its initialiser (not read from a
    /// checkpoint) and whose name `sel` selects: e.g. the output projections of new motion
    /// modules, so that they start as the identity. A model holding frozen copies must be
    /// rebuilt afterwards ([`crate::ModelCache::rebuild`]); trainable ones change in place.
    ///
    /// # Errors
    /// Tensor creation.
    pub fn zero_created(&self, sel: &Selection) -> Result<usize> {
        let mut g = self.lock();
        let names: Vec<String> = g
            .origin
            .iter()
            .filter(|(k, o)| **o == Origin::Initialised && sel.selects(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &names {
            if let Some(v) = g.trainable.get(k) {
                v.set(&v.as_tensor().zeros_like()?)?;
            } else if let Some(t) = g.frozen.get(k) {
                let z = t.zeros_like()?;
                g.frozen.insert(k.clone(), z);
            }
        }
        Ok(names.len())
    }

    fn fetch(&self, s: &Shape, name: &str, h: Init) -> candle_core::Result<Tensor> {
        let mut g = self.lock();
        if let Some(v) = g.trainable.get(name) {
            check_shape(name, v.shape(), s)?;
            return Ok(v.as_tensor().clone());
        }
        if let Some(t) = g.frozen.get(name) {
            check_shape(name, t.shape(), s)?;
            return Ok(t.clone());
        }
        let dev = g.device.clone();
        let mut found: Option<(Tensor, Origin, usize, String)> = None;
        let mut missing_in: Option<(String, Vec<String>)> = None;
        for (i, src) in g.sources.iter().enumerate() {
            let Some(key) = name.strip_prefix(src.prefix.as_str()) else {
                continue;
            };
            let file = src.dir.root().display().to_string();
            if !src.keys.contains_key(key) {
                if missing_in.is_none() {
                    let nearest = vidgen_video_core::loading::nearest_keys(
                        key,
                        src.keys.keys().map(String::as_str),
                        3,
                    );
                    missing_in = Some((file, nearest));
                }
                continue;
            }
            let t = src
                .dir
                .get(key, &dev)
                .map_err(candle_core::Error::wrap)?
                .to_dtype(DType::F32)?;
            let widenable = g.widen.selects(name)
                && t.rank() == s.rank()
                && t.rank() >= 2
                && t.dims()[1] < s.dims()[1]
                && t.dims()
                    .iter()
                    .zip(s.dims())
                    .enumerate()
                    .all(|(d, (a, b))| d == 1 || a == b);
            let (t, origin) = if t.dims() == s.dims() {
                (t, Origin::Checkpoint(file))
            } else if widenable {
                let extra = s.dims()[1] - t.dims()[1];
                (t.pad_with_zeros(1, 0, extra)?, Origin::Widened(file))
            } else {
                return Err(candle_core::Error::wrap(Error::ShapeMismatch {
                    key: name.to_string(),
                    expected: s.dims().to_vec(),
                    found: t.dims().to_vec(),
                    file: Some(file),
                }));
            };
            found = Some((t, origin, i, key.to_string()));
            break;
        }
        let (t, origin) = match found {
            Some((t, o, i, key)) => {
                g.used.insert((i, key));
                (t, o)
            }
            None if g.create.selects(name) => {
                (draw(g.seed, name, s, h, &dev)?, Origin::Initialised)
            }
            None => {
                let (file, nearest) = missing_in.unwrap_or_else(|| {
                    ("(no checkpoint serves this name)".to_string(), Vec::new())
                });
                return Err(candle_core::Error::wrap(Error::MissingTensor {
                    key: name.to_string(),
                    file,
                    nearest,
                }));
            }
        };
        g.origin.insert(name.to_string(), origin);
        if g.trainable_sel.selects(name) {
            let var = Var::from_tensor(&t.contiguous()?)?;
            let out = var.as_tensor().clone();
            g.trainable.insert(name.to_string(), var);
            Ok(out)
        } else {
            let t = t.contiguous()?.detach();
            g.frozen.insert(name.to_string(), t.clone());
            Ok(t)
        }
    }
}

fn check_shape(name: &str, have: &Shape, want: &Shape) -> candle_core::Result<()> {
    if have != want {
        return Err(candle_core::Error::wrap(Error::ShapeMismatch {
            key: name.to_string(),
            expected: want.dims().to_vec(),
            found: have.dims().to_vec(),
            file: None,
        }));
    }
    Ok(())
}

impl SimpleBackend for ParamStore {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.fetch(&s, name, h)?.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let known = {
            let g = self.lock();
            g.trainable
                .get(name)
                .map(|v| v.as_tensor().clone())
                .or_else(|| g.frozen.get(name).cloned())
        };
        let t = match known {
            Some(t) => t,
            None => {
                // No shape to check or create with: only a checkpoint can answer.
                let shape = {
                    let g = self.lock();
                    g.sources.iter().find_map(|src| {
                        let key = name.strip_prefix(src.prefix.as_str())?;
                        src.keys.get(key).cloned()
                    })
                };
                match shape {
                    Some(s) => self.fetch(&Shape::from(s), name, Init::Const(0.0))?,
                    None => candle_core::bail!(
                        "ParamStore: `{name}` asked for without a shape and no checkpoint has it"
                    ),
                }
            }
        };
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        let g = self.lock();
        g.trainable.contains_key(name)
            || g.frozen.contains_key(name)
            || g.create.selects(name)
            || g.sources.iter().any(|s| {
                name.strip_prefix(s.prefix.as_str())
                    .is_some_and(|k| s.keys.contains_key(k))
            })
    }
}

/// Tensor `name` drawn from the layer's hint with the ChaCha8 stream `(seed, name)`: exactly
/// `vidgen_video_nn::init::seeded_var_builder`'s values (same seed, same tensors), in f32.
pub(crate) fn draw(
    seed: u64,
    name: &str,
    s: &Shape,
    h: Init,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    vidgen_video_nn::init::seeded_tensor(seed, name, s, h, DType::F32, dev)
}
