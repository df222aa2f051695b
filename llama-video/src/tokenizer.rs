//! Text tokenizers for real instruct models, on Hugging Face's `tokenizers` crate.
//!
//! A GGUF file carries no `tokenizer.json`, only llama.cpp's `tokenizer.ggml.*` metadata: the
//! vocabulary, the BPE merges, each token's type, the special ids and the name of the
//! pre-tokenizer. [`gguf_tokenizer_json`] rebuilds the `tokenizer.json` that describes the same
//! byte-level BPE tokenizer (for SmolLM2, the one its Hugging Face repository ships):
//!
//! - model: BPE over the vocabulary and merges as stored (GPT-2 byte-to-unicode spelling; a
//!   token spelled outside that alphabet is re-spelled from its UTF-8 bytes, as transformers'
//!   GGUF loader does);
//! - pre-tokenizer from `tokenizer.ggml.pre`: `smollm` / `starcoder` / `refact` split digits
//!   one by one and then apply GPT-2's byte-level regex (llama.cpp's pre-tokenizer of those
//!   names; SmolLM2's `tokenizer.json`); `gpt2` / `default` / absent: GPT-2's byte-level
//!   regex alone; `llama3` / `llama-bpe` / `dbrx` / `smaug-bpe`: the Llama 3 split regex then
//!   byte-level without regex;
//! - decoder: byte-level;
//! - added tokens: those typed control (3) as special tokens (`<|im_start|>`, `<|endoftext|>`),
//!   user-defined (4) as plain added tokens, so that they are matched whole in text;
//! - a BOS (EOS) token is prepended (appended) when `tokenizer.ggml.add_bos_token`
//!   (`add_eos_token`) is true.
//!
//! [`ChatMessage`] and [`smollm2_chat_prompt`] write SmolLM2-Instruct's ChatML template.

use std::path::Path;

use serde_json::{json, Map, Value as Json};
use tokenizers::Tokenizer;
use vidgen_video_core::{Error, Result};

use crate::gguf::GgufFile;

/// GPT-2's byte-to-unicode table: printable bytes map to themselves, the others to code points
/// from U+0100 on, so every byte string is a printable string.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut n = 0u32;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\u{fffd}');
    }
    table
}

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Json {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

/// The `tokenizer.json` (as a JSON value) of a GGUF file's byte-level BPE tokenizer, see the
/// module docs.
///
/// # Errors
/// A tokenizer model other than `gpt2` or an unknown pre-tokenizer ([`Error::Unsupported`]);
/// missing or mistyped `tokenizer.ggml.*` entries ([`Error::Malformed`] naming the file).
pub fn gguf_tokenizer_json(file: &GgufFile) -> Result<Json> {
    let malformed = |reason: String| Error::Malformed {
        path: file.path().to_path_buf(),
        reason,
    };
    let model = file.get_str("tokenizer.ggml.model")?.unwrap_or("");
    if model != "gpt2" {
        return Err(Error::Unsupported {
            field: "tokenizer.ggml.model".into(),
            value: model.to_string(),
            supported: "gpt2 (byte-level BPE)".into(),
        });
    }
    let strings = |key: &str| -> Result<Vec<&str>> {
        let a = file
            .get_array(key)?
            .ok_or_else(|| malformed(format!("metadata `{key}` is missing")))?;
        a.iter()
            .enumerate()
            .map(|(i, v)| match v {
                candle_core::quantized::gguf_file::Value::String(s) => Ok(s.as_str()),
                _ => Err(malformed(format!("`{key}[{i}]` is not a string"))),
            })
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<Option<usize>> = match file.get_array("tokenizer.ggml.token_type")? {
        Some(a) => a
            .iter()
            .map(|v| match *v {
                candle_core::quantized::gguf_file::Value::I32(x) => usize::try_from(x).ok(),
                candle_core::quantized::gguf_file::Value::U32(x) => Some(x as usize),
                _ => None,
            })
            .collect(),
        None => vec![None; tokens.len()],
    };

    let spelling = bytes_to_unicode();
    let in_alphabet = |t: &str| t.chars().all(|c| spelling.contains(&c));
    let spelled = |t: &str| -> String {
        if in_alphabet(t) {
            t.to_string()
        } else {
            t.bytes().map(|b| spelling[b as usize]).collect()
        }
    };
    let mut vocab = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(spelled(t), Json::from(i));
    }
    let merges: Vec<Json> = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (a, b) = m.split_once(' ').ok_or_else(|| {
                malformed(format!("`tokenizer.ggml.merges[{i}]` {m:?} has no space"))
            })?;
            Ok(json!([a, b]))
        })
        .collect::<Result<_>>()?;

    // Control tokens spelled in the byte alphabet are special; user-defined ones plain added.
    let mut added = Vec::new();
    for (i, (t, ty)) in tokens.iter().zip(&types).enumerate() {
        let special = match ty {
            Some(3) if in_alphabet(t) => true,
            Some(4) => false,
            _ => continue,
        };
        added.push(json!({
            "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": special,
        }));
    }

    let pre = file.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let pre_tokenizer = match pre {
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level(true),
        ]}),
        "gpt2" | "default" => byte_level(true),
        "llama3" | "llama-v3" | "llama-bpe" | "dbrx" | "smaug-bpe" => {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
                byte_level(false),
            ]})
        }
        other => {
            return Err(Error::Unsupported {
                field: "tokenizer.ggml.pre".into(),
                value: other.to_string(),
                supported: "smollm, starcoder, refact, gpt2, default, llama3, llama-bpe, dbrx, \
                            smaug-bpe"
                    .into(),
            })
        }
    };

    let token_of = |key: &str| -> Result<Option<(String, usize)>> {
        Ok(match file.get_usize(key)? {
            Some(id) => {
                let t = tokens.get(id).ok_or_else(|| {
                    malformed(format!(
                        "`{key}` = {id} is outside the {} tokens",
                        tokens.len()
                    ))
                })?;
                Some((t.to_string(), id))
            }
            None => None,
        })
    };
    let add_bos = file
        .get_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(false);
    let add_eos = file
        .get_bool("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    let bos = if add_bos {
        token_of("tokenizer.ggml.bos_token_id")?
    } else {
        None
    };
    let eos = if add_eos {
        token_of("tokenizer.ggml.eos_token_id")?
    } else {
        None
    };
    let post_processor = if bos.is_some() || eos.is_some() {
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut special = Map::new();
        if let Some((t, id)) = &bos {
            single.push(json!({"SpecialToken": {"id": t, "type_id": 0}}));
            pair.push(json!({"SpecialToken": {"id": t, "type_id": 0}}));
            special.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
        }
        single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
        pair.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
        if let Some((t, id)) = &eos {
            single.push(json!({"SpecialToken": {"id": t, "type_id": 0}}));
            pair.push(json!({"SpecialToken": {"id": t, "type_id": 0}}));
            special.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
        }
        pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special})
    } else {
        Json::Null
    };

    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": byte_level(true),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    }))
}

/// The tokenizer of a GGUF file ([`gguf_tokenizer_json`] loaded by the `tokenizers` crate).
///
/// # Errors
/// As [`gguf_tokenizer_json`]; [`Error::Malformed`] when `tokenizers` refuses the result.
pub fn gguf_tokenizer(file: &GgufFile) -> Result<Tokenizer> {
    let j = gguf_tokenizer_json(file)?;
    let s = serde_json::to_string(&j).map_err(|e| Error::Malformed {
        path: file.path().to_path_buf(),
        reason: format!("tokenizer: {e}"),
    })?;
    s.parse::<Tokenizer>().map_err(|e| Error::Malformed {
        path: file.path().to_path_buf(),
        reason: format!("tokenizer rebuilt from the GGUF metadata: {e}"),
    })
}

/// Reads a `tokenizer.json` file.
///
/// # Errors
/// [`Error::Malformed`] naming the file when it cannot be read or parsed.
pub fn tokenizer_from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
    let path = path.as_ref();
    Tokenizer::from_file(path).map_err(|e| Error::Malformed {
        path: path.to_path_buf(),
        reason: format!("tokenizer: {e}"),
    })
}

/// Token ids of `text` (special tokens written in the text, like `<|im_start|>`, are matched
/// whole; BOS / EOS added when the tokenizer's post-processor says so).
///
/// # Errors
/// [`Error::InvalidArgument`] with the tokenizer's message.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    tokenizer
        .encode(text, true)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| Error::invalid("text", format!("tokenizer: {e}")))
}

/// The text of token ids; special tokens are kept when `skip_special` is false.
///
/// # Errors
/// [`Error::InvalidArgument`] with the tokenizer's message (e.g. an id outside the vocabulary).
pub fn decode(tokenizer: &Tokenizer, ids: &[u32], skip_special: bool) -> Result<String> {
    tokenizer
        .decode(ids, skip_special)
        .map_err(|e| Error::invalid("token ids", format!("tokenizer: {e}")))
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
}

/// SmolLM2-Instruct's default system prompt, written when a chat does not start with one.
pub const SMOLLM2_DEFAULT_SYSTEM: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// SmolLM2-Instruct's chat template (the GGUF's `tokenizer.chat_template`), written out:
/// ChatML, `<|im_start|>{role}\n{content}<|im_end|>\n` per message, the default system message
/// first when the chat does not open with a system message, and `<|im_start|>assistant\n` when
/// `add_generation_prompt`.
pub fn smollm2_chat_prompt(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut s = String::new();
    if messages.first().is_none_or(|m| m.role != "system") && !messages.is_empty() {
        s.push_str("<|im_start|>system\n");
        s.push_str(SMOLLM2_DEFAULT_SYSTEM);
        s.push_str("<|im_end|>\n");
    }
    for m in messages {
        s.push_str("<|im_start|>");
        s.push_str(&m.role);
        s.push('\n');
        s.push_str(&m.content);
        s.push_str("<|im_end|>\n");
    }
    if add_generation_prompt {
        s.push_str("<|im_start|>assistant\n");
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let t = bytes_to_unicode();
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0], 'Ā');
        let mut all: Vec<char> = t.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn chat_template_adds_the_default_system_message() {
        let p = smollm2_chat_prompt(&[ChatMessage::user("hi")], true);
        assert_eq!(
            p,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
             Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        let p = smollm2_chat_prompt(
            &[ChatMessage::system("Be brief."), ChatMessage::user("hi")],
            false,
        );
        assert_eq!(
            p,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        );
        assert_eq!(smollm2_chat_prompt(&[], false), "");
    }
}
