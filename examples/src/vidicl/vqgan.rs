//! The sharper miniature's frame tokenizer: a small diffusers `VQModel`
//! ([`vidgen_vq_tokenizer::VQModel`]: the VQGAN encoder / decoder architecture, here without
//! the adversarial and perceptual terms) trained on the synthetic world, saved as a diffusers
//! `save_pretrained` folder, so [`vidgen_pipelines::VidIclPipeline`] and `vidgen icl` load it
//! like any `VQModel`.
//!
//! Training ([`train_vqgan`]) has two phases:
//! 1. **warm-up**: the encoder / decoder as a plain autoencoder (the quantiser skipped,
//!    `decode(h, force_not_quantize = true)`), mean squared error;
//! 2. **k-means init, then VQ**: the codebook is set by k-means++ and Lloyd iterations on
//!    encoder outputs ([`vidgen_vq_tokenizer::VectorQuantizer::init_kmeans`]), then training
//!    continues through the straight-through quantiser with loss
//!    `mse(x̂, x) + β · commitment` while the codebook follows the encoder by exponential moving
//!    averages ([`vidgen_vq_tokenizer::VectorQuantizer::ema_update`]) instead of gradients.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result, TokenGrid};
use vidgen_video_io::synth::seeded_rng;
use vidgen_video_io::{Frame, Video};
use vidgen_vq_tokenizer::{CodebookUsage, EmaConfig, VQModel, VQModelConfig};

use super::io_err;
use super::world::mix;
use super::world32::World32;

/// The weights file of a diffusers model folder.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// Every knob of the tokenizer's training (saved as `tokenizer_train.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VqganOptions {
    /// Master seed (frames, init, batches, k-means, EMA restarts).
    pub seed: u64,
    /// `block_out_channels`: `len − 1` halvings, so 3 levels give one token per 4×4 cell.
    pub channels: Vec<usize>,
    /// Encoder output channels.
    pub latent_channels: usize,
    /// Code dimension.
    pub embed_dim: usize,
    /// Codebook size (the decoder's vocabulary).
    pub codes: usize,
    /// GroupNorm groups.
    pub groups: usize,
    /// Episodes (and as many continuous clips) whose frames make the training pool.
    pub pool_episodes: usize,
    /// Autoencoder warm-up steps (no quantiser).
    pub warmup_steps: usize,
    /// Steps through the quantiser after the k-means init.
    pub steps: usize,
    /// Frames per step.
    pub batch: usize,
    /// Peak AdamW learning rate (cosine to a tenth over both phases).
    pub lr: f64,
    /// Commitment weight β.
    pub beta: f64,
    /// EMA decay of the codebook.
    pub ema_decay: f64,
    /// EMA count below which a code is restarted from a recent input (0: never).
    pub dead_threshold: f64,
    /// Lloyd iterations of the k-means init.
    pub kmeans_iters: usize,
    /// Frames whose encoder outputs the k-means init clusters.
    pub kmeans_frames: usize,
}

impl Default for VqganOptions {
    fn default() -> Self {
        VqganOptions {
            seed: 0,
            channels: vec![16, 32, 32],
            latent_channels: 8,
            embed_dim: 8,
            codes: 256,
            groups: 8,
            pool_episodes: 600,
            warmup_steps: 400,
            steps: 1100,
            batch: 16,
            lr: 2e-3,
            beta: 0.25,
            ema_decay: 0.95,
            dead_threshold: 0.0,
            kmeans_iters: 25,
            kmeans_frames: 400,
        }
    }
}

impl VqganOptions {
    /// The diffusers `config.json` of the model for `size`-px frames.
    pub fn config_json(&self, size: usize) -> serde_json::Value {
        let n = self.channels.len();
        serde_json::json!({
            "_class_name": "VQModel",
            "_diffusers_version": "0.42.1",
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": vec!["DownEncoderBlock2D"; n],
            "up_block_types": vec!["UpDecoderBlock2D"; n],
            "block_out_channels": self.channels,
            "layers_per_block": 1,
            "act_fn": "silu",
            "latent_channels": self.latent_channels,
            "sample_size": size,
            "num_vq_embeddings": self.codes,
            "norm_num_groups": self.groups,
            "vq_embed_dim": self.embed_dim,
            "scaling_factor": 0.18215,
            "norm_type": "group",
            "mid_block_add_attention": false,
            "lookup_from_codebook": false,
            "force_upcast": false
        })
    }

    /// The parsed configuration.
    pub fn config(&self, size: usize) -> Result<VQModelConfig> {
        let cfg: VQModelConfig = serde_json::from_value(self.config_json(size))
            .map_err(|e| Error::config("tokenizer config", e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Learning rate at `step` of `total`: 50 warm-up steps, then cosine to a tenth.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let warm = 50.min(total.max(1));
        if step < warm {
            return self.lr * (step + 1) as f64 / warm as f64;
        }
        let p = (step - warm) as f64 / (total.saturating_sub(warm)).max(1) as f64;
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p.min(1.0)).cos()))
    }
}

/// Frames as a `[N, 3, H, W]` f32 tensor in `[-1, 1]` (`u8 / 127.5 − 1`).
pub fn frames_to_tensor(frames: &[&Frame]) -> Result<Tensor> {
    let first = frames
        .first()
        .ok_or_else(|| Error::invalid("frames", "need at least one frame"))?;
    let (w, h) = (first.width() as usize, first.height() as usize);
    let mut data = Vec::with_capacity(frames.len() * w * h * 3);
    for f in frames {
        if (f.width() as usize, f.height() as usize) != (w, h) {
            return Err(Error::invalid(
                "frames",
                format!(
                    "{}×{} differs from the first frame's {w}×{h}",
                    f.width(),
                    f.height()
                ),
            ));
        }
        data.extend(f.data().iter().map(|&v| v as f32 / 127.5 - 1.0));
    }
    let t = Tensor::from_vec(data, (frames.len(), h, w, 3), &Device::Cpu)?;
    Ok(t.permute((0, 3, 1, 2))?.contiguous()?)
}

/// `[N, 3, H, W]` in `[-1, 1]` back to frames (rounded, clamped).
pub fn tensor_to_frames(x: &Tensor) -> Result<Vec<Frame>> {
    let (n, c, h, w) = x.dims4()?;
    if c != 3 {
        return Err(Error::shape("frames", &[n, 3, h, w], x.dims()));
    }
    let v = x
        .to_dtype(DType::F32)?
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    v.chunks(h * w * 3)
        .map(|c| {
            Frame::new(
                w as u32,
                h as u32,
                c.iter()
                    .map(|&v| ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8)
                    .collect(),
            )
        })
        .collect()
}

/// Token ids of frames seen before, keyed by the frame's bytes.
type FrameCache = std::sync::Arc<std::sync::Mutex<HashMap<Vec<u8>, Vec<u32>>>>;

/// A trained `VQModel` used as a frame tokenizer.
#[derive(Debug, Clone)]
pub struct Vqgan {
    model: VQModel,
    size: usize,
    cache: Option<FrameCache>,
}

impl Vqgan {
    /// Wraps a model for `size`-px square frames.
    pub fn new(model: VQModel, size: usize) -> Result<Self> {
        let s = model.config().spatial_stride();
        if size == 0 || !size.is_multiple_of(s) {
            return Err(Error::config(
                "sample_size",
                format!("{size} is not a positive multiple of the stride {s}"),
            ));
        }
        Ok(Vqgan {
            model,
            size,
            cache: None,
        })
    }

    /// Remembers the tokens of every frame it encodes and reuses them when the same frame
    /// comes again (the miniature's world has a few thousand distinct frames; training and
    /// evaluation encode millions). The first encoding of a frame is the one kept.
    pub fn with_cache(mut self) -> Self {
        self.cache = Some(FrameCache::default());
        self
    }

    /// Loads a diffusers `VQModel` folder strictly (frame size from `sample_size`).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let (model, report) = VQModel::from_pretrained(dir.as_ref(), DType::F32, &Device::Cpu)?;
        if !report.is_clean() {
            return Err(report.into_error());
        }
        let size = model.config().sample_size;
        Self::new(model, size)
    }

    /// The model.
    pub fn model(&self) -> &VQModel {
        &self.model
    }

    /// Codebook size.
    pub fn vocab_size(&self) -> usize {
        self.model.config().num_vq_embeddings
    }

    /// Tokens per row (= column) of a frame.
    pub fn grid(&self) -> usize {
        self.size / self.model.config().spatial_stride()
    }

    /// Frame side in pixels.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Token ids of frames, frame after frame, raster order within a frame (64 frames per
    /// model call).
    pub fn encode_frames(&self, frames: &[Frame]) -> Result<Vec<u32>> {
        let Some(cache) = &self.cache else {
            return self.encode_uncached(frames);
        };
        let gg = self.grid() * self.grid();
        let mut out = vec![0u32; frames.len() * gg];
        let mut missing: Vec<usize> = Vec::new();
        {
            let map = cache
                .lock()
                .map_err(|_| Error::invalid("token cache", "lock poisoned"))?;
            for (i, f) in frames.iter().enumerate() {
                match map.get(f.data()) {
                    Some(ids) => out[i * gg..(i + 1) * gg].copy_from_slice(ids),
                    None => missing.push(i),
                }
            }
        }
        if !missing.is_empty() {
            let todo: Vec<Frame> = missing.iter().map(|&i| frames[i].clone()).collect();
            let ids = self.encode_uncached(&todo)?;
            let mut map = cache
                .lock()
                .map_err(|_| Error::invalid("token cache", "lock poisoned"))?;
            for (k, &i) in missing.iter().enumerate() {
                let row = map
                    .entry(frames[i].data().to_vec())
                    .or_insert_with(|| ids[k * gg..(k + 1) * gg].to_vec());
                out[i * gg..(i + 1) * gg].copy_from_slice(row);
            }
        }
        Ok(out)
    }

    fn encode_uncached(&self, frames: &[Frame]) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(frames.len() * self.grid() * self.grid());
        for chunk in frames.chunks(64) {
            let refs: Vec<&Frame> = chunk.iter().collect();
            let x = frames_to_tensor(&refs)?;
            let ids = self.model.tokenize(&x)?;
            out.extend(ids.flatten_all()?.to_vec1::<u32>()?);
        }
        Ok(out)
    }

    /// Frames from token ids (a whole number of frames).
    pub fn decode_ids(&self, ids: &[u32]) -> Result<Vec<Frame>> {
        let g = self.grid();
        if !ids.len().is_multiple_of(g * g) {
            return Err(Error::invalid(
                "token ids",
                format!(
                    "{} ids are not a whole number of {}-token frames",
                    ids.len(),
                    g * g
                ),
            ));
        }
        let mut out = Vec::with_capacity(ids.len() / (g * g));
        for chunk in ids.chunks(64 * g * g) {
            let n = chunk.len() / (g * g);
            let t = Tensor::from_slice(chunk, (n, g, g), &Device::Cpu)?;
            out.extend(tensor_to_frames(&self.model.detokenize(&t)?)?);
        }
        Ok(out)
    }

    /// Tokens of equally long videos.
    ///
    /// # Shapes
    /// `B` videos of `T` frames → `TokenGrid [B, T, g, g]`.
    pub fn encode_videos(&self, videos: &[&Video]) -> Result<TokenGrid> {
        let t = videos.first().map_or(0, |v| v.len());
        if videos.is_empty() || videos.iter().any(|v| v.len() != t) {
            return Err(Error::invalid(
                "videos",
                "need at least one video, all of the same length",
            ));
        }
        let frames: Vec<Frame> = videos
            .iter()
            .flat_map(|v| v.frames().iter().cloned())
            .collect();
        let ids = self.encode_frames(&frames)?;
        let g = self.grid();
        TokenGrid::new(Tensor::from_vec(
            ids,
            (videos.len(), t, g, g),
            &Device::Cpu,
        )?)
    }

    /// Encode-then-decode of frames (the tokenizer's own round trip).
    pub fn round_trip(&self, frames: &[Frame]) -> Result<Vec<Frame>> {
        self.decode_ids(&self.encode_frames(frames)?)
    }
}

/// Writes a diffusers `VQModel` folder: `config.json` and [`WEIGHTS_FILE`].
pub fn save_vqgan(
    dir: &Path,
    config: &serde_json::Value,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let text = serde_json::to_string_pretty(config)
        .map_err(|e| Error::config("config.json", e.to_string()))?;
    let p = dir.join("config.json");
    std::fs::write(&p, text + "\n").map_err(|e| io_err(&p, e))?;
    candle_core::safetensors::save(tensors, dir.join(WEIGHTS_FILE))?;
    Ok(())
}

/// Overwrites every variable of a convolutional model from `rng` in name order: rank-1
/// `*.weight` (norm scales) 1, rank-1 `*.bias` 0, every other tensor `N(0, 1/fan_in)` with
/// `fan_in` the product of all dimensions but the first (LeCun normal for convolutions and
/// linear layers alike).
pub fn seeded_conv_init(vars: &VarMap, rng: &mut ChaCha8Rng) -> Result<()> {
    vidgen_video_nn::reinit_var_map(vars, |name, dims| {
        let n: usize = dims.iter().product();
        Ok(if dims.len() == 1 {
            vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n]
        } else {
            let fan_in = dims[1..].iter().product::<usize>().max(1) as f32;
            let normal = Normal::new(0.0f32, fan_in.sqrt().recip())
                .map_err(|e| Error::invalid("init", e.to_string()))?;
            (0..n).map(|_| normal.sample(rng)).collect()
        })
    })
}

/// What one tokenizer training step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VqStep {
    /// 0-based step over both phases.
    pub step: usize,
    /// Whether the quantiser was in the loop.
    pub quantized: bool,
    /// Reconstruction MSE (pixels in `[-1, 1]`).
    pub mse: f32,
    /// Commitment loss (0 in the warm-up).
    pub commitment: f32,
    /// Codebook perplexity of the batch (0 in the warm-up).
    pub perplexity: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// Trains the tokenizer on frames of `world` (see the module docs). Returns the tokenizer and
/// the tensors to save (the variables, with the EMA codebook in place of the initial one).
pub fn train_vqgan(
    world: &World32,
    opts: &VqganOptions,
    mut on_step: impl FnMut(VqStep),
) -> Result<(Vqgan, HashMap<String, Tensor>)> {
    let size = world.config().size as usize;
    let cfg = opts.config(size)?;
    let pool = world.tokenizer_frames(mix(opts.seed, 0, 40), opts.pool_episodes)?;
    if pool.len() < opts.batch.max(1) {
        return Err(Error::invalid(
            "pool_episodes",
            "too few frames for one batch",
        ));
    }
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let mut model = VQModel::new(&cfg, vb)?;
    seeded_conv_init(&vars, &mut seeded_rng(mix(opts.seed, 0, 41)))?;
    let mut opt = AdamW::new(
        vars.all_vars(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = seeded_rng(mix(opts.seed, 0, 42));
    let total = opts.warmup_steps + opts.steps;
    let batch_of = |rng: &mut ChaCha8Rng| -> Result<Tensor> {
        let picks: Vec<&Frame> = (0..opts.batch)
            .map(|_| &pool[rng.random_range(0..pool.len())])
            .collect();
        frames_to_tensor(&picks)
    };
    for step in 0..opts.warmup_steps {
        let x = batch_of(&mut rng)?;
        let h = model.encode(&x)?;
        let y = model.decode(&h, true)?;
        let mse = (y - &x)?.sqr()?.mean_all()?;
        let lr = opts.lr_at(step, total);
        opt.set_learning_rate(lr);
        // On a rayon worker: the backward's parallel ops are nested jobs there.
        vidgen_video_core::in_pool(|| opt.backward_step(&mse))?;
        let mse = mse.to_scalar::<f32>()?;
        check_loss(mse, step)?;
        on_step(VqStep {
            step,
            quantized: false,
            mse,
            commitment: 0.0,
            perplexity: 0.0,
            lr,
        });
    }
    // k-means on encoder outputs of a seeded sample of the pool.
    let mut krng = seeded_rng(mix(opts.seed, 0, 43));
    let sample: Vec<&Frame> = (0..opts.kmeans_frames.max(1))
        .map(|_| &pool[krng.random_range(0..pool.len())])
        .collect();
    let mut rows = Vec::new();
    for chunk in sample.chunks(64) {
        let h = model.encode(&frames_to_tensor(chunk)?)?.detach();
        rows.push(flat_rows(&h)?);
    }
    let rows = Tensor::cat(&rows, 0)?;
    model
        .quantizer_mut()
        .init_kmeans(&rows, opts.kmeans_iters, mix(opts.seed, 0, 44))?;
    model.quantizer_mut().enable_ema(EmaConfig {
        decay: opts.ema_decay,
        dead_threshold: opts.dead_threshold,
        seed: mix(opts.seed, 0, 45),
        ..EmaConfig::default()
    })?;
    for i in 0..opts.steps {
        let step = opts.warmup_steps + i;
        let x = batch_of(&mut rng)?;
        let h = model.encode(&x)?;
        let (b, d, gh, gw) = h.dims4()?;
        let z = flat_rows(&h)?;
        let q = model.quantizer().forward_flat(&z)?;
        let quant = q
            .quantized
            .reshape((b, gh, gw, d))?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        let y = model.decode_quantized(&quant)?;
        let mse = (y - &x)?.sqr()?.mean_all()?;
        let loss = (&mse + (&q.commitment_loss * opts.beta)?)?;
        let lr = opts.lr_at(step, total);
        opt.set_learning_rate(lr);
        // On a rayon worker: the backward's parallel ops are nested jobs there.
        vidgen_video_core::in_pool(|| opt.backward_step(&loss))?;
        let rep = model.quantizer_mut().ema_update(&z.detach(), &q.indices)?;
        let mse = mse.to_scalar::<f32>()?;
        check_loss(mse, step)?;
        on_step(VqStep {
            step,
            quantized: true,
            mse,
            commitment: q.commitment_loss.to_scalar::<f32>()?,
            perplexity: rep.usage.perplexity(),
            lr,
        });
    }
    let mut tensors: HashMap<String, Tensor> = vars
        .data()
        .lock()
        .map_err(|_| Error::invalid("var map", "lock poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    tensors.insert(
        "quantize.embedding.weight".into(),
        model.quantizer().codebook().clone(),
    );
    Ok((Vqgan::new(model, size)?, tensors))
}

fn check_loss(v: f32, step: usize) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            "tokenizer training",
            format!("loss became {v} at step {step}"),
        ))
    }
}

/// `[B, D, h, w]` → `[B·h·w, D]` (the quantiser's row order).
fn flat_rows(h: &Tensor) -> Result<Tensor> {
    let (b, d, gh, gw) = h.dims4()?;
    Ok(h.permute((0, 2, 3, 1))?.reshape((b * gh * gw, d))?)
}

pub use vidgen_vq_tokenizer::PruneReport;

/// Removes near-duplicate codes from a trained tokenizer's codebook
/// ([`vidgen_vq_tokenizer::prune`]: greedy, cheapest code first, while the sample's round-trip
/// PSNR, in 8-bit pixels, stays within `max_psnr_drop` dB). The world's flat background took
/// dozens of interchangeable codes, chosen by the object far away (the encoder's GroupNorm
/// sees the whole frame): half of the 64 tokens changed between consecutive frames although
/// ~12 cells did, and the decoder LLM spent its loss on those near-ties. Returns the pruned
/// codebook (the kept rows in their old order) and the report.
///
/// `clips` are sequences of frames (consecutive frames are compared for the report).
pub fn prune_codebook(
    tok: &Vqgan,
    clips: &[Vec<Frame>],
    max_psnr_drop: f64,
) -> Result<(Tensor, PruneReport)> {
    let frames: Vec<Frame> = clips.iter().flatten().cloned().collect();
    if frames.is_empty() {
        return Err(Error::invalid("prune sample", "no frames"));
    }
    let codebook = tok.model().quantizer().codebook().to_dtype(DType::F32)?;
    let mut rows = Vec::new();
    for chunk in frames.chunks(64) {
        let refs: Vec<&Frame> = chunk.iter().collect();
        rows.push(flat_rows(&tok.model().encode(&frames_to_tensor(&refs)?)?)?);
    }
    let latents = Tensor::cat(&rows, 0)?;
    let clip_lens: Vec<usize> = clips.iter().map(Vec::len).collect();
    // The round trip in 8-bit pixels, as the tokenizer's users see it.
    let mut sq_err = |ids: &[u32], which: &[usize]| -> Result<Vec<f64>> {
        let dec = tok.decode_ids(ids)?;
        Ok(which
            .iter()
            .zip(&dec)
            .map(|(&f, x)| {
                frames[f]
                    .data()
                    .iter()
                    .zip(x.data())
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                    .sum()
            })
            .collect())
    };
    let sample = vidgen_vq_tokenizer::PruneSample {
        codebook: &codebook,
        latents: &latents,
        cells: tok.grid() * tok.grid(),
        clip_lens: &clip_lens,
        values_per_frame: frames[0].data().len(),
    };
    let (kept, report) = vidgen_vq_tokenizer::prune_codes(&sample, max_psnr_drop, &mut sq_err)?;
    let idx = Tensor::from_vec(kept.clone(), kept.len(), &Device::Cpu)?;
    Ok((codebook.index_select(&idx, 0)?, report))
}

/// Writes `src` (a `VQModel` folder) with its codebook replaced by `codebook` (`[K', D]`) and
/// `num_vq_embeddings` set to `K'` to `dst`.
pub fn write_with_codebook(src: &Path, dst: &Path, codebook: &Tensor) -> Result<()> {
    vidgen_vq_tokenizer::write_folder_with_codebook(src, dst, codebook)
}

/// Codebook usage of the tokens of `frames`.
pub fn usage(tok: &Vqgan, frames: &[Frame]) -> Result<CodebookUsage> {
    CodebookUsage::from_ids(&tok.encode_frames(frames)?, tok.vocab_size())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::vidicl::world32::World32Config;

    /// A tokenizer small enough to train in a test.
    fn tiny(codes: usize, steps: usize) -> VqganOptions {
        VqganOptions {
            channels: vec![8, 8, 8],
            latent_channels: 4,
            embed_dim: 4,
            codes,
            groups: 4,
            pool_episodes: 4,
            warmup_steps: steps,
            steps,
            batch: 4,
            kmeans_frames: 8,
            kmeans_iters: 3,
            ..VqganOptions::default()
        }
    }

    #[test]
    fn tiny_training_runs_saves_and_loads() {
        let world = World32::new(World32Config::default()).unwrap();
        let opts = tiny(16, 2);
        let mut steps = Vec::new();
        let (tok, tensors) = train_vqgan(&world, &opts, |s| steps.push(s)).unwrap();
        assert_eq!(steps.len(), 4);
        assert!(steps[3].quantized && !steps[0].quantized);
        let dir = tempfile::tempdir().unwrap();
        save_vqgan(dir.path(), &opts.config_json(32), &tensors).unwrap();
        let back = Vqgan::load(dir.path()).unwrap();
        let e = world.episode(0, 0, |d, _| Some(d)).unwrap();
        let ids = tok.encode_frames(e.truth.frames()).unwrap();
        assert_eq!(ids.len(), 4 * 64);
        assert_eq!(back.encode_frames(e.truth.frames()).unwrap(), ids);
        let frames = back.decode_ids(&ids).unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!((frames[0].width(), frames[0].height()), (32, 32));
        assert!(back.decode_ids(&ids[1..]).is_err());
    }

    #[test]
    fn pruning_keeps_the_round_trip_within_the_bound_and_writes_a_loadable_folder() {
        let world = World32::new(World32Config::default()).unwrap();
        let opts = tiny(32, 4);
        let (tok, tensors) = train_vqgan(&world, &opts, |_| {}).unwrap();
        let src = tempfile::tempdir().unwrap();
        save_vqgan(src.path(), &opts.config_json(32), &tensors).unwrap();
        let mut rng = seeded_rng(3);
        let clips: Vec<Vec<Frame>> = (0..4)
            .map(|_| {
                let e = world.train_episode(&mut rng).unwrap();
                let mut q = e.query.frames().to_vec();
                q.extend(e.truth.frames().iter().cloned());
                q
            })
            .collect();
        let (cb, rep) = prune_codebook(&tok, &clips, 3.0).unwrap();
        assert_eq!(rep.codes_before, 32);
        assert_eq!(cb.dims(), &[rep.codes_after, 4]);
        assert!(rep.codes_after >= 1 && rep.codes_after <= rep.used_before);
        assert!(rep.psnr_after >= rep.psnr_before - 3.0 - 1e-9, "{rep:?}");
        let dst = tempfile::tempdir().unwrap();
        write_with_codebook(src.path(), dst.path(), &cb).unwrap();
        let back = Vqgan::load(dst.path()).unwrap();
        assert_eq!(back.vocab_size(), rep.codes_after);
        let ids = back.encode_frames(&clips[0]).unwrap();
        assert!(ids.iter().all(|&i| (i as usize) < rep.codes_after));
        // The pruned folder's round trip is the one the report measured.
        let all: Vec<Frame> = clips.iter().flatten().cloned().collect();
        let rt = back.round_trip(&all).unwrap();
        let (mut sq, mut n) = (0f64, 0f64);
        for (a, b) in all.iter().zip(&rt) {
            for (&p, &q) in a.data().iter().zip(b.data()) {
                sq += (p as f64 - q as f64).powi(2);
                n += 1.0;
            }
        }
        let psnr = 10.0 * (255f64 * 255.0 / (sq / n)).log10();
        assert!((psnr - rep.psnr_after).abs() < 0.05, "{psnr} vs {rep:?}");
        assert!(prune_codebook(&tok, &[], 1.0).is_err());
    }
}
