//! The keyframe tokenizer: a small diffusers `VQModel` (vq-tokenizer's VQGAN architecture,
//! trained here without the adversarial and perceptual terms) standing in for Video-LaVIT's
//! EVA-CLIP tokenizer + SDXL detokenizer. Its encoder also serves as the video detokenizer's
//! "VAE": the diffusion model generates the continuous latents `encode` returns, and
//! `decode_latents` quantises and decodes them (diffusers' `VQModel.decode` default).
//!
//! Training ([`train_keyframe_tokenizer`]) has two phases: an autoencoder warm-up (the
//! quantiser skipped), then the codebook is set by k-means on encoder outputs and training
//! continues through the straight-through quantiser (`mse + β · commitment`) while the codebook
//! follows EMA updates.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::{Frame, Video};
use vidgen_vq_tokenizer::{EmaConfig, VQModel, VQModelConfig};

/// The weights file of a diffusers folder.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// `[N, 3, H, W]` in `[-1, 1]` from RGB frames.
///
/// # Errors
/// Frames of different sizes.
pub fn frames_to_tensor(frames: &[&Frame], device: &Device) -> Result<Tensor> {
    let Some(f0) = frames.first() else {
        return Err(Error::invalid("frames", "no frames"));
    };
    let (w, h) = (f0.width() as usize, f0.height() as usize);
    let mut v = Vec::with_capacity(frames.len() * 3 * h * w);
    for f in frames {
        if (f.width() as usize, f.height() as usize) != (w, h) {
            return Err(Error::shape(
                "frame",
                &[h, w],
                &[f.height() as usize, f.width() as usize],
            ));
        }
        let d = f.data();
        for c in 0..3 {
            v.extend((0..h * w).map(|i| d[3 * i + c] as f32 / 127.5 - 1.0));
        }
    }
    Ok(Tensor::from_vec(v, (frames.len(), 3, h, w), device)?)
}

/// RGB frames from `[N, 3, H, W]` in `[-1, 1]` (clamped, rounded).
///
/// # Errors
/// Another layout.
pub fn tensor_to_frames(x: &Tensor) -> Result<Vec<Frame>> {
    let (n, c, h, w) = x.dims4()?;
    if c != 3 {
        return Err(Error::shape("frames", &[n, 3, h, w], x.dims()));
    }
    let v: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    (0..n)
        .map(|i| {
            let mut d = vec![0u8; h * w * 3];
            for ch in 0..3 {
                for p in 0..h * w {
                    let x = v[((i * 3 + ch) * h * w) + p];
                    d[3 * p + ch] = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
                }
            }
            Frame::new(w as u32, h as u32, d)
        })
        .collect()
}

/// A trained keyframe tokenizer.
#[derive(Debug, Clone)]
pub struct KeyframeTokenizer {
    model: VQModel,
}

impl KeyframeTokenizer {
    /// Wraps a `VQModel` (3 channels in and out).
    ///
    /// # Errors
    /// Another channel count.
    pub fn new(model: VQModel) -> Result<Self> {
        let c = model.config();
        if c.in_channels != 3 || c.out_channels != 3 {
            return Err(Error::config(
                "in_channels/out_channels",
                "the keyframe tokenizer needs RGB",
            ));
        }
        Ok(Self { model })
    }

    /// Loads a diffusers `VQModel` folder.
    ///
    /// # Errors
    /// As `VQModel::from_pretrained`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let (m, _) = VQModel::from_pretrained(dir, DType::F32, device)?;
        Self::new(m)
    }

    /// The model.
    pub fn model(&self) -> &VQModel {
        &self.model
    }

    /// Codes in the codebook.
    pub fn num_codes(&self) -> usize {
        self.model.config().num_vq_embeddings
    }

    /// Latent channels (the code dimension).
    pub fn latent_channels(&self) -> usize {
        self.model.config().embed_dim()
    }

    /// The token grid `(h, w)` of a `height × width` frame.
    pub fn grid(&self, height: usize, width: usize) -> (usize, usize) {
        let s = self.model.config().spatial_stride();
        (height / s, width / s)
    }

    /// Continuous latents (before quantisation).
    ///
    /// # Shapes
    /// `x [N, 3, H, W]` in `[-1, 1]` → `[N, C, H/s, W/s]`.
    ///
    /// # Errors
    /// As `VQModel::encode`.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        self.model.encode(x)
    }

    /// Quantises and decodes continuous latents.
    ///
    /// # Shapes
    /// `h [N, C, h, w]` → `[N, 3, h·s, w·s]` in about `[-1, 1]`.
    ///
    /// # Errors
    /// As `VQModel::decode`.
    pub fn decode_latents(&self, h: &Tensor) -> Result<Tensor> {
        self.model.decode(h, false)
    }

    /// Token ids in raster order.
    ///
    /// # Shapes
    /// `x [N, 3, H, W]` → `N` rows of `h·w` ids.
    ///
    /// # Errors
    /// As `VQModel::tokenize`.
    pub fn tokenize(&self, x: &Tensor) -> Result<Vec<Vec<u32>>> {
        let ids = self.model.tokenize(x)?;
        let n = ids.dim(0)?;
        let flat = ids.flatten_from(1)?;
        (0..n).map(|i| Ok(flat.get(i)?.to_vec1::<u32>()?)).collect()
    }

    /// Frames from token ids.
    ///
    /// # Shapes
    /// `ids`: `N` rows of `h·w` → `[N, 3, h·s, w·s]`.
    ///
    /// # Errors
    /// Ids out of the codebook; rows of another length than `h · w`.
    pub fn detokenize(
        &self,
        ids: &[Vec<u32>],
        grid: (usize, usize),
        device: &Device,
    ) -> Result<Tensor> {
        let (h, w) = grid;
        let mut all = Vec::with_capacity(ids.len() * h * w);
        for row in ids {
            if row.len() != h * w {
                return Err(Error::invalid(
                    "keyframe tokens",
                    format!("{} tokens, the {h}x{w} grid needs {}", row.len(), h * w),
                ));
            }
            all.extend_from_slice(row);
        }
        let t = Tensor::from_vec(all, (ids.len(), h, w), device)?;
        self.model.detokenize(&t)
    }
}

/// Every knob of the keyframe tokenizer's training (saved with the weights).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyframeTrainConfig {
    /// `block_out_channels` (`len − 1` halvings: 4 levels give one token per 8×8 cell).
    pub channels: Vec<usize>,
    /// Latent / code dimension.
    pub latent_channels: usize,
    /// Codebook size.
    pub codes: usize,
    /// GroupNorm groups.
    pub groups: usize,
    /// Autoencoder warm-up steps (no quantiser).
    pub warmup_steps: usize,
    /// Steps through the quantiser after the k-means initialisation.
    pub vq_steps: usize,
    /// Frames per step.
    pub batch: usize,
    /// Peak AdamW learning rate (linear warm-up over 50 steps, cosine to a tenth).
    pub lr: f64,
    /// Commitment weight β.
    pub beta: f64,
    /// EMA decay of the codebook.
    pub ema_decay: f64,
    /// Frames whose encoder outputs seed k-means.
    pub kmeans_frames: usize,
    /// Lloyd iterations.
    pub kmeans_iters: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for KeyframeTrainConfig {
    fn default() -> Self {
        Self {
            channels: vec![16, 32, 64, 64],
            latent_channels: 8,
            codes: 512,
            groups: 8,
            warmup_steps: 300,
            vq_steps: 500,
            batch: 8,
            lr: 2e-3,
            beta: 0.25,
            ema_decay: 0.99,
            kmeans_frames: 256,
            kmeans_iters: 20,
            seed: 0,
        }
    }
}

impl KeyframeTrainConfig {
    /// The `VQModel` config this describes.
    ///
    /// # Errors
    /// Invalid sizes (named by the `VQModel` validation).
    pub fn model_config(&self) -> Result<VQModelConfig> {
        let n = self.channels.len();
        let json = serde_json::json!({
            "_class_name": "VQModel",
            "in_channels": 3,
            "out_channels": 3,
            "block_out_channels": self.channels,
            "down_block_types": vec!["DownEncoderBlock2D"; n],
            "up_block_types": vec!["UpDecoderBlock2D"; n],
            "layers_per_block": 1,
            "latent_channels": self.latent_channels,
            "vq_embed_dim": self.latent_channels,
            "num_vq_embeddings": self.codes,
            "norm_num_groups": self.groups,
            "act_fn": "silu",
        });
        let cfg: VQModelConfig = serde_json::from_value(json)
            .map_err(|e| Error::config("keyframe tokenizer", e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn lr_at(&self, step: usize) -> f64 {
        let total = self.warmup_steps + self.vq_steps;
        let warm = 50.min(total.max(1));
        if step < warm {
            return self.lr * (step + 1) as f64 / warm as f64;
        }
        let t = ((step - warm) as f64 / total.saturating_sub(warm).max(1) as f64).min(1.0);
        let lo = self.lr / 10.0;
        lo + 0.5 * (self.lr - lo) * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// One step's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KeyframeStep {
    /// 0-based step over both phases.
    pub step: usize,
    /// `true` in the VQ phase.
    pub vq: bool,
    /// Reconstruction MSE (pixels in `[-1, 1]`).
    pub mse: f32,
    /// Commitment term (0 in the warm-up).
    pub commitment: f32,
}

/// The `VQModel` config as diffusers writes it (`config.json`).
pub fn vq_config_json(t: &KeyframeTrainConfig) -> serde_json::Value {
    let n = t.channels.len();
    serde_json::json!({
        "_class_name": "VQModel",
        "_diffusers_version": "0.42.1",
        "act_fn": "silu",
        "block_out_channels": t.channels,
        "down_block_types": vec!["DownEncoderBlock2D"; n],
        "up_block_types": vec!["UpDecoderBlock2D"; n],
        "force_upcast": false,
        "in_channels": 3,
        "latent_channels": t.latent_channels,
        "layers_per_block": 1,
        "lookup_from_codebook": false,
        "mid_block_add_attention": true,
        "norm_num_groups": t.groups,
        "norm_type": "group",
        "num_vq_embeddings": t.codes,
        "out_channels": 3,
        "sample_size": 32,
        "scaling_factor": 0.18215,
        "vq_embed_dim": t.latent_channels,
    })
}

/// Writes every variable of `vars` to `path` in `dtype` (safetensors).
///
/// # Errors
/// Unwritable path.
pub fn save_vars(vars: &VarMap, path: &Path, dtype: DType) -> Result<()> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| Error::invalid("var map", "lock poisoned"))?;
    let map: HashMap<String, Tensor> = data
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_dtype(dtype)?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&map, path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Overwrites every variable from a seeded stream, in name order: conv / linear weights
/// `N(0, 1/fan_in)`, norm weights 1, biases 0, the codebook `U(±1/K)` (candle's own CPU
/// initialisation is not seedable).
///
/// # Errors
/// A poisoned lock.
pub fn seeded_init(vars: &VarMap, seed: u64) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    vidgen_video_nn::reinit_var_map(vars, |name, dims| {
        let n: usize = dims.iter().product();
        Ok(if name.ends_with("embedding.weight") && dims.len() == 2 {
            let b = 1.0 / dims[0].max(1) as f32;
            (0..n).map(|_| rng.random_range(-b..b)).collect()
        } else if name.ends_with(".bias") || name.ends_with("norm.bias") {
            vec![0.0; n]
        } else if dims.len() == 1 {
            vec![1.0; n]
        } else {
            let fan_in: usize = dims[1..].iter().product();
            let std = (1.0 / fan_in.max(1) as f64).sqrt();
            (0..n)
                .map(|_| {
                    let z: f64 = rng.sample(rand_distr::StandardNormal);
                    (z * std) as f32
                })
                .collect()
        })
    })
}

/// A trained keyframe tokenizer with its variables.
pub struct TrainedKeyframeTokenizer {
    /// The tokenizer.
    pub tokenizer: KeyframeTokenizer,
    /// Its variables (diffusers keys).
    pub vars: VarMap,
    /// Every step.
    pub steps: Vec<KeyframeStep>,
}

impl std::fmt::Debug for TrainedKeyframeTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrainedKeyframeTokenizer({:?})", self.tokenizer)
    }
}

/// Trains the keyframe tokenizer on `frames` (`[N, 3, H, W]` in `[-1, 1]`).
///
/// # Errors
/// A bad config; frames of the wrong layout or size; non-finite losses.
pub fn train_keyframe_tokenizer(
    t: &KeyframeTrainConfig,
    frames: &Tensor,
    mut on_step: impl FnMut(&KeyframeStep),
) -> Result<TrainedKeyframeTokenizer> {
    let cfg = t.model_config()?;
    let n = frames.dim(0)?;
    if n == 0 || t.batch == 0 {
        return Err(Error::invalid("frames", "need frames and a batch ≥ 1"));
    }
    let device = frames.device().clone();
    let vars = VarMap::new();
    let mut model = VQModel::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &device))?;
    seeded_init(&vars, t.seed)?;
    // The quantiser took its codebook tensor before the re-initialisation: refresh it.
    let cb_key = "quantize.embedding.weight";
    let cb_var = vars
        .data()
        .lock()
        .map_err(|_| Error::invalid("var map", "lock poisoned"))?
        .get(cb_key)
        .cloned()
        .ok_or_else(|| Error::invalid("keyframe tokenizer", "no codebook variable"))?;
    model
        .quantizer_mut()
        .set_codebook(cb_var.as_tensor().copy()?)?;
    let params: Vec<candle_core::Var> = {
        let d = vars
            .data()
            .lock()
            .map_err(|_| Error::invalid("var map", "lock poisoned"))?;
        let mut names: Vec<&String> = d.keys().filter(|k| k.as_str() != cb_key).collect();
        names.sort();
        names.into_iter().map(|k| d[k].clone()).collect()
    };
    let mut opt = AdamW::new(
        params,
        ParamsAdamW {
            lr: t.lr_at(0),
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(t.seed ^ 0x6b65_7966);
    let mut steps = Vec::new();
    let batch = |rng: &mut ChaCha8Rng| -> Result<Tensor> {
        let idx: Vec<u32> = (0..t.batch)
            .map(|_| rng.random_range(0..n) as u32)
            .collect();
        Ok(frames.index_select(&Tensor::new(idx.as_slice(), &device)?, 0)?)
    };
    let check = |v: f32, step: usize| -> Result<()> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(Error::NonFinite {
                location: format!("keyframe tokenizer training loss at step {step}"),
                nan: usize::from(v.is_nan()),
                inf: usize::from(v.is_infinite()),
                total: 1,
            })
        }
    };
    for step in 0..t.warmup_steps {
        let x = batch(&mut rng)?;
        let y = model.decode(&model.encode(&x)?, true)?;
        let loss = (y - &x)?.sqr()?.mean_all()?;
        let lv = loss.to_scalar::<f32>()?;
        check(lv, step)?;
        opt.set_learning_rate(t.lr_at(step));
        // On a rayon worker: the backward's parallel ops are nested jobs there.
        vidgen_video_core::in_pool(|| opt.backward_step(&loss))?;
        let s = KeyframeStep {
            step,
            vq: false,
            mse: lv,
            commitment: 0.0,
        };
        on_step(&s);
        steps.push(s);
    }
    // k-means on encoder outputs.
    let k = t.kmeans_frames.min(n).max(1);
    let mut rows = Vec::new();
    for s in (0..k).step_by(32) {
        let len = 32.min(k - s);
        let h = model.encode(&frames.narrow(0, s, len)?)?.detach();
        let (b, c, hh, ww) = h.dims4()?;
        rows.push(h.permute((0, 2, 3, 1))?.reshape((b * hh * ww, c))?);
    }
    let rows = Tensor::cat(&rows, 0)?;
    if rows.dim(0)? < t.codes {
        return Err(Error::invalid(
            "kmeans_frames",
            format!(
                "{} vectors for {} codes: use more frames",
                rows.dim(0)?,
                t.codes
            ),
        ));
    }
    model
        .quantizer_mut()
        .init_kmeans(&rows, t.kmeans_iters, t.seed)?;
    model.quantizer_mut().enable_ema(EmaConfig {
        decay: t.ema_decay,
        dead_threshold: 0.01,
        seed: t.seed,
        ..EmaConfig::default()
    })?;
    for i in 0..t.vq_steps {
        let step = t.warmup_steps + i;
        let x = batch(&mut rng)?;
        let h = model.encode(&x)?;
        let q = model.quantize(&h)?;
        let y = model.decode_quantized(&q.quantized)?;
        let mse = (y - &x)?.sqr()?.mean_all()?;
        let loss = (&mse + (&q.commitment_loss * t.beta)?)?;
        let lv = mse.to_scalar::<f32>()?;
        check(lv, step)?;
        opt.set_learning_rate(t.lr_at(step));
        // On a rayon worker: the backward's parallel ops are nested jobs there.
        vidgen_video_core::in_pool(|| opt.backward_step(&loss))?;
        let (b, c, hh, ww) = h.dims4()?;
        let flat = h
            .detach()
            .permute((0, 2, 3, 1))?
            .reshape((b * hh * ww, c))?;
        let ids = q.indices.flatten_all()?;
        model.quantizer_mut().ema_update(&flat, &ids)?;
        let s = KeyframeStep {
            step,
            vq: true,
            mse: lv,
            commitment: q.commitment_loss.to_scalar::<f32>()?,
        };
        on_step(&s);
        steps.push(s);
    }
    cb_var.set(&model.quantizer().codebook().to_dtype(DType::F32)?)?;
    Ok(TrainedKeyframeTokenizer {
        tokenizer: KeyframeTokenizer::new(model)?,
        vars,
        steps,
    })
}

/// Writes a trained tokenizer as a diffusers `VQModel` folder (`config.json` +
/// `diffusion_pytorch_model.safetensors` in `dtype`).
///
/// # Errors
/// Unwritable folder.
pub fn save_keyframe_tokenizer(
    t: &KeyframeTrainConfig,
    vars: &VarMap,
    dir: &Path,
    dtype: DType,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let cfg = dir.join("config.json");
    let text = serde_json::to_string_pretty(&vq_config_json(t))
        .map_err(|e| Error::invalid("config", e.to_string()))?;
    std::fs::write(&cfg, text + "\n").map_err(|source| Error::Io { path: cfg, source })?;
    save_vars(vars, &dir.join(WEIGHTS_FILE), dtype)
}

/// Frames of each clip the keyframe pruning compares: every third of the first 24.
const PRUNE_STRIDE: usize = 3;

/// Removes near-duplicate codes from the keyframe tokenizer in `dir` (a `VQModel` folder,
/// rewritten in place; see `vidgen_vq_tokenizer::prune`): codes are dropped while the
/// round trip of the sample (frames 0, 3, …, 21 of each of `clips`) stays within
/// `max_psnr_drop` dB. The world's flat background otherwise takes a dozen near-identical
/// codes, chosen by the object far away (the encoder's GroupNorm sees the whole frame), and the
/// LLM that draws keyframes spends its loss on them. An LLM or detokenizer trained on the
/// unpruned codes must be trained again.
///
/// # Errors
/// An unreadable folder, no clips, clips of another size.
pub fn prune_keyframe_tokenizer(
    dir: &Path,
    clips: &[&Video],
    max_psnr_drop: f64,
    device: &Device,
) -> Result<vidgen_vq_tokenizer::PruneReport> {
    let tok = KeyframeTokenizer::load(dir, device)?;
    let sample: Vec<Tensor> = clips
        .iter()
        .map(|v| {
            let picks: Vec<&Frame> = v.frames().iter().take(24).step_by(PRUNE_STRIDE).collect();
            frames_to_tensor(&picks, device)
        })
        .collect::<Result<_>>()?;
    let (codebook, report) =
        vidgen_vq_tokenizer::prune_vqmodel(tok.model(), &sample, max_psnr_drop)?;
    drop(tok);
    vidgen_vq_tokenizer::write_folder_with_codebook(dir, dir, &codebook)?;
    Ok(report)
}

/// Frames of a video (all of them) as `[N, 3, H, W]`.
///
/// # Errors
/// As [`frames_to_tensor`].
pub fn video_frames(video: &Video, device: &Device) -> Result<Tensor> {
    let refs: Vec<&Frame> = video.frames().iter().collect();
    frames_to_tensor(&refs, device)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn tiny_training_round_trips_and_reloads() {
        let t = KeyframeTrainConfig {
            channels: vec![8, 8],
            latent_channels: 4,
            codes: 8,
            groups: 4,
            warmup_steps: 3,
            vq_steps: 3,
            batch: 2,
            kmeans_frames: 4,
            kmeans_iters: 2,
            ..KeyframeTrainConfig::default()
        };
        let x = Tensor::rand(-1f32, 1f32, (4, 3, 8, 8), &Device::Cpu).unwrap();
        let r = train_keyframe_tokenizer(&t, &x, |_| {}).unwrap();
        assert_eq!(r.steps.len(), 6);
        let ids = r.tokenizer.tokenize(&x).unwrap();
        assert_eq!(ids.len(), 4);
        assert_eq!(ids[0].len(), 16);
        let y = r.tokenizer.detokenize(&ids, (4, 4), &Device::Cpu).unwrap();
        assert_eq!(y.dims(), &[4, 3, 8, 8]);
        let dir = tempfile::tempdir().unwrap();
        save_keyframe_tokenizer(&t, &r.vars, dir.path(), DType::F32).unwrap();
        let back = KeyframeTokenizer::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(back.tokenize(&x).unwrap(), ids);
        let frames = tensor_to_frames(&y).unwrap();
        let refs: Vec<&Frame> = frames.iter().collect();
        assert_eq!(
            frames_to_tensor(&refs, &Device::Cpu).unwrap().dims(),
            &[4, 3, 8, 8]
        );
        // Pruning rewrites the folder with fewer codes; it loads and its ids stay in range.
        let clip = Video::new(frames.clone(), 6.0).unwrap();
        let r = prune_keyframe_tokenizer(dir.path(), &[&clip, &clip], 3.0, &Device::Cpu).unwrap();
        assert_eq!(r.codes_before, 8);
        assert!(r.codes_after >= 1 && r.codes_after <= r.used_before);
        assert!(r.psnr_after >= r.psnr_before - 3.0);
        let pruned = KeyframeTokenizer::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(pruned.num_codes(), r.codes_after);
        assert!(pruned
            .tokenize(&x)
            .unwrap()
            .iter()
            .flatten()
            .all(|&i| (i as usize) < r.codes_after));
        assert!(prune_keyframe_tokenizer(dir.path(), &[], 1.0, &Device::Cpu).is_err());
    }
}
