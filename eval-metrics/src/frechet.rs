//! Fréchet distance between Gaussians (FID, FVD): `|μa − μb|² + tr Σa + tr Σb − 2 tr √(Σa Σb)`.

use candle_core::Tensor;
use vidgen_video_core::{Error, Result};

use crate::linalg;
use crate::stats::{features_f64, GaussianStats};

/// When to add `ε·I` to both covariances, as pytorch-fid's fallback does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EpsOffset {
    /// Never offset; an eigensolver failure is returned as an error.
    Never,
    /// Retry with `Σ + ε·I` only if the first attempt fails or is non-finite (pytorch-fid's
    /// behaviour; with the symmetric eigen path used here this almost never triggers, since
    /// negative round-off eigenvalues are clamped at 0 instead).
    OnFailure(f64),
    /// Always use `Σa + ε·I`, `Σb + ε·I` (a regularised FD; changes the value by ~ε·d).
    Always(f64),
}

/// How `Σa = B Bᵀ` is factored before the symmetric eigenvalue solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqrtMethod {
    /// Cholesky when `Σa` is numerically positive definite (the usual FID case, N > D),
    /// otherwise the eigendecomposition. The default.
    Auto,
    /// Always the eigendecomposition `B = V √max(w, 0)` (slower; same value to round-off).
    /// Kept selectable so the two paths can be compared and benchmarked.
    Eigh,
}

/// Options of [`frechet_distance_with`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrechetOptions {
    /// The ε-offset policy; default `OnFailure(1e-6)` as pytorch-fid.
    pub offset: EpsOffset,
    /// The factorisation of `Σa`; default [`SqrtMethod::Auto`].
    pub method: SqrtMethod,
}

impl Default for FrechetOptions {
    fn default() -> Self {
        Self {
            offset: EpsOffset::OnFailure(1e-6),
            method: SqrtMethod::Auto,
        }
    }
}

/// The Fréchet distance between two Gaussian summaries (FID on Inception features, FVD on
/// I3D features), computed in f64.
///
/// `tr √(Σa Σb)` is the sum of the square roots of the eigenvalues of the symmetric positive
/// semi-definite matrix `Bᵀ Σb B`, where `Σa = B Bᵀ` (`B` = the Cholesky factor when `Σa` is
/// positive definite, else `V √max(w, 0)` from `Σa`'s eigendecomposition, which handles
/// rank-deficient covariances). Eigenvalues below zero are round-off and are clamped at 0.
/// This equals scipy's `sqrtm(Σa Σb)` trace (pytorch-fid, StyleGAN-V) and torch-fidelity's
/// `Σ √eigvals(Σa Σb)` to ~1e-9 relative on rank-deficient inputs and ~1e-15 on full-rank ones.
///
/// # Shapes
/// Both stats have the same dimension `D` (`mu [D]`, `sigma [D, D]`); otherwise an error.
pub fn frechet_distance(a: &GaussianStats, b: &GaussianStats) -> Result<f64> {
    frechet_distance_with(a, b, &FrechetOptions::default())
}

/// [`frechet_distance`] with explicit options.
///
/// # Shapes
/// As [`frechet_distance`].
pub fn frechet_distance_with(
    a: &GaussianStats,
    b: &GaussianStats,
    opts: &FrechetOptions,
) -> Result<f64> {
    let d = a.dim();
    if b.dim() != d {
        return Err(Error::shape("stats_b.mu", &[d], &[b.dim()]));
    }
    let mean_term: f64 = a
        .mu()
        .iter()
        .zip(b.mu())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let trace = |s: &[f64]| (0..d).map(|i| s[i * d + i]).sum::<f64>();
    let offset = |s: &[f64], eps: f64| {
        let mut s = s.to_vec();
        for i in 0..d {
            s[i * d + i] += eps;
        }
        s
    };
    let (sa, sb, tr_shift) = match opts.offset {
        EpsOffset::Always(eps) => (
            offset(a.sigma(), eps),
            offset(b.sigma(), eps),
            2.0 * eps * d as f64,
        ),
        _ => (a.sigma().to_vec(), b.sigma().to_vec(), 0.0),
    };
    let tr_a = trace(a.sigma());
    let tr_b = trace(b.sigma());
    let tr_covmean = match (trace_sqrt_product(&sa, &sb, d, opts.method), opts.offset) {
        (Ok(t), _) if t.is_finite() => t,
        (first, EpsOffset::OnFailure(eps)) => {
            let t = trace_sqrt_product(&offset(&sa, eps), &offset(&sb, eps), d, opts.method)?;
            if !t.is_finite() {
                return Err(first.err().unwrap_or_else(|| {
                    Error::invalid(
                        "sigma",
                        "tr sqrt(sigma_a sigma_b) is not finite even with the eps offset",
                    )
                }));
            }
            t
        }
        (Err(e), _) => return Err(e),
        (Ok(t), _) => {
            return Err(Error::invalid(
                "sigma",
                format!("tr sqrt(sigma_a sigma_b) = {t}"),
            ));
        }
    };
    Ok(mean_term + tr_a + tr_b + tr_shift - 2.0 * tr_covmean)
}

/// `tr √(Σa Σb)` for symmetric positive semi-definite `Σa`, `Σb` (`d × d`, row-major).
pub(crate) fn trace_sqrt_product(
    sa: &[f64],
    sb: &[f64],
    d: usize,
    method: SqrtMethod,
) -> Result<f64> {
    // B with Σa = B Bᵀ: Cholesky (one cheap factorisation) when Σa is positive definite,
    // else V·√max(w,0) from the symmetric eigendecomposition.
    let chol = match method {
        SqrtMethod::Auto => linalg::cholesky(sa, d),
        SqrtMethod::Eigh => None,
    };
    let bmat = match chol {
        Some(l) => l,
        None => {
            let (w, mut v) = linalg::eigh(sa, d)?;
            let sq: Vec<f64> = w.iter().map(|x| x.max(0.0).sqrt()).collect();
            for row in v.chunks_exact_mut(d) {
                for (x, s) in row.iter_mut().zip(&sq) {
                    *x *= s;
                }
            }
            v
        }
    };
    // M = Bᵀ Σb B, similar to Σa Σb (same eigenvalues), symmetric PSD.
    let bv = linalg::view(&bmat, d, d);
    let mut t = vec![0.0; d * d];
    linalg::gemm(&mut t, linalg::view(sb, d, d), bv, 1.0, false);
    let mut m = vec![0.0; d * d];
    linalg::gemm(&mut m, bv.transpose(), linalg::view(&t, d, d), 1.0, false);
    linalg::symmetrise(&mut m, d);
    let ev = linalg::eigvalsh(&m, d)?;
    Ok(ev.iter().map(|x| x.max(0.0).sqrt()).sum())
}

/// The exact Fréchet distance of the Gaussians fitted to two raw feature sets, without forming
/// the `D × D` square root when the sets are small.
///
/// With centred features `A1 [n1, D]`, `A2 [n2, D]`:
/// `FD = |μ1 − μ2|² + tr S1 + tr S2 − 2 ‖A1 A2ᵀ‖_* / √((n1−1)(n2−1))` (nuclear norm = sum of
/// singular values), since `√(S1 S2)` has the same trace as `|A2 A1ᵀ| / √((n1−1)(n2−1))`. When
/// `n < D` (small-sample FVD) this avoids the bias every `D × D` method has from √ of
/// round-off eigenvalues. When either set has more rows than `D`, it falls back to
/// [`frechet_distance`] on the fitted statistics (same value, cheaper).
///
/// # Shapes
/// `features_a`: `[n1, D]`, `features_b`: `[n2, D]`, n1, n2 ≥ 2, any float dtype.
pub fn frechet_distance_features(features_a: &Tensor, features_b: &Tensor) -> Result<f64> {
    let (fa, n1, d) = features_f64(features_a, "features_a")?;
    let (fb, n2, d2) = features_f64(features_b, "features_b")?;
    if d != d2 {
        return Err(Error::shape("features_b", &[n2, d], &[n2, d2]));
    }
    for (n, name) in [(n1, "features_a"), (n2, "features_b")] {
        if n < 2 {
            return Err(Error::invalid(
                name,
                format!("need at least 2 samples, have {n}"),
            ));
        }
    }
    if n1 > d || n2 > d {
        let mut sa = crate::FeatureStats::new(d)?;
        sa.add_rows(&fa, n1)?;
        let mut sb = crate::FeatureStats::new(d)?;
        sb.add_rows(&fb, n2)?;
        return frechet_distance(&sa.gaussian()?, &sb.gaussian()?);
    }
    let centre = |f: &[f64], n: usize| {
        let mut mu = vec![0.0; d];
        for r in f.chunks_exact(d) {
            for (m, x) in mu.iter_mut().zip(r) {
                *m += x;
            }
        }
        mu.iter_mut().for_each(|m| *m /= n as f64);
        let mut a = f.to_vec();
        for r in a.chunks_exact_mut(d) {
            for (x, m) in r.iter_mut().zip(&mu) {
                *x -= m;
            }
        }
        (mu, a)
    };
    let (mu1, a1) = centre(&fa, n1);
    let (mu2, a2) = centre(&fb, n2);
    let mean_term: f64 = mu1.iter().zip(&mu2).map(|(x, y)| (x - y) * (x - y)).sum();
    let tr1 = a1.iter().map(|x| x * x).sum::<f64>() / (n1 as f64 - 1.0);
    let tr2 = a2.iter().map(|x| x * x).sum::<f64>() / (n2 as f64 - 1.0);
    let mut c = vec![0.0; n1 * n2];
    linalg::gemm(
        &mut c,
        linalg::view(&a1, n1, d),
        linalg::view(&a2, n2, d).transpose(),
        1.0,
        false,
    );
    let nuclear: f64 = linalg::singular_values(&c, n1, n2)?.iter().sum();
    let norm = ((n1 as f64 - 1.0) * (n2 as f64 - 1.0)).sqrt();
    Ok(mean_term + tr1 + tr2 - 2.0 * nuclear / norm)
}
