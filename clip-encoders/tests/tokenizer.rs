//! The CLIP tokenizer beyond the fixture's cases: 99 more strings (scripts, emoji, odd spaces,
//! literal special tokens, texts over 77 tokens) and Stable Diffusion 2's `!` padding, from
//! transformers 5.23 (`tests/data/gen_tokenizer_cases.py`); truncation, the empty string,
//! batch tensors, and a never-panics property.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use candle_core::Device;
use proptest::prelude::*;
use vidgen_clip_encoders::{CLIPTokenizer, SpecialTokens};

fn vocab_dir() -> PathBuf {
    video_testkit::fixtures_root().join("clip_tokenizer/openai/tokenizer")
}

fn data() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer_cases.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_cases(tok: &CLIPTokenizer, cases: &serde_json::Value) -> usize {
    let mut bad = 0;
    for c in cases.as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let (got, mask) = tok.encode_padded(text).unwrap();
        let unpadded = tok.encode(text).unwrap();
        if got != ids(&c["input_ids"])
            || mask != ids(&c["attention_mask"])
            || unpadded != ids(&c["unpadded_ids"])
        {
            bad += 1;
            eprintln!(
                "{text:?}\n  got  {got:?} {unpadded:?}\n  want {:?} {:?}",
                ids(&c["input_ids"]),
                ids(&c["unpadded_ids"])
            );
        }
    }
    bad
}

#[test]
fn extra_cases_match_transformers_both_ways() {
    let d = data();
    let from_json = CLIPTokenizer::from_dir(vocab_dir()).unwrap();
    assert_eq!(check_cases(&from_json, &d["cases"]), 0);
    let tmp = tempfile::tempdir().unwrap();
    for name in ["vocab.json", "merges.txt", "tokenizer_config.json"] {
        std::fs::copy(vocab_dir().join(name), tmp.path().join(name)).unwrap();
    }
    let from_files = CLIPTokenizer::from_dir(tmp.path()).unwrap();
    assert_eq!(check_cases(&from_files, &d["cases"]), 0);
}

#[test]
fn sd2_pad_token_from_tokenizer_config() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["vocab.json", "merges.txt"] {
        std::fs::copy(vocab_dir().join(name), tmp.path().join(name)).unwrap();
    }
    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"pad_token": "!", "model_max_length": 77, "bos_token": {"content": "<|startoftext|>", "__type": "AddedToken"}}"#,
    )
    .unwrap();
    let tok = CLIPTokenizer::from_dir(tmp.path()).unwrap();
    assert_eq!(tok.pad_id(), 0);
    assert_eq!(check_cases(&tok, &data()["sd2_pad"]), 0);
}

#[test]
fn long_text_truncates_as_the_reference_and_empty_text_works() {
    let tok = CLIPTokenizer::from_dir(vocab_dir()).unwrap();
    let long = "word ".repeat(100);
    let plain = tok.encode(&long).unwrap();
    assert_eq!(plain.len(), 102);
    let (padded, mask) = tok.encode_padded(&long).unwrap();
    assert_eq!(padded.len(), 77);
    // BOS, the first 75 tokens, EOS: transformers keeps room for both special tokens.
    let mut want = plain[..76].to_vec();
    want.push(49407);
    assert_eq!(padded, want);
    assert!(mask.iter().all(|&m| m == 1));

    let (empty, mask) = tok.encode_padded("").unwrap();
    assert_eq!(&empty[..2], &[49406, 49407]);
    assert!(empty[2..].iter().all(|&t| t == 49407));
    assert_eq!(mask.iter().sum::<u32>(), 2);
    assert_eq!(tok.encode("").unwrap(), vec![49406, 49407]);
}

#[test]
fn batch_tensors_and_decode() {
    let tok = CLIPTokenizer::from_dir(vocab_dir()).unwrap();
    let b = tok
        .encode_batch(&["a photo of a cat", ""], &Device::Cpu)
        .unwrap();
    assert_eq!(b.input_ids.dims(), &[2, 77]);
    assert_eq!(b.attention_mask.dims(), &[2, 77]);
    let rows = b.input_ids.to_vec2::<u32>().unwrap();
    assert_eq!(tok.decode(&rows[0]).unwrap(), "a photo of a cat");
    assert!(tok.encode_batch(&[], &Device::Cpu).is_err());
    let short = tok.clone().with_max_length(8).unwrap();
    assert_eq!(
        short
            .encode_padded("a photo of a cat sitting on a mat")
            .unwrap()
            .0
            .len(),
        8
    );
    assert!(tok.clone().with_max_length(1).is_err());
    assert_eq!(tok.special_tokens(), &SpecialTokens::default());
}

#[test]
fn a_folder_without_tokenizer_files_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let e = CLIPTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(matches!(e, vidgen_video_core::Error::Io { .. }), "{e}");
    std::fs::write(tmp.path().join("tokenizer.json"), b"{ not json").unwrap();
    let e = CLIPTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::Malformed { .. }),
        "{e}"
    );
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(64))]

    /// Any string (any Unicode, control characters, literal special tokens) gives ids of the
    /// padded length, BOS first, an EOS, and never a panic.
    #[test]
    fn tokenizer_never_panics(text in ".{0,200}", special in prop::bool::ANY) {
        thread_local! {
            static TOK: CLIPTokenizer = CLIPTokenizer::from_dir(
                video_testkit::fixtures_root().join("clip_tokenizer/tiny500/tokenizer")).unwrap();
        }
        let text = if special { format!("{text}<|endoftext|>{text}") } else { text };
        TOK.with(|tok| {
            let (ids, mask) = tok.encode_padded(&text).unwrap();
            prop_assert_eq!(ids.len(), 77);
            prop_assert_eq!(mask.len(), 77);
            prop_assert_eq!(ids[0], tok.token_to_id("<|startoftext|>").unwrap());
            let n = mask.iter().filter(|&&m| m == 1).count();
            prop_assert_eq!(ids[n - 1], tok.token_to_id("<|endoftext|>").unwrap());
            let plain = tok.encode(&text).unwrap();
            prop_assert!(plain.len() >= 2);
            let _ = tok.decode(&plain).unwrap();
            Ok(())
        })?;
    }
}
