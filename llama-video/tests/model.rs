//! Cache consistency, configuration variants, typed errors, prompts, generation and training on
//! tiny random models.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use video_testkit::SeededVarMap;
use vidgen_llama_video::*;
use vidgen_video_core::{Error, TokenGrid};

/// A random model whose weights depend only on `seed` (video-testkit's seeded var map),
/// redrawn as the fixtures' weights: ≥2-D uniform with variance 1/fan_in, 1-D 1 ± 0.1.
fn build(cfg: &LlamaConfig, seed: u64) -> (LlamaForCausalLM, SeededVarMap) {
    use rand::Rng;
    let vars = SeededVarMap::new(seed);
    let model = LlamaForCausalLM::new(cfg, vars.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // `tensors` and `all_vars` are both sorted by name.
    for ((n, t), v) in vars.tensors().iter().zip(vars.all_vars()) {
        let dims = t.dims().to_vec();
        let count: usize = dims.iter().product();
        let vals: Vec<f32> = if dims.len() >= 2 {
            let a = (3.0 / dims[1] as f32).sqrt();
            (0..count).map(|_| rng.random_range(-a..a)).collect()
        } else if n.ends_with("bias") {
            (0..count).map(|_| rng.random_range(-0.1..0.1)).collect()
        } else {
            (0..count)
                .map(|_| 1.0 + rng.random_range(-0.1..0.1))
                .collect()
        };
        v.set(&Tensor::from_vec(vals, dims, &Device::Cpu).unwrap())
            .unwrap();
    }
    (model, vars)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn variant(i: usize) -> LlamaConfig {
    let mut c = LlamaConfig::tiny(50, 32, 2, 4, 2);
    match i % 5 {
        0 => {}
        1 => {
            c.attention_bias = true;
            c.mlp_bias = true;
            c.num_key_value_heads = Some(1);
        }
        2 => {
            c.partial_rotary_factor = Some(0.5);
            c.tie_word_embeddings = true;
        }
        3 => {
            c.rope_parameters = Some(RopeParameters {
                rope_type: Some("llama3".into()),
                rope_theta: Some(500000.0),
                factor: Some(8.0),
                low_freq_factor: Some(1.0),
                high_freq_factor: Some(4.0),
                original_max_position_embeddings: Some(16),
                ..Default::default()
            })
        }
        _ => {
            c.rope_scaling = Some(RopeParameters {
                type_: Some("linear".into()),
                factor: Some(2.0),
                ..Default::default()
            });
        }
    }
    c
}

proptest! {
    // 32 cases: each builds a model and runs it twice (about 0.1 s a case in the dev profile).
    #![proptest_config(video_testkit::proptest_config(32))]
    /// Prefill of any prefix, then decoding in chunks of any size, equals the full forward.
    #[test]
    fn cached_decoding_equals_full_forward(
        v in 0usize..5, b in 1usize..3, t in 2usize..14, split in 1usize..13, chunk in 1usize..4, seed in 0u64..100
    ) {
        let cfg = variant(v);
        let (model, _vars) = build(&cfg, seed);
        let split = split.min(t - 1);
        let ids = Tensor::rand(0f32, cfg.vocab_size as f32, (b, t), &Device::Cpu)
            .unwrap().floor().unwrap().to_dtype(DType::U32).unwrap();
        let full = model.forward(&ids, None, LogitsToKeep::All).unwrap();
        let mut cache = model.new_cache(b, t).unwrap();
        let mut parts = vec![model.forward(&ids.narrow(1, 0, split).unwrap(), Some(&mut cache), LogitsToKeep::All).unwrap()];
        let mut p = split;
        while p < t {
            let n = chunk.min(t - p);
            parts.push(model.forward(&ids.narrow(1, p, n).unwrap(), Some(&mut cache), LogitsToKeep::All).unwrap());
            p += n;
        }
        let cached = Tensor::cat(&parts, 1).unwrap();
        prop_assert!(max_diff(&cached, &full) < 1e-5);
        let last = model.forward(&ids, None, LogitsToKeep::Last).unwrap();
        prop_assert_eq!(last.dims(), &[b, 1, cfg.vocab_size]);
        prop_assert!(max_diff(&last, &full.narrow(1, t - 1, 1).unwrap()) < 1e-6);
    }
}

#[test]
fn dynamic_rope_beyond_context_is_allowed_and_consistent() {
    let mut cfg = LlamaConfig::tiny(40, 32, 1, 4, 4);
    cfg.max_position_embeddings = 4;
    cfg.rope_scaling = Some(RopeParameters {
        rope_type: Some("dynamic".into()),
        factor: Some(2.0),
        ..Default::default()
    });
    assert_eq!(cfg.context_len(), None);
    let (model, _v) = build(&cfg, 1);
    let ids = Tensor::new(&[[1u32, 2, 3, 4, 5, 6, 7, 8]], &Device::Cpu).unwrap();
    let logits = model.forward(&ids, None, LogitsToKeep::All).unwrap();
    assert_eq!(logits.dims(), &[1, 8, 40]);
    // Within the original context, dynamic is plain RoPE.
    let mut plain = cfg.clone();
    plain.rope_scaling = None;
    plain.max_position_embeddings = 64;
    let vb = VarBuilder::from_tensors(_v.tensors().into_iter().collect(), DType::F32, &Device::Cpu);
    let plain_model = LlamaForCausalLM::new(&plain, vb).unwrap();
    let short = ids.narrow(1, 0, 4).unwrap();
    let a = model.forward(&short, None, LogitsToKeep::All).unwrap();
    let b = plain_model
        .forward(&short, None, LogitsToKeep::All)
        .unwrap();
    assert!(max_diff(&a, &b) < 1e-6);
    assert!(
        max_diff(
            &logits,
            &plain_model.forward(&ids, None, LogitsToKeep::All).unwrap()
        ) > 1e-4
    );
}

#[test]
fn tied_embeddings_do_not_read_lm_head() {
    let mut cfg = LlamaConfig::tiny(30, 16, 1, 2, 2);
    cfg.tie_word_embeddings = true;
    let (_m, vars) = build(&cfg, 0);
    let data = vars.tensors();
    assert!(data.contains_key("model.embed_tokens.weight"));
    assert!(!data.keys().any(|k| k.starts_with("lm_head")));
    cfg.tie_word_embeddings = false;
    let (_m, vars) = build(&cfg, 0);
    assert!(vars.tensors().contains_key("lm_head.weight"));
}

#[test]
fn bad_input_gives_typed_errors() {
    let mut cfg = LlamaConfig::tiny(20, 16, 1, 2, 1);
    cfg.max_position_embeddings = 8;
    let (model, _v) = build(&cfg, 0);
    let dev = Device::Cpu;
    // Token id == vocab.
    let e = model
        .forward(
            &Tensor::new(&[[1u32, 20]], &dev).unwrap(),
            None,
            LogitsToKeep::All,
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("20"),
        "{e}"
    );
    // Negative i64 id.
    let e = model
        .forward(
            &Tensor::new(&[[-1i64, 2]], &dev).unwrap(),
            None,
            LogitsToKeep::All,
        )
        .unwrap_err();
    assert!(e.to_string().contains("-1"), "{e}");
    // Float ids.
    assert!(matches!(
        model.forward(
            &Tensor::new(&[[1f32]], &dev).unwrap(),
            None,
            LogitsToKeep::All
        ),
        Err(Error::DType { .. })
    ));
    // Longer than the context (max_position_embeddings = 8).
    let long = Tensor::zeros((1, 9), DType::U32, &dev).unwrap();
    let e = model.forward(&long, None, LogitsToKeep::All).unwrap_err();
    assert!(e.to_string().contains("context of 8"), "{e}");
    // Embedding width mismatch.
    let e = model
        .forward_embeds(
            &Tensor::zeros((1, 3, 15), DType::F32, &dev).unwrap(),
            None,
            LogitsToKeep::All,
        )
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // A full cache.
    let mut cache = model.new_cache(1, 4).unwrap();
    let ids = Tensor::zeros((1, 3), DType::U32, &dev).unwrap();
    model
        .forward(&ids, Some(&mut cache), LogitsToKeep::Last)
        .unwrap();
    let e = model
        .forward(&ids, Some(&mut cache), LogitsToKeep::Last)
        .unwrap_err();
    assert!(
        e.to_string().contains("kv cache") && e.to_string().contains("at most 4"),
        "{e}"
    );
    assert_eq!(cache.len(), 3, "a failed call leaves the cache as it was");
    // Batch mismatch with the cache.
    let e = model
        .forward(
            &Tensor::zeros((2, 1), DType::U32, &dev).unwrap(),
            Some(&mut cache),
            LogitsToKeep::Last,
        )
        .unwrap_err();
    assert!(e.to_string().contains("batch"), "{e}");
}

#[test]
fn loading_is_strict_and_configs_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LlamaConfig::tiny(30, 16, 2, 2, 2);
    let (_m, vars) = build(&cfg, 0);
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    vars.save(dir.path().join("model.safetensors")).unwrap();
    let (m, report) =
        LlamaForCausalLM::from_pretrained(dir.path(), DType::F32, &Device::Cpu).unwrap();
    assert!(report.is_clean());
    assert_eq!(m.config().num_hidden_layers, 2);
    // A config with more layers than the checkpoint: the missing key is named.
    let mut more = cfg.clone();
    more.num_hidden_layers = 3;
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&more).unwrap(),
    )
    .unwrap();
    let e = LlamaForCausalLM::from_pretrained(dir.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("model.layers.2."), "{e}");
    // An unsupported rope type is named with its field and the file.
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"vocab_size": 30, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 32, "rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4}}"#,
    )
    .unwrap();
    let e = LlamaForCausalLM::from_pretrained(dir.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        matches!(e, Error::Unsupported { .. }) && e.to_string().contains("longrope"),
        "{e}"
    );
    // A wrongly typed field.
    std::fs::write(dir.path().join("config.json"), r#"{"hidden_size": "big"}"#).unwrap();
    let e = LlamaForCausalLM::from_pretrained(dir.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("hidden_size"), "{e}");
}

#[test]
fn half_precision_runs_close_to_f32() {
    let cfg = LlamaConfig::tiny(40, 32, 2, 4, 2);
    let (m32, vars) = build(&cfg, 3);
    let ts = vars.tensors().into_iter().collect();
    let m16 = LlamaForCausalLM::new(
        &cfg,
        VarBuilder::from_tensors(ts, DType::BF16, &Device::Cpu),
    )
    .unwrap();
    let ids = Tensor::new(&[[1u32, 5, 9, 3, 7]], &Device::Cpu).unwrap();
    let a = m32.forward(&ids, None, LogitsToKeep::All).unwrap();
    let b = m16.forward(&ids, None, LogitsToKeep::All).unwrap();
    assert_eq!(b.dtype(), DType::BF16);
    let scale = a
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(max_diff(&a, &b.to_dtype(DType::F32).unwrap()) < 0.1 * scale);
}

fn grid(start: u32, t: usize, h: usize, w: usize) -> TokenGrid {
    TokenGrid::from_vec(
        (0..(t * h * w) as u32).map(|i| (start + i) % 40).collect(),
        t,
        h,
        w,
    )
    .unwrap()
}

#[test]
fn prompt_flattens_in_order_and_maps_back() {
    let text = Tensor::zeros((1, 3, 8), DType::F32, &Device::Cpu).unwrap();
    let p = VideoPrompt::builder()
        .text_prefix(text)
        .demo(grid(0, 2, 2, 3))
        .demo(grid(100, 1, 1, 2))
        .query(grid(200, 1, 2, 3))
        .build()
        .unwrap();
    assert_eq!((p.text_len(), p.video_len(), p.len()), (3, 12 + 2 + 6, 23));
    let ids: Vec<u32> = p.ids().i(0).unwrap().to_vec1().unwrap();
    let want: Vec<u32> = (0..12)
        .chain([20, 21])
        .chain((0..6).map(|i| (200 + i) % 40))
        .collect();
    assert_eq!(ids, want);
    assert_eq!(p.locate(1), Location::Text(1));
    assert_eq!(
        p.locate(3 + 7),
        Location::Video {
            kind: SegmentKind::Demo(0),
            frame: 1,
            row: 0,
            col: 1
        }
    );
    assert_eq!(
        p.locate(3 + 13),
        Location::Video {
            kind: SegmentKind::Demo(1),
            frame: 0,
            row: 0,
            col: 1
        }
    );
    assert_eq!(
        p.locate(23 + 6 + 4),
        Location::Generated {
            frame: 1,
            row: 1,
            col: 1
        }
    );
    assert_eq!(p.query().start, 17);
    let m: Vec<f32> = p.video_mask(true).unwrap().i(0).unwrap().to_vec1().unwrap();
    assert_eq!(m.iter().sum::<f32>(), 6.0);
    assert_eq!(m[17], 1.0);
    let frames = p
        .to_frames(
            &Tensor::new(&[[1u32, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]], &Device::Cpu).unwrap(),
        )
        .unwrap();
    assert_eq!(frames.dims4(), (1, 2, 2, 3));
    // Errors: no query, batch mismatch, bad text rank.
    assert!(VideoPrompt::builder()
        .demo(grid(0, 1, 2, 2))
        .build()
        .is_err());
    let two =
        TokenGrid::new(Tensor::zeros((2, 1, 2, 2), DType::U32, &Device::Cpu).unwrap()).unwrap();
    assert!(VideoPrompt::builder()
        .demo(two)
        .query(grid(0, 1, 2, 2))
        .build()
        .is_err());
    let bad = Tensor::zeros((1, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(VideoPrompt::builder()
        .text_prefix(bad)
        .query(grid(0, 1, 2, 2))
        .build()
        .is_err());
}

#[test]
fn generation_is_seeded_and_reports_progress() {
    let cfg = LlamaConfig::tiny(40, 32, 2, 4, 2);
    let (model, _v) = build(&cfg, 7);
    let lm = VideoLm::new(model);
    let p = VideoPrompt::builder()
        .demo(grid(0, 2, 2, 2))
        .query(grid(9, 1, 2, 2))
        .build()
        .unwrap();
    let s = SamplingConfig::with_temperature(1.0).top_k(10).top_p(0.9);
    let run = |seed: u64| {
        let mut calls = Vec::new();
        let g = lm
            .generate_frames(&p, 3, &s, &mut ChaCha8Rng::seed_from_u64(seed), |pr| {
                calls.push(pr.frames_done)
            })
            .unwrap();
        (
            g.ids().flatten_all().unwrap().to_vec1::<u32>().unwrap(),
            calls,
        )
    };
    let (a, calls) = run(1);
    assert_eq!(calls, vec![1, 2, 3]);
    assert_eq!(a.len(), 12);
    assert_eq!(run(1).0, a);
    assert_ne!(run(2).0, a);
    // Greedy generation equals argmax over full (uncached) forwards.
    let g = lm
        .generate_frames(
            &p,
            1,
            &SamplingConfig::greedy(),
            &mut ChaCha8Rng::seed_from_u64(0),
            |_| {},
        )
        .unwrap();
    let mut seq: Vec<u32> = p.ids().i(0).unwrap().to_vec1().unwrap();
    for _ in 0..4 {
        let ids = Tensor::new(seq.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let l = lm.model().forward(&ids, None, LogitsToKeep::Last).unwrap();
        seq.push(
            l.flatten_all()
                .unwrap()
                .argmax(0)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap(),
        );
    }
    assert_eq!(
        g.ids().flatten_all().unwrap().to_vec1::<u32>().unwrap(),
        seq[seq.len() - 4..]
    );
    // Restricting to the codebook range.
    let g = lm
        .generate_frames(
            &p,
            1,
            &SamplingConfig::with_temperature(2.0).allowed(30..40),
            &mut ChaCha8Rng::seed_from_u64(0),
            |_| {},
        )
        .unwrap();
    assert!(g
        .ids()
        .flatten_all()
        .unwrap()
        .to_vec1::<u32>()
        .unwrap()
        .iter()
        .all(|&x| x >= 30));
    // Too long for the context (1024 positions).
    let e = lm
        .generate_frames(
            &p,
            300,
            &SamplingConfig::greedy(),
            &mut ChaCha8Rng::seed_from_u64(0),
            |_| {},
        )
        .unwrap_err();
    assert!(e.to_string().contains("context"), "{e}");
}

#[test]
fn text_prefix_projection_and_guidance() {
    let cfg = LlamaConfig::tiny(40, 32, 2, 4, 2);
    let (model, _v) = build(&cfg, 5);
    let pvars = SeededVarMap::new(100);
    let pcfg = TextProjectionConfig {
        text_dim: 12,
        hidden_size: 32,
        kind: ProjectionKind::Mlp { hidden: 24 },
    };
    let proj = TextProjection::new(&pcfg, pvars.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let lm = VideoLm::new(model.clone()).with_text_projection(proj);
    let text = Tensor::randn(0f32, 1.0, (1, 4, 12), &Device::Cpu).unwrap();
    let p = VideoPrompt::builder()
        .text_prefix(text.clone())
        .query(grid(3, 1, 2, 2))
        .build()
        .unwrap();
    assert_eq!(lm.prompt_embeds(&p).unwrap().dims(), &[1, 8, 32]);
    for uncond in [UncondPrefix::Zeros, UncondPrefix::Drop] {
        let lm = lm.clone().with_uncond_prefix(uncond);
        let g = lm
            .generate_frames(
                &p,
                2,
                &SamplingConfig::greedy().cfg_scale(3.0),
                &mut ChaCha8Rng::seed_from_u64(0),
                |_| {},
            )
            .unwrap();
        assert_eq!(g.dims4(), (1, 2, 2, 2));
    }
    // Wrong text width: typed error.
    let bad = VideoPrompt::builder()
        .text_prefix(Tensor::zeros((1, 4, 13), DType::F32, &Device::Cpu).unwrap())
        .query(grid(3, 1, 2, 2))
        .build()
        .unwrap();
    assert!(matches!(
        lm.prompt_embeds(&bad),
        Err(Error::ShapeMismatch { .. })
    ));
    // Without a projection the prefix must already have the hidden size.
    assert!(matches!(
        VideoLm::new(model).prompt_embeds(&p),
        Err(Error::ShapeMismatch { .. })
    ));
    // Guidance without a text prefix.
    let plain = VideoPrompt::builder()
        .query(grid(3, 1, 2, 2))
        .build()
        .unwrap();
    assert!(lm
        .generate_frames(
            &plain,
            1,
            &SamplingConfig::greedy().cfg_scale(2.0),
            &mut ChaCha8Rng::seed_from_u64(0),
            |_| {}
        )
        .is_err());
}

#[test]
fn adamw_steps_reduce_the_masked_loss() {
    let cfg = LlamaConfig::tiny(24, 32, 2, 4, 2);
    let (model, vars) = build(&cfg, 9);
    let pvars = SeededVarMap::new(100);
    let pcfg = TextProjectionConfig {
        text_dim: 6,
        hidden_size: 32,
        kind: ProjectionKind::Linear,
    };
    let proj = TextProjection::new(&pcfg, pvars.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let lm = VideoLm::new(model).with_text_projection(proj);
    let mk = |s: u32, t: usize| {
        VideoPrompt::builder()
            .text_prefix(Tensor::ones((1, 2, 6), DType::F32, &Device::Cpu).unwrap())
            .demo(grid(s, 2, 2, 2))
            .query(grid(s + 1, t, 2, 2))
            .build()
            .unwrap()
    };
    let batch = TrainBatch::from_prompts(&[mk(0, 2), mk(5, 1)], LossOn::Query).unwrap();
    assert_eq!(batch.ids().dims(), &[2, 16]);
    let mask: Vec<Vec<f32>> = batch.loss_mask().to_vec2().unwrap();
    assert_eq!(mask[0].iter().sum::<f32>(), 8.0);
    assert_eq!(mask[1].iter().sum::<f32>(), 4.0);
    let mut params = vars.all_vars();
    params.extend(pvars.all_vars());
    let mut opt = AdamW::new(
        params,
        ParamsAdamW {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    let first = lm.train_step(&mut opt, &batch).unwrap();
    let mut last = first;
    for _ in 0..8 {
        last = lm.train_step(&mut opt, &batch).unwrap();
    }
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    // Loss equals a hand computation of the masked mean.
    let plain = TrainBatch::new(
        Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu).unwrap(),
        Tensor::new(&[[1f32, 0., 1., 1.]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let loss = next_token_loss(lm.model(), None, &plain)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let logits = lm
        .model()
        .forward(plain.ids(), None, LogitsToKeep::All)
        .unwrap();
    let lp = candle_nn::ops::log_softmax(&logits.i(0).unwrap(), 1).unwrap();
    let want = -(lp.i((1, 3)).unwrap().to_scalar::<f32>().unwrap()
        + lp.i((2, 4)).unwrap().to_scalar::<f32>().unwrap())
        / 2.0;
    assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
    // Weighted targets: Σ w·nll / Σ w (the masked-out token's weight does not count).
    let weighted = plain
        .clone()
        .with_loss_weights(&Tensor::new(&[[5f32, 7., 3., 1.]], &Device::Cpu).unwrap())
        .unwrap();
    let wl = next_token_loss(lm.model(), None, &weighted)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let want_w = -(3.0 * lp.i((1, 3)).unwrap().to_scalar::<f32>().unwrap()
        + lp.i((2, 4)).unwrap().to_scalar::<f32>().unwrap())
        / 4.0;
    assert!((wl - want_w).abs() < 1e-5, "{wl} vs {want_w}");
    for bad in [
        [1f32, -1., 1., 1.],
        [1., 1., f32::NAN, 1.],
        [0., 5., 0., 0.],
    ] {
        let w = Tensor::new(&[bad], &Device::Cpu).unwrap();
        assert!(plain.clone().with_loss_weights(&w).is_err(), "{bad:?}");
    }
    let w = Tensor::new(&[[1f32, 1.]], &Device::Cpu).unwrap();
    assert!(plain.clone().with_loss_weights(&w).is_err());
    // No target at all.
    let none = TrainBatch::new(
        Tensor::new(&[[1u32, 2]], &Device::Cpu).unwrap(),
        Tensor::new(&[[1f32, 0.]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    assert!(next_token_loss(lm.model(), None, &none).is_err());
    let _ = opt.learning_rate();
}

#[test]
fn llama_config_parser_never_panics() {
    let sample = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/llama/base/model/config.json"),
    )
    .unwrap();
    video_testkit::assert_config_never_panics(&sample, |b| {
        let cfg: LlamaConfig = vidgen_video_core::loading::parse_config(b, None)?;
        cfg.validate()?;
        cfg.rope()?;
        let _ = cfg.context_len();
        Ok::<_, Error>(cfg)
    });
}
