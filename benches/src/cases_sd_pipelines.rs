//! Registry cases of `pipelines`' Stable Diffusion family: InstructPix2Pix and AnimateDiff end
//! to end at the size of the peers' `unet3d_small` (UNet channels [32, 64, 64, 64], two layers
//! per block, context 64), with a small SD VAE ([32, 64, 64, 64], factor 8) and a small CLIP
//! text tower (d 64, 2 layers, the fixtures' 1 014-token tokenizer):
//!
//! - `ip2p_pipeline_small`: a 256×256 picture edited in 10 DDIM steps with three-way guidance
//!   (UNet batch 3 at 32×32 latents, 8 input channels), one VAE encode and decode;
//! - `animatediff_pipeline_small`: 16 frames of 32×32 latents (256×256 pixels), 10 DDIM steps,
//!   classifier-free guidance (UNet batch 2 × 16 frames), motion modules with 8 heads and a
//!   mid-block module, all 16 frames decoded (`decode_chunk_size` 16).
//!
//! Both sides load the same pipeline folder: [`sd_small_folder`] writes it once from seeded
//! random weights (configs as diffusers / transformers write them; the tokenizer is the
//! `ip2p_pipeline` fixture's), and the PyTorch peer (`benches/peers/sd_pipeline_peers.py`)
//! loads it with the diffusers pipeline classes.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_clip_encoders::{CLIPTextConfig, CLIPTextModel};
use vidgen_diffusion_unet3d::sd::{
    AutoencoderKL, AutoencoderKLConfig, MotionUNetSpec, UNet2DConditionConfig, UNetMotionConfig,
    UNetMotionModel,
};
use vidgen_pipelines::{
    AnimateDiffCall, AnimateDiffPipeline, InstructPix2PixPipeline, Ip2pCall, PipelineFolder,
};
use vidgen_video_core::{Error, Result};
use vidgen_video_nn::record::recording;
use vidgen_video_nn::seeded_var_builder;

use crate::{consume, randn, Case, Work};

/// The cases.
pub fn sd_pipelines() -> Vec<Case> {
    vec![
        Case {
            krate: "pipelines",
            name: "ip2p_pipeline_small",
            shape: "StableDiffusionInstructPix2PixPipeline: UNet2D [32,64,64,64] x2 layers (8 in ch), SD VAE [32,64,64,64], CLIP text d 64; 256x256 picture, 10 DDIM steps, guidance 7.5 / image 1.5 (batch 3)",
            amount: None,
            ours: ip2p_small,
            twins: vec![],
            torch: Some("ip2p_pipeline_small"),
        },
        Case {
            krate: "pipelines",
            name: "animatediff_pipeline_small",
            shape: "AnimateDiffPipeline: UNetMotion [32,64,64,64] x2 layers + motion modules (8 heads, mid block), SD VAE [32,64,64,64], CLIP text d 64; 16 frames of 32x32 latents (256x256), 10 DDIM steps, CFG 7.5 (batch 2), decode 16 frames at once",
            amount: None,
            ours: animatediff_small,
            twins: vec![],
            torch: Some("animatediff_pipeline_small"),
        },
    ]
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text =
        serde_json::to_string_pretty(v).map_err(|e| Error::invalid("json", e.to_string()))?;
    std::fs::write(path, text).map_err(io(path))
}

/// Builds a model from seeded random weights and writes them under the keys `new` asks for.
fn write_weights(
    dir: &Path,
    file: &str,
    seed: u64,
    build: impl FnOnce(VarBuilder<'static>) -> Result<()>,
) -> Result<()> {
    let (vb, rec) = recording(seeded_var_builder(seed, DType::F32, &Device::Cpu));
    build(vb)?;
    rec.save(dir.join(file), None)
}

/// The two folders this module benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdSmall {
    /// `target/bench-assets/ip2p_pipeline_small`.
    Ip2p,
    /// `target/bench-assets/animatediff_pipeline_small`.
    AnimateDiff,
}

/// The UNet blocks both pipelines share (the 2-D part of `unet3d_small`).
fn unet_common() -> serde_json::Value {
    serde_json::json!({
        "_diffusers_version": "0.42.1", "sample_size": 32, "out_channels": 4,
        "block_out_channels": [32, 64, 64, 64], "layers_per_block": 2,
        "cross_attention_dim": 64, "norm_num_groups": 32, "norm_eps": 1e-5,
        "act_fn": "silu", "downsample_padding": 1, "mid_block_scale_factor": 1,
        "transformer_layers_per_block": 1, "use_linear_projection": false
    })
}

/// Writes (once) and returns the folder of `which` under `target/bench-assets/`.
///
/// # Errors
/// I/O errors, naming the path; the tokenizer fixture missing.
pub fn sd_small_folder(which: SdSmall) -> Result<PathBuf> {
    let name = match which {
        SdSmall::Ip2p => "ip2p_pipeline_small",
        SdSmall::AnimateDiff => "animatediff_pipeline_small",
    };
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = here.join("../target/bench-assets").join(name);
    if root.join("model_index.json").exists() {
        return Ok(root);
    }
    let tmp = root.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    for c in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
        std::fs::create_dir_all(tmp.join(c)).map_err(io(&tmp))?;
    }
    let (class, unet_class) = match which {
        SdSmall::Ip2p => (
            "StableDiffusionInstructPix2PixPipeline",
            "UNet2DConditionModel",
        ),
        SdSmall::AnimateDiff => ("AnimateDiffPipeline", "UNetMotionModel"),
    };
    let mut index = serde_json::json!({
        "_class_name": class, "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", unet_class],
        "vae": ["diffusers", "AutoencoderKL"]
    });
    match which {
        SdSmall::Ip2p => {
            index["safety_checker"] = serde_json::json!([null, null]);
            index["feature_extractor"] = serde_json::json!([null, null]);
            index["image_encoder"] = serde_json::json!([null, null]);
            index["requires_safety_checker"] = serde_json::json!(false);
        }
        SdSmall::AnimateDiff => {
            index["motion_adapter"] = serde_json::json!([null, null]);
            index["feature_extractor"] = serde_json::json!([null, null]);
            index["image_encoder"] = serde_json::json!([null, null]);
        }
    }
    write_json(&tmp.join("model_index.json"), &index)?;

    // UNet.
    let mut unet = unet_common();
    match which {
        SdSmall::Ip2p => {
            for (k, v) in [
                ("_class_name", serde_json::json!("UNet2DConditionModel")),
                ("in_channels", serde_json::json!(8)),
                (
                    "down_block_types",
                    serde_json::json!([
                        "CrossAttnDownBlock2D",
                        "CrossAttnDownBlock2D",
                        "CrossAttnDownBlock2D",
                        "DownBlock2D"
                    ]),
                ),
                (
                    "up_block_types",
                    serde_json::json!([
                        "UpBlock2D",
                        "CrossAttnUpBlock2D",
                        "CrossAttnUpBlock2D",
                        "CrossAttnUpBlock2D"
                    ]),
                ),
                // UNet2DConditionModel's legacy name for the number of heads.
                ("attention_head_dim", serde_json::json!(8)),
                ("flip_sin_to_cos", serde_json::json!(true)),
                ("freq_shift", serde_json::json!(0)),
            ] {
                unet[k] = v;
            }
            write_json(&tmp.join("unet/config.json"), &unet)?;
            let cfg: UNet2DConditionConfig = serde_json::from_value(unet)
                .map_err(|e| Error::config("unet config", e.to_string()))?;
            let spec = MotionUNetSpec::from_unet2d(&cfg)?;
            write_weights(
                &tmp.join("unet"),
                "diffusion_pytorch_model.safetensors",
                31,
                |vb| UNetMotionModel::new(&spec, vb.clone(), vb).map(|_| ()),
            )?;
        }
        SdSmall::AnimateDiff => {
            for (k, v) in [
                ("_class_name", serde_json::json!("UNetMotionModel")),
                ("in_channels", serde_json::json!(4)),
                (
                    "down_block_types",
                    serde_json::json!([
                        "CrossAttnDownBlockMotion",
                        "CrossAttnDownBlockMotion",
                        "CrossAttnDownBlockMotion",
                        "DownBlockMotion"
                    ]),
                ),
                (
                    "up_block_types",
                    serde_json::json!([
                        "UpBlockMotion",
                        "CrossAttnUpBlockMotion",
                        "CrossAttnUpBlockMotion",
                        "CrossAttnUpBlockMotion"
                    ]),
                ),
                ("num_attention_heads", serde_json::json!(8)),
                ("motion_num_attention_heads", serde_json::json!(8)),
                ("motion_max_seq_length", serde_json::json!(32)),
                ("use_motion_mid_block", serde_json::json!(true)),
                (
                    "temporal_transformer_layers_per_block",
                    serde_json::json!(1),
                ),
                (
                    "temporal_transformer_layers_per_mid_block",
                    serde_json::json!(1),
                ),
                ("mid_block_layers", serde_json::json!(1)),
            ] {
                unet[k] = v;
            }
            write_json(&tmp.join("unet/config.json"), &unet)?;
            let cfg: UNetMotionConfig = serde_json::from_value(unet)
                .map_err(|e| Error::config("unet config", e.to_string()))?;
            let spec = MotionUNetSpec::from_motion_config(&cfg)?;
            write_weights(
                &tmp.join("unet"),
                "diffusion_pytorch_model.safetensors",
                32,
                |vb| UNetMotionModel::new(&spec, vb.clone(), vb).map(|_| ()),
            )?;
        }
    }

    // VAE (factor 8).
    let vae = serde_json::json!({
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.42.1",
        "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D",
                             "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D",
                           "UpDecoderBlock2D"],
        "block_out_channels": [32, 64, 64, 64], "layers_per_block": 1, "norm_num_groups": 32,
        "act_fn": "silu", "sample_size": 256, "scaling_factor": 0.18215,
        "use_quant_conv": true, "use_post_quant_conv": true, "mid_block_add_attention": true,
        "force_upcast": true
    });
    write_json(&tmp.join("vae/config.json"), &vae)?;
    let vcfg: AutoencoderKLConfig =
        serde_json::from_value(vae).map_err(|e| Error::config("vae config", e.to_string()))?;
    write_weights(
        &tmp.join("vae"),
        "diffusion_pytorch_model.safetensors",
        33,
        |vb| AutoencoderKL::new(&vcfg, vb).map(|_| ()),
    )?;

    // CLIP text tower and the fixtures' tokenizer (1 014 tokens).
    let text = serde_json::json!({
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
        "hidden_act": "quick_gelu", "hidden_size": 64, "intermediate_size": 256,
        "layer_norm_eps": 1e-5, "num_attention_heads": 4, "num_hidden_layers": 2,
        "max_position_embeddings": 77, "vocab_size": 1014, "projection_dim": 64,
        "bos_token_id": 1012, "eos_token_id": 1013, "pad_token_id": 1013,
        "attention_dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02,
        "dtype": "float32", "transformers_version": "5.23.0"
    });
    write_json(&tmp.join("text_encoder/config.json"), &text)?;
    let bytes = serde_json::to_vec(&text).map_err(|e| Error::invalid("text", e.to_string()))?;
    let tcfg = CLIPTextConfig::from_json_bytes(&bytes, None)?;
    write_weights(&tmp.join("text_encoder"), "model.safetensors", 34, |vb| {
        CLIPTextModel::new(&tcfg, vb).map(|_| ())
    })?;
    let tok = here.join("../fixtures/ip2p_pipeline/base/pipeline/tokenizer");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        let src = tok.join(f);
        std::fs::copy(&src, tmp.join("tokenizer").join(f)).map_err(io(&src))?;
    }

    // DDIM: SD's config for InstructPix2Pix, AnimateDiff's (linear betas, linspace) for it.
    let sched = match which {
        SdSmall::Ip2p => serde_json::json!({
            "_class_name": "DDIMScheduler", "_diffusers_version": "0.42.1",
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "clip_sample": false, "set_alpha_to_one": false, "steps_offset": 1,
            "prediction_type": "epsilon", "timestep_spacing": "leading",
            "num_train_timesteps": 1000
        }),
        SdSmall::AnimateDiff => serde_json::json!({
            "_class_name": "DDIMScheduler", "_diffusers_version": "0.42.1",
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear",
            "clip_sample": false, "set_alpha_to_one": false, "steps_offset": 1,
            "prediction_type": "epsilon", "timestep_spacing": "linspace",
            "num_train_timesteps": 1000
        }),
    };
    write_json(&tmp.join("scheduler/scheduler_config.json"), &sched)?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&tmp, &root).map_err(io(&root))?;
    Ok(root)
}

/// InstructPix2Pix's call: a 256×256 picture (seed 40) in [0, 1], latents (seed 41).
///
/// # Errors
/// Candle errors building the inputs.
pub fn ip2p_small_call(d: &Device) -> Result<(Tensor, Ip2pCall)> {
    let image = ((randn(&[1, 3, 256, 256], 40, 0.25, d)? + 0.5)?).clamp(0f32, 1f32)?;
    let call = Ip2pCall {
        prompt: "make it a watercolor painting".into(),
        num_inference_steps: 10,
        latents: Some(randn(&[1, 4, 32, 32], 41, 1.0, d)?),
        ..Ip2pCall::default()
    };
    Ok((image, call))
}

/// AnimateDiff's call: 16 frames of 32×32 latents (seed 42), 10 steps, decode all at once.
///
/// # Errors
/// Candle errors building the inputs.
pub fn animatediff_small_call(d: &Device) -> Result<AnimateDiffCall> {
    Ok(AnimateDiffCall {
        prompt: "a red square moving left".into(),
        negative_prompt: Some("blurry".into()),
        num_frames: 16,
        height: Some(256),
        width: Some(256),
        num_inference_steps: 10,
        decode_chunk_size: 16,
        latents: Some(randn(&[1, 4, 16, 32, 32], 42, 1.0, d)?),
        ..AnimateDiffCall::default()
    })
}

fn ip2p_small(d: &Device) -> Result<Work> {
    let folder = PipelineFolder::open(sd_small_folder(SdSmall::Ip2p)?)?;
    let pipe = InstructPix2PixPipeline::from_pretrained(&folder, DType::F32, d)?;
    let (image, call) = ip2p_small_call(d)?;
    Ok(Box::new(move || {
        consume(&pipe.call(&image, &call, &mut |_| {})?.image)
    }))
}

fn animatediff_small(d: &Device) -> Result<Work> {
    let folder = PipelineFolder::open(sd_small_folder(SdSmall::AnimateDiff)?)?;
    let pipe = AnimateDiffPipeline::from_pretrained(&folder, DType::F32, d)?;
    let call = animatediff_small_call(d)?;
    Ok(Box::new(move || {
        consume(&pipe.call(&call, &mut |_| {})?.frames)
    }))
}
