//! Measuring the AID miniature: does the predicted object move the way the instruction says,
//! and does it stay the same object?
//!
//! Episode `i` of an evaluation stream moves along `Direction::ALL[i % 8]` (25 of 200 per
//! direction), from a start that allows every direction; the scene (shape, colour, background,
//! start) comes from the stream, the same in every condition. Each episode's initial noise is
//! its own (seeded by the stream and `i`), so a clip does not depend on how episodes are
//! batched. Conditions:
//!
//! | condition | call |
//! |---|---|
//! | `instructed` | the episode's instruction, the miniature's `s_T` and `s_V` |
//! | `no-text` | no instruction (the text branch off); scored against the direction the instruction would have named: chance is 1/8 |
//! | `s_T=x` | the instruction with text guidance `x` (the dual-guidance sweep, on the first `sweep_episodes` episodes; the value equal to the miniature's own `s_T` is the `instructed` row, not run twice) |
//!
//! Each generated clip is read by [`crate::minis::score`]: direction of the centroid's
//! displacement from the last conditioning frame to the last frame (none when under 1.5 px),
//! and identity (the majority colour and the majority shape over the predicted frames equal
//! the episode's). Two reference rows show what the scorer and the VAE allow: the ground
//! truth itself, and the ground truth through the VAE.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use vidgen_pipelines::{randn_seeded, rgb_to_tensor, tensor_to_rgb, AidCall, AidPipeline};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{Colour, Direction, Shape};
use vidgen_video_io::Frame;

use super::{instruction, mix, Episode, Episodes, MiniConfig};
use crate::minis::report::{table, ClipWriter, EpisodeRecord, Proportion};
use crate::minis::score::{
    direction_of, direction_vector, majority, read_object, ObjectReading, MIN_DISPLACEMENT,
};
use crate::minis::sprites::parse_shapes;

/// One evaluation condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Condition {
    /// Its label (`instructed`, `no-text`, `s_T=2`).
    pub label: String,
    /// Whether the instruction is given.
    pub text: bool,
    /// Text guidance `s_T`.
    pub text_guidance: f64,
}

/// Settings of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Episodes per condition.
    pub episodes: usize,
    /// Evaluation stream (disjoint from training's).
    pub seed: u64,
    /// Denoising steps (`None`: the miniature's).
    pub steps: Option<usize>,
    /// The dual-guidance sweep's `s_T` values (empty: no sweep).
    pub sweep: Vec<f64>,
    /// Episodes of each sweep condition (the first ones; `None`: all `episodes`).
    pub sweep_episodes: Option<usize>,
    /// Clips per pipeline call.
    pub batch: usize,
    /// Write every clip as a GIF and `episodes.json` here.
    pub out: Option<PathBuf>,
    /// Also score the ground truth and its VAE round trip.
    pub references: bool,
    /// SVD's noise augmentation of the conditioning frames (std of the Gaussian added to the
    /// `[-1, 1]` pixels before encoding; `None`: the strength the miniature was trained with,
    /// [`super::train::NOISE_AUG`]).
    pub noise_aug: Option<f64>,
    /// Conditioning by replacement (`None`: the miniature's `mini.json`).
    pub replace_conditioning: Option<bool>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            episodes: 200,
            seed: 2024,
            steps: None,
            sweep: vec![1.0, 2.0, 4.0],
            sweep_episodes: None,
            batch: 25,
            out: None,
            references: true,
            noise_aug: None,
            replace_conditioning: None,
        }
    }
}

/// What one condition measured.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionReport {
    /// The condition.
    pub condition: Condition,
    /// Predicted motion along the expected direction.
    pub direction: Proportion,
    /// Colour and shape both kept.
    pub identity: Proportion,
    /// Colour kept.
    pub colour: Proportion,
    /// Shape kept.
    pub shape: Proportion,
    /// No motion found (displacement under 1.5 px or no object).
    pub still: Proportion,
    /// Mean displacement (px) from the last conditioning frame to the last frame.
    pub mean_displacement: f64,
    /// Wall seconds.
    pub seconds: f64,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Per condition.
    pub conditions: Vec<ConditionReport>,
    /// The scorer on the ground truth, and on the ground truth through the VAE.
    pub references: Vec<ConditionReport>,
    /// Denoising steps used.
    pub steps: usize,
    /// Frame guidance `(first, last)`.
    pub frame_guidance: (f64, f64),
}

/// What the scorer read off one clip.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Direction of the centroid's displacement from the last conditioning frame to the last
    /// frame (`None` under 1.5 px or without an object).
    pub direction: Option<Direction>,
    /// That displacement in pixels.
    pub displacement: f64,
    /// Majority colour over the predicted frames.
    pub colour: Option<Colour>,
    /// Majority shape over the predicted frames.
    pub shape: Option<Shape>,
}

/// Reads `frames` (`k` conditioning frames first) with [`crate::minis::score`]'s object
/// reader at radii `radius ± 1`.
pub fn score_clip(frames: &[Frame], k: usize, shapes: &[Shape], radius: f32) -> Scored {
    let radii = [
        radius - 1.0,
        radius - 0.5,
        radius,
        radius + 0.5,
        radius + 1.0,
    ];
    let reads: Vec<Option<ObjectReading>> = frames
        .iter()
        .map(|f| read_object(f, shapes, &radii))
        .collect();
    let (a, b) = (
        reads.get(k - 1).cloned().flatten(),
        reads.last().cloned().flatten(),
    );
    let (direction, displacement) = match (a, b) {
        (Some(a), Some(b)) => {
            let (dx, dy) = (b.centroid.0 - a.centroid.0, b.centroid.1 - a.centroid.1);
            (
                direction_of(dx, dy, MIN_DISPLACEMENT),
                (dx * dx + dy * dy).sqrt(),
            )
        }
        _ => (None, 0.0),
    };
    let pred: Vec<&ObjectReading> = reads[k..].iter().flatten().collect();
    let found = pred.len() * 2 >= frames.len() - k;
    let colours: Vec<Colour> = pred.iter().map(|r| r.colour).collect();
    let shapes_read: Vec<Shape> = pred.iter().map(|r| r.shape).collect();
    Scored {
        direction,
        displacement,
        colour: if found { majority(&colours) } else { None },
        shape: if found { majority(&shapes_read) } else { None },
    }
}

/// Frames `[n, 3, H, W]` in `[0, 1]` as RGB frames.
///
/// # Errors
/// Another layout.
pub fn to_frames(t: &Tensor) -> Result<Vec<Frame>> {
    let (_, _, h, w) = t.dims4()?;
    tensor_to_rgb(t)?
        .into_iter()
        .map(|d| Frame::new(w as u32, h as u32, d))
        .collect()
}

/// RGB frames as `[n, 3, H, W]` in `[0, 1]`.
///
/// # Errors
/// Frames of different sizes; no frames.
pub fn frames_tensor(frames: &[Frame], dev: &Device) -> Result<Tensor> {
    let t: Vec<Tensor> = frames
        .iter()
        .map(|f| rgb_to_tensor(f.data(), f.height() as usize, f.width() as usize, dev))
        .collect::<Result<_>>()?;
    Ok(Tensor::cat(&t, 0)?) // [n, 3, H, W]
}

struct Tally {
    n: usize,
    dir: usize,
    ident: usize,
    colour: usize,
    shape: usize,
    still: usize,
    disp: f64,
}

impl Tally {
    fn new() -> Self {
        Self {
            n: 0,
            dir: 0,
            ident: 0,
            colour: 0,
            shape: 0,
            still: 0,
            disp: 0.0,
        }
    }

    fn add(&mut self, s: &Scored, e: &Episode) -> bool {
        self.n += 1;
        let hit = s.direction == Some(e.direction);
        self.dir += usize::from(hit);
        let c = s.colour == Some(e.colour);
        let sh = s.shape == Some(e.shape);
        self.colour += usize::from(c);
        self.shape += usize::from(sh);
        self.ident += usize::from(c && sh);
        self.still += usize::from(s.direction.is_none());
        self.disp += s.displacement;
        hit
    }

    fn report(&self, condition: Condition, seconds: f64) -> ConditionReport {
        ConditionReport {
            condition,
            direction: Proportion::new(self.dir, self.n),
            identity: Proportion::new(self.ident, self.n),
            colour: Proportion::new(self.colour, self.n),
            shape: Proportion::new(self.shape, self.n),
            still: Proportion::new(self.still, self.n),
            mean_displacement: self.disp / self.n.max(1) as f64,
            seconds,
        }
    }
}

/// The evaluation's conditions for `cfg` and `opts`.
pub fn conditions(cfg: &MiniConfig, opts: &EvalOptions) -> Vec<Condition> {
    let mut c = vec![
        Condition {
            label: "instructed".into(),
            text: true,
            text_guidance: cfg.text_guidance,
        },
        Condition {
            label: "no-text".into(),
            text: false,
            text_guidance: 0.0,
        },
    ];
    for &s in &opts.sweep {
        // The instructed row is this point of the sweep: not run twice.
        if (s - cfg.text_guidance).abs() < 1e-9 {
            continue;
        }
        c.push(Condition {
            label: format!("s_T={s}"),
            text: true,
            text_guidance: s,
        });
    }
    c
}

/// The episodes of an evaluation: episode `i` moves along `Direction::ALL[i % 8]`.
///
/// # Errors
/// World errors.
pub fn eval_episodes(eps: &Episodes, seed: u64, n: usize) -> Result<Vec<Episode>> {
    (0..n)
        .map(|i| eps.episode(mix(seed, 0xE7A1, 1), i as u64, Some(Direction::ALL[i % 8])))
        .collect()
}

/// Runs one condition over `episodes`; `on_clip(i, frames, scored_hit)` sees each clip.
///
/// # Errors
/// Pipeline errors.
pub fn run_condition(
    pipe: &AidPipeline,
    cfg: &MiniConfig,
    cond: &Condition,
    episodes: &[Episode],
    opts: &EvalOptions,
    on_clip: &mut dyn FnMut(usize, Vec<Frame>, &ClipScore),
) -> Result<ConditionReport> {
    let t0 = Instant::now();
    let dev = Device::Cpu;
    let k = cfg.cond_frames;
    let n = cfg.frames;
    let s = pipe.svd.vae_scale_factor();
    let (h, w) = (cfg.size as usize / s, cfg.size as usize / s);
    let shapes = parse_shapes(&cfg.shapes)?;
    let mut tally = Tally::new();
    // Groups that share an instruction (all episodes when the text is off).
    let mut groups: Vec<Vec<usize>> = Vec::new();
    if cond.text {
        for d in Direction::ALL {
            let idx: Vec<usize> = (0..episodes.len())
                .filter(|&i| episodes[i].direction == d)
                .collect();
            for c in idx.chunks(opts.batch.max(1)) {
                groups.push(c.to_vec());
            }
        }
    } else {
        let all: Vec<usize> = (0..episodes.len()).collect();
        for c in all.chunks(opts.batch.max(1)) {
            groups.push(c.to_vec());
        }
    }
    let mut results: Vec<Option<(Vec<Frame>, Scored)>> = vec![None; episodes.len()];
    for g in &groups {
        let frames = Tensor::stack(
            &g.iter()
                .map(|&i| frames_tensor(episodes[i].cond(k), &dev))
                .collect::<Result<Vec<_>>>()?,
            0,
        )?; // [B, K, 3, H, W]
        let latents = initial_noise(opts.seed, g, &[n, cfg.latent_channels, h, w], &dev)?;
        let aug = Tensor::cat(
            &g.iter()
                .map(|&i| {
                    randn_seeded(
                        mix(opts.seed, i as u64, 0xa06),
                        &[1, k, 3, cfg.size as usize, cfg.size as usize],
                        &dev,
                    )
                })
                .collect::<Result<Vec<_>>>()?,
            0,
        )?;
        let call = AidCall {
            instruction: cond.text.then(|| instruction(episodes[g[0]].direction)),
            num_frames: Some(n),
            num_inference_steps: opts.steps.unwrap_or(cfg.steps),
            min_guidance_scale: cfg.frame_guidance.0,
            max_guidance_scale: cfg.frame_guidance.1,
            text_guidance_scale: cond.text_guidance,
            latents: Some(latents),
            aug_noise: Some(aug),
            replace_conditioning: opts
                .replace_conditioning
                .unwrap_or(cfg.replace_conditioning),
            noise_aug_strength: opts.noise_aug.unwrap_or(f64::from(super::train::NOISE_AUG)),
            ..AidCall::default()
        };
        let out = pipe.call(&frames, &call, &mut |_| {})?;
        for (j, &i) in g.iter().enumerate() {
            let f = to_frames(&out.frames.get(j)?)?;
            let sc = score_clip(&f, k, &shapes, cfg.radius as f32);
            results[i] = Some((f, sc));
        }
    }
    for (i, r) in results.into_iter().enumerate() {
        let (f, sc) = r.ok_or_else(|| Error::invalid("evaluation", "an episode was skipped"))?;
        let hit = tally.add(&sc, &episodes[i]);
        on_clip(i, f, &ClipScore::new(&sc, hit));
    }
    Ok(tally.report(cond.clone(), t0.elapsed().as_secs_f64()))
}

/// Each episode's own initial noise `[B, …dims]` (seeded by the stream and the episode's
/// index, so a clip does not depend on how episodes are batched).
///
/// # Errors
/// Tensor errors.
fn initial_noise(seed: u64, group: &[usize], dims: &[usize], dev: &Device) -> Result<Tensor> {
    let shape: Vec<usize> = std::iter::once(1).chain(dims.iter().copied()).collect();
    Ok(Tensor::cat(
        &group
            .iter()
            .map(|&i| randn_seeded(mix(seed, i as u64, 0x1a7), &shape, dev))
            .collect::<Result<Vec<_>>>()?,
        0,
    )?)
}

impl ClipScore {
    /// The scorer's reading `sc` and whether its direction agrees with the expected one.
    fn new(sc: &Scored, hit: bool) -> Self {
        Self {
            direction: sc.direction,
            colour: sc.colour,
            shape: sc.shape,
            hit,
        }
    }
}

/// What the scorer read off one clip (for `episodes.json`).
#[derive(Debug, Clone)]
pub struct ClipScore {
    /// Direction found.
    pub direction: Option<Direction>,
    /// Majority colour of the predicted frames.
    pub colour: Option<Colour>,
    /// Majority shape.
    pub shape: Option<Shape>,
    /// Whether the direction agrees with the expected one.
    pub hit: bool,
}

/// The scorer on the ground truth, and on the ground truth through the VAE (decoded as the
/// pipeline decodes).
///
/// # Errors
/// VAE errors.
pub fn references(
    pipe: &AidPipeline,
    cfg: &MiniConfig,
    episodes: &[Episode],
) -> Result<Vec<ConditionReport>> {
    let shapes = parse_shapes(&cfg.shapes)?;
    let dev = Device::Cpu;
    let t0 = Instant::now();
    let mut truth = Tally::new();
    for e in episodes {
        truth.add(
            &score_clip(&e.frames, cfg.cond_frames, &shapes, cfg.radius as f32),
            e,
        );
    }
    let truth_r = truth.report(
        Condition {
            label: "ground truth".into(),
            text: true,
            text_guidance: 0.0,
        },
        t0.elapsed().as_secs_f64(),
    );
    let t1 = Instant::now();
    let mut vae = Tally::new();
    let svd = &pipe.svd;
    for chunk in episodes.chunks(25) {
        let x = Tensor::cat(
            &chunk
                .iter()
                .map(|e| frames_tensor(&e.frames, &dev))
                .collect::<Result<Vec<_>>>()?,
            0,
        )?; // [B·N, 3, H, W] in [0, 1]
        let z = svd.vae.encode_frames(&((x * 2.0)? - 1.0)?)?.mode().clone();
        let sf = svd.vae.config().scaling_factor;
        let (_, c, h, w) = z.dims4()?;
        let lat = (z * sf)?.reshape((chunk.len(), cfg.frames, c, h, w))?;
        let dec = svd.decode(&lat, None, vidgen_pipelines::DecodeMode::Chunked)?;
        for (j, e) in chunk.iter().enumerate() {
            let f = to_frames(&dec.get(j)?.to_dtype(DType::F32)?)?;
            vae.add(
                &score_clip(&f, cfg.cond_frames, &shapes, cfg.radius as f32),
                e,
            );
        }
    }
    let vae_r = vae.report(
        Condition {
            label: "ground truth via VAE".into(),
            text: true,
            text_guidance: 0.0,
        },
        t1.elapsed().as_secs_f64(),
    );
    Ok(vec![truth_r, vae_r])
}

/// The frozen SVD base alone (no adapters, DQFormer or tuned cross-attention, no text) on the
/// same episodes and initial noise as the conditions (its noise augmentation is its own draw): what the base keeps
/// of the object before AID steers it. Its direction is the base's own pick (chance against
/// the episode's); its identity is what AID starts from.
///
/// # Errors
/// Pipeline errors.
pub fn base_alone(
    pipe: &AidPipeline,
    cfg: &MiniConfig,
    episodes: &[Episode],
    opts: &EvalOptions,
    on_clip: &mut dyn FnMut(usize, Vec<Frame>, &ClipScore),
) -> Result<ConditionReport> {
    let t0 = Instant::now();
    let dev = Device::Cpu;
    let shapes = parse_shapes(&cfg.shapes)?;
    let s = pipe.svd.vae_scale_factor();
    let (n, k) = (cfg.frames, cfg.cond_frames);
    let (h, w) = (cfg.size as usize / s, cfg.size as usize / s);
    let mut tally = Tally::new();
    let idx: Vec<usize> = (0..episodes.len()).collect();
    for g in idx.chunks(opts.batch.max(1)) {
        let image = Tensor::cat(
            &g.iter()
                .map(|&i| frames_tensor(&episodes[i].cond(k)[..1], &dev))
                .collect::<Result<Vec<_>>>()?,
            0,
        )?; // [B, 3, H, W] in [0, 1]
        let latents = initial_noise(opts.seed, g, &[n, cfg.latent_channels, h, w], &dev)?;
        let call = vidgen_pipelines::SvdCall {
            height: Some(cfg.size as usize),
            width: Some(cfg.size as usize),
            num_frames: Some(n),
            num_inference_steps: cfg.steps,
            min_guidance_scale: cfg.frame_guidance.0,
            max_guidance_scale: cfg.frame_guidance.1,
            noise_aug_strength: opts.noise_aug.unwrap_or(f64::from(super::train::NOISE_AUG)),
            latents: Some(latents),
            seed: mix(opts.seed, g[0] as u64, 0xba5e),
            ..vidgen_pipelines::SvdCall::default()
        };
        let out = pipe.svd.call(&image, &call, &mut |_| {})?;
        for (j, &i) in g.iter().enumerate() {
            let f = to_frames(&out.frames.get(j)?)?;
            let sc = score_clip(&f, k, &shapes, cfg.radius as f32);
            let hit = tally.add(&sc, &episodes[i]);
            on_clip(i, f, &ClipScore::new(&sc, hit));
        }
    }
    Ok(tally.report(
        Condition {
            label: "base alone".into(),
            text: false,
            text_guidance: 0.0,
        },
        t0.elapsed().as_secs_f64(),
    ))
}

/// The `episodes.json` record of one clip of condition `label`.
fn record(label: &str, text: bool, e: &Episode, sc: &ClipScore) -> EpisodeRecord {
    EpisodeRecord {
        file: String::new(),
        condition: label.replace(['=', ' '], "-"),
        instruction: text.then(|| instruction(e.direction)),
        expected_direction: Some(direction_vector(e.direction)),
        expected_color: Some(e.colour.rgb()),
        expected_shape: Some(e.shape.name().to_string()),
        scored: serde_json::json!({
            "direction": sc.direction.map(direction_vector),
            "color": sc.colour.map(|c| c.name()),
            "shape": sc.shape.map(|s| s.name()),
            "direction_agrees": sc.hit,
        }),
    }
}

/// Runs every condition (and the references), writing clips when `opts.out` is set;
/// `progress(label)` is called before each condition.
///
/// # Errors
/// Pipeline and I/O errors.
pub fn evaluate(
    pipe: &AidPipeline,
    cfg: &MiniConfig,
    opts: &EvalOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<EvalReport> {
    let eps = Episodes::new(cfg)?;
    let episodes = eval_episodes(&eps, opts.seed, opts.episodes)?;
    let mut writer = match &opts.out {
        Some(d) => Some(ClipWriter::new(d, cfg.fps)?),
        None => None,
    };
    let mut reports = Vec::new();
    for cond in conditions(cfg, opts) {
        progress(&cond.label);
        let mut write_err: Option<Error> = None;
        let m = match opts.sweep_episodes {
            Some(m) if cond.label.starts_with("s_T=") => m.min(episodes.len()),
            _ => episodes.len(),
        };
        let rep = run_condition(
            pipe,
            cfg,
            &cond,
            &episodes[..m],
            opts,
            &mut |i, frames, sc| {
                let Some(w) = writer.as_mut() else { return };
                let rec = record(&cond.label, cond.text, &episodes[i], sc);
                if let Err(err) = w.add(&format!("{i:04}"), frames, rec) {
                    write_err.get_or_insert(err);
                }
            },
        )?;
        if let Some(e) = write_err {
            return Err(e);
        }
        reports.push(rep);
    }
    let refs = if opts.references {
        progress("references");
        let mut refs = references(pipe, cfg, &episodes)?;
        progress("base alone");
        let mut write_err: Option<Error> = None;
        let label = "base alone";
        refs.push(base_alone(
            pipe,
            cfg,
            &episodes,
            opts,
            &mut |i, frames, sc| {
                let Some(w) = writer.as_mut() else { return };
                // The base is not told a direction: none is expected of it.
                let rec = EpisodeRecord {
                    expected_direction: None,
                    ..record(label, false, &episodes[i], sc)
                };
                if let Err(err) = w.add(&format!("{i:04}"), frames, rec) {
                    write_err.get_or_insert(err);
                }
            },
        )?);
        if let Some(e) = write_err {
            return Err(e);
        }
        refs
    } else {
        Vec::new()
    };
    if let Some(w) = writer {
        w.finish()?;
    }
    Ok(EvalReport {
        conditions: reports,
        references: refs,
        steps: opts.steps.unwrap_or(cfg.steps),
        frame_guidance: cfg.frame_guidance,
    })
}

/// The report as a table.
pub fn format_report(r: &EvalReport) -> String {
    let rows: Vec<Vec<String>> = r
        .conditions
        .iter()
        .chain(&r.references)
        .map(|c| {
            vec![
                c.condition.label.clone(),
                if c.condition.text && c.condition.text_guidance > 0.0 {
                    format!("{}", c.condition.text_guidance)
                } else {
                    "-".to_string()
                },
                c.direction.display(),
                c.identity.display(),
                format!("{:.1}%", 100.0 * c.colour.rate()),
                format!("{:.1}%", 100.0 * c.shape.rate()),
                format!("{:.1}%", 100.0 * c.still.rate()),
                format!("{:.2}", c.mean_displacement),
                format!("{:.1}", c.seconds),
            ]
        })
        .collect();
    table(
        &[
            "condition",
            "s_T",
            "direction agrees [95% CI]",
            "identity kept [95% CI]",
            "colour",
            "shape",
            "still",
            "disp. px",
            "s",
        ],
        &rows,
    )
}
