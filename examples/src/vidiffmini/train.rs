//! Training the VIDiff miniature in three stages, the seed's (image → video → video editing)
//! shortened to what the synthetic world needs:
//!
//! 1. **`vae`**: the `AutoencoderKL` on single frames of source and edited clips (L1 + L2 of
//!    a posterior sample, the object's pixels and a one-pixel ring around them weighted
//!    `1 + object_weight`, KL weight 1e-6);
//!    its `scaling_factor` is then one over the standard deviation of the latents.
//! 2. **`image`**: the 2-D SD UNet (InstructPix2Pix's 8 input channels) and the instruction MLP
//!    on frame pairs: one frame of a source clip and the same frame edited, with its
//!    instruction (text, or an empty text and the swatch's CLIP image embedding through the
//!    MLP as one more context token). v-prediction over SD's 1000 scaled-linear steps, the
//!    squared error weighted `1 + latent_object_weight` on the edit's region (the latent pixels
//!    under the object, source or edited, and those the edit changes: a repainted background):
//!    the object is a small part of the frame and an unedited background is copied, so an
//!    unweighted loss spends itself on what is already right.
//!    InstructPix2Pix's conditioning dropout: 5 % text only, 5 % source only, 5 % both (the
//!    unconditional text is `""`; an image instruction's is the MLP of a zero embedding, as the
//!    pipeline's).
//!    The seed's text-to-image pre-training is skipped: every frame the model edits is given to
//!    it as the source, so there is nothing to generate from nothing.
//! 3. **`video`**: the UNet inflated to video (AnimateDiff motion modules after every ResNet
//!    and in the mid block, output projections zero: it starts equal to the image model frame
//!    by frame), its motion modules and cross-attention layers trained on clips, with the same
//!    dropout; in `carried_share` of the
//!    clips the first `overlap` source frames are the edited ones and the instruction gets the
//!    pipeline's overlap prefix, as the iterative long-video mode feeds it.
//!
//! Source latents are the VAE posterior's mode, unscaled (the pipeline's convention); targets
//! the mode times the scaling factor.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_adapters::MultimodalInstruction;
use vidgen_clip_encoders::{CLIPImageProcessor, CLIPVisionModelWithProjection, ImageU8};
use vidgen_diffusion_unet3d::sd::{AutoencoderKL, AutoencoderKLConfig, UNetMotionModel};
use vidgen_pipelines::{PipelineFolder, PromptEncoder};
use vidgen_samplers::training::{add_noise, training_target};
use vidgen_samplers::PredictionType;
use vidgen_trainer::{DiscreteObjective, ParamStore, Selection, Trainer};
use vidgen_video_core::{Conditioning, Error, Result, VideoShape};
use vidgen_video_io::synth::Colour;
use vidgen_video_io::{videos_to_tensor, PixelRange, Video};

use super::folder::{
    mlp_config, specs, unet2d_config, unet_motion_config, vae_config, write_static,
};
use super::{swatch, EditEpisode, Episodes, MiniConfig};
use crate::aidmini::train::randn;
use crate::minis::train::{print_summary, run_stage, stage_optim as optim, summarize};
pub use crate::minis::train::{StageOptions, StageSummary};
use crate::minis::{mkdir, write_json};

/// The pipeline's default overlap prefix (`VidiffCall::overlap_prompt`).
pub const OVERLAP_PROMPT: &str = "Based on the first {n} frames, {prompt}";

/// Every option of a training run (`train.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainOptions {
    /// Master seed.
    pub seed: u64,
    /// Episode geometry and inference defaults.
    pub mini: MiniConfig,
    /// Episodes encoded for the image and video stages.
    pub clips: usize,
    /// Stage 1 (batch in frames).
    pub vae: StageOptions,
    /// Extra loss weight of the object's pixels in the VAE stage.
    pub object_weight: f64,
    /// Stage 2 (batch in frames).
    pub image: StageOptions,
    /// Stage 3 (batch in clips).
    pub video: StageOptions,
    /// Extra loss weight of the edit's region (latent pixels under the object, source or
    /// edited, and those the edit changes) in the image and video stages: the object is ~8 % of
    /// a frame, and an unedited background is copied.
    pub latent_object_weight: f64,
    /// Share of the steps whose micro-batch is image-instructed (swatches).
    pub swatch_share: f64,
    /// Share of the video stage's clips that carry edited frames (the long-video mode).
    pub carried_share: f64,
    /// What the video stage trains (name patterns over `unet.*` and `instruction_mlp.*`):
    /// the motion modules and the cross-attention layers. VIDiff's video stage trains the
    /// temporal layers, its editing stage everything; the cross-attention learns the overlap
    /// prefix of the long-video mode, which the image stage never sees (with the motion modules
    /// alone, clips after the first dropped their edit: 62.5 % vs 83.3 % of 24 long videos).
    pub video_trainable: Vec<String>,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            mini: MiniConfig::default(),
            clips: 2000,
            vae: StageOptions {
                steps: 2000,
                batch: 16,
                lr: 2e-3,
            },
            object_weight: 4.0,
            image: StageOptions {
                steps: 5500,
                batch: 16,
                lr: 1e-3,
            },
            video: StageOptions {
                steps: 1000,
                batch: 2,
                lr: 1e-3,
            },
            latent_object_weight: 4.0,
            swatch_share: 0.25,
            carried_share: 0.3,
            video_trainable: vec!["unet.*motion_modules*".into(), "unet.*attn2*".into()],
            progress: true,
        }
    }
}

/// Which stages to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The VAE.
    Vae,
    /// The 2-D editing UNet and the instruction MLP.
    Image,
    /// The inflated UNet on clips.
    Video,
}

impl Stage {
    /// All, in order.
    pub const ALL: [Stage; 3] = [Stage::Vae, Stage::Image, Stage::Video];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Vae => "vae",
            Stage::Image => "image",
            Stage::Video => "video",
        }
    }

    /// Parses `vae`, `image`, `video`.
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
                supported: "vae, image, video, all".into(),
            })
    }
}

/// Runs `stages` into `out` (the miniature's folder). Writes `train.json`, `mini.json`, the
/// folder's static parts (first time), each stage's weights and `loss-<stage>.{csv,png}`.
///
/// # Errors
/// Configuration, I/O and training errors; a stage whose inputs (earlier stages) are missing.
pub fn train(opts: &TrainOptions, stages: &[Stage], out: &Path) -> Result<Vec<StageSummary>> {
    opts.mini.validate()?;
    mkdir(out)?;
    write_json(&out.join("train.json"), opts)?;
    write_json(&out.join("mini.json"), &opts.mini)?;
    if !out.join("text_encoder").is_dir() || !out.join("instruction_mlp").is_dir() {
        write_static(out, opts.seed)?;
    }
    let mut done = Vec::new();
    for &s in stages {
        let r = match s {
            Stage::Vae => train_vae(opts, out)?,
            Stage::Image => train_editing(opts, out, false)?,
            Stage::Video => train_editing(opts, out, true)?,
        };
        if opts.progress {
            print_summary(&r);
        }
        done.push(r);
    }
    Ok(done)
}

/// Episode streams: training draws from these, evaluations from others.
const STREAM_VAE: u64 = 0x5ae;
const STREAM_CLIPS: u64 = 0xc1d;

fn save_dir(dir: &Path, config: &serde_json::Value, tensors: &[(String, Tensor)]) -> Result<()> {
    mkdir(dir)?;
    let map = tensors.iter().cloned().collect();
    vidgen_trainer::checkpoint::save_tensors(
        &map,
        &dir.join("diffusion_pytorch_model.safetensors"),
    )?;
    write_json(&dir.join("config.json"), config)
}

/// The tensors of `store` under `prefix`, the prefix stripped.
fn under(store: &ParamStore, prefix: &str) -> Vec<(String, Tensor)> {
    store
        .all_tensors()
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix(prefix).map(|s| (s.to_string(), t)))
        .collect()
}

/// Frames as `[B, 3, H, W]` in `[-1, 1]`.
fn frames_tensor(frames: Vec<vidgen_video_io::Frame>, dev: &Device) -> Result<Tensor> {
    let n = frames.len();
    let x = videos_to_tensor(&[Video::new(frames, 8.0)?], PixelRange::MinusOneToOne, dev)?;
    let (f, _) = VideoShape::fold(&x)?; // [N, 3, H, W]
    debug_assert_eq!(f.dim(0)?, n);
    Ok(f)
}

fn train_vae(opts: &TrainOptions, out: &Path) -> Result<StageSummary> {
    let dev = Device::Cpu;
    let eps = Episodes::new(&opts.mini)?;
    let cv = vae_config(&opts.mini, 1.0);
    let cfg: AutoencoderKLConfig =
        serde_json::from_value(cv).map_err(|e| Error::config("vae config", e.to_string()))?;
    let store = ParamStore::new(opts.seed ^ 0x0a5e, &dev)
        .create(Selection::all())
        .trainable(Selection::all());
    let vae = AutoencoderKL::new(&cfg, store.var_builder(DType::F32))?;
    let s = &opts.vae;
    let n = opts.mini.frames;
    let w = opts.object_weight;
    let mut trainer = Trainer::new(store.clone(), &optim(s), s.steps, opts.seed ^ 0x0a5e)?;
    let mut micro = |k: usize, rng: &mut ChaCha8Rng| -> Result<Tensor> {
        let mut frames = Vec::with_capacity(s.batch);
        for b in 0..s.batch {
            let e = eps.episode(opts.seed ^ STREAM_VAE, (k * s.batch + b) as u64, None, n)?;
            let t = rng.random_range(0..n);
            let f = if rng.random::<bool>() {
                &e.source[t]
            } else {
                &e.target[t]
            };
            frames.push(f.clone());
        }
        let x = frames_tensor(frames, &dev)?;
        let post = vae.encode_frames(&x)?;
        let noise = randn(rng, post.mean.dims(), &dev)?;
        let z = (&post.mean + (post.std()? * noise)?)?;
        let rec = vae.decode_frames(&z)?;
        let d = (rec - &x)?;
        let per = (d.abs()? + d.sqr()?)?;
        let mask = crate::minis::train::object_ring_mask(&x)?;
        let obj = per.broadcast_mul(&mask)?.mean_all()?;
        let kl = (((post.mean.sqr()? + post.logvar.exp()?)? - 1.0)? - &post.logvar)?
            .mean_all()?
            .affine(0.5, 0.0)?;
        Ok(((per.mean_all()? + (obj * w)?)? + (kl * 1e-6)?)?)
    };
    let log = run_stage(&mut trainer, s.steps, out, "vae", opts.progress, &mut micro)?;
    // Scaling factor: one over the std of the posterior modes of training frames.
    let mut vals = Vec::new();
    for i in 0..16u64 {
        let e = eps.episode(opts.seed ^ STREAM_VAE, 1_000_000 + i, None, n)?;
        let x = frames_tensor(e.source, &dev)?;
        vals.extend(
            vae.encode_frames(&x)?
                .mode()
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    let mean = vals.iter().map(|&v| v as f64).sum::<f64>() / vals.len() as f64;
    let var = vals.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / vals.len() as f64;
    let sf = 1.0 / var.sqrt().max(1e-6);
    save_dir(
        &out.join("vae"),
        &vae_config(&opts.mini, sf),
        &under(&store, ""),
    )?;
    Ok(summarize(Stage::Vae.name(), &log, &store.report()))
}

/// The frozen encoders' view of the training episodes.
struct Cache {
    /// Source latents, unscaled `[M, 4, T, h, w]`.
    src: Tensor,
    /// Edited latents, scaled `[M, 4, T, h, w]`.
    x0: Tensor,
    /// 1 where the object is (source or edited) at latent resolution `[M, 1, T, h, w]`.
    mask: Tensor,
    /// Instruction per episode.
    text: Vec<String>,
    /// Swatch colour per episode (image instructions).
    swatch: Vec<Option<Colour>>,
    /// The VAE's scaling factor.
    sf: f64,
}

fn load_vae(out: &Path) -> Result<AutoencoderKL> {
    let d = out.join("vae");
    if !d.join("config.json").is_file() {
        return Err(Error::invalid(
            d.display().to_string(),
            "missing: run the vae stage first",
        ));
    }
    Ok(AutoencoderKL::from_pretrained(&d, DType::F32, &Device::Cpu)?.0)
}

fn build_cache(opts: &TrainOptions, out: &Path) -> Result<Cache> {
    let dev = Device::Cpu;
    let vae = load_vae(out)?;
    let sf = vae.config().scaling_factor;
    let eps = Episodes::new(&opts.mini)?;
    let n = opts.mini.frames;
    let (mut srcs, mut tgts, mut text, mut sw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut masks = Vec::new();
    let f = vae.config().spatial_stride();
    let bar = vidgen_trainer::log::progress_bar(opts.clips, 0, opts.progress);
    bar.set_message("encoding the training episodes");
    let chunk = 8;
    let mut i = 0;
    while i < opts.clips {
        let m = chunk.min(opts.clips - i);
        let (mut fs, mut ft) = (Vec::new(), Vec::new());
        for j in 0..m {
            let e: EditEpisode = eps.episode(opts.seed ^ STREAM_CLIPS, (i + j) as u64, None, n)?;
            text.push(e.edit.instruction());
            sw.push(e.edit.swatch());
            masks.push(latent_object_mask(&e.source, &e.target, f, &dev)?);
            fs.extend(e.source);
            ft.extend(e.target);
        }
        let s = vae.encode_frames(&frames_tensor(fs, &dev)?)?.mode().clone();
        let t = vae.encode_frames(&frames_tensor(ft, &dev)?)?.mode().clone();
        srcs.push(VideoShape::unfold(&s, n)?);
        tgts.push((VideoShape::unfold(&t, n)? * sf)?);
        i += m;
        bar.set_position(i as u64);
    }
    bar.finish_and_clear();
    Ok(Cache {
        src: Tensor::cat(&srcs, 0)?,
        x0: Tensor::cat(&tgts, 0)?,
        mask: Tensor::cat(&masks, 0)?,
        text,
        swatch: sw,
        sf,
    })
}

/// Frames `[T, 3, H, W]` in `[0, 1]` as scaled latents `[1, C, T, h, w]` (the posterior's mode
/// times the scaling factor, as the training targets).
///
/// # Errors
/// Another layout.
pub fn encode_scaled(vae: &AutoencoderKL, frames: &Tensor) -> Result<Tensor> {
    let t = frames.dim(0)?;
    let x = ((frames * 2.0)? - 1.0)?;
    let z = (vae.encode_frames(&x)?.mode() * vae.config().scaling_factor)?;
    VideoShape::unfold(&z, t)
}

/// Two pixels differ when a channel differs by more than this (0–255): the world's grain is
/// seeded by the background, so an unedited pixel is equal in both clips.
const CHANGED: i16 = 24;

/// The edit's region: the object's pixels (brightest channel at or above the scorer's
/// threshold) in either clip and the pixels the edit changes (a repainted background), max-pooled
/// by `factor`: `[1, 1, T, H / factor, W / factor]` of 0 / 1.
fn latent_object_mask(
    source: &[vidgen_video_io::Frame],
    target: &[vidgen_video_io::Frame],
    factor: usize,
    dev: &Device,
) -> Result<Tensor> {
    let t = source.len();
    let (w, h) = match source.first() {
        Some(f) => (f.width() as usize, f.height() as usize),
        None => return Err(Error::invalid("episode", "no frames")),
    };
    let (lw, lh) = (w / factor, h / factor);
    let mut m = vec![0f32; t * lh * lw];
    for (k, (a, b)) in source.iter().zip(target).enumerate() {
        let (ma, mb) = (
            crate::minis::score::object_mask(a),
            crate::minis::score::object_mask(b),
        );
        let changed = a
            .data()
            .chunks_exact(3)
            .zip(b.data().chunks_exact(3))
            .map(|(p, q)| (0..3).any(|c| (i16::from(p[c]) - i16::from(q[c])).abs() > CHANGED));
        let region = ma
            .iter()
            .zip(&mb)
            .zip(changed)
            .map(|((&x, &y), z)| x || y || z);
        for (i, on) in region.enumerate() {
            if on {
                let (x, y) = ((i % w) / factor, (i / w) / factor);
                if x < lw && y < lh {
                    m[(k * lh + y) * lw + x] = 1.0;
                }
            }
        }
    }
    Ok(Tensor::from_vec(m, (1, 1, t, lh, lw), dev)?)
}

/// Rows `idx` of `t` (dim 0).
fn rows(t: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let n = ids.len();
    Ok(t.index_select(&Tensor::from_vec(ids, n, t.device())?, 0)?)
}

/// The CLIP image embedding of each colour's swatch, as the pipeline computes it.
fn swatch_embeds(out: &Path, mini: &MiniConfig) -> Result<HashMap<Colour, Tensor>> {
    let dev = Device::Cpu;
    let (enc, _) = CLIPVisionModelWithProjection::from_pretrained(
        out.join("image_encoder"),
        DType::F32,
        &dev,
    )?;
    let proc = CLIPImageProcessor::from_dir(out.join("feature_extractor"))?;
    let mut m = HashMap::new();
    for c in mini.colour_list()? {
        let f = swatch(c, mini.size)?;
        let px = proc.preprocess(
            &[ImageU8::rgb(
                f.data(),
                mini.size as usize,
                mini.size as usize,
            )],
            &dev,
        )?;
        let e = enc
            .forward(&px)?
            .image_embeds
            .ok_or_else(|| Error::invalid("image_encoder", "returned no image_embeds"))?;
        m.insert(c, e); // [1, P]
    }
    Ok(m)
}

/// Text contexts, encoded once per string by the pipeline's own prompt encoder.
struct Texts {
    enc: PromptEncoder,
    memo: HashMap<String, Tensor>,
}

impl Texts {
    fn get(&mut self, s: &str) -> Result<Tensor> {
        if let Some(t) = self.memo.get(s) {
            return Ok(t.clone());
        }
        let t = self.enc.encode(s)?; // [1, S, D]
        self.memo.insert(s.to_string(), t.clone());
        Ok(t)
    }
}

fn train_editing(opts: &TrainOptions, out: &Path, video: bool) -> Result<StageSummary> {
    let dev = Device::Cpu;
    let stage = if video { Stage::Video } else { Stage::Image };
    let cache = build_cache(opts, out)?;
    let folder = PipelineFolder::open(out)?;
    let (enc, _) = PromptEncoder::from_folder(&folder, DType::F32, &dev)?;
    let mut texts = Texts {
        enc,
        memo: HashMap::new(),
    };
    let embeds = swatch_embeds(out, &opts.mini)?;
    let (image_spec, video_spec) = specs(&opts.mini)?;
    let seed = opts.seed ^ if video { 0x71de } else { 0x1a6e };
    let mut store = ParamStore::new(seed, &dev);
    if video {
        let u2 = out.join("unet2d");
        if !u2.join("config.json").is_file() {
            return Err(Error::invalid(
                u2.display().to_string(),
                "missing: run the image stage first",
            ));
        }
        store = store
            .with_checkpoint("unet.", &u2)?
            .with_checkpoint("instruction_mlp.", out.join("instruction_mlp"))?
            .create(Selection::parse(&["unet.*motion_modules*"]));
    } else {
        store = store.create(Selection::all());
    }
    let store = if video {
        let pats: Vec<&str> = opts.video_trainable.iter().map(String::as_str).collect();
        store.trainable(Selection::parse(&pats))
    } else {
        store.trainable(Selection::all())
    };
    let vb = store.var_builder(DType::F32);
    let spec = if video { &video_spec } else { &image_spec };
    let unet = UNetMotionModel::new(spec, vb.pp("unet"), vb.pp("unet"))?;
    let mlp = MultimodalInstruction::new(&mlp_config(), vb.pp("instruction_mlp"))?;
    if video {
        // New motion modules start as the identity: the video UNet is the image UNet per frame.
        store.zero_created(&Selection::parse(&["unet.*motion_modules*.proj_out.*"]))?;
    }
    let s = if video { &opts.video } else { &opts.image };
    let sched = DiscreteObjective {
        prediction: PredictionType::VPrediction,
        ..DiscreteObjective::stable_diffusion()
    }
    .schedule()?;
    let mut trainer = Trainer::new(store.clone(), &optim(s), s.steps, seed)?;
    let m = cache.x0.dim(0)?;
    let n = opts.mini.frames;
    let ov = opts.mini.overlap;
    let text_eps: Vec<usize> = (0..m).filter(|&i| cache.swatch[i].is_none()).collect();
    let swatch_eps: Vec<usize> = (0..m).filter(|&i| cache.swatch[i].is_some()).collect();
    if text_eps.is_empty() || swatch_eps.is_empty() {
        return Err(Error::config(
            "clips",
            "too few episodes to draw both text and image instructions",
        ));
    }
    let empty = texts.get("")?;
    let pdim = embeds
        .values()
        .next()
        .map(|e| e.dim(1))
        .transpose()?
        .unwrap_or(0);
    let net = |x: &Tensor, c: &Tensor, cond: &Conditioning| -> Result<Tensor> {
        let src = cond
            .concat
            .as_ref()
            .ok_or_else(|| Error::invalid("cond.concat", "no source latents"))?;
        let ctx = cond
            .context
            .as_ref()
            .ok_or_else(|| Error::invalid("cond.context", "no instruction"))?;
        unet.forward(&Tensor::cat(&[x, src], 1)?, c, ctx)
    };
    let mut micro = |_k: usize, rng: &mut ChaCha8Rng| -> Result<Tensor> {
        let image_ins = rng.random::<f64>() < opts.swatch_share;
        let pool = if image_ins { &swatch_eps } else { &text_eps };
        let idx: Vec<usize> = (0..s.batch)
            .map(|_| pool[rng.random_range(0..pool.len())])
            .collect();
        // InstructPix2Pix's dropout: 5 % text, 5 % source, 5 % both.
        let drops: Vec<(bool, bool)> = (0..s.batch)
            .map(|_| {
                let u: f64 = rng.random();
                (
                    u < 0.05 || (0.10..0.15).contains(&u),
                    (0.05..0.15).contains(&u),
                )
            })
            .collect();
        let carried: Vec<bool> = (0..s.batch)
            .map(|_| video && rng.random::<f64>() < opts.carried_share)
            .collect();
        let (x0, src, mask) = if video {
            (
                rows(&cache.x0, &idx)?,
                rows(&cache.src, &idx)?,
                rows(&cache.mask, &idx)?,
            )
        } else {
            // One frame per sample: [B, 4, 1, h, w].
            let (mut xs, mut ss, mut ms) = (Vec::new(), Vec::new(), Vec::new());
            for &i in &idx {
                let t = rng.random_range(0..n);
                xs.push(cache.x0.i((i..i + 1, .., t..t + 1))?);
                ss.push(cache.src.i((i..i + 1, .., t..t + 1))?);
                ms.push(cache.mask.i((i..i + 1, .., t..t + 1))?);
            }
            (
                Tensor::cat(&xs, 0)?,
                Tensor::cat(&ss, 0)?,
                Tensor::cat(&ms, 0)?,
            )
        };
        // Carried frames: the first `ov` source frames are the edited ones (unscaled).
        let src = if carried.iter().any(|&c| c) {
            let mut parts = Vec::with_capacity(s.batch);
            for (b, &c) in carried.iter().enumerate() {
                let row = src.i(b..b + 1)?;
                parts.push(if c {
                    let edited = (x0.i((b..b + 1, .., 0..ov))? / cache.sf)?;
                    Tensor::cat(&[&edited, &row.i((.., .., ov..))?], 2)?
                } else {
                    row
                });
            }
            Tensor::cat(&parts, 0)?
        } else {
            src
        };
        let keep_src: Vec<f32> = drops.iter().map(|d| if d.1 { 0.0 } else { 1.0 }).collect();
        let mut shape = vec![1usize; 5];
        shape[0] = s.batch;
        let src = src.broadcast_mul(&Tensor::from_vec(keep_src, shape, &dev)?)?;
        // Instruction contexts.
        let mut ctx_rows = Vec::with_capacity(s.batch);
        for (b, &i) in idx.iter().enumerate() {
            let t = if drops[b].0 {
                String::new()
            } else if carried[b] {
                OVERLAP_PROMPT
                    .replace("{n}", &ov.to_string())
                    .replace("{prompt}", &cache.text[i])
            } else {
                cache.text[i].clone()
            };
            ctx_rows.push(if t.is_empty() {
                empty.clone()
            } else {
                texts.get(&t)?
            });
        }
        let mut ctx = Tensor::cat(&ctx_rows, 0)?;
        if image_ins {
            let mut e = Vec::with_capacity(s.batch);
            for (b, &i) in idx.iter().enumerate() {
                let c = cache.swatch[i].ok_or_else(|| Error::invalid("swatch", "missing"))?;
                let emb = embeds
                    .get(&c)
                    .ok_or_else(|| Error::invalid("swatch", "no embedding"))?;
                e.push(if drops[b].0 {
                    Tensor::zeros((1, pdim), DType::F32, &dev)?
                } else {
                    emb.clone()
                });
            }
            let e = Tensor::cat(&e, 0)?.unsqueeze(1)?; // [B, 1, P]
            ctx = mlp.forward(&ctx, &e, None)?;
        }
        let cond = Conditioning::none().with_context(ctx).with_concat(src);
        // v-prediction over SD's schedule (the trainer's discrete objective), the squared error
        // weighted up under the object.
        let ts: Vec<usize> = (0..s.batch).map(|_| rng.random_range(0..1000)).collect();
        let noise = randn(rng, x0.dims(), &dev)?;
        let x_t = add_noise(&sched, &x0, &noise, &ts)?;
        let tt: Vec<f32> = ts.iter().map(|&t| t as f32).collect();
        let pred = net(&x_t, &Tensor::from_vec(tt, s.batch, &dev)?, &cond)?;
        let target = training_target(PredictionType::VPrediction, &sched, &x0, &noise, &ts)?;
        let w = ((mask * opts.latent_object_weight)? + 1.0)?;
        let se = (pred - target)?.sqr()?.broadcast_mul(&w)?;
        Ok((se.mean_all()? / w.mean_all()?.to_scalar::<f32>()? as f64)?)
    };
    let log = run_stage(
        &mut trainer,
        s.steps,
        out,
        stage.name(),
        opts.progress,
        &mut micro,
    )?;
    let unet_tensors = under(&store, "unet.");
    if video {
        save_dir(
            &out.join("unet"),
            &unet_motion_config(&opts.mini)?,
            &unet_tensors,
        )?;
    } else {
        save_dir(
            &out.join("unet2d"),
            &unet2d_config(&opts.mini),
            &unet_tensors,
        )?;
    }
    let mlp_dir = out.join("instruction_mlp");
    mkdir(&mlp_dir)?;
    let map = under(&store, "instruction_mlp.").into_iter().collect();
    vidgen_trainer::checkpoint::save_tensors(
        &map,
        &mlp_dir.join("diffusion_pytorch_model.safetensors"),
    )?;
    write_json(&mlp_dir.join("config.json"), &mlp_config())?;
    Ok(summarize(stage.name(), &log, &store.report()))
}

/// The default output folder of `vidgen edit train`.
pub fn default_out() -> std::path::PathBuf {
    std::path::PathBuf::from("vidiff-mini-train")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::vidiffmini::EditKind;

    /// The weighted region is where the edit happens: around the object for colour and shape
    /// edits, (almost) the whole frame when the background is repainted.
    #[test]
    fn the_weighted_region_is_the_edits() {
        let cfg = MiniConfig::default();
        let eps = Episodes::new(&cfg).unwrap();
        let share = |kind: EditKind| {
            let mut s = 0f32;
            for i in 0..8 {
                let e = eps.episode(5, i, Some(kind), cfg.frames).unwrap();
                let m = latent_object_mask(&e.source, &e.target, 2, &Device::Cpu).unwrap();
                assert_eq!(m.dims(), &[1, 1, cfg.frames, 16, 16]);
                s += m.mean_all().unwrap().to_scalar::<f32>().unwrap();
            }
            s / 8.0
        };
        let (colour, shape, bg) = (
            share(EditKind::Colour),
            share(EditKind::Shape),
            share(EditKind::Background),
        );
        assert!(colour > 0.05 && colour < 0.3, "colour edit region {colour}");
        assert!(
            shape >= colour * 0.9 && shape < 0.4,
            "shape edit region {shape}"
        );
        assert!(bg > 0.8, "background edit region {bg}");
    }
}
