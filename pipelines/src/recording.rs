//! A `VarBuilder` that remembers every tensor it hands out, so a model built from it (randomly
//! initialised, trained in place, or loaded) can be saved with the same keys.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// The tensors a [`recording`] builder handed out, by full key.
#[derive(Debug, Clone, Default)]
pub struct Recorded(Arc<Mutex<BTreeMap<String, Tensor>>>);

impl Recorded {
    /// Every tensor, by key. The tensors share storage with the model's, so values written in
    /// place (an optimiser's `Var::set`) are seen here.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

struct Recording {
    inner: VarBuilder<'static>,
    seen: Recorded,
}

impl SimpleBackend for Recording {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get_with_hints_dtype(s, name, h, dtype)?;
        if let Ok(mut m) = self.seen.0.lock() {
            m.insert(name.to_string(), t.clone());
        }
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get_unchecked_dtype(name, dtype)?;
        if let Ok(mut m) = self.seen.0.lock() {
            m.insert(name.to_string(), t.clone());
        }
        Ok(t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Wraps `inner` (any builder: a `VarMap`'s, a checkpoint's, a seeded one) so that every tensor
/// it hands out is also kept in the returned [`Recorded`].
pub fn recording(inner: VarBuilder<'static>) -> (VarBuilder<'static>, Recorded) {
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
