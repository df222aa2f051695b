//! The in-context evaluation: the same query clips continued after (a) a demo moving the same
//! way as the query's ground truth, (b) the opposite way, (c) a random way, (d) no demo.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};
use rand::Rng;
use vidgen_eval_metrics::{psnr, ssim, DataRange, SsimFlavour};
use vidgen_llama_video::{LlamaForCausalLM, SamplingConfig, VideoLm};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{seeded_rng, Direction};
use vidgen_video_io::{grid::GridStyle, side_by_side, videos_to_tensor, Frame, PixelRange, Video};

use super::io_err;
use super::motion::DirectionEstimator;
use super::patch_vq::PatchTokenizer;
use super::train::episode_prompt;
use super::world::{opposite, Episode, MiniConfig, MiniWorld};

/// Which demo the query is shown with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// (a) A demo moving the same way as the query's ground truth.
    Same,
    /// (b) A demo moving the opposite way.
    Opposite,
    /// (c) A demo moving a uniformly random way.
    Random,
    /// (d) No demo: only the query.
    NoDemo,
}

impl Condition {
    /// The four conditions in report order.
    pub const ALL: [Condition; 4] = [
        Condition::Same,
        Condition::Opposite,
        Condition::Random,
        Condition::NoDemo,
    ];

    /// The label printed in the table.
    pub fn label(self) -> &'static str {
        match self {
            Condition::Same => "(a) demo, same way",
            Condition::Opposite => "(b) demo, opposite way",
            Condition::Random => "(c) demo, random way",
            Condition::NoDemo => "(d) no demo",
        }
    }

    /// A file-name slug.
    pub fn slug(self) -> &'static str {
        match self {
            Condition::Same => "a-same",
            Condition::Opposite => "b-opposite",
            Condition::Random => "c-random",
            Condition::NoDemo => "d-no-demo",
        }
    }

    /// The demo direction for a query whose ground truth moves along `truth`.
    pub fn demo_direction<R: Rng + ?Sized>(
        self,
        truth: Direction,
        rng: &mut R,
    ) -> Option<Direction> {
        match self {
            Condition::Same => Some(truth),
            Condition::Opposite => Some(opposite(truth)),
            Condition::Random => Some(Direction::ALL[rng.random_range(0..8)]),
            Condition::NoDemo => None,
        }
    }
}

/// The measured figures of one condition.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionReport {
    /// The condition.
    pub condition: Condition,
    /// Episodes run.
    pub episodes: usize,
    /// Generations whose measured direction equals the demo's (for (d): the query's ground
    /// truth, the only direction there is).
    pub hits: usize,
    /// Generations whose measured direction equals the query's ground truth.
    pub hits_truth: usize,
    /// Generations in which the estimator found no motion.
    pub still: usize,
    /// PSNR (dB) of the generated frames against the ground-truth continuation, from the MSE
    /// over all episodes' frames (pixels in `[0, 1]`).
    pub psnr: f64,
    /// Mean SSIM (skimage Gaussian, 11×11, σ 1.5) of the generated frames against the ground
    /// truth.
    pub ssim: f64,
    /// Tokens generated (all episodes).
    pub tokens: usize,
    /// Wall-clock seconds spent in `VideoLm::generate_frames`.
    pub seconds: f64,
}

impl ConditionReport {
    /// `hits / episodes`.
    pub fn accuracy(&self) -> f64 {
        self.hits as f64 / self.episodes.max(1) as f64
    }

    /// Wilson 95% interval of [`ConditionReport::accuracy`].
    pub fn interval(&self) -> (f64, f64) {
        wilson(self.hits, self.episodes, 1.959_964)
    }

    /// Generated tokens per second.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// The Wilson score interval of `k` successes in `n` trials at normal quantile `z`.
pub fn wilson(k: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// One evaluated episode, for the GIF strips.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The episode.
    pub episode: Episode,
    /// The decoded generated frames.
    pub generated: Video,
    /// The measured direction.
    pub measured: Option<Direction>,
}

/// The loaded miniature: world geometry, tokenizer and decoder.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Episodes.
    pub world: MiniWorld,
    /// Frames ↔ tokens.
    pub tokenizer: PatchTokenizer,
    /// The decoder.
    pub lm: VideoLm,
}

impl Pipeline {
    /// Loads `dir/mini.json`, `dir/tokenizer/` and `dir/decoder/` (the layout
    /// `train-vidicl-mini` writes).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mini: MiniConfig = vidgen_video_core::loading::read_config(dir.join("mini.json"))?;
        let world = MiniWorld::new(mini)?;
        let tokenizer = PatchTokenizer::load(dir.join("tokenizer"))?;
        let (model, report) =
            LlamaForCausalLM::from_pretrained(dir.join("decoder"), DType::F32, &Device::Cpu)?;
        if !report.is_clean() {
            return Err(report.into_error());
        }
        if model.vocab_size() != tokenizer.vocab_size() {
            return Err(Error::config(
                "vocab_size",
                format!(
                    "decoder has {} tokens, tokenizer {} codes",
                    model.vocab_size(),
                    tokenizer.vocab_size()
                ),
            ));
        }
        if tokenizer.grid() != world.config().grid() {
            return Err(Error::config(
                "patch_size",
                "tokenizer grid differs from mini.json's size / patch",
            ));
        }
        Ok(Pipeline {
            world,
            tokenizer,
            lm: VideoLm::new(model),
        })
    }

    /// Continues the queries of `episodes` (all with a demo, or all without) greedily and
    /// decodes the generated frames. Returns the videos and the seconds spent generating.
    pub fn generate(&self, episodes: &[&Episode]) -> Result<(Vec<Video>, f64)> {
        let prompt = episode_prompt(&self.tokenizer, episodes, false)?;
        let n = self.world.config().gen_frames;
        let t0 = Instant::now();
        let grid = self.lm.generate_frames(
            &prompt,
            n,
            &SamplingConfig::greedy(),
            &mut seeded_rng(0),
            |_| {},
        )?;
        let secs = t0.elapsed().as_secs_f64();
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
        Ok((videos, secs))
    }

    /// Runs `episodes` episodes (indices `0..episodes` of stream `seed`, so every condition sees
    /// the same queries) in batches of `batch`, measuring each generation with `estimator`.
    /// Keeps the first `keep` episodes as [`Sample`]s. `progress` gets the episodes done.
    // Each argument is a distinct knob of the experiment; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        &self,
        condition: Condition,
        episodes: usize,
        seed: u64,
        batch: usize,
        estimator: &dyn DirectionEstimator,
        keep: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<(ConditionReport, Vec<Sample>)> {
        if episodes == 0 || batch == 0 {
            return Err(Error::invalid("episodes / batch", "must be >= 1"));
        }
        let mut rep = ConditionReport {
            condition,
            episodes,
            hits: 0,
            hits_truth: 0,
            still: 0,
            psnr: 0.0,
            ssim: 0.0,
            tokens: 0,
            seconds: 0.0,
        };
        let (mut sq_err, mut count, mut ssim_sum) = (0f64, 0usize, 0f64);
        let mut samples = Vec::new();
        let mut start = 0;
        while start < episodes {
            let n = batch.min(episodes - start);
            let eps = (start..start + n)
                .map(|i| {
                    self.world
                        .episode(seed, i as u64, |d, r| condition.demo_direction(d, r))
                })
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&Episode> = eps.iter().collect();
            let (generated, secs) = self.generate(&refs)?;
            rep.seconds += secs;
            rep.tokens +=
                n * self.world.config().gen_frames * self.world.config().tokens_per_frame();
            // Motion is measured from the tokenised last query frame, so tokenizer error does
            // not count as motion.
            let last_query: Vec<u32> = eps
                .iter()
                .map(|e| {
                    let f = e
                        .query
                        .frames()
                        .last()
                        .ok_or_else(|| Error::invalid("episode", "query has no frames"))?;
                    self.tokenizer.encode_frames(std::slice::from_ref(f))
                })
                .collect::<Result<Vec<_>>>()?
                .concat();
            let q_frames = self.tokenizer.decode_ids(&last_query)?;
            for (k, (e, g)) in eps.iter().zip(&generated).enumerate() {
                let mut run: Vec<&Frame> = vec![&q_frames[k]];
                run.extend(g.frames());
                let measured = estimator.direction(&run)?;
                let target = e.demo_direction.unwrap_or(e.query_direction);
                rep.hits += usize::from(measured == Some(target));
                rep.hits_truth += usize::from(measured == Some(e.query_direction));
                rep.still += usize::from(measured.is_none());
                if start + k < keep {
                    samples.push(Sample {
                        episode: e.clone(),
                        generated: g.clone(),
                        measured,
                    });
                }
            }
            let truth: Vec<Video> = eps.iter().map(|e| e.truth.clone()).collect();
            let reference = videos_to_tensor(&truth, PixelRange::ZeroToOne, &Device::Cpu)?;
            let distorted = videos_to_tensor(&generated, PixelRange::ZeroToOne, &Device::Cpu)?;
            let p = psnr(&reference, &distorted, DataRange::UNIT)?;
            sq_err += p.per_frame_mse.iter().sum::<f64>();
            count += p.per_frame_mse.len();
            let s = ssim(
                &reference,
                &distorted,
                DataRange::UNIT,
                SsimFlavour::SkimageGaussian,
            )?;
            ssim_sum += s.per_frame.iter().sum::<f64>();
            start += n;
            progress(start);
        }
        let mse = sq_err / count.max(1) as f64;
        rep.psnr = if mse > 0.0 {
            -10.0 * mse.log10()
        } else {
            f64::INFINITY
        };
        rep.ssim = ssim_sum / count.max(1) as f64;
        Ok((rep, samples))
    }

    /// How often `estimator` finds the true direction in the ground-truth continuations of
    /// the first `episodes` episodes of stream `seed` (from the last query frame): the
    /// scorer's own accuracy, an upper bound on what it can report.
    pub fn estimator_on_truth(
        &self,
        episodes: usize,
        seed: u64,
        estimator: &dyn DirectionEstimator,
    ) -> Result<f64> {
        let mut hits = 0usize;
        for i in 0..episodes as u64 {
            let e = self.world.episode(seed, i, |_, _| None)?;
            let mut run: Vec<&Frame> = e.query.frames().last().into_iter().collect();
            run.extend(e.truth.frames());
            hits += usize::from(estimator.direction(&run)? == Some(e.query_direction));
        }
        Ok(hits as f64 / episodes.max(1) as f64)
    }

    /// PSNR / SSIM of the tokenizer's round trip of the ground truth over the first
    /// `episodes` episodes of stream `seed`: the ceiling any generation can reach.
    pub fn tokenizer_ceiling(&self, episodes: usize, seed: u64) -> Result<(f64, f64)> {
        let eps = (0..episodes as u64)
            .map(|i| self.world.episode(seed, i, |_, _| None))
            .collect::<Result<Vec<_>>>()?;
        let truth: Vec<Video> = eps.iter().map(|e| e.truth.clone()).collect();
        let recon = truth
            .iter()
            .map(|v| {
                Video::new(
                    self.tokenizer
                        .decode_ids(&self.tokenizer.encode_frames(v.frames())?)?,
                    v.fps(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let a = videos_to_tensor(&truth, PixelRange::ZeroToOne, &Device::Cpu)?;
        let b = videos_to_tensor(&recon, PixelRange::ZeroToOne, &Device::Cpu)?;
        let p = psnr(&a, &b, DataRange::UNIT)?;
        let s = ssim(&a, &b, DataRange::UNIT, SsimFlavour::SkimageGaussian)?;
        Ok((p.global, s.mean))
    }
}

/// The report table (plain text, aligned).
pub fn format_table(reports: &[ConditionReport]) -> String {
    let mut s = String::new();
    s.push_str(
        "condition                  episodes   acc. vs demo   Wilson 95%        acc. vs truth   still   PSNR dB   SSIM    tokens/s\n",
    );
    s.push_str(
        "-------------------------  --------   ------------   ---------------   -------------   -----   -------   -----   --------\n",
    );
    for r in reports {
        let (lo, hi) = r.interval();
        let acc = format!("{:5.1}%", 100.0 * r.accuracy());
        let acc = if r.condition == Condition::NoDemo {
            format!("{acc}*")
        } else {
            acc
        };
        s.push_str(&format!(
            "{:<25}  {:>8}   {:>12}   [{:5.1}, {:5.1}]%   {:>12.1}%   {:>5}   {:>7.2}   {:>5.3}   {:>8.0}\n",
            r.condition.label(),
            r.episodes,
            acc,
            100.0 * lo,
            100.0 * hi,
            100.0 * r.hits_truth as f64 / r.episodes.max(1) as f64,
            r.still,
            r.psnr,
            r.ssim,
            r.tokens_per_s(),
        ));
    }
    s
}

/// Nearest-neighbour upscaling by an integer factor (for GIFs a person can see).
pub fn upscale(f: &Frame, k: u32) -> Result<Frame> {
    let (w, h) = (f.width() * k, f.height() * k);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&f.get(x / k, y / k).unwrap_or([0, 0, 0]));
        }
    }
    Frame::new(w, h, data)
}

/// Writes `sample` as an animated GIF strip `demo | query | generated | ground truth`, every
/// panel upscaled `scale`×. The query panel holds the given frames then repeats the last; the
/// generated and truth panels show the last query frame, then the continuation.
pub fn write_strip(
    path: impl AsRef<Path>,
    world: &MiniWorld,
    sample: &Sample,
    scale: u32,
) -> Result<()> {
    let c = world.config();
    let e = &sample.episode;
    let blank = Frame::filled(c.size, c.size, c.background)?;
    let last_q = e
        .query
        .frames()
        .last()
        .cloned()
        .unwrap_or_else(|| blank.clone());
    let demo = match &e.demo {
        Some(d) => d.frames().to_vec(),
        None => vec![blank.clone()],
    };
    let query = e.query.frames().to_vec();
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
    let panels = [up(demo)?, up(query)?, up(generated)?, up(truth)?];
    let strip = side_by_side(
        &panels.iter().collect::<Vec<_>>(),
        GridStyle {
            separator: 4,
            color: [255, 255, 255],
        },
    )?;
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    vidgen_video_io::write_gif(path, &strip)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_known_values() {
        // 180 / 200: [0.8506, 0.9343] (standard Wilson interval).
        let (lo, hi) = wilson(180, 200, 1.959_964);
        assert!(
            (lo - 0.8506).abs() < 1e-3 && (hi - 0.9343).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(0, 10, 1.959_964);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.2775).abs() < 1e-3);
        assert_eq!(wilson(0, 0, 1.96), (0.0, 1.0));
    }
}
