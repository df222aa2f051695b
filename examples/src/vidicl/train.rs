//! Training the miniature: the patch tokenizer (k-means on synthetic frames) and the decoder
//! (next-token cross-entropy on demo-then-query sequences built with [`VideoPrompt`]).

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use vidgen_llama_video::{LlamaConfig, LlamaForCausalLM, LossOn, TrainBatch, VideoLm, VideoPrompt};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::seeded_rng;
use vidgen_video_io::{Frame, Video};
use vidgen_vq_tokenizer::KMeans;

use super::io_err;
use super::patch_vq::PatchTokenizer;
use super::world::{mix, Episode, MiniWorld};

/// Every knob of `train-vidicl-mini` (saved as `train.json` next to the weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Master seed: every random draw (frames, k-means, init, batches) derives from it.
    pub seed: u64,
    /// Synthetic episodes whose frames the tokenizer is fitted on.
    pub tokenizer_episodes: usize,
    /// Codebook size.
    pub codes: usize,
    /// Lloyd iterations of k-means.
    pub kmeans_iters: usize,
    /// Decoder width.
    pub hidden: usize,
    /// SwiGLU width.
    pub intermediate: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key / value heads.
    pub kv_heads: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Episodes per step.
    pub batch: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Linear warm-up steps (then cosine decay to `lr / 10`).
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            seed: 0,
            tokenizer_episodes: 400,
            codes: 64,
            kmeans_iters: 30,
            hidden: 64,
            intermediate: 128,
            layers: 4,
            heads: 4,
            kv_heads: 4,
            steps: 3000,
            batch: 32,
            lr: 3e-3,
            warmup: 100,
            weight_decay: 0.01,
        }
    }
}

impl TrainOptions {
    /// The decoder's configuration for a vocabulary of `vocab` tokens and sequences of
    /// `max_len` positions.
    pub fn llama_config(&self, vocab: usize, max_len: usize) -> LlamaConfig {
        let mut c = LlamaConfig::tiny(vocab, self.hidden, self.layers, self.heads, self.kv_heads);
        c.intermediate_size = self.intermediate;
        c.max_position_embeddings = max_len.next_power_of_two().max(128);
        c
    }

    /// Learning rate at `step` (0-based): linear warm-up, then cosine to a tenth.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps.saturating_sub(self.warmup)).max(1) as f64;
        let p = ((step - self.warmup) as f64 / span).min(1.0);
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
    }
}

/// Fits the tokenizer on the frames of `opts.tokenizer_episodes` training episodes (demo,
/// query and ground truth frames). `progress` gets the number of episodes rendered so far.
pub fn train_tokenizer(
    world: &MiniWorld,
    opts: &TrainOptions,
    mut progress: impl FnMut(usize),
) -> Result<(PatchTokenizer, KMeans)> {
    let mut rng = seeded_rng(mix(opts.seed, 0, 10));
    let mut frames: Vec<Frame> = Vec::new();
    for i in 0..opts.tokenizer_episodes {
        let e = world.train_episode(&mut rng)?;
        if let Some(d) = &e.demo {
            frames.extend(d.frames().iter().cloned());
        }
        frames.extend(e.query.frames().iter().cloned());
        frames.extend(e.truth.frames().iter().cloned());
        progress(i + 1);
    }
    PatchTokenizer::fit(
        &frames,
        world.config().patch as usize,
        opts.codes,
        opts.kmeans_iters,
        mix(opts.seed, 0, 11),
    )
}

/// The prompt of a batch of episodes: demo clips then the query clip. With `with_truth`, the
/// query clip continues with the ground truth (training); without, it stops at the given
/// frames (generation). Episodes without a demo must all lack one.
pub fn episode_prompt(
    tokenizer: &PatchTokenizer,
    episodes: &[&Episode],
    with_truth: bool,
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
    let query = tokenizer.encode_videos(&queries.iter().collect::<Vec<_>>())?;
    let demos: Vec<&Video> = episodes.iter().filter_map(|e| e.demo.as_ref()).collect();
    let mut b = VideoPrompt::builder();
    if !demos.is_empty() {
        if demos.len() != episodes.len() {
            return Err(Error::invalid(
                "episodes",
                "a batch mixes episodes with and without a demo",
            ));
        }
        b = b.demo(tokenizer.encode_videos(&demos)?);
    }
    b.query(query).build()
}

/// Overwrites every variable of `vars` from `rng` in name order (so initialisation is
/// reproducible; candle's own CPU init is not seedable): RMSNorm weights 1, matrices
/// `N(0, 1/fan_in)`.
pub fn seeded_init(vars: &VarMap, rng: &mut ChaCha8Rng) -> Result<()> {
    vidgen_video_nn::reinit_var_map(vars, |name, dims| {
        let n: usize = dims.iter().product();
        Ok(if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else {
            let fan_in = dims.last().copied().unwrap_or(1).max(1) as f32;
            let normal = Normal::new(0.0f32, fan_in.sqrt().recip())
                .map_err(|e| Error::invalid("init", e.to_string()))?;
            (0..n).map(|_| normal.sample(rng)).collect()
        })
    })
}

/// What one training step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// 0-based step.
    pub step: usize,
    /// Next-token cross-entropy (nats) before the update.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
}

/// Trains a fresh decoder on training episodes, calling `on_step` after every step. Returns
/// the model and its variables (for saving).
pub fn train_decoder(
    world: &MiniWorld,
    tokenizer: &PatchTokenizer,
    opts: &TrainOptions,
    mut on_step: impl FnMut(StepReport),
) -> Result<(VideoLm, VarMap)> {
    let cfg = opts.llama_config(tokenizer.vocab_size(), world.config().train_len());
    cfg.validate()?;
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let lm = VideoLm::new(LlamaForCausalLM::new(&cfg, vb)?);
    seeded_init(&vars, &mut seeded_rng(mix(opts.seed, 0, 20)))?;
    let mut opt = AdamW::new(
        vars.all_vars(),
        ParamsAdamW {
            lr: opts.lr_at(0),
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let mut rng = seeded_rng(mix(opts.seed, 0, 30));
    for step in 0..opts.steps {
        let episodes = (0..opts.batch)
            .map(|_| world.train_episode(&mut rng))
            .collect::<Result<Vec<_>>>()?;
        let prompt = episode_prompt(tokenizer, &episodes.iter().collect::<Vec<_>>(), true)?;
        let batch = TrainBatch::from_prompts(&[prompt], LossOn::AllVideo)?;
        let lr = opts.lr_at(step);
        opt.set_learning_rate(lr);
        let loss = lm.train_step(&mut opt, &batch)?;
        if !loss.is_finite() {
            return Err(Error::invalid(
                "training",
                format!("loss became {loss} at step {step}"),
            ));
        }
        // Keep the RNG stream independent of anything but the seed.
        let _ = rng.random::<u32>();
        on_step(StepReport { step, loss, lr });
    }
    Ok((lm, vars))
}

/// Writes the decoder as a transformers `save_pretrained` directory: `config.json` and
/// `model.safetensors` (keys `model.*`, `lm_head.weight`), which
/// [`LlamaForCausalLM::from_pretrained`] reads back strictly.
pub fn save_decoder(lm: &VideoLm, vars: &VarMap, dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let mut cfg = serde_json::to_value(lm.model().config())
        .map_err(|e| Error::config("config.json", e.to_string()))?;
    if let Some(o) = cfg.as_object_mut() {
        o.insert("model_type".into(), "llama".into());
        o.insert(
            "architectures".into(),
            serde_json::json!(["LlamaForCausalLM"]),
        );
        o.insert("torch_dtype".into(), "float32".into());
    }
    let text = serde_json::to_string_pretty(&cfg)
        .map_err(|e| Error::config("config.json", e.to_string()))?;
    let path = dir.join("config.json");
    std::fs::write(&path, text + "\n").map_err(|e| io_err(&path, e))?;
    vars.save(dir.join("model.safetensors"))?;
    Ok(())
}

/// Draws a loss curve (one value per step, smoothed with an exponential moving average of
/// `smooth`) as an RGB frame of `w × h` pixels: grey raw values, blue smoothed, log-scaled y
/// with grid lines at every power of ten.
pub fn plot_losses(losses: &[f32], w: u32, h: u32, smooth: f32) -> Result<Frame> {
    let mut f = Frame::filled(w, h, [255, 255, 255])?;
    if losses.is_empty() {
        return Ok(f);
    }
    let (ml, mr, mt, mb) = (8u32, 8u32, 8u32, 8u32);
    let (pw, ph) = (
        w.saturating_sub(ml + mr).max(1),
        h.saturating_sub(mt + mb).max(1),
    );
    let finite: Vec<f32> = losses
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = finite
        .iter()
        .copied()
        .fold(f32::INFINITY, f32::min)
        .max(1e-4)
        .log10()
        .floor();
    let hi = finite
        .iter()
        .copied()
        .fold(0f32, f32::max)
        .max(1e-3)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let y_of = |v: f32| -> u32 {
        let t = ((v.max(1e-4).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
        mt + ((1.0 - t) * (ph - 1) as f32).round() as u32
    };
    let x_of = |i: usize| -> u32 {
        ml + ((i as f32 / (losses.len().max(2) - 1) as f32) * (pw - 1) as f32).round() as u32
    };
    for p in (lo as i32)..=(hi as i32) {
        let y = y_of(10f32.powi(p));
        for x in ml..ml + pw {
            f.put(x, y, [220, 220, 220]);
        }
    }
    for y in mt..mt + ph {
        f.put(ml, y, [0, 0, 0]);
    }
    for x in ml..ml + pw {
        f.put(x, mt + ph - 1, [0, 0, 0]);
    }
    let mut ema = losses[0];
    let mut prev: Option<(u32, u32)> = None;
    for (i, &v) in losses.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        f.put(x_of(i), y_of(v), [170, 170, 170]);
        ema = smooth * ema + (1.0 - smooth) * v;
        let p = (x_of(i), y_of(ema));
        if let Some(q) = prev {
            line(&mut f, q, p, [30, 80, 220]);
        }
        prev = Some(p);
    }
    Ok(f)
}

fn line(f: &mut Frame, (x0, y0): (u32, u32), (x1, y1): (u32, u32), rgb: [u8; 3]) {
    let n = (x1 as i64 - x0 as i64)
        .abs()
        .max((y1 as i64 - y0 as i64).abs())
        .max(1);
    for k in 0..=n {
        let t = k as f64 / n as f64;
        let x = (x0 as f64 + t * (x1 as f64 - x0 as f64)).round() as u32;
        let y = (y0 as f64 + t * (y1 as f64 - y0 as f64)).round() as u32;
        f.put(x, y, rgb);
        f.put(x, y + 1, rgb);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::vidicl::world::MiniConfig;

    fn tiny() -> TrainOptions {
        TrainOptions {
            tokenizer_episodes: 20,
            codes: 16,
            kmeans_iters: 5,
            hidden: 16,
            intermediate: 32,
            layers: 1,
            heads: 2,
            kv_heads: 2,
            steps: 3,
            batch: 4,
            warmup: 1,
            ..TrainOptions::default()
        }
    }

    fn run(opts: &TrainOptions) -> (Vec<f32>, Vec<f32>) {
        let world = MiniWorld::new(MiniConfig::default()).unwrap();
        let (tok, _) = train_tokenizer(&world, opts, |_| {}).unwrap();
        let mut losses = Vec::new();
        let (lm, vars) = train_decoder(&world, &tok, opts, |r| losses.push(r.loss)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_decoder(&lm, &vars, dir.path()).unwrap();
        let (back, report) =
            LlamaForCausalLM::from_pretrained(dir.path(), DType::F32, &Device::Cpu).unwrap();
        assert!(report.is_clean());
        let w = back
            .model()
            .embed_weight()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        (losses, w)
    }

    #[test]
    fn training_is_reproducible_and_checkpoints_load() {
        let opts = tiny();
        let (l1, w1) = run(&opts);
        let (l2, w2) = run(&opts);
        assert_eq!(l1.len(), 3);
        assert_eq!(l1, l2);
        assert_eq!(w1, w2);
        let (l3, _) = run(&TrainOptions { seed: 1, ..opts });
        assert_ne!(l1, l3);
    }

    #[test]
    fn lr_schedule_warms_up_then_decays_to_a_tenth() {
        let o = TrainOptions::default();
        assert!(o.lr_at(0) < o.lr_at(o.warmup - 1));
        assert!((o.lr_at(o.warmup) - o.lr).abs() < 1e-12);
        assert!((o.lr_at(o.steps - 1) - o.lr / 10.0).abs() < 1e-5);
    }

    #[test]
    fn loss_plot_has_the_requested_size() {
        let f = plot_losses(&[4.0, 2.0, 1.0, 0.5, 0.2], 100, 50, 0.9).unwrap();
        assert_eq!((f.width(), f.height()), (100, 50));
        assert!(plot_losses(&[], 10, 10, 0.9).is_ok());
    }
}
