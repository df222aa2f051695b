//! diffusers' `ResnetBlock2D`, `Downsample2D` and `Upsample2D`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, Result};

use crate::nn::{Activation, Conv2d, GroupNorm, Linear};

/// How the time embedding enters a [`ResnetBlock2D`] (`time_embedding_norm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeEmbeddingNorm {
    /// `h = norm2(h + proj(temb))` (`"default"`).
    #[default]
    Default,
    /// `h = norm2(h)·(1 + scale) + shift`, `proj(temb)` split in two (`"scale_shift"`).
    ScaleShift,
}

/// Construction arguments of a [`ResnetBlock2D`], named as diffusers' constructor.
#[derive(Debug, Clone, PartialEq)]
pub struct ResnetBlock2DConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (`None` = `in_channels`).
    pub out_channels: Option<usize>,
    /// Time-embedding channels; `None` builds no `time_emb_proj`.
    pub temb_channels: Option<usize>,
    /// GroupNorm groups of `norm1`.
    pub groups: usize,
    /// GroupNorm groups of `norm2` (`None` = `groups`).
    pub groups_out: Option<usize>,
    /// GroupNorm epsilon.
    pub eps: f64,
    /// Activation (`non_linearity`).
    pub act: Activation,
    /// How the time embedding is applied.
    pub time_embedding_norm: TimeEmbeddingNorm,
    /// Output divided by this (`output_scale_factor`).
    pub output_scale_factor: f64,
    /// Skip the activation on the time embedding (`skip_time_act`).
    pub skip_time_act: bool,
    /// A 3×3 instead of 1×1 shortcut conv (`conv_shortcut=True`).
    pub conv_shortcut: bool,
    /// Force (or forbid) the shortcut conv; `None` = when channels differ.
    pub use_in_shortcut: Option<bool>,
    /// Whether the shortcut conv has a bias.
    pub conv_shortcut_bias: bool,
}

impl ResnetBlock2DConfig {
    /// diffusers' defaults (`temb_channels = 512`, 32 groups, eps 1e-6, SiLU) for `in → out`.
    pub fn new(in_channels: usize, out_channels: usize) -> Self {
        Self {
            in_channels,
            out_channels: Some(out_channels),
            temb_channels: Some(512),
            groups: 32,
            groups_out: None,
            eps: 1e-6,
            act: Activation::Silu,
            time_embedding_norm: TimeEmbeddingNorm::Default,
            output_scale_factor: 1.0,
            skip_time_act: false,
            conv_shortcut: false,
            use_in_shortcut: None,
            conv_shortcut_bias: true,
        }
    }

    /// Sets the time-embedding channels (`None`: no time embedding).
    pub fn temb(mut self, temb_channels: Option<usize>) -> Self {
        self.temb_channels = temb_channels;
        self
    }

    /// Sets the GroupNorm epsilon.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets the GroupNorm groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
}

/// diffusers' `ResnetBlock2D` (no up / down resampling inside):
/// `(shortcut(x) + conv2(act(norm2(conv1(act(norm1(x))) + temb_proj(act(temb))))) / output_scale_factor`.
///
/// Keys: `norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2`, `conv_shortcut`.
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    cfg: ResnetBlock2DConfig,
}

impl ResnetBlock2D {
    /// Builds the block from `vb`.
    ///
    /// # Errors
    /// Groups not dividing channels; missing / mis-shaped tensors.
    pub fn new(cfg: &ResnetBlock2DConfig, vb: VarBuilder) -> Result<Self> {
        let cin = cfg.in_channels;
        let cout = cfg.out_channels.unwrap_or(cin);
        let silu_like = cfg.act == Activation::Silu;
        let _ = silu_like;
        let time_emb_proj = match cfg.temb_channels {
            Some(t) => {
                let n = match cfg.time_embedding_norm {
                    TimeEmbeddingNorm::Default => cout,
                    TimeEmbeddingNorm::ScaleShift => 2 * cout,
                };
                Some(Linear::new(t, n, true, vb.pp("time_emb_proj"))?)
            }
            None => None,
        };
        let use_in_shortcut = cfg.use_in_shortcut.unwrap_or(cin != cout);
        let conv_shortcut = if use_in_shortcut {
            let (k, p) = if cfg.conv_shortcut { (3, 1) } else { (1, 0) };
            Some(Conv2d::new(
                cin,
                cout,
                k,
                1,
                p,
                cfg.conv_shortcut_bias,
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::new(cfg.groups, cin, cfg.eps, vb.pp("norm1"))?,
            conv1: Conv2d::new(cin, cout, 3, 1, 1, true, vb.pp("conv1"))?,
            time_emb_proj,
            norm2: GroupNorm::new(
                cfg.groups_out.unwrap_or(cfg.groups),
                cout,
                cfg.eps,
                vb.pp("norm2"),
            )?,
            conv2: Conv2d::new(cout, cout, 3, 1, 1, true, vb.pp("conv2"))?,
            conv_shortcut,
            cfg: cfg.clone(),
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.conv2.out_channels()
    }

    fn norm_act(&self, n: &GroupNorm, x: &Tensor) -> Result<Tensor> {
        if self.cfg.act == Activation::Silu {
            n.forward_silu(x)
        } else {
            self.cfg.act.forward(&n.forward(x)?)
        }
    }

    /// Applies the block.
    ///
    /// # Shapes
    /// `x [N, Cin, H, W]`, `temb [N, temb_channels]` (or `None`) → `[N, Cout, H, W]`.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let h = self.norm_act(&self.norm1, x)?;
        let mut h = self.conv1.forward(&h)?;
        let temb = match (&self.time_emb_proj, temb) {
            (Some(p), Some(t)) => {
                let t = if self.cfg.skip_time_act {
                    t.clone()
                } else {
                    self.cfg.act.forward(t)?
                };
                // [N, C] -> [N, C, 1, 1]
                Some(p.forward(&t)?.unsqueeze(2)?.unsqueeze(3)?)
            }
            (Some(_), None) => {
                return Err(Error::invalid(
                    "temb",
                    "this ResnetBlock2D has a time_emb_proj and needs a time embedding",
                ))
            }
            _ => None,
        };
        let h = match (self.cfg.time_embedding_norm, temb) {
            (TimeEmbeddingNorm::Default, Some(t)) => {
                h = vidgen_video_kernels::add(&h, &t)?;
                self.norm_act(&self.norm2, &h)?
            }
            (TimeEmbeddingNorm::ScaleShift, Some(t)) => {
                let c = self.out_channels();
                let scale = t.narrow(1, 0, c)?;
                let shift = t.narrow(1, c, c)?;
                let n = self.norm2.forward(&h)?;
                let n = n.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(&shift)?;
                self.cfg.act.forward(&n)?
            }
            (_, None) => self.norm_act(&self.norm2, &h)?,
        };
        let h = self.conv2.forward(&h)?;
        let x = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let out = vidgen_video_kernels::add(&x, &h)?;
        Ok(if self.cfg.output_scale_factor != 1.0 {
            (out / self.cfg.output_scale_factor)?
        } else {
            out
        })
    }
}

/// diffusers' `Downsample2D` with a convolution (`use_conv=True`): a stride-2 3×3 conv (key
/// `conv`); with `padding = 0` the input is first padded by one on the right and bottom, as
/// diffusers does. Without a conv: 2×2 average pooling.
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Option<Conv2d>,
    padding: usize,
}

impl Downsample2D {
    /// `Downsample2D(channels, use_conv, out_channels, padding)` (kernel 3).
    ///
    /// # Errors
    /// Missing / mis-shaped tensors.
    pub fn new(
        channels: usize,
        use_conv: bool,
        out_channels: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv = if use_conv {
            Some(Conv2d::new(
                channels,
                out_channels,
                3,
                2,
                padding,
                true,
                vb.pp("conv"),
            )?)
        } else {
            None
        };
        Ok(Self { conv, padding })
    }

    /// # Shapes
    /// `[N, C, H, W]` → `[N, Cout, ⌊(H+2p−3)/2⌋+1, …]` (conv) or `[N, C, H/2, W/2]` (pool).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.conv {
            Some(c) => {
                if self.padding == 0 {
                    let x = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
                    c.forward(&x)
                } else {
                    c.forward(x)
                }
            }
            None => Ok(x.avg_pool2d(2)?),
        }
    }
}

/// diffusers' `Upsample2D`: nearest ×2 (or to an explicit size), then an optional 3×3 conv
/// (key `conv`).
#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Option<Conv2d>,
}

impl Upsample2D {
    /// `Upsample2D(channels, use_conv, out_channels)` (kernel 3, padding 1).
    ///
    /// # Errors
    /// Missing / mis-shaped tensors.
    pub fn new(
        channels: usize,
        use_conv: bool,
        out_channels: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv = if use_conv {
            Some(Conv2d::new(
                channels,
                out_channels,
                3,
                1,
                1,
                true,
                vb.pp("conv"),
            )?)
        } else {
            None
        };
        Ok(Self { conv })
    }

    /// # Shapes
    /// `[N, C, H, W]` → `[N, Cout, 2H, 2W]`, or `[N, Cout, h, w]` for `size = Some((h, w))`.
    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (oh, ow) = size.unwrap_or((2 * h, 2 * w));
        let up = if oh == 2 * h && ow == 2 * w {
            upsample_nearest2x(x)?
        } else {
            upsample_nearest_to(x, oh, ow)?
        };
        match &self.conv {
            Some(c) => c.forward(&up),
            None => Ok(up),
        }
    }
}

/// Nearest-neighbour resize to `oh × ow` as torch's `F.interpolate(size=…, mode="nearest")`:
/// output row `i` reads input row `min(⌊i·(h/oh)⌋, h−1)` with the scale in f32, as torch
/// computes it. A gather along H then W (`index_select`), so it has a backward for any size,
/// where candle's `upsample_nearest2d` refuses non-integer factors (the UNets' odd-size up
/// blocks must train).
fn upsample_nearest_to(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let rows = |n_in: usize, n_out: usize| -> Result<Tensor> {
        let scale = n_in as f32 / n_out as f32;
        let idx: Vec<u32> = (0..n_out)
            .map(|i| {
                let src = if n_out == n_in {
                    i
                } else if n_out == 2 * n_in {
                    i / 2
                } else {
                    ((i as f32 * scale).floor() as usize).min(n_in.saturating_sub(1))
                };
                u32::try_from(src).unwrap_or(u32::MAX)
            })
            .collect();
        Ok(Tensor::from_vec(idx, n_out, x.device())?)
    };
    let y = x.index_select(&rows(h, oh)?, 2)?;
    Ok(y.index_select(&rows(w, ow)?, 3)?)
}

/// Nearest-neighbour ×2 upsampling by broadcasting (each value repeated in a 2×2 block).
///
/// # Shapes
/// `[N, C, H, W]` → `[N, C, 2H, 2W]`.
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    // [N, C, H, 1, W, 1] -> [N, C, H, 2, W, 2] -> [N, C, 2H, 2W]
    Ok(vidgen_video_kernels::contiguous(
        &x.reshape((n, c, h, 1, w, 1))?
            .broadcast_as((n, c, h, 2, w, 2))?,
    )?
    .reshape((n, c, 2 * h, 2 * w))?)
}

/// diffusers' `SpatialNorm` (MoVQ): `GroupNorm(32, eps 1e-6)(f) · conv_y(zq↑) + conv_b(zq↑)`,
/// with `zq` resized to `f`'s size by nearest interpolation. Keys `norm_layer`, `conv_y`,
/// `conv_b`.
#[derive(Debug, Clone)]
pub struct SpatialNorm {
    norm_layer: GroupNorm,
    conv_y: Conv2d,
    conv_b: Conv2d,
}

impl SpatialNorm {
    /// `SpatialNorm(f_channels, zq_channels)`.
    ///
    /// # Errors
    /// `f_channels` not a multiple of 32; missing / mis-shaped tensors.
    pub fn new(f_channels: usize, zq_channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm_layer: GroupNorm::new(32, f_channels, 1e-6, vb.pp("norm_layer"))?,
            conv_y: Conv2d::new(zq_channels, f_channels, 1, 1, 0, true, vb.pp("conv_y"))?,
            conv_b: Conv2d::new(zq_channels, f_channels, 1, 1, 0, true, vb.pp("conv_b"))?,
        })
    }

    /// # Shapes
    /// `f [B, C, H, W]`, `zq [B, C', h, w]` → `[B, C, H, W]`.
    pub fn forward(&self, f: &Tensor, zq: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = f.dims4()?;
        let zq = zq.upsample_nearest2d(h, w)?;
        let nf = self.norm_layer.forward(f)?;
        Ok((nf.broadcast_mul(&self.conv_y.forward(&zq)?)? + self.conv_b.forward(&zq)?)?)
    }
}

/// diffusers' `ResnetBlockCondNorm2D` with `time_embedding_norm = "spatial"` (MoVQ decoders):
/// a [`ResnetBlock2D`] whose norms are [`SpatialNorm`]s conditioned on `zq`, with no time
/// projection: `(shortcut(x) + conv2(act(norm2(conv1(act(norm1(x, zq))), zq)))) / scale`.
///
/// Keys: `norm1`, `conv1`, `norm2`, `conv2`, `conv_shortcut`.
#[derive(Debug, Clone)]
pub struct ResnetBlockCondNorm2D {
    norm1: SpatialNorm,
    conv1: Conv2d,
    norm2: SpatialNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    act: Activation,
    output_scale_factor: f64,
}

impl ResnetBlockCondNorm2D {
    /// Builds the block: `in → out` channels, `zq_channels` conditioning channels.
    ///
    /// # Errors
    /// Channels not multiples of 32; missing / mis-shaped tensors.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        zq_channels: usize,
        act: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            norm1: SpatialNorm::new(in_channels, zq_channels, vb.pp("norm1"))?,
            conv1: Conv2d::new(in_channels, out_channels, 3, 1, 1, true, vb.pp("conv1"))?,
            norm2: SpatialNorm::new(out_channels, zq_channels, vb.pp("norm2"))?,
            conv2: Conv2d::new(out_channels, out_channels, 3, 1, 1, true, vb.pp("conv2"))?,
            conv_shortcut: if in_channels != out_channels {
                Some(Conv2d::new(
                    in_channels,
                    out_channels,
                    1,
                    1,
                    0,
                    true,
                    vb.pp("conv_shortcut"),
                )?)
            } else {
                None
            },
            act,
            output_scale_factor: 1.0,
        })
    }

    /// # Shapes
    /// `x [N, Cin, H, W]`, `zq [N, C', h, w]` → `[N, Cout, H, W]`.
    pub fn forward(&self, x: &Tensor, zq: &Tensor) -> Result<Tensor> {
        let h = self.act.forward(&self.norm1.forward(x, zq)?)?;
        let h = self.conv1.forward(&h)?;
        let h = self.act.forward(&self.norm2.forward(&h, zq)?)?;
        let h = self.conv2.forward(&h)?;
        let x = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let y = vidgen_video_kernels::add(&x, &h)?;
        Ok(if self.output_scale_factor == 1.0 {
            y
        } else {
            (y / self.output_scale_factor)?
        })
    }
}
