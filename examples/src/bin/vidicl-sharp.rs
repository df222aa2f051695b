//! The sharper Vid-ICL miniature (32×32 frames, a VQGAN tokenizer, 4 generated frames), its two
//! training recipes, the paper's evaluations and the simulator loop:
//!
//! ```text
//! # train (each step seeded; see examples/assets/vidicl-mini32/README.md); the defaults are
//! # the shipped runs (decoders: 5000 steps of 32 sequences, ~25 min each on 2 threads)
//! cargo run --release -p examples --bin vidicl-sharp -- tokenizer --out DIR      # trains, then prunes the codebook
//! RAYON_NUM_THREADS=2 cargo run --release -p examples --bin vidicl-sharp -- train --recipe paired --tokenizer DIR --out DIR
//! RAYON_NUM_THREADS=2 cargo run --release -p examples --bin vidicl-sharp -- train --recipe zero-shot --tokenizer DIR --out DIR_ZS
//! cargo run --release -p examples --bin vidicl-sharp -- idm --out DIR
//! cargo run --release -p examples --bin vidicl-sharp -- halve --out DIR          # f16 weights, as shipped
//! # evaluate both recipes side by side, write GIFs + episodes.json
//! cargo run --release -p examples --bin vidicl-sharp -- eval --out vidicl-eval
//! # the simulator loop (RoboDesk analogue)
//! cargo run --release -p examples --bin vidicl-sharp -- sim --out vidicl-sim
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use examples::vidicl::classifier::PairClassifier;
use examples::vidicl::instruct::{InstructionEncoder, TextEncoderSpec};
use examples::vidicl::motion::default_estimator;
use examples::vidicl::recipes::{train_lm, LmOptions, Recipe, Structure};
use examples::vidicl::sharp::{
    evaluate, format_table, shipped_mini32, shipped_zeroshot, strip, tokenizer_ceiling,
    truth_clips, write_samples, Cond, CondReport, EvalOptions, FeatureNets, FrechetReference,
    Judges, Sharp,
};
use examples::vidicl::sim::{self, Policy, SimOptions};
use examples::vidicl::train::plot_losses;
use examples::vidicl::vqgan::{
    prune_codebook, save_vqgan, train_vqgan, usage, write_with_codebook, PruneReport, Vqgan,
    VqganOptions,
};
use examples::vidicl::world32::{World32, World32Config};
use indicatif::{ProgressBar, ProgressStyle};
use vidgen_video_core::{Error, Result};

#[derive(Parser)]
#[command(
    name = "vidicl-sharp",
    about = "The sharper Vid-ICL miniature: train, evaluate, simulate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the VQGAN tokenizer (writes OUT/tokenizer, OUT/world.json), then prune its
    /// near-duplicate codes.
    Tokenizer(TokArgs),
    /// Prune the near-duplicate codes of an already trained tokenizer (OUT/tokenizer, in
    /// place; the `tokenizer` command's last phase). Decoders trained on the old codebook no
    /// longer fit it.
    Prune(PruneArgs),
    /// Train a decoder by one recipe (writes OUT/decoder, OUT/train.json).
    Train(TrainArgs),
    /// Store a miniature folder's weights as f16 (tokenizer/, decoder/, idm/; loaders read
    /// them as f32): how the shipped folders are made, at half the size.
    Halve(HalveArgs),
    /// Train the simulator's inverse dynamics on random rollouts (writes OUT/idm).
    Idm(IdmArgs),
    /// The paper's evaluations on one or more miniatures, side by side.
    Eval(EvalArgs),
    /// The simulator loop: model + inverse dynamics vs a random policy and an oracle.
    Sim(SimArgs),
}

#[derive(clap::Args)]
struct HalveArgs {
    /// The miniature folder.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct PruneArgs {
    /// The miniature folder (reads world.json; rewrites tokenizer/, writes
    /// tokenizer_prune.json).
    #[arg(long, default_value_os_t = shipped_mini32())]
    out: PathBuf,
    /// The largest round-trip PSNR loss allowed, in dB.
    #[arg(long, default_value_t = 1.0)]
    prune_db: f64,
}

#[derive(clap::Args)]
struct IdmArgs {
    /// The miniature folder (reads tokenizer/, world.json; writes idm/).
    #[arg(long, default_value_os_t = shipped_mini32())]
    out: PathBuf,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Random rollouts to train on.
    #[arg(long, default_value_t = 4000)]
    rollouts: usize,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Miniature folders (default: the shipped paired and zero-shot ones).
    #[arg(long)]
    weights: Vec<PathBuf>,
    /// Episodes per condition.
    #[arg(long, default_value_t = 200)]
    episodes: usize,
    /// The evaluation stream (disjoint from training).
    #[arg(long, default_value_t = 2024)]
    seed: u64,
    /// Episodes per generation batch.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Episodes scored by FID / FVD per condition.
    #[arg(long, default_value_t = 50)]
    fid_clips: usize,
    /// Skip FID / FVD.
    #[arg(long)]
    no_fid: bool,
    /// Demo protocol only (no text conditions).
    #[arg(long)]
    no_text: bool,
    /// Write every generated clip as a GIF, `episodes.json`, strips and `report.json` here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// GIF strips (demo | query | generated | truth) per condition with `--out`.
    #[arg(long, default_value_t = 2)]
    strips: usize,
}

#[derive(clap::Args)]
struct SimArgs {
    /// The miniature folder (with idm/; trained on the fly when missing).
    #[arg(long, default_value_os_t = shipped_mini32())]
    weights: PathBuf,
    /// Episodes per policy.
    #[arg(long, default_value_t = 200)]
    episodes: usize,
    /// The task stream.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Most pushes per episode.
    #[arg(long, default_value_t = 8)]
    max_steps: usize,
    /// Pushes executed per generated continuation.
    #[arg(long, default_value_t = 4)]
    execute: usize,
    /// Episodes per generation batch.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Write episode GIFs, `episodes.json` and `report.json` here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct TokArgs {
    /// Output folder.
    #[arg(long, default_value_os_t = shipped_mini32())]
    out: PathBuf,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Quantised steps (after the warm-up).
    #[arg(long)]
    steps: Option<usize>,
    /// Autoencoder warm-up steps.
    #[arg(long)]
    warmup: Option<usize>,
    /// Frames per step.
    #[arg(long)]
    batch: Option<usize>,
    /// After training, remove near-duplicate codes while the round trip loses at most this
    /// many dB (0: keep every code); see `vqgan::prune_codebook`.
    #[arg(long, default_value_t = 1.0)]
    prune_db: f64,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// `paired` or `zero-shot`.
    #[arg(long, value_parser = parse_recipe, default_value = "paired")]
    recipe: Recipe,
    /// Output folder (default: the shipped folder of the recipe).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A folder with `tokenizer/` and `world.json` to train on (default: OUT); both are
    /// copied into OUT when it is another folder.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Optimiser steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Sequences per step.
    #[arg(long)]
    batch: Option<usize>,
    /// Decoder width.
    #[arg(long)]
    hidden: Option<usize>,
    /// Decoder layers.
    #[arg(long)]
    layers: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Paired recipe: train without instruction prefixes.
    #[arg(long)]
    no_text: bool,
    /// Continue from this decoder folder (f32 weights of the same architecture) instead of
    /// the seeded initialisation.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Put the loss on the query clip's tokens only (the continuation), not on the demos'.
    #[arg(long)]
    query_loss_only: bool,
    /// Loss weight of the query clip's tokens that changed since the previous frame (the
    /// moving object's cells; 1: a plain mean).
    #[arg(long)]
    changed_weight: Option<f32>,
}

fn parse_recipe(s: &str) -> std::result::Result<Recipe, String> {
    match s {
        "paired" => Ok(Recipe::Paired),
        "zero-shot" | "zeroshot" => Ok(Recipe::ZeroShot),
        o => Err(format!("unknown recipe {o:?} (paired, zero-shot)")),
    }
}

fn main() -> ExitCode {
    // Small matrices: worker threads cost more than they give on a busy machine, and one
    // thread keeps runs bit-reproducible.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let cli = Cli::parse();
    let res = match &cli.command {
        Command::Tokenizer(a) => tokenizer(a),
        Command::Prune(a) => prune(a),
        Command::Halve(a) => halve(a),
        Command::Train(a) => train(a),
        Command::Idm(a) => idm(a),
        Command::Eval(a) => eval(a),
        Command::Sim(a) => sim(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vidicl-sharp: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

fn write(path: &Path, text: String) -> Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::Io {
            path: p.to_path_buf(),
            source: e,
        })?;
    }
    std::fs::write(path, text).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| Error::config("json", e.to_string()))
}

/// Logs a line every `every` steps when the bar is hidden (no terminal).
fn log_hidden(pb: &ProgressBar, step: usize, total: usize, every: usize, msg: &str, t0: Instant) {
    if pb.is_hidden() && (step + 1).is_multiple_of(every) {
        eprintln!(
            "step {:>5}/{total}  {msg}  {:.0} s",
            step + 1,
            t0.elapsed().as_secs_f64()
        );
    }
}

fn tokenizer(a: &TokArgs) -> Result<()> {
    let t0 = Instant::now();
    let mut opts = VqganOptions {
        seed: a.seed,
        ..VqganOptions::default()
    };
    if let Some(v) = a.steps {
        opts.steps = v;
    }
    if let Some(v) = a.warmup {
        opts.warmup_steps = v;
    }
    if let Some(v) = a.batch {
        opts.batch = v;
    }
    let wcfg = World32Config::default();
    let world = World32::new(wcfg.clone())?;
    let total = opts.warmup_steps + opts.steps;
    let pb = bar(
        total as u64,
        "tokenizer {bar:40} {pos}/{len} steps {elapsed_precise} (eta {eta}) {msg}",
    );
    let mut rows = Vec::with_capacity(total);
    let mut ema = f32::NAN;
    let (_, tensors) = train_vqgan(&world, &opts, |s| {
        ema = if ema.is_nan() {
            s.mse
        } else {
            0.98 * ema + 0.02 * s.mse
        };
        let msg = format!(
            "mse {ema:.5} commit {:.4} perplexity {:.1} lr {:.1e}",
            s.commitment, s.perplexity, s.lr
        );
        pb.set_position(s.step as u64 + 1);
        pb.set_message(msg.clone());
        log_hidden(&pb, s.step, total, 50, &msg, t0);
        rows.push(s);
    })?;
    pb.finish();
    save_vqgan(
        &a.out.join("tokenizer"),
        &opts.config_json(wcfg.size as usize),
        &tensors,
    )?;
    write(&a.out.join("world.json"), json(&wcfg)?)?;
    write(&a.out.join("tokenizer_train.json"), json(&opts)?)?;
    let csv: String = std::iter::once("step,quantized,mse,commitment,perplexity,lr\n".to_string())
        .chain(rows.iter().map(|r| {
            format!(
                "{},{},{},{},{},{}\n",
                r.step,
                u8::from(r.quantized),
                r.mse,
                r.commitment,
                r.perplexity,
                r.lr
            )
        }))
        .collect();
    write(&a.out.join("tokenizer_loss.csv"), csv)?;
    let mses: Vec<f32> = rows.iter().map(|r| r.mse).collect();
    vidgen_video_io::write_png(
        a.out.join("tokenizer_loss.png"),
        &plot_losses(&mses, 640, 320, 0.95)?,
    )?;
    if a.prune_db > 0.0 {
        let rep = prune_folder(&world, &a.out.join("tokenizer"), a.prune_db)?;
        write(&a.out.join("tokenizer_prune.json"), json(&rep)?)?;
    }
    // Held-out check through the saved folder.
    let back = Vqgan::load(a.out.join("tokenizer"))?;
    let frames = world.tokenizer_frames(987_654, 30)?;
    let rt = back.round_trip(&frames)?;
    let (mut sq, mut n) = (0f64, 0usize);
    for (x, y) in frames.iter().zip(&rt) {
        for (p, q) in x.data().iter().zip(y.data()) {
            let d = (*p as f64 - *q as f64) / 255.0;
            sq += d * d;
            n += 1;
        }
    }
    let u = usage(&back, &frames)?;
    println!(
        "tokenizer done in {:.0} s: held-out round trip PSNR {:.2} dB over {} frames, {} of {} codes \
         used (perplexity {:.1}); saved in {}",
        t0.elapsed().as_secs_f64(),
        -10.0 * (sq / n.max(1) as f64).log10(),
        frames.len(),
        u.histogram.iter().filter(|&&c| c > 0).count(),
        back.vocab_size(),
        u.perplexity(),
        a.out.join("tokenizer").display()
    );
    Ok(())
}

fn halve(a: &HalveArgs) -> Result<()> {
    let mut n = 0;
    for sub in ["tokenizer", "decoder", "idm"] {
        let Ok(rd) = std::fs::read_dir(a.out.join(sub)) else {
            continue;
        };
        for entry in rd.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "safetensors") {
                vidgen_video_nn::record::halve_safetensors(&p)?;
                n += 1;
            }
        }
    }
    if n == 0 {
        return Err(Error::invalid(
            "--out",
            format!(
                "no weights under {}/{{tokenizer,decoder,idm}}",
                a.out.display()
            ),
        ));
    }
    println!("{n} weight files stored as f16 in {}", a.out.display());
    Ok(())
}

fn prune(a: &PruneArgs) -> Result<()> {
    if !(a.prune_db > 0.0 && a.prune_db.is_finite()) {
        return Err(Error::invalid(
            "--prune-db",
            "must be a positive number of dB",
        ));
    }
    let wcfg: World32Config = vidgen_video_core::loading::read_config(a.out.join("world.json"))?;
    let world = World32::new(wcfg)?;
    let rep = prune_folder(&world, &a.out.join("tokenizer"), a.prune_db)?;
    write(&a.out.join("tokenizer_prune.json"), json(&rep)?)
}

/// Prunes the tokenizer folder `dir` in place on 64 paired episodes of a stream disjoint
/// from training and evaluation (their demo clips and query + continuation clips), and
/// prints what it did.
fn prune_folder(world: &World32, dir: &Path, max_db: f64) -> Result<PruneReport> {
    let tok = Vqgan::load(dir)?;
    let mut rng = vidgen_video_io::synth::seeded_rng(4242);
    let mut clips = Vec::new();
    for _ in 0..64 {
        let e = world.train_episode(&mut rng)?;
        if let Some(d) = &e.demo {
            clips.push(d.frames().to_vec());
        }
        let mut q = e.query.frames().to_vec();
        q.extend(e.truth.frames().iter().cloned());
        clips.push(q);
    }
    let (codebook, rep) = prune_codebook(&tok, &clips, max_db)?;
    write_with_codebook(dir, dir, &codebook)?;
    println!(
        "pruned the codebook: {} → {} codes ({} used by the sample), round trip {:.2} → {:.2} dB, \
         tokens changed between consecutive frames {:.1} → {:.1} of {}",
        rep.codes_before,
        rep.codes_after,
        rep.used_before,
        rep.psnr_before,
        rep.psnr_after,
        rep.changed_per_frame_before,
        rep.changed_per_frame_after,
        tok.grid() * tok.grid()
    );
    Ok(rep)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::Io {
        path: to.to_path_buf(),
        source: e,
    })?;
    let rd = std::fs::read_dir(from).map_err(|e| Error::Io {
        path: from.to_path_buf(),
        source: e,
    })?;
    for entry in rd.flatten() {
        let p = entry.path();
        if p.is_file() {
            let dst = to.join(entry.file_name());
            std::fs::copy(&p, &dst).map_err(|e| Error::Io {
                path: dst,
                source: e,
            })?;
        }
    }
    Ok(())
}

fn train(a: &TrainArgs) -> Result<()> {
    let t0 = Instant::now();
    let out = a.out.clone().unwrap_or_else(|| match a.recipe {
        Recipe::Paired => shipped_mini32(),
        Recipe::ZeroShot => shipped_zeroshot(),
    });
    let src = a.tokenizer.clone().unwrap_or_else(|| out.clone());
    if src != out {
        copy_dir(&src.join("tokenizer"), &out.join("tokenizer"))?;
        std::fs::create_dir_all(&out).map_err(|e| Error::Io {
            path: out.clone(),
            source: e,
        })?;
        let dst = out.join("world.json");
        std::fs::copy(src.join("world.json"), &dst).map_err(|e| Error::Io {
            path: dst,
            source: e,
        })?;
    }
    let wcfg: World32Config = vidgen_video_core::loading::read_config(out.join("world.json"))?;
    let world = World32::new(wcfg)?;
    let tok = Vqgan::load(out.join("tokenizer"))?.with_cache();
    let mut opts = LmOptions {
        seed: a.seed,
        ..LmOptions::new(a.recipe)
    };
    if let Some(v) = a.steps {
        opts.steps = v;
    }
    if let Some(v) = a.batch {
        opts.batch = v;
    }
    if let Some(v) = a.hidden {
        opts.hidden = v;
        opts.intermediate = 2 * v;
    }
    if let Some(v) = a.layers {
        opts.layers = v;
    }
    if let Some(v) = a.lr {
        opts.lr = v;
    }
    if a.no_text {
        opts.text = false;
    }
    opts.init = a.init.clone();
    opts.query_loss_only = a.query_loss_only;
    if let Some(w) = a.changed_weight {
        opts.changed_weight = w;
    }
    let spec = TextEncoderSpec::default();
    let table = if opts.text {
        Some(InstructionEncoder::with_vendored_tokenizer(&spec)?.direction_table()?)
    } else {
        None
    };
    println!(
        "Vid-ICL sharper miniature, recipe {}: {} steps of {} sequences, Llama {} layers × {} wide{}",
        a.recipe.name(),
        opts.steps,
        opts.batch,
        opts.layers,
        opts.hidden,
        if opts.text { ", with instruction prefixes" } else { "" }
    );
    let pb = bar(
        opts.steps as u64,
        "decoder {bar:40} {pos}/{len} steps {elapsed_precise} (eta {eta}) {msg}",
    );
    let mut losses = Vec::with_capacity(opts.steps);
    let mut kinds = Vec::with_capacity(opts.steps);
    let mut ema = f32::NAN;
    let trained = train_lm(&world, &tok, table.as_deref(), &opts, |s| {
        ema = if ema.is_nan() {
            s.loss
        } else {
            0.98 * ema + 0.02 * s.loss
        };
        let msg = format!("loss {ema:.4} lr {:.1e}", s.lr);
        pb.set_position(s.step as u64 + 1);
        pb.set_message(msg.clone());
        log_hidden(&pb, s.step, opts.steps, 50, &msg, t0);
        losses.push(s.loss);
        kinds.push(s.structure);
    })?;
    pb.finish();
    trained.save(&out.join("decoder"))?;
    write(&out.join("train.json"), json(&opts)?)?;
    if opts.text {
        write(&out.join("text_encoder.json"), json(&spec)?)?;
    }
    let csv: String = std::iter::once("step,structure,loss\n".to_string())
        .chain(losses.iter().zip(&kinds).enumerate().map(|(i, (l, k))| {
            let k = match k {
                Structure::Demo => "demo",
                Structure::TextDemo => "text+demo",
                Structure::TextOnly => "text",
                Structure::Clip => "clip",
            };
            format!("{i},{k},{l}\n")
        }))
        .collect();
    write(&out.join("loss.csv"), csv)?;
    vidgen_video_io::write_png(out.join("loss.png"), &plot_losses(&losses, 640, 320, 0.98)?)?;
    println!(
        "done in {:.0} s: final loss {:.4}; weights in {}",
        t0.elapsed().as_secs_f64(),
        losses.last().copied().unwrap_or(f32::NAN),
        out.display()
    );
    Ok(())
}

fn idm(a: &IdmArgs) -> Result<()> {
    let t0 = Instant::now();
    let wcfg: World32Config = vidgen_video_core::loading::read_config(a.out.join("world.json"))?;
    let world = World32::new(wcfg)?;
    let tok = Vqgan::load(a.out.join("tokenizer"))?.with_cache();
    let (model, vars, acc) = sim::train_idm(&world, Some(&tok), a.seed, a.rollouts)?;
    model.save(&vars, &a.out.join("idm"))?;
    println!(
        "inverse dynamics trained on {} random rollouts in {:.0} s: {:.1}% of 500 held-out pushes \
         recognised; saved in {}",
        a.rollouts,
        t0.elapsed().as_secs_f64(),
        100.0 * acc,
        a.out.join("idm").display()
    );
    Ok(())
}

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

fn eval(a: &EvalArgs) -> Result<()> {
    let t0 = Instant::now();
    let dirs = if a.weights.is_empty() {
        vec![shipped_mini32(), shipped_zeroshot()]
    } else {
        a.weights.clone()
    };
    let est = default_estimator();
    let nets = if a.no_fid {
        None
    } else {
        match FeatureNets::load(None)? {
            Ok(n) => Some(n),
            Err(why) => {
                println!("note: {why}");
                None
            }
        }
    };
    let opts = EvalOptions {
        episodes: a.episodes,
        seed: a.seed,
        batch: a.batch,
        keep: if a.out.is_some() { a.episodes } else { 0 },
        frechet_clips: a.fid_clips.min(a.episodes),
        ..EvalOptions::default()
    };
    let mut records = Vec::new();
    let mut json_models = Vec::new();
    for dir in &dirs {
        let sharp = Sharp::load(dir)?;
        let name = sharp.recipe().name();
        let c = sharp.world.config();
        println!(
            "== {} ({}): frames {}×{} px, {} tokens/frame, codebook {}, Llama {} layers × {}, \
             demo {} frames, query {} frame at rest, {} generated",
            dir.display(),
            name,
            c.size,
            c.size,
            c.tokens_per_frame(),
            sharp.tokenizer.vocab_size(),
            sharp.lm.model().config().num_hidden_layers,
            sharp.lm.model().config().hidden_size,
            c.demo_frames,
            c.query_frames,
            c.gen_frames
        );
        let judges = Judges::train(&sharp, 77, 1000, 300)?;
        let (ceil_psnr, ceil_ssim, rt_clips) = tokenizer_ceiling(&sharp, a.seed, a.episodes)?;
        let scorer = {
            let mut hits = 0;
            for i in 0..a.episodes as u64 {
                let e = sharp.world.episode(a.seed, i, |_, _| None)?;
                let mut run: Vec<&vidgen_video_io::Frame> = e.query.frames().iter().collect();
                run.extend(e.truth.frames());
                hits += usize::from(est.direction(&run)? == Some(e.query_direction));
            }
            hits as f64 / a.episodes.max(1) as f64
        };
        let reference = match &nets {
            Some(n) => {
                let truth = truth_clips(&sharp.world, a.seed, opts.frechet_clips)?;
                let r = FrechetReference::new(n, &truth)?;
                let floor = r.score(
                    n,
                    &truth_clips(&sharp.world, a.seed + 1, opts.frechet_clips)?,
                )?;
                let rt = r.score(n, &rt_clips[..opts.frechet_clips])?;
                println!(
                    "   FID / FVD on {} clips: real vs other real clips {:.1} / {:.1}; tokenizer round \
                     trip {:.1} / {:.1}",
                    opts.frechet_clips, floor.fid, floor.fvd, rt.fid, rt.fvd
                );
                Some((r, floor, rt))
            }
            None => None,
        };
        let mut conds: Vec<Cond> = Cond::PROTOCOL.to_vec();
        if sharp.text.is_some() && !a.no_text {
            conds.extend(Cond::TEXT);
        }
        let mut reports: Vec<CondReport> = Vec::new();
        for cond in conds {
            let pb = bar(a.episodes as u64, "   {prefix:<26} {bar:30} {pos}/{len}");
            pb.set_prefix(cond.label());
            let (rep, samples) = evaluate(
                &sharp,
                cond,
                &opts,
                est.as_ref(),
                Some(&judges),
                nets.as_ref().zip(reference.as_ref().map(|r| &r.0)),
                |n| pb.set_position(n as u64),
            )?;
            pb.finish_and_clear();
            if let Some(out) = &a.out {
                records.extend(write_samples(
                    out,
                    name,
                    &sharp.world,
                    a.seed,
                    cond,
                    &samples,
                )?);
                for s in samples.iter().take(a.strips) {
                    let p =
                        out.join("strips")
                            .join(format!("{name}-{}-{}.gif", cond.slug(), s.index));
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| Error::Io {
                            path: parent.to_path_buf(),
                            source: e,
                        })?;
                    }
                    vidgen_video_io::write_gif(&p, &strip(&sharp.world, s, 4)?)?;
                }
            }
            reports.push(rep);
        }
        println!("{}", format_table(&reports));
        println!(
            "   follows demo*: the generated object moves the demo's way (the instruction's in (e); \
             the ground truth's in (d), which nothing reveals); 8 directions, chance 12.5%.\n   \
             vs truth: moves the ground truth's way (the instruction's way in (g)).  The scorer \
             (motion-codec frame_shift) finds the true direction of {} of ground truths.\n   \
             Tokenizer round trip of the ground truth: PSNR {ceil_psnr:.2} dB, SSIM {ceil_ssim:.3}.\n   \
             probe: eval-metrics LinearProbe on frozen tokenizer-encoder features, {} on held-out \
             real clips; classif.: action classifier, {} on held-out real clips; both vs the demo's \
             direction.",
            pct(scorer),
            pct(judges.probe_real.value),
            pct(judges.classifier_real.value),
        );
        json_models.push(serde_json::json!({
            "weights": dir,
            "recipe": name,
            "conditions": reports,
            "tokenizer_round_trip": {"psnr": ceil_psnr, "ssim": ceil_ssim},
            "scorer_on_truth": scorer,
            "probe_on_real": judges.probe_real.value,
            "classifier_on_real": judges.classifier_real.value,
            "frechet_real_floor": reference.as_ref().map(|r| r.1),
            "frechet_tokenizer": reference.as_ref().map(|r| r.2),
        }));
    }
    if let Some(out) = &a.out {
        write(&out.join("episodes.json"), json(&records)?)?;
        write(
            &out.join("report.json"),
            json(&serde_json::json!({
                "episodes": a.episodes,
                "seed": a.seed,
                "models": json_models,
            }))?,
        )?;
        println!(
            "   GIFs, episodes.json, report.json and strips in {}",
            out.display()
        );
    }
    println!("   total {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}

fn sim(a: &SimArgs) -> Result<()> {
    let t0 = Instant::now();
    let sharp = Sharp::load(&a.weights)?;
    let idm_dir = a.weights.join("idm");
    let idm = if idm_dir.join("config.json").is_file() {
        PairClassifier::load(&idm_dir)?
    } else {
        println!(
            "note: no {}; training the inverse dynamics now",
            idm_dir.display()
        );
        sim::train_idm(&sharp.world, Some(&sharp.tokenizer), 0, 4000)?.0
    };
    let opts = SimOptions {
        episodes: a.episodes,
        seed: a.seed,
        max_steps: a.max_steps,
        execute: a.execute,
        batch: a.batch,
        ..SimOptions::default()
    };
    println!(
        "simulator: push one object to one of 8 walls / corners within {} pushes; the model sees a \
         demo of the task and the current frame, generates {} frames, the inverse dynamics turns \
         them into pushes ({} executed per generation); {} episodes of stream {}",
        a.max_steps,
        sharp.world.config().gen_frames,
        opts.execute.min(sharp.world.config().gen_frames),
        a.episodes,
        a.seed
    );
    let mut reports = Vec::new();
    let mut records = Vec::new();
    for policy in [Policy::Model, Policy::Random, Policy::Oracle] {
        let pb = bar(a.episodes as u64, "   {prefix:<26} {bar:30} {pos}/{len}");
        pb.set_prefix(policy.name());
        let (rep, logs) = sim::run(&sharp, Some(&idm), policy, &opts, |n| {
            pb.set_position(n as u64)
        })?;
        pb.finish_and_clear();
        if let Some(out) = &a.out {
            records.extend(sim::write_episodes(out, &sharp.world, policy, &logs)?);
        }
        reports.push(rep);
    }
    println!("{}", sim::format_table(&reports));
    if let Some(m) = reports.first() {
        println!(
            "   model policy: generation {:.0} tokens/s; frames/s counts every pushed frame over the \
             whole loop (generation, decoding, inverse dynamics, environment).",
            m.tokens_per_s
        );
    }
    if let Some(out) = &a.out {
        write(&out.join("episodes.json"), json(&records)?)?;
        write(&out.join("report.json"), json(&reports)?)?;
        println!(
            "   episode GIFs (demo | observations), episodes.json, report.json in {}",
            out.display()
        );
    }
    println!("   total {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}
