//! [`ExampleBank`]: exact top-k cosine search over L2-normalised embeddings, by tiled matrix
//! products (`video-kernels`' checked gemm) and a running top-k per query, in parallel over
//! slices of the bank.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use vidgen_video_core::{Error, Result};
use vidgen_video_kernels::gemm::{gemm, Threads, View};

/// Top-k results for one query, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// Bank row indices, best first (ties broken by the smaller index).
    pub indices: Vec<usize>,
    /// Cosine similarities, in `[-1, 1]`, matching `indices`.
    pub scores: Vec<f32>,
}

/// A bank of example embeddings, L2-normalised once (in f32, on the host), searched exactly by
/// cosine similarity.
///
/// Rows with zero norm have similarity 0 to everything. The search computes `Q × chunk`
/// score tiles (`queries · chunkᵀ`, one gemm each) and keeps each query's best `k` in a sorted
/// list whose last entry is the threshold a new score must beat; slices of the bank run on
/// rayon's pool and their lists are merged. Nothing of size `Q × N` is ever materialised.
#[derive(Debug, Clone)]
pub struct ExampleBank {
    /// `[N, D]` row-major, unit rows (or zero rows).
    data: Arc<Vec<f32>>,
    n: usize,
    d: usize,
    device: Device,
    chunk: usize,
}

/// Normalises rows of a row-major `[n, d]` buffer in place (`x / ‖x‖`, zero rows stay zero).
fn normalise_rows(v: &mut [f32], d: usize) {
    for row in v.chunks_mut(d.max(1)) {
        let n = row
            .iter()
            .map(|x| (*x as f64) * (*x as f64))
            .sum::<f64>()
            .sqrt();
        if n > 1e-12 {
            let inv = (1.0 / n) as f32;
            row.iter_mut().for_each(|x| *x *= inv);
        } else {
            row.iter_mut().for_each(|x| *x = 0.0);
        }
    }
}

/// The rows of a rank-2 tensor as a host `Vec<f32>` (any float dtype), checked finite.
fn host_rows(x: &Tensor, name: &str, width: Option<usize>) -> Result<(Vec<f32>, usize, usize)> {
    let (n, d) = match (x.dims(), width) {
        (&[n, d], None) => (n, d),
        (&[n, d], Some(w)) if d == w => (n, d),
        (other, w) => return Err(Error::shape(name, &[1, w.unwrap_or(1)], other)),
    };
    if x.dtype().is_int() {
        return Err(Error::invalid(
            name,
            format!("expected float embeddings, found {:?}", x.dtype()),
        ));
    }
    vidgen_video_core::check_finite(x, name)?;
    let v = x
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((v, n, d))
}

impl ExampleBank {
    /// Default number of bank rows per score tile.
    pub const DEFAULT_CHUNK: usize = 256;

    /// Normalises and keeps `bank` (copied to the host; [`ExampleBank::rows`] returns tensors
    /// on `bank`'s device).
    ///
    /// # Shapes
    /// `bank [N, D]`, any float dtype (computed in f32).
    ///
    /// # Errors
    /// Not rank 2, empty, integer, or non-finite values.
    pub fn new(bank: &Tensor) -> Result<Self> {
        let (mut v, n, d) = host_rows(bank, "bank", None)?;
        if n == 0 || d == 0 {
            return Err(Error::invalid(
                "bank",
                format!("empty bank {:?}", bank.dims()),
            ));
        }
        normalise_rows(&mut v, d);
        Ok(Self {
            data: Arc::new(v),
            n,
            d,
            device: bank.device().clone(),
            chunk: Self::DEFAULT_CHUNK,
        })
    }

    /// A bank from row-major `[n, d]` host values (normalised here).
    ///
    /// # Errors
    /// `values.len() != n·d`, `n` or `d` zero, non-finite values.
    pub fn from_vec(values: Vec<f32>, n: usize, d: usize) -> Result<Self> {
        let t = Tensor::from_vec(values, (n, d), &Device::Cpu)
            .map_err(|e| Error::invalid("bank", e.to_string()))?;
        Self::new(&t)
    }

    /// Sets the number of bank rows per score tile (≥ 1): memory is `Q × chunk` scores per
    /// worker at a time.
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the bank is empty (never, after [`ExampleBank::new`]).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// The device [`ExampleBank::rows`] returns tensors on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Row `i`, normalised (`None` out of range).
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        (i < self.n).then(|| &self.data[i * self.d..(i + 1) * self.d])
    }

    /// Cosine similarity of rows `i` and `j` (`None` out of range).
    pub fn cosine(&self, i: usize, j: usize) -> Option<f32> {
        let (a, b) = (self.row(i)?, self.row(j)?);
        Some(dot(a, b))
    }

    /// Every row, normalised.
    ///
    /// # Shapes
    /// `[N, D]` f32 on [`ExampleBank::device`].
    ///
    /// # Errors
    /// Tensor construction.
    pub fn embeddings(&self) -> Result<Tensor> {
        Ok(
            Tensor::from_slice(self.data.as_slice(), (self.n, self.d), &Device::Cpu)?
                .to_device(&self.device)?,
        )
    }

    /// The `k` most cosine-similar bank rows for each query (`k` clipped to the bank size).
    ///
    /// # Shapes
    /// `queries [Q, D]` → `Q` results of `min(k, N)` entries.
    ///
    /// # Errors
    /// Not rank 2, a width other than the bank's, non-finite values.
    pub fn top_k(&self, queries: &Tensor, k: usize) -> Result<Vec<TopK>> {
        self.top_k_where(queries, k, &|_, _| true)
    }

    /// [`ExampleBank::top_k`] over the rows `keep(query, row)` accepts (asked only for rows
    /// good enough to enter the query's current top `k`): self-exclusion, filters on labels.
    /// Fewer than `k` entries come back when fewer rows are kept.
    ///
    /// # Shapes
    /// As [`ExampleBank::top_k`].
    ///
    /// # Errors
    /// As [`ExampleBank::top_k`].
    pub fn top_k_where(
        &self,
        queries: &Tensor,
        k: usize,
        keep: &(dyn Fn(usize, usize) -> bool + Sync),
    ) -> Result<Vec<TopK>> {
        let (mut q, nq, _) = host_rows(queries, "queries", Some(self.d))?;
        normalise_rows(&mut q, self.d);
        self.search_normalised(&q, nq, k, keep)
    }

    /// The search on normalised host queries `[nq, D]`.
    fn search_normalised(
        &self,
        q: &[f32],
        nq: usize,
        k: usize,
        keep: &(dyn Fn(usize, usize) -> bool + Sync),
    ) -> Result<Vec<TopK>> {
        let k = k.min(self.n);
        if nq == 0 || k == 0 {
            return Ok(vec![
                TopK {
                    indices: vec![],
                    scores: vec![]
                };
                nq
            ]);
        }
        // Slices of the bank, a few per thread so that uneven filters still balance.
        let threads = rayon::current_num_threads().max(1);
        let min_rows = self.chunk.max(1024);
        let parts = (self.n / min_rows).clamp(1, 4 * threads);
        let per = self.n.div_ceil(parts);
        let ranges: Vec<(usize, usize)> = (0..parts)
            .map(|p| (p * per, ((p + 1) * per).min(self.n)))
            .filter(|(a, b)| a < b)
            .collect();
        let partial: Vec<Vec<Vec<(f32, usize)>>> = ranges
            .par_iter()
            .map(|&(a, b)| self.search_range(q, nq, k, a, b, keep))
            .collect::<Result<_>>()?;
        // Merge the slices' lists (each sorted best first) per query.
        let mut out = Vec::with_capacity(nq);
        for qi in 0..nq {
            let mut list: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
            for part in &partial {
                for &item in &part[qi] {
                    insert_top(&mut list, k, item);
                }
            }
            out.push(TopK {
                indices: list.iter().map(|p| p.1).collect(),
                scores: list.iter().map(|p| p.0).collect(),
            });
        }
        Ok(out)
    }

    /// Top-k lists of every query over bank rows `a..b`.
    fn search_range(
        &self,
        q: &[f32],
        nq: usize,
        k: usize,
        a: usize,
        b: usize,
        keep: &(dyn Fn(usize, usize) -> bool + Sync),
    ) -> Result<Vec<Vec<(f32, usize)>>> {
        let d = self.d;
        let mut lists: Vec<Vec<(f32, usize)>> = vec![Vec::with_capacity(k + 1); nq];
        // Query blocks bound the tile's memory when Q is large.
        let qb = nq.min((1 << 18) / self.chunk.max(1)).max(1);
        let mut tile = vec![0f32; qb * self.chunk];
        let mut start = a;
        while start < b {
            let len = self.chunk.min(b - start);
            let mut q0 = 0;
            while q0 < nq {
                let m = qb.min(nq - q0);
                // tile[m × len] = queries[q0..q0+m] · bank[start..start+len]ᵀ
                gemm(
                    m,
                    len,
                    d,
                    &mut tile,
                    View::row_major(len),
                    q,
                    View::row_major(d).at(q0 * d),
                    &self.data,
                    View::col_major(d).at(start * d),
                    false,
                    Threads::One,
                )?;
                for (i, list) in lists[q0..q0 + m].iter_mut().enumerate() {
                    let row = &tile[i * len..(i + 1) * len];
                    let qi = q0 + i;
                    for (j, &s) in row.iter().enumerate() {
                        // Cheap reject against the current k-th best before anything else.
                        if list.len() == k {
                            match list.last() {
                                Some(&last) if !better((s, start + j), last) => continue,
                                _ => {}
                            }
                        }
                        if keep(qi, start + j) {
                            insert_top(list, k, (s, start + j));
                        }
                    }
                }
                q0 += m;
            }
            start += len;
        }
        Ok(lists)
    }

    /// The bank rows at `indices` (normalised), for building a VIMI context.
    ///
    /// # Shapes
    /// `len(indices) = k` → `[k, D]` on [`ExampleBank::device`].
    ///
    /// # Errors
    /// An index out of range.
    pub fn rows(&self, indices: &[usize]) -> Result<Tensor> {
        let mut v = Vec::with_capacity(indices.len() * self.d);
        for &i in indices {
            let r = self.row(i).ok_or_else(|| {
                Error::invalid(
                    "indices",
                    format!("{i} out of range for a bank of {}", self.n),
                )
            })?;
            v.extend_from_slice(r);
        }
        Ok(Tensor::from_vec(v, (indices.len(), self.d), &Device::Cpu)?.to_device(&self.device)?)
    }

    /// Greedy near-duplicate removal: walks `candidates` in order and keeps one unless its
    /// cosine similarity to a row already kept is at least `threshold`; stops after `limit`
    /// kept rows. Out-of-range candidates are skipped.
    pub fn dedup(&self, candidates: &[usize], threshold: f32, limit: usize) -> Vec<usize> {
        let mut kept: Vec<usize> = Vec::with_capacity(limit.min(candidates.len()));
        for &c in candidates {
            if kept.len() >= limit {
                break;
            }
            let Some(rc) = self.row(c) else { continue };
            let dup = kept
                .iter()
                .any(|&k| self.row(k).is_some_and(|rk| dot(rc, rk) >= threshold));
            if !dup {
                kept.push(c);
            }
        }
        kept
    }
}

/// `Σ a·b` in f32 with four accumulators (rows are unit vectors: no overflow).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Better = higher score, then smaller index.
pub(crate) fn better(a: (f32, usize), b: (f32, usize)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// Inserts `item` into the sorted `list` (best first), keeping at most `k` entries.
pub(crate) fn insert_top(list: &mut Vec<(f32, usize)>, k: usize, item: (f32, usize)) {
    if k == 0 {
        return;
    }
    if list.len() == k {
        match list.last() {
            Some(&last) if !better(item, last) => return,
            _ => {}
        }
    }
    let pos = list.partition_point(|&e| better(e, item));
    list.insert(pos, item);
    list.truncate(k);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute(bank: &[Vec<f32>], q: &[f32]) -> Vec<f64> {
        let nrm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let qn = nrm(q);
        bank.iter()
            .map(|r| {
                let rn = nrm(r);
                if rn == 0.0 || qn == 0.0 {
                    0.0
                } else {
                    r.iter()
                        .zip(q)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        / (rn * qn)
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(video_testkit::proptest_config(48))]
        /// Every returned score is the true cosine of its row and equals the i-th best true
        /// cosine (brute force in f64), with and without a filter, for any tile size.
        #[test]
        fn top_k_matches_brute_force(
            n in 1usize..70, d in 1usize..12, nq in 1usize..5, k in 0usize..10,
            chunk in 1usize..17, seed in any::<u64>(), zero_row in any::<bool>(),
            skip in 0usize..4,
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut bank: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..d).map(|_| rng.random_range(-1f32..1.0)).collect())
                .collect();
            if zero_row {
                bank[0] = vec![0.0; d];
            }
            let qs: Vec<Vec<f32>> = (0..nq)
                .map(|_| (0..d).map(|_| rng.random_range(-1f32..1.0)).collect())
                .collect();
            let flat: Vec<f32> = bank.iter().flatten().copied().collect();
            let bt = Tensor::from_vec(flat, (n, d), &Device::Cpu).unwrap();
            let qf: Vec<f32> = qs.iter().flatten().copied().collect();
            let qt = Tensor::from_vec(qf, (nq, d), &Device::Cpu).unwrap();
            let eb = ExampleBank::new(&bt).unwrap().with_chunk(chunk);
            // filter: drop rows ≡ query index (mod skip + 1) when skip > 0
            let keep = |qi: usize, row: usize| skip == 0 || row % (skip + 1) != qi % (skip + 1);
            for filtered in [false, true] {
                let res = if filtered {
                    eb.top_k_where(&qt, k, &keep).unwrap()
                } else {
                    eb.top_k(&qt, k).unwrap()
                };
                prop_assert_eq!(res.len(), nq);
                for (qi, (q, r)) in qs.iter().zip(&res).enumerate() {
                    let s = brute(&bank, q);
                    let mut sorted: Vec<f64> = s
                        .iter()
                        .enumerate()
                        .filter(|(row, _)| !filtered || keep(qi, *row))
                        .map(|(_, v)| *v)
                        .collect();
                    sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
                    prop_assert_eq!(r.indices.len(), k.min(sorted.len()));
                    for (i, (&idx, &sc)) in r.indices.iter().zip(&r.scores).enumerate() {
                        prop_assert!(!filtered || keep(qi, idx));
                        prop_assert!((s[idx] - sc as f64).abs() < 1e-5);
                        prop_assert!((sorted[i] - sc as f64).abs() < 1e-5);
                    }
                    let mut u = r.indices.clone();
                    u.sort_unstable();
                    u.dedup();
                    prop_assert_eq!(u.len(), r.indices.len());
                }
            }
        }
    }

    #[test]
    fn many_rows_use_several_slices_and_agree() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (n, d, nq) = (5000, 24, 7);
        let v: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1f32..1.0)).collect();
        let qv: Vec<f32> = (0..nq * d).map(|_| rng.random_range(-1f32..1.0)).collect();
        let bank = Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap();
        let q = Tensor::from_vec(qv, (nq, d), &Device::Cpu).unwrap();
        let a = ExampleBank::new(&bank)
            .unwrap()
            .with_chunk(64)
            .top_k(&q, 9)
            .unwrap();
        // reference: candle's matmul over the whole bank, sorted
        let bn = ExampleBank::new(&bank).unwrap().embeddings().unwrap();
        let qn = {
            let n = q.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
            q.broadcast_div(&n).unwrap()
        };
        let s = qn
            .matmul(&bn.t().unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (row, r) in s.iter().zip(&a) {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by(|&i, &j| row[j].partial_cmp(&row[i]).unwrap().then(i.cmp(&j)));
            for (got, want) in r.scores.iter().zip(idx.iter().take(9)) {
                assert!((got - row[*want]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn dedup_and_errors() {
        let dev = Device::Cpu;
        let bank = Tensor::new(
            &[
                [1f32, 0.0],
                [0.999, 0.01],
                [0.0, 1.0],
                [0.7, 0.7],
                [0.0, 0.0],
            ],
            &dev,
        )
        .unwrap();
        let eb = ExampleBank::new(&bank).unwrap();
        assert_eq!(eb.dedup(&[0, 1, 2, 3], 0.99, 10), vec![0, 2, 3]);
        assert_eq!(eb.dedup(&[1, 0, 2, 3, 9], 0.99, 2), vec![1, 2]);
        assert_eq!(eb.dedup(&[0, 3], 0.5, 10), vec![0]);
        assert_eq!(eb.cosine(4, 0), Some(0.0));
        assert!(eb.rows(&[5]).is_err());
        assert_eq!(eb.rows(&[2, 0]).unwrap().dims(), &[2, 2]);
        assert!(eb
            .top_k(&Tensor::ones((1, 3), DType::F32, &dev).unwrap(), 2)
            .is_err());
        assert!(eb
            .top_k(&Tensor::ones(2, DType::F32, &dev).unwrap(), 2)
            .is_err());
        let nan = Tensor::new(&[[f32::NAN, 1.0]], &dev).unwrap();
        assert!(eb.top_k(&nan, 2).is_err());
        assert!(ExampleBank::new(&nan).is_err());
        assert!(ExampleBank::new(&Tensor::zeros((0, 2), DType::F32, &dev).unwrap()).is_err());
        assert!(ExampleBank::new(&Tensor::zeros((2, 2), DType::U32, &dev).unwrap()).is_err());
        assert!(ExampleBank::from_vec(vec![1.0; 5], 2, 2).is_err());
        // k larger than the bank: clipped
        let r = eb
            .top_k(&Tensor::new(&[[1f32, 0.0]], &dev).unwrap(), 50)
            .unwrap();
        assert_eq!(r[0].indices.len(), 5);
        assert_eq!(r[0].indices[0], 0);
    }
}
