//! k-means (Lloyd) with k-means++ seeding, for codebook initialisation.

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vidgen_video_core::{check_finite, Error, Result};

use vidgen_video_kernels::PreparedCodebook;

/// A k-means clustering.
#[derive(Debug, Clone)]
pub struct KMeans {
    /// Centroids `[K, D]` f32 (CPU): the mean of each cluster's members.
    pub centroids: Tensor,
    /// Cluster of every input row, `[N]`.
    pub assignments: Vec<u32>,
    /// Members per cluster, `[K]`; every entry is ≥ 1.
    pub counts: Vec<usize>,
    /// Sum of squared distances of the rows to their centroids.
    pub inertia: f64,
    /// Lloyd iterations run (stops early when no assignment changes).
    pub iterations: usize,
}

/// Clusters the rows of `data [N, D]` into `k` clusters.
///
/// Seeding is k-means++ (first centre uniform, each next one drawn with probability ∝ the
/// squared distance to the nearest chosen centre) from `ChaCha8Rng::seed_from_u64(seed)`, so
/// results are reproducible. Each Lloyd iteration assigns rows with the fused nearest-code
/// search and moves centres to their cluster means. A cluster that comes out empty takes the
/// row farthest from its own centre among clusters with ≥ 2 members, so every returned cluster
/// has at least one member.
///
/// # Shapes
/// `data [N, D]` → centroids `[K, D]`, assignments `[N]`.
///
/// # Errors
/// `k = 0`, `N < k`, fewer than `k` distinct rows, non-finite values, wrong rank.
pub fn kmeans(data: &Tensor, k: usize, iters: usize, seed: u64) -> Result<KMeans> {
    let (n, d) = match data.dims() {
        &[n, d] if d > 0 => (n, d),
        dims => {
            return Err(Error::invalid(
                "k-means data",
                format!("expected [N, D] rows with D >= 1, got shape {dims:?}"),
            ))
        }
    };
    if k == 0 || n < k {
        return Err(Error::invalid(
            "k",
            format!("need 1 <= k <= N rows, got k = {k} with N = {n}"),
        ));
    }
    check_finite(data, "k-means data")?;
    let x = data.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let sq = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(p, q)| {
                let t = (*p - *q) as f64;
                t * t
            })
            .sum()
    };

    // k-means++ seeding.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut cent = Vec::with_capacity(k * d);
    let first = rng.random_range(0..n);
    cent.extend_from_slice(row(first));
    let mut d2: Vec<f64> = (0..n).map(|i| sq(row(i), row(first))).collect();
    for c in 1..k {
        let total: f64 = d2.iter().sum();
        if total <= 0.0 {
            return Err(Error::invalid(
                "k-means data",
                format!("only {c} distinct rows for k = {k} clusters"),
            ));
        }
        let mut target = rng.random_range(0.0..total);
        let mut pick = n - 1;
        for (i, &w) in d2.iter().enumerate() {
            if w > 0.0 && target < w {
                pick = i;
                break;
            }
            target -= w;
        }
        if d2[pick] <= 0.0 {
            // Rounding ran past the end: take the last row with positive weight.
            pick = d2.iter().rposition(|&w| w > 0.0).unwrap_or(pick);
        }
        cent.extend_from_slice(row(pick));
        let new = &cent[c * d..(c + 1) * d];
        for (i, w) in d2.iter_mut().enumerate() {
            *w = w.min(sq(row(i), new));
        }
    }

    let mut assign = vec![u32::MAX; n];
    let mut counts = vec![0usize; k];
    let mut iterations = 0;
    for it in 0..iters.max(1) {
        iterations = it + 1;
        let (ids, dist) = PreparedCodebook::new(&cent, k, d)?.nearest(&x)?;
        let changed = ids != assign;
        assign = ids;
        counts.iter_mut().for_each(|c| *c = 0);
        for &a in &assign {
            counts[a as usize] += 1;
        }
        fix_empty(&mut assign, &mut counts, &dist);
        // Move centres to the means of their members (f64 sums).
        let mut sums = vec![0f64; k * d];
        for (i, &a) in assign.iter().enumerate() {
            for (s, &v) in sums[a as usize * d..(a as usize + 1) * d]
                .iter_mut()
                .zip(row(i))
            {
                *s += v as f64;
            }
        }
        for c in 0..k {
            let m = counts[c] as f64;
            for j in 0..d {
                cent[c * d + j] = (sums[c * d + j] / m) as f32;
            }
        }
        if !changed && it > 0 {
            break;
        }
    }
    let inertia = (0..n)
        .map(|i| {
            let a = assign[i] as usize;
            sq(row(i), &cent[a * d..(a + 1) * d])
        })
        .sum();
    Ok(KMeans {
        centroids: crate::quantizer::cpu_tensor(cent, k, d)?,
        assignments: assign,
        counts,
        inertia,
        iterations,
    })
}

/// Gives every empty cluster the member farthest from its centre, taken from a cluster that
/// keeps at least one member. Needs `N ≥ K` (checked by the caller), which guarantees a donor.
fn fix_empty(assign: &mut [u32], counts: &mut [usize], dist: &[f32]) {
    let empty: Vec<usize> = (0..counts.len()).filter(|&c| counts[c] == 0).collect();
    if empty.is_empty() {
        return;
    }
    let mut order: Vec<usize> = (0..assign.len()).collect();
    order.sort_by(|&a, &b| dist[b].total_cmp(&dist[a]).then(a.cmp(&b)));
    let mut cand = order.into_iter();
    for c in empty {
        for i in cand.by_ref() {
            let from = assign[i] as usize;
            if counts[from] >= 2 {
                counts[from] -= 1;
                assign[i] = c as u32;
                counts[c] = 1;
                break;
            }
        }
    }
}
