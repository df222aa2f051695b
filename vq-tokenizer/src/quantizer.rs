//! The vector quantiser: nearest code, straight-through estimator, losses, lookup, EMA updates.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vidgen_video_core::{check_finite, Error, Result};

use crate::stats::CodebookUsage;
use vidgen_video_kernels::PreparedCodebook;

/// Settings of a [`VectorQuantizer`]. The defaults are diffusers' `VectorQuantizer` as
/// `VQModel` builds it (`beta = 0.25`, `legacy = true`, no normalisation).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizerConfig {
    /// Number of codes `K`.
    pub num_codes: usize,
    /// Code dimension `D`.
    pub dim: usize,
    /// Weight β of the loss term it scales (see [`QuantizerConfig::legacy`]).
    pub beta: f64,
    /// diffusers' `legacy` flag. `true` (the default, and what `VQModel` uses):
    /// `loss = commitment + β·codebook`; `false` (the VQ-VAE paper):
    /// `loss = β·commitment + codebook`.
    pub legacy: bool,
    /// LlamaGen style: l2-normalise inputs and codes along `D` before the search, the lookup and
    /// the losses (cosine-similarity codebook).
    pub l2_normalize: bool,
}

impl QuantizerConfig {
    /// `K` codes of dimension `D` with the diffusers defaults.
    pub fn new(num_codes: usize, dim: usize) -> Self {
        QuantizerConfig {
            num_codes,
            dim,
            beta: 0.25,
            legacy: true,
            l2_normalize: false,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.num_codes == 0 || self.num_codes > u32::MAX as usize {
            return Err(Error::config(
                "num_codes",
                format!("must be in 1..=2^32-1, got {}", self.num_codes),
            ));
        }
        if self.dim == 0 {
            return Err(Error::config("dim", "must be at least 1"));
        }
        if !self.beta.is_finite() || self.beta < 0.0 {
            return Err(Error::config(
                "beta",
                format!("must be finite and >= 0, got {}", self.beta),
            ));
        }
        Ok(())
    }
}

/// Everything one quantisation returns.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// Straight-through output `z + (z_q − z).detach()`: the values of `z_q`, the gradient of
    /// `z`. Same shape and dtype as the input (of the normalised input when `l2_normalize`).
    pub quantized: Tensor,
    /// Nearest-code ids, `u32`: `[N]` for `[N, D]` input, `[B, H, W]` for `[B, D, H, W]`.
    pub indices: Tensor,
    /// Total loss as diffusers computes it (see [`QuantizerConfig::legacy`]), scalar f32.
    pub loss: Tensor,
    /// `mean((z_q − sg[z])²)`: moves the codes, scalar f32.
    pub codebook_loss: Tensor,
    /// `mean((sg[z_q] − z)²)`: moves the encoder, scalar f32.
    pub commitment_loss: Tensor,
}

/// Settings of exponential-moving-average codebook updates.
#[derive(Debug, Clone, PartialEq)]
pub struct EmaConfig {
    /// EMA decay `γ` of the per-code counts and sums (0 = use only the last batch).
    pub decay: f64,
    /// Laplace smoothing `ε` of the counts (keeps codes with tiny counts finite).
    pub eps: f64,
    /// Codes whose EMA count falls below this are restarted from a random recent input
    /// (0 disables restarts).
    pub dead_threshold: f64,
    /// How many recent input vectors are kept for restarts.
    pub recent_capacity: usize,
    /// Seed of the restart sampler.
    pub seed: u64,
}

impl Default for EmaConfig {
    fn default() -> Self {
        EmaConfig {
            decay: 0.99,
            eps: 1e-5,
            dead_threshold: 0.0,
            recent_capacity: 4096,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct EmaState {
    cfg: EmaConfig,
    cluster_size: Vec<f64>,
    embed_sum: Vec<f64>,
    recent: Vec<f32>,
    recent_next: usize,
    rng: ChaCha8Rng,
}

/// What one EMA update did.
#[derive(Debug, Clone, PartialEq)]
pub struct EmaReport {
    /// Codes that were restarted from recent inputs, ascending.
    pub restarted: Vec<u32>,
    /// Usage of the batch that drove the update.
    pub usage: CodebookUsage,
}

/// A codebook of `K` vectors of dimension `D` and the operations around it.
///
/// The codebook is the checkpoint tensor `embedding.weight` `[K, D]` (diffusers'
/// `quantize.embedding.weight`), so gradient training works through a `VarMap` and
/// [`VectorQuantizer::ema_update`] replaces it in place of gradients.
#[derive(Debug, Clone)]
pub struct VectorQuantizer {
    cfg: QuantizerConfig,
    codebook: Tensor,
    ema: Option<EmaState>,
}

/// `x / max(‖x‖₂, 1e-12)` along the last dim, as `torch.nn.functional.normalize`.
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&n)?)
}

impl VectorQuantizer {
    /// Builds the quantiser, reading `embedding.weight` `[K, D]` from `vb` (random normal init
    /// for a `VarMap`).
    pub fn new(cfg: &QuantizerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let codebook = vb.get_with_hints(
            (cfg.num_codes, cfg.dim),
            "embedding.weight",
            candle_nn::Init::Uniform {
                lo: -1.0 / cfg.num_codes as f64,
                up: 1.0 / cfg.num_codes as f64,
            },
        )?;
        Ok(VectorQuantizer {
            cfg: cfg.clone(),
            codebook,
            ema: None,
        })
    }

    /// A quantiser around an existing `[K, D]` codebook.
    pub fn from_codebook(cfg: &QuantizerConfig, codebook: Tensor) -> Result<Self> {
        cfg.validate()?;
        if codebook.dims() != [cfg.num_codes, cfg.dim] {
            return Err(Error::shape(
                "codebook",
                &[cfg.num_codes, cfg.dim],
                codebook.dims(),
            ));
        }
        check_finite(&codebook, "codebook")?;
        Ok(VectorQuantizer {
            cfg: cfg.clone(),
            codebook,
            ema: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &QuantizerConfig {
        &self.cfg
    }

    /// The stored codebook `[K, D]` (not normalised).
    pub fn codebook(&self) -> &Tensor {
        &self.codebook
    }

    /// The codebook the search uses: `[K, D]`, l2-normalised rows when `l2_normalize`.
    pub fn effective_codebook(&self) -> Result<Tensor> {
        if self.cfg.l2_normalize {
            l2_normalize(&self.codebook)
        } else {
            Ok(self.codebook.clone())
        }
    }

    /// Replaces the codebook (same shape, finite values).
    pub fn set_codebook(&mut self, codebook: Tensor) -> Result<()> {
        if codebook.dims() != self.codebook.dims() {
            return Err(Error::shape(
                "codebook",
                self.codebook.dims(),
                codebook.dims(),
            ));
        }
        check_finite(&codebook, "codebook")?;
        self.codebook = codebook;
        Ok(())
    }

    fn check_rows(&self, z: &Tensor, what: &str) -> Result<usize> {
        match z.dims() {
            &[n, d] if d == self.cfg.dim => Ok(n),
            &[n, _] => Err(Error::shape(what, &[n, self.cfg.dim], z.dims())),
            dims => Err(Error::invalid(
                what,
                format!("expected [N, {}] rows, got shape {dims:?}", self.cfg.dim),
            )),
        }
    }

    fn prepared(&self) -> Result<PreparedCodebook> {
        let e = self
            .effective_codebook()?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        PreparedCodebook::new(&e, self.cfg.num_codes, self.cfg.dim)
    }

    /// Nearest code of every row (fused search, see [`crate::search`]); ties pick the lowest id.
    ///
    /// # Shapes
    /// `z`: `[N, D]` any float dtype → `(ids [N] u32, squared distances [N] f32)` on `z`'s
    /// device (the search itself runs on the CPU).
    ///
    /// # Errors
    /// Wrong rank or `D`, non-finite values.
    pub fn nearest(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = self.check_rows(z, "z")?;
        check_finite(z, "quantiser input")?;
        let z = if self.cfg.l2_normalize {
            l2_normalize(&z.to_dtype(DType::F32)?)?
        } else {
            z.clone()
        };
        let data = z.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let (ids, dist) = self.prepared()?.nearest(&data)?;
        let dev = z.device();
        Ok((
            Tensor::from_vec(ids, n, dev)?,
            Tensor::from_vec(dist, n, dev)?,
        ))
    }

    /// Nearest-code ids through plain candle ops (`argmin(‖e‖² − 2 z·Eᵀ)`, materialising
    /// `[N, K]`): the reference twin of [`VectorQuantizer::nearest`].
    ///
    /// # Shapes
    /// `z [N, D]` → ids `[N]` u32.
    pub fn nearest_reference(&self, z: &Tensor) -> Result<Tensor> {
        self.check_rows(z, "z")?;
        let z = z.to_dtype(DType::F32)?;
        let z = if self.cfg.l2_normalize {
            l2_normalize(&z)?
        } else {
            z
        };
        let e = self.effective_codebook()?.to_dtype(DType::F32)?;
        Ok(nearest_composed(&z, &e)?)
    }

    /// Quantises rows.
    ///
    /// # Shapes
    /// `z [N, D]` → [`Quantized`] with `quantized [N, D]`, `indices [N]`.
    ///
    /// # Errors
    /// Wrong rank or `D`, non-finite values.
    pub fn forward_flat(&self, z: &Tensor) -> Result<Quantized> {
        self.check_rows(z, "z")?;
        let (ids, _) = self.nearest(z)?;
        let dt = z.dtype();
        let zf = z.to_dtype(DType::F32)?;
        let zf = if self.cfg.l2_normalize {
            l2_normalize(&zf)?
        } else {
            zf
        };
        let e = self.effective_codebook()?.to_dtype(DType::F32)?;
        let zq = e.index_select(&ids, 0)?;
        let commitment = (zq.detach() - &zf)?.sqr()?.mean_all()?;
        let codebook = (&zq - zf.detach())?.sqr()?.mean_all()?;
        let beta = self.cfg.beta;
        let loss = if self.cfg.legacy {
            (&commitment + (&codebook * beta)?)?
        } else {
            ((&commitment * beta)? + &codebook)?
        };
        // Straight-through: the value of z_q, the gradient of z.
        let st = (&zf + (&zq - &zf)?.detach())?;
        Ok(Quantized {
            quantized: st.to_dtype(dt)?,
            indices: ids,
            loss,
            codebook_loss: codebook,
            commitment_loss: commitment,
        })
    }

    /// Quantises a channel-first feature map, as diffusers' `VectorQuantizer.forward`.
    ///
    /// # Shapes
    /// `z [B, D, H, W]` → `quantized [B, D, H, W]`, `indices [B, H, W]` (flattened, the
    /// diffusers order `b·H·W + h·W + w`).
    ///
    /// # Errors
    /// Wrong rank, channel count ≠ `D`, non-finite values.
    pub fn forward(&self, z: &Tensor) -> Result<Quantized> {
        let (b, c, h, w) = match z.dims() {
            &[b, c, h, w] => (b, c, h, w),
            d => {
                return Err(Error::invalid(
                    "z",
                    format!("expected a [B, D, H, W] feature map, got shape {d:?}"),
                ))
            }
        };
        if c != self.cfg.dim {
            return Err(Error::shape(
                "z channels",
                &[b, self.cfg.dim, h, w],
                z.dims(),
            ));
        }
        // [B, D, H, W] -> [B, H, W, D] -> [B·H·W, D]
        let rows = z.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?;
        let q = self.forward_flat(&rows)?;
        Ok(Quantized {
            quantized: q
                .quantized
                .reshape((b, h, w, c))?
                .permute((0, 3, 1, 2))?
                .contiguous()?,
            indices: q.indices.reshape((b, h, w))?,
            ..q
        })
    }

    /// Checks that every id is a valid code and returns them as a flat `u32` tensor.
    fn checked_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let flat = match ids.dtype() {
            DType::U32 => ids.flatten_all()?,
            DType::I64 => {
                let v = ids.flatten_all()?.to_vec1::<i64>()?;
                if let Some(bad) = v.iter().find(|&&x| x < 0) {
                    return Err(Error::invalid("ids", format!("negative code id {bad}")));
                }
                ids.flatten_all()?.to_dtype(DType::U32)?
            }
            DType::U8 => ids.flatten_all()?.to_dtype(DType::U32)?,
            other => {
                return Err(Error::DType {
                    key: "ids".into(),
                    expected: "u32, i64 or u8".into(),
                    found: format!("{other:?}"),
                })
            }
        };
        if flat.elem_count() > 0 {
            let max = flat.max(0)?.to_scalar::<u32>()? as usize;
            if max >= self.cfg.num_codes {
                return Err(Error::invalid(
                    "ids",
                    format!(
                        "code id {max} is out of range for a codebook of {} codes",
                        self.cfg.num_codes
                    ),
                ));
            }
        }
        Ok(flat)
    }

    /// Code vectors of ids (of the effective codebook).
    ///
    /// # Shapes
    /// `ids [...]` (u32, i64 or u8) → `[..., D]` in the codebook's dtype.
    ///
    /// # Errors
    /// An id ≥ `K` (or negative), a non-integer dtype.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        let flat = self.checked_ids(ids)?;
        let e = self.effective_codebook()?;
        let flat = flat.to_device(e.device())?;
        let mut shape = ids.dims().to_vec();
        shape.push(self.cfg.dim);
        Ok(e.index_select(&flat, 0)?.reshape(shape)?)
    }

    /// Channel-first code map of an id grid (diffusers' `get_codebook_entry`).
    ///
    /// # Shapes
    /// `ids [B, H, W]` → `[B, D, H, W]`.
    pub fn lookup_nchw(&self, ids: &Tensor) -> Result<Tensor> {
        if ids.rank() != 3 {
            return Err(Error::invalid(
                "ids",
                format!("expected [B, H, W] ids, got shape {:?}", ids.dims()),
            ));
        }
        Ok(self.lookup(ids)?.permute((0, 3, 1, 2))?.contiguous()?)
    }

    /// Usage of the codebook by a set of ids (any shape).
    pub fn usage(&self, ids: &Tensor) -> Result<CodebookUsage> {
        let flat = self.checked_ids(ids)?;
        CodebookUsage::from_ids(&flat.to_vec1::<u32>()?, self.cfg.num_codes)
    }

    /// Switches on EMA codebook updates (counts and sums start at zero; codes that were never
    /// assigned keep their vectors).
    pub fn enable_ema(&mut self, cfg: EmaConfig) -> Result<()> {
        if !(0.0..1.0).contains(&cfg.decay) {
            return Err(Error::config(
                "decay",
                format!("must be in [0, 1), got {}", cfg.decay),
            ));
        }
        if !cfg.eps.is_finite() || cfg.eps < 0.0 {
            return Err(Error::config(
                "eps",
                format!("must be >= 0, got {}", cfg.eps),
            ));
        }
        if !cfg.dead_threshold.is_finite() || cfg.dead_threshold < 0.0 {
            return Err(Error::config(
                "dead_threshold",
                format!("must be >= 0, got {}", cfg.dead_threshold),
            ));
        }
        let k = self.cfg.num_codes;
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        self.ema = Some(EmaState {
            cfg,
            cluster_size: vec![0.0; k],
            embed_sum: vec![0.0; k * self.cfg.dim],
            recent: Vec::new(),
            recent_next: 0,
            rng,
        });
        Ok(())
    }

    /// The EMA counts per code (`None` when EMA is off).
    pub fn ema_cluster_size(&self) -> Option<&[f64]> {
        self.ema.as_ref().map(|e| e.cluster_size.as_slice())
    }

    /// One EMA step from a batch of inputs and their assigned ids:
    ///
    /// ```text
    /// n_k ← γ n_k + (1−γ) count_k          s_k ← γ s_k + (1−γ) Σ_{i: id_i = k} z_i
    /// e_k ← s_k / ñ_k,  ñ_k = (n_k + ε) / (Σn + Kε) · Σn      (only codes with n_k > 0)
    /// ```
    ///
    /// then codes with `n_k < dead_threshold` are restarted from random recent inputs
    /// (`e_k = z`, `n_k = 1`, `s_k = z`), drawn with the seeded generator. With `l2_normalize`
    /// the inputs are normalised first.
    ///
    /// # Shapes
    /// `z [N, D]`, `ids [N]` (as [`VectorQuantizer::nearest`] returns them).
    ///
    /// # Errors
    /// EMA not enabled, shape mismatches, out-of-range ids, non-finite inputs.
    pub fn ema_update(&mut self, z: &Tensor, ids: &Tensor) -> Result<EmaReport> {
        let n = self.check_rows(z, "z")?;
        check_finite(z, "EMA input")?;
        if ids.elem_count() != n {
            return Err(Error::shape("ids", &[n], ids.dims()));
        }
        let ids = self.checked_ids(ids)?.to_vec1::<u32>()?;
        let z = z.to_dtype(DType::F32)?;
        let z = if self.cfg.l2_normalize {
            l2_normalize(&z)?
        } else {
            z
        };
        let zv = z.flatten_all()?.to_vec1::<f32>()?;
        let (k, d) = (self.cfg.num_codes, self.cfg.dim);
        let mut cb = self
            .codebook
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let usage = CodebookUsage::from_ids(&ids, k)?;
        let ema = self.ema.as_mut().ok_or_else(|| {
            Error::invalid("ema_update", "EMA is not enabled: call enable_ema first")
        })?;
        let g = ema.cfg.decay;
        let mut sums = vec![0f64; k * d];
        for (row, &id) in zv.chunks_exact(d).zip(&ids) {
            let s = &mut sums[id as usize * d..(id as usize + 1) * d];
            for (a, &b) in s.iter_mut().zip(row) {
                *a += b as f64;
            }
        }
        for c in 0..k {
            ema.cluster_size[c] = g * ema.cluster_size[c] + (1.0 - g) * usage.histogram[c] as f64;
        }
        for (s, &b) in ema.embed_sum.iter_mut().zip(&sums) {
            *s = g * *s + (1.0 - g) * b;
        }
        let total: f64 = ema.cluster_size.iter().sum();
        let eps = ema.cfg.eps;
        for c in 0..k {
            let nk = ema.cluster_size[c];
            if nk <= 0.0 {
                continue;
            }
            let smoothed = (nk + eps) / (total + k as f64 * eps) * total;
            for j in 0..d {
                cb[c * d + j] = (ema.embed_sum[c * d + j] / smoothed) as f32;
            }
        }
        // Keep the most recent inputs for restarts (a ring buffer of rows).
        let cap = ema.cfg.recent_capacity;
        for row in zv.chunks_exact(d) {
            if cap == 0 {
                break;
            }
            if ema.recent.len() < cap * d {
                ema.recent.extend_from_slice(row);
            } else {
                let at = ema.recent_next * d;
                ema.recent[at..at + d].copy_from_slice(row);
            }
            ema.recent_next = (ema.recent_next + 1) % cap;
        }
        let mut restarted = Vec::new();
        let have = ema.recent.len() / d;
        if ema.cfg.dead_threshold > 0.0 && have > 0 {
            for c in 0..k {
                if ema.cluster_size[c] < ema.cfg.dead_threshold {
                    let pick = ema.rng.random_range(0..have);
                    let src = &ema.recent[pick * d..(pick + 1) * d];
                    cb[c * d..(c + 1) * d].copy_from_slice(src);
                    for (s, &v) in ema.embed_sum[c * d..(c + 1) * d].iter_mut().zip(src) {
                        *s = v as f64;
                    }
                    ema.cluster_size[c] = 1.0;
                    restarted.push(c as u32);
                }
            }
        }
        let dev = self.codebook.device().clone();
        let dt = self.codebook.dtype();
        self.codebook = Tensor::from_vec(cb, (k, d), &dev)?.to_dtype(dt)?;
        Ok(EmaReport { restarted, usage })
    }

    /// Initialises the codebook with k-means (k-means++ seeding, seeded) on sample vectors and
    /// returns the clustering. See [`crate::kmeans()`].
    ///
    /// # Shapes
    /// `data [N, D]` with `N ≥ K`.
    pub fn init_kmeans(&mut self, data: &Tensor, iters: usize, seed: u64) -> Result<crate::KMeans> {
        self.check_rows(data, "k-means data")?;
        let data = if self.cfg.l2_normalize {
            l2_normalize(&data.to_dtype(DType::F32)?)?
        } else {
            data.clone()
        };
        let km = crate::kmeans::kmeans(&data, self.cfg.num_codes, iters, seed)?;
        let dev = self.codebook.device().clone();
        let dt = self.codebook.dtype();
        self.codebook = km.centroids.to_device(&dev)?.to_dtype(dt)?;
        Ok(km)
    }
}

/// Composed candle ops: `argmin_k(‖e_k‖² − 2 z·e_k)` with the full `[N, K]` score matrix.
/// The peer of the fused search in tests and benchmarks.
///
/// # Shapes
/// `z [N, D]` f32, `codebook [K, D]` f32 → `[N]` u32.
pub fn nearest_composed(z: &Tensor, codebook: &Tensor) -> candle_core::Result<Tensor> {
    let e2 = codebook.sqr()?.sum(1)?; // [K]
    let s = z.matmul(&codebook.t()?)?; // [N, K]
    let s = (s * -2.0)?.broadcast_add(&e2.unsqueeze(0)?)?;
    s.argmin(1)
}

/// Convenience: a CPU f32 codebook tensor from rows.
pub(crate) fn cpu_tensor(v: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?)
}
