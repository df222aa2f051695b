//! No silent NaN and no panics on empty inputs: non-finite logits are typed errors naming where
//! they appeared (the model's output, the sampling step), and zero-length sequences are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use video_testkit::SeededVarMap;
use vidgen_llama_video::sampling::last_rows;
use vidgen_llama_video::*;
use vidgen_video_core::{Error, TokenGrid};

/// A tiny random model whose `embed_tokens` rows `from..` are NaN.
fn model_with_nan_rows(from: usize) -> LlamaForCausalLM {
    let cfg = LlamaConfig::tiny(32, 16, 1, 2, 1);
    let vars = SeededVarMap::new(0);
    let model = LlamaForCausalLM::new(&cfg, vars.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let mut tensors = vars.tensors();
    let mut rows = tensors["model.embed_tokens.weight"]
        .to_vec2::<f32>()
        .unwrap();
    for r in rows.iter_mut().skip(from) {
        r.iter_mut().for_each(|x| *x = f32::NAN);
    }
    let flat: Vec<f32> = rows.into_iter().flatten().collect();
    tensors.insert(
        "model.embed_tokens.weight".into(),
        Tensor::from_vec(flat, (32, 16), &Device::Cpu).unwrap(),
    );
    drop(model);
    let vb = VarBuilder::from_tensors(tensors.into_iter().collect(), DType::F32, &Device::Cpu);
    LlamaForCausalLM::new(&cfg, vb).unwrap()
}

fn nonfinite_location(e: &Error) -> &str {
    match e {
        Error::NonFinite { location, .. } => location,
        other => panic!("expected Error::NonFinite, got {other:?}"),
    }
}

#[test]
fn sampling_refuses_nan_logits() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let row = [0.5f32, f32::NAN, 2.0, -1.0];
    for cfg in [
        SamplingConfig::greedy(),
        SamplingConfig::with_temperature(1.0),
        SamplingConfig::with_temperature(1.0).top_k(2).top_p(0.9),
    ] {
        let e = sample(&row, None, &[], &cfg, &mut rng).unwrap_err();
        assert!(nonfinite_location(&e).contains("logits"), "{e}");
    }
    // A NaN in the unconditional row of guidance, and +inf (softmax of it is NaN).
    let cfg = SamplingConfig::greedy().cfg_scale(2.0);
    let ok = [0.0f32, 1.0, 2.0, 3.0];
    let e = sample(&ok, Some(&row), &[], &cfg, &mut rng).unwrap_err();
    assert!(nonfinite_location(&e).contains("unconditional"), "{e}");
    let inf = [0.0f32, f32::INFINITY, 1.0, 2.0];
    let e = sample(&inf, None, &[], &SamplingConfig::greedy(), &mut rng).unwrap_err();
    nonfinite_location(&e);
    // -inf is a mask, not an error, with and without guidance.
    let masked = [f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY, 0.5];
    for cfg in [
        SamplingConfig::greedy(),
        SamplingConfig::with_temperature(1.0).top_k(1),
    ] {
        assert_eq!(sample(&masked, None, &[], &cfg, &mut rng).unwrap(), 1);
    }
    let t = SamplingConfig::with_temperature(1.0);
    for _ in 0..20 {
        let tok = sample(&masked, None, &[], &t, &mut rng).unwrap();
        assert!(tok == 1 || tok == 3, "{tok}");
    }
    let g = SamplingConfig::greedy().cfg_scale(3.0);
    assert_eq!(
        sample(&masked, Some(&masked), &[], &g, &mut rng).unwrap(),
        1
    );
}

#[test]
fn last_rows_of_an_empty_sequence_is_an_error() {
    let dev = Device::Cpu;
    let empty = Tensor::zeros((2, 0, 5), DType::F32, &dev).unwrap();
    let e = last_rows(&empty).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let one = Tensor::ones((2, 3, 5), DType::F32, &dev).unwrap();
    assert_eq!(last_rows(&one).unwrap(), vec![vec![1.0; 5]; 2]);
}

#[test]
fn head_of_an_empty_sequence_is_an_error() {
    let model = model_with_nan_rows(32);
    let h = Tensor::zeros((1, 0, 16), DType::F32, &Device::Cpu).unwrap();
    for keep in [LogitsToKeep::Last, LogitsToKeep::All] {
        let e = model.head(&h, keep).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }
}

#[test]
fn nan_logits_leave_the_model_as_errors() {
    let dev = Device::Cpu;
    let model = model_with_nan_rows(16);
    // Finite tokens: fine.
    let ok = Tensor::new(&[[1u32, 2, 3]], &dev).unwrap();
    model.forward(&ok, None, LogitsToKeep::All).unwrap();
    // A NaN embedding reaches the logits: the error names the model and the positions.
    let bad = Tensor::new(&[[1u32, 20, 3]], &dev).unwrap();
    let e = model.forward(&bad, None, LogitsToKeep::All).unwrap_err();
    let loc = nonfinite_location(&e);
    assert!(loc.contains("logits") && loc.contains("0..3"), "{e}");
    let e = model.forward_with_hidden_states(&bad).unwrap_err();
    nonfinite_location(&e);
    // Cached decoding: the step's position is named.
    let mut cache = model.new_cache(1, 8).unwrap();
    model
        .forward(&ok, Some(&mut cache), LogitsToKeep::Last)
        .unwrap();
    let tok = Tensor::new(&[[25u32]], &dev).unwrap();
    let e = model
        .forward(&tok, Some(&mut cache), LogitsToKeep::Last)
        .unwrap_err();
    assert!(nonfinite_location(&e).contains("3..4"), "{e}");
}

#[test]
fn generation_names_the_step_of_nan_logits() {
    let model = model_with_nan_rows(16);
    let lm = VideoLm::new(model);
    let query = TokenGrid::from_vec((0..4).collect(), 1, 2, 2).unwrap();
    let prompt = VideoPrompt::builder().query(query).build().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // Step 0 draws a token from the NaN rows; feeding it back makes step 1's logits NaN.
    let s = SamplingConfig::greedy().allowed(16..32);
    let e = lm
        .generate_frames(&prompt, 2, &s, &mut rng, |_| {})
        .unwrap_err();
    let loc = nonfinite_location(&e);
    assert!(loc.contains("generation step 1"), "{e}");
}

#[test]
fn text_generation_names_the_step_and_checks_its_arguments() {
    let model = model_with_nan_rows(16);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let s = SamplingConfig::greedy().allowed(16..32);
    let e = model
        .generate(&[1, 2, 3], 4, &s, &[], &mut rng)
        .unwrap_err();
    assert!(nonfinite_location(&e).contains("generation step 1"), "{e}");
    // Finite rows only: runs, stops at a stop token.
    let g = SamplingConfig::greedy().allowed(0..16);
    let out = model.generate(&[1, 2, 3], 5, &g, &[], &mut rng).unwrap();
    assert_eq!(out.len(), 5);
    let stop = model
        .generate(&[1, 2, 3], 5, &g, &[out[0]], &mut rng)
        .unwrap();
    assert_eq!(stop, [out[0]]);
    assert!(model
        .generate(&[1], 0, &g, &[], &mut rng)
        .unwrap()
        .is_empty());
    // Bad arguments.
    for (prompt, n, cfg, what) in [
        (vec![], 2, g.clone(), "prompt"),
        (vec![1], 2000, g.clone(), "max_new_tokens"),
        (vec![1], 2, g.clone().cfg_scale(2.0), "cfg_scale"),
        (vec![99], 2, g.clone(), "input_ids"),
    ] {
        let e = model.generate(&prompt, n, &cfg, &[], &mut rng).unwrap_err();
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
}
