//! The Llama decoder: transformers' `LlamaForCausalLM`, module for module.
//!
//! Reference: `transformers/models/llama/modeling_llama.py`. Struct fields carry the checkpoint
//! names (`model.layers.N.self_attn.q_proj`, `mlp.gate_proj`, `input_layernorm`, ...), so a
//! `save_pretrained` directory loads unchanged through [`vidgen_video_core::ModelDir`].

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, LoadReport, ModelDir, Result};
use vidgen_video_kernels::{attention, AttentionOpts};

use vidgen_video_nn::{swiglu, Embedding, Linear, RmsNorm};

use crate::cache::KvCache;
use crate::config::LlamaConfig;
use crate::rope::RotaryEmbedding;

/// Which positions [`LlamaForCausalLM`] computes logits for (transformers' `logits_to_keep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogitsToKeep {
    /// Every position: `[B, T, vocab]`.
    #[default]
    All,
    /// Only the last position: `[B, 1, vocab]` (generation; saves `T − 1` rows of `lm_head`).
    Last,
}

/// Linear layers that read the same input: fused into one product for inference, kept apart
/// while training (their weights are variables that a concatenated copy would not follow).
#[derive(Debug, Clone)]
enum Projections {
    /// Weights concatenated on the output dim, outputs side by side in the layers' order.
    Fused(Linear),
    /// The layers as loaded.
    Separate(Vec<Linear>),
}

impl Projections {
    fn new(layers: Vec<Linear>) -> Result<Self> {
        let refs: Vec<&Linear> = layers.iter().collect();
        Ok(match Linear::fuse(&refs)? {
            Some(f) => Projections::Fused(f),
            None => Projections::Separate(layers),
        })
    }
}

/// Multi-head self-attention with grouped-query key / value heads and RoPE.
#[derive(Debug, Clone)]
pub struct LlamaAttention {
    /// `q_proj`, `k_proj`, `v_proj` in that order.
    qkv: Projections,
    o_proj: Linear,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

impl LlamaAttention {
    /// Loads `q_proj`, `k_proj`, `v_proj`, `o_proj` (with biases if `attention_bias`).
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (nq, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let bias = cfg.attention_bias;
        let q_proj = Linear::new(h, nq * hd, bias, vb.pp("q_proj"))?;
        let k_proj = Linear::new(h, nkv * hd, bias, vb.pp("k_proj"))?;
        let v_proj = Linear::new(h, nkv * hd, bias, vb.pp("v_proj"))?;
        Ok(LlamaAttention {
            qkv: Projections::new(vec![q_proj, k_proj, v_proj])?,
            o_proj: Linear::new(nq * hd, h, bias, vb.pp("o_proj"))?,
            n_heads: nq,
            n_kv_heads: nkv,
            head_dim: hd,
        })
    }

    /// Causal self-attention over the cached positions and `x`.
    ///
    /// # Shapes
    /// `x`: `[B, T, hidden]`; `cos`, `sin`: `[T, rotary_dim / 2]` for this call's positions;
    /// returns `[B, T, hidden]`. With a cache, its layer `layer` receives the `T` new keys and
    /// values (the caller advances it once every layer has run).
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        cos: &Tensor,
        sin: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nq, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        // [B, T, heads·D] -> [B, T, heads, D] -> [B, heads, T, D]
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        // (q, k, v) as [B, heads, T, D], and whether q / k are already rotated.
        let (q, k, v, rotated) = match &self.qkv {
            Projections::Fused(qkv) => {
                let y = qkv.forward(x)?;
                let rd = rope.config().rotary_dim;
                match crate::rope::split_heads_rope(&y, (nq, nkv), hd, rd, cos, sin)? {
                    Some((q, k, v)) => (q, k, v, true),
                    None => {
                        // [B, T, (Hq + 2·Hkv)·D] -> [B, T, Hq + 2·Hkv, D]; each part ->
                        // [B, heads, T, D]
                        let y = y.reshape((b, t, nq + 2 * nkv, hd))?;
                        let part = |start: usize, n: usize| -> Result<Tensor> {
                            Ok(y.narrow(2, start, n)?.transpose(1, 2)?.contiguous()?)
                        };
                        (part(0, nq)?, part(nq, nkv)?, part(nq + nkv, nkv)?, false)
                    }
                }
            }
            Projections::Separate(p) => (
                heads(p[0].forward(x)?, nq)?,
                heads(p[1].forward(x)?, nkv)?,
                heads(p[2].forward(x)?, nkv)?,
                false,
            ),
        };
        let (q, k) = if rotated {
            (q, k)
        } else {
            (rope.apply(&q, cos, sin)?, rope.apply(&k, cos, sin)?)
        };
        let (k, v) = match cache {
            Some((c, layer)) => c.append(layer, &k, &v)?,
            None => (k, v),
        };
        // q [B, Hq, T, D], k/v [B, Hkv, past+T, D]: GQA and the bottom-right causal diagonal are
        // the kernel's, so cached decoding needs no mask.
        let y = attention(&q, &k, &v, &AttentionOpts::causal())?;
        // [B, Hq, T, D] -> [B, T, Hq, D] -> [B, T, Hq·D]
        let y = y.transpose(1, 2)?.reshape((b, t, nq * hd))?;
        self.o_proj.forward(&y)
    }
}

/// The SwiGLU feed-forward block: `down_proj(silu(gate_proj(x)) · up_proj(x))`.
#[derive(Debug, Clone)]
pub struct LlamaMlp {
    /// `gate_proj`, `up_proj` in that order.
    gate_up: Projections,
    down_proj: Linear,
}

impl LlamaMlp {
    /// Loads `gate_proj`, `up_proj`, `down_proj` (with biases if `mlp_bias`).
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        let gate_proj = Linear::new(h, i, bias, vb.pp("gate_proj"))?;
        let up_proj = Linear::new(h, i, bias, vb.pp("up_proj"))?;
        Ok(LlamaMlp {
            gate_up: Projections::new(vec![gate_proj, up_proj])?,
            down_proj: Linear::new(i, h, bias, vb.pp("down_proj"))?,
        })
    }

    /// # Shapes
    /// `x`: `[B, T, hidden]` → `[B, T, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = match &self.gate_up {
            // One product for both, then silu(gate) · up in one pass over its rows (candle's
            // element-wise ops on the two strided halves would cost more than the fusion saves).
            Projections::Fused(gu) => swiglu(&gu.forward(x)?)?,
            Projections::Separate(p) => (p[0].forward(x)?.silu()? * p[1].forward(x)?)?,
        };
        self.down_proj.forward(&h)
    }
}

/// One pre-norm decoder layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Debug, Clone)]
pub struct LlamaDecoderLayer {
    self_attn: LlamaAttention,
    mlp: LlamaMlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl LlamaDecoderLayer {
    /// Loads `self_attn`, `mlp`, `input_layernorm`, `post_attention_layernorm`.
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(LlamaDecoderLayer {
            self_attn: LlamaAttention::new(cfg, vb.pp("self_attn"))?,
            mlp: LlamaMlp::new(cfg, vb.pp("mlp"))?,
            input_layernorm: RmsNorm::new(h, eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: RmsNorm::new(h, eps, vb.pp("post_attention_layernorm"))?,
        })
    }

    /// # Shapes
    /// `x`: `[B, T, hidden]` → `[B, T, hidden]`; `cos`, `sin` as [`LlamaAttention::forward`].
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        cos: &Tensor,
        sin: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let a = self.self_attn.forward(&h, rope, cos, sin, cache)?;
        let (x, h) = self.post_attention_layernorm.forward_residual(x, &a)?;
        Ok((&x + self.mlp.forward(&h)?)?)
    }
}

/// The decoder stack without the head: `embed_tokens`, `layers`, final `norm`.
#[derive(Debug, Clone)]
pub struct LlamaModel {
    embed_tokens: Embedding,
    layers: Vec<LlamaDecoderLayer>,
    norm: RmsNorm,
    rotary: RotaryEmbedding,
    cfg: LlamaConfig,
}

impl LlamaModel {
    /// Builds the stack from `vb` (the `model.` prefix of a checkpoint); validates `cfg`.
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let embed_tokens = Embedding::new(cfg.vocab_size, cfg.hidden_size, vb.pp("embed_tokens"))?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let vl = vb.pp("layers");
        for i in 0..cfg.num_hidden_layers {
            layers.push(LlamaDecoderLayer::new(cfg, vl.pp(i))?);
        }
        Ok(LlamaModel {
            embed_tokens,
            layers,
            norm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?,
            rotary: RotaryEmbedding::new(cfg.rope()?),
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The token embedding table `[vocab, hidden]`.
    pub fn embed_weight(&self) -> &Tensor {
        self.embed_tokens.weight()
    }

    /// Looks token ids up in `embed_tokens`.
    ///
    /// # Shapes
    /// `ids`: `[B, T]` of `u32` or `i64` → `[B, T, hidden]`.
    ///
    /// # Errors
    /// An id `≥ vocab_size` (or negative) is an [`Error::InvalidArgument`] naming it.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let ids = checked_ids(ids, self.cfg.vocab_size)?;
        self.embed_tokens.forward(&ids)
    }

    /// Runs the layers and the final norm on input embeddings.
    ///
    /// With a cache, the positions continue from `cache.len()` and the cache is advanced by
    /// `T`; without, positions are `0 .. T`. When `hidden_states` is given it receives
    /// transformers' `output_hidden_states`: the embeddings, the output of every layer but the
    /// last, and the final normed output (`num_hidden_layers + 1` tensors).
    ///
    /// # Shapes
    /// `embeds`: `[B, T, hidden]` → `[B, T, hidden]` (after the final norm).
    ///
    /// # Errors
    /// A last dimension other than `hidden_size`, a sequence longer than the context
    /// ([`LlamaConfig::context_len`]), a full cache.
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        mut cache: Option<&mut KvCache>,
        mut hidden_states: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let (b, t, h) = match embeds.dims() {
            &[b, t, h] => (b, t, h),
            d => {
                return Err(Error::invalid(
                    "input embeddings",
                    format!(
                        "expected [B, T, hidden] = [B, T, {}], got {d:?}",
                        self.cfg.hidden_size
                    ),
                ))
            }
        };
        if h != self.cfg.hidden_size {
            return Err(Error::shape(
                "input embeddings (last dim = hidden_size)",
                &[b, t, self.cfg.hidden_size],
                embeds.dims(),
            ));
        }
        if t == 0 {
            return Err(Error::invalid("input embeddings", "empty sequence (T = 0)"));
        }
        let offset = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        if let Some(ctx) = self.cfg.context_len() {
            if offset + t > ctx {
                return Err(Error::invalid(
                    "sequence length",
                    format!(
                        "{} positions ({offset} cached + {t} new) exceed the context of {ctx} \
                         (max_position_embeddings)",
                        offset + t
                    ),
                ));
            }
        }
        if let Some(c) = cache.as_deref() {
            c.check_room(b, t)?;
        }
        let (cos, sin) = self
            .rotary
            .cos_sin(offset, t, embeds.dtype(), embeds.device())?;
        let mut x = embeds.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some(hs) = hidden_states.as_deref_mut() {
                hs.push(x.clone());
            }
            let c = cache.as_deref_mut().map(|c| (c, i));
            x = layer.forward(&x, &self.rotary, &cos, &sin, c)?;
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        let out = self.norm.forward(&x)?;
        if let Some(hs) = hidden_states {
            hs.push(out.clone());
        }
        Ok(out)
    }
}

/// The model's logits leave the crate only finite: one pass over them (cheap beside `lm_head`),
/// an [`Error::NonFinite`] naming the model and `what` (the positions) otherwise.
fn check_logits(logits: &Tensor, what: &str) -> Result<()> {
    vidgen_video_core::check_finite(logits, &format!("LlamaForCausalLM logits ({what})"))
}

/// Checks token ids against the vocabulary and returns them as `u32`.
pub(crate) fn checked_ids(ids: &Tensor, vocab: usize) -> Result<Tensor> {
    if ids.rank() != 2 {
        return Err(Error::invalid(
            "input_ids",
            format!(
                "expected a rank-2 [B, T] tensor, got shape {:?}",
                ids.dims()
            ),
        ));
    }
    if ids.elem_count() == 0 {
        return Err(Error::invalid("input_ids", "empty sequence"));
    }
    let (min, max) = match ids.dtype() {
        DType::U32 => {
            let f = ids.flatten_all()?;
            (0i64, f.max(0)?.to_scalar::<u32>()? as i64)
        }
        DType::I64 => {
            let f = ids.flatten_all()?;
            (f.min(0)?.to_scalar::<i64>()?, f.max(0)?.to_scalar::<i64>()?)
        }
        DType::U8 => {
            let f = ids.flatten_all()?;
            (0i64, f.max(0)?.to_scalar::<u8>()? as i64)
        }
        dt => {
            return Err(Error::DType {
                key: "input_ids".into(),
                expected: "u32, i64 or u8".into(),
                found: format!("{dt:?}"),
            })
        }
    };
    if min < 0 || max >= vocab as i64 {
        let bad = if min < 0 { min } else { max };
        return Err(Error::invalid(
            "input_ids",
            format!("token id {bad} is out of range for a vocabulary of {vocab}"),
        ));
    }
    if ids.dtype() == DType::U32 {
        Ok(ids.clone())
    } else {
        Ok(ids.to_dtype(DType::U32)?)
    }
}

/// `LlamaForCausalLM`: the decoder stack and the `lm_head` (tied to `embed_tokens` when
/// `tie_word_embeddings`).
#[derive(Debug, Clone)]
pub struct LlamaForCausalLM {
    model: LlamaModel,
    lm_head: Linear,
}

impl LlamaForCausalLM {
    /// Builds the model from `vb` with checkpoint keys `model.*` and `lm_head.weight`
    /// (not read when the embeddings are tied).
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let model = LlamaModel::new(cfg, vb.pp("model"))?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::from_weights(model.embed_weight().clone(), None)?
        } else {
            Linear::new(cfg.hidden_size, cfg.vocab_size, false, vb.pp("lm_head"))?
        };
        Ok(LlamaForCausalLM { model, lm_head })
    }

    /// Loads a transformers `save_pretrained` directory strictly (config validated, every key
    /// present with its shape), converting weights to `dtype`. A path to a `.gguf` file loads
    /// it with [`LlamaForCausalLM::from_gguf`].
    ///
    /// # Errors
    /// Unreadable / invalid `config.json`; missing or mis-shaped keys (named, with the file).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let dir = dir.as_ref();
        if dir.is_file()
            && dir
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return Self::from_gguf(dir, dtype, device);
        }
        let cfg = LlamaConfig::from_dir(dir)?;
        ModelDir::open(dir)?.load(dtype, device, |vb| LlamaForCausalLM::new(&cfg, vb))
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        self.model.config()
    }

    /// The decoder stack.
    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.model.embed_weight().dtype()
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        self.model.embed_weight().device()
    }

    /// Token embeddings, see [`LlamaModel::embed`].
    ///
    /// # Shapes
    /// `[B, T]` ids → `[B, T, hidden]`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.model.embed(ids)
    }

    /// An empty [`KvCache`] for `batch` sequences of at most `max_len` positions, in the
    /// model's dtype and device.
    pub fn new_cache(&self, batch: usize, max_len: usize) -> Result<KvCache> {
        KvCache::new(self.config(), batch, max_len, self.dtype(), self.device())
    }

    /// Logits for token ids.
    ///
    /// # Shapes
    /// `input_ids`: `[B, T]` (`u32` or `i64`) → `[B, T, vocab]` (`All`) or `[B, 1, vocab]`
    /// (`Last`), in the model's dtype.
    ///
    /// # Errors
    /// See [`LlamaModel::forward_embeds`] and [`LlamaModel::embed`]; [`Error::NonFinite`]
    /// naming the positions when the logits hold NaN or ±inf.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        cache: Option<&mut KvCache>,
        keep: LogitsToKeep,
    ) -> Result<Tensor> {
        let e = self.model.embed(input_ids)?;
        self.forward_embeds(&e, cache, keep)
    }

    /// Logits for input embeddings (e.g. a projected text prefix followed by token
    /// embeddings).
    ///
    /// # Shapes
    /// `embeds`: `[B, T, hidden]` → `[B, T, vocab]` or `[B, 1, vocab]`.
    ///
    /// # Errors
    /// See [`LlamaModel::forward_embeds`]; [`Error::NonFinite`] naming the positions when the
    /// logits hold NaN or ±inf.
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        cache: Option<&mut KvCache>,
        keep: LogitsToKeep,
    ) -> Result<Tensor> {
        let start = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        // On a pool worker: a decode step is ~50 small parallel operations (see `in_pool`).
        let logits = vidgen_video_core::in_pool(|| {
            let h = self.model.forward_embeds(embeds, cache, None)?;
            self.head_unchecked(&h, keep)
        })?;
        let end = start + embeds.dim(1)?;
        check_logits(&logits, &format!("positions {start}..{end}"))?;
        Ok(logits)
    }

    /// Logits and transformers' `hidden_states` (embeddings, every layer's output but the last,
    /// final normed output), no cache.
    ///
    /// # Shapes
    /// `input_ids`: `[B, T]` → logits `[B, T, vocab]` and `num_hidden_layers + 1` tensors
    /// `[B, T, hidden]`.
    pub fn forward_with_hidden_states(&self, input_ids: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let e = self.model.embed(input_ids)?;
        let mut hs = Vec::with_capacity(self.config().num_hidden_layers + 1);
        let h = self.model.forward_embeds(&e, None, Some(&mut hs))?;
        let logits = self.head_unchecked(&h, LogitsToKeep::All)?;
        check_logits(&logits, &format!("positions 0..{}", e.dim(1)?))?;
        Ok((logits, hs))
    }

    /// Applies `lm_head` to normed hidden states.
    ///
    /// # Shapes
    /// `h`: `[B, T, hidden]` → `[B, T, vocab]` or `[B, 1, vocab]`.
    ///
    /// # Errors
    /// `h` not `[B, T ≥ 1, hidden]`; [`Error::NonFinite`] when the logits hold NaN or ±inf.
    pub fn head(&self, h: &Tensor, keep: LogitsToKeep) -> Result<Tensor> {
        let logits = self.head_unchecked(h, keep)?;
        check_logits(&logits, "lm_head output")?;
        Ok(logits)
    }

    fn head_unchecked(&self, h: &Tensor, keep: LogitsToKeep) -> Result<Tensor> {
        let t = match h.dims() {
            &[_, t, _] if t > 0 => t,
            d => {
                return Err(Error::invalid(
                    "hidden states",
                    format!("expected [B, T >= 1, hidden], got {d:?}"),
                ))
            }
        };
        match keep {
            LogitsToKeep::All => self.lm_head.forward(h),
            LogitsToKeep::Last => self.lm_head.forward(&h.narrow(1, t - 1, 1)?),
        }
    }

    /// The last dimension of the logits.
    pub fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    /// The width of the input embeddings.
    pub fn hidden_size(&self) -> usize {
        self.config().hidden_size
    }
}
