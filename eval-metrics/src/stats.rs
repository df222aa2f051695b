//! Streaming, mergeable feature statistics (mean and covariance in f64) and their files.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use vidgen_video_core::{Error, Result};

use crate::linalg;
use crate::npy;

/// Reads a `[N, D]` feature tensor (any float dtype) into row-major f64, checking rank and
/// finiteness. `what` names the argument in errors.
pub(crate) fn features_f64(x: &Tensor, what: &str) -> Result<(Vec<f64>, usize, usize)> {
    let dims = x.dims();
    if dims.len() != 2 {
        return Err(Error::invalid(
            what,
            format!("expected a [N, D] feature matrix, found shape {dims:?}"),
        ));
    }
    if !x.dtype().is_float() {
        return Err(Error::DType {
            key: what.to_string(),
            expected: "f16, bf16, f32 or f64".into(),
            found: format!("{:?}", x.dtype()),
        });
    }
    let (n, d) = (dims[0], dims[1]);
    let v = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    check_finite_slice(&v, what)?;
    Ok((v, n, d))
}

/// [`Error::NonFinite`] if `v` holds NaN or ±inf.
pub(crate) fn check_finite_slice<T: Copy + Into<f64>>(v: &[T], what: &str) -> Result<()> {
    let (mut nan, mut inf) = (0usize, 0usize);
    for &a in v {
        let a: f64 = a.into();
        if a.is_nan() {
            nan += 1;
        } else if a.is_infinite() {
            inf += 1;
        }
    }
    if nan + inf > 0 {
        return Err(Error::NonFinite {
            location: what.to_string(),
            nan,
            inf,
            total: v.len(),
        });
    }
    Ok(())
}

/// A Gaussian summary of a feature set: mean `mu [D]` and covariance `sigma [D, D]` (row-major,
/// symmetric), in f64. This is what pytorch-fid / clean-fid `.npz` files and FID / FVD use.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianStats {
    dim: usize,
    mu: Vec<f64>,
    sigma: Vec<f64>,
}

impl GaussianStats {
    /// Builds statistics from a mean `[D]` and a row-major covariance `[D·D]`.
    ///
    /// # Shapes
    /// `mu`: `D` values; `sigma`: `D·D` values, row-major. Errors on other lengths, on
    /// non-finite values, and on an asymmetric `sigma` (relative asymmetry above 1e-8).
    pub fn new(mu: Vec<f64>, sigma: Vec<f64>) -> Result<Self> {
        let d = mu.len();
        if d == 0 {
            return Err(Error::invalid("mu", "empty mean vector"));
        }
        if sigma.len() != d * d {
            return Err(Error::shape("sigma", &[d, d], &[sigma.len()]));
        }
        check_finite_slice(&mu, "mu")?;
        check_finite_slice(&sigma, "sigma")?;
        let scale = sigma
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()))
            .max(f64::MIN_POSITIVE);
        for i in 0..d {
            for j in 0..i {
                let (a, b) = (sigma[i * d + j], sigma[j * d + i]);
                if (a - b).abs() > 1e-8 * scale {
                    return Err(Error::invalid(
                        "sigma",
                        format!("not symmetric: sigma[{i},{j}] = {a} but sigma[{j},{i}] = {b}"),
                    ));
                }
            }
        }
        Ok(Self { dim: d, mu, sigma })
    }

    /// Builds statistics from candle tensors `mu [D]`, `sigma [D, D]` (any float dtype).
    ///
    /// # Shapes
    /// `mu`: `[D]`; `sigma`: `[D, D]`.
    pub fn from_tensors(mu: &Tensor, sigma: &Tensor) -> Result<Self> {
        let d = mu
            .dims1()
            .map_err(|_| Error::invalid("mu", format!("expected [D], found {:?}", mu.dims())))?;
        if sigma.dims() != [d, d] {
            return Err(Error::shape("sigma", &[d, d], sigma.dims()));
        }
        let m = mu.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let s = sigma
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        Self::new(m, s)
    }

    /// The feature dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The mean, `D` values.
    pub fn mu(&self) -> &[f64] {
        &self.mu
    }

    /// The covariance, `D·D` values row-major.
    pub fn sigma(&self) -> &[f64] {
        &self.sigma
    }

    /// Reads pytorch-fid / clean-fid statistics: an `.npz` holding `mu` `[D]` and `sigma`
    /// `[D, D]` (float64 or float32, either byte order, C or Fortran order).
    pub fn load_npz(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_npz_bytes(&bytes).map_err(|e| match e {
            npy::NpyError(reason) => Error::Malformed {
                path: path.to_path_buf(),
                reason,
            },
        })
    }

    /// [`GaussianStats::load_npz`] from bytes in memory; the error is a plain reason.
    pub(crate) fn from_npz_bytes(bytes: &[u8]) -> std::result::Result<Self, npy::NpyError> {
        let arrays = npy::read_npz(bytes, &["mu", "sigma"])?;
        let (mu, mu_shape) = arrays
            .get("mu")
            .cloned()
            .ok_or_else(|| npy::NpyError("no `mu` array in the npz".into()))?;
        let (sigma, s_shape) = arrays
            .get("sigma")
            .cloned()
            .ok_or_else(|| npy::NpyError("no `sigma` array in the npz".into()))?;
        if mu_shape.len() != 1 {
            return Err(npy::NpyError(format!(
                "`mu` has shape {mu_shape:?}, expected [D]"
            )));
        }
        let d = mu_shape[0];
        if s_shape != [d, d] {
            return Err(npy::NpyError(format!(
                "`sigma` has shape {s_shape:?}, expected [{d}, {d}]"
            )));
        }
        Self::new(mu, sigma).map_err(|e| npy::NpyError(e.to_string()))
    }

    /// Writes `mu`, `sigma` (f64) to a safetensors file (no sample count: such a file can be
    /// compared but not merged).
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        write_stats(path.as_ref(), &self.mu, &self.sigma, None)
    }

    /// Reads `mu`, `sigma` from a safetensors file (written by this crate or by hand; any float
    /// dtype).
    pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Self> {
        let (g, _) = read_stats(path.as_ref())?;
        Ok(g)
    }
}

/// Streaming feature statistics: count, mean and co-moment matrix `Σ (x−μ)(x−μ)ᵀ`, all f64.
///
/// Batches are folded in with Chan et al.'s pairwise update (the batch's own centred co-moment
/// plus a rank-one correction), which is Welford's update for a batch of one. Neither step
/// forms `E[xxᵀ] − μμᵀ`, whose cancellation loses digits when |μ| ≫ σ. Shards built
/// independently combine with [`FeatureStats::merge`] to the same result as one pass (up to
/// rounding).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    dim: usize,
    count: u64,
    mean: Vec<f64>,
    comoment: Vec<f64>,
}

impl FeatureStats {
    /// Empty statistics for `dim`-dimensional features.
    pub fn new(dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid(
                "dim",
                "feature dimension must be at least 1",
            ));
        }
        Ok(Self {
            dim,
            count: 0,
            mean: vec![0.0; dim],
            comoment: vec![0.0; dim * dim],
        })
    }

    /// Statistics of one feature matrix.
    ///
    /// # Shapes
    /// `features`: `[N, D]`, any float dtype (computed in f64).
    pub fn from_features(features: &Tensor) -> Result<Self> {
        let (v, n, d) = features_f64(features, "features")?;
        let mut s = Self::new(d)?;
        s.add_rows(&v, n)?;
        Ok(s)
    }

    /// The feature dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of samples seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The running mean, `D` values.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The co-moment matrix `Σ (x−μ)(x−μ)ᵀ`, `D·D` values row-major.
    pub fn comoment(&self) -> &[f64] {
        &self.comoment
    }

    /// Statistics from their parts (`mean`: `D` values, `comoment`: `D·D`), as
    /// [`FeatureStats::mean`] and [`FeatureStats::comoment`] give them.
    ///
    /// # Errors
    /// Wrong lengths; non-finite values.
    pub fn from_parts(dim: usize, count: u64, mean: Vec<f64>, comoment: Vec<f64>) -> Result<Self> {
        let mut s = Self::new(dim)?;
        if mean.len() != dim || comoment.len() != dim * dim {
            return Err(Error::shape(
                "mean / comoment",
                &[dim, dim * dim],
                &[mean.len(), comoment.len()],
            ));
        }
        check_finite_slice(&mean, "mean")?;
        check_finite_slice(&comoment, "comoment")?;
        s.count = count;
        s.mean = mean;
        s.comoment = comoment;
        Ok(s)
    }

    /// Adds a batch of feature rows.
    ///
    /// # Shapes
    /// `features`: `[N, D]` with `D` = [`FeatureStats::dim`], any float dtype.
    pub fn update(&mut self, features: &Tensor) -> Result<()> {
        let (v, n, d) = features_f64(features, "features")?;
        if d != self.dim {
            return Err(Error::shape("features", &[n, self.dim], &[n, d]));
        }
        self.add_rows(&v, n)
    }

    /// Adds `n` rows given row-major in `rows` (`n · D` values).
    pub fn add_rows(&mut self, rows: &[f64], n: usize) -> Result<()> {
        let d = self.dim;
        if rows.len() != n * d {
            return Err(Error::shape("rows", &[n, d], &[rows.len()]));
        }
        if n == 0 {
            return Ok(());
        }
        check_finite_slice(rows, "features")?;
        // The batch's own mean and centred co-moment, then a pairwise merge.
        let mut mean = vec![0.0; d];
        for r in rows.chunks_exact(d) {
            for (m, &x) in mean.iter_mut().zip(r) {
                *m += x;
            }
        }
        let inv = 1.0 / n as f64;
        mean.iter_mut().for_each(|m| *m *= inv);
        let mut centred = rows.to_vec();
        for r in centred.chunks_exact_mut(d) {
            for (x, &m) in r.iter_mut().zip(&mean) {
                *x -= m;
            }
        }
        let mut comoment = vec![0.0; d * d];
        linalg::syrk_add(&mut comoment, &centred, n, d, 1.0);
        let batch = Self {
            dim: d,
            count: n as u64,
            mean,
            comoment,
        };
        self.merge(&batch)
    }

    /// Folds another shard's statistics into these (Chan et al. 1979):
    /// `M = Ma + Mb + δδᵀ·na·nb/n`, `μ = μa + δ·nb/n`, `δ = μb − μa`.
    pub fn merge(&mut self, other: &FeatureStats) -> Result<()> {
        if other.dim != self.dim {
            return Err(Error::shape("other", &[self.dim], &[other.dim]));
        }
        if other.count == 0 {
            return Ok(());
        }
        if self.count == 0 {
            *self = other.clone();
            return Ok(());
        }
        let d = self.dim;
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta: Vec<f64> = other
            .mean
            .iter()
            .zip(&self.mean)
            .map(|(b, a)| b - a)
            .collect();
        let f = na * nb / n;
        for i in 0..d {
            let di = delta[i] * f;
            let row = &mut self.comoment[i * d..(i + 1) * d];
            let orow = &other.comoment[i * d..(i + 1) * d];
            for j in 0..d {
                row[j] += orow[j] + di * delta[j];
            }
        }
        for (m, dl) in self.mean.iter_mut().zip(&delta) {
            *m += dl * nb / n;
        }
        self.count += other.count;
        Ok(())
    }

    /// The unbiased covariance (ddof 1, as `np.cov`), `D·D` values row-major.
    /// Errors with fewer than 2 samples.
    pub fn covariance(&self) -> Result<Vec<f64>> {
        if self.count < 2 {
            return Err(Error::invalid(
                "features",
                format!("a covariance needs at least 2 samples, have {}", self.count),
            ));
        }
        let s = 1.0 / (self.count as f64 - 1.0);
        Ok(self.comoment.iter().map(|v| v * s).collect())
    }

    /// The Gaussian summary `(μ, Σ)` used by [`crate::frechet_distance`].
    pub fn gaussian(&self) -> Result<GaussianStats> {
        let sigma = self.covariance()?;
        Ok(GaussianStats {
            dim: self.dim,
            mu: self.mean.clone(),
            sigma,
        })
    }

    /// Writes `mu [D]`, `sigma [D, D]` (f64, ddof 1) and `num_samples [1]` (i64) to a
    /// safetensors file. The file is also readable by [`GaussianStats::load_safetensors`]
    /// and by `safetensors.numpy.load_file`.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let sigma = self.covariance()?;
        write_stats(path.as_ref(), &self.mean, &sigma, Some(self.count))
    }

    /// Reads a file written by [`FeatureStats::save_safetensors`]; it needs `num_samples` to
    /// rebuild the co-moment matrix, so the result can be merged further.
    pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (g, count) = read_stats(path)?;
        let count = count.ok_or_else(|| Error::MissingTensor {
            key: "num_samples".into(),
            file: path.display().to_string(),
            nearest: vec![],
        })?;
        if count < 2 {
            return Err(Error::Malformed {
                path: path.to_path_buf(),
                reason: format!("num_samples = {count}, need at least 2"),
            });
        }
        let s = count as f64 - 1.0;
        Ok(Self {
            dim: g.dim,
            count,
            mean: g.mu,
            comoment: g.sigma.iter().map(|v| v * s).collect(),
        })
    }
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_stats(path: &Path, mu: &[f64], sigma: &[f64], count: Option<u64>) -> Result<()> {
    let d = mu.len();
    let mu_b = f64_bytes(mu);
    let sigma_b = f64_bytes(sigma);
    let count_b: Vec<u8> = count
        .map(|c| (c as i64).to_le_bytes().to_vec())
        .unwrap_or_default();
    let st = |e: safetensors::SafeTensorError| Error::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut views: Vec<(String, TensorView<'_>)> = vec![
        (
            "mu".into(),
            TensorView::new(StDtype::F64, vec![d], &mu_b).map_err(st)?,
        ),
        (
            "sigma".into(),
            TensorView::new(StDtype::F64, vec![d, d], &sigma_b).map_err(st)?,
        ),
    ];
    if count.is_some() {
        views.push((
            "num_samples".into(),
            TensorView::new(StDtype::I64, vec![1], &count_b).map_err(st)?,
        ));
    }
    let mut meta = HashMap::new();
    meta.insert(
        "format".to_string(),
        "eval-metrics/feature-stats".to_string(),
    );
    safetensors::serialize_to_file(views, Some(meta), path).map_err(st)
}

fn read_stats(path: &Path) -> Result<(GaussianStats, Option<u64>)> {
    let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu)?;
    let get = |k: &str| {
        map.get(k).ok_or_else(|| {
            let mut nearest: Vec<String> = map.keys().cloned().collect();
            nearest.sort();
            Error::MissingTensor {
                key: k.into(),
                file: path.display().to_string(),
                nearest,
            }
        })
    };
    let g = GaussianStats::from_tensors(get("mu")?, get("sigma")?)?;
    let count = match map.get("num_samples") {
        Some(t) => {
            let v = t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
            match v.as_slice() {
                [c] if *c >= 0 => Some(*c as u64),
                _ => {
                    return Err(Error::Malformed {
                        path: path.to_path_buf(),
                        reason: format!(
                            "`num_samples` must be one non-negative value, found {v:?}"
                        ),
                    })
                }
            }
        }
        None => None,
    };
    Ok((g, count))
}
