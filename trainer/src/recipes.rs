//! The runs behind `vidgen train svd|aid|vidiff|animate|unet3d`: a [`TrainConfig`] names the
//! recipe, the model folder (or a UNet config to train from scratch), the data and the
//! settings; [`train`] assembles the model, its conditioning and the objective, and runs
//! [`crate::fit`].
//!
//! | recipe | network | objective | trained by default | conditioning |
//! |---|---|---|---|---|
//! | `svd` | SVD UNet | EDM, SVD preconditioning | everything | first-frame latents (noise-augmented, on channels), image embedding (context), `[fps − 1, motion_bucket_id, noise_aug]` time ids |
//! | `aid` | frozen SVD UNet + AID adapters (`adapters.*`) + DQFormer (`dqformer.*`) | EDM, SVD preconditioning | `adapters`, `dqformer` | initial-frame latents (later frames zero), DQFormer(instruction, first-frame embedding, instruction) as context |
//! | `vidiff` | SD UNet + motion modules (UNetMotionModel; from a 2-D UNet, new zero-output modules) | ε over 1000 SD steps | `*motion_modules*` (video stage); pass `["*"]` for the editing stage | text context; source-video latents on channels when the data has sources (`conv_in` widened with zeros) |
//! | `animate` | UNetMotionModel | ε over 1000 linear steps | `*motion_modules*` | text context |
//! | `unet3d` | UNet3DConditionModel | ε over 1000 SD steps | everything | text context; source latents on channels when present |
//!
//! A model folder is a diffusers pipeline folder (`unet/`, and optionally `vae/`,
//! `text_encoder/` + `tokenizer/` (CLIP), `image_encoder/` (CLIP vision), `motion_adapter/`)
//! or a bare UNet folder. Without `vae/` the UNet works on pixels in `[-1, 1]` (3 channels:
//! the synthetic miniatures); without a CLIP text encoder, captions are embedded by
//! [`HashText`] (a fixed random vector per word); without a CLIP image encoder, the first
//! frame by [`PooledImage`] (a fixed random projection of its 4×4 average): no CLIP weights
//! ship in the package registries, and the miniatures need neither.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use vidgen_adapters::{AdapterConfig, AdapterSet, DQFormer, DQFormerConfig};
use vidgen_clip_encoders::{
    resize_with_antialiasing, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection,
};
use vidgen_collective::{Collective, Local};
use vidgen_diffusion_unet3d::sd::{
    AutoencoderKL, MotionAdapterConfig, MotionUNetSpec, UNet2DConditionConfig,
    UNet3DConditionModel, UNet3DConfig, UNetMotionConfig, UNetMotionModel,
};
use vidgen_diffusion_unet3d::svd::{
    AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel, UNetSpatioTemporalConfig,
};
use vidgen_samplers::Network;
use vidgen_video_core::hooks::{NoHooks, UNetHooks};
use vidgen_video_core::loading::parse_config;
use vidgen_video_core::{Codec, Conditioning, Error, ModelDir, Result};
use vidgen_video_io::synth::WorldConfig;

use crate::checkpoint::{latest_checkpoint, save_tensors, Checkpoint};
use crate::data::{
    Batch, ClipSource, ClipSpec, DataPosition, DataShard, Dataset, FolderSource, Loader,
    LoaderConfig, MemorySource,
};
use crate::objective::{
    describe, CondDropout, CondField, DiscreteObjective, EdmObjective, Loss, Objective,
};
use crate::params::{ParamStore, Selection};
use crate::trainer::{fit, ModelCache, OptimConfig, RunOptions, RunSummary, Trainer};

/// Which run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipe {
    /// Stable Video Diffusion image-to-video.
    #[default]
    Svd,
    /// AID: adapters and DQFormer on a frozen SVD.
    Aid,
    /// VIDiff: an inflated SD UNet, temporal layers then editing.
    Vidiff,
    /// AnimateDiff motion modules.
    Animate,
    /// ModelScope-style UNet3DConditionModel text-to-video.
    Unet3d,
}

impl Recipe {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Svd => "svd",
            Recipe::Aid => "aid",
            Recipe::Vidiff => "vidiff",
            Recipe::Animate => "animate",
            Recipe::Unet3d => "unet3d",
        }
    }

    /// From the CLI name.
    ///
    /// # Errors
    /// An unknown name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "svd" => Recipe::Svd,
            "aid" => Recipe::Aid,
            "vidiff" => Recipe::Vidiff,
            "animate" => Recipe::Animate,
            "unet3d" => Recipe::Unet3d,
            other => {
                return Err(Error::Unsupported {
                    field: "recipe".into(),
                    value: other.into(),
                    supported: "svd, aid, vidiff, animate, unet3d".into(),
                })
            }
        })
    }

    /// Trainable patterns when the config gives none.
    pub fn default_trainable(self) -> Vec<String> {
        match self {
            Recipe::Svd | Recipe::Unet3d => vec!["*".into()],
            Recipe::Aid => vec!["adapters".into(), "dqformer".into()],
            Recipe::Vidiff | Recipe::Animate => vec!["*motion_modules*".into()],
        }
    }

    /// The objective when the config gives none.
    pub fn default_objective(self) -> Objective {
        match self {
            Recipe::Svd | Recipe::Aid => Objective::Edm(EdmObjective::svd()),
            Recipe::Vidiff | Recipe::Unet3d => {
                Objective::Discrete(DiscreteObjective::stable_diffusion())
            }
            Recipe::Animate => Objective::Discrete(DiscreteObjective::animatediff()),
        }
    }

    /// Conditioning dropout when the config gives none: AID and VIDiff / InstructPix2Pix drop
    /// text and frames with 5 % each; SVD its image conditions with 5 % each; AnimateDiff and
    /// UNet3D the text with 10 %.
    pub fn default_dropout(self) -> CondDropout {
        match self {
            Recipe::Svd | Recipe::Vidiff => CondDropout::independent(0.05, 0.05),
            Recipe::Aid => CondDropout {
                text: 0.05,
                frames: 0.05,
                text_fields: vec![
                    CondField::Extra("text".into()),
                    CondField::Extra("states".into()),
                ],
                frame_fields: vec![CondField::Concat, CondField::Extra("visual".into())],
                ..CondDropout::default()
            },
            Recipe::Animate | Recipe::Unet3d => CondDropout::independent(0.1, 0.0),
        }
    }

    fn is_svd(self) -> bool {
        matches!(self, Recipe::Svd | Recipe::Aid)
    }
}

/// Where the clips come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataConfig {
    /// A dataset folder ([`FolderSource`]).
    Folder {
        /// The folder.
        path: PathBuf,
    },
    /// The synthetic moving-shapes world, rendered into memory.
    Synthetic {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Frames per clip.
        frames: usize,
        /// Clips.
        clips: usize,
        /// World seed.
        seed: u64,
    },
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig::Synthetic {
            width: 32,
            height: 32,
            frames: 8,
            clips: 64,
            seed: 0,
        }
    }
}

/// Compute precision (master weights are always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Forward and backward in bf16 from f32 masters (the model is rebuilt each step).
    Bf16,
}

/// SVD's extra conditioning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SvdSettings {
    /// The `motion_bucket_id` time id.
    pub motion_bucket_id: f64,
    /// `ln` of the noise-augmentation σ is drawn from `N(mean, std²)` (SVD fine-tuning: −3.0,
    /// 0.5); it is added to the conditioning frames and passed as the third time id.
    pub noise_aug_mean: f64,
    /// See `noise_aug_mean`.
    pub noise_aug_std: f64,
    /// Conditioning frames (AID's initial frames; SVD: 1).
    pub cond_frames: usize,
    /// Zero the conditioning latents of the frames after `cond_frames` (AID) instead of
    /// repeating the first frame's over all frames (SVD).
    pub mask_future: bool,
}

impl Default for SvdSettings {
    fn default() -> Self {
        Self {
            motion_bucket_id: 127.0,
            noise_aug_mean: -3.0,
            noise_aug_std: 0.5,
            cond_frames: 1,
            mask_future: false,
        }
    }
}

/// AID's trainable additions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AidSettings {
    /// Adapter bottleneck as a fraction of the channels.
    pub bottleneck_ratio: f64,
    /// Head size of the long-term adapters' attention.
    pub long_term_head_dim: usize,
    /// DQFormer width.
    pub dqformer_dim: usize,
    /// DQFormer heads.
    pub dqformer_heads: usize,
    /// Decomposed queries per frame.
    pub tokens_per_frame: usize,
}

impl Default for AidSettings {
    fn default() -> Self {
        Self {
            bottleneck_ratio: 0.25,
            long_term_head_dim: 64,
            dqformer_dim: 256,
            dqformer_heads: 8,
            tokens_per_frame: 4,
        }
    }
}

/// Everything `vidgen train` needs (saved as `train.json` in the output folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// The recipe.
    pub recipe: Recipe,
    /// A diffusers pipeline folder or a UNet folder; `None` trains from `unet_config`.
    pub model: Option<PathBuf>,
    /// The UNet's `config.json` content when there is no `model` (random init, seeded).
    pub unet_config: Option<serde_json::Value>,
    /// The data.
    pub data: DataConfig,
    /// Clip cutting and size (the UNet input is `clip.width × clip.height` pixels, or that
    /// divided by the VAE's stride).
    pub clip: ClipSpec,
    /// Output folder.
    pub out: PathBuf,
    /// Optimiser steps.
    pub steps: usize,
    /// Clips per micro-batch.
    pub batch: usize,
    /// Optimisation.
    pub optim: OptimConfig,
    /// Trainable patterns (`None`: the recipe's).
    pub trainable: Option<Vec<String>>,
    /// The objective (`None`: the recipe's).
    pub objective: Option<Objective>,
    /// Conditioning dropout (`None`: the recipe's).
    pub dropout: Option<CondDropout>,
    /// Compute precision.
    pub precision: Precision,
    /// Master seed (initialisation, shuffling, noise).
    pub seed: u64,
    /// Continue from a checkpoint directory, or from the latest checkpoint under an output
    /// folder.
    pub resume: Option<PathBuf>,
    /// Checkpoint every this many steps (and at the end).
    pub checkpoint_every: Option<usize>,
    /// Stop after this many steps (to resume later).
    pub stop_after: Option<usize>,
    /// Show a progress bar.
    pub progress: bool,
    /// Print the parameter report and the run's settings to stderr.
    pub verbose: bool,
    /// Batches decoded ahead.
    pub prefetch: usize,
    /// Caption tokens for [`HashText`] (no CLIP text encoder).
    pub text_tokens: usize,
    /// SVD / AID conditioning.
    pub svd: SvdSettings,
    /// AID adapters and DQFormer.
    pub aid: AidSettings,
    /// Heads and frame capacity of new motion modules (inflating a 2-D UNet).
    pub motion_heads: usize,
    /// See `motion_heads`.
    pub motion_max_frames: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            recipe: Recipe::Svd,
            model: None,
            unet_config: None,
            data: DataConfig::default(),
            clip: ClipSpec::default(),
            out: PathBuf::from("train-out"),
            steps: 100,
            batch: 1,
            optim: OptimConfig::default(),
            trainable: None,
            objective: None,
            dropout: None,
            precision: Precision::F32,
            seed: 0,
            resume: None,
            checkpoint_every: None,
            stop_after: None,
            progress: true,
            verbose: true,
            prefetch: 2,
            text_tokens: 8,
            svd: SvdSettings::default(),
            aid: AidSettings::default(),
            motion_heads: 8,
            motion_max_frames: 32,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Conditioning encoders
// ------------------------------------------------------------------------------------------

/// Captions as fixed random word vectors: each lower-cased word is a ChaCha8 Gaussian vector
/// (keyed by the word) of norm ≈ 1, the first `tokens` words in order, zero-padded. A stand-in
/// for CLIP text when no weights are available; the empty caption is all zeros, as a dropped
/// text condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashText {
    /// Vector width.
    pub dim: usize,
    /// Tokens per caption.
    pub tokens: usize,
}

impl HashText {
    /// Embeds captions.
    ///
    /// # Shapes
    /// `B` captions → `[B, tokens, dim]` f32.
    ///
    /// # Errors
    /// Tensor creation.
    pub fn encode(&self, captions: &[String], device: &Device) -> Result<Tensor> {
        let mut v = vec![0f32; captions.len() * self.tokens * self.dim];
        let scale = 1.0 / (self.dim as f64).sqrt();
        for (b, c) in captions.iter().enumerate() {
            for (t, w) in c.split_whitespace().take(self.tokens).enumerate() {
                let w = w.to_lowercase();
                let mut rng = ChaCha8Rng::seed_from_u64(0x7465_7874);
                rng.set_stream(fnv(&w));
                let base = (b * self.tokens + t) * self.dim;
                for x in &mut v[base..base + self.dim] {
                    *x = (rng.sample::<f64, _>(StandardNormal) * scale) as f32;
                }
            }
        }
        Ok(Tensor::from_vec(
            v,
            (captions.len(), self.tokens, self.dim),
            device,
        )?)
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A frame as a fixed random projection of its 4×4 average-pooled pixels (48 values) to
/// `dim`: a stand-in for CLIP image embeddings when no weights are available.
#[derive(Debug, Clone)]
pub struct PooledImage {
    proj: Tensor,
}

impl PooledImage {
    /// A projection to `dim`, seeded.
    ///
    /// # Errors
    /// Tensor creation.
    pub fn new(dim: usize, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x696d_6167);
        let s = 1.0 / 48f64.sqrt();
        let v: Vec<f32> = (0..48 * dim)
            .map(|_| (rng.sample::<f64, _>(StandardNormal) * s) as f32)
            .collect();
        Ok(Self {
            proj: Tensor::from_vec(v, (48, dim), device)?,
        })
    }

    /// Embeds frames.
    ///
    /// # Shapes
    /// `[B, 3, H, W]` → `[B, dim]`.
    ///
    /// # Errors
    /// Frames smaller than 4×4.
    pub fn encode(&self, frames: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = frames.dims4()?;
        if h < 4 || w < 4 || c != 3 {
            return Err(Error::shape("frames", &[b, 3, 4, 4], frames.dims()));
        }
        let p = frames
            .to_dtype(DType::F32)?
            .avg_pool2d_with_stride((h / 4, w / 4), (h / 4, w / 4))?
            .narrow(2, 0, 4)?
            .narrow(3, 0, 4)?
            .reshape((b, 48))?;
        Ok(p.matmul(&self.proj)?)
    }
}

enum TextEncoder {
    Clip(Box<CLIPTextModel>, Box<CLIPTokenizer>),
    Hash(HashText),
}

impl TextEncoder {
    fn dim(&self) -> usize {
        match self {
            TextEncoder::Clip(m, _) => m.config().hidden_size,
            TextEncoder::Hash(h) => h.dim,
        }
    }

    fn encode(&self, captions: &[String], device: &Device) -> Result<Tensor> {
        match self {
            TextEncoder::Hash(h) => h.encode(captions, device),
            TextEncoder::Clip(m, tok) => {
                let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
                let t = tok.encode_batch(&refs, device)?;
                Ok(m.forward(&t.input_ids)?
                    .last_hidden_state
                    .to_dtype(DType::F32)?)
            }
        }
    }
}

enum ImageEncoder {
    Clip(Box<CLIPVisionModelWithProjection>),
    Pooled(PooledImage),
}

impl ImageEncoder {
    fn dim(&self) -> usize {
        match self {
            ImageEncoder::Clip(m) => m.config().projection_dim,
            ImageEncoder::Pooled(p) => p.proj.dims()[1],
        }
    }

    /// `[B, 3, H, W]` in `[-1, 1]` → `[B, D]`.
    fn encode(&self, frames: &Tensor) -> Result<Tensor> {
        match self {
            ImageEncoder::Pooled(p) => p.encode(frames),
            ImageEncoder::Clip(m) => {
                // SVD's preprocessing: antialiased resize to 224 in [-1, 1], back to [0, 1],
                // CLIP's mean / std.
                let x = ((resize_with_antialiasing(frames, (224, 224))? + 1.0)? / 2.0)?;
                let dev = x.device();
                let mean = Tensor::new(&[0.481_454_66f32, 0.457_827_5, 0.408_210_73], dev)?
                    .reshape((1, 3, 1, 1))?;
                let std = Tensor::new(&[0.268_629_54f32, 0.261_302_6, 0.275_777_1], dev)?
                    .reshape((1, 3, 1, 1))?;
                let x = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
                m.forward(&x)?
                    .image_embeds
                    .ok_or_else(|| Error::invalid("image_encoder", "returned no image_embeds"))
            }
        }
    }
}

/// The frozen VAE (or none: pixels).
enum Latents {
    Pixels,
    Sd(Box<AutoencoderKL>),
    Temporal(Box<AutoencoderKLTemporalDecoder>),
}

impl Latents {
    fn encode(&self, video: &Tensor) -> Result<Tensor> {
        match self {
            Latents::Pixels => Ok(video.clone()),
            Latents::Sd(v) => v.encode(video),
            Latents::Temporal(v) => v.encode(video),
        }
    }

    /// Unscaled latents (SVD's conditioning image latents are not scaled).
    fn encode_unscaled(&self, video: &Tensor) -> Result<Tensor> {
        match self {
            Latents::Pixels => Ok(video.clone()),
            Latents::Sd(v) => (v.encode(video)? / v.config().scaling_factor).map_err(Into::into),
            Latents::Temporal(v) => {
                (v.encode(video)? / v.config().scaling_factor).map_err(Into::into)
            }
        }
    }

    fn channels(&self) -> usize {
        match self {
            Latents::Pixels => 3,
            Latents::Sd(v) => v.config().latent_channels,
            Latents::Temporal(v) => v.config().latent_channels,
        }
    }

    fn stride(&self) -> usize {
        match self {
            Latents::Pixels => 1,
            Latents::Sd(v) => v.config().spatial_stride(),
            Latents::Temporal(v) => v.config().spatial_stride(),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Networks
// ------------------------------------------------------------------------------------------

/// The trained network of a recipe, as a raw [`Network`] `F(x_in, c_noise, cond)`.
#[allow(clippy::large_enum_variant)]
pub enum RecipeNet {
    /// SVD UNet (+ AID's adapters and DQFormer).
    Svd {
        /// The UNet.
        unet: UNetSpatioTemporalConditionModel,
        /// Adapters run as hooks.
        adapters: Option<AdapterSet>,
        /// Builds the context from `cond.extra["text" | "visual" | "states"]`.
        dqformer: Option<DQFormer>,
    },
    /// UNet3DConditionModel.
    Unet3d(UNet3DConditionModel),
    /// UNetMotionModel.
    Motion(UNetMotionModel),
}

impl std::fmt::Debug for RecipeNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecipeNet::Svd { .. } => "RecipeNet::Svd",
            RecipeNet::Unet3d(_) => "RecipeNet::Unet3d",
            RecipeNet::Motion(_) => "RecipeNet::Motion",
        })
    }
}

fn need_context(cond: &Conditioning) -> Result<&Tensor> {
    cond.context
        .as_ref()
        .ok_or_else(|| Error::invalid("cond.context", "this UNet needs a cross-attention context"))
}

fn with_concat(x: &Tensor, cond: &Conditioning) -> Result<Tensor> {
    Ok(match &cond.concat {
        Some(c) => Tensor::cat(&[x, &c.to_dtype(x.dtype())?], 1)?,
        None => x.clone(),
    })
}

impl Network for RecipeNet {
    fn forward(&self, x_in: &Tensor, c_noise: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        match self {
            RecipeNet::Svd {
                unet,
                adapters,
                dqformer,
            } => {
                let hooks: &dyn UNetHooks = match adapters {
                    Some(a) => a,
                    None => &NoHooks,
                };
                match dqformer {
                    Some(dq) => {
                        let get = |k: &str| {
                            cond.extra.get(k).ok_or_else(|| {
                                Error::invalid(
                                    format!("cond.extra[\"{k}\"]"),
                                    "DQFormer input missing",
                                )
                            })
                        };
                        let dt = x_in.dtype();
                        let ctx = dq.forward(
                            &get("text")?.to_dtype(dt)?,
                            &get("visual")?.to_dtype(dt)?,
                            &get("states")?.to_dtype(dt)?,
                        )?;
                        let mut c = cond.clone();
                        c.context = Some(ctx);
                        unet.forward_raw_with_hooks(x_in, c_noise, &c, hooks)
                    }
                    None => unet.forward_raw_with_hooks(x_in, c_noise, cond, hooks),
                }
            }
            RecipeNet::Unet3d(u) => {
                let x = with_concat(x_in, cond)?;
                let ctx = need_context(cond)?.to_dtype(x.dtype())?;
                u.forward(&x, c_noise, &ctx)
            }
            RecipeNet::Motion(u) => {
                let x = with_concat(x_in, cond)?;
                let ctx = need_context(cond)?.to_dtype(x.dtype())?;
                u.forward(&x, c_noise, &ctx)
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Assembly
// ------------------------------------------------------------------------------------------

/// The UNet part of a model folder: `unet/` when present, else the folder itself.
fn unet_dir(model: &Path) -> PathBuf {
    let u = model.join("unet");
    if u.join("config.json").is_file() {
        u
    } else {
        model.to_path_buf()
    }
}

fn sub(model: Option<&Path>, name: &str) -> Option<PathBuf> {
    let d = model?.join(name);
    d.join("config.json").is_file().then_some(d)
}

fn class_of(cfg: &serde_json::Value) -> String {
    cfg.get("_class_name")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    parse_config(&bytes, Some(path))
}

fn from_value<T: serde::de::DeserializeOwned>(v: &serde_json::Value, what: &str) -> Result<T> {
    let bytes = serde_json::to_vec(v).map_err(|e| Error::config(what, e.to_string()))?;
    parse_config(&bytes, None)
}

/// What a recipe assembled.
struct Assembled {
    store: ParamStore,
    model: ModelCache<RecipeNet>,
    unet_config: serde_json::Value,
    in_channels: usize,
}

struct Parts {
    latents: Latents,
    text: Option<TextEncoder>,
    image: Option<ImageEncoder>,
}

fn build_store(cfg: &TrainConfig, device: &Device, trainable: Selection) -> ParamStore {
    let create = match (&cfg.model, cfg.recipe) {
        (None, _) => Selection::all(),
        (Some(_), Recipe::Aid) => Selection::parse(&["adapters", "dqformer"]),
        (Some(_), Recipe::Vidiff | Recipe::Animate) => Selection::parse(&["*motion_modules*"]),
        (Some(_), _) => Selection::none(),
    };
    ParamStore::new(cfg.seed, device)
        .create(create)
        .trainable(trainable)
        .widen(Selection::parse(&["conv_in.weight"]))
}

fn assemble(
    cfg: &TrainConfig,
    parts: &Parts,
    has_source: bool,
    device: &Device,
) -> Result<Assembled> {
    let trainable = Selection::parse(&cfg.trainable.clone().unwrap_or_else(|| {
        if cfg.model.is_none() && cfg.recipe != Recipe::Aid {
            // From scratch, everything trains (AID's base is frozen by definition).
            vec!["*".into()]
        } else {
            cfg.recipe.default_trainable()
        }
    }));
    let mut store = build_store(cfg, device, trainable);
    let unet_value = match (&cfg.model, &cfg.unet_config) {
        (Some(m), _) => {
            let d = unet_dir(m);
            store = store.with_checkpoint("", &d)?;
            if let Some(ma) = sub(Some(m), "motion_adapter") {
                store = store.with_checkpoint("", &ma)?;
            }
            read_json(&d.join("config.json"))?
        }
        (None, Some(v)) => v.clone(),
        (None, None) => {
            return Err(Error::config(
                "model / unet_config",
                "give a model folder or a UNet config to train from scratch",
            ))
        }
    };
    let dtype = match cfg.precision {
        Precision::F32 => DType::F32,
        Precision::Bf16 => DType::BF16,
    };
    let lat_c = parts.latents.channels();
    let mut unet_value = unet_value;
    match cfg.recipe {
        Recipe::Svd | Recipe::Aid => {
            let ucfg: UNetSpatioTemporalConfig = from_value(&unet_value, "unet config")?;
            let n = ucfg.block_out_channels.len();
            let cross = ucfg.cross_attention_dim.expand(n, "cross_attention_dim")?[0];
            if ucfg.in_channels != 2 * lat_c {
                return Err(Error::config(
                    "in_channels",
                    format!(
                        "the SVD UNet takes {} input channels; the data gives {lat_c} noisy + {lat_c} conditioning",
                        ucfg.in_channels
                    ),
                ));
            }
            let sites = ucfg.attention_sites()?;
            let aid = cfg.recipe == Recipe::Aid;
            let a = cfg.aid.clone();
            let text_dim = parts.text.as_ref().map_or(cross, TextEncoder::dim);
            let visual_dim = parts.image.as_ref().map_or(cross, ImageEncoder::dim);
            let dq = DQFormerConfig {
                dim: a.dqformer_dim,
                heads: a.dqformer_heads,
                num_frames: cfg.clip.frames,
                tokens_per_frame: a.tokens_per_frame,
                text_dim,
                visual_dim,
                state_dim: text_dim,
                context_dim: cross,
                ffn_mult: 4,
            };
            let ac = AdapterConfig {
                bottleneck_ratio: a.bottleneck_ratio,
                long_term_head_dim: a.long_term_head_dim,
                ..AdapterConfig::default()
            };
            let model = ModelCache::new(store.clone(), dtype, move |vb| {
                let unet = UNetSpatioTemporalConditionModel::new(&ucfg, vb.clone())?;
                let (adapters, dqformer) = if aid {
                    (
                        Some(AdapterSet::aid_for_attention_sites(
                            &sites,
                            &ac,
                            vb.pp("adapters"),
                        )?),
                        Some(DQFormer::new(&dq, vb.pp("dqformer"))?),
                    )
                } else {
                    (None, None)
                };
                let mut unet = unet;
                unet.set_max_frames(unet.max_frames().max(dq.num_frames));
                Ok(RecipeNet::Svd {
                    unet,
                    adapters,
                    dqformer,
                })
            })?;
            Ok(Assembled {
                store,
                model,
                unet_config: unet_value,
                in_channels: 2 * lat_c,
            })
        }
        Recipe::Unet3d => {
            let mut ucfg: UNet3DConfig = from_value(&unet_value, "unet config")?;
            let want = if has_source { 2 * lat_c } else { lat_c };
            check_in(ucfg.in_channels, lat_c, want)?;
            ucfg.in_channels = want;
            set_in_channels(&mut unet_value, want);
            let model = ModelCache::new(store.clone(), dtype, move |vb| {
                Ok(RecipeNet::Unet3d(UNet3DConditionModel::new(&ucfg, vb)?))
            })?;
            Ok(Assembled {
                store,
                model,
                unet_config: unet_value,
                in_channels: want,
            })
        }
        Recipe::Vidiff | Recipe::Animate => {
            let class = class_of(&unet_value);
            let mut spec = if class == "UNetMotionModel" {
                let c: UNetMotionConfig = from_value(&unet_value, "unet config")?;
                MotionUNetSpec::from_motion_config(&c)?
            } else {
                let c: UNet2DConditionConfig = from_value(&unet_value, "unet config")?;
                let motion_dir = cfg
                    .model
                    .as_deref()
                    .and_then(|m| sub(Some(m), "motion_adapter"));
                let adapter: MotionAdapterConfig = match &motion_dir {
                    Some(d) => ModelDir::open(d)?.config()?,
                    None => {
                        MotionAdapterConfig::for_unet(&c, cfg.motion_heads, cfg.motion_max_frames)?
                    }
                };
                let spec = MotionUNetSpec::from_parts(&c, &adapter)?;
                // `final/unet/` is the inflated model: a `UNetMotionModel` config, so that the
                // trained motion modules load with it (a 2-D config would load without them).
                unet_value = adapter.motion_unet_config(&unet_value)?;
                spec
            };
            let want = if has_source { 2 * lat_c } else { lat_c };
            check_in(spec.in_channels, lat_c, want)?;
            spec.in_channels = want;
            spec.ckpt_in_channels = want;
            set_in_channels(&mut unet_value, want);
            let mut model = ModelCache::new(store.clone(), dtype, move |vb| {
                Ok(RecipeNet::Motion(UNetMotionModel::new(
                    &spec,
                    vb.clone(),
                    vb,
                )?))
            })?;
            // New motion modules start as the identity (AnimateDiff / VIDiff): zero `proj_out`.
            if store.zero_created(&Selection::parse(&["*motion_modules*.proj_out.*"]))? > 0 {
                model.rebuild()?;
            }
            Ok(Assembled {
                store,
                model,
                unet_config: unet_value,
                in_channels: want,
            })
        }
    }
}

fn check_in(have: usize, lat: usize, want: usize) -> Result<()> {
    if have != lat && have != want {
        return Err(Error::config(
            "in_channels",
            format!("the UNet takes {have} input channels; the data gives {lat} (plus {lat} source channels for editing pairs)"),
        ));
    }
    Ok(())
}

fn set_in_channels(v: &mut serde_json::Value, c: usize) {
    if let Some(o) = v.as_object_mut() {
        o.insert("in_channels".into(), serde_json::json!(c));
    }
}

fn load_parts(cfg: &TrainConfig, device: &Device) -> Result<Parts> {
    let m = cfg.model.as_deref();
    let latents = match sub(m, "vae") {
        None => Latents::Pixels,
        Some(d) if cfg.recipe.is_svd() => Latents::Temporal(Box::new(
            AutoencoderKLTemporalDecoder::from_pretrained(&d, DType::F32, device)?.0,
        )),
        Some(d) => Latents::Sd(Box::new(
            AutoencoderKL::from_pretrained(&d, DType::F32, device)?.0,
        )),
    };
    let text = match (sub(m, "text_encoder"), m.map(|m| m.join("tokenizer"))) {
        (Some(te), Some(tk)) if tk.is_dir() => Some(TextEncoder::Clip(
            Box::new(CLIPTextModel::from_pretrained(&te, DType::F32, device)?.0),
            Box::new(CLIPTokenizer::from_dir(&tk)?),
        )),
        _ => None,
    };
    let image = match sub(m, "image_encoder") {
        Some(d) => Some(ImageEncoder::Clip(Box::new(
            CLIPVisionModelWithProjection::from_pretrained(&d, DType::F32, device)?.0,
        ))),
        None => None,
    };
    Ok(Parts {
        latents,
        text,
        image,
    })
}

/// Builds the conditioning of a batch for a recipe.
struct Conditioner {
    recipe: Recipe,
    parts: Parts,
    svd: SvdSettings,
    device: Device,
}

impl Conditioner {
    fn prepare(&self, b: &Batch, rng: &mut ChaCha8Rng) -> Result<(Tensor, Conditioning)> {
        let dev = &self.device;
        let video = b.video.to_device(dev)?;
        let x0 = self.parts.latents.encode(&video)?;
        let bsz = b.captions.len();
        let text = |rng: &mut ChaCha8Rng| -> Result<Tensor> {
            let _ = rng;
            match &self.parts.text {
                Some(t) => t.encode(&b.captions, dev),
                None => Err(Error::invalid("text encoder", "not loaded")),
            }
        };
        match self.recipe {
            Recipe::Svd | Recipe::Aid => {
                let s = &self.svd;
                let (_, _, t, _, _) = video.dims5()?;
                let k = s.cond_frames.clamp(1, t);
                // noise augmentation: one σ per sample, ln σ ~ N(mean, std²)
                // Drawn for the whole global batch, this rank keeping its rows (see BatchShard).
                let aug: Vec<f32> = b.shard.draw(1, || {
                    let n: f64 = rng.sample(StandardNormal);
                    (s.noise_aug_mean + s.noise_aug_std * n).exp() as f32
                });
                let first = video.narrow(2, 0, k)?; // [B, 3, K, H, W]
                let noise = crate::objective::randn_rows(rng, &first, b.shard)?;
                let sig = Tensor::from_vec(aug.clone(), (bsz, 1, 1, 1, 1), dev)?;
                let noisy = (&first + noise.broadcast_mul(&sig)?)?;
                let lat = self.parts.latents.encode_unscaled(&noisy)?; // [B, C, K, h, w]
                let (_, c, _, h, w) = lat.dims5()?;
                let concat = if s.mask_future {
                    if t > k {
                        let z = Tensor::zeros((bsz, c, t - k, h, w), lat.dtype(), dev)?;
                        Tensor::cat(&[&lat, &z], 2)?
                    } else {
                        lat
                    }
                } else {
                    lat.narrow(2, 0, 1)?
                        .broadcast_as((bsz, c, t, h, w))?
                        .contiguous()?
                };
                let first_frame = video.narrow(2, 0, 1)?.squeeze(2)?; // [B, 3, H, W]
                let image = self
                    .parts
                    .image
                    .as_ref()
                    .ok_or_else(|| Error::invalid("image encoder", "not loaded"))?
                    .encode(&first_frame)?
                    .unsqueeze(1)?; // [B, 1, D]
                let ids: Vec<f32> = (0..bsz)
                    .flat_map(|i| [(b.fps[i] - 1.0) as f32, s.motion_bucket_id as f32, aug[i]])
                    .collect();
                let mut cond = Conditioning::none()
                    .with_concat(concat)
                    .with_added("added_time_ids", Tensor::from_vec(ids, (bsz, 3), dev)?);
                if self.recipe == Recipe::Aid {
                    let tx = text(rng)?;
                    cond.extra.insert("states".into(), tx.clone());
                    cond.extra.insert("text".into(), tx);
                    cond.extra.insert("visual".into(), image);
                } else {
                    cond.context = Some(image);
                }
                Ok((x0, cond))
            }
            Recipe::Vidiff | Recipe::Animate | Recipe::Unet3d => {
                let mut cond = Conditioning::none().with_context(text(rng)?);
                if let Some(src) = &b.source {
                    cond.concat = Some(self.parts.latents.encode(&src.to_device(dev)?)?);
                }
                Ok((x0, cond))
            }
        }
    }
}

/// What [`train`] did and where it wrote.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The loop's summary.
    pub summary: RunSummary,
    /// The output folder.
    pub out: PathBuf,
    /// `<out>/final/` (written when the run reached its last step).
    pub final_dir: Option<PathBuf>,
}

fn make_source(cfg: &TrainConfig) -> Result<Arc<dyn ClipSource>> {
    Ok(match &cfg.data {
        DataConfig::Folder { path } => Arc::new(FolderSource::open(path)?),
        DataConfig::Synthetic {
            width,
            height,
            frames,
            clips,
            seed,
        } => Arc::new(MemorySource::synthetic(
            &WorldConfig::new(*width, *height, *frames),
            *clips,
            *seed,
        )?),
    })
}

/// A [`TrainConfig`] assembled: data, model, objective, trainer (restored when resuming),
/// ready to [`Session::run`]. Tests and tools use its parts directly (evaluate a fixed loss
/// before and after, inspect the store).
pub struct Session {
    cfg: TrainConfig,
    trainer: Trainer,
    model: ModelCache<RecipeNet>,
    loss: Loss,
    eval_loss: Loss,
    dataset: Arc<Dataset>,
    cond: Conditioner,
    start: DataPosition,
    unet_config: serde_json::Value,
    in_channels: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Session({}, step {}, {})",
            self.cfg.recipe.name(),
            self.trainer.step_count(),
            self.trainer.store().report()
        )
    }
}

impl Session {
    /// Builds everything `cfg` names: the data, the model (from its folder, or from
    /// `unet_config` with seeded weights), the conditioning encoders and the objective;
    /// restores the checkpoint when `cfg.resume` is set; writes `train.json` into `cfg.out`.
    ///
    /// # Errors
    /// A bad config (field named), unreadable model or data.
    pub fn new(cfg: &TrainConfig) -> Result<Self> {
        Self::new_in(cfg, Rc::new(Local))
    }

    /// [`Session::new`] for one rank of data-parallel training over `group` (every rank calls
    /// it with the same config): `cfg.batch` clips per rank, a global batch of
    /// `cfg.batch · world`, each rank reading its rows of every global batch; the weights are
    /// broadcast from rank 0 after they are built or resumed (rank 0 reads the checkpoint and
    /// sends its files, so the other ranks need no shared file system); only rank 0 writes
    /// `train.json`, logs, checkpoints and `final/`.
    ///
    /// # Errors
    /// As [`Session::new`]; backend failures. A rank that fails while the others wait in a
    /// collective leaves them waiting: wrap the call in [`vidgen_collective::or_abort`].
    pub fn new_in(cfg: &TrainConfig, group: Rc<dyn Collective>) -> Result<Self> {
        let device = Device::Cpu;
        let root = group.rank() == 0;
        if cfg.steps == 0 {
            return Err(Error::config("steps", "must be >= 1"));
        }
        if cfg.batch == 0 {
            return Err(Error::config("batch", "must be >= 1"));
        }
        if root {
            std::fs::create_dir_all(&cfg.out).map_err(|e| Error::Io {
                path: cfg.out.clone(),
                source: e,
            })?;
            let json = serde_json::to_string_pretty(cfg)
                .map_err(|e| Error::config("config", e.to_string()))?;
            let tj = cfg.out.join("train.json");
            std::fs::write(&tj, json).map_err(|e| Error::Io {
                path: tj,
                source: e,
            })?;
        }

        let source = make_source(cfg)?;
        let has_source = (0..source.len()).any(|i| source.has_source(i));
        let mut parts = load_parts(cfg, &device)?;
        let stride = parts.latents.stride();
        if !(cfg.clip.width as usize).is_multiple_of(stride)
            || !(cfg.clip.height as usize).is_multiple_of(stride)
        {
            return Err(Error::config(
                "clip.width/height",
                format!(
                    "{}x{} is not a multiple of the VAE's stride {stride}",
                    cfg.clip.width, cfg.clip.height
                ),
            ));
        }
        // Stand-ins for missing CLIP encoders, as wide as the UNet's context.
        let cross = peek_cross_dim(cfg)?;
        if parts.text.is_none() {
            parts.text = Some(TextEncoder::Hash(HashText {
                dim: cross,
                tokens: cfg.text_tokens.max(1),
            }));
        }
        if parts.image.is_none() && cfg.recipe.is_svd() {
            parts.image = Some(ImageEncoder::Pooled(PooledImage::new(
                cross, cfg.seed, &device,
            )?));
        }
        let asm = assemble(cfg, &parts, has_source, &device)?;
        let objective = cfg
            .objective
            .clone()
            .unwrap_or_else(|| cfg.recipe.default_objective());
        let dropout = cfg
            .dropout
            .clone()
            .unwrap_or_else(|| cfg.recipe.default_dropout());
        let loss = Loss::new(objective.clone(), dropout)?;
        let eval_loss = Loss::new(objective.clone(), CondDropout::none())?;
        let dataset = Arc::new(Dataset::new(source, cfg.clip.clone())?);
        let verbose = cfg.verbose && root;
        if verbose {
            eprintln!("vidgen train {}: {}", cfg.recipe.name(), asm.store.report());
            if group.world_size() > 1 {
                eprintln!(
                    "  data-parallel over {} {} ranks: global batch {} ({} per rank)",
                    group.world_size(),
                    group.backend(),
                    cfg.batch * group.world_size(),
                    cfg.batch
                );
            }
            eprintln!(
                "  objective: {}; data: {} clips ({} skipped as too short), {} frames at stride {}, {}x{}; batch {} x {} accumulated; {} steps",
                describe(&objective),
                dataset.len(),
                dataset.skipped().len(),
                cfg.clip.frames,
                cfg.clip.stride,
                cfg.clip.width,
                cfg.clip.height,
                cfg.batch,
                cfg.optim.accumulation,
                cfg.steps
            );
            for (dir, keys) in asm.store.unused_checkpoint_keys() {
                if let Some(k) = keys.first() {
                    eprintln!(
                        "  note: {} keys of {dir} are not used by this model (first: {k})",
                        keys.len()
                    );
                }
            }
        }
        let mut trainer = Trainer::new(asm.store.clone(), &cfg.optim, cfg.steps, cfg.seed)?
            .with_group(group.clone());
        let mut start = DataPosition::default();
        if let Some(r) = &cfg.resume {
            let (dir, scratch) = shared_checkpoint(group.as_ref(), r)?;
            let loaded = Checkpoint::load(&dir).and_then(|ck| {
                let at = trainer.restore(&ck, &dir)?;
                Ok((at, ck.state.step))
            });
            if let Some(s) = scratch {
                let _ = std::fs::remove_dir_all(s);
            }
            let (at, step) = loaded?;
            start = at;
            if verbose {
                eprintln!("  resumed from {} at step {step}", dir.display());
            }
        }
        // Every rank starts from rank 0's weights (the seeded initialisation and the restored
        // checkpoint are already the same everywhere; this makes it so by construction).
        trainer.broadcast_weights()?;
        let cond = Conditioner {
            recipe: cfg.recipe,
            parts,
            svd: SvdSettings {
                mask_future: cfg.svd.mask_future || cfg.recipe == Recipe::Aid,
                ..cfg.svd.clone()
            },
            device,
        };
        Ok(Self {
            cfg: cfg.clone(),
            trainer,
            model: asm.model,
            loss,
            eval_loss,
            dataset,
            cond,
            start,
            unet_config: asm.unet_config,
            in_channels: asm.in_channels,
        })
    }

    /// The trainer (its store holds every tensor of the model).
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// The network (rebuilt first when it computes in bf16 and is stale).
    ///
    /// # Errors
    /// The model builder's errors.
    pub fn network(&mut self) -> Result<&RecipeNet> {
        self.model.get()
    }

    /// Prepares a batch as training does (`x₀` and its conditioning), drawing from a
    /// generator seeded by `seed`.
    ///
    /// # Errors
    /// Encoder errors.
    pub fn prepare(&self, batch: &Batch, seed: u64) -> Result<(Tensor, Conditioning)> {
        self.cond
            .prepare(batch, &mut ChaCha8Rng::seed_from_u64(seed))
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// The batch at `pos` (what the loader would give there).
    ///
    /// # Errors
    /// As [`Dataset::batch_at`].
    pub fn batch_at(&self, pos: DataPosition) -> Result<Batch> {
        self.dataset
            .batch_at(self.cfg.seed, pos, self.cfg.batch, &Device::Cpu)
    }

    /// The objective's loss on `batch` without dropout, with every random draw (noise
    /// augmentation, σ or t, noise) from a generator seeded by `seed`: a fixed measurement to
    /// compare before and after training.
    ///
    /// # Errors
    /// Model and data errors.
    pub fn eval_loss(&mut self, batch: &Batch, seed: u64) -> Result<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (x0, cond) = self.cond.prepare(batch, &mut rng)?;
        let net = self.model.get()?;
        let l = self.eval_loss.compute(net, &x0, &cond, &mut rng)?.loss;
        Ok(l.to_dtype(DType::F32)?.to_scalar::<f32>()?)
    }

    /// Trains (from the restored step when resuming) and exports `final/` when the last step
    /// is reached (see [`train`]).
    ///
    /// # Errors
    /// Data, model and I/O errors.
    pub fn run(&mut self) -> Result<TrainOutcome> {
        let cfg = &self.cfg;
        let group = self.trainer.group();
        let mut loader = Loader::spawn_shard(
            self.dataset.clone(),
            LoaderConfig {
                batch: cfg.batch,
                seed: cfg.seed,
                prefetch: cfg.prefetch,
            },
            self.start,
            Device::Cpu,
            DataShard {
                rank: group.rank(),
                world: group.world_size(),
            },
        )?;
        let cond = &self.cond;
        let mut prepare = |b: &Batch, rng: &mut ChaCha8Rng| cond.prepare(b, rng);
        let opts = RunOptions {
            steps: cfg.steps,
            stop_after: cfg.stop_after,
            out_dir: cfg.out.clone(),
            checkpoint_every: cfg.checkpoint_every,
            progress: cfg.progress,
            plot: true,
            title: format!("vidgen train {}", cfg.recipe.name()),
        };
        let summary = fit(
            &mut self.trainer,
            &mut self.model,
            &self.loss,
            &mut loader,
            &mut prepare,
            &opts,
        )?;
        self.start = loader.position();
        let final_dir = if summary.steps_done >= cfg.steps {
            let d = cfg.out.join("final");
            if self.trainer.is_root() {
                export(&self.trainer, &self.unet_config, self.in_channels, &d)?;
            }
            Some(d)
        } else {
            None
        };
        Ok(TrainOutcome {
            summary,
            out: cfg.out.clone(),
            final_dir,
        })
    }
}

/// Runs a [`TrainConfig`] ([`Session::new`] then [`Session::run`]): builds the data, the
/// model (from its folder, or from `unet_config` with seeded weights) and the objective,
/// resumes when asked, trains, and writes into `cfg.out`: `train.json`, `loss.csv`,
/// `loss.png`, `checkpoints/step-N/`, and at the end `final/`: `trainable.safetensors`
/// (+ `ema.safetensors`), the UNet as a diffusers folder
/// `final/unet/{config.json, diffusion_pytorch_model.safetensors}` (its own keys, frozen and
/// trained tensors; `final/unet_ema/` with the EMA), and for AID `final/adapters.safetensors`
/// and `final/dqformer.safetensors` (keys without their prefix).
///
/// # Errors
/// A bad config (field named), unreadable model or data, training errors.
pub fn train(cfg: &TrainConfig) -> Result<TrainOutcome> {
    Session::new(cfg)?.run()
}

/// The checkpoint folder to resume from, on every rank: rank 0 finds it under `resume` (a
/// checkpoint, or a run folder whose latest checkpoint is taken) and sends its files; the other
/// ranks write them to a scratch folder (returned second, to delete after loading), so that
/// only rank 0 needs the run's folder.
fn shared_checkpoint(group: &dyn Collective, resume: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let local = || -> Result<PathBuf> {
        if resume.join(crate::checkpoint::STATE_FILE).is_file() {
            Ok(resume.to_path_buf())
        } else {
            latest_checkpoint(resume)?.ok_or_else(|| {
                Error::invalid(
                    "resume",
                    format!("no checkpoint under {}", resume.display()),
                )
            })
        }
    };
    if group.world_size() == 1 {
        return Ok((local()?, None));
    }
    const FILES: [&str; 4] = [
        crate::checkpoint::STATE_FILE,
        crate::checkpoint::TRAINABLE_FILE,
        crate::checkpoint::OPTIMIZER_FILE,
        crate::checkpoint::EMA_FILE,
    ];
    let root_dir = if group.rank() == 0 {
        Some(local()?)
    } else {
        None
    };
    let scratch = std::env::temp_dir().join(format!(
        "vidgen-resume-{}-rank{}",
        std::process::id(),
        group.rank()
    ));
    if root_dir.is_none() {
        std::fs::create_dir_all(&scratch).map_err(|e| Error::Io {
            path: scratch.clone(),
            source: e,
        })?;
    }
    for name in FILES {
        // An absent file travels as a single 0 byte, a present one as 1 + its bytes.
        let mut bytes = match &root_dir {
            Some(d) => {
                let p = d.join(name);
                if p.is_file() {
                    let mut v = vec![1u8];
                    v.extend(std::fs::read(&p).map_err(|e| Error::Io { path: p, source: e })?);
                    v
                } else {
                    vec![0u8]
                }
            }
            None => Vec::new(),
        };
        group.broadcast_bytes(&mut bytes, 0)?;
        if root_dir.is_none() && bytes.first() == Some(&1) {
            let p = scratch.join(name);
            std::fs::write(&p, &bytes[1..]).map_err(|e| Error::Io { path: p, source: e })?;
        }
    }
    Ok(match root_dir {
        Some(d) => (d, None),
        None => (scratch.clone(), Some(scratch)),
    })
}

/// The UNet's context width, read from the model folder or `unet_config`.
fn peek_cross_dim(cfg: &TrainConfig) -> Result<usize> {
    let v = match (&cfg.model, &cfg.unet_config) {
        (Some(m), _) => read_json(&unet_dir(m).join("config.json"))?,
        (None, Some(v)) => v.clone(),
        (None, None) => {
            return Err(Error::config(
                "model / unet_config",
                "give a model folder or a UNet config to train from scratch",
            ))
        }
    };
    let c = v.get("cross_attention_dim");
    let first = match c {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::Array(a)) => a.first().and_then(|x| x.as_u64()),
        _ => None,
    };
    first
        .map(|x| x as usize)
        .ok_or_else(|| Error::config("cross_attention_dim", "missing from the UNet config"))
}

/// Writes `final/`.
fn export(
    trainer: &Trainer,
    unet_config: &serde_json::Value,
    in_channels: usize,
    dir: &Path,
) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| Error::Io {
        path: p.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let store = trainer.store();
    save_tensors(
        &store.trainable_tensors(),
        &dir.join("trainable.safetensors"),
    )?;
    let ema = match trainer.ema() {
        Some(e) => {
            let t = e.tensors(trainer.vars())?;
            save_tensors(&t, &dir.join("ema.safetensors"))?;
            Some(t)
        }
        None => None,
    };
    let all = store.all_tensors();
    let mut parts: BTreeMap<&str, BTreeMap<String, Tensor>> = BTreeMap::new();
    for (k, t) in &all {
        let (part, key) = match k.split_once('.') {
            Some(("adapters", rest)) => ("adapters", rest.to_string()),
            Some(("dqformer", rest)) => ("dqformer", rest.to_string()),
            _ => ("unet", k.clone()),
        };
        parts.entry(part).or_default().insert(key, t.clone());
    }
    for (part, tensors) in &parts {
        if *part == "unet" {
            let u = dir.join("unet");
            std::fs::create_dir_all(&u).map_err(|e| io(&u, e))?;
            save_tensors(tensors, &u.join("diffusion_pytorch_model.safetensors"))?;
            let mut c = unet_config.clone();
            set_in_channels(&mut c, in_channels);
            let text = serde_json::to_string_pretty(&c)
                .map_err(|e| Error::config("unet config", e.to_string()))?;
            let p = u.join("config.json");
            std::fs::write(&p, text).map_err(|e| io(&p, e))?;
            if let Some(ema) = &ema {
                // The EMA UNet: the averaged trained tensors over the frozen ones.
                let mut m = tensors.clone();
                for (k, t) in ema {
                    if m.contains_key(k) {
                        m.insert(k.clone(), t.clone());
                    }
                }
                let ue = dir.join("unet_ema");
                std::fs::create_dir_all(&ue).map_err(|e| io(&ue, e))?;
                save_tensors(&m, &ue.join("diffusion_pytorch_model.safetensors"))?;
                std::fs::copy(&p, ue.join("config.json")).map_err(|e| io(&ue, e))?;
            }
        } else {
            save_tensors(tensors, &dir.join(format!("{part}.safetensors")))?;
        }
    }
    Ok(())
}
