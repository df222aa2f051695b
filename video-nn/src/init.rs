//! Seeded random weights (random initialisation that reproduces): a `VarBuilder` whose every tensor is drawn from a ChaCha stream keyed
//! by `(seed, tensor name)`, so a model built twice with one seed gets bit-identical weights
//! whatever the order (or the thread) in which it asks for them, unlike candle's `VarMap`,
//! which draws from the device's global generator.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// A [`VarBuilder`] of random weights: tensor `name` of shape `s` is drawn from a ChaCha8
/// stream seeded by `seed` and numbered by a hash of `name`, following the layer's [`Init`]
/// hint (`Const`, `Randn { mean, stdev }`, `Uniform { lo, up }`, `Kaiming` as candle computes
/// its bound). Values are drawn in f32 and converted to `dtype` on `device`, so they do not
/// depend on either.
///
/// Every key exists (`contains_tensor` is true), as with candle's `VarBuilder::zeros`;
/// `get_unchecked` (no shape) is an error. Nothing is recorded: use [`SeededVarMap`] to save or
/// train the weights.
///
/// ```
/// use candle_core::{DType, Device};
/// let a = candle_nn::linear(4, 3, vidgen_video_nn::init::seeded_var_builder(7, DType::F32, &Device::Cpu)).unwrap();
/// let b = candle_nn::linear(4, 3, vidgen_video_nn::init::seeded_var_builder(7, DType::F32, &Device::Cpu)).unwrap();
/// assert_eq!(a.weight().to_vec2::<f32>().unwrap(), b.weight().to_vec2::<f32>().unwrap());
/// ```
pub fn seeded_var_builder(seed: u64, dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(Seeded { seed }), dtype, device.clone())
}

/// Like candle's `VarMap`, but seeded: the [`VarBuilder`] of [`SeededVarMap::var_builder`]
/// creates each tensor as [`seeded_var_builder`] does (same seed → same values), keeps it as a
/// trainable [`Var`], and returns the same variable when asked again. Read them back with
/// [`SeededVarMap::all_vars`] (for an optimiser), [`SeededVarMap::tensors`] or
/// [`SeededVarMap::save`].
#[derive(Clone)]
pub struct SeededVarMap {
    seed: u64,
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
}

impl SeededVarMap {
    /// An empty map drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededVarMap {
            seed,
            vars: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// A [`VarBuilder`] that creates (or reuses) this map's variables in `dtype` on `device`.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Every variable created so far, sorted by name.
    pub fn all_vars(&self) -> Vec<Var> {
        self.lock().values().cloned().collect()
    }

    /// Every tensor created so far (current values), by name.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Writes every tensor to a safetensors file (loadable with `ModelDir::from_files`).
    ///
    /// # Errors
    /// Candle's I/O or conversion errors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let map: std::collections::HashMap<String, Tensor> = self.tensors().into_iter().collect();
        candle_core::safetensors::save(&map, path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Var>> {
        // A poisoned lock means a test thread panicked mid-insert; the map is still whole.
        self.vars.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut vars = self.lock();
        if let Some(v) = vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "SeededVarMap: `{name}` was created with shape {:?}, now asked for {:?}",
                    v.shape(),
                    s
                );
            }
            return v.as_tensor().to_dtype(dtype)?.to_device(dev);
        }
        let var = Var::from_tensor(&draw(self.seed, name, &s, h, dtype, dev)?)?;
        let t = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        match self.lock().get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!(
                "SeededVarMap: `{name}` does not exist yet and get_unchecked has no shape to create it"
            ),
        }
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

struct Seeded {
    seed: u64,
}

impl SimpleBackend for Seeded {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        draw(self.seed, name, &s, h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!(
            "seeded_var_builder: `{name}` asked without a shape (get_unchecked); use `get`"
        )
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// FNV-1a of the name: a stable (toolchain-independent) stream number.
fn stream_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The values [`seeded_var_builder`] gives tensor `name` of shape `s` under the layer's hint
/// `h`: `h` applied to draws from the ChaCha8 stream `(seed, FNV-1a(name))`, made in f32 then
/// cast to `dtype`. Public so that other initialisers (the trainer's new modules next to
/// pretrained weights) draw exactly the same values.
///
/// # Errors
/// Candle errors building the tensor.
pub fn seeded_tensor(
    seed: u64,
    name: &str,
    s: &Shape,
    h: Init,
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    draw(seed, name, s, h, dtype, dev)
}

/// The values of tensor `name`: `h` applied to draws from stream `stream_of(name)` of seed `seed`.
fn draw(seed: u64, name: &str, s: &Shape, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
    let n = s.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream_of(name));
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (mean + std * rng.sample::<f64, _>(StandardNormal)) as f32)
            .collect()
    };
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
            .collect()
    };
    let v: Vec<f32> = match h {
        Init::Const(c) => vec![c as f32; n],
        Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
        Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(s) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(&mut rng, -bound, bound)
                }
            }
        }
    };
    Tensor::from_vec(v, s.clone(), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(dev)
}

/// Overwrites every variable of a candle `VarMap` in name order with `values(name, dims)` (which
/// must return one value per element): the skeleton of the seeded re-initialisations that give
/// a `VarMap`-built model its own scheme (norm scales 1, biases 0, LeCun normal, …) from one
/// seeded stream, reproducibly, since candle's own CPU initialisation is not seedable.
///
/// # Errors
/// A poisoned lock; an error from `values`; a value count that does not match the variable.
pub fn reinit_var_map(
    vars: &candle_nn::VarMap,
    mut values: impl FnMut(&str, &[usize]) -> vidgen_video_core::Result<Vec<f32>>,
) -> vidgen_video_core::Result<()> {
    use vidgen_video_core::Error;
    let data = vars
        .data()
        .lock()
        .map_err(|_| Error::invalid("var map", "lock poisoned"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let v = values(name, &dims)?;
        let n: usize = dims.iter().product();
        if v.len() != n {
            return Err(Error::invalid(
                "var map re-initialisation",
                format!("{} values for `{name}` of shape {dims:?}", v.len()),
            ));
        }
        var.set(&Tensor::from_vec(v, dims, var.device())?)?;
    }
    Ok(())
}
