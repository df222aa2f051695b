//! Multi-head attention with configurable projection names (transformers' CLIP / BERT / ViT
//! attention, PyTorch-style self / cross attention), on [`vidgen_video_kernels::attention`].

use candle_core::Tensor;
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, Result};
use vidgen_video_kernels::{attention, AttentionOpts};

use crate::nn::Linear;

/// Construction arguments of a [`MultiHeadAttention`].
#[derive(Debug, Clone, PartialEq)]
pub struct MhaConfig {
    /// Width of the queries and of the output.
    pub embed_dim: usize,
    /// Number of heads (`embed_dim` must be a multiple).
    pub num_heads: usize,
    /// Width of the keys / values input (`None` = `embed_dim`: self-attention).
    pub kv_dim: Option<usize>,
    /// Bias on the q / k / v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub out_bias: bool,
    /// Checkpoint names of the q, k, v and output projections, relative to the layer's prefix
    /// (`q_proj` / `k_proj` / `v_proj` / `out_proj` for CLIP; `query` / `key` / `value` /
    /// `output.dense` for BERT-style checkpoints).
    pub names: [String; 4],
    /// Score scale (`None` = `1/√head_dim`).
    pub scale: Option<f64>,
}

impl MhaConfig {
    /// Self-attention with biased projections named as transformers' CLIP (`q_proj`,
    /// `k_proj`, `v_proj`, `out_proj`).
    pub fn clip(embed_dim: usize, num_heads: usize) -> Self {
        Self {
            embed_dim,
            num_heads,
            kv_dim: None,
            qkv_bias: true,
            out_bias: true,
            names: ["q_proj", "k_proj", "v_proj", "out_proj"].map(String::from),
            scale: None,
        }
    }
}

/// Multi-head attention: `out(softmax(q kᵀ · scale + mask) v)` with `q = x W_q`, `k = c W_k`,
/// `v = c W_v` (`c` = context, or `x` itself). Scores and softmax in f32.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
    scale: Option<f64>,
}

impl MultiHeadAttention {
    /// Builds the layer from `vb` (projection keys from `cfg.names`).
    ///
    /// # Errors
    /// Zero heads, `embed_dim` not a multiple of `num_heads`; missing / mis-shaped tensors.
    pub fn new(cfg: &MhaConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.num_heads == 0 || cfg.embed_dim == 0 || !cfg.embed_dim.is_multiple_of(cfg.num_heads)
        {
            return Err(Error::config(
                "num_attention_heads",
                format!(
                    "{} heads must be ≥ 1 and divide the width {}",
                    cfg.num_heads, cfg.embed_dim
                ),
            ));
        }
        let kv = cfg.kv_dim.unwrap_or(cfg.embed_dim);
        let d = cfg.embed_dim;
        let [qn, kn, vn, on] = &cfg.names;
        Ok(Self {
            q: Linear::new(d, d, cfg.qkv_bias, vb.pp(qn))?,
            k: Linear::new(kv, d, cfg.qkv_bias, vb.pp(kn))?,
            v: Linear::new(kv, d, cfg.qkv_bias, vb.pp(vn))?,
            out: Linear::new(d, d, cfg.out_bias, vb.pp(on))?,
            heads: cfg.num_heads,
            head_dim: d / cfg.num_heads,
            scale: cfg.scale,
        })
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Attention of `x` over `context` (or over itself).
    ///
    /// # Shapes
    /// `x [B, N, embed_dim]`, `context [B, M, kv_dim]`, `mask` additive, broadcastable to
    /// `[B, heads, N, M]` (`-inf` = masked) → `[B, N, embed_dim]`. `causal` is bottom-right
    /// aligned (query `i` sees keys `j ≤ i + M − N`).
    ///
    /// # Errors
    /// Rank or width mismatches; a context whose batch differs.
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        mask: Option<&Tensor>,
        causal: bool,
    ) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        let ctx = context.unwrap_or(x);
        let (cb, m, _) = ctx.dims3()?;
        if cb != b {
            return Err(Error::invalid(
                "attention context",
                format!("batch {cb} differs from the queries' batch {b}"),
            ));
        }
        let (h, d) = (self.heads, self.head_dim);
        // [B, L, h·d] -> [B, h, L, d]
        let split = |t: Tensor, l: usize| -> Result<Tensor> {
            vidgen_video_kernels::contiguous(&t.reshape((b, l, h, d))?.transpose(1, 2)?)
        };
        let q = split(self.q.forward(x)?, n)?;
        let k = split(self.k.forward(ctx)?, m)?;
        let v = split(self.v.forward(ctx)?, m)?;
        let opts = AttentionOpts {
            scale: self.scale,
            causal,
            mask: mask.cloned(),
        };
        let o = attention(&q, &k, &v, &opts)?;
        // [B, h, N, d] -> [B, N, h·d]
        let o = vidgen_video_kernels::contiguous(&o.transpose(1, 2)?)?.reshape((b, n, h * d))?;
        self.out.forward(&o)
    }
}
