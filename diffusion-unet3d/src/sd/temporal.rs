//! The temporal layers that inflate a per-frame SD UNet to video: ModelScope's
//! `TemporalConvLayer` and the temporal transformer shared by `UNet3DConditionModel`
//! (`TransformerTemporalModel`) and AnimateDiff (`AnimateDiffTransformer3D`, with sinusoidal
//! positions).
//!
//! Both take and return video `[B, C, T, H, W]`; attention runs over the `T` frames of every
//! pixel, `[B·H·W, T, C]`, made by [`VideoShape::to_time_sequences`].

use candle_core::Tensor;
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, Result, VideoShape};
use vidgen_video_kernels::Conv3dOpts;
use vidgen_video_nn::Conv3d;

use vidgen_video_nn::{
    BasicTransformerBlock, BasicTransformerBlockConfig, FeedForwardActivation, GroupNorm, Linear,
};

/// `GroupNorm → SiLU → Conv3d (3,1,1)`, one stage of a [`TemporalConvLayer`].
#[derive(Debug, Clone)]
struct NormActConv {
    norm: GroupNorm,
    conv: Conv3d,
}

impl NormActConv {
    /// `norm_key` / `conv_key` are the `nn.Sequential` indices (`0` and `2` or `3`).
    fn new(
        cin: usize,
        cout: usize,
        groups: usize,
        zero_init: bool,
        conv_index: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let norm = GroupNorm::new(groups, cin, 1e-5, vb.pp("0"))?;
        let vbc = vb.pp(conv_index);
        let conv = if zero_init {
            // The last stage starts at zero (diffusers `nn.init.zeros_`), so a fresh layer is
            // the identity; a checkpoint's values replace the init.
            let w =
                vbc.get_with_hints((cout, cin, 3, 1, 1), "weight", candle_nn::Init::Const(0.0))?;
            let b = vbc.get_with_hints(cout, "bias", candle_nn::Init::Const(0.0))?;
            Conv3d::from_parts(w, Some(b), temporal_opts())?
        } else {
            Conv3d::new(
                cin,
                cout,
                [3, 1, 1],
                &vidgen_video_nn::Conv3dConfig {
                    padding: [1, 0, 0],
                    ..Default::default()
                },
                vbc,
            )?
        };
        Ok(Self { norm, conv })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(&self.norm.forward_silu(x)?)
    }
}

fn temporal_opts() -> Conv3dOpts {
    Conv3dOpts {
        padding: [1, 0, 0],
        ..Default::default()
    }
}

/// ModelScope's temporal convolution block (diffusers `TemporalConvLayer`): four stages of
/// `GroupNorm → SiLU → Conv3d` with kernel `(3, 1, 1)` (padding `(1, 0, 0)`, through
/// [`vidgen_video_kernels::conv3d`]) and a residual: `x + conv4(conv3(conv2(conv1(x))))`. The last
/// convolution is zero-initialised, so a freshly built layer is the identity. Dropout is
/// inference-off. Keys: `conv1.0` (norm), `conv1.2`, `conv{2,3,4}.0`, `conv{2,3,4}.3`.
#[derive(Debug, Clone)]
pub struct TemporalConvLayer {
    stages: [NormActConv; 4],
    channels: usize,
}

impl TemporalConvLayer {
    /// Builds the layer for `channels` channels (`in_dim = out_dim` as every diffusers model
    /// uses it) with `groups` GroupNorm groups.
    ///
    /// # Errors
    /// Groups not dividing channels; missing / mis-shaped tensors.
    pub fn new(channels: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        let c = channels;
        Ok(Self {
            stages: [
                NormActConv::new(c, c, groups, false, 2, vb.pp("conv1"))?,
                NormActConv::new(c, c, groups, false, 3, vb.pp("conv2"))?,
                NormActConv::new(c, c, groups, false, 3, vb.pp("conv3"))?,
                NormActConv::new(c, c, groups, true, 3, vb.pp("conv4"))?,
            ],
            channels,
        })
    }

    /// Applies the layer.
    ///
    /// # Shapes
    /// `[B, C, T, H, W]` → `[B, C, T, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = VideoShape::of(x)?;
        if s.c != self.channels {
            return Err(Error::shape(
                "temporal conv input",
                &[s.b, self.channels, s.t, s.h, s.w],
                x.dims(),
            ));
        }
        let mut h = x.clone();
        for st in &self.stages {
            h = st.forward(&h)?;
        }
        Ok((x + h)?)
    }
}

/// Construction arguments of a [`TransformerTemporalModel`].
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerTemporalConfig {
    /// Heads of the temporal attention.
    pub num_attention_heads: usize,
    /// Head size (`inner_dim = heads·head_dim`).
    pub attention_head_dim: usize,
    /// Channels of the video features.
    pub in_channels: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// GroupNorm groups of `norm` (eps 1e-6).
    pub norm_num_groups: usize,
    /// Sinusoidal positions added before each attention (AnimateDiff), with this many rows:
    /// the most frames a forward pass may have. `None`: no positional embedding (UNet3D).
    pub max_seq_length: Option<usize>,
    /// The context width the reference gives the blocks; with double self-attention it sets no
    /// weight shapes, kept for documentation.
    pub cross_attention_dim: Option<usize>,
}

/// The temporal transformer (diffusers `TransformerTemporalModel` / `AnimateDiffTransformer3D`):
///
/// 1. `norm`: GroupNorm over `[B, C, T, H, W]` (statistics over frames and pixels);
/// 2. reshape to one sequence per pixel, `[B·H·W, T, C]`, and `proj_in` (Linear);
/// 3. `transformer_blocks`: `BasicTransformerBlock`s with two self-attentions over frames
///    (`double_self_attention`), GEGLU feed-forward, optional sinusoidal positions;
/// 4. `proj_out` (Linear), back to `[B, C, T, H, W]`, plus the input.
#[derive(Debug, Clone)]
pub struct TransformerTemporalModel {
    norm: GroupNorm,
    proj_in: Linear,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Linear,
    channels: usize,
    max_seq_length: Option<usize>,
}

impl TransformerTemporalModel {
    /// Builds the model from `vb`.
    ///
    /// # Errors
    /// Bad sizes; missing / mis-shaped tensors.
    pub fn new(cfg: &TransformerTemporalConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.in_channels;
        let inner = cfg.num_attention_heads * cfg.attention_head_dim;
        if inner == 0 || cfg.num_layers == 0 {
            return Err(Error::config(
                "temporal transformer",
                format!(
                    "{} heads × {} head size and {} layers must all be >= 1",
                    cfg.num_attention_heads, cfg.attention_head_dim, cfg.num_layers
                ),
            ));
        }
        let mut bc = BasicTransformerBlockConfig::new(
            inner,
            cfg.num_attention_heads,
            cfg.attention_head_dim,
            cfg.cross_attention_dim,
        );
        bc.activation_fn = FeedForwardActivation::Geglu;
        bc.double_self_attention = true;
        bc.positional_embeddings = cfg.max_seq_length;
        let transformer_blocks = (0..cfg.num_layers)
            .map(|i| BasicTransformerBlock::new(&bc, vb.pp("transformer_blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::new(cfg.norm_num_groups, c, 1e-6, vb.pp("norm"))?,
            proj_in: Linear::new(c, inner, true, vb.pp("proj_in"))?,
            transformer_blocks,
            proj_out: Linear::new(inner, c, true, vb.pp("proj_out"))?,
            channels: c,
            max_seq_length: cfg.max_seq_length,
        })
    }

    /// The most frames a forward pass may have (`None`: unbounded).
    pub fn max_frames(&self) -> Option<usize> {
        self.max_seq_length
    }

    /// Applies the temporal transformer.
    ///
    /// # Shapes
    /// `[B, C, T, H, W]` → `[B, C, T, H, W]`.
    ///
    /// # Errors
    /// Another channel count, or more frames than `max_seq_length`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = VideoShape::of(x)?;
        if s.c != self.channels {
            return Err(Error::shape(
                "temporal transformer input",
                &[s.b, self.channels, s.t, s.h, s.w],
                x.dims(),
            ));
        }
        if let Some(m) = self.max_seq_length {
            if s.t > m {
                return Err(Error::invalid(
                    "num_frames",
                    format!(
                        "{} frames exceed the motion module's positional embedding capacity \
                         of {m} (motion_max_seq_length)",
                        s.t
                    ),
                ));
            }
        }
        let n = self.norm.forward(x)?;
        // (B, C, T, H, W) -> (B·H·W, T, C)
        let (seq, shape) = VideoShape::to_time_sequences(&n)?;
        let mut h = self.proj_in.forward(&seq.contiguous()?)?;
        for b in &self.transformer_blocks {
            h = b.forward(&h, None)?;
        }
        let h = self.proj_out.forward(&h)?;
        // (B·H·W, T, C) -> (B, C, T, H, W)
        let h = VideoShape::from_time_sequences(&h, shape)?;
        Ok((h + x)?)
    }
}
