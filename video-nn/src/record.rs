//! Saving what a model was built from: a [`VarBuilder`] that remembers every tensor it hands
//! out ([`recording`]), and a safetensors writer with metadata ([`save_safetensors`]), so a model
//! built by `new(&cfg, vb)` — randomly initialised, trained in place, or loaded — is written back
//! under exactly the keys `new` asked for.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use vidgen_video_core::{Error, Result};

/// The tensors a [`recording`] builder handed out, in the order they were first asked for,
/// keyed relative to the wrapped builder. They share storage with the model's tensors, so
/// values an optimiser writes in place (`Var::set`) are seen here.
#[derive(Debug, Clone, Default)]
pub struct Recorded(Arc<Mutex<Vec<(String, Tensor)>>>);

impl Recorded {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Tensor)>> {
        // A poisoned lock only means a thread panicked mid-push; the list is intact.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, name: &str, t: &Tensor) {
        let mut v = self.lock();
        if !v.iter().any(|(k, _)| k == name) {
            v.push((name.to_string(), t.clone()));
        }
    }

    /// Every tensor with its key, in request order.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.lock().clone()
    }

    /// Number of parameters recorded.
    pub fn param_count(&self) -> usize {
        self.lock().iter().map(|(_, t)| t.elem_count()).sum()
    }

    /// Writes the recorded tensors to a safetensors file (see [`save_safetensors`]).
    ///
    /// # Errors
    /// As [`save_safetensors`].
    pub fn save(
        &self,
        path: impl AsRef<Path>,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<()> {
        save_safetensors(&self.tensors(), metadata, path)
    }
}

struct Recording<'a> {
    inner: VarBuilder<'a>,
    seen: Recorded,
}

impl SimpleBackend for Recording<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get_with_hints_dtype(s, name, h, dtype)?;
        self.seen.push(name, &t);
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get_unchecked_dtype(name, dtype)?;
        self.seen.push(name, &t);
        Ok(t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Wraps `inner` (a `VarMap`'s builder, a checkpoint's, a seeded one) so that every tensor it
/// hands out is also kept in the returned [`Recorded`], keyed relative to `inner`'s prefix.
///
/// ```
/// use candle_core::{DType, Device};
/// use vidgen_video_nn::{record::recording, Linear};
/// let (vb, rec) = recording(candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu));
/// let _ = Linear::new(4, 2, true, vb.pp("proj"))?;
/// let keys: Vec<String> = rec.tensors().into_iter().map(|(k, _)| k).collect();
/// assert_eq!(keys, ["proj.weight", "proj.bias"]);
/// # Ok::<(), vidgen_video_core::Error>(())
/// ```
pub fn recording<'a>(inner: VarBuilder<'a>) -> (VarBuilder<'a>, Recorded) {
    let seen = Recorded::default();
    let dtype = inner.dtype();
    let device = inner.device().clone();
    let vb = VarBuilder::from_backend(
        Box::new(Recording {
            inner,
            seen: seen.clone(),
        }),
        dtype,
        device,
    );
    (vb, seen)
}

/// A tensor's little-endian bytes for safetensors' writer.
struct Bytes {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Bytes {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn le_bytes<T: le::Le>(v: Vec<T>) -> Vec<u8> {
    v.into_iter().flat_map(T::le).collect()
}

mod le {
    /// Little-endian bytes of a scalar.
    pub trait Le: Copy {
        fn le(self) -> Vec<u8>;
    }
    impl Le for f32 {
        fn le(self) -> Vec<u8> {
            self.to_le_bytes().to_vec()
        }
    }
    impl Le for half::f16 {
        fn le(self) -> Vec<u8> {
            self.to_le_bytes().to_vec()
        }
    }
    impl Le for half::bf16 {
        fn le(self) -> Vec<u8> {
            self.to_le_bytes().to_vec()
        }
    }
    impl Le for i64 {
        fn le(self) -> Vec<u8> {
            self.to_le_bytes().to_vec()
        }
    }
    impl Le for u32 {
        fn le(self) -> Vec<u8> {
            self.to_le_bytes().to_vec()
        }
    }
}

/// Rewrites a safetensors file with every f32 tensor stored as f16 (round to nearest, as
/// `to_dtype` does; other dtypes kept; no metadata). A checkpoint meant to run in f32 loads as
/// before (loaders convert), at half the size.
///
/// # Errors
/// A missing or malformed file, naming it; write errors.
pub fn halve_safetensors(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors =
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut half = tensors
        .into_iter()
        .map(|(k, t)| {
            let t = if t.dtype() == DType::F32 {
                t.to_dtype(DType::F16)?
            } else {
                t
            };
            Ok((k, t))
        })
        .collect::<Result<Vec<(String, Tensor)>>>()?;
    half.sort_by(|a, b| a.0.cmp(&b.0));
    save_safetensors(&half, None, path)
}

/// Writes `tensors` (any device; f32, f16, bf16, i64, u32) to a safetensors file, with
/// `metadata` in its header (`__metadata__`: configs, provenance).
///
/// # Errors
/// Another dtype ([`Error::DType`]), I/O errors naming the file.
pub fn save_safetensors(
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    let mut data = Vec::with_capacity(tensors.len());
    for (k, t) in tensors {
        let shape = t.dims().to_vec();
        let t = t.to_device(&Device::Cpu)?.flatten_all()?;
        let (dtype, bytes) = match t.dtype() {
            DType::F32 => (safetensors::Dtype::F32, le_bytes(t.to_vec1::<f32>()?)),
            DType::F16 => (safetensors::Dtype::F16, le_bytes(t.to_vec1::<half::f16>()?)),
            DType::BF16 => (
                safetensors::Dtype::BF16,
                le_bytes(t.to_vec1::<half::bf16>()?),
            ),
            DType::I64 => (safetensors::Dtype::I64, le_bytes(t.to_vec1::<i64>()?)),
            DType::U32 => (safetensors::Dtype::U32, le_bytes(t.to_vec1::<u32>()?)),
            other => {
                return Err(Error::DType {
                    key: k.clone(),
                    expected: "f32, f16, bf16, i64 or u32".into(),
                    found: format!("{other:?}"),
                })
            }
        };
        data.push((
            k.clone(),
            Bytes {
                dtype,
                shape,
                data: bytes,
            },
        ));
    }
    let views: Vec<(&str, &Bytes)> = data.iter().map(|(k, b)| (k.as_str(), b)).collect();
    safetensors::serialize_to_file(views, metadata, path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}
