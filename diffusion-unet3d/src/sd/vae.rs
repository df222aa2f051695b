//! Stable Diffusion's VAE: diffusers `AutoencoderKL` (`vae/` of SD 1.x / 2.x), applied to video
//! frame by frame in chunks.
//!
//! Reference: `diffusers/models/autoencoders/autoencoder_kl.py` and `vae.py` (`Encoder`,
//! `Decoder`, `DiagonalGaussianDistribution`). The [`Encoder`] is also the encoder of SVD's
//! `AutoencoderKLTemporalDecoder`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use vidgen_video_core::{Codec, CodecStrides, Error, LoadReport, ModelDir, Result, VideoShape};

use crate::blocks::{
    Activation, Attention, AttentionConfig, Conv2d, Downsample2D, GroupNorm, ResnetBlock2D,
    ResnetBlock2DConfig, Upsample2D,
};

fn d_three() -> usize {
    3
}
fn d_four() -> usize {
    4
}
fn d_one() -> usize {
    1
}
fn d_groups() -> usize {
    32
}
fn d_silu() -> String {
    "silu".into()
}
fn d_true() -> bool {
    true
}
fn d_scaling() -> f64 {
    0.18215
}
fn d_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn d_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn d_channels() -> Vec<usize> {
    vec![64]
}

/// `config.json` of a diffusers `AutoencoderKL` (unknown keys ignored, diffusers' defaults).
#[derive(Debug, Clone, Deserialize)]
pub struct AutoencoderKLConfig {
    /// Image channels (3).
    #[serde(default = "d_three")]
    pub in_channels: usize,
    /// Decoded image channels (3).
    #[serde(default = "d_three")]
    pub out_channels: usize,
    /// `DownEncoderBlock2D` per resolution.
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    /// `UpDecoderBlock2D` per resolution.
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    /// Channels per resolution (encoder order).
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    /// ResNets per encoder block (decoder blocks have one more).
    #[serde(default = "d_one")]
    pub layers_per_block: usize,
    /// Activation (`silu` only).
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// Latent channels (4 for SD).
    #[serde(default = "d_four")]
    pub latent_channels: usize,
    /// GroupNorm groups.
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    /// Latents are multiplied by this after encoding for the diffusion model (0.18215 for SD 1.x).
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    /// Subtracted before scaling (null for SD).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// Whether `quant_conv` exists.
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    /// Whether `post_quant_conv` exists.
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    /// Whether the mid blocks have their self-attention layer.
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
}

impl AutoencoderKLConfig {
    /// Checks the values the model is built from; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || self.block_out_channels.contains(&0) {
            return Err(Error::config(
                "block_out_channels",
                "must be a non-empty list of positive channel counts",
            ));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::config(
                "down_block_types/up_block_types",
                format!(
                    "have {} / {} entries, block_out_channels has {n}",
                    self.down_block_types.len(),
                    self.up_block_types.len()
                ),
            ));
        }
        for (i, t) in self.down_block_types.iter().enumerate() {
            if t != "DownEncoderBlock2D" {
                return Err(Error::Unsupported {
                    field: format!("down_block_types[{i}]"),
                    value: t.clone(),
                    supported: "DownEncoderBlock2D".into(),
                });
            }
        }
        for (i, t) in self.up_block_types.iter().enumerate() {
            if t != "UpDecoderBlock2D" {
                return Err(Error::Unsupported {
                    field: format!("up_block_types[{i}]"),
                    value: t.clone(),
                    supported: "UpDecoderBlock2D".into(),
                });
            }
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.latent_channels == 0 {
            return Err(Error::config(
                "in_channels/out_channels/latent_channels",
                "must be >= 1",
            ));
        }
        if self.layers_per_block == 0 {
            return Err(Error::config("layers_per_block", "must be >= 1"));
        }
        if self.scaling_factor == 0.0 || !self.scaling_factor.is_finite() {
            return Err(Error::config(
                "scaling_factor",
                "must be finite and non-zero",
            ));
        }
        let g = self.norm_num_groups;
        if g == 0 || self.block_out_channels.iter().any(|c| c % g != 0) {
            return Err(Error::config(
                "norm_num_groups",
                format!(
                    "{g} groups must divide every entry of block_out_channels {:?}",
                    self.block_out_channels
                ),
            ));
        }
        Activation::parse(&self.act_fn)?;
        Ok(())
    }

    /// The encoder's construction arguments.
    pub fn encoder(&self) -> Result<EncoderConfig> {
        Ok(EncoderConfig {
            in_channels: self.in_channels,
            latent_channels: self.latent_channels,
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: self.layers_per_block,
            norm_num_groups: self.norm_num_groups,
            act: Activation::parse(&self.act_fn)?,
            double_z: true,
            mid_block_add_attention: self.mid_block_add_attention,
        })
    }

    /// The decoder's construction arguments.
    pub fn decoder(&self) -> Result<DecoderConfig> {
        Ok(DecoderConfig {
            latent_channels: self.latent_channels,
            out_channels: self.out_channels,
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: self.layers_per_block,
            norm_num_groups: self.norm_num_groups,
            act: Activation::parse(&self.act_fn)?,
            mid_block_add_attention: self.mid_block_add_attention,
        })
    }

    /// Pixels per latent cell along H and W: `2^(blocks − 1)` (8 for SD).
    pub fn spatial_stride(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }
}

/// diffusers' `UNetMidBlock2D` as the VAEs use it (no time embedding, one layer):
/// `resnets.0 → attentions.0 → resnets.1` (attention: group norm, one head, residual).
#[derive(Debug, Clone)]
pub struct VaeMidBlock {
    resnets: Vec<ResnetBlock2D>,
    attention: Option<Attention>,
}

impl VaeMidBlock {
    /// Builds the block (`eps = 1e-6` as in the VAEs).
    ///
    /// # Errors
    /// Missing / mis-shaped tensors.
    pub fn new(
        channels: usize,
        groups: usize,
        act: Activation,
        add_attention: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let eps = 1e-6;
        let cfg = resnet_cfg(channels, channels, groups, eps, act);
        let resnets = vec![
            ResnetBlock2D::new(&cfg, vb.pp("resnets.0"))?,
            ResnetBlock2D::new(&cfg, vb.pp("resnets.1"))?,
        ];
        let attention = if add_attention {
            // One head of the full width, biased projections, group norm and residual inside
            // (diffusers builds it with `attention_head_dim = channels`).
            let mut a = AttentionConfig::new(channels, None, 1, channels);
            a.bias = true;
            a.norm_num_groups = Some(groups);
            a.eps = eps;
            a.residual_connection = true;
            Some(Attention::new(&a, vb.pp("attentions.0"))?)
        } else {
            None
        };
        Ok(Self { resnets, attention })
    }

    /// # Shapes
    /// `[N, C, H, W]` → `[N, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, None)?;
        if let Some(a) = &self.attention {
            h = a.forward_spatial(&h)?;
        }
        self.resnets[1].forward(&h, None)
    }
}

fn resnet_cfg(
    cin: usize,
    cout: usize,
    groups: usize,
    eps: f64,
    act: Activation,
) -> ResnetBlock2DConfig {
    let mut c = ResnetBlock2DConfig::new(cin, cout)
        .temb(None)
        .groups(groups)
        .eps(eps);
    c.act = act;
    c
}

/// Construction arguments of an [`Encoder`] (diffusers `Encoder` with `DownEncoderBlock2D`s).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Latent channels (the output has `2·latent_channels` with `double_z`).
    pub latent_channels: usize,
    /// Channels per resolution.
    pub block_out_channels: Vec<usize>,
    /// ResNets per block.
    pub layers_per_block: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Activation.
    pub act: Activation,
    /// Output mean and log-variance (true for KL autoencoders).
    pub double_z: bool,
    /// Whether the mid block has its attention layer.
    pub mid_block_add_attention: bool,
}

#[derive(Debug, Clone)]
struct DownEncoderBlock {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

/// The VAE encoder: `conv_in → down_blocks → mid_block → norm → SiLU → conv_out`.
/// Keys as diffusers (`conv_in`, `down_blocks.N.resnets.M`, `down_blocks.N.downsamplers.0.conv`,
/// `mid_block.*`, `conv_norm_out`, `conv_out`).
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock>,
    mid_block: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
    in_channels: usize,
}

impl Encoder {
    /// Builds the encoder from `vb` (the VAE's `encoder.` prefix).
    ///
    /// # Errors
    /// Empty channel lists, groups not dividing channels; missing / mis-shaped tensors.
    pub fn new(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let (Some(&first), Some(&last)) = (ch.first(), ch.last()) else {
            return Err(Error::config("block_out_channels", "must not be empty"));
        };
        let g = cfg.norm_num_groups;
        let eps = 1e-6;
        let conv_in = Conv2d::new(cfg.in_channels, first, 3, 1, 1, true, vb.pp("conv_in"))?;
        let mut down_blocks = Vec::with_capacity(ch.len());
        let mut out_c = first;
        for (i, &c) in ch.iter().enumerate() {
            let in_c = out_c;
            out_c = c;
            let vbb = vb.pp(format!("down_blocks.{i}"));
            let mut resnets = Vec::with_capacity(cfg.layers_per_block);
            for j in 0..cfg.layers_per_block {
                let cin = if j == 0 { in_c } else { out_c };
                resnets.push(ResnetBlock2D::new(
                    &resnet_cfg(cin, out_c, g, eps, cfg.act),
                    vbb.pp(format!("resnets.{j}")),
                )?);
            }
            let downsampler = if i + 1 < ch.len() {
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
            down_blocks.push(DownEncoderBlock {
                resnets,
                downsampler,
            });
        }
        let mid_block = VaeMidBlock::new(
            last,
            g,
            cfg.act,
            cfg.mid_block_add_attention,
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
            conv_norm_out: GroupNorm::new(g, last, eps, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(last, out, 3, 1, 1, true, vb.pp("conv_out"))?,
            act: cfg.act,
            in_channels: cfg.in_channels,
        })
    }

    /// Encodes images.
    ///
    /// # Shapes
    /// `[N, C_in, H, W]` → `[N, 2·latent, H/s, W/s]` with `s = 2^(blocks−1)` (H, W rounded up).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_images("encoder input", x, self.in_channels)?;
        let mut h = self.conv_in.forward(x)?;
        for b in &self.down_blocks {
            for r in &b.resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(d) = &b.downsampler {
                h = d.forward(&h)?;
            }
        }
        h = self.mid_block.forward(&h)?;
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

/// Construction arguments of a [`Decoder`] (diffusers `Decoder` with `UpDecoderBlock2D`s).
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Latent channels.
    pub latent_channels: usize,
    /// Image channels.
    pub out_channels: usize,
    /// Channels per resolution, in encoder order (the decoder walks them reversed).
    pub block_out_channels: Vec<usize>,
    /// ResNets per encoder block (decoder blocks have one more).
    pub layers_per_block: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Activation.
    pub act: Activation,
    /// Whether the mid block has its attention layer.
    pub mid_block_add_attention: bool,
}

#[derive(Debug, Clone)]
struct UpDecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

/// The VAE decoder: `conv_in → mid_block → up_blocks → norm → SiLU → conv_out`.
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: VaeMidBlock,
    up_blocks: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
    latent_channels: usize,
}

impl Decoder {
    /// Builds the decoder from `vb` (the VAE's `decoder.` prefix).
    ///
    /// # Errors
    /// Empty channel lists, groups not dividing channels; missing / mis-shaped tensors.
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let (Some(&first), Some(&last)) = (ch.first(), ch.last()) else {
            return Err(Error::config("block_out_channels", "must not be empty"));
        };
        let g = cfg.norm_num_groups;
        let eps = 1e-6;
        let conv_in = Conv2d::new(cfg.latent_channels, last, 3, 1, 1, true, vb.pp("conv_in"))?;
        let mid_block = VaeMidBlock::new(
            last,
            g,
            cfg.act,
            cfg.mid_block_add_attention,
            vb.pp("mid_block"),
        )?;
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(rev.len());
        let mut out_c = last;
        for (i, &c) in rev.iter().enumerate() {
            let prev = out_c;
            out_c = c;
            let vbb = vb.pp(format!("up_blocks.{i}"));
            let mut resnets = Vec::with_capacity(cfg.layers_per_block + 1);
            for j in 0..=cfg.layers_per_block {
                let cin = if j == 0 { prev } else { out_c };
                resnets.push(ResnetBlock2D::new(
                    &resnet_cfg(cin, out_c, g, eps, cfg.act),
                    vbb.pp(format!("resnets.{j}")),
                )?);
            }
            let upsampler = if i + 1 < rev.len() {
                Some(Upsample2D::new(out_c, true, out_c, vbb.pp("upsamplers.0"))?)
            } else {
                None
            };
            up_blocks.push(UpDecoderBlock { resnets, upsampler });
        }
        Ok(Self {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(g, first, eps, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(first, cfg.out_channels, 3, 1, 1, true, vb.pp("conv_out"))?,
            act: cfg.act,
            latent_channels: cfg.latent_channels,
        })
    }

    /// Decodes latents.
    ///
    /// # Shapes
    /// `[N, latent, h, w]` → `[N, C_out, h·s, w·s]` with `s = 2^(blocks−1)`.
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        check_images("decoder input", z, self.latent_channels)?;
        let mut h = self.conv_in.forward(z)?;
        h = self.mid_block.forward(&h)?;
        for b in &self.up_blocks {
            for r in &b.resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(u) = &b.upsampler {
                h = u.forward(&h, None)?;
            }
        }
        h = norm_act(&self.conv_norm_out, self.act, &h)?;
        self.conv_out.forward(&h)
    }
}

/// diffusers' `DiagonalGaussianDistribution`: the posterior the encoder predicts.
///
/// The log-variance is clamped to `[-30, 20]` as in diffusers.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    /// Mean (also the mode), `[N, latent, h, w]` or `[B, latent, T, h, w]`.
    pub mean: Tensor,
    /// Clamped log-variance, same shape as `mean`.
    pub logvar: Tensor,
}

impl DiagonalGaussian {
    /// Splits encoder moments `[N, 2·L, …]` on dim 1 into mean and log-variance.
    ///
    /// # Errors
    /// An odd channel count or rank below 2.
    pub fn from_moments(moments: &Tensor) -> Result<Self> {
        let c = match moments.dims() {
            [_, c, ..] if c % 2 == 0 => *c,
            d => {
                return Err(Error::invalid(
                    "moments",
                    format!("expected [N, 2·latent, …] with an even channel count, got {d:?}"),
                ))
            }
        };
        let mean = moments.narrow(1, 0, c / 2)?;
        let logvar = moments.narrow(1, c / 2, c / 2)?.clamp(-30f32, 20f32)?;
        Ok(Self { mean, logvar })
    }

    /// `exp(0.5·logvar)`.
    pub fn std(&self) -> Result<Tensor> {
        Ok((&self.logvar * 0.5)?.exp()?)
    }

    /// The mode (= mean).
    pub fn mode(&self) -> &Tensor {
        &self.mean
    }

    /// A sample `mean + std·noise`, with the standard-normal `noise` drawn by the caller from
    /// its own seeded generator (shape of `mean`).
    ///
    /// # Errors
    /// `noise` with another shape than `mean`.
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        if noise.dims() != self.mean.dims() {
            return Err(Error::shape("noise", self.mean.dims(), noise.dims()));
        }
        Ok((&self.mean + self.std()?.mul(noise)?)?)
    }
}

/// Stable Diffusion's VAE (`AutoencoderKL`), with per-frame chunked video encode / decode.
///
/// Frame batches `[N, C, H, W]` go through [`AutoencoderKL::encode_frames`] /
/// [`AutoencoderKL::decode_frames`] (diffusers' `encode(x).latent_dist` / `decode(z).sample`,
/// no latent scaling). Videos `[B, C, T, H, W]` go through [`AutoencoderKL::encode_video`] /
/// [`AutoencoderKL::decode_video`], which fold time into the batch with [`VideoShape`] and run
/// at most `chunk_frames` frames at a time; the VAE is per-frame, so chunking never changes the
/// result, only the peak memory. The [`Codec`] impl works on *scaled* latents (the diffusion
/// model's space): `encode` returns `(mean − shift)·scaling_factor`, `decode` inverts it.
#[derive(Debug, Clone)]
pub struct AutoencoderKL {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    cfg: AutoencoderKLConfig,
    chunk_frames: usize,
}

impl AutoencoderKL {
    /// Builds the VAE from `vb` (random init with a `VarMap`, or checkpoint tensors).
    ///
    /// # Errors
    /// An invalid config (naming the field); missing / mis-shaped tensors.
    pub fn new(cfg: &AutoencoderKLConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let l = cfg.latent_channels;
        let quant_conv = if cfg.use_quant_conv {
            Some(Conv2d::new(
                2 * l,
                2 * l,
                1,
                1,
                0,
                true,
                vb.pp("quant_conv"),
            )?)
        } else {
            None
        };
        let post_quant_conv = if cfg.use_post_quant_conv {
            Some(Conv2d::new(l, l, 1, 1, 0, true, vb.pp("post_quant_conv"))?)
        } else {
            None
        };
        Ok(Self {
            encoder: Encoder::new(&cfg.encoder()?, vb.pp("encoder"))?,
            decoder: Decoder::new(&cfg.decoder()?, vb.pp("decoder"))?,
            quant_conv,
            post_quant_conv,
            cfg: cfg.clone(),
            chunk_frames: 8,
        })
    }

    /// Loads a diffusers `vae/` directory strictly (every tensor the model needs must be present
    /// with its shape); returns the model and the load report.
    ///
    /// # Errors
    /// Unreadable files, a bad config field, missing or mis-shaped tensors (named).
    pub fn load(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let md = ModelDir::open(dir)?;
        let cfg: AutoencoderKLConfig = md.config()?;
        md.load(dtype, device, |vb| Self::new(&cfg, vb))
    }

    /// The config.
    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.cfg
    }

    /// Frames per chunk of the video methods (default 8).
    pub fn chunk_frames(&self) -> usize {
        self.chunk_frames
    }

    /// Sets the frames per chunk of the video methods (at least 1).
    pub fn with_chunk_frames(mut self, n: usize) -> Self {
        self.chunk_frames = n.max(1);
        self
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Encoder moments after `quant_conv` (diffusers' `encode(x).latent_dist.parameters`).
    ///
    /// # Shapes
    /// `[N, C_in, H, W]` → `[N, 2·latent, H/s, W/s]`.
    pub fn moments(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.encoder.forward(x)?;
        match &self.quant_conv {
            Some(q) => q.forward(&h),
            None => Ok(h),
        }
    }

    /// Encodes images to the latent posterior (unscaled).
    ///
    /// # Shapes
    /// `[N, C_in, H, W]` → mean / logvar `[N, latent, H/s, W/s]`.
    pub fn encode_frames(&self, x: &Tensor) -> Result<DiagonalGaussian> {
        DiagonalGaussian::from_moments(&self.moments(x)?)
    }

    /// Decodes unscaled latents to images (diffusers' `decode(z).sample`).
    ///
    /// # Shapes
    /// `[N, latent, h, w]` → `[N, C_out, h·s, w·s]`.
    pub fn decode_frames(&self, z: &Tensor) -> Result<Tensor> {
        check_images("latents", z, self.cfg.latent_channels)?;
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(z)?,
            None => z.clone(),
        };
        self.decoder.forward(&z)
    }

    /// Runs `f` over the frames of a video, `chunk_frames` frames at a time.
    fn per_frame_chunks(
        &self,
        video: &Tensor,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (frames, shape) = VideoShape::fold(video)?;
        let n = frames.dim(0)?;
        let mut outs = Vec::with_capacity(n.div_ceil(self.chunk_frames));
        let mut start = 0;
        while start < n {
            let len = self.chunk_frames.min(n - start);
            outs.push(f(&frames.narrow(0, start, len)?)?);
            start += len;
        }
        let out = Tensor::cat(&outs, 0)?;
        VideoShape::unfold(&out, shape.t)
    }

    /// Encodes a video frame by frame (in chunks) to the latent posterior (unscaled).
    ///
    /// # Shapes
    /// `[B, C_in, T, H, W]` → mean / logvar `[B, latent, T, H/s, W/s]`.
    pub fn encode_video(&self, video: &Tensor) -> Result<DiagonalGaussian> {
        let c = VideoShape::of(video)?.c;
        if c != self.cfg.in_channels {
            return Err(Error::invalid(
                "video",
                format!(
                    "expected {} channels in [B, C, T, H, W], got shape {:?}",
                    self.cfg.in_channels,
                    video.dims()
                ),
            ));
        }
        let moments = self.per_frame_chunks(video, |x| self.moments(x))?;
        DiagonalGaussian::from_moments(&moments)
    }

    /// Decodes unscaled video latents frame by frame (in chunks).
    ///
    /// # Shapes
    /// `[B, latent, T, h, w]` → `[B, C_out, T, h·s, w·s]`.
    pub fn decode_video(&self, latents: &Tensor) -> Result<Tensor> {
        let c = VideoShape::of(latents)?.c;
        if c != self.cfg.latent_channels {
            return Err(Error::invalid(
                "latents",
                format!(
                    "expected {} latent channels in [B, C, T, h, w], got shape {:?}",
                    self.cfg.latent_channels,
                    latents.dims()
                ),
            ));
        }
        self.per_frame_chunks(latents, |z| self.decode_frames(z))
    }

    /// Unscaled latents → the diffusion model's space: `(z − shift)·scaling_factor`.
    pub fn scale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let shift = self.cfg.shift_factor.unwrap_or(0.0);
        Ok(((z - shift)? * self.cfg.scaling_factor)?)
    }

    /// The diffusion model's space → unscaled latents: `z / scaling_factor + shift`.
    pub fn unscale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let shift = self.cfg.shift_factor.unwrap_or(0.0);
        Ok(((z / self.cfg.scaling_factor)? + shift)?)
    }
}

impl Codec for AutoencoderKL {
    type Code = Tensor;

    /// Video `[B, C, T, H, W]` in `[-1, 1]` → scaled latents (posterior mode)
    /// `[B, latent, T, H/8, W/8]`.
    fn encode(&self, video: &Tensor) -> Result<Tensor> {
        let d = self.encode_video(video)?;
        self.scale_latents(&d.mean)
    }

    /// Scaled latents `[B, latent, T, h, w]` → video `[B, C, T, 8h, 8w]`.
    fn decode(&self, code: &Tensor) -> Result<Tensor> {
        self.decode_video(&self.unscale_latents(code)?)
    }

    fn strides(&self) -> CodecStrides {
        CodecStrides {
            temporal: 1,
            spatial: self.cfg.spatial_stride(),
        }
    }
}
