//! The trained parts of a VIMI model and their folder: the example encoder (a CLIP vision
//! tower with projection, `clip-encoders`), the [`VimiConditioner`] and the denoiser
//! ([`VideoDiT`] for the miniature), with the prompt encoder named by id (all-MiniLM-L6-v2,
//! frozen, not stored).
//!
//! Folder: `config.json` ([`VimiConfig`]) + `model.safetensors` (keys `vision.*` — transformers'
//! `CLIPVisionModelWithProjection` layout under `vision.` —, `conditioner.*`, `dit.*`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use vidgen_clip_encoders::{CLIPVisionConfig, CLIPVisionModelWithProjection};
use vidgen_samplers::diffusers::DdimConfig;
use vidgen_video_core::{Error, LoadReport, ModelDir, Result};

use super::conditioning::{VimiConditioner, VimiConditionerConfig};
use super::denoiser::{VideoDiT, VideoDiTConfig};
use super::world::WorldSpec;

/// Everything that describes a VIMI model folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VimiConfig {
    /// The world the model was trained on (sample size, frames, vocabulary).
    pub world: WorldSpec,
    /// The denoiser.
    pub dit: VideoDiTConfig,
    /// The example encoder (`CLIPVisionConfig` as transformers writes it).
    pub vision: serde_json::Value,
    /// The conditioner.
    pub conditioner: VimiConditionerConfig,
    /// The sampler (diffusers' `DDIMScheduler` config); its training schedule is the one the
    /// denoiser was trained with.
    pub scheduler: serde_json::Value,
    /// Id of the frozen prompt encoder (its folder name, e.g. `all-minilm-l6-v2`).
    pub text_encoder: String,
    /// Prompt tokens given to the conditioner (padding included).
    pub text_len: usize,
}

impl VimiConfig {
    /// The miniature's: [`WorldSpec::default`], [`VideoDiTConfig::default`], a 2-layer CLIP
    /// vision tower of width 64 on 16×16 images (patch 4, projection 64), MiniLM token states
    /// (384) padded to 16, DDIM over a 1000-step cosine schedule with x₀-prediction (see
    /// [`mod@crate::vimi::train`]).
    pub fn mini() -> Self {
        let world = WorldSpec::default();
        let dit = VideoDiTConfig::default();
        Self {
            vision: serde_json::json!({
                "hidden_size": 64, "intermediate_size": 128, "projection_dim": 64,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_channels": 3,
                "image_size": world.size, "patch_size": 4, "hidden_act": "gelu",
                "layer_norm_eps": 1e-5
            }),
            conditioner: VimiConditionerConfig {
                text_dim: 384,
                example_dim: 64,
                context_dim: dit.context_dim,
                max_examples: 4,
                max_frames: world.frames,
                motion_token: true,
            },
            scheduler: serde_json::json!({
                "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                "prediction_type": "sample", "clip_sample": true,
                "clip_sample_range": 1.0, "set_alpha_to_one": true,
                "timestep_spacing": "trailing"
            }),
            text_encoder: "all-minilm-l6-v2".into(),
            text_len: 16,
            world,
            dit,
        }
    }

    /// The example encoder's config.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn vision_config(&self) -> Result<CLIPVisionConfig> {
        CLIPVisionConfig::from_json_bytes(self.vision.to_string().as_bytes(), None)
    }

    /// The sampler's config.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn scheduler_config(&self) -> Result<DdimConfig> {
        let c: DdimConfig =
            vidgen_video_core::loading::parse_config(self.scheduler.to_string().as_bytes(), None)?;
        c.validate()?;
        Ok(c)
    }

    /// Checks that the parts fit together.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        self.dit.validate()?;
        let v = self.vision_config()?;
        self.scheduler_config()?;
        if self.conditioner.context_dim != self.dit.context_dim {
            return Err(Error::config(
                "conditioner.context_dim",
                format!(
                    "{} ≠ dit.context_dim {}",
                    self.conditioner.context_dim, self.dit.context_dim
                ),
            ));
        }
        if self.conditioner.example_dim != v.projection_dim {
            return Err(Error::config(
                "conditioner.example_dim",
                format!(
                    "{} ≠ vision projection_dim {}",
                    self.conditioner.example_dim, v.projection_dim
                ),
            ));
        }
        let w = &self.world;
        if (self.dit.height, self.dit.width) != (w.size as usize, w.size as usize)
            || self.dit.max_frames < w.frames
            || self.conditioner.max_frames < w.frames
        {
            return Err(Error::config(
                "dit",
                "the denoiser's sample size must be the world's (size × size, ≥ frames)",
            ));
        }
        if self.text_len < 2 {
            return Err(Error::config("text_len", "must be ≥ 2"));
        }
        Ok(())
    }

    /// Reads `config.json`.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::BadConfig`] naming the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let c: Self = vidgen_video_core::loading::parse_config(&bytes, Some(path))?;
        c.validate()?;
        Ok(c)
    }
}

/// The trained parts (see the module docs).
#[derive(Debug, Clone)]
pub struct VimiModel {
    /// The example encoder.
    pub vision: CLIPVisionModelWithProjection,
    /// The conditioner.
    pub conditioner: VimiConditioner,
    /// The denoiser.
    pub dit: VideoDiT,
    /// The configuration.
    pub config: VimiConfig,
}

impl VimiModel {
    /// Builds (or loads) the parts from `vb` (`vision.*`, `conditioner.*`, `dit.*`).
    ///
    /// # Errors
    /// An invalid config; missing / mis-shaped tensors.
    pub fn new(cfg: &VimiConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            vision: CLIPVisionModelWithProjection::new(&cfg.vision_config()?, vb.pp("vision"))?,
            conditioner: VimiConditioner::new(&cfg.conditioner, vb.pp("conditioner"))?,
            dit: VideoDiT::new(&cfg.dit, vb.pp("dit"))?,
            config: cfg.clone(),
        })
    }

    /// Loads a model folder strictly (every key present, none unused), weights in any float
    /// dtype converted to `dtype`.
    ///
    /// # Errors
    /// As [`VimiConfig::from_file`]; missing, mis-shaped or unused keys.
    pub fn load(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let dir = dir.as_ref();
        let cfg = VimiConfig::from_file(&dir.join("config.json"))?;
        let md = ModelDir::open(dir)?;
        let (m, report) = md.load(dtype, device, |vb| Self::new(&cfg, vb))?;
        if let Some((k, f)) = report.unused.first() {
            return Err(Error::Malformed {
                path: f.clone(),
                reason: format!(
                    "{} tensors the model does not use (first: `{k}`): not a VIMI model of this config",
                    report.unused.len()
                ),
            });
        }
        Ok((m, report))
    }

    /// Writes `config.json` and `model.safetensors` (`tensors` by their full names, stored in
    /// `dtype`) into `dir`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn save_tensors(
        cfg: &VimiConfig,
        tensors: &std::collections::BTreeMap<String, Tensor>,
        dtype: DType,
        dir: impl AsRef<Path>,
    ) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let json =
            serde_json::to_vec_pretty(cfg).map_err(|e| Error::invalid("config", e.to_string()))?;
        let cpath = dir.join("config.json");
        std::fs::write(&cpath, json).map_err(|e| Error::Io {
            path: cpath.clone(),
            source: e,
        })?;
        let mut out = std::collections::HashMap::new();
        for (k, t) in tensors {
            out.insert(k.clone(), t.to_dtype(dtype)?.to_device(&Device::Cpu)?);
        }
        let wpath = dir.join("model.safetensors");
        candle_core::safetensors::save(&out, &wpath).map_err(|e| Error::Io {
            path: wpath.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(())
    }

    /// The examples' embeddings (`image_embeds`, not normalised).
    ///
    /// # Shapes
    /// `pixels [N, 3, s, s]` in `[-1, 1]` (the vision tower's image size) → `[N, projection_dim]`.
    ///
    /// # Errors
    /// Another shape.
    pub fn embed_images(&self, pixels: &Tensor) -> Result<Tensor> {
        self.vision
            .forward(pixels)?
            .image_embeds
            .ok_or_else(|| Error::invalid("vision", "a tower without projection"))
    }

    /// Embeddings of `k` examples of `F` frames per prompt.
    ///
    /// # Shapes
    /// `pixels [B, k, F, 3, s, s]` → `[B, k, F, projection_dim]`.
    ///
    /// # Errors
    /// Another shape.
    pub fn embed_examples(&self, pixels: &Tensor) -> Result<Tensor> {
        let d = pixels.dims();
        if d.len() != 6 {
            return Err(Error::invalid(
                "example pixels",
                format!("expected [B, k, F, 3, H, W], found {d:?}"),
            ));
        }
        let (b, k, f) = (d[0], d[1], d[2]);
        let flat = pixels.reshape((b * k * f, d[3], d[4], d[5]))?;
        let e = self.embed_images(&flat)?;
        let w = e.dim(1)?;
        Ok(e.reshape((b, k, f, w))?)
    }
}
