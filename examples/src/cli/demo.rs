//! `vidgen demo`: every shipped miniature run and measured in one go, printed as one table
//! (system, task, what is measured with its Wilson 95 % interval, the baseline, time).
//!
//! The episode counts are sized so that the whole demo takes about two minutes on two cores;
//! each miniature's own `eval` command runs the full ≥ 200-episode measurement with GIFs and
//! `episodes.json`. A miniature that is not shipped yet, or whose inputs are missing (VIMI
//! needs the all-MiniLM-L6-v2 weights from the registry package), gets a row saying so.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use vidgen_video_core::Result;

use crate::aidmini::eval::{eval_episodes, run_condition, Condition as AidCondition, EvalOptions};
use crate::minis::report::Proportion;
use crate::vidicl::eval::{Condition as IclCondition, Pipeline as IclPipeline};
use crate::vidicl::motion::default_estimator;

/// Arguments of `vidgen demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Vid-ICL episodes per condition (fast: a few seconds for 200).
    #[arg(long, default_value_t = 200)]
    pub icl_episodes: usize,
    /// Episodes per condition of the sharper (32×32, VQGAN) Vid-ICL miniature.
    #[arg(long, default_value_t = 200)]
    pub icl32_episodes: usize,
    /// AID episodes per condition.
    #[arg(long, default_value_t = 64)]
    pub aid_episodes: usize,
    /// VIDiff clips per condition (the kinds of edit cycle).
    #[arg(long, default_value_t = 24)]
    pub vidiff_clips: usize,
    /// VIMI prompts per condition.
    #[arg(long, default_value_t = 100)]
    pub vimi_prompts: usize,
    /// Video-LaVIT prompts per condition.
    #[arg(long, default_value_t = 100)]
    pub lavit_prompts: usize,
    /// Evaluation stream (disjoint from every miniature's training streams).
    #[arg(long, default_value_t = 2024)]
    pub seed: u64,
    /// The all-MiniLM-L6-v2 folder VIMI's prompt encoder loads (default: the registry
    /// package's cache, `$VIDGEN_WEIGHTS/all-minilm-l6-v2`).
    #[arg(long)]
    pub minilm: Option<PathBuf>,
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One row of the demo's table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The system.
    pub system: String,
    /// The miniature's task.
    pub task: String,
    /// What is measured.
    pub measure: String,
    /// The figure (None: not run, see `note`).
    pub figure: Option<Proportion>,
    /// The baseline: its label and figure.
    pub baseline: Option<(String, Proportion)>,
    /// Chance for a model that ignores the condition.
    pub chance: Option<f64>,
    /// Wall seconds (load included).
    pub seconds: f64,
    /// Why a row has no figure, or what to read into it.
    pub note: String,
}

fn pct(p: &Proportion) -> String {
    format!(
        "{:.1}% [{:.1}, {:.1}]",
        100.0 * p.rate(),
        100.0 * p.low,
        100.0 * p.high
    )
}

fn icl_row(a: &Args) -> Result<Row> {
    let t0 = Instant::now();
    let pipe = IclPipeline::load(crate::vidicl::shipped_weights())?;
    let est = default_estimator();
    let run = |c: IclCondition| {
        pipe.evaluate(c, a.icl_episodes, a.seed, 100, est.as_ref(), 0, |_| {})
            .map(|(rep, _)| rep)
    };
    let (with_demo, no_demo) = (run(IclCondition::Same)?, run(IclCondition::NoDemo)?);
    Ok(imitation_row(
        "Vid-ICL",
        "demo clip + resting query → continuation",
        (with_demo.hits, with_demo.episodes),
        (no_demo.hits, no_demo.episodes),
        t0,
    ))
}

/// A Vid-ICL row: `(hits, episodes)` with a same-way demo and without a demo.
fn imitation_row(
    system: &str,
    task: &str,
    with_demo: (usize, usize),
    no_demo: (usize, usize),
    t0: Instant,
) -> Row {
    Row {
        system: system.into(),
        task: task.into(),
        measure: "moves the demo's way".into(),
        figure: Some(Proportion::new(with_demo.0, with_demo.1)),
        baseline: Some(("no demo".into(), Proportion::new(no_demo.0, no_demo.1))),
        chance: Some(0.125),
        seconds: t0.elapsed().as_secs_f64(),
        note: String::new(),
    }
}

fn icl32_row(a: &Args) -> Result<Row> {
    use crate::vidicl::sharp::{evaluate, shipped_mini32, Cond, EvalOptions as SharpEval, Sharp};
    let t0 = Instant::now();
    let sharp = Sharp::load(shipped_mini32())?;
    let est = default_estimator();
    let opts = SharpEval {
        episodes: a.icl32_episodes,
        seed: a.seed,
        ..SharpEval::default()
    };
    let run =
        |c: Cond| evaluate(&sharp, c, &opts, est.as_ref(), None, None, |_| {}).map(|(rep, _)| rep);
    let (with_demo, no_demo) = (run(Cond::Same)?, run(Cond::NoDemo)?);
    Ok(imitation_row(
        "Vid-ICL 32",
        "VQGAN 32 px: demo + resting query → 4 frames",
        (with_demo.hits, with_demo.episodes),
        (no_demo.hits, no_demo.episodes),
        t0,
    ))
}

fn aid_row(a: &Args) -> Result<Row> {
    let t0 = Instant::now();
    let dir = crate::aidmini::shipped_dir();
    let cfg = crate::aidmini::MiniConfig::load(&dir)?;
    let pipe = crate::aidmini::folder::load_pipeline(&dir)?;
    let eps = crate::aidmini::Episodes::new(&cfg)?;
    let episodes = eval_episodes(&eps, a.seed, a.aid_episodes)?;
    let opts = EvalOptions {
        episodes: a.aid_episodes,
        seed: a.seed,
        sweep: Vec::new(),
        references: false,
        ..EvalOptions::default()
    };
    let run = |label: &str, text: bool| {
        let cond = AidCondition {
            label: label.into(),
            text,
            text_guidance: cfg.text_guidance,
        };
        run_condition(&pipe, &cfg, &cond, &episodes, &opts, &mut |_, _, _| {})
    };
    let instructed = run("instructed", true)?;
    let no_text = run("no-text", false)?;
    Ok(Row {
        system: "AID".into(),
        task: "2 resting frames + \"move <dir>\" → 8 frames".into(),
        measure: "moves the instructed way".into(),
        figure: Some(instructed.direction),
        baseline: Some(("no text".into(), no_text.direction)),
        chance: Some(0.125),
        seconds: t0.elapsed().as_secs_f64(),
        note: format!("identity kept {}", pct(&instructed.identity)),
    })
}

fn vimi_row(a: &Args) -> Result<Row> {
    use vidgen_pipelines::vimi::eval::{evaluate, Condition, EvalOptions};
    let t0 = Instant::now();
    let minilm = a
        .minilm
        .clone()
        .unwrap_or_else(vidgen_pipelines::vimi::default_minilm_dir);
    let pipe = vidgen_pipelines::vimi::VimiPipeline::load(&super::vimi::shipped_dir(), &minilm)?;
    let opts = EvalOptions {
        prompts: a.vimi_prompts,
        seed: a.seed,
        steps: 10,
        index_size: 200,
        conditions: vec![Condition::Retrieved, Condition::NoExample],
        ..EvalOptions::default()
    };
    let rep = evaluate(&pipe, &opts, None, &mut |_, _, _| {})?;
    let find = |c: Condition| rep.conditions.iter().find(|r| r.condition == c);
    let (Some(r), Some(n)) = (find(Condition::Retrieved), find(Condition::NoExample)) else {
        return Err(vidgen_video_core::Error::invalid(
            "vimi eval",
            "a condition is missing from its report",
        ));
    };
    Ok(Row {
        system: "VIMI".into(),
        task: "ambiguous prompt + retrieved example → clip".into(),
        measure: "object (colour + shape) as the example".into(),
        figure: Some(Proportion::new(r.object, r.n)),
        baseline: Some(("no example".into(), Proportion::new(n.object, n.n))),
        chance: Some(r.chance[0]),
        seconds: t0.elapsed().as_secs_f64(),
        note: format!(
            "motion follows the text {}",
            pct(&Proportion::new(r.direction, r.n))
        ),
    })
}

fn vidiff_row(a: &Args) -> Result<Row> {
    use crate::vidiffmini::eval::{evaluate, EvalOptions};
    let t0 = Instant::now();
    let dir = crate::vidiffmini::shipped_dir();
    let cfg = crate::vidiffmini::MiniConfig::load(&dir)?;
    let pipe = crate::vidiffmini::folder::load_pipeline(&dir)?;
    let opts = EvalOptions {
        episodes: a.vidiff_clips,
        long_episodes: 0,
        seed: a.seed,
        references: false,
        ..EvalOptions::default()
    };
    let rep = evaluate(&pipe, &cfg, &opts, &mut |_| {})?;
    let find = |c: &str| rep.conditions.iter().find(|r| r.condition == c);
    let (Some(r), Some(n)) = (find("instructed"), find("no-instruction")) else {
        return Err(vidgen_video_core::Error::invalid(
            "vidiff eval",
            "a condition is missing from its report",
        ));
    };
    Ok(Row {
        system: "VIDiff".into(),
        task: "clip + \"make it blue\" / swatch → edited clip".into(),
        measure: "edit applied and motion kept".into(),
        figure: Some(r.both),
        baseline: Some(("no instruction".into(), n.both)),
        chance: None,
        seconds: t0.elapsed().as_secs_f64(),
        note: format!(
            "edit applied {}, motion kept {}",
            pct(&r.edit_applied),
            pct(&r.motion_kept)
        ),
    })
}

fn lavit_row(a: &Args) -> Result<Row> {
    use vidgen_pipelines::lavit::eval::{evaluate, EvalOptions};
    let t0 = Instant::now();
    let pipe = vidgen_pipelines::lavit::LavitPipeline::load(
        super::lavit::shipped_dir(),
        &candle_core::Device::Cpu,
    )?;
    let opts = EvalOptions {
        prompts: a.lavit_prompts,
        seed: a.seed,
        conditions: vec!["instructed".into(), "no-text".into()],
        clips: 0,
    };
    let rep = evaluate(&pipe, &opts, None, false)?;
    let find = |c: &str| rep.conditions.iter().find(|r| r.condition == c);
    let (Some(r), Some(n)) = (find("instructed"), find("no-text")) else {
        return Err(vidgen_video_core::Error::invalid(
            "lavit eval",
            "a condition is missing from its report",
        ));
    };
    Ok(Row {
        system: "Video-LaVIT".into(),
        task: "prompt → keyframe + motion tokens → clip".into(),
        measure: "moves the prompt's way".into(),
        figure: Some(Proportion::new(r.direction, r.n)),
        baseline: Some(("no text".into(), Proportion::new(n.direction, n.n))),
        chance: Some(r.chance[0]),
        seconds: t0.elapsed().as_secs_f64(),
        note: format!(
            "colour as prompted {}, shape {}",
            pct(&Proportion::new(r.colour, r.n)),
            pct(&Proportion::new(r.shape, r.n))
        ),
    })
}

fn missing(system: &str, task: &str, note: &str) -> Row {
    Row {
        system: system.into(),
        task: task.into(),
        measure: String::new(),
        figure: None,
        baseline: None,
        chance: None,
        seconds: 0.0,
        note: note.into(),
    }
}

/// Runs every miniature; a failing one becomes a row naming its error.
fn rows(a: &Args, progress: &mut dyn FnMut(&str)) -> Vec<Row> {
    let mut out = Vec::new();
    type Runner = fn(&Args) -> Result<Row>;
    let runners: [(&str, &str, Runner); 6] = [
        (
            "Vid-ICL",
            "demo clip + resting query → continuation",
            icl_row,
        ),
        (
            "Vid-ICL 32",
            "VQGAN 32 px: demo + resting query → 4 frames",
            icl32_row,
        ),
        ("AID", "2 resting frames + instruction → 8 frames", aid_row),
        ("VIMI", "prompt + retrieved example → clip", vimi_row),
        (
            "VIDiff",
            "source clip + edit instruction → edited clip",
            vidiff_row,
        ),
        (
            "Video-LaVIT",
            "prompt → keyframe + motion tokens → clip",
            lavit_row,
        ),
    ];
    for (system, task, f) in runners {
        progress(system);
        out.push(f(a).unwrap_or_else(|e| missing(system, task, &format!("not run: {e}"))));
    }
    out
}

/// Formats the table.
pub fn format_rows(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<12} {:<44} {:<38} {:<22} {:<32} {:>7}\n",
        "system", "task", "measured", "figure [95% Wilson]", "baseline", "time"
    );
    s.push_str(&format!("{}\n", "-".repeat(12 + 44 + 38 + 22 + 32 + 7 + 5)));
    for r in rows {
        let fig = r.figure.as_ref().map(pct).unwrap_or_else(|| "—".into());
        let base = match (&r.baseline, r.chance) {
            (Some((l, p)), Some(c)) => {
                format!("{l} {:.1}%, chance {:.1}%", 100.0 * p.rate(), 100.0 * c)
            }
            (Some((l, p)), None) => format!("{l} {:.1}%", 100.0 * p.rate()),
            (None, Some(c)) => format!("chance {:.1}%", 100.0 * c),
            (None, None) => "—".into(),
        };
        s.push_str(&format!(
            "{:<12} {:<44} {:<38} {:<22} {:<32} {:>6.1}s\n",
            r.system, r.task, r.measure, fig, base, r.seconds
        ));
        if !r.note.is_empty() {
            s.push_str(&format!("{:<12} {}\n", "", r.note));
        }
    }
    s
}

/// Runs the demo; returns its JSON report.
///
/// # Errors
/// None of its own: a miniature that fails is a row naming the error.
pub fn run(a: &Args) -> Result<serde_json::Value> {
    let t0 = Instant::now();
    let quiet = a.json;
    if !quiet {
        println!(
            "vidgen demo: every shipped miniature, run and measured (seed {})",
            a.seed
        );
    }
    let rows = rows(a, &mut |s| {
        if !quiet {
            eprintln!("  running {s} …");
        }
    });
    if !quiet {
        println!("{}", format_rows(&rows));
        println!(
            "  Full measurements (≥ 200 episodes, GIFs and episodes.json): `quickstart` (Vid-ICL), `vidicl-sharp eval` (Vid-ICL 32), \
             `vidgen aid eval`, `vidgen vimi eval`, `vidgen edit eval`, `vidgen lavit eval`. Total {:.0} s.",
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(serde_json::json!({
        "command": "demo",
        "rows": rows,
        "seconds": t0.elapsed().as_secs_f64(),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_demo_measures_every_shipped_miniature_in_one_table() {
        let a = Args {
            icl_episodes: 16,
            icl32_episodes: 8,
            aid_episodes: 4,
            vidiff_clips: 4,
            vimi_prompts: 2,
            lavit_prompts: 2,
            seed: 2024,
            minilm: None,
            json: true,
        };
        let rows = rows(&a, &mut |_| {});
        let names: Vec<&str> = rows.iter().map(|r| r.system.as_str()).collect();
        assert_eq!(
            names,
            [
                "Vid-ICL",
                "Vid-ICL 32",
                "AID",
                "VIMI",
                "VIDiff",
                "Video-LaVIT"
            ]
        );
        for r in [&rows[0], &rows[1], &rows[2], &rows[4], &rows[5]] {
            let f = r.figure.as_ref().expect("a figure");
            assert!(f.n > 0 && r.baseline.is_some(), "{}: {}", r.system, r.note);
        }
        // VIMI runs where the MiniLM weights are installed, and says why not elsewhere.
        assert!(rows[3].figure.is_some() || rows[3].note.starts_with("not run"));
        let table = format_rows(&rows);
        assert!(table.contains("Vid-ICL") && table.contains("Video-LaVIT"));
    }
}
