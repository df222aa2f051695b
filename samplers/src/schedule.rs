//! Noise schedules: Karras σ, the discrete VP β schedules with their `alphas_cumprod`, timestep
//! spacings, and σ ↔ t conversion.
//!
//! Where diffusers computes a table in float32 torch (β, `alphas_cumprod`, the σ table) the same
//! float32 operations are done here in the same order; where it uses numpy float64 (spacings,
//! `np.interp`, Karras ramps) the maths is f64. That is what keeps the scheduler fixtures within
//! a few float32 ulps instead of 1e-6.

use serde::Deserialize;
use vidgen_video_core::{Error, Result};

/// The discrete β schedule of a VP (DDPM-family) model, as diffusers' `beta_schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `β_i` linear from `beta_start` to `beta_end` (DDPM, AnimateDiff).
    Linear,
    /// `√β_i` linear from `√beta_start` to `√beta_end` (Stable Diffusion, SVD).
    ScaledLinear,
    /// Glide / improved-DDPM cosine `ᾱ(t) = cos²((t + 0.008)/1.008 · π/2)`, β capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

impl BetaSchedule {
    /// The diffusers name.
    pub fn name(self) -> &'static str {
        match self {
            BetaSchedule::Linear => "linear",
            BetaSchedule::ScaledLinear => "scaled_linear",
            BetaSchedule::SquaredcosCapV2 => "squaredcos_cap_v2",
        }
    }
}

/// How inference timesteps are spread over the training steps (Table 2 of "Common Diffusion Noise
/// Schedules and Sample Steps are Flawed"), as diffusers' `timestep_spacing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `linspace(0, T−1, N)`, reversed (diffusers rounds it for integer schedulers).
    Linspace,
    /// `arange(N)·(T // N) + steps_offset`, reversed (SD, SVD).
    Leading,
    /// `round(arange(T, 0, −T/N)) − 1` (zero-terminal-SNR models).
    Trailing,
}

/// `torch.linspace(start, end, n, dtype=float32)` on CPU: f32 step, filled from both ends.
pub fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// `torch.linspace(start, end, n, dtype=float64)`: same two-ended fill in f64.
pub fn torch_linspace_f64(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f64
            } else {
                end - step * (n - 1 - i) as f64
            }
        })
        .collect()
}

/// `numpy.linspace(start, stop, n)` (endpoint included, f64): `i·step + start`, last = `stop`.
pub fn np_linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

/// The training β table (float32, as diffusers builds it).
///
/// # Errors
/// `num_train_timesteps == 0`, or `beta_start` / `beta_end` outside `[0, 1)`.
pub fn betas(
    schedule: BetaSchedule,
    beta_start: f64,
    beta_end: f64,
    num_train_timesteps: usize,
) -> Result<Vec<f32>> {
    if num_train_timesteps == 0 {
        return Err(Error::invalid("num_train_timesteps", "must be at least 1"));
    }
    if schedule != BetaSchedule::SquaredcosCapV2 {
        for (name, b) in [("beta_start", beta_start), ("beta_end", beta_end)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid(name, format!("{b} is not in [0, 1)")));
            }
        }
    }
    Ok(match schedule {
        BetaSchedule::Linear => {
            torch_linspace_f32(beta_start as f32, beta_end as f32, num_train_timesteps)
        }
        BetaSchedule::ScaledLinear => torch_linspace_f32(
            beta_start.sqrt() as f32,
            beta_end.sqrt() as f32,
            num_train_timesteps,
        )
        .into_iter()
        .map(|b| b * b)
        .collect(),
        BetaSchedule::SquaredcosCapV2 => {
            let alpha_bar = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                    .cos()
                    .powi(2)
            };
            let n = num_train_timesteps as f64;
            (0..num_train_timesteps)
                .map(|i| {
                    let t1 = i as f64 / n;
                    let t2 = (i + 1) as f64 / n;
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                })
                .collect()
        }
    })
}

/// `ᾱ_t = Π_{s≤t} (1 − β_s)` as torch's CPU `cumprod` of a float32 tensor: `1 − β` in float32,
/// the running product in float64 (torch's CPU accumulation type for float), each value rounded
/// to float32. (A float32 running product is up to 3e-7 off on SD's table.)
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1f64;
    betas
        .iter()
        .map(|b| {
            acc *= (1.0 - b) as f64;
            acc as f32
        })
        .collect()
}

/// Rescales β to zero terminal SNR (Lin et al. 2023, Algorithm 1), as diffusers'
/// `rescale_zero_terminal_snr` (float32): `√ᾱ` is shifted so its last value is 0 and scaled so its
/// first value is unchanged. The last β becomes 1.
pub fn rescale_betas_zero_snr(betas: &[f32]) -> Vec<f32> {
    let ac = alphas_cumprod(betas);
    let mut s: Vec<f32> = ac.iter().map(|a| a.sqrt()).collect();
    let (Some(&s0), Some(&st)) = (s.first(), s.last()) else {
        return Vec::new();
    };
    let scale = s0 / (s0 - st);
    for v in s.iter_mut() {
        *v -= st;
        *v *= scale;
    }
    let bar: Vec<f32> = s.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0 - bar[i] / bar[i - 1]);
    }
    out
}

/// The σ of each training step, `σ_t = √((1 − ᾱ_t)/ᾱ_t)` (float32, ascending in t).
pub fn sigmas_from_alphas_cumprod(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// The Karras et al. (2022) σ schedule: `(σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ`,
/// `n` values from `sigma_max` down to `sigma_min` (no trailing zero), in f64 (numpy ramp).
///
/// # Errors
/// `n == 0`, `sigma_min ≤ 0`, `sigma_min ≥ sigma_max`, non-finite values or `rho ≤ 0`.
pub fn karras_sigmas(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Result<Vec<f64>> {
    check_sigma_range(n, sigma_min, sigma_max)?;
    if !(rho > 0.0 && rho.is_finite()) {
        return Err(Error::invalid(
            "rho",
            format!("{rho} must be a positive finite number"),
        ));
    }
    Ok(karras_from_ramp(
        &np_linspace(0.0, 1.0, n),
        sigma_min,
        sigma_max,
        rho,
    ))
}

/// Karras σ at arbitrary ramp positions in `[0, 1]` (0 → σ_max, 1 → σ_min).
pub fn karras_from_ramp(ramp: &[f64], sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    ramp.iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// Log-uniform σ: `exp(linspace(ln σ_max, ln σ_min, n))`.
///
/// # Errors
/// As [`karras_sigmas`].
pub fn exponential_sigmas(n: usize, sigma_min: f64, sigma_max: f64) -> Result<Vec<f64>> {
    check_sigma_range(n, sigma_min, sigma_max)?;
    Ok(np_linspace(sigma_max.ln(), sigma_min.ln(), n)
        .into_iter()
        .map(f64::exp)
        .collect())
}

fn check_sigma_range(n: usize, sigma_min: f64, sigma_max: f64) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid(
            "steps",
            "the number of steps must be at least 1",
        ));
    }
    if !(sigma_min.is_finite() && sigma_max.is_finite()) || sigma_min <= 0.0 {
        return Err(Error::invalid(
            "sigma_min",
            format!("σ range [{sigma_min}, {sigma_max}] must be finite with σ_min > 0"),
        ));
    }
    if sigma_min >= sigma_max {
        return Err(Error::invalid(
            "sigma_min",
            format!("σ_min = {sigma_min} must be smaller than σ_max = {sigma_max}"),
        ));
    }
    Ok(())
}

/// Inference timesteps (training-step units, descending) for a spacing, as diffusers' schedulers
/// compute them before any σ conversion (f64; integer-valued except `linspace`).
///
/// `steps_offset` is added for `leading` only, as diffusers does.
///
/// # Errors
/// `steps == 0` or `steps > num_train_timesteps`.
pub fn spaced_timesteps(
    spacing: TimestepSpacing,
    steps: usize,
    num_train_timesteps: usize,
    steps_offset: usize,
) -> Result<Vec<f64>> {
    if steps == 0 {
        return Err(Error::invalid("num_inference_steps", "must be at least 1"));
    }
    if steps > num_train_timesteps {
        return Err(Error::invalid(
            "num_inference_steps",
            format!("{steps} is larger than num_train_timesteps = {num_train_timesteps}"),
        ));
    }
    let t = num_train_timesteps as f64;
    Ok(match spacing {
        TimestepSpacing::Linspace => {
            let mut v = np_linspace(0.0, t - 1.0, steps);
            v.reverse();
            v
        }
        TimestepSpacing::Leading => {
            let ratio = (num_train_timesteps / steps) as f64;
            (0..steps)
                .rev()
                .map(|i| (i as f64 * ratio).round_ties_even() + steps_offset as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            // numpy arange(T, 0, -T/N): ceil(T / (T/N)) values T − i·step.
            let ratio = t / steps as f64;
            let len = ((0.0 - t) / -ratio).ceil().max(0.0) as usize;
            (0..len)
                .map(|i| (t + i as f64 * -ratio).round_ties_even() - 1.0)
                .collect()
        }
    })
}

/// `numpy.interp(x, arange(len(fp)), fp)` in f64 (clamped at both ends).
pub fn interp_index(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    if n == 0 {
        return f64::NAN;
    }
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    let last = (n - 1) as f64;
    if x >= last {
        return fp[n - 1] as f64;
    }
    let j = x.floor() as usize;
    let xj = j as f64;
    if x == xj {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - xj) + fp[j] as f64
}

/// σ → continuous training timestep by linear interpolation in log σ (diffusers' / k-diffusion's
/// `_sigma_to_t`), against a σ table ascending in t. Clamped to `[0, len − 1]`.
///
/// `log_sigmas` are float32 (`np.log` of the float32 σ table), as in diffusers.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let n = log_sigmas.len();
    if n < 2 {
        return 0.0;
    }
    let log_sigma = sigma.max(1e-10).ln();
    // Index of the last table entry with log σ_t ≤ log σ (0 when there is none).
    let mut low = 0usize;
    for (i, &l) in log_sigmas.iter().enumerate() {
        if log_sigma - l as f64 >= 0.0 {
            low = i;
        }
    }
    let low = low.min(n - 2);
    let high = low + 1;
    let lo = log_sigmas[low];
    let hi = log_sigmas[high];
    let w = ((lo as f64 - log_sigma) / (lo - hi) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

/// Continuous timestep → σ by linear interpolation of the σ table (the inverse of
/// [`sigma_to_t`] up to the interpolation space: diffusers interpolates σ linearly in t).
pub fn t_to_sigma(t: f64, sigmas: &[f32]) -> f64 {
    interp_index(t, sigmas)
}

/// Continuous timestep → σ interpolating log σ (k-diffusion's `t_to_sigma`), the exact inverse of
/// [`sigma_to_t`] inside the table.
pub fn t_to_sigma_log(t: f64, log_sigmas: &[f32]) -> f64 {
    let n = log_sigmas.len();
    if n == 0 {
        return f64::NAN;
    }
    let t = t.clamp(0.0, (n - 1) as f64);
    let low = (t.floor() as usize).min(n.saturating_sub(2));
    let high = (low + 1).min(n - 1);
    let w = t - low as f64;
    ((1.0 - w) * log_sigmas[low] as f64 + w * log_sigmas[high] as f64).exp()
}

/// A VP training schedule: β, `ᾱ`, and the σ table, all float32 as diffusers holds them.
#[derive(Debug, Clone)]
pub struct VpSchedule {
    /// β per training step.
    pub betas: Vec<f32>,
    /// `ᾱ_t` per training step.
    pub alphas_cumprod: Vec<f32>,
}

impl VpSchedule {
    /// Builds the schedule (optionally rescaled to zero terminal SNR).
    ///
    /// # Errors
    /// As [`betas`].
    pub fn new(
        schedule: BetaSchedule,
        beta_start: f64,
        beta_end: f64,
        num_train_timesteps: usize,
        rescale_zero_snr: bool,
    ) -> Result<Self> {
        let mut b = betas(schedule, beta_start, beta_end, num_train_timesteps)?;
        if rescale_zero_snr {
            b = rescale_betas_zero_snr(&b);
        }
        Ok(Self::from_betas(b))
    }

    /// From an explicit β table (diffusers' `trained_betas`).
    pub fn from_betas(betas: Vec<f32>) -> Self {
        let alphas_cumprod = alphas_cumprod(&betas);
        Self {
            betas,
            alphas_cumprod,
        }
    }

    /// Number of training steps.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// `σ_t` per training step (float32, ascending in t).
    pub fn sigmas(&self) -> Vec<f32> {
        sigmas_from_alphas_cumprod(&self.alphas_cumprod)
    }

    /// `ln σ_t` per training step (float32).
    pub fn log_sigmas(&self) -> Vec<f32> {
        self.sigmas().iter().map(|s| s.ln()).collect()
    }

    /// `ᾱ` at a training step, with a typed error when out of range.
    ///
    /// # Errors
    /// `t ≥ len`.
    pub fn alpha_cumprod_at(&self, t: usize) -> Result<f32> {
        self.alphas_cumprod.get(t).copied().ok_or_else(|| {
            Error::invalid(
                "timestep",
                format!(
                    "{t} is outside the {} training steps",
                    self.alphas_cumprod.len()
                ),
            )
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn spacings_match_diffusers() {
        let lead = spaced_timesteps(TimestepSpacing::Leading, 10, 1000, 1).unwrap();
        assert_eq!(
            lead,
            vec![901., 801., 701., 601., 501., 401., 301., 201., 101., 1.]
        );
        let trail = spaced_timesteps(TimestepSpacing::Trailing, 10, 1000, 1).unwrap();
        assert_eq!(
            trail,
            vec![999., 899., 799., 699., 599., 499., 399., 299., 199., 99.]
        );
        let lin = spaced_timesteps(TimestepSpacing::Linspace, 10, 1000, 1).unwrap();
        assert_eq!(lin[0], 999.0);
        assert_eq!(lin[9], 0.0);
        assert!(spaced_timesteps(TimestepSpacing::Leading, 0, 1000, 0).is_err());
        assert!(spaced_timesteps(TimestepSpacing::Leading, 1001, 1000, 0).is_err());
    }

    #[test]
    fn karras_bad_input() {
        assert!(karras_sigmas(0, 0.002, 80.0, 7.0).is_err());
        assert!(karras_sigmas(10, 80.0, 0.002, 7.0).is_err());
        assert!(karras_sigmas(10, 1.0, 1.0, 7.0).is_err());
        let s = karras_sigmas(10, 0.002, 80.0, 7.0).unwrap();
        assert!((s[0] - 80.0).abs() < 1e-9 && (s[9] - 0.002).abs() < 1e-12);
    }

    #[test]
    fn sigma_t_roundtrip() {
        let s = VpSchedule::new(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000, false).unwrap();
        let ls = s.log_sigmas();
        for t in [0.0, 1.5, 10.25, 500.0, 998.75, 999.0] {
            let sigma = t_to_sigma_log(t, &ls);
            let back = sigma_to_t(sigma, &ls);
            assert!((back - t).abs() < 1e-3, "{t} -> {sigma} -> {back}");
        }
    }

    #[test]
    fn zero_snr_has_zero_terminal_alpha() {
        let s = VpSchedule::new(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000, true).unwrap();
        assert_eq!(*s.alphas_cumprod.last().unwrap(), 0.0);
        let cos = VpSchedule::new(BetaSchedule::SquaredcosCapV2, 0.0, 0.0, 1000, false).unwrap();
        assert!(cos.betas.iter().all(|b| *b > 0.0 && *b <= 0.999));
    }
}
