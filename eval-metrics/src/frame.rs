//! Per-frame metrics on videos `[B, C, T, H, W]`: PSNR, SSIM (three reference flavours),
//! colourfulness (Hasler–Süsstrunk) and colour distribution consistency (CDC).

use candle_core::{DType, Tensor};
use vidgen_video_core::{Error, Result};

use crate::stats::check_finite_slice;

/// The value range a video's samples live in. PSNR / SSIM use `max − min` as the data range
/// (`data_range` in skimage / torchmetrics); inputs outside `[min, max]` (beyond 1e-6 of the
/// span) are rejected, which catches the common `[-1, 1]`-vs-`[0, 1]` mix-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataRange {
    /// The lowest valid value.
    pub min: f64,
    /// The highest valid value.
    pub max: f64,
}

impl DataRange {
    /// `[0, 1]`, data range 1.
    pub const UNIT: DataRange = DataRange { min: 0.0, max: 1.0 };
    /// `[-1, 1]` (vidgen's model range), data range 2.
    pub const SIGNED: DataRange = DataRange {
        min: -1.0,
        max: 1.0,
    };
    /// `[0, 255]` (u8 pixels as floats), data range 255.
    pub const U8: DataRange = DataRange {
        min: 0.0,
        max: 255.0,
    };

    /// `max − min`.
    pub fn span(&self) -> f64 {
        self.max - self.min
    }
}

/// A video's samples in f64 with its dims `[B, C, T, H, W]`.
pub(crate) struct Video {
    pub(crate) v: Vec<f64>,
    pub(crate) dims: [usize; 5],
}

impl Video {
    /// One channel of one frame as a row-major `H × W` plane.
    pub(crate) fn plane(&self, b: usize, c: usize, t: usize) -> &[f64] {
        let [_, cc, tt, hh, ww] = self.dims;
        let start = ((b * cc + c) * tt + t) * hh * ww;
        &self.v[start..start + hh * ww]
    }
}

pub(crate) fn video(x: &Tensor, what: &str, range: Option<DataRange>) -> Result<Video> {
    let dims = x.dims();
    let dims: [usize; 5] = dims.try_into().map_err(|_| {
        Error::invalid(
            what,
            format!("expected a video [B, C, T, H, W], found shape {dims:?}"),
        )
    })?;
    if dims.contains(&0) {
        return Err(Error::invalid(what, format!("empty video {dims:?}")));
    }
    let v = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    check_finite_slice(&v, what)?;
    if let Some(r) = range {
        if r.span().is_nan() || r.span() <= 0.0 {
            return Err(Error::invalid(
                "data_range",
                format!("max {} must exceed min {}", r.max, r.min),
            ));
        }
        let tol = 1e-6 * r.span();
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        if lo < r.min - tol || hi > r.max + tol {
            return Err(Error::invalid(
                what,
                format!(
                    "values span [{lo}, {hi}], outside the declared data range [{}, {}]",
                    r.min, r.max
                ),
            ));
        }
    }
    Ok(Video { v, dims })
}

fn same_shape(a: &Video, b: &Video) -> Result<()> {
    if a.dims != b.dims {
        return Err(Error::shape("distorted", &a.dims, &b.dims));
    }
    Ok(())
}

/// PSNR of a batch of videos, in dB, reduced three ways (they differ; pick one explicitly).
/// Identical inputs give `f64::INFINITY`.
#[derive(Debug, Clone, PartialEq)]
pub struct PsnrReport {
    /// One value per frame, order `b·T + t` (skimage `peak_signal_noise_ratio` per frame).
    pub per_frame: Vec<f64>,
    /// Mean of `per_frame` (what most papers report as "PSNR").
    pub mean_of_frames: f64,
    /// PSNR of the MSE over every sample of the batch (skimage / torchmetrics on the whole clip).
    pub global: f64,
    /// MSE per frame, order `b·T + t`.
    pub per_frame_mse: Vec<f64>,
    /// MSE over every sample.
    pub global_mse: f64,
    /// The data range used.
    pub data_range: f64,
}

impl PsnrReport {
    /// The global PSNR as torchmetrics computes it: `(2 ln R − ln MSE) · (10 / ln 10)` with the
    /// factor computed in float32, which shifts the value by ~5e-8 relative.
    pub fn global_torchmetrics(&self) -> f64 {
        torchmetrics_db(self.global_mse, self.data_range)
    }

    /// Per-frame PSNR with torchmetrics' float32 `ln 10`.
    pub fn per_frame_torchmetrics(&self) -> Vec<f64> {
        self.per_frame_mse
            .iter()
            .map(|&m| torchmetrics_db(m, self.data_range))
            .collect()
    }
}

fn torchmetrics_db(mse: f64, range: f64) -> f64 {
    // torch.log(torch.tensor(10.0)) is float32, and `10 / it` stays a float32 tensor.
    let factor = 10.0f32 / 10.0f32.ln();
    (2.0 * range.ln() - mse.ln()) * factor as f64
}

fn db(mse: f64, range: f64) -> f64 {
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (range * range / mse).log10()
    }
}

/// Peak signal-to-noise ratio of `distorted` against `reference`, MSE in f64.
///
/// # Shapes
/// `reference`, `distorted`: `[B, C, T, H, W]`, same shape, values inside `range`. A frame
/// stack `[F, H, W, C]` becomes `[1, C, F, H, W]` with `x.permute((3, 0, 1, 2))?.unsqueeze(0)?`.
pub fn psnr(reference: &Tensor, distorted: &Tensor, range: DataRange) -> Result<PsnrReport> {
    let a = video(reference, "reference", Some(range))?;
    let b = video(distorted, "distorted", Some(range))?;
    same_shape(&a, &b)?;
    let [bb, cc, tt, hh, ww] = a.dims;
    let r = range.span();
    let mut per_frame_mse = Vec::with_capacity(bb * tt);
    let mut total = 0.0;
    for bi in 0..bb {
        for t in 0..tt {
            let mut s = 0.0;
            for c in 0..cc {
                for (x, y) in a.plane(bi, c, t).iter().zip(b.plane(bi, c, t)) {
                    s += (x - y) * (x - y);
                }
            }
            total += s;
            per_frame_mse.push(s / (cc * hh * ww) as f64);
        }
    }
    let global_mse = total / a.v.len() as f64;
    let per_frame: Vec<f64> = per_frame_mse.iter().map(|&m| db(m, r)).collect();
    let mean_of_frames = per_frame.iter().sum::<f64>() / per_frame.len() as f64;
    Ok(PsnrReport {
        per_frame,
        mean_of_frames,
        global: db(global_mse, r),
        per_frame_mse,
        global_mse,
        data_range: r,
    })
}

/// Which reference implementation of SSIM to reproduce. They give visibly different numbers
/// (0.715 / 0.774 / 0.723 on the same clip), so papers' values are comparable only within one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsimFlavour {
    /// skimage `structural_similarity(gaussian_weights=True, sigma=1.5,
    /// use_sample_covariance=False)`, i.e. Wang et al. 2004: 11×11 Gaussian (σ 1.5, truncate
    /// 3.5), scipy `reflect` (half-sample symmetric) borders, mean over the interior (5 px crop).
    SkimageGaussian,
    /// skimage's default: 7×7 uniform window, sample covariance (×49/48), 3 px crop.
    SkimageDefault,
    /// torchmetrics `structural_similarity_index_measure`: 11×11 Gaussian σ 1.5, torch
    /// `reflect` padding (edge not repeated) of 5 px, mean over the full H×W, variances
    /// clamped at 0.
    Torchmetrics,
}

/// SSIM per frame (mean over channels) and the mean over frames.
#[derive(Debug, Clone, PartialEq)]
pub struct SsimReport {
    /// One value per frame, order `b·T + t`.
    pub per_frame: Vec<f64>,
    /// Mean over frames.
    pub mean: f64,
}

/// Border handling of the 1-D filters.
#[derive(Clone, Copy)]
enum Border {
    /// scipy `reflect`: `c b a | a b c`.
    HalfSample,
    /// torch `reflect`: `c b | a b c`.
    WholeSample,
}

fn reflect_index(i: isize, n: usize, border: Border) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let mut i = i;
    loop {
        if i < 0 {
            i = match border {
                Border::HalfSample => -i - 1,
                Border::WholeSample => -i,
            };
        } else if i >= n {
            i = match border {
                Border::HalfSample => 2 * n - i - 1,
                Border::WholeSample => 2 * n - i - 2,
            };
        } else {
            return i as usize;
        }
    }
}

/// Separable correlation of a row-major `h × w` plane with a symmetric 1-D kernel along both
/// axes (rows first, as scipy does axis 0 then axis 1), output `h × w`.
fn filter2(p: &[f64], h: usize, w: usize, k: &[f64], border: Border) -> Vec<f64> {
    let r = (k.len() / 2) as isize;
    let mut tmp = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            for (j, kv) in k.iter().enumerate() {
                let yy = reflect_index(y as isize + j as isize - r, h, border);
                s += kv * p[yy * w + x];
            }
            tmp[y * w + x] = s;
        }
    }
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        let row = &tmp[y * w..(y + 1) * w];
        for x in 0..w {
            let mut s = 0.0;
            for (j, kv) in k.iter().enumerate() {
                s += kv * row[reflect_index(x as isize + j as isize - r, w, border)];
            }
            out[y * w + x] = s;
        }
    }
    out
}

/// The normalised Gaussian `exp(−x²/2σ²)` on `−radius..=radius` (scipy `_gaussian_kernel1d`,
/// torchmetrics `_gaussian`).
fn gaussian_kernel(sigma: f64, radius: usize) -> Vec<f64> {
    let r = radius as isize;
    let mut k: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

/// SSIM of one channel plane pair.
fn ssim_plane(a: &[f64], b: &[f64], h: usize, w: usize, range: f64, flavour: SsimFlavour) -> f64 {
    let (kernel, border, cov_norm, crop, clamp) = match flavour {
        SsimFlavour::SkimageGaussian => {
            (gaussian_kernel(1.5, 5), Border::HalfSample, 1.0, 5, false)
        }
        SsimFlavour::SkimageDefault => (
            vec![1.0 / 7.0; 7],
            Border::HalfSample,
            49.0 / 48.0,
            3,
            false,
        ),
        SsimFlavour::Torchmetrics => (gaussian_kernel(1.5, 5), Border::WholeSample, 1.0, 0, true),
    };
    let (c1, c2) = ((0.01 * range).powi(2), (0.03 * range).powi(2));
    let f = |p: &[f64]| filter2(p, h, w, &kernel, border);
    let aa: Vec<f64> = a.iter().map(|x| x * x).collect();
    let bb: Vec<f64> = b.iter().map(|x| x * x).collect();
    let ab: Vec<f64> = a.iter().zip(b).map(|(x, y)| x * y).collect();
    let (ux, uy, uxx, uyy, uxy) = (f(a), f(b), f(&aa), f(&bb), f(&ab));
    let mut sum = 0.0;
    let mut count = 0usize;
    for y in crop..h - crop {
        for x in crop..w - crop {
            let i = y * w + x;
            let (mx, my) = (ux[i], uy[i]);
            let mut vx = cov_norm * (uxx[i] - mx * mx);
            let mut vy = cov_norm * (uyy[i] - my * my);
            let vxy = cov_norm * (uxy[i] - mx * my);
            if clamp {
                vx = vx.max(0.0);
                vy = vy.max(0.0);
            }
            let s = ((2.0 * mx * my + c1) * (2.0 * vxy + c2))
                / ((mx * mx + my * my + c1) * (vx + vy + c2));
            sum += s;
            count += 1;
        }
    }
    sum / count as f64
}

/// Structural similarity of `distorted` against `reference`, per frame (mean over channels,
/// as skimage's `channel_axis` and torchmetrics do), then the mean over frames.
///
/// # Shapes
/// `reference`, `distorted`: `[B, C, T, H, W]`, same shape, values inside `range`; H and W at
/// least 11 (7 for [`SsimFlavour::SkimageDefault`]).
pub fn ssim(
    reference: &Tensor,
    distorted: &Tensor,
    range: DataRange,
    flavour: SsimFlavour,
) -> Result<SsimReport> {
    let a = video(reference, "reference", Some(range))?;
    let b = video(distorted, "distorted", Some(range))?;
    same_shape(&a, &b)?;
    let [bb, cc, tt, hh, ww] = a.dims;
    let win = match flavour {
        SsimFlavour::SkimageDefault => 7,
        _ => 11,
    };
    if hh < win || ww < win {
        return Err(Error::invalid(
            "reference",
            format!("frames {hh}×{ww} are smaller than the {win}×{win} SSIM window"),
        ));
    }
    let r = range.span();
    let mut per_frame = Vec::with_capacity(bb * tt);
    for bi in 0..bb {
        for t in 0..tt {
            let s: f64 = (0..cc)
                .map(|c| ssim_plane(a.plane(bi, c, t), b.plane(bi, c, t), hh, ww, r, flavour))
                .sum();
            per_frame.push(s / cc as f64);
        }
    }
    let mean = per_frame.iter().sum::<f64>() / per_frame.len() as f64;
    Ok(SsimReport { per_frame, mean })
}

/// Colourfulness (Hasler & Süsstrunk 2003) per frame and its mean over frames:
/// `rg = R − G`, `yb = (R + G)/2 − B`, `M = √(σ_rg² + σ_yb²) + 0.3·√(μ_rg² + μ_yb²)`
/// (population std), on values rescaled from `range` to `[0, 255]` as in the paper.
///
/// # Shapes
/// `video`: `[B, 3, T, H, W]` RGB inside `range`. Returns one value per frame (`b·T + t`) and
/// the mean.
pub fn colourfulness(video_t: &Tensor, range: DataRange) -> Result<(Vec<f64>, f64)> {
    let v = video(video_t, "video", Some(range))?;
    let [bb, cc, tt, _, _] = v.dims;
    if cc != 3 {
        return Err(Error::invalid(
            "video",
            format!("colourfulness needs 3 RGB channels, found {cc}"),
        ));
    }
    let scale = 255.0 / range.span();
    let mut out = Vec::with_capacity(bb * tt);
    for bi in 0..bb {
        for t in 0..tt {
            let (r, g, b) = (v.plane(bi, 0, t), v.plane(bi, 1, t), v.plane(bi, 2, t));
            let n = r.len() as f64;
            let (mut s_rg, mut s_yb, mut q_rg, mut q_yb) = (0.0, 0.0, 0.0, 0.0);
            for i in 0..r.len() {
                let (rr, gg, b2) = (
                    (r[i] - range.min) * scale,
                    (g[i] - range.min) * scale,
                    (b[i] - range.min) * scale,
                );
                let rg = rr - gg;
                let yb = 0.5 * (rr + gg) - b2;
                s_rg += rg;
                s_yb += yb;
                q_rg += rg * rg;
                q_yb += yb * yb;
            }
            let (m_rg, m_yb) = (s_rg / n, s_yb / n);
            let var_rg = (q_rg / n - m_rg * m_rg).max(0.0);
            let var_yb = (q_yb / n - m_yb * m_yb).max(0.0);
            out.push((var_rg + var_yb).sqrt() + 0.3 * (m_rg * m_rg + m_yb * m_yb).sqrt());
        }
    }
    let mean = out.iter().sum::<f64>() / out.len() as f64;
    Ok((out, mean))
}

/// Jensen–Shannon divergence (base 2) of two histograms (each normalised to sum 1).
pub fn js_divergence(p: &[f64], q: &[f64]) -> f64 {
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter()
            .zip(m)
            .filter(|(x, _)| **x > 0.0)
            .map(|(x, y)| x * (x / y).log2())
            .sum()
    };
    let m: Vec<f64> = p.iter().zip(q).map(|(a, b)| 0.5 * (a + b)).collect();
    0.5 * kl(p, &m) + 0.5 * kl(q, &m)
}

/// Colour distribution consistency (CDC; Liu et al. 2021, "Temporally consistent video
/// colorization …", the measure VIDiff reports): for frame dilations 1, 2 and 4 (weights ⅓),
/// the mean over frame pairs `(t, t+dilation)` of the Jensen–Shannon divergence (base 2) of
/// each channel's 256-bin histogram, then the mean over the three channels. Lower is more
/// consistent. Values are quantised to levels `round((v − min)·255/span)` as 8-bit frames are.
///
/// # Shapes
/// `video`: `[B, C, T, H, W]` inside `range`, `T ≥ 5` (so every dilation has a pair). Returns
/// one value per video (`B` values) and their mean.
pub fn colour_distribution_consistency(
    video_t: &Tensor,
    range: DataRange,
) -> Result<(Vec<f64>, f64)> {
    let v = video(video_t, "video", Some(range))?;
    let [bb, cc, tt, _, _] = v.dims;
    const DILATIONS: [usize; 3] = [1, 2, 4];
    if tt <= 4 {
        return Err(Error::invalid(
            "video",
            format!("CDC needs at least 5 frames, found {tt}"),
        ));
    }
    let scale = 255.0 / range.span();
    let mut per_video = Vec::with_capacity(bb);
    for bi in 0..bb {
        // hist[c][t] = normalised 256-bin histogram.
        let hist: Vec<Vec<Vec<f64>>> = (0..cc)
            .map(|c| {
                (0..tt)
                    .map(|t| {
                        let p = v.plane(bi, c, t);
                        let mut h = vec![0.0; 256];
                        for &x in p {
                            let level =
                                ((x - range.min) * scale).round().clamp(0.0, 255.0) as usize;
                            h[level] += 1.0;
                        }
                        let n = p.len() as f64;
                        h.iter_mut().for_each(|e| *e /= n);
                        h
                    })
                    .collect()
            })
            .collect();
        let mut total = 0.0;
        for hc in &hist {
            let mut ch = 0.0;
            for &dl in &DILATIONS {
                let pairs = tt - dl;
                let s: f64 = (0..pairs).map(|t| js_divergence(&hc[t], &hc[t + dl])).sum();
                ch += s / pairs as f64 / DILATIONS.len() as f64;
            }
            total += ch;
        }
        per_video.push(total / cc as f64);
    }
    let mean = per_video.iter().sum::<f64>() / per_video.len() as f64;
    Ok((per_video, mean))
}
