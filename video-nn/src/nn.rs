//! Layers with diffusers' parameter names (`weight`, `bias`) and f32 accumulation for f16 / bf16.
//!
//! candle's layers compute in the input dtype; these upcast half-precision inputs to f32 for the
//! statistics of norms and for the products of linear layers and convolutions, then cast back,
//! so a model stored in f16 / bf16 does not overflow (SD / SVD activations exceed f16's range in
//! intermediate sums).

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;
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
    /// `x·σ(1.702·x)` (`"quick_gelu"`, CLIP's OpenAI checkpoints).
    QuickGelu,
    /// The tanh approximation of GELU (`"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_fast"`,
    /// diffusers' `"gelu-approximate"`).
    GeluTanh,
}

impl Activation {
    /// Parses a diffusers `act_fn` / `resnet_act_fn` or a transformers `hidden_act` name.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming the value.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            "mish" => Activation::Mish,
            "quick_gelu" => Activation::QuickGelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu-approximate" => {
                Activation::GeluTanh
            }
            other => {
                return Err(Error::Unsupported {
                    field: "act_fn".into(),
                    value: other.into(),
                    supported: "silu, swish, gelu, relu, mish, quick_gelu, gelu_new, \
                                gelu_pytorch_tanh, gelu_fast, gelu-approximate"
                        .into(),
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
            Activation::QuickGelu => {
                let dt = x.dtype();
                let xf = to_f32(x)?;
                (&xf * candle_nn::ops::sigmoid(&(&xf * 1.702)?)?)?.to_dtype(dt)?
            }
            Activation::GeluTanh => {
                let dt = x.dtype();
                to_f32(x)?.gelu()?.to_dtype(dt)?
            }
        })
    }
}

/// GEGLU: `a · gelu(g)` for `x = [a, g]` split in halves over the last dim (diffusers'
/// `GEGLU` after its projection), through [`vidgen_video_kernels::geglu`].
///
/// # Shapes
/// `[…, 2·d]` → `[…, d]`.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    vidgen_video_kernels::geglu(x)
}

/// SwiGLU: `silu(g) · u` for `x = [g, u]` split in halves over the last dim (Llama's fused
/// gate / up projection), through [`vidgen_video_kernels::swiglu`].
///
/// # Shapes
/// `[…, 2·d]` → `[…, d]`.
pub fn swiglu(x: &Tensor) -> Result<Tensor> {
    vidgen_video_kernels::swiglu(x)
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

    /// The moments of every `(sample, group)` slice of `x` (see
    /// [`vidgen_video_kernels::GroupMoments`]): gathered over chunks of a clip and merged, they
    /// give [`GroupNorm::forward_with_moments`] the statistics of the whole clip.
    ///
    /// # Shapes
    /// `x [B, C, …]` → `B · groups` moments.
    ///
    /// # Errors
    /// A wrong channel count or rank.
    pub fn moments(&self, x: &Tensor) -> Result<Vec<vidgen_video_kernels::GroupMoments>> {
        self.check_input(x)?;
        vidgen_video_kernels::group_norm_moments(x, self.groups)
    }

    /// Normalises `x` with given statistics (`B · groups` moments, e.g. merged over a whole clip
    /// by [`GroupNorm::moments`]), then SiLU when `silu`. Inference only.
    ///
    /// # Shapes
    /// As [`GroupNorm::forward`].
    ///
    /// # Errors
    /// A wrong channel count or rank; a moments list of another length.
    pub fn forward_with_moments(
        &self,
        x: &Tensor,
        moments: &[vidgen_video_kernels::GroupMoments],
        silu: bool,
    ) -> Result<Tensor> {
        self.check_input(x)?;
        let (w, b) = self.params_as(x.dtype())?;
        vidgen_video_kernels::group_norm_with_moments(
            x,
            &w,
            &b,
            self.groups,
            moments,
            self.eps,
            silu,
        )
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let dims = x.dims();
        if dims.len() < 3 || dims[1] != self.channels {
            return Err(Error::invalid(
                "group_norm input",
                format!(
                    "expected [B, {}, …] (rank ≥ 3), found {dims:?}",
                    self.channels
                ),
            ));
        }
        Ok(())
    }

    fn params_as(&self, dt: DType) -> Result<(Tensor, Tensor)> {
        Ok(if self.weight.dtype() == dt {
            (self.weight.clone(), self.bias.clone())
        } else {
            (self.weight.to_dtype(dt)?, self.bias.to_dtype(dt)?)
        })
    }

    fn forward_act(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        self.check_input(x)?;
        // The fused op computes statistics in f64 (f32 on its reference path) for any input
        // dtype and returns the input's dtype; an f32 model on half inputs, or the reverse,
        // has its parameters brought to the input's dtype first.
        let (w, b) = self.params_as(x.dtype())?;
        vidgen_video_kernels::group_norm(x, &w, &b, self.groups, self.eps, silu)
    }
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
        let cast = |t: &Tensor| -> Result<Tensor> {
            Ok(if t.dtype() == dt {
                t.clone()
            } else {
                t.to_dtype(dt)?
            })
        };
        let w = self.weight.as_ref().map(cast).transpose()?;
        let b = self.bias.as_ref().map(cast).transpose()?;
        vidgen_video_kernels::layer_norm(x, w.as_ref(), b.as_ref(), self.eps)
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

    /// A layer from existing tensors (`weight [out, in]`, `bias [out]`), e.g. a zero-initialised
    /// projection or a fused `[q; k; v]` weight.
    ///
    /// # Errors
    /// A weight that is not rank 2, or a bias that is not `[out]`.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_dim, _) = weight.dims2()?;
        if let Some(b) = &bias {
            if b.dims() != [out_dim] {
                return Err(Error::shape("linear bias", &[out_dim], b.dims()));
            }
        }
        Ok(Self { weight, bias })
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// One layer computing `layers` side by side (a fused weight layout: weights concatenated
    /// on the output dim, `[Σ out, in]`, outputs in the order given), e.g. Llama's q / k / v or
    /// gate / up projections. `None` when any weight or bias is a training variable (a
    /// concatenated copy would not follow its updates), when the layers disagree on `in` or on
    /// having a bias, or when `layers` is empty.
    ///
    /// Why: one `[rows, in] × [in, Σ out]` product packs the input once and splits the work
    /// over threads better than several narrower ones.
    ///
    /// # Errors
    /// Candle errors of the concatenation.
    pub fn fuse(layers: &[&Linear]) -> Result<Option<Linear>> {
        let Some(first) = layers.first() else {
            return Ok(None);
        };
        let in_dim = first.weight.dim(1)?;
        let has_bias = first.bias.is_some();
        for l in layers {
            let tracked = l.weight.track_op() || l.bias.as_ref().is_some_and(|b| b.track_op());
            if tracked || l.weight.dim(1)? != in_dim || l.bias.is_some() != has_bias {
                return Ok(None);
            }
        }
        let ws: Vec<&Tensor> = layers.iter().map(|l| &l.weight).collect();
        let weight = Tensor::cat(&ws, 0)?;
        let bias = if has_bias {
            let bs: Vec<&Tensor> = layers.iter().filter_map(|l| l.bias.as_ref()).collect();
            Some(Tensor::cat(&bs, 0)?)
        } else {
            None
        };
        Ok(Some(Linear { weight, bias }))
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

/// Options of a [`Conv2d`] (PyTorch `nn.Conv2d` arguments other than the sizes), per axis
/// `[H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step between output positions (≥ 1).
    pub stride: [usize; 2],
    /// Zeros added on both sides.
    pub padding: [usize; 2],
    /// Spacing between kernel taps (≥ 1).
    pub dilation: [usize; 2],
    /// Channel groups (dividing both channel counts).
    pub groups: usize,
    /// Whether the layer has a bias (`bias=True`, PyTorch's default).
    pub bias: bool,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
            bias: true,
        }
    }
}

/// `torch.nn.Conv2d`: `weight [Cout, Cin/groups, kH, kW]`, optional `bias [Cout]`, on
/// [`vidgen_video_kernels::conv2d`] (f32 accumulation for any dtype).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    opts: vidgen_video_kernels::Conv2dOpts,
}

impl Conv2d {
    /// Loads a square `k×k` convolution with symmetric stride and padding (the diffusers
    /// pattern); [`Conv2d::with_config`] takes every PyTorch option.
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
        let cfg = Conv2dConfig {
            stride: [stride; 2],
            padding: [padding; 2],
            bias,
            ..Default::default()
        };
        Self::with_config(cin, cout, [k, k], &cfg, vb)
    }

    /// Loads a convolution with kernel `[kH, kW]` and the options of `cfg`. Random init is
    /// PyTorch's: weight and bias uniform in `±1/√fan_in`.
    ///
    /// # Errors
    /// Zero sizes, stride or dilation; groups not dividing the channels; missing / mis-shaped
    /// tensors.
    pub fn with_config(
        cin: usize,
        cout: usize,
        kernel: [usize; 2],
        cfg: &Conv2dConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        if cin == 0 || cout == 0 || kernel.contains(&0) {
            return Err(Error::config(
                "conv2d",
                format!("channels {cin}→{cout} and kernel {kernel:?} must be ≥ 1"),
            ));
        }
        if cfg.stride.contains(&0) || cfg.dilation.contains(&0) {
            return Err(Error::config(
                "conv2d stride / dilation",
                format!("{:?} / {:?} must be ≥ 1", cfg.stride, cfg.dilation),
            ));
        }
        let g = cfg.groups;
        if g == 0 || !cin.is_multiple_of(g) || !cout.is_multiple_of(g) {
            return Err(Error::config(
                "conv2d groups",
                format!("{g} must be ≥ 1 and divide {cin} and {cout}"),
            ));
        }
        let fan_in = (cin / g) * kernel[0] * kernel[1];
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints((cout, cin / g, kernel[0], kernel[1]), "weight", init)?;
        let bias = if cfg.bias {
            Some(vb.get_with_hints(cout, "bias", init)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            opts: vidgen_video_kernels::Conv2dOpts {
                stride: cfg.stride,
                padding: cfg.padding,
                dilation: cfg.dilation,
                groups: g,
            },
        })
    }

    /// A layer from existing tensors (`weight [Cout, Cin/groups, kH, kW]`, `bias [Cout]`), e.g.
    /// a convolution with a folded batch norm.
    ///
    /// # Errors
    /// A weight that is not rank 4, or a bias that is not `[Cout]`.
    pub fn from_parts(
        weight: Tensor,
        bias: Option<Tensor>,
        opts: vidgen_video_kernels::Conv2dOpts,
    ) -> Result<Self> {
        let wd = weight.dims().to_vec();
        if wd.len() != 4 {
            return Err(Error::invalid(
                "conv2d weight",
                format!("expected [Cout, Cin/groups, kH, kW], found {wd:?}"),
            ));
        }
        if let Some(b) = &bias {
            if b.dims() != [wd[0]] {
                return Err(Error::shape("conv2d bias", &[wd[0]], b.dims()));
            }
        }
        Ok(Self { weight, bias, opts })
    }

    /// The weight `[Cout, Cin/groups, kH, kW]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[Cout]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.weight.dims()[1] * self.opts.groups
    }

    /// Applies the convolution.
    ///
    /// # Shapes
    /// `[B, Cin, H, W]` → `[B, Cout, H', W']`, `H' = ⌊(H + 2p − d(k − 1) − 1) / s⌋ + 1` per axis.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != self.in_channels() {
            return Err(Error::invalid(
                "conv2d input",
                format!("expected [B, {}, H, W], found {dims:?}", self.in_channels()),
            ));
        }
        // video-kernels' conv2d accumulates in f32 for any dtype; mixed dtypes (an f32 model on
        // half inputs) are computed in f32 and returned in the input's dtype.
        let dt = x.dtype();
        if self.weight.dtype() == dt && self.bias.as_ref().is_none_or(|b| b.dtype() == dt) {
            return vidgen_video_kernels::conv2d(x, &self.weight, self.bias.as_ref(), &self.opts);
        }
        let bias = self.bias.as_ref().map(to_f32).transpose()?;
        let y = vidgen_video_kernels::conv2d(
            &to_f32(x)?,
            &to_f32(&self.weight)?,
            bias.as_ref(),
            &self.opts,
        )?;
        Ok(y.to_dtype(dt)?)
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Conv2d::forward(self, xs).map_err(crate::into_candle)
    }
}

/// Options of a [`Conv3d`] (PyTorch `nn.Conv3d`), per axis `[T, H, W]`.
pub type Conv3dConfig = vidgen_video_kernels::Conv3dConfig;

/// `torch.nn.Conv3d`: `weight [Cout, Cin/groups, kT, kH, kW]`, optional `bias [Cout]`, on
/// [`vidgen_video_kernels::conv3d`] (general, temporal `(k, 1, 1)` and depthwise kernels, bias
/// fused, f32 accumulation).
#[derive(Debug, Clone)]
pub struct Conv3d {
    weight: Tensor,
    bias: Option<Tensor>,
    opts: vidgen_video_kernels::Conv3dOpts,
}

impl Conv3d {
    /// Loads (or randomly initialises) the layer from `vb`: weight and bias uniform in
    /// `±1/√fan_in` as PyTorch. The bias is read when `cfg.bias` is set or the checkpoint has
    /// one.
    ///
    /// # Errors
    /// Zero channels / kernel / stride / dilation, groups not dividing both channel counts;
    /// a missing or mis-shaped `weight` / `bias`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 3],
        cfg: &Conv3dConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        if in_channels == 0 || out_channels == 0 || kernel.contains(&0) {
            return Err(Error::config(
                "conv3d",
                format!("channels {in_channels}→{out_channels} and kernel {kernel:?} must be ≥ 1"),
            ));
        }
        if cfg.stride.contains(&0) || cfg.dilation.contains(&0) {
            return Err(Error::config(
                "conv3d stride / dilation",
                format!("{:?} / {:?} must be ≥ 1", cfg.stride, cfg.dilation),
            ));
        }
        let g = cfg.groups;
        if g == 0 || !in_channels.is_multiple_of(g) || !out_channels.is_multiple_of(g) {
            return Err(Error::config(
                "conv3d groups",
                format!("{g} must be ≥ 1 and divide {in_channels} and {out_channels}"),
            ));
        }
        let cin_g = in_channels / g;
        let fan_in = (cin_g * kernel.iter().product::<usize>()) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints(
            (out_channels, cin_g, kernel[0], kernel[1], kernel[2]),
            "weight",
            init,
        )?;
        let bias = if cfg.bias || vb.contains_tensor("bias") {
            Some(vb.get_with_hints(out_channels, "bias", init)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            opts: cfg.opts(),
        })
    }

    /// A layer from existing tensors (`weight [Cout, Cin/groups, kT, kH, kW]`, `bias [Cout]`).
    ///
    /// # Errors
    /// A weight that is not rank 5 or whose `Cout` groups do not divide, a bias not `[Cout]`.
    pub fn from_parts(
        weight: Tensor,
        bias: Option<Tensor>,
        opts: vidgen_video_kernels::Conv3dOpts,
    ) -> Result<Self> {
        let wd = weight.dims();
        if wd.len() != 5 || opts.groups == 0 || !wd[0].is_multiple_of(opts.groups) {
            return Err(Error::invalid(
                "conv3d weight",
                format!(
                    "expected [Cout, Cin/groups, kT, kH, kW] with groups = {} dividing Cout, \
                     found {wd:?}",
                    opts.groups
                ),
            ));
        }
        if let Some(b) = &bias {
            if b.dims() != [wd[0]] {
                return Err(Error::shape("conv3d bias", &[wd[0]], b.dims()));
            }
        }
        Ok(Self { weight, bias, opts })
    }

    /// The weight `[Cout, Cin/groups, kT, kH, kW]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[Cout]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The convolution options.
    pub fn opts(&self) -> &vidgen_video_kernels::Conv3dOpts {
        &self.opts
    }

    /// Applies the convolution.
    ///
    /// # Shapes
    /// `[B, Cin, T, H, W]` → `[B, Cout, T', H', W']`, each output dim
    /// `⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        vidgen_video_kernels::conv3d(x, &self.weight, self.bias.as_ref(), &self.opts)
    }
}

impl Module for Conv3d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Conv3d::forward(self, xs).map_err(crate::into_candle)
    }
}

/// A 3D convolution with kernel `(kT, 1, 1)` and temporal padding `kT / 2` (SVD's temporal
/// convs); loads `weight [Cout, Cin, kT, 1, 1]` and `bias`.
#[derive(Debug, Clone)]
pub struct TemporalConv {
    inner: Conv3d,
    kt: usize,
}

impl TemporalConv {
    /// Loads the layer.
    ///
    /// # Errors
    /// Zero sizes; missing / mis-shaped tensors.
    pub fn new(cin: usize, cout: usize, kt: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv3dConfig {
            padding: [kt / 2, 0, 0],
            ..Default::default()
        };
        Ok(Self {
            inner: Conv3d::new(cin, cout, [kt, 1, 1], &cfg, vb)?,
            kt,
        })
    }

    /// The temporal kernel size `kT`: an output frame depends on the `kT / 2` input frames on
    /// each side of it.
    pub fn kernel_t(&self) -> usize {
        self.kt
    }

    /// Applies the convolution (f32 accumulation for any float dtype).
    ///
    /// # Shapes
    /// `[B, Cin, T, H, W]` → `[B, Cout, T, H, W]` (odd `kT`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.forward(x)
    }
}

/// RMSNorm over the last dim (Llama's `LlamaRMSNorm`, T5's `T5LayerNorm`):
/// `x / √(mean(x²) + eps) · weight`, statistics in f32, on [`vidgen_video_kernels::rms_norm`].
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Loads `weight [dim]` (random init: ones).
    ///
    /// # Errors
    /// Missing / mis-shaped tensor.
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        Ok(Self { weight, eps })
    }

    /// A layer from an existing weight `[dim]`.
    pub fn from_weight(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }

    /// The weight `[dim]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The epsilon.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Normalises over the last dim.
    ///
    /// # Shapes
    /// `[…, dim]` → same shape and dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dim = self.weight.dims1()?;
        if x.dims().last() != Some(&dim) {
            return Err(Error::invalid(
                "rms_norm input",
                format!("expected last dim {dim}, found {:?}", x.dims()),
            ));
        }
        vidgen_video_kernels::rms_norm(x, &self.weight, self.eps)
    }

    /// `(x + residual, rms_norm(x + residual))` in one pass (a pre-norm block's residual add
    /// fused with the next norm).
    ///
    /// # Shapes
    /// `x`, `residual`: `[…, dim]` → two tensors of the same shape.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<(Tensor, Tensor)> {
        vidgen_video_kernels::add_rms_norm(x, residual, &self.weight, self.eps)
    }
}

/// `torch.nn.Embedding`: a lookup table `weight [num_embeddings, dim]` (random init
/// `N(0, 1)` as PyTorch).
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Tensor,
}

impl Embedding {
    /// Loads `weight [n, dim]`.
    ///
    /// # Errors
    /// Missing / mis-shaped tensor.
    pub fn new(n: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(
            (n, dim),
            "weight",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        Ok(Self { weight })
    }

    /// A table from an existing weight `[n, dim]`.
    ///
    /// # Errors
    /// A weight that is not rank 2.
    pub fn from_weight(weight: Tensor) -> Result<Self> {
        weight.dims2()?;
        Ok(Self { weight })
    }

    /// The table `[n, dim]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks ids up.
    ///
    /// # Shapes
    /// `ids [...]` (u32 / i64 / u8) → `[..., dim]`.
    ///
    /// # Errors
    /// An id outside `0..n` ([`Error::InvalidArgument`] naming the id), a float id tensor.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if ids.dtype().is_float() {
            return Err(Error::invalid(
                "embedding ids",
                format!("expected an integer tensor, found {:?}", ids.dtype()),
            ));
        }
        let n = self.len();
        let flat = ids.flatten_all()?;
        let max = flat.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        if let Some(&bad) = max.iter().find(|&&v| v < 0 || v as usize >= n) {
            return Err(Error::invalid(
                "embedding ids",
                format!("id {bad} is outside the table of {n} rows"),
            ));
        }
        let rows = self.weight.index_select(&flat, 0)?;
        let mut shape = ids.dims().to_vec();
        shape.push(self.weight.dims()[1]);
        Ok(rows.reshape(shape)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod fuse_tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_linear_equals_its_parts_side_by_side() {
        let dev = Device::Cpu;
        let vb = |seed: u64| video_testkit::seeded_var_builder(seed, DType::F32, &dev);
        let a = Linear::new(6, 4, true, vb(1)).unwrap();
        let b = Linear::new(6, 3, true, vb(2)).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 5, 6), &dev).unwrap();
        let f = Linear::fuse(&[&a, &b]).unwrap().unwrap();
        assert_eq!(f.weight().dims(), [7, 6]);
        let want = Tensor::cat(&[a.forward(&x).unwrap(), b.forward(&x).unwrap()], 2).unwrap();
        let d = (f.forward(&x).unwrap() - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "{d}");
        // Not fused: mixed biases, other input widths, training variables, nothing.
        let nb = Linear::new(6, 3, false, vb(3)).unwrap();
        assert!(Linear::fuse(&[&a, &nb]).unwrap().is_none());
        let wide = Linear::new(7, 3, true, vb(4)).unwrap();
        assert!(Linear::fuse(&[&a, &wide]).unwrap().is_none());
        let var = Var::from_tensor(b.weight()).unwrap();
        let tracked = Linear::from_weights(var.as_tensor().clone(), b.bias().cloned()).unwrap();
        assert!(Linear::fuse(&[&a, &tracked]).unwrap().is_none());
        assert!(Linear::fuse(&[]).unwrap().is_none());
    }
}
