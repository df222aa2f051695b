//! The training loop of the miniatures' stages: the trainer crate's [`Trainer`] (AdamW,
//! warm-up + cosine, clipping) stepping a closure that returns one micro-batch's loss, with
//! its `loss-<stage>.csv`, `loss-<stage>.png` and a progress bar.

use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_trainer::log::{plot_loss, progress_bar, CsvLog, LogRow};
use vidgen_trainer::{LrDecay, OptimConfig, ParamReport, Trainer};
use vidgen_video_core::Result;

/// Settings of one stage's optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageOptions {
    /// Optimiser steps.
    pub steps: usize,
    /// Clips (or frames, as the stage says) per step.
    pub batch: usize,
    /// Peak learning rate (linear warm-up over 5 % of the steps, then half a cosine to 0).
    pub lr: f64,
}

/// The optimiser of a stage: AdamW, warm-up over 5 % of the steps, half a cosine, gradients
/// clipped to norm 1.
pub fn stage_optim(s: &StageOptions) -> OptimConfig {
    OptimConfig {
        lr: s.lr,
        warmup: (s.steps / 20).max(1),
        decay: LrDecay::Cosine,
        grad_clip: Some(1.0),
        ..OptimConfig::default()
    }
}

/// A stage's parameter counts and loss, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    /// Stage name.
    pub stage: String,
    /// Steps.
    pub steps: usize,
    /// Wall seconds.
    pub seconds: f64,
    /// Mean loss of the first and last 50 steps.
    pub loss_first_last: (f32, f32),
    /// Trainable parameters.
    pub trainable: usize,
    /// All parameters of what the stage built.
    pub total: usize,
}

/// Prints a finished stage's line (steps, time, loss, parameters) to stderr.
pub fn print_summary(r: &StageSummary) {
    eprintln!(
        "stage {}: {} steps in {:.0} s, loss {:.4} -> {:.4}; {} of {} parameters trained",
        r.stage, r.steps, r.seconds, r.loss_first_last.0, r.loss_first_last.1, r.trainable, r.total
    );
}

/// The summary of stage `stage` from its log and its store's report.
pub fn summarize(stage: &str, log: &StageLog, r: &ParamReport) -> StageSummary {
    StageSummary {
        stage: stage.into(),
        steps: log.rows.len(),
        seconds: log.seconds,
        loss_first_last: log.first_last(50),
        trainable: r.trainable,
        total: r.total(),
    }
}

/// What a stage's loop did.
#[derive(Debug, Clone)]
pub struct StageLog {
    /// Every step.
    pub rows: Vec<LogRow>,
    /// Wall seconds.
    pub seconds: f64,
}

impl StageLog {
    /// Mean loss of the first and last `k` steps.
    pub fn first_last(&self, k: usize) -> (f32, f32) {
        let mean = |r: &[LogRow]| r.iter().map(|x| x.loss).sum::<f32>() / r.len().max(1) as f32;
        let k = k.min(self.rows.len());
        (
            mean(&self.rows[..k]),
            mean(&self.rows[self.rows.len() - k..]),
        )
    }
}

/// Runs `steps` optimiser steps of `micro` (step index, generator → loss) and writes
/// `<out>/loss-<stage>.csv` and `.png`.
///
/// # Errors
/// The closure's errors; I/O.
pub fn run_stage(
    trainer: &mut Trainer,
    steps: usize,
    out: &Path,
    stage: &str,
    progress: bool,
    micro: &mut dyn FnMut(usize, &mut ChaCha8Rng) -> Result<Tensor>,
) -> Result<StageLog> {
    let mut csv = CsvLog::open(&out.join(format!("loss-{stage}.csv")), None)?;
    let bar = progress_bar(steps, 0, progress);
    let t0 = Instant::now();
    let mut smooth: Option<f32> = None;
    while trainer.step_count() < steps {
        let k = trainer.step_count();
        let stats = trainer.step(&mut |_, rng| micro(k, rng))?;
        csv.push((&stats).into())?;
        let s = smooth.map_or(stats.loss, |p| 0.95 * p + 0.05 * stats.loss);
        smooth = Some(s);
        bar.set_message(format!("{stage}: loss {s:.4}  lr {:.2e}", stats.lr));
        bar.set_position(stats.step as u64);
    }
    bar.finish_and_clear();
    plot_loss(
        csv.rows(),
        &out.join(format!("loss-{stage}.png")),
        &format!("stage {stage}"),
        800,
        480,
    )?;
    Ok(StageLog {
        rows: csv.rows().to_vec(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Where a VAE's reconstruction loss is weighted up: the object's pixels of `frames`
/// (`[N, 3, H, W]` in `[-1, 1]`; brightest channel at or above the scorer's threshold) dilated by
/// one pixel, `[N, 1, H, W]` of 0 / 1. The ring just outside the outline (a square's corners,
/// absent from a circle) is what tells the shapes apart, and a blurring VAE brightens it.
///
/// # Errors
/// Another layout.
pub fn object_ring_mask(frames: &Tensor) -> Result<Tensor> {
    let thr = 2.0 * f64::from(crate::minis::score::OBJECT_THRESHOLD) / 255.0 - 1.0;
    let mask = frames
        .max_keepdim(1)?
        .ge(thr)?
        .to_dtype(candle_core::DType::F32)?;
    Ok(mask
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .max_pool2d_with_stride((3, 3), (1, 1))?)
}
