//! Parity with transformers' `LlamaForCausalLM` on every `llama` fixture folder, with and
//! without a KV cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, IndexOp, Tensor};
use video_testkit::{fixtures, take};
use vidgen_llama_video::{LlamaForCausalLM, LogitsToKeep};

const ATOL: f64 = 2e-5;
const RTOL: f64 = 1e-4;

fn argmax_last(logits: &Tensor) -> u32 {
    // [1, 1, V] -> id
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
    for fx in &all {
        let (model, report) = LlamaForCausalLM::load(fx.dir.join("model"), DType::F32, &dev)
            .unwrap_or_else(|e| panic!("{}: load failed: {e}", fx.id()));
        assert!(report.missing.is_empty() && report.mismatched.is_empty());
        let inputs = fx.inputs();
        let outputs = fx.outputs();
        let mut par = fx.parity();

        // 1. Full forward: logits and every hidden state.
        let ids = take(&inputs, "input_ids", &fx.id());
        let (logits, hs) = model.forward_with_hidden_states(ids).unwrap();
        par.check(
            "logits",
            &logits,
            take(&outputs, "logits", &fx.id()),
            ATOL,
            RTOL,
        );
        for (i, h) in hs.iter().enumerate() {
            let key = format!("hidden_states.{i}");
            if let Some(want) = outputs.get(&key) {
                par.check(&key, h, want, ATOL, RTOL);
            }
        }

        // 2. The same logits from a cached prefill of a prefix then token-by-token decode.
        let (b, t) = ids.dims2().unwrap();
        let split = t / 2;
        let mut cache = model.new_cache(b, t).unwrap();
        let mut parts = vec![model
            .forward(
                &ids.narrow(1, 0, split).unwrap(),
                Some(&mut cache),
                LogitsToKeep::All,
            )
            .unwrap()];
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
        par.check("logits (kv cache)", &cached, &logits, ATOL, RTOL);

        // 3. Greedy generation with the cache reproduces `generated_ids` exactly; the logits of
        //    every step match the no-cache forward of the whole generated sequence.
        if let (Some(prompt), Some(gen_ids)) =
            (inputs.get("prompt_ids"), outputs.get("generated_ids"))
        {
            let gen: Vec<i64> = gen_ids.i(0).unwrap().to_vec1().unwrap();
            let prompt_len = prompt.dim(1).unwrap();
            let new = gen.len() - prompt_len;
            let mut cache = model.new_cache(1, gen.len()).unwrap();
            let mut out: Vec<i64> = prompt.i(0).unwrap().to_vec1().unwrap();
            let mut step_logits = Vec::new();
            let mut logits = model
                .forward(prompt, Some(&mut cache), LogitsToKeep::Last)
                .unwrap();
            for _ in 0..new {
                step_logits.push(logits.flatten_all().unwrap());
                let next = argmax_last(&logits);
                out.push(next as i64);
                let tok = Tensor::new(&[[next]], &dev).unwrap();
                logits = model
                    .forward(&tok, Some(&mut cache), LogitsToKeep::Last)
                    .unwrap();
            }
            assert_eq!(out, gen, "{}: greedy generated_ids differ", fx.id());
            if let Some(want) = outputs.get("generated_logits") {
                let full = model
                    .forward(&gen_ids.clone(), None, LogitsToKeep::All)
                    .unwrap()
                    .i(0)
                    .unwrap();
                par.check("generated_logits", &full, want, ATOL, RTOL);
                let steps = Tensor::stack(&step_logits, 0).unwrap();
                let want_steps = want.narrow(0, prompt_len - 1, new).unwrap();
                par.check(
                    "generated_logits (kv cache)",
                    &steps,
                    &want_steps,
                    ATOL,
                    RTOL,
                );
            }
        }
        par.finish();
    }
}
