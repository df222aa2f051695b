//! The `Encoder` / `Decoder` of diffusers' `autoencoders/vae.py`, shared by every image
//! autoencoder of vidgen: `AutoencoderKL` (SD), the encoder of SVD's temporal VAE, and
//! `VQModel` (VQGAN, including MoVQ's SpatialNorm decoder).
//!
//! ```text
//! Encoder: conv_in → down_blocks[i].{resnets[j] (→ attentions[j])}, downsamplers.0.conv
//!          → mid_block → conv_norm_out → act → conv_out      ([N, (2·)latent, H/s, W/s])
//! Decoder: conv_in → mid_block → up_blocks[i].{resnets[j] (→ attentions[j])},
//!          upsamplers.0.conv → conv_norm_out (GroupNorm or SpatialNorm(zq)) → act → conv_out
//! ```
//! `s = 2^(levels − 1)`. Keys are diffusers' own, so `save_pretrained` folders load unchanged.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, Result};

use crate::attention::{Attention, AttentionConfig};
use crate::nn::{Activation, Conv2d, GroupNorm};
use crate::resnet::{
    Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, ResnetBlockCondNorm2D, SpatialNorm,
    Upsample2D,
};

/// The ResNet / norm epsilon of the VAE blocks (diffusers' `resnet_eps = 1e-6`).
const EPS: f64 = 1e-6;

/// Which encoder / decoder blocks have attention after each ResNet, from diffusers' block type
/// names (`DownEncoderBlock2D` / `AttnDownEncoderBlock2D`, `UpDecoderBlock2D` /
/// `AttnUpDecoderBlock2D`); `field` names the config list in errors.
///
/// # Errors
/// [`Error::Unsupported`] for any other block type.
pub fn attention_levels(types: &[String], field: &str) -> Result<Vec<bool>> {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| match t.as_str() {
            "DownEncoderBlock2D" | "UpDecoderBlock2D" => Ok(false),
            "AttnDownEncoderBlock2D" | "AttnUpDecoderBlock2D" => Ok(true),
            other => Err(Error::Unsupported {
                field: format!("{field}[{i}]"),
                value: other.into(),
                supported: "DownEncoderBlock2D, AttnDownEncoderBlock2D, UpDecoderBlock2D, \
                            AttnUpDecoderBlock2D"
                    .into(),
            }),
        })
        .collect()
}

/// A VAE ResNet: plain (GroupNorm) or conditioned on `zq` (SpatialNorm).
#[derive(Debug, Clone)]
enum Resnet {
    Plain(ResnetBlock2D),
    Cond(ResnetBlockCondNorm2D),
}

impl Resnet {
    fn new(
        cin: usize,
        cout: usize,
        groups: usize,
        act: Activation,
        spatial: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(match spatial {
            Some(zc) => Resnet::Cond(ResnetBlockCondNorm2D::new(cin, cout, zc, act, vb)?),
            None => {
                let mut c = ResnetBlock2DConfig::new(cin, cout)
                    .temb(None)
                    .groups(groups)
                    .eps(EPS);
                c.act = act;
                Resnet::Plain(ResnetBlock2D::new(&c, vb)?)
            }
        })
    }

    fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        match (self, zq) {
            (Resnet::Plain(r), _) => r.forward(x, None),
            (Resnet::Cond(r), Some(z)) => r.forward(x, z),
            (Resnet::Cond(_), None) => Err(missing_zq()),
        }
    }
}

fn missing_zq() -> Error {
    Error::invalid(
        "zq",
        "a SpatialNorm decoder (norm_type = \"spatial\") needs the quantised latents",
    )
}

/// The attention layer of VAE blocks (`_from_deprecated_attn_block`): one head of the full
/// width, biased projections, group norm (or spatial norm) and residual inside.
fn vae_attention(
    channels: usize,
    groups: usize,
    spatial: Option<usize>,
    vb: VarBuilder,
) -> Result<Attention> {
    let mut a = AttentionConfig::new(channels, None, 1, channels);
    a.bias = true;
    a.norm_num_groups = if spatial.is_some() {
        None
    } else {
        Some(groups)
    };
    a.spatial_norm_dim = spatial;
    a.eps = EPS;
    a.residual_connection = true;
    Attention::new(&a, vb)
}

/// diffusers' `UNetMidBlock2D` as the VAEs use it (no time embedding, one layer):
/// `resnets.0 → attentions.0 → resnets.1`.
#[derive(Debug, Clone)]
pub struct VaeMidBlock {
    resnets: Vec<Resnet>,
    attention: Option<Attention>,
}

impl VaeMidBlock {
    /// Builds the block (`eps = 1e-6` as in the VAEs); `spatial = Some(zq_channels)` for
    /// SpatialNorm (MoVQ) decoders.
    ///
    /// # Errors
    /// Groups not dividing channels; missing / mis-shaped tensors.
    pub fn new(
        channels: usize,
        groups: usize,
        act: Activation,
        add_attention: bool,
        spatial: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let resnets = vec![
            Resnet::new(channels, channels, groups, act, spatial, vb.pp("resnets.0"))?,
            Resnet::new(channels, channels, groups, act, spatial, vb.pp("resnets.1"))?,
        ];
        let attention = if add_attention {
            Some(vae_attention(
                channels,
                groups,
                spatial,
                vb.pp("attentions.0"),
            )?)
        } else {
            None
        };
        Ok(Self { resnets, attention })
    }

    /// # Shapes
    /// `[N, C, H, W]` (and `zq [N, C', h, w]` for SpatialNorm) → `[N, C, H, W]`.
    pub fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, zq)?;
        if let Some(a) = &self.attention {
            h = a.forward_spatial_cond(&h, zq)?;
        }
        self.resnets[1].forward(&h, zq)
    }
}

/// The fields of a diffusers autoencoder config (`AutoencoderKL`, `VQModel`) that shape its
/// [`Encoder`] and [`Decoder`], borrowed from the config; [`VaeBlocks::encoder`] and
/// [`VaeBlocks::decoder`] build their construction arguments.
#[derive(Debug, Clone, Copy)]
pub struct VaeBlocks<'a> {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// Latent channels.
    pub latent_channels: usize,
    /// Channels per resolution.
    pub block_out_channels: &'a [usize],
    /// diffusers' `down_block_types`.
    pub down_block_types: &'a [String],
    /// diffusers' `up_block_types`.
    pub up_block_types: &'a [String],
    /// ResNets per block.
    pub layers_per_block: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// diffusers' `act_fn`.
    pub act_fn: &'a str,
    /// Whether the mid block has its attention layer.
    pub mid_block_add_attention: bool,
}

impl VaeBlocks<'_> {
    /// The encoder's arguments (`double_z`: mean and log-variance, as KL autoencoders).
    ///
    /// # Errors
    /// An unknown block type or activation.
    pub fn encoder(&self, double_z: bool) -> Result<EncoderConfig> {
        Ok(EncoderConfig {
            in_channels: self.in_channels,
            latent_channels: self.latent_channels,
            block_out_channels: self.block_out_channels.to_vec(),
            attention: attention_levels(self.down_block_types, "down_block_types")?,
            layers_per_block: self.layers_per_block,
            norm_num_groups: self.norm_num_groups,
            act: Activation::parse(self.act_fn)?,
            double_z,
            mid_block_add_attention: self.mid_block_add_attention,
        })
    }

    /// The decoder's arguments (`spatial_norm`: see [`DecoderConfig::spatial_norm`]).
    ///
    /// # Errors
    /// An unknown block type or activation.
    pub fn decoder(&self, spatial_norm: Option<usize>) -> Result<DecoderConfig> {
        Ok(DecoderConfig {
            latent_channels: self.latent_channels,
            out_channels: self.out_channels,
            block_out_channels: self.block_out_channels.to_vec(),
            attention: attention_levels(self.up_block_types, "up_block_types")?,
            layers_per_block: self.layers_per_block,
            norm_num_groups: self.norm_num_groups,
            act: Activation::parse(self.act_fn)?,
            mid_block_add_attention: self.mid_block_add_attention,
            spatial_norm,
        })
    }
}

/// Construction arguments of an [`Encoder`].
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Latent channels (the output has `2·latent_channels` with `double_z`).
    pub latent_channels: usize,
    /// Channels per resolution.
    pub block_out_channels: Vec<usize>,
    /// Attention after each ResNet, per level (`AttnDownEncoderBlock2D`); empty = none.
    pub attention: Vec<bool>,
    /// ResNets per block.
    pub layers_per_block: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Activation.
    pub act: Activation,
    /// Output mean and log-variance (true for KL autoencoders, false for VQ).
    pub double_z: bool,
    /// Whether the mid block has its attention layer.
    pub mid_block_add_attention: bool,
}

#[derive(Debug, Clone)]
struct Level {
    resnets: Vec<Resnet>,
    attentions: Vec<Attention>,
}

impl Level {
    fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, r) in self.resnets.iter().enumerate() {
            h = r.forward(&h, zq)?;
            if let Some(a) = self.attentions.get(i) {
                h = a.forward_spatial_cond(&h, zq)?;
            }
        }
        Ok(h)
    }
}

#[allow(clippy::too_many_arguments)]
fn level(
    cin: usize,
    cout: usize,
    n: usize,
    attn: bool,
    groups: usize,
    act: Activation,
    spatial: Option<usize>,
    vb: &VarBuilder,
) -> Result<Level> {
    let mut resnets = Vec::with_capacity(n);
    let mut attentions = Vec::new();
    for j in 0..n {
        let c0 = if j == 0 { cin } else { cout };
        resnets.push(Resnet::new(
            c0,
            cout,
            groups,
            act,
            spatial,
            vb.pp(format!("resnets.{j}")),
        )?);
        if attn {
            attentions.push(vae_attention(
                cout,
                groups,
                spatial,
                vb.pp(format!("attentions.{j}")),
            )?);
        }
    }
    Ok(Level {
        resnets,
        attentions,
    })
}

fn check_channels(
    cfg_channels: &[usize],
    attention: &[bool],
    what: &str,
) -> Result<(usize, usize)> {
    let (Some(&first), Some(&last)) = (cfg_channels.first(), cfg_channels.last()) else {
        return Err(Error::config("block_out_channels", "must not be empty"));
    };
    if !attention.is_empty() && attention.len() != cfg_channels.len() {
        return Err(Error::config(
            what,
            format!(
                "has {} entries, block_out_channels has {}",
                attention.len(),
                cfg_channels.len()
            ),
        ));
    }
    Ok((first, last))
}

/// The VAE encoder: `conv_in → down_blocks → mid_block → norm → act → conv_out`.
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<(Level, Option<Downsample2D>)>,
    mid_block: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
    in_channels: usize,
}

impl Encoder {
    /// Builds the encoder from `vb` (the autoencoder's `encoder.` prefix).
    ///
    /// # Errors
    /// Empty channel lists, groups not dividing channels, attention flags of another length;
    /// missing / mis-shaped tensors.
    pub fn new(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let (first, last) = check_channels(ch, &cfg.attention, "down_block_types")?;
        let g = cfg.norm_num_groups;
        let conv_in = Conv2d::new(cfg.in_channels, first, 3, 1, 1, true, vb.pp("conv_in"))?;
        let mut down_blocks = Vec::with_capacity(ch.len());
        let mut out_c = first;
        for (i, &c) in ch.iter().enumerate() {
            let in_c = out_c;
            out_c = c;
            let vbb = vb.pp(format!("down_blocks.{i}"));
            let attn = cfg.attention.get(i).copied().unwrap_or(false);
            let l = level(
                in_c,
                out_c,
                cfg.layers_per_block,
                attn,
                g,
                cfg.act,
                None,
                &vbb,
            )?;
            // Downsample2D with padding 0: diffusers pads (0, 1, 0, 1) then convolves, stride 2.
            let down = if i + 1 < ch.len() {
                Some(Downsample2D::new(
                    out_c,
                    true,
                    out_c,
                    0,
                    vbb.pp("downsamplers.0"),
                )?)
            } else {
                None
            };
            down_blocks.push((l, down));
        }
        let mid_block = VaeMidBlock::new(
            last,
            g,
            cfg.act,
            cfg.mid_block_add_attention,
            None,
            vb.pp("mid_block"),
        )?;
        let out = if cfg.double_z {
            2 * cfg.latent_channels
        } else {
            cfg.latent_channels
        };
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block,
            conv_norm_out: GroupNorm::new(g, last, EPS, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(last, out, 3, 1, 1, true, vb.pp("conv_out"))?,
            act: cfg.act,
            in_channels: cfg.in_channels,
        })
    }

    /// Encodes images.
    ///
    /// # Shapes
    /// `[N, C_in, H, W]` → `[N, (2·)latent, H', W']`; each of the `levels − 1` downsamplings
    /// maps `n` to `⌊n / 2⌋` (diffusers pads one zero on the right / bottom, then a stride-2
    /// 3×3 conv), so `H' = H / 2^(levels−1)` for multiples.
    ///
    /// # Errors
    /// Wrong rank or channel count.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, None)
    }

    /// [`Encoder::forward`] that also appends the outputs of the top-level modules to `trace`,
    /// named as the reference's forward hooks on them (`conv_in`, `down_blocks.i` (after its
    /// downsampler), `mid_block`), for bisecting a mismatch; the result is bit-identical.
    ///
    /// # Shapes
    /// As [`Encoder::forward`].
    ///
    /// # Errors
    /// As [`Encoder::forward`].
    pub fn forward_traced(&self, x: &Tensor, trace: &mut Vec<(String, Tensor)>) -> Result<Tensor> {
        self.run(x, Some(trace))
    }

    fn run(&self, x: &Tensor, mut trace: Option<&mut Vec<(String, Tensor)>>) -> Result<Tensor> {
        check_images("encoder input", x, self.in_channels)?;
        let mut rec = |name: String, t: &Tensor| {
            if let Some(tr) = trace.as_deref_mut() {
                tr.push((name, t.clone()));
            }
        };
        let mut h = self.conv_in.forward(x)?;
        rec("conv_in".into(), &h);
        for (i, (l, d)) in self.down_blocks.iter().enumerate() {
            h = l.forward(&h, None)?;
            if let Some(d) = d {
                h = d.forward(&h)?;
            }
            rec(format!("down_blocks.{i}"), &h);
        }
        h = self.mid_block.forward(&h, None)?;
        rec("mid_block".into(), &h);
        h = norm_act(&self.conv_norm_out, self.act, &h)?;
        self.conv_out.forward(&h)
    }
}

fn norm_act(n: &GroupNorm, act: Activation, x: &Tensor) -> Result<Tensor> {
    if act == Activation::Silu {
        n.forward_silu(x)
    } else {
        act.forward(&n.forward(x)?)
    }
}

fn check_images(what: &str, x: &Tensor, channels: usize) -> Result<()> {
    match x.dims() {
        &[_, c, h, w] if c == channels && h > 0 && w > 0 => Ok(()),
        d => Err(Error::invalid(
            what,
            format!("expected [N, {channels}, H, W] images, got shape {d:?}"),
        )),
    }
}

/// Construction arguments of a [`Decoder`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Latent channels.
    pub latent_channels: usize,
    /// Image channels.
    pub out_channels: usize,
    /// Channels per resolution, in encoder order (the decoder walks them reversed).
    pub block_out_channels: Vec<usize>,
    /// Attention after each ResNet, per decoder level (`AttnUpDecoderBlock2D`, in decoder
    /// order); empty = none.
    pub attention: Vec<bool>,
    /// ResNets per encoder block (decoder blocks have one more).
    pub layers_per_block: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Activation.
    pub act: Activation,
    /// Whether the mid block has its attention layer.
    pub mid_block_add_attention: bool,
    /// `Some(zq_channels)`: every norm is a [`SpatialNorm`] conditioned on the quantised
    /// latents (`norm_type = "spatial"`, MoVQ); `None`: GroupNorm.
    pub spatial_norm: Option<usize>,
}

#[derive(Debug, Clone)]
enum OutNorm {
    Group(GroupNorm),
    Spatial(SpatialNorm),
}

/// The VAE decoder: `conv_in → mid_block → up_blocks → norm → act → conv_out`.
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: VaeMidBlock,
    up_blocks: Vec<(Level, Option<Upsample2D>)>,
    conv_norm_out: OutNorm,
    conv_out: Conv2d,
    act: Activation,
    latent_channels: usize,
}

impl Decoder {
    /// Builds the decoder from `vb` (the autoencoder's `decoder.` prefix).
    ///
    /// # Errors
    /// Empty channel lists, groups not dividing channels, attention flags of another length;
    /// missing / mis-shaped tensors.
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let (first, last) = check_channels(ch, &cfg.attention, "up_block_types")?;
        let g = cfg.norm_num_groups;
        let sp = cfg.spatial_norm;
        let conv_in = Conv2d::new(cfg.latent_channels, last, 3, 1, 1, true, vb.pp("conv_in"))?;
        let mid_block = VaeMidBlock::new(
            last,
            g,
            cfg.act,
            cfg.mid_block_add_attention,
            sp,
            vb.pp("mid_block"),
        )?;
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(rev.len());
        let mut out_c = last;
        for (i, &c) in rev.iter().enumerate() {
            let prev = out_c;
            out_c = c;
            let vbb = vb.pp(format!("up_blocks.{i}"));
            let attn = cfg.attention.get(i).copied().unwrap_or(false);
            let l = level(
                prev,
                out_c,
                cfg.layers_per_block + 1,
                attn,
                g,
                cfg.act,
                sp,
                &vbb,
            )?;
            let up = if i + 1 < rev.len() {
                Some(Upsample2D::new(out_c, true, out_c, vbb.pp("upsamplers.0"))?)
            } else {
                None
            };
            up_blocks.push((l, up));
        }
        let conv_norm_out = match sp {
            Some(zc) => OutNorm::Spatial(SpatialNorm::new(first, zc, vb.pp("conv_norm_out"))?),
            None => OutNorm::Group(GroupNorm::new(g, first, EPS, vb.pp("conv_norm_out"))?),
        };
        Ok(Self {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out: Conv2d::new(first, cfg.out_channels, 3, 1, 1, true, vb.pp("conv_out"))?,
            act: cfg.act,
            latent_channels: cfg.latent_channels,
        })
    }

    /// Decodes latents (GroupNorm decoders; see [`Decoder::forward_cond`] for SpatialNorm).
    ///
    /// # Shapes
    /// `[N, latent, h, w]` → `[N, C_out, h·s, w·s]` with `s = 2^(levels−1)`.
    ///
    /// # Errors
    /// Wrong rank or channels; a SpatialNorm decoder (it needs `zq`).
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        self.forward_cond(z, None)
    }

    /// Decodes latents, with the quantised latents `zq` that a SpatialNorm decoder is
    /// conditioned on (ignored by GroupNorm decoders).
    ///
    /// # Shapes
    /// `z [N, latent, h, w]`, `zq [N, C', h, w]` → `[N, C_out, h·s, w·s]`.
    ///
    /// # Errors
    /// Wrong rank or channels; a SpatialNorm decoder without `zq`.
    pub fn forward_cond(&self, z: &Tensor, zq: Option<&Tensor>) -> Result<Tensor> {
        self.run(z, zq, None)
    }

    /// [`Decoder::forward_cond`] that also appends the outputs of the top-level modules to
    /// `trace`, named as the reference's forward hooks on them (`conv_in`, `mid_block`,
    /// `up_blocks.i` (after its upsampler)), for bisecting a mismatch; the result is
    /// bit-identical.
    ///
    /// # Shapes
    /// As [`Decoder::forward_cond`].
    ///
    /// # Errors
    /// As [`Decoder::forward_cond`].
    pub fn forward_traced(
        &self,
        z: &Tensor,
        zq: Option<&Tensor>,
        trace: &mut Vec<(String, Tensor)>,
    ) -> Result<Tensor> {
        self.run(z, zq, Some(trace))
    }

    fn run(
        &self,
        z: &Tensor,
        zq: Option<&Tensor>,
        mut trace: Option<&mut Vec<(String, Tensor)>>,
    ) -> Result<Tensor> {
        check_images("decoder input", z, self.latent_channels)?;
        let mut rec = |name: String, t: &Tensor| {
            if let Some(tr) = trace.as_deref_mut() {
                tr.push((name, t.clone()));
            }
        };
        let mut h = self.conv_in.forward(z)?;
        rec("conv_in".into(), &h);
        h = self.mid_block.forward(&h, zq)?;
        rec("mid_block".into(), &h);
        for (i, (l, u)) in self.up_blocks.iter().enumerate() {
            h = l.forward(&h, zq)?;
            if let Some(u) = u {
                h = u.forward(&h, None)?;
            }
            rec(format!("up_blocks.{i}"), &h);
        }
        h = match (&self.conv_norm_out, zq) {
            (OutNorm::Group(n), _) => norm_act(n, self.act, &h)?,
            (OutNorm::Spatial(s), Some(z)) => self.act.forward(&s.forward(&h, z)?)?,
            (OutNorm::Spatial(_), None) => return Err(missing_zq()),
        };
        self.conv_out.forward(&h)
    }
}
