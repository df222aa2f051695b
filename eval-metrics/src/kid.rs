//! Kernel Inception / Video Distance (KID, KVD): the unbiased MMD² between two feature sets
//! under the cubic polynomial kernel, averaged over random subsets as torch-fidelity does.

use candle_core::{DType, Tensor};
use rayon::prelude::*;
use vidgen_video_core::{Error, Result};

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
    finite_mmd2(mmd2_from_sums(sxx, syy, sxy, m, n), "kernel MMD²")
}

/// `v`, or a non-finite error at `location` (kernel values overflowed).
fn finite_mmd2(v: f64, location: &str) -> Result<f64> {
    if !v.is_finite() {
        return Err(Error::NonFinite {
            location: format!("{location} (kernel values overflow)"),
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

/// The rows some subset uses, and each subset as an indicator column over them.
struct Union {
    /// Original row indices, ascending.
    rows: Vec<usize>,
    /// `rows.len() × subsets` row-major: 1 where the row is in the subset.
    indicator: Vec<f64>,
}

/// `None` when a subset repeats a row (the per-subset path then counts the copies as distinct
/// samples, which an indicator cannot express).
fn union_of(subsets: &[Vec<usize>], n: usize) -> Option<Union> {
    let s = subsets.len();
    let mut used = vec![false; n];
    for sub in subsets {
        for &i in sub {
            used[i] = true;
        }
    }
    let rows: Vec<usize> = (0..n).filter(|&i| used[i]).collect();
    let mut pos = vec![0usize; n];
    for (c, &r) in rows.iter().enumerate() {
        pos[r] = c;
    }
    let mut indicator = vec![0.0; rows.len() * s];
    for (k, sub) in subsets.iter().enumerate() {
        for &i in sub {
            let cell = &mut indicator[pos[i] * s + k];
            if *cell != 0.0 {
                return None;
            }
            *cell = 1.0;
        }
    }
    Some(Union { rows, indicator })
}

/// Whether one Gram matrix over the union of the subsets' rows costs fewer flops than a Gram
/// matrix per subset. The shared path also multiplies each kernel row by the f64 indicator
/// matrix (`2·subsets` flops per pair, weighted ×2 against f32 Gram flops) and evaluates the
/// kernel once per pair.
fn shared_gram_pays(
    ux: usize,
    uy: usize,
    idx1: &[Vec<usize>],
    idx2: &[Vec<usize>],
    d: usize,
) -> bool {
    let pairs = |a: usize, b: usize| {
        let (a, b) = (a as f64, b as f64);
        a * a / 2.0 + b * b / 2.0 + a * b
    };
    let per_subset: f64 = idx1
        .iter()
        .zip(idx2)
        .map(|(a, b)| pairs(a.len(), b.len()))
        .sum::<f64>()
        * 2.0
        * d as f64;
    let shared = pairs(ux, uy) * (2.0 * d as f64 + 4.0 * idx1.len() as f64 + 8.0);
    shared < per_subset
}

/// Rows per job of the shared-Gram path.
const SHARED_BLOCK: usize = 128;

type GemmAbt<T> = fn(&mut [T], usize, &[T], usize, &[T], usize, usize, bool) -> Result<()>;

/// Per-subset kernel sums `(Σ_{i≠j∈S₁} k(xi,xj), Σ_{i≠j∈S₂} k(yi,yj), Σ_{i∈S₁,j∈S₂} k(xi,yj))`
/// from Gram matrices over the union rows `xu` (`ux × d`) and `yu` (`uy × d`): every row block
/// of a Gram matrix becomes kernel values in f64, times the indicator matrix of the other side,
/// dotted with the block's own indicator rows. Each pair is computed once for all subsets,
/// where the per-subset path recomputes the pairs that subsets share.
#[allow(clippy::too_many_arguments)]
fn shared_sums<T, K>(
    xu: &[T],
    ux: usize,
    yu: &[T],
    uy: usize,
    d: usize,
    mx: &[f64],
    my: &[f64],
    s: usize,
    k: &K,
    gemm: GemmAbt<T>,
) -> Result<Vec<[f64; 3]>>
where
    T: Copy + Default + Into<f64> + Send + Sync,
    K: Fn(f64) -> f64 + Sync,
{
    // (which sum, first row): 0 = x·x (strict lower), 1 = y·y (strict lower), 2 = x·y.
    let mut jobs = Vec::new();
    for (kind, rows) in [(0usize, ux), (1, uy), (2, ux)] {
        jobs.extend((0..rows).step_by(SHARED_BLOCK).map(|i0| (kind, i0)));
    }
    let workers = rayon::current_num_threads().clamp(1, jobs.len().max(1));
    // Jobs are dealt round-robin so that every worker gets a mix of short and long lower-
    // triangle blocks, and each worker reuses its buffers (fresh multi-MiB buffers per job
    // cost page faults). Partial sums are kept per job and added in job order, so the result
    // does not depend on the thread count.
    let per_worker: Vec<Vec<(usize, Vec<f64>)>> = (0..workers)
        .into_par_iter()
        .map(|w| -> Result<Vec<(usize, Vec<f64>)>> {
            let mut g: Vec<T> = Vec::new();
            let mut kv: Vec<f64> = Vec::new();
            let mut r: Vec<f64> = Vec::new();
            let mut out = Vec::new();
            for j in (w..jobs.len()).step_by(workers) {
                let (kind, i0) = jobs[j];
                let (a, a_rows, ma) = if kind == 1 {
                    (yu, uy, my)
                } else {
                    (xu, ux, mx)
                };
                let (b, mb) = if kind == 0 { (xu, mx) } else { (yu, my) };
                let rows = SHARED_BLOCK.min(a_rows - i0);
                let cols = if kind == 2 { uy } else { i0 + rows };
                g.clear();
                g.resize(rows * cols, T::default());
                gemm(&mut g, cols, &a[i0 * d..], rows, b, cols, d, false)?;
                kv.clear();
                kv.extend(g.iter().map(|&v| k(v.into())));
                if kind != 2 {
                    for (q, row) in kv.chunks_exact_mut(cols).enumerate() {
                        row[i0 + q..].fill(0.0);
                    }
                }
                r.clear();
                r.resize(rows * s, 0.0);
                crate::linalg::gemm_ab_f64(&mut r, s, &kv, rows, &mb[..cols * s], s, cols, false)?;
                let mut part = vec![0.0f64; s];
                for (q, rr) in r.chunks_exact(s).enumerate() {
                    let own = &ma[(i0 + q) * s..(i0 + q + 1) * s];
                    for ((p, &v), &o) in part.iter_mut().zip(rr).zip(own) {
                        *p += o * v;
                    }
                }
                out.push((j, part));
            }
            Ok(out)
        })
        .collect::<Result<_>>()?;
    let mut by_job: Vec<Option<Vec<f64>>> = vec![None; jobs.len()];
    for (j, part) in per_worker.into_iter().flatten() {
        by_job[j] = Some(part);
    }
    let mut sums = vec![[0.0f64; 3]; s];
    for (j, part) in by_job.into_iter().enumerate() {
        let kind = jobs[j].0;
        for (acc, v) in sums.iter_mut().zip(part.unwrap_or_default()) {
            acc[kind] += v;
        }
    }
    for acc in &mut sums {
        acc[0] *= 2.0;
        acc[1] *= 2.0;
    }
    Ok(sums)
}

/// All subsets' MMD² through [`shared_sums`], or `None` when a subset repeats a row or the
/// per-subset Gram matrices are cheaper.
fn shared_subsets_mmd2(
    x: &Matrix,
    y: &Matrix,
    idx1: &[Vec<usize>],
    idx2: &[Vec<usize>],
    kernel: &PolynomialKernel,
    force: bool,
) -> Result<Option<Vec<f64>>> {
    let (Some(u1), Some(u2)) = (union_of(idx1, x.n), union_of(idx2, y.n)) else {
        return Ok(None);
    };
    let (ux, uy, d, s) = (u1.rows.len(), u2.rows.len(), x.d, idx1.len());
    if !force && !shared_gram_pays(ux, uy, idx1, idx2, d) {
        return Ok(None);
    }
    let gamma = kernel.gamma.unwrap_or(1.0 / d as f64);
    let (c0, deg) = (kernel.coef0, kernel.degree);
    macro_rules! run {
        ($xu:expr, $yu:expr, $gemm:path) => {
            match deg {
                3 => shared_sums(
                    &$xu,
                    ux,
                    &$yu,
                    uy,
                    d,
                    &u1.indicator,
                    &u2.indicator,
                    s,
                    &|g: f64| {
                        let t = g * gamma + c0;
                        t * t * t
                    },
                    $gemm,
                )?,
                _ => shared_sums(
                    &$xu,
                    ux,
                    &$yu,
                    uy,
                    d,
                    &u1.indicator,
                    &u2.indicator,
                    s,
                    &|g: f64| (g * gamma + c0).powi(deg),
                    $gemm,
                )?,
            }
        };
    }
    let to64 = |v: Vec<f32>| -> Vec<f64> { v.into_iter().map(f64::from).collect() };
    let sums = match (&x.data, &y.data) {
        (Feats::F32(a), Feats::F32(b)) => run!(
            gather(a, d, &u1.rows),
            gather(b, d, &u2.rows),
            crate::linalg::gemm_abt_f32
        ),
        (Feats::F64(a), Feats::F64(b)) => run!(
            gather(a, d, &u1.rows),
            gather(b, d, &u2.rows),
            crate::linalg::gemm_abt_f64
        ),
        (Feats::F32(a), Feats::F64(b)) => run!(
            to64(gather(a, d, &u1.rows)),
            gather(b, d, &u2.rows),
            crate::linalg::gemm_abt_f64
        ),
        (Feats::F64(a), Feats::F32(b)) => run!(
            gather(a, d, &u1.rows),
            to64(gather(b, d, &u2.rows)),
            crate::linalg::gemm_abt_f64
        ),
    };
    let mut values = Vec::with_capacity(s);
    for (i, [sxx, syy, sxy]) in sums.into_iter().enumerate() {
        let v = mmd2_from_sums(sxx, syy, sxy, idx1[i].len(), idx2[i].len());
        values.push(finite_mmd2(v, &format!("kernel MMD² of subset {i}"))?);
    }
    Ok(Some(values))
}

fn run_subsets(
    x: &Matrix,
    y: &Matrix,
    idx1: &[Vec<usize>],
    idx2: &[Vec<usize>],
    kernel: &PolynomialKernel,
) -> Result<KidResult> {
    let values = match shared_subsets_mmd2(x, y, idx1, idx2, kernel, false)? {
        Some(v) => v,
        None => per_subset_mmd2(x, y, idx1, idx2, kernel)?,
    };
    summarise(values)
}

fn per_subset_mmd2(
    x: &Matrix,
    y: &Matrix,
    idx1: &[Vec<usize>],
    idx2: &[Vec<usize>],
    kernel: &PolynomialKernel,
) -> Result<Vec<f64>> {
    // Subsets are independent: run them in parallel, each matmul single-threaded, which keeps
    // every core busy without the synchronisation of a parallel GEMM per subset.
    idx1.par_iter()
        .zip(idx2.par_iter())
        .map(|(a, b)| subset_mmd2(x, y, a, b, kernel, false))
        .collect::<Result<Vec<f64>>>()
}

fn summarise(values: Vec<f64>) -> Result<KidResult> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn features(seed: u64, n: usize, d: usize, f64s: bool) -> Matrix {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f64> = (0..n * d).map(|_| rng.random_range(-1.5..1.5)).collect();
        let data = if f64s {
            Feats::F64(v)
        } else {
            Feats::F32(v.iter().map(|&x| x as f32).collect())
        };
        Matrix { data, n, d }
    }

    /// The shared-Gram path gives the per-subset path's values, on every dtype pairing, with
    /// uneven set sizes, blocks that do not divide the union, rows no subset uses, and a
    /// non-default kernel.
    #[test]
    fn shared_gram_matches_per_subset() {
        let mut rng = NumpyRandomState::new(7);
        for (dx, dy) in [(false, false), (true, true), (false, true), (true, false)] {
            let x = features(1, 300, 24, dx);
            let y = features(2, 271, 24, dy);
            let mut i1 = Vec::new();
            let mut i2 = Vec::new();
            for s in 0..9 {
                // Subsets avoid the last rows, so the union is smaller than the sets.
                i1.push(rng.choice_without_replacement(290, 140 + s).unwrap());
                i2.push(rng.choice_without_replacement(260, 150 - s).unwrap());
            }
            for kernel in [
                PolynomialKernel::default(),
                PolynomialKernel {
                    degree: 2,
                    gamma: Some(0.3),
                    coef0: 0.5,
                },
            ] {
                let shared = shared_subsets_mmd2(&x, &y, &i1, &i2, &kernel, true)
                    .unwrap()
                    .expect("no repeated rows");
                let each = per_subset_mmd2(&x, &y, &i1, &i2, &kernel).unwrap();
                let tol = if dx || dy { 1e-9 } else { 1e-4 };
                for (a, b) in shared.iter().zip(&each) {
                    let scale = a.abs().max(b.abs()).max(1e-3);
                    assert!(
                        (a - b).abs() <= tol * scale,
                        "{dx} {dy} {kernel:?}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn repeated_rows_take_the_per_subset_path() {
        let x = features(3, 20, 4, true);
        let y = features(4, 20, 4, true);
        let i1 = vec![vec![0, 1, 1, 2]];
        let i2 = vec![vec![0, 1, 2, 3]];
        let shared =
            shared_subsets_mmd2(&x, &y, &i1, &i2, &PolynomialKernel::default(), true).unwrap();
        assert!(shared.is_none());
    }

    #[test]
    fn the_cost_model_picks_shared_for_torch_fidelity_defaults_only() {
        let sub = |n: usize, k: usize, s: usize| -> Vec<Vec<usize>> {
            let mut rng = NumpyRandomState::new(2020);
            (0..s)
                .map(|_| rng.choice_without_replacement(n, k).unwrap())
                .collect()
        };
        // 100 × 1000 of 5000 at d = 2048: one Gram over all 5000 rows is ~4× fewer flops.
        let i = sub(5000, 1000, 100);
        assert!(shared_gram_pays(5000, 5000, &i, &i, 2048));
        // One subset of everything: the indicator product is pure overhead.
        let all = vec![(0..5000).collect::<Vec<_>>()];
        assert!(!shared_gram_pays(5000, 5000, &all, &all, 2048));
        // Two small subsets of a large set.
        let few = sub(50_000, 1000, 2);
        assert!(!shared_gram_pays(2000, 2000, &few, &few, 2048));
    }
}
