//! What the diffusers schedulers share, written once: config parsing and validation, the
//! training β / `ᾱ` tables, the timestep spacing of the discrete-timestep schedulers (DDIM, DDPM),
//! the σ schedule of the discrete σ schedulers (Euler, Heun), and x₀ clipping / dynamic
//! thresholding.

use candle_core::{DType, Tensor};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use vidgen_video_core::{Error, Result};

use super::SchedulerOutput;
use crate::schedule::{
    interp_index, karras_from_ramp, np_linspace, rescale_betas_zero_snr, sigma_to_t,
    sigmas_from_alphas_cumprod, spaced_timesteps, torch_linspace_f32, BetaSchedule,
    TimestepSpacing, VpSchedule,
};
use crate::util::{div, f32_of, mul};

/// The largest `num_train_timesteps` a config may ask for. The training tables are built
/// eagerly (three `f32` per step), so an absurd count would be an allocation failure instead of
/// an error; published models train on 1000 steps.
pub const MAX_TRAIN_TIMESTEPS: usize = 1 << 20;

pub(super) fn check_same(a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(Error::shape("model_output", b.dims(), a.dims()));
    }
    Ok(())
}

/// Deserialises a config struct from JSON, naming the failing field's path.
pub(super) fn parse<T: DeserializeOwned>(v: &serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        Error::config(
            if field == "." {
                "<root>".to_string()
            } else {
                field
            },
            e.inner().to_string(),
        )
    })
}

// serde defaults: diffusers' `__init__` defaults.
pub(super) fn default_1000() -> usize {
    1000
}
pub(super) fn default_beta_start() -> f64 {
    0.0001
}
pub(super) fn default_beta_end() -> f64 {
    0.02
}
pub(super) fn default_linear() -> BetaSchedule {
    BetaSchedule::Linear
}
pub(super) fn default_true() -> bool {
    true
}
pub(super) fn default_one() -> f64 {
    1.0
}
pub(super) fn default_ratio() -> f64 {
    0.995
}
pub(super) fn default_rho() -> f64 {
    7.0
}
pub(super) fn default_linspace() -> TimestepSpacing {
    TimestepSpacing::Linspace
}
pub(super) fn default_leading() -> TimestepSpacing {
    TimestepSpacing::Leading
}

/// `value` must be a finite number > 0.
pub(super) fn positive_finite(field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("{value} must be a finite number > 0"),
        ))
    }
}

/// `sigma_min < sigma_max` (each already checked positive and finite).
pub(super) fn sigma_range(sigma_min: f64, sigma_max: f64) -> Result<()> {
    if sigma_min < sigma_max {
        Ok(())
    } else {
        Err(Error::config(
            "sigma_min",
            format!("need sigma_min < sigma_max, got {sigma_min} and {sigma_max}"),
        ))
    }
}

/// `dynamic_thresholding_ratio` is a quantile (`torch.quantile` refuses q outside `[0, 1]`);
/// `sample_max_value` bounds the threshold and divides the sample, so it must be > 0 (torch
/// clamps the threshold to it even below 1, and so does [`threshold_sample`]).
pub(super) fn validate_thresholding(ratio: f64, sample_max_value: f64) -> Result<()> {
    check_threshold_args(ratio, sample_max_value)
        .map_err(|(field, reason)| Error::config(field, reason))
}

/// `clip_sample_range` must be > 0 (it is the bound of `clamp(x₀, −r, r)`).
pub(super) fn validate_clip_range(range: f64) -> Result<()> {
    if range > 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            "clip_sample_range",
            format!("{range} must be > 0"),
        ))
    }
}

fn check_threshold_args(
    ratio: f64,
    max_value: f64,
) -> std::result::Result<(), (&'static str, String)> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err((
            "dynamic_thresholding_ratio",
            format!("{ratio} is not a quantile in [0, 1]"),
        ));
    }
    // NaN fails the comparison too.
    if max_value.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(("sample_max_value", format!("{max_value} must be > 0")));
    }
    Ok(())
}

/// The training-schedule fields every VP scheduler config has (built by [`train_fields!`]).
pub(super) struct TrainFields<'a> {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<&'a [f64]>,
    pub rescale_betas_zero_snr: bool,
}

/// `TrainFields` of a config struct with diffusers' field names; the second argument is
/// `rescale_betas_zero_snr` (a field or `false` for configs without one).
macro_rules! train_fields {
    ($c:expr, $zero_snr:expr) => {
        $crate::diffusers::common::TrainFields {
            num_train_timesteps: $c.num_train_timesteps,
            beta_start: $c.beta_start,
            beta_end: $c.beta_end,
            beta_schedule: $c.beta_schedule,
            trained_betas: $c.trained_betas.as_deref(),
            rescale_betas_zero_snr: $zero_snr,
        }
    };
}
pub(super) use train_fields;

impl TrainFields<'_> {
    /// `num_train_timesteps` in `1..=`[`MAX_TRAIN_TIMESTEPS`]; `trained_betas`, when given, one
    /// β in `[0, 1]` per training step (then `beta_start` / `beta_end` / `beta_schedule` are
    /// unused, as in diffusers); otherwise `beta_start` / `beta_end` in `[0, 1)` for the
    /// schedules that read them.
    pub fn validate(&self) -> Result<()> {
        let n = self.num_train_timesteps;
        if !(1..=MAX_TRAIN_TIMESTEPS).contains(&n) {
            return Err(Error::config(
                "num_train_timesteps",
                format!("{n} is not in 1..={MAX_TRAIN_TIMESTEPS}"),
            ));
        }
        match self.trained_betas {
            Some(b) => {
                if b.len() != n {
                    return Err(Error::config(
                        "trained_betas",
                        format!("{} values for num_train_timesteps = {n}", b.len()),
                    ));
                }
                if let Some((i, v)) = b
                    .iter()
                    .enumerate()
                    .find(|(_, v)| !(0.0..=1.0).contains(*v))
                {
                    return Err(Error::config(
                        format!("trained_betas[{i}]"),
                        format!("{v} is not a β in [0, 1]"),
                    ));
                }
            }
            None if self.beta_schedule != BetaSchedule::SquaredcosCapV2 => {
                for (field, b) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
                    if !(0.0..1.0).contains(&b) {
                        return Err(Error::config(field, format!("{b} is not in [0, 1)")));
                    }
                }
            }
            None => {}
        }
        Ok(())
    }

    /// The training β / `ᾱ` tables: `trained_betas` when given, else the named schedule
    /// (optionally rescaled to zero terminal SNR).
    pub fn build(&self) -> Result<VpSchedule> {
        match self.trained_betas {
            Some(b) => {
                let mut b: Vec<f32> = b.iter().map(|v| *v as f32).collect();
                if b.is_empty() {
                    return Err(Error::config("trained_betas", "an empty β table"));
                }
                if self.rescale_betas_zero_snr {
                    b = rescale_betas_zero_snr(&b);
                }
                Ok(VpSchedule::from_betas(b))
            }
            None => VpSchedule::new(
                self.beta_schedule,
                self.beta_start,
                self.beta_end,
                self.num_train_timesteps,
                self.rescale_betas_zero_snr,
            )
            .map_err(|e| match e {
                Error::InvalidArgument { name, reason } => Error::config(name, reason),
                other => other,
            }),
        }
    }
}

/// The inference timesteps of the discrete-timestep schedulers (DDIM, DDPM): the spacing, with
/// `linspace` rounded half to even as diffusers' `.round()`, checked to stay in the table.
pub(super) fn discrete_timesteps(
    spacing: TimestepSpacing,
    n: usize,
    train_steps: usize,
    steps_offset: usize,
) -> Result<Vec<f64>> {
    let ts = spaced_timesteps(spacing, n, train_steps, steps_offset)?;
    let ts: Vec<f64> = match spacing {
        TimestepSpacing::Linspace => ts.into_iter().map(f64::round_ties_even).collect(),
        _ => ts,
    };
    if ts.iter().any(|t| *t < 0.0 || *t >= train_steps as f64) {
        return Err(Error::config(
            "steps_offset",
            format!("timesteps {ts:?} leave the {train_steps} training steps"),
        ));
    }
    Ok(ts)
}

/// The σ (or log-σ) interpolation of [`super::EulerDiscreteConfig::interpolation_type`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterpolationType {
    /// `np.interp` of σ over t.
    #[default]
    Linear,
    /// Log-uniform σ from σ_max to σ_min (N+1 values, as diffusers).
    LogLinear,
}

/// The last σ of the inference schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmas {
    /// 0: the last step fully denoises.
    #[default]
    Zero,
    /// The smallest training σ.
    SigmaMin,
}

/// The σ-spacing option shared by Euler and Heun (`use_karras_sigmas` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SigmaSpacing {
    Interp,
    Karras,
    Exponential,
}

pub(super) fn sigma_spacing(karras: bool, exponential: bool, beta: bool) -> Result<SigmaSpacing> {
    if beta {
        return Err(Error::Unsupported {
            field: "use_beta_sigmas".into(),
            value: "true".into(),
            supported: "use_karras_sigmas, use_exponential_sigmas, or neither".into(),
        });
    }
    match (karras, exponential) {
        (true, true) => Err(Error::config(
            "use_karras_sigmas",
            "only one of use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas may be set",
        )),
        (true, false) => Ok(SigmaSpacing::Karras),
        (false, true) => Ok(SigmaSpacing::Exponential),
        _ => Ok(SigmaSpacing::Interp),
    }
}

/// The σ-spacing options of a discrete σ scheduler's `set_timesteps`.
pub(super) struct SigmaOptions {
    pub spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub interpolation: InterpolationType,
    pub sigma_spacing: SigmaSpacing,
    /// Ends of a Karras / exponential schedule; `None` takes the interpolated end.
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub rho: f64,
}

/// A discrete σ scheduler's schedule before its final σ: the network timesteps (training-step
/// units, f64) and σ per call, and the training σ table (float32, ascending in t).
pub(super) struct SigmaSchedule {
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f64>,
    pub train_sigmas: Vec<f32>,
}

/// The shared part of `EulerDiscreteScheduler` / `HeunDiscreteScheduler.set_timesteps`: spaced
/// timesteps (float32, as diffusers' `.astype(np.float32)`), σ interpolated from the training
/// table, then optionally respaced (Karras / exponential) with timesteps recovered by
/// `_sigma_to_t`.
pub(super) fn sigma_schedule(
    schedule: &VpSchedule,
    n: usize,
    o: &SigmaOptions,
) -> Result<SigmaSchedule> {
    let nt = schedule.len();
    let ts: Vec<f32> = spaced_timesteps(o.spacing, n, nt, o.steps_offset)?
        .into_iter()
        .map(|t| t as f32)
        .collect();
    let table = sigmas_from_alphas_cumprod(&schedule.alphas_cumprod);
    let (Some(&first), Some(&last)) = (table.first(), table.last()) else {
        return Err(Error::config(
            "num_train_timesteps",
            "an empty training table",
        ));
    };
    let mut sig: Vec<f64> = match o.interpolation {
        InterpolationType::Linear => ts.iter().map(|t| interp_index(*t as f64, &table)).collect(),
        InterpolationType::LogLinear => torch_linspace_f32(last.ln(), first.ln(), n + 1)
            .into_iter()
            .map(|l| l.exp() as f64)
            .collect(),
    };
    let mut timesteps: Vec<f64> = ts.iter().map(|t| *t as f64).collect();
    if o.sigma_spacing != SigmaSpacing::Interp {
        let lo = o.sigma_min.unwrap_or(*sig.last().unwrap_or(&0.0));
        let hi = o.sigma_max.unwrap_or(*sig.first().unwrap_or(&0.0));
        sig = match o.sigma_spacing {
            SigmaSpacing::Karras => karras_from_ramp(&np_linspace(0.0, 1.0, n), lo, hi, o.rho),
            _ => np_linspace(hi.ln(), lo.ln(), n)
                .into_iter()
                .map(f64::exp)
                .collect(),
        };
        let log_table: Vec<f32> = table.iter().map(|s| s.ln()).collect();
        timesteps = sig.iter().map(|s| sigma_to_t(*s, &log_table)).collect();
    }
    Ok(SigmaSchedule {
        timesteps,
        sigmas: sig,
        train_sigmas: table,
    })
}

/// `init_noise_sigma` of the discrete σ schedulers: the largest σ, or `√(σ² + 1)` for `leading`
/// spacing (diffusers' quirk kept for parity).
pub(super) fn sigma_init_noise(sigmas: &[f32], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().fold(0f32, |m, s| m.max(*s));
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
        TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
    }
}

/// `σ[i]` of a schedule, as a typed error instead of a panic when a call index runs past it.
pub(super) fn sigma_at(sigmas: &[f32], i: usize, what: &str) -> Result<f32> {
    sigmas.get(i).copied().ok_or_else(|| {
        Error::invalid(
            "step_index",
            format!("σ[{i}] is outside {what}'s {} σ values", sigmas.len()),
        )
    })
}

/// The Euler update of the σ schedulers: `x + (x − x̂₀)/σ̂ · (σ_next − σ̂)`, back in the sample's
/// dtype.
pub(super) fn euler_update(
    x: &Tensor,
    pred_x0: Tensor,
    sigma_hat: f32,
    sigma_next: f32,
    dtype: DType,
) -> Result<SchedulerOutput> {
    let derivative = div(&x.sub(&pred_x0)?, sigma_hat)?;
    let prev = x.add(&mul(&derivative, sigma_next - sigma_hat)?)?;
    Ok(SchedulerOutput {
        prev_sample: prev.to_dtype(dtype)?,
        pred_original_sample: pred_x0,
    })
}

/// The x₀ post-processing of DDIM / DDPM (diffusers' `thresholding` / `clip_sample`).
#[derive(Debug, Clone, Copy)]
pub(super) struct X0Clip {
    pub thresholding: bool,
    pub ratio: f64,
    pub max_value: f64,
    pub clip: bool,
    pub range: f64,
}

impl X0Clip {
    /// Dynamic thresholding when on, else clipping to `±range` when on, else `x0` unchanged.
    pub fn apply(&self, x0: Tensor) -> Result<Tensor> {
        if self.thresholding {
            threshold_sample(&x0, self.ratio, self.max_value)
        } else if self.clip {
            Ok(x0.clamp(-self.range as f32, self.range as f32)?)
        } else {
            Ok(x0)
        }
    }
}

/// `torch.clamp(x, lo, hi)`: `min(max(x, lo), hi)`, NaN in any argument giving NaN (`f32::clamp`
/// would panic on a NaN bound).
fn torch_clamp(x: f32, lo: f32, hi: f32) -> f32 {
    if x.is_nan() || lo.is_nan() || hi.is_nan() {
        f32::NAN
    } else {
        x.max(lo).min(hi)
    }
}

/// Imagen's dynamic thresholding, as diffusers' `_threshold_sample`: per sample,
/// `s = clamp(quantile(|x₀|, ratio), 1, max_value)`, then `clamp(x₀, −s, s) / s`.
///
/// The quantile is torch's (linear interpolation, rank `ratio·(n−1)` and weights in float32,
/// `lerp`'s two-sided formula, NaN when the row holds a NaN); the clamp is torch's, so a
/// `max_value` below 1 clips every sample to `±max_value`.
///
/// # Shapes
/// `x0`: `[B, …]` (any rank ≥ 1; a scalar is one sample); returns the same shape and dtype
/// (computed in float32).
///
/// # Errors
/// `ratio` outside `[0, 1]` or NaN, `max_value` not > 0.
pub fn threshold_sample(x0: &Tensor, ratio: f64, max_value: f64) -> Result<Tensor> {
    check_threshold_args(ratio, max_value)
        .map_err(|(name, reason)| Error::invalid(name, reason))?;
    let dims = x0.dims().to_vec();
    let b = dims.first().copied().unwrap_or(1);
    let n = x0.elem_count().checked_div(b).unwrap_or(0);
    let flat = f32_of(x0)?.reshape((b, n))?;
    let rows = flat.to_vec2::<f32>()?;
    let (q, max) = (ratio as f32, max_value as f32);
    let mut out = Vec::with_capacity(b * n);
    for row in rows {
        let mut a: Vec<f32> = row.iter().map(|v| v.abs()).collect();
        a.sort_by(|p, q| p.total_cmp(q));
        let s = if a.is_empty() {
            1.0
        } else if a.iter().any(|v| v.is_nan()) {
            f32::NAN
        } else {
            let last = a.len() - 1;
            let rank = q * last as f32;
            let lo = (rank as usize).min(last);
            let hi = (rank.ceil() as usize).min(last);
            let w = rank - lo as f32;
            let (below, above) = (a[lo], a[hi]);
            if w < 0.5 {
                below + w * (above - below)
            } else {
                above - (above - below) * (1.0 - w)
            }
        };
        let s = torch_clamp(s, 1.0, max);
        out.extend(row.iter().map(|v| torch_clamp(*v, -s, s) / s));
    }
    Ok(Tensor::from_vec(out, dims, x0.device())?.to_dtype(x0.dtype())?)
}
