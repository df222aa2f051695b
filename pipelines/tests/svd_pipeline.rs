//! Whole-pipeline parity with diffusers' `StableVideoDiffusionPipeline` on every
//! `svd_pipeline` fixture: load `pipeline/`, run the recorded call with the recorded latents and
//! augmentation noise, compare the output frames (the parity line) and every intermediate the
//! fixture holds, so a mismatch says where it starts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use video_testkit::{fixtures, take, Fixture};
use vidgen_pipelines::{PipelineFolder, SvdCall, SvdPipeline, SvdTrace};

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

fn call_of(fx: &Fixture) -> SvdCall {
    let c = fx
        .meta_at("call")
        .unwrap_or_else(|| panic!("{}: no call", fx.id()));
    let u = |k: &str| c.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
    let f = |k: &str| c.get(k).and_then(|v| v.as_f64());
    let d = SvdCall::default();
    let inputs = fx.inputs();
    SvdCall {
        height: u("height"),
        width: u("width"),
        num_frames: u("num_frames"),
        num_inference_steps: u("num_inference_steps").unwrap_or(d.num_inference_steps),
        min_guidance_scale: f("min_guidance_scale").unwrap_or(d.min_guidance_scale),
        max_guidance_scale: f("max_guidance_scale").unwrap_or(d.max_guidance_scale),
        fps: u("fps").unwrap_or(d.fps),
        motion_bucket_id: u("motion_bucket_id").unwrap_or(d.motion_bucket_id),
        noise_aug_strength: f("noise_aug_strength").unwrap_or(d.noise_aug_strength),
        decode_chunk_size: u("decode_chunk_size"),
        latents: Some(take(&inputs, "latents", &fx.id()).clone()),
        aug_noise: Some(take(&inputs, "aug_noise", &fx.id()).clone()),
        ..d
    }
}

#[test]
fn svd_pipeline_parity_every_fixture() {
    for fx in fixtures("svd_pipeline") {
        let folder = PipelineFolder::open(fx.dir.join("pipeline")).unwrap();
        let pipe = SvdPipeline::from_pretrained(&folder, DType::F32, &Device::Cpu).unwrap();
        for r in &pipe.report {
            println!("{}: {r}", fx.id());
        }
        let call = call_of(&fx);
        let mut trace = SvdTrace::default();
        let mut steps = 0;
        let out = pipe
            .call_traced(&image(&fx), &call, &mut |_| steps += 1, Some(&mut trace))
            .unwrap();
        let mid = fx.intermediates();
        let want = fx.outputs();
        let mut p = fx.parity();
        let mut compared = std::collections::BTreeSet::new();
        let mut check = |p: &mut video_testkit::Parity,
                         key: &str,
                         got: &Tensor,
                         atol: f64,
                         rtol_scale: bool| {
            let w = take(&mid, key, &fx.id());
            let tol = if rtol_scale {
                let m = w
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                atol * m.max(1.0)
            } else {
                atol
            };
            p.check(key, got, w, tol, 0.0);
            compared.insert(key.to_string());
        };
        check(
            &mut p,
            "clip_pixel_values",
            trace.clip_pixel_values.as_ref().unwrap(),
            1e-5,
            false,
        );
        check(
            &mut p,
            "image_embeds",
            trace.image_embeds.as_ref().unwrap(),
            2e-5,
            false,
        );
        let sig = Tensor::new(trace.sigmas.as_slice(), &Device::Cpu).unwrap();
        check(&mut p, "sigmas", &sig, 1e-5, true);
        let ts: Vec<f32> = trace.timesteps.iter().map(|&t| t as f32).collect();
        check(
            &mut p,
            "timesteps",
            &Tensor::new(ts.as_slice(), &Device::Cpu).unwrap(),
            1e-5,
            true,
        );
        for (k, t) in &trace.unet_call0 {
            let key = format!("unet_call0.{k}");
            check(&mut p, &key, t, 1e-5, true);
        }
        for (i, l) in trace.latents_after_step.iter().enumerate() {
            check(&mut p, &format!("latents_after_step_{i}"), l, 1e-4, true);
        }
        // Every intermediate the fixture records was compared.
        let mut missing: Vec<&String> = mid.keys().filter(|k| !compared.contains(*k)).collect();
        missing.sort();
        assert!(
            missing.is_empty(),
            "{}: intermediates not compared: {missing:?}",
            fx.id()
        );
        // The reported figure: the output frames, max_abs ≤ 1e-3 (values in [0, 1]).
        p.check(
            "frames",
            &out.frames,
            take(&want, "frames", &fx.id()),
            1e-3,
            0.0,
        );
        assert_eq!(steps, call.num_inference_steps);
        p.finish();
    }
}

/// `DecodeMode::Exact` gives the single pass's frames for every chunk size, where diffusers'
/// chunked decode (`DecodeMode::Chunked`) changes them; `Whole` ignores the chunk size.
#[test]
fn exact_decode_mode_equals_the_whole_pass() {
    use vidgen_pipelines::DecodeMode;
    for fx in fixtures("svd_pipeline") {
        let folder = PipelineFolder::open(fx.dir.join("pipeline")).unwrap();
        let pipe = SvdPipeline::from_pretrained(&folder, DType::F32, &Device::Cpu).unwrap();
        let latents = take(&fx.inputs(), "latents", &fx.id()).clone(); // [B, F, 4, h, w]
        let f = latents.dims()[1];
        let whole = pipe.decode(&latents, Some(1), DecodeMode::Whole).unwrap();
        let diff = |a: &Tensor| {
            (a - &whole)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        for chunk in 1..=f {
            let exact = pipe
                .decode(&latents, Some(chunk), DecodeMode::Exact)
                .unwrap();
            let chunked = pipe
                .decode(&latents, Some(chunk), DecodeMode::Chunked)
                .unwrap();
            let (de, dc) = (diff(&exact), diff(&chunked));
            println!(
                "{} decode_chunk_size {chunk}: exact {de:.3e}, diffusers chunked {dc:.3e}",
                fx.id()
            );
            assert!(de <= 1e-5, "{}: exact decode off by {de}", fx.id());
        }
        assert!(pipe.decode(&latents, Some(0), DecodeMode::Exact).is_err());
    }
}
