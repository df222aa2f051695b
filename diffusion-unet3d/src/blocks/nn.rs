//! Layers with diffusers' parameter names (`weight`, `bias`) and f32 accumulation for f16 / bf16.
//!
//! candle's layers compute in the input dtype; these upcast half-precision inputs to f32 for the
//! statistics of norms and for the products of linear layers and convolutions, then cast back,
//! so a model stored in f16 / bf16 does not overflow (SD / SVD activations exceed f16's range in
//! intermediate sums).

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use vidgen_video_core::{Error, Result};

/// Whether `dt` is a half-precision float that we upcast for accumulation.
fn is_half(dt: DType) -> bool {
    matches!(dt, DType::F16 | DType::BF16)
}

/// `x` in f32 (a no-op for f32 tensors).
pub fn to_f32(x: &Tensor) -> Result<Tensor> {
    Ok(if x.dtype() == DType::F32 {
        x.clone()
    } else {
        x.to_dtype(DType::F32)?
    })
}

/// An activation function by its diffusers name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x·σ(x)` (`"silu"`, `"swish"`).
    Silu,
    /// Exact (erf) GELU (`"gelu"`).
    Gelu,
    /// `max(x, 0)` (`"relu"`).
    Relu,
    /// `x·tanh(softplus(x))` (`"mish"`).
    Mish,
}

impl Activation {
    /// Parses a diffusers `act_fn` / `resnet_act_fn` name.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming the value.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            "mish" => Activation::Mish,
            other => {
                return Err(Error::Unsupported {
                    field: "act_fn".into(),
                    value: other.into(),
                    supported: "silu, swish, gelu, relu, mish".into(),
                })
            }
        })
    }

    /// Applies the activation elementwise (any shape).
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Silu => vidgen_video_kernels::silu(x)?,
            Activation::Gelu => vidgen_video_kernels::gelu_erf(x)?,
            Activation::Relu => x.relu()?,
            Activation::Mish => {
                // softplus(x) = max(x, 0) + ln(1 + e^{−|x|}), stable for large |x|.
                let sp = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                (x * sp.tanh()?)?
            }
        })
    }
}

/// `torch.nn.GroupNorm` (affine): statistics per (sample, group) over the group's channels and
/// all following dims, always accumulated in f64 and applied in f32.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    channels: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads `weight [C]` and `bias [C]` from `vb`.
    ///
    /// # Errors
    /// `groups` zero or not dividing `channels`; missing / mis-shaped tensors.
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::config(
                "norm_num_groups",
                format!("{groups} groups must be ≥ 1 and divide {channels} channels"),
            ));
        }
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias,
            groups,
            channels,
            eps,
        })
    }

    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Normalises `x`.
    ///
    /// # Shapes
    /// `[B, C, …]` (any rank ≥ 3, e.g. `[B, C, H, W]` or `[B, C, T, H, W]`) → same shape and dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, false)
    }

    /// `silu(group_norm(x))` in one pass (the pattern of every ResNet block).
    ///
    /// # Shapes
    /// As [`GroupNorm::forward`].
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, true)
    }

    fn forward_act(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.len() < 3 || dims[1] != self.channels {
            return Err(Error::invalid(
                "group_norm input",
                format!(
                    "expected [B, {}, …] (rank ≥ 3), found {dims:?}",
                    self.channels
                ),
            ));
        }
        let dt = x.dtype();
        // The fused CPU pass computes on plain vectors, which autograd cannot see through:
        // tracked inputs or weights (training adapters through a frozen base, or the base
        // itself) take the differentiable plain-ops path.
        if !x.device().is_cpu() || x.track_op() || self.weight.track_op() || self.bias.track_op() {
            return self.forward_ops(x, silu);
        }
        let b = dims[0];
        let spatial: usize = dims[2..].iter().product();
        let cpg = self.channels / self.groups;
        let n = cpg * spatial;
        let xs = to_f32(x)?.flatten_all()?.to_vec1::<f32>()?;
        let w = to_f32(&self.weight)?.to_vec1::<f32>()?;
        let bias = to_f32(&self.bias)?.to_vec1::<f32>()?;
        let mut out = vec![0f32; xs.len()];
        let eps = self.eps;
        out.par_chunks_mut(n)
            .zip(xs.par_chunks(n))
            .enumerate()
            .for_each(|(bg, (o, xi))| {
                let g = bg % self.groups;
                // f64 statistics in eight partial sums: one running sum is a chain of
                // dependent adds (latency-bound, ~4 cycles per element); eight vectorise.
                let mean = sum8(xi, |v| v as f64) / n as f64;
                let var = sum8(xi, |v| {
                    let d = v as f64 - mean;
                    d * d
                }) / n as f64;
                let rstd = 1.0 / (var + eps).sqrt();
                let (mean, rstd) = (mean as f32, rstd as f32);
                for c in 0..cpg {
                    let ch = g * cpg + c;
                    let a = w[ch] * rstd;
                    let sh = bias[ch] - mean * a;
                    let (oc, xc) = (
                        &mut o[c * spatial..(c + 1) * spatial],
                        &xi[c * spatial..(c + 1) * spatial],
                    );
                    for (ov, &xv) in oc.iter_mut().zip(xc) {
                        *ov = xv * a + sh;
                    }
                    if silu {
                        vidgen_video_kernels::silu_slice(oc);
                    }
                }
            });
        let _ = b;
        let y = Tensor::from_vec(out, dims, x.device())?;
        Ok(if dt == DType::F32 { y } else { y.to_dtype(dt)? })
    }

    /// Plain-ops version for non-CPU devices and autograd (f32 statistics).
    fn forward_ops(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let dt = x.dtype();
        let b = dims[0];
        let xf = to_f32(x)?.reshape((b, self.groups, ()))?;
        let mean = xf.mean_keepdim(D::Minus1)?;
        let xc = xf.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let mut wd = vec![1usize; dims.len()];
        wd[1] = self.channels;
        let y = xn
            .reshape(dims)?
            .broadcast_mul(&to_f32(&self.weight)?.reshape(wd.clone())?)?
            .broadcast_add(&to_f32(&self.bias)?.reshape(wd)?)?;
        let y = if silu { candle_nn::ops::silu(&y)? } else { y };
        Ok(y.to_dtype(dt)?)
    }
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

/// `torch.nn.LayerNorm` over the last dim, statistics in f32.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    dim: usize,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight [dim]`, `bias [dim]` when `affine` (`elementwise_affine=True`).
    ///
    /// # Errors
    /// Missing / mis-shaped tensors.
    pub fn new(dim: usize, eps: f64, affine: bool, vb: VarBuilder) -> Result<Self> {
        let (weight, bias) = if affine {
            (
                Some(vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?),
                Some(vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            weight,
            bias,
            dim,
            eps,
        })
    }

    /// Normalises over the last dim.
    ///
    /// # Shapes
    /// `[…, dim]` → same shape and dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dims().last() != Some(&self.dim) {
            return Err(Error::invalid(
                "layer_norm input",
                format!("expected last dim {}, found {:?}", self.dim, x.dims()),
            ));
        }
        let dt = x.dtype();
        let xf = to_f32(x)?.contiguous()?;
        let ones;
        let zeros;
        let (w, b) = match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => (to_f32(w)?, to_f32(b)?),
            _ => {
                ones = Tensor::ones(self.dim, DType::F32, x.device())?;
                zeros = Tensor::zeros(self.dim, DType::F32, x.device())?;
                (ones, zeros)
            }
        };
        let y = candle_nn::ops::layer_norm(&xf, &w, &b, self.eps as f32)?;
        Ok(if dt == DType::F32 { y } else { y.to_dtype(dt)? })
    }
}

/// `torch.nn.Linear`: `weight [out, in]`, optional `bias [out]`; products in f32 for half inputs.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight [out, in]` and, when `bias`, `bias [out]`.
    ///
    /// # Errors
    /// Missing / mis-shaped tensors.
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let bound = 1.0 / (in_dim.max(1) as f64).sqrt();
        let weight = vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bias = if bias {
            Some(vb.get_with_hints(
                out_dim,
                "bias",
                candle_nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `x·Wᵀ + b` over the last dim.
    ///
    /// # Shapes
    /// `[…, in]` → `[…, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (out_dim, in_dim) = self.weight.dims2()?;
        if dims.last() != Some(&in_dim) {
            return Err(Error::invalid(
                "linear input",
                format!("expected last dim {in_dim}, found {dims:?}"),
            ));
        }
        let dt = x.dtype();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let (x2, w) = if is_half(dt) {
            (to_f32(x)?, to_f32(&self.weight)?)
        } else {
            (x.clone(), self.weight.clone())
        };
        let x2 = x2.reshape((rows, in_dim))?;
        let bias = match &self.bias {
            Some(b) => Some(b.to_dtype(x2.dtype())?),
            None => None,
        };
        // video-kernels' linear: column-blocked gemm into an unzeroed output (candle's matmul
        // when gradients are tracked).
        let y = vidgen_video_kernels::linear(&x2, &w, bias.as_ref())?;
        let mut od = dims;
        if let Some(l) = od.last_mut() {
            *l = out_dim;
        }
        Ok(y.reshape(od)?.to_dtype(dt)?)
    }
}

/// `torch.nn.Conv2d` with square kernels and symmetric padding: `weight [Cout, Cin, k, k]`,
/// optional `bias [Cout]`; computed in f32 for half inputs.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Loads a `k×k` convolution from `vb`.
    ///
    /// # Errors
    /// Zero sizes; missing / mis-shaped tensors.
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        if cin == 0 || cout == 0 || k == 0 || stride == 0 {
            return Err(Error::config(
                "conv2d",
                format!("channels {cin}→{cout}, kernel {k}, stride {stride} must be ≥ 1"),
            ));
        }
        let bound = 1.0 / ((cin * k * k) as f64).sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints((cout, cin, k, k), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(cout, "bias", init)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Applies the convolution.
    ///
    /// # Shapes
    /// `[B, Cin, H, W]` → `[B, Cout, H', W']`, `H' = (H + 2p − k) / s + 1`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != self.in_channels() {
            return Err(Error::invalid(
                "conv2d input",
                format!("expected [B, {}, H, W], found {dims:?}", self.in_channels()),
            ));
        }
        let opts = vidgen_video_kernels::Conv2dOpts {
            stride: [self.stride; 2],
            padding: [self.padding; 2],
            ..Default::default()
        };
        // video-kernels' conv2d accumulates in f32 for any dtype; mixed dtypes (an f32 model on
        // half inputs) are computed in f32 and returned in the input's dtype.
        let dt = x.dtype();
        if self.weight.dtype() == dt && self.bias.as_ref().is_none_or(|b| b.dtype() == dt) {
            return vidgen_video_kernels::conv2d(x, &self.weight, self.bias.as_ref(), &opts);
        }
        let bias = self.bias.as_ref().map(to_f32).transpose()?;
        let y = vidgen_video_kernels::conv2d(
            &to_f32(x)?,
            &to_f32(&self.weight)?,
            bias.as_ref(),
            &opts,
        )?;
        Ok(y.to_dtype(dt)?)
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Conv2d::forward(self, xs).map_err(into_candle)
    }
}

/// Maps a vidgen error into a candle error (for `Module` impls).
pub(crate) fn into_candle(e: Error) -> candle_core::Error {
    match e {
        Error::Candle(c) => c,
        other => candle_core::Error::wrap(other),
    }
}

/// A 3D convolution with kernel `(kT, 1, 1)` and temporal padding `kT / 2` (SVD's temporal
/// convs), through [`vidgen_video_kernels::conv3d`]; loads `weight [Cout, Cin, kT, 1, 1]` and `bias`.
#[derive(Debug, Clone)]
pub struct TemporalConv {
    inner: vidgen_video_kernels::Conv3d,
}

impl TemporalConv {
    /// Loads the layer.
    ///
    /// # Errors
    /// Zero sizes; missing / mis-shaped tensors.
    pub fn new(cin: usize, cout: usize, kt: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = vidgen_video_kernels::Conv3dConfig {
            padding: [kt / 2, 0, 0],
            ..Default::default()
        };
        Ok(Self {
            inner: vidgen_video_kernels::Conv3d::new(cin, cout, [kt, 1, 1], &cfg, vb)?,
        })
    }

    /// Applies the convolution (f32 accumulation for any float dtype).
    ///
    /// # Shapes
    /// `[B, Cin, T, H, W]` → `[B, Cout, T, H, W]` (odd `kT`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.forward(x)
    }
}
