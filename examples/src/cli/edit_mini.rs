//! `vidgen edit train` / `vidgen edit eval`: the VIDiff miniature (`examples/assets/vidiff-mini`),
//! trained on the synthetic world and measured (see [`crate::vidiffmini`]).

use std::path::PathBuf;
use std::time::Instant;

use vidgen_video_core::Result;

use crate::vidiffmini::eval::{evaluate, format_report, EvalOptions};
use crate::vidiffmini::folder::load_pipeline;
use crate::vidiffmini::train::{default_out, train, Stage, TrainOptions};
use crate::vidiffmini::{shipped_dir, MiniConfig};

/// `vidgen edit` as a group: the pipeline run (flags, see `cli::edit`) or a miniature command.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EditCommand {
    /// Train or evaluate the VIDiff miniature.
    #[command(subcommand)]
    pub mini: Option<EditMini>,
    /// Edit a video with a pipeline folder.
    #[command(flatten)]
    pub run: Option<super::edit::Args>,
}

/// The miniature's commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum EditMini {
    /// Train the VIDiff miniature on the synthetic world (VAE, image-editing UNet, then the
    /// UNet inflated to video).
    Train(TrainArgs),
    /// Measure the edits of a VIDiff miniature (default: the shipped one): edit applied, motion
    /// kept, temporal consistency, on clips and on long videos.
    Eval(EvalArgs),
}

impl EditMini {
    /// Whether the report is printed as JSON.
    pub fn json(&self) -> bool {
        match self {
            EditMini::Train(_) => false,
            EditMini::Eval(a) => a.json,
        }
    }
}

/// Arguments of `vidgen edit train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Output folder (the miniature's pipeline folder; ship it by copying to
    /// `examples/assets/vidiff-mini`).
    #[arg(long, default_value_os_t = default_out())]
    pub out: PathBuf,
    /// Stage to run: vae, image, video, or all (in that order).
    #[arg(long, default_value = "all")]
    pub stage: String,
    /// Master seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Override the steps of the selected stage(s).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override the batch of the selected stage(s) (frames for vae / image, clips for video).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Override the peak learning rate of the selected stage(s).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Episodes encoded for the image and video stages.
    #[arg(long)]
    pub clips: Option<usize>,
    /// What the video stage trains (repeatable name patterns, `*` wildcards, `!` excludes;
    /// default `unet.*motion_modules*` and `unet.*attn2*`; `*` trains everything).
    #[arg(long)]
    pub trainable: Vec<String>,
    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `vidgen edit eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The miniature's folder (default: the shipped `examples/assets/vidiff-mini`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Clips of the instructed and no-instruction conditions (the kinds of edit cycle: colour,
    /// shape, background, swatch).
    #[arg(long, default_value_t = 200)]
    pub episodes: usize,
    /// Long videos (3× a clip, edited clip by clip with overlap); 0 skips them.
    #[arg(long, default_value_t = 48)]
    pub long_episodes: usize,
    /// Evaluation stream.
    #[arg(long, default_value_t = 2024)]
    pub seed: u64,
    /// Denoising steps (default: the miniature's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Text / instruction guidance (default: the miniature's).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Source-video guidance (default: the miniature's).
    #[arg(long)]
    pub video_guidance: Option<f64>,
    /// Noise correlation across frames in [0, 1) (default: the miniature's `frame_noise`; 0 is
    /// the pipeline's independent noise).
    #[arg(long)]
    pub frame_noise: Option<f64>,
    /// Skip the no-instruction baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Skip the reference rows (ground truth, ground truth through the VAE).
    #[arg(long)]
    pub no_references: bool,
    /// Write every generated clip as a GIF, and `episodes.json`, into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a miniature command; returns its JSON report.
///
/// # Errors
/// Training, evaluation and I/O errors.
pub fn run(cmd: &EditMini) -> Result<serde_json::Value> {
    match cmd {
        EditMini::Train(a) => run_train(a),
        EditMini::Eval(a) => run_eval(a),
    }
}

fn run_eval(a: &EvalArgs) -> Result<serde_json::Value> {
    let dir = a.model.clone().unwrap_or_else(shipped_dir);
    let t0 = Instant::now();
    let cfg = MiniConfig::load(&dir)?;
    let pipe = load_pipeline(&dir)?;
    let opts = EvalOptions {
        episodes: a.episodes,
        long_episodes: a.long_episodes,
        seed: a.seed,
        steps: a.steps,
        text_guidance: a.guidance,
        video_guidance: a.video_guidance,
        frame_noise: a.frame_noise,
        baseline: !a.no_baseline,
        references: !a.no_references,
        out: a.out.clone(),
    };
    if !a.json {
        println!(
            "vidgen edit eval: {} ({} clips, {} long videos, stream {})",
            dir.display(),
            opts.episodes,
            opts.long_episodes,
            opts.seed
        );
    }
    let quiet = a.json;
    let rep = evaluate(&pipe, &cfg, &opts, &mut |label| {
        if !quiet {
            eprintln!("  running {label} …");
        }
    })?;
    if !a.json {
        println!("{}", format_report(&rep));
        if let Some(o) = &rep.out {
            println!("clips and episodes.json in {}", o.display());
        }
        println!("({:.0} s)", t0.elapsed().as_secs_f64());
    }
    Ok(serde_json::json!({
        "command": "edit eval",
        "model": dir,
        "report": rep,
        "seconds": t0.elapsed().as_secs_f64(),
    }))
}

fn run_train(a: &TrainArgs) -> Result<serde_json::Value> {
    let stages: Vec<Stage> = if a.stage == "all" {
        Stage::ALL.to_vec()
    } else {
        vec![Stage::parse(&a.stage)?]
    };
    let mut opts = TrainOptions {
        seed: a.seed,
        progress: !a.quiet,
        ..TrainOptions::default()
    };
    if let Some(c) = a.clips {
        opts.clips = c;
    }
    if !a.trainable.is_empty() {
        opts.video_trainable = a.trainable.clone();
    }
    for st in &stages {
        let s = match st {
            Stage::Vae => &mut opts.vae,
            Stage::Image => &mut opts.image,
            Stage::Video => &mut opts.video,
        };
        if let Some(v) = a.steps {
            s.steps = v;
        }
        if let Some(v) = a.batch {
            s.batch = v;
        }
        if let Some(v) = a.lr {
            s.lr = v;
        }
    }
    let t0 = Instant::now();
    let done = train(&opts, &stages, &a.out)?;
    println!(
        "vidgen edit train: {} stage(s) in {:.0} s into {}",
        done.len(),
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(serde_json::json!({ "command": "edit train", "out": a.out, "stages": done }))
}
