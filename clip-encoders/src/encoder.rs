//! The transformer encoder both CLIP towers share (`CLIPEncoderLayer`, `CLIPMLP`,
//! `CLIPEncoder` of transformers' `modeling_clip.py`), on video-nn's layers.
//!
//! One layer is pre-LN:
//!
//! ```text
//! h = x + out_proj(attention(layer_norm1(x)))        self-attention, scale head_dim^-½
//! y = h + fc2(act(fc1(layer_norm2(h))))              MLP
//! ```
//!
//! Checkpoint keys under the layer's prefix: `self_attn.{q,k,v,out}_proj.{weight,bias}`,
//! `layer_norm1.*`, `mlp.fc1.*`, `mlp.fc2.*`, `layer_norm2.*`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use vidgen_video_core::Result;
use vidgen_video_nn::{Activation, LayerNorm, Linear, MhaConfig, MultiHeadAttention};

use crate::config::EncoderDims;

/// `CLIPMLP`: `fc2(act(fc1(x)))`.
#[derive(Debug, Clone)]
pub struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl ClipMlp {
    pub(crate) fn new(d: &EncoderDims, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(d.hidden, d.intermediate, true, vb.pp("fc1"))?,
            fc2: Linear::new(d.intermediate, d.hidden, true, vb.pp("fc2"))?,
            act: d.act,
        })
    }

    /// # Shapes
    /// `[B, N, hidden]` → `[B, N, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward(x)?;
        let h = self.act.forward(&h)?;
        self.fc2.forward(&h)
    }
}

/// `CLIPEncoderLayer`: pre-LN self-attention and MLP, each with a residual.
#[derive(Debug, Clone)]
pub struct ClipEncoderLayer {
    self_attn: MultiHeadAttention,
    layer_norm1: LayerNorm,
    mlp: ClipMlp,
    layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    pub(crate) fn new(d: &EncoderDims, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            self_attn: MultiHeadAttention::new(
                &MhaConfig::clip(d.hidden, d.heads),
                vb.pp("self_attn"),
            )?,
            layer_norm1: LayerNorm::new(d.hidden, d.eps, true, vb.pp("layer_norm1"))?,
            mlp: ClipMlp::new(d, vb.pp("mlp"))?,
            layer_norm2: LayerNorm::new(d.hidden, d.eps, true, vb.pp("layer_norm2"))?,
        })
    }

    /// One layer. `mask`: additive, broadcastable to `[B, heads, N, N]`; `causal`: query `i`
    /// sees keys `j ≤ i` (the text tower).
    ///
    /// # Shapes
    /// `[B, N, hidden]` → `[B, N, hidden]`.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>, causal: bool) -> Result<Tensor> {
        let h = self.layer_norm1.forward(x)?;
        let h = self.self_attn.forward(&h, None, mask, causal)?;
        let x = (x + h)?;
        let h = self.layer_norm2.forward(&x)?;
        let h = self.mlp.forward(&h)?;
        Ok((x + h)?)
    }
}

/// `CLIPEncoder`: the stack of layers (`layers.{i}.*`).
#[derive(Debug, Clone)]
pub struct ClipEncoder {
    layers: Vec<ClipEncoderLayer>,
}

impl ClipEncoder {
    pub(crate) fn new(d: &EncoderDims, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..d.layers)
            .map(|i| ClipEncoderLayer::new(d, vb.pp(i)))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// The layers.
    pub fn layers(&self) -> &[ClipEncoderLayer] {
        &self.layers
    }

    /// Runs every layer; returns the input followed by each layer's output (`L + 1` tensors,
    /// transformers' `hidden_states`).
    ///
    /// # Shapes
    /// `[B, N, hidden]` → `L + 1` tensors `[B, N, hidden]`.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>, causal: bool) -> Result<Vec<Tensor>> {
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        states.push(x.clone());
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h, mask, causal)?;
            states.push(h.clone());
        }
        Ok(states)
    }
}
