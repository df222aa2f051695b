//! Whole-pipeline parity with diffusers' `AnimateDiffPipeline` on every `animatediff_pipeline`
//! fixture: load `pipeline/` (tokenizer included), run the recorded call with the recorded
//! latents, compare the frames (the parity line) and every intermediate the fixture holds,
//! failing on any it holds that this test does not compare. The second layout (an SD folder
//! with a 2-D `unet/` plus a motion adapter, combined as `UNetMotionModel.from_unet2d`) is
//! built from the same fixture and must give the same frames.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use video_testkit::{fixtures, take, Fixture, Parity};
use vidgen_pipelines::{AnimateDiffCall, AnimateDiffPipeline, DenoiseTrace, PipelineFolder};

/// `call` keys this test passes on; any other key would be an argument silently ignored.
const CALL_KEYS: &[&str] = &[
    "prompt",
    "negative_prompt",
    "num_frames",
    "height",
    "width",
    "num_inference_steps",
    "guidance_scale",
    "decode_chunk_size",
    "eta",
];

fn call_of(fx: &Fixture) -> AnimateDiffCall {
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
    let u = |k: &str| c.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
    let f = |k: &str| c.get(k).and_then(|v| v.as_f64());
    let d = AnimateDiffCall::default();
    AnimateDiffCall {
        prompt: s("prompt").unwrap_or_default(),
        negative_prompt: s("negative_prompt"),
        num_frames: u("num_frames").unwrap_or(d.num_frames),
        height: u("height"),
        width: u("width"),
        num_inference_steps: u("num_inference_steps").unwrap_or(d.num_inference_steps),
        guidance_scale: f("guidance_scale").unwrap_or(d.guidance_scale),
        decode_chunk_size: u("decode_chunk_size").unwrap_or(d.decode_chunk_size),
        eta: f("eta").unwrap_or(d.eta),
        latents: Some(take(&fx.inputs(), "latents", &fx.id()).clone()),
        ..d
    }
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn check_mid(
    p: &mut Parity,
    compared: &mut BTreeSet<String>,
    fx: &Fixture,
    mid: &HashMap<String, Tensor>,
    key: &str,
    got: &Tensor,
    atol: f64,
) {
    // Relative to the reference's scale (the README's `≤ atol · max|ref|`): both sides are
    // divided by max(1, max|ref|), so the parity line stays on the output's [0, 1] scale
    // (latents reach |x| ≈ 100 with random weights).
    let w = take(mid, key, &fx.id());
    let m = max_abs(w).max(1.0);
    p.check(key, &(got / m).unwrap(), &(w / m).unwrap(), atol, 0.0);
    compared.insert(key.to_string());
}

/// Runs the fixture's call on `pipe`, checks everything, prints the parity line; returns the
/// frames.
fn run_and_check(fx: &Fixture, pipe: &AnimateDiffPipeline, label: &str) -> Tensor {
    let call = call_of(fx);
    let mut trace = DenoiseTrace::default();
    let mut steps = 0;
    let out = pipe
        .call_traced(&call, &mut |_| steps += 1, Some(&mut trace))
        .unwrap();
    let mid = fx.intermediates();
    let mut p = fx.parity();
    let mut compared = BTreeSet::new();
    let ts: Vec<f32> = trace.timesteps.iter().map(|&t| t as f32).collect();
    let ts = Tensor::new(ts.as_slice(), &Device::Cpu).unwrap();
    check_mid(&mut p, &mut compared, fx, &mid, "timesteps", &ts, 1e-5);
    for (k, t) in &trace.unet_call0 {
        check_mid(
            &mut p,
            &mut compared,
            fx,
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
            fx,
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
    let want = fx.outputs();
    p.check(
        "frames",
        &out.frames,
        take(&want, "frames", &fx.id()),
        1e-3,
        0.0,
    );
    if let Some(n) = fx.meta_at("unet_calls").and_then(|v| v.as_u64()) {
        assert_eq!(steps, n as usize, "{}: UNet calls", fx.id());
    }
    println!("{} ({label}):", fx.id());
    p.finish();
    out.frames
}

#[test]
fn animatediff_pipeline_parity_every_fixture() {
    let all = fixtures("animatediff_pipeline");
    assert!(!all.is_empty(), "no animatediff_pipeline fixtures");
    for fx in all {
        let folder = PipelineFolder::open(fx.dir.join("pipeline")).unwrap();
        let pipe = AnimateDiffPipeline::from_pretrained(&folder, DType::F32, &Device::Cpu).unwrap();
        for r in &pipe.report {
            println!("{}: {r}", fx.id());
        }
        let frames = run_and_check(&fx, &pipe, "combined UNetMotionModel");

        // The other layout: a 2-D unet/ + motion_adapter/, combined on load.
        let tmp = tempfile::tempdir().unwrap();
        split_unet(&fx.dir.join("pipeline"), tmp.path());
        let folder2 = PipelineFolder::open(tmp.path()).unwrap();
        let pipe2 =
            AnimateDiffPipeline::from_pretrained(&folder2, DType::F32, &Device::Cpu).unwrap();
        assert!(pipe2.report.iter().any(|r| r.class == "MotionAdapter"));
        // Reported as `<kind>/<name>+unet2d_adapter` (a second comparison on the same folder).
        let mut fx2 = fx.clone();
        fx2.name = format!("{}+unet2d_adapter", fx.name);
        let frames2 = run_and_check(&fx2, &pipe2, "UNet2DConditionModel + MotionAdapter");
        let d = max_abs(&(&frames - &frames2).unwrap());
        assert_eq!(d, 0.0, "{}: the two layouts differ by {d}", fx.id());
    }
}

/// Copies a saved AnimateDiff pipeline to `dst` with `unet/` rewritten as the 2-D
/// `UNet2DConditionModel` it was built from (the motion-module tensors dropped, the config
/// mapped back), so that loading must combine it with `motion_adapter/`.
fn split_unet(src: &Path, dst: &Path) {
    copy_dir(src, dst);
    let unet = dst.join("unet");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(unet.join("config.json")).unwrap()).unwrap();
    let map_types = |k: &str| -> serde_json::Value {
        cfg[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| serde_json::Value::from(t.as_str().unwrap().replace("Motion", "2D")))
            .collect()
    };
    let mut c2 = serde_json::json!({
        "_class_name": "UNet2DConditionModel",
        "down_block_types": map_types("down_block_types"),
        "up_block_types": map_types("up_block_types"),
        // UNet2DConditionModel's legacy name for the number of heads.
        "attention_head_dim": cfg["num_attention_heads"],
        "flip_sin_to_cos": true,
        "freq_shift": 0,
    });
    for k in [
        "block_out_channels",
        "cross_attention_dim",
        "downsample_padding",
        "in_channels",
        "out_channels",
        "layers_per_block",
        "mid_block_scale_factor",
        "norm_eps",
        "norm_num_groups",
        "sample_size",
        "transformer_layers_per_block",
        "use_linear_projection",
        "act_fn",
    ] {
        c2[k] = cfg[k].clone();
    }
    std::fs::write(unet.join("config.json"), c2.to_string()).unwrap();
    let wpath = unet.join("diffusion_pytorch_model.safetensors");
    let w = candle_core::safetensors::load(&wpath, &Device::Cpu).unwrap();
    let w2: HashMap<String, Tensor> = w
        .into_iter()
        .filter(|(k, _)| !k.contains("motion_modules"))
        .collect();
    candle_core::safetensors::save(&w2, &wpath).unwrap();
    let idx = dst.join("model_index.json");
    let mut mi: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
    mi["unet"] = serde_json::json!(["diffusers", "UNet2DConditionModel"]);
    std::fs::write(&idx, mi.to_string()).unwrap();
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}
