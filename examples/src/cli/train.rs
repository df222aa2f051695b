//! `vidgen train`: diffusion training with `vidgen-trainer`'s recipes (SVD, AID, VIDiff,
//! AnimateDiff, UNet3D) on a folder of videos / frame folders / GIFs or on the synthetic world.
//! The flags fill a [`TrainConfig`]; everything not named keeps the recipe's default.

use std::path::PathBuf;

use std::rc::Rc;
use vidgen_trainer::data::ClipSpec;

use vidgen_collective::{or_abort, Collective};
use vidgen_trainer::{
    DataConfig, LrDecay, OptimConfig, Precision, Recipe, Session, TrainConfig, Trainer,
};
use vidgen_video_core::{Error, Result};

/// Arguments of `vidgen train`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The recipe: `svd`, `aid` (adapters + DQFormer on a frozen SVD), `vidiff`, `animate`
    /// (motion modules) or `unet3d`.
    pub recipe: String,
    /// A diffusers pipeline folder or a UNet folder to start from.
    #[arg(long, conflicts_with = "unet_config")]
    pub model: Option<PathBuf>,
    /// A UNet `config.json` to build with seeded random weights instead of `--model`.
    #[arg(long)]
    pub unet_config: Option<PathBuf>,
    /// Training data: a folder of videos (mp4 etc. with the `ffmpeg` feature), PNG frame
    /// folders or GIFs, captions in sidecar `.txt` files or a `manifest.jsonl`. Without it the
    /// synthetic moving-shapes world is rendered into memory.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Clips of the synthetic world (without `--data`).
    #[arg(long, default_value_t = 256)]
    pub synthetic_clips: usize,
    /// Output folder: `loss.csv`, `loss.png`, `checkpoints/`, `final/`.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Clips per micro-batch (per rank under `mpirun`: the global batch is ranks × batch).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Micro-batches per optimiser step.
    #[arg(long, default_value_t = 1)]
    pub accumulation: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Cosine decay to 0 after warm-up (default: constant).
    #[arg(long)]
    pub cosine: bool,
    /// Clip gradients to this global L2 norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Keep an EMA of the trained weights with this decay.
    #[arg(long)]
    pub ema: Option<f64>,
    /// Forward and backward in bf16 from f32 master weights.
    #[arg(long)]
    pub bf16: bool,
    /// Trainable name patterns (repeatable; `*` wildcards, `!` excludes); default: the
    /// recipe's (e.g. `adapters*` for AID, `*motion_modules*` for AnimateDiff).
    #[arg(long)]
    pub trainable: Vec<String>,
    /// Frames per clip.
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// Take every n-th frame.
    #[arg(long, default_value_t = 1)]
    pub stride: usize,
    /// Clip width in pixels.
    #[arg(long, default_value_t = 64)]
    pub width: u32,
    /// Clip height in pixels.
    #[arg(long, default_value_t = 64)]
    pub height: u32,
    /// Probability of a horizontal flip.
    #[arg(long, default_value_t = 0.0)]
    pub flip: f64,
    /// Master seed (initialisation, shuffling, noise).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue from a checkpoint folder, or from the latest checkpoint under an output folder.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Write a checkpoint every n steps (and at the end).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Stop after n steps (to resume later).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Print a JSON report instead of the progress bar and parameter report.
    #[arg(long)]
    pub json: bool,
}

/// Builds the trainer configuration from the flags.
///
/// # Errors
/// An unknown recipe, an unreadable or invalid `--unet-config`, a non-positive size or count.
pub fn config(a: &Args) -> Result<TrainConfig> {
    let recipe = Recipe::parse(&a.recipe)?;
    for (flag, v) in [
        ("--steps", a.steps),
        ("--batch", a.batch),
        ("--accumulation", a.accumulation),
        ("--frames", a.frames),
        ("--stride", a.stride),
        ("--width", a.width as usize),
        ("--height", a.height as usize),
    ] {
        if v == 0 {
            return Err(Error::invalid(flag, "must be at least 1"));
        }
    }
    if !(0.0..=1.0).contains(&a.flip) {
        return Err(Error::invalid("--flip", "must be a probability in [0, 1]"));
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        return Err(Error::invalid("--lr", "must be a positive number"));
    }
    let unet_config = match &a.unet_config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::Io {
                path: p.clone(),
                source: e,
            })?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::invalid("--unet-config", format!("{}: {e}", p.display())))?;
            Some(v)
        }
        None => None,
    };
    if a.model.is_none() && unet_config.is_none() {
        return Err(Error::invalid(
            "--model",
            "give a model folder (--model) or a UNet config to start from (--unet-config)",
        ));
    }
    let data = match &a.data {
        Some(path) => DataConfig::Folder { path: path.clone() },
        None => DataConfig::Synthetic {
            width: a.width,
            height: a.height,
            frames: a.frames * a.stride,
            clips: a.synthetic_clips.max(1),
            seed: a.seed,
        },
    };
    Ok(TrainConfig {
        recipe,
        model: a.model.clone(),
        unet_config,
        data,
        clip: ClipSpec {
            frames: a.frames,
            stride: a.stride,
            random_start: true,
            width: a.width,
            height: a.height,
            flip: a.flip,
        },
        out: a.out.clone(),
        steps: a.steps,
        batch: a.batch,
        optim: OptimConfig {
            lr: a.lr,
            warmup: a.warmup,
            decay: if a.cosine {
                LrDecay::Cosine
            } else {
                LrDecay::Constant
            },
            grad_clip: (a.grad_clip > 0.0).then_some(a.grad_clip),
            accumulation: a.accumulation,
            ema_decay: a.ema,
            ..OptimConfig::default()
        },
        trainable: (!a.trainable.is_empty()).then(|| a.trainable.clone()),
        precision: if a.bf16 {
            Precision::Bf16
        } else {
            Precision::F32
        },
        seed: a.seed,
        resume: a.resume.clone(),
        checkpoint_every: a.checkpoint_every,
        stop_after: a.stop_after,
        progress: !a.json,
        verbose: !a.json,
        ..TrainConfig::default()
    })
}

/// A digest of the trained weights (their bits, in name order), to check that data-parallel
/// replicas stayed identical.
fn weights_digest(t: &Trainer) -> Result<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, var) in t.vars() {
        let v = var
            .as_tensor()
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for b in name
            .bytes()
            .chain(v.iter().flat_map(|x| x.to_bits().to_le_bytes()))
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    Ok(h)
}

/// Runs the subcommand; returns the `--json` report (`null` on data-parallel ranks other
/// than 0, which print nothing).
///
/// Under `mpirun -np N` (built with the `mpi` feature) every rank runs this: `--batch` clips
/// per rank, a global batch of `N · batch`, gradients averaged over the ranks, logs and
/// checkpoints from rank 0. A rank that fails aborts the job. At the end the ranks compare
/// digests of their weights, and a mismatch is an error.
///
/// # Errors
/// Invalid flags (named), unreadable model or data folders (named), training errors (a
/// non-finite loss names its step).
pub fn run(a: &Args) -> Result<serde_json::Value> {
    let cfg = config(a)?;
    let group: Rc<dyn Collective> = Rc::from(vidgen_collective::init()?);
    let t0 = std::time::Instant::now();
    let (outcome, digest) = or_abort(group.as_ref(), || {
        let mut session = Session::new_in(&cfg, group.clone())?;
        let outcome = session.run()?;
        let digest = weights_digest(session.trainer())?;
        // Exact in f64: a digest is below 2^64 but compared as two 32-bit halves.
        let halves = [(digest >> 32) as f64, (digest & 0xffff_ffff) as f64];
        let all = group.all_gather_f64(&halves)?;
        if let Some(r) = all.iter().position(|h| h[..] != halves[..]) {
            return Err(Error::invalid(
                "data-parallel replicas",
                format!(
                    "rank {r}'s weights differ from rank {}'s after training",
                    group.rank()
                ),
            ));
        }
        Ok((outcome, digest))
    })?;
    if group.rank() != 0 {
        return Ok(serde_json::Value::Null);
    }
    let s = &outcome.summary;
    let last = s.rows.last();
    Ok(serde_json::json!({
        "command": "train",
        "ranks": group.world_size(),
        "global_batch": cfg.batch * group.world_size(),
        "weights_digest": format!("{digest:016x}"),
        "recipe": cfg.recipe.name(),
        "out": outcome.out.display().to_string(),
        "final": outcome.final_dir.as_ref().map(|p| p.display().to_string()),
        "checkpoint": s.checkpoint.as_ref().map(|p| p.display().to_string()),
        "steps_done": s.steps_done,
        "session_steps": s.session_steps,
        "last_loss": last.map(|r| r.loss),
        "session_seconds": s.session_seconds,
        "data_wait_seconds": s.data_wait_seconds,
        "comm_seconds": s.comm_seconds,
        "seconds": t0.elapsed().as_secs_f64(),
    }))
}
