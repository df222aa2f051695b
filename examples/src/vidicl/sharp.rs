//! The sharper miniature loaded from its folder, its generation, and the paper's evaluations:
//!
//! - the demo protocol: the same queries continued after a demo moving the ground truth's
//!   way, the opposite way, a random way, and without a demo; plus the text conditions
//!   (instruction only, instruction and demo agreeing, instruction and demo conflicting);
//! - per condition: direction agreement (motion-codec's whole-frame shift, Wilson 95%),
//!   PSNR / SSIM against the ground truth, **probe accuracy** (eval-metrics' [`LinearProbe`]
//!   on frozen features of the tokenizer's encoder, trained on real clips' labels) and
//!   **classification accuracy** (a small action classifier, [`PairClassifier`], trained on
//!   real clips), both scored against the demo's direction; tokens/s;
//! - FID (Inception-v3) of generated frames and FVD (I3D) of generated clips against the
//!   ground truth, when the feature networks' weights are in the weights cache
//!   ([`vidgen_eval_metrics::weights::weights_dir`]).
//!
//! Folder layout (what `vidicl-sharp train` writes): `world.json` ([`World32Config`]),
//! `tokenizer/` (diffusers `VQModel`), `decoder/` (transformers Llama, with
//! `text_projection.safetensors` when trained with text), `text_encoder.json`
//! ([`TextEncoderSpec`], when trained with text), `idm/` (the simulator's inverse dynamics).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use serde::Serialize;
use vidgen_eval_metrics::{
    frechet_distance_features, psnr, ssim, wilson_interval, Accuracy, DataRange, I3d, InceptionV3,
    LinearProbe, ProbeOptions, SsimFlavour, Z95,
};
use vidgen_llama_video::{SamplingConfig, VideoLm};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::grid::GridStyle;
use vidgen_video_io::synth::{seeded_rng, Direction};
use vidgen_video_io::{side_by_side, videos_to_tensor, Frame, PixelRange, Video};

use super::classifier::{pair_features, ClassifierConfig, PairClassifier};
use super::eval::upscale;
use super::instruct::{instruction, InstructionEncoder, TextEncoderSpec};
use super::io_err;
use super::motion::DirectionEstimator;
use super::recipes::{load_lm, prompt32, stack_text, LmOptions, Recipe};
use super::vqgan::{frames_to_tensor, Vqgan};
use super::world::{opposite, Episode};
use super::world32::{World32, World32Config};

/// Where the shipped sharper miniature lives (`examples/assets/vidicl-mini32`).
pub fn shipped_mini32() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join("vidicl-mini32")
}

/// Where the shipped zero-shot miniature lives (`examples/assets/vidicl-zeroshot`).
pub fn shipped_zeroshot() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join("vidicl-zeroshot")
}

/// What the prompt holds in a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cond {
    /// (a) A demo moving the ground truth's way.
    Same,
    /// (b) A demo moving the opposite way.
    Opposite,
    /// (c) A demo moving a random way.
    Random,
    /// (d) The query alone.
    NoDemo,
    /// (e) The instruction of the ground truth's direction, no demo.
    TextOnly,
    /// (f) Instruction and demo, both the ground truth's way.
    TextAgree,
    /// (g) Instruction the ground truth's way, demo the opposite way.
    TextConflict,
}

impl Cond {
    /// The demo protocol's four conditions.
    pub const PROTOCOL: [Cond; 4] = [Cond::Same, Cond::Opposite, Cond::Random, Cond::NoDemo];
    /// The text conditions (with "demo only" being [`Cond::Same`]).
    pub const TEXT: [Cond; 3] = [Cond::TextOnly, Cond::TextAgree, Cond::TextConflict];

    /// Label in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Cond::Same => "(a) demo, same way",
            Cond::Opposite => "(b) demo, opposite way",
            Cond::Random => "(c) demo, random way",
            Cond::NoDemo => "(d) no demo",
            Cond::TextOnly => "(e) text only",
            Cond::TextAgree => "(f) text + demo agree",
            Cond::TextConflict => "(g) text + demo conflict",
        }
    }

    /// File-name slug.
    pub fn slug(self) -> &'static str {
        match self {
            Cond::Same => "a-same",
            Cond::Opposite => "b-opposite",
            Cond::Random => "c-random",
            Cond::NoDemo => "d-no-demo",
            Cond::TextOnly => "e-text-only",
            Cond::TextAgree => "f-text-agree",
            Cond::TextConflict => "g-text-conflict",
        }
    }

    /// The demo's direction for a query whose ground truth moves along `truth`.
    pub fn demo_direction<R: Rng + ?Sized>(
        self,
        truth: Direction,
        rng: &mut R,
    ) -> Option<Direction> {
        match self {
            Cond::Same | Cond::TextAgree => Some(truth),
            Cond::Opposite | Cond::TextConflict => Some(opposite(truth)),
            Cond::Random => Some(Direction::ALL[rng.random_range(0..8)]),
            Cond::NoDemo | Cond::TextOnly => None,
        }
    }

    /// Whether the prompt carries an instruction (always the ground truth's direction).
    pub fn has_text(self) -> bool {
        matches!(self, Cond::TextOnly | Cond::TextAgree | Cond::TextConflict)
    }
}

/// The direction an episode of `cond` asks for: the demo's, else the instruction's (the
/// ground truth's), else (no demo, no text) the ground truth's, which nothing reveals.
pub fn target(cond: Cond, e: &Episode) -> Direction {
    match cond {
        Cond::TextOnly => e.query_direction,
        _ => e.demo_direction.unwrap_or(e.query_direction),
    }
}

/// Decoded generations of a batch.
#[derive(Debug, Clone)]
pub struct Generated {
    /// One video of `gen_frames` frames per episode.
    pub videos: Vec<Video>,
    /// Seconds in `VideoLm::generate_frames` (prefill and decoding).
    pub seconds: f64,
    /// Tokens generated (all rows).
    pub tokens: usize,
}

/// The sharper miniature: world, tokenizer, decoder, optional instruction encoder.
#[derive(Debug, Clone)]
pub struct Sharp {
    /// Geometry and episodes.
    pub world: World32,
    /// Frames ↔ tokens.
    pub tokenizer: Vqgan,
    /// The decoder (with its text projection when trained with text).
    pub lm: VideoLm,
    /// How the decoder was trained (`decoder/../train.json`), if recorded.
    pub options: Option<LmOptions>,
    /// Instruction encoder and its 8 directions' embeddings.
    pub text: Option<(InstructionEncoder, Vec<Tensor>)>,
}

impl Sharp {
    /// Loads a miniature folder (see the module docs).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg: World32Config = vidgen_video_core::loading::read_config(dir.join("world.json"))?;
        let world = World32::new(cfg)?;
        let tokenizer = Vqgan::load(dir.join("tokenizer"))?.with_cache();
        let lm = load_lm(&dir.join("decoder"))?;
        if lm.model().vocab_size() != tokenizer.vocab_size() {
            return Err(Error::config(
                "vocab_size",
                format!(
                    "decoder has {} tokens, tokenizer {} codes",
                    lm.model().vocab_size(),
                    tokenizer.vocab_size()
                ),
            ));
        }
        if tokenizer.grid() != world.config().grid()
            || tokenizer.size() != world.config().size as usize
        {
            return Err(Error::config(
                "world.json",
                "the tokenizer's grid differs from the world's size / cell",
            ));
        }
        let p = dir.join("train.json");
        let options = if p.is_file() {
            Some(vidgen_video_core::loading::read_config::<LmOptions>(&p)?)
        } else {
            None
        };
        let spec_path = dir.join("text_encoder.json");
        let text = if spec_path.is_file() && lm.text_projection().is_some() {
            let spec: TextEncoderSpec = vidgen_video_core::loading::read_config(&spec_path)?;
            let enc = InstructionEncoder::with_vendored_tokenizer(&spec)?;
            let table = enc.direction_table()?;
            Some((enc, table))
        } else {
            None
        };
        Ok(Sharp {
            world,
            tokenizer,
            lm,
            options,
            text,
        })
    }

    /// The recipe the decoder was trained by (paired when not recorded).
    pub fn recipe(&self) -> Recipe {
        self.options.as_ref().map_or(Recipe::Paired, |o| o.recipe)
    }

    /// Continues the queries of `episodes` (all with a demo when `with_demo`) for the world's
    /// `gen_frames` frames, with the instructions of `text` (one direction per episode) as a
    /// prefix when given.
    pub fn generate(
        &self,
        episodes: &[&Episode],
        with_demo: bool,
        text: Option<&[Direction]>,
        sampling: &SamplingConfig,
        seed: u64,
    ) -> Result<Generated> {
        let prefix = match text {
            Some(dirs) => {
                let (_, table) = self.text.as_ref().ok_or_else(|| {
                    Error::invalid("condition", "this decoder was not trained with text")
                })?;
                Some(stack_text(table, dirs)?)
            }
            None => None,
        };
        let prompt = prompt32(&self.tokenizer, episodes, with_demo, false, prefix)?;
        let n = self.world.config().gen_frames;
        let t0 = Instant::now();
        let grid = self
            .lm
            .generate_frames(&prompt, n, sampling, &mut seeded_rng(seed), |_| {})?;
        let seconds = t0.elapsed().as_secs_f64();
        let ids = grid
            .ids()
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        let per = ids.len() / episodes.len().max(1);
        let videos = ids
            .chunks(per.max(1))
            .map(|c| Video::new(self.tokenizer.decode_ids(c)?, self.world.config().fps))
            .collect::<Result<Vec<_>>>()?;
        Ok(Generated {
            videos,
            seconds,
            tokens: ids.len(),
        })
    }
}

/// The frozen features the probe reads: the tokenizer encoder's (pre-quantisation) latents
/// of the last frame minus those of the first, flattened (`embed_dim · g²` values per clip).
pub fn latent_motion(tok: &Vqgan, firsts: &[&Frame], lasts: &[&Frame]) -> Result<Tensor> {
    let mut rows = Vec::new();
    for (fa, fb) in firsts.chunks(64).zip(lasts.chunks(64)) {
        let a = tok.model().encode(&frames_to_tensor(fa)?)?;
        let b = tok.model().encode(&frames_to_tensor(fb)?)?;
        rows.push((b - a)?.flatten_from(1)?);
    }
    Ok(Tensor::cat(&rows, 0)?)
}

/// The judges trained on real clips: the probe and the action classifier, with their
/// accuracy on held-out real clips (the ceiling of what they can report).
#[derive(Debug, Clone)]
pub struct Judges {
    /// Linear probe on [`latent_motion`] features.
    pub probe: LinearProbe,
    /// The action classifier on frame pairs.
    pub classifier: PairClassifier,
    /// Probe accuracy on held-out real clips.
    pub probe_real: Accuracy,
    /// Classifier accuracy on held-out real clips.
    pub classifier_real: Accuracy,
}

/// Real clips of stream `seed`: (last query frame, last ground-truth frame, direction index).
fn real_pairs(world: &World32, seed: u64, n: usize) -> Result<Vec<(Frame, Frame, usize)>> {
    (0..n as u64)
        .map(|i| {
            let e = world.episode(seed, i, |_, _| None)?;
            let a = e
                .query
                .frames()
                .last()
                .cloned()
                .ok_or_else(|| Error::invalid("episode", "empty query"))?;
            let b = e
                .truth
                .frames()
                .last()
                .cloned()
                .ok_or_else(|| Error::invalid("episode", "empty truth"))?;
            let label = Direction::ALL
                .iter()
                .position(|&d| d == e.query_direction)
                .unwrap_or(0);
            Ok((a, b, label))
        })
        .collect()
}

impl Judges {
    /// Trains both judges on `n_train` real clips of stream `seed` and scores them on
    /// `n_test` clips of stream `seed + 1`.
    pub fn train(sharp: &Sharp, seed: u64, n_train: usize, n_test: usize) -> Result<Self> {
        let size = sharp.world.config().size as usize;
        let train = real_pairs(&sharp.world, seed, n_train)?;
        let test = real_pairs(&sharp.world, seed.wrapping_add(1), n_test)?;
        let feats = |set: &[(Frame, Frame, usize)]| -> Result<Tensor> {
            let a: Vec<&Frame> = set.iter().map(|p| &p.0).collect();
            let b: Vec<&Frame> = set.iter().map(|p| &p.1).collect();
            latent_motion(&sharp.tokenizer, &a, &b)
        };
        let labels = |set: &[(Frame, Frame, usize)]| set.iter().map(|p| p.2).collect::<Vec<_>>();
        let probe = LinearProbe::fit(
            &feats(&train)?,
            &labels(&train),
            8,
            &ProbeOptions {
                epochs: 60,
                seed,
                ..ProbeOptions::default()
            },
        )?;
        let probe_real = probe.accuracy(&feats(&test)?, &labels(&test), Z95)?;
        let pf = |set: &[(Frame, Frame, usize)]| -> Result<Vec<Vec<f32>>> {
            set.iter()
                .map(|p| pair_features(&p.0, &p.1, size))
                .collect()
        };
        let cfg = ClassifierConfig {
            seed,
            ..ClassifierConfig::new(size, 8)
        };
        let (classifier, _) = PairClassifier::train(&cfg, &pf(&train)?, &labels(&train))?;
        let pred = classifier.predict(&pf(&test)?)?;
        let classifier_real = accuracy(&pred, &labels(&test))?;
        Ok(Judges {
            probe,
            classifier,
            probe_real,
            classifier_real,
        })
    }
}

/// Accuracy with a Wilson 95% interval.
pub fn accuracy(pred: &[usize], labels: &[usize]) -> Result<Accuracy> {
    let correct = pred.iter().zip(labels).filter(|(a, b)| a == b).count();
    let total = labels.len();
    let (ci_low, ci_high) = wilson_interval(correct, total.max(1), Z95)?;
    Ok(Accuracy {
        correct,
        total,
        value: correct as f64 / total.max(1) as f64,
        ci_low,
        ci_high,
        z: Z95,
    })
}

/// The Inception-v3 (FID) and I3D (FVD) networks, when their converted weights are in the
/// weights cache.
#[derive(Debug)]
pub struct FeatureNets {
    /// FID features.
    pub inception: InceptionV3,
    /// FVD features.
    pub i3d: I3d,
}

impl FeatureNets {
    /// Loads both from `dir` (default: [`vidgen_eval_metrics::weights::weights_dir`]); `Ok(None)`
    /// with the reason when a file is missing.
    pub fn load(dir: Option<&Path>) -> Result<std::result::Result<Self, String>> {
        let dir = dir.map_or_else(vidgen_eval_metrics::weights::weights_dir, Path::to_path_buf);
        let inc = dir.join(vidgen_eval_metrics::weights::FID_INCEPTION_FILE);
        let i3d = dir.join(vidgen_eval_metrics::weights::I3D_FILE);
        for p in [&inc, &i3d] {
            if !p.is_file() {
                return Ok(Err(format!(
                    "{} not found (run `cargo run --release -p vidgen-eval-metrics --example \
                     fetch_weights`); FID / FVD skipped",
                    p.display()
                )));
            }
        }
        Ok(Ok(FeatureNets {
            inception: InceptionV3::load(&inc)?,
            i3d: I3d::load(&i3d)?,
        }))
    }

    /// Inception pool features of frames `[N, 2048]` (batches of 16).
    pub fn frame_features(&self, frames: &[&Frame]) -> Result<Tensor> {
        let mut out = Vec::new();
        for chunk in frames.chunks(16) {
            let x = frames_to_tensor(chunk)?;
            out.push(self.inception.image_features(&x, DataRange::SIGNED)?);
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    /// I3D logits of clips `[N, 400]` (batches of 4). I3D needs at least 9 frames and FVD is
    /// defined on 16: a shorter clip (the miniature's are 5: the query frame and 4 generated)
    /// is stretched to 16 frames by repeating frames (nearest neighbour in time), real and
    /// generated clips alike.
    pub fn clip_features(&self, clips: &[Video]) -> Result<Tensor> {
        let mut out = Vec::new();
        let stretched: Vec<Video> = clips
            .iter()
            .map(|c| stretch_to(c, FVD_FRAMES))
            .collect::<Result<_>>()?;
        for chunk in stretched.chunks(4) {
            let x = videos_to_tensor(chunk, PixelRange::ZeroToOne, &Device::Cpu)?;
            out.push(self.i3d.video_logits(&x, DataRange::UNIT)?);
        }
        Ok(Tensor::cat(&out, 0)?)
    }
}

/// Frames per clip FVD is computed on.
pub const FVD_FRAMES: usize = 16;

/// `v` with at least `n` frames: frame `i` of the result is frame `⌊i · T / n⌋` of `v`.
pub fn stretch_to(v: &Video, n: usize) -> Result<Video> {
    let t = v.len();
    if t == 0 || t >= n {
        return Ok(v.clone());
    }
    let frames = (0..n).map(|i| v.frames()[i * t / n].clone()).collect();
    Video::new(frames, v.fps())
}

/// FID and FVD of one set of clips against a reference set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Frechet {
    /// Clips scored.
    pub clips: usize,
    /// FID over every frame of the clips (Inception pool features).
    pub fid: f64,
    /// FVD over the clips (I3D logits).
    pub fvd: f64,
}

/// Reference features for FID / FVD (the ground truth of the scored episodes).
#[derive(Debug, Clone)]
pub struct FrechetReference {
    frames: Tensor,
    clips: Tensor,
}

impl FrechetReference {
    /// Features of `clips` (each clip's frames for FID, the clips for FVD).
    pub fn new(nets: &FeatureNets, clips: &[Video]) -> Result<Self> {
        let frames: Vec<&Frame> = clips.iter().flat_map(|c| c.frames()).collect();
        Ok(FrechetReference {
            frames: nets.frame_features(&frames)?,
            clips: nets.clip_features(clips)?,
        })
    }

    /// FID / FVD of `clips` against the reference.
    pub fn score(&self, nets: &FeatureNets, clips: &[Video]) -> Result<Frechet> {
        let frames: Vec<&Frame> = clips.iter().flat_map(|c| c.frames()).collect();
        let f = nets.frame_features(&frames)?;
        let v = nets.clip_features(clips)?;
        Ok(Frechet {
            clips: clips.len(),
            fid: frechet_distance_features(&self.frames, &f)?,
            fvd: frechet_distance_features(&self.clips, &v)?,
        })
    }
}

/// The measured figures of one condition.
#[derive(Debug, Clone, Serialize)]
pub struct CondReport {
    /// The condition.
    pub condition: Cond,
    /// Episodes run.
    pub episodes: usize,
    /// Generations whose measured direction equals the target ([`target`]).
    pub hits: usize,
    /// Wilson 95% interval of `hits / episodes`.
    pub interval: (f64, f64),
    /// Generations moving the ground truth's way (= the instruction's way in the text
    /// conditions).
    pub hits_truth: usize,
    /// Generations in which no motion was found.
    pub still: usize,
    /// PSNR (dB) of generated vs ground-truth frames (global MSE, pixels in `[0, 1]`).
    pub psnr: f64,
    /// Mean SSIM (skimage Gaussian) of generated vs ground-truth frames.
    pub ssim: f64,
    /// Probe accuracy against the target.
    #[serde(serialize_with = "ser_accuracy")]
    pub probe: Option<Accuracy>,
    /// Action-classifier accuracy against the target.
    #[serde(serialize_with = "ser_accuracy")]
    pub classifier: Option<Accuracy>,
    /// FID / FVD against the ground truth of the first clips.
    pub frechet: Option<Frechet>,
    /// Tokens generated.
    pub tokens: usize,
    /// Seconds generating.
    pub seconds: f64,
}

/// `{"correct", "total", "value", "ci_low", "ci_high"}` or null.
fn ser_accuracy<S: serde::Serializer>(
    a: &Option<Accuracy>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match a {
        Some(a) => serde_json::json!({
            "correct": a.correct,
            "total": a.total,
            "value": a.value,
            "ci_low": a.ci_low,
            "ci_high": a.ci_high,
        })
        .serialize(s),
        None => s.serialize_none(),
    }
}

impl CondReport {
    /// `hits / episodes`.
    pub fn accuracy(&self) -> f64 {
        self.hits as f64 / self.episodes.max(1) as f64
    }

    /// Generated tokens per second.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// One evaluated episode.
#[derive(Debug, Clone)]
pub struct Sample32 {
    /// Index in the stream.
    pub index: u64,
    /// The episode.
    pub episode: Episode,
    /// The generated frames.
    pub generated: Video,
    /// The measured direction.
    pub measured: Option<Direction>,
}

/// How [`evaluate`] runs.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Episodes per condition (indices `0..episodes` of stream `seed`).
    pub episodes: usize,
    /// The evaluation stream.
    pub seed: u64,
    /// Episodes per generation batch.
    pub batch: usize,
    /// Sampling (greedy by default).
    pub sampling: SamplingConfig,
    /// Episodes kept as [`Sample32`]s (all, for `--out`).
    pub keep: usize,
    /// Episodes scored by FID / FVD (the first ones).
    pub frechet_clips: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            episodes: 200,
            seed: 2024,
            batch: 50,
            sampling: SamplingConfig::greedy(),
            keep: 0,
            frechet_clips: 50,
        }
    }
}

/// Runs one condition (see the module docs).
pub fn evaluate(
    sharp: &Sharp,
    cond: Cond,
    opts: &EvalOptions,
    estimator: &dyn DirectionEstimator,
    judges: Option<&Judges>,
    frechet: Option<(&FeatureNets, &FrechetReference)>,
    mut progress: impl FnMut(usize),
) -> Result<(CondReport, Vec<Sample32>)> {
    if opts.episodes == 0 || opts.batch == 0 {
        return Err(Error::invalid("episodes / batch", "must be >= 1"));
    }
    let size = sharp.world.config().size as usize;
    let mut rep = CondReport {
        condition: cond,
        episodes: opts.episodes,
        hits: 0,
        interval: (0.0, 1.0),
        hits_truth: 0,
        still: 0,
        psnr: 0.0,
        ssim: 0.0,
        probe: None,
        classifier: None,
        frechet: None,
        tokens: 0,
        seconds: 0.0,
    };
    let (mut sq, mut count, mut ssim_sum) = (0f64, 0usize, 0f64);
    let mut samples = Vec::new();
    let (mut firsts, mut lasts, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let mut fclips = Vec::new();
    let mut start = 0;
    while start < opts.episodes {
        let n = opts.batch.min(opts.episodes - start);
        let eps = (start..start + n)
            .map(|i| {
                sharp
                    .world
                    .episode(opts.seed, i as u64, |d, r| cond.demo_direction(d, r))
            })
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Episode> = eps.iter().collect();
        let dirs: Vec<Direction> = eps.iter().map(|e| e.query_direction).collect();
        let text = cond.has_text().then_some(dirs.as_slice());
        let g = sharp.generate(
            &refs,
            eps[0].demo.is_some(),
            text,
            &opts.sampling,
            opts.seed,
        )?;
        rep.seconds += g.seconds;
        rep.tokens += g.tokens;
        let last_q: Vec<Frame> = eps
            .iter()
            .map(|e| {
                e.query
                    .frames()
                    .last()
                    .cloned()
                    .ok_or_else(|| Error::invalid("episode", "empty query"))
            })
            .collect::<Result<_>>()?;
        // Motion is measured from the tokenised last query frame, so tokenizer error does not
        // count as motion.
        let q_rt = sharp.tokenizer.round_trip(&last_q)?;
        for (k, (e, v)) in eps.iter().zip(&g.videos).enumerate() {
            let mut run: Vec<&Frame> = vec![&q_rt[k]];
            run.extend(v.frames());
            let measured = estimator.direction(&run)?;
            let t = target(cond, e);
            rep.hits += usize::from(measured == Some(t));
            rep.hits_truth += usize::from(measured == Some(e.query_direction));
            rep.still += usize::from(measured.is_none());
            firsts.push(last_q[k].clone());
            lasts.push(
                v.frames()
                    .last()
                    .cloned()
                    .ok_or_else(|| Error::invalid("generation", "no frames"))?,
            );
            labels.push(Direction::ALL.iter().position(|&d| d == t).unwrap_or(0));
            if start + k < opts.frechet_clips {
                let mut f = vec![last_q[k].clone()];
                f.extend(v.frames().iter().cloned());
                fclips.push(Video::new(f, v.fps())?);
            }
            if start + k < opts.keep {
                samples.push(Sample32 {
                    index: (start + k) as u64,
                    episode: e.clone(),
                    generated: v.clone(),
                    measured,
                });
            }
        }
        let truth: Vec<Video> = eps.iter().map(|e| e.truth.clone()).collect();
        let a = videos_to_tensor(&truth, PixelRange::ZeroToOne, &Device::Cpu)?;
        let b = videos_to_tensor(&g.videos, PixelRange::ZeroToOne, &Device::Cpu)?;
        let p = psnr(&a, &b, DataRange::UNIT)?;
        sq += p.per_frame_mse.iter().sum::<f64>();
        count += p.per_frame_mse.len();
        let s = ssim(&a, &b, DataRange::UNIT, SsimFlavour::SkimageGaussian)?;
        ssim_sum += s.per_frame.iter().sum::<f64>();
        start += n;
        progress(start);
    }
    let mse = sq / count.max(1) as f64;
    rep.psnr = if mse > 0.0 {
        -10.0 * mse.log10()
    } else {
        f64::INFINITY
    };
    rep.ssim = ssim_sum / count.max(1) as f64;
    rep.interval = wilson_interval(rep.hits, rep.episodes, Z95)?;
    if let Some(j) = judges {
        let fa: Vec<&Frame> = firsts.iter().collect();
        let fb: Vec<&Frame> = lasts.iter().collect();
        rep.probe = Some(j.probe.accuracy(
            &latent_motion(&sharp.tokenizer, &fa, &fb)?,
            &labels,
            Z95,
        )?);
        let pf = firsts
            .iter()
            .zip(&lasts)
            .map(|(a, b)| pair_features(a, b, size))
            .collect::<Result<Vec<_>>>()?;
        rep.classifier = Some(accuracy(&j.classifier.predict(&pf)?, &labels)?);
    }
    if let Some((nets, reference)) = frechet {
        rep.frechet = Some(reference.score(nets, &fclips)?);
    }
    Ok((rep, samples))
}

/// The ground-truth clips (last query frame, then the continuation) of the first `n`
/// episodes of stream `seed`: the FID / FVD reference.
pub fn truth_clips(world: &World32, seed: u64, n: usize) -> Result<Vec<Video>> {
    (0..n as u64)
        .map(|i| {
            let e = world.episode(seed, i, |_, _| None)?;
            let mut f: Vec<Frame> = e.query.frames().last().cloned().into_iter().collect();
            f.extend(e.truth.frames().iter().cloned());
            Video::new(f, e.truth.fps())
        })
        .collect()
}

/// PSNR / SSIM of the tokenizer's round trip of the ground truth of the first `n` episodes
/// of stream `seed` (the ceiling of any generation), and the round-tripped clips.
pub fn tokenizer_ceiling(sharp: &Sharp, seed: u64, n: usize) -> Result<(f64, f64, Vec<Video>)> {
    let truth = truth_clips(&sharp.world, seed, n)?;
    let rt = truth
        .iter()
        .map(|v| Video::new(sharp.tokenizer.round_trip(v.frames())?, v.fps()))
        .collect::<Result<Vec<_>>>()?;
    // The scored frames are the continuation (frames 1..), as for generations.
    let cont =
        |v: &[Video]| -> Result<Vec<Video>> { v.iter().map(|c| c.slice(1, c.len())).collect() };
    let a = videos_to_tensor(&cont(&truth)?, PixelRange::ZeroToOne, &Device::Cpu)?;
    let b = videos_to_tensor(&cont(&rt)?, PixelRange::ZeroToOne, &Device::Cpu)?;
    let p = psnr(&a, &b, DataRange::UNIT)?;
    let s = ssim(&a, &b, DataRange::UNIT, SsimFlavour::SkimageGaussian)?;
    Ok((p.global, s.mean, rt))
}

/// The report table (plain text).
pub fn format_table(reports: &[CondReport]) -> String {
    let mut s = String::new();
    s.push_str("condition                  episodes   follows demo*   Wilson 95%        vs truth   still   PSNR dB   SSIM    probe    classif.   FID     FVD      tokens/s\n");
    s.push_str("-------------------------  --------   -------------   ---------------   --------   -----   -------   -----   ------   --------   -----   ------   --------\n");
    for r in reports {
        let (lo, hi) = r.interval;
        let pct = |a: &Option<Accuracy>| {
            a.map_or("   -  ".to_string(), |a| {
                format!("{:5.1}%", 100.0 * a.value)
            })
        };
        let (fid, fvd) = r
            .frechet
            .map_or(("  -  ".to_string(), "   -  ".to_string()), |f| {
                (format!("{:5.1}", f.fid), format!("{:6.1}", f.fvd))
            });
        s.push_str(&format!(
            "{:<25}  {:>8}   {:>12.1}%   [{:5.1}, {:5.1}]%   {:>7.1}%   {:>5}   {:>7.2}   {:>5.3}   {}   {:>7}    {}   {}   {:>8.0}\n",
            r.condition.label(),
            r.episodes,
            100.0 * r.accuracy(),
            100.0 * lo,
            100.0 * hi,
            100.0 * r.hits_truth as f64 / r.episodes.max(1) as f64,
            r.still,
            r.psnr,
            r.ssim,
            pct(&r.probe),
            pct(&r.classifier),
            fid,
            fvd,
            r.tokens_per_s(),
        ));
    }
    s
}

/// An animated strip `demo | query | generated | ground truth` (each panel upscaled `scale`×;
/// the generated and truth panels start with the last query frame).
pub fn strip(world: &World32, sample: &Sample32, scale: u32) -> Result<Video> {
    let c = world.config();
    let e = &sample.episode;
    let blank = Frame::filled(c.size, c.size, c.background)?;
    let last_q = e
        .query
        .frames()
        .last()
        .cloned()
        .unwrap_or_else(|| blank.clone());
    let demo = e
        .demo
        .as_ref()
        .map_or_else(|| vec![blank.clone()], |d| d.frames().to_vec());
    let mut generated = vec![last_q.clone()];
    generated.extend(sample.generated.frames().iter().cloned());
    let mut truth = vec![last_q];
    truth.extend(e.truth.frames().iter().cloned());
    let up = |v: Vec<Frame>| -> Result<Video> {
        Video::new(
            v.iter()
                .map(|f| upscale(f, scale))
                .collect::<Result<Vec<_>>>()?,
            c.fps,
        )
    };
    let panels = [
        up(demo)?,
        up(e.query.frames().to_vec())?,
        up(generated)?,
        up(truth)?,
    ];
    side_by_side(
        &panels.iter().collect::<Vec<_>>(),
        GridStyle {
            separator: 4,
            color: [255, 255, 255],
        },
    )
}

/// One entry of `episodes.json`.
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeRecord {
    /// GIF of the generated frames only, relative to the output folder.
    pub file: String,
    /// Condition slug.
    pub condition: String,
    /// The instruction, or null.
    pub instruction: Option<String>,
    /// The direction the condition asks for, `[dx, dy]` (x right, y down).
    pub expected_direction: [i32; 2],
    /// The query object's colour (the generation should keep it).
    pub expected_color: [u8; 3],
    /// The query object's shape.
    pub expected_shape: String,
    /// The episode's index in the evaluation stream.
    pub index: u64,
    /// The direction measured in the generation, `[dx, dy]` or null.
    pub measured_direction: Option<[i32; 2]>,
}

/// Writes every sample's generated frames as `DIR/<recipe>/<cond>/<index>.gif` and returns
/// their `episodes.json` records.
pub fn write_samples(
    dir: &Path,
    recipe: &str,
    world: &World32,
    seed: u64,
    cond: Cond,
    samples: &[Sample32],
) -> Result<Vec<EpisodeRecord>> {
    let sub = Path::new(recipe).join(cond.slug());
    std::fs::create_dir_all(dir.join(&sub)).map_err(|e| io_err(&dir.join(&sub), e))?;
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let rel = sub.join(format!("{:04}.gif", s.index));
        vidgen_video_io::write_gif(dir.join(&rel), &s.generated)?;
        let (shape, colour) = world.query_appearance(seed, s.index)?;
        let t = target(cond, &s.episode);
        out.push(EpisodeRecord {
            file: rel.to_string_lossy().replace('\\', "/"),
            condition: format!("{recipe}/{}", cond.slug()),
            instruction: cond
                .has_text()
                .then(|| instruction(s.episode.query_direction)),
            expected_direction: [t.delta().0, t.delta().1],
            expected_color: colour.rgb(),
            expected_shape: shape.name().to_string(),
            index: s.index,
            measured_direction: s.measured.map(|d| [d.delta().0, d.delta().1]),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn short_clips_are_stretched_to_the_fvd_length_in_order() {
        let frames: Vec<Frame> = (0..5u8)
            .map(|i| Frame::filled(4, 4, [i * 40, 0, 0]).unwrap())
            .collect();
        let v = Video::new(frames, 4.0).unwrap();
        let s = stretch_to(&v, FVD_FRAMES).unwrap();
        assert_eq!(s.len(), 16);
        let reds: Vec<u8> = s.frames().iter().map(|f| f.data()[0]).collect();
        assert_eq!(reds[0], 0);
        assert_eq!(reds[15], 160);
        assert!(reds.windows(2).all(|w| w[0] <= w[1]));
        // Every source frame appears; long clips are kept as they are.
        for i in 0..5u8 {
            assert!(reds.contains(&(i * 40)));
        }
        assert_eq!(stretch_to(&s, 8).unwrap().len(), 16);
    }
}
