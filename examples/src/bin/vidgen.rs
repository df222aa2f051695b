//! `vidgen`: the command line of the vidgen workspace. One subcommand per pipeline; `--help`
//! on each lists its flags. Errors are printed as one line naming the file or flag, with exit
//! status 1 (2 for command-line mistakes, from clap).

use clap::{Parser, Subcommand};
use examples::cli;

#[derive(Parser)]
#[command(
    name = "vidgen",
    version,
    about = "Video generation systems on diffusers / transformers checkpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every shipped miniature (Vid-ICL, AID, VIMI, …) run and measured in about two
    /// minutes: one table of system, task, figure with its interval, baseline and time.
    Demo(cli::demo::Args),
    /// Stable Video Diffusion: an image → a video.
    Svd(cli::svd::Args),
    /// AID: conditioning frames + an instruction → the predicted video; `aid train` / `aid
    /// eval`: the AID miniature.
    Aid(cli::aid_mini::AidCommand),
    /// InstructPix2Pix: a picture + an instruction → the edited picture.
    Ip2p(cli::ip2p::Args),
    /// VIDiff: a video + an instruction (text and / or image) → the edited video, any length;
    /// `edit train` / `edit eval`: the VIDiff miniature.
    Edit(cli::edit_mini::EditCommand),
    /// AnimateDiff: a prompt → a video.
    Animate(cli::animate::Args),
    /// Vid-ICL: demo clip(s) + a query clip → the query's continuation (VQ tokenizer + Llama).
    Icl(cli::icl::Args),
    /// Video-LaVIT: keyframe + motion tokens through one LLM and a detokenizer back to video
    /// (tokenize / detokenize / generate / train / eval on the miniature).
    #[command(subcommand)]
    Lavit(cli::lavit::LavitCommand),
    /// VIMI: retrieval-augmented multimodal instructions (train / eval / generate / index /
    /// search on the miniature).
    #[command(subcommand)]
    Vimi(cli::vimi::VimiCommand),
    /// Diffusion training (recipes svd, aid, vidiff, animate, unet3d) on a folder of videos or
    /// the synthetic world: loss.csv, loss.png, checkpoints, exact --resume; data-parallel under
    /// `mpirun -np N` when built with the `mpi` feature.
    Train(cli::train::Args),
}

/// `vidgen aid …` / `vidgen edit …` without a miniature subcommand, parsed on their own.
/// `AidCommand` / `EditCommand` hold these as `Option<…>` flattened next to the subcommands,
/// and clap (4.5) leaves such an option `None` when the flattened struct itself flattens
/// another one (`Common`; clap-rs/clap#4697), so the pipeline runs are parsed again here.
#[derive(Parser)]
#[command(name = "vidgen")]
struct PipelineRun {
    #[command(subcommand)]
    command: PipelineCommand,
}

#[derive(Subcommand)]
enum PipelineCommand {
    Aid(cli::aid::Args),
    Edit(cli::edit::Args),
}

fn pipeline_run() -> (bool, vidgen_video_core::Result<serde_json::Value>) {
    match PipelineRun::parse().command {
        PipelineCommand::Aid(r) => (r.common.json, cli::aid::run(&r)),
        PipelineCommand::Edit(r) => (r.common.json, cli::edit::run(&r)),
    }
}

fn main() {
    // Training and sampling free and reallocate the same large buffers every step: keep them
    // in the heap instead of re-faulting fresh pages (see `keep_freed_memory`). Before any
    // allocation of note and before threads start.
    vidgen_trainer::keep_freed_memory();
    // Candle's element-wise ops on the calling thread instead of its own spinning pool beside
    // rayon's (see `prefer_rayon_threads`; measured: an AID-mini training step 1.36 → 1.22 s,
    // an AID eval 7.5 → 6.9 s on 2 cores). Before any tensor operation.
    vidgen_trainer::prefer_rayon_threads();
    let cli = Cli::parse();
    let (json, res) = match &cli.command {
        Command::Demo(a) => (a.json, cli::demo::run(a)),
        Command::Svd(a) => (a.common.json, cli::svd::run(a)),
        Command::Aid(a) => match (&a.mini, &a.run) {
            (Some(m), _) => (m.json(), cli::aid_mini::run(m)),
            (None, Some(r)) => (r.common.json, cli::aid::run(r)),
            (None, None) => pipeline_run(),
        },
        Command::Ip2p(a) => (a.common.json, cli::ip2p::run(a)),
        Command::Edit(a) => match (&a.mini, &a.run) {
            (Some(m), _) => (m.json(), cli::edit_mini::run(m)),
            (None, Some(r)) => (r.common.json, cli::edit::run(r)),
            (None, None) => pipeline_run(),
        },
        Command::Animate(a) => (a.common.json, cli::animate::run(a)),
        Command::Icl(a) => (a.common.json, cli::icl::run(a)),
        Command::Lavit(c) => (c.json(), cli::lavit::run(c)),
        Command::Vimi(c) => (c.json(), cli::vimi::run(c)),
        Command::Train(a) => (a.json, cli::train::run(a)),
    };
    match res {
        Ok(report) => {
            // `null`: a data-parallel rank other than 0, which reports nothing.
            if json && !report.is_null() {
                println!("{report}");
            }
        }
        Err(e) => {
            eprintln!("vidgen: {e}");
            std::process::exit(1);
        }
    }
}
