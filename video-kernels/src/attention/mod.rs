//! Fused scaled-dot-product attention for CPU, forward and backward, with a plain-ops twin.
//!
//! [`attention`] computes, for every batch `b` and query head `h`,
//!
//! ```text
//! out[b, h] = softmax(scale · q[b, h] · k[b, h / g]ᵀ + mask[b, h] + causal) · v[b, h / g]
//! ```
//!
//! where `g = Hq / Hkv` is the grouped-query ratio (kv head `j` serves query heads
//! `j·g … j·g+g−1`, the Llama / transformers `repeat_interleave` convention), `mask` is an optional
//! additive bias (`-inf` = masked) and `causal` adds `-inf` above the **bottom-right aligned**
//! diagonal: query `i` sees keys `j ≤ i + (Nk − Nq)`, so the last query sees the last key
//! (decoding with a KV cache). [`attention_reference`] computes the same thing with plain candle
//! ops and is the readable definition; tests compare the two.
//!
//! # The CPU algorithm (FlashAttention-2 style)
//!
//! **Forward.** Work is split into independent tasks, one per `(batch, query head, block of
//! 48 queries)`, run in parallel with rayon. A task walks over the keys in tiles of
//! 256 keys and keeps, per query row, a running maximum `m`, a running denominator `l`
//! and an unnormalised output row `o` (the *online softmax*):
//!
//! ```text
//! S     = scale · Q_blk · K_tileᵀ + bias          (48 × 256, the only score buffer)
//! m'    = max(m, rowmax(S));  P = exp(S − m')
//! l     = l · exp(m − m') + rowsum(P)
//! o     = o · exp(m − m') + P · V_tile
//! ```
//!
//! and finally `out = o / l` and `lse = m + ln l` (the log-sum-exp of each score row, kept for the
//! backward pass). No `Nq × Nk` buffer is ever made: memory is `O((Nq + Nk) · D)` plus one score
//! tile per thread. With `causal`, key tiles that no query of the block can see are skipped, and
//! only tiles that straddle the diagonal pay for masking. Scores, softmax and accumulation are
//! f32 whatever the input dtype. The tile products run in hand-written micro-kernels
//! (register-blocked outer products; masked loads handle any `D` and ragged tiles): AVX-512F
//! (6 × 64 blocks) when the CPU has it, else AVX2 + FMA (6 × 16 blocks), else the `gemm` crate;
//! `exp` is a Cody–Waite range reduction plus a degree-6 polynomial evaluated 16 or 8 lanes at
//! a time.
//!
//! **Backward.** With `dO` the upstream gradient, `Δᵢ = Σ_d dOᵢ_d · Oᵢ_d` and `P` recomputed per
//! tile from the saved log-sum-exp (`P = exp(S − lse)`, no second softmax pass):
//!
//! ```text
//! dV += Pᵀ · dO      dP = dO · Vᵀ      dS = P ∘ (dP − Δ)
//! dK += scale · dSᵀ · Q                dQ += scale · dS · K
//! ```
//!
//! Two parallel passes keep every write private to one task (no atomics, deterministic
//! results): one over `(batch, kv head, key block)` accumulates `dK`, `dV` over all query heads of
//! the group (this is the GQA sum) and all query blocks, the other over
//! `(batch, query head, query block)` accumulates `dQ`. The backward is wired into candle's
//! autograd as a [`candle_core::CustomOp3`], so `attention(..)?.backward()` just works; the mask
//! is a constant captured by the op (no gradient flows to it).
//!
//! **Edge cases.** A query row that sees no key at all (every bias `-inf`, or causal with
//! `Nq > Nk` for the first `Nq − Nk` rows) gets an all-zero output and zero gradients here, where
//! the reference (a plain softmax) gives NaN.
//!
//! Inputs on other devices than the CPU run [`attention_reference`], and so does every call under
//! [`crate::force_reference`].

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod cpu;
mod op;
mod softmax;

use candle_core::{DType, Device, Tensor, D};
use vidgen_video_core::{Error, Result};

/// Options of [`attention`] and [`attention_reference`].
///
/// `Default` gives scale `1/√D`, no causal masking and no mask.
#[derive(Debug, Clone, Default)]
pub struct AttentionOpts {
    /// Multiplier of `q·kᵀ` before the softmax; `None` means `1/√D` (`D` = head dim).
    pub scale: Option<f64>,
    /// Bottom-right aligned causal masking: query `i` sees keys `j ≤ i + (Nk − Nq)`.
    pub causal: bool,
    /// Additive bias added to the scaled scores, broadcastable to `[B, Hq, Nq, Nk]`
    /// (typically `[B or 1, 1 or Hq, Nq, Nk]`); `-inf` entries mean "masked". Any float dtype;
    /// it is used in f32. No gradient flows to it.
    pub mask: Option<Tensor>,
}

impl AttentionOpts {
    /// Causal (bottom-right aligned) options with the default scale and no mask.
    pub fn causal() -> Self {
        Self {
            causal: true,
            ..Self::default()
        }
    }
}

/// Checked sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
}

impl Dims {
    /// Query heads per kv head.
    pub fn group(&self) -> usize {
        self.hq / self.hkv.max(1)
    }

    /// How far the causal diagonal is shifted right: query `i` sees keys `j ≤ i + offset`.
    pub fn causal_offset(&self) -> isize {
        self.nk as isize - self.nq as isize
    }
}

/// Validates the arguments of an attention call; returns the sizes and the mask's shape
/// left-padded to rank 4.
fn check(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOpts,
) -> Result<(Dims, Option<[usize; 4]>)> {
    let rank4 = |t: &Tensor, name: &str, layout: &str| -> Result<[usize; 4]> {
        match *t.dims() {
            [a, b, c, d] => Ok([a, b, c, d]),
            _ => Err(Error::invalid(
                name,
                format!("expected rank 4 {layout}, found shape {:?}", t.dims()),
            )),
        }
    };
    let [b, hq, nq, d] = rank4(q, "q", "[B, Hq, Nq, D]")?;
    let [bk, hkv, nk, dk] = rank4(k, "k", "[B, Hkv, Nk, D]")?;
    rank4(v, "v", "[B, Hkv, Nk, D]")?;
    if v.dims() != k.dims() {
        return Err(Error::shape("v (must match k)", k.dims(), v.dims()));
    }
    if bk != b {
        return Err(Error::invalid(
            "k",
            format!(
                "batch of k {:?} differs from batch of q {:?}",
                k.dims(),
                q.dims()
            ),
        ));
    }
    if dk != d {
        return Err(Error::invalid(
            "k",
            format!(
                "head dim of k {:?} differs from head dim of q {:?}",
                k.dims(),
                q.dims()
            ),
        ));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(Error::invalid(
            "k",
            format!(
                "query heads Hq = {hq} of q {:?} are not a multiple of the kv heads Hkv = {hkv} of k {:?}",
                q.dims(),
                k.dims()
            ),
        ));
    }
    if nk == 0 || d == 0 {
        return Err(Error::invalid(
            "k",
            format!(
                "attention needs at least one key and D ≥ 1: q {:?}, k {:?}",
                q.dims(),
                k.dims()
            ),
        ));
    }
    let dt = q.dtype();
    if !matches!(dt, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::DType {
            key: "q".into(),
            expected: "f32, f16 or bf16".into(),
            found: format!("{dt:?}"),
        });
    }
    for (name, t) in [("k", k), ("v", v)] {
        if t.dtype() != dt {
            return Err(Error::DType {
                key: name.into(),
                expected: format!("{dt:?} (the dtype of q)"),
                found: format!("{:?}", t.dtype()),
            });
        }
        if !t.device().same_device(q.device()) {
            return Err(Error::invalid(
                name,
                "q, k and v must be on the same device",
            ));
        }
    }
    let dims = Dims {
        b,
        hq,
        hkv,
        nq,
        nk,
        d,
    };
    let mask_shape = match &opts.mask {
        None => None,
        Some(m) => {
            let full = [b, hq, nq, nk];
            let bad = || {
                Error::invalid(
                    "mask",
                    format!(
                        "shape {:?} does not broadcast to [B, Hq, Nq, Nk] = {full:?} (q {:?}, k {:?})",
                        m.dims(),
                        q.dims(),
                        k.dims()
                    ),
                )
            };
            if m.rank() > 4 {
                return Err(bad());
            }
            let mut shape = [1usize; 4];
            shape[4 - m.rank()..].copy_from_slice(m.dims());
            if shape
                .iter()
                .zip(full.iter())
                .any(|(&s, &f)| s != 1 && s != f)
            {
                return Err(bad());
            }
            if !m.dtype().is_float() {
                return Err(Error::DType {
                    key: "mask".into(),
                    expected: "a float dtype".into(),
                    found: format!("{:?}", m.dtype()),
                });
            }
            if !m.device().same_device(q.device()) {
                return Err(Error::invalid("mask", "mask must be on the device of q"));
            }
            Some(shape)
        }
    };
    Ok((dims, mask_shape))
}

fn effective_scale(opts: &AttentionOpts, d: usize) -> f64 {
    opts.scale.unwrap_or(1.0 / (d as f64).sqrt())
}

/// The `[Nq, Nk]` bottom-right causal bias: 0 where query `i` may see key `j`
/// (`j ≤ i + Nk − Nq`), `-inf` elsewhere.
fn causal_bias(nq: usize, nk: usize, device: &Device) -> Result<Tensor> {
    let off = nk as isize - nq as isize;
    let data: Vec<f32> = (0..nq)
        .flat_map(|i| {
            (0..nk).map(move |j| {
                if (j as isize) <= i as isize + off {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(data, (nq, nk), device)?)
}

/// Fused attention: `softmax(scale · q·kᵀ + mask + causal) · v`, with grouped-query heads.
///
/// On other devices than the CPU, and under [`crate::force_reference`], this runs
/// [`attention_reference`].
///
/// # Algorithm (CPU)
/// FlashAttention-2 style. Tasks of 48 queries of one `(batch, head)` run in parallel (rayon);
/// each walks the keys in tiles of 256, computing the score tile `S = scale·Q·Kᵀ + bias` and an
/// *online softmax*: a running row maximum `m` and denominator `l`, with the unnormalised output
/// rescaled by `exp(m_old − m_new)` before `P·V` is added. No `Nq × Nk` buffer exists (memory
/// `O(N)`); causal tiles no query of a block can see are skipped. Tile products run in AVX-512
/// register-blocked micro-kernels when the CPU has AVX-512F (else through the `gemm` crate), `exp`
/// in a 16-lane polynomial. The backward (through candle's autograd, a `CustomOp3`) recomputes
/// `P = exp(S − lse)` per tile from the saved log-sum-exp: one parallel pass over key tiles
/// accumulates `dK`, `dV` (summed over the query heads of each GQA group), another over query
/// blocks accumulates `dQ`; no atomics, deterministic. A query row that sees no key at all gets a
/// zero output and zero gradients (the reference gives NaN there).
///
/// # Shapes
/// - `q`: `[B, Hq, Nq, D]`
/// - `k`, `v`: `[B, Hkv, Nk, D]`, `Hq` a multiple of `Hkv` (kv head `j` serves query heads
///   `j·g … j·g+g−1`, `g = Hq / Hkv`)
/// - `opts.mask`: additive, broadcastable to `[B, Hq, Nq, Nk]` (e.g. `[B or 1, 1 or Hq, Nq, Nk]`)
/// - returns `[B, Hq, Nq, D]` in the dtype of `q`
///
/// f32, f16 and bf16 are accepted (all three the same dtype); scores, softmax and sums are f32.
///
/// # Errors
/// Wrong ranks, `Hq` not a multiple of `Hkv`, `k`/`v` disagreeing with `q` or each other
/// (batch, head dim, key count), a mask that does not broadcast, unsupported or mixed dtypes:
/// a typed [`Error`] naming the shapes involved.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use vidgen_video_kernels::{attention, AttentionOpts};
/// let dev = Device::Cpu;
/// let q = Tensor::randn(0f32, 1.0, (1, 4, 10, 16), &dev)?;
/// let kv = Tensor::randn(0f32, 1.0, (1, 2, 12, 16), &dev)?;
/// let out = attention(&q, &kv, &kv, &AttentionOpts::causal())?;
/// assert_eq!(out.dims(), &[1, 4, 10, 16]);
/// # Ok::<(), vidgen_video_core::Error>(())
/// ```
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOpts) -> Result<Tensor> {
    let (dims, mask_shape) = check(q, k, v, opts)?;
    if !q.device().is_cpu() || crate::reference_forced() {
        return attention_reference(q, k, v, opts);
    }
    let dt = q.dtype();
    let scale = effective_scale(opts, dims.d);
    let mask = match (&opts.mask, mask_shape) {
        (Some(m), Some(shape)) => Some(cpu::MaskData::new(m, shape, &dims)?),
        _ => None,
    };
    let f32c = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.contiguous()?) };
    // Keys and values with row-contiguous heads (a narrowed KV cache) are read in place.
    let kv = |t: &Tensor| -> Result<Tensor> {
        if t.dtype() == DType::F32 && op::kv_in_place(t) {
            Ok(t.clone())
        } else {
            f32c(t)
        }
    };
    let (q32, k32, v32) = (f32c(q)?, kv(k)?, kv(v)?);
    let fused = op::FlashAttention::new(dims, scale as f32, opts.causal, mask);
    let out = q32.apply_op3(&k32, &v32, fused)?;
    Ok(out.to_dtype(dt)?)
}

/// Attention from plain candle ops: the readable definition [`attention`] is tested against.
///
/// ```text
/// k, v  ← repeat each kv head g = Hq/Hkv times            [B, Hq, Nk, D]
/// s     = scale · q · kᵀ  (+ mask) (+ causal −inf bias)    [B, Hq, Nq, Nk]
/// out   = softmax(s, last dim) · v                         [B, Hq, Nq, D]
/// ```
///
/// It materialises the full `[B, Hq, Nq, Nk]` score tensor (memory `O(N²)`), computes in f32 and
/// returns the dtype of `q`. Gradients flow through candle's autograd op by op. A query row
/// whose every key is masked gives NaN here (plain softmax of all `-inf`).
///
/// # Shapes
/// As [`attention`]: `q [B, Hq, Nq, D]`, `k`, `v` `[B, Hkv, Nk, D]`, mask broadcastable to
/// `[B, Hq, Nq, Nk]`, returns `[B, Hq, Nq, D]`.
///
/// # Errors
/// The same argument checks as [`attention`].
pub fn attention_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOpts,
) -> Result<Tensor> {
    let (dims, _) = check(q, k, v, opts)?;
    let Dims {
        b, hq, hkv, nk, d, ..
    } = dims;
    let g = dims.group();
    let dt = q.dtype();
    let q = q.to_dtype(DType::F32)?;
    // [B, Hkv, Nk, D] -> [B, Hkv, g, Nk, D] -> [B, Hq, Nk, D]: kv head j serves heads j·g..j·g+g-1.
    let repeat = |t: &Tensor| -> Result<Tensor> {
        Ok(t.to_dtype(DType::F32)?
            .unsqueeze(2)?
            .broadcast_as((b, hkv, g, nk, d))?
            .reshape((b, hq, nk, d))?)
    };
    let (k, v) = (repeat(k)?, repeat(v)?);
    let scale = effective_scale(opts, d);
    // [B, Hq, Nq, D] x [B, Hq, D, Nk] -> [B, Hq, Nq, Nk]
    let mut scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
    if let Some(mask) = &opts.mask {
        scores = scores.broadcast_add(&mask.to_dtype(DType::F32)?)?;
    }
    if opts.causal {
        scores = scores.broadcast_add(&causal_bias(dims.nq, nk, q.device())?)?;
    }
    let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
    // [B, Hq, Nq, Nk] x [B, Hq, Nk, D] -> [B, Hq, Nq, D]
    Ok(p.matmul(&v)?.to_dtype(dt)?)
}
