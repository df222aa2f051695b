//! Hook points inside the SVD UNet, for adapters that add to the hidden states of chosen blocks
//! (AID's spatial / temporal adapters) without forking the model.
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
    fn apply(&self, site: &HookSite<'_>, h: &Tensor) -> vidgen_video_core::Result<Tensor>;

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
    fn apply(&self, _site: &HookSite<'_>, h: &Tensor) -> vidgen_video_core::Result<Tensor> {
        Ok(h.clone())
    }

    fn is_noop(&self) -> bool {
        true
    }
}
