//! GroupNorm (`torch.nn.GroupNorm`, affine), optionally fused with the SiLU that follows it in
//! every diffusers ResNet block.
//!
//! For input `x [B, C, …]` and `G` groups of `C/G` channels, each `(sample, group)` slice of
//! `n = C/G · Π …` values is normalised with its own mean and (biased) variance:
//!
//! ```text
//! y[b, c, s] = (x[b, c, s] − μ[b, g]) / sqrt(σ²[b, g] + eps) · weight[c] + bias[c]    g = c / (C/G)
//! out        = silu(y) if `silu` else y
//! ```
//!
//! [`group_norm`] runs one parallel task per `(sample, group)` slice (rayon): the statistics in
//! f64 over eight interleaved partial sums (a single running sum is a chain of dependent adds,
//! latency-bound at about four cycles per element; eight vectorise), then one pass that applies
//! `x·a + s` per channel (`a = weight·rstd`, `s = bias − μ·a`) and, when asked, SiLU on the
//! vectorised `exp` ([`crate::silu_slice`]). It is a [`candle_core::CustomOp3`] on
//! `(x, weight, bias)` with its own backward, so training through it stays on the fused path.
//! [`group_norm_reference`] computes the same from plain candle ops with f32 statistics; other
//! devices than the CPU and [`crate::force_reference`] run it.

use candle_core::{
    CpuStorage, CustomOp3, DType, Error as CError, Layout, Result as CResult, Shape, Tensor, D,
};
use rayon::prelude::*;
use vidgen_video_core::{Error, Result};

use crate::storage::f32_slice;

/// Checks the input's rank and the group count; returns the channel count.
fn check_input(x: &Tensor, groups: usize) -> Result<usize> {
    let dims = x.dims();
    if dims.len() < 3 {
        return Err(Error::invalid(
            "group_norm input",
            format!("expected [B, C, …] of rank ≥ 3, found {dims:?}"),
        ));
    }
    let c = dims[1];
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(Error::invalid(
            "group_norm groups",
            format!("{groups} groups must be ≥ 1 and divide the {c} channels of {dims:?}"),
        ));
    }
    Ok(c)
}

/// Checks the arguments; returns `(channels, values per (sample, group) slice)`.
fn check(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize) -> Result<(usize, usize)> {
    let dims = x.dims();
    let c = check_input(x, groups)?;
    for (name, t) in [("group_norm weight", weight), ("group_norm bias", bias)] {
        if t.dims() != [c] {
            return Err(Error::shape(name, &[c], t.dims()));
        }
    }
    for (name, t) in [
        ("group_norm input", x),
        ("group_norm weight", weight),
        ("group_norm bias", bias),
    ] {
        if !t.dtype().is_float() {
            return Err(Error::DType {
                key: name.into(),
                expected: "a float dtype".into(),
                found: format!("{:?}", t.dtype()),
            });
        }
        if !t.device().same_device(x.device()) {
            return Err(Error::invalid(name, "must be on the device of the input"));
        }
    }
    let spatial: usize = dims[2..].iter().product();
    Ok((c, c / groups * spatial))
}

/// GroupNorm with plain candle ops, statistics in f32 (differentiable; the definition
/// [`group_norm`] is tested against).
///
/// # Shapes
/// As [`group_norm`].
///
/// # Errors
/// As [`group_norm`].
pub fn group_norm_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let (c, _) = check(x, weight, bias, groups)?;
    let dims = x.dims().to_vec();
    let dt = x.dtype();
    let xf = x.to_dtype(DType::F32)?.reshape((dims[0], groups, ()))?;
    let mean = xf.mean_keepdim(D::Minus1)?;
    let xc = xf.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    affine_plain(&xn, &dims, c, weight, bias, silu, dt)
}

/// The plain-ops tail of both twins: normalised values `xn` (any shape of `dims`' size, f32)
/// → `xn · weight[c] + bias[c]`, SiLU when asked, in `dt`.
fn affine_plain(
    xn: &Tensor,
    dims: &[usize],
    c: usize,
    weight: &Tensor,
    bias: &Tensor,
    silu: bool,
    dt: DType,
) -> Result<Tensor> {
    let mut wd = vec![1usize; dims.len()];
    wd[1] = c;
    let y = xn
        .reshape(dims)?
        .broadcast_mul(&weight.to_dtype(DType::F32)?.reshape(wd.as_slice())?)?
        .broadcast_add(&bias.to_dtype(DType::F32)?.reshape(wd.as_slice())?)?;
    let y = if silu { candle_nn::ops::silu(&y)? } else { y };
    Ok(y.to_dtype(dt)?)
}

/// `op` (the fused CPU pass) on `(x, weight, bias)` brought to contiguous f32, back in `x`'s
/// dtype.
fn fused(x: &Tensor, weight: &Tensor, bias: &Tensor, op: GroupNormOp) -> Result<Tensor> {
    let dt = x.dtype();
    let f32c = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.contiguous()?) };
    let y = f32c(x)?.apply_op3(&f32c(weight)?, &f32c(bias)?, op)?;
    Ok(if dt == DType::F32 { y } else { y.to_dtype(dt)? })
}

/// `torch.nn.GroupNorm(groups, C, eps)(x)` with its affine `weight` and `bias`, followed by SiLU
/// when `silu` (see the module docs): the fused CPU pass, differentiable through its own
/// backward; [`group_norm_reference`] on other devices and under [`crate::force_reference`].
///
/// # Shapes
/// `x`: `[B, C, …]` (rank ≥ 3, e.g. `[B, C, H, W]` or `[B, C, T, H, W]`), `weight`, `bias`:
/// `[C]` → the shape and dtype of `x`. Any float dtypes; computed in f32 with f64 statistics.
///
/// # Errors
/// Rank below 3, `groups` zero or not dividing `C`, `weight` / `bias` other than `[C]`,
/// non-float dtypes, operands on different devices.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use vidgen_video_kernels::{group_norm, group_norm_reference};
/// let dev = Device::Cpu;
/// let x = Tensor::randn(0f32, 1.0, (2, 8, 5, 6), &dev)?;
/// let (w, b) = (Tensor::ones(8, candle_core::DType::F32, &dev)?, Tensor::zeros(8, candle_core::DType::F32, &dev)?);
/// let y = group_norm(&x, &w, &b, 4, 1e-6, true)?;
/// let r = group_norm_reference(&x, &w, &b, 4, 1e-6, true)?;
/// let err = (y - r)?.abs()?.max_all()?.to_scalar::<f32>()?;
/// assert!(err < 1e-5);
/// # Ok::<(), vidgen_video_core::Error>(())
/// ```
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let (_, n) = check(x, weight, bias, groups)?;
    if !x.device().is_cpu() || crate::reference_forced() {
        return group_norm_reference(x, weight, bias, groups, eps, silu);
    }
    if n == 0 || x.elem_count() == 0 {
        return Ok(x.zeros_like()?);
    }
    let op = GroupNormOp {
        groups,
        eps,
        silu,
        n,
        fixed: None,
    };
    fused(x, weight, bias, op)
}

/// The moments of one `(sample, group)` slice of a GroupNorm input: the number of values, their
/// mean and the sum of squared deviations from it (`m2`), in f64.
///
/// Moments of parts of a slice merge into the moments of the whole ([`GroupMoments::merge`],
/// Chan et al.'s pairwise update), so a GroupNorm whose statistics span a whole clip can be
/// applied to the clip one chunk of frames at a time: gather [`group_norm_moments`] of every
/// chunk, merge, then [`group_norm_with_moments`] per chunk. The result equals [`group_norm`]
/// on the whole clip to f32 round-off.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GroupMoments {
    /// Number of values.
    pub count: f64,
    /// Their mean.
    pub mean: f64,
    /// `Σ (x − mean)²`.
    pub m2: f64,
}

impl GroupMoments {
    /// The moments of the union of two disjoint sets of values.
    pub fn merge(self, other: Self) -> Self {
        if self.count == 0.0 {
            return other;
        }
        if other.count == 0.0 {
            return self;
        }
        let n = self.count + other.count;
        let d = other.mean - self.mean;
        Self {
            count: n,
            mean: self.mean + d * (other.count / n),
            m2: self.m2 + other.m2 + d * d * (self.count * other.count / n),
        }
    }

    /// `(mean, 1 / sqrt(var + eps))` with the biased variance `m2 / count` (torch's GroupNorm).
    pub fn mean_rstd(&self, eps: f64) -> (f64, f64) {
        let var = if self.count > 0.0 {
            self.m2 / self.count
        } else {
            0.0
        };
        (self.mean, 1.0 / (var + eps).sqrt())
    }
}

/// Merges per-slice moments element by element (`acc[i] = acc[i] ⊕ part[i]`); an empty `acc`
/// takes `part`.
///
/// # Errors
/// Lists of different lengths (moments of inputs with other batch or group counts).
pub fn merge_group_moments(acc: &mut Vec<GroupMoments>, part: &[GroupMoments]) -> Result<()> {
    if acc.is_empty() {
        acc.extend_from_slice(part);
        return Ok(());
    }
    if acc.len() != part.len() {
        return Err(Error::invalid(
            "group_norm moments",
            format!(
                "cannot merge moments of {} and {} (sample, group) slices",
                acc.len(),
                part.len()
            ),
        ));
    }
    for (a, p) in acc.iter_mut().zip(part) {
        *a = a.merge(*p);
    }
    Ok(())
}

/// The moments of every `(sample, group)` slice of `x`, in the order `b · groups + g`.
///
/// # Shapes
/// `x [B, C, …]` (rank ≥ 3) → `B · groups` moments.
///
/// # Errors
/// Rank below 3, `groups` zero or not dividing `C`, a non-float dtype.
pub fn group_norm_moments(x: &Tensor, groups: usize) -> Result<Vec<GroupMoments>> {
    check_input(x, groups)?;
    let dims = x.dims();
    if !x.dtype().is_float() {
        return Err(Error::DType {
            key: "group_norm input".into(),
            expected: "a float dtype".into(),
            found: format!("{:?}", x.dtype()),
        });
    }
    let slices = dims[0] * groups;
    let n = x.elem_count().checked_div(slices).unwrap_or(0);
    if n == 0 {
        return Ok(vec![GroupMoments::default(); slices]);
    }
    let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(xs
        .par_chunks(n)
        .map(|xi| {
            let count = xi.len() as f64;
            let mean = sum8(xi, |v| v as f64) / count;
            let m2 = sum8(xi, |v| {
                let d = v as f64 - mean;
                d * d
            });
            GroupMoments { count, mean, m2 }
        })
        .collect())
}

/// [`group_norm`] with given statistics: each `(sample, group)` slice is normalised with
/// `moments[b · groups + g]` instead of its own (see [`GroupMoments`] for the chunked use).
/// Inference only: the op has no backward.
///
/// # Shapes
/// As [`group_norm`]; `moments` holds `B · groups` entries.
///
/// # Errors
/// As [`group_norm`]; a `moments` list of another length.
pub fn group_norm_with_moments(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    moments: &[GroupMoments],
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let (c, n) = check(x, weight, bias, groups)?;
    let b = x.dims()[0];
    if moments.len() != b * groups {
        return Err(Error::invalid(
            "group_norm moments",
            format!(
                "{} moments for {b} samples of {groups} groups (expected {})",
                moments.len(),
                b * groups
            ),
        ));
    }
    let stats: Vec<(f32, f32)> = moments
        .iter()
        .map(|m| {
            let (mean, rstd) = m.mean_rstd(eps);
            (mean as f32, rstd as f32)
        })
        .collect();
    if n == 0 || x.elem_count() == 0 {
        return Ok(x.zeros_like()?);
    }
    if !x.device().is_cpu() || crate::reference_forced() {
        // Plain ops: ((x − μ) · rstd) per slice, then the twins' affine map and SiLU.
        let (mu, rs): (Vec<f32>, Vec<f32>) = stats.into_iter().unzip();
        let mu = Tensor::from_vec(mu, (b, groups, 1), x.device())?;
        let rs = Tensor::from_vec(rs, (b, groups, 1), x.device())?;
        let xn = x
            .to_dtype(DType::F32)?
            .reshape((b, groups, n))?
            .broadcast_sub(&mu)?
            .broadcast_mul(&rs)?;
        return affine_plain(&xn, x.dims(), c, weight, bias, silu, x.dtype());
    }
    let op = GroupNormOp {
        groups,
        eps,
        silu,
        n,
        fixed: Some(stats),
    };
    fused(x, weight, bias, op)
}

/// The fused pass as a candle op on contiguous f32 `(x, weight, bias)`.
struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
    /// Values per `(sample, group)` slice (≥ 1).
    n: usize,
    /// Given `(mean, rstd)` per slice ([`group_norm_with_moments`]); `None`: the slice's own.
    fixed: Option<Vec<(f32, f32)>>,
}

/// `Σ f(x)` in f64 over eight interleaved partial sums (added at the end), so that the loop
/// vectorises without reassociating a single running sum.
#[inline]
fn sum8(xs: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `(mean, 1 / sqrt(var + eps))` of one slice, in f64 (two passes).
#[inline]
fn stats(xs: &[f32], eps: f64) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = sum8(xs, |v| v as f64) / n;
    let var = sum8(xs, |v| {
        let d = v as f64 - mean;
        d * d
    }) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl GroupNormOp {
    fn check_lens(&self, x: &[f32], w: &[f32], b: &[f32]) -> CResult<usize> {
        let c = w.len();
        if b.len() != c
            || c == 0
            || !c.is_multiple_of(self.groups)
            || !x.len().is_multiple_of(self.n)
            || !(self.n).is_multiple_of(c / self.groups)
        {
            return Err(CError::Msg(format!(
                "video-kernels group_norm: buffers of {} / {} / {} values do not fit {} groups \
                 of {} values",
                x.len(),
                w.len(),
                b.len(),
                self.groups,
                self.n
            )));
        }
        Ok(c / self.groups)
    }
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "video-kernels-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (xs, w, bias) = (
            f32_slice(s1, l1, "group_norm x")?,
            f32_slice(s2, l2, "group_norm weight")?,
            f32_slice(s3, l3, "group_norm bias")?,
        );
        let cpg = self.check_lens(xs, w, bias)?;
        let (n, groups, eps, silu) = (self.n, self.groups, self.eps, self.silu);
        if let Some(f) = &self.fixed {
            if f.len() * n != xs.len() {
                return Err(CError::Msg(format!(
                    "video-kernels group_norm: {} statistics for {} slices",
                    f.len(),
                    xs.len() / n
                )));
            }
        }
        let fixed = self.fixed.as_deref();
        let spatial = n / cpg;
        let write = |first: usize, o: &mut [f32]| {
            let bg = first / n;
            let xi = &xs[first..first + n];
            let g = bg % groups;
            let (mean, rstd) = match fixed {
                Some(f) => f[bg],
                None => {
                    let (mean, rstd) = stats(xi, eps);
                    (mean as f32, rstd as f32)
                }
            };
            for c in 0..cpg {
                let ch = g * cpg + c;
                let (a, sh) = (w[ch] * rstd, bias[ch]);
                let (oc, xc) = (
                    &mut o[c * spatial..(c + 1) * spatial],
                    &xi[c * spatial..(c + 1) * spatial],
                );
                // Centre first, then scale: the folded form `x·a + (b − μ·a)` cancels
                // catastrophically when |μ|·rstd is large (a near-constant slice far from
                // zero: error |μ|·rstd·ulp, 1e-4 at μ = 3, var ≪ eps = 1e-6).
                for (ov, &xv) in oc.iter_mut().zip(xc) {
                    *ov = (xv - mean) * a + sh;
                }
                if silu {
                    crate::silu_slice(oc);
                }
            }
        };
        // SAFETY: each chunk is one (sample, group) slice of `n = cpg · spatial` elements, and
        // `write` assigns every element of it (channel by channel) before SiLU reads it back.
        let out = unsafe { vidgen_video_core::buffer::par_write(xs.len(), n, write) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// With `x̂ = (x − μ)·rstd`, `z = x̂·weight + bias` and `dz = dout · silu'(z)` (or `dout`):
    /// `dbias[c] = Σ dz`, `dweight[c] = Σ dz·x̂` over samples and positions, and per slice,
    /// with `g = dz·weight`, `dx = rstd · (g − mean(g) − x̂ · mean(g·x̂))`. Sums in f64.
    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _out: &Tensor,
        dout: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if self.fixed.is_some() {
            return Err(CError::Msg(
                "video-kernels group_norm_with_moments is inference only (no backward)".into(),
            ));
        }
        let vec = |t: &Tensor| -> CResult<Vec<f32>> {
            t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
        };
        let (xs, w, b, dy) = (vec(x)?, vec(weight)?, vec(bias)?, vec(dout)?);
        let cpg = self.check_lens(&xs, &w, &b)?;
        if dy.len() != xs.len() {
            return Err(CError::Msg(format!(
                "video-kernels group_norm: gradient of {} values for an input of {}",
                dy.len(),
                xs.len()
            )));
        }
        let (n, groups, eps, silu) = (self.n, self.groups, self.eps, self.silu);
        let spatial = n / cpg;
        let mut dx = vec![0f32; xs.len()];
        // Per slice: (Σ dz, Σ dz·x̂) of each of its channels.
        let partial: Vec<(usize, Vec<f64>, Vec<f64>)> = dx
            .par_chunks_mut(n)
            .zip(xs.par_chunks(n).zip(dy.par_chunks(n)))
            .enumerate()
            .map(|(bg, (dxs, (xi, dyi)))| {
                let g = bg % groups;
                let (mean, rstd) = stats(xi, eps);
                let (mean32, rstd32) = (mean as f32, rstd as f32);
                let (mut sdz, mut sdzx) = (vec![0f64; cpg], vec![0f64; cpg]);
                let (mut sg, mut sgx) = (0f64, 0f64);
                for c in 0..cpg {
                    let ch = g * cpg + c;
                    let (a, wc) = (w[ch] * rstd32, w[ch]);
                    let sh = b[ch];
                    let range = c * spatial..(c + 1) * spatial;
                    let (mut s1, mut s2) = (0f64, 0f64);
                    for ((d, &xv), &gy) in dxs[range.clone()]
                        .iter_mut()
                        .zip(&xi[range.clone()])
                        .zip(&dyi[range])
                    {
                        let dz = if silu {
                            // Centred first, as in the forward pass.
                            let z = (xv - mean32) * a + sh;
                            let sig = 1.0 / (1.0 + (-z).exp());
                            gy * sig * (1.0 + z * (1.0 - sig))
                        } else {
                            gy
                        };
                        let xh = (xv - mean32) * rstd32;
                        s1 += dz as f64;
                        s2 += (dz * xh) as f64;
                        // Kept here until the slice's sums are known.
                        *d = dz;
                    }
                    sdz[c] = s1;
                    sdzx[c] = s2;
                    sg += s1 * wc as f64;
                    sgx += s2 * wc as f64;
                }
                let (mg, mgx) = ((sg / n as f64) as f32, (sgx / n as f64) as f32);
                for c in 0..cpg {
                    let wc = w[g * cpg + c];
                    let range = c * spatial..(c + 1) * spatial;
                    for (d, &xv) in dxs[range.clone()].iter_mut().zip(&xi[range]) {
                        let xh = (xv - mean32) * rstd32;
                        *d = rstd32 * (*d * wc - mg - xh * mgx);
                    }
                }
                (g, sdz, sdzx)
            })
            .collect();
        let c = w.len();
        let (mut dw, mut db) = (vec![0f64; c], vec![0f64; c]);
        for (g, sdz, sdzx) in partial {
            for j in 0..cpg {
                db[g * cpg + j] += sdz[j];
                dw[g * cpg + j] += sdzx[j];
            }
        }
        let to32 = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect::<Vec<f32>>();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(to32(dw), c, weight.device())?),
            Some(Tensor::from_vec(to32(db), c, bias.device())?),
        ))
    }
}
