//! Does a 32×32 Vid-ICL decoder *rank* the demo's direction first, even where its greedy
//! continuation is empty? For each episode of the evaluation stream, the query's continuation
//! is rendered for each of the 8 directions (the world's physics, walls included) and scored by
//! the decoder's mean next-token cross-entropy over the continuation's frames (teacher
//! forcing). The episode counts as "ranks the target first" when the lowest loss is the
//! condition's target direction. A decoder that has not learned to read the demo sits at
//! chance (12.5%); one that has, but whose greedy decoding collapses to background (an
//! uncertain object position loses to the background token cell by cell), ranks above it.
//!
//! ```text
//! cargo run --release -p examples --example vidicl32_likelihood_probe -- DIR [EPISODES] [SEED]
//! ```

use std::path::PathBuf;

use candle_core::DType;
use examples::vidicl::eval::wilson;
use examples::vidicl::recipes::{prompt32, stack_text};
use examples::vidicl::sharp::{target, Cond, Sharp};
use examples::vidicl::world::{mix, Episode};
use rand::Rng;
use vidgen_llama_video::{LossOn, TrainBatch};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{seeded_rng, Direction};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).ok_or_else(|| Error::invalid("args", "DIR"))?);
    let n: u64 = args
        .get(2)
        .map_or(Ok(200), |s| s.parse())
        .map_err(|e| Error::invalid("EPISODES", format!("{e}")))?;
    let seed: u64 = args
        .get(3)
        .map_or(Ok(2024), |s| s.parse())
        .map_err(|e| Error::invalid("SEED", format!("{e}")))?;
    let sharp = Sharp::load(&dir)?;
    let world = &sharp.world;
    let conds = [Cond::Same, Cond::Opposite, Cond::NoDemo, Cond::TextOnly];
    for cond in conds {
        if cond.has_text() && sharp.text.is_none() {
            continue;
        }
        let mut hits = 0usize;
        let mut truth_hits = 0usize;
        let mut margin = 0f64;
        for i in 0..n {
            let e = world.episode(seed, i, |truth, rng| cond.demo_direction(truth, rng))?;
            // Replays the query's draws of `World32::episode` to re-render its continuation.
            let mut q_rng = seeded_rng(mix(seed, i, 100));
            let _ = Direction::ALL[q_rng.random_range(0..8)];
            let sprite = world.sprite(&mut q_rng, None)?;
            let start = world.query_start(&mut q_rng);
            let mut losses = Vec::with_capacity(8);
            for d in Direction::ALL {
                let (_, truth) = world.query(&sprite, start, d)?;
                let cand = Episode { truth, ..e.clone() };
                let text = if cond.has_text() {
                    let (_, table) = sharp
                        .text
                        .as_ref()
                        .ok_or_else(|| Error::invalid("text", "none"))?;
                    Some(stack_text(table, &[e.query_direction])?)
                } else {
                    None
                };
                let p = prompt32(&sharp.tokenizer, &[&cand], e.demo.is_some(), true, text)?;
                let batch = TrainBatch::from_prompts(&[p], LossOn::Query)?;
                let l = sharp
                    .lm
                    .loss(&batch)?
                    .to_dtype(DType::F32)?
                    .to_scalar::<f32>()?;
                losses.push(l as f64);
            }
            let best = (0..8)
                .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
                .unwrap_or(0);
            let want = target(cond, &e);
            let wi = Direction::ALL.iter().position(|&d| d == want).unwrap_or(0);
            let ti = Direction::ALL
                .iter()
                .position(|&d| d == e.query_direction)
                .unwrap_or(0);
            hits += usize::from(best == wi);
            truth_hits += usize::from(best == ti);
            let mut sorted = losses.clone();
            sorted.sort_by(f64::total_cmp);
            margin += losses[wi] - sorted[0];
        }
        let (lo, hi) = wilson(hits, n as usize, 1.96);
        println!(
            "{:<28} ranks target first {:5.1}% [{:5.1}, {:5.1}]  ranks truth first {:5.1}%  mean loss gap to best {:.4}",
            cond.label(),
            100.0 * hits as f64 / n as f64,
            100.0 * lo,
            100.0 * hi,
            100.0 * truth_hits as f64 / n as f64,
            margin / n as f64
        );
    }
    Ok(())
}
