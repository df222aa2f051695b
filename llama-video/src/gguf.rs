//! Llama checkpoints in llama.cpp's GGUF format, read with candle's GGUF reader
//! (`candle_core::quantized::gguf_file`) and dequantised to dense weights at load.
//!
//! - The configuration comes from the `llama.*` metadata, with transformers' mapping
//!   (`integrations/ggml.py`): `embedding_length` → `hidden_size`, `feed_forward_length` →
//!   `intermediate_size`, `block_count`, `attention.head_count(_kv)`, `context_length` →
//!   `max_position_embeddings`, `rope.dimension_count` → `head_dim`, `rope.freq_base` →
//!   `rope_theta`, `attention.layer_norm_rms_epsilon`; the embeddings are tied when the file has
//!   no `output.weight`.
//! - Tensors are renamed to transformers' keys (`token_embd` → `model.embed_tokens`,
//!   `blk.N.attn_q` → `model.layers.N.self_attn.q_proj`, ...), so [`LlamaForCausalLM::new`]
//!   builds from them unchanged, through a [`VarBuilder`] that records what was read.
//! - llama.cpp's converter (`convert_hf_to_gguf.py`, `LlamaModel.permute`) reorders the rows of
//!   `q_proj` / `k_proj` within each head from rotate-half to interleaved pairs, for its
//!   interleaved RoPE: row `h·d + 2j + p` of the file is row `h·d + p·d/2 + j` of the
//!   checkpoint (`d` = head_dim, `j < d/2`, `p ∈ {0, 1}`). [`unpermute_rows`] undoes it, so the
//!   rotate-half RoPE of this crate gives transformers' results.
//! - Quantised blocks (Q4_0 … Q8_K) are expanded with candle's dequantisation, in f32, then
//!   converted to the dtype asked for: the same values as gguf-py's (transformers' GGUF path).
//!
//! The file's tokenizer is rebuilt by [`crate::tokenizer`].

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::loading::{
    load_tracked, nearest_keys, tracked_var_builder, LoadReport, LoadTracker, TensorSource,
};
use vidgen_video_core::{Error, Result};

use crate::config::{LlamaConfig, RopeParameters};
use crate::model::LlamaForCausalLM;

/// An open GGUF file: its metadata and tensor directory (tensor data is read on demand).
pub struct GgufFile {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    content: Content,
    reader: Mutex<BufReader<File>>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.inner.path)
            .field("metadata", &self.inner.content.metadata.len())
            .field("tensors", &self.inner.content.tensor_infos.len())
            .finish()
    }
}

/// A value's description for error messages (`u32 7`, `string "llama"`, `array of 3`).
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Array(a) => format!("array of {}", a.len()),
        other => format!("{other:?}"),
    }
}

/// An integer metadata value of any width, `None` for other types or negative values.
fn as_usize(v: &Value) -> Option<usize> {
    match *v {
        Value::U8(x) => Some(x as usize),
        Value::U16(x) => Some(x as usize),
        Value::U32(x) => Some(x as usize),
        Value::U64(x) => usize::try_from(x).ok(),
        Value::I8(x) => usize::try_from(x).ok(),
        Value::I16(x) => usize::try_from(x).ok(),
        Value::I32(x) => usize::try_from(x).ok(),
        Value::I64(x) => usize::try_from(x).ok(),
        _ => None,
    }
}

impl GgufFile {
    /// Reads the header (metadata and tensor directory) of `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened, [`Error::Malformed`] naming it when the
    /// header does not parse (bad magic, truncated, counts beyond the file's size).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| Error::Malformed {
            path: path.clone(),
            reason: format!("not a readable GGUF file: {e}"),
        })?;
        Ok(GgufFile {
            inner: Arc::new(Inner {
                path,
                content,
                reader: Mutex::new(reader),
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Every metadata entry (`general.architecture`, `llama.block_count`, `tokenizer.ggml.*`).
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.inner.content.metadata
    }

    /// The tensor names of the file (llama.cpp's: `token_embd.weight`, `blk.0.attn_q.weight`).
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .inner
            .content
            .tensor_infos
            .keys()
            .map(String::as_str)
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether the file holds tensor `name` (llama.cpp's name).
    pub fn has_tensor(&self, name: &str) -> bool {
        self.inner.content.tensor_infos.contains_key(name)
    }

    fn malformed(&self, reason: impl Into<String>) -> Error {
        Error::Malformed {
            path: self.inner.path.clone(),
            reason: reason.into(),
        }
    }

    /// A string metadata value; `Ok(None)` when absent, [`Error::Malformed`] when of another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.metadata().get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.malformed(format!(
                "metadata `{key}` should be a string, found {}",
                describe(v)
            ))),
        }
    }

    /// A non-negative integer metadata value of any width; `Ok(None)` when absent.
    pub fn get_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.metadata().get(key) {
            None => Ok(None),
            Some(v) => as_usize(v).map(Some).ok_or_else(|| {
                self.malformed(format!(
                    "metadata `{key}` should be a non-negative integer, found {}",
                    describe(v)
                ))
            }),
        }
    }

    /// A float metadata value (`f32` widened exactly, as Python reads it); `Ok(None)` when
    /// absent.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.metadata().get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x as f64)),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(v) => as_usize(v).map(|x| Some(x as f64)).ok_or_else(|| {
                self.malformed(format!(
                    "metadata `{key}` should be a number, found {}",
                    describe(v)
                ))
            }),
        }
    }

    /// A boolean metadata value; `Ok(None)` when absent.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.metadata().get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.malformed(format!(
                "metadata `{key}` should be a bool, found {}",
                describe(v)
            ))),
        }
    }

    /// An array metadata value; `Ok(None)` when absent.
    pub fn get_array(&self, key: &str) -> Result<Option<&[Value]>> {
        match self.metadata().get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.malformed(format!(
                "metadata `{key}` should be an array, found {}",
                describe(v)
            ))),
        }
    }

    /// The chat template (`tokenizer.chat_template`, a Jinja string), if the file has one.
    pub fn chat_template(&self) -> Result<Option<&str>> {
        self.get_str("tokenizer.chat_template")
    }

    /// The Llama configuration from the `llama.*` metadata (transformers' mapping, see the
    /// module docs), validated.
    ///
    /// # Errors
    /// An architecture other than `llama` ([`Error::Unsupported`]); a required key absent or
    /// of the wrong type ([`Error::Malformed`]); RoPE scaling other than `none` / `linear`, or
    /// llama 3 frequency factors (`rope_freqs.weight`) ([`Error::Unsupported`]); an invalid
    /// resulting config ([`Error::BadConfig`] naming the field and the file).
    pub fn llama_config(&self) -> Result<LlamaConfig> {
        let arch = self
            .get_str("general.architecture")?
            .ok_or_else(|| self.malformed("metadata `general.architecture` is missing"))?;
        if arch != "llama" {
            return Err(Error::Unsupported {
                field: "general.architecture".into(),
                value: arch.to_string(),
                supported: "llama".into(),
            });
        }
        let need = |key: &str| -> Result<usize> {
            self.get_usize(key)?
                .ok_or_else(|| self.malformed(format!("metadata `{key}` is missing")))
        };
        let hidden_size = need("llama.embedding_length")?;
        let num_attention_heads = need("llama.attention.head_count")?;
        let vocab_size = match self.get_usize("llama.vocab_size")? {
            Some(v) => v,
            None => match self.get_array("tokenizer.ggml.tokens")? {
                Some(t) => t.len(),
                None => self
                    .inner
                    .content
                    .tensor_infos
                    .get("token_embd.weight")
                    .map(|t| t.shape.dims().first().copied().unwrap_or(0))
                    .ok_or_else(|| {
                        self.malformed("no `llama.vocab_size`, tokens or `token_embd.weight`")
                    })?,
            },
        };
        let rope_dim = self.get_usize("llama.rope.dimension_count")?;
        let key_length = self.get_usize("llama.attention.key_length")?;
        let head_dim = key_length.or(rope_dim);
        let partial_rotary_factor = match (key_length, rope_dim) {
            (Some(k), Some(r)) if k != r && k > 0 => Some(r as f64 / k as f64),
            _ => None,
        };
        let rope_scaling = match self.get_str("llama.rope.scaling.type")? {
            None | Some("none") => None,
            Some("linear") => Some(RopeParameters {
                rope_type: Some("linear".into()),
                factor: self.get_f64("llama.rope.scaling.factor")?,
                ..Default::default()
            }),
            Some(other) => {
                return Err(Error::Unsupported {
                    field: "llama.rope.scaling.type".into(),
                    value: other.to_string(),
                    supported: "none, linear".into(),
                })
            }
        };
        if self.has_tensor("rope_freqs.weight") {
            return Err(Error::Unsupported {
                field: "rope_freqs.weight".into(),
                value: "llama 3 RoPE frequency factors".into(),
                supported: "GGUF files without rope_freqs".into(),
            });
        }
        let id = |key: &str| -> Result<Option<serde_json::Value>> {
            Ok(self.get_usize(key)?.map(serde_json::Value::from))
        };
        let defaults = LlamaConfig::default();
        let cfg = LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size: need("llama.feed_forward_length")?,
            num_hidden_layers: need("llama.block_count")?,
            num_attention_heads,
            num_key_value_heads: self.get_usize("llama.attention.head_count_kv")?,
            head_dim,
            max_position_embeddings: self
                .get_usize("llama.context_length")?
                .unwrap_or(defaults.max_position_embeddings),
            rms_norm_eps: self
                .get_f64("llama.attention.layer_norm_rms_epsilon")?
                .unwrap_or(defaults.rms_norm_eps),
            rope_theta: Some(self.get_f64("llama.rope.freq_base")?.unwrap_or(10000.0)),
            rope_scaling,
            rope_parameters: None,
            partial_rotary_factor,
            attention_bias: self.has_tensor("blk.0.attn_q.bias"),
            mlp_bias: self.has_tensor("blk.0.ffn_gate.bias"),
            tie_word_embeddings: !self.has_tensor("output.weight"),
            hidden_act: "silu".into(),
            bos_token_id: id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: id("tokenizer.ggml.eos_token_id")?,
        };
        cfg.validate().map_err(|e| match e {
            Error::BadConfig { field, reason, .. } => Error::BadConfig {
                field,
                reason,
                file: Some(self.inner.path.display().to_string()),
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// A [`VarBuilder`] serving this file's tensors under transformers' names, dequantised and
    /// converted to `dtype` on `device`, q / k rows restored to transformers' order (see the
    /// module docs); and the tracker to read the [`LoadReport`] from once the model is built.
    ///
    /// As with [`vidgen_video_core::ModelDir::var_builder`], a missing or mis-shaped key is
    /// recorded and served as zeros so that one load reports every problem;
    /// [`LlamaForCausalLM::from_gguf`] turns them into an error.
    pub fn var_builder(
        &self,
        cfg: &LlamaConfig,
        dtype: DType,
        device: &Device,
    ) -> (VarBuilder<'static>, LoadTracker) {
        let source = Source {
            file: self.inner.clone(),
            heads: cfg.num_attention_heads,
            kv_heads: cfg.kv_heads(),
        };
        tracked_var_builder(Arc::new(source), dtype, device)
    }

    /// Dequantises tensor `name` (llama.cpp's name) to f32 on the CPU, in the file's layout
    /// (no row permutation).
    ///
    /// # Errors
    /// [`Error::MissingTensor`] when absent; [`Error::Malformed`] when its data cannot be read.
    pub fn dequantize(&self, name: &str) -> Result<Tensor> {
        self.inner.dequantize(name)
    }
}

impl Inner {
    fn dequantize(&self, name: &str) -> Result<Tensor> {
        if !self.content.tensor_infos.contains_key(name) {
            return Err(Error::MissingTensor {
                key: name.to_string(),
                file: self.path.display().to_string(),
                nearest: nearest_keys(
                    name,
                    self.content.tensor_infos.keys().map(String::as_str),
                    3,
                ),
            });
        }
        let q = {
            // A poisoned lock only means another thread panicked mid-read; seeks are absolute.
            let mut r = match self.reader.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            self.content.tensor(&mut *r, name, &Device::Cpu)
        }
        .map_err(|e| Error::Malformed {
            path: self.path.clone(),
            reason: format!("tensor `{name}`: {e}"),
        })?;
        Ok(q.dequantize(&Device::Cpu)?)
    }
}

/// How a transformers key is stored in a GGUF file: the tensor's name there, and for q / k the
/// number of heads whose rows llama.cpp permuted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufName {
    /// llama.cpp's tensor name (`blk.3.attn_q.weight`).
    pub name: String,
    /// `Some(heads)` for `q_proj` (query heads) and `k_proj` (key / value heads).
    pub permuted_heads: Option<usize>,
}

/// Maps a transformers Llama key to its GGUF tensor (`model.layers.3.self_attn.q_proj.weight` →
/// `blk.3.attn_q.weight`, permuted over `heads` rows groups); `None` for keys GGUF has no
/// name for.
pub fn gguf_name(key: &str, heads: usize, kv_heads: usize) -> Option<GgufName> {
    let plain = |name: String| {
        Some(GgufName {
            name,
            permuted_heads: None,
        })
    };
    match key {
        "model.embed_tokens.weight" => return plain("token_embd.weight".into()),
        "model.norm.weight" => return plain("output_norm.weight".into()),
        "lm_head.weight" => return plain("output.weight".into()),
        _ => {}
    }
    let rest = key.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let (short, permuted_heads) = match module {
        "self_attn.q_proj" => ("attn_q", Some(heads)),
        "self_attn.k_proj" => ("attn_k", Some(kv_heads)),
        "self_attn.v_proj" => ("attn_v", None),
        "self_attn.o_proj" => ("attn_output", None),
        "mlp.gate_proj" => ("ffn_gate", None),
        "mlp.up_proj" => ("ffn_up", None),
        "mlp.down_proj" => ("ffn_down", None),
        "input_layernorm" => ("attn_norm", None),
        "post_attention_layernorm" => ("ffn_norm", None),
        _ => return None,
    };
    Some(GgufName {
        name: format!("blk.{layer}.{short}.{kind}"),
        permuted_heads,
    })
}

/// The transformers key of a GGUF tensor name, the inverse of [`gguf_name`].
pub fn hf_name(name: &str) -> Option<String> {
    match name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (short, kind) = rest.rsplit_once('.')?;
    let module = match short {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{module}.{kind}"))
}

/// Undoes llama.cpp's `LlamaModel.permute` on the rows of a q / k weight `[heads·d, in]` or
/// bias `[heads·d]`: file row `h·d + 2j + p` goes back to row `h·d + p·d/2 + j`.
///
/// # Errors
/// Rows not a multiple of `2·heads`.
pub fn unpermute_rows(t: &Tensor, heads: usize) -> Result<Tensor> {
    regroup_rows(t, heads, false)
}

/// The inverse of [`unpermute_rows`]: llama.cpp's `LlamaModel.permute` (row `h·d + p·d/2 + j`
/// goes to `h·d + 2j + p`), for writing GGUF files.
///
/// # Errors
/// Rows not a multiple of `2·heads`.
pub fn permute_rows(t: &Tensor, heads: usize) -> Result<Tensor> {
    regroup_rows(t, heads, true)
}

/// Each head's rows viewed as `[d/2, 2]` (`interleaved`, the file's order) or `[2, d/2]`
/// (rotate-half halves) and transposed to the other view.
fn regroup_rows(t: &Tensor, heads: usize, to_interleaved: bool) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims.first().copied().unwrap_or(0);
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(Error::invalid(
            "q / k weight",
            format!("{rows} rows do not split into {heads} heads of an even width"),
        ));
    }
    let half = rows / heads / 2;
    let rest: usize = dims[1..].iter().product();
    let view = if to_interleaved {
        (heads, 2, half, rest)
    } else {
        (heads, half, 2, rest)
    };
    Ok(t.reshape(view)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

/// The file's tensors under transformers' names, dequantised to f32 with q / k rows restored:
/// the [`TensorSource`] of the tracked builder.
struct Source {
    file: Arc<Inner>,
    heads: usize,
    kv_heads: usize,
}

impl TensorSource for Source {
    fn load(&self, key: &str, device: &Device) -> candle_core::Result<Option<Tensor>> {
        let Some(g) = gguf_name(key, self.heads, self.kv_heads) else {
            return Ok(None);
        };
        if !self.file.content.tensor_infos.contains_key(&g.name) {
            return Ok(None);
        }
        let t = self
            .file
            .dequantize(&g.name)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let t = match g.permuted_heads {
            Some(h) => unpermute_rows(&t, h).map_err(|e| candle_core::Error::Msg(e.to_string()))?,
            None => t,
        };
        Ok(Some(t.to_device(device)?))
    }

    fn contains(&self, name: &str) -> bool {
        gguf_name(name, self.heads, self.kv_heads)
            .is_some_and(|g| self.file.content.tensor_infos.contains_key(&g.name))
    }

    fn keys(&self) -> Vec<(String, PathBuf)> {
        // transformers' name where the tensor has one, llama.cpp's otherwise
        self.file
            .content
            .tensor_infos
            .keys()
            .map(|n| {
                (
                    hf_name(n).unwrap_or_else(|| n.clone()),
                    self.file.path.clone(),
                )
            })
            .collect()
    }

    fn describe(&self) -> String {
        self.file.path.display().to_string()
    }

    fn root(&self) -> PathBuf {
        self.file.path.clone()
    }
}

impl LlamaForCausalLM {
    /// Loads a llama.cpp GGUF file: configuration from its metadata, weights dequantised and
    /// converted to `dtype` (see [`crate::gguf`]). Strict: every tensor the model needs must be
    /// present with its shape.
    ///
    /// # Errors
    /// See [`GgufFile::open`] and [`GgufFile::llama_config`]; missing or mis-shaped tensors
    /// (named by their transformers key, with the file).
    pub fn from_gguf(
        path: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let file = GgufFile::open(path)?;
        let cfg = file.llama_config()?;
        let source = Source {
            file: file.inner.clone(),
            heads: cfg.num_attention_heads,
            kv_heads: cfg.kv_heads(),
        };
        load_tracked(Arc::new(source), dtype, device, |vb| {
            LlamaForCausalLM::new(&cfg, vb)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for key in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.12.self_attn.k_proj.bias",
            "model.layers.3.self_attn.v_proj.weight",
            "model.layers.3.self_attn.o_proj.weight",
            "model.layers.29.mlp.gate_proj.weight",
            "model.layers.29.mlp.up_proj.weight",
            "model.layers.29.mlp.down_proj.weight",
            "model.layers.1.input_layernorm.weight",
            "model.layers.1.post_attention_layernorm.weight",
        ] {
            let g = gguf_name(key, 9, 3).unwrap();
            assert_eq!(hf_name(&g.name).as_deref(), Some(key), "{key} -> {g:?}");
        }
        assert_eq!(
            gguf_name("model.layers.0.self_attn.q_proj.weight", 9, 3),
            Some(GgufName {
                name: "blk.0.attn_q.weight".into(),
                permuted_heads: Some(9)
            })
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.k_proj.weight", 9, 3)
                .unwrap()
                .permuted_heads,
            Some(3)
        );
        assert_eq!(gguf_name("model.layers.x.mlp.up_proj.weight", 1, 1), None);
        assert_eq!(gguf_name("model.rotary_emb.inv_freq", 1, 1), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn permutation_is_llama_cpps_and_undone() {
        // 2 heads of width 4: llama.cpp's permute takes rows [0 1 2 3 | 4 5 6 7] to
        // [0 2 1 3 | 4 6 5 7] (the two halves of each head interleaved).
        let w = Tensor::arange(0f32, 16.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 2))
            .unwrap();
        let p = permute_rows(&w, 2).unwrap();
        let rows: Vec<f32> = p
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(rows, [0., 4., 2., 6., 8., 12., 10., 14.]);
        let back = unpermute_rows(&p, 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        let b = Tensor::arange(0f32, 8.0, &Device::Cpu).unwrap();
        let pb = permute_rows(&b, 2).unwrap();
        assert_eq!(
            pb.to_vec1::<f32>().unwrap(),
            [0., 2., 1., 3., 4., 6., 5., 7.]
        );
        assert!(unpermute_rows(&b, 3).is_err());
    }
}
