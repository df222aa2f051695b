//! Freezing a base model and counting parameters, including counting a model from its config
//! alone (no weights, no memory for them).

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use vidgen_diffusion_unet3d::svd::{UNetSpatioTemporalConditionModel, UNetSpatioTemporalConfig};
use vidgen_video_core::{Error, Result};

use crate::adapter::AdapterConfig;
use crate::set::AdapterSet;

/// Total elements of every variable in `vm`.
pub fn count_params(vm: &VarMap) -> usize {
    vm.all_vars().iter().map(|v| v.elem_count()).sum()
}

/// A builder over detached copies of `vm`'s variables: a model built from it holds plain
/// tensors, so autograd tracks nothing through them and no optimiser can reach them. This is
/// how the base UNet is frozen while an adapter `VarMap` trains.
///
/// # Errors
/// A poisoned `VarMap` lock.
pub fn frozen_builder(vm: &VarMap, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    let data = vm
        .data()
        .lock()
        .map_err(|_| Error::invalid("varmap", "lock poisoned"))?;
    let mut map = HashMap::with_capacity(data.len());
    for (k, v) in data.iter() {
        map.insert(k.clone(), v.as_tensor().detach());
    }
    Ok(VarBuilder::from_tensors(map, dtype, device))
}

/// A builder backend that records each requested tensor's element count and hands out
/// stride-0 broadcast zeros (no memory for the values).
struct ShapeCounter {
    seen: Mutex<HashMap<String, usize>>,
}

impl SimpleBackend for ShapeCounter {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let n = s.elem_count();
        self.seen
            .lock()
            .map_err(|_| candle_core::Error::Msg("counter lock poisoned".into()))?
            .insert(name.to_string(), n);
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
/// # Errors
/// Whatever `build` returns.
pub fn count_by_construction<T>(build: impl FnOnce(VarBuilder) -> Result<T>) -> Result<usize> {
    let counter = ShapeCounter {
        seen: Mutex::new(HashMap::new()),
    };
    let counter = std::sync::Arc::new(counter);
    struct Shared(std::sync::Arc<ShapeCounter>);
    impl SimpleBackend for Shared {
        fn get(
            &self,
            s: Shape,
            name: &str,
            h: candle_nn::Init,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            self.0.get(s, name, h, dtype, dev)
        }
        fn get_unchecked(
            &self,
            name: &str,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            self.0.get_unchecked(name, dtype, dev)
        }
        fn contains_tensor(&self, name: &str) -> bool {
            self.0.contains_tensor(name)
        }
    }
    let vb = VarBuilder::from_backend(Box::new(Shared(counter.clone())), DType::F32, Device::Cpu);
    build(vb)?;
    let seen = counter
        .seen
        .lock()
        .map_err(|_| Error::invalid("counter", "lock poisoned"))?;
    Ok(seen.values().sum())
}

/// Trainable versus total parameters of an adapted model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamReport {
    /// Frozen base-model parameters.
    pub base: usize,
    /// Trainable (adapter) parameters.
    pub trainable: usize,
}

impl ParamReport {
    /// `base + trainable`.
    pub fn total(&self) -> usize {
        self.base + self.trainable
    }

    /// `trainable / total` (0 for an empty model).
    pub fn trainable_fraction(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            self.trainable as f64 / self.total() as f64
        }
    }
}

/// Parameter counts of an SVD UNet with AID adapters at every transformer, from the configs
/// alone: the base by construction ([`count_by_construction`]), the adapters analytically
/// ([`AdapterSet::aid_svd_param_count`]).
///
/// # Errors
/// Invalid configs.
pub fn svd_aid_param_report(
    unet: &UNetSpatioTemporalConfig,
    adapters: &AdapterConfig,
) -> Result<ParamReport> {
    let base = count_by_construction(|vb| UNetSpatioTemporalConditionModel::new(unet, vb))?;
    let trainable = AdapterSet::aid_svd_param_count(unet, adapters)?;
    Ok(ParamReport { base, trainable })
}

/// The public SVD-XT UNet `config.json` (`stabilityai/stable-video-diffusion-img2vid-xt`,
/// `unet/config.json`), shipped with this crate for counting.
pub const SVD_XT_UNET_CONFIG: &str = include_str!("../assets/svd_xt_unet_config.json");

/// [`SVD_XT_UNET_CONFIG`] parsed and validated.
///
/// # Errors
/// Never for the shipped file; a parse error otherwise.
pub fn svd_xt_unet_config() -> Result<UNetSpatioTemporalConfig> {
    let cfg: UNetSpatioTemporalConfig = serde_json::from_str(SVD_XT_UNET_CONFIG)
        .map_err(|e| Error::config("svd_xt_unet_config.json", e.to_string()))?;
    cfg.validate()?;
    Ok(cfg)
}
