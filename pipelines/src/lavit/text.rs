//! The miniature's text tokenizer: CLIP's BPE (`vidgen_clip_encoders::CLIPTokenizer`) pruned
//! to the words of the prompt grammar.
//!
//! [`prune_clip_tokenizer`] keeps every single-byte token (ids 0–511 of CLIP's vocabulary), the
//! special tokens, and exactly the merges (and their results) that CLIP's BPE applies to the
//! given words, under their original ids and ranks. BPE applies, at each step, the
//! lowest-ranked merge among the pairs present; every merge it applies to those words is kept,
//! so on them the pruned tokenizer makes the same choices and returns the same ids as the full
//! one (tested against the vendored `fixtures/clip_tokenizer/openai`). Other words fall apart
//! into byte tokens, which the LLM's compact text table maps to `[UNK]`. The result is a few
//! kilobytes instead of CLIP's 1.5 MB `vocab.json` + `merges.txt`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde_json::Value as Json;
use vidgen_clip_encoders::CLIPTokenizer;
use vidgen_video_core::{Error, Result};

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `vocab.json`, `merges.txt` and `tokenizer_config.json` of CLIP's tokenizer in
/// `full_dir` (a folder with `vocab.json` + `merges.txt`) pruned to `words` (lower-case ASCII
/// letters) into `out_dir`.
///
/// # Errors
/// Unreadable / malformed files; a word with other characters.
pub fn prune_clip_tokenizer(full_dir: &Path, words: &[&str], out_dir: &Path) -> Result<()> {
    let vpath = full_dir.join("vocab.json");
    let mpath = full_dir.join("merges.txt");
    let vocab: BTreeMap<String, u64> =
        serde_json::from_str(&read(&vpath)?).map_err(|e| Error::Malformed {
            path: vpath.clone(),
            reason: e.to_string(),
        })?;
    let merges_text = read(&mpath)?;
    let merges: Vec<(String, String)> = merges_text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .filter_map(|l| {
            let mut it = l.split(' ');
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect();
    let rank: HashMap<(&str, &str), usize> = merges
        .iter()
        .enumerate()
        .map(|(i, (a, b))| ((a.as_str(), b.as_str()), i))
        .collect();
    let mut keep_merges: HashSet<usize> = HashSet::new();
    let mut keep_tokens: HashSet<String> = HashSet::new();
    for w in words {
        if w.is_empty() || !w.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(Error::invalid(
                "word",
                format!("{w:?}: only lower-case ASCII letters are pruned"),
            ));
        }
        let chars: Vec<char> = w.chars().collect();
        let mut parts: Vec<String> = chars
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == chars.len() {
                    format!("{c}</w>")
                } else {
                    c.to_string()
                }
            })
            .collect();
        loop {
            let best = parts
                .windows(2)
                .enumerate()
                .filter_map(|(i, p)| rank.get(&(p[0].as_str(), p[1].as_str())).map(|r| (*r, i)))
                .min();
            let Some((r, i)) = best else { break };
            keep_merges.insert(r);
            let merged = format!("{}{}", parts[i], parts[i + 1]);
            parts.splice(i..i + 2, [merged]);
        }
        keep_tokens.extend(parts);
    }
    for r in &keep_merges {
        let (a, b) = &merges[*r];
        keep_tokens.insert(a.clone());
        keep_tokens.insert(b.clone());
        keep_tokens.insert(format!("{a}{b}"));
    }
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (tok, id) in &vocab {
        if *id < 512 || keep_tokens.contains(tok) || tok.starts_with("<|") {
            out.insert(tok.clone(), *id);
        }
    }
    for t in &keep_tokens {
        if !vocab.contains_key(t) {
            return Err(Error::Malformed {
                path: vpath.clone(),
                reason: format!("token {t:?} of a kept merge is not in the vocabulary"),
            });
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let by_id: BTreeMap<u64, &String> = out.iter().map(|(k, v)| (*v, k)).collect();
    let vocab_json: serde_json::Map<String, Json> = by_id
        .iter()
        .map(|(id, k)| ((*k).clone(), Json::from(*id)))
        .collect();
    write(
        &out_dir.join("vocab.json"),
        &serde_json::to_string(&Json::Object(vocab_json))
            .map_err(|e| Error::invalid("vocab", e.to_string()))?,
    )?;
    let mut sorted: Vec<usize> = keep_merges.into_iter().collect();
    sorted.sort_unstable();
    let mut m = String::from("#version: 0.2\n");
    for r in sorted {
        let (a, b) = &merges[r];
        m.push_str(&format!("{a} {b}\n"));
    }
    write(&out_dir.join("merges.txt"), &m)?;
    write(
        &out_dir.join("tokenizer_config.json"),
        "{\n  \"bos_token\": \"<|startoftext|>\",\n  \"eos_token\": \"<|endoftext|>\",\n  \"model_max_length\": 77,\n  \"pad_token\": \"<|endoftext|>\",\n  \"tokenizer_class\": \"CLIPTokenizer\",\n  \"unk_token\": \"<|endoftext|>\"\n}\n",
    )?;
    Ok(())
}

/// Loads a CLIP tokenizer folder.
///
/// # Errors
/// As `CLIPTokenizer::from_dir`.
pub fn load_text_tokenizer(dir: &Path) -> Result<CLIPTokenizer> {
    CLIPTokenizer::from_dir(dir)
}
