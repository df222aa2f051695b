//! Release-mode timing of the ~25M-parameter Llama of the `llama_prefill_25m` /
//! `llama_decode_25m` peers (vocab 16384, hidden 512, ffn 1376, 8 layers, 8 heads, kv 8):
//! prefill of 512 tokens (last-position logits only) and 128 greedy decode steps on a
//! 512-token cache.
//!
//! `cargo run --release -p llama-video --example bench_decode [-- REPEATS]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use llama_video::{LlamaConfig, LlamaForCausalLM, LogitsToKeep};

const PROMPT: usize = 512;
const NEW: usize = 128;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let dev = Device::Cpu;
    let cfg = LlamaConfig {
        vocab_size: 16384,
        hidden_size: 512,
        intermediate_size: 1376,
        num_hidden_layers: 8,
        num_attention_heads: 8,
        num_key_value_heads: Some(8),
        max_position_embeddings: 1024,
        rms_norm_eps: 1e-5,
        rope_theta: Some(10000.0),
        ..Default::default()
    };
    // Random init through a VarMap, then an inference model on detached copies of the same
    // tensors (Vars track gradients, which selects the differentiable RMSNorm / RoPE paths).
    let vars = VarMap::new();
    LlamaForCausalLM::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &dev)).unwrap();
    let tensors = vars
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let model =
        LlamaForCausalLM::new(&cfg, VarBuilder::from_tensors(tensors, DType::F32, &dev)).unwrap();
    let n_params: usize = vars.all_vars().iter().map(|v| v.elem_count()).sum();
    let ids = Tensor::rand(0f32, 16384.0, (1, PROMPT), &dev)
        .unwrap()
        .floor()
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap();
    println!(
        "llama 25m: {:.1}M params, {} threads",
        n_params as f64 / 1e6,
        candle_core::utils::get_num_threads()
    );

    // Prefill: fresh cache, logits of the last position only (what generate's prefill does).
    let mut pre = Vec::new();
    for i in 0..repeats + 1 {
        let mut cache = model.new_cache(1, PROMPT + NEW).unwrap();
        let t = Instant::now();
        let l = model
            .forward(&ids, Some(&mut cache), LogitsToKeep::Last)
            .unwrap();
        let _ = l
            .flatten_all()
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        if i > 0 {
            pre.push(t.elapsed().as_secs_f64());
        }
    }
    let p = median(pre);
    println!(
        "prefill {PROMPT} tokens: median {:.1} ms, {:.0} tokens/s",
        p * 1e3,
        PROMPT as f64 / p
    );

    // Decode: prefill untimed, then NEW greedy single-token steps.
    let mut dec = Vec::new();
    for i in 0..repeats.div_ceil(2) + 1 {
        let mut cache = model.new_cache(1, PROMPT + NEW + 1).unwrap();
        let l = model
            .forward(&ids, Some(&mut cache), LogitsToKeep::Last)
            .unwrap();
        let mut tok = l
            .flatten_all()
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        let t = Instant::now();
        for _ in 0..NEW {
            let x = Tensor::from_vec(vec![tok], (1, 1), &dev).unwrap();
            let l = model
                .forward(&x, Some(&mut cache), LogitsToKeep::Last)
                .unwrap();
            tok = l
                .flatten_all()
                .unwrap()
                .argmax(0)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap();
        }
        if i > 0 {
            dec.push(t.elapsed().as_secs_f64());
        }
    }
    let d = median(dec);
    println!(
        "decode {NEW} steps on a {PROMPT}-token cache: median {:.1} ms, {:.1} tokens/s",
        d * 1e3,
        NEW as f64 / d
    );
}
