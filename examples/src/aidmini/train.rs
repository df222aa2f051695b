//! Training the AID miniature, in four stages that each write their part of the folder:
//!
//! 1. **`vae`**: the temporal VAE on clips of the world (L1 + L2 reconstruction of a posterior
//!    sample, the object's pixels (brightest channel at or above the scorer's threshold) and a
//!    one-pixel ring around them weighted `1 + object_weight`, KL weight 1e-5); its
//!    `scaling_factor` is then set to one over the standard deviation of the latents of the
//!    training clips, so the UNet sees unit-variance latents.
//!    Then **`decoder`**: the VAE's decoder alone on whole episodes, the encoder frozen (so the
//!    latent space, and every later stage, stays valid), with the same weighting.
//! 2. **`base`**: the SVD UNet, everything trainable, image-to-video on episodes with a random
//!    direction (the object at rest in the first two frames, then moving): conditioning as SVD
//!    (the first frame's latents in every frame slot, its CLIP image embedding as the one
//!    context token, time ids `[fps − 1, motion_bucket_id, 0.02]`), the EDM objective with SVD's
//!    preconditioning (v-prediction, `c_noise = ¼ ln σ`), `ln σ ~ N(P_mean, P_std²)`; both frame
//!    conditions dropped together for 10 % of the clips (the frame guidance's unconditional
//!    branch). The squared error on the object's latent cells is weighted up
//!    ([`TrainOptions::latent_object_weight`]), here and in the AID stage.
//! 3. **`aid`**: the UNet frozen but for its cross-attention layers (AID's recipe; stored in
//!    `aid.safetensors` under `unet.`); AID's adapters (every attention site), the DQFormer and
//!    the cross-attention train on the same episodes with their instruction, at higher noise
//!    levels than the base (`aid_p_mean`: the direction of motion is decided at high σ). Each
//!    micro-batch is built exactly as [`vidgen_pipelines::AidPipeline`] conditions its three
//!    branches: with the text
//!    (per-frame context `[image embedding; DQFormer tokens of frame i]`, 85 %), without it
//!    (the image embedding alone, 10 %), or with neither frames nor text (zero latents and image
//!    embedding, 5 %).
//!
//! The episodes' latents, image embeddings and CLIP visual tokens are computed once with the
//! frozen encoders (`cache.safetensors` in the output folder, reused by later stages).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor, D};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_adapters::{AdapterConfig, DQFormerConfig};
use vidgen_clip_encoders::{resize_with_antialiasing, CLIPTextModel, CLIPTokenizer};
use vidgen_diffusion_unet3d::svd::{
    AutoencoderKLTemporalDecoder, TemporalVaeConfig, UNetSpatioTemporalConditionModel,
    UNetSpatioTemporalConfig,
};
use vidgen_pipelines::aid::{StagePlanner, TemplatePlanner};
use vidgen_pipelines::{AidConfig, AidWeights, ImageNormalize, PipelineFolder, SvdPipeline};
use vidgen_trainer::{
    CondDropout, EdmObjective, EdmPreconditioning, Loss, Objective, ParamStore, Selection, Trainer,
};
use vidgen_video_core::{Conditioning, Error, Result};
use vidgen_video_io::synth::Direction;
use vidgen_video_io::{videos_to_tensor, PixelRange, Video};

use super::folder::{unet_config, vae_config, write_static, CONTEXT_DIM};
use super::{instruction, Episodes, MiniConfig};
use crate::minis::train::{print_summary, run_stage, stage_optim as optim, summarize};
pub use crate::minis::train::{StageOptions, StageSummary};
use crate::minis::{io_err, mkdir, write_json};

/// The time id for the noise added to the conditioning frames (the pipeline's default).
pub const NOISE_AUG: f32 = 0.02;

/// Every option of a training run (`train.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainOptions {
    /// Master seed.
    pub seed: u64,
    /// Episode geometry and inference defaults.
    pub mini: MiniConfig,
    /// Episodes whose latents are cached for the base and AID stages.
    pub clips: usize,
    /// Stage 1.
    pub vae: StageOptions,
    /// Frames per clip in the VAE stage.
    pub vae_frames: usize,
    /// Stage 1b: the VAE's decoder fine-tuned with the encoder (and so the latent space)
    /// frozen, on whole episodes, the object's pixels weighted up.
    pub decoder: StageOptions,
    /// Extra loss weight of the object's pixels and the one-pixel ring around them in the VAE
    /// and decoder stages.
    pub object_weight: f64,
    /// Extra weight of the squared error on the object's latents (the latent cells under the
    /// object or its one-pixel ring, in any frame) in the base and AID stages: the loss is
    /// `mean(λ(σ)·(1 + latent_object_weight·mask)·(D − x₀)²)`. The object covers about a
    /// sixth of the latent cells; unweighted, most of the loss goes to a background the UNet
    /// only copies from the conditioning frame, and the object's outline blurs as it moves.
    pub latent_object_weight: f64,
    /// Stage 2.
    pub base: StageOptions,
    /// Stage 3.
    pub aid: StageOptions,
    /// `P_mean` of `ln σ` in the base stage.
    pub p_mean: f64,
    /// `P_std` of `ln σ` in the base stage.
    pub p_std: f64,
    /// `P_mean` of `ln σ` in the AID stage. Higher than the base's: the direction of motion
    /// is decided at high noise (the first sampling steps, σ from 20 to ~3), and at the base's
    /// levels the noisy latents already show where the object goes, so the instruction lowers
    /// the loss of few samples (measured: at the base's −0.4 the text branch learned nothing in
    /// 300 steps, at 1.5 it steers 84 % of clips after 600).
    pub aid_p_mean: f64,
    /// `P_std` of `ln σ` in the AID stage.
    pub aid_p_std: f64,
    /// AID's adapter bottleneck as a fraction of the channels.
    pub bottleneck_ratio: f64,
    /// DQFormer width.
    pub dqformer_dim: usize,
    /// Decomposed queries per frame.
    pub tokens_per_frame: usize,
    /// Train the UNet's cross-attention layers (spatial and temporal `attn2`) in the AID stage,
    /// as AID's recipe does; their values are stored in `aid.safetensors` under `unet.`.
    /// Off: adapters + DQFormer only, through the frozen cross-attention.
    pub cross_attention: bool,
    /// Store the VAE, the UNet and AID's weights as f16 (training runs in f32; the next stage
    /// and the pipeline load the stored values, converted to f32). Halves the folder: the
    /// shipped one must stay under 10 MB with a 64-wide UNet.
    pub half_weights: bool,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            mini: MiniConfig::default(),
            clips: 1200,
            vae: StageOptions {
                steps: 2000,
                batch: 4,
                lr: 2e-3,
            },
            vae_frames: 2,
            decoder: StageOptions {
                steps: 1200,
                batch: 2,
                lr: 1e-3,
            },
            object_weight: 4.0,
            latent_object_weight: 4.0,
            base: StageOptions {
                steps: 1200,
                batch: 8,
                lr: 2e-3,
            },
            aid: StageOptions {
                steps: 2400,
                batch: 8,
                lr: 3e-3,
            },
            p_mean: -0.4,
            p_std: 1.2,
            aid_p_mean: 1.5,
            aid_p_std: 1.2,
            bottleneck_ratio: 0.5,
            dqformer_dim: 32,
            tokens_per_frame: 2,
            cross_attention: true,
            half_weights: true,
            progress: true,
        }
    }
}

/// Which stages to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The temporal VAE.
    Vae,
    /// The VAE's decoder alone (encoder frozen: the latent space stays, so it may run after
    /// the later stages too).
    Decoder,
    /// The SVD UNet.
    Base,
    /// Adapters + DQFormer.
    Aid,
}

impl Stage {
    /// All, in order.
    pub const ALL: [Stage; 4] = [Stage::Vae, Stage::Decoder, Stage::Base, Stage::Aid];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Vae => "vae",
            Stage::Decoder => "decoder",
            Stage::Base => "base",
            Stage::Aid => "aid",
        }
    }

    /// Parses `vae`, `base`, `aid`.
    ///
    /// # Errors
    /// Another name.
    pub fn parse(s: &str) -> Result<Self> {
        Stage::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| Error::Unsupported {
                field: "--stage".into(),
                value: s.into(),
                supported: "vae, decoder, base, aid, all".into(),
            })
    }
}

/// Runs `stages` into `out` (the miniature's folder). Writes `train.json`, the folder's
/// static parts (first time), each stage's weights and `loss-<stage>.{csv,png}`.
///
/// # Errors
/// Configuration, I/O and training errors; a stage whose inputs (earlier stages) are missing.
pub fn train(opts: &TrainOptions, stages: &[Stage], out: &Path) -> Result<Vec<StageSummary>> {
    opts.mini.validate()?;
    mkdir(out)?;
    write_json(&out.join("train.json"), opts)?;
    write_json(&out.join("mini.json"), &opts.mini)?;
    if !out.join("text_encoder").is_dir() || !out.join("image_encoder").is_dir() {
        write_static(out, opts.seed)?;
        if opts.half_weights {
            for enc in ["text_encoder", "image_encoder"] {
                vidgen_video_nn::record::halve_safetensors(
                    out.join(enc).join("model.safetensors"),
                )?;
            }
        }
    }
    let mut done = Vec::new();
    for &s in stages {
        let r = match s {
            Stage::Vae => train_vae(opts, out)?,
            Stage::Decoder => train_decoder(opts, out)?,
            Stage::Base => train_base(opts, out)?,
            Stage::Aid => train_aid(opts, out)?,
        };
        if opts.progress {
            print_summary(&r);
        }
        done.push(r);
    }
    Ok(done)
}

/// Episode streams: training draws from these, evaluations from others.
const STREAM_VAE: u64 = 0x7a3;
const STREAM_CLIPS: u64 = 0xc11;
const STREAM_DECODER: u64 = 0xdec;

/// `frames` of episodes as `[B, 3, T, H, W]` in `[-1, 1]`.
fn clips_tensor(videos: &[Video], dev: &Device) -> Result<Tensor> {
    videos_to_tensor(videos, PixelRange::MinusOneToOne, dev)
}

fn vae_cfg(opts: &TrainOptions, sf: f64) -> Result<TemporalVaeConfig> {
    let v = vae_config(&opts.mini, sf);
    let c: TemporalVaeConfig =
        serde_json::from_value(v).map_err(|e| Error::config("vae config", e.to_string()))?;
    Ok(c)
}

fn save_model_dir(
    dir: &Path,
    config: &serde_json::Value,
    tensors: &BTreeMap<String, Tensor>,
    half: bool,
) -> Result<()> {
    mkdir(dir)?;
    let stored;
    let tensors = if half {
        stored = tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.to_dtype(DType::F16)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        &stored
    } else {
        tensors
    };
    vidgen_trainer::checkpoint::save_tensors(
        tensors,
        &dir.join("diffusion_pytorch_model.safetensors"),
    )?;
    write_json(&dir.join("config.json"), config)
}

fn train_vae(opts: &TrainOptions, out: &Path) -> Result<StageSummary> {
    let dev = Device::Cpu;
    let eps = Episodes::new(&opts.mini)?;
    let cfg = vae_cfg(opts, 1.0)?;
    let store = ParamStore::new(opts.seed ^ 0x0a5e, &dev)
        .create(Selection::all())
        .trainable(Selection::all());
    let vae = AutoencoderKLTemporalDecoder::new(&cfg, store.var_builder(DType::F32))?;
    let s = &opts.vae;
    let mut trainer = Trainer::new(store.clone(), &optim(s), s.steps, opts.seed ^ 0x0a5e)?;
    let t = opts.vae_frames.min(opts.mini.frames).max(1);
    let n = opts.mini.frames;
    let mut micro = |k: usize, rng: &mut ChaCha8Rng| -> Result<Tensor> {
        let mut videos = Vec::with_capacity(s.batch);
        for b in 0..s.batch {
            let e = eps.episode(opts.seed ^ STREAM_VAE, (k * s.batch + b) as u64, None)?;
            let start = rng.random_range(0..=n - t);
            videos.push(Video::new(e.frames[start..start + t].to_vec(), 8.0)?);
        }
        let x = clips_tensor(&videos, &dev)?; // [B, 3, T, H, W]
        let (frames, _) = vidgen_video_core::VideoShape::fold(&x)?; // [B·T, 3, H, W]
        let post = vae.encode_frames(&frames)?;
        let noise = randn(rng, post.mean.dims(), &dev)?;
        let z = (&post.mean + (post.std()? * noise)?)?;
        let rec = vae.decode(&z, t)?;
        let d = (rec - &frames)?;
        let per = (d.abs()? + d.sqr()?)?;
        let mask = crate::minis::train::object_ring_mask(&frames)?;
        let obj = (per.broadcast_mul(&mask)?.mean_all()? * opts.object_weight)?;
        let kl = (((post.mean.sqr()? + post.logvar.exp()?)? - 1.0)? - &post.logvar)?
            .mean_all()?
            .affine(0.5, 0.0)?;
        let total = ((per.mean_all()? + obj)? + (kl * 1e-5)?)?;
        Ok(total)
    };
    let log = run_stage(&mut trainer, s.steps, out, "vae", opts.progress, &mut micro)?;
    // Scaling factor: one over the std of the posterior means of training clips.
    let mut vals = Vec::new();
    for i in 0..32u64 {
        let e = eps.episode(opts.seed ^ STREAM_VAE, 1_000_000 + i, None)?;
        let x = clips_tensor(&[Video::new(e.frames, 8.0)?], &dev)?;
        let (frames, _) = vidgen_video_core::VideoShape::fold(&x)?;
        vals.extend(
            vae.encode_frames(&frames)?
                .mean
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    let mean = vals.iter().map(|&v| v as f64).sum::<f64>() / vals.len() as f64;
    let var = vals.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / vals.len() as f64;
    let sf = 1.0 / var.sqrt().max(1e-6);
    save_model_dir(
        &out.join("vae"),
        &vae_config(&opts.mini, sf),
        &store.all_tensors(),
        opts.half_weights,
    )?;
    let report = store.report();
    Ok(summarize(Stage::Vae.name(), &log, &report))
}

fn train_decoder(opts: &TrainOptions, out: &Path) -> Result<StageSummary> {
    let dev = Device::Cpu;
    let vdir = out.join("vae");
    if !vdir.join("config.json").is_file() {
        return Err(Error::invalid(
            vdir.display().to_string(),
            "missing: run the vae stage first",
        ));
    }
    let cfg: TemporalVaeConfig = vidgen_video_core::loading::read_config(vdir.join("config.json"))?;
    let eps = Episodes::new(&opts.mini)?;
    let store = ParamStore::new(opts.seed ^ 0xdec0, &dev)
        .with_checkpoint("", &vdir)?
        .trainable(Selection::parse(&["decoder*"]));
    let vae = AutoencoderKLTemporalDecoder::new(&cfg, store.var_builder(DType::F32))?;
    let s = &opts.decoder;
    let n = opts.mini.frames;
    let w = opts.object_weight;
    let mut trainer = Trainer::new(store.clone(), &optim(s), s.steps, opts.seed ^ 0xdec0)?;
    let mut micro = |k: usize, rng: &mut ChaCha8Rng| -> Result<Tensor> {
        let mut videos = Vec::with_capacity(s.batch);
        for b in 0..s.batch {
            let e = eps.episode(opts.seed ^ STREAM_DECODER, (k * s.batch + b) as u64, None)?;
            videos.push(Video::new(e.frames, 8.0)?);
        }
        let x = clips_tensor(&videos, &dev)?; // [B, 3, N, H, W]
        let (frames, _) = vidgen_video_core::VideoShape::fold(&x)?; // [B·N, 3, H, W]
        let post = vae.encode_frames(&frames)?;
        let noise = randn(rng, post.mean.dims(), &dev)?;
        let z = (post.mean.detach() + (post.std()?.detach() * noise)?)?;
        let rec = vae.decode(&z, n)?;
        let d = (rec - &frames)?;
        let per = (d.abs()? + d.sqr()?)?; // [B·N, 3, H, W]
        let mask = crate::minis::train::object_ring_mask(&frames)?; // [B·N, 1, H, W]
        let obj = per.broadcast_mul(&mask)?.mean_all()?;
        Ok((per.mean_all()? + (obj * w)?)?)
    };
    let log = run_stage(
        &mut trainer,
        s.steps,
        out,
        "decoder",
        opts.progress,
        &mut micro,
    )?;
    save_model_dir(
        &vdir,
        &vae_config(&opts.mini, cfg.scaling_factor),
        &store.all_tensors(),
        opts.half_weights,
    )?;
    Ok(summarize(Stage::Decoder.name(), &log, &store.report()))
}

/// The frozen encoders' view of the training episodes.
struct Cache {
    /// Scaled latents `[M, 4, N, h, w]`.
    x0: Tensor,
    /// First-frame latents, unscaled `[M, 4, h, w]`.
    cond: Tensor,
    /// CLIP image embeddings `[M, D]`.
    embeds: Tensor,
    /// CLIP vision last hidden state `[M, P, Dv]`.
    visual: Tensor,
    /// Direction index per clip.
    dirs: Vec<usize>,
    /// The object's latent cells (under the object or its one-pixel ring) `[M, 1, N, h, w]`
    /// of 0 / 1.
    mask: Tensor,
}

impl Cache {
    /// The loss weight `1 + w·mask` of clips `idx` (`None` when `w` is 0).
    fn weight(&self, idx: &[usize], w: f64) -> Result<Option<Tensor>> {
        if w == 0.0 {
            return Ok(None);
        }
        Ok(Some(rows(&self.mask, idx)?.affine(w, 1.0)?))
    }
}

/// The CLIP image inputs of frames as the SVD / AID pipelines make them.
///
/// # Shapes
/// `frames [B, 3, H, W]` in `[0, 1]` → `[B, 3, 224, 224]` normalised.
pub fn clip_pixels(frames: &Tensor, norm: &ImageNormalize) -> Result<Tensor> {
    let x = ((frames * 2.0)? - 1.0)?;
    let clip_in = ((resize_with_antialiasing(&x, (224, 224))? + 1.0)? / 2.0)?;
    norm.normalize(&clip_in)
}

fn build_cache(opts: &TrainOptions, out: &Path, svd: &SvdPipeline) -> Result<Cache> {
    let path = out.join("cache.safetensors");
    let dev = Device::Cpu;
    if path.is_file() {
        let m = candle_core::safetensors::load(&path, &dev)?;
        let get = |k: &str| {
            m.get(k).cloned().ok_or_else(|| Error::Malformed {
                path: path.clone(),
                reason: format!("no `{k}`"),
            })
        };
        let x0 = get("x0")?;
        if x0.dim(0)? == opts.clips && m.contains_key("mask") {
            let dirs = get("dirs")?
                .to_vec1::<u32>()?
                .into_iter()
                .map(|d| d as usize)
                .collect();
            return Ok(Cache {
                x0,
                cond: get("cond")?,
                embeds: get("embeds")?,
                visual: get("visual")?,
                dirs,
                mask: get("mask")?,
            });
        }
    }
    let eps = Episodes::new(&opts.mini)?;
    let sf = svd.vae.config().scaling_factor;
    let n = opts.mini.frames;
    let (mut x0s, mut conds, mut embs, mut viss, mut dirs, mut masks) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let chunk = 16;
    let bar = vidgen_trainer::log::progress_bar(opts.clips, 0, opts.progress);
    bar.set_message("encoding the training episodes");
    let mut i = 0;
    while i < opts.clips {
        let m = chunk.min(opts.clips - i);
        let mut videos = Vec::with_capacity(m);
        for j in 0..m {
            let e = eps.episode(opts.seed ^ STREAM_CLIPS, (i + j) as u64, None)?;
            dirs.push(
                Direction::ALL
                    .iter()
                    .position(|&d| d == e.direction)
                    .unwrap_or(0) as u32,
            );
            videos.push(Video::new(e.frames, 8.0)?);
        }
        let x = clips_tensor(&videos, &dev)?; // [m, 3, N, H, W]
        let (frames, _) = vidgen_video_core::VideoShape::fold(&x)?;
        let mode = svd.vae.encode_frames(&frames)?.mode().clone(); // [m·N, 4, h, w]
        let lat = vidgen_video_core::VideoShape::unfold(&mode, n)?; // [m, 4, N, h, w]
                                                                    // The object's latent cells: its pixel mask (with the ring), max-pooled to the latent grid.
        let f = frames.dim(D::Minus1)? / lat.dim(D::Minus1)?.max(1);
        let pm = crate::minis::train::object_ring_mask(&frames)?.max_pool2d(f)?; // [m·N, 1, h, w]
        masks.push(vidgen_video_core::VideoShape::unfold(&pm, n)?);
        x0s.push((&lat * sf)?);
        conds.push(lat.i((.., .., 0))?.contiguous()?);
        let first = ((x.i((.., .., 0))? + 1.0)? / 2.0)?; // [m, 3, H, W] in [0, 1]
        let pv = clip_pixels(&first, &svd.feature_extractor)?;
        let vis = svd.image_encoder.forward(&pv)?;
        embs.push(
            vis.image_embeds
                .ok_or_else(|| Error::invalid("image_encoder", "no image_embeds"))?,
        );
        viss.push(vis.last_hidden_state);
        i += m;
        bar.set_position(i as u64);
    }
    bar.finish_and_clear();
    let c = Cache {
        x0: Tensor::cat(&x0s, 0)?,
        cond: Tensor::cat(&conds, 0)?,
        embeds: Tensor::cat(&embs, 0)?,
        visual: Tensor::cat(&viss, 0)?,
        dirs: dirs.iter().map(|&d| d as usize).collect(),
        mask: Tensor::cat(&masks, 0)?,
    };
    let dv = Tensor::from_vec(dirs, opts.clips, &dev)?;
    candle_core::safetensors::save(
        &std::collections::HashMap::from([
            ("x0".to_string(), c.x0.clone()),
            ("cond".to_string(), c.cond.clone()),
            ("embeds".to_string(), c.embeds.clone()),
            ("visual".to_string(), c.visual.clone()),
            ("dirs".to_string(), dv),
            ("mask".to_string(), c.mask.clone()),
        ]),
        &path,
    )?;
    Ok(c)
}

/// An SVD pipeline over `out` whose UNet may not exist yet (the base stage builds it): the
/// folder is opened with a throw-away random UNet when `unet/` is missing.
fn frozen_parts(out: &Path) -> Result<SvdPipeline> {
    if !out.join("vae").join("config.json").is_file() {
        return Err(Error::invalid(
            out.join("vae").display().to_string(),
            "missing: run the vae stage first",
        ));
    }
    let folder = PipelineFolder::open(out)?;
    if out.join("unet").join("config.json").is_file() {
        return SvdPipeline::from_pretrained(&folder, DType::F32, &Device::Cpu);
    }
    Err(Error::invalid(
        out.join("unet").display().to_string(),
        "missing: run the base stage first",
    ))
}

fn edm(p_mean: f64, p_std: f64) -> Result<Loss> {
    Loss::new(
        Objective::Edm(EdmObjective {
            p_mean,
            p_std,
            sigma_data: 1.0,
            precond: EdmPreconditioning::Svd,
        }),
        CondDropout::none(),
    )
}

fn time_ids(b: usize, dev: &Device) -> Result<Tensor> {
    Ok(Tensor::new(&[[6f32, 127.0, NOISE_AUG]], dev)?.repeat((b, 1))?)
}

/// Rows `idx` of `t` (dim 0).
fn rows(t: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let n = ids.len();
    Ok(t.index_select(&Tensor::from_vec(ids, n, t.device())?, 0)?)
}

/// Standard normal noise of `shape` drawn from `rng`.
pub fn randn(rng: &mut ChaCha8Rng, shape: &[usize], dev: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect();
    Ok(Tensor::from_vec(v, shape, dev)?)
}

/// `[B, …]` mask of 0 / 1 per sample, as `t`'s rank.
fn keep_mask(keep: &[bool], rank: usize, dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
    let mut shape = vec![1usize; rank];
    shape[0] = keep.len();
    Ok(Tensor::from_vec(v, shape, dev)?)
}

fn train_base(opts: &TrainOptions, out: &Path) -> Result<StageSummary> {
    let dev = Device::Cpu;
    // The base needs the VAE and CLIP vision only; write the UNet config and seed it.
    let ucv = unet_config(&opts.mini);
    let ucfg: UNetSpatioTemporalConfig = serde_json::from_value(ucv.clone())
        .map_err(|e| Error::config("unet config", e.to_string()))?;
    let store = ParamStore::new(opts.seed ^ 0xba5e, &dev)
        .create(Selection::all())
        .trainable(Selection::all());
    let unet = UNetSpatioTemporalConditionModel::new(&ucfg, store.var_builder(DType::F32))?;
    // Provisional UNet so that the folder loads (replaced at the end of the stage).
    save_model_dir(
        &out.join("unet"),
        &ucv,
        &store.all_tensors(),
        opts.half_weights,
    )?;
    let svd = frozen_parts(out)?;
    let cache = build_cache(opts, out, &svd)?;
    drop(svd);
    let loss = edm(opts.p_mean, opts.p_std)?;
    let s = &opts.base;
    let mut trainer = Trainer::new(store.clone(), &optim(s), s.steps, opts.seed ^ 0xba5e)?;
    let m = cache.x0.dim(0)?;
    let n = opts.mini.frames;
    let net = |x: &Tensor, c: &Tensor, cond: &Conditioning| unet.forward_raw(x, c, cond);
    let mut micro = |_k: usize, rng: &mut ChaCha8Rng| -> Result<Tensor> {
        let idx: Vec<usize> = (0..s.batch).map(|_| rng.random_range(0..m)).collect();
        let keep: Vec<bool> = (0..s.batch).map(|_| rng.random::<f64>() >= 0.1).collect();
        let x0 = rows(&cache.x0, &idx)?;
        let c = rows(&cache.cond, &idx)?
            .unsqueeze(2)?
            .repeat((1, 1, n, 1, 1))?;
        let c = c.broadcast_mul(&keep_mask(&keep, 5, &dev)?)?;
        let e = rows(&cache.embeds, &idx)?.broadcast_mul(&keep_mask(&keep, 2, &dev)?)?;
        let mut cond = Conditioning::none().with_context(e.unsqueeze(1)?);
        cond.concat = Some(c);
        cond.added
            .insert("added_time_ids".into(), time_ids(s.batch, &dev)?);
        let w = cache.weight(&idx, opts.latent_object_weight)?;
        Ok(loss
            .compute_weighted(&net, &x0, &cond, rng, w.as_ref())?
            .loss)
    };
    let log = run_stage(
        &mut trainer,
        s.steps,
        out,
        "base",
        opts.progress,
        &mut micro,
    )?;
    save_model_dir(
        &out.join("unet"),
        &ucv,
        &store.all_tensors(),
        opts.half_weights,
    )?;
    Ok(summarize(Stage::Base.name(), &log, &store.report()))
}

/// The UNet keys AID's recipe trains: every cross-attention layer.
pub const CROSS_ATTENTION: &str = "*.attn2.*";

/// The trained UNet tensors of `store` (cross-attention), keyed as in the UNet's checkpoint.
fn tuned_unet(store: &ParamStore) -> BTreeMap<String, Tensor> {
    let sel = Selection::parse(&[CROSS_ATTENTION, "!adapters*", "!dqformer*"]);
    store
        .trainable_tensors()
        .into_iter()
        .filter(|(k, _)| sel.selects(k))
        .collect()
}

/// AID's configuration for this miniature.
pub fn aid_config(opts: &TrainOptions) -> AidConfig {
    AidConfig {
        adapters: AdapterConfig {
            bottleneck_ratio: opts.bottleneck_ratio,
            short_term_kernel: [3, 3, 3],
            long_term_head_dim: 8,
        },
        dqformer: DQFormerConfig {
            dim: opts.dqformer_dim,
            heads: 2,
            num_frames: opts.mini.frames,
            tokens_per_frame: opts.tokens_per_frame,
            text_dim: 32,
            visual_dim: 32,
            state_dim: 32,
            context_dim: CONTEXT_DIM,
            ffn_mult: 2,
        },
        stages: opts.mini.stages,
    }
}

/// Per instruction (by direction index): `t1 [1, L, D]` and the stages' pooled `[S, D]`.
pub fn encode_instructions(
    te: &CLIPTextModel,
    tok: &CLIPTokenizer,
    stages: usize,
    dev: &Device,
) -> Result<Vec<(Tensor, Tensor)>> {
    Direction::ALL
        .iter()
        .map(|&d| {
            let text = instruction(d);
            let ids = tok.encode_batch(&[text.as_str()], dev)?;
            let t1 = te.forward(&ids.input_ids)?.last_hidden_state;
            let st = TemplatePlanner.plan(&text, stages)?;
            let refs: Vec<&str> = st.iter().map(String::as_str).collect();
            let ids = tok.encode_batch(&refs, dev)?;
            let t2 = te.forward(&ids.input_ids)?.pooler_output;
            Ok((t1, t2))
        })
        .collect()
}

fn train_aid(opts: &TrainOptions, out: &Path) -> Result<StageSummary> {
    let dev = Device::Cpu;
    let svd = frozen_parts(out)?;
    let cache = build_cache(opts, out, &svd)?;
    let (te, tok) = vidgen_pipelines::aid::load_text_encoder(out, DType::F32, &dev)?;
    let texts = encode_instructions(&te, &tok, opts.mini.stages, &dev)?;
    let ucfg = svd.unet.config().clone();
    let sites = ucfg.attention_sites()?;
    let acfg = aid_config(opts);
    // The frozen UNet's tensors come from its folder; adapters and DQFormer are created. AID's
    // recipe also trains the UNet's cross-attention (`attn2`: the spatial blocks' and the
    // temporal blocks'), the only way the new context tokens reach frozen features through
    // weights that were trained for them.
    let mut train_sel = vec!["adapters*", "dqformer*"];
    if opts.cross_attention {
        train_sel.push(CROSS_ATTENTION);
    }
    let store = ParamStore::new(opts.seed ^ 0xa1d0, &dev)
        .with_checkpoint("", out.join("unet"))?
        .create(Selection::parse(&["adapters*", "dqformer*"]))
        .trainable(Selection::parse(&train_sel));
    let vb = store.var_builder(DType::F32);
    let unet = UNetSpatioTemporalConditionModel::new(&ucfg, vb.clone())?;
    let aid = AidWeights::new(&acfg, &sites, vb)?;
    drop(svd);
    let loss = edm(opts.aid_p_mean, opts.aid_p_std)?;
    let s = &opts.aid;
    let mut trainer = Trainer::new(store.clone(), &optim(s), s.steps, opts.seed ^ 0xa1d0)?;
    let m = cache.x0.dim(0)?;
    let n = opts.mini.frames;
    let b = s.batch;
    let mut micro = |_k: usize, rng: &mut ChaCha8Rng| -> Result<Tensor> {
        let idx: Vec<usize> = (0..b).map(|_| rng.random_range(0..m)).collect();
        let u: f64 = rng.random();
        let (text, frames) = (u < 0.85, u < 0.95);
        let x0 = rows(&cache.x0, &idx)?;
        let mut c = rows(&cache.cond, &idx)?
            .unsqueeze(2)?
            .repeat((1, 1, n, 1, 1))?;
        let mut e = rows(&cache.embeds, &idx)?; // [B, D]
        if !frames {
            c = c.zeros_like()?;
            e = e.zeros_like()?;
        }
        let mut cond = Conditioning::none();
        cond.concat = Some(c);
        cond.added
            .insert("added_time_ids".into(), time_ids(b, &dev)?);
        if text {
            let t1 = Tensor::cat(
                &idx.iter()
                    .map(|&i| texts[cache.dirs[i]].0.clone())
                    .collect::<Vec<_>>(),
                0,
            )?; // [B, L, D]
            let t2 = Tensor::stack(
                &idx.iter()
                    .map(|&i| texts[cache.dirs[i]].1.clone())
                    .collect::<Vec<_>>(),
                0,
            )?; // [B, S, D]
            let vis = rows(&cache.visual, &idx)?;
            cond.extra.insert("t1".into(), t1);
            cond.extra.insert("t2".into(), t2);
            cond.extra.insert("visual".into(), vis);
        }
        cond.extra.insert("embeds".into(), e);
        let net = |x: &Tensor, cn: &Tensor, cond: &Conditioning| -> Result<Tensor> {
            let e = cond
                .extra
                .get("embeds")
                .ok_or_else(|| Error::invalid("embeds", "missing"))?;
            let bb = e.dim(0)?;
            let d = e.dim(D::Minus1)?;
            let mut cc = cond.clone();
            cc.context = Some(
                match (
                    cond.extra.get("t1"),
                    cond.extra.get("t2"),
                    cond.extra.get("visual"),
                ) {
                    (Some(t1), Some(t2), Some(v)) => {
                        // As AidPipeline::text_context: [image embedding; DQFormer tokens of frame i].
                        let ctx = aid.dqformer.forward(t1, v, t2)?;
                        let per_frame = aid.dqformer.per_frame_contexts(&ctx)?; // [B·N, L1+Nt, D]
                        let img = e
                            .reshape((bb, 1, 1, d))?
                            .broadcast_as((bb, n, 1, d))?
                            .reshape((bb * n, 1, d))?;
                        Tensor::cat(&[&img, &per_frame], 1)?
                    }
                    _ => e.unsqueeze(1)?,
                },
            );
            unet.forward_raw_with_hooks(x, cn, &cc, &aid.adapters)
        };
        let w = cache.weight(&idx, opts.latent_object_weight)?;
        Ok(loss
            .compute_weighted(&net, &x0, &cond, rng, w.as_ref())?
            .loss)
    };
    let log = run_stage(&mut trainer, s.steps, out, "aid", opts.progress, &mut micro)?;
    let mut aid = aid;
    if opts.cross_attention {
        aid.unet = tuned_unet(&store);
    }
    aid.save_as(
        out.join("aid.safetensors"),
        opts.half_weights.then_some(DType::F16),
    )?;
    Ok(summarize(Stage::Aid.name(), &log, &store.report()))
}

/// The parameter counts behind AID's share: the frozen UNet, the adapters, the DQFormer.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ParamShare {
    /// UNet parameters.
    pub unet: usize,
    /// Adapter parameters.
    pub adapters: usize,
    /// DQFormer parameters.
    pub dqformer: usize,
    /// Tuned UNet parameters (the cross-attention layers; part of `unet`).
    pub tuned_unet: usize,
}

impl ParamShare {
    /// Adapters + DQFormer as a fraction of the UNet.
    pub fn share(&self) -> f64 {
        (self.adapters + self.dqformer) as f64 / self.unet.max(1) as f64
    }

    /// Everything AID trains (adapters, DQFormer, tuned UNet layers) as a fraction of the UNet.
    pub fn trained_share(&self) -> f64 {
        (self.adapters + self.dqformer + self.tuned_unet) as f64 / self.unet.max(1) as f64
    }
}

/// Counts a miniature folder's parameters.
///
/// # Errors
/// Unreadable configs or weights.
pub fn param_share(dir: &Path) -> Result<ParamShare> {
    let ucfg: UNetSpatioTemporalConfig =
        vidgen_video_core::loading::read_config(dir.join("unet").join("config.json"))?;
    let sites = ucfg.attention_sites()?;
    let acfg = vidgen_pipelines::aid::read_aid_config(&dir.join("aid.safetensors"))?;
    let adapters = vidgen_adapters::AdapterSet::aid_param_count(&sites, &acfg.adapters)?;
    let (w, _) = AidWeights::load(
        dir.join("aid.safetensors"),
        &sites,
        DType::F32,
        &Device::Cpu,
    )?;
    let total: usize = w.tensors().values().map(|t| t.elem_count()).sum();
    Ok(ParamShare {
        unet: ucfg.param_count()?,
        adapters,
        dqformer: total - adapters,
        tuned_unet: w.unet_param_count(),
    })
}

/// Where stage outputs live.
pub fn default_out() -> PathBuf {
    PathBuf::from("aid-mini-train")
}

/// The I/O error helper, re-exported for the CLI.
pub fn io(path: &Path, e: std::io::Error) -> Error {
    io_err(path, e)
}
