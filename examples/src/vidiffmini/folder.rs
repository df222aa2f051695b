//! The miniature as a diffusers pipeline folder (`VidiffPipeline`, InstructPix2Pix's components
//! plus VIDiff's image instruction):
//!
//! | component | class | size |
//! |---|---|---|
//! | `vae/` | `AutoencoderKL` | channels 32, 64; 4 latent channels; factor 2 (32×32 ↔ 4×16×16) |
//! | `unet/` | `UNetMotionModel` | channels 32, 64 (cross-attention at 8×8 only), 8 + 8 → 4 channels, context 32, motion modules with 2 heads over 8 frames |
//! | `text_encoder/` | `CLIPTextModel` | 1 layer, width 32, [`TEXT_POSITIONS`] positions, frozen random |
//! | `tokenizer/` | `CLIPTokenizer` | CLIP's BPE, 500 merges, padded to [`TEXT_POSITIONS`] |
//! | `image_encoder/` | `CLIPVisionModelWithProjection` | 1 layer, width 32, frozen random |
//! | `feature_extractor/` | `CLIPImageProcessor` | CLIP's mean / std |
//! | `instruction_mlp/` | VIDiff's instruction MLP | CLIP image embedding 32 → 64 → 32 (one context token) |
//! | `scheduler/` | `DDIMScheduler` | SD's scaled-linear betas, v-prediction, trailing spacing |
//!
//! The first training stages write a 2-D `unet2d/` (the image-editing UNet before inflation)
//! beside these; the shipped folder keeps only the inflated `unet/`.

use std::path::Path;

use candle_core::{DType, Device};
use serde_json::{json, Value};
use vidgen_adapters::MultimodalInstructionConfig;
use vidgen_diffusion_unet3d::sd::{MotionAdapterConfig, MotionUNetSpec, UNet2DConditionConfig};
use vidgen_pipelines::vidiff::{Temporal, VidiffLoad};
use vidgen_pipelines::{PipelineFolder, VidiffPipeline};
use vidgen_video_core::{Error, Result};

use crate::aidmini::folder::{write_clip_folder, CONTEXT_DIM};
use crate::minis::{mkdir, write_json};

use super::MiniConfig;

/// CLIP text positions: room for the overlap prefix (the longest instruction with it is 27
/// tokens with this vocabulary; tested).
pub const TEXT_POSITIONS: usize = 32;
/// Heads of the motion modules' temporal attention.
pub const MOTION_HEADS: usize = 2;
/// Hidden width of the instruction MLP.
pub const MLP_HIDDEN: usize = 64;

/// `model_index.json`.
pub fn model_index() -> Value {
    json!({
        "_class_name": "VidiffPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNetMotionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    })
}

/// `vae/config.json` with the measured `scaling_factor`.
pub fn vae_config(cfg: &MiniConfig, scaling_factor: f64) -> Value {
    json!({
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.42.1",
        "act_fn": "silu",
        "block_out_channels": [32, 64],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 16,
        "sample_size": cfg.size,
        "scaling_factor": scaling_factor
    })
}

/// `unet2d/config.json`: the 2-D image-editing UNet (InstructPix2Pix's 8 input channels).
pub fn unet2d_config(cfg: &MiniConfig) -> Value {
    json!({
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.42.1",
        "act_fn": "silu",
        "attention_head_dim": 4,
        "block_out_channels": [32, 64],
        "center_input_sample": false,
        "cross_attention_dim": CONTEXT_DIM,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 8,
        "layers_per_block": 1,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 8,
        "out_channels": 4,
        "sample_size": cfg.size / 2,
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"]
    })
}

/// `unet/config.json`: the 2-D UNet with its motion modules, as diffusers'
/// `UNetMotionModel.from_unet2d(unet, motion_adapter).save_pretrained` writes it.
///
/// # Errors
/// A config the model does not accept.
pub fn unet_motion_config(cfg: &MiniConfig) -> Result<Value> {
    MotionAdapterConfig::for_unet(&unet2d(cfg)?, MOTION_HEADS, cfg.frames)?
        .motion_unet_config(&unet2d_config(cfg))
}

/// The 2-D UNet's config, parsed.
///
/// # Errors
/// A config the model does not accept.
pub fn unet2d(cfg: &MiniConfig) -> Result<UNet2DConditionConfig> {
    serde_json::from_value(unet2d_config(cfg)).map_err(|e| Error::config("unet2d", e.to_string()))
}

/// The layout of the image stage's UNet (no motion modules) and of the video stage's (the
/// same with new motion modules: one per ResNet, a mid-block module, `frames` positions).
///
/// # Errors
/// A config the model does not accept.
pub fn specs(cfg: &MiniConfig) -> Result<(MotionUNetSpec, MotionUNetSpec)> {
    let c = unet2d(cfg)?;
    let image = MotionUNetSpec::from_unet2d(&c)?;
    let adapter = MotionAdapterConfig::for_unet(&c, MOTION_HEADS, cfg.frames)?;
    let video = MotionUNetSpec::from_parts(&c, &adapter)?;
    Ok((image, video))
}

/// `instruction_mlp/config.json`.
pub fn mlp_config() -> MultimodalInstructionConfig {
    MultimodalInstructionConfig {
        image_dim: CONTEXT_DIM,
        text_dim: CONTEXT_DIM,
        hidden_dim: MLP_HIDDEN,
        example_dim: None,
    }
}

/// `scheduler/scheduler_config.json`: DDIM over SD's betas, v-prediction, trailing spacing
/// (the first step starts at `t = 999`).
pub fn scheduler_config() -> Value {
    json!({
        "_class_name": "DDIMScheduler",
        "_diffusers_version": "0.42.1",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "num_train_timesteps": 1000,
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": false,
        "set_alpha_to_one": false,
        "steps_offset": 1,
        "thresholding": false,
        "timestep_spacing": "trailing",
        "trained_betas": null
    })
}

/// Writes the weightless parts and the frozen random CLIP towers (seeded by `seed`) into
/// `dir`: `model_index.json`, `scheduler/`, `feature_extractor/`, `tokenizer/`,
/// `text_encoder/`, `image_encoder/`, `instruction_mlp/config.json`.
///
/// # Errors
/// I/O errors naming the file; model construction errors.
pub fn write_static(dir: &Path, seed: u64) -> Result<()> {
    write_clip_folder(
        dir,
        seed,
        &model_index(),
        &scheduler_config(),
        TEXT_POSITIONS,
    )?;
    let md = dir.join("instruction_mlp");
    mkdir(&md)?;
    write_json(&md.join("config.json"), &mlp_config())
}

/// Loads the miniature in `dir` as a [`VidiffPipeline`] (strictly: every component's keys).
///
/// # Errors
/// Missing or mismatched files (named).
pub fn load_pipeline(dir: &Path) -> Result<VidiffPipeline> {
    let folder = PipelineFolder::open(dir)?;
    VidiffPipeline::from_pretrained(
        &folder,
        &VidiffLoad {
            temporal: Temporal::PerFrame,
        },
        DType::F32,
        &Device::Cpu,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use candle_core::Tensor;
    use vidgen_diffusion_unet3d::sd::UNetMotionModel;
    use vidgen_video_nn::init::seeded_var_builder;
    use vidgen_video_nn::record::recording;

    /// Every instruction, with the long-video mode's overlap prefix, fits the text encoder's
    /// positions untruncated (a cut instruction would lose its last words: the edit).
    #[test]
    fn every_instruction_fits_the_text_positions() {
        use crate::aidmini::folder::write_tokenizer_padded;
        use crate::vidiffmini::train::OVERLAP_PROMPT;
        use crate::vidiffmini::Edit;
        use vidgen_clip_encoders::CLIPTokenizer;
        use vidgen_video_io::synth::{Background, Colour, Shape};
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer_padded(dir.path(), TEXT_POSITIONS).unwrap();
        let tok = CLIPTokenizer::from_dir(dir.path()).unwrap();
        let mut edits: Vec<Edit> = Colour::ALL.iter().map(|&c| Edit::Colour(c)).collect();
        edits.extend(Shape::ALL.iter().map(|&s| Edit::Shape(s)));
        edits.extend(Background::ALL.iter().map(|&b| Edit::Background(b)));
        let mut longest = 0;
        for e in edits {
            let p = OVERLAP_PROMPT
                .replace("{n}", "2")
                .replace("{prompt}", &e.instruction());
            longest = longest.max(tok.encode(&p).unwrap().len());
        }
        println!("longest instruction: {longest} tokens");
        assert!(longest <= TEXT_POSITIONS, "{longest} tokens");
    }

    /// The motion config written for the shipped `unet/` describes exactly the model the video
    /// stage trains: its tensors load strictly and give the same output.
    #[test]
    fn motion_config_matches_the_trained_layout() {
        let cfg = MiniConfig::default();
        let (_, spec) = specs(&cfg).unwrap();
        let (vb, rec) = recording(seeded_var_builder(5, DType::F32, &Device::Cpu));
        let m = UNetMotionModel::new(&spec, vb.clone(), vb).unwrap();
        let dir = tempfile::tempdir().unwrap();
        rec.save(dir.path().join("diffusion_pytorch_model.safetensors"), None)
            .unwrap();
        write_json(
            &dir.path().join("config.json"),
            &unet_motion_config(&cfg).unwrap(),
        )
        .unwrap();
        let (back, report) =
            UNetMotionModel::from_pretrained(dir.path(), DType::F32, &Device::Cpu).unwrap();
        assert!(report.is_clean(), "{report:?}");
        let x = Tensor::randn(0f32, 1.0, (1, 8, 8, 16, 16), &Device::Cpu).unwrap();
        let c = Tensor::randn(0f32, 1.0, (1, 5, CONTEXT_DIM), &Device::Cpu).unwrap();
        let t = Tensor::new(&[500f32], &Device::Cpu).unwrap();
        let a = m.forward(&x, &t, &c).unwrap();
        let b = back.forward(&x, &t, &c).unwrap();
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
    }
}
