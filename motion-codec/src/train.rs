//! Training the motion tokenizer: reconstruct LaVIT-preprocessed motion clips through the
//! encoder, the VQ bottleneck and the decoder.
//!
//! Video-LaVIT's training code is not public; its constructor's unused defaults suggest an L2
//! reconstruction, EMA codebook updates (decay 0.99) and k-means codebook initialisation, which
//! is what this module does by default:
//!
//! ```text
//! z   = encode_continuous(x)                               [B, t, h, w, 32]
//! z_q = nearest code of z (vq-tokenizer), straight-through  (value z_q, gradient of z)
//! x̂   = decode_continuous(z_q)                             [B, 2, T, H, W]
//! loss = rec(x̂, x) / var(data) + β · mean((sg[z_q] − z)²)   rec = L2 (mean square) or L1
//! ```
//!
//! - The reconstruction term is divided by the variance of the training data (L2) or its mean
//!   absolute deviation (L1), so the loss does not depend on the motion's scale (the tokenizer
//!   input is the preprocessed motion ÷ 10, values of a few hundredths on slow motion).
//! - The codebook is not a gradient parameter: it starts as k-means (k-means++ seeding, Lloyd
//!   iterations; [`vidgen_vq_tokenizer::kmeans()`]) of encoder outputs on training clips and
//!   then follows EMA updates ([`VectorQuantizer::ema_update`]) with optional dead-code
//!   restarts. Every other tensor trains with AdamW (warm-up, cosine decay to a tenth).
//! - Training is reproducible from the seed: the batches, the initialisation (the tokenizer's
//!   own seeded ViT init, [`MotionTokenizer::random`]'s draws) and the restarts are seeded.
//!
//! [`train_motion_tokenizer`] returns the trained [`MotionTokenizer`] (its
//! [`MotionTokenizer::save`] writes a folder [`MotionTokenizer::from_pretrained`] reads) and
//! the per-step losses; [`evaluate_reconstruction`] measures the end-point error (in cells of
//! the `20 × 36` grid) and the code usage.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_vq_tokenizer::{CodebookUsage, EmaConfig, VectorQuantizer};

use crate::lavit::LavitConfig;
use crate::tokenizer::{MotionTokenizer, MotionTokenizerConfig};

/// The codebook key inside the tokenizer (as its checkpoint table).
const CODEBOOK: &str = "quantize.embedding.weight";

/// Which reconstruction loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReconLoss {
    /// Mean squared error (Video-LaVIT's constructor default).
    L2,
    /// Mean absolute error.
    L1,
}

/// Settings of [`train_motion_tokenizer`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MotionTrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Clips per step.
    pub batch: usize,
    /// Peak AdamW learning rate.
    pub lr: f64,
    /// Linear warm-up steps (then cosine decay to `lr / 10`).
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Reconstruction loss.
    pub loss: ReconLoss,
    /// Weight β of the commitment loss.
    pub beta: f64,
    /// EMA decay of the codebook (Video-LaVIT's default 0.99).
    pub ema_decay: f64,
    /// Codes whose EMA count falls below this are restarted from recent encoder outputs
    /// (0: never).
    pub dead_threshold: f64,
    /// Clips whose encoder outputs seed the k-means initialisation (0: keep the initial
    /// random codebook).
    pub kmeans_clips: usize,
    /// Lloyd iterations of the k-means initialisation.
    pub kmeans_iters: usize,
    /// Steps of the plain autoencoder (no quantiser) before the codebook is initialised by
    /// k-means on the then-trained encoder's outputs (0: k-means on the untrained encoder,
    /// before the first step). Sparse motion (a small object on a still background) makes an
    /// untrained encoder's outputs nearly equal across clips, and a codebook seeded from them
    /// collapses to "no motion".
    pub ae_warmup: usize,
    /// Seed of everything random.
    pub seed: u64,
}

impl Default for MotionTrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch: 4,
            lr: 2e-3,
            warmup: 50,
            weight_decay: 0.01,
            loss: ReconLoss::L2,
            beta: 0.25,
            ema_decay: 0.99,
            dead_threshold: 0.5,
            kmeans_clips: 64,
            kmeans_iters: 20,
            ae_warmup: 0,
            seed: 0,
        }
    }
}

impl MotionTrainConfig {
    /// The learning rate at `step`: linear warm-up, then cosine from `lr` to `lr / 10`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        let lo = self.lr / 10.0;
        lo + 0.5 * (self.lr - lo) * (1.0 + (std::f64::consts::PI * t).cos())
    }

    fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::config("batch", "must be ≥ 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config("lr", format!("{}: must be > 0", self.lr)));
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::config("beta", format!("{}: must be ≥ 0", self.beta)));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(Error::config(
                "ema_decay",
                format!("{}: must be in [0, 1)", self.ema_decay),
            ));
        }
        Ok(())
    }
}

/// One training step's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MotionStep {
    /// 0-based step.
    pub step: usize,
    /// The optimised total (normalised reconstruction + β · commitment).
    pub loss: f32,
    /// The normalised reconstruction term.
    pub recon: f32,
    /// The commitment term (before β).
    pub commitment: f32,
    /// Codes used by the batch.
    pub codes_used: usize,
    /// Codes restarted by this step's EMA update.
    pub restarted: usize,
    /// Learning rate used.
    pub lr: f64,
}

/// A trained tokenizer and its variables (a `VarMap` whose keys are the checkpoint keys).
pub struct TrainedMotionTokenizer {
    /// The tokenizer, computing with the trained variables.
    pub tokenizer: MotionTokenizer,
    /// Its variables.
    pub vars: VarMap,
    /// Every step's numbers.
    pub steps: Vec<MotionStep>,
}

impl std::fmt::Debug for TrainedMotionTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TrainedMotionTokenizer({:?}, {} steps)",
            self.tokenizer,
            self.steps.len()
        )
    }
}

fn check_data(cfg: &MotionTokenizerConfig, data: &Tensor) -> Result<usize> {
    let want = [cfg.in_channels, cfg.frames, cfg.height, cfg.width];
    match data.dims() {
        [n, rest @ ..] if rest == want && *n > 0 => Ok(*n),
        d => Err(Error::shape(
            "training clips",
            &[1, want[0], want[1], want[2], want[3]],
            d,
        )),
    }
}

/// A tokenizer over a fresh `VarMap`, initialised with [`MotionTokenizer::random`]'s seeded
/// draws (so a seed gives the same start as the random tokenizer of that seed).
fn fresh(
    cfg: &MotionTokenizerConfig,
    seed: u64,
    device: &Device,
) -> Result<(MotionTokenizer, VarMap)> {
    let vars = VarMap::new();
    let tok = MotionTokenizer::new(cfg, VarBuilder::from_varmap(&vars, DType::F32, device))?;
    let init = MotionTokenizer::random(cfg, seed, device)?;
    let data = vars
        .data()
        .lock()
        .map_err(|_| Error::invalid("var map", "lock poisoned"))?;
    for (name, t) in init.named_tensors() {
        if let Some(v) = data.get(name) {
            v.set(t)?;
        }
    }
    drop(data);
    Ok((tok, vars))
}

fn var(vars: &VarMap, name: &str) -> Result<Var> {
    vars.data()
        .lock()
        .map_err(|_| Error::invalid("var map", "lock poisoned"))?
        .get(name)
        .cloned()
        .ok_or_else(|| Error::MissingTensor {
            key: name.into(),
            file: "motion tokenizer variables".into(),
            nearest: Vec::new(),
        })
}

/// The scale the reconstruction loss is divided by: the data's variance (L2) or mean absolute
/// deviation (L1), floored so constant data does not divide by zero.
fn loss_scale(data: &Tensor, loss: ReconLoss) -> Result<f64> {
    let x = data.to_dtype(DType::F32)?;
    let mean = x.mean_all()?.to_scalar::<f32>()? as f64;
    let dev = x.affine(1.0, -mean)?;
    let s = match loss {
        ReconLoss::L2 => dev.sqr()?.mean_all()?.to_scalar::<f32>()? as f64,
        ReconLoss::L1 => dev.abs()?.mean_all()?.to_scalar::<f32>()? as f64,
    };
    Ok(s.max(1e-12))
}

/// Trains a motion tokenizer of config `cfg` on `data` (tokenizer inputs, the preprocessed
/// motion ÷ 10), calling `on_step` after every step.
///
/// # Shapes
/// `data`: `[N, 2, T, H, W]` (`[N, 2, 24, 20, 36]` for Video-LaVIT's layout), f32, on the
/// device to train on.
///
/// # Errors
/// A bad config (named field), data of the wrong shape, non-finite losses (naming the step).
pub fn train_motion_tokenizer(
    cfg: &MotionTokenizerConfig,
    train: &MotionTrainConfig,
    data: &Tensor,
    mut on_step: impl FnMut(&MotionStep),
) -> Result<TrainedMotionTokenizer> {
    cfg.validate()?;
    train.validate()?;
    let n = check_data(cfg, data)?;
    let device = data.device().clone();
    let data = data.to_dtype(DType::F32)?;
    let (tok, vars) = fresh(cfg, train.seed, &device)?;
    let codebook_var = var(&vars, CODEBOOK)?;
    let mut vq = tok.quantizer().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(train.seed ^ 0x6d6f_7469_6f6e);
    // k-means initialisation on encoder outputs of the first clips, then EMA updates.
    let init_codebook = |vq: &mut VectorQuantizer| -> Result<()> {
        if train.kmeans_clips > 0 {
            let k = train.kmeans_clips.min(n);
            let mut rows = Vec::new();
            for start in (0..k).step_by(train.batch) {
                let len = train.batch.min(k - start);
                let z = tok.encode_continuous(&data.narrow(0, start, len)?)?;
                rows.push(z.flatten_to(3)?.detach());
            }
            let rows = Tensor::cat(&rows, 0)?;
            let want = cfg.num_codes;
            if rows.dim(0)? < want {
                return Err(Error::invalid(
                    "kmeans_clips",
                    format!(
                        "{} encoder vectors from {k} clips, fewer than the {want} codes: use more clips",
                        rows.dim(0)?
                    ),
                ));
            }
            vq.init_kmeans(&rows, train.kmeans_iters, train.seed)?;
            codebook_var.set(&vq.codebook().to_dtype(DType::F32)?)?;
        }
        vq.enable_ema(EmaConfig {
            decay: train.ema_decay,
            dead_threshold: train.dead_threshold,
            seed: train.seed,
            ..EmaConfig::default()
        })?;
        Ok(())
    };
    if train.ae_warmup == 0 {
        init_codebook(&mut vq)?;
    }
    let params: Vec<Var> = {
        let d = vars
            .data()
            .lock()
            .map_err(|_| Error::invalid("var map", "lock poisoned"))?;
        let mut names: Vec<&String> = d.keys().filter(|k| k.as_str() != CODEBOOK).collect();
        names.sort();
        names.into_iter().map(|k| d[k].clone()).collect()
    };
    let mut opt = AdamW::new(
        params,
        ParamsAdamW {
            lr: train.lr_at(0),
            weight_decay: train.weight_decay,
            ..Default::default()
        },
    )?;
    let scale = loss_scale(&data, train.loss)?;
    let mut steps = Vec::with_capacity(train.steps);
    for step in 0..train.steps {
        let idx: Vec<u32> = (0..train.batch)
            .map(|_| rng.random_range(0..n) as u32)
            .collect();
        let x = data.index_select(&Tensor::new(idx.as_slice(), &device)?, 0)?;
        if train.ae_warmup > 0 && step == train.ae_warmup {
            init_codebook(&mut vq)?;
        }
        let quantise = step >= train.ae_warmup;
        let z = tok.encode_continuous(&x)?;
        let dims = z.dims().to_vec();
        let flat = z.flatten_to(3)?;
        let q = if quantise {
            Some(vq.forward_flat(&flat)?)
        } else {
            None
        };
        let xr = match &q {
            Some(q) => tok.decode_continuous(&q.quantized.reshape(dims.as_slice())?)?,
            None => tok.decode_continuous(&z)?,
        };
        let diff = (&xr - &x)?;
        let rec = match train.loss {
            ReconLoss::L2 => diff.sqr()?.mean_all()?,
            ReconLoss::L1 => diff.abs()?.mean_all()?,
        };
        let rec = (rec / scale)?;
        let loss = match &q {
            Some(q) => (&rec + (&q.commitment_loss * train.beta)?)?,
            None => rec.clone(),
        };
        let lv = loss.to_scalar::<f32>()?;
        if !lv.is_finite() {
            return Err(Error::NonFinite {
                location: format!("motion tokenizer training loss at step {step}"),
                nan: usize::from(lv.is_nan()),
                inf: usize::from(lv.is_infinite()),
                total: 1,
            });
        }
        let lr = train.lr_at(step);
        opt.set_learning_rate(lr);
        // On a rayon worker: the backward's parallel ops are nested jobs there.
        vidgen_video_core::in_pool(|| opt.backward_step(&loss))?;
        let (commitment, codes_used, restarted) = match &q {
            Some(q) => {
                let report = vq.ema_update(&flat.detach(), &q.indices)?;
                codebook_var.set(&vq.codebook().to_dtype(DType::F32)?)?;
                (
                    q.commitment_loss.to_scalar::<f32>()?,
                    report.usage.histogram.iter().filter(|&&c| c > 0).count(),
                    report.restarted.len(),
                )
            }
            None => (0.0, 0, 0),
        };
        let s = MotionStep {
            step,
            loss: lv,
            recon: rec.to_scalar::<f32>()?,
            commitment,
            codes_used,
            restarted,
            lr,
        };
        on_step(&s);
        steps.push(s);
    }
    Ok(TrainedMotionTokenizer {
        tokenizer: tok,
        vars,
        steps,
    })
}

/// The tokenizer input `[.., 2, T, H, W]` in cells of the output grid per frame: channel 0
/// (`dx`) times `divisor · std_x · out_w`, channel 1 (`dy`) times `divisor · std_y · out_h`
/// (undoing LaVIT's normalisation: the preprocessed value is `dx / W / std_x`, and one grid
/// cell is `W / out_w` pixels).
///
/// # Shapes
/// `[B, 2, T, H, W]` → same.
///
/// # Errors
/// Fewer than 2 channels on dim 1.
pub fn to_grid_units(x: &Tensor, lavit: &LavitConfig) -> Result<Tensor> {
    let s = |c: usize, cells: usize| {
        lavit.tokenizer_divisor as f64 * lavit.std[c] as f64 * cells as f64
    };
    let dx = (x.narrow(1, 0, 1)? * s(0, lavit.out_w))?;
    let dy = (x.narrow(1, 1, 1)? * s(1, lavit.out_h))?;
    Ok(Tensor::cat(&[&dx, &dy], 1)?)
}

/// How well a tokenizer reconstructs motion.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReconstructionReport {
    /// Clips measured.
    pub clips: usize,
    /// Mean end-point error `‖x̂ − x‖₂` over every vector of every frame, in grid cells.
    pub epe: f64,
    /// The same over the vectors whose true length is at least `moving_threshold` cells.
    pub epe_moving: f64,
    /// Mean true length of those moving vectors, cells (the scale `epe_moving` compares to).
    pub moving_magnitude: f64,
    /// The threshold, grid cells per frame.
    pub moving_threshold: f64,
    /// Vectors counted as moving.
    pub moving_vectors: usize,
    /// Codes used at least once over the clips.
    pub codes_used: usize,
    /// Codebook size.
    pub num_codes: usize,
    /// Perplexity of the code histogram.
    pub perplexity: f64,
}

/// End-point error and code usage of `tok` on `data` (tokenizer inputs), through the real
/// token path ([`MotionTokenizer::tokenize`] then [`MotionTokenizer::detokenize`]).
///
/// # Shapes
/// `data`: `[N, 2, T, H, W]`.
///
/// # Errors
/// Wrong shapes; tokenizer errors.
pub fn evaluate_reconstruction(
    tok: &MotionTokenizer,
    data: &Tensor,
    lavit: &LavitConfig,
    moving_threshold: f64,
    batch: usize,
) -> Result<ReconstructionReport> {
    let cfg = tok.config();
    let n = check_data(cfg, data)?;
    let k = cfg.num_codes;
    let mut usage = CodebookUsage::from_ids(&[], k)?;
    let (mut sum, mut count) = (0f64, 0usize);
    let (mut msum, mut mmag, mut mcount) = (0f64, 0f64, 0usize);
    for start in (0..n).step_by(batch.max(1)) {
        let len = batch.max(1).min(n - start);
        let x = data.narrow(0, start, len)?.to_dtype(DType::F32)?;
        let ids = tok.tokenize(&x)?;
        let flat: Vec<u32> = ids.ids().flatten_all()?.to_vec1()?;
        usage.merge(&CodebookUsage::from_ids(&flat, k)?)?;
        let xr = tok.detokenize(&ids)?;
        let g = to_grid_units(&x, lavit)?;
        let gr = to_grid_units(&xr, lavit)?;
        let err: Vec<f32> = (&gr - &g)?
            .sqr()?
            .sum(1)?
            .sqrt()?
            .flatten_all()?
            .to_vec1()?;
        let mag: Vec<f32> = g.sqr()?.sum(1)?.sqrt()?.flatten_all()?.to_vec1()?;
        for (e, m) in err.iter().zip(&mag) {
            sum += *e as f64;
            count += 1;
            if *m as f64 >= moving_threshold {
                msum += *e as f64;
                mmag += *m as f64;
                mcount += 1;
            }
        }
    }
    let total = usage.total.max(1) as f64;
    let entropy: f64 = usage
        .histogram
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total;
            -p * p.ln()
        })
        .sum();
    Ok(ReconstructionReport {
        clips: n,
        epe: sum / count.max(1) as f64,
        epe_moving: if mcount > 0 {
            msum / mcount as f64
        } else {
            0.0
        },
        moving_magnitude: if mcount > 0 {
            mmag / mcount as f64
        } else {
            0.0
        },
        moving_threshold,
        moving_vectors: mcount,
        codes_used: usage.histogram.iter().filter(|&&c| c > 0).count(),
        num_codes: k,
        perplexity: entropy.exp(),
    })
}

/// The trained variables by checkpoint key (for callers that save them another way).
pub fn named_vars(vars: &VarMap) -> Result<HashMap<String, Tensor>> {
    let d = vars
        .data()
        .lock()
        .map_err(|_| Error::invalid("var map", "lock poisoned"))?;
    Ok(d.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn tiny() -> MotionTokenizerConfig {
        MotionTokenizerConfig {
            frames: 4,
            height: 4,
            width: 6,
            hidden: 16,
            heads: 2,
            depth: 1,
            mlp_ratio: 2,
            strides: vec![[1, 2, 2], [2, 1, 1]],
            num_codes: 8,
            code_dim: 4,
            ..MotionTokenizerConfig::default()
        }
    }

    /// Clips of constant motion `(a, b)` over a random rectangle.
    fn data(n: usize, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let c = tiny();
        let (t, h, w) = (c.frames, c.height, c.width);
        let mut v = vec![0f32; n * 2 * t * h * w];
        for i in 0..n {
            let a: f32 = rng.random_range(-0.05..0.05);
            let b: f32 = rng.random_range(-0.05..0.05);
            let (r0, c0) = (rng.random_range(0..h / 2), rng.random_range(0..w / 2));
            for f in 1..t {
                for y in r0..r0 + h / 2 {
                    for x in c0..c0 + w / 2 {
                        v[(((i * 2) * t + f) * h + y) * w + x] = a;
                        v[(((i * 2 + 1) * t + f) * h + y) * w + x] = b;
                    }
                }
            }
        }
        Tensor::from_vec(v, (n, 2, t, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn training_lowers_the_loss_is_reproducible_and_saves() {
        let cfg = tiny();
        let train = MotionTrainConfig {
            steps: 30,
            batch: 4,
            lr: 3e-3,
            warmup: 3,
            kmeans_clips: 8,
            kmeans_iters: 5,
            ..MotionTrainConfig::default()
        };
        let d = data(32, 1);
        let a = train_motion_tokenizer(&cfg, &train, &d, |_| {}).unwrap();
        let b = train_motion_tokenizer(&cfg, &train, &d, |_| {}).unwrap();
        let la: Vec<f32> = a.steps.iter().map(|s| s.loss).collect();
        let lb: Vec<f32> = b.steps.iter().map(|s| s.loss).collect();
        assert_eq!(la, lb);
        let first: f32 = la[..5].iter().sum::<f32>() / 5.0;
        let last: f32 = la[25..].iter().sum::<f32>() / 5.0;
        assert!(last < first, "loss {first} -> {last}");
        // The tokenizer's own quantiser follows the EMA codebook, and the saved folder loads
        // back to the same tokens.
        let ids = a.tokenizer.tokenize(&d.narrow(0, 0, 4).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        a.tokenizer.save(dir.path()).unwrap();
        let (back, report) =
            MotionTokenizer::from_pretrained(dir.path(), DType::F32, &Device::Cpu).unwrap();
        assert!(report.is_clean());
        let ids2 = back.tokenize(&d.narrow(0, 0, 4).unwrap()).unwrap();
        assert_eq!(
            ids.ids().flatten_all().unwrap().to_vec1::<u32>().unwrap(),
            ids2.ids().flatten_all().unwrap().to_vec1::<u32>().unwrap()
        );
        let cb = named_vars(&a.vars).unwrap()[CODEBOOK].clone();
        let diff = (cb - back.quantizer().codebook())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
        let rep = evaluate_reconstruction(&back, &d, &LavitConfig::default(), 0.01, 8).unwrap();
        assert_eq!(rep.clips, 32);
        assert!(rep.epe.is_finite() && rep.codes_used >= 1 && rep.codes_used <= 8);
        assert!(rep.perplexity >= 1.0);
    }

    #[test]
    fn autoencoder_warmup_runs_before_the_quantiser() {
        let cfg = tiny();
        let train = MotionTrainConfig {
            steps: 12,
            batch: 4,
            warmup: 2,
            kmeans_clips: 8,
            kmeans_iters: 3,
            ae_warmup: 6,
            ..MotionTrainConfig::default()
        };
        let d = data(16, 2);
        let r = train_motion_tokenizer(&cfg, &train, &d, |_| {}).unwrap();
        assert_eq!(r.steps.len(), 12);
        for s in &r.steps[..6] {
            assert_eq!((s.codes_used, s.commitment), (0, 0.0), "step {}", s.step);
        }
        for s in &r.steps[6..] {
            assert!(s.codes_used > 0, "step {}", s.step);
        }
        // The codebook seeded after the warm-up is the tokenizer's.
        let ids = r.tokenizer.tokenize(&d.narrow(0, 0, 2).unwrap()).unwrap();
        assert_eq!(
            r.tokenizer.detokenize(&ids).unwrap().dims(),
            &[2, 2, 4, 4, 6][..]
        );
    }

    #[test]
    fn stage_depths_leave_a_stage_without_blocks() {
        let cfg = MotionTokenizerConfig {
            stage_depths: vec![0, 1],
            ..tiny()
        };
        let tok = MotionTokenizer::random(&cfg, 0, &Device::Cpu).unwrap();
        let keys: Vec<&str> = tok
            .named_tensors()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert!(!keys.iter().any(|k| k.contains("stages.0.blocks")));
        assert!(keys
            .iter()
            .any(|k| k.starts_with("encoder.stages.1.blocks.0")));
        assert!(keys
            .iter()
            .any(|k| k.starts_with("decoder.stages.1.blocks.0")));
        let d = data(2, 0);
        let ids = tok.tokenize(&d).unwrap();
        assert_eq!(tok.detokenize(&ids).unwrap().dims(), d.dims());
        let bad = MotionTokenizerConfig {
            stage_depths: vec![1],
            ..tiny()
        };
        assert!(MotionTokenizer::random(&bad, 0, &Device::Cpu).is_err());
    }

    #[test]
    fn grid_units_undo_the_normalisation() {
        let l = LavitConfig::default();
        // 1 px/frame to the right in a 72-px-wide frame: normalised 1/72/std, ÷ 10.
        let v = 1.0 / 72.0 / l.std[0] / 10.0;
        let x = Tensor::from_vec(vec![v, 0.0], (1, 2, 1, 1, 1), &Device::Cpu).unwrap();
        let g: Vec<f32> = to_grid_units(&x, &l)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((g[0] - 0.5).abs() < 1e-5, "{g:?}"); // 36 cells over 72 px
        assert_eq!(g[1], 0.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        let cfg = tiny();
        let t = MotionTrainConfig::default();
        let bad = Tensor::zeros((2, 2, 3, 4, 6), DType::F32, &Device::Cpu).unwrap();
        assert!(train_motion_tokenizer(&cfg, &t, &bad, |_| {}).is_err());
        let zero = MotionTrainConfig {
            batch: 0,
            ..MotionTrainConfig::default()
        };
        assert!(train_motion_tokenizer(&cfg, &zero, &data(4, 0), |_| {}).is_err());
        let few = MotionTrainConfig {
            kmeans_clips: 1,
            ..MotionTrainConfig::default()
        };
        // 1 clip gives 1·2·2·3 = 12 vectors ≥ 8 codes: fine; a bigger codebook is refused.
        let big = MotionTokenizerConfig {
            num_codes: 64,
            ..tiny()
        };
        assert!(train_motion_tokenizer(&big, &few, &data(4, 0), |_| {}).is_err());
    }
}
