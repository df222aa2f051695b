//! `vidgen aid train` / `vidgen aid eval`: the AID miniature (`examples/assets/aid-mini`),
//! trained on the synthetic world and measured (see [`crate::aidmini`]).

use std::path::PathBuf;
use std::time::Instant;

use vidgen_video_core::Result;

use crate::aidmini::eval::{evaluate, format_report, EvalOptions};
use crate::aidmini::folder::load_pipeline;
use crate::aidmini::train::{param_share, train, Stage, TrainOptions};
use crate::aidmini::{shipped_dir, MiniConfig};

/// `vidgen aid` as a group: the pipeline run (flags, see `cli::aid`) or a miniature command.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AidCommand {
    /// Train or evaluate the AID miniature.
    #[command(subcommand)]
    pub mini: Option<AidMini>,
    /// Run AID on a pipeline folder.
    #[command(flatten)]
    pub run: Option<super::aid::Args>,
}

/// The miniature's commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AidMini {
    /// Train the AID miniature on the synthetic world (VAE, SVD base, then adapters + DQFormer).
    Train(TrainArgs),
    /// Measure instruction following of an AID miniature (default: the shipped one).
    Eval(EvalArgs),
}

/// Arguments of `vidgen aid train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Output folder (the miniature's pipeline folder; ship it by copying to
    /// `examples/assets/aid-mini`).
    #[arg(long, default_value = "aid-mini-train")]
    pub out: PathBuf,
    /// Stage to run: vae, decoder, base, aid, or all (in that order).
    #[arg(long, default_value = "all")]
    pub stage: String,
    /// Master seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Override the steps of the selected stage(s).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override the peak learning rate of the selected stage(s).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override `P_mean` of the training noise levels (`ln σ ~ N(P_mean, P_std²)`) of the
    /// selected base / aid stage(s).
    #[arg(long)]
    pub p_mean: Option<f64>,
    /// Episodes whose latents are cached for the base and AID stages.
    #[arg(long)]
    pub clips: Option<usize>,
    /// AID stage: keep the UNet's cross-attention frozen (train adapters + DQFormer only;
    /// AID's recipe trains the cross-attention too).
    #[arg(long)]
    pub frozen_cross_attention: bool,
    /// Base and AID stages: extra weight of the squared error on the object's latent cells
    /// (0: unweighted).
    #[arg(long)]
    pub latent_object_weight: Option<f64>,
    /// Latent channels of the VAE (a new folder's default: 4; a later stage keeps the folder's
    /// `mini.json` value).
    #[arg(long)]
    pub latent_channels: Option<usize>,
    /// Downsampling factor of the VAE, a power of two (a new folder's default: 4, i.e. 32×32
    /// frames ↔ 8×8 latents; 2 gives 16×16 latents and about 4× the UNet's cost; a later stage
    /// keeps the folder's `mini.json` value).
    #[arg(long)]
    pub vae_factor: Option<u32>,
    /// Object radius in pixels (a new folder's default: 5; a later stage keeps the folder's
    /// `mini.json` value).
    #[arg(long)]
    pub radius: Option<u32>,
    /// The SVD UNet's channels per level, comma-separated multiples of 32 (a new folder's
    /// default: 32,32; a later stage keeps the folder's `mini.json` value).
    #[arg(long, value_delimiter = ',')]
    pub unet_channels: Option<Vec<usize>>,
    /// The SVD UNet's layers per block (a new folder's default: 1; a later stage keeps the
    /// folder's value).
    #[arg(long)]
    pub unet_layers: Option<usize>,
    /// Store the weights as f32 (default: f16, half the folder; training runs in f32 either
    /// way).
    #[arg(long)]
    pub f32_weights: bool,
    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `vidgen aid eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The miniature's folder (default: the shipped `examples/assets/aid-mini`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Episodes per condition.
    #[arg(long, default_value_t = 200)]
    pub episodes: usize,
    /// Evaluation stream.
    #[arg(long, default_value_t = 2024)]
    pub seed: u64,
    /// Denoising steps (default: the miniature's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Text guidance values of the dual-guidance sweep (comma-separated; a value equal to the
    /// miniature's own s_T is the instructed row and is not run again, so giving only that value
    /// skips the sweep).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub sweep: Vec<f64>,
    /// Episodes of each sweep condition (the first ones of the stream; default: --episodes).
    #[arg(long)]
    pub sweep_episodes: Option<usize>,
    /// Write every generated clip as a GIF, and `episodes.json`, into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Skip the reference rows (ground truth, ground truth via the VAE).
    #[arg(long)]
    pub no_references: bool,
    /// SVD's noise augmentation of the conditioning frames (default: the strength the
    /// miniature was trained with, 0.02).
    #[arg(long)]
    pub noise_aug: Option<f64>,
    /// Conditioning by replacement: the conditioning frames' latents set to their noised
    /// encodings after every step (default: the miniature's `mini.json`).
    #[arg(long)]
    pub replace_conditioning: Option<bool>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a miniature command; returns its JSON report.
///
/// # Errors
/// Training, evaluation and I/O errors.
pub fn run(cmd: &AidMini) -> Result<serde_json::Value> {
    match cmd {
        AidMini::Train(a) => run_train(a),
        AidMini::Eval(a) => run_eval(a),
    }
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
    // The latent width is part of the folder: a later stage must train the UNet for the VAE
    // the folder already has.
    let existing = if a.out.join("mini.json").is_file() {
        Some(MiniConfig::load(&a.out)?)
    } else {
        None
    };
    if let Some(lc) = a.latent_channels {
        opts.mini.latent_channels = lc;
    } else if let Some(m) = &existing {
        opts.mini.latent_channels = m.latent_channels;
    }
    if let Some(f) = a.vae_factor {
        opts.mini.vae_factor = f;
    } else if let Some(m) = &existing {
        opts.mini.vae_factor = m.vae_factor;
    }
    if let Some(r) = a.radius {
        opts.mini.radius = r;
    } else if let Some(m) = &existing {
        opts.mini.radius = m.radius;
    }
    if let Some(c) = &a.unet_channels {
        opts.mini.unet_channels = c.clone();
    } else if let Some(m) = &existing {
        opts.mini.unet_channels = m.unet_channels.clone();
    }
    if let Some(l) = a.unet_layers {
        opts.mini.unet_layers = l;
    } else if let Some(m) = &existing {
        opts.mini.unet_layers = m.unet_layers;
    }
    opts.mini.validate()?;
    if let Some(m) = a.p_mean {
        for st in &stages {
            match st {
                Stage::Base => opts.p_mean = m,
                Stage::Aid => opts.aid_p_mean = m,
                Stage::Vae | Stage::Decoder => {}
            }
        }
    }
    opts.cross_attention = !a.frozen_cross_attention;
    opts.half_weights = !a.f32_weights;
    if let Some(w) = a.latent_object_weight {
        opts.latent_object_weight = w;
    }
    if let Some(lr) = a.lr {
        for st in &stages {
            match st {
                Stage::Vae => opts.vae.lr = lr,
                Stage::Decoder => opts.decoder.lr = lr,
                Stage::Base => opts.base.lr = lr,
                Stage::Aid => opts.aid.lr = lr,
            }
        }
    }
    if let Some(s) = a.steps {
        for st in &stages {
            match st {
                Stage::Vae => opts.vae.steps = s,
                Stage::Decoder => opts.decoder.steps = s,
                Stage::Base => opts.base.steps = s,
                Stage::Aid => opts.aid.steps = s,
            }
        }
    }
    let t0 = Instant::now();
    let done = train(&opts, &stages, &a.out)?;
    println!(
        "vidgen aid train: {} stage(s) in {:.0} s into {}",
        done.len(),
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(serde_json::json!({ "command": "aid train", "out": a.out, "stages": done }))
}

fn run_eval(a: &EvalArgs) -> Result<serde_json::Value> {
    let dir = a.model.clone().unwrap_or_else(shipped_dir);
    let t0 = Instant::now();
    let cfg = MiniConfig::load(&dir)?;
    let pipe = load_pipeline(&dir)?;
    let share = param_share(&dir)?;
    let opts = EvalOptions {
        episodes: a.episodes,
        seed: a.seed,
        steps: a.steps,
        sweep: a.sweep.clone(),
        sweep_episodes: a.sweep_episodes,
        out: a.out.clone(),
        references: !a.no_references,
        noise_aug: a.noise_aug,
        replace_conditioning: a.replace_conditioning,
        ..EvalOptions::default()
    };
    if !a.json {
        println!(
            "vidgen aid eval: {} ({} episodes per condition, stream {}, {} steps, s_V {:?})",
            dir.display(),
            opts.episodes,
            opts.seed,
            opts.steps.unwrap_or(cfg.steps),
            cfg.frame_guidance
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
        println!(
            "  AID's trainable parts: adapters {} + DQFormer {} parameters = {:.2}% of the UNet's {}",
            share.adapters,
            share.dqformer,
            100.0 * share.share(),
            share.unet
        );
        if share.tuned_unet > 0 {
            println!(
                "  with the tuned cross-attention ({} parameters): {:.2}% of the UNet",
                share.tuned_unet,
                100.0 * share.trained_share()
            );
        }
        println!(
            "  chance (8 directions): 12.5%; total {:.0} s",
            t0.elapsed().as_secs_f64()
        );
        if let Some(o) = &a.out {
            println!("  clips and episodes.json in {}", o.display());
        }
    }
    Ok(serde_json::json!({
        "command": "aid eval",
        "model": dir,
        "report": rep,
        "params": share,
        "seconds": t0.elapsed().as_secs_f64(),
    }))
}

impl AidMini {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            AidMini::Train(_) => false,
            AidMini::Eval(a) => a.json,
        }
    }
}
