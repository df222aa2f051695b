//! `config.json` of diffusers' `UNetSpatioTemporalConditionModel` and
//! `AutoencoderKLTemporalDecoder`.

use crate::limits::{all_at_most, at_most, MAX_LAYERS, MAX_LEVELS, MAX_WIDTH};
use serde::Deserialize;
use vidgen_video_core::{AttentionSite, Error, Result};

/// A config value that diffusers accepts as one number for every block or one per block.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    /// The same value for every block.
    One(usize),
    /// One value per down block.
    Many(Vec<usize>),
}

impl PerBlock {
    /// The per-block values for `n` blocks.
    ///
    /// # Errors
    /// A list whose length is not `n`, naming `field`.
    pub fn expand(&self, n: usize, field: &str) -> Result<Vec<usize>> {
        match self {
            PerBlock::One(v) => Ok(vec![*v; n]),
            PerBlock::Many(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Many(v) => Err(Error::config(
                field,
                format!("has {} entries but there are {n} down blocks", v.len()),
            )),
        }
    }
}

fn d_in() -> usize {
    8
}
fn d_out() -> usize {
    4
}
fn d_down() -> Vec<String> {
    let mut v = vec!["CrossAttnDownBlockSpatioTemporal".to_string(); 3];
    v.push("DownBlockSpatioTemporal".into());
    v
}
fn d_up() -> Vec<String> {
    let mut v = vec!["UpBlockSpatioTemporal".to_string()];
    v.extend(vec!["CrossAttnUpBlockSpatioTemporal".to_string(); 3]);
    v
}
fn d_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn d_add_dim() -> usize {
    256
}
fn d_proj_dim() -> usize {
    768
}
fn d_layers() -> PerBlock {
    PerBlock::One(2)
}
fn d_cross() -> PerBlock {
    PerBlock::One(1024)
}
fn d_tlayers() -> PerBlock {
    PerBlock::One(1)
}
fn d_heads() -> PerBlock {
    PerBlock::Many(vec![5, 10, 20, 20])
}
fn d_frames() -> usize {
    25
}

/// diffusers' `UNetSpatioTemporalConditionModel` config (defaults as the reference; unknown keys
/// ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UNetSpatioTemporalConfig {
    /// Nominal latent size (informational).
    #[serde(default)]
    pub sample_size: Option<usize>,
    /// Input channels: noisy latents ++ conditioning-image latents (8).
    #[serde(default = "d_in")]
    pub in_channels: usize,
    /// Output channels (4).
    #[serde(default = "d_out")]
    pub out_channels: usize,
    /// `CrossAttnDownBlockSpatioTemporal` / `DownBlockSpatioTemporal` per level.
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    /// `UpBlockSpatioTemporal` / `CrossAttnUpBlockSpatioTemporal` per level.
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    /// Channels per level (multiples of 32: GroupNorm(32) is hard-coded).
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    /// Size of each added-time-id embedding.
    #[serde(default = "d_add_dim")]
    pub addition_time_embed_dim: usize,
    /// Input size of `add_embedding` (= number of added ids × `addition_time_embed_dim`).
    #[serde(default = "d_proj_dim")]
    pub projection_class_embeddings_input_dim: usize,
    /// ResNet layers per down block (up blocks have one more).
    #[serde(default = "d_layers")]
    pub layers_per_block: PerBlock,
    /// Context channels of the cross-attention.
    #[serde(default = "d_cross")]
    pub cross_attention_dim: PerBlock,
    /// Transformer blocks per attention.
    #[serde(default = "d_tlayers")]
    pub transformer_layers_per_block: PerBlock,
    /// Attention heads per level.
    #[serde(default = "d_heads")]
    pub num_attention_heads: PerBlock,
    /// Frames the model was trained on. The reference does not enforce it; here it is the
    /// default limit on input frames (see `UNetSpatioTemporalConditionModel::set_max_frames`).
    #[serde(default = "d_frames")]
    pub num_frames: usize,
}

/// `2^(levels−1)`: the downsampling factor of `levels` resolutions (1 for 0 or 1 level),
/// saturating at `usize::MAX` (a config may list any number of blocks).
pub(crate) fn pow2_levels(levels: usize) -> usize {
    u32::try_from(levels.saturating_sub(1))
        .ok()
        .and_then(|s| 1usize.checked_shl(s))
        .unwrap_or(usize::MAX)
}

/// The per-level values of a [`UNetSpatioTemporalConfig`], validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Levels {
    pub layers: Vec<usize>,
    pub cross: Vec<usize>,
    pub tlayers: Vec<usize>,
    pub heads: Vec<usize>,
}

/// The public SVD-XT UNet `config.json` (`stabilityai/stable-video-diffusion-img2vid-xt`,
/// `unet/config.json`), shipped with this crate so its size can be computed without weights.
pub const SVD_XT_UNET_CONFIG: &str = include_str!("../../assets/svd_xt_unet_config.json");

/// [`SVD_XT_UNET_CONFIG`] parsed and validated.
///
/// # Errors
/// Never for the shipped file; a parse error otherwise.
pub fn svd_xt_unet_config() -> Result<UNetSpatioTemporalConfig> {
    let cfg: UNetSpatioTemporalConfig = serde_json::from_str(SVD_XT_UNET_CONFIG)
        .map_err(|e| Error::config("svd_xt_unet_config.json", e.to_string()))?;
    cfg.validate()?;
    Ok(cfg)
}

impl UNetSpatioTemporalConfig {
    /// Parameters of the UNet this config builds, counted by construction without allocating
    /// them (1 524 M for SVD-XT). With the attention sites this gives AID's parameter report
    /// (`vidgen_adapters::ParamReport::aid(cfg.param_count()?, &cfg.attention_sites()?, …)`).
    ///
    /// # Errors
    /// An invalid config.
    pub fn param_count(&self) -> Result<usize> {
        vidgen_video_nn::count_by_construction(|vb| {
            crate::svd::UNetSpatioTemporalConditionModel::new(self, vb)
        })
    }

    /// Every transformer (`TransformerSpatioTemporalModel`) of the UNet this config builds, in
    /// forward order (down, mid, up), with the channels of its hidden states: where hooks
    /// (AID's adapters) run.
    ///
    /// # Errors
    /// An invalid config (field named).
    pub fn attention_sites(&self) -> Result<Vec<AttentionSite>> {
        self.validate()?;
        let n = self.block_out_channels.len();
        let layers = self.layers_per_block.expand(n, "layers_per_block")?;
        let tl = self
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?;
        let down: Vec<bool> = self
            .down_block_types
            .iter()
            .map(|t| t == "CrossAttnDownBlockSpatioTemporal")
            .collect();
        let up: Vec<bool> = self
            .up_block_types
            .iter()
            .map(|t| t == "CrossAttnUpBlockSpatioTemporal")
            .collect();
        Ok(crate::sites::sites(&crate::sites::SiteLayout {
            channels: &self.block_out_channels,
            down_attn: &down,
            up_attn: &up,
            layers: &layers,
            transformer_layers: &tl,
            mid_layers: Some(tl[n - 1]),
        }))
    }

    /// Reads and validates `config.json`.
    ///
    /// # Errors
    /// Unreadable file, bad fields (named).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let cfg: Self = vidgen_video_core::loading::read_config(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Number of added time ids (`projection_class_embeddings_input_dim / addition_time_embed_dim`).
    pub fn num_added_ids(&self) -> usize {
        self.projection_class_embeddings_input_dim / self.addition_time_embed_dim.max(1)
    }

    /// The UNet's overall downsampling factor, `2^(levels−1)` (saturating at `usize::MAX`).
    /// Latent sizes need not be multiples of it: as diffusers, the up blocks then interpolate
    /// to each skip connection's size.
    pub fn spatial_multiple(&self) -> usize {
        pow2_levels(self.block_out_channels.len())
    }

    pub(crate) fn levels(&self) -> Result<Levels> {
        let n = self.block_out_channels.len();
        Ok(Levels {
            layers: self.layers_per_block.expand(n, "layers_per_block")?,
            cross: self.cross_attention_dim.expand(n, "cross_attention_dim")?,
            tlayers: self
                .transformer_layers_per_block
                .expand(n, "transformer_layers_per_block")?,
            heads: self.num_attention_heads.expand(n, "num_attention_heads")?,
        })
    }

    /// Checks every field against what the model can build.
    ///
    /// # Errors
    /// [`Error::BadConfig`] / [`Error::Unsupported`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::config("block_out_channels", "must not be empty"));
        }
        at_most("block_out_channels (levels)", n, MAX_LEVELS)?;
        all_at_most("block_out_channels", &self.block_out_channels, MAX_WIDTH)?;
        for (field, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("addition_time_embed_dim", self.addition_time_embed_dim),
            (
                "projection_class_embeddings_input_dim",
                self.projection_class_embeddings_input_dim,
            ),
        ] {
            at_most(field, v, MAX_WIDTH)?;
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c == 0 || c % 32 != 0 {
                return Err(Error::config(
                    format!("block_out_channels[{i}]"),
                    format!("{c} is not a positive multiple of 32 (GroupNorm(32) is hard-coded)"),
                ));
            }
        }
        if self.down_block_types.len() != n {
            return Err(Error::config(
                "down_block_types",
                format!(
                    "{} entries for {n} block_out_channels",
                    self.down_block_types.len()
                ),
            ));
        }
        if self.up_block_types.len() != n {
            return Err(Error::config(
                "up_block_types",
                format!("{} entries for {n} levels", self.up_block_types.len()),
            ));
        }
        for (i, t) in self.down_block_types.iter().enumerate() {
            if t != "CrossAttnDownBlockSpatioTemporal" && t != "DownBlockSpatioTemporal" {
                return Err(Error::Unsupported {
                    field: format!("down_block_types[{i}]"),
                    value: t.clone(),
                    supported: "CrossAttnDownBlockSpatioTemporal, DownBlockSpatioTemporal".into(),
                });
            }
        }
        for (i, t) in self.up_block_types.iter().enumerate() {
            if t != "CrossAttnUpBlockSpatioTemporal" && t != "UpBlockSpatioTemporal" {
                return Err(Error::Unsupported {
                    field: format!("up_block_types[{i}]"),
                    value: t.clone(),
                    supported: "CrossAttnUpBlockSpatioTemporal, UpBlockSpatioTemporal".into(),
                });
            }
        }
        let lv = self.levels()?;
        all_at_most("layers_per_block", &lv.layers, MAX_LAYERS)?;
        all_at_most("transformer_layers_per_block", &lv.tlayers, MAX_LAYERS)?;
        all_at_most("cross_attention_dim", &lv.cross, MAX_WIDTH)?;
        for (i, (&h, &c)) in lv.heads.iter().zip(&self.block_out_channels).enumerate() {
            if h == 0 || c % h != 0 {
                return Err(Error::config(
                    format!("num_attention_heads[{i}]"),
                    format!("{h} heads must be ≥ 1 and divide {c} channels"),
                ));
            }
        }
        if lv.layers.contains(&0) {
            return Err(Error::config("layers_per_block", "must be ≥ 1"));
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(Error::config("in_channels/out_channels", "must be ≥ 1"));
        }
        if self.addition_time_embed_dim == 0
            || !self
                .projection_class_embeddings_input_dim
                .is_multiple_of(self.addition_time_embed_dim)
        {
            return Err(Error::config(
                "projection_class_embeddings_input_dim",
                format!(
                    "{} is not a multiple of addition_time_embed_dim = {}",
                    self.projection_class_embeddings_input_dim, self.addition_time_embed_dim
                ),
            ));
        }
        Ok(())
    }
}

fn d_vae_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn d_vae_ch() -> Vec<usize> {
    vec![64]
}
fn d_one() -> usize {
    1
}
fn d_three() -> usize {
    3
}
fn d_latent() -> usize {
    4
}
fn d_scaling() -> f64 {
    0.18215
}

/// diffusers' `AutoencoderKLTemporalDecoder` config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TemporalVaeConfig {
    /// Image channels in.
    #[serde(default = "d_three")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "d_three")]
    pub out_channels: usize,
    /// Encoder block types (`DownEncoderBlock2D`).
    #[serde(default = "d_vae_down")]
    pub down_block_types: Vec<String>,
    /// Channels per level (multiples of 32).
    #[serde(default = "d_vae_ch")]
    pub block_out_channels: Vec<usize>,
    /// ResNets per encoder level (decoder levels have one more).
    #[serde(default = "d_one")]
    pub layers_per_block: usize,
    /// Latent channels.
    #[serde(default = "d_latent")]
    pub latent_channels: usize,
    /// Nominal image size (informational).
    #[serde(default)]
    pub sample_size: Option<usize>,
    /// Latent scaling factor (`latents·scaling_factor` is what the UNet sees).
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    /// The reference runs the VAE in f32 when set (informational here: we accumulate in f32).
    #[serde(default)]
    pub force_upcast: bool,
}

impl TemporalVaeConfig {
    /// Reads and validates `config.json`.
    ///
    /// # Errors
    /// Unreadable file, bad fields (named).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let cfg: Self = vidgen_video_core::loading::read_config(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Pixels per latent cell (`2^(levels−1)`, saturating at `usize::MAX`).
    pub fn spatial_stride(&self) -> usize {
        pow2_levels(self.block_out_channels.len())
    }

    /// Checks the fields.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.block_out_channels.is_empty() {
            return Err(Error::config("block_out_channels", "must not be empty"));
        }
        at_most(
            "block_out_channels (levels)",
            self.block_out_channels.len(),
            MAX_LEVELS,
        )?;
        all_at_most("block_out_channels", &self.block_out_channels, MAX_WIDTH)?;
        at_most("layers_per_block", self.layers_per_block, MAX_LAYERS)?;
        for (field, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
        ] {
            at_most(field, v, MAX_WIDTH)?;
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c == 0 || c % 32 != 0 {
                return Err(Error::config(
                    format!("block_out_channels[{i}]"),
                    format!("{c} is not a positive multiple of 32 (GroupNorm(32) is hard-coded)"),
                ));
            }
        }
        if self.down_block_types.len() != self.block_out_channels.len() {
            return Err(Error::config(
                "down_block_types",
                format!(
                    "{} entries for {} block_out_channels",
                    self.down_block_types.len(),
                    self.block_out_channels.len()
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
        if self.layers_per_block == 0 || self.latent_channels == 0 {
            return Err(Error::config(
                "layers_per_block/latent_channels",
                "must be ≥ 1",
            ));
        }
        Ok(())
    }
}
