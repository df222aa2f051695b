//! diffusers `VQModel` (VQGAN / VQ-VAE image autoencoder) in candle.
//!
//! Mirrors `diffusers/models/autoencoders/vq_model.py` and the `Encoder` / `Decoder` of
//! `autoencoders/vae.py`; field names equal checkpoint keys, so a `save_pretrained` directory
//! loads unchanged:
//!
//! ```text
//! encoder.conv_in → down_blocks[i].{resnets[j], downsamplers.0.conv} → mid_block
//!   → conv_norm_out → act → conv_out            (latent_channels, H/2^(L−1))
//! quant_conv (1×1) → quantize.embedding [K, vq_embed_dim] → post_quant_conv (1×1)
//! decoder.conv_in → mid_block → up_blocks[i].{resnets[j], upsamplers.0.conv}
//!   → conv_norm_out (GroupNorm, or SpatialNorm(zq) when norm_type = "spatial") → act → conv_out
//! ```

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{group_norm, linear, GroupNorm, Linear, VarBuilder};
use serde::Deserialize;
use vidgen_video_core::{Error, LoadReport, ModelDir, Result};
use vidgen_video_kernels::{attention, AttentionOpts};

use crate::quantizer::{Quantized, QuantizerConfig, VectorQuantizer};

const RESNET_EPS: f64 = 1e-6;

fn default_in() -> usize {
    3
}
fn default_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn default_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn default_channels() -> Vec<usize> {
    vec![64]
}
fn default_layers() -> usize {
    1
}
fn default_act() -> String {
    "silu".into()
}
fn default_latent() -> usize {
    3
}
fn default_codes() -> usize {
    256
}
fn default_groups() -> usize {
    32
}
fn default_scaling() -> f64 {
    0.18215
}
fn default_norm_type() -> String {
    "group".into()
}
fn default_true() -> bool {
    true
}
fn default_sample() -> usize {
    32
}

/// `config.json` of a diffusers `VQModel`, with diffusers' defaults for absent keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct VQModelConfig {
    /// Image channels in.
    #[serde(default = "default_in")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "default_in")]
    pub out_channels: usize,
    /// `DownEncoderBlock2D` or `AttnDownEncoderBlock2D`, one per level.
    #[serde(default = "default_down")]
    pub down_block_types: Vec<String>,
    /// `UpDecoderBlock2D` or `AttnUpDecoderBlock2D`, one per level.
    #[serde(default = "default_up")]
    pub up_block_types: Vec<String>,
    /// Channels per level; `len − 1` downsamplings of ×2.
    #[serde(default = "default_channels")]
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per encoder level (the decoder uses one more).
    #[serde(default = "default_layers")]
    pub layers_per_block: usize,
    /// Activation: `silu`/`swish`, `gelu`, `relu`, `mish`.
    #[serde(default = "default_act")]
    pub act_fn: String,
    /// Encoder output / decoder input channels.
    #[serde(default = "default_latent")]
    pub latent_channels: usize,
    /// Nominal image size (informational).
    #[serde(default = "default_sample")]
    pub sample_size: usize,
    /// Codebook size `K`.
    #[serde(default = "default_codes")]
    pub num_vq_embeddings: usize,
    /// GroupNorm groups.
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    /// Code dimension (defaults to `latent_channels`).
    #[serde(default)]
    pub vq_embed_dim: Option<usize>,
    /// Latent scaling used by pipelines (not applied by the model itself, as in diffusers).
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    /// `group` or `spatial` (MoVQ: SpatialNorm conditioned on the quantised latents).
    #[serde(default = "default_norm_type")]
    pub norm_type: String,
    /// Whether the mid blocks have their attention layer.
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
    /// Whether `decode(force_not_quantize = true)` reads ids from the codebook.
    #[serde(default)]
    pub lookup_from_codebook: bool,
    /// Upcast hint of diffusers (ignored: this port computes in the weights' dtype).
    #[serde(default)]
    pub force_upcast: bool,
}

impl VQModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let cfg: Self = vidgen_video_core::loading::read_config(path.as_ref())?;
        cfg.validate().map_err(|e| match e {
            Error::BadConfig { field, reason, .. } => Error::BadConfig {
                field,
                reason,
                file: Some(path.as_ref().display().to_string()),
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// The code dimension: `vq_embed_dim`, else `latent_channels`.
    pub fn embed_dim(&self) -> usize {
        self.vq_embed_dim.unwrap_or(self.latent_channels)
    }

    /// Pixels per token along H and W: `2^(levels − 1)`.
    pub fn spatial_stride(&self) -> usize {
        1usize << self.block_out_channels.len().saturating_sub(1)
    }

    /// Checks every field the model depends on; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let levels = self.block_out_channels.len();
        if levels == 0 {
            return Err(Error::config("block_out_channels", "must not be empty"));
        }
        if self.down_block_types.len() != levels {
            return Err(Error::config(
                "down_block_types",
                format!(
                    "has {} entries, block_out_channels has {levels}",
                    self.down_block_types.len()
                ),
            ));
        }
        if self.up_block_types.len() != levels {
            return Err(Error::config(
                "up_block_types",
                format!(
                    "has {} entries, block_out_channels has {levels}",
                    self.up_block_types.len()
                ),
            ));
        }
        for (i, t) in self.down_block_types.iter().enumerate() {
            if t != "DownEncoderBlock2D" && t != "AttnDownEncoderBlock2D" {
                return Err(Error::Unsupported {
                    field: format!("down_block_types[{i}]"),
                    value: t.clone(),
                    supported: "DownEncoderBlock2D, AttnDownEncoderBlock2D".into(),
                });
            }
        }
        for (i, t) in self.up_block_types.iter().enumerate() {
            if t != "UpDecoderBlock2D" && t != "AttnUpDecoderBlock2D" {
                return Err(Error::Unsupported {
                    field: format!("up_block_types[{i}]"),
                    value: t.clone(),
                    supported: "UpDecoderBlock2D, AttnUpDecoderBlock2D".into(),
                });
            }
        }
        let g = self.norm_num_groups;
        if g == 0 {
            return Err(Error::config("norm_num_groups", "must be at least 1"));
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c == 0 || c % g != 0 {
                return Err(Error::config(
                    format!("block_out_channels[{i}]"),
                    format!("{c} is not a positive multiple of norm_num_groups = {g}"),
                ));
            }
        }
        Activation::parse(&self.act_fn)?;
        match self.norm_type.as_str() {
            "group" => {}
            "spatial" => {
                // The decoder's SpatialNorm reads the quantised latents with latent_channels
                // input channels (diffusers: temb_channels = latent_channels).
                if self.embed_dim() != self.latent_channels {
                    return Err(Error::config(
                        "vq_embed_dim",
                        format!(
                            "{} must equal latent_channels = {} when norm_type = \"spatial\"",
                            self.embed_dim(),
                            self.latent_channels
                        ),
                    ));
                }
                // diffusers' SpatialNorm hard-codes GroupNorm(32, ...).
                for (i, &c) in self.block_out_channels.iter().enumerate() {
                    if c % 32 != 0 {
                        return Err(Error::config(
                            format!("block_out_channels[{i}]"),
                            format!("{c} is not a multiple of 32, which SpatialNorm (norm_type = \"spatial\") needs"),
                        ));
                    }
                }
            }
            other => {
                return Err(Error::Unsupported {
                    field: "norm_type".into(),
                    value: other.into(),
                    supported: "group, spatial".into(),
                })
            }
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.latent_channels == 0 {
            return Err(Error::config(
                "in_channels / out_channels / latent_channels",
                "must be at least 1",
            ));
        }
        if self.num_vq_embeddings == 0 || self.embed_dim() == 0 {
            return Err(Error::config(
                "num_vq_embeddings / vq_embed_dim",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The nonlinearity named by `act_fn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x·σ(x)` (`silu`, `swish`).
    Silu,
    /// Exact (erf) GELU.
    Gelu,
    /// `max(x, 0)`.
    Relu,
    /// `x·tanh(softplus(x))`.
    Mish,
}

impl Activation {
    /// Parses a diffusers `act_fn` name.
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

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Silu => candle_nn::ops::silu(x)?,
            Activation::Gelu => x.gelu_erf()?,
            Activation::Relu => x.relu()?,
            Activation::Mish => {
                // softplus(x) = max(x, 0) + ln(1 + e^{−|x|}), stable for large |x|.
                let sp = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                (x * sp.tanh()?)?
            }
        })
    }
}

fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    // candle-nn's initialisation (Kaiming-normal weight, uniform bias) and key names.
    let weight = vb.get_with_hints(
        (cout, cin, k, k),
        "weight",
        candle_nn::init::DEFAULT_KAIMING_NORMAL,
    )?;
    let bound = 1.0 / ((cin * k * k) as f64).sqrt();
    let bias = vb.get_with_hints(
        cout,
        "bias",
        candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    Ok(Conv2d {
        weight,
        bias,
        opts: vidgen_video_kernels::Conv2dOpts {
            stride: [stride; 2],
            padding: [pad; 2],
            ..Default::default()
        },
    })
}

/// A 2D convolution layer (`weight [Cout, Cin, k, k]`, `bias [Cout]`) on video-kernels'
/// `conv2d`, whose CPU kernel is several times faster than candle 0.11's.
#[derive(Debug, Clone)]
struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    opts: vidgen_video_kernels::Conv2dOpts,
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        vidgen_video_kernels::conv2d(x, &self.weight, Some(&self.bias), &self.opts).map_err(|e| {
            match e {
                Error::Candle(c) => c,
                other => candle_core::Error::wrap(other),
            }
        })
    }
}

/// diffusers' `SpatialNorm`: `GroupNorm(32)(f) · conv_y(zq↑) + conv_b(zq↑)`, `zq` resized to
/// `f`'s size by nearest interpolation.
#[derive(Debug, Clone)]
pub struct SpatialNorm {
    norm_layer: GroupNorm,
    conv_y: Conv2d,
    conv_b: Conv2d,
}

impl SpatialNorm {
    /// `f_channels` feature channels, `zq_channels` conditioning channels.
    pub fn new(f_channels: usize, zq_channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(SpatialNorm {
            norm_layer: group_norm(32, f_channels, RESNET_EPS, vb.pp("norm_layer"))?,
            conv_y: conv(zq_channels, f_channels, 1, 1, 0, vb.pp("conv_y"))?,
            conv_b: conv(zq_channels, f_channels, 1, 1, 0, vb.pp("conv_b"))?,
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

/// A normalisation that is either a plain GroupNorm or a SpatialNorm conditioned on `zq`.
#[derive(Debug, Clone)]
enum Norm {
    Group(GroupNorm),
    Spatial(SpatialNorm),
}

impl Norm {
    fn new(spatial: Option<usize>, groups: usize, ch: usize, vb: VarBuilder) -> Result<Self> {
        Ok(match spatial {
            Some(zc) => Norm::Spatial(SpatialNorm::new(ch, zc, vb)?),
            None => Norm::Group(group_norm(groups, ch, RESNET_EPS, vb)?),
        })
    }

    fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        match (self, zq) {
            (Norm::Group(g), _) => Ok(g.forward(x)?),
            (Norm::Spatial(s), Some(z)) => s.forward(x, z),
            (Norm::Spatial(_), None) => Err(Error::invalid(
                "zq",
                "a SpatialNorm decoder (norm_type = \"spatial\") needs the quantised latents",
            )),
        }
    }
}

/// diffusers' `ResnetBlock2D` without a time embedding (or `ResnetBlockCondNorm2D` with
/// SpatialNorm): `shortcut(x) + conv2(act(norm2(conv1(act(norm1(x))))))`.
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: Norm,
    conv1: Conv2d,
    norm2: Norm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    act: Activation,
}

impl ResnetBlock2D {
    fn new(
        cin: usize,
        cout: usize,
        groups: usize,
        spatial: Option<usize>,
        act: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(ResnetBlock2D {
            norm1: Norm::new(spatial, groups, cin, vb.pp("norm1"))?,
            conv1: conv(cin, cout, 3, 1, 1, vb.pp("conv1"))?,
            norm2: Norm::new(spatial, groups, cout, vb.pp("norm2"))?,
            conv2: conv(cout, cout, 3, 1, 1, vb.pp("conv2"))?,
            conv_shortcut: if cin != cout {
                Some(conv(cin, cout, 1, 1, 0, vb.pp("conv_shortcut"))?)
            } else {
                None
            },
            act,
        })
    }

    fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        let h = self.act.apply(&self.norm1.forward(x, zq)?)?;
        let h = self.conv1.forward(&h)?;
        let h = self.act.apply(&self.norm2.forward(&h, zq)?)?;
        let h = self.conv2.forward(&h)?;
        let x = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        Ok((x + h)?)
    }
}

/// diffusers' `Attention` as the VAE mid block builds it (`_from_deprecated_attn_block`):
/// one head of size `C` (`attention_head_dim = C`), group norm, residual.
#[derive(Debug, Clone)]
pub struct AttentionBlock {
    norm: Norm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl AttentionBlock {
    fn new(ch: usize, groups: usize, spatial: Option<usize>, vb: VarBuilder) -> Result<Self> {
        let norm = match spatial {
            Some(zc) => Norm::Spatial(SpatialNorm::new(ch, zc, vb.pp("spatial_norm"))?),
            None => Norm::Group(group_norm(groups, ch, RESNET_EPS, vb.pp("group_norm"))?),
        };
        Ok(AttentionBlock {
            norm,
            to_q: linear(ch, ch, vb.pp("to_q"))?,
            to_k: linear(ch, ch, vb.pp("to_k"))?,
            to_v: linear(ch, ch, vb.pp("to_v"))?,
            to_out: linear(ch, ch, vb.pp("to_out").pp("0"))?,
            heads: 1,
        })
    }

    fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let hn = self.norm.forward(x, zq)?;
        // [B, C, H, W] -> [B, HW, C]
        let seq = hn.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let d = c / self.heads;
        // [B, HW, C] -> [B, heads, HW, d]
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, h * w, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.to_q.forward(&seq)?)?;
        let k = split(self.to_k.forward(&seq)?)?;
        let v = split(self.to_v.forward(&seq)?)?;
        let o = attention(&q, &k, &v, &AttentionOpts::default())?;
        // [B, heads, HW, d] -> [B, HW, C]
        let o = o.transpose(1, 2)?.reshape((b, h * w, c))?;
        let o = self.to_out.forward(&o)?;
        // [B, HW, C] -> [B, C, H, W]
        let o = o.transpose(1, 2)?.reshape((b, c, h, w))?;
        Ok((o + x)?)
    }
}

/// `UNetMidBlock2D` (one layer): resnet → [attention → resnet].
#[derive(Debug, Clone)]
pub struct MidBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<AttentionBlock>,
}

impl MidBlock2D {
    fn new(
        ch: usize,
        groups: usize,
        spatial: Option<usize>,
        attn: bool,
        act: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        let r = vb.pp("resnets");
        let resnets = vec![
            ResnetBlock2D::new(ch, ch, groups, spatial, act, r.pp("0"))?,
            ResnetBlock2D::new(ch, ch, groups, spatial, act, r.pp("1"))?,
        ];
        let attentions = if attn {
            vec![AttentionBlock::new(
                ch,
                groups,
                spatial,
                vb.pp("attentions").pp("0"),
            )?]
        } else {
            Vec::new()
        };
        Ok(MidBlock2D {
            resnets,
            attentions,
        })
    }

    fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, zq)?;
        if let Some(a) = self.attentions.first() {
            h = a.forward(&h, zq)?;
        }
        self.resnets[1].forward(&h, zq)
    }
}

/// One encoder or decoder level: resnets (each optionally followed by attention), then an
/// optional resampler.
#[derive(Debug, Clone)]
struct Level {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<AttentionBlock>,
    resample: Option<Conv2d>,
}

impl Level {
    fn forward(&self, x: &Tensor, zq: Option<&Tensor>, up: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, r) in self.resnets.iter().enumerate() {
            h = r.forward(&h, zq)?;
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h, zq)?;
            }
        }
        if let Some(c) = &self.resample {
            if up {
                // Upsample2D: nearest ×2, conv 3×3 padding 1.
                let (_, _, hh, ww) = h.dims4()?;
                h = c.forward(&h.upsample_nearest2d(2 * hh, 2 * ww)?)?;
            } else {
                // Downsample2D with padding = 0: pad (left 0, right 1, top 0, bottom 1), conv s2.
                h = c.forward(&h.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?)?;
            }
        }
        Ok(h)
    }
}

/// The `Encoder` of diffusers' `vae.py` (`double_z = False`).
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<Level>,
    mid_block: MidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
}

impl Encoder {
    /// Builds the encoder of `cfg` from `vb` (prefix `encoder`).
    pub fn new(cfg: &VQModelConfig, vb: VarBuilder) -> Result<Self> {
        let act = Activation::parse(&cfg.act_fn)?;
        let ch = &cfg.block_out_channels;
        let g = cfg.norm_num_groups;
        let conv_in = conv(cfg.in_channels, ch[0], 3, 1, 1, vb.pp("conv_in"))?;
        let mut down_blocks = Vec::new();
        let mut cout = ch[0];
        for (i, t) in cfg.down_block_types.iter().enumerate() {
            let cin = cout;
            cout = ch[i];
            let last = i + 1 == ch.len();
            let bvb = vb.pp("down_blocks").pp(i.to_string());
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..cfg.layers_per_block {
                let c0 = if j == 0 { cin } else { cout };
                resnets.push(ResnetBlock2D::new(
                    c0,
                    cout,
                    g,
                    None,
                    act,
                    bvb.pp("resnets").pp(j.to_string()),
                )?);
                if t == "AttnDownEncoderBlock2D" {
                    attentions.push(AttentionBlock::new(
                        cout,
                        g,
                        None,
                        bvb.pp("attentions").pp(j.to_string()),
                    )?);
                }
            }
            let resample = if last {
                None
            } else {
                Some(conv(
                    cout,
                    cout,
                    3,
                    2,
                    0,
                    bvb.pp("downsamplers").pp("0").pp("conv"),
                )?)
            };
            down_blocks.push(Level {
                resnets,
                attentions,
                resample,
            });
        }
        let top = cout;
        Ok(Encoder {
            conv_in,
            down_blocks,
            mid_block: MidBlock2D::new(
                top,
                g,
                None,
                cfg.mid_block_add_attention,
                act,
                vb.pp("mid_block"),
            )?,
            conv_norm_out: group_norm(g, top, RESNET_EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv(top, cfg.latent_channels, 3, 1, 1, vb.pp("conv_out"))?,
            act,
        })
    }

    /// # Shapes
    /// `[B, in_channels, H, W]` → `[B, latent_channels, H/s, W/s]`, `s = 2^(levels−1)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for l in &self.down_blocks {
            h = l.forward(&h, None, false)?;
        }
        h = self.mid_block.forward(&h, None)?;
        h = self.act.apply(&self.conv_norm_out.forward(&h)?)?;
        Ok(self.conv_out.forward(&h)?)
    }
}

/// The `Decoder` of diffusers' `vae.py` (GroupNorm or SpatialNorm).
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: MidBlock2D,
    up_blocks: Vec<Level>,
    conv_norm_out: Norm,
    conv_out: Conv2d,
    act: Activation,
}

impl Decoder {
    /// Builds the decoder of `cfg` from `vb` (prefix `decoder`).
    pub fn new(cfg: &VQModelConfig, vb: VarBuilder) -> Result<Self> {
        let act = Activation::parse(&cfg.act_fn)?;
        let g = cfg.norm_num_groups;
        let spatial = (cfg.norm_type == "spatial").then_some(cfg.latent_channels);
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let conv_in = conv(cfg.latent_channels, rev[0], 3, 1, 1, vb.pp("conv_in"))?;
        let mid_block = MidBlock2D::new(
            rev[0],
            g,
            spatial,
            cfg.mid_block_add_attention,
            act,
            vb.pp("mid_block"),
        )?;
        let mut up_blocks = Vec::new();
        let mut cout = rev[0];
        for (i, t) in cfg.up_block_types.iter().enumerate() {
            let cin = cout;
            cout = rev[i];
            let last = i + 1 == rev.len();
            let bvb = vb.pp("up_blocks").pp(i.to_string());
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..cfg.layers_per_block + 1 {
                let c0 = if j == 0 { cin } else { cout };
                resnets.push(ResnetBlock2D::new(
                    c0,
                    cout,
                    g,
                    spatial,
                    act,
                    bvb.pp("resnets").pp(j.to_string()),
                )?);
                if t == "AttnUpDecoderBlock2D" {
                    attentions.push(AttentionBlock::new(
                        cout,
                        g,
                        spatial,
                        bvb.pp("attentions").pp(j.to_string()),
                    )?);
                }
            }
            let resample = if last {
                None
            } else {
                Some(conv(
                    cout,
                    cout,
                    3,
                    1,
                    1,
                    bvb.pp("upsamplers").pp("0").pp("conv"),
                )?)
            };
            up_blocks.push(Level {
                resnets,
                attentions,
                resample,
            });
        }
        Ok(Decoder {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out: Norm::new(spatial, g, cout, vb.pp("conv_norm_out"))?,
            conv_out: conv(cout, cfg.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
            act,
        })
    }

    /// # Shapes
    /// `z [B, latent_channels, h, w]` (and `zq [B, vq_embed_dim, h, w]` for SpatialNorm) →
    /// `[B, out_channels, h·s, w·s]`.
    pub fn forward(&self, z: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv_in.forward(z)?;
        h = self.mid_block.forward(&h, zq)?;
        for l in &self.up_blocks {
            h = l.forward(&h, zq, true)?;
        }
        h = self.act.apply(&self.conv_norm_out.forward(&h, zq)?)?;
        Ok(self.conv_out.forward(&h)?)
    }
}

/// diffusers' `VQModel`: encoder, `quant_conv`, quantiser, `post_quant_conv`, decoder.
#[derive(Debug, Clone)]
pub struct VQModel {
    config: VQModelConfig,
    encoder: Encoder,
    quant_conv: Conv2d,
    quantize: VectorQuantizer,
    post_quant_conv: Conv2d,
    decoder: Decoder,
}

impl VQModel {
    /// Builds the model from `vb` (random init through a `VarMap`, or a checkpoint).
    pub fn new(cfg: &VQModelConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let e = cfg.embed_dim();
        let mut qcfg = QuantizerConfig::new(cfg.num_vq_embeddings, e);
        qcfg.beta = 0.25;
        qcfg.legacy = true;
        Ok(VQModel {
            config: cfg.clone(),
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            quant_conv: conv(cfg.latent_channels, e, 1, 1, 0, vb.pp("quant_conv"))?,
            quantize: VectorQuantizer::new(&qcfg, vb.pp("quantize"))?,
            post_quant_conv: conv(e, cfg.latent_channels, 1, 1, 0, vb.pp("post_quant_conv"))?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
        })
    }

    /// Loads a diffusers `save_pretrained` directory (`config.json` +
    /// `diffusion_pytorch_model.safetensors`) strictly: a missing or mis-shaped key is an error
    /// naming it.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let dir = dir.as_ref();
        let cfg = VQModelConfig::from_file(dir.join("config.json"))?;
        let md = ModelDir::open(dir)?;
        md.load(dtype, device, |vb| VQModel::new(&cfg, vb))
    }

    /// The configuration.
    pub fn config(&self) -> &VQModelConfig {
        &self.config
    }

    /// The quantiser (codebook `quantize.embedding.weight`).
    pub fn quantizer(&self) -> &VectorQuantizer {
        &self.quantize
    }

    /// Mutable access to the quantiser (EMA updates, k-means init).
    pub fn quantizer_mut(&mut self) -> &mut VectorQuantizer {
        &mut self.quantize
    }

    fn check_image(&self, x: &Tensor) -> Result<()> {
        match x.dims() {
            &[_, c, h, w] => {
                if c != self.config.in_channels {
                    return Err(Error::shape(
                        "image channels",
                        &[x.dims()[0], self.config.in_channels, h, w],
                        x.dims(),
                    ));
                }
                let s = self.config.spatial_stride();
                if h % s != 0 || w % s != 0 || h == 0 || w == 0 {
                    return Err(Error::invalid(
                        "image",
                        format!("height {h} and width {w} must be positive multiples of the spatial stride {s}"),
                    ));
                }
                Ok(())
            }
            d => Err(Error::invalid(
                "image",
                format!("expected [B, C, H, W], got shape {d:?}"),
            )),
        }
    }

    /// diffusers' `encode(x).latents`: encoder then `quant_conv`, not quantised.
    ///
    /// # Shapes
    /// `x [B, in_channels, H, W]` in `[-1, 1]` → `[B, vq_embed_dim, H/s, W/s]`.
    ///
    /// # Errors
    /// Wrong rank or channels, `H`/`W` not multiples of the stride, non-finite input.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        self.check_image(x)?;
        vidgen_video_core::check_finite(x, "VQModel input")?;
        // On a rayon worker: every parallel op of the encoder runs without a thread hand-off.
        vidgen_video_core::in_pool(|| {
            let h = self.encoder.forward(x)?;
            Ok(self.quant_conv.forward(&h)?)
        })
    }

    /// diffusers' `quantize(h)`: straight-through codes, ids, loss.
    ///
    /// # Shapes
    /// `h [B, vq_embed_dim, h, w]` → `quantized` same, `indices [B, h, w]`.
    pub fn quantize(&self, h: &Tensor) -> Result<Quantized> {
        self.quantize.forward(h)
    }

    /// diffusers' `decode(h, force_not_quantize)`: quantise (unless forced not to), then
    /// `post_quant_conv` and the decoder.
    ///
    /// # Shapes
    /// `h [B, vq_embed_dim, h, w]` → `[B, out_channels, h·s, w·s]`.
    pub fn decode(&self, h: &Tensor, force_not_quantize: bool) -> Result<Tensor> {
        let quant = if force_not_quantize {
            h.clone()
        } else {
            self.quantize.forward(h)?.quantized
        };
        self.decode_quantized(&quant)
    }

    /// Decodes already-quantised latents (`post_quant_conv` then the decoder; the latents are
    /// also the SpatialNorm condition).
    ///
    /// # Shapes
    /// `quant [B, vq_embed_dim, h, w]` → `[B, out_channels, h·s, w·s]`.
    pub fn decode_quantized(&self, quant: &Tensor) -> Result<Tensor> {
        vidgen_video_core::in_pool(|| {
            let z = self.post_quant_conv.forward(quant)?;
            let zq = (self.config.norm_type == "spatial").then_some(quant);
            self.decoder.forward(&z, zq)
        })
    }

    /// Encodes to token ids.
    ///
    /// # Shapes
    /// `x [B, in_channels, H, W]` → ids `[B, H/s, W/s]` u32.
    pub fn tokenize(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.encode(x)?;
        let (b, e, hh, ww) = h.dims4()?;
        // [B, E, h, w] -> [B·h·w, E]
        let rows = h.permute((0, 2, 3, 1))?.reshape((b * hh * ww, e))?;
        let (ids, _) = self.quantize.nearest(&rows)?;
        Ok(ids.reshape((b, hh, ww))?)
    }

    /// Decodes token ids (codebook lookup, then [`VQModel::decode_quantized`]).
    ///
    /// # Shapes
    /// `ids [B, h, w]` → `[B, out_channels, h·s, w·s]`.
    ///
    /// # Errors
    /// An id ≥ `num_vq_embeddings`, wrong rank.
    pub fn detokenize(&self, ids: &Tensor) -> Result<Tensor> {
        let quant = self.quantize.lookup_nchw(ids)?;
        self.decode_quantized(&quant)
    }
}
