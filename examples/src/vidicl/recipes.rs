//! Training the sharper miniature's decoders, two recipes on one tokenizer:
//!
//! - [`Recipe::Paired`] (the quickstart's recipe at 32×32): every training sequence is an
//!   explicit demo / query pair, `[demo: object A moving d][query: object B at rest][B pushed
//!   along d]`. Optionally with text (see [`LmOptions::text`]): some sequences carry the
//!   instruction of `d` as a prefix before the demo, some carry only the instruction (no
//!   demo), the rest carry no prefix.
//! - [`Recipe::ZeroShot`] (Vid-ICL's recipe): every training sequence is one continuous clip
//!   of one object ([`World32::continuous_clip`]: it keeps its direction with some momentum,
//!   may rest a frame, turns now and then); there is never a second object, a cut or a
//!   demo / query pairing. Whether the model then imitates a demo is measured, not assumed.
//!
//! Both train the same Llama on the same number of tokens per sequence (the continuous clip
//! has as many frames as demo + query + continuation), with next-token cross-entropy on every
//! video token ([`LossOn::AllVideo`]), AdamW with warm-up and cosine decay.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::Rng;
use serde::{Deserialize, Serialize};
use vidgen_llama_video::{
    LlamaConfig, LlamaForCausalLM, LossOn, ProjectionKind, TextProjection, TextProjectionConfig,
    TrainBatch, VideoLm, VideoPrompt,
};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::seeded_rng;
use vidgen_video_io::Video;

use super::train::{save_decoder, seeded_init};
use super::vqgan::Vqgan;
use super::world::{mix, Episode};
use super::world32::{ClipDynamics, World32};

/// File of the text projection's weights inside a decoder folder (keys `linear_1.weight`,
/// `linear_1.bias`, as llama-video's [`TextProjection`]).
pub use vidgen_pipelines::vidicl::TEXT_PROJECTION_FILE;

/// How the decoder's training sequences are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// Explicit demo / query pairs.
    Paired,
    /// Single continuous clips only.
    ZeroShot,
}

impl Recipe {
    /// `paired` / `zero-shot`.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Paired => "paired",
            Recipe::ZeroShot => "zero-shot",
        }
    }
}

/// Every knob of a decoder's training (saved as `train.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmOptions {
    /// The recipe.
    pub recipe: Recipe,
    /// Master seed.
    pub seed: u64,
    /// Decoder width.
    pub hidden: usize,
    /// SwiGLU width.
    pub intermediate: usize,
    /// Layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key / value heads.
    pub kv_heads: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps, then cosine to a tenth.
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Paired recipe only: train with instruction prefixes (a [`TextProjection`] is saved
    /// next to the decoder).
    pub text: bool,
    /// Share of steps whose sequences are instruction + query (no demo).
    pub text_only_share: f64,
    /// Share of steps whose sequences are instruction + demo + query.
    pub text_demo_share: f64,
    /// Zero-shot recipe only: the clips' dynamics.
    pub dynamics: ClipDynamics,
    /// Continue from this decoder folder (its `model.safetensors` and, with text, its
    /// [`TEXT_PROJECTION_FILE`], f32, same architecture) instead of the seeded initialisation.
    #[serde(default)]
    pub init: Option<std::path::PathBuf>,
    /// Put the next-token loss on the query clip's tokens only (the continuation the model is
    /// evaluated on), not on the demos' too.
    #[serde(default)]
    pub query_loss_only: bool,
    /// Loss weight of the query clip's tokens that differ from the same cell one frame
    /// earlier (the object's new and vacated cells; 1 = a plain mean). Which way the object
    /// moves is decided by a handful of such tokens in a sequence of hundreds: with equal
    /// weights, not knowing the direction costs ~ln 8 nats per sequence, too little for the
    /// conditioning to be learned.
    #[serde(default = "one")]
    pub changed_weight: f32,
}

fn one() -> f32 {
    1.0
}

impl LmOptions {
    /// The defaults of `recipe` (the shipped models' settings).
    pub fn new(recipe: Recipe) -> Self {
        LmOptions {
            recipe,
            seed: 0,
            hidden: 64,
            intermediate: 128,
            layers: 4,
            heads: 4,
            kv_heads: 4,
            steps: 5000,
            batch: 32,
            lr: 3e-3,
            warmup: 100,
            weight_decay: 0.01,
            text: recipe == Recipe::Paired,
            text_only_share: 0.2,
            text_demo_share: 0.2,
            dynamics: ClipDynamics::default(),
            init: None,
            query_loss_only: false,
            changed_weight: 1.0,
        }
    }

    /// The decoder's configuration for `vocab` codes and `max_len` positions.
    pub fn llama_config(&self, vocab: usize, max_len: usize) -> LlamaConfig {
        let mut c = LlamaConfig::tiny(vocab, self.hidden, self.layers, self.heads, self.kv_heads);
        c.intermediate_size = self.intermediate;
        c.max_position_embeddings = max_len.next_power_of_two().max(128);
        c
    }

    /// Learning rate at `step`: linear warm-up, then cosine to a tenth.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup.max(1) as f64;
        }
        let span = (self.steps.saturating_sub(self.warmup)).max(1) as f64;
        let p = ((step - self.warmup) as f64 / span).min(1.0);
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
    }

    fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch == 0 {
            return Err(Error::config("steps / batch", "must be >= 1"));
        }
        let s = self.text_only_share + self.text_demo_share;
        if !(self.text_only_share >= 0.0 && self.text_demo_share >= 0.0 && s <= 1.0) {
            return Err(Error::config(
                "text_only_share / text_demo_share",
                "must be >= 0 and sum to at most 1",
            ));
        }
        if self.text && self.recipe == Recipe::ZeroShot {
            return Err(Error::config(
                "text",
                "the zero-shot recipe trains on plain clips without text",
            ));
        }
        Ok(())
    }
}

/// The shape of one training batch's sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structure {
    /// `[demo][query + continuation]`.
    Demo,
    /// `[instruction][demo][query + continuation]`.
    TextDemo,
    /// `[instruction][query + continuation]`.
    TextOnly,
    /// `[one continuous clip]`.
    Clip,
}

/// The prompt of a batch of episodes: optional text prefix `[B, L, D]`, the demos (when
/// `with_demo`; every episode must have one) and the query, continued by the ground truth
/// when `with_truth` (training) or not (generation).
pub fn prompt32(
    tok: &Vqgan,
    episodes: &[&Episode],
    with_demo: bool,
    with_truth: bool,
    text: Option<Tensor>,
) -> Result<VideoPrompt> {
    let queries: Vec<Video> = episodes
        .iter()
        .map(|e| {
            if with_truth {
                let mut f = e.query.frames().to_vec();
                f.extend(e.truth.frames().iter().cloned());
                Video::new(f, e.query.fps())
            } else {
                Ok(e.query.clone())
            }
        })
        .collect::<Result<_>>()?;
    let mut b = VideoPrompt::builder();
    if let Some(t) = text {
        b = b.text_prefix(t);
    }
    if with_demo {
        let demos = episodes
            .iter()
            .map(|e| {
                e.demo
                    .as_ref()
                    .ok_or_else(|| Error::invalid("episode", "the condition needs a demo"))
            })
            .collect::<Result<Vec<&Video>>>()?;
        b = b.demo(tok.encode_videos(&demos)?);
    }
    b.query(tok.encode_videos(&queries.iter().collect::<Vec<_>>())?)
        .build()
}

/// Stacks instruction embeddings of the given directions: `[B, L, D]`.
pub fn stack_text(table: &[Tensor], dirs: &[vidgen_video_io::synth::Direction]) -> Result<Tensor> {
    let rows = dirs
        .iter()
        .map(|d| {
            let i = vidgen_video_io::synth::Direction::ALL
                .iter()
                .position(|x| x == d)
                .unwrap_or(0);
            table
                .get(i)
                .cloned()
                .ok_or_else(|| Error::invalid("instruction table", "fewer than 8 rows"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// What one decoder training step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmStep {
    /// 0-based step.
    pub step: usize,
    /// The batch's structure.
    pub structure: Structure,
    /// Cross-entropy (nats) before the update.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
}

/// A trained decoder and what is saved of it.
pub struct TrainedLm {
    /// Decoder (and text projection, when trained with text).
    pub lm: VideoLm,
    /// The decoder's variables.
    pub vars: VarMap,
    /// The text projection's variables (empty without text).
    pub text_vars: VarMap,
}

impl TrainedLm {
    /// Writes the decoder folder (transformers layout) and, with text, [`TEXT_PROJECTION_FILE`].
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_decoder(&self.lm, &self.vars, dir)?;
        if self.lm.text_projection().is_some() {
            self.text_vars.save(dir.join(TEXT_PROJECTION_FILE))?;
        }
        Ok(())
    }
}

/// Trains a decoder by `opts.recipe` over `tok`'s tokens of `world`. `text_table` (the 8
/// instruction embeddings, [`super::instruct::InstructionEncoder::direction_table`]) is
/// required when `opts.text`.
pub fn train_lm(
    world: &World32,
    tok: &Vqgan,
    text_table: Option<&[Tensor]>,
    opts: &LmOptions,
    mut on_step: impl FnMut(LmStep),
) -> Result<TrainedLm> {
    opts.validate()?;
    let c = world.config();
    let text_len = text_table
        .and_then(|t| t.first())
        .map_or(0, |t| t.dims().get(1).copied().unwrap_or(0));
    let max_len = text_len + c.sequence_frames() * c.tokens_per_frame();
    let cfg = opts.llama_config(tok.vocab_size(), max_len);
    cfg.validate()?;
    let mut vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let mut lm = VideoLm::new(LlamaForCausalLM::new(&cfg, vb)?);
    seeded_init(&vars, &mut seeded_rng(mix(opts.seed, 1, 20)))?;
    if let Some(dir) = &opts.init {
        vars.load(dir.join("model.safetensors"))?;
    }
    let mut text_vars = VarMap::new();
    let table = if opts.text {
        let table = text_table.ok_or_else(|| {
            Error::invalid("text", "training with text needs the instruction table")
        })?;
        let first = table
            .first()
            .ok_or_else(|| Error::invalid("instruction table", "empty"))?;
        let (_, _, d) = first.dims3()?;
        let pcfg = TextProjectionConfig {
            text_dim: d,
            hidden_size: opts.hidden,
            kind: ProjectionKind::Linear,
        };
        let tvb = VarBuilder::from_varmap(&text_vars, DType::F32, &Device::Cpu);
        lm = lm.with_text_projection(TextProjection::new(&pcfg, tvb)?);
        seeded_init(&text_vars, &mut seeded_rng(mix(opts.seed, 1, 21)))?;
        if let Some(dir) = &opts.init {
            text_vars.load(dir.join(TEXT_PROJECTION_FILE))?;
        }
        Some(table)
    } else {
        None
    };
    let mut all = vars.all_vars();
    all.extend(text_vars.all_vars());
    let mut opt = AdamW::new(
        all,
        ParamsAdamW {
            lr: opts.lr_at(0),
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let mut rng = seeded_rng(mix(opts.seed, 1, 30));
    for step in 0..opts.steps {
        let structure = match opts.recipe {
            Recipe::ZeroShot => Structure::Clip,
            Recipe::Paired if table.is_none() => Structure::Demo,
            Recipe::Paired => {
                let u: f64 = rng.random();
                if u < opts.text_only_share {
                    Structure::TextOnly
                } else if u < opts.text_only_share + opts.text_demo_share {
                    Structure::TextDemo
                } else {
                    Structure::Demo
                }
            }
        };
        let prompt = match structure {
            Structure::Clip => {
                let clips = (0..opts.batch)
                    .map(|_| {
                        world
                            .continuous_clip(&mut rng, c.sequence_frames(), &opts.dynamics)
                            .map(|(v, _)| v)
                    })
                    .collect::<Result<Vec<_>>>()?;
                VideoPrompt::builder()
                    .query(tok.encode_videos(&clips.iter().collect::<Vec<_>>())?)
                    .build()?
            }
            _ => {
                let eps = (0..opts.batch)
                    .map(|_| world.train_episode(&mut rng))
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&Episode> = eps.iter().collect();
                let text = match (structure, table) {
                    (Structure::TextDemo | Structure::TextOnly, Some(t)) => {
                        let dirs: Vec<_> = eps.iter().map(|e| e.query_direction).collect();
                        Some(stack_text(t, &dirs)?)
                    }
                    _ => None,
                };
                prompt32(tok, &refs, structure != Structure::TextOnly, true, text)?
            }
        };
        let loss_on = if opts.query_loss_only {
            LossOn::Query
        } else {
            LossOn::AllVideo
        };
        let mut batch = TrainBatch::from_prompts(&[prompt], loss_on)?;
        if opts.changed_weight != 1.0 {
            let query_frames = match structure {
                Structure::Clip => c.sequence_frames(),
                _ => c.query_frames + c.gen_frames,
            };
            batch = weight_changed(
                batch,
                query_frames * c.tokens_per_frame(),
                c.tokens_per_frame(),
                opts.changed_weight,
            )?;
        }
        let lr = opts.lr_at(step);
        opt.set_learning_rate(lr);
        let loss = lm.train_step(&mut opt, &batch)?;
        if !loss.is_finite() {
            return Err(Error::invalid(
                "training",
                format!("loss became {loss} at step {step}"),
            ));
        }
        on_step(LmStep {
            step,
            structure,
            loss,
            lr,
        });
    }
    Ok(TrainedLm {
        lm,
        vars,
        text_vars,
    })
}

/// `batch` with the loss weight of every token of the last `query_len` positions (the query
/// clip) that differs from the token one frame (`frame_len` positions) earlier multiplied by
/// `weight`.
pub fn weight_changed(
    batch: TrainBatch,
    query_len: usize,
    frame_len: usize,
    weight: f32,
) -> Result<TrainBatch> {
    let ids = batch.ids().to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let (b, n) = batch.ids().dims2()?;
    let mut w = vec![1f32; b * n];
    for (row, wr) in ids.iter().zip(w.chunks_exact_mut(n)) {
        let q0 = n.saturating_sub(query_len);
        for j in (q0 + frame_len)..n {
            if row[j] != row[j - frame_len] {
                wr[j] = weight;
            }
        }
    }
    let w = Tensor::from_vec(w, (b, n), batch.ids().device())?;
    batch.with_loss_weights(&w)
}

/// Loads a decoder folder: the transformers checkpoint and, when present,
/// [`TEXT_PROJECTION_FILE`] (see [`vidgen_pipelines::vidicl::load_video_lm`]).
pub fn load_lm(dir: &Path) -> Result<VideoLm> {
    Ok(vidgen_pipelines::vidicl::load_video_lm(dir, DType::F32, &Device::Cpu)?.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::vidicl::instruct::{InstructionEncoder, TextEncoderSpec};
    use crate::vidicl::vqgan::{train_vqgan, VqganOptions};
    use crate::vidicl::world32::World32Config;

    #[test]
    fn changed_tokens_of_the_query_are_weighted() {
        // Demo frame [1, 2], query frames [3, 4], [3, 5], [6, 5] (2 tokens per frame).
        let ids = Tensor::new(&[[1u32, 2, 3, 4, 3, 5, 6, 5]], &Device::Cpu).unwrap();
        let mask = Tensor::ones((1, 8), DType::F32, &Device::Cpu).unwrap();
        let b = weight_changed(TrainBatch::new(ids, mask).unwrap(), 6, 2, 10.0).unwrap();
        let w = b.loss_mask().to_vec2::<f32>().unwrap();
        // Only the query's changed tokens (positions 5 and 6); never the first query frame.
        assert_eq!(w[0], vec![1., 1., 1., 1., 1., 10., 10., 1.]);
        assert!(weight_changed(b, 6, 2, -1.0).is_err());
    }

    fn tiny_tok(world: &World32) -> Vqgan {
        let opts = VqganOptions {
            channels: vec![8, 8, 8],
            latent_channels: 4,
            embed_dim: 4,
            codes: 16,
            groups: 4,
            pool_episodes: 3,
            warmup_steps: 1,
            steps: 1,
            batch: 2,
            kmeans_frames: 4,
            kmeans_iters: 2,
            ..VqganOptions::default()
        };
        let (tok, _) = train_vqgan(world, &opts, |_| {}).unwrap();
        tok
    }

    #[test]
    fn both_recipes_train_save_and_load() {
        let world = World32::new(World32Config::default()).unwrap();
        let tok = tiny_tok(&world);
        let enc = InstructionEncoder::with_vendored_tokenizer(&TextEncoderSpec::default()).unwrap();
        let table = enc.direction_table().unwrap();
        for recipe in [Recipe::Paired, Recipe::ZeroShot] {
            let opts = LmOptions {
                hidden: 16,
                intermediate: 32,
                layers: 1,
                heads: 2,
                kv_heads: 2,
                steps: 4,
                batch: 2,
                warmup: 1,
                text_only_share: 0.4,
                text_demo_share: 0.4,
                ..LmOptions::new(recipe)
            };
            let mut structures = Vec::new();
            let t = train_lm(&world, &tok, Some(&table), &opts, |s| {
                structures.push(s.structure)
            })
            .unwrap();
            assert_eq!(structures.len(), 4);
            let dir = tempfile::tempdir().unwrap();
            t.save(dir.path()).unwrap();
            let back = load_lm(dir.path()).unwrap();
            assert_eq!(back.text_projection().is_some(), recipe == Recipe::Paired);
            if recipe == Recipe::ZeroShot {
                assert!(structures.iter().all(|&s| s == Structure::Clip));
            }
        }
    }
}
