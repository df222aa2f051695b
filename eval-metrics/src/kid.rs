//! Kernel Inception / Video Distance (KID, KVD): the unbiased MMD² between two feature sets
//! under the cubic polynomial kernel, averaged over random subsets as torch-fidelity does.

use candle_core::{DType, Tensor};
use rayon::prelude::*;
use video_core::{Error, Result};

use crate::stats::check_finite_slice;

/// The polynomial kernel `k(x, y) = (γ·x·y + c₀)^degree`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolynomialKernel {
    /// The degree (3 for KID / KVD).
    pub degree: i32,
    /// γ; `None` means `1 / D` (the KID convention).
    pub gamma: Option<f64>,
    /// c₀ (1 for KID / KVD).
    pub coef0: f64,
}

impl Default for PolynomialKernel {
    fn default() -> Self {
        Self {
            degree: 3,
            gamma: None,
            coef0: 1.0,
        }
    }
}

/// How the subsets of [`kernel_distance`] are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KidOptions {
    /// Number of subsets (torch-fidelity default 100).
    pub subsets: usize,
    /// Rows per subset, drawn without replacement from each set (default 1000).
    pub subset_size: usize,
    /// Seed of the subset sampler (torch-fidelity default 2020). Subsets are drawn exactly as
    /// `np.random.RandomState(seed).choice(n, subset_size, replace=False)`, features 1 then 2
    /// per subset, so the same seed gives torch-fidelity's subsets.
    pub seed: u32,
    /// The kernel.
    pub kernel: PolynomialKernel,
}

impl Default for KidOptions {
    fn default() -> Self {
        Self {
            subsets: 100,
            subset_size: 1000,
            seed: 2020,
            kernel: PolynomialKernel::default(),
        }
    }
}

/// Result of [`kernel_distance`]: the mean and population std (ddof 0) over subsets, and each
/// subset's MMD².
#[derive(Debug, Clone, PartialEq)]
pub struct KidResult {
    /// Mean of the subsets' unbiased MMD² (the KID / KVD value).
    pub mean: f64,
    /// Standard deviation over subsets, ddof 0 (as `np.std`).
    pub std: f64,
    /// Each subset's unbiased MMD².
    pub subset_values: Vec<f64>,
}

/// A feature matrix kept in its own precision: f32 features are multiplied in f32 (as
/// torch-fidelity does with float32 numpy), f64 in f64; kernel values are summed in f64.
enum Feats {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

struct Matrix {
    data: Feats,
    n: usize,
    d: usize,
}

fn matrix(x: &Tensor, what: &str) -> Result<Matrix> {
    let dims = x.dims();
    if dims.len() != 2 {
        return Err(Error::invalid(
            what,
            format!("expected a [N, D] feature matrix, found shape {dims:?}"),
        ));
    }
    let (n, d) = (dims[0], dims[1]);
    if d == 0 {
        return Err(Error::invalid(what, "feature dimension is 0"));
    }
    let data = match x.dtype() {
        DType::F64 => {
            let v = x.flatten_all()?.to_vec1::<f64>()?;
            check_finite_slice(&v, what)?;
            Feats::F64(v)
        }
        DType::F32 | DType::F16 | DType::BF16 => {
            let v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            check_finite_slice(&v, what)?;
            Feats::F32(v)
        }
        other => {
            return Err(Error::DType {
                key: what.into(),
                expected: "f16, bf16, f32 or f64".into(),
                found: format!("{other:?}"),
            })
        }
    };
    Ok(Matrix { data, n, d })
}

/// Rows per block of the strictly-lower Gram sums: block `[i0, i0+B)` is one product with rows
/// `[0, i0+B)`, so the work is about `1/2 + B/(2r)` of the full `r × r` product.
const GRAM_BLOCK: usize = 128;

/// Kernel sums of one pair of sets: (Σ_{i≠j} k(xi,xj), Σ_{i≠j} k(yi,yj), Σ k(xi,yj)).
macro_rules! kernel_sums_impl {
    ($name:ident, $t:ty, $gemm:path) => {
        #[allow(clippy::too_many_arguments)]
        fn $name<K: Fn(f64) -> f64>(
            x: &[$t],
            m: usize,
            y: &[$t],
            n: usize,
            d: usize,
            k: &K,
            threads: bool,
        ) -> Result<(f64, f64, f64)> {
            let lower_offdiag = |a: &[$t], r: usize| -> Result<f64> {
                let mut g = vec![0.0 as $t; GRAM_BLOCK.min(r) * r];
                let mut s = 0.0f64;
                for i0 in (0..r).step_by(GRAM_BLOCK) {
                    let i1 = (i0 + GRAM_BLOCK).min(r);
                    $gemm(&mut g, r, &a[i0 * d..], i1 - i0, a, i1, d, threads)?;
                    for i in i0..i1 {
                        let row = &g[(i - i0) * r..(i - i0) * r + i];
                        s += row.iter().map(|&v| k(v as f64)).sum::<f64>();
                    }
                }
                Ok(2.0 * s)
            };
            let sxx = lower_offdiag(x, m)?;
            let syy = lower_offdiag(y, n)?;
            let mut g = vec![0.0 as $t; m * n];
            $gemm(&mut g, n, x, m, y, n, d, threads)?;
            let sxy = g.iter().map(|&v| k(v as f64)).sum::<f64>();
            Ok((sxx, syy, sxy))
        }
    };
}
kernel_sums_impl!(kernel_sums_f32, f32, crate::linalg::gemm_abt_f32);
kernel_sums_impl!(kernel_sums_f64, f64, crate::linalg::gemm_abt_f64);

fn mmd2_from_sums(sxx: f64, syy: f64, sxy: f64, m: usize, n: usize) -> f64 {
    let (mf, nf) = (m as f64, n as f64);
    sxx / (mf * (mf - 1.0)) + syy / (nf * (nf - 1.0)) - 2.0 * sxy / (mf * nf)
}

fn gather<T: Copy>(src: &[T], d: usize, idx: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(idx.len() * d);
    for &i in idx {
        out.extend_from_slice(&src[i * d..(i + 1) * d]);
    }
    out
}

fn subset_sums<K: Fn(f64) -> f64>(
    x: &Matrix,
    y: &Matrix,
    ix: &[usize],
    iy: &[usize],
    k: &K,
    threads: bool,
) -> Result<(f64, f64, f64)> {
    let d = x.d;
    let (m, n) = (ix.len(), iy.len());
    let (sxx, syy, sxy) = match (&x.data, &y.data) {
        (Feats::F32(a), Feats::F32(b)) => {
            kernel_sums_f32(&gather(a, d, ix), m, &gather(b, d, iy), n, d, k, threads)?
        }
        (Feats::F64(a), Feats::F64(b)) => {
            kernel_sums_f64(&gather(a, d, ix), m, &gather(b, d, iy), n, d, k, threads)?
        }
        (Feats::F32(a), Feats::F64(b)) => {
            let a: Vec<f64> = gather(a, d, ix).iter().map(|&v| v as f64).collect();
            kernel_sums_f64(&a, m, &gather(b, d, iy), n, d, k, threads)?
        }
        (Feats::F64(a), Feats::F32(b)) => {
            let b: Vec<f64> = gather(b, d, iy).iter().map(|&v| v as f64).collect();
            kernel_sums_f64(&gather(a, d, ix), m, &b, n, d, k, threads)?
        }
    };
    Ok((sxx, syy, sxy))
}

fn subset_mmd2(
    x: &Matrix,
    y: &Matrix,
    ix: &[usize],
    iy: &[usize],
    kernel: &PolynomialKernel,
    threads: bool,
) -> Result<f64> {
    let d = x.d;
    let gamma = kernel.gamma.unwrap_or(1.0 / d as f64);
    let (c0, deg) = (kernel.coef0, kernel.degree);
    let (m, n) = (ix.len(), iy.len());
    // A concrete closure per degree (not `dyn Fn`, and `t·t·t` rather than `powi`) lets the
    // kernel sums over the m·n Gram entries inline and vectorise.
    let (sxx, syy, sxy) = match deg {
        3 => subset_sums(
            x,
            y,
            ix,
            iy,
            &|g: f64| {
                let t = g * gamma + c0;
                t * t * t
            },
            threads,
        )?,
        _ => subset_sums(x, y, ix, iy, &|g: f64| (g * gamma + c0).powi(deg), threads)?,
    };
    let v = mmd2_from_sums(sxx, syy, sxy, m, n);
    if !v.is_finite() {
        return Err(Error::NonFinite {
            location: "kernel MMD² (kernel values overflow)".into(),
            nan: usize::from(v.is_nan()),
            inf: usize::from(v.is_infinite()),
            total: 1,
        });
    }
    Ok(v)
}

fn check_pair(x: &Matrix, y: &Matrix) -> Result<()> {
    if x.d != y.d {
        return Err(Error::shape("features_2", &[y.n, x.d], &[y.n, y.d]));
    }
    Ok(())
}

/// The unbiased MMD² of two whole feature sets under `kernel`:
/// `Σ_{i≠j} k(xi,xj)/(m(m−1)) + Σ_{i≠j} k(yi,yj)/(n(n−1)) − 2 Σ k(xi,yj)/(mn)`
/// (torch-fidelity `mmd2(..., mmd_est="unbiased")` when m = n; the StyleGAN2-ADA / StyleGAN-V
/// KID / KVD loop computes the same value).
///
/// # Shapes
/// `features_1`: `[m, D]`, `features_2`: `[n, D]`, m, n ≥ 2; f16 / bf16 / f32 (matmuls in f32)
/// or f64.
pub fn mmd2_unbiased(
    features_1: &Tensor,
    features_2: &Tensor,
    kernel: &PolynomialKernel,
) -> Result<f64> {
    let x = matrix(features_1, "features_1")?;
    let y = matrix(features_2, "features_2")?;
    check_pair(&x, &y)?;
    for (n, w) in [(x.n, "features_1"), (y.n, "features_2")] {
        if n < 2 {
            return Err(Error::invalid(
                w,
                format!("need at least 2 samples, have {n}"),
            ));
        }
    }
    let ix: Vec<usize> = (0..x.n).collect();
    let iy: Vec<usize> = (0..y.n).collect();
    subset_mmd2(&x, &y, &ix, &iy, kernel, true)
}

/// KID / KVD as torch-fidelity's `kid_features_to_metric`: `opts.subsets` subsets of
/// `opts.subset_size` rows drawn without replacement from each set with a seeded
/// NumPy-compatible generator, unbiased MMD² per subset, then mean and std (ddof 0).
///
/// # Shapes
/// `features_1`: `[n1, D]`, `features_2`: `[n2, D]` with `subset_size ≤ min(n1, n2)`,
/// `subset_size ≥ 2`.
pub fn kernel_distance(
    features_1: &Tensor,
    features_2: &Tensor,
    opts: &KidOptions,
) -> Result<KidResult> {
    let x = matrix(features_1, "features_1")?;
    let y = matrix(features_2, "features_2")?;
    check_pair(&x, &y)?;
    let s = opts.subset_size;
    if s < 2 {
        return Err(Error::invalid(
            "subset_size",
            format!("must be at least 2, is {s}"),
        ));
    }
    if opts.subsets == 0 {
        return Err(Error::invalid("subsets", "must be at least 1"));
    }
    if s > x.n.min(y.n) {
        return Err(Error::invalid(
            "subset_size",
            format!(
                "{s} is larger than the smaller feature set ({} and {} samples)",
                x.n, y.n
            ),
        ));
    }
    let mut rng = NumpyRandomState::new(opts.seed);
    let mut idx1 = Vec::with_capacity(opts.subsets);
    let mut idx2 = Vec::with_capacity(opts.subsets);
    for _ in 0..opts.subsets {
        idx1.push(rng.choice_without_replacement(x.n, s)?);
        idx2.push(rng.choice_without_replacement(y.n, s)?);
    }
    run_subsets(&x, &y, &idx1, &idx2, &opts.kernel)
}

/// KID / KVD over explicitly given subsets (e.g. indices saved by a reference run).
///
/// # Shapes
/// `features_1`: `[n1, D]`, `features_2`: `[n2, D]`; `subsets_1[i]` indexes rows of
/// `features_1`, `subsets_2[i]` of `features_2`; every subset has ≥ 2 rows.
pub fn kernel_distance_with_subsets(
    features_1: &Tensor,
    features_2: &Tensor,
    subsets_1: &[Vec<usize>],
    subsets_2: &[Vec<usize>],
    kernel: &PolynomialKernel,
) -> Result<KidResult> {
    let x = matrix(features_1, "features_1")?;
    let y = matrix(features_2, "features_2")?;
    check_pair(&x, &y)?;
    if subsets_1.len() != subsets_2.len() || subsets_1.is_empty() {
        return Err(Error::invalid(
            "subsets",
            format!(
                "need the same non-zero number of subsets for both sets, have {} and {}",
                subsets_1.len(),
                subsets_2.len()
            ),
        ));
    }
    for (subs, n, name) in [(subsets_1, x.n, "subsets_1"), (subsets_2, y.n, "subsets_2")] {
        for (i, s) in subs.iter().enumerate() {
            if s.len() < 2 {
                return Err(Error::invalid(
                    name,
                    format!("subset {i} has {} rows, need ≥ 2", s.len()),
                ));
            }
            if let Some(&bad) = s.iter().find(|&&j| j >= n) {
                return Err(Error::invalid(
                    name,
                    format!("subset {i} has index {bad} ≥ {n} rows"),
                ));
            }
        }
    }
    run_subsets(&x, &y, subsets_1, subsets_2, kernel)
}

fn run_subsets(
    x: &Matrix,
    y: &Matrix,
    idx1: &[Vec<usize>],
    idx2: &[Vec<usize>],
    kernel: &PolynomialKernel,
) -> Result<KidResult> {
    // Subsets are independent: run them in parallel, each matmul single-threaded, which keeps
    // every core busy without the synchronisation of a parallel GEMM per subset.
    let values: Vec<f64> = idx1
        .par_iter()
        .zip(idx2.par_iter())
        .map(|(a, b)| subset_mmd2(x, y, a, b, kernel, false))
        .collect::<Result<Vec<f64>>>()?;
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    Ok(KidResult {
        mean,
        std: var.sqrt(),
        subset_values: values,
    })
}

/// NumPy's legacy `np.random.RandomState(seed)` (MT19937), enough to reproduce
/// `choice(n, k, replace=False)` = `permutation(n)[:k]` bit for bit.
#[derive(Debug, Clone)]
pub struct NumpyRandomState {
    mt: [u32; 624],
    idx: usize,
}

impl NumpyRandomState {
    /// `np.random.RandomState(seed)` for an integer seed.
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Self { mt, idx: 624 }
    }

    /// The next raw 32-bit output (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            self.twist();
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.mt[i] & UPPER) | (self.mt[(i + 1) % 624] & LOWER);
            let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.mt[i] = v;
        }
        self.idx = 0;
    }

    /// A uniform integer in `0..=max` by NumPy's masked rejection (`random_interval`).
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `permutation(n)`: a Fisher–Yates shuffle of `0..n` from the last element down.
    pub fn permutation(&mut self, n: usize) -> Result<Vec<usize>> {
        if n > u32::MAX as usize {
            return Err(Error::invalid("n", format!("{n} exceeds 2^32 − 1")));
        }
        let mut a: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u32) as usize;
            a.swap(i, j);
        }
        Ok(a)
    }

    /// `choice(n, k, replace=False)`.
    pub fn choice_without_replacement(&mut self, n: usize, k: usize) -> Result<Vec<usize>> {
        if k > n {
            return Err(Error::invalid(
                "k",
                format!("cannot draw {k} of {n} without replacement"),
            ));
        }
        let mut p = self.permutation(n)?;
        p.truncate(k);
        Ok(p)
    }
}
