//! Whole-pipeline parity with diffusers' `StableDiffusionInstructPix2PixPipeline` on every
//! `ip2p_pipeline` fixture: load `pipeline/` (tokenizer included), run the recorded call with the
//! recorded latents and image, compare the edited image (the parity line) and every
//! intermediate the fixture holds, failing on any it holds that this test does not compare.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use candle_core::{DType, Device, Tensor};
use video_testkit::{fixtures, take, Fixture, Parity};
use vidgen_pipelines::{DenoiseTrace, InstructPix2PixPipeline, Ip2pCall, PipelineFolder};

/// The fixture's `image` (`[H, W, 3]` u8) as `[1, 3, H, W]` in `[0, 1]`.
fn image(fx: &Fixture) -> Tensor {
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

/// `call` keys this test passes on; any other key would be an argument silently ignored.
const CALL_KEYS: &[&str] = &[
    "prompt",
    "negative_prompt",
    "num_inference_steps",
    "guidance_scale",
    "image_guidance_scale",
    "eta",
];

fn call_of(fx: &Fixture) -> Ip2pCall {
    let c = fx
        .meta_at("call")
        .and_then(|v| v.as_object())
        .unwrap_or_else(|| panic!("{}: no call", fx.id()));
    for k in c.keys() {
        assert!(
            CALL_KEYS.contains(&k.as_str()),
            "{}: unknown call argument `{k}`",
            fx.id()
        );
    }
    let s = |k: &str| c.get(k).and_then(|v| v.as_str()).map(String::from);
    let f = |k: &str| c.get(k).and_then(|v| v.as_f64());
    let d = Ip2pCall::default();
    Ip2pCall {
        prompt: s("prompt").unwrap_or_default(),
        negative_prompt: s("negative_prompt"),
        num_inference_steps: c
            .get("num_inference_steps")
            .and_then(|v| v.as_u64())
            .map_or(d.num_inference_steps, |v| v as usize),
        guidance_scale: f("guidance_scale").unwrap_or(d.guidance_scale),
        image_guidance_scale: f("image_guidance_scale").unwrap_or(d.image_guidance_scale),
        eta: f("eta").unwrap_or(d.eta),
        latents: Some(take(&fx.inputs(), "latents", &fx.id()).clone()),
        // Noise of a stochastic scheduler's steps, `[N, B, 4, h, w]`, when the fixture records it.
        step_noise: fx
            .inputs()
            .get("step_noise")
            .map(|n| (0..n.dim(0).unwrap()).map(|i| n.get(i).unwrap()).collect()),
        ..d
    }
}

/// Compares `got` with the fixture's intermediate `key` at `atol · max(1, max|ref|)`.
fn check_mid(
    p: &mut Parity,
    compared: &mut BTreeSet<String>,
    fx: &Fixture,
    mid: &std::collections::HashMap<String, Tensor>,
    key: &str,
    got: &Tensor,
    atol: f64,
) {
    // Relative to the reference's scale (the README's `≤ atol · max|ref|`): both sides are
    // divided by max(1, max|ref|), so the parity line stays on the output's [0, 1] scale.
    let w = take(mid, key, &fx.id());
    let m = w
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .max(1.0);
    p.check(key, &(got / m).unwrap(), &(w / m).unwrap(), atol, 0.0);
    compared.insert(key.to_string());
}

#[test]
fn ip2p_pipeline_parity_every_fixture() {
    let all = fixtures("ip2p_pipeline");
    assert!(!all.is_empty(), "no ip2p_pipeline fixtures");
    for fx in all {
        let folder = PipelineFolder::open(fx.dir.join("pipeline")).unwrap();
        let pipe =
            InstructPix2PixPipeline::from_pretrained(&folder, DType::F32, &Device::Cpu).unwrap();
        for r in &pipe.report {
            println!("{}: {r}", fx.id());
        }
        let call = call_of(&fx);
        let mut trace = DenoiseTrace::default();
        let mut steps = 0;
        let out = pipe
            .call_traced(&image(&fx), &call, &mut |_| steps += 1, Some(&mut trace))
            .unwrap();
        let mid = fx.intermediates();
        let mut p = fx.parity();
        let mut compared = BTreeSet::new();
        let ts: Vec<f32> = trace.timesteps.iter().map(|&t| t as f32).collect();
        let ts = Tensor::new(ts.as_slice(), &Device::Cpu).unwrap();
        check_mid(&mut p, &mut compared, &fx, &mid, "timesteps", &ts, 1e-5);
        for (k, t) in &trace.unet_call0 {
            check_mid(
                &mut p,
                &mut compared,
                &fx,
                &mid,
                &format!("unet_call0.{k}"),
                t,
                1e-5,
            );
        }
        for (i, l) in trace.latents_after_step.iter().enumerate() {
            check_mid(
                &mut p,
                &mut compared,
                &fx,
                &mid,
                &format!("latents_after_step_{i}"),
                l,
                1e-4,
            );
        }
        let missing: Vec<&String> = mid.keys().filter(|k| !compared.contains(*k)).collect();
        assert!(
            missing.is_empty(),
            "{}: intermediates not compared: {missing:?}",
            fx.id()
        );
        // The reported figure: the edited image, max_abs ≤ 1e-3 (values in [0, 1]).
        let want = fx.outputs();
        p.check(
            "image",
            &out.image,
            take(&want, "image", &fx.id()),
            1e-3,
            0.0,
        );
        if let Some(n) = fx.meta_at("unet_calls").and_then(|v| v.as_u64()) {
            assert_eq!(steps, n as usize, "{}: UNet calls", fx.id());
        }
        p.finish();
    }
}
