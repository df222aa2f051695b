//! `vidgen lavit ...`: Video-LaVIT (issue 30) — keyframe + motion tokens through one LLM and a
//! detokenizer back to video: `tokenize` (a video → keyframes, token counts, a token file),
//! `detokenize` (a token file → a GIF), `generate` (a prompt and / or a keyframe picture → a
//! GIF), `train` (the miniature, all four phases) and `eval` (measured rates with Wilson
//! intervals, GIFs and `episodes.json`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use vidgen_pipelines::lavit::eval::{evaluate, format_report, EvalOptions};
use vidgen_pipelines::lavit::pipeline::{read_token_file, write_token_file};
use vidgen_pipelines::lavit::train::{train_mini, LavitTrainOptions};
use vidgen_pipelines::lavit::LavitPipeline;
use vidgen_video_core::{Error, Result};

use super::edit::read_video;
use super::write_output;

/// The shipped miniature: `examples/assets/lavit-mini`.
pub fn shipped_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/lavit-mini")
}

/// The arguments of the `lavit_*` diagnostic examples: `[DIR] [COUNT]` (default: the shipped
/// miniature and `default_count`).
///
/// # Errors
/// A `COUNT` that is not a number.
pub fn example_args(default_count: usize) -> Result<(PathBuf, usize)> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map_or_else(shipped_dir, PathBuf::from);
    let n = match args.get(2) {
        Some(s) => s
            .parse()
            .map_err(|e| Error::invalid("COUNT", format!("{s:?}: {e}")))?,
        None => default_count,
    };
    Ok((dir, n))
}

/// The vendored full CLIP tokenizer the miniature's text tokenizer is pruned from.
pub fn clip_tokenizer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/clip_tokenizer/openai/tokenizer")
}

/// `vidgen lavit`'s commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LavitCommand {
    /// A video (file or frame folder) → its keyframes, clips and tokens (printed, and written
    /// as a token file).
    Tokenize(TokenizeArgs),
    /// A token file → a video (GIF).
    Detokenize(DetokenizeArgs),
    /// A prompt and / or a keyframe picture → a video (GIF).
    Generate(GenerateArgs),
    /// Train LaVIT-mini: keyframe tokenizer, motion tokenizer, LLM, detokenizer.
    Train(TrainArgs),
    /// Measure LaVIT-mini (default: the shipped one) over seeded prompts.
    Eval(EvalArgs),
    /// Remove near-duplicate codes from a folder's keyframe tokenizer (in place); its LLM and
    /// detokenizer must then be trained again (`train --resume` without them).
    Prune(PruneArgs),
}

impl LavitCommand {
    /// Whether the command prints its JSON report.
    pub fn json(&self) -> bool {
        match self {
            LavitCommand::Tokenize(a) => a.json,
            LavitCommand::Detokenize(a) => a.json,
            LavitCommand::Generate(a) => a.json,
            LavitCommand::Train(_) | LavitCommand::Prune(_) => false,
            LavitCommand::Eval(a) => a.json,
        }
    }
}

/// Arguments of `vidgen lavit tokenize`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenizeArgs {
    /// The video: a file (GIF; other containers with the `ffmpeg` feature) or a frame folder.
    pub video: PathBuf,
    /// The pipeline folder (default: the shipped miniature).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The token file to write.
    #[arg(long, default_value = "tokens.json")]
    pub out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `vidgen lavit detokenize`.
#[derive(Debug, Clone, clap::Args)]
pub struct DetokenizeArgs {
    /// The token file (`vidgen lavit tokenize`'s).
    pub tokens: PathBuf,
    /// The pipeline folder (default: the shipped miniature).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where to write the video: `.gif`, `.mp4` (ffmpeg feature) or a folder of PNGs.
    #[arg(long, default_value = "lavit.gif")]
    pub out: PathBuf,
    /// Seed of the detokenizer's noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `vidgen lavit generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// The prompt (`"a red square moves left"`); none: unconditional.
    #[arg(long)]
    pub prompt: Option<String>,
    /// A keyframe picture (PNG, or a GIF's first frame): image-to-video.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Clips (each `clip_frames` long; later clips continue from the previous one's last
    /// frame).
    #[arg(long, default_value_t = 1)]
    pub clips: usize,
    /// The pipeline folder (default: the shipped miniature).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where to write the video: `.gif`, `.mp4` (ffmpeg feature) or a folder of PNGs.
    #[arg(long, default_value = "lavit.gif")]
    pub out: PathBuf,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `vidgen lavit train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Output folder (a pipeline folder; copy it to ship).
    #[arg(long, default_value = "lavit-mini-train")]
    pub out: PathBuf,
    /// Master seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training videos (one clip each).
    #[arg(long)]
    pub videos: Option<usize>,
    /// More videos for the LLM only (kept as tokens).
    #[arg(long)]
    pub lm_videos: Option<usize>,
    /// Steps of the keyframe tokenizer through its quantiser (after its warm-up).
    #[arg(long)]
    pub keyframe_steps: Option<usize>,
    /// Steps of the motion tokenizer.
    #[arg(long)]
    pub motion_steps: Option<usize>,
    /// Steps of the LLM.
    #[arg(long)]
    pub lm_steps: Option<usize>,
    /// Steps of the detokenizer.
    #[arg(long)]
    pub detok_steps: Option<usize>,
    /// Also condition the detokenizer on the keyframe carried along the decoded motion, at
    /// this multiple of the factor the motion's normalisation implies (default 0: off,
    /// Video-LaVIT's conditioning alone; measured at 1.5 in the miniature's README).
    #[arg(long)]
    pub detok_warp_gain: Option<f64>,
    /// Width of the LLM (a multiple of 64: heads of 32 channels, half as many key / value
    /// heads, a SwiGLU twice as wide).
    #[arg(long)]
    pub lm_width: Option<usize>,
    /// Decoder layers of the LLM.
    #[arg(long)]
    pub lm_layers: Option<usize>,
    /// A few steps per phase (a smoke run; the result is untrained).
    #[arg(long)]
    pub quick: bool,
    /// The full CLIP tokenizer folder to prune (default: the vendored
    /// `fixtures/clip_tokenizer/openai/tokenizer`).
    #[arg(long)]
    pub clip_tokenizer: Option<PathBuf>,
    /// Load the phases already finished in OUT (an interrupted run with the same options)
    /// instead of training them again.
    #[arg(long)]
    pub resume: bool,
    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `vidgen lavit prune`.
#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    /// The pipeline folder whose `keyframe_tokenizer/` is pruned (rewritten in place, with
    /// `lavit.json`'s vocabulary layout).
    #[arg(long)]
    pub model: PathBuf,
    /// The largest drop of the sample's round-trip PSNR, dB.
    #[arg(long, default_value_t = 1.0)]
    pub max_db: f64,
    /// Clips of the folder's world in the sample (frames 0, 3, …, 21 of each).
    #[arg(long, default_value_t = 64)]
    pub clips: usize,
    /// Seed of the sample's clips.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Arguments of `vidgen lavit eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The pipeline folder (default: the shipped miniature).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prompts per condition.
    #[arg(long, default_value_t = 200)]
    pub prompts: usize,
    /// Episode stream (apart from the training seeds).
    #[arg(long, default_value_t = 2024)]
    pub seed: u64,
    /// Conditions (default: all): `instructed`, `no-text`, `image`.
    #[arg(long, value_delimiter = ',')]
    pub conditions: Vec<String>,
    /// Held-out clips for the tokenizer and detokenizer reports (0: skip them).
    #[arg(long, default_value_t = 64)]
    pub clips: usize,
    /// Write every generated clip as a GIF and `episodes.json` here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `vidgen lavit` command; returns its JSON report.
///
/// # Errors
/// Model, tokenizer, training and I/O errors, naming the file or flag.
pub fn run(cmd: &LavitCommand) -> Result<serde_json::Value> {
    match cmd {
        LavitCommand::Tokenize(a) => run_tokenize(a),
        LavitCommand::Detokenize(a) => run_detokenize(a),
        LavitCommand::Generate(a) => run_generate(a),
        LavitCommand::Train(a) => run_train(a),
        LavitCommand::Eval(a) => run_eval(a),
        LavitCommand::Prune(a) => run_prune(a),
    }
}

fn load(model: &Option<PathBuf>) -> Result<LavitPipeline> {
    let dir = model.clone().unwrap_or_else(shipped_dir);
    LavitPipeline::load(&dir, &Device::Cpu)
}

fn to_json(v: &impl serde::Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::invalid("report", e.to_string()))
}

fn write_video(path: &Path, v: &vidgen_video_io::Video) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    write_output(path, v)
}

fn run_tokenize(a: &TokenizeArgs) -> Result<serde_json::Value> {
    let pipe = load(&a.model)?;
    let video = read_video(&a.video, None)?;
    let t0 = Instant::now();
    let tokens = pipe.tokenize(&video)?;
    write_token_file(&a.out, &tokens)?;
    let per_clip: Vec<(usize, usize)> = tokens
        .sequence
        .clips
        .iter()
        .map(|c| (c.keyframe.len(), c.motion.len()))
        .collect();
    println!(
        "{}: {} frames at {} fps ({}x{}), keyframes at {:?}, {} clip(s)",
        a.video.display(),
        tokens.frames,
        tokens.fps,
        tokens.size[0],
        tokens.size[1],
        tokens.keyframes,
        per_clip.len()
    );
    for (i, (s, (k, m))) in tokens.spans.iter().zip(&per_clip).enumerate() {
        println!(
            "  clip {i}: frames {}..{} → {k} keyframe + {m} motion tokens",
            s.start,
            s.start + s.frames
        );
    }
    println!(
        "{} ids in all → {} ({:.2} s)",
        tokens.ids.len(),
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(serde_json::json!({
        "frames": tokens.frames,
        "keyframes": tokens.keyframes,
        "clips": per_clip.len(),
        "keyframe_tokens": per_clip.iter().map(|c| c.0).collect::<Vec<_>>(),
        "motion_tokens": per_clip.iter().map(|c| c.1).collect::<Vec<_>>(),
        "ids": tokens.ids.len(),
        "out": a.out,
    }))
}

fn run_detokenize(a: &DetokenizeArgs) -> Result<serde_json::Value> {
    let pipe = load(&a.model)?;
    let tokens = read_token_file(&a.tokens)?;
    let t0 = Instant::now();
    let v = pipe.detokenize(&tokens, a.seed, &mut |_, _| {})?;
    write_video(&a.out, &v)?;
    println!(
        "{} clip(s) → {} frames → {} ({:.1} s)",
        tokens.sequence.clips.len(),
        v.len(),
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(serde_json::json!({ "frames": v.len(), "out": a.out }))
}

fn run_generate(a: &GenerateArgs) -> Result<serde_json::Value> {
    let pipe = load(&a.model)?;
    let image = match &a.image {
        Some(p) => Some(super::read_picture(p)?),
        None => None,
    };
    if a.prompt.is_none() && image.is_none() {
        eprintln!("vidgen lavit generate: no --prompt and no --image: an unconditional video");
    }
    let t0 = Instant::now();
    let g = pipe.generate(
        a.prompt.as_deref(),
        image.as_ref(),
        a.clips,
        a.seed,
        None,
        &mut |_, _| {},
    )?;
    write_video(&a.out, &g.video)?;
    let tok_s: Vec<f64> = g
        .stats
        .iter()
        .map(|s| {
            (s.keyframe_tokens + s.motion_tokens) as f64 / (s.keyframe_s + s.motion_s).max(1e-9)
        })
        .collect();
    println!(
        "{} clip(s), {} frames → {} ({:.1} s; LLM {:.0} tokens/s)",
        a.clips,
        g.video.len(),
        a.out.display(),
        t0.elapsed().as_secs_f64(),
        tok_s.iter().sum::<f64>() / tok_s.len().max(1) as f64
    );
    Ok(serde_json::json!({
        "frames": g.video.len(),
        "out": a.out,
        "motion_tokens": g.sequence.clips.iter().map(|c| c.motion.len()).collect::<Vec<_>>(),
        "tokens_per_s": tok_s,
    }))
}

fn run_train(a: &TrainArgs) -> Result<serde_json::Value> {
    let mut o = if a.quick {
        LavitTrainOptions::quick()
    } else {
        LavitTrainOptions::default()
    }
    .with_seed(a.seed);
    if let Some(v) = a.videos {
        o.videos = v;
    }
    if let Some(v) = a.lm_videos {
        o.lm_videos = v;
    }
    if let Some(v) = a.keyframe_steps {
        o.keyframe.vq_steps = v;
    }
    if let Some(v) = a.motion_steps {
        o.motion_train.steps = v;
    }
    if let Some(v) = a.lm_steps {
        o.lm_train.steps = v;
    }
    if let Some(v) = a.detok_steps {
        o.detok_train.steps = v;
    }
    if let Some(g) = a.detok_warp_gain {
        if !(g.is_finite() && g >= 0.0) {
            return Err(Error::invalid(
                "--detok-warp-gain",
                format!("{g}: must be a finite number ≥ 0 (0: off)"),
            ));
        }
        o.detok_warp_gain = g;
    }
    if let Some(w) = a.lm_width {
        if w == 0 || w % 64 != 0 {
            return Err(Error::invalid(
                "--lm-width",
                format!("{w} is not a positive multiple of 64 (heads of 32 channels, half as many key / value heads)"),
            ));
        }
        o.lm.hidden = w;
        o.lm.intermediate = 2 * w;
        o.lm.heads = w / 32;
        o.lm.kv_heads = w / 64;
    }
    if let Some(v) = a.lm_layers {
        if v == 0 {
            return Err(Error::invalid("--lm-layers", "must be at least 1"));
        }
        o.lm.layers = v;
    }
    let tok = a.clip_tokenizer.clone().unwrap_or_else(clip_tokenizer_dir);
    let r = train_mini(&o, &tok, &a.out, !a.quiet, a.resume)?;
    println!(
        "data: {} videos in {:.0} s; {} more for the LLM in {:.0} s",
        o.videos, r.data_seconds, o.lm_videos, r.lm_data_seconds
    );
    for p in &r.phases {
        println!(
            "{}: {} steps in {:.0} s, loss {:.4} -> {:.4} ({} parameters)",
            p.phase, p.steps, p.seconds, p.loss_first, p.loss_last, p.params
        );
    }
    println!(
        "keyframe tokenizer: round trip {:.1} dB PSNR, {} codes used; motion tokenizer: EPE {:.3} cells ({:.3} on moving vectors of mean length {:.3}), {} / {} codes",
        r.keyframe_psnr,
        r.keyframe_codes_used,
        r.motion.epe,
        r.motion.epe_moving,
        r.motion.moving_magnitude,
        r.motion.codes_used,
        r.motion.num_codes
    );
    if let Some(c) = r.object_cells {
        println!(
            "detokenizer: {:.1}% of the latent cells weighted as object",
            100.0 * c
        );
    }
    println!(
        "vidgen lavit train: done in {:.0} s into {}",
        r.seconds,
        a.out.display()
    );
    to_json(&r)
}

fn run_prune(a: &PruneArgs) -> Result<serde_json::Value> {
    use rand::SeedableRng;
    let mut cfg = vidgen_pipelines::lavit::LavitConfig::load(&a.model)?;
    if a.clips == 0 {
        return Err(Error::invalid("--clips", "needs at least one clip"));
    }
    if !(a.max_db.is_finite() && a.max_db >= 0.0) {
        return Err(Error::invalid(
            "--max-db",
            format!("{}: needs a finite value ≥ 0 (dB)", a.max_db),
        ));
    }
    let world = vidgen_pipelines::lavit::LavitWorld::new(cfg.world.clone())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let videos = (0..a.clips)
        .map(|_| world.sample(1, &mut rng))
        .collect::<Result<Vec<_>>>()?;
    let sample: Vec<&vidgen_video_io::Video> = videos.iter().map(|v| &v.video).collect();
    let kf_dir = a.model.join("keyframe_tokenizer");
    let r = vidgen_pipelines::lavit::keyframe::prune_keyframe_tokenizer(
        &kf_dir,
        &sample,
        a.max_db,
        &Device::Cpu,
    )?;
    cfg.layout.image = r.codes_after;
    cfg.save(&a.model)?;
    println!(
        "keyframe tokenizer: {} -> {} codes ({} used by the sample of {} frames); round trip {:.2} -> {:.2} dB; tokens changed between sampled frames {:.1} -> {:.1} per keyframe",
        r.codes_before,
        r.codes_after,
        r.used_before,
        r.frames,
        r.psnr_before,
        r.psnr_after,
        r.changed_per_frame_before,
        r.changed_per_frame_after
    );
    println!(
        "the LLM and the detokenizer in {} were trained on the unpruned codes: remove llm/, detokenizer/ and their loss-*.csv, then `vidgen lavit train --out {} --resume`",
        a.model.display(),
        a.model.display()
    );
    to_json(&r)
}

fn run_eval(a: &EvalArgs) -> Result<serde_json::Value> {
    let pipe = load(&a.model)?;
    let mut o = EvalOptions {
        prompts: a.prompts,
        seed: a.seed,
        clips: a.clips,
        ..EvalOptions::default()
    };
    if !a.conditions.is_empty() {
        o.conditions = a.conditions.iter().map(|c| c.trim().to_string()).collect();
    }
    let r = evaluate(&pipe, &o, a.out.as_deref(), true)?;
    println!("{}", format_report(&r));
    to_json(&r)
}
