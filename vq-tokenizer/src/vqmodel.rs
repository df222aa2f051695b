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

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use vidgen_video_core::{Error, LoadReport, ModelDir, Result};
use vidgen_video_nn::{Activation, Conv2d, Decoder, DecoderConfig, Encoder, EncoderConfig};

use crate::quantizer::{Quantized, QuantizerConfig, VectorQuantizer};

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

impl VQModelConfig {
    /// The encoder's construction arguments (`double_z = False`).
    ///
    /// # Errors
    /// An unknown block type or activation.
    pub fn encoder(&self) -> Result<EncoderConfig> {
        self.blocks().encoder(false)
    }

    /// The decoder's construction arguments (SpatialNorm on the quantised latents when
    /// `norm_type = "spatial"`).
    ///
    /// # Errors
    /// An unknown block type or activation.
    pub fn decoder(&self) -> Result<DecoderConfig> {
        self.blocks()
            .decoder((self.norm_type == "spatial").then_some(self.embed_dim()))
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
            encoder: Encoder::new(&cfg.encoder()?, vb.pp("encoder"))?,
            quant_conv: Conv2d::new(cfg.latent_channels, e, 1, 1, 0, true, vb.pp("quant_conv"))?,
            quantize: VectorQuantizer::new(&qcfg, vb.pp("quantize"))?,
            post_quant_conv: Conv2d::new(
                e,
                cfg.latent_channels,
                1,
                1,
                0,
                true,
                vb.pp("post_quant_conv"),
            )?,
            decoder: Decoder::new(&cfg.decoder()?, vb.pp("decoder"))?,
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
            let z = self.quant_conv.forward(&h)?;
            vidgen_video_core::check_finite(&z, "VQModel encode: latents")?;
            Ok(z)
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
            let img = self.decoder.forward_cond(&z, zq)?;
            vidgen_video_core::check_finite(&img, "VQModel decode: images")?;
            Ok(img)
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
