//! The CLIP tokenizer on Hugging Face's `tokenizers` crate, as transformers 5.23's
//! `CLIPTokenizer` (the tokenizers backend, formerly `CLIPTokenizerFast`) builds and calls it.
//!
//! - From a `tokenizer.json` (what `save_pretrained` writes) the whole pipeline is read from
//!   the file.
//! - From `vocab.json` + `merges.txt` (v4-era Stable Diffusion `tokenizer/` folders) it is
//!   built as `CLIPTokenizer.__init__` builds it: BPE with `end_of_word_suffix="</w>"`, no
//!   continuing-subword prefix, `unk_token`; normaliser NFC → `\s+` → `" "` → lowercase;
//!   pre-tokeniser: CLIP's split regex (`<|startoftext|>`, `<|endoftext|>`, the English
//!   contractions, letter runs, single digits, other-symbol runs; whitespace removed) then
//!   byte-level without prefix space; `RobertaProcessing` (BOS … EOS); byte-level decoder.
//! - Special tokens (`bos_token`, `eos_token`, `unk_token`, `pad_token`) come from
//!   `tokenizer_config.json` and `special_tokens_map.json` (which wins, as in transformers),
//!   defaulting to CLIP's `<|startoftext|>` / `<|endoftext|>`; they are registered as special
//!   added tokens, so their literal text in a prompt is one token.
//!
//! [`CLIPTokenizer::encode_batch`] is the call of Stable Diffusion pipelines:
//! `padding="max_length", max_length=model_max_length (77), truncation=True`: the text is cut
//! to `max_length − 2` tokens, BOS / EOS are added, and the row is padded on the right with
//! `pad_token` (attention mask 0).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value as Json;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior,
    Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};
use vidgen_video_core::{Error, Result};

/// CLIP's pre-tokenisation regex (transformers' `CLIPTokenizer`, OpenAI's `SimpleTokenizer`).
pub const CLIP_SPLIT_REGEX: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The sequence length of every Stable Diffusion text encoder (CLIP's 77 positions).
pub const CLIP_MAX_LENGTH: usize = 77;

// A `model_max_length` above this is transformers' "unset" sentinel (1e30), not a length.
const MAX_SANE_LENGTH: usize = 1 << 20;

/// The special tokens of a CLIP tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of text (`<|startoftext|>`).
    pub bos: String,
    /// End of text (`<|endoftext|>`).
    pub eos: String,
    /// Unknown token (`<|endoftext|>`).
    pub unk: String,
    /// Padding (`<|endoftext|>` by default; SD 2's tokenizer uses `!`).
    pub pad: String,
}

impl Default for SpecialTokens {
    fn default() -> Self {
        Self {
            bos: "<|startoftext|>".into(),
            eos: "<|endoftext|>".into(),
            unk: "<|endoftext|>".into(),
            pad: "<|endoftext|>".into(),
        }
    }
}

/// Token ids and attention mask of a padded batch.
#[derive(Debug, Clone)]
pub struct TextTokens {
    /// `[B, max_length]` u32 ids.
    pub input_ids: Tensor,
    /// `[B, max_length]` u32, 1 on tokens and 0 on padding.
    pub attention_mask: Tensor,
}

/// The CLIP tokenizer (see the module docs).
#[derive(Clone)]
pub struct CLIPTokenizer {
    /// Plain encoding: special tokens added, no truncation, no padding.
    plain: Tokenizer,
    /// The pipelines' call: truncation and padding to `max_length`.
    padded: Tokenizer,
    specials: SpecialTokens,
    pad_id: u32,
    max_length: usize,
}

impl std::fmt::Debug for CLIPTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CLIPTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("specials", &self.specials)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish()
    }
}

fn tk_err(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

fn read_json(path: &Path) -> Result<Option<Json>> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| tk_err("not valid JSON", path, e))
}

/// A special token as `tokenizer_config.json` writes it: a string or an `AddedToken` object.
fn token_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(m) => m.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

fn apply_specials(s: &mut SpecialTokens, cfg: &Json) {
    for (key, slot) in [
        ("bos_token", &mut s.bos),
        ("eos_token", &mut s.eos),
        ("unk_token", &mut s.unk),
        ("pad_token", &mut s.pad),
    ] {
        if let Some(t) = cfg.get(key).and_then(token_text) {
            *slot = t;
        }
    }
}

impl CLIPTokenizer {
    /// Loads a tokenizer folder: `tokenizer.json` if present, else `vocab.json` +
    /// `merges.txt`; special tokens and `model_max_length` from `tokenizer_config.json` /
    /// `special_tokens_map.json`. A diffusers pipeline folder works too (its `tokenizer/`).
    ///
    /// # Errors
    /// [`Error::Io`] when no tokenizer files are found, [`Error::Malformed`] for unreadable
    /// ones or a special token missing from the vocabulary.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let mut dir = dir.as_ref().to_path_buf();
        let has_files =
            |d: &Path| d.join("tokenizer.json").is_file() || d.join("vocab.json").is_file();
        if !has_files(&dir) && has_files(&dir.join("tokenizer")) {
            dir = dir.join("tokenizer");
        }
        let mut specials = SpecialTokens::default();
        let mut max_length = CLIP_MAX_LENGTH;
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        if let Some(cfg) = &config {
            apply_specials(&mut specials, cfg);
            if let Some(m) = cfg.get("model_max_length").and_then(Json::as_f64) {
                if m >= 1.0 && m <= MAX_SANE_LENGTH as f64 {
                    max_length = m as usize;
                }
            }
        }
        if let Some(map) = read_json(&dir.join("special_tokens_map.json"))? {
            apply_specials(&mut specials, &map);
        }
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            let tok =
                Tokenizer::from_file(&json).map_err(|e| tk_err("tokenizer.json", &json, e))?;
            return Self::from_tokenizer(tok, specials, max_length, &json);
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            return Self::from_vocab_merges(&vocab, &merges, specials, max_length);
        }
        Err(Error::Io {
            path: dir.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no tokenizer.json, nor vocab.json + merges.txt (nor a tokenizer/ folder holding them)",
            ),
        })
    }

    /// Builds the tokenizer from `vocab.json` and `merges.txt` as transformers'
    /// `CLIPTokenizer.__init__` does (see the module docs).
    ///
    /// # Errors
    /// [`Error::Malformed`] for unreadable files or special tokens outside the vocabulary;
    /// [`Error::InvalidArgument`] for `max_length < 2`.
    pub fn from_vocab_merges(
        vocab: &Path,
        merges: &Path,
        specials: SpecialTokens,
        max_length: usize,
    ) -> Result<Self> {
        let path_str = |p: &Path| -> Result<String> {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| tk_err("path", p, "not UTF-8"))
        };
        let bpe = BPE::from_file(&path_str(vocab)?, &path_str(merges)?)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".into())
            .fuse_unk(false)
            .unk_token(specials.unk.clone())
            .build()
            .map_err(|e| tk_err("vocab.json / merges.txt", vocab, e))?;
        let mut tok = Tokenizer::new(bpe);
        let normalizer = NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                " ",
            )
            .map_err(|e| tk_err("normalizer", vocab, e))?
            .into(),
            Lowercase.into(),
        ]);
        tok.with_normalizer(Some(normalizer))
            .map_err(|e| tk_err("normalizer", vocab, e))?;
        let split = Split::new(
            SplitPattern::Regex(CLIP_SPLIT_REGEX.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| tk_err("pre-tokenizer", vocab, e))?;
        tok.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tok.with_decoder(Some(ByteLevelDecoder::default()));
        let id = |t: &str| -> Result<u32> {
            tok.token_to_id(t).ok_or_else(|| {
                tk_err(
                    "special token",
                    vocab,
                    format!("`{t}` is not in the vocabulary"),
                )
            })
        };
        let (bos, eos) = (id(&specials.bos)?, id(&specials.eos)?);
        tok.with_post_processor(Some(
            RobertaProcessing::new((specials.eos.clone(), eos), (specials.bos.clone(), bos))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        Self::from_tokenizer(tok, specials, max_length, vocab)
    }

    /// Wraps a loaded `tokenizers` tokenizer: registers the special tokens and prepares the
    /// padded / truncated twin.
    fn from_tokenizer(
        mut tok: Tokenizer,
        specials: SpecialTokens,
        max_length: usize,
        source: &Path,
    ) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::invalid(
                "model_max_length",
                format!("{max_length} leaves no room for BOS and EOS"),
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        let mut added = Vec::new();
        for t in [&specials.bos, &specials.eos, &specials.unk, &specials.pad] {
            if !seen.contains(&t.as_str()) {
                seen.push(t);
                added.push(AddedToken::from(t.clone(), true));
            }
        }
        tok.add_special_tokens(added)
            .map_err(|e| tk_err("special tokens", source, e))?;
        // Training-time settings stored in a tokenizer.json would change the plain encoding.
        tok.with_truncation(None)
            .map_err(|e| tk_err("truncation", source, e))?;
        tok.with_padding(None);
        let pad_id = tok.token_to_id(&specials.pad).ok_or_else(|| {
            tk_err(
                "pad_token",
                source,
                format!("`{}` is not in the vocabulary", specials.pad),
            )
        })?;
        let mut padded = tok.clone();
        padded
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| tk_err("truncation", source, e))?;
        padded.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: specials.pad.clone(),
        }));
        Ok(Self {
            plain: tok,
            padded,
            specials,
            pad_id,
            max_length,
        })
    }

    /// Sets the padded length (default: `model_max_length`, 77).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] below 2 (BOS + EOS).
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        let source = PathBuf::from("<tokenizer>");
        let tok = self.plain.clone();
        let specials = self.specials.clone();
        self = Self::from_tokenizer(tok, specials, max_length, &source)?;
        Ok(self)
    }

    /// The padded length.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The special tokens.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.specials
    }

    /// The id padding rows are filled with.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.plain.token_to_id(token)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.plain.get_vocab_size(true)
    }

    /// The underlying `tokenizers` tokenizer (plain: no truncation, no padding).
    pub fn inner(&self) -> &Tokenizer {
        &self.plain
    }

    /// Token ids of `text` with BOS and EOS, neither truncated nor padded (transformers'
    /// `tokenizer(text).input_ids`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the `tokenizers` pipeline fails on the text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .plain
            .encode(text, true)
            .map_err(|e| Error::invalid("text", e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids and attention mask of `text` truncated and padded to `max_length`
    /// (transformers' `tokenizer(text, padding="max_length", max_length=77, truncation=True)`).
    ///
    /// # Errors
    /// As [`CLIPTokenizer::encode`].
    pub fn encode_padded(&self, text: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let enc = self
            .padded
            .encode(text, true)
            .map_err(|e| Error::invalid("text", e.to_string()))?;
        Ok((enc.get_ids().to_vec(), enc.get_attention_mask().to_vec()))
    }

    /// A batch as Stable Diffusion pipelines tokenise prompts (see the module docs).
    ///
    /// # Shapes
    /// `texts.len() = B` → `input_ids [B, max_length]`, `attention_mask [B, max_length]`, u32.
    ///
    /// # Errors
    /// As [`CLIPTokenizer::encode`]; an empty batch.
    pub fn encode_batch(&self, texts: &[&str], device: &Device) -> Result<TextTokens> {
        if texts.is_empty() {
            return Err(Error::invalid("texts", "the batch is empty"));
        }
        let mut ids = Vec::with_capacity(texts.len() * self.max_length);
        let mut mask = Vec::with_capacity(texts.len() * self.max_length);
        for t in texts {
            let (i, m) = self.encode_padded(t)?;
            ids.extend(i);
            mask.extend(m);
        }
        let shape = (texts.len(), self.max_length);
        Ok(TextTokens {
            input_ids: Tensor::from_vec(ids, shape, device)?,
            attention_mask: Tensor::from_vec(mask, shape, device)?,
        })
    }

    /// Text of `ids` without special tokens, as transformers' `decode(ids,
    /// skip_special_tokens=True)` (end-of-word markers become spaces; the ends are trimmed).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the decoder fails.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = self
            .plain
            .decode(ids, true)
            .map_err(|e| Error::invalid("ids", e.to_string()))?;
        Ok(text.replace("</w>", " ").trim().to_string())
    }
}
