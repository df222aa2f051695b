//! Measuring the VIDiff miniature: is the edit applied, is the motion kept, is the clip as
//! steady as the ground truth; on single clips and on long videos edited clip by clip.
//!
//! Each generated clip is read back with the miniatures' scorer ([`crate::minis::score`]):
//! - **edit applied**: the object's colour (colour and swatch edits) or shape (shape edits),
//!   the majority over the frames in which an object is found (at least half of them); for a
//!   background edit, the background pattern: each frame's non-object pixels are compared (mean
//!   absolute difference) with the world's three patterns painted with the source's background
//!   seed (the same two colours), the nearest wins, the majority over frames counts;
//! - **motion kept**: the object's centroid moves the source's way: from the first to the
//!   last frame of a clip, and in a long video over every leg (out, back, out again);
//! - **rest kept**: what the instruction does not name stays (a colour edit keeps the shape, a
//!   shape edit the colour, a background edit both);
//! - **frame-to-frame change**: the mean absolute difference between consecutive frames
//!   (0–255) of the output over that of the ground-truth edited clip (1 = as steady as the
//!   truth; flicker raises it).
//!
//! Conditions: `instructed` (the edits cycle colour, shape, background, swatch), `no-instruction`
//! (the same clips with the unconditional instruction: what the model does unasked), `long`
//! (videos of `long_frames` frames, the pipeline's iterative mode with its overlap prefix), and
//! references: the ground truth itself (the scorer's check) and the ground truth through the
//! VAE (what the latent space allows).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;
use vidgen_pipelines::vidiff::Instruction;
use vidgen_pipelines::{VidiffCall, VidiffPipeline};
use vidgen_video_core::Result;
use vidgen_video_io::synth::{Appearance, Background, Colour, Shape};
use vidgen_video_io::Frame;

use super::{background_name, swatch, Edit, EditEpisode, EditKind, Episodes, MiniConfig};
use crate::aidmini::eval::{frames_tensor, to_frames};
use crate::aidmini::mix;
use crate::minis::report::{table, ClipWriter, EpisodeRecord, Proportion};
use crate::minis::score::{
    direction_of, direction_vector, majority, object_mask, opposite, read_object, MIN_DISPLACEMENT,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Clips of the `instructed` and `no-instruction` conditions (the kinds of edit cycle).
    pub episodes: usize,
    /// Long videos of the `long` condition (0: skip).
    pub long_episodes: usize,
    /// Evaluation stream (training uses others).
    pub seed: u64,
    /// Denoising steps (default: the miniature's).
    pub steps: Option<usize>,
    /// Text guidance (default: the miniature's).
    pub text_guidance: Option<f64>,
    /// Video guidance (default: the miniature's).
    pub video_guidance: Option<f64>,
    /// Noise correlation across frames (default: the miniature's `frame_noise`).
    pub frame_noise: Option<f64>,
    /// Run the `no-instruction` baseline.
    pub baseline: bool,
    /// Score the references (ground truth, ground truth through the VAE).
    pub references: bool,
    /// Write every generated clip as a GIF, and `episodes.json`, here.
    pub out: Option<PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            episodes: 200,
            long_episodes: 48,
            seed: 2024,
            steps: None,
            text_guidance: None,
            video_guidance: None,
            frame_noise: None,
            baseline: true,
            references: true,
            out: None,
        }
    }
}

/// What the scorer read off one clip.
#[derive(Debug, Clone, Serialize)]
pub struct ClipScore {
    /// Majority colour (`None`: no object in half the frames).
    pub colour: Option<String>,
    /// Majority shape.
    pub shape: Option<String>,
    /// Majority background pattern.
    pub background: Option<String>,
    /// Direction of each leg (`[dx, dy]`, `null`: no motion found).
    pub legs: Vec<Option<[i32; 2]>>,
    /// The edit is applied.
    pub edit_applied: bool,
    /// The motion is the source's.
    pub motion_kept: bool,
    /// What the instruction does not name is kept.
    pub rest_kept: bool,
    /// Mean absolute frame-to-frame change of the clip (0–255).
    pub change: f64,
}

/// Mean absolute difference between consecutive frames (0–255).
fn frame_change(frames: &[Frame]) -> f64 {
    if frames.len() < 2 {
        return 0.0;
    }
    let mut s = 0f64;
    for w in frames.windows(2) {
        let d: u64 = w[0]
            .data()
            .iter()
            .zip(w[1].data())
            .map(|(&a, &b)| u64::from(a.abs_diff(b)))
            .sum();
        s += d as f64 / w[0].data().len().max(1) as f64;
    }
    s / (frames.len() - 1) as f64
}

/// The background pattern of `frame` among the world's three painted with `app`'s seed: the
/// nearest over the pixels that are not the object's.
fn read_background(eps: &Episodes, app: Appearance, frame: &Frame) -> Result<Background> {
    let mask = object_mask(frame);
    let mut best = (f64::INFINITY, Background::Checker);
    for b in Background::ALL {
        let bg = eps.background(Appearance {
            background: b,
            ..app
        })?;
        let (mut d, mut n) = (0u64, 0u64);
        for (i, px) in frame.data().chunks_exact(3).enumerate() {
            let Some(q) = bg.data().get(3 * i..3 * i + 3) else {
                break;
            };
            if mask.get(i).copied().unwrap_or(true) {
                continue;
            }
            d += px
                .iter()
                .zip(q)
                .map(|(&a, &b)| u64::from(a.abs_diff(b)))
                .sum::<u64>();
            n += 3;
        }
        let mae = d as f64 / n.max(1) as f64;
        if mae < best.0 {
            best = (mae, b);
        }
    }
    Ok(best.1)
}

/// Scores `frames` (the output for episode `e`).
///
/// # Errors
/// World errors (painting the reference backgrounds).
pub fn score_clip(eps: &Episodes, e: &EditEpisode, frames: &[Frame]) -> Result<ClipScore> {
    let cfg = eps.config();
    let shapes = cfg.shape_list()?;
    let r = cfg.radius as f32;
    let radii = [r - 1.0, r - 0.5, r, r + 0.5, r + 1.0];
    let reads: Vec<_> = frames
        .iter()
        .map(|f| read_object(f, &shapes, &radii))
        .collect();
    let found: Vec<_> = reads.iter().flatten().collect();
    let enough = found.len() * 2 >= frames.len();
    let colour: Option<Colour> = if enough {
        majority(&found.iter().map(|x| x.colour).collect::<Vec<_>>())
    } else {
        None
    };
    let shape: Option<Shape> = if enough {
        majority(&found.iter().map(|x| x.shape).collect::<Vec<_>>())
    } else {
        None
    };
    let bgs = frames
        .iter()
        .map(|f| read_background(eps, e.appearance, f))
        .collect::<Result<Vec<_>>>()?;
    let background = majority(&bgs);
    // Legs: frames 0 → travel → 2·travel …, alternating the source's direction and its opposite.
    let travel = cfg.travel() as usize;
    let mut legs = Vec::new();
    let mut motion_kept = true;
    let mut a = 0;
    let mut leg = 0;
    while a + travel < frames.len() {
        let b = a + travel;
        let want = if leg % 2 == 0 {
            e.direction
        } else {
            opposite(e.direction)
        };
        let got = match (&reads[a], &reads[b]) {
            (Some(p), Some(q)) => direction_of(
                q.centroid.0 - p.centroid.0,
                q.centroid.1 - p.centroid.1,
                MIN_DISPLACEMENT,
            ),
            _ => None,
        };
        motion_kept &= got == Some(want);
        legs.push(got.map(direction_vector));
        a = b;
        leg += 1;
    }
    let src = e.appearance;
    let (edit_applied, rest_kept) = match e.edit {
        Edit::Colour(c) | Edit::Swatch(c) => (colour == Some(c), shape == Some(src.shape)),
        Edit::Shape(s) => (shape == Some(s), colour == Some(src.colour)),
        Edit::Background(b) => (
            background == Some(b),
            colour == Some(src.colour) && shape == Some(src.shape),
        ),
    };
    Ok(ClipScore {
        colour: colour.map(|c| c.name().to_string()),
        shape: shape.map(|s| s.name().to_string()),
        background: background.map(|b| background_name(b).to_string()),
        legs,
        edit_applied,
        motion_kept: motion_kept && !frames.is_empty(),
        rest_kept,
        change: frame_change(frames),
    })
}

/// One condition's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionReport {
    /// `instructed`, `no-instruction`, `long`, `ground truth`, `ground truth through the VAE`.
    pub condition: String,
    /// Frames per video.
    pub frames: usize,
    /// The edit is applied.
    pub edit_applied: Proportion,
    /// The motion is the source's.
    pub motion_kept: Proportion,
    /// Both.
    pub both: Proportion,
    /// The unnamed attributes are kept.
    pub rest_kept: Proportion,
    /// Edit applied per kind of edit (`colour`, `shape`, `background`, `swatch`).
    pub per_kind: Vec<(String, Proportion)>,
    /// Frame-to-frame change of the outputs over that of the ground truth.
    pub change_ratio: f64,
    /// Wall seconds.
    pub seconds: f64,
}

#[derive(Default)]
struct Tally {
    n: usize,
    edit: usize,
    motion: usize,
    both: usize,
    rest: usize,
    kinds: Vec<(EditKind, usize, usize)>,
    change: f64,
    gt_change: f64,
}

impl Tally {
    fn add(&mut self, e: &EditEpisode, s: &ClipScore) {
        self.n += 1;
        self.edit += usize::from(s.edit_applied);
        self.motion += usize::from(s.motion_kept);
        self.both += usize::from(s.edit_applied && s.motion_kept);
        self.rest += usize::from(s.rest_kept);
        self.change += s.change;
        self.gt_change += frame_change(&e.target);
        let k = e.edit.kind();
        match self.kinds.iter_mut().find(|x| x.0 == k) {
            Some(x) => {
                x.1 += 1;
                x.2 += usize::from(s.edit_applied);
            }
            None => self.kinds.push((k, 1, usize::from(s.edit_applied))),
        }
    }

    fn report(mut self, condition: &str, frames: usize, seconds: f64) -> ConditionReport {
        self.kinds.sort_by_key(|x| x.0 as usize);
        ConditionReport {
            condition: condition.into(),
            frames,
            edit_applied: Proportion::new(self.edit, self.n),
            motion_kept: Proportion::new(self.motion, self.n),
            both: Proportion::new(self.both, self.n),
            rest_kept: Proportion::new(self.rest, self.n),
            per_kind: self
                .kinds
                .iter()
                .map(|&(k, n, h)| (k.name().to_string(), Proportion::new(h, n)))
                .collect(),
            change_ratio: self.change / self.gt_change.max(1e-9),
            seconds,
        }
    }
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Per condition.
    pub conditions: Vec<ConditionReport>,
    /// Denoising steps.
    pub steps: usize,
    /// `s_T`.
    pub text_guidance: f64,
    /// `s_V`.
    pub video_guidance: f64,
    /// Where the clips went.
    pub out: Option<PathBuf>,
}

/// The evaluation's episodes: `n` clips of `frames` frames, the kinds of edit cycling.
///
/// # Errors
/// World errors.
pub fn eval_episodes(
    eps: &Episodes,
    seed: u64,
    n: usize,
    frames: usize,
) -> Result<Vec<EditEpisode>> {
    (0..n)
        .map(|i| {
            let kind = EditKind::ALL[i % EditKind::ALL.len()];
            eps.episode(seed, i as u64, Some(kind), frames)
        })
        .collect()
}

/// The pipeline call for episode `i` of `e`.
fn call_for(
    pipe: &VidiffPipeline,
    cfg: &MiniConfig,
    opts: &EvalOptions,
    e: &EditEpisode,
    i: usize,
) -> Result<VidiffCall> {
    let image = match e.edit.swatch() {
        Some(c) => Some(frames_tensor(&[swatch(c, cfg.size)?], &Device::Cpu)?),
        None => None,
    };
    let seed = mix(opts.seed, i as u64, 0x5eed);
    let alpha = opts.frame_noise.unwrap_or(cfg.frame_noise);
    let latents = if alpha > 0.0 {
        Some(initial_latents(
            latent_dims(pipe, cfg, e.source.len()),
            seed,
            alpha,
        )?)
    } else {
        None
    };
    Ok(VidiffCall {
        prompt: e.edit.instruction(),
        instruction_image: image,
        num_inference_steps: opts.steps.unwrap_or(cfg.steps),
        guidance_scale: opts.text_guidance.unwrap_or(cfg.text_guidance),
        video_guidance_scale: opts.video_guidance.unwrap_or(cfg.video_guidance),
        clip_frames: Some(cfg.frames),
        overlap: cfg.overlap,
        seed,
        latents,
        ..VidiffCall::default()
    })
}

/// The initial latents' shape `[1, C, frames, h, w]` of `pipe` for `cfg`'s frames.
fn latent_dims(pipe: &VidiffPipeline, cfg: &MiniConfig, frames: usize) -> [usize; 5] {
    let side = cfg.size as usize / pipe.vae_scale_factor();
    let c = pipe.vae.config().latent_channels;
    [1, c, frames, side, side]
}

/// Initial latents of shape `dims` (`[1, C, T, h, w]`) whose frames share a fraction `alpha`
/// of their variance ([`MiniConfig::frame_noise`]); every frame is still `N(0, 1)`.
///
/// # Errors
/// `alpha` outside `[0, 1)`.
pub fn initial_latents(dims: [usize; 5], seed: u64, alpha: f64) -> Result<candle_core::Tensor> {
    if !(0.0..1.0).contains(&alpha) {
        return Err(vidgen_video_core::Error::config(
            "frame_noise",
            format!("{alpha} is not in [0, 1)"),
        ));
    }
    let mut rng = vidgen_video_io::synth::seeded_rng(seed);
    let own = crate::aidmini::train::randn(&mut rng, &dims, &Device::Cpu)?;
    if alpha == 0.0 {
        return Ok(own);
    }
    let one = [dims[0], dims[1], 1, dims[3], dims[4]];
    let shared = crate::aidmini::train::randn(&mut rng, &one, &Device::Cpu)?;
    Ok(((own * (1.0 - alpha).sqrt())? + shared.broadcast_as(&dims[..])? * alpha.sqrt())?)
}

/// Edits episode `i` with the pipeline; `unasked` uses the unconditional instruction.
///
/// # Errors
/// Pipeline errors.
pub fn edit_episode(
    pipe: &VidiffPipeline,
    cfg: &MiniConfig,
    opts: &EvalOptions,
    e: &EditEpisode,
    i: usize,
    unasked: bool,
) -> Result<Vec<Frame>> {
    let call = call_for(pipe, cfg, opts, e, i)?;
    let src = frames_tensor(&e.source, &Device::Cpu)?;
    let out = if unasked {
        let (_, n) = pipe.prompt_encoder.encode_pair("", None)?;
        let ins = Instruction {
            cond: n.clone(),
            uncond: n,
        };
        let lat = match &call.latents {
            Some(l) => l.clone(),
            None => initial_latents(latent_dims(pipe, cfg, e.source.len()), call.seed, 0.0)?,
        };
        pipe.edit_clip(&src, &ins, &call, &lat, &mut |_| {}, None)?
    } else {
        pipe.edit(&src, &call, &mut |_| {})?.frames
    };
    to_frames(&out)
}

/// The ground truth through the VAE (encode, decode).
fn through_vae(pipe: &VidiffPipeline, frames: &[Frame]) -> Result<Vec<Frame>> {
    let x = frames_tensor(frames, &Device::Cpu)?;
    let z = crate::vidiffmini::train::encode_scaled(&pipe.vae, &x)?; // [1, 4, T, h, w]
    to_frames(&pipe.decode(&z, 8)?)
}

fn record(e: &EditEpisode, condition: &str, s: &ClipScore) -> EpisodeRecord {
    let d = direction_vector(e.direction);
    EpisodeRecord {
        file: String::new(),
        condition: condition.into(),
        instruction: match e.edit {
            Edit::Swatch(c) => Some(format!("[image: a swatch of {}]", c.name())),
            _ => Some(e.edit.instruction()),
        },
        expected_direction: Some(d),
        expected_color: Some(e.edited.colour.rgb()),
        expected_shape: Some(e.edited.shape.name().to_string()),
        scored: serde_json::json!({
            "edit": e.edit.kind().name(),
            "expected_background": background_name(e.edited.background),
            "source_background": background_name(e.appearance.background),
            "background_seed": e.appearance.background_seed,
            "source_color": e.appearance.colour.rgb(),
            "source_shape": e.appearance.shape.name(),
            "legs_expected": "the first leg moves along expected_direction, later legs alternate back and forth, each cfg.frames - 1 frames long",
            "reading": s,
        }),
    }
}

/// Runs the evaluation; `progress` is told each condition's label as it starts.
///
/// # Errors
/// Pipeline, world and I/O errors.
pub fn evaluate(
    pipe: &VidiffPipeline,
    cfg: &MiniConfig,
    opts: &EvalOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<EvalReport> {
    let eps = Episodes::new(cfg)?;
    let mut writer = match &opts.out {
        Some(d) => Some(ClipWriter::new(d, cfg.fps)?),
        None => None,
    };
    let mut conditions = Vec::new();
    let short = eval_episodes(&eps, opts.seed, opts.episodes, cfg.frames)?;
    let mut runs: Vec<(&str, bool)> = vec![("instructed", false)];
    if opts.baseline {
        runs.push(("no-instruction", true));
    }
    for (label, unasked) in runs {
        progress(label);
        let t0 = Instant::now();
        let mut tally = Tally::default();
        for (i, e) in short.iter().enumerate() {
            let frames = edit_episode(pipe, cfg, opts, e, i, unasked)?;
            let s = score_clip(&eps, e, &frames)?;
            tally.add(e, &s);
            if let Some(w) = writer.as_mut() {
                w.add(&format!("{i:04}"), frames, record(e, label, &s))?;
            }
        }
        conditions.push(tally.report(label, cfg.frames, t0.elapsed().as_secs_f64()));
    }
    if opts.long_episodes > 0 {
        progress("long");
        let t0 = Instant::now();
        let long = eval_episodes(&eps, opts.seed ^ 0x106, opts.long_episodes, cfg.long_frames)?;
        let mut tally = Tally::default();
        for (i, e) in long.iter().enumerate() {
            let frames = edit_episode(pipe, cfg, opts, e, i, false)?;
            let s = score_clip(&eps, e, &frames)?;
            tally.add(e, &s);
            if let Some(w) = writer.as_mut() {
                w.add(&format!("{i:04}"), frames, record(e, "long", &s))?;
            }
        }
        conditions.push(tally.report("long", cfg.long_frames, t0.elapsed().as_secs_f64()));
    }
    if opts.references {
        for (label, vae) in [
            ("ground truth", false),
            ("ground truth through the VAE", true),
        ] {
            progress(label);
            let t0 = Instant::now();
            let mut tally = Tally::default();
            for e in &short {
                let frames = if vae {
                    through_vae(pipe, &e.target)?
                } else {
                    e.target.clone()
                };
                tally.add(e, &score_clip(&eps, e, &frames)?);
            }
            conditions.push(tally.report(label, cfg.frames, t0.elapsed().as_secs_f64()));
        }
    }
    if let Some(w) = writer {
        w.finish()?;
    }
    Ok(EvalReport {
        conditions,
        steps: opts.steps.unwrap_or(cfg.steps),
        text_guidance: opts.text_guidance.unwrap_or(cfg.text_guidance),
        video_guidance: opts.video_guidance.unwrap_or(cfg.video_guidance),
        out: opts.out.clone(),
    })
}

/// The report as a table.
pub fn format_report(r: &EvalReport) -> String {
    let rows: Vec<Vec<String>> = r
        .conditions
        .iter()
        .map(|c| {
            let kinds = c
                .per_kind
                .iter()
                .map(|(k, p)| format!("{k} {:.0}%", 100.0 * p.rate()))
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                c.condition.clone(),
                c.frames.to_string(),
                c.edit_applied.n.to_string(),
                c.edit_applied.display(),
                c.motion_kept.display(),
                c.both.display(),
                format!("{:.1}%", 100.0 * c.rest_kept.rate()),
                kinds,
                format!("{:.2}", c.change_ratio),
                format!("{:.0}", c.seconds),
            ]
        })
        .collect();
    format!(
        "{}\n{} steps, s_T {}, s_V {}; frame-to-frame change is the outputs' over the ground \
         truth's.",
        table(
            &[
                "condition",
                "frames",
                "clips",
                "edit applied [95%]",
                "motion kept [95%]",
                "both",
                "rest kept",
                "edit applied per kind",
                "change ratio",
                "s",
            ],
            &rows
        ),
        r.steps,
        r.text_guidance,
        r.video_guidance
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Per-frame statistics of `[1, C, T, h, w]`: each frame's values, flattened.
    fn frames_of(t: &candle_core::Tensor) -> Vec<Vec<f32>> {
        let n = t.dim(2).unwrap();
        (0..n)
            .map(|k| {
                t.narrow(2, k, 1)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    }

    fn corr(a: &[f32], b: &[f32]) -> f64 {
        let n = a.len() as f64;
        let ma = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let mb = b.iter().map(|&x| x as f64).sum::<f64>() / n;
        let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (x as f64 - ma, y as f64 - mb);
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        ab / (aa * bb).sqrt()
    }

    /// Every frame stays N(0, 1) while neighbours share `alpha` of their variance; the same seed
    /// gives the same noise; `alpha` outside [0, 1) is an error.
    #[test]
    fn initial_latents_share_the_asked_part_of_their_variance() {
        let dims = [1, 4, 6, 16, 16];
        for alpha in [0.0, 0.5, 0.95] {
            let z = initial_latents(dims, 11, alpha).unwrap();
            assert_eq!(z.dims(), &[1, 4, 6, 16, 16]);
            let f = frames_of(&z);
            for x in &f {
                let n = x.len() as f64;
                let var = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n;
                assert!((var - 1.0).abs() < 0.15, "alpha {alpha}: variance {var}");
            }
            let c = corr(&f[0], &f[5]);
            assert!((c - alpha).abs() < 0.12, "alpha {alpha}: correlation {c}");
            let again = initial_latents(dims, 11, alpha).unwrap();
            assert_eq!(frames_of(&again), f);
        }
        let two = [1, 4, 2, 16, 16];
        assert!(initial_latents(two, 1, 1.0).is_err());
        assert!(initial_latents(two, 1, -0.1).is_err());
        assert!(initial_latents(two, 1, f64::NAN).is_err());
    }
}
