//! [`AdapterSet`]: adapters keyed by UNet hook site, implementing
//! [`vidgen_video_core::hooks::UNetHooks`] so that `forward_with_hooks` runs them.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use vidgen_video_core::hooks::{AttentionSite, HookPoint, HookSite, UNetHooks};
use vidgen_video_core::{Error, Result};

use crate::adapter::{
    adapter_param_counts, AdapterConfig, LongTermTemporalAdapter, ShortTermTemporalAdapter,
    SpatialAdapter,
};

/// One adapter of any kind.
#[derive(Debug, Clone)]
pub enum Adapter {
    /// [`SpatialAdapter`].
    Spatial(SpatialAdapter),
    /// [`ShortTermTemporalAdapter`].
    ShortTerm(ShortTermTemporalAdapter),
    /// [`LongTermTemporalAdapter`].
    LongTerm(LongTermTemporalAdapter),
}

impl Adapter {
    /// Applies the adapter.
    ///
    /// # Shapes
    /// `x [B, C, T, H, W]` → `[B, C, T, H, W]`.
    ///
    /// # Errors
    /// As the wrapped adapter's `forward`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Adapter::Spatial(a) => a.forward(x),
            Adapter::ShortTerm(a) => a.forward(x),
            Adapter::LongTerm(a) => a.forward(x),
        }
    }
}

/// A hook that changes nothing and records every site it is called at, with the channel count
/// seen there: run any UNet of `diffusion-unet3d` once with it (on a small input) to learn
/// where adapters can go, then build them with [`AdapterSet::aid_for_calls`]. This is how the
/// inflated SD UNets (`UNet3DConditionModel`, `UNetMotionModel`), whose block layouts differ
/// from SVD's, are adapted without a per-model site list.
///
/// ```
/// use vidgen_adapters::SiteRecorder;
/// use vidgen_video_core::hooks::{HookPoint, HookSite, UNetHooks};
/// # fn main() -> vidgen_video_core::Result<()> {
/// let rec = SiteRecorder::new();
/// let h = candle_core::Tensor::zeros((1, 8, 2, 3, 3), candle_core::DType::F32, &candle_core::Device::Cpu)?;
/// rec.apply(&HookSite { block: "mid_block.attentions.0", point: HookPoint::AfterTemporalLayers, num_frames: 2 }, &h)?;
/// assert_eq!(rec.sites()?, vec![("mid_block.attentions.0".to_string(), 8)]);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct SiteRecorder {
    seen: Mutex<Vec<(String, HookPoint, usize)>>,
}

impl SiteRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every `(block path, point, channels)` seen, in first-call order, each once.
    ///
    /// # Errors
    /// A poisoned lock (a panic in another thread while recording).
    pub fn calls(&self) -> Result<Vec<(String, HookPoint, usize)>> {
        Ok(self
            .seen
            .lock()
            .map_err(|_| Error::invalid("site recorder", "lock poisoned"))?
            .clone())
    }

    /// Every block path seen with its channel count, in first-call order, each once: the
    /// input of [`AdapterSet::aid_for_sites`].
    ///
    /// # Errors
    /// As [`SiteRecorder::calls`].
    pub fn sites(&self) -> Result<Vec<(String, usize)>> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for (b, _, c) in self.calls()? {
            if !out.iter().any(|(p, _)| *p == b) {
                out.push((b, c));
            }
        }
        Ok(out)
    }
}

impl UNetHooks for SiteRecorder {
    fn apply(&self, site: &HookSite<'_>, h: &Tensor) -> Result<Tensor> {
        let c = h.dims().get(1).copied().unwrap_or(0);
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| Error::invalid("site recorder", "lock poisoned"))?;
        if !seen
            .iter()
            .any(|(b, p, _)| b == site.block && *p == site.point)
        {
            seen.push((site.block.to_string(), site.point, c));
        }
        Ok(h.clone())
    }
}

/// Adapters keyed by `(block path, hook point)`, run in insertion order at each site.
///
/// Variable names under the builder are `<block path>.<kind>.<key>`, e.g.
/// `down_blocks.0.attentions.0.spatial.down.weight`, `mid_block.attentions.0.long_term.to_q.bias`.
///
/// A block with several transformer layers (`transformer_layers_per_block > 1`) calls the hook
/// once per layer with the same site, so the same adapters run after each layer (the hook site
/// carries no layer index).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use vidgen_adapters::{AdapterConfig, AdapterSet};
/// use vidgen_video_core::hooks::{HookPoint, HookSite, UNetHooks};
/// # fn main() -> vidgen_video_core::Result<()> {
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let set = AdapterSet::aid_for_sites(&[("blk".into(), 32)], &AdapterConfig::default(), vb)?;
/// let h = Tensor::ones((1, 32, 3, 4, 4), DType::F32, &Device::Cpu)?;
/// let site = HookSite { block: "blk", point: HookPoint::AfterTemporalLayers, num_frames: 3 };
/// // zero-initialised up-projections: the identity
/// let y = set.apply(&site, &h)?;
/// assert_eq!(y.sum_all()?.to_scalar::<f32>()?, h.sum_all()?.to_scalar::<f32>()?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct AdapterSet {
    map: HashMap<(String, HookPoint), Vec<Adapter>>,
}

impl AdapterSet {
    /// An empty set (the identity).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `adapter` at `(block, point)`, after any already there.
    pub fn insert(&mut self, block: impl Into<String>, point: HookPoint, adapter: Adapter) {
        self.map
            .entry((block.into(), point))
            .or_default()
            .push(adapter);
    }

    /// The adapters at `(block, point)`.
    pub fn get(&self, block: &str, point: HookPoint) -> &[Adapter] {
        self.map
            .get(&(block.to_string(), point))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Number of adapters in the set.
    pub fn len(&self) -> usize {
        self.map.values().map(Vec::len).sum()
    }

    /// True when there are no adapters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// AID's layout at the given `(block path, channels)` sites: a [`SpatialAdapter`] after
    /// spatial attention, then a [`ShortTermTemporalAdapter`] and a [`LongTermTemporalAdapter`]
    /// (in that order) after the temporal layers. Variables are created under `vb.pp(path)`.
    ///
    /// # Errors
    /// An invalid `cfg`; builder errors.
    pub fn aid_for_sites(
        sites: &[(String, usize)],
        cfg: &AdapterConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let calls: Vec<(String, HookPoint, usize)> = sites
            .iter()
            .flat_map(|(p, c)| {
                [
                    (p.clone(), HookPoint::AfterSpatialAttention, *c),
                    (p.clone(), HookPoint::AfterTemporalLayers, *c),
                ]
            })
            .collect();
        Self::aid_for_calls(&calls, cfg, vb)
    }

    /// AID's layout at exactly the hook calls a [`SiteRecorder`] saw (`(block, point,
    /// channels)` from [`SiteRecorder::calls`]): a [`SpatialAdapter`] where
    /// [`HookPoint::AfterSpatialAttention`] was called, a [`ShortTermTemporalAdapter`] then a
    /// [`LongTermTemporalAdapter`] where [`HookPoint::AfterTemporalLayers`] was. Unlike
    /// [`AdapterSet::aid_for_sites`], no adapter is created at a point the model never calls
    /// (AnimateDiff's motion-only blocks have temporal layers but no spatial attention), so
    /// every adapter parameter receives a gradient.
    ///
    /// # Errors
    /// An invalid `cfg`; builder errors.
    pub fn aid_for_calls(
        calls: &[(String, HookPoint, usize)],
        cfg: &AdapterConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut set = Self::new();
        for (path, point, c) in calls {
            let (c, point) = (*c, *point);
            let r = cfg.bottleneck(c);
            let v = vb.pp(path.as_str());
            match point {
                HookPoint::AfterSpatialAttention => set.insert(
                    path.clone(),
                    point,
                    Adapter::Spatial(SpatialAdapter::new(c, r, v.pp("spatial"))?),
                ),
                HookPoint::AfterTemporalLayers => {
                    set.insert(
                        path.clone(),
                        point,
                        Adapter::ShortTerm(ShortTermTemporalAdapter::new(
                            c,
                            r,
                            cfg.short_term_kernel,
                            v.pp("short_term"),
                        )?),
                    );
                    set.insert(
                        path.clone(),
                        point,
                        Adapter::LongTerm(LongTermTemporalAdapter::new(
                            c,
                            r,
                            cfg.long_term_heads(r),
                            v.pp("long_term"),
                        )?),
                    );
                }
            }
        }
        Ok(set)
    }

    /// AID's layout at every attention site of a UNet (from its config's
    /// `attention_sites()`, e.g. `UNetSpatioTemporalConfig::attention_sites` of
    /// `vidgen-diffusion-unet3d`). With a freshly initialised builder the adapters start at zero
    /// output (zero up-projections: the adapted UNet equals the base UNet).
    ///
    /// # Errors
    /// An invalid config; builder errors.
    pub fn aid_for_attention_sites(
        sites: &[AttentionSite],
        cfg: &AdapterConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let sites: Vec<(String, usize)> =
            sites.iter().map(|s| (s.path.clone(), s.channels)).collect();
        Self::aid_for_sites(&sites, cfg, vb)
    }

    /// Parameters [`AdapterSet::aid_for_attention_sites`] would create, computed from the
    /// configs alone.
    ///
    /// # Errors
    /// An invalid config.
    pub fn aid_param_count(sites: &[AttentionSite], cfg: &AdapterConfig) -> Result<usize> {
        cfg.validate()?;
        Ok(sites
            .iter()
            .map(|s| {
                let (a, b, c) = adapter_param_counts(cfg, s.channels);
                a + b + c
            })
            .sum())
    }
}

impl UNetHooks for AdapterSet {
    fn apply(&self, site: &HookSite<'_>, h: &Tensor) -> Result<Tensor> {
        let Some(list) = self.map.get(&(site.block.to_string(), site.point)) else {
            return Ok(h.clone());
        };
        if h.rank() != 5 || h.dims()[2] != site.num_frames {
            return Err(Error::invalid(
                "hook hidden states",
                format!(
                    "expected [B, C, T = {}, H, W] at {} ({:?}), found {:?}",
                    site.num_frames,
                    site.block,
                    site.point,
                    h.dims()
                ),
            ));
        }
        let mut x = h.clone();
        for a in list {
            x = a.forward(&x)?;
        }
        Ok(x)
    }

    fn is_noop(&self) -> bool {
        self.map.values().all(Vec::is_empty)
    }
}
