//! Rotary position embeddings in transformers' rotate-half (non-interleaved) form.
//!
//! For a head vector `x` of width `rotary_dim` (the first `rotary_dim` dims of the head; the
//! rest pass through unchanged) at position `p`:
//!
//! ```text
//! freqs = p · inv_freq                      [rotary_dim / 2]
//! cos, sin = cos(cat(freqs, freqs)), sin(..)  [rotary_dim]
//! x' = x · cos + rotate_half(x) · sin,  rotate_half([a, b]) = [-b, a]
//! ```
//!
//! `inv_freq` follows `modeling_rope_utils` for `default`, `linear`, `dynamic` and `llama3`.
//! The attention scaling factor of these four types is 1.

use candle_core::{DType, Device, Tensor, D};
use vidgen_video_core::Result;

use crate::config::{RopeConfig, RopeKind};

/// Precomputes nothing but `inv_freq`; cos / sin are made for the positions a call needs
/// (cheap: `T · rotary_dim / 2` trig calls) so any position, and dynamic scaling, work alike.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    cfg: RopeConfig,
    /// `inv_freq` for sequences up to the original context (all kinds but `dynamic` use it
    /// everywhere).
    inv_freq: Vec<f32>,
}

/// transformers: `1 / base^(arange(0, dim, 2) / dim)` in float32.
fn default_inv_freq(base: f64, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| {
            let e = (2 * i) as f32 / dim as f32;
            (1.0 / (base as f32).powf(e) as f64) as f32
        })
        .collect()
}

impl RotaryEmbedding {
    /// Builds the frequencies of a resolved rotary config.
    pub fn new(cfg: RopeConfig) -> Self {
        let dim = cfg.rotary_dim;
        let base = default_inv_freq(cfg.theta, dim);
        let inv_freq = match cfg.kind {
            RopeKind::Default | RopeKind::Dynamic { .. } => base,
            RopeKind::Linear { factor } => base.iter().map(|f| f / factor as f32).collect(),
            RopeKind::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max,
            } => {
                let old = original_max as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let f = f as f64;
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                        if medium {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            ((1.0 - smooth) * scaled / factor + smooth * scaled) as f32
                        } else {
                            scaled as f32
                        }
                    })
                    .collect()
            }
        };
        RotaryEmbedding { cfg, inv_freq }
    }

    /// The resolved config.
    pub fn config(&self) -> &RopeConfig {
        &self.cfg
    }

    /// `inv_freq` used for a call whose last position is `seq_len - 1`.
    pub fn inv_freq(&self, seq_len: usize) -> Vec<f32> {
        match self.cfg.kind {
            RopeKind::Dynamic {
                factor,
                original_max,
            } if seq_len > original_max => {
                // transformers' `_compute_dynamic_ntk_parameters` with seq_len = max(pos) + 1.
                let dim = self.cfg.rotary_dim as f64;
                let base = self.cfg.theta
                    * ((factor * seq_len as f64 / original_max as f64) - (factor - 1.0))
                        .powf(dim / (dim - 2.0));
                default_inv_freq(base, self.cfg.rotary_dim)
            }
            _ => self.inv_freq.clone(),
        }
    }

    /// cos and sin tables for positions `offset .. offset + len`.
    ///
    /// # Shapes
    /// Both `[len, rotary_dim / 2]` in `dtype` (the halves are identical in the rotate-half form,
    /// so only one is stored).
    pub fn cos_sin(
        &self,
        offset: usize,
        len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let inv = self.inv_freq(offset + len);
        let half = inv.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in offset..offset + len {
            let pf = p as f32;
            for &f in &inv {
                // float32 product, as transformers' `inv_freq @ position_ids` in float.
                let a = (f * pf) as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }

    /// Rotates the first `rotary_dim` dims of every head.
    ///
    /// Uses candle's fused kernel when no gradient is tracked through `x`, and the
    /// differentiable plain-ops form ([`rope_reference`]) otherwise.
    ///
    /// # Shapes
    /// `x`: `[B, heads, T, head_dim]`; `cos`, `sin`: `[T, rotary_dim / 2]`; returns `x`'s shape.
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let head_dim = x.dim(D::Minus1)?;
        let rd = self.cfg.rotary_dim;
        let (rot, pass) = if rd == head_dim {
            (x.contiguous()?, None)
        } else {
            (
                x.narrow(D::Minus1, 0, rd)?.contiguous()?,
                Some(x.narrow(D::Minus1, rd, head_dim - rd)?),
            )
        };
        let rotated = if rot.track_op() {
            rope_reference(&rot, cos, sin)?
        } else {
            candle_nn::rotary_emb::rope(&rot, cos, sin)?
        };
        match pass {
            None => Ok(rotated),
            Some(p) => Ok(Tensor::cat(&[&rotated, &p], D::Minus1)?),
        }
    }
}

/// The rotate-half RoPE from plain (differentiable) candle ops: `x·cos + rotate_half(x)·sin`.
///
/// # Shapes
/// `x`: `[B, heads, T, d]`; `cos`, `sin`: `[T, d / 2]`; returns `[B, heads, T, d]`.
pub fn rope_reference(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
}

/// Splits a fused q/k/v projection into heads and rotates q and k, in one pass.
///
/// `y` is `[B, T, (Hq + 2·Hkv)·D]` (q heads, then k, then v, as `[q_proj; k_proj; v_proj]`),
/// `cos` / `sin` are `[T, rotary_dim / 2]`. Returns q `[B, Hq, T, D]` and k, v `[B, Hkv, T, D]`,
/// contiguous, with q and k rotated by rotate-half RoPE on their first `rotary_dim` dims
/// (exactly [`RotaryEmbedding::apply`]). `None` when this fast path does not apply (not f32 on
/// the CPU, a tracked gradient): the caller then uses the plain ops.
///
/// Why: the plain ops make three strided head copies, then two rope passes with their own
/// outputs, ~1 ms per layer at a 512-token prefill of the 25M Llama; this reads `y` once and
/// writes each output once.
pub(crate) fn split_heads_rope(
    y: &Tensor,
    heads: (usize, usize),
    head_dim: usize,
    rotary_dim: usize,
    cos: &Tensor,
    sin: &Tensor,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let (nq, nkv) = heads;
    let (b, t, w) = y.dims3()?;
    let half = rotary_dim / 2;
    let cpu_f32 = |x: &Tensor| x.dtype() == DType::F32 && matches!(x.device(), Device::Cpu);
    if y.track_op()
        || !cpu_f32(y)
        || !cpu_f32(cos)
        || w != (nq + 2 * nkv) * head_dim
        || rotary_dim > head_dim
        || !rotary_dim.is_multiple_of(2)
        || cos.dims() != [t, half]
        || sin.dims() != [t, half]
    {
        return Ok(None);
    }
    let ys = y.flatten_all()?.to_vec1::<f32>()?;
    let (cs, sn) = (
        cos.flatten_all()?.to_vec1::<f32>()?,
        sin.flatten_all()?.to_vec1::<f32>()?,
    );
    let d = head_dim;
    // One task per (batch, head) of the fused output: head `h` of row `(bi, ti)` is
    // `ys[(bi·T + ti)·w + h·D ..][..D]`, written to row `ti` of that head's `[T, D]` block.
    let fill = |out: &mut [f32], first_head: usize, n_heads: usize, rotate: bool| {
        use rayon::prelude::*;
        out.par_chunks_mut(t * d)
            .enumerate()
            .for_each(|(bh, block)| {
                let (bi, h) = (bh / n_heads, first_head + bh % n_heads);
                for (ti, orow) in block.chunks_exact_mut(d).enumerate() {
                    let src = &ys[(bi * t + ti) * w + h * d..][..d];
                    if !rotate {
                        orow.copy_from_slice(src);
                        continue;
                    }
                    let (c, s) = (&cs[ti * half..][..half], &sn[ti * half..][..half]);
                    let (lo, hi) = src[..rotary_dim].split_at(half);
                    let (olo, rest) = orow.split_at_mut(half);
                    let (ohi, pass) = rest.split_at_mut(half);
                    for j in 0..half {
                        olo[j] = lo[j] * c[j] - hi[j] * s[j];
                        ohi[j] = hi[j] * c[j] + lo[j] * s[j];
                    }
                    pass.copy_from_slice(&src[rotary_dim..]);
                }
            });
    };
    let mut q = vec![0f32; b * nq * t * d];
    let mut k = vec![0f32; b * nkv * t * d];
    let mut v = vec![0f32; b * nkv * t * d];
    fill(&mut q, 0, nq, true);
    fill(&mut k, nq, nkv, true);
    fill(&mut v, nq + nkv, nkv, false);
    let dev = y.device();
    Ok(Some((
        Tensor::from_vec(q, (b, nq, t, d), dev)?,
        Tensor::from_vec(k, (b, nkv, t, d), dev)?,
        Tensor::from_vec(v, (b, nkv, t, d), dev)?,
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn cfg(kind: RopeKind) -> RopeConfig {
        RopeConfig {
            theta: 10000.0,
            kind,
            rotary_dim: 16,
        }
    }

    /// The one-pass split + rope equals the plain head split followed by `apply`, with GQA,
    /// a batch of 2 and partial rotary dims.
    #[test]
    fn split_heads_rope_equals_plain_ops() {
        let dev = Device::Cpu;
        for rd in [16usize, 8] {
            let r = RotaryEmbedding::new(RopeConfig {
                theta: 10000.0,
                kind: RopeKind::Default,
                rotary_dim: rd,
            });
            let (b, t, nq, nkv, d) = (2, 5, 4, 2, 16);
            let y = Tensor::randn(0f32, 1.0, (b, t, (nq + 2 * nkv) * d), &dev).unwrap();
            let (c, s) = r.cos_sin(3, t, DType::F32, &dev).unwrap();
            let (q, k, v) = split_heads_rope(&y, (nq, nkv), d, rd, &c, &s)
                .unwrap()
                .expect("fast path");
            let y4 = y.reshape((b, t, nq + 2 * nkv, d)).unwrap();
            let part = |start: usize, n: usize| {
                y4.narrow(2, start, n)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let wq = r.apply(&part(0, nq), &c, &s).unwrap();
            let wk = r.apply(&part(nq, nkv), &c, &s).unwrap();
            let wv = part(nq + nkv, nkv);
            for (got, want) in [(&q, &wq), (&k, &wk), (&v, &wv)] {
                assert_eq!(got.dims(), want.dims());
                let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
                assert!(diff.to_scalar::<f32>().unwrap() < 1e-6, "rd {rd}");
            }
        }
    }

    #[test]
    fn fused_equals_reference() {
        let dev = Device::Cpu;
        let r = RotaryEmbedding::new(cfg(RopeKind::Default));
        let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 16), &dev).unwrap();
        let (c, s) = r.cos_sin(7, 5, DType::F32, &dev).unwrap();
        let a = r.apply(&x, &c, &s).unwrap();
        let b = rope_reference(&x, &c, &s).unwrap();
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
    }

    #[test]
    fn linear_divides_and_dynamic_only_beyond_context() {
        let base = RotaryEmbedding::new(cfg(RopeKind::Default)).inv_freq(10);
        let lin = RotaryEmbedding::new(cfg(RopeKind::Linear { factor: 2.0 })).inv_freq(10);
        for (a, b) in base.iter().zip(&lin) {
            assert!((a / 2.0 - b).abs() < 1e-9);
        }
        let dy = RotaryEmbedding::new(cfg(RopeKind::Dynamic {
            factor: 2.0,
            original_max: 32,
        }));
        assert_eq!(dy.inv_freq(32), base);
        let long = dy.inv_freq(64);
        assert!(long[1] < base[1]);
        assert_eq!(long[0], 1.0);
    }

    #[test]
    fn llama3_keeps_high_and_scales_low_frequencies() {
        let r = RotaryEmbedding::new(RopeConfig {
            theta: 500000.0,
            kind: RopeKind::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max: 8192,
            },
            rotary_dim: 128,
        });
        let base = default_inv_freq(500000.0, 128);
        let f = r.inv_freq(10);
        assert_eq!(f[0], base[0]);
        assert!((f[63] - base[63] / 8.0).abs() < 1e-12);
    }
}
