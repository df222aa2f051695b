//! The UNet hook contract: points inside a spatio-temporal UNet where adapters (AID's spatial /
//! temporal adapters) add to the hidden states of chosen blocks without forking the model.
//! Models (`vidgen-diffusion-unet3d`) call hooks and list their [`AttentionSite`]s; adapters
//! (`vidgen-adapters`) implement [`UNetHooks`] built from those sites. The two crates meet only
//! here.
//!
//! A hook sees video hidden states `[B, C, T, H, W]` at a [`HookSite`] and returns a tensor of the
//! same shape that replaces them. [`NoHooks`] is the identity and costs nothing: the model
//! skips the layout conversion entirely when [`UNetHooks::is_noop`] is true.

use candle_core::Tensor;

/// Where in a spatio-temporal transformer a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// After each spatial transformer block (`transformer_blocks.N`), before the temporal block.
    AfterSpatialAttention,
    /// After the `AlphaBlender` mix of spatial and temporal outputs (`time_mixer`).
    AfterTemporalLayers,
}

/// One call site of a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookSite<'a> {
    /// The diffusers module path of the transformer, e.g. `"down_blocks.1.attentions.0"` or
    /// `"mid_block.attentions.0"`.
    pub block: &'a str,
    /// The point inside it.
    pub point: HookPoint,
    /// Frames per video (`T` of the hidden states).
    pub num_frames: usize,
}

/// Callbacks that may modify hidden states inside the UNet.
pub trait UNetHooks: Send + Sync {
    /// Returns the (possibly modified) hidden states at `site`.
    ///
    /// # Shapes
    /// `h [B, C, T, H, W]` (`C` the transformer's inner dim) → the same shape.
    fn apply(&self, site: &HookSite<'_>, h: &Tensor) -> crate::Result<Tensor>;

    /// True when [`UNetHooks::apply`] is the identity everywhere, so the model may skip calling
    /// it (and the `[B·T, H·W, C]` ↔ `[B, C, T, H, W]` conversions around it). Defaults to false.
    fn is_noop(&self) -> bool {
        false
    }
}

/// The identity: no hooks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl UNetHooks for NoHooks {
    fn apply(&self, _site: &HookSite<'_>, h: &Tensor) -> crate::Result<Tensor> {
        Ok(h.clone())
    }

    fn is_noop(&self) -> bool {
        true
    }
}

/// One transformer (attention site) of a UNet where hooks run: its diffusers module path and
/// the channel count of its hidden states. Each UNet config lists its sites
/// (`attention_sites()`), in forward order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionSite {
    /// e.g. `"down_blocks.1.attentions.0"`, `"mid_block.attentions.0"`.
    pub path: String,
    /// Channels of the hidden states there.
    pub channels: usize,
    /// Transformer layers in it (`transformer_layers_per_block` of its level).
    pub layers: usize,
}
