//! Freezing a base model and counting parameters, including counting a model from its config
//! alone (no weights, no memory for them).

use std::collections::HashMap;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use vidgen_video_core::{AttentionSite, Error, Result};

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

impl ParamReport {
    /// AID's report: a base model of `base` parameters (e.g.
    /// `UNetSpatioTemporalConfig::param_count()` of `vidgen-diffusion-unet3d`, counted from the
    /// config alone) with AID adapters at every one of its attention `sites`
    /// ([`AdapterSet::aid_param_count`]).
    ///
    /// # Errors
    /// An invalid adapter config.
    pub fn aid(base: usize, sites: &[AttentionSite], adapters: &AdapterConfig) -> Result<Self> {
        Ok(Self {
            base,
            trainable: AdapterSet::aid_param_count(sites, adapters)?,
        })
    }
}
