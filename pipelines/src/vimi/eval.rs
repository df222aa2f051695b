//! Measuring a VIMI model on its world: does the generated object take the example's look
//! while it moves as the text says, and how well does the index retrieve.
//!
//! Episode `i` of a run draws one target scene (shape, colour, direction) from the stream
//! `seed`, the same in every condition:
//!
//! | condition | prompt | examples | the object should be | the motion should be |
//! |---|---|---|---|---|
//! | `given-image` | `a shape moving left` | a still of the target's object elsewhere | the example's | the text's |
//! | `retrieved` | `a shape moving left` | the top-k of a held-out index for `a blue triangle` | the query's | the text's |
//! | `random-retrieved` | `a shape moving left` | `k` random items of the held-out index | (chance: the baseline of `retrieved`) | the text's |
//! | `no-example` | `a shape moving left` | none | (chance) | the text's |
//! | `text-only` | `a blue triangle moving left` | none | the text's | the text's |
//! | `example-clip` | `a blue triangle` | a clip of another object moving the target's way | the text's | the example's |
//!
//! Every generated clip is read by [`Probe`] (colour, shape, direction, exact on ground truth),
//! each rate with its Wilson 95% interval and its chance level. Retrieval precision@k: held-out
//! captions (not in the index) query the held-out index; a hit is relevant when its object
//! (colour and shape) is the query's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{Colour, Direction, Shape};
use vidgen_video_io::{write_gif, Frame, Video};

use super::index::{search_text, TextRetrieval};
use super::pipeline::{Example, VimiOptions, VimiPipeline};
use super::probe::Probe;
use super::train::make_corpus;
use super::world::{CaptionStyle, MiniWorld, Scene};

/// The Wilson score interval of `k` successes in `n` trials (z = 1.96).
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_964f64;
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The evaluation conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// Ambiguous text + a given example image.
    GivenImage,
    /// Ambiguous text + examples retrieved by the subject's description.
    Retrieved,
    /// Ambiguous text + examples drawn at random from the held-out index (the retrieval
    /// baseline: the same number of examples, no ranking).
    RandomRetrieved,
    /// Ambiguous text alone.
    NoExample,
    /// The full caption alone.
    TextOnly,
    /// The subject named + an example clip of another object giving the motion.
    ExampleClip,
}

impl Condition {
    /// Every condition, in report order.
    pub const ALL: [Condition; 6] = [
        Condition::GivenImage,
        Condition::Retrieved,
        Condition::RandomRetrieved,
        Condition::NoExample,
        Condition::TextOnly,
        Condition::ExampleClip,
    ];

    /// The label (`given-image`).
    pub fn label(self) -> &'static str {
        match self {
            Condition::GivenImage => "given-image",
            Condition::Retrieved => "retrieved",
            Condition::RandomRetrieved => "random-retrieved",
            Condition::NoExample => "no-example",
            Condition::TextOnly => "text-only",
            Condition::ExampleClip => "example-clip",
        }
    }

    /// Parses a label.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.label() == s)
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Episodes per condition.
    pub prompts: usize,
    /// Seed of the episode stream (keep it apart from the training seeds).
    pub seed: u64,
    /// Sampling settings (its seed is offset per episode).
    pub steps: usize,
    /// `s_T`.
    pub text_scale: f64,
    /// `s_E`.
    pub example_scale: f64,
    /// Examples retrieved in `retrieved`.
    pub retrieve: usize,
    /// Retrieval ranking for `retrieved`.
    pub bm25: bool,
    /// Clips per denoiser batch.
    pub batch: usize,
    /// Items of the held-out index.
    pub index_size: usize,
    /// `k` of precision@k.
    pub precision_k: usize,
    /// The conditions to run.
    pub conditions: Vec<Condition>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            prompts: 200,
            seed: 2024,
            steps: 20,
            text_scale: 1.5,
            example_scale: 1.5,
            retrieve: 1,
            bm25: true,
            batch: 50,
            index_size: 1000,
            precision_k: 4,
            conditions: Condition::ALL.to_vec(),
        }
    }
}

/// One condition's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConditionReport {
    /// The condition.
    pub condition: Condition,
    /// Episodes.
    pub n: usize,
    /// Colour and shape both as expected.
    pub object: usize,
    /// Colour as expected.
    pub colour: usize,
    /// Shape as expected.
    pub shape: usize,
    /// Direction as expected.
    pub direction: usize,
    /// Chance of `object`, `colour`, `shape`, `direction` for a generator that ignores the
    /// condition.
    pub chance: [f64; 4],
    /// Wall seconds.
    pub seconds: f64,
}

impl ConditionReport {
    /// `(rate, Wilson low, Wilson high)` of a count.
    pub fn rate(&self, k: usize) -> (f64, f64, f64) {
        let (lo, hi) = wilson(k, self.n);
        (k as f64 / self.n.max(1) as f64, lo, hi)
    }
}

/// Retrieval precision@k of one ranking.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// `bm25` / `minilm`.
    pub method: String,
    /// The query style (`full`: `a blue triangle moving left`; `subject`: `a blue triangle`).
    pub queries: String,
    /// `k`.
    pub k: usize,
    /// Relevant hits (same colour and shape as the query).
    pub relevant: usize,
    /// Hits in all.
    pub hits: usize,
    /// Relevant hits among those that also move the query's way (`full` queries only).
    pub exact: usize,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    /// The settings.
    pub options: EvalOptions,
    /// Per condition.
    pub conditions: Vec<ConditionReport>,
    /// Retrieval precision.
    pub retrieval: Vec<RetrievalReport>,
}

/// One record of `episodes.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpisodeRecord {
    /// The generated clip (GIF), relative to the output folder.
    pub file: String,
    /// The condition's label.
    pub condition: String,
    /// The prompt.
    pub instruction: Option<String>,
    /// `[dx, dy]`, x right, y down.
    pub expected_direction: [i32; 2],
    /// `[r, g, b]`, when the condition fixes the colour.
    pub expected_color: Option<[u8; 3]>,
    /// The shape's name, when the condition fixes it.
    pub expected_shape: Option<String>,
    /// The example files given to the model (relative to the output folder).
    pub examples: Vec<String>,
    /// What the probe read: colour, shape, direction names (null where none).
    pub measured: serde_json::Value,
}

struct Episode {
    prompt: String,
    examples: Vec<Example>,
    direction: Direction,
    colour: Colour,
    shape: Shape,
    /// Whether the condition fixes the appearance (false: chance).
    fixes_look: bool,
}

/// The seeded stream of episode `i` of the evaluation stream `seed` (shared by the miniatures'
/// evaluations, and by probes that must draw the same episodes).
pub fn episode_rng(seed: u64, i: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9).wrapping_add(i as u64))
}

/// Runs the evaluation; with `out`, writes every generated clip as a GIF (upscaled ×4 for
/// viewing), the examples beside it, `episodes.json` and `report.json`.
///
/// # Errors
/// Generation, retrieval and I/O errors.
pub fn evaluate(
    pipe: &VimiPipeline,
    opts: &EvalOptions,
    out: Option<&Path>,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<EvalReport> {
    let cfg = &pipe.model().config;
    let world = MiniWorld::new(cfg.world.clone())?;
    let probe = Probe::new(world.clone());
    let held = make_corpus(
        &world,
        opts.index_size,
        opts.seed ^ 0xC0FFEE,
        "heldout",
        Some(pipe.text()),
    )?;
    let method = if opts.bm25 {
        TextRetrieval::Bm25
    } else {
        TextRetrieval::Sentence
    };
    let (nc, ns) = (world.colours().len() as f64, world.shapes().len() as f64);
    let mut records = Vec::new();
    let mut reports = Vec::new();
    for &cond in &opts.conditions {
        let t0 = Instant::now();
        // episodes
        let mut eps = Vec::with_capacity(opts.prompts);
        for i in 0..opts.prompts {
            let mut rng = episode_rng(opts.seed, i);
            let s = world.scene(&mut rng, None, None, None)?;
            eps.push(make_episode(
                &world, &held, pipe, cond, &s, opts, method, &mut rng,
            )?);
        }
        let mut rep = ConditionReport {
            condition: cond,
            n: 0,
            object: 0,
            colour: 0,
            shape: 0,
            direction: 0,
            chance: [1.0 / (nc * ns), 1.0 / nc, 1.0 / ns, 1.0 / 8.0],
            seconds: 0.0,
        };
        for (bi, chunk) in eps.chunks(opts.batch.max(1)).enumerate() {
            let prompts: Vec<&str> = chunk.iter().map(|e| e.prompt.as_str()).collect();
            let examples: Vec<Vec<Example>> = chunk.iter().map(|e| e.examples.clone()).collect();
            let vo = VimiOptions {
                steps: opts.steps,
                guidance: super::pipeline::VimiGuidance {
                    text: opts.text_scale,
                    example: opts.example_scale,
                },
                seed: opts.seed.wrapping_add(bi as u64 * 7919),
                eta: 0.0,
            };
            let gen = pipe.generate(&prompts, &examples, &vo, &mut |_| {})?;
            for (j, (ep, clip)) in chunk.iter().zip(&gen.videos).enumerate() {
                let idx = bi * opts.batch.max(1) + j;
                let r = probe.read(clip);
                rep.n += 1;
                let c_ok = r.colour == Some(ep.colour);
                let s_ok = r.shape == Some(ep.shape);
                rep.colour += usize::from(c_ok);
                rep.shape += usize::from(s_ok);
                rep.object += usize::from(c_ok && s_ok);
                rep.direction += usize::from(r.direction == Some(ep.direction));
                if let Some(dir) = out {
                    records.push(write_episode(dir, cond, idx, ep, clip, &r)?);
                }
            }
            progress(cond.label(), rep.n, opts.prompts);
        }
        rep.seconds = t0.elapsed().as_secs_f64();
        reports.push(rep);
    }
    let retrieval = precision(&world, &held, pipe, opts)?;
    let report = EvalReport {
        options: opts.clone(),
        conditions: reports,
        retrieval,
    };
    if let Some(dir) = out {
        let write = |name: &str, v: &dyn erased::Json| -> Result<()> {
            let p = dir.join(name);
            std::fs::write(&p, v.to_json()?).map_err(|e| Error::Io { path: p, source: e })
        };
        write("episodes.json", &records)?;
        write("report.json", &report)?;
    }
    Ok(report)
}

/// JSON writing shared by the miniatures' evaluations.
pub(crate) mod erased {
    use vidgen_video_core::{Error, Result};
    /// JSON of any serialisable value (object-safe).
    pub trait Json {
        fn to_json(&self) -> Result<Vec<u8>>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<Vec<u8>> {
            serde_json::to_vec_pretty(self).map_err(|e| Error::invalid("json", e.to_string()))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn make_episode(
    world: &MiniWorld,
    held: &super::train::Corpus,
    pipe: &VimiPipeline,
    cond: Condition,
    s: &Scene,
    opts: &EvalOptions,
    method: TextRetrieval,
    rng: &mut ChaCha8Rng,
) -> Result<Episode> {
    let ambiguous = s.caption(CaptionStyle::Ambiguous);
    let mut ep = Episode {
        prompt: ambiguous,
        examples: Vec::new(),
        direction: s.direction,
        colour: s.colour,
        shape: s.shape,
        fixes_look: true,
    };
    match cond {
        Condition::GivenImage => {
            let sub = world.scene(rng, Some(s.shape), Some(s.colour), None)?;
            ep.examples.push(Example::Image(world.still(&sub)?));
        }
        Condition::Retrieved => {
            let q = s.caption(CaptionStyle::Subject);
            let hits = search_text(
                &held.index,
                Some(pipe.text()),
                &[q.as_str()],
                opts.retrieve,
                method,
                None,
                Some(0.98),
            )?;
            let hits = hits.into_iter().next().unwrap_or_default();
            if hits.len() < opts.retrieve {
                return Err(Error::invalid(
                    "retrieve",
                    format!(
                        "the index returned {} of {} examples for `{q}`",
                        hits.len(),
                        opts.retrieve
                    ),
                ));
            }
            for h in hits {
                ep.examples
                    .push(Example::Image(world.still(&held.scenes[h.item])?));
            }
        }
        Condition::RandomRetrieved => {
            use rand::Rng;
            let n = held.scenes.len();
            if n == 0 {
                return Err(Error::invalid("index_size", "the held-out index is empty"));
            }
            for _ in 0..opts.retrieve.max(1) {
                let item = rng.random_range(0..n);
                ep.examples
                    .push(Example::Image(world.still(&held.scenes[item])?));
            }
        }
        Condition::NoExample => ep.fixes_look = false,
        Condition::TextOnly => ep.prompt = s.caption(CaptionStyle::Full),
        Condition::ExampleClip => {
            ep.prompt = s.caption(CaptionStyle::Subject);
            let others_s: Vec<Shape> = world
                .shapes()
                .iter()
                .copied()
                .filter(|&x| x != s.shape)
                .collect();
            let others_c: Vec<Colour> = world
                .colours()
                .iter()
                .copied()
                .filter(|&x| x != s.colour)
                .collect();
            use rand::Rng;
            let shape = others_s
                .get(rng.random_range(0..others_s.len().max(1)))
                .copied();
            let colour = others_c
                .get(rng.random_range(0..others_c.len().max(1)))
                .copied();
            let demo = world.scene(rng, shape, colour, Some(s.direction))?;
            ep.examples.push(Example::Clip(world.clip(&demo)?));
        }
    }
    Ok(ep)
}

/// Nearest-neighbour upscaling by an integer factor.
fn upscale(f: &Frame, k: u32) -> Result<Frame> {
    let (w, h) = (f.width() * k, f.height() * k);
    let mut out = Frame::filled(w, h, [0, 0, 0])?;
    for y in 0..h {
        for x in 0..w {
            if let Some(p) = f.get(x / k, y / k) {
                out.put(x, y, p);
            }
        }
    }
    Ok(out)
}

fn upscale_video(v: &Video, k: u32) -> Result<Video> {
    let frames = v
        .frames()
        .iter()
        .map(|f| upscale(f, k))
        .collect::<Result<Vec<_>>>()?;
    Video::new(frames, v.fps())
}

fn write_episode(
    dir: &Path,
    cond: Condition,
    idx: usize,
    ep: &Episode,
    clip: &Video,
    r: &super::probe::Reading,
) -> Result<EpisodeRecord> {
    let sub: PathBuf = dir.join(cond.label());
    std::fs::create_dir_all(&sub).map_err(|e| Error::Io {
        path: sub.clone(),
        source: e,
    })?;
    let file = format!("{}/{idx:04}.gif", cond.label());
    write_gif(dir.join(&file), &upscale_video(clip, 4)?)?;
    let mut examples = Vec::new();
    for (j, ex) in ep.examples.iter().enumerate() {
        let name = format!("{}/{idx:04}-example{j}.gif", cond.label());
        let v = match ex {
            Example::Image(f) => Video::new(vec![f.clone()], clip.fps())?,
            Example::Clip(v) => v.clone(),
        };
        write_gif(dir.join(&name), &upscale_video(&v, 4)?)?;
        examples.push(name);
    }
    let (dx, dy) = ep.direction.delta();
    Ok(EpisodeRecord {
        file,
        condition: cond.label().into(),
        instruction: Some(ep.prompt.clone()),
        expected_direction: [dx, dy],
        expected_color: ep.fixes_look.then(|| ep.colour.rgb()),
        expected_shape: ep.fixes_look.then(|| ep.shape.name().to_string()),
        examples,
        measured: serde_json::json!({
            "colour": r.colour.map(|c| c.name()),
            "shape": r.shape.map(|s| s.name()),
            "direction": r.direction.map(|d| d.name()),
        }),
    })
}

/// Precision@k of BM25 and (with the sentence encoder) MiniLM on held-out captions.
fn precision(
    world: &MiniWorld,
    held: &super::train::Corpus,
    pipe: &VimiPipeline,
    opts: &EvalOptions,
) -> Result<Vec<RetrievalReport>> {
    let mut queries = Vec::with_capacity(opts.prompts);
    for i in 0..opts.prompts {
        let mut rng = episode_rng(opts.seed ^ 0x5EA5C4, i);
        queries.push(world.scene(&mut rng, None, None, None)?);
    }
    let mut out = Vec::new();
    for method in [TextRetrieval::Bm25, TextRetrieval::Sentence] {
        for style in [CaptionStyle::Full, CaptionStyle::Subject] {
            let texts: Vec<String> = queries.iter().map(|s| s.caption(style)).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let hits = search_text(
                &held.index,
                Some(pipe.text()),
                &refs,
                opts.precision_k,
                method,
                None,
                None,
            )?;
            let mut r = RetrievalReport {
                method: method.name().into(),
                queries: if style == CaptionStyle::Full {
                    "full"
                } else {
                    "subject"
                }
                .into(),
                k: opts.precision_k,
                relevant: 0,
                hits: 0,
                exact: 0,
            };
            for (q, h) in queries.iter().zip(hits) {
                // a query that returns fewer than k hits counts the missing ones as irrelevant
                r.hits += opts.precision_k;
                for x in h {
                    let s = &held.scenes[x.item];
                    let rel = s.colour == q.colour && s.shape == q.shape;
                    r.relevant += usize::from(rel);
                    r.exact += usize::from(rel && s.direction == q.direction);
                }
            }
            out.push(r);
        }
    }
    Ok(out)
}

/// The report as an aligned text table.
pub fn format_report(r: &EvalReport) -> String {
    let mut s = String::new();
    s.push_str("condition         n     object (colour+shape)       colour   shape    direction (8-way)          chance obj/dir\n");
    s.push_str("--------------    ---   -------------------------   ------   ------   -------------------------  --------------\n");
    for c in &r.conditions {
        let (o, olo, ohi) = c.rate(c.object);
        let (d, dlo, dhi) = c.rate(c.direction);
        s.push_str(&format!(
            "{:<16}  {:>3}   {:5.1}% [{:5.1}, {:5.1}]%     {:5.1}%   {:5.1}%   {:5.1}% [{:5.1}, {:5.1}]%   {:4.1}% / {:4.1}%\n",
            c.condition.label(),
            c.n,
            100.0 * o,
            100.0 * olo,
            100.0 * ohi,
            100.0 * c.colour as f64 / c.n.max(1) as f64,
            100.0 * c.shape as f64 / c.n.max(1) as f64,
            100.0 * d,
            100.0 * dlo,
            100.0 * dhi,
            100.0 * c.chance[0],
            100.0 * c.chance[3],
        ));
    }
    s.push_str("\nretrieval (held-out captions)   precision@k (same colour and shape)   same object and direction\n");
    for p in &r.retrieval {
        let (lo, hi) = wilson(p.relevant, p.hits);
        s.push_str(&format!(
            "{:<7} {:<8} k={}              {:5.1}% [{:5.1}, {:5.1}]% of {:>4}          {:5.1}%\n",
            p.method,
            p.queries,
            p.k,
            100.0 * p.relevant as f64 / p.hits.max(1) as f64,
            100.0 * lo,
            100.0 * hi,
            p.hits,
            100.0 * p.exact as f64 / p.hits.max(1) as f64,
        ));
    }
    s
}
