//! Training objectives over any raw network (a [`Network`]: `F(x_in, c_noise, cond)`), with
//! conditioning dropout for classifier-free guidance.
//!
//! - [`EdmObjective`]: `ln σ ~ N(P_mean, P_std²)`, `x = x₀ + σ·n`, the preconditioned
//!   denoiser `D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise)` of `samplers`
//!   ([`vidgen_samplers::SvdPrecond`] for SVD / AID, [`vidgen_samplers::EdmPrecond`] for
//!   Karras' EDM), loss `mean(λ(σ)·(D − x₀)²)` with `λ(σ) = (σ² + σ_d²)/(σ·σ_d)²`.
//! - [`DiscreteObjective`]: `t ~ U{0, …, T−1}`, `x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε`, the network
//!   sees `x_t` and `t` and regresses ε, `v` or x₀ (`mean((F − target)²)`), as diffusers'
//!   training scripts for SD, InstructPix2Pix, AnimateDiff and the inflated UNets do.
//! - [`CondDropout`]: per sample, the text conditions and the frame conditions are replaced
//!   by their null values (zeros, or a given null context), independently or with
//!   InstructPix2Pix's joint scheme.
//!
//! Random draws happen in a fixed order per micro-batch (dropout uniforms, then σ or t, then
//! the noise), from the caller's generator, so a run is reproducible from its seed.

use crate::data::BatchShard;
use candle_core::{DType, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use vidgen_samplers::training::{add_noise, training_target};
use vidgen_samplers::{
    BetaSchedule, EdmPrecond, EdmTraining, Network, PredictionType, SvdPrecond, VpSchedule,
};
use vidgen_video_core::{Conditioning, Error, Result};

/// A `&dyn Network` as a sized [`Network`] (samplers' wrappers take one by value).
struct NetRef<'a>(&'a dyn Network);

impl Network for NetRef<'_> {
    fn forward(&self, x_in: &Tensor, c_noise: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        self.0.forward(x_in, c_noise, cond)
    }
}

/// The preconditioning of an [`EdmObjective`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdmPreconditioning {
    /// Stable Video Diffusion's v-parameterisation on the VP σ scale
    /// ([`vidgen_samplers::SvdPrecond`]: `c_in = 1/√(σ²+1)`, `c_skip = 1/(σ²+1)`,
    /// `c_out = −σ/√(σ²+1)`, `c_noise = ¼ ln σ`); it is EDM's with `σ_d = 1` and the output
    /// negated, so use `sigma_data = 1` with it.
    #[default]
    Svd,
    /// Karras et al.'s EDM ([`vidgen_samplers::EdmPrecond`], ε-signed output).
    Edm,
}

/// The EDM training objective.
///
/// Defaults are SVD's fine-tuning recipe (`P_mean = 0.7`, `P_std = 1.6`, `σ_d = 1`, SVD
/// preconditioning): SVD shifts the noise distribution towards high σ for video, and its
/// denoiser (`VScalingWithEDMcNoise` in Stability's `sgm`) is EDM's with `σ_d = 1`, so
/// `λ(σ) = (σ² + 1)/σ²` (the community SVD fine-tuning scripts, e.g. SVD_Xtend's
/// `train_svd.py`, use exactly these). [`EdmObjective::karras`] gives the EDM paper's image
/// defaults (`−1.2`, `1.2`, `σ_d = 0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdmObjective {
    /// Mean of ln σ.
    pub p_mean: f64,
    /// Standard deviation of ln σ.
    pub p_std: f64,
    /// σ_d of the loss weight (and of [`EdmPreconditioning::Edm`]).
    pub sigma_data: f64,
    /// The preconditioning.
    pub precond: EdmPreconditioning,
}

impl Default for EdmObjective {
    fn default() -> Self {
        Self::svd()
    }
}

impl EdmObjective {
    /// SVD / AID: `P_mean = 0.7`, `P_std = 1.6`, `σ_d = 1`, SVD preconditioning.
    pub fn svd() -> Self {
        Self {
            p_mean: 0.7,
            p_std: 1.6,
            sigma_data: 1.0,
            precond: EdmPreconditioning::Svd,
        }
    }

    /// The EDM paper's defaults: `P_mean = −1.2`, `P_std = 1.2`, `σ_d = 0.5`, EDM
    /// preconditioning.
    pub fn karras() -> Self {
        Self {
            p_mean: -1.2,
            p_std: 1.2,
            sigma_data: 0.5,
            precond: EdmPreconditioning::Edm,
        }
    }

    fn training(&self) -> EdmTraining {
        EdmTraining {
            p_mean: self.p_mean,
            p_std: self.p_std,
            sigma_data: self.sigma_data,
        }
    }

    /// `λ(σ) = (σ² + σ_d²)/(σ·σ_d)²`.
    pub fn loss_weight(&self, sigma: f64) -> f64 {
        self.training().loss_weight(sigma)
    }

    fn validate(&self) -> Result<()> {
        if !(self.p_std > 0.0 && self.p_std.is_finite() && self.p_mean.is_finite()) {
            return Err(Error::config(
                "p_std",
                format!(
                    "P_mean {} / P_std {}: P_std must be > 0",
                    self.p_mean, self.p_std
                ),
            ));
        }
        if !(self.sigma_data > 0.0 && self.sigma_data.is_finite()) {
            return Err(Error::config(
                "sigma_data",
                format!("{} must be > 0", self.sigma_data),
            ));
        }
        Ok(())
    }
}

/// ε / v / x₀ prediction over discrete VP timesteps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscreteObjective {
    /// The β schedule (diffusers' `beta_schedule`).
    #[serde(with = "beta_schedule_name")]
    pub beta_schedule: BetaSchedule,
    /// First β.
    pub beta_start: f64,
    /// Last β.
    pub beta_end: f64,
    /// Training steps `T`.
    pub num_train_timesteps: usize,
    /// Rescale to zero terminal SNR.
    pub rescale_zero_snr: bool,
    /// What the network predicts.
    #[serde(with = "prediction_name")]
    pub prediction: PredictionType,
}

mod beta_schedule_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use vidgen_samplers::BetaSchedule;

    pub fn serialize<S: Serializer>(b: &BetaSchedule, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(b.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BetaSchedule, D::Error> {
        BetaSchedule::deserialize(d)
    }
}

mod prediction_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use vidgen_samplers::PredictionType;

    pub fn serialize<S: Serializer>(p: &PredictionType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match p {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
            PredictionType::Sample => "sample",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PredictionType, D::Error> {
        PredictionType::deserialize(d)
    }
}

impl Default for DiscreteObjective {
    fn default() -> Self {
        Self::stable_diffusion()
    }
}

impl DiscreteObjective {
    /// Stable Diffusion 1.x (VIDiff, InstructPix2Pix, ModelScope's UNet3D): `scaled_linear`
    /// 0.00085 → 0.012 over 1000 steps, ε-prediction.
    pub fn stable_diffusion() -> Self {
        Self {
            beta_schedule: BetaSchedule::ScaledLinear,
            beta_start: 0.00085,
            beta_end: 0.012,
            num_train_timesteps: 1000,
            rescale_zero_snr: false,
            prediction: PredictionType::Epsilon,
        }
    }

    /// AnimateDiff's motion-module training: `linear` 0.00085 → 0.012 over 1000 steps,
    /// ε-prediction.
    pub fn animatediff() -> Self {
        Self {
            beta_schedule: BetaSchedule::Linear,
            ..Self::stable_diffusion()
        }
    }

    /// The VP schedule.
    ///
    /// # Errors
    /// As [`VpSchedule::new`].
    pub fn schedule(&self) -> Result<VpSchedule> {
        VpSchedule::new(
            self.beta_schedule,
            self.beta_start,
            self.beta_end,
            self.num_train_timesteps,
            self.rescale_zero_snr,
        )
    }
}

/// What a run optimises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Objective {
    /// Continuous σ, EDM weighting (SVD, AID).
    Edm(EdmObjective),
    /// Discrete timesteps (SD-based UNets).
    Discrete(DiscreteObjective),
}

/// A part of a [`Conditioning`] that dropout can null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CondField {
    /// `cond.context` (cross-attention tokens).
    Context,
    /// `cond.concat` (channel-concatenated latents).
    Concat,
    /// `cond.added[name]`.
    Added(String),
    /// `cond.extra[name]`.
    Extra(String),
}

/// How text and frame dropout are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropoutScheme {
    /// Two independent draws: text dropped with probability `text`, frames with `frames`.
    #[default]
    Independent,
    /// InstructPix2Pix's `train_instruct_pix2pix.py` with `q = text`: one uniform `p` per
    /// sample; text dropped when `p < 2q`, frames when `q ≤ p < 3q` (so text alone, both, and
    /// frames alone each with probability `q`). `frames` is ignored.
    InstructPix2Pix,
}

/// Conditioning dropout for classifier-free guidance (InstructPix2Pix §3.2.1; AID and VIDiff
/// train the same way): per sample, the **text** conditions (the instruction / prompt
/// context) and the **frame** conditions (the channel-concatenated source or initial-frame
/// latents) are replaced by their null values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CondDropout {
    /// Probability of dropping the text conditions.
    pub text: f64,
    /// Probability of dropping the frame conditions.
    pub frames: f64,
    /// How the two are drawn.
    pub scheme: DropoutScheme,
    /// The fields that are "text" (default: `context`).
    pub text_fields: Vec<CondField>,
    /// The fields that are "frames" (default: `concat`).
    pub frame_fields: Vec<CondField>,
}

impl Default for CondDropout {
    fn default() -> Self {
        Self {
            text: 0.0,
            frames: 0.0,
            scheme: DropoutScheme::Independent,
            text_fields: vec![CondField::Context],
            frame_fields: vec![CondField::Concat],
        }
    }
}

impl CondDropout {
    /// No dropout.
    pub fn none() -> Self {
        Self::default()
    }

    /// Independent dropout of text (`context`) and frames (`concat`).
    pub fn independent(text: f64, frames: f64) -> Self {
        Self {
            text,
            frames,
            ..Self::default()
        }
    }

    /// Whether anything can be dropped.
    pub fn is_active(&self) -> bool {
        self.text > 0.0 || (self.frames > 0.0 && self.scheme == DropoutScheme::Independent)
    }

    fn validate(&self) -> Result<()> {
        for (name, p) in [("dropout.text", self.text), ("dropout.frames", self.frames)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::config(name, format!("{p} is not a probability")));
            }
        }
        if self.scheme == DropoutScheme::InstructPix2Pix && self.text > 1.0 / 3.0 {
            return Err(Error::config(
                "dropout.text",
                format!("{}: InstructPix2Pix's scheme needs q ≤ 1/3", self.text),
            ));
        }
        Ok(())
    }

    /// Draws the per-sample masks (`true` = dropped) for a batch of `b`: `(text, frames)`.
    pub fn draw<R: Rng + ?Sized>(&self, b: usize, rng: &mut R) -> (Vec<bool>, Vec<bool>) {
        if !self.is_active() {
            return (vec![false; b], vec![false; b]);
        }
        match self.scheme {
            DropoutScheme::Independent => {
                let u: Vec<(f64, f64)> = (0..b).map(|_| (rng.random(), rng.random())).collect();
                (
                    u.iter().map(|(a, _)| *a < self.text).collect(),
                    u.iter().map(|(_, f)| *f < self.frames).collect(),
                )
            }
            DropoutScheme::InstructPix2Pix => {
                let q = self.text;
                let p: Vec<f64> = (0..b).map(|_| rng.random()).collect();
                (
                    p.iter().map(|p| *p < 2.0 * q).collect(),
                    p.iter().map(|p| *p >= q && *p < 3.0 * q).collect(),
                )
            }
        }
    }

    /// `cond` with the dropped samples' fields nulled: multiplied by 0, or, for the context
    /// when `null_context` is given (`[1, L, D]` or `[B, L, D]`, e.g. the empty prompt's
    /// embedding), replaced by it.
    ///
    /// # Errors
    /// A field without a batch dim of `b`.
    pub fn apply(
        &self,
        cond: &Conditioning,
        text: &[bool],
        frames: &[bool],
        null_context: Option<&Tensor>,
    ) -> Result<Conditioning> {
        let mut out = cond.clone();
        for (fields, mask) in [(&self.text_fields, text), (&self.frame_fields, frames)] {
            if !mask.iter().any(|d| *d) {
                continue;
            }
            for f in fields {
                let slot: Option<&mut Tensor> = match f {
                    CondField::Context => out.context.as_mut(),
                    CondField::Concat => out.concat.as_mut(),
                    CondField::Added(k) => out.added.get_mut(k),
                    CondField::Extra(k) => out.extra.get_mut(k),
                };
                if let Some(t) = slot {
                    let null = match f {
                        CondField::Context => null_context,
                        _ => None,
                    };
                    *t = null_rows(t, mask, null)?;
                }
            }
        }
        Ok(out)
    }
}

/// Rows of `t` (batch dim 0) where `mask` is set, replaced by `null` (broadcast) or zeros.
fn null_rows(t: &Tensor, mask: &[bool], null: Option<&Tensor>) -> Result<Tensor> {
    let b = t.dims().first().copied().unwrap_or(0);
    if b != mask.len() {
        return Err(Error::shape("dropped condition", &[mask.len()], t.dims()));
    }
    let mut shape = vec![1usize; t.rank()];
    shape[0] = b;
    let keep: Vec<f32> = mask.iter().map(|d| if *d { 0.0 } else { 1.0 }).collect();
    let keep = Tensor::from_vec(keep, shape, t.device())?.to_dtype(t.dtype())?;
    let kept = t.broadcast_mul(&keep)?;
    Ok(match null {
        Some(n) => {
            let drop = (1.0 - &keep)?;
            let n = n.to_dtype(t.dtype())?.broadcast_as(t.shape())?;
            (kept + n.broadcast_mul(&drop)?)?
        }
        None => kept,
    })
}

/// One micro-batch's loss and what was drawn for it.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The scalar loss (f32, differentiable).
    pub loss: Tensor,
    /// Per sample, σ (EDM) or the timestep `t` (discrete).
    pub noise_levels: Vec<f32>,
    /// Per sample, whether the text conditions were dropped.
    pub text_dropped: Vec<bool>,
    /// Per sample, whether the frame conditions were dropped.
    pub frames_dropped: Vec<bool>,
}

/// An [`Objective`] with its schedule built and validated, ready to compute losses.
#[derive(Debug, Clone)]
pub struct Loss {
    objective: Objective,
    dropout: CondDropout,
    schedule: Option<VpSchedule>,
    null_context: Option<Tensor>,
}

impl Loss {
    /// Builds the objective (validates it and its dropout).
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming a bad field.
    pub fn new(objective: Objective, dropout: CondDropout) -> Result<Self> {
        dropout.validate()?;
        let schedule = match &objective {
            Objective::Edm(e) => {
                e.validate()?;
                None
            }
            Objective::Discrete(d) => {
                if d.num_train_timesteps == 0 {
                    return Err(Error::config("num_train_timesteps", "must be >= 1"));
                }
                Some(d.schedule()?)
            }
        };
        Ok(Self {
            objective,
            dropout,
            schedule,
            null_context: None,
        })
    }

    /// Uses `null` (`[1, L, D]` or `[B, L, D]`) instead of zeros for a dropped context.
    pub fn with_null_context(mut self, null: Option<Tensor>) -> Self {
        self.null_context = null;
        self
    }

    /// The objective.
    pub fn objective(&self) -> &Objective {
        &self.objective
    }

    /// The dropout.
    pub fn dropout(&self) -> &CondDropout {
        &self.dropout
    }

    /// The loss of `net` on clean samples `x0` with conditioning `cond`, drawing the dropout,
    /// the noise level and the noise from `rng` (in that order).
    ///
    /// # Shapes
    /// `x0 [B, C, T, H, W]` (or any `[B, …]` the network takes); `cond`'s tensors batch-first.
    ///
    /// # Errors
    /// Network errors; shape mismatches; [`Error::NonFinite`] for a NaN / infinite loss.
    pub fn compute<R: Rng + ?Sized>(
        &self,
        net: &dyn Network,
        x0: &Tensor,
        cond: &Conditioning,
        rng: &mut R,
    ) -> Result<LossOutput> {
        let b = batch_of(x0)?;
        self.compute_shard(net, x0, cond, rng, BatchShard::whole(b))
    }

    /// [`Loss::compute`] with a per-element weight on the squared error (`None`: 1
    /// everywhere), for region-weighted losses: e.g. a moving object's latents up-weighted
    /// against a background the network merely copies. The draws are those of
    /// [`Loss::compute`], so a weight of ones gives the same loss.
    ///
    /// # Shapes
    /// As [`Loss::compute`]; `weight` broadcastable to `x0` (e.g. `[B, 1, T, h, w]`).
    ///
    /// # Errors
    /// As [`Loss::compute`]; a weight that does not broadcast to `x0`.
    pub fn compute_weighted<R: Rng + ?Sized>(
        &self,
        net: &dyn Network,
        x0: &Tensor,
        cond: &Conditioning,
        rng: &mut R,
        weight: Option<&Tensor>,
    ) -> Result<LossOutput> {
        let b = batch_of(x0)?;
        self.compute_shard_weighted(net, x0, cond, rng, BatchShard::whole(b), weight)
    }

    /// [`Loss::compute`] on one rank's rows of a global batch (data-parallel training): every
    /// per-sample draw (dropout, σ or t, noise) is made for the `shard.global` rows, in the
    /// order one process would make them, and this rank keeps its rows. The loss is the mean
    /// over this rank's rows, so the mean of the ranks' gradients is the global batch's.
    ///
    /// # Shapes
    /// As [`Loss::compute`], with `B = shard.len`.
    ///
    /// # Errors
    /// As [`Loss::compute`]; `x0`'s batch is not `shard.len`.
    pub fn compute_shard<R: Rng + ?Sized>(
        &self,
        net: &dyn Network,
        x0: &Tensor,
        cond: &Conditioning,
        rng: &mut R,
        shard: BatchShard,
    ) -> Result<LossOutput> {
        self.compute_shard_weighted(net, x0, cond, rng, shard, None)
    }

    /// [`Loss::compute_shard`] with [`Loss::compute_weighted`]'s per-element weight (this
    /// rank's rows).
    ///
    /// # Errors
    /// As [`Loss::compute_shard`]; a weight that does not broadcast to `x0`.
    pub fn compute_shard_weighted<R: Rng + ?Sized>(
        &self,
        net: &dyn Network,
        x0: &Tensor,
        cond: &Conditioning,
        rng: &mut R,
        shard: BatchShard,
        weight: Option<&Tensor>,
    ) -> Result<LossOutput> {
        let b = batch_of(x0)?;
        if b != shard.len || shard.offset + shard.len > shard.global {
            return Err(Error::invalid(
                "x0",
                format!(
                    "a batch of {b} for rows {}..{} of a global batch of {}",
                    shard.offset,
                    shard.offset + shard.len,
                    shard.global
                ),
            ));
        }
        let (text, frames) = {
            let (t, f) = self.dropout.draw(shard.global, rng);
            let r = shard.offset..shard.offset + shard.len;
            (t[r.clone()].to_vec(), f[r].to_vec())
        };
        let cond = if text.iter().chain(&frames).any(|d| *d) {
            self.dropout
                .apply(cond, &text, &frames, self.null_context.as_ref())?
        } else {
            cond.clone()
        };
        let x0 = x0.to_dtype(DType::F32)?;
        let (loss, levels) = match (&self.objective, &self.schedule) {
            (Objective::Edm(e), _) => {
                let tr = e.training();
                let sig: Vec<f32> = shard.draw(1, || {
                    let n: f64 = rng.sample(StandardNormal);
                    (e.p_mean + e.p_std * n).exp() as f32
                });
                let sigmas = Tensor::from_vec(sig.clone(), b, x0.device())?;
                let noise = randn_rows(rng, &x0, shard)?;
                let loss = match e.precond {
                    EdmPreconditioning::Svd => tr.loss_weighted(
                        &SvdPrecond::new(NetRef(net)),
                        &x0,
                        &cond,
                        &sigmas,
                        &noise,
                        weight,
                    )?,
                    EdmPreconditioning::Edm => tr.loss_weighted(
                        &EdmPrecond::new(NetRef(net), e.sigma_data),
                        &x0,
                        &cond,
                        &sigmas,
                        &noise,
                        weight,
                    )?,
                };
                (loss, sig)
            }
            (Objective::Discrete(d), Some(sched)) => {
                let n = d.num_train_timesteps;
                let ts: Vec<usize> = shard.draw(1, || rng.random_range(0..n));
                let noise = randn_rows(rng, &x0, shard)?;
                let x_t = add_noise(sched, &x0, &noise, &ts)?;
                let tt: Vec<f32> = ts.iter().map(|t| *t as f32).collect();
                let t_tensor = Tensor::from_vec(tt.clone(), b, x0.device())?;
                let pred = net.forward(&x_t, &t_tensor, &cond)?;
                if pred.dims() != x0.dims() {
                    return Err(Error::shape("network output", x0.dims(), pred.dims()));
                }
                let target = training_target(d.prediction, sched, &x0, &noise, &ts)?;
                let err = pred.to_dtype(DType::F32)?.sub(&target)?.sqr()?;
                let loss = vidgen_samplers::training::weighted(err, weight)?.mean_all()?;
                (loss, tt)
            }
            (Objective::Discrete(_), None) => {
                return Err(Error::invalid("objective", "discrete schedule not built"))
            }
        };
        let v = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if !v.is_finite() {
            return Err(Error::NonFinite {
                location: "training loss".into(),
                nan: usize::from(v.is_nan()),
                inf: usize::from(v.is_infinite()),
                total: 1,
            });
        }
        Ok(LossOutput {
            loss,
            noise_levels: levels,
            text_dropped: text,
            frames_dropped: frames,
        })
    }
}

/// The batch size of `x0` (its first dim).
fn batch_of(x0: &Tensor) -> Result<usize> {
    x0.dims()
        .first()
        .copied()
        .ok_or_else(|| Error::invalid("x0", "a scalar has no batch"))
}

/// Standard normal noise shaped like `x` (f32), drawn from `rng`.
pub(crate) fn randn_like<R: Rng + ?Sized>(rng: &mut R, x: &Tensor) -> Result<Tensor> {
    let v: Vec<f32> = (0..x.elem_count())
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Ok(Tensor::from_vec(v, x.dims(), x.device())?)
}

/// Standard normal noise shaped like `x` (`[B, …]` with `B = shard.len`, f32): the rows
/// `shard` takes of noise drawn for all `shard.global` rows.
pub(crate) fn randn_rows<R: Rng + ?Sized>(
    rng: &mut R,
    x: &Tensor,
    shard: BatchShard,
) -> Result<Tensor> {
    if shard.is_whole() {
        return randn_like(rng, x);
    }
    let per_row = x.dims()[1..].iter().product::<usize>();
    let v = shard.draw(per_row, || rng.sample::<f32, _>(StandardNormal));
    Ok(Tensor::from_vec(v, x.dims(), x.device())?)
}

/// Names of the objectives, for messages.
pub(crate) fn describe(o: &Objective) -> String {
    match o {
        Objective::Edm(e) => format!(
            "EDM ({:?} preconditioning, ln σ ~ N({}, {}²), σ_d = {})",
            e.precond, e.p_mean, e.p_std, e.sigma_data
        ),
        Objective::Discrete(d) => format!(
            "{:?} over {} discrete steps ({})",
            d.prediction,
            d.num_train_timesteps,
            d.beta_schedule.name()
        ),
    }
}
