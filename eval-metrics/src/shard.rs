//! Sharded evaluation: feature statistics and feature rows of shards of a dataset, combined
//! into what one process over the whole dataset computes.
//!
//! - Over a process group ([`vidgen_collective::Collective`], e.g. MPI ranks):
//!   [`merge_stats_across`] merges every rank's [`FeatureStats`] exactly (Chan's pairwise
//!   merge, in rank order) and [`gather_features`] concatenates every rank's feature rows in
//!   rank order.
//! - By files, for a batch scheduler instead of MPI: each job writes a [`Partial`]
//!   ([`Partial::save`]: statistics with the co-moment matrix itself, not a rounded
//!   covariance, and the feature rows, for shard `i` of `n`); [`merge_partials`] checks that
//!   shards `0..n` are each there once and combines them in shard order.
//!
//! Give shard `i` of `n` the items [`vidgen_collective::shard_range`]`(len, i, n)` of the
//! dataset in its natural order: the combined rows are then in the single pass's order.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use vidgen_collective::Collective;
use vidgen_video_core::{Error, Result};

use crate::FeatureStats;

impl FeatureStats {
    /// The statistics as one flat buffer, exactly: `[dim, count, mean (dim), co-moment
    /// (dim · dim)]`.
    pub fn to_buffer(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(2 + self.dim() * (self.dim() + 1));
        v.push(self.dim() as f64);
        v.push(self.count() as f64);
        v.extend_from_slice(self.mean());
        v.extend_from_slice(self.comoment());
        v
    }

    /// Reads [`FeatureStats::to_buffer`]'s layout.
    ///
    /// # Errors
    /// A buffer of the wrong length or with a non-integral dimension or count.
    pub fn from_buffer(v: &[f64]) -> Result<Self> {
        let bad = |why: &str| Error::invalid("feature statistics buffer", why.to_string());
        let (&d, &n) = (
            v.first().ok_or_else(|| bad("empty"))?,
            v.get(1).ok_or_else(|| bad("no count"))?,
        );
        if d < 1.0 || d.fract() != 0.0 || n < 0.0 || n.fract() != 0.0 {
            return Err(bad("dimension and count must be whole numbers"));
        }
        let d = d as usize;
        if v.len() != 2 + d * (d + 1) {
            return Err(bad(&format!("{} values for dimension {d}", v.len())));
        }
        Self::from_parts(d, n as u64, v[2..2 + d].to_vec(), v[2 + d..].to_vec())
    }
}

/// Every rank's statistics merged (rank 0's first), the same on every rank.
///
/// # Errors
/// Ranks with different feature dimensions; backend failures.
pub fn merge_stats_across(group: &dyn Collective, local: &FeatureStats) -> Result<FeatureStats> {
    let all = group.all_gather_f64(&local.to_buffer())?;
    let mut merged = FeatureStats::new(local.dim())?;
    for b in &all {
        merged.merge(&FeatureStats::from_buffer(b)?)?;
    }
    Ok(merged)
}

/// Every rank's feature rows `[n_r, D]` concatenated in rank order (f32, exact), on every
/// rank.
///
/// # Errors
/// Not a matrix; ranks with different `D`; backend failures.
pub fn gather_features(group: &dyn Collective, rows: &Tensor) -> Result<Tensor> {
    let (_, d) = rows.dims2()?;
    let v: Vec<f64> = rows.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let all = group.all_gather_f64(&v)?;
    let mut out = Vec::with_capacity(all.iter().map(Vec::len).sum());
    for (r, b) in all.iter().enumerate() {
        if b.len() % d != 0 {
            return Err(Error::invalid(
                "features",
                format!("rank {r} sent {} values, not rows of {d}", b.len()),
            ));
        }
        out.extend(b.iter().map(|&x| x as f32));
    }
    let n = out.len() / d;
    Ok(Tensor::from_vec(out, (n, d), &Device::Cpu)?)
}

/// One shard's results for one or more feature sets (e.g. the real and the generated videos
/// of an FVD), as written by one job of a sharded evaluation.
#[derive(Debug, Clone)]
pub struct Partial {
    /// This shard, `(i, n)`.
    pub shard: (usize, usize),
    /// What was measured (`fid`, `fvd`, …), so that shards of different runs do not mix.
    pub metric: String,
    /// Per feature set: its statistics and its feature rows `[n_i, D]` (f32).
    pub sets: Vec<(FeatureStats, Tensor)>,
}

fn st_err(path: &Path) -> impl Fn(safetensors::SafeTensorError) -> Error + '_ {
    move |e| Error::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl Partial {
    /// Writes the shard as safetensors: per set `k`, `set{k}.count` (i64), `set{k}.mean` and
    /// `set{k}.comoment` (f64) and `set{k}.features` (f32 `[n, D]`); the shard and metric in
    /// the header's metadata.
    ///
    /// # Errors
    /// I/O; an empty set (nothing to merge).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut bufs: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (k, (s, f)) in self.sets.iter().enumerate() {
            let d = s.dim();
            let feats: Vec<f32> = f.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            let n = feats.len() / d.max(1);
            let le = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            bufs.push((
                format!("set{k}.count"),
                StDtype::I64,
                vec![1],
                (s.count() as i64).to_le_bytes().to_vec(),
            ));
            bufs.push((format!("set{k}.mean"), StDtype::F64, vec![d], le(s.mean())));
            bufs.push((
                format!("set{k}.comoment"),
                StDtype::F64,
                vec![d, d],
                le(s.comoment()),
            ));
            bufs.push((
                format!("set{k}.features"),
                StDtype::F32,
                vec![n, d],
                feats.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
        }
        let views: Vec<(String, TensorView<'_>)> = bufs
            .iter()
            .map(|(k, dt, shape, b)| {
                Ok((
                    k.clone(),
                    TensorView::new(*dt, shape.clone(), b).map_err(st_err(path))?,
                ))
            })
            .collect::<Result<_>>()?;
        let meta: HashMap<String, String> = [
            (
                "shard".to_string(),
                format!("{}/{}", self.shard.0, self.shard.1),
            ),
            ("metric".to_string(), self.metric.clone()),
            ("sets".to_string(), self.sets.len().to_string()),
        ]
        .into_iter()
        .collect();
        safetensors::serialize_to_file(views, Some(meta), path).map_err(st_err(path))
    }

    /// Reads a file written by [`Partial::save`].
    ///
    /// # Errors
    /// I/O; not such a file (named).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let malformed = |why: String| Error::Malformed {
            path: path.to_path_buf(),
            reason: why,
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(st_err(path))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| malformed(format!("no `{k}` in the metadata: not a shard file")))
        };
        let shard = vidgen_collective::parse_shard(&get("shard")?)?;
        let metric = get("metric")?;
        let n_sets: usize = get("sets")?
            .parse()
            .map_err(|_| malformed("`sets` is not a count".into()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(st_err(path))?;
        let tensor = |k: &str, dt: StDtype| -> Result<(Vec<usize>, Vec<u8>)> {
            let v = st
                .tensor(k)
                .map_err(|_| malformed(format!("no tensor `{k}`")))?;
            if v.dtype() != dt {
                return Err(malformed(format!(
                    "`{k}` is {:?}, expected {dt:?}",
                    v.dtype()
                )));
            }
            Ok((v.shape().to_vec(), v.data().to_vec()))
        };
        let f64s = |b: &[u8]| -> Vec<f64> {
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect()
        };
        let mut sets = Vec::with_capacity(n_sets);
        for k in 0..n_sets {
            let (_, count) = tensor(&format!("set{k}.count"), StDtype::I64)?;
            let count = i64::from_le_bytes(
                count
                    .get(..8)
                    .and_then(|c| c.try_into().ok())
                    .ok_or_else(|| malformed("empty count".into()))?,
            );
            let (ms, mean) = tensor(&format!("set{k}.mean"), StDtype::F64)?;
            let (_, com) = tensor(&format!("set{k}.comoment"), StDtype::F64)?;
            let (fs, feats) = tensor(&format!("set{k}.features"), StDtype::F32)?;
            let d = ms.first().copied().unwrap_or(0);
            let stats = FeatureStats::from_parts(d, count.max(0) as u64, f64s(&mean), f64s(&com))
                .map_err(|e| malformed(e.to_string()))?;
            let rows: Vec<f32> = feats
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if fs.len() != 2
                || fs[1] != d
                || rows.len() != fs[0] * d
                || fs[0] as u64 != stats.count()
            {
                return Err(malformed(format!(
                    "set{k}.features {fs:?} does not match {} rows of {d}",
                    stats.count()
                )));
            }
            sets.push((stats, Tensor::from_vec(rows, (fs[0], d), &Device::Cpu)?));
        }
        Ok(Self {
            shard,
            metric,
            sets,
        })
    }
}

/// Combines the shards of one run: checks that they are shards `0..n` of the same `n`, each
/// once, of the same metric and sets; merges the statistics and concatenates the feature rows
/// in shard order.
///
/// # Errors
/// A missing, repeated or foreign shard (named); mismatched sets.
pub fn merge_partials(parts: &[Partial]) -> Result<Partial> {
    let first = parts
        .first()
        .ok_or_else(|| Error::invalid("shards", "no shard file given"))?;
    let n = first.shard.1;
    let mut order: Vec<Option<&Partial>> = vec![None; n];
    for p in parts {
        if p.shard.1 != n || p.metric != first.metric || p.sets.len() != first.sets.len() {
            return Err(Error::invalid(
                "shards",
                format!(
                    "shard {}/{} of `{}` with {} sets does not belong with shard {}/{n} of `{}` with {}",
                    p.shard.0, p.shard.1, p.metric, p.sets.len(), first.shard.0, first.metric, first.sets.len()
                ),
            ));
        }
        if order[p.shard.0].replace(p).is_some() {
            return Err(Error::invalid(
                "shards",
                format!("shard {}/{n} given twice", p.shard.0),
            ));
        }
    }
    let missing: Vec<String> = order
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_none())
        .map(|(i, _)| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid(
            "shards",
            format!("missing {}", missing.join(", ")),
        ));
    }
    let mut sets = Vec::with_capacity(first.sets.len());
    for k in 0..first.sets.len() {
        let mut stats = FeatureStats::new(first.sets[k].0.dim())?;
        let mut rows = Vec::with_capacity(n);
        for p in order.iter().flatten() {
            stats.merge(&p.sets[k].0)?;
            rows.push(p.sets[k].1.clone());
        }
        sets.push((stats, Tensor::cat(&rows, 0)?));
    }
    Ok(Partial {
        shard: (0, 1),
        metric: first.metric.clone(),
        sets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, d: usize, seed: u64) -> Result<Tensor> {
        let v: Vec<f32> = (0..n * d)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32) / 100.0 - 5.0)
            .collect();
        Ok(Tensor::from_vec(v, (n, d), &Device::Cpu)?)
    }

    #[test]
    fn shards_round_trip_and_merge_to_the_whole() -> Result<()> {
        let all = rows(11, 3, 1)?;
        let whole = FeatureStats::from_features(&all)?;
        let b = whole.to_buffer();
        assert_eq!(FeatureStats::from_buffer(&b)?, whole);
        assert!(FeatureStats::from_buffer(&b[..b.len() - 1]).is_err());
        assert!(FeatureStats::from_buffer(&[]).is_err());
        let dir = std::env::temp_dir().join(format!("vidgen-shard-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        let mut parts = Vec::new();
        for i in (0..3).rev() {
            let r = vidgen_collective::shard_range(11, i, 3);
            let f = all.narrow(0, r.start, r.len())?;
            let p = Partial {
                shard: (i, 3),
                metric: "fvd".into(),
                sets: vec![(FeatureStats::from_features(&f)?, f)],
            };
            let path = dir.join(format!("{i}.safetensors"));
            p.save(&path)?;
            parts.push(Partial::load(&path)?);
        }
        let m = merge_partials(&parts)?;
        let (s, f) = &m.sets[0];
        assert_eq!(f.to_vec2::<f32>()?, all.to_vec2::<f32>()?);
        assert_eq!(s.count(), 11);
        for (a, b) in s.comoment().iter().zip(whole.comoment()) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0));
        }
        assert!(merge_partials(&parts[..2]).is_err());
        let g = vidgen_collective::Local;
        assert_eq!(merge_stats_across(&g, &whole)?, whole);
        assert_eq!(
            gather_features(&g, &all)?.to_vec2::<f32>()?,
            all.to_vec2::<f32>()?
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
