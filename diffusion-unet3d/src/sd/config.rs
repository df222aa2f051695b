//! Configurations of the inflated Stable Diffusion models, read from diffusers `config.json`
//! files as written (unknown keys ignored, defaults as in diffusers 0.42).

use serde::Deserialize;

use crate::limits::{all_at_most, at_most, MAX_LAYERS, MAX_LEVELS, MAX_WIDTH};
use vidgen_video_core::{AttentionSite, Error, Result};

/// A config value that diffusers accepts either as one integer for every block or as one per
/// block (`attention_head_dim: 8` or `[5, 10, 20, 20]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    /// The same value for every block.
    One(usize),
    /// One value per block, in down-block order.
    Each(Vec<usize>),
}

impl PerBlock {
    /// As `config.json` writes it: a number, or a list.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            PerBlock::One(v) => serde_json::json!(v),
            PerBlock::Each(v) => serde_json::json!(v),
        }
    }

    /// The value for each of `n` blocks; an error naming `field` when a list has another length.
    pub fn expand(&self, n: usize, field: &str) -> Result<Vec<usize>> {
        match self {
            PerBlock::One(v) => Ok(vec![*v; n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => Err(Error::config(
                field,
                format!("has {} entries but the model has {n} blocks", v.len()),
            )),
        }
    }
}

fn unsupported(field: &str, value: impl std::fmt::Debug, supported: &str) -> Error {
    Error::Unsupported {
        field: field.into(),
        value: format!("{value:?}"),
        supported: supported.into(),
    }
}

fn check_positive(field: &str, v: &[usize]) -> Result<()> {
    if v.is_empty() {
        return Err(Error::config(field, "must not be empty"));
    }
    if let Some(i) = v.iter().position(|&x| x == 0) {
        return Err(Error::config(format!("{field}[{i}]"), "must be >= 1"));
    }
    Ok(())
}

/// The sanity limits shared by the SD UNet configs: levels, channels, layers per block,
/// context width and channel counts in / out.
pub(crate) fn check_sizes(
    channels: &[usize],
    layers: &[usize],
    cross_attention_dim: usize,
    in_out: (usize, usize),
) -> Result<()> {
    at_most("block_out_channels (levels)", channels.len(), MAX_LEVELS)?;
    all_at_most("block_out_channels", channels, MAX_WIDTH)?;
    all_at_most("layers_per_block", layers, MAX_LAYERS)?;
    at_most("cross_attention_dim", cross_attention_dim, MAX_WIDTH)?;
    at_most("in_channels", in_out.0, MAX_WIDTH)?;
    at_most("out_channels", in_out.1, MAX_WIDTH)
}

fn check_groups(field: &str, groups: usize, channels: &[usize]) -> Result<()> {
    if groups == 0 {
        return Err(Error::config(field, "must be >= 1"));
    }
    if let Some(c) = channels.iter().find(|&&c| c % groups != 0) {
        return Err(Error::config(
            field,
            format!("{groups} groups do not divide {c} channels"),
        ));
    }
    Ok(())
}

fn check_act(act_fn: &str) -> Result<()> {
    match act_fn {
        "silu" | "swish" => Ok(()),
        other => Err(unsupported("act_fn", other, "\"silu\"")),
    }
}

fn d_in_channels() -> usize {
    4
}
fn d_one() -> usize {
    1
}
fn d_two() -> usize {
    2
}
fn d_one_f() -> f64 {
    1.0
}
fn d_silu() -> String {
    "silu".into()
}
fn d_groups() -> Option<usize> {
    Some(32)
}
fn d_norm_eps() -> f64 {
    1e-5
}
fn d_true() -> bool {
    true
}

/// `config.json` of a diffusers `UNet3DConditionModel` (ModelScope text-to-video, VideoCrafter).
///
/// `attention_head_dim` follows the reference's "double swap": inside every block it is the head
/// **size**, and the block has `channels / attention_head_dim` heads; `transformer_in` has 8 heads
/// of that size (see [`UNet3DConfig::block_heads`]).
#[derive(Debug, Clone, Deserialize)]
pub struct UNet3DConfig {
    /// Latent channels of the noisy input (4 for SD latents; 8 with channel-concat conditioning).
    #[serde(default = "d_in_channels")]
    pub in_channels: usize,
    /// Channels of the prediction.
    #[serde(default = "d_in_channels")]
    pub out_channels: usize,
    /// `CrossAttnDownBlock3D` or `DownBlock3D`, one per resolution.
    #[serde(default = "UNet3DConfig::d_down")]
    pub down_block_types: Vec<String>,
    /// `UpBlock3D` or `CrossAttnUpBlock3D`, one per resolution (deepest first).
    #[serde(default = "UNet3DConfig::d_up")]
    pub up_block_types: Vec<String>,
    /// Output channels of each down block.
    #[serde(default = "UNet3DConfig::d_channels")]
    pub block_out_channels: Vec<usize>,
    /// ResNet layers per down block (up blocks have one more).
    #[serde(default = "d_two")]
    pub layers_per_block: usize,
    /// Padding of the strided downsampling convolutions.
    #[serde(default = "d_one")]
    pub downsample_padding: usize,
    /// Output scale of the mid block's ResNets.
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    /// Activation (`silu` only).
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// GroupNorm groups.
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    /// GroupNorm epsilon of the ResNets and the output norm.
    #[serde(default = "d_norm_eps")]
    pub norm_eps: f64,
    /// Width of the cross-attention context (text embeddings).
    #[serde(default = "UNet3DConfig::d_cross")]
    pub cross_attention_dim: usize,
    /// Head size inside the blocks (see the type's docs).
    #[serde(default = "UNet3DConfig::d_head_dim")]
    pub attention_head_dim: PerBlock,
    /// Must be absent / null: diffusers refuses it too.
    #[serde(default)]
    pub num_attention_heads: Option<serde_json::Value>,
    /// Must be null (LCM-style timestep conditioning is not supported).
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
}

impl UNet3DConfig {
    /// Every spatial transformer of the UNet this config builds, in forward order (down, mid,
    /// up): where hooks (adapters) run, with the channels of the hidden states there.
    ///
    /// # Errors
    /// An invalid config (field named).
    pub fn attention_sites(&self) -> Result<Vec<AttentionSite>> {
        self.validate()?;
        let n = self.block_out_channels.len();
        let down: Vec<bool> = self
            .down_block_types
            .iter()
            .map(|t| t.starts_with("CrossAttn"))
            .collect();
        let up: Vec<bool> = self
            .up_block_types
            .iter()
            .map(|t| t.starts_with("CrossAttn"))
            .collect();
        Ok(crate::sites::sites(&crate::sites::SiteLayout {
            channels: &self.block_out_channels,
            down_attn: &down,
            up_attn: &up,
            layers: &vec![self.layers_per_block; n],
            transformer_layers: &vec![1; n],
            mid_layers: Some(1),
        }))
    }

    fn d_down() -> Vec<String> {
        [
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlock3D",
        ]
        .map(String::from)
        .to_vec()
    }
    fn d_up() -> Vec<String> {
        [
            "UpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
        ]
        .map(String::from)
        .to_vec()
    }
    fn d_channels() -> Vec<usize> {
        vec![320, 640, 1280, 1280]
    }
    fn d_cross() -> usize {
        1024
    }
    fn d_head_dim() -> PerBlock {
        PerBlock::One(64)
    }

    /// The GroupNorm group count (diffusers' `None` means "no output norm"; not supported).
    pub fn groups(&self) -> Result<usize> {
        self.norm_num_groups.ok_or_else(|| {
            unsupported(
                "norm_num_groups",
                "null",
                "an integer (the blocks need group norms)",
            )
        })
    }

    /// Per down block `(heads, head_dim)` of its spatial and temporal transformers, following the
    /// reference: head size = `attention_head_dim[i]`, heads = `channels / head size`.
    pub fn block_heads(&self) -> Result<Vec<(usize, usize)>> {
        let n = self.block_out_channels.len();
        let dims = self.attention_head_dim.expand(n, "attention_head_dim")?;
        Ok(self
            .block_out_channels
            .iter()
            .zip(dims)
            .map(|(&c, d)| (c / d.max(1), d))
            .collect())
    }

    /// Checks the values a model can be built from; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        check_positive("block_out_channels", &self.block_out_channels)?;
        check_sizes(
            &self.block_out_channels,
            &[self.layers_per_block],
            self.cross_attention_dim,
            (self.in_channels, self.out_channels),
        )?;
        if self.down_block_types.len() != n {
            return Err(Error::config(
                "down_block_types",
                format!(
                    "has {} entries, block_out_channels has {n}",
                    self.down_block_types.len()
                ),
            ));
        }
        if self.up_block_types.len() != n {
            return Err(Error::config(
                "up_block_types",
                format!(
                    "has {} entries, block_out_channels has {n}",
                    self.up_block_types.len()
                ),
            ));
        }
        for (i, t) in self.down_block_types.iter().enumerate() {
            if t != "CrossAttnDownBlock3D" && t != "DownBlock3D" {
                return Err(unsupported(
                    &format!("down_block_types[{i}]"),
                    t,
                    "CrossAttnDownBlock3D, DownBlock3D",
                ));
            }
        }
        for (i, t) in self.up_block_types.iter().enumerate() {
            if t != "CrossAttnUpBlock3D" && t != "UpBlock3D" {
                return Err(unsupported(
                    &format!("up_block_types[{i}]"),
                    t,
                    "CrossAttnUpBlock3D, UpBlock3D",
                ));
            }
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(Error::config("in_channels/out_channels", "must be >= 1"));
        }
        if self.layers_per_block == 0 {
            return Err(Error::config("layers_per_block", "must be >= 1"));
        }
        if self
            .num_attention_heads
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return Err(unsupported(
                "num_attention_heads",
                self.num_attention_heads.as_ref(),
                "null (diffusers refuses it for UNet3DConditionModel; use attention_head_dim)",
            ));
        }
        if let Some(v) = self.time_cond_proj_dim {
            return Err(unsupported("time_cond_proj_dim", v, "null"));
        }
        check_act(&self.act_fn)?;
        let groups = self.groups()?;
        check_groups("norm_num_groups", groups, &self.block_out_channels)?;
        let heads = self.block_heads()?;
        for (i, (&c, &(h, d))) in self.block_out_channels.iter().zip(&heads).enumerate() {
            if d == 0 || h * d != c {
                return Err(Error::config(
                    format!("attention_head_dim[{i}]"),
                    format!("head size {d} does not divide the block's {c} channels"),
                ));
            }
        }
        Ok(())
    }
}

/// `config.json` of a diffusers `UNet2DConditionModel` (Stable Diffusion 1.x / 2.x UNet), the
/// subset used by SD-based video models. Values diffusers accepts but this crate does not
/// implement (class / addition embeddings, other block types) are refused by
/// [`UNet2DConditionConfig::validate`] with [`Error::Unsupported`].
#[derive(Debug, Clone, Deserialize)]
pub struct UNet2DConditionConfig {
    /// Latent channels of the noisy input.
    #[serde(default = "d_in_channels")]
    pub in_channels: usize,
    /// Channels of the prediction.
    #[serde(default = "d_in_channels")]
    pub out_channels: usize,
    /// Whether the sinusoidal time embedding is `[cos, sin]` (true for SD).
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    /// Shift of the sinusoidal frequencies (0 for SD).
    #[serde(default)]
    pub freq_shift: f64,
    /// `CrossAttnDownBlock2D` or `DownBlock2D`.
    #[serde(default = "UNet2DConditionConfig::d_down")]
    pub down_block_types: Vec<String>,
    /// `UNetMidBlock2DCrossAttn` (the only supported mid block).
    #[serde(default = "UNet2DConditionConfig::d_mid")]
    pub mid_block_type: Option<String>,
    /// `UpBlock2D` or `CrossAttnUpBlock2D`.
    #[serde(default = "UNet2DConditionConfig::d_up")]
    pub up_block_types: Vec<String>,
    /// Must be false.
    #[serde(default)]
    pub only_cross_attention: serde_json::Value,
    /// Output channels of each down block.
    #[serde(default = "UNet2DConditionConfig::d_channels")]
    pub block_out_channels: Vec<usize>,
    /// ResNet layers per down block (one value for all blocks).
    #[serde(default = "UNet2DConditionConfig::d_layers")]
    pub layers_per_block: PerBlock,
    /// Padding of the strided downsampling convolutions.
    #[serde(default = "d_one")]
    pub downsample_padding: usize,
    /// Output scale of the mid block's ResNets.
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    /// Activation (`silu` only).
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// GroupNorm groups.
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    /// GroupNorm epsilon.
    #[serde(default = "d_norm_eps")]
    pub norm_eps: f64,
    /// Width of the cross-attention context.
    #[serde(default = "UNet2DConditionConfig::d_cross")]
    pub cross_attention_dim: usize,
    /// Transformer blocks per spatial transformer.
    #[serde(default = "UNet2DConditionConfig::d_tlpb")]
    pub transformer_layers_per_block: PerBlock,
    /// Legacy name of the number of heads when `num_attention_heads` is null (diffusers issue 2011).
    #[serde(default = "UNet2DConditionConfig::d_head_dim")]
    pub attention_head_dim: PerBlock,
    /// Number of attention heads per block (null: taken from `attention_head_dim`).
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    /// Linear instead of 1×1-conv `proj_in` / `proj_out` in the spatial transformers (SD 2).
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Must be `default`.
    #[serde(default = "UNet2DConditionConfig::d_shift")]
    pub resnet_time_scale_shift: String,
    /// Must be null.
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// Must be null.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// Must be null.
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// Must be null.
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    /// Must be null.
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    /// Must be `positional`.
    #[serde(default = "UNet2DConditionConfig::d_time_type")]
    pub time_embedding_type: String,
    /// Must be 3.
    #[serde(default = "UNet2DConditionConfig::d_kernel")]
    pub conv_in_kernel: usize,
    /// Must be 3.
    #[serde(default = "UNet2DConditionConfig::d_kernel")]
    pub conv_out_kernel: usize,
    /// Must be false.
    #[serde(default)]
    pub dual_cross_attention: bool,
    /// Must be false or absent (upcasting does not change an f32 computation; f32 accumulation
    /// is always used here).
    #[serde(default)]
    pub upcast_attention: Option<bool>,
}

impl UNet2DConditionConfig {
    /// Every spatial transformer of the UNet this config builds (and of its inflated /
    /// motion versions), in forward order: where hooks (adapters) run.
    ///
    /// # Errors
    /// An invalid or unsupported config field, named.
    pub fn attention_sites(&self) -> Result<Vec<AttentionSite>> {
        crate::sd::MotionUNetSpec::from_unet2d(self)?.attention_sites()
    }

    fn d_down() -> Vec<String> {
        [
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ]
        .map(String::from)
        .to_vec()
    }
    fn d_up() -> Vec<String> {
        [
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ]
        .map(String::from)
        .to_vec()
    }
    fn d_mid() -> Option<String> {
        Some("UNetMidBlock2DCrossAttn".into())
    }
    fn d_channels() -> Vec<usize> {
        vec![320, 640, 1280, 1280]
    }
    fn d_layers() -> PerBlock {
        PerBlock::One(2)
    }
    fn d_cross() -> usize {
        1280
    }
    fn d_tlpb() -> PerBlock {
        PerBlock::One(1)
    }
    fn d_head_dim() -> PerBlock {
        PerBlock::One(8)
    }
    fn d_shift() -> String {
        "default".into()
    }
    fn d_time_type() -> String {
        "positional".into()
    }
    fn d_kernel() -> usize {
        3
    }

    /// Heads per down block: `num_attention_heads`, or the legacy `attention_head_dim`.
    pub fn heads(&self) -> Result<Vec<usize>> {
        let n = self.block_out_channels.len();
        match &self.num_attention_heads {
            Some(h) => h.expand(n, "num_attention_heads"),
            None => self.attention_head_dim.expand(n, "attention_head_dim"),
        }
    }

    /// Checks the values a model can be built from; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        check_positive("block_out_channels", &self.block_out_channels)?;
        for (field, len) in [
            ("down_block_types", self.down_block_types.len()),
            ("up_block_types", self.up_block_types.len()),
        ] {
            if len != n {
                return Err(Error::config(
                    field,
                    format!("has {len} entries, block_out_channels has {n}"),
                ));
            }
        }
        for (i, t) in self.down_block_types.iter().enumerate() {
            if !matches!(t.as_str(), "CrossAttnDownBlock2D" | "DownBlock2D") {
                return Err(unsupported(
                    &format!("down_block_types[{i}]"),
                    t,
                    "CrossAttnDownBlock2D, DownBlock2D",
                ));
            }
        }
        for (i, t) in self.up_block_types.iter().enumerate() {
            if !matches!(t.as_str(), "CrossAttnUpBlock2D" | "UpBlock2D") {
                return Err(unsupported(
                    &format!("up_block_types[{i}]"),
                    t,
                    "CrossAttnUpBlock2D, UpBlock2D",
                ));
            }
        }
        if self.mid_block_type.as_deref() != Some("UNetMidBlock2DCrossAttn") {
            return Err(unsupported(
                "mid_block_type",
                &self.mid_block_type,
                "UNetMidBlock2DCrossAttn",
            ));
        }
        if !matches!(
            self.only_cross_attention,
            serde_json::Value::Null | serde_json::Value::Bool(false)
        ) {
            return Err(unsupported(
                "only_cross_attention",
                &self.only_cross_attention,
                "false",
            ));
        }
        let simple: [(&str, bool, String); 9] = [
            (
                "resnet_time_scale_shift",
                self.resnet_time_scale_shift == "default",
                self.resnet_time_scale_shift.clone(),
            ),
            (
                "class_embed_type",
                self.class_embed_type.is_none(),
                format!("{:?}", self.class_embed_type),
            ),
            (
                "addition_embed_type",
                self.addition_embed_type.is_none(),
                format!("{:?}", self.addition_embed_type),
            ),
            (
                "num_class_embeds",
                self.num_class_embeds.is_none(),
                format!("{:?}", self.num_class_embeds),
            ),
            (
                "time_cond_proj_dim",
                self.time_cond_proj_dim.is_none(),
                format!("{:?}", self.time_cond_proj_dim),
            ),
            (
                "encoder_hid_dim",
                self.encoder_hid_dim.is_none(),
                format!("{:?}", self.encoder_hid_dim),
            ),
            (
                "time_embedding_type",
                self.time_embedding_type == "positional",
                self.time_embedding_type.clone(),
            ),
            (
                "conv_in_kernel / conv_out_kernel",
                self.conv_in_kernel == 3 && self.conv_out_kernel == 3,
                format!("{} / {}", self.conv_in_kernel, self.conv_out_kernel),
            ),
            (
                "dual_cross_attention",
                !self.dual_cross_attention,
                "true".into(),
            ),
        ];
        for (field, ok, value) in simple {
            if !ok {
                return Err(unsupported(
                    field,
                    value,
                    "the Stable Diffusion 1.x / 2.x default",
                ));
            }
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(Error::config("in_channels/out_channels", "must be >= 1"));
        }
        let layers = self.layers_per_block.expand(n, "layers_per_block")?;
        check_positive("layers_per_block", &layers)?;
        check_sizes(
            &self.block_out_channels,
            &layers,
            self.cross_attention_dim,
            (self.in_channels, self.out_channels),
        )?;
        let tl = self
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?;
        check_positive("transformer_layers_per_block", &tl)?;
        all_at_most("transformer_layers_per_block", &tl, MAX_LAYERS)?;
        check_act(&self.act_fn)?;
        let groups = self
            .norm_num_groups
            .ok_or_else(|| unsupported("norm_num_groups", "null", "an integer"))?;
        check_groups("norm_num_groups", groups, &self.block_out_channels)?;
        let heads = self.heads()?;
        for (i, (&c, &h)) in self.block_out_channels.iter().zip(&heads).enumerate() {
            if h == 0 || c % h != 0 {
                return Err(Error::config(
                    format!("num_attention_heads[{i}]"),
                    format!("{h} heads do not divide the block's {c} channels"),
                ));
            }
        }
        Ok(())
    }
}

/// `config.json` of a diffusers `MotionAdapter` (AnimateDiff motion modules).
#[derive(Debug, Clone, Deserialize)]
pub struct MotionAdapterConfig {
    /// Channels of the UNet's down blocks the modules attach to.
    #[serde(default = "UNet2DConditionConfig::d_channels")]
    pub block_out_channels: Vec<usize>,
    /// Motion modules per down block (up blocks have one more); must equal the UNet's
    /// `layers_per_block`.
    #[serde(default = "MotionAdapterConfig::d_two")]
    pub motion_layers_per_block: PerBlock,
    /// Transformer blocks per motion module.
    #[serde(default = "MotionAdapterConfig::d_one")]
    pub motion_transformer_layers_per_block: PerBlock,
    /// Motion modules in the mid block.
    #[serde(default = "d_one")]
    pub motion_mid_block_layers_per_block: usize,
    /// Transformer blocks per mid-block motion module.
    #[serde(default = "MotionAdapterConfig::d_one")]
    pub motion_transformer_layers_per_mid_block: PerBlock,
    /// Heads of the temporal attention per block.
    #[serde(default = "MotionAdapterConfig::d_heads")]
    pub motion_num_attention_heads: PerBlock,
    /// GroupNorm groups of the motion modules.
    #[serde(default = "MotionAdapterConfig::d_groups")]
    pub motion_norm_num_groups: usize,
    /// Rows of the sinusoidal position table: the most frames a forward pass may have.
    #[serde(default = "MotionAdapterConfig::d_seq")]
    pub motion_max_seq_length: usize,
    /// Whether the mid block has motion modules.
    #[serde(default = "d_true")]
    pub use_motion_mid_block: bool,
    /// Must be null (the adapter's own `conv_in` of SparseCtrl-style adapters is not supported).
    #[serde(default)]
    pub conv_in_channels: Option<usize>,
}

impl MotionAdapterConfig {
    fn d_two() -> PerBlock {
        PerBlock::One(2)
    }
    fn d_one() -> PerBlock {
        PerBlock::One(1)
    }
    fn d_heads() -> PerBlock {
        PerBlock::One(8)
    }
    fn d_groups() -> usize {
        32
    }
    fn d_seq() -> usize {
        32
    }

    /// A default adapter layout for a 2-D UNet (used by inflation): one motion module per
    /// ResNet, one transformer block each, `heads` heads, a mid-block module, `max_frames`
    /// positions, the UNet's group count.
    pub fn for_unet(unet: &UNet2DConditionConfig, heads: usize, max_frames: usize) -> Result<Self> {
        let n = unet.block_out_channels.len();
        Ok(MotionAdapterConfig {
            block_out_channels: unet.block_out_channels.clone(),
            motion_layers_per_block: PerBlock::Each(
                unet.layers_per_block.expand(n, "layers_per_block")?,
            ),
            motion_transformer_layers_per_block: PerBlock::One(1),
            motion_mid_block_layers_per_block: 1,
            motion_transformer_layers_per_mid_block: PerBlock::One(1),
            motion_num_attention_heads: PerBlock::One(heads),
            motion_norm_num_groups: unet.norm_num_groups.unwrap_or(32),
            motion_max_seq_length: max_frames,
            use_motion_mid_block: true,
            conv_in_channels: None,
        })
    }
}

impl MotionAdapterConfig {
    /// The `config.json` of the `UNetMotionModel` that diffusers'
    /// `UNetMotionModel.from_unet2d(unet, motion_adapter)` builds from a `UNet2DConditionModel`
    /// (its `config.json` as JSON) and this adapter: block types renamed to their `Motion`
    /// versions, the adapter's motion fields, `layers_per_block` from the adapter,
    /// `num_attention_heads` from `attention_head_dim` when absent (the SD 1.x naming), and only
    /// the keys `UNetMotionModel.__init__` takes. A model trained from `from_parts(unet, self)`
    /// saves its tensors under exactly the names this config loads.
    ///
    /// # Errors
    /// A config that is not a JSON object or lacks its block types; an adapter with its own
    /// `conv_in` (unsupported).
    pub fn motion_unet_config(&self, unet2d: &serde_json::Value) -> Result<serde_json::Value> {
        use serde_json::{json, Value};
        let obj = unet2d
            .as_object()
            .ok_or_else(|| Error::config("unet config", "not a JSON object"))?;
        if let Some(c) = self.conv_in_channels {
            return Err(Error::Unsupported {
                field: "conv_in_channels".into(),
                value: c.to_string(),
                supported: "null".into(),
            });
        }
        let rename = |key: &str, cross: &str, plain: &str| -> Result<Value> {
            let types = obj
                .get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| Error::config(key, "missing or not a list"))?;
            Ok(Value::Array(
                types
                    .iter()
                    .map(|t| {
                        let cross_attn = t.as_str().is_some_and(|t| t.contains("CrossAttn"));
                        json!(if cross_attn { cross } else { plain })
                    })
                    .collect(),
            ))
        };
        // `UNetMotionModel.__init__`'s parameters: diffusers drops every other key.
        const KEEP: &[&str] = &[
            "sample_size",
            "in_channels",
            "out_channels",
            "block_out_channels",
            "downsample_padding",
            "mid_block_scale_factor",
            "act_fn",
            "norm_num_groups",
            "norm_eps",
            "cross_attention_dim",
            "transformer_layers_per_block",
            "reverse_transformer_layers_per_block",
            "transformer_layers_per_mid_block",
            "use_linear_projection",
            "num_attention_heads",
            "reverse_motion_num_attention_heads",
            "mid_block_layers",
            "encoder_hid_dim",
            "encoder_hid_dim_type",
            "addition_embed_type",
            "addition_time_embed_dim",
            "projection_class_embeddings_input_dim",
            "time_cond_proj_dim",
        ];
        let mut out = serde_json::Map::new();
        out.insert("_class_name".into(), json!("UNetMotionModel"));
        if let Some(v) = obj.get("_diffusers_version") {
            out.insert("_diffusers_version".into(), v.clone());
        }
        for k in KEEP {
            if let Some(v) = obj.get(*k) {
                out.insert((*k).to_string(), v.clone());
            }
        }
        if out.get("num_attention_heads").is_none_or(Value::is_null) {
            let heads = obj.get("attention_head_dim").cloned().unwrap_or(json!(8));
            out.insert("num_attention_heads".into(), heads);
        }
        out.insert(
            "down_block_types".into(),
            rename(
                "down_block_types",
                "CrossAttnDownBlockMotion",
                "DownBlockMotion",
            )?,
        );
        out.insert(
            "up_block_types".into(),
            rename("up_block_types", "CrossAttnUpBlockMotion", "UpBlockMotion")?,
        );
        out.insert(
            "layers_per_block".into(),
            self.motion_layers_per_block.to_json(),
        );
        out.insert(
            "motion_num_attention_heads".into(),
            self.motion_num_attention_heads.to_json(),
        );
        out.insert(
            "motion_max_seq_length".into(),
            json!(self.motion_max_seq_length),
        );
        out.insert(
            "use_motion_mid_block".into(),
            json!(self.use_motion_mid_block),
        );
        out.insert(
            "temporal_transformer_layers_per_block".into(),
            self.motion_transformer_layers_per_block.to_json(),
        );
        out.insert(
            "temporal_transformer_layers_per_mid_block".into(),
            self.motion_transformer_layers_per_mid_block.to_json(),
        );
        Ok(Value::Object(out))
    }
}

/// `config.json` of a diffusers `UNetMotionModel` (a UNet2DConditionModel with AnimateDiff motion
/// modules, as `UNetMotionModel.from_unet2d(...).save_pretrained` writes it).
#[derive(Debug, Clone, Deserialize)]
pub struct UNetMotionConfig {
    /// Latent channels of the noisy input.
    #[serde(default = "d_in_channels")]
    pub in_channels: usize,
    /// Channels of the prediction.
    #[serde(default = "d_in_channels")]
    pub out_channels: usize,
    /// `CrossAttnDownBlockMotion` or `DownBlockMotion`.
    pub down_block_types: Vec<String>,
    /// `UpBlockMotion` or `CrossAttnUpBlockMotion`.
    pub up_block_types: Vec<String>,
    /// Output channels of each down block.
    pub block_out_channels: Vec<usize>,
    /// ResNet layers per down block.
    #[serde(default = "UNet2DConditionConfig::d_layers")]
    pub layers_per_block: PerBlock,
    /// Padding of the strided downsampling convolutions.
    #[serde(default = "d_one")]
    pub downsample_padding: usize,
    /// Output scale of the mid block's ResNets.
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    /// Activation (`silu` only).
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// GroupNorm groups.
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    /// GroupNorm epsilon.
    #[serde(default = "d_norm_eps")]
    pub norm_eps: f64,
    /// Width of the cross-attention context.
    #[serde(default = "UNet2DConditionConfig::d_cross")]
    pub cross_attention_dim: usize,
    /// Transformer blocks per spatial transformer.
    #[serde(default = "UNet2DConditionConfig::d_tlpb")]
    pub transformer_layers_per_block: PerBlock,
    /// Transformer blocks per motion module.
    #[serde(default = "UNet2DConditionConfig::d_tlpb")]
    pub temporal_transformer_layers_per_block: PerBlock,
    /// Transformer blocks of the mid block's spatial transformer (null: the last block's).
    #[serde(default)]
    pub transformer_layers_per_mid_block: Option<PerBlock>,
    /// Transformer blocks per mid-block motion module.
    #[serde(default = "UNet2DConditionConfig::d_tlpb")]
    pub temporal_transformer_layers_per_mid_block: PerBlock,
    /// Linear `proj_in` / `proj_out` in the spatial transformers.
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Heads of the spatial attention per block.
    #[serde(default = "MotionAdapterConfig::d_heads")]
    pub num_attention_heads: PerBlock,
    /// Rows of the sinusoidal position table.
    #[serde(default = "MotionAdapterConfig::d_seq")]
    pub motion_max_seq_length: usize,
    /// Heads of the temporal attention per block.
    #[serde(default = "MotionAdapterConfig::d_heads")]
    pub motion_num_attention_heads: PerBlock,
    /// Must be null.
    #[serde(default)]
    pub reverse_motion_num_attention_heads: Option<serde_json::Value>,
    /// Must be null.
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    /// Must be null.
    #[serde(default)]
    pub reverse_temporal_transformer_layers_per_block: Option<serde_json::Value>,
    /// Whether the mid block has motion modules.
    #[serde(default = "d_true")]
    pub use_motion_mid_block: bool,
    /// Layers of the mid block.
    #[serde(default = "d_one")]
    pub mid_block_layers: usize,
    /// Must be null.
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    /// Must be null.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// Must be null.
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
}

impl UNetMotionConfig {
    /// Every spatial transformer of the UNet this config builds, in forward order: where hooks
    /// (adapters) run.
    ///
    /// # Errors
    /// An invalid or unsupported config field, named.
    pub fn attention_sites(&self) -> Result<Vec<AttentionSite>> {
        crate::sd::MotionUNetSpec::from_motion_config(self)?.attention_sites()
    }
}
