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
use vidgen_video_core::{
    check_finite, Codec, CodecStrides, Error, LoadReport, ModelDir, Result, VideoShape,
};

use crate::limits::{all_at_most, at_most, MAX_LAYERS, MAX_LEVELS, MAX_WIDTH};
use vidgen_video_nn::vae::attention_levels;
use vidgen_video_nn::{Activation, Conv2d};
pub use vidgen_video_nn::{Decoder, DecoderConfig, Encoder, EncoderConfig, VaeMidBlock};

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
        at_most("block_out_channels (levels)", n, MAX_LEVELS)?;
        all_at_most("block_out_channels", &self.block_out_channels, MAX_WIDTH)?;
        at_most("layers_per_block", self.layers_per_block, MAX_LAYERS)?;
        for (field, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
        ] {
            at_most(field, v, MAX_WIDTH)?;
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
        // AutoencoderKL accepts the attention variants too (`AttnDownEncoderBlock2D`, …).
        attention_levels(&self.down_block_types, "down_block_types")?;
        attention_levels(&self.up_block_types, "up_block_types")?;
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
        self.blocks().encoder(true)
    }

    /// The decoder's construction arguments.
    pub fn decoder(&self) -> Result<DecoderConfig> {
        self.blocks().decoder(None)
    }

    fn blocks(&self) -> vidgen_video_nn::vae::VaeBlocks<'_> {
        vidgen_video_nn::vae::VaeBlocks {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            latent_channels: self.latent_channels,
            block_out_channels: &self.block_out_channels,
            down_block_types: &self.down_block_types,
            up_block_types: &self.up_block_types,
            layers_per_block: self.layers_per_block,
            norm_num_groups: self.norm_num_groups,
            act_fn: &self.act_fn,
            mid_block_add_attention: self.mid_block_add_attention,
        }
    }

    /// Pixels per latent cell along H and W: `2^(blocks − 1)` (8 for SD; saturating at
    /// `usize::MAX`).
    pub fn spatial_stride(&self) -> usize {
        crate::svd::config::pow2_levels(self.block_out_channels.len())
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
    /// Builds the VAE from `vb` (random weights, e.g. video-testkit's seeded builder, or
    /// checkpoint tensors).
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
    pub fn from_pretrained(
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
    /// `[N, C_in, H, W]` → `[N, 2·latent, h, w]` with `h = ⌊H / s⌋`, `w = ⌊W / s⌋`
    /// (`s` = [`AutoencoderKLConfig::spatial_stride`]; each downsampling halves, rounding down).
    ///
    /// # Errors
    /// Wrong rank or channel count; [`Error::NonFinite`] when the moments hold NaN or infinity.
    pub fn moments(&self, x: &Tensor) -> Result<Tensor> {
        self.moments_run(x, None)
    }

    /// [`AutoencoderKL::moments`] that also returns the outputs of the top-level modules, named
    /// as the reference's forward hooks (`encoder.conv_in`, `encoder.down_blocks.i`,
    /// `encoder.mid_block`, `encoder`, `quant_conv`), for bisecting a mismatch; the moments are
    /// bit-identical.
    ///
    /// # Shapes
    /// As [`AutoencoderKL::moments`].
    ///
    /// # Errors
    /// As [`AutoencoderKL::moments`].
    pub fn moments_traced(&self, x: &Tensor) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let mut trace = Vec::new();
        let m = self.moments_run(x, Some(&mut trace))?;
        Ok((m, trace))
    }

    fn moments_run(
        &self,
        x: &Tensor,
        mut trace: Option<&mut Vec<(String, Tensor)>>,
    ) -> Result<Tensor> {
        let h = match trace.as_deref_mut() {
            Some(tr) => {
                let mut inner = Vec::new();
                let h = self.encoder.forward_traced(x, &mut inner)?;
                tr.extend(inner.into_iter().map(|(n, t)| (format!("encoder.{n}"), t)));
                tr.push(("encoder".into(), h.clone()));
                h
            }
            None => self.encoder.forward(x)?,
        };
        let m = match &self.quant_conv {
            Some(q) => q.forward(&h)?,
            None => h,
        };
        if let (Some(tr), Some(_)) = (trace, &self.quant_conv) {
            tr.push(("quant_conv".into(), m.clone()));
        }
        check_finite(&m, "AutoencoderKL encode: moments")?;
        Ok(m)
    }

    /// Encodes images to the latent posterior (unscaled).
    ///
    /// # Shapes
    /// `[N, C_in, H, W]` → mean / logvar `[N, latent, ⌊H/s⌋, ⌊W/s⌋]`.
    pub fn encode_frames(&self, x: &Tensor) -> Result<DiagonalGaussian> {
        DiagonalGaussian::from_moments(&self.moments(x)?)
    }

    /// Decodes unscaled latents to images (diffusers' `decode(z).sample`).
    ///
    /// # Shapes
    /// `[N, latent, h, w]` → `[N, C_out, h·s, w·s]`.
    ///
    /// # Errors
    /// Wrong rank or channel count; [`Error::NonFinite`] when the images hold NaN or infinity.
    pub fn decode_frames(&self, z: &Tensor) -> Result<Tensor> {
        self.decode_run(z, None)
    }

    /// [`AutoencoderKL::decode_frames`] that also returns the outputs of the top-level modules,
    /// named as the reference's forward hooks (`post_quant_conv`, `decoder.conv_in`,
    /// `decoder.mid_block`, `decoder.up_blocks.i`, `decoder`), for bisecting a mismatch; the
    /// images are bit-identical.
    ///
    /// # Shapes
    /// As [`AutoencoderKL::decode_frames`].
    ///
    /// # Errors
    /// As [`AutoencoderKL::decode_frames`].
    pub fn decode_frames_traced(&self, z: &Tensor) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let mut trace = Vec::new();
        let out = self.decode_run(z, Some(&mut trace))?;
        Ok((out, trace))
    }

    fn decode_run(&self, z: &Tensor, trace: Option<&mut Vec<(String, Tensor)>>) -> Result<Tensor> {
        match z.dims() {
            &[_, c, h, w] if c == self.cfg.latent_channels && h > 0 && w > 0 => {}
            d => {
                return Err(Error::invalid(
                    "latents",
                    format!(
                        "expected [N, {}, h, w] latents, got shape {d:?}",
                        self.cfg.latent_channels
                    ),
                ))
            }
        }
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(z)?,
            None => z.clone(),
        };
        let out = match trace {
            Some(tr) => {
                if self.post_quant_conv.is_some() {
                    tr.push(("post_quant_conv".into(), z.clone()));
                }
                let mut inner = Vec::new();
                let out = self.decoder.forward_traced(&z, None, &mut inner)?;
                tr.extend(inner.into_iter().map(|(n, t)| (format!("decoder.{n}"), t)));
                tr.push(("decoder".into(), out.clone()));
                out
            }
            None => self.decoder.forward(&z)?,
        };
        check_finite(&out, "AutoencoderKL decode: images")?;
        Ok(out)
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
    /// `[B, C_in, T, H, W]` → mean / logvar `[B, latent, T, ⌊H/s⌋, ⌊W/s⌋]`.
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
    /// `[B, latent, T, ⌊H/s⌋, ⌊W/s⌋]` (`s = 8` for SD).
    fn encode(&self, video: &Tensor) -> Result<Tensor> {
        let d = self.encode_video(video)?;
        self.scale_latents(&d.mean)
    }

    /// Scaled latents `[B, latent, T, h, w]` → video `[B, C, T, s·h, s·w]`.
    fn decode(&self, code: &Tensor) -> Result<Tensor> {
        self.decode_video(&self.unscale_latents(code)?)
    }

    fn strides(&self) -> CodecStrides {
        CodecStrides {
            temporal: 1,
            spatial: self.cfg.spatial_stride(),
        }
    }

    /// `(T, ⌊H/s⌋, ⌊W/s⌋)`: every encoder downsampling rounds down (diffusers pads one zero
    /// right / bottom, then a stride-2 3×3 conv), where the trait's default rounds up.
    fn code_dims(&self, video: VideoShape) -> (usize, usize, usize) {
        let s = self.cfg.spatial_stride();
        (video.t, video.h / s, video.w / s)
    }
}
