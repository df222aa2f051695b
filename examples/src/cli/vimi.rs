//! `vidgen vimi ...`: VIMI (issue 32) — retrieval-augmented multimodal instructions for video
//! generation on the miniature's world: `train` (the two stages), `eval` (measured rates with
//! Wilson intervals), `generate` (a prompt + given or retrieved examples → a GIF), `index` (a
//! captioned world corpus → a saved retrieval index) and `search` (a prompt → the index's
//! top-k).

use std::path::PathBuf;
use std::time::Instant;

use vidgen_adapters::retrieval::RetrievalIndex;
use vidgen_pipelines::vimi::eval::{evaluate, format_report, Condition, EvalOptions};
use vidgen_pipelines::vimi::index::{add_text_space, search_text, ClipEmbedder, TextRetrieval};
use vidgen_pipelines::vimi::train::{make_corpus, train, Stages, TrainOptions};
use vidgen_pipelines::vimi::{
    default_minilm_dir, Example, MiniWorld, SentenceStates, VimiConfig, VimiGuidance, VimiOptions,
    VimiPipeline,
};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::{write_gif, Video};

/// The shipped miniature: `examples/assets/vimi-mini`.
pub fn shipped_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/vimi-mini")
}

/// `vidgen vimi`'s commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum VimiCommand {
    /// Train VIMI-mini: retrieval-augmented pre-training, then the three instruction tasks.
    Train(TrainArgs),
    /// Measure VIMI-mini (default: the shipped one) over seeded episodes.
    Eval(EvalArgs),
    /// A prompt (+ example images / a clip, or `--retrieve k` from an index) → a GIF.
    Generate(GenerateArgs),
    /// Build a retrieval index of a captioned world corpus in DIR (clips as GIFs, BM25 over
    /// the captions, MiniLM caption embeddings, pixel embeddings for near-duplicates).
    Index(IndexArgs),
    /// Search an index for a prompt.
    Search(SearchArgs),
}

impl VimiCommand {
    /// Whether the command prints its JSON report.
    pub fn json(&self) -> bool {
        match self {
            VimiCommand::Train(_) => false,
            VimiCommand::Eval(a) => a.json,
            VimiCommand::Generate(a) => a.json,
            VimiCommand::Index(_) => false,
            VimiCommand::Search(a) => a.json,
        }
    }
}

/// Arguments of `vidgen vimi train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Output folder (copy `config.json`, `model.safetensors` to ship).
    #[arg(long, default_value = "vimi-mini-train")]
    pub out: PathBuf,
    /// Master seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stages: 1, 2 (from OUT/stage1) or both.
    #[arg(long, default_value = "both")]
    pub stages: String,
    /// Clips of the stage-1 corpus.
    #[arg(long)]
    pub corpus: Option<usize>,
    /// Steps of stage 0 (the example encoder's pre-training; 0: none, the encoder then
    /// trains with the denoiser).
    #[arg(long)]
    pub stage0_steps: Option<usize>,
    /// Steps of stage 1.
    #[arg(long)]
    pub stage1_steps: Option<usize>,
    /// Steps of stage 2.
    #[arg(long)]
    pub stage2_steps: Option<usize>,
    /// Clips per step.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Extra loss weight of the object's pixels (0: plain MSE).
    #[arg(long)]
    pub object_weight: Option<f64>,
    /// The all-MiniLM-L6-v2 folder (default: `$VIDGEN_WEIGHTS/all-minilm-l6-v2` or
    /// `~/.cache/vidgen/weights/all-minilm-l6-v2`).
    #[arg(long)]
    pub minilm: Option<PathBuf>,
    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `vidgen vimi eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The model folder (default: the shipped `examples/assets/vimi-mini`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The all-MiniLM-L6-v2 folder.
    #[arg(long)]
    pub minilm: Option<PathBuf>,
    /// Episodes per condition.
    #[arg(long, default_value_t = 200)]
    pub prompts: usize,
    /// Episode stream (apart from the training seeds).
    #[arg(long, default_value_t = 2024)]
    pub seed: u64,
    /// DDIM steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Text guidance `s_T`.
    #[arg(long, default_value_t = 1.5)]
    pub text_scale: f64,
    /// Example guidance `s_E`.
    #[arg(long, default_value_t = 1.5)]
    pub example_scale: f64,
    /// Examples retrieved in the `retrieved` condition.
    #[arg(long, default_value_t = 1)]
    pub retrieve: usize,
    /// Retrieve by MiniLM cosine instead of BM25 in the `retrieved` condition.
    #[arg(long)]
    pub minilm_retrieval: bool,
    /// Items of the held-out index.
    #[arg(long, default_value_t = 1000)]
    pub index_size: usize,
    /// Conditions (comma-separated; default all): given-image, retrieved, random-retrieved,
    /// no-example, text-only, example-clip.
    #[arg(long, value_delimiter = ',')]
    pub conditions: Vec<String>,
    /// Write every generated clip as a GIF, `episodes.json` and `report.json` here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `vidgen vimi generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// An example image (PNG / GIF first frame; other sizes are resized to the model's with an
    /// area filter, which undoes an integer nearest-neighbour upscale such as `--upscale`'s);
    /// repeat for several.
    #[arg(long)]
    pub image: Vec<PathBuf>,
    /// An example clip (GIF; resized like `--image`) whose motion to follow.
    #[arg(long, conflicts_with = "image")]
    pub clip: Option<PathBuf>,
    /// Retrieve this many example images for the prompt (BM25) from `--index`.
    #[arg(long, conflicts_with_all = ["image", "clip"])]
    pub retrieve: Option<usize>,
    /// The index to retrieve from (made by `vidgen vimi index`).
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// The model folder (default: the shipped miniature).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The all-MiniLM-L6-v2 folder.
    #[arg(long)]
    pub minilm: Option<PathBuf>,
    /// DDIM steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Text guidance `s_T`.
    #[arg(long, default_value_t = 1.5)]
    pub text_scale: f64,
    /// Example guidance `s_E`.
    #[arg(long, default_value_t = 1.5)]
    pub example_scale: f64,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Upscale the written GIF by this factor (nearest neighbour).
    #[arg(long, default_value_t = 4)]
    pub upscale: u32,
    /// The output: a `.gif`, or a folder of PNG frames.
    #[arg(long, short, default_value = "vimi.gif")]
    pub out: PathBuf,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `vidgen vimi index`.
#[derive(Debug, Clone, clap::Args)]
pub struct IndexArgs {
    /// The index folder to write (`index.json`, `embeddings.safetensors`, `clips/*.gif`).
    pub dir: PathBuf,
    /// Clips of the corpus.
    #[arg(long, default_value_t = 1000)]
    pub clips: usize,
    /// Corpus seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Skip the MiniLM caption space (BM25 and pixels only; no weights needed).
    #[arg(long)]
    pub no_minilm: bool,
    /// The all-MiniLM-L6-v2 folder.
    #[arg(long)]
    pub minilm: Option<PathBuf>,
    /// Skip writing the clips' GIFs.
    #[arg(long)]
    pub no_media: bool,
    /// Also embed the captions (`clip_text`) and the clips' first frames (`clip_image`) with a
    /// transformers CLIP folder (`CLIPModel` + tokenizer + `preprocessor_config.json`).
    #[arg(long)]
    pub clip: Option<PathBuf>,
}

/// Arguments of `vidgen vimi search`.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchArgs {
    /// The query.
    pub prompt: String,
    /// Hits.
    #[arg(short, default_value_t = 4)]
    pub k: usize,
    /// The index folder.
    #[arg(long, default_value = "vimi-index")]
    pub index: PathBuf,
    /// Rank by MiniLM cosine (the `text` space) instead of BM25.
    #[arg(long)]
    pub minilm_retrieval: bool,
    /// The all-MiniLM-L6-v2 folder.
    #[arg(long)]
    pub minilm: Option<PathBuf>,
    /// Near-duplicate threshold in the pixel space (none: keep near-duplicates).
    #[arg(long)]
    pub dedup: Option<f32>,
    /// Print the hits as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `vidgen vimi` command; returns its JSON report.
///
/// # Errors
/// Training, evaluation, retrieval and I/O errors, naming the file or flag.
pub fn run(cmd: &VimiCommand) -> Result<serde_json::Value> {
    match cmd {
        VimiCommand::Train(a) => run_train(a),
        VimiCommand::Eval(a) => run_eval(a),
        VimiCommand::Generate(a) => run_generate(a),
        VimiCommand::Index(a) => run_index(a),
        VimiCommand::Search(a) => run_search(a),
    }
}

fn minilm_dir(p: &Option<PathBuf>) -> PathBuf {
    p.clone().unwrap_or_else(default_minilm_dir)
}

fn run_train(a: &TrainArgs) -> Result<serde_json::Value> {
    let stages = match a.stages.as_str() {
        "1" => Stages::One,
        "2" => Stages::Two,
        "both" => Stages::Both,
        other => {
            return Err(Error::invalid(
                "--stages",
                format!("`{other}`: expected 1, 2 or both"),
            ))
        }
    };
    let mut o = TrainOptions {
        seed: a.seed,
        ..TrainOptions::default()
    };
    if let Some(v) = a.corpus {
        o.corpus = v;
    }
    if let Some(v) = a.stage0_steps {
        o.stage0_steps = v;
    }
    if let Some(v) = a.stage1_steps {
        o.stage1_steps = v;
    }
    if let Some(v) = a.object_weight {
        o.object_weight = v;
    }
    if let Some(v) = a.stage2_steps {
        o.stage2_steps = v;
    }
    if let Some(v) = a.batch {
        o.batch = v;
    }
    if let Some(v) = a.lr {
        o.lr = v;
    }
    let cfg = VimiConfig::mini();
    let states = SentenceStates::load(&minilm_dir(&a.minilm), cfg.text_len)?;
    let t0 = Instant::now();
    let report = train(&a.out, &cfg, &o, &states, stages, !a.quiet)?;
    for s in &report.stages {
        println!(
            "stage {}: {} steps in {:.0} s, loss {:.4} -> {:.4} ({} parameters)",
            s.stage, s.steps, s.seconds, s.loss_start, s.loss_end, s.params
        );
        if let Some(p) = &s.probe {
            println!("stage {} probe: {p}", s.stage);
        }
    }
    println!(
        "vidgen vimi train: done in {:.0} s into {}",
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    serde_json::to_value(&report).map_err(|e| Error::invalid("report", e.to_string()))
}

fn run_eval(a: &EvalArgs) -> Result<serde_json::Value> {
    let dir = a.model.clone().unwrap_or_else(shipped_dir);
    let pipe = VimiPipeline::load(&dir, &minilm_dir(&a.minilm))?;
    let conditions = if a.conditions.is_empty() {
        Condition::ALL.to_vec()
    } else {
        a.conditions
            .iter()
            .map(|c| {
                Condition::parse(c.trim()).ok_or_else(|| {
                    Error::invalid(
                        "--conditions",
                        format!(
                            "`{c}`: expected one of {}",
                            Condition::ALL.map(|c| c.label()).join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?
    };
    if a.prompts == 0 {
        return Err(Error::invalid("--prompts", "must be at least 1"));
    }
    let opts = EvalOptions {
        prompts: a.prompts,
        seed: a.seed,
        steps: a.steps,
        text_scale: a.text_scale,
        example_scale: a.example_scale,
        retrieve: a.retrieve,
        bm25: !a.minilm_retrieval,
        index_size: a.index_size,
        conditions,
        ..EvalOptions::default()
    };
    if let Some(o) = &a.out {
        std::fs::create_dir_all(o).map_err(|e| Error::Io {
            path: o.clone(),
            source: e,
        })?;
    }
    let t0 = Instant::now();
    let quiet = a.json;
    let report = evaluate(&pipe, &opts, a.out.as_deref(), &mut |c, i, n| {
        if !quiet {
            eprintln!("  {c}: {i}/{n}");
        }
    })?;
    if !a.json {
        println!("{}", format_report(&report));
        println!(
            "vidgen vimi eval: {} in {:.0} s",
            dir.display(),
            t0.elapsed().as_secs_f64()
        );
    }
    serde_json::to_value(&report).map_err(|e| Error::invalid("report", e.to_string()))
}

fn run_generate(a: &GenerateArgs) -> Result<serde_json::Value> {
    let dir = a.model.clone().unwrap_or_else(shipped_dir);
    let pipe = VimiPipeline::load(&dir, &minilm_dir(&a.minilm))?;
    let mut examples: Vec<Example> = Vec::new();
    let mut retrieved = Vec::new();
    let s = pipe.model().config.world.size;
    let area = vidgen_video_io::ResizeFilter::Area;
    for p in &a.image {
        let f = super::read_picture(p)?;
        let f = if (f.width(), f.height()) == (s, s) {
            f
        } else {
            vidgen_video_io::resize_frame(&f, s, s, area)?
        };
        examples.push(Example::Image(f));
    }
    if let Some(c) = &a.clip {
        let v = vidgen_video_io::read_gif(c)?;
        let v = match v.frames().first() {
            Some(f) if (f.width(), f.height()) != (s, s) => v.resize(s, s, area)?,
            _ => v,
        };
        examples.push(Example::Clip(v));
    }
    if let Some(k) = a.retrieve.filter(|&k| k > 0) {
        let idx_dir = a.index.as_ref().ok_or_else(|| {
            Error::invalid(
                "--index",
                "--retrieve needs an index folder (make one with `vidgen vimi index DIR`)",
            )
        })?;
        let index = RetrievalIndex::load(idx_dir)?;
        let hits = search_text(
            &index,
            Some(pipe.text()),
            &[a.prompt.as_str()],
            k,
            TextRetrieval::Bm25,
            None,
            Some(0.98),
        )?;
        for h in hits.into_iter().next().unwrap_or_default() {
            let item = &index.items()[h.item];
            let media = item.media.as_ref().ok_or_else(|| {
                Error::invalid("index", format!("item `{}` has no media file", item.id))
            })?;
            examples.push(Example::Image(super::read_picture(&idx_dir.join(media))?));
            retrieved.push(
                serde_json::json!({"id": item.id, "caption": item.caption, "score": h.score}),
            );
        }
    }
    let opts = VimiOptions {
        steps: a.steps,
        guidance: VimiGuidance {
            text: a.text_scale,
            example: a.example_scale,
        },
        seed: a.seed,
        eta: 0.0,
    };
    let t0 = Instant::now();
    let lists = if examples.is_empty() {
        Vec::new()
    } else {
        vec![examples]
    };
    let out = pipe.generate(&[a.prompt.as_str()], &lists, &opts, &mut |_| {})?;
    let clip = out
        .videos
        .into_iter()
        .next()
        .ok_or_else(|| Error::invalid("generate", "no clip came back"))?;
    let clip = upscale(&clip, a.upscale.max(1))?;
    super::write_output(&a.out, &clip)?;
    if !a.json {
        println!(
            "vidgen vimi generate: {} ({} retrieved) in {:.2} s",
            a.out.display(),
            retrieved.len(),
            t0.elapsed().as_secs_f64()
        );
        for r in &retrieved {
            println!("  example: {r}");
        }
    }
    Ok(serde_json::json!({
        "command": "vimi generate", "out": a.out, "prompt": a.prompt,
        "retrieved": retrieved, "seconds": t0.elapsed().as_secs_f64()
    }))
}

fn upscale(v: &Video, k: u32) -> Result<Video> {
    if k == 1 {
        return Ok(v.clone());
    }
    let frames = v
        .frames()
        .iter()
        .map(|f| {
            let (w, h) = (f.width() * k, f.height() * k);
            let mut o = vidgen_video_io::Frame::filled(w, h, [0, 0, 0])?;
            for y in 0..h {
                for x in 0..w {
                    if let Some(p) = f.get(x / k, y / k) {
                        o.put(x, y, p);
                    }
                }
            }
            Ok(o)
        })
        .collect::<Result<Vec<_>>>()?;
    Video::new(frames, v.fps())
}

fn run_index(a: &IndexArgs) -> Result<serde_json::Value> {
    let cfg = VimiConfig::mini();
    let world = MiniWorld::new(cfg.world.clone())?;
    let states = if a.no_minilm {
        None
    } else {
        Some(SentenceStates::load(&minilm_dir(&a.minilm), cfg.text_len)?)
    };
    let t0 = Instant::now();
    let mut corpus = make_corpus(&world, a.clips, a.seed, "item", None)?;
    if let Some(st) = &states {
        add_text_space(&mut corpus.index, st)?;
    }
    if let Some(dir) = &a.clip {
        let clip = ClipEmbedder::load(dir)?;
        let stills = corpus
            .scenes
            .iter()
            .map(|s| world.still(s))
            .collect::<Result<Vec<_>>>()?;
        clip.add_spaces(&mut corpus.index, &stills)?;
    }
    corpus.index.save(&a.dir)?;
    if !a.no_media {
        let clips = a.dir.join("clips");
        std::fs::create_dir_all(&clips).map_err(|e| Error::Io {
            path: clips.clone(),
            source: e,
        })?;
        for (item, s) in corpus.index.items().iter().zip(&corpus.scenes) {
            if let Some(m) = &item.media {
                write_gif(a.dir.join(m), &world.clip(s)?)?;
            }
        }
    }
    println!(
        "vidgen vimi index: {} items ({} spaces) into {} in {:.1} s",
        corpus.index.len(),
        corpus.index.spaces().len(),
        a.dir.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(serde_json::json!({"command": "vimi index", "dir": a.dir, "items": corpus.index.len()}))
}

fn run_search(a: &SearchArgs) -> Result<serde_json::Value> {
    let index = RetrievalIndex::load(&a.index)?;
    let states = if a.minilm_retrieval {
        Some(SentenceStates::load(
            &minilm_dir(&a.minilm),
            VimiConfig::mini().text_len,
        )?)
    } else {
        None
    };
    let method = if a.minilm_retrieval {
        TextRetrieval::Sentence
    } else {
        TextRetrieval::Bm25
    };
    let hits = search_text(
        &index,
        states.as_ref(),
        &[a.prompt.as_str()],
        a.k,
        method,
        None,
        a.dedup,
    )?;
    let hits = hits.into_iter().next().unwrap_or_default();
    let rows: Vec<serde_json::Value> = hits
        .iter()
        .map(|h| {
            let it = &index.items()[h.item];
            serde_json::json!({"rank_item": h.item, "id": it.id, "score": h.score,
                "caption": it.caption, "media": it.media})
        })
        .collect();
    if !a.json {
        for (r, h) in hits.iter().enumerate() {
            let it = &index.items()[h.item];
            println!(
                "{:>2}. {:<10} {:8.4}  {}{}",
                r + 1,
                it.id,
                h.score,
                it.caption,
                it.media
                    .as_ref()
                    .map(|m| format!("  ({})", a.index.join(m).display()))
                    .unwrap_or_default()
            );
        }
    }
    Ok(serde_json::json!({"command": "vimi search", "method": method.name(), "hits": rows}))
}
