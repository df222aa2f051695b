//! Measuring a LaVIT miniature on its world.
//!
//! Episode `i` draws one prompt (colour, shape, direction) from the stream `seed`, the same in
//! every condition:
//!
//! | condition | prompt | keyframe | the object should be | the motion should be |
//! |---|---|---|---|---|
//! | `instructed` | `a red square moves left` | drawn by the LLM | the prompt's | the prompt's |
//! | `no-text` | none | drawn by the LLM | (chance) | (chance: the baseline) |
//! | `image` | `a red square moves left` | a real frame of the prompt's object at rest, given | the picture's (= the prompt's) | the prompt's |
//!
//! Every generated clip is read back: the direction by motion-codec's global motion over the
//! pairs of frames [`SCORER_STRIDE`] apart (8×8 blocks, full search ±4 px per frame between
//! them: the object moves 1 px per frame); the colour and
//! shape by [`read_frame`] on four frames (majority). Rates come with Wilson 95% intervals and
//! their chance levels.
//!
//! Held-out clips (`clips`) measure the two halves of the system apart from the LLM: the
//! motion tokenizer (end-point error of the reconstructed motion, code usage) and the
//! detokenizer (each clip decoded from its own ground-truth tokens: PSNR against the real clip,
//! next to a still baseline that repeats the decoded keyframe, and the direction read back).

use std::path::Path;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_motion_codec::{
    evaluate_reconstruction, video_global_motion, BlockMatchConfig, GlobalMotionConfig,
    ReconstructionReport, SearchMethod,
};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{Colour, Direction, Shape};
use vidgen_video_io::{write_gif, Frame, Video};

use super::keyframe::{frames_to_tensor, tensor_to_frames};
use super::motion::motion_of_clip;
use super::pipeline::{randn, LavitPipeline};
use super::world::{read_frame, LavitWorld, PromptSpec};
pub use crate::vimi::eval::episode_rng;
use crate::vimi::eval::{erased, wilson};

/// The evaluation's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalOptions {
    /// Prompts per condition.
    pub prompts: usize,
    /// Episode stream.
    pub seed: u64,
    /// Conditions by label, in report order.
    pub conditions: Vec<String>,
    /// Held-out clips for the tokenizer / detokenizer reports (0: skip).
    pub clips: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            prompts: 200,
            seed: 2024,
            conditions: CONDITIONS.iter().map(|c| c.to_string()).collect(),
            clips: 64,
        }
    }
}

/// Every condition, in report order.
pub const CONDITIONS: [&str; 3] = ["instructed", "no-text", "image"];

/// One condition's counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConditionReport {
    /// The label.
    pub condition: String,
    /// Episodes.
    pub n: usize,
    /// Direction (global motion) as the prompt says.
    pub direction: usize,
    /// Colour as the prompt says.
    pub colour: usize,
    /// Shape as the prompt says.
    pub shape: usize,
    /// Colour and shape.
    pub object: usize,
    /// Clips in which no motion was found (static or unreadable).
    pub static_clips: usize,
    /// Chance of `direction`, `colour`, `shape`, `object` for a generator that ignores the
    /// prompt.
    pub chance: [f64; 4],
    /// Mean seconds per generated clip.
    pub seconds_per_clip: f64,
}

impl ConditionReport {
    /// `(rate, Wilson low, Wilson high)` of a count.
    pub fn rate(&self, k: usize) -> (f64, f64, f64) {
        let (lo, hi) = wilson(k, self.n);
        (k as f64 / self.n.max(1) as f64, lo, hi)
    }
}

/// The detokenizer decoding ground-truth tokens of held-out clips.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetokReport {
    /// Clips.
    pub clips: usize,
    /// Mean PSNR (dB, 8-bit RGB) of the decoded clip against the real one.
    pub psnr: f64,
    /// Mean PSNR of the still baseline (the decoded keyframe repeated).
    pub psnr_still: f64,
    /// Mean PSNR of the keyframe tokenizer's round trip of every real frame (the ceiling).
    pub psnr_tokenizer: f64,
    /// Decoded clips whose direction is the real clip's.
    pub direction: usize,
}

/// Everything measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalReport {
    /// The settings.
    pub options: EvalOptions,
    /// Per condition.
    pub conditions: Vec<ConditionReport>,
    /// Motion tokenizer on held-out clips (grid cells).
    pub motion_tokenizer: Option<ReconstructionReport>,
    /// Detokenizer from ground-truth tokens.
    pub detokenizer: Option<DetokReport>,
}

/// One record of `episodes.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpisodeRecord {
    /// The generated frames (GIF at the pipeline's size), relative to the output folder.
    pub file: String,
    /// The condition's label.
    pub condition: String,
    /// The prompt (`null` for `no-text`).
    pub instruction: Option<String>,
    /// `[dx, dy]`, x right, y down (the episode's prompt; for `no-text` the prompt that was
    /// withheld, which the clip matches by chance only).
    pub expected_direction: [i32; 2],
    /// `[r, g, b]`.
    pub expected_color: [u8; 3],
    /// The shape's name.
    pub expected_shape: String,
    /// The given keyframe picture (PNG, relative to the output folder), `image` only.
    pub keyframe: Option<String>,
    /// What the scorer read: `direction`, `colour`, `shape` names (null where none), `dx`,
    /// `dy` (pixels per frame).
    pub measured: serde_json::Value,
}

/// What a clip shows, as read back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipReading {
    /// 8-way direction of the global motion (`None`: static).
    pub direction: Option<Direction>,
    /// Global motion, pixels per frame.
    pub dx: f32,
    /// See `dx`.
    pub dy: f32,
    /// Majority colour.
    pub colour: Option<Colour>,
    /// Majority shape.
    pub shape: Option<Shape>,
}

fn majority<T: PartialEq + Copy>(items: &[T]) -> Option<T> {
    let mut best: Option<(usize, T)> = None;
    for &a in items {
        let c = items.iter().filter(|&&b| b == a).count();
        if best.is_none_or(|(n, _)| c > n) {
            best = Some((c, a));
        }
    }
    best.map(|(_, a)| a)
}

/// Frames between the pairs the scorer matches. At 1 px per frame, 8×8 integer-pel block
/// matching of consecutive frames of a soft-edged object splits a diagonal step into (1, 0) and
/// (0, 1) votes, and the consensus falls on an axis: frame pairs 1 apart read 91 of 109
/// diagonal ground-truth clips right after the keyframe tokenizer's round trip (stream 99; 100%
/// of the sharp ones), pairs 3 apart 109 of 109 (`cargo run --release -p examples --example lavit_scorer_check`).
pub const SCORER_STRIDE: usize = 3;

/// Reads a clip of the world back (see the module docs).
///
/// # Errors
/// Fewer than two frames; frames smaller than one 8×8 block.
pub fn read_clip(video: &Video, background: [u8; 3]) -> Result<ClipReading> {
    read_clip_with_stride(video, background, SCORER_STRIDE)
}

/// [`read_clip`] with the direction read from the pairs of frames `stride` apart (clamped to
/// `1..=frames - 1`); `dx`, `dy` are still per frame.
///
/// # Errors
/// As [`read_clip`].
pub fn read_clip_with_stride(
    video: &Video,
    background: [u8; 3],
    stride: usize,
) -> Result<ClipReading> {
    let n = video.len();
    if n < 2 {
        return Err(Error::invalid(
            "video",
            format!("{n} frame(s): motion needs at least two frames"),
        ));
    }
    let stride = stride.clamp(1, n - 1);
    let cfg = GlobalMotionConfig {
        block_match: BlockMatchConfig {
            block_size: 8,
            search_range: 4 * stride,
            method: SearchMethod::Full,
            half_pel: false,
        },
        ..GlobalMotionConfig::default()
    };
    let sub = Video::new(
        video.frames().iter().step_by(stride).cloned().collect(),
        video.fps() / stride as f64,
    )?;
    let (mut g, _) = video_global_motion(&sub, &cfg)?;
    g.dx /= stride as f32;
    g.dy /= stride as f32;
    let picks: Vec<&Frame> = [0, n / 3, 2 * n / 3, n - 1]
        .iter()
        .map(|&i| &video.frames()[i])
        .collect();
    let readings: Vec<_> = picks.iter().map(|f| read_frame(f, background)).collect();
    let colours: Vec<Colour> = readings.iter().filter_map(|r| r.colour).collect();
    let shapes: Vec<Shape> = readings.iter().filter_map(|r| r.shape).collect();
    Ok(ClipReading {
        direction: g.direction,
        dx: g.dx,
        dy: g.dy,
        colour: majority(&colours),
        shape: majority(&shapes),
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The 8-bit PSNR (dB) of two frame lists.
fn psnr_frames(a: &[Frame], b: &[Frame]) -> f64 {
    let (mut se, mut n) = (0f64, 0usize);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.data().iter().zip(y.data()) {
            let d = f64::from(*p) - f64::from(*q);
            se += d * d;
            n += 1;
        }
    }
    let mse = se / n.max(1) as f64;
    10.0 * (255.0 * 255.0 / mse.max(1e-12)).log10()
}

/// Runs the evaluation; with `out`, writes every generated clip as a GIF, `episodes.json` and
/// `report.json`. `progress` prints a line per condition.
///
/// # Errors
/// An unknown condition label; model errors; an unwritable `out`.
pub fn evaluate(
    pipe: &LavitPipeline,
    opts: &EvalOptions,
    out: Option<&Path>,
    progress: bool,
) -> Result<EvalReport> {
    for c in &opts.conditions {
        if !CONDITIONS.contains(&c.as_str()) {
            return Err(Error::Unsupported {
                field: "condition".into(),
                value: c.clone(),
                supported: CONDITIONS.join(", "),
            });
        }
    }
    if let Some(d) = out {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let cfg = pipe.config().clone();
    let bg = cfg.world.background;
    let world = LavitWorld::new(cfg.world.clone())?;
    let mut records = Vec::new();
    let mut conditions = Vec::new();
    for cond in &opts.conditions {
        let t0 = Instant::now();
        let mut rep = ConditionReport {
            condition: cond.clone(),
            n: 0,
            direction: 0,
            colour: 0,
            shape: 0,
            object: 0,
            static_clips: 0,
            chance: [
                1.0 / 8.0,
                1.0 / Colour::ALL.len() as f64,
                1.0 / Shape::ALL.len() as f64,
                1.0 / (Colour::ALL.len() * Shape::ALL.len()) as f64,
            ],
            seconds_per_clip: 0.0,
        };
        for i in 0..opts.prompts {
            let mut rng = episode_rng(opts.seed, i);
            let spec = PromptSpec::sample(&mut rng);
            let prompt = spec.text();
            let real = world.render(&spec, 1, &mut rng)?;
            let keyframe = real.video.frames()[0].clone();
            let gen_seed = opts.seed.wrapping_add(i as u64 * 7919);
            let (text, image) = match cond.as_str() {
                "instructed" => (Some(prompt.as_str()), None),
                "no-text" => (None, None),
                _ => (Some(prompt.as_str()), Some(&keyframe)),
            };
            let g = pipe.generate(text, image, 1, gen_seed, None, &mut |_, _| {})?;
            let r = read_clip(&g.video, bg)?;
            rep.n += 1;
            let (d_ok, c_ok, s_ok) = (
                r.direction == Some(spec.direction),
                r.colour == Some(spec.colour),
                r.shape == Some(spec.shape),
            );
            rep.direction += usize::from(d_ok);
            rep.colour += usize::from(c_ok);
            rep.shape += usize::from(s_ok);
            rep.object += usize::from(c_ok && s_ok);
            rep.static_clips += usize::from(r.direction.is_none());
            if let Some(dir) = out {
                let file = format!("{cond}-{i:04}.gif");
                write_gif(dir.join(&file), &g.video)?;
                let kf_file = match image {
                    Some(f) => {
                        let name = format!("{cond}-{i:04}-keyframe.png");
                        vidgen_video_io::write_png(dir.join(&name), f)?;
                        Some(name)
                    }
                    None => None,
                };
                let (dx, dy) = spec.direction.delta();
                records.push(EpisodeRecord {
                    file,
                    condition: cond.clone(),
                    instruction: text.map(str::to_string),
                    expected_direction: [dx, dy],
                    expected_color: spec.colour.rgb(),
                    expected_shape: spec.shape.name().to_string(),
                    keyframe: kf_file,
                    measured: serde_json::json!({
                        "direction": r.direction.map(|d| d.name()),
                        "dx": r.dx,
                        "dy": r.dy,
                        "colour": r.colour.map(|c| c.name()),
                        "shape": r.shape.map(|s| s.name()),
                        "direction_ok": d_ok,
                        "object_ok": c_ok && s_ok,
                    }),
                });
            }
        }
        rep.seconds_per_clip = t0.elapsed().as_secs_f64() / rep.n.max(1) as f64;
        if progress {
            let (d, lo, hi) = rep.rate(rep.direction);
            eprintln!(
                "lavit eval {cond}: direction {:.1}% [{:.1}, {:.1}] over {} ({:.1} s/clip)",
                100.0 * d,
                100.0 * lo,
                100.0 * hi,
                rep.n,
                rep.seconds_per_clip
            );
        }
        conditions.push(rep);
    }
    let (motion_tokenizer, detokenizer) = if opts.clips > 0 {
        let (m, d) = held_out(pipe, &world, opts)?;
        (Some(m), Some(d))
    } else {
        (None, None)
    };
    let report = EvalReport {
        options: opts.clone(),
        conditions,
        motion_tokenizer,
        detokenizer,
    };
    if let Some(dir) = out {
        let write = |name: &str, v: &dyn erased::Json| -> Result<()> {
            let p = dir.join(name);
            std::fs::write(&p, v.to_json()?).map_err(io(&p))
        };
        write("episodes.json", &records)?;
        write("report.json", &report)?;
    }
    Ok(report)
}

fn held_out(
    pipe: &LavitPipeline,
    world: &LavitWorld,
    opts: &EvalOptions,
) -> Result<(ReconstructionReport, DetokReport)> {
    let dev = pipe.device().clone();
    let cfg = pipe.config();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x686f_6c64);
    let clips: Vec<_> = (0..opts.clips)
        .map(|_| world.sample(1, &mut rng))
        .collect::<Result<_>>()?;
    let motion: Vec<_> = clips
        .iter()
        .map(|c| motion_of_clip(&c.video, &cfg.motion, &dev))
        .collect::<Result<_>>()?;
    let motion = candle_core::Tensor::stack(&motion, 0)?;
    let mrep = evaluate_reconstruction(
        pipe.motion_tokenizer(),
        &motion,
        &cfg.motion.lavit(),
        0.5,
        16,
    )?;
    let grid = pipe.keyframe_grid();
    let dc = pipe.detokenizer().config().clone();
    let shape = [1, dc.latent_channels, dc.frames, dc.grid[0], dc.grid[1]];
    let (mut p, mut ps, mut pt, mut dir) = (0f64, 0f64, 0f64, 0usize);
    for c in &clips {
        let frames = c.video.frames();
        let kf_codes = pipe.tokenize_keyframes(&[&frames[0]])?;
        let mo = pipe.tokenize_motion(&c.video)?;
        let kf = tensor_to_frames(
            &pipe
                .keyframe_tokenizer()
                .detokenize(&kf_codes, grid, &dev)?,
        )?;
        let noise = randn(&mut rng, &shape, &dev)?;
        let out = pipe.render_clip(&kf[0], &mo, &noise, &mut rng, &mut |_, _| {})?;
        p += psnr_frames(&out, frames);
        ps += psnr_frames(&vec![kf[0].clone(); frames.len()], frames);
        let refs: Vec<&Frame> = frames.iter().collect();
        let x = frames_to_tensor(&refs, &dev)?;
        let codes = pipe.keyframe_tokenizer().tokenize(&x)?;
        let rt = tensor_to_frames(&pipe.keyframe_tokenizer().detokenize(&codes, grid, &dev)?)?;
        pt += psnr_frames(&rt, frames);
        let r = read_clip(&Video::new(out, cfg.world.fps)?, cfg.world.background)?;
        dir += usize::from(r.direction == Some(c.spec.direction));
    }
    let n = clips.len().max(1) as f64;
    Ok((
        mrep,
        DetokReport {
            clips: clips.len(),
            psnr: p / n,
            psnr_still: ps / n,
            psnr_tokenizer: pt / n,
            direction: dir,
        },
    ))
}

/// The report as an aligned text table.
pub fn format_report(r: &EvalReport) -> String {
    let mut s = String::new();
    s.push_str("condition     n     direction (8-way)           colour   shape    object (colour+shape)       static   chance dir/obj   s/clip\n");
    for c in &r.conditions {
        let (d, dlo, dhi) = c.rate(c.direction);
        let (o, olo, ohi) = c.rate(c.object);
        s.push_str(&format!(
            "{:<12} {:>4}   {:5.1}% [{:5.1}, {:5.1}]%   {:5.1}%   {:5.1}%   {:5.1}% [{:5.1}, {:5.1}]%   {:>5}   {:4.1}% / {:3.1}%    {:.2}\n",
            c.condition,
            c.n,
            100.0 * d,
            100.0 * dlo,
            100.0 * dhi,
            100.0 * c.colour as f64 / c.n.max(1) as f64,
            100.0 * c.shape as f64 / c.n.max(1) as f64,
            100.0 * o,
            100.0 * olo,
            100.0 * ohi,
            c.static_clips,
            100.0 * c.chance[0],
            100.0 * c.chance[3],
            c.seconds_per_clip,
        ));
    }
    if let Some(m) = &r.motion_tokenizer {
        s.push_str(&format!(
            "\nmotion tokenizer ({} held-out clips): EPE {:.3} cells, {:.3} on moving vectors (mean length {:.3}); {} / {} codes used, perplexity {:.1}\n",
            m.clips, m.epe, m.epe_moving, m.moving_magnitude, m.codes_used, m.num_codes, m.perplexity
        ));
    }
    if let Some(d) = &r.detokenizer {
        let (lo, hi) = wilson(d.direction, d.clips);
        s.push_str(&format!(
            "detokenizer from ground-truth tokens ({} clips): PSNR {:.2} dB (still keyframe {:.2} dB, tokenizer round trip {:.2} dB); direction kept {:.1}% [{:.1}, {:.1}]\n",
            d.clips,
            d.psnr,
            d.psnr_still,
            d.psnr_tokenizer,
            100.0 * d.direction as f64 / d.clips.max(1) as f64,
            100.0 * lo,
            100.0 * hi
        ));
    }
    s
}
