//! The miniature as a diffusers `StableVideoDiffusionPipeline` folder (extended with CLIP
//! `text_encoder/` + `tokenizer/` as AID needs) plus `aid.safetensors`:
//!
//! | component | class | size |
//! |---|---|---|
//! | `vae/` | `AutoencoderKLTemporalDecoder` | channels 32, 32, 64; `latent_channels` (4 by default, 8 shipped); factor `vae_factor` (4 by default; 2: channels 32, 64) |
//! | `unet/` | `UNetSpatioTemporalConditionModel` | channels `unet_channels` (64, 64 by default and shipped; 32, 32 before), heads of 16 dimensions, `unet_layers` per block (1); cross-attention width 32; 8 frames |
//! | `image_encoder/` | `CLIPVisionModelWithProjection` | 1 layer, width 32, patches 32 px of 224 |
//! | `text_encoder/` | `CLIPTextModel` | 1 layer, width 32, 16 positions |
//! | `tokenizer/` | `CLIPTokenizer` | CLIP's BPE, 500 merges (1 014 tokens), padded to 16 |
//! | `scheduler/` | `EulerDiscreteScheduler` | v-prediction, Karras σ in [0.002, 20] |
//! | `feature_extractor/` | `CLIPImageProcessor` | CLIP's mean / std |
//!
//! The CLIP towers keep their seeded random initialisation (frozen throughout): the UNet
//! learns to use the image embedding of its first frame, the DQFormer learns to read the
//! instruction tokens.

use std::path::Path;

use candle_core::{DType, Device};
use serde_json::{json, Value};
use vidgen_clip_encoders::{
    CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection,
};
use vidgen_pipelines::{AidPipeline, PipelineFolder, TextEncoderSource};
use vidgen_video_core::Result;
use vidgen_video_nn::init::seeded_var_builder;
use vidgen_video_nn::record::recording;

use super::MiniConfig;
use crate::minis::{io_err, mkdir, write_json};

/// The UNet's context width (CLIP projection, DQFormer output).
pub const CONTEXT_DIM: usize = 32;
/// CLIP text positions (the tokenizer pads to this).
pub const TEXT_TOKENS: usize = 16;

/// CLIP's BPE vocabulary cut to its first 500 merges (the clip-encoders fixture `tiny500`,
/// built from OpenAI's `bpe_simple_vocab_16e6` exactly as its tokenizer does).
pub const TOKENIZER_VOCAB: &str =
    include_str!("../../../fixtures/clip_tokenizer/tiny500/tokenizer/vocab.json");
/// Its merges.
pub const TOKENIZER_MERGES: &str =
    include_str!("../../../fixtures/clip_tokenizer/tiny500/tokenizer/merges.txt");

/// The VAE's `block_out_channels` for `cfg.vae_factor` (one downsampling per block but the
/// last): 32 per downsampling block, then 64 (factor 4: `[32, 32, 64]`; factor 2: `[32, 64]`).
pub fn vae_channels(cfg: &MiniConfig) -> Vec<usize> {
    let downs = cfg.vae_factor.max(1).trailing_zeros() as usize;
    let mut c = vec![32; downs];
    c.push(64);
    c
}

/// `vae/config.json` with the measured `scaling_factor`.
pub fn vae_config(cfg: &MiniConfig, scaling_factor: f64) -> Value {
    let channels = vae_channels(cfg);
    json!({
        "_class_name": "AutoencoderKLTemporalDecoder",
        "_diffusers_version": "0.42.1",
        "down_block_types": vec!["DownEncoderBlock2D"; channels.len()],
        "block_out_channels": channels,
        "force_upcast": true,
        "in_channels": 3,
        "latent_channels": cfg.latent_channels,
        "layers_per_block": 1,
        "out_channels": 3,
        "sample_size": cfg.size,
        "scaling_factor": scaling_factor
    })
}

/// `unet/config.json`.
pub fn unet_config(cfg: &MiniConfig) -> Value {
    let levels = cfg.unet_channels.len();
    let heads: Vec<usize> = cfg.unet_channels.iter().map(|c| (c / 16).max(1)).collect();
    json!({
        "_class_name": "UNetSpatioTemporalConditionModel",
        "_diffusers_version": "0.42.1",
        "addition_time_embed_dim": 8,
        "block_out_channels": cfg.unet_channels,
        "cross_attention_dim": CONTEXT_DIM,
        "down_block_types": vec!["CrossAttnDownBlockSpatioTemporal"; levels],
        "in_channels": 2 * cfg.latent_channels,
        "layers_per_block": cfg.unet_layers,
        "num_attention_heads": heads,
        "num_frames": cfg.frames,
        "out_channels": cfg.latent_channels,
        "projection_class_embeddings_input_dim": 24,
        "sample_size": cfg.size / cfg.vae_factor.max(1),
        "transformer_layers_per_block": 1,
        "up_block_types": vec!["CrossAttnUpBlockSpatioTemporal"; levels]
    })
}

/// The 1-layer, width-32 CLIP vision tower's config (patches of 32 px, projection 32).
pub fn vision_config() -> Value {
    json!({
        "architectures": ["CLIPVisionModelWithProjection"],
        "attention_dropout": 0.0,
        "hidden_act": "quick_gelu",
        "hidden_size": 32,
        "image_size": 224,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model",
        "num_attention_heads": 2,
        "num_channels": 3,
        "num_hidden_layers": 1,
        "patch_size": 32,
        "projection_dim": CONTEXT_DIM
    })
}

/// A 1-layer, width-32 CLIP text tower's config with `positions` token positions.
pub fn text_config(positions: usize) -> Value {
    json!({
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 1012,
        "eos_token_id": 1013,
        "pad_token_id": 1013,
        "hidden_act": "quick_gelu",
        "hidden_size": 32,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": positions,
        "model_type": "clip_text_model",
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "projection_dim": CONTEXT_DIM,
        "vocab_size": 1014
    })
}

/// `scheduler/scheduler_config.json`: SVD's Euler (v-prediction, continuous timesteps
/// `¼ ln σ`, Karras spacing) with `sigma_max` 20 for unit-variance 8×8 latents (kept at 20 for a
/// factor-2 VAE's 16×16).
pub fn scheduler_config() -> Value {
    json!({
        "_class_name": "EulerDiscreteScheduler",
        "_diffusers_version": "0.42.1",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "final_sigmas_type": "zero",
        "interpolation_type": "linear",
        "num_train_timesteps": 1000,
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": false,
        "sigma_max": 20.0,
        "sigma_min": 0.002,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "timestep_type": "continuous",
        "trained_betas": null,
        "use_beta_sigmas": false,
        "use_exponential_sigmas": false,
        "use_karras_sigmas": true
    })
}

/// CLIP's image processor settings (only the mean / std are used by the pipeline).
pub fn preprocessor_config() -> Value {
    json!({
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": true,
        "do_convert_rgb": true,
        "do_normalize": true,
        "do_rescale": true,
        "do_resize": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "CLIPImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 224}
    })
}

/// Writes the CLIP tokenizer (vocabulary, merges, `model_max_length` = `positions`) into `dir`.
///
/// # Errors
/// I/O errors naming the file.
pub fn write_tokenizer_padded(dir: &Path, positions: usize) -> Result<()> {
    mkdir(dir)?;
    for (name, text) in [
        ("vocab.json", TOKENIZER_VOCAB),
        ("merges.txt", TOKENIZER_MERGES),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| io_err(&p, e))?;
    }
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "model_max_length": positions,
            "pad_token": "<|endoftext|>",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": "<|endoftext|>"
        }),
    )
}

/// Writes the weightless parts and the frozen random CLIP towers (seeded by `seed`) into
/// `dir`: `model_index.json`, `scheduler/`, `feature_extractor/`, `tokenizer/`,
/// `text_encoder/`, `image_encoder/`.
///
/// # Errors
/// I/O errors naming the file; model construction errors.
pub fn write_static(dir: &Path, seed: u64) -> Result<()> {
    write_clip_folder(
        dir,
        seed,
        &vidgen_pipelines::SvdPipeline::model_index(),
        &scheduler_config(),
        TEXT_TOKENS,
    )
}

/// The parts every miniature's pipeline folder shares: `model_index`, the `scheduler`
/// config, CLIP's `feature_extractor/`, the cut CLIP `tokenizer/` padded to `positions`, and
/// frozen random CLIP `text_encoder/` (`positions` positions) and `image_encoder/` seeded by
/// `seed`.
///
/// # Errors
/// I/O errors naming the file; model construction errors.
pub fn write_clip_folder(
    dir: &Path,
    seed: u64,
    model_index: &Value,
    scheduler: &Value,
    positions: usize,
) -> Result<()> {
    mkdir(dir)?;
    write_json(&dir.join("model_index.json"), model_index)?;
    let sd = dir.join("scheduler");
    mkdir(&sd)?;
    write_json(&sd.join("scheduler_config.json"), scheduler)?;
    let fe = dir.join("feature_extractor");
    mkdir(&fe)?;
    write_json(&fe.join("preprocessor_config.json"), &preprocessor_config())?;
    write_tokenizer_padded(&dir.join("tokenizer"), positions)?;
    write_clip_text_positions(&dir.join("text_encoder"), seed ^ 0x7e47, positions)?;
    write_clip_vision(&dir.join("image_encoder"), seed ^ 0x1a6e)?;
    Ok(())
}

/// A CLIP text tower with `positions` token positions and seeded random weights, saved as a
/// transformers folder.
///
/// # Errors
/// I/O and construction errors.
pub fn write_clip_text_positions(dir: &Path, seed: u64, positions: usize) -> Result<()> {
    mkdir(dir)?;
    let cv = text_config(positions);
    let cfg: CLIPTextConfig = serde_json::from_value(cv.clone())
        .map_err(|e| vidgen_video_core::Error::config("text_encoder", e.to_string()))?;
    let (vb, rec) = recording(seeded_var_builder(seed, DType::F32, &Device::Cpu));
    CLIPTextModel::new(&cfg, vb.pp("text_model"))?;
    rec.save(dir.join("model.safetensors"), None)?;
    write_json(&dir.join("config.json"), &cv)
}

/// A CLIP vision tower with projection, seeded random weights, saved as a transformers
/// folder.
///
/// # Errors
/// I/O and construction errors.
pub fn write_clip_vision(dir: &Path, seed: u64) -> Result<()> {
    mkdir(dir)?;
    let cv = vision_config();
    let cfg: CLIPVisionConfig = serde_json::from_value(cv.clone())
        .map_err(|e| vidgen_video_core::Error::config("image_encoder", e.to_string()))?;
    let (vb, rec) = recording(seeded_var_builder(seed, DType::F32, &Device::Cpu));
    CLIPVisionModelWithProjection::new(&cfg, vb)?;
    rec.save(dir.join("model.safetensors"), None)?;
    write_json(&dir.join("config.json"), &cv)
}

/// Loads the miniature in `dir` as an [`AidPipeline`] (strictly: every component's keys).
///
/// # Errors
/// Missing or mismatched files (named).
pub fn load_pipeline(dir: &Path) -> Result<AidPipeline> {
    let folder = PipelineFolder::open(dir)?;
    AidPipeline::from_pretrained(
        &folder,
        &TextEncoderSource {
            dir: dir.to_path_buf(),
        },
        &dir.join("aid.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
}
