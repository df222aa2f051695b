//! A preallocated key/value cache for incremental decoding.

use candle_core::{DType, Device, Tensor};
use video_core::{Error, Result};

use crate::config::LlamaConfig;

/// Keys and values of every layer for the positions seen so far, in buffers allocated once.
///
/// Each layer owns two `[B, kv_heads, max_len, head_dim]` buffers; a forward call writes its
/// new keys / values in place at positions `len .. len + T` (no per-step reallocation of the
/// cache) and attends over the first `len + T` positions. Appending beyond `max_len` is an
/// error that says how long the cache is and what was asked for.
///
/// Not `Clone`: the buffers are written in place, so a shallow copy would alias them; use
/// [`KvCache::try_clone`] for an independent copy.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: usize,
    max_len: usize,
    batch: usize,
}

impl KvCache {
    /// An empty cache for `batch` sequences of at most `max_len` positions, in `dtype` on
    /// `device` (use the model's dtype).
    ///
    /// Memory: `2 · layers · batch · kv_heads · max_len · head_dim` values.
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
        let shape = (batch, cfg.kv_heads(), max_len, cfg.head_dim());
        let mut k = Vec::with_capacity(cfg.num_hidden_layers);
        let mut v = Vec::with_capacity(cfg.num_hidden_layers);
        for _ in 0..cfg.num_hidden_layers {
            k.push(Tensor::zeros(shape, dtype, device)?);
            v.push(Tensor::zeros(shape, dtype, device)?);
        }
        Ok(KvCache {
            k,
            v,
            len: 0,
            max_len,
            batch,
        })
    }

    /// An independent deep copy (e.g. to branch generation from a shared prompt).
    pub fn try_clone(&self) -> Result<Self> {
        let copy =
            |ts: &[Tensor]| -> Result<Vec<Tensor>> { ts.iter().map(|t| Ok(t.copy()?)).collect() };
        Ok(KvCache {
            k: copy(&self.k)?,
            v: copy(&self.v)?,
            len: self.len,
            max_len: self.max_len,
            batch: self.batch,
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
        let (kb, vb) = match (self.k.get(layer), self.v.get(layer)) {
            (Some(kb), Some(vb)) => (kb, vb),
            _ => {
                return Err(Error::invalid(
                    "kv cache",
                    format!("has {} layers, layer {layer} asked for", self.k.len()),
                ))
            }
        };
        if k.dtype() != kb.dtype() {
            return Err(Error::DType {
                key: "kv cache".into(),
                expected: format!("{:?}", kb.dtype()),
                found: format!("{:?}", k.dtype()),
            });
        }
        kb.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.contiguous()?, 2, self.len)?;
        let n = self.len + t;
        Ok((kb.narrow(2, 0, n)?, vb.narrow(2, 0, n)?))
    }

    /// Marks `t` more positions as stored.
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
