//! Preconditioning: wrappers that turn a raw network (ε-, v- or F-prediction) into a
//! [`vidgen_video_core::Denoiser`] in the EDM form `D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ))`.
//!
//! | wrapper | c_in | c_skip | c_out | c_noise |
//! |---|---|---|---|---|
//! | [`EdmPrecond`] (ε) | `1/√(σ²+σ_d²)` | `σ_d²/(σ²+σ_d²)` | `σ·σ_d/√(σ²+σ_d²)` | `¼ ln σ` |
//! | [`EdmPrecond`] (v) | same | same | `−σ·σ_d/√(σ²+σ_d²)` | `¼ ln σ` |
//! | [`SvdPrecond`] | `1/√(σ²+1)` | `1/(σ²+1)` | `−σ/√(σ²+1)` | `¼ ln σ` |
//! | [`DiscretePrecond`] ε | `1/√(σ²+1)` | `1` | `−σ` | `t(σ)` |
//! | [`DiscretePrecond`] v | `1/√(σ²+1)` | `1/(σ²+1)` | `−σ/√(σ²+1)` | `t(σ)` |
//!
//! `t(σ)` is the continuous training timestep interpolated in log σ ([`crate::schedule::sigma_to_t`]),
//! optionally rounded to the nearest integer step. Coefficients are computed per sample in
//! float32 with torch's operation order.

use candle_core::Tensor;
use serde::Deserialize;
use vidgen_video_core::{Conditioning, Denoiser, Error, Result};

use crate::schedule::{sigma_to_t, VpSchedule};
use crate::util::{per_sample, sigma_values};

/// What a raw network predicts, as diffusers' `prediction_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The noise ε.
    #[default]
    Epsilon,
    /// The velocity `v = √ᾱ·ε − √(1−ᾱ)·x₀` (Imagen Video §2.4; SVD).
    VPrediction,
    /// The clean sample x₀ directly (`"sample"`; `"original_sample"` is read as this too).
    #[serde(alias = "original_sample")]
    Sample,
}

/// A raw network: `F(x_in, c_noise, cond)`, e.g. a UNet taking the scaled input and a timestep.
///
/// # Shapes
/// `x_in`: like the sample (`[B, C, T, H, W]` for video); `c_noise`: `[B]` (the timestep or noise
/// embedding input, one per sample); returns a tensor shaped like `x_in`.
pub trait Network {
    /// Runs the network.
    fn forward(&self, x_in: &Tensor, c_noise: &Tensor, cond: &Conditioning) -> Result<Tensor>;
}

impl<F> Network for F
where
    F: Fn(&Tensor, &Tensor, &Conditioning) -> Result<Tensor>,
{
    fn forward(&self, x_in: &Tensor, c_noise: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        self(x_in, c_noise, cond)
    }
}

/// Per-sample preconditioning coefficients (float32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    /// Input scale.
    pub c_in: f32,
    /// Skip scale.
    pub c_skip: f32,
    /// Output scale.
    pub c_out: f32,
    /// Network noise input (timestep).
    pub c_noise: f32,
}

fn apply<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    sigma: &Tensor,
    cond: &Conditioning,
    coefs: impl Fn(f64) -> Result<Coefficients>,
) -> Result<Tensor> {
    let sig = sigma_values(sigma)?;
    let cs: Vec<Coefficients> = sig.iter().map(|s| coefs(*s)).collect::<Result<_>>()?;
    let dev = x.device();
    let col =
        |f: fn(&Coefficients) -> f32| Tensor::new(cs.iter().map(f).collect::<Vec<f32>>(), dev);
    let c_in = per_sample(&col(|c| c.c_in)?, x)?;
    let c_skip = per_sample(&col(|c| c.c_skip)?, x)?;
    let c_out = per_sample(&col(|c| c.c_out)?, x)?;
    let b = x.dims().first().copied().unwrap_or(1);
    let mut c_noise = col(|c| c.c_noise)?;
    if c_noise.elem_count() == 1 && b > 1 {
        c_noise = c_noise.broadcast_as(b)?.contiguous()?;
    }
    let x_in = x.broadcast_mul(&c_in)?;
    let out = net.forward(&x_in, &c_noise, cond)?;
    if out.dims() != x.dims() {
        return Err(Error::shape("network output", x.dims(), out.dims()));
    }
    Ok(x.broadcast_mul(&c_skip)?.add(&out.broadcast_mul(&c_out)?)?)
}

fn check_sigma(s: f64) -> Result<()> {
    if !(s.is_finite() && s > 0.0) {
        return Err(Error::invalid(
            "sigma",
            format!("{s} must be a positive finite noise level"),
        ));
    }
    Ok(())
}

/// EDM preconditioning (Karras et al. 2022, Table 1) with data standard deviation `sigma_data`.
///
/// `prediction = VPrediction` negates `c_out`, as diffusers' `EDMEulerScheduler` does.
#[derive(Debug, Clone)]
pub struct EdmPrecond<N> {
    /// The raw network F.
    pub net: N,
    /// σ_data (0.5 in EDM).
    pub sigma_data: f64,
    /// Sign convention of the network output.
    pub prediction: PredictionType,
}

impl<N> EdmPrecond<N> {
    /// EDM with σ_data and the standard (`epsilon`-named) output sign.
    pub fn new(net: N, sigma_data: f64) -> Self {
        Self {
            net,
            sigma_data,
            prediction: PredictionType::Epsilon,
        }
    }

    /// The coefficients at σ.
    ///
    /// # Errors
    /// σ not positive and finite, or an unsupported prediction type (`sample`).
    pub fn coefficients(&self, sigma: f64) -> Result<Coefficients> {
        check_sigma(sigma)?;
        let s = sigma as f32;
        let sd = self.sigma_data as f32;
        let sd2 = (self.sigma_data * self.sigma_data) as f32;
        let denom = s * s + sd2;
        let root = denom.sqrt();
        let c_out = s * sd / root;
        let c_out = match self.prediction {
            PredictionType::Epsilon => c_out,
            PredictionType::VPrediction => -c_out,
            PredictionType::Sample => {
                return Err(Error::Unsupported {
                    field: "prediction_type".into(),
                    value: "sample".into(),
                    supported: "epsilon, v_prediction".into(),
                })
            }
        };
        Ok(Coefficients {
            c_in: 1.0 / root,
            c_skip: (1.0 / denom) * sd2,
            c_out,
            c_noise: 0.25 * s.ln(),
        })
    }
}

impl<N: Network> Denoiser for EdmPrecond<N> {
    /// # Shapes
    /// `x` `[B, …]`, `sigma` `[B]` or scalar; returns `[B, …]`.
    fn denoise(&self, x: &Tensor, sigma: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        apply(&self.net, x, sigma, cond, |s| self.coefficients(s))
    }
}

/// Stable Video Diffusion's preconditioning: v-prediction on the VP σ scale with continuous
/// noise input `c_noise = ¼ ln σ` and input scaled by `1/√(σ²+1)` (diffusers'
/// `EulerDiscreteScheduler` with `timestep_type = "continuous"`, `prediction_type = "v_prediction"`).
#[derive(Debug, Clone)]
pub struct SvdPrecond<N> {
    /// The raw network (SVD's UNet).
    pub net: N,
}

impl<N> SvdPrecond<N> {
    /// Wraps a network.
    pub fn new(net: N) -> Self {
        Self { net }
    }

    /// The coefficients at σ.
    ///
    /// # Errors
    /// σ not positive and finite.
    pub fn coefficients(&self, sigma: f64) -> Result<Coefficients> {
        check_sigma(sigma)?;
        Ok(vp_coefficients(
            sigma as f32,
            PredictionType::VPrediction,
            0.25 * (sigma as f32).ln(),
        ))
    }
}

fn vp_coefficients(s: f32, prediction: PredictionType, c_noise: f32) -> Coefficients {
    let s2p1 = s * s + 1.0;
    let root = s2p1.sqrt();
    let (c_skip, c_out) = match prediction {
        PredictionType::Epsilon => (1.0, -s),
        PredictionType::VPrediction => (1.0 / s2p1, -s / root),
        PredictionType::Sample => (0.0, 1.0),
    };
    Coefficients {
        c_in: 1.0 / root,
        c_skip,
        c_out,
        c_noise,
    }
}

impl<N: Network> Denoiser for SvdPrecond<N> {
    /// # Shapes
    /// `x` `[B, …]`, `sigma` `[B]` or scalar; returns `[B, …]`.
    fn denoise(&self, x: &Tensor, sigma: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        apply(&self.net, x, sigma, cond, |s| self.coefficients(s))
    }
}

/// A network trained over discrete VP timesteps (ε-, v- or x₀-prediction), seen as an EDM
/// denoiser on the σ scale `σ_t = √((1−ᾱ_t)/ᾱ_t)` (k-diffusion's `DiscreteEpsDDPMDenoiser` /
/// `DiscreteVDDPMDenoiser`). The network gets the interpolated timestep `t(σ)`.
#[derive(Debug, Clone)]
pub struct DiscretePrecond<N> {
    /// The raw network.
    pub net: N,
    /// What it predicts.
    pub prediction: PredictionType,
    /// Round `t(σ)` to the nearest training step (for networks that only saw integer t).
    pub round_timesteps: bool,
    log_sigmas: Vec<f32>,
    sigma_min: f64,
    sigma_max: f64,
}

impl<N> DiscretePrecond<N> {
    /// Wraps a network trained on `schedule`.
    ///
    /// # Errors
    /// An empty schedule.
    pub fn new(net: N, schedule: &VpSchedule, prediction: PredictionType) -> Result<Self> {
        let sig = schedule.sigmas();
        let (Some(&lo), Some(&hi)) = (sig.first(), sig.last()) else {
            return Err(Error::invalid("schedule", "an empty training schedule"));
        };
        Ok(Self {
            net,
            prediction,
            round_timesteps: false,
            log_sigmas: sig.iter().map(|s| s.ln()).collect(),
            sigma_min: lo as f64,
            sigma_max: hi as f64,
        })
    }

    /// The smallest and largest σ of the training table.
    pub fn sigma_range(&self) -> (f64, f64) {
        (self.sigma_min, self.sigma_max)
    }

    /// The coefficients at σ.
    ///
    /// # Errors
    /// σ not positive and finite.
    pub fn coefficients(&self, sigma: f64) -> Result<Coefficients> {
        check_sigma(sigma)?;
        let mut t = sigma_to_t(sigma, &self.log_sigmas);
        if self.round_timesteps {
            t = t.round();
        }
        Ok(vp_coefficients(sigma as f32, self.prediction, t as f32))
    }
}

impl<N: Network> Denoiser for DiscretePrecond<N> {
    /// # Shapes
    /// `x` `[B, …]`, `sigma` `[B]` or scalar; returns `[B, …]`.
    fn denoise(&self, x: &Tensor, sigma: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        apply(&self.net, x, sigma, cond, |s| self.coefficients(s))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn edm_coefficients_limits() {
        let p = EdmPrecond::new((), 0.5);
        let c = p.coefficients(1e-4).unwrap();
        assert!((c.c_skip - 1.0).abs() < 1e-6 && c.c_out.abs() < 1e-3);
        assert!(p.coefficients(0.0).is_err());
        assert!(p.coefficients(f64::NAN).is_err());
    }

    #[test]
    fn svd_identity_net_is_affine() {
        let net = |x: &Tensor, _c: &Tensor, _cond: &Conditioning| -> Result<Tensor> {
            Ok(x.zeros_like()?)
        };
        let d = SvdPrecond::new(net);
        let x = Tensor::ones((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let s = Tensor::new(&[1.0f32, 3.0], &Device::Cpu).unwrap();
        let y = d
            .denoise(&x, &s, &Conditioning::none())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((y[0][0] - 0.5).abs() < 1e-6 && (y[1][0] - 0.1).abs() < 1e-6);
    }
}
