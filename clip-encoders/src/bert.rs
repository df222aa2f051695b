//! BERT encoders (transformers' `BertModel`, `modeling_bert.py` 5.23) on video-nn's layers: the
//! backbone of sentence-transformers models such as `all-MiniLM-L6-v2` (see [`crate::minilm`]).
//!
//! ```text
//! h₀ = LayerNorm(word_embeddings(ids) + position_embeddings(0..N) + token_type_embeddings(tt))
//! per layer (post-LN):
//!   a = LayerNorm(h + output.dense(attention(h)))          attention.self.{query,key,value}
//!   h = LayerNorm(a + output.dense(act(intermediate.dense(a))))
//! last_hidden_state = h_L                                   (no final LayerNorm)
//! pooler_output = tanh(pooler.dense(h_L[:, 0]))             (when the checkpoint has a pooler)
//! ```
//!
//! Padding is an additive key mask (`f32::MIN` on padded keys, transformers' convention): padded
//! positions still get states (they attend to the real tokens), and real positions never see
//! them. Checkpoint keys are transformers' (`embeddings.word_embeddings.weight`,
//! `encoder.layer.{i}.attention.self.query.weight`, …); a `bert.` prefix (`BertForMaskedLM`
//! and friends) is accepted by [`BertModel::from_pretrained`]. The `embeddings.position_ids`
//! buffer some checkpoints carry is not a weight and is reported as unused.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use vidgen_video_core::{Error, LoadReport, ModelDir, Result};
use vidgen_video_nn::{Activation, Embedding, LayerNorm, Linear, MhaConfig, MultiHeadAttention};

use crate::config::parse_hidden_act;

fn d_vocab() -> usize {
    30522
}
fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_inter() -> usize {
    3072
}
fn d_act() -> String {
    "gelu".into()
}
fn d_positions() -> usize {
    512
}
fn d_types() -> usize {
    2
}
fn d_eps() -> f64 {
    1e-12
}
fn d_pos_type() -> String {
    "absolute".into()
}

/// `BertConfig` as `config.json` writes it (unknown keys ignored, absent keys at transformers'
/// defaults, those of `bert-base-uncased`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// Word-piece vocabulary size.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Width of the hidden states.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Number of layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads (must divide `hidden_size`).
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Feed-forward activation (`gelu` is the exact erf GELU).
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Positions the model has embeddings for.
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
    /// Segment (token type) vocabulary.
    #[serde(default = "d_types")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: u32,
    /// Must be `absolute` (relative position embeddings are not supported).
    #[serde(default = "d_pos_type")]
    pub position_embedding_type: String,
}

const MAX_WIDTH: usize = 1 << 16;
const MAX_ROWS: usize = 1 << 22;
const MAX_LAYERS: usize = 1 << 10;

impl BertConfig {
    /// Parses `config.json` bytes and validates them.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field (and `file`), [`Error::Unsupported`] for
    /// `hidden_act` / `position_embedding_type`.
    pub fn from_json_bytes(bytes: &[u8], file: Option<&Path>) -> Result<Self> {
        let cfg: Self = vidgen_video_core::loading::parse_config(bytes, file)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a `config.json`.
    ///
    /// # Errors
    /// [`Error::Io`] when unreadable; otherwise as [`BertConfig::from_json_bytes`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_bytes(&bytes, Some(path))
    }

    /// Checks sizes (non-zero, bounded, heads dividing the width), the activation, the
    /// epsilon and the position embedding type.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field; [`Error::Unsupported`].
    pub fn validate(&self) -> Result<()> {
        for (field, v, max) in [
            ("vocab_size", self.vocab_size, MAX_ROWS),
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("num_attention_heads", self.num_attention_heads, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, 4 * MAX_WIDTH),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_ROWS,
            ),
            ("type_vocab_size", self.type_vocab_size, MAX_ROWS),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
        ] {
            if v == 0 && field != "num_hidden_layers" {
                return Err(Error::config(field, "must be at least 1"));
            }
            if v > max {
                return Err(Error::config(field, format!("{v} exceeds {max}")));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::config(
                "num_attention_heads",
                format!(
                    "{} heads do not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(Error::config(
                "layer_norm_eps",
                format!("{} must be finite and > 0", self.layer_norm_eps),
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(Error::Unsupported {
                field: "position_embedding_type".into(),
                value: self.position_embedding_type.clone(),
                supported: "absolute".into(),
            });
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return Err(Error::config(
                "pad_token_id",
                format!(
                    "{} is outside the vocabulary of {}",
                    self.pad_token_id, self.vocab_size
                ),
            ));
        }
        parse_hidden_act(&self.hidden_act).map(|_| ())
    }
}

/// What [`BertModel::forward`] returns.
#[derive(Debug, Clone)]
pub struct BertOutput {
    /// The last layer's output, `[B, N, D]`.
    pub last_hidden_state: Tensor,
    /// The embedding output and every layer's output (`L + 1` tensors `[B, N, D]`).
    pub hidden_states: Vec<Tensor>,
    /// `tanh(pooler.dense(last_hidden_state[:, 0]))`, `[B, D]`, when the model has a pooler.
    pub pooler_output: Option<Tensor>,
}

/// One post-LN BERT layer (`encoder.layer.{i}`).
#[derive(Debug, Clone)]
struct BertLayer {
    attention: MultiHeadAttention,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    act: Activation,
}

impl BertLayer {
    fn new(cfg: &BertConfig, act: Activation, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let att = vb.pp("attention");
        let mha = MhaConfig {
            embed_dim: d,
            num_heads: cfg.num_attention_heads,
            kv_dim: None,
            qkv_bias: true,
            out_bias: true,
            names: ["self.query", "self.key", "self.value", "output.dense"].map(String::from),
            scale: None,
        };
        Ok(Self {
            attention: MultiHeadAttention::new(&mha, att.clone())?,
            attention_norm: LayerNorm::new(
                d,
                cfg.layer_norm_eps,
                true,
                att.pp("output").pp("LayerNorm"),
            )?,
            intermediate: Linear::new(
                d,
                cfg.intermediate_size,
                true,
                vb.pp("intermediate").pp("dense"),
            )?,
            output: Linear::new(cfg.intermediate_size, d, true, vb.pp("output").pp("dense"))?,
            output_norm: LayerNorm::new(
                d,
                cfg.layer_norm_eps,
                true,
                vb.pp("output").pp("LayerNorm"),
            )?,
            act,
        })
    }

    /// # Shapes
    /// `[B, N, D]`, additive mask `[B, 1, 1, N]` → `[B, N, D]`.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let a = self.attention.forward(x, None, mask, false)?;
        let a = self.attention_norm.forward(&(a + x)?)?;
        let i = self.act.forward(&self.intermediate.forward(&a)?)?;
        let o = self.output.forward(&i)?;
        self.output_norm.forward(&(o + a)?)
    }
}

/// transformers' `BertModel` (see the module docs).
#[derive(Debug, Clone)]
pub struct BertModel {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<BertLayer>,
    pooler: Option<Linear>,
    config: BertConfig,
}

impl BertModel {
    /// Builds (or loads) the model from `vb` (keys at its root: `embeddings.*`, `encoder.*`,
    /// and `pooler.dense.*` when `with_pooler`).
    ///
    /// # Errors
    /// An invalid config; missing / mis-shaped tensors.
    pub fn new(cfg: &BertConfig, with_pooler: bool, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let act = parse_hidden_act(&cfg.hidden_act)?;
        let d = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let enc = vb.pp("encoder").pp("layer");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::new(cfg, act, enc.pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if with_pooler {
            Some(Linear::new(d, d, true, vb.pp("pooler").pp("dense"))?)
        } else {
            None
        };
        Ok(Self {
            word_embeddings: Embedding::new(cfg.vocab_size, d, emb.pp("word_embeddings"))?,
            position_embeddings: Embedding::new(
                cfg.max_position_embeddings,
                d,
                emb.pp("position_embeddings"),
            )?,
            token_type_embeddings: Embedding::new(
                cfg.type_vocab_size,
                d,
                emb.pp("token_type_embeddings"),
            )?,
            embeddings_norm: LayerNorm::new(d, cfg.layer_norm_eps, true, emb.pp("LayerNorm"))?,
            layers,
            pooler,
            config: cfg.clone(),
        })
    }

    /// Loads a transformers folder (`config.json` + `model.safetensors`, sharded or not)
    /// strictly: every tensor the model needs must be there with its shape. The pooler is
    /// loaded when the checkpoint has one; keys may sit at the root or under `bert.`.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::BadConfig`] for the config; [`Error::MissingTensor`] naming the
    /// key, [`Error::ShapeMismatch`], or [`Error::Load`] listing several.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let dir = dir.as_ref();
        let cfg = BertConfig::from_file(dir.join("config.json"))?;
        let md = ModelDir::open(dir)?;
        let prefix = if !md.contains("embeddings.word_embeddings.weight")
            && md.contains("bert.embeddings.word_embeddings.weight")
        {
            "bert"
        } else {
            ""
        };
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        let with_pooler = md.contains(&key("pooler.dense.weight"));
        md.load(dtype, device, |vb| {
            let vb = if prefix.is_empty() { vb } else { vb.pp(prefix) };
            Self::new(&cfg, with_pooler, vb)
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        self.word_embeddings.weight().device()
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.word_embeddings.weight().dtype()
    }

    /// Encodes token ids (see the module docs).
    ///
    /// # Shapes
    /// `input_ids [B, N]` (or `[N]` as `B = 1`), any integer dtype, `N ≤
    /// max_position_embeddings`; `attention_mask [B, N]` (1 = token, 0 = padding; `None`: all
    /// tokens); `token_type_ids [B, N]` (`None`: zeros) → [`BertOutput`] with `[B, N, D]`
    /// states.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for float or wrongly ranked ids, an empty batch or sequence,
    /// a sequence longer than the position table, ids or token types out of range, a mask or
    /// token types of another shape.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<BertOutput> {
        let ids = match input_ids.rank() {
            1 => input_ids.unsqueeze(0)?,
            2 => input_ids.clone(),
            r => {
                return Err(Error::invalid(
                    "input_ids",
                    format!(
                        "expected [B, N] token ids, found rank {r} {:?}",
                        input_ids.dims()
                    ),
                ))
            }
        };
        if ids.dtype().is_float() {
            return Err(Error::invalid(
                "input_ids",
                format!("expected integer token ids, found {:?}", ids.dtype()),
            ));
        }
        let (b, n) = ids.dims2()?;
        let max = self.config.max_position_embeddings;
        if b == 0 || n == 0 || n > max {
            return Err(Error::invalid(
                "input_ids",
                format!("batch {b} × length {n}: need ≥ 1 row and a length in 1..={max}"),
            ));
        }
        let dev = self.device().clone();
        let ids = ids.to_device(&dev)?;
        check_range("input_ids", &ids, self.config.vocab_size)?;
        // 1. embeddings [B, N, D]
        let tt = match token_type_ids {
            Some(t) => {
                if t.dims() != [b, n] {
                    return Err(Error::shape("token_type_ids", &[b, n], t.dims()));
                }
                if t.dtype().is_float() {
                    return Err(Error::invalid("token_type_ids", "expected integer ids"));
                }
                let t = t.to_device(&dev)?;
                check_range("token_type_ids", &t, self.config.type_vocab_size)?;
                t
            }
            None => Tensor::zeros((b, n), DType::U32, &dev)?,
        };
        let pos = self.position_embeddings.weight().narrow(0, 0, n)?;
        let h = self
            .word_embeddings
            .forward(&ids)?
            .broadcast_add(&pos)?
            .add(&self.token_type_embeddings.forward(&tt)?)?;
        let mut h = self.embeddings_norm.forward(&h)?;
        // 2. encoder with the padding mask
        let mask = match attention_mask {
            Some(m) => Some(padding_bias(m, b, n, &dev)?),
            None => None,
        };
        let mut hidden_states = Vec::with_capacity(self.layers.len() + 1);
        hidden_states.push(h.clone());
        for layer in &self.layers {
            h = layer.forward(&h, mask.as_ref())?;
            hidden_states.push(h.clone());
        }
        // 3. pooler on the first token
        let pooler_output = match &self.pooler {
            Some(p) => Some(p.forward(&h.narrow(1, 0, 1)?.squeeze(1)?)?.tanh()?),
            None => None,
        };
        Ok(BertOutput {
            last_hidden_state: h,
            hidden_states,
            pooler_output,
        })
    }
}

/// Every id of `t` below `limit`.
fn check_range(name: &str, t: &Tensor, limit: usize) -> Result<()> {
    let v = t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
    if let Some(bad) = v.iter().find(|&&x| x < 0 || x as usize >= limit) {
        return Err(Error::invalid(
            name,
            format!("id {bad} is outside 0..{limit}"),
        ));
    }
    Ok(())
}

/// A `[B, N]` 1 / 0 mask as an additive `[B, 1, 1, N]` f32 bias (0 / `f32::MIN`).
fn padding_bias(m: &Tensor, b: usize, n: usize, device: &Device) -> Result<Tensor> {
    if m.dims() != [b, n] {
        return Err(Error::shape("attention_mask", &[b, n], m.dims()));
    }
    let keep = m.to_dtype(DType::F32)?.to_device(device)?;
    let bias = keep
        .ne(0f32)?
        .where_cond(&keep.zeros_like()?, &(keep.ones_like()? * f32::MIN as f64)?)?;
    Ok(bias.reshape((b, 1, 1, n))?)
}
