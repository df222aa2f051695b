//! VIMI's two training stages (after the example encoder's stage 0), on `vidgen-trainer`
//! (seeded [`ParamStore`], AdamW with warm-up and cosine decay, gradient clipping, `loss.csv` /
//! `loss.png`), with the discrete objective of the model's scheduler (x₀-prediction for the
//! miniature), for the miniature's world.
//!
//! 0. **The example encoder** (VIMI conditions on a pretrained CLIP image encoder; the
//!    miniature pre-trains its small CLIP vision tower first, CLIP-style against the frozen
//!    MiniLM embeddings of subject captions, with a position head so that a clip's frames
//!    carry its motion; see `run_stage0`), then frozen.
//! 1. **Retrieval-augmented pre-training.** A corpus of captioned clips is indexed
//!    ([`RetrievalIndex`]: BM25 over the captions, pixel embeddings for near-duplicates); the
//!    dataset ([`build_manifest`]) gives every clip the `k` examples its caption retrieves, the
//!    clip itself and its near-duplicates excluded. A step trains on clips with their
//!    retrieved examples' stills. The caption the model sees loses its colour and / or shape
//!    words with probability `p_ablate` (the retrieval used the whole caption), so the model
//!    must read the appearance off the examples: that is what retrieval augmentation is for.
//! 2. **Multimodal instruction fine-tuning**, one task per step, drawn uniformly:
//!    - *text-to-video*: the full caption, with the retrieved examples half of the time;
//!    - *text + subject image → video*: a still of the same object elsewhere, and a caption
//!      that mostly leaves the appearance open (`a shape moving left`);
//!    - *text + example clip → video with its motion*: a clip of another object moving in the
//!      target's direction, and a caption naming only the subject (`a blue triangle`).
//!
//! The denoising loss weights the object's pixels (and a one-pixel ring) up by
//! [`TrainOptions::object_weight`]: on a flat background most pixels are trivially
//! predictable, and an unweighted loss learned the background long before the object.
//!
//! In both stages a step drops all its examples with probability `p_drop_examples`, and each
//! prompt becomes the empty prompt with probability `p_drop_text` (guidance, see
//! [`crate::vimi::conditioning`]). Every random draw comes from the run's seed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use vidgen_adapters::retrieval::{IndexItem, RetrievalIndex};
use vidgen_samplers::{add_noise, training_target, PredictionType, VpSchedule};
use vidgen_trainer::log::{plot_loss, progress_bar, CsvLog, LogRow};
use vidgen_trainer::{DiscreteObjective, LrDecay, OptimConfig, ParamStore, Selection, Trainer};
use vidgen_video_core::{check_finite, Error, Result};
use vidgen_video_io::synth::{Colour, Direction, Shape};
use vidgen_video_io::{videos_to_tensor, PixelRange, Video};
use vidgen_video_nn::Linear;

use super::dataset::{build_manifest, write_manifest, DatasetOptions, ManifestRow};
use super::index::{add_pixel_space, TextRetrieval};
use super::model::{VimiConfig, VimiModel};
use super::text::SentenceStates;
use super::world::{CaptionStyle, MiniWorld, Scene};

/// Every option of a training run (written to `train.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainOptions {
    /// Master seed (corpus, initialisation, batches, noise).
    pub seed: u64,
    /// Clips in the stage-1 corpus.
    pub corpus: usize,
    /// Optimiser steps of stage 1.
    pub stage1_steps: usize,
    /// Optimiser steps of stage 2.
    pub stage2_steps: usize,
    /// Clips per step.
    pub batch: usize,
    /// Peak learning rate (stage 2 uses half).
    pub lr: f64,
    /// Warm-up steps of each stage.
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Retrieved examples per clip.
    pub k: usize,
    /// Probability that a step has no examples.
    pub p_drop_examples: f64,
    /// Probability that a prompt is replaced by the empty prompt.
    pub p_drop_text: f64,
    /// Stage 1: probability that the caption the model sees loses appearance words.
    pub p_ablate: f64,
    /// Near-duplicate threshold (pixel-embedding cosine) of the dataset's retrieval.
    pub dedup: f32,
    /// Store the final weights in f16 (halves the asset).
    pub half: bool,
    /// Steps of stage 0, the example encoder's CLIP-style pre-training (0: none; the
    /// vision tower then trains with the denoiser, as before).
    pub stage0_steps: usize,
    /// Images per stage-0 step.
    pub stage0_batch: usize,
    /// Extra weight of the object's pixels (and a one-pixel ring around them) in the
    /// denoising loss: `w = 1 + object_weight` there, 1 elsewhere (0: plain MSE).
    pub object_weight: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            corpus: 2000,
            stage1_steps: 7000,
            stage2_steps: 2000,
            batch: 32,
            lr: 1e-3,
            warmup: 100,
            weight_decay: 0.01,
            k: 2,
            p_drop_examples: 0.15,
            p_drop_text: 0.1,
            p_ablate: 0.75,
            dedup: 0.98,
            half: true,
            stage0_steps: 600,
            stage0_batch: 128,
            object_weight: 4.0,
        }
    }
}

/// A captioned corpus of the world with its index (BM25 + `pixels`; `text` too when a sentence
/// encoder is given).
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The scenes, row `i` is index item `i`.
    pub scenes: Vec<Scene>,
    /// The index (captions in the [`CaptionStyle::Full`] style).
    pub index: RetrievalIndex,
}

/// The labels recorded with a scene.
pub fn scene_labels(s: &Scene) -> serde_json::Value {
    serde_json::json!({
        "colour": s.colour.name(),
        "rgb": s.colour.rgb(),
        "shape": s.shape.name(),
        "direction": s.direction.name(),
        "delta": s.direction.delta(),
        "start": [s.start.0, s.start.1],
    })
}

/// Draws `n` scenes from `seed` and indexes them (ids `{prefix}{i}`, media
/// `clips/{prefix}{i}.gif`).
///
/// # Errors
/// World or index errors.
pub fn make_corpus(
    world: &MiniWorld,
    n: usize,
    seed: u64,
    prefix: &str,
    states: Option<&SentenceStates>,
) -> Result<Corpus> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scenes = (0..n)
        .map(|_| world.scene(&mut rng, None, None, None))
        .collect::<Result<Vec<_>>>()?;
    let items = scenes
        .iter()
        .enumerate()
        .map(|(i, s)| IndexItem {
            id: format!("{prefix}{i}"),
            caption: s.caption(CaptionStyle::Full),
            media: Some(format!("clips/{prefix}{i}.gif")),
            labels: scene_labels(s),
        })
        .collect();
    let mut index = RetrievalIndex::new(items)?;
    let stills = scenes
        .iter()
        .map(|s| world.still(s))
        .collect::<Result<Vec<_>>>()?;
    add_pixel_space(&mut index, &stills)?;
    if let Some(st) = states {
        super::index::add_text_space(&mut index, st)?;
    }
    Ok(Corpus { scenes, index })
}

/// The objective matching the model's sampler config.
///
/// # Errors
/// A sampler config that does not parse.
pub fn objective(cfg: &VimiConfig) -> Result<DiscreteObjective> {
    let s = cfg.scheduler_config()?;
    Ok(DiscreteObjective {
        beta_schedule: s.beta_schedule,
        beta_start: s.beta_start,
        beta_end: s.beta_end,
        num_train_timesteps: s.num_train_timesteps,
        rescale_zero_snr: s.rescale_betas_zero_snr,
        prediction: s.prediction_type,
    })
}

/// What a stage did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    /// 1 or 2.
    pub stage: usize,
    /// Steps run.
    pub steps: usize,
    /// Wall seconds.
    pub seconds: f64,
    /// Mean loss of the first and the last 50 steps.
    pub loss_start: f32,
    /// See `loss_start`.
    pub loss_end: f32,
    /// Trainable parameters.
    pub params: usize,
    /// Steps per task (stage 2: text-to-video, subject, motion; stage 1: with / without
    /// examples).
    pub tasks: Vec<(String, usize)>,
    /// Stage 0: what the held-out probe of the example encoder measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<serde_json::Value>,
}

/// A training batch: targets, prompts, example pixels.
struct Batch {
    x0: Tensor,
    texts: Vec<String>,
    examples: Option<Tensor>,
}

fn videos_tensor(v: &[Video]) -> Result<Tensor> {
    videos_to_tensor(v, PixelRange::MinusOneToOne, &Device::Cpu)
}

/// `[B, k, F, 3, s, s]` from `B·k` example clips of `F` frames.
fn example_tensor(ex: &[Video], b: usize, k: usize) -> Result<Tensor> {
    let t = videos_tensor(ex)?; // [B·k, 3, F, s, s]
    let (_, c, f, h, w) = t.dims5()?;
    Ok(t.reshape((b, k, c, f, h, w))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?)
}

fn ablated(s: &Scene, p: f64, rng: &mut ChaCha8Rng) -> String {
    if rng.random::<f64>() < p {
        let style = [
            CaptionStyle::Ambiguous,
            CaptionStyle::ShapeOnly,
            CaptionStyle::ColourOnly,
        ][rng.random_range(0..3)];
        s.caption(style)
    } else {
        s.caption(CaptionStyle::Full)
    }
}

fn drop_text(texts: &mut [String], p: f64, rng: &mut ChaCha8Rng) {
    for t in texts.iter_mut() {
        if rng.random::<f64>() < p {
            t.clear();
        }
    }
}

/// A still as a one-frame video.
fn still(world: &MiniWorld, s: &Scene) -> Result<Video> {
    Video::new(vec![world.still(s)?], world.spec().fps)
}

struct Stage1Data<'a> {
    world: &'a MiniWorld,
    corpus: &'a Corpus,
    rows: &'a [ManifestRow],
}

fn stage1_batch(
    d: &Stage1Data<'_>,
    o: &TrainOptions,
    rng: &mut ChaCha8Rng,
) -> Result<(Batch, bool)> {
    let with_examples = o.k > 0 && rng.random::<f64>() >= o.p_drop_examples;
    let mut clips = Vec::with_capacity(o.batch);
    let mut texts = Vec::with_capacity(o.batch);
    let mut ex = Vec::new();
    while clips.len() < o.batch {
        let r = rng.random_range(0..d.rows.len());
        let row = &d.rows[r];
        if with_examples && row.examples.len() < o.k {
            continue;
        }
        let s = &d.corpus.scenes[r];
        clips.push(d.world.clip(s)?);
        texts.push(ablated(s, o.p_ablate, rng));
        if with_examples {
            for e in row.examples.iter().take(o.k) {
                ex.push(still(d.world, &d.corpus.scenes[e.item])?);
            }
        }
    }
    drop_text(&mut texts, o.p_drop_text, rng);
    let examples = if with_examples {
        Some(example_tensor(&ex, o.batch, o.k)?)
    } else {
        None
    };
    Ok((
        Batch {
            x0: videos_tensor(&clips)?,
            texts,
            examples,
        },
        with_examples,
    ))
}

/// Stage-2 tasks.
const TASKS: [&str; 3] = ["text-to-video", "subject", "motion"];

fn other_appearance(world: &MiniWorld, s: &Scene, rng: &mut ChaCha8Rng) -> (Shape, Colour) {
    let shapes: Vec<Shape> = world
        .shapes()
        .iter()
        .copied()
        .filter(|&x| x != s.shape)
        .collect();
    let colours: Vec<Colour> = world
        .colours()
        .iter()
        .copied()
        .filter(|&x| x != s.colour)
        .collect();
    (
        if shapes.is_empty() {
            s.shape
        } else {
            shapes[rng.random_range(0..shapes.len())]
        },
        if colours.is_empty() {
            s.colour
        } else {
            colours[rng.random_range(0..colours.len())]
        },
    )
}

fn stage2_batch(
    d: &Stage1Data<'_>,
    o: &TrainOptions,
    task: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Batch> {
    let w = d.world;
    let with_examples = rng.random::<f64>() >= o.p_drop_examples;
    let mut clips = Vec::with_capacity(o.batch);
    let mut texts = Vec::with_capacity(o.batch);
    let mut ex = Vec::new();
    let mut k = 1;
    match task {
        0 => {
            // text-to-video, with the retrieved examples half of the time
            let retrieved = with_examples && o.k > 0 && rng.random::<bool>();
            k = o.k;
            while clips.len() < o.batch {
                let r = rng.random_range(0..d.rows.len());
                if retrieved && d.rows[r].examples.len() < o.k {
                    continue;
                }
                let s = &d.corpus.scenes[r];
                clips.push(w.clip(s)?);
                texts.push(s.caption(CaptionStyle::Full));
                if retrieved {
                    for e in d.rows[r].examples.iter().take(o.k) {
                        ex.push(still(w, &d.corpus.scenes[e.item])?);
                    }
                }
            }
        }
        1 => {
            // subject: a still of the same object elsewhere; appearance mostly left open
            for _ in 0..o.batch {
                let s = w.scene(rng, None, None, None)?;
                let subject = w.scene(rng, Some(s.shape), Some(s.colour), None)?;
                clips.push(w.clip(&s)?);
                let u: f64 = rng.random();
                let style = if u < 0.7 {
                    CaptionStyle::Ambiguous
                } else if u < 0.8 {
                    CaptionStyle::Full
                } else if u < 0.9 {
                    CaptionStyle::ShapeOnly
                } else {
                    CaptionStyle::ColourOnly
                };
                texts.push(s.caption(style));
                ex.push(still(w, &subject)?);
            }
        }
        _ => {
            // motion: another object's clip moving the target's way; the subject named
            for _ in 0..o.batch {
                let s = w.scene(rng, None, None, None)?;
                let (shape, colour) = other_appearance(w, &s, rng);
                let demo = w.scene(rng, Some(shape), Some(colour), Some(s.direction))?;
                clips.push(w.clip(&s)?);
                let style = if rng.random::<f64>() < 0.8 {
                    CaptionStyle::Subject
                } else {
                    CaptionStyle::Nothing
                };
                texts.push(s.caption(style));
                ex.push(w.clip(&demo)?);
            }
        }
    }
    drop_text(&mut texts, o.p_drop_text, rng);
    let examples = if with_examples && !ex.is_empty() {
        Some(example_tensor(&ex, o.batch, k)?)
    } else {
        None
    };
    Ok(Batch {
        x0: videos_tensor(&clips)?,
        texts,
        examples,
    })
}

/// Every stage's optimiser: AdamW at peak `lr` after `warmup` steps, cosine decay, gradients
/// clipped at norm 1.
fn adamw_cosine(lr: f64, warmup: usize, weight_decay: f64) -> OptimConfig {
    OptimConfig {
        lr,
        warmup,
        decay: LrDecay::Cosine,
        grad_clip: Some(1.0),
        adamw: vidgen_trainer::AdamWConfig {
            weight_decay,
            ..Default::default()
        },
        ..OptimConfig::default()
    }
}

/// The denoising loss of a stage: discrete-timestep v / ε / x₀ regression, with the object's
/// pixels weighted up (see [`TrainOptions::object_weight`]).
struct DenoiseLoss {
    schedule: VpSchedule,
    prediction: PredictionType,
    object_weight: f64,
    background: [u8; 3],
}

impl DenoiseLoss {
    fn new(cfg: &VimiConfig, o: &TrainOptions) -> Result<Self> {
        let d = objective(cfg)?;
        if !(o.object_weight.is_finite() && o.object_weight >= 0.0) {
            return Err(Error::config(
                "object_weight",
                format!("{} must be finite and ≥ 0", o.object_weight),
            ));
        }
        if d.num_train_timesteps == 0 {
            return Err(Error::config("num_train_timesteps", "must be ≥ 1"));
        }
        Ok(Self {
            schedule: d.schedule()?,
            prediction: d.prediction,
            object_weight: o.object_weight,
            background: cfg.world.background,
        })
    }
}

/// The object's pixels of clean clips `x0` (`[B, 3, T, H, W]` in `[-1, 1]`: a channel farther
/// than 0.1 from the world's flat background) dilated by one pixel: `[B, 1, T, H, W]` of 0 / 1.
/// The ring just outside the outline is what tells the shapes apart (a square's corners).
pub fn object_mask(x0: &Tensor, background: [u8; 3]) -> Result<Tensor> {
    let (b, _, t, h, w) = x0.dims5()?;
    let bg: Vec<f32> = background
        .iter()
        .map(|v| f32::from(*v) / 127.5 - 1.0)
        .collect();
    let bg = Tensor::from_vec(bg, (1, 3, 1, 1, 1), x0.device())?;
    let m = x0
        .to_dtype(DType::F32)?
        .broadcast_sub(&bg)?
        .abs()?
        .max_keepdim(1)?
        .gt(0.1)?
        .to_dtype(DType::F32)?
        .reshape((b * t, 1, h, w))?;
    let m = m
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .max_pool2d_with_stride((3, 3), (1, 1))?;
    Ok(m.reshape((b, 1, t, h, w))?)
}

fn batch_loss(
    model: &VimiModel,
    states: &SentenceStates,
    loss: &DenoiseLoss,
    b: &Batch,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let refs: Vec<&str> = b.texts.iter().map(String::as_str).collect();
    let text = states.states(&refs)?;
    let e = match &b.examples {
        Some(px) => Some(model.embed_examples(px)?),
        None => None,
    };
    let ctx = model.conditioner.context(&text, e.as_ref())?;
    let x0 = b.x0.to_dtype(DType::F32)?;
    let n = x0.dim(0)?;
    let ts: Vec<usize> = (0..n)
        .map(|_| rng.random_range(0..loss.schedule.len()))
        .collect();
    let noise: Vec<f32> = (0..x0.elem_count())
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    let noise = Tensor::from_vec(noise, x0.dims(), x0.device())?;
    let x_t = add_noise(&loss.schedule, &x0, &noise, &ts)?;
    let tt: Vec<f32> = ts.iter().map(|t| *t as f32).collect();
    let pred = model
        .dit
        .forward(&x_t, &Tensor::from_vec(tt, n, x0.device())?, &ctx)?;
    let target = training_target(loss.prediction, &loss.schedule, &x0, &noise, &ts)?;
    let mut err = (pred.to_dtype(DType::F32)? - target)?.sqr()?;
    if loss.prediction == PredictionType::Sample {
        // x₀-prediction: weight min(1 + SNR, 5) per sample (the v-loss's 1 + SNR, capped as
        // min-SNR weighting caps it), so low and middle noise levels are not drowned by the
        // irreducible error at high noise.
        let w: Vec<f32> = ts
            .iter()
            .map(|&t| {
                let a = f64::from(loss.schedule.alphas_cumprod[t]);
                (1.0 + a / (1.0 - a).max(1e-8)).min(5.0) as f32
            })
            .collect();
        let mut shape = vec![1usize; x0.rank()];
        shape[0] = n;
        err = err.broadcast_mul(&Tensor::from_vec(w, shape, x0.device())?)?;
    }
    let l = if loss.object_weight > 0.0 {
        // w = 1 + λ·mask, normalised so that the loss stays on the plain MSE's scale
        let w = ((object_mask(&x0, loss.background)? * loss.object_weight)? + 1.0)?;
        let wsum = (w.sum_all()? * (x0.dim(1)? as f64))?;
        err.broadcast_mul(&w)?.sum_all()?.div(&wsum)?
    } else {
        err.mean_all()?
    };
    check_finite(&l, "VIMI training loss")?;
    Ok(l)
}

fn mean(rows: &[LogRow]) -> f32 {
    if rows.is_empty() {
        return f32::NAN;
    }
    rows.iter().map(|r| r.loss).sum::<f32>() / rows.len() as f32
}

/// Runs one stage and writes `dir/{config.json, model.safetensors, loss.csv, loss.png}` (f32).
#[allow(clippy::too_many_arguments)]
fn run_stage(
    stage: usize,
    cfg: &VimiConfig,
    store: ParamStore,
    states: &SentenceStates,
    data: &Stage1Data<'_>,
    o: &TrainOptions,
    dir: &Path,
    progress: bool,
) -> Result<(StageReport, ParamStore)> {
    let steps = if stage == 1 {
        o.stage1_steps
    } else {
        o.stage2_steps
    };
    let model = VimiModel::new(cfg, store.var_builder(DType::F32))?;
    let params = store.report().trainable;
    let lr = if stage == 1 { o.lr } else { o.lr * 0.5 };
    let optim = adamw_cosine(lr, o.warmup.min(steps / 4), o.weight_decay);
    let mut trainer = Trainer::new(store.clone(), &optim, steps, o.seed ^ (stage as u64 * 0x51))?;
    let loss = DenoiseLoss::new(cfg, o)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut csv = CsvLog::open(&dir.join("loss.csv"), None)?;
    let mut data_rng = ChaCha8Rng::seed_from_u64(o.seed.wrapping_add(1000 * stage as u64));
    let bar = progress_bar(steps, 0, progress);
    let mut tasks = if stage == 1 {
        vec![
            ("with examples".to_string(), 0),
            ("no examples".to_string(), 0),
        ]
    } else {
        TASKS.iter().map(|t| (t.to_string(), 0)).collect()
    };
    let t0 = Instant::now();
    for _ in 0..steps {
        let batch = if stage == 1 {
            let (b, with) = stage1_batch(data, o, &mut data_rng)?;
            tasks[usize::from(!with)].1 += 1;
            b
        } else {
            let task = data_rng.random_range(0..TASKS.len());
            tasks[task].1 += 1;
            stage2_batch(data, o, task, &mut data_rng)?
        };
        let stats = trainer.step(&mut |_, rng| batch_loss(&model, states, &loss, &batch, rng))?;
        csv.push((&stats).into())?;
        bar.set_message(format!("stage {stage} loss {:.4}", stats.loss));
        bar.set_position(stats.step as u64);
    }
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    let rows = csv.rows().to_vec();
    if !rows.is_empty() {
        plot_loss(
            &rows,
            &dir.join("loss.png"),
            &format!("VIMI-mini stage {stage}"),
            800,
            480,
        )?;
    }
    VimiModel::save_tensors(cfg, &store.all_tensors(), DType::F32, dir)?;
    let n = rows.len();
    Ok((
        StageReport {
            stage,
            steps,
            seconds,
            loss_start: mean(&rows[..n.min(50)]),
            loss_end: mean(&rows[n.saturating_sub(50)..]),
            params,
            tasks,
            probe: None,
        },
        store,
    ))
}

/// Stage 0: the example encoder's CLIP-style pre-training, standing in for the pretrained
/// CLIP image encoder that VIMI conditions on. Stills of the world (any object, any frame of
/// any clip) are matched against the frozen MiniLM embeddings of their subject captions
/// (`a blue triangle`, through a learned projection `aux.text_proj`) by CLIP's symmetric
/// contrastive loss (soft targets: every in-batch image of the same subject is a positive),
/// and a linear head `aux.position` regresses the object's centre from the same embedding,
/// so that a clip's per-frame embeddings carry its motion. Writes `dir/{config.json,
/// model.safetensors}` with the `vision.*` tensors only (the `aux.*` heads are dropped),
/// `loss.csv` / `loss.png`, and reports subject accuracy (nearest caption) and position error
/// on 512 fresh stills.
fn run_stage0(
    cfg: &VimiConfig,
    states: &SentenceStates,
    world: &MiniWorld,
    o: &TrainOptions,
    dir: &Path,
    progress: bool,
) -> Result<StageReport> {
    let steps = o.stage0_steps;
    let n = o.stage0_batch;
    if n < 2 {
        return Err(Error::config(
            "stage0_batch",
            "must be ≥ 2 (in-batch negatives)",
        ));
    }
    let dev = Device::Cpu;
    let store = ParamStore::new(o.seed ^ 0x5e0, &dev)
        .create(Selection::all())
        .trainable(Selection::parse(&["vision", "aux"]));
    let vb = store.var_builder(DType::F32);
    let model = VimiModel::new(cfg, vb.clone())?;
    let p = cfg.conditioner.example_dim;
    let text_head = Linear::new(states.dim(), p, true, vb.pp("aux").pp("text_proj"))?;
    let pos_head = Linear::new(p, 2, true, vb.pp("aux").pp("position"))?;
    let params = store.report().trainable;
    let subjects: Vec<(Shape, Colour)> = world
        .shapes()
        .iter()
        .flat_map(|&s| world.colours().iter().map(move |&c| (s, c)))
        .collect();
    let captions: Vec<String> = subjects
        .iter()
        .map(|&(shape, colour)| {
            Scene {
                shape,
                colour,
                direction: Direction::Right,
                start: (0, 0),
            }
            .caption(CaptionStyle::Subject)
        })
        .collect();
    let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
    let caption_emb = states.embed(&refs)?; // [S, text_dim]
    let size = world.spec().size as f32;
    let r = world.spec().radius as f32;
    // A batch: stills [n, 3, s, s], subject ids, centres in [-1, 1] (x right, y down).
    let draw = |rng: &mut ChaCha8Rng, n: usize| -> Result<(Tensor, Vec<u32>, Tensor)> {
        let mut frames = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut centres = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let id = rng.random_range(0..subjects.len());
            let (shape, colour) = subjects[id];
            let scene = world.scene(rng, Some(shape), Some(colour), None)?;
            let t = rng.random_range(0..world.spec().frames);
            frames.push(Video::new(vec![world.frame(&scene, t)?], world.spec().fps)?);
            let (x, y) = world.position(&scene, t);
            centres.push((x as f32 + r + 0.5) / size * 2.0 - 1.0);
            centres.push((y as f32 + r + 0.5) / size * 2.0 - 1.0);
            ids.push(id as u32);
        }
        let px = videos_tensor(&frames)?.squeeze(2)?;
        Ok((px, ids, Tensor::from_vec(centres, (n, 2), &Device::Cpu)?))
    };
    let l2n = |x: &Tensor| -> Result<Tensor> {
        let norm = (x.sqr()?.sum_keepdim(1)? + 1e-8)?.sqrt()?;
        Ok(x.broadcast_div(&norm)?)
    };
    let logits_of = |px: &Tensor, ids: &[u32]| -> Result<(Tensor, Tensor)> {
        let img = model.embed_images(px)?;
        let idx = Tensor::from_vec(ids.to_vec(), ids.len(), &Device::Cpu)?;
        let txt = text_head.forward(&caption_emb.index_select(&idx, 0)?)?;
        Ok((img.clone(), (l2n(&img)?.matmul(&l2n(&txt)?.t()?)? * 10.0)?))
    };
    let optim = adamw_cosine(2e-3, (steps / 10).min(100), o.weight_decay);
    let mut trainer = Trainer::new(store.clone(), &optim, steps.max(1), o.seed ^ 0x5e0)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut csv = CsvLog::open(&dir.join("loss.csv"), None)?;
    let mut data_rng = ChaCha8Rng::seed_from_u64(o.seed.wrapping_add(77));
    let bar = progress_bar(steps, 0, progress);
    let t0 = Instant::now();
    for _ in 0..steps {
        let (px, ids, centres) = draw(&mut data_rng, n)?;
        // soft targets: row i spreads over the batch's images of i's subject
        let mut tgt = vec![0f32; n * n];
        for i in 0..n {
            let same: Vec<usize> = (0..n).filter(|&j| ids[j] == ids[i]).collect();
            for &j in &same {
                tgt[i * n + j] = 1.0 / same.len() as f32;
            }
        }
        let tgt = Tensor::from_vec(tgt, (n, n), &Device::Cpu)?;
        let stats = trainer.step(&mut |_, _| {
            let (img, logits) = logits_of(&px, &ids)?;
            let ce = |l: &Tensor| -> Result<Tensor> {
                let ls = candle_nn::ops::log_softmax(l, 1)?;
                Ok((tgt.mul(&ls)?.sum_all()? * (-1.0 / n as f64))?)
            };
            let contrast = ((ce(&logits)? + ce(&logits.t()?.contiguous()?)?)? * 0.5)?;
            let pos = (pos_head.forward(&img)? - &centres)?.sqr()?.mean_all()?;
            Ok((contrast + pos)?)
        })?;
        csv.push((&stats).into())?;
        bar.set_message(format!("stage 0 loss {:.4}", stats.loss));
        bar.set_position(stats.step as u64);
    }
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    // held-out probe: nearest subject caption, and the centre's error in pixels
    let mut probe_rng = ChaCha8Rng::seed_from_u64(o.seed.wrapping_add(0x9e0b));
    let (px, ids, centres) = draw(&mut probe_rng, 512)?;
    let img = model.embed_images(&px)?;
    let all = text_head.forward(&caption_emb)?;
    let pred = l2n(&img)?
        .matmul(&l2n(&all)?.t()?)?
        .argmax(1)?
        .to_vec1::<u32>()?;
    let correct = pred.iter().zip(&ids).filter(|(a, b)| a == b).count();
    let err = (pos_head.forward(&img)? - &centres)?
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .mean_all()?
        .to_scalar::<f32>()?
        * size
        / 2.0;
    let vision: std::collections::BTreeMap<String, Tensor> = store
        .all_tensors()
        .into_iter()
        .filter(|(k, _)| k.starts_with("vision."))
        .collect();
    VimiModel::save_tensors(cfg, &vision, DType::F32, dir)?;
    let rows = csv.rows().to_vec();
    if !rows.is_empty() {
        plot_loss(
            &rows,
            &dir.join("loss.png"),
            "VIMI-mini stage 0 (example encoder)",
            800,
            480,
        )?;
    }
    let k = rows.len();
    Ok(StageReport {
        stage: 0,
        steps,
        seconds,
        loss_start: mean(&rows[..k.min(50)]),
        loss_end: mean(&rows[k.saturating_sub(50)..]),
        params,
        tasks: vec![("subject contrast + position".into(), steps)],
        probe: Some(serde_json::json!({
            "stills": 512,
            "subject_accuracy": correct as f64 / 512.0,
            "subjects": subjects.len(),
            "position_error_px": err,
        })),
    })
}

/// What a whole run wrote and measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    /// The options.
    pub options: TrainOptions,
    /// The stages run.
    pub stages: Vec<StageReport>,
    /// Where the final model is.
    pub out: PathBuf,
}

/// Which stages to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stages {
    /// Stage 0 (when `stage0_steps > 0`, writes `out/stage0`) and stage 1 (writes
    /// `out/stage1`).
    One,
    /// Stage 2 only, from `out/stage1`.
    Two,
    /// All, then the final model in `out`.
    Both,
}

/// Trains the miniature: the corpus, its index and dataset (`out/stage1/manifest.jsonl`),
/// stage 0 (the example encoder, when `stage0_steps > 0`; then frozen) into `out/stage0`,
/// stage 1 into `out/stage1`, stage 2 into `out/stage2`, and the final model (f16 when
/// `half`) with `train.json`, `loss-stage{0,1,2}.png` / `.csv` in `out`.
///
/// # Errors
/// World, index, training and I/O errors, naming what failed.
pub fn train(
    out: &Path,
    cfg: &VimiConfig,
    o: &TrainOptions,
    states: &SentenceStates,
    stages: Stages,
    progress: bool,
) -> Result<TrainReport> {
    cfg.validate()?;
    if o.batch == 0 || o.k > cfg.conditioner.max_examples {
        return Err(Error::config(
            "batch / k",
            format!(
                "batch must be ≥ 1 and k ≤ {} (the conditioner's slots)",
                cfg.conditioner.max_examples
            ),
        ));
    }
    let world = MiniWorld::new(cfg.world.clone())?;
    let corpus = make_corpus(&world, o.corpus, o.seed, "train", None)?;
    let rows = build_manifest(
        &corpus.index,
        None,
        &DatasetOptions {
            k: o.k,
            method: TextRetrieval::Bm25,
            dedup: Some(o.dedup),
        },
    )?;
    let s1 = out.join("stage1");
    let s2 = out.join("stage2");
    write_manifest(&s1.join("manifest.jsonl"), &rows)?;
    let data = Stage1Data {
        world: &world,
        corpus: &corpus,
        rows: &rows,
    };
    let dev = Device::Cpu;
    let mut reports = Vec::new();
    // With a pre-trained example encoder, it stays frozen (as VIMI's CLIP does).
    let trainable = if o.stage0_steps > 0 {
        Selection::parse(&["*", "!vision"])
    } else {
        Selection::all()
    };
    if matches!(stages, Stages::One | Stages::Both) {
        let mut store = ParamStore::new(o.seed, &dev);
        if o.stage0_steps > 0 {
            let s0 = out.join("stage0");
            reports.push(run_stage0(cfg, states, &world, o, &s0, progress)?);
            store = store.with_checkpoint("", &s0)?;
        }
        // Stage 1's examples are stills: the clips' motion token gets no gradient there, and
        // frozen it keeps its seeded initial values, the values a stage 2 run from an older
        // stage-1 checkpoint (without it) creates.
        let stage1 = if o.stage0_steps > 0 {
            Selection::parse(&["*", "!vision", "!conditioner.motion_*"])
        } else {
            Selection::parse(&["*", "!conditioner.motion_*"])
        };
        let store = store.create(Selection::all()).trainable(stage1);
        let (r, _) = run_stage(1, cfg, store, states, &data, o, &s1, progress)?;
        reports.push(r);
    }
    if matches!(stages, Stages::Two | Stages::Both) {
        let store = ParamStore::new(o.seed, &dev)
            .with_checkpoint("", &s1)?
            .create(Selection::parse(&["conditioner.motion_*"]))
            .trainable(trainable);
        let (r, store) = run_stage(2, cfg, store, states, &data, o, &s2, progress)?;
        reports.push(r);
        let dtype = if o.half { DType::F16 } else { DType::F32 };
        VimiModel::save_tensors(cfg, &store.all_tensors(), dtype, out)?;
    }
    for st in [0usize, 1, 2] {
        let d = out.join(format!("stage{st}"));
        for ext in ["png", "csv"] {
            let src = d.join(format!("loss.{ext}"));
            if src.is_file() {
                let dst = out.join(format!("loss-stage{st}.{ext}"));
                std::fs::copy(&src, &dst).map_err(|e| Error::Io {
                    path: dst,
                    source: e,
                })?;
            }
        }
    }
    let report = TrainReport {
        options: o.clone(),
        stages: reports,
        out: out.to_path_buf(),
    };
    let json =
        serde_json::to_vec_pretty(&report).map_err(|e| Error::invalid("report", e.to_string()))?;
    let p = out.join("train.json");
    std::fs::write(&p, json).map_err(|e| Error::Io { path: p, source: e })?;
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn object_mask_is_the_object_and_a_one_pixel_ring() {
        let bg = [56u8, 60, 72];
        let px = |v: u8| f32::from(v) / 127.5 - 1.0;
        // [1, 3, 2, 5, 5]: background everywhere, one object pixel at (2, 2) of frame 1
        let mut data = Vec::new();
        for b in bg {
            for t in 0..2 {
                for i in 0..25 {
                    data.push(if t == 1 && i == 12 { 1.0 } else { px(b) });
                }
            }
        }
        let x0 = Tensor::from_vec(data, (1, 3, 2, 5, 5), &Device::Cpu).unwrap();
        let m = object_mask(&x0, bg).unwrap();
        assert_eq!(m.dims(), &[1, 1, 2, 5, 5]);
        let v = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v[..25].iter().all(|x| *x == 0.0), "frame 0 has no object");
        for (i, x) in v[25..].iter().enumerate() {
            let (r, c) = (i / 5, i % 5);
            let near = (1..=3).contains(&r) && (1..=3).contains(&c);
            assert_eq!(*x, if near { 1.0 } else { 0.0 }, "({r}, {c})");
        }
    }
}
