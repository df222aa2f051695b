//! A preallocated key/value cache for incremental decoding.

use candle_core::{DType, Device, Tensor};
use vidgen_video_core::{Error, Result};

use crate::config::LlamaConfig;

/// Keys and values of every layer for the positions seen so far, written in place.
///
/// Each layer owns two `[B, kv_heads, capacity, head_dim]` buffers. A forward call writes its
/// new keys / values in place at positions `len .. len + T` and attends over the first
/// `len + T` positions; appending beyond `max_len` is an error that says how long the cache is
/// and what was asked for.
///
/// Buffers are made on first use: the first call into an empty layer keeps that call's key /
/// value tensors as the buffers (a prompt's prefill copies nothing), and the first call that
/// does not fit grows them once to `max_len` (one copy of what is stored). Why: a fresh
/// `max_len` buffer costs a page fault per 4 KiB on first write, which made the cache writes
/// of a 512-token prefill cost 1 ms per layer; reused caches ([`KvCache::reset`],
/// [`KvCache::truncate`]) keep their buffers.
///
/// Not `Clone`: the buffers are written in place, so a shallow copy would alias them; use
/// [`KvCache::try_clone`] for an independent copy.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
    len: usize,
    max_len: usize,
    batch: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    device: Device,
}

impl KvCache {
    /// An empty cache for `batch` sequences of at most `max_len` positions, in `dtype` on
    /// `device` (use the model's dtype).
    ///
    /// Memory: at most `2 · layers · batch · kv_heads · max_len · head_dim` values, allocated
    /// as positions arrive (see the type's docs).
    pub fn new(
        cfg: &LlamaConfig,
        batch: usize,
        max_len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if batch == 0 || max_len == 0 {
            return Err(Error::invalid(
                "kv cache",
                format!("batch ({batch}) and max_len ({max_len}) must be >= 1"),
            ));
        }
        Ok(KvCache {
            k: vec![None; cfg.num_hidden_layers],
            v: vec![None; cfg.num_hidden_layers],
            len: 0,
            max_len,
            batch,
            kv_heads: cfg.kv_heads(),
            head_dim: cfg.head_dim(),
            dtype,
            device: device.clone(),
        })
    }

    /// An independent deep copy (e.g. to branch generation from a shared prompt).
    pub fn try_clone(&self) -> Result<Self> {
        let copy = |ts: &[Option<Tensor>]| -> Result<Vec<Option<Tensor>>> {
            ts.iter()
                .map(|t| t.as_ref().map(|t| Ok(t.copy()?)).transpose())
                .collect()
        };
        Ok(KvCache {
            k: copy(&self.k)?,
            v: copy(&self.v)?,
            len: self.len,
            max_len: self.max_len,
            batch: self.batch,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            dtype: self.dtype,
            device: self.device.clone(),
        })
    }

    /// Positions stored so far (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The capacity in positions.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The batch size the cache was made for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Forgets every position (the buffers are kept).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Drops positions from `len` on, keeping the first `len` (e.g. to reuse a prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Checks that `new` more positions fit.
    pub(crate) fn check_room(&self, batch: usize, new: usize) -> Result<()> {
        if batch != self.batch {
            return Err(Error::invalid(
                "kv cache",
                format!("made for batch {}, used with batch {batch}", self.batch),
            ));
        }
        if self.len + new > self.max_len {
            return Err(Error::invalid(
                "kv cache",
                format!(
                    "full: holds {} of at most {} positions, cannot append {new} more \
                     (make the cache with a larger max_len)",
                    self.len, self.max_len
                ),
            ));
        }
        Ok(())
    }

    /// Writes `k`, `v` of `layer` at the current position and returns the keys / values of all
    /// positions so far. Does not advance [`KvCache::len`]; [`KvCache::advance`] does, once all
    /// layers are written.
    ///
    /// `k` and `v` must not share storage with a tensor that outlives the call: the cache may
    /// keep them as its buffers and write into them later (the model's rope / head-split
    /// outputs are fresh tensors).
    ///
    /// # Shapes
    /// `k`, `v`: `[B, kv_heads, T, head_dim]`; returns two `[B, kv_heads, len + T, head_dim]`
    /// views of the buffers.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        self.check_room(k.dim(0)?, t)?;
        let want = [self.batch, self.kv_heads, t, self.head_dim];
        for (x, what) in [(k, "kv cache keys"), (v, "kv cache values")] {
            if x.dims() != want {
                return Err(Error::shape(what, &want, x.dims()));
            }
            if x.dtype() != self.dtype {
                return Err(Error::DType {
                    key: what.into(),
                    expected: format!("{:?}", self.dtype),
                    found: format!("{:?}", x.dtype()),
                });
            }
        }
        let layers = self.k.len();
        let (len, max_len) = (self.len, self.max_len);
        let (kb, vb) = match (self.k.get_mut(layer), self.v.get_mut(layer)) {
            (Some(kb), Some(vb)) => (kb, vb),
            _ => {
                return Err(Error::invalid(
                    "kv cache",
                    format!("has {layers} layers, layer {layer} asked for"),
                ))
            }
        };
        let n = len + t;
        for (buf, x) in [(kb, k), (vb, v)] {
            let cap = buf.as_ref().map(|b| b.dim(2)).transpose()?.unwrap_or(0);
            if len == 0 && cap < t {
                // Adopt this call's tensor as the buffer: nothing stored yet, nothing to copy.
                *buf = Some(x.contiguous()?);
                continue;
            }
            if cap < n {
                let mut shape = want;
                shape[2] = max_len;
                let grown = Tensor::zeros(&shape[..], self.dtype, &self.device)?;
                if let Some(old) = buf.as_ref() {
                    if len > 0 {
                        grown.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                    }
                }
                *buf = Some(grown);
            }
            if let Some(b) = buf.as_ref() {
                b.slice_set(&x.contiguous()?, 2, len)?;
            }
        }
        match (&self.k[layer], &self.v[layer]) {
            (Some(kb), Some(vb)) => Ok((kb.narrow(2, 0, n)?, vb.narrow(2, 0, n)?)),
            _ => Err(Error::invalid("kv cache", "buffer missing after append")),
        }
    }

    /// Marks `t` more positions as stored.
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn kv(t: usize, start: f32) -> Tensor {
        let n = 2 * t * 4;
        let v: Vec<f32> = (0..n).map(|i| start + i as f32).collect();
        Tensor::from_vec(v, (1, 2, t, 4), &Device::Cpu).unwrap()
    }

    fn rows(x: &Tensor) -> Vec<Vec<Vec<f32>>> {
        x.squeeze(0).unwrap().to_vec3::<f32>().unwrap()
    }

    /// Adopting the first call's tensors, growing on the first call that does not fit,
    /// rewriting after `truncate`, reuse after `reset`, and independent `try_clone` copies all
    /// return exactly what a concatenation of the appended positions would.
    #[test]
    fn adopt_grow_truncate_reset_clone() {
        let cfg = LlamaConfig::tiny(16, 8, 1, 2, 2);
        let mut c = KvCache::new(&cfg, 1, 6, DType::F32, &Device::Cpu).unwrap();
        let (a, b, x) = (kv(3, 0.0), kv(1, 100.0), kv(2, 200.0));
        let (k, _) = c.append(0, &a, &a).unwrap();
        assert_eq!(rows(&k), rows(&a));
        c.advance(3);
        let (k, v) = c.append(0, &b, &b).unwrap();
        let want = Tensor::cat(&[&a, &b], 2).unwrap();
        assert_eq!(rows(&k), rows(&want));
        assert_eq!(rows(&v), rows(&want));
        c.advance(1);
        assert_eq!(
            c.k[0].as_ref().unwrap().dim(2).unwrap(),
            6,
            "grown to max_len"
        );
        let snapshot = c.try_clone().unwrap();
        c.truncate(2);
        let (k, _) = c.append(0, &x, &x).unwrap();
        let want2 = Tensor::cat(&[&a.narrow(2, 0, 2).unwrap(), &x], 2).unwrap();
        assert_eq!(rows(&k), rows(&want2));
        // The clone still holds the positions before the truncation.
        let ck = snapshot.k[0].as_ref().unwrap().narrow(2, 0, 4).unwrap();
        assert_eq!(rows(&ck), rows(&want));
        c.advance(2);
        let three = kv(3, 300.0);
        assert!(c.append(0, &three, &three).is_err(), "4 + 3 > max_len");
        c.reset();
        let (k, _) = c.append(0, &x, &x).unwrap();
        assert_eq!(rows(&k), rows(&x));
        let bad = Tensor::zeros((1, 3, 1, 4), DType::F32, &Device::Cpu).unwrap();
        let e = c.append(0, &bad, &bad).unwrap_err().to_string();
        assert!(
            e.contains("[1, 2, 1, 4]") && e.contains("[1, 3, 1, 4]"),
            "{e}"
        );
    }
}
