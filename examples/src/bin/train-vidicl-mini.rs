//! Trains the Vid-ICL miniature shipped in `examples/assets/vidicl-mini/`: a patch-VQ frame
//! tokenizer (k-means codebook) and a tiny Llama decoder on demo-then-query token sequences
//! from the synthetic world. Seeded: the same seed and flags give the same weights.
//!
//! ```text
//! cargo run --release -p examples --bin train-vidicl-mini -- --out examples/assets/vidicl-mini --seed 0
//! ```
//!
//! Flags: `--out DIR`, `--seed N`, `--steps N`, `--batch N`, `--lr X`, `--hidden N`,
//! `--layers N`, `--codes N`. Writes `mini.json`, `train.json`, `tokenizer/`, `decoder/`
//! (transformers layout), `loss.png` and `loss.csv` into `DIR`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use examples::vidicl::eval::{Condition, Pipeline};
use examples::vidicl::motion::default_estimator;
use examples::vidicl::train::{
    plot_losses, save_decoder, train_decoder, train_tokenizer, TrainOptions,
};
use examples::vidicl::world::{MiniConfig, MiniWorld};
use indicatif::{ProgressBar, ProgressStyle};
use vidgen_video_core::{Error, Result};

fn main() -> ExitCode {
    // Tiny matrices: worker threads cost more than they give (5× slower on a busy 2-core
    // machine), and one thread makes the run bit-reproducible.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T> {
    let v = v.ok_or_else(|| Error::invalid(flag, "needs a value"))?;
    v.parse()
        .map_err(|_| Error::invalid(flag, format!("cannot parse {v:?}")))
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

fn run() -> Result<()> {
    let mut opts = TrainOptions::default();
    let mut out = examples::vidicl::shipped_weights();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(parse::<String>(&a, args.next())?),
            "--seed" => opts.seed = parse(&a, args.next())?,
            "--steps" => opts.steps = parse(&a, args.next())?,
            "--batch" => opts.batch = parse(&a, args.next())?,
            "--lr" => opts.lr = parse(&a, args.next())?,
            "--hidden" => opts.hidden = parse(&a, args.next())?,
            "--intermediate" => opts.intermediate = parse(&a, args.next())?,
            "--layers" => opts.layers = parse(&a, args.next())?,
            "--codes" => opts.codes = parse(&a, args.next())?,
            "-h" | "--help" => {
                println!(
                    "usage: train-vidicl-mini [--out DIR] [--seed N] [--steps N] [--batch N] \
                     [--lr X] [--hidden N] [--intermediate N] [--layers N] [--codes N]"
                );
                return Ok(());
            }
            other => return Err(Error::invalid("argument", format!("unknown flag {other}"))),
        }
    }
    let t_all = Instant::now();
    let mini = MiniConfig::default();
    let world = MiniWorld::new(mini.clone())?;
    println!(
        "Vid-ICL miniature: {0}×{0} frames, {1}×{1} patches ({2} tokens/frame), demo {3} frames, \
         query {4} frame(s) at rest, {5} generated; seed {6}",
        mini.size,
        mini.patch,
        mini.tokens_per_frame(),
        mini.demo_frames,
        mini.query_frames,
        mini.gen_frames,
        opts.seed
    );
    std::fs::create_dir_all(&out).map_err(|e| Error::Io {
        path: out.clone(),
        source: e,
    })?;

    // 1. Tokenizer.
    let pb = bar(
        opts.tokenizer_episodes as u64,
        "[1/2] tokenizer  {bar:40} {pos}/{len} episodes {msg}",
    );
    let (tokenizer, km) = train_tokenizer(&world, &opts, |i| pb.set_position(i as u64))?;
    pb.finish_with_message(format!(
        "k-means: {} codes, {} iterations, inertia {:.1}",
        opts.codes, km.iterations, km.inertia
    ));
    tokenizer.save(out.join("tokenizer"))?;

    // 2. Decoder.
    let pb = bar(
        opts.steps as u64,
        "[2/2] decoder    {bar:40} {pos}/{len} steps  {elapsed_precise} (eta {eta})  {msg}",
    );
    let mut losses = Vec::with_capacity(opts.steps);
    let mut ema = f32::NAN;
    let (lm, vars) = train_decoder(&world, &tokenizer, &opts, |r| {
        losses.push(r.loss);
        ema = if ema.is_nan() {
            r.loss
        } else {
            0.98 * ema + 0.02 * r.loss
        };
        pb.set_position(r.step as u64 + 1);
        pb.set_message(format!("loss {ema:.4}  lr {:.1e}", r.lr));
        // Without a terminal the bar is hidden: log a line now and then instead.
        if pb.is_hidden() && (r.step + 1) % 100 == 0 {
            eprintln!(
                "step {:>5}/{}  loss {ema:.4}  lr {:.1e}  {:.0} s",
                r.step + 1,
                opts.steps,
                r.lr,
                t_all.elapsed().as_secs_f64()
            );
        }
    })?;
    pb.finish();
    save_decoder(&lm, &vars, out.join("decoder"))?;

    let write = |name: &str, text: String| -> Result<()> {
        let p = out.join(name);
        std::fs::write(&p, text).map_err(|e| Error::Io { path: p, source: e })
    };
    let json = |v: &dyn erased::Json| v.json();
    write("mini.json", json(&mini)? + "\n")?;
    write("train.json", json(&opts)? + "\n")?;
    let csv: String = std::iter::once("step,loss\n".to_string())
        .chain(losses.iter().enumerate().map(|(i, l)| format!("{i},{l}\n")))
        .collect();
    write("loss.csv", csv)?;
    vidgen_video_io::write_png(out.join("loss.png"), &plot_losses(&losses, 640, 320, 0.98)?)?;

    // A quick check with the saved files, through the same loader the quickstart uses.
    let pipe = Pipeline::load(&out)?;
    let est = default_estimator();
    let (rep, _) = pipe.evaluate(Condition::Same, 64, 12345, 64, est.as_ref(), 0, |_| {})?;
    println!(
        "done in {:.0} s: final loss {:.4}; check on 64 held-out episodes (a): {:.1}% of \
         continuations move the demo's way. Weights in {}",
        t_all.elapsed().as_secs_f64(),
        losses.last().copied().unwrap_or(f32::NAN),
        100.0 * rep.accuracy(),
        out.display()
    );
    Ok(())
}

mod erased {
    //! `serde_json::to_string_pretty` behind a trait object, for the two small files above.
    use vidgen_video_core::{Error, Result};

    pub trait Json {
        fn json(&self) -> Result<String>;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Result<String> {
            serde_json::to_string_pretty(self).map_err(|e| Error::config("json", e.to_string()))
        }
    }
}
