//! Counting a model's parameters from its configuration alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, Result};

/// A builder backend that records each requested tensor's element count and hands out
/// stride-0 broadcast zeros (no memory for the values).
#[derive(Clone)]
struct ShapeCounter(Arc<Mutex<HashMap<String, usize>>>);

impl SimpleBackend for ShapeCounter {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .map_err(|_| candle_core::Error::Msg("counter lock poisoned".into()))?
            .insert(name.to_string(), s.elem_count());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!(
            "parameter counting needs a shape for `{name}`"
        )))
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}

/// Counts the parameters a model constructor requests, without allocating them: `build` runs
/// against a builder whose tensors are stride-0 zeros. Each distinct key counts once.
///
/// ```
/// use vidgen_video_nn::{count_by_construction, Linear};
/// let n = count_by_construction(|vb| Linear::new(16, 8, true, vb.pp("proj")))?;
/// assert_eq!(n, 16 * 8 + 8);
/// # Ok::<(), vidgen_video_core::Error>(())
/// ```
///
/// # Errors
/// Whatever `build` returns.
pub fn count_by_construction<T>(build: impl FnOnce(VarBuilder) -> Result<T>) -> Result<usize> {
    let counter = ShapeCounter(Arc::new(Mutex::new(HashMap::new())));
    let vb = VarBuilder::from_backend(Box::new(counter.clone()), DType::F32, Device::Cpu);
    build(vb)?;
    let seen = counter
        .0
        .lock()
        .map_err(|_| Error::invalid("counter", "lock poisoned"))?;
    Ok(seen.values().sum())
}
