//! Parity with transformers' `LlamaForCausalLM` on every `llama` fixture folder, with and
//! without a KV cache.
//!
//! Everything the fixture records is read from it (the model's `config.json` and
//! `generation_config.json`, the inputs, `max_new_tokens` from meta.json's `call`), and every
//! tensor it lists is compared: a listed tensor this test does not know, or does not find, fails.
//! The cached-vs-uncached comparison checks this crate against itself, so it is a consistency
//! assertion outside the `parity` line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use candle_core::{DType, Device, IndexOp, Tensor};
use video_testkit::{assert_close, fixtures, take, Fixture};
use vidgen_llama_video::{LlamaForCausalLM, LogitsToKeep};

/// Fixtures README: "Llama logits / hidden states: `max_abs ≤ 2e-5`" (no relative term; the
/// logits stay O(1–10), and the worst case measured is 2.6e-6).
const ATOL: f64 = 2e-5;
const RTOL: f64 = 0.0;

/// The tensor names a fixture records in one of its files: those listed in meta.json's
/// `files.<file>` and those in the file itself.
fn recorded(fx: &Fixture, file: &str, present: &[&String]) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = present.iter().map(|k| k.to_string()).collect();
    if let Some(obj) = fx
        .meta
        .get("files")
        .and_then(|f| f.get(file))
        .and_then(|v| v.as_object())
    {
        keys.extend(obj.keys().cloned());
    }
    keys
}

/// Whether our parsed config value agrees with meta.json's: numbers as f64, objects key by key
/// (our unset `null` fields are not recorded there).
fn agrees(ours: &serde_json::Value, meta: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (ours, meta) {
        (Value::Null, _) => true,
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Object(a), Value::Object(b)) => {
            b.iter().all(|(k, v)| a.get(k).is_none_or(|o| agrees(o, v)))
        }
        _ => ours == meta,
    }
}

/// A token id or list of ids from a config value (`eos_token_id: 2` or `[2, 7]`).
fn ids_of(v: Option<&serde_json::Value>) -> Vec<i64> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_i64()).collect(),
        _ => Vec::new(),
    }
}

/// `generation_config.json` (falling back to `config.json`) of the model folder.
fn generation_settings(model_dir: &std::path::Path) -> (Vec<i64>, Option<i64>) {
    let read = |name: &str| -> serde_json::Value {
        std::fs::read_to_string(model_dir.join(name))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let (gen, cfg) = (read("generation_config.json"), read("config.json"));
    let pick = |key: &str| gen.get(key).filter(|v| !v.is_null()).or(cfg.get(key));
    let eos = ids_of(pick("eos_token_id"));
    let pad = ids_of(pick("pad_token_id")).first().copied();
    (eos, pad)
}

/// `max_new_tokens=N` of meta.json's `call`, when recorded.
fn max_new_tokens(fx: &Fixture) -> Option<usize> {
    let call = fx.meta.get("call")?.as_str()?;
    let rest = &call[call.find("max_new_tokens=")? + "max_new_tokens=".len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// The argmax of a `[1, 1, V]` logits tensor.
fn argmax_last(logits: &Tensor) -> u32 {
    logits
        .flatten_all()
        .unwrap()
        .argmax(0)
        .unwrap()
        .to_scalar::<u32>()
        .unwrap()
}

#[test]
fn llama_fixtures_match_transformers() {
    let dev = Device::Cpu;
    let all = fixtures("llama");
    assert!(!all.is_empty(), "no `llama` fixtures found");
    for fx in &all {
        let id = fx.id();
        let model_dir = fx.dir.join("model");
        let (model, report) = LlamaForCausalLM::from_pretrained(&model_dir, DType::F32, &dev)
            .unwrap_or_else(|e| panic!("{id}: load failed: {e}"));
        // The keys `new` asks for are exactly the checkpoint's (none missing, none unused).
        assert!(
            report.missing.is_empty() && report.mismatched.is_empty() && report.unused.is_empty(),
            "{id}: {report}"
        );
        let cfg = model.config();
        if let Some(meta_cfg) = fx.meta.get("config") {
            // meta.json's copy of the config agrees with the model folder's.
            let ours = serde_json::to_value(cfg).unwrap();
            for (k, v) in meta_cfg.as_object().into_iter().flatten() {
                if let Some(o) = ours.get(k) {
                    assert!(agrees(o, v), "{id}: config `{k}`: model {o}, meta {v}");
                }
            }
        }
        let inputs = fx.inputs();
        let outputs = fx.outputs();
        let in_keys: Vec<&String> = inputs.keys().collect();
        let out_keys: Vec<&String> = outputs.keys().collect();
        let want_inputs = recorded(fx, "inputs.safetensors", &in_keys);
        let want_outputs = recorded(fx, "outputs.safetensors", &out_keys);
        let mut used: BTreeSet<String> = BTreeSet::new();
        let mut compared: BTreeSet<String> = BTreeSet::new();
        let mut par = fx.parity();

        // 1. Full forward: logits and every hidden state the fixture recorded.
        let ids = take(&inputs, "input_ids", &id);
        used.insert("input_ids".into());
        let (logits, hs) = model.forward_with_hidden_states(ids).unwrap();
        par.check("logits", &logits, take(&outputs, "logits", &id), ATOL, RTOL);
        compared.insert("logits".into());
        let n_hs = want_outputs
            .iter()
            .filter(|k| k.starts_with("hidden_states."))
            .count();
        if n_hs > 0 {
            assert_eq!(
                n_hs,
                cfg.num_hidden_layers + 1,
                "{id}: hidden_states has num_hidden_layers + 1 entries"
            );
            for (i, h) in hs.iter().enumerate() {
                let key = format!("hidden_states.{i}");
                par.check(&key, h, take(&outputs, &key, &id), ATOL, RTOL);
                compared.insert(key);
            }
        }

        // 2. Consistency (not parity: this crate against itself): a cached prefill of a prefix
        //    then token-by-token decoding gives the full forward's logits.
        let (b, t) = ids.dims2().unwrap();
        let split = t / 2;
        let mut cache = model.new_cache(b, t).unwrap();
        let mut parts = Vec::new();
        if split > 0 {
            parts.push(
                model
                    .forward(
                        &ids.narrow(1, 0, split).unwrap(),
                        Some(&mut cache),
                        LogitsToKeep::All,
                    )
                    .unwrap(),
            );
        }
        for p in split..t {
            parts.push(
                model
                    .forward(
                        &ids.narrow(1, p, 1).unwrap(),
                        Some(&mut cache),
                        LogitsToKeep::All,
                    )
                    .unwrap(),
            );
        }
        assert_eq!(cache.len(), t);
        let cached = Tensor::cat(&parts, 1).unwrap();
        let c = assert_close(
            &format!("{id} logits (kv cache vs full forward)"),
            &cached,
            &logits,
            ATOL,
            RTOL,
        );
        println!(
            "consistency {id} kv-cache max_abs={:.3e} max_rel={:.3e}",
            c.max_abs, c.max_rel
        );

        // 3. Greedy generation with the cache reproduces `generated_ids` exactly (stopping at
        //    the generation config's eos, padding finished rows with its pad id, as
        //    transformers' `generate`); the logits of every step match the reference's no-cache
        //    forward of the generated sequence.
        if want_inputs.contains("prompt_ids") {
            let prompt = take(&inputs, "prompt_ids", &id);
            used.insert("prompt_ids".into());
            let gen_ids = take(&outputs, "generated_ids", &id);
            compared.insert("generated_ids".into());
            let (eos, pad) = generation_settings(&model_dir);
            let (pb, prompt_len) = prompt.dims2().unwrap();
            let (gb, gen_len) = gen_ids.dims2().unwrap();
            assert_eq!(pb, gb, "{id}: prompt and generated batch");
            let new = max_new_tokens(fx).unwrap_or(gen_len - prompt_len);
            assert!(
                gen_len <= prompt_len + new,
                "{id}: {gen_len} generated positions exceed prompt {prompt_len} + max_new_tokens {new}"
            );
            let want_logits = if want_outputs.contains("generated_logits") {
                compared.insert("generated_logits".into());
                Some(take(&outputs, "generated_logits", &id))
            } else {
                None
            };
            for row in 0..pb {
                let want: Vec<i64> = gen_ids.i(row).unwrap().to_vec1().unwrap();
                let p = prompt.i(row..row + 1).unwrap();
                let mut cache = model.new_cache(1, prompt_len + new).unwrap();
                let mut out: Vec<i64> = p.i(0).unwrap().to_vec1().unwrap();
                let mut step_logits = Vec::new();
                let mut logits = model
                    .forward(&p, Some(&mut cache), LogitsToKeep::Last)
                    .unwrap();
                for _ in 0..new {
                    step_logits.push(logits.flatten_all().unwrap());
                    let next = argmax_last(&logits);
                    out.push(next as i64);
                    if eos.contains(&(next as i64)) {
                        break;
                    }
                    let tok = Tensor::new(&[[next]], &dev).unwrap();
                    logits = model
                        .forward(&tok, Some(&mut cache), LogitsToKeep::Last)
                        .unwrap();
                }
                // A row that stopped early is padded to the batch's length.
                if out.len() < want.len() {
                    let pad = pad.or(eos.first().copied()).unwrap_or(0);
                    out.resize(want.len(), pad);
                }
                assert_eq!(out, want, "{id}: greedy generated_ids differ (row {row})");
                if let Some(want_logits) = want_logits {
                    // [L, V] for one row, [B, L, V] for a batch.
                    let want_row = if want_logits.rank() == 2 {
                        assert_eq!(pb, 1, "{id}: generated_logits [L, V] needs one row");
                        want_logits.clone()
                    } else {
                        want_logits.i(row).unwrap()
                    };
                    // The reference's no-cache forward of the recorded sequence (pads included).
                    let seq = Tensor::new(want.as_slice(), &dev)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap();
                    let full = model
                        .forward(&seq, None, LogitsToKeep::All)
                        .unwrap()
                        .i(0)
                        .unwrap();
                    par.check("generated_logits", &full, &want_row, ATOL, RTOL);
                    let steps = Tensor::stack(&step_logits, 0).unwrap();
                    let want_steps = want_row
                        .narrow(0, prompt_len - 1, step_logits.len())
                        .unwrap();
                    par.check(
                        "generated_logits (kv-cached steps)",
                        &steps,
                        &want_steps,
                        ATOL,
                        RTOL,
                    );
                }
            }
        }

        // Every tensor the fixture records was read or compared.
        let unused: Vec<&String> = want_inputs.difference(&used).collect();
        assert!(
            unused.is_empty(),
            "{id}: inputs recorded but not used: {unused:?}"
        );
        let unchecked: Vec<&String> = want_outputs.difference(&compared).collect();
        assert!(
            unchecked.is_empty(),
            "{id}: outputs recorded but not compared: {unchecked:?}"
        );
        par.finish();
    }
}
