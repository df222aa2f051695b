#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The never-panics helpers pass a careful parser and catch a careless one.

use video_testkit::{assert_config_never_panics, assert_parser_never_panics};

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Cfg {
    channels: Vec<usize>,
    #[serde(default)]
    layers: usize,
    eps: f64,
    act: String,
}

const SAMPLE: &str = r#"{"channels": [32, 64, 64], "layers": 2, "eps": 1e-5, "act": "silu"}"#;

fn careful(b: &[u8]) -> Result<usize, String> {
    let c: Cfg = serde_json::from_slice(b).map_err(|e| e.to_string())?;
    let last = *c.channels.last().ok_or("channels empty")?;
    let prod = c
        .channels
        .iter()
        .try_fold(1usize, |a, &x| a.checked_mul(x))
        .ok_or("too large")?;
    Ok(last + prod % 7 + c.layers.min(1))
}

#[test]
fn careful_parser_passes() {
    assert_config_never_panics(SAMPLE, careful);
    assert_parser_never_panics("bytes", SAMPLE.as_bytes(), careful);
}

#[test]
#[should_panic(expected = "panicked on")]
fn indexing_parser_is_caught() {
    // reads a fourth channel that the sample lacks only after a mutation lengthens the list
    assert_config_never_panics(SAMPLE, |b| {
        let c: Cfg = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        if c.channels.len() > 3 {
            return Ok::<usize, String>(c.channels[3] * c.channels[c.layers]);
        }
        Ok(c.channels[0])
    });
}

#[test]
#[should_panic(expected = "panicked on")]
fn overflowing_parser_is_caught() {
    // `layers + 1` overflows for the odd number u64::MAX (a debug-build panic)
    assert_config_never_panics(SAMPLE, |b| {
        let c: Cfg = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        let n: usize = std::hint::black_box(c.layers) + 1;
        Ok::<usize, String>(n)
    });
}

#[test]
#[should_panic(expected = "the sample config is rejected")]
fn rejected_sample_fails() {
    assert_config_never_panics(r#"{"channels": []}"#, careful);
}

#[test]
#[should_panic(expected = "panicked on")]
fn byte_parser_that_indexes_is_caught() {
    assert_parser_never_panics("header", b"\x08\x00\x00\x00hello", |b| b[4]);
}
