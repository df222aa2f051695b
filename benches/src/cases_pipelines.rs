//! Registry cases of `pipelines`: Stable Video Diffusion end to end at the size of the peers'
//! `unet_svd_small` (UNet [64, 128, 128, 128], 23.3 M params), with the small temporal VAE
//! ([32, 64, 64]) and a small CLIP vision tower; 64×64 image → 8 frames, 10 Euler steps,
//! classifier-free guidance (batch 2), decode of all 8 frames at once. The AID case adds
//! adapters at every attention site and the text branch (a tiny CLIP text tower + DQFormer).
//!
//! Both sides load the same pipeline folder: [`svd_small_folder`] writes it from seeded
//! random weights (configs as diffusers / transformers write them), and the PyTorch peer
//! (`benches/peers/pipeline_peers.py`) loads that folder with
//! `StableVideoDiffusionPipeline.from_pretrained`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_clip_encoders::{CLIPVisionConfig, CLIPVisionModelWithProjection};
use vidgen_diffusion_unet3d::svd::{
    AutoencoderKLTemporalDecoder, TemporalVaeConfig, UNetSpatioTemporalConditionModel,
    UNetSpatioTemporalConfig,
};
use vidgen_pipelines::{PipelineFolder, SvdCall, SvdPipeline};
use vidgen_video_core::{Error, Result};
use vidgen_video_nn::record::recording;
use vidgen_video_nn::seeded_var_builder;

use crate::{consume, randn, Case, Work};

/// The pipeline cases.
pub fn pipelines() -> Vec<Case> {
    vec![Case {
        krate: "pipelines",
        name: "svd_pipeline_small",
        shape: "StableVideoDiffusionPipeline: UNet [64,128,128,128] (23.3 M), temporal VAE [32,64,64], CLIP vision d 64; image 64x64 -> 8 frames, 10 steps, CFG (max guidance 3), decode all frames at once",
        amount: None,
        ours: svd_pipeline_small,
        twins: vec![],
        torch: Some("svd_pipeline_small"),
    }]
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

/// The `svd_pipeline_small` folder (written once into `target/bench-assets/`).
///
/// # Errors
/// I/O errors, naming the path.
pub fn svd_small_folder() -> Result<PathBuf> {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-assets/svd_pipeline_small");
    if root.join("model_index.json").exists() {
        return Ok(root);
    }
    let tmp = root.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    for c in [
        "unet",
        "vae",
        "image_encoder",
        "scheduler",
        "feature_extractor",
    ] {
        std::fs::create_dir_all(tmp.join(c)).map_err(io(&tmp))?;
    }
    write_json(
        &tmp.join("model_index.json"),
        &vidgen_pipelines::SvdPipeline::model_index(),
    )?;
    let unet = serde_json::json!({
        "_class_name": "UNetSpatioTemporalConditionModel", "_diffusers_version": "0.42.1",
        "sample_size": 16, "in_channels": 8, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal",
                             "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
        "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal",
                           "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
        "block_out_channels": [64, 128, 128, 128], "addition_time_embed_dim": 32,
        "projection_class_embeddings_input_dim": 96, "layers_per_block": 2,
        "cross_attention_dim": 64, "transformer_layers_per_block": 1,
        "num_attention_heads": [1, 2, 2, 2], "num_frames": 8
    });
    write_json(&tmp.join("unet/config.json"), &unet)?;
    let ucfg: UNetSpatioTemporalConfig =
        serde_json::from_value(unet).map_err(|e| Error::config("unet config", e.to_string()))?;
    write_weights(
        &tmp.join("unet"),
        "diffusion_pytorch_model.safetensors",
        1,
        |vb| UNetSpatioTemporalConditionModel::new(&ucfg, vb).map(|_| ()),
    )?;
    let vae = serde_json::json!({
        "_class_name": "AutoencoderKLTemporalDecoder", "_diffusers_version": "0.42.1",
        "in_channels": 3, "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "block_out_channels": [32, 64, 64], "layers_per_block": 1, "latent_channels": 4,
        "sample_size": 64, "scaling_factor": 0.18215, "force_upcast": true
    });
    write_json(&tmp.join("vae/config.json"), &vae)?;
    let vcfg: TemporalVaeConfig =
        serde_json::from_value(vae).map_err(|e| Error::config("vae config", e.to_string()))?;
    write_weights(
        &tmp.join("vae"),
        "diffusion_pytorch_model.safetensors",
        2,
        |vb| AutoencoderKLTemporalDecoder::new(&vcfg, vb).map(|_| ()),
    )?;
    let clip = serde_json::json!({
        "architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model",
        "hidden_act": "gelu", "hidden_size": 64, "image_size": 224, "intermediate_size": 256,
        "layer_norm_eps": 1e-5, "num_attention_heads": 4, "num_channels": 3,
        "num_hidden_layers": 2, "patch_size": 32, "projection_dim": 64,
        "attention_dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02,
        "dtype": "float32", "transformers_version": "5.23.0"
    });
    write_json(&tmp.join("image_encoder/config.json"), &clip)?;
    let bytes = serde_json::to_vec(&clip).map_err(|e| Error::invalid("clip", e.to_string()))?;
    let ccfg = CLIPVisionConfig::from_json_bytes(&bytes, None)?;
    write_weights(&tmp.join("image_encoder"), "model.safetensors", 3, |vb| {
        CLIPVisionModelWithProjection::new(&ccfg, vb).map(|_| ())
    })?;
    write_json(
        &tmp.join("scheduler/scheduler_config.json"),
        &serde_json::json!({
            "_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.42.1",
            "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
            "interpolation_type": "linear", "num_train_timesteps": 1000,
            "prediction_type": "v_prediction", "sigma_max": 700.0, "sigma_min": 0.002,
            "steps_offset": 1, "timestep_spacing": "leading", "timestep_type": "continuous",
            "use_karras_sigmas": true
        }),
    )?;
    write_json(
        &tmp.join("feature_extractor/preprocessor_config.json"),
        &serde_json::json!({
            "crop_size": {"height": 224, "width": 224}, "do_center_crop": true,
            "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_processor_type": "CLIPImageProcessor",
            "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
            "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224}
        }),
    )?;
    std::fs::rename(&tmp, &root).map_err(io(&root))?;
    Ok(root)
}

/// The call both sides time: image (seed 20) in [0, 1], latents (seed 21), aug noise (seed 22).
pub fn svd_small_call(d: &Device) -> Result<(Tensor, SvdCall)> {
    let image = ((randn(&[1, 3, 64, 64], 20, 0.25, d)? + 0.5)?).clamp(0f32, 1f32)?;
    let call = SvdCall {
        height: Some(64),
        width: Some(64),
        num_frames: Some(8),
        num_inference_steps: 10,
        decode_chunk_size: Some(8),
        latents: Some(randn(&[1, 8, 4, 16, 16], 21, 1.0, d)?),
        aug_noise: Some(randn(&[1, 3, 64, 64], 22, 1.0, d)?),
        ..SvdCall::default()
    };
    Ok((image, call))
}

fn svd_pipeline_small(d: &Device) -> Result<Work> {
    let folder = PipelineFolder::open(svd_small_folder()?)?;
    let pipe = SvdPipeline::from_pretrained(&folder, DType::F32, d)?;
    let (image, call) = svd_small_call(d)?;
    Ok(Box::new(move || {
        consume(&pipe.call(&image, &call, &mut |_| {})?.frames)
    }))
}
