//! The simulator loop (Vid-ICL's RoboDesk "push red" analogue) on the sharper miniature's
//! world.
//!
//! - **Environment**: one object on the 32×32 table; an action pushes it one cell in one of 8
//!   directions (blocked axes do not move: it slides along walls). A **task** is a goal region,
//!   one of the 8 walls / corners: "push to the left wall" (its box touches the left wall),
//!   "push to the top-left corner"...
//! - **Inverse dynamics** ([`train_idm`]): a [`PairClassifier`] from a frame pair to the push
//!   that moved the object (8 directions, or "no move"), trained on random rollouts of the
//!   environment (random positions, objects and pushes); half of its training frames go
//!   through the tokenizer's round trip, as generated frames do.
//! - **An episode** ([`run`]): a demo video of the task (another object pushed towards the
//!   goal) and the current observation form the prompt; the decoder generates the
//!   continuation; the inverse dynamics turns consecutive frames (observation → first
//!   generated frame → …) into pushes; the environment executes them; this repeats from the
//!   new observation until the goal is reached or the step budget is spent.
//! - **Baselines**: a random policy (a uniformly random push every step) and an oracle (the
//!   goal's direction every step), on the same episodes.

use std::path::Path;
use std::time::Instant;

use rand::Rng;
use serde::Serialize;
use vidgen_llama_video::SamplingConfig;
use vidgen_motion_codec::direction_of;
use vidgen_video_core::{Error, Result};
use vidgen_video_io::grid::GridStyle;
use vidgen_video_io::synth::{seeded_rng, Direction};
use vidgen_video_io::{side_by_side, Frame, Video};

use super::classifier::{pair_features, ClassifierConfig, PairClassifier};
use super::eval::upscale;
use super::io_err;
use super::sharp::Sharp;
use super::world::{mix, Episode};
use super::world32::{Pos, Sprite32, World32};

/// Class of "the object did not move" in the inverse dynamics' output (8 directions come first,
/// in [`Direction::ALL`] order).
pub const NO_MOVE: usize = 8;

/// Which wall or corner the object must reach.
pub fn in_goal(world: &World32, p: Pos, goal: Direction) -> bool {
    let n = world.config().positions() - 1;
    let (dx, dy) = goal.delta();
    let ok_x = match dx {
        1 => p.x == n,
        -1 => p.x == 0,
        _ => true,
    };
    let ok_y = match dy {
        1 => p.y == n,
        -1 => p.y == 0,
        _ => true,
    };
    ok_x && ok_y
}

/// The task's words ("push to the top-left corner").
pub fn task_name(goal: Direction) -> &'static str {
    match goal {
        Direction::Right => "push to the right wall",
        Direction::UpRight => "push to the top-right corner",
        Direction::Up => "push to the top wall",
        Direction::UpLeft => "push to the top-left corner",
        Direction::Left => "push to the left wall",
        Direction::DownLeft => "push to the bottom-left corner",
        Direction::Down => "push to the bottom wall",
        Direction::DownRight => "push to the bottom-right corner",
    }
}

fn class_of(d: Option<Direction>) -> usize {
    d.and_then(|d| Direction::ALL.iter().position(|&x| x == d))
        .unwrap_or(NO_MOVE)
}

/// Random rollouts for the inverse dynamics: `n` (frame, next frame, push class) triples from
/// random positions, objects and pushes (the label is the displacement actually made, so a
/// push that slides along a wall is labelled by its slide, and a blocked one "no move").
/// With `tokenizer`, a random half of the pairs are passed through its round trip.
pub fn rollouts(
    world: &World32,
    tokenizer: Option<&super::vqgan::Vqgan>,
    seed: u64,
    n: usize,
) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
    let mut rng = seeded_rng(seed);
    let np = world.config().positions();
    let size = world.config().size as usize;
    let (mut pairs, mut labels, mut through) = (Vec::new(), Vec::new(), Vec::new());
    let mut sprite = world.sprite(&mut rng, None)?;
    for i in 0..n {
        if i % 8 == 0 {
            sprite = world.sprite(&mut rng, None)?;
        }
        let p = Pos {
            x: rng.random_range(0..np),
            y: rng.random_range(0..np),
        };
        // One in ten pairs shows no push at all.
        let q = if rng.random_bool(0.1) {
            p
        } else {
            world.push(p, Direction::ALL[rng.random_range(0..8)])
        };
        let moved = direction_of((q.x - p.x) as f32, (q.y - p.y) as f32);
        pairs.push((world.frame(&sprite, p)?, world.frame(&sprite, q)?));
        labels.push(class_of(moved));
        through.push(tokenizer.is_some() && rng.random_bool(0.5));
    }
    if let Some(tok) = tokenizer {
        let idx: Vec<usize> = (0..n).filter(|&i| through[i]).collect();
        let frames: Vec<Frame> = idx
            .iter()
            .flat_map(|&i| [pairs[i].0.clone(), pairs[i].1.clone()])
            .collect();
        let rt = tok.round_trip(&frames)?;
        for (k, &i) in idx.iter().enumerate() {
            pairs[i] = (rt[2 * k].clone(), rt[2 * k + 1].clone());
        }
    }
    let feats = pairs
        .iter()
        .map(|(a, b)| pair_features(a, b, size))
        .collect::<Result<Vec<_>>>()?;
    Ok((feats, labels))
}

/// Trains the inverse dynamics on `n` random rollouts of stream `seed` (see [`rollouts`]).
/// Returns the model, its variables (to save) and its accuracy on 500 held-out rollouts.
pub fn train_idm(
    world: &World32,
    tokenizer: Option<&super::vqgan::Vqgan>,
    seed: u64,
    n: usize,
) -> Result<(PairClassifier, candle_nn::VarMap, f64)> {
    let (x, y) = rollouts(world, tokenizer, mix(seed, 3, 1), n)?;
    let cfg = ClassifierConfig {
        seed: mix(seed, 3, 2),
        ..ClassifierConfig::new(world.config().size as usize, 9)
    };
    let (idm, vars) = PairClassifier::train(&cfg, &x, &y)?;
    let (tx, ty) = rollouts(world, tokenizer, mix(seed, 3, 3), 500)?;
    let pred = idm.predict(&tx)?;
    let acc = pred.iter().zip(&ty).filter(|(a, b)| a == b).count() as f64 / ty.len() as f64;
    Ok((idm, vars, acc))
}

/// Who acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Demo + observation → generated continuation → inverse dynamics → pushes.
    Model,
    /// A uniformly random push every step.
    Random,
    /// The goal's direction every step.
    Oracle,
}

impl Policy {
    /// Name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Model => "model + inverse dynamics",
            Policy::Random => "random policy",
            Policy::Oracle => "oracle",
        }
    }

    /// Slug.
    pub fn slug(self) -> &'static str {
        match self {
            Policy::Model => "model",
            Policy::Random => "random",
            Policy::Oracle => "oracle",
        }
    }
}

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Episodes (indices `0..episodes` of stream `seed`; every policy sees the same tasks).
    pub episodes: usize,
    /// The task stream.
    pub seed: u64,
    /// Most pushes per episode (the farthest goal needs `positions − 1`).
    pub max_steps: usize,
    /// Pushes executed from each generated continuation before generating again (at most the
    /// world's `gen_frames`).
    pub execute: usize,
    /// Episodes run together (one generation batch).
    pub batch: usize,
    /// Sampling of the decoder.
    pub sampling: SamplingConfig,
}

impl Default for SimOptions {
    /// 200 episodes of stream 7, 8 pushes at most, 4 pushes per generation, batches of 50,
    /// greedy.
    fn default() -> Self {
        SimOptions {
            episodes: 200,
            seed: 7,
            max_steps: 8,
            execute: 4,
            batch: 50,
            sampling: SamplingConfig::greedy(),
        }
    }
}

/// One episode's task: goal, start, the agent's object and the demo video.
#[derive(Debug, Clone)]
pub struct Task {
    /// Index in the stream.
    pub index: u64,
    /// The goal region.
    pub goal: Direction,
    /// The object's start (outside the goal).
    pub start: Pos,
    /// The object pushed.
    pub sprite: Sprite32,
    /// Another object pushed towards the goal.
    pub demo: Video,
}

/// Task `index` of stream `seed`.
pub fn task(world: &World32, seed: u64, index: u64) -> Result<Task> {
    let mut rng = seeded_rng(mix(seed, index, 200));
    let goal = Direction::ALL[rng.random_range(0..8)];
    let sprite = world.sprite(&mut rng, None)?;
    let np = world.config().positions();
    let mut start = Pos { x: 0, y: 0 };
    for _ in 0..256 {
        start = Pos {
            x: rng.random_range(0..np),
            y: rng.random_range(0..np),
        };
        if !in_goal(world, start, goal) {
            break;
        }
    }
    let demo_sprite = world.sprite(&mut rng, Some(&sprite))?;
    let demo = world.demo(&mut rng, &demo_sprite, goal)?;
    Ok(Task {
        index,
        goal,
        start,
        sprite,
        demo,
    })
}

/// What happened in one episode.
#[derive(Debug, Clone)]
pub struct EpisodeLog {
    /// The task.
    pub task: Task,
    /// Pushes executed (`None`: the inverse dynamics saw no move and nothing was pushed).
    pub actions: Vec<Option<Direction>>,
    /// Observations: the start, then one per executed step.
    pub frames: Vec<Frame>,
    /// Whether the goal was reached within the budget.
    pub success: bool,
    /// Generation rounds (model policy).
    pub rounds: usize,
}

/// Success rate and cost of one policy.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// The policy.
    pub policy: Policy,
    /// Episodes.
    pub episodes: usize,
    /// Episodes that reached the goal.
    pub successes: usize,
    /// Wilson 95% interval of the success rate.
    pub interval: (f64, f64),
    /// Mean pushes of the successful episodes.
    pub mean_steps: f64,
    /// Environment frames per second of wall time (generation, decoding, inverse dynamics
    /// and stepping included).
    pub frames_per_s: f64,
    /// Generated tokens per second of generation time (model policy).
    pub tokens_per_s: f64,
    /// Seconds in all.
    pub seconds: f64,
}

/// Runs `opts.episodes` episodes of `policy` (see the module docs).
pub fn run(
    sharp: &Sharp,
    idm: Option<&PairClassifier>,
    policy: Policy,
    opts: &SimOptions,
    mut progress: impl FnMut(usize),
) -> Result<(SimReport, Vec<EpisodeLog>)> {
    let world = &sharp.world;
    let size = world.config().size as usize;
    if opts.episodes == 0 || opts.batch == 0 || opts.max_steps == 0 {
        return Err(Error::invalid(
            "episodes / batch / max_steps",
            "must be >= 1",
        ));
    }
    let execute = opts.execute.clamp(1, world.config().gen_frames);
    let t0 = Instant::now();
    let (mut gen_s, mut tokens) = (0f64, 0usize);
    let mut logs = Vec::with_capacity(opts.episodes);
    let mut act_rng = seeded_rng(mix(opts.seed, 0, 201));
    let mut start = 0;
    while start < opts.episodes {
        let n = opts.batch.min(opts.episodes - start);
        let mut eps: Vec<(EpisodeLog, Pos)> = (start..start + n)
            .map(|i| {
                let t = task(world, opts.seed, i as u64)?;
                let f0 = world.frame(&t.sprite, t.start)?;
                let p = t.start;
                Ok((
                    EpisodeLog {
                        task: t,
                        actions: Vec::new(),
                        frames: vec![f0],
                        success: false,
                        rounds: 0,
                    },
                    p,
                ))
            })
            .collect::<Result<_>>()?;
        loop {
            let active: Vec<usize> = (0..n)
                .filter(|&k| !eps[k].0.success && eps[k].0.actions.len() < opts.max_steps)
                .collect();
            if active.is_empty() {
                break;
            }
            // The pushes each active episode executes this round.
            let plans: Vec<Vec<Option<Direction>>> = match policy {
                Policy::Random => active
                    .iter()
                    .map(|_| vec![Some(Direction::ALL[act_rng.random_range(0..8)])])
                    .collect(),
                Policy::Oracle => active
                    .iter()
                    .map(|&k| vec![Some(eps[k].0.task.goal)])
                    .collect(),
                Policy::Model => {
                    let idm = idm.ok_or_else(|| {
                        Error::invalid("inverse dynamics", "the model policy needs one")
                    })?;
                    let prompts: Vec<Episode> = active
                        .iter()
                        .map(|&k| {
                            let log = &eps[k].0;
                            let obs = log
                                .frames
                                .last()
                                .cloned()
                                .ok_or_else(|| Error::invalid("episode", "no observation"))?;
                            let q = Video::new(vec![obs], world.config().fps)?;
                            Ok(Episode {
                                demo: Some(log.task.demo.clone()),
                                demo_direction: Some(log.task.goal),
                                query: q.clone(),
                                truth: q,
                                query_direction: log.task.goal,
                            })
                        })
                        .collect::<Result<_>>()?;
                    let refs: Vec<&Episode> = prompts.iter().collect();
                    let seed = mix(
                        opts.seed,
                        (start + active.len()) as u64,
                        eps[active[0]].0.rounds as u64,
                    );
                    let g = sharp.generate(&refs, true, None, &opts.sampling, seed)?;
                    gen_s += g.seconds;
                    tokens += g.tokens;
                    let mut feats = Vec::new();
                    for (k, v) in prompts.iter().zip(&g.videos) {
                        let mut prev = &k.query.frames()[0];
                        for f in v.frames().iter().take(execute) {
                            feats.push(pair_features(prev, f, size)?);
                            prev = f;
                        }
                    }
                    let classes = idm.predict(&feats)?;
                    classes
                        .chunks(execute)
                        .map(|c| c.iter().map(|&i| Direction::ALL.get(i).copied()).collect())
                        .collect()
                }
            };
            for (&k, plan) in active.iter().zip(plans) {
                let (log, pos) = &mut eps[k];
                log.rounds += 1;
                for a in plan {
                    if log.success || log.actions.len() >= opts.max_steps {
                        break;
                    }
                    if let Some(d) = a {
                        *pos = world.push(*pos, d);
                    }
                    log.actions.push(a);
                    log.frames.push(world.frame(&log.task.sprite, *pos)?);
                    log.success = in_goal(world, *pos, log.task.goal);
                }
            }
        }
        logs.extend(eps.into_iter().map(|(l, _)| l));
        start += n;
        progress(start);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let successes = logs.iter().filter(|l| l.success).count();
    let steps: usize = logs.iter().map(|l| l.actions.len()).sum();
    let ok_steps: Vec<usize> = logs
        .iter()
        .filter(|l| l.success)
        .map(|l| l.actions.len())
        .collect();
    let interval =
        vidgen_eval_metrics::wilson_interval(successes, logs.len(), vidgen_eval_metrics::Z95)?;
    Ok((
        SimReport {
            policy,
            episodes: logs.len(),
            successes,
            interval,
            mean_steps: ok_steps.iter().sum::<usize>() as f64 / ok_steps.len().max(1) as f64,
            frames_per_s: steps as f64 / seconds.max(1e-9),
            tokens_per_s: tokens as f64 / gen_s.max(1e-9),
            seconds,
        },
        logs,
    ))
}

/// The report table.
pub fn format_table(reports: &[SimReport]) -> String {
    let mut s = String::from(
        "policy                      episodes   success   Wilson 95%        mean pushes   frames/s\n\
         --------------------------  --------   -------   ---------------   -----------   --------\n",
    );
    for r in reports {
        s.push_str(&format!(
            "{:<26}  {:>8}   {:>6.1}%   [{:5.1}, {:5.1}]%   {:>11.2}   {:>8.1}\n",
            r.policy.name(),
            r.episodes,
            100.0 * r.successes as f64 / r.episodes.max(1) as f64,
            100.0 * r.interval.0,
            100.0 * r.interval.1,
            r.mean_steps,
            r.frames_per_s
        ));
    }
    s
}

/// One entry of the simulator's `episodes.json`.
#[derive(Debug, Clone, Serialize)]
pub struct SimRecord {
    /// GIF of the episode (demo | observations), relative to the output folder.
    pub file: String,
    /// The policy.
    pub policy: Policy,
    /// The task's words.
    pub task: String,
    /// The goal direction `[dx, dy]`.
    pub goal: [i32; 2],
    /// The start position in cells.
    pub start: [i64; 2],
    /// Whether the goal was reached.
    pub success: bool,
    /// The pushes, `[dx, dy]` each (`null`: no push).
    pub actions: Vec<Option<[i32; 2]>>,
}

/// Writes each episode as `DIR/<policy>/<index>.gif` (demo | observations, upscaled 4×) and
/// returns the records.
pub fn write_episodes(
    dir: &Path,
    world: &World32,
    policy: Policy,
    logs: &[EpisodeLog],
) -> Result<Vec<SimRecord>> {
    let sub = Path::new(policy.slug());
    std::fs::create_dir_all(dir.join(sub)).map_err(|e| io_err(&dir.join(sub), e))?;
    let fps = world.config().fps;
    let mut out = Vec::with_capacity(logs.len());
    for l in logs {
        let rel = sub.join(format!("{:04}.gif", l.task.index));
        let up = |fs: &[Frame]| -> Result<Video> {
            Video::new(
                fs.iter()
                    .map(|f| upscale(f, 4))
                    .collect::<Result<Vec<_>>>()?,
                fps,
            )
        };
        let strip = side_by_side(
            &[&up(l.task.demo.frames())?, &up(&l.frames)?],
            GridStyle {
                separator: 4,
                color: [255, 255, 255],
            },
        )?;
        vidgen_video_io::write_gif(dir.join(&rel), &strip)?;
        out.push(SimRecord {
            file: rel.to_string_lossy().replace('\\', "/"),
            policy,
            task: task_name(l.task.goal).into(),
            goal: [l.task.goal.delta().0, l.task.goal.delta().1],
            start: [l.task.start.x, l.task.start.y],
            success: l.success,
            actions: l
                .actions
                .iter()
                .map(|a| a.map(|d| [d.delta().0, d.delta().1]))
                .collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::vidicl::world32::World32Config;

    #[test]
    fn goals_and_tasks() {
        let w = World32::new(World32Config::default()).unwrap();
        assert!(in_goal(&w, Pos { x: 0, y: 3 }, Direction::Left));
        assert!(!in_goal(&w, Pos { x: 0, y: 3 }, Direction::UpLeft));
        assert!(in_goal(&w, Pos { x: 6, y: 6 }, Direction::DownRight));
        for i in 0..20 {
            let t = task(&w, 1, i).unwrap();
            assert!(!in_goal(&w, t.start, t.goal));
            assert_eq!(t.demo.len(), 3);
            // The oracle's pushes reach the goal within positions − 1 steps.
            let mut p = t.start;
            for _ in 0..6 {
                p = w.push(p, t.goal);
            }
            assert!(in_goal(&w, p, t.goal));
        }
    }

    #[test]
    fn rollout_labels_are_the_displacement() {
        let w = World32::new(World32Config::default()).unwrap();
        let (x, y) = rollouts(&w, None, 3, 64).unwrap();
        assert_eq!(x.len(), 64);
        assert!(y.iter().all(|&c| c <= NO_MOVE));
        assert!(y.contains(&NO_MOVE));
    }
}
