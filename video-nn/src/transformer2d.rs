//! diffusers' `Transformer2DModel` for continuous inputs (the spatial transformer of SD UNets).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use vidgen_video_core::Result;

use crate::attention::{BasicTransformerBlock, BasicTransformerBlockConfig, FeedForwardActivation};
use crate::nn::{Conv2d, GroupNorm, Linear};

/// Construction arguments of a [`Transformer2DModel`], named as diffusers' config.
#[derive(Debug, Clone, PartialEq)]
pub struct Transformer2DConfig {
    /// Heads.
    pub num_attention_heads: usize,
    /// Head size (`inner_dim = heads·head_dim`).
    pub attention_head_dim: usize,
    /// Input (and output) channels.
    pub in_channels: usize,
    /// Number of [`BasicTransformerBlock`]s.
    pub num_layers: usize,
    /// Cross-attention context channels.
    pub cross_attention_dim: Option<usize>,
    /// GroupNorm groups of `norm` (eps 1e-6).
    pub norm_num_groups: usize,
    /// `proj_in` / `proj_out` are Linear (`true`) or 1×1 convs (`false`).
    pub use_linear_projection: bool,
    /// Feed-forward activation of the blocks.
    pub activation_fn: FeedForwardActivation,
    /// q/k/v bias of the blocks.
    pub attention_bias: bool,
    /// See [`BasicTransformerBlockConfig::only_cross_attention`].
    pub only_cross_attention: bool,
    /// See [`BasicTransformerBlockConfig::double_self_attention`].
    pub double_self_attention: bool,
    /// LayerNorm weights in the blocks.
    pub norm_elementwise_affine: bool,
    /// LayerNorm epsilon in the blocks.
    pub norm_eps: f64,
}

impl Transformer2DConfig {
    /// diffusers' defaults for `heads × head_dim` over `in_channels` (32 groups, conv
    /// projections, GEGLU).
    pub fn new(heads: usize, head_dim: usize, in_channels: usize) -> Self {
        Self {
            num_attention_heads: heads,
            attention_head_dim: head_dim,
            in_channels,
            num_layers: 1,
            cross_attention_dim: None,
            norm_num_groups: 32,
            use_linear_projection: false,
            activation_fn: FeedForwardActivation::Geglu,
            attention_bias: false,
            only_cross_attention: false,
            double_self_attention: false,
            norm_elementwise_affine: true,
            norm_eps: 1e-5,
        }
    }

    /// The configuration of each block.
    pub fn block_config(&self) -> BasicTransformerBlockConfig {
        let mut b = BasicTransformerBlockConfig::new(
            self.num_attention_heads * self.attention_head_dim,
            self.num_attention_heads,
            self.attention_head_dim,
            self.cross_attention_dim,
        );
        b.activation_fn = self.activation_fn;
        b.attention_bias = self.attention_bias;
        b.only_cross_attention = self.only_cross_attention;
        b.double_self_attention = self.double_self_attention;
        b.norm_elementwise_affine = self.norm_elementwise_affine;
        b.norm_eps = self.norm_eps;
        b
    }
}

#[derive(Debug, Clone)]
enum Proj {
    Linear(Linear),
    Conv(Conv2d),
}

/// diffusers' `Transformer2DModel` (continuous input): `x + proj_out(blocks(proj_in(norm(x))))`
/// over the `H·W` pixels (keys `norm`, `proj_in`, `transformer_blocks.N`, `proj_out`).
#[derive(Debug, Clone)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Proj,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Proj,
    inner_dim: usize,
}

impl Transformer2DModel {
    /// Builds the model from `vb`.
    ///
    /// # Errors
    /// Bad sizes; missing / mis-shaped tensors.
    pub fn new(cfg: &Transformer2DConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.in_channels;
        let inner = cfg.num_attention_heads * cfg.attention_head_dim;
        let (proj_in, proj_out) = if cfg.use_linear_projection {
            (
                Proj::Linear(Linear::new(c, inner, true, vb.pp("proj_in"))?),
                Proj::Linear(Linear::new(inner, c, true, vb.pp("proj_out"))?),
            )
        } else {
            (
                Proj::Conv(Conv2d::new(c, inner, 1, 1, 0, true, vb.pp("proj_in"))?),
                Proj::Conv(Conv2d::new(inner, c, 1, 1, 0, true, vb.pp("proj_out"))?),
            )
        };
        let bc = cfg.block_config();
        let blocks = (0..cfg.num_layers)
            .map(|i| BasicTransformerBlock::new(&bc, vb.pp("transformer_blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::new(cfg.norm_num_groups, c, 1e-6, vb.pp("norm"))?,
            proj_in,
            transformer_blocks: blocks,
            proj_out,
            inner_dim: inner,
        })
    }

    /// Applies the transformer; `context` is `encoder_hidden_states`.
    ///
    /// # Shapes
    /// `x [B, C, H, W]`, `context [B, M, D]` → `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = self.norm.forward(x)?;
        let inner = self.inner_dim;
        // [B, C, H, W] -> [B, HW, C]
        let to_seq = |t: &Tensor, ch: usize| -> Result<Tensor> {
            Ok(
                vidgen_video_kernels::contiguous(&t.permute((0, 2, 3, 1))?)?.reshape((
                    b,
                    h * w,
                    ch,
                ))?,
            )
        };
        let mut s = match &self.proj_in {
            Proj::Conv(p) => to_seq(&p.forward(&n)?, inner)?,
            Proj::Linear(p) => p.forward(&to_seq(&n, c)?)?,
        };
        for blk in &self.transformer_blocks {
            s = blk.forward(&s, context)?;
        }
        // [B, HW, C] -> [B, C, H, W]
        let to_map = |t: &Tensor, ch: usize| -> Result<Tensor> {
            vidgen_video_kernels::contiguous(&t.reshape((b, h, w, ch))?.permute((0, 3, 1, 2))?)
        };
        let out = match &self.proj_out {
            Proj::Conv(p) => p.forward(&to_map(&s, inner)?)?,
            Proj::Linear(p) => to_map(&p.forward(&s)?, c)?,
        };
        Ok((out + x)?)
    }
}
