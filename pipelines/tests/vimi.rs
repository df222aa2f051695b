//! VIMI (issue 32) on tiny seeded parts: a 2-layer BERT with a caption vocabulary stands in for
//! all-MiniLM-L6-v2 (the real weights are only needed by the shipped miniature's smoke test in
//! `examples/tests/vimi_mini.rs`). Covered: the dataset (self-exclusion, near-duplicates,
//! JSONL round trip), retrieval with another embedding model (typed error), the pipeline with
//! zero examples equal to the text-only model, bad examples, a two-stage training run whose
//! folder loads strictly, and the evaluation's `episodes.json`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use vidgen_clip_encoders::{BertConfig, BertModel, BertTokenizer, PoolingConfig, SentenceEncoder};
use vidgen_pipelines::vimi::dataset::{build_manifest, read_manifest, write_manifest};
use vidgen_pipelines::vimi::eval::{evaluate, wilson, Condition, EvalOptions};
use vidgen_pipelines::vimi::index::{pixel_embedding, search_text, TextRetrieval};
use vidgen_pipelines::vimi::train::{make_corpus, train, Stages, TrainOptions};
use vidgen_pipelines::vimi::{
    DatasetOptions, Example, MiniWorld, SentenceStates, VideoDiTConfig, VimiConditionerConfig,
    VimiConfig, VimiGuidance, VimiModel, VimiOptions, VimiPipeline, WorldSpec,
};
use vidgen_video_core::Error;

const WORDS: &str = "a shape moving left right up down and to the red green blue yellow \
                     magenta white square triangle cross ring circle";

/// A tiny sentence encoder (`hidden` wide) over the captions' words, seeded.
fn tiny_states(dir: &Path, seed: u64, hidden: usize, id: &str) -> SentenceStates {
    let mut vocab = vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    vocab.extend(WORDS.split_whitespace());
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n")).unwrap();
    let tok = BertTokenizer::from_dir(dir, 16).unwrap();
    let cfg = BertConfig::from_json_bytes(
        format!(
            r#"{{"vocab_size": {}, "hidden_size": {hidden}, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 32,
            "hidden_act": "gelu", "layer_norm_eps": 1e-12, "type_vocab_size": 2}}"#,
            vocab.len()
        )
        .as_bytes(),
        None,
    )
    .unwrap();
    let dev = Device::Cpu;
    let bert = BertModel::new(
        &cfg,
        false,
        video_testkit::seeded_var_builder(seed, DType::F32, &dev),
    )
    .unwrap();
    let enc = SentenceEncoder::from_parts(bert, tok, PoolingConfig::mean(), true, id);
    SentenceStates::new(enc, 8).unwrap()
}

/// A small model config on the miniature's world (text width 16).
fn tiny_config() -> VimiConfig {
    let mut cfg = VimiConfig::mini();
    cfg.dit = VideoDiTConfig {
        hidden: 32,
        heads: 2,
        layers: 1,
        mlp_ratio: 2,
        context_dim: 32,
        ..VideoDiTConfig::default()
    };
    cfg.vision = serde_json::json!({
        "hidden_size": 16, "intermediate_size": 32, "projection_dim": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_channels": 3,
        "image_size": cfg.world.size, "patch_size": 8, "hidden_act": "gelu",
        "layer_norm_eps": 1e-5
    });
    cfg.conditioner = VimiConditionerConfig {
        text_dim: 16,
        example_dim: 16,
        context_dim: 32,
        max_examples: 2,
        max_frames: cfg.world.frames,
        motion_token: true,
    };
    cfg.text_len = 8;
    cfg
}

fn tiny_pipeline(dir: &Path) -> VimiPipeline {
    let cfg = tiny_config();
    let model = VimiModel::new(
        &cfg,
        video_testkit::seeded_var_builder(3, DType::F32, &Device::Cpu),
    )
    .unwrap();
    VimiPipeline::new(tiny_states(dir, 1, 16, "tiny-minilm"), model).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn dataset_excludes_the_clip_and_its_near_duplicates() {
    let world = MiniWorld::new(WorldSpec::default()).unwrap();
    let corpus = make_corpus(&world, 300, 5, "c", None).unwrap();
    let pix: Vec<Vec<f32>> = corpus
        .scenes
        .iter()
        .map(|s| pixel_embedding(&world.still(s).unwrap()))
        .collect();
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (n(a) * n(b)).max(1e-12)
    };
    let opts = DatasetOptions {
        k: 3,
        ..DatasetOptions::default()
    };
    let rows = build_manifest(&corpus.index, None, &opts).unwrap();
    assert_eq!(rows.len(), 300);
    let mut same_object = 0;
    let mut total = 0;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.item.id, format!("c{i}"));
        assert_eq!(r.examples.len(), 3, "{r:?}");
        let mut seen: Vec<usize> = Vec::new();
        for e in &r.examples {
            assert_ne!(e.item, i, "row {i} retrieved itself");
            assert!(
                cos(&pix[i], &pix[e.item]) < 0.98,
                "row {i} retrieved a near-duplicate"
            );
            // hits are not near-duplicates of each other either
            for &j in &seen {
                assert!(cos(&pix[j], &pix[e.item]) < 0.98);
            }
            seen.push(e.item);
            let (a, b) = (&corpus.scenes[i], &corpus.scenes[e.item]);
            same_object += usize::from(a.colour == b.colour && a.shape == b.shape);
            total += 1;
        }
        // BM25 scores come best first
        assert!(r.examples.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // full captions retrieve the same object almost always (24 objects, 300 clips)
    assert!(same_object * 10 >= total * 9, "{same_object}/{total}");
    // JSONL round trip
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("sub/manifest.jsonl");
    write_manifest(&p, &rows).unwrap();
    assert_eq!(read_manifest(&p).unwrap(), rows);
    // malformed manifests are errors, not panics
    std::fs::write(&p, "{not json}\n").unwrap();
    assert!(read_manifest(&p).is_err());
    assert!(read_manifest(&tmp.path().join("missing.jsonl")).is_err());
}

#[test]
fn an_index_of_another_sentence_encoder_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db, dc) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    for d in [&da, &db, &dc] {
        std::fs::create_dir_all(d).unwrap();
    }
    let a = tiny_states(&da, 1, 16, "enc-a");
    let world = MiniWorld::new(WorldSpec::default()).unwrap();
    let corpus = make_corpus(&world, 40, 2, "x", Some(&a)).unwrap();
    let q = ["a blue square moving left"];
    // the index's own encoder works, BM25 works without any encoder
    let hits = search_text(
        &corpus.index,
        Some(&a),
        &q,
        3,
        TextRetrieval::Sentence,
        None,
        None,
    )
    .unwrap();
    assert_eq!(hits[0].len(), 3);
    assert_eq!(
        search_text(&corpus.index, None, &q, 3, TextRetrieval::Bm25, None, None).unwrap()[0].len(),
        3
    );
    // another id with the same width, and another width
    let other_id = tiny_states(&db, 1, 16, "enc-b");
    let other_dim = tiny_states(&dc, 1, 24, "enc-a");
    for st in [&other_id, &other_dim] {
        match search_text(
            &corpus.index,
            Some(st),
            &q,
            3,
            TextRetrieval::Sentence,
            None,
            None,
        ) {
            Err(Error::InvalidArgument { .. }) => {}
            other => panic!("expected a typed error, got {other:?}"),
        }
    }
    // sentence retrieval without an encoder is an error, not a panic
    assert!(search_text(
        &corpus.index,
        None,
        &q,
        3,
        TextRetrieval::Sentence,
        None,
        None
    )
    .is_err());
    // the saved index keeps its model: loading and searching with another is refused too
    let saved = tmp.path().join("index");
    corpus.index.save(&saved).unwrap();
    let back = vidgen_adapters::retrieval::RetrievalIndex::load(&saved).unwrap();
    assert!(search_text(
        &back,
        Some(&other_id),
        &q,
        3,
        TextRetrieval::Sentence,
        None,
        None
    )
    .is_err());
}

#[test]
fn zero_examples_is_the_text_only_model() {
    let tmp = tempfile::tempdir().unwrap();
    let pipe = tiny_pipeline(tmp.path());
    let world = MiniWorld::new(pipe.model().config.world.clone()).unwrap();
    let prompts = ["a shape moving left", "a red ring moving up"];
    let opts = VimiOptions {
        steps: 3,
        guidance: VimiGuidance {
            text: 2.0,
            example: 1.5,
        },
        seed: 9,
        eta: 0.0,
    };
    let none = pipe.generate(&prompts, &[], &opts, &mut |_| {}).unwrap();
    assert_eq!(none.sample.dims(), &[2, 3, 4, 16, 16]);
    assert_eq!(none.videos.len(), 2);
    // empty example lists are the same as no lists
    let empty = pipe
        .generate(&prompts, &[vec![], vec![]], &opts, &mut |_| {})
        .unwrap();
    assert_eq!(max_abs(&none.sample, &empty.sample), 0.0);
    // the contexts without examples are the text tokens alone
    let ctx = pipe.contexts(&prompts, &[]).unwrap();
    assert!(ctx.full.is_none());
    assert_eq!(ctx.text.dims(), &[2, 8, 32]);
    // with examples and s_E = 0, the result is the text-only model's exactly
    let mut rng = vidgen_video_io::synth::seeded_rng(4);
    let ex: Vec<Vec<Example>> = (0..2)
        .map(|_| {
            let s = world.scene(&mut rng, None, None, None).unwrap();
            vec![Example::Image(world.still(&s).unwrap())]
        })
        .collect();
    let zero = VimiOptions {
        guidance: VimiGuidance {
            example: 0.0,
            ..opts.guidance
        },
        ..opts
    };
    let with0 = pipe.generate(&prompts, &ex, &zero, &mut |_| {}).unwrap();
    assert_eq!(max_abs(&none.sample, &with0.sample), 0.0);
    // (the untrained denoiser's output layer is zero-initialised, so that examples change
    // the sample is checked on the trained folder in the training test)
    let with = pipe.generate(&prompts, &ex, &opts, &mut |_| {}).unwrap();
    // the full context is [text ‖ one token per example image]
    let ctx = pipe.contexts(&prompts, &ex).unwrap();
    assert_eq!(ctx.full.unwrap().dims(), &[2, 9, 32]);
    // a clip example gives one token per frame, and its motion token
    let s = world.scene(&mut rng, None, None, None).unwrap();
    let clip = world.clip(&s).unwrap();
    let ctx = pipe
        .contexts(&prompts[..1], &[vec![Example::Clip(clip)]])
        .unwrap();
    let frames = pipe.model().config.world.frames;
    assert_eq!(ctx.full.unwrap().dims(), &[1, 8 + frames + 1, 32]);
    // deterministic
    let again = pipe.generate(&prompts, &ex, &opts, &mut |_| {}).unwrap();
    assert_eq!(max_abs(&with.sample, &again.sample), 0.0);
}

#[test]
fn bad_examples_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let pipe = tiny_pipeline(tmp.path());
    let world = MiniWorld::new(pipe.model().config.world.clone()).unwrap();
    let mut rng = vidgen_video_io::synth::seeded_rng(1);
    let s = world.scene(&mut rng, None, None, None).unwrap();
    let img = || Example::Image(world.still(&s).unwrap());
    let opts = VimiOptions {
        steps: 1,
        ..VimiOptions::default()
    };
    let p2 = ["a shape", "a shape"];
    // different example counts in one batch
    assert!(pipe
        .generate(&p2, &[vec![img()], vec![]], &opts, &mut |_| {})
        .is_err());
    // lists for another number of prompts
    assert!(pipe
        .generate(&p2, &[vec![img()]], &opts, &mut |_| {})
        .is_err());
    // another image size
    let big = vidgen_video_io::Frame::filled(20, 20, [0, 0, 0]).unwrap();
    assert!(pipe
        .generate(&p2[..1], &[vec![Example::Image(big)]], &opts, &mut |_| {})
        .is_err());
    // more examples than the conditioner's slots
    assert!(pipe
        .generate(&p2[..1], &[vec![img(), img(), img()]], &opts, &mut |_| {})
        .is_err());
    // zero steps, non-finite guidance
    let z = VimiOptions { steps: 0, ..opts };
    assert!(pipe.generate(&p2, &[], &z, &mut |_| {}).is_err());
    let nan = VimiOptions {
        guidance: VimiGuidance {
            text: f64::NAN,
            example: 1.0,
        },
        ..opts
    };
    assert!(pipe.generate(&p2, &[], &nan, &mut |_| {}).is_err());
    // a prompt encoder of another width than the model's
    let other = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let model = VimiModel::new(
        &cfg,
        video_testkit::seeded_var_builder(3, DType::F32, &Device::Cpu),
    )
    .unwrap();
    assert!(VimiPipeline::new(tiny_states(other.path(), 1, 24, "wide"), model).is_err());
}

#[test]
fn two_stage_training_writes_a_loadable_folder_and_eval_writes_episodes() {
    let tmp = tempfile::tempdir().unwrap();
    let enc_dir = tmp.path().join("enc");
    std::fs::create_dir_all(&enc_dir).unwrap();
    let states = tiny_states(&enc_dir, 1, 16, "tiny-minilm");
    let cfg = tiny_config();
    let o = TrainOptions {
        corpus: 60,
        stage1_steps: 3,
        stage2_steps: 3,
        stage0_steps: 3,
        stage0_batch: 6,
        batch: 3,
        warmup: 1,
        ..TrainOptions::default()
    };
    let out = tmp.path().join("run");
    let rep = train(&out, &cfg, &o, &states, Stages::Both, false).unwrap();
    assert_eq!(rep.stages.len(), 3);
    for (i, s) in rep.stages.iter().enumerate() {
        assert_eq!(s.stage, i);
        assert_eq!(s.steps, 3);
        assert!(s.loss_end.is_finite());
    }
    let probe = rep.stages[0].probe.as_ref().unwrap();
    assert!(probe["subject_accuracy"].as_f64().unwrap() >= 0.0);
    assert!(probe["position_error_px"].as_f64().unwrap().is_finite());
    for f in [
        "config.json",
        "model.safetensors",
        "train.json",
        "loss-stage0.png",
        "loss-stage1.png",
        "loss-stage2.csv",
        "stage1/manifest.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // the pre-trained example encoder stays frozen through stages 1 and 2, and stage 0's
    // folder holds nothing else (its auxiliary heads are dropped)
    let s0 =
        candle_core::safetensors::load(out.join("stage0/model.safetensors"), &Device::Cpu).unwrap();
    let s2 =
        candle_core::safetensors::load(out.join("stage2/model.safetensors"), &Device::Cpu).unwrap();
    assert!(!s0.is_empty() && s0.keys().all(|k| k.starts_with("vision.")));
    for (k, v) in &s0 {
        assert_eq!(max_abs(v, &s2[k]), 0.0, "{k}");
    }
    let w1 =
        candle_core::safetensors::load(out.join("stage1/model.safetensors"), &Device::Cpu).unwrap();
    let moved = w1
        .iter()
        .filter(|(k, _)| k.starts_with("dit."))
        .any(|(k, v)| max_abs(v, &s2[k]) > 0.0);
    assert!(moved, "stage 2 trains the denoiser");
    // the manifest has one row per corpus clip, none retrieving itself
    let rows = read_manifest(&out.join("stage1/manifest.jsonl")).unwrap();
    assert_eq!(rows.len(), 60);
    for (i, r) in rows.iter().enumerate() {
        assert!(r.examples.iter().all(|e| e.item != i));
    }
    // the final folder loads strictly (f16 on disk) and runs
    let (model, _) = VimiModel::load(&out, DType::F32, &Device::Cpu).unwrap();
    // a folder of another config is refused
    let mut wrong = cfg.clone();
    wrong.dit.layers = 2;
    let wdir = tmp.path().join("wrong");
    std::fs::create_dir_all(&wdir).unwrap();
    std::fs::write(
        wdir.join("config.json"),
        serde_json::to_vec(&wrong).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        out.join("model.safetensors"),
        wdir.join("model.safetensors"),
    )
    .unwrap();
    assert!(VimiModel::load(&wdir, DType::F32, &Device::Cpu).is_err());
    // training rejects k above the conditioner's slots
    let bad = TrainOptions { k: 3, ..o.clone() };
    assert!(train(
        &tmp.path().join("bad"),
        &cfg,
        &bad,
        &states,
        Stages::One,
        false
    )
    .is_err());

    // evaluation: every condition, episodes.json with the documented fields
    let pipe = VimiPipeline::new(states, model).unwrap();
    // trained weights: examples change the sample, s_E = 0 is the text-only model
    let world = MiniWorld::new(cfg.world.clone()).unwrap();
    let mut rng = vidgen_video_io::synth::seeded_rng(8);
    let sc = world.scene(&mut rng, None, None, None).unwrap();
    let ex = vec![vec![Example::Image(world.still(&sc).unwrap())]];
    let prompt = ["a shape moving left"];
    let go = |ex: &[Vec<Example>], s_e: f64| {
        let o = VimiOptions {
            steps: 2,
            guidance: VimiGuidance {
                text: 2.0,
                example: s_e,
            },
            seed: 1,
            eta: 0.0,
        };
        pipe.generate(&prompt, ex, &o, &mut |_| {}).unwrap().sample
    };
    let plain = go(&[], 2.0);
    assert_eq!(max_abs(&plain, &go(&ex, 0.0)), 0.0);
    assert!(max_abs(&plain, &go(&ex, 2.0)) > 0.0);
    let ev = tmp.path().join("eval");
    std::fs::create_dir_all(&ev).unwrap();
    let eo = EvalOptions {
        prompts: 3,
        steps: 2,
        batch: 2,
        index_size: 48,
        ..EvalOptions::default()
    };
    let report = evaluate(&pipe, &eo, Some(&ev), &mut |_, _, _| {}).unwrap();
    assert_eq!(report.conditions.len(), Condition::ALL.len());
    for c in &report.conditions {
        assert_eq!(c.n, 3);
        assert!(c.object <= c.colour.min(c.shape));
    }
    assert_eq!(report.retrieval.len(), 4);
    let eps: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ev.join("episodes.json")).unwrap()).unwrap();
    let eps = eps.as_array().unwrap();
    assert_eq!(eps.len(), 3 * Condition::ALL.len());
    for e in eps {
        let file = e["file"].as_str().unwrap();
        assert!(ev.join(file).is_file(), "{file}");
        assert!(e["condition"].is_string());
        assert!(e["instruction"].is_string());
        let d = e["expected_direction"].as_array().unwrap();
        assert_eq!(d.len(), 2);
        let (dx, dy) = (d[0].as_i64().unwrap(), d[1].as_i64().unwrap());
        assert!(dx.abs() <= 1 && dy.abs() <= 1 && (dx, dy) != (0, 0));
        if e["condition"] == "no-example" {
            assert!(e["expected_color"].is_null());
        } else {
            assert_eq!(e["expected_color"].as_array().unwrap().len(), 3);
            assert!(e["expected_shape"].is_string());
        }
    }
    assert!(ev.join("report.json").is_file());
}

#[test]
fn wilson_intervals() {
    let (lo, hi) = wilson(0, 0);
    assert_eq!((lo, hi), (0.0, 1.0));
    let (lo, hi) = wilson(170, 200);
    // known values (z = 1.96): 0.85 -> [0.7946, 0.8932]
    assert!(
        (lo - 0.7946).abs() < 1e-3 && (hi - 0.8932).abs() < 1e-3,
        "{lo} {hi}"
    );
    let (lo, hi) = wilson(200, 200);
    assert!(hi <= 1.0 && lo > 0.98);
    let (lo, _) = wilson(0, 200);
    assert_eq!(lo, 0.0);
}

/// The shipped miniature (`examples/assets/vimi-mini`) on 50 seeded prompts: it loads
/// strictly, generates, the probe reads its clips, and the example decides the object. Needs
/// the real all-MiniLM-L6-v2 weights (skipped without them unless `VIDGEN_REQUIRE_WEIGHTS=1`).
///
/// Asserted: the issue's smoke threshold, example agreement at least [`EXAMPLE_FLOOR_PERCENT`]
/// (70%) with a given example (the shipped weights reach 47 / 50 here, 90.5% over the 200
/// episodes of `vidgen vimi eval`), and at most [`NO_EXAMPLE_CEILING_PERCENT`] without one
/// (chance: 4.2%), so the effect is the example's; the motion follows the ambiguous prompt's
/// text ([`DIRECTION_FLOOR_PERCENT`]); and the full caption fixes the colour.
#[test]
fn shipped_miniature_smoke() {
    let Some(weights) = video_testkit::weights_file("all-minilm-l6-v2/model.safetensors") else {
        return;
    };
    let asset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/assets/vimi-mini");
    if !asset.join("model.safetensors").is_file() {
        eprintln!("SKIPPED: no shipped miniature at {}", asset.display());
        return;
    }
    let minilm = weights.parent().unwrap();
    let pipe = VimiPipeline::load(&asset, minilm).unwrap();
    let opts = EvalOptions {
        prompts: 50,
        steps: 10,
        index_size: 200,
        conditions: vec![
            Condition::GivenImage,
            Condition::NoExample,
            Condition::TextOnly,
        ],
        ..EvalOptions::default()
    };
    let r = evaluate(&pipe, &opts, None, &mut |_, _, _| {}).unwrap();
    for c in &r.conditions {
        assert_eq!(c.n, 50);
        eprintln!(
            "{}: object {}/50 colour {}/50 shape {}/50 direction {}/50",
            c.condition.label(),
            c.object,
            c.colour,
            c.shape,
            c.direction
        );
    }
    let (given, none, text) = (&r.conditions[0], &r.conditions[1], &r.conditions[2]);
    assert!(
        given.object * 100 >= EXAMPLE_FLOOR_PERCENT * given.n,
        "given-image object {}/{} below {EXAMPLE_FLOOR_PERCENT}%",
        given.object,
        given.n
    );
    assert!(
        given.direction * 100 >= DIRECTION_FLOOR_PERCENT * given.n,
        "given-image direction {}/{} below {DIRECTION_FLOOR_PERCENT}%",
        given.direction,
        given.n
    );
    assert!(
        none.object * 100 <= NO_EXAMPLE_CEILING_PERCENT * none.n,
        "no-example object {}/{} above {NO_EXAMPLE_CEILING_PERCENT}%",
        none.object,
        none.n
    );
    assert!(
        text.colour * 100 >= TEXT_COLOUR_FLOOR_PERCENT * text.n,
        "text-only colour {}/{} below {TEXT_COLOUR_FLOOR_PERCENT}%",
        text.colour,
        text.n
    );
}

/// Floor on the given-image object agreement: the issue's smoke threshold (the shipped weights
/// reach 94% on these 50 prompts).
const EXAMPLE_FLOOR_PERCENT: usize = 70;
/// Floor on the given-image direction agreement (chance 12.5%; the shipped weights reach 100%
/// on these 50 prompts, 94% over 200).
const DIRECTION_FLOOR_PERCENT: usize = 70;
/// Ceiling on the object agreement without an example (chance: 4.2%; they reach 2%).
const NO_EXAMPLE_CEILING_PERCENT: usize = 20;
/// Floor on the text-only colour rate of the shipped weights (chance: 16.7%; they reach 100%).
const TEXT_COLOUR_FLOOR_PERCENT: usize = 60;
