//! diffusers' `UNetMotionModel` (AnimateDiff): a Stable Diffusion `UNet2DConditionModel` whose
//! layers run per frame, with a motion module (temporal transformer with sinusoidal positions)
//! after every ResNet / spatial-transformer pair; plus the **inflation** of a 2-D SD checkpoint
//! alone into such a video UNet.
//!
//! Reference: `diffusers/models/unets/unet_motion_model.py` (`UNetMotionModel`,
//! `MotionAdapter`, `from_unet2d`, `AnimateDiffTransformer3D`) and `unet_2d_condition.py`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use vidgen_video_core::{
    check_finite, AttentionSite, Error, LoadReport, ModelDir, Result, VideoShape,
};

use super::common::{self, check_sample, frame_context, hook, on_video, timesteps};
use super::config::{check_sizes, MotionAdapterConfig, UNet2DConditionConfig, UNetMotionConfig};
use super::temporal::{TransformerTemporalConfig, TransformerTemporalModel};
use crate::limits::{all_at_most, at_most, MAX_LAYERS, MAX_POSITIONS, MAX_WIDTH};
use vidgen_video_core::hooks::{HookPoint, NoHooks, UNetHooks};
use vidgen_video_nn::{
    Activation, Conv2d, Downsample2D, GroupNorm, ResnetBlock2D, ResnetBlock2DConfig,
    TimestepEmbedding, Timesteps, Transformer2DConfig, Transformer2DModel, Upsample2D,
};

/// The motion part of a [`MotionUNetSpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct MotionSpec {
    /// Temporal attention heads per down block (head size = channels / heads).
    pub heads: Vec<usize>,
    /// Transformer blocks per motion module, per down block.
    pub transformer_layers: Vec<usize>,
    /// Transformer blocks per motion module, per up block (up order).
    pub up_transformer_layers: Vec<usize>,
    /// Temporal heads per up block (up order).
    pub up_heads: Vec<usize>,
    /// Transformer blocks of each mid-block motion module; `None`: no mid-block modules.
    pub mid_transformer_layers: Option<Vec<usize>>,
    /// Rows of the sinusoidal position table: the most frames a forward pass may have.
    pub max_seq_length: usize,
}

/// The resolved layout of a motion UNet (or of a plain per-frame SD UNet when `motion` is
/// `None`), from either a `UNetMotionModel` config or a `UNet2DConditionModel` config plus a
/// `MotionAdapter` config (as `UNetMotionModel.from_unet2d` merges them).
#[derive(Debug, Clone, PartialEq)]
pub struct MotionUNetSpec {
    /// Input channels of the model (may exceed `ckpt_in_channels`: widened `conv_in`).
    pub in_channels: usize,
    /// Input channels of the checkpoint's `conv_in`.
    pub ckpt_in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Channels per down block.
    pub block_out_channels: Vec<usize>,
    /// Whether each down block has spatial transformers.
    pub down_cross: Vec<bool>,
    /// Whether each up block has spatial transformers (up order).
    pub up_cross: Vec<bool>,
    /// ResNets per down block (up blocks have one more).
    pub layers_per_block: Vec<usize>,
    /// Spatial transformer blocks per down block.
    pub transformer_layers: Vec<usize>,
    /// Spatial transformer blocks per up block (up order).
    pub up_transformer_layers: Vec<usize>,
    /// Spatial transformer blocks of the mid block.
    pub mid_transformer_layers: usize,
    /// Spatial attention heads per down block.
    pub heads: Vec<usize>,
    /// Padding of the downsampling convolutions.
    pub downsample_padding: usize,
    /// Output scale of the mid block's ResNets.
    pub mid_block_scale_factor: f64,
    /// GroupNorm groups (also of the motion modules, as `UNetMotionModel` builds them).
    pub norm_num_groups: usize,
    /// GroupNorm epsilon of the ResNets and the output norm.
    pub norm_eps: f64,
    /// Context width.
    pub cross_attention_dim: usize,
    /// Linear `proj_in` / `proj_out` in the spatial transformers.
    pub use_linear_projection: bool,
    /// `[cos, sin]` time embedding.
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the time embedding.
    pub freq_shift: f64,
    /// The motion modules; `None` for a plain (per-frame) 2-D UNet.
    pub motion: Option<MotionSpec>,
}

fn rev<T: Clone>(v: &[T]) -> Vec<T> {
    v.iter().rev().cloned().collect()
}

fn no_list(field: &str, v: &Option<serde_json::Value>) -> Result<()> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(x) => Err(Error::Unsupported {
            field: field.into(),
            value: x.to_string(),
            supported: "null (symmetric UNets)".into(),
        }),
    }
}

impl MotionUNetSpec {
    /// Every spatial transformer of the UNet this spec builds, in forward order (down, mid,
    /// up): where hooks (adapters) run, with the channels of the hidden states there.
    ///
    /// # Errors
    /// Never for a spec built by this crate's constructors; a list shorter than the channel
    /// list otherwise.
    pub fn attention_sites(&self) -> Result<Vec<AttentionSite>> {
        let n = self.block_out_channels.len();
        if self.layers_per_block.len() < n || self.transformer_layers.len() < n {
            return Err(Error::config(
                "layers_per_block",
                "shorter than block_out_channels",
            ));
        }
        Ok(crate::sites::sites(&crate::sites::SiteLayout {
            channels: &self.block_out_channels,
            down_attn: &self.down_cross,
            up_attn: &self.up_cross,
            layers: &self.layers_per_block,
            transformer_layers: &self.transformer_layers,
            mid_layers: Some(self.mid_transformer_layers),
        }))
    }

    /// The plain SD UNet of a `UNet2DConditionModel` config (no motion modules).
    ///
    /// # Errors
    /// An invalid or unsupported config field, named.
    pub fn from_unet2d(cfg: &UNet2DConditionConfig) -> Result<Self> {
        cfg.validate()?;
        let n = cfg.block_out_channels.len();
        let tl = cfg
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?;
        Ok(Self {
            in_channels: cfg.in_channels,
            ckpt_in_channels: cfg.in_channels,
            out_channels: cfg.out_channels,
            block_out_channels: cfg.block_out_channels.clone(),
            down_cross: cfg
                .down_block_types
                .iter()
                .map(|t| t.starts_with("CrossAttn"))
                .collect(),
            up_cross: cfg
                .up_block_types
                .iter()
                .map(|t| t.starts_with("CrossAttn"))
                .collect(),
            layers_per_block: cfg.layers_per_block.expand(n, "layers_per_block")?,
            up_transformer_layers: rev(&tl),
            mid_transformer_layers: tl[n - 1],
            transformer_layers: tl,
            heads: cfg.heads()?,
            downsample_padding: cfg.downsample_padding,
            mid_block_scale_factor: cfg.mid_block_scale_factor,
            norm_num_groups: cfg.norm_num_groups.unwrap_or(32),
            norm_eps: cfg.norm_eps,
            cross_attention_dim: cfg.cross_attention_dim,
            use_linear_projection: cfg.use_linear_projection,
            flip_sin_to_cos: cfg.flip_sin_to_cos,
            freq_shift: cfg.freq_shift,
            motion: None,
        })
    }

    /// A 2-D UNet config plus a motion adapter config, merged as `UNetMotionModel.from_unet2d`.
    ///
    /// # Errors
    /// Block counts or layers per block that differ between the two, unsupported values.
    pub fn from_parts(unet: &UNet2DConditionConfig, adapter: &MotionAdapterConfig) -> Result<Self> {
        let mut s = Self::from_unet2d(unet)?;
        let n = s.block_out_channels.len();
        if adapter.block_out_channels != s.block_out_channels {
            return Err(Error::config(
                "block_out_channels",
                format!(
                    "motion adapter has {:?}, the UNet {:?} (incompatible motion adapter)",
                    adapter.block_out_channels, s.block_out_channels
                ),
            ));
        }
        let layers = adapter
            .motion_layers_per_block
            .expand(n, "motion_layers_per_block")?;
        if layers != s.layers_per_block {
            return Err(Error::config(
                "motion_layers_per_block",
                format!(
                    "{layers:?} differs from the UNet's layers_per_block {:?}",
                    s.layers_per_block
                ),
            ));
        }
        if let Some(c) = adapter.conv_in_channels {
            return Err(Error::Unsupported {
                field: "conv_in_channels".into(),
                value: c.to_string(),
                supported: "null".into(),
            });
        }
        if adapter.use_motion_mid_block && adapter.motion_mid_block_layers_per_block != 1 {
            return Err(Error::Unsupported {
                field: "motion_mid_block_layers_per_block".into(),
                value: adapter.motion_mid_block_layers_per_block.to_string(),
                supported: "1 (UNetMotionModel.from_unet2d builds one mid-block layer)".into(),
            });
        }
        let heads = adapter
            .motion_num_attention_heads
            .expand(n, "motion_num_attention_heads")?;
        let tl = adapter
            .motion_transformer_layers_per_block
            .expand(n, "motion_transformer_layers_per_block")?;
        let mid = if adapter.use_motion_mid_block {
            Some(
                adapter
                    .motion_transformer_layers_per_mid_block
                    .expand(1, "motion_transformer_layers_per_mid_block")?,
            )
        } else {
            None
        };
        s.motion = Some(MotionSpec {
            up_heads: rev(&heads),
            heads,
            up_transformer_layers: rev(&tl),
            transformer_layers: tl,
            mid_transformer_layers: mid,
            max_seq_length: adapter.motion_max_seq_length,
        });
        s.validate_motion()?;
        Ok(s)
    }

    /// The layout of a saved `UNetMotionModel` directory.
    ///
    /// # Errors
    /// An invalid or unsupported config field, named.
    pub fn from_motion_config(cfg: &UNetMotionConfig) -> Result<Self> {
        let n = cfg.block_out_channels.len();
        if n == 0 || cfg.down_block_types.len() != n || cfg.up_block_types.len() != n {
            return Err(Error::config(
                "down_block_types/up_block_types/block_out_channels",
                "must be non-empty lists of the same length",
            ));
        }
        for (i, t) in cfg.down_block_types.iter().enumerate() {
            if !matches!(t.as_str(), "CrossAttnDownBlockMotion" | "DownBlockMotion") {
                return Err(Error::Unsupported {
                    field: format!("down_block_types[{i}]"),
                    value: t.clone(),
                    supported: "CrossAttnDownBlockMotion, DownBlockMotion".into(),
                });
            }
        }
        for (i, t) in cfg.up_block_types.iter().enumerate() {
            if !matches!(t.as_str(), "CrossAttnUpBlockMotion" | "UpBlockMotion") {
                return Err(Error::Unsupported {
                    field: format!("up_block_types[{i}]"),
                    value: t.clone(),
                    supported: "CrossAttnUpBlockMotion, UpBlockMotion".into(),
                });
            }
        }
        no_list(
            "reverse_motion_num_attention_heads",
            &cfg.reverse_motion_num_attention_heads,
        )?;
        no_list(
            "reverse_transformer_layers_per_block",
            &cfg.reverse_transformer_layers_per_block,
        )?;
        no_list(
            "reverse_temporal_transformer_layers_per_block",
            &cfg.reverse_temporal_transformer_layers_per_block,
        )?;
        for (field, ok) in [
            ("time_cond_proj_dim", cfg.time_cond_proj_dim.is_none()),
            ("addition_embed_type", cfg.addition_embed_type.is_none()),
            ("encoder_hid_dim_type", cfg.encoder_hid_dim_type.is_none()),
            ("mid_block_layers", cfg.mid_block_layers == 1),
            ("act_fn", matches!(cfg.act_fn.as_str(), "silu" | "swish")),
        ] {
            if !ok {
                return Err(Error::Unsupported {
                    field: field.into(),
                    value: "a non-default value".into(),
                    supported: "the AnimateDiff default (null / 1 / silu)".into(),
                });
            }
        }
        let tl = cfg
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?;
        let mid_tl = match &cfg.transformer_layers_per_mid_block {
            Some(p) => p.expand(1, "transformer_layers_per_mid_block")?[0],
            None => tl[n - 1],
        };
        let heads = cfg.num_attention_heads.expand(n, "num_attention_heads")?;
        let mheads = cfg
            .motion_num_attention_heads
            .expand(n, "motion_num_attention_heads")?;
        let mtl = cfg
            .temporal_transformer_layers_per_block
            .expand(n, "temporal_transformer_layers_per_block")?;
        let mid = if cfg.use_motion_mid_block {
            Some(
                cfg.temporal_transformer_layers_per_mid_block
                    .expand(1, "temporal_transformer_layers_per_mid_block")?,
            )
        } else {
            None
        };
        let s = Self {
            in_channels: cfg.in_channels,
            ckpt_in_channels: cfg.in_channels,
            out_channels: cfg.out_channels,
            block_out_channels: cfg.block_out_channels.clone(),
            down_cross: cfg
                .down_block_types
                .iter()
                .map(|t| t.starts_with("CrossAttn"))
                .collect(),
            up_cross: cfg
                .up_block_types
                .iter()
                .map(|t| t.starts_with("CrossAttn"))
                .collect(),
            layers_per_block: cfg.layers_per_block.expand(n, "layers_per_block")?,
            up_transformer_layers: rev(&tl),
            transformer_layers: tl,
            mid_transformer_layers: mid_tl,
            heads,
            downsample_padding: cfg.downsample_padding,
            mid_block_scale_factor: cfg.mid_block_scale_factor,
            norm_num_groups: cfg.norm_num_groups.unwrap_or(32),
            norm_eps: cfg.norm_eps,
            cross_attention_dim: cfg.cross_attention_dim,
            use_linear_projection: cfg.use_linear_projection,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            motion: Some(MotionSpec {
                up_heads: rev(&mheads),
                heads: mheads,
                up_transformer_layers: rev(&mtl),
                transformer_layers: mtl,
                mid_transformer_layers: mid,
                max_seq_length: cfg.motion_max_seq_length,
            }),
        };
        s.validate_motion()?;
        Ok(s)
    }

    fn validate_motion(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::config("block_out_channels", "must not be empty"));
        }
        for (field, len) in [
            ("down_block_types", self.down_cross.len()),
            ("up_block_types", self.up_cross.len()),
            ("layers_per_block", self.layers_per_block.len()),
            (
                "transformer_layers_per_block",
                self.transformer_layers.len(),
            ),
            (
                "transformer_layers_per_block",
                self.up_transformer_layers.len(),
            ),
            ("num_attention_heads", self.heads.len()),
        ] {
            if len != n {
                return Err(Error::config(
                    field,
                    format!("has {len} entries, block_out_channels has {n}"),
                ));
            }
        }
        if self.block_out_channels.contains(&0) {
            return Err(Error::config("block_out_channels", "must be >= 1"));
        }
        check_sizes(
            &self.block_out_channels,
            &self.layers_per_block,
            self.cross_attention_dim,
            (self.in_channels, self.out_channels),
        )?;
        at_most("in_channels (checkpoint)", self.ckpt_in_channels, MAX_WIDTH)?;
        all_at_most(
            "transformer_layers_per_block",
            &self.transformer_layers,
            MAX_LAYERS,
        )?;
        all_at_most(
            "transformer_layers_per_block",
            &self.up_transformer_layers,
            MAX_LAYERS,
        )?;
        at_most(
            "transformer_layers_per_mid_block",
            self.mid_transformer_layers,
            MAX_LAYERS,
        )?;
        let g = self.norm_num_groups;
        if g == 0 || self.block_out_channels.iter().any(|c| c % g != 0) {
            return Err(Error::config(
                "norm_num_groups",
                format!("{g} groups must divide every block's channels"),
            ));
        }
        for (i, (&c, &h)) in self.block_out_channels.iter().zip(&self.heads).enumerate() {
            if h == 0 || c % h != 0 {
                return Err(Error::config(
                    format!("num_attention_heads[{i}]"),
                    format!("{h} heads do not divide {c} channels"),
                ));
            }
        }
        if let Some(m) = &self.motion {
            if m.max_seq_length == 0 {
                return Err(Error::config("motion_max_seq_length", "must be >= 1"));
            }
            at_most("motion_max_seq_length", m.max_seq_length, MAX_POSITIONS)?;
            for (field, len) in [
                ("motion_num_attention_heads", m.heads.len()),
                ("motion_num_attention_heads", m.up_heads.len()),
                (
                    "motion_transformer_layers_per_block",
                    m.transformer_layers.len(),
                ),
                (
                    "motion_transformer_layers_per_block",
                    m.up_transformer_layers.len(),
                ),
            ] {
                if len != n {
                    return Err(Error::config(
                        field,
                        format!("has {len} entries, block_out_channels has {n}"),
                    ));
                }
            }
            all_at_most(
                "motion_transformer_layers_per_block",
                &m.transformer_layers,
                MAX_LAYERS,
            )?;
            all_at_most(
                "motion_transformer_layers_per_block",
                &m.up_transformer_layers,
                MAX_LAYERS,
            )?;
            if let Some(mid) = &m.mid_transformer_layers {
                all_at_most("motion_transformer_layers_per_mid_block", mid, MAX_LAYERS)?;
            }
            for (i, (&c, &h)) in self.block_out_channels.iter().zip(&m.heads).enumerate() {
                if h == 0 || c % h != 0 {
                    return Err(Error::config(
                        format!("motion_num_attention_heads[{i}]"),
                        format!("{h} heads do not divide {c} channels"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// How to inflate a 2-D SD UNet checkpoint into a video UNet
/// ([`UNetMotionModel::inflate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflateConfig {
    /// Heads of the new temporal attention layers (AnimateDiff uses 8).
    pub motion_heads: usize,
    /// The most frames the video UNet accepts (rows of the sinusoidal table; AnimateDiff: 32).
    pub max_frames: usize,
    /// Input channels of the video UNet (`None`: the checkpoint's); larger values add
    /// zero-initialised input channels for channel-concat conditioning.
    pub in_channels: Option<usize>,
}

impl Default for InflateConfig {
    fn default() -> Self {
        Self {
            motion_heads: 8,
            max_frames: 32,
            in_channels: None,
        }
    }
}

#[derive(Debug, Clone)]
struct MLayer {
    resnet: ResnetBlock2D,
    attn: Option<Transformer2DModel>,
    motion: Option<TransformerTemporalModel>,
    name: String,
}

#[derive(Debug, Clone)]
struct MBlock {
    layers: Vec<MLayer>,
    down: Option<Downsample2D>,
    up: Option<Upsample2D>,
}

#[derive(Debug, Clone)]
struct MMid {
    resnet0: ResnetBlock2D,
    layers: Vec<MLayer>,
}

/// An SD UNet run per frame with AnimateDiff motion modules (diffusers `UNetMotionModel`);
/// without motion modules it is exactly SD's `UNet2DConditionModel` applied to every frame.
///
/// Ways to build it:
/// * [`UNetMotionModel::from_pretrained`]: a saved `UNetMotionModel` directory;
/// * [`UNetMotionModel::load_from_parts`]: an SD `unet/` directory plus a `MotionAdapter`
///   directory, as diffusers saves them (`UNetMotionModel.from_unet2d(unet, adapter)`);
/// * [`UNetMotionModel::load_unet2d`]: the SD UNet alone, per frame (no temporal layers);
/// * [`UNetMotionModel::inflate`]: the SD UNet alone plus **new** motion modules whose output
///   projections are zero, so the video UNet starts out equal to the 2-D UNet per frame;
///   the new parameters live in a returned [`VarMap`] for training.
#[derive(Debug, Clone)]
pub struct UNetMotionModel {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<MBlock>,
    mid_block: MMid,
    up_blocks: Vec<MBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    spec: MotionUNetSpec,
}

struct Builder<'a> {
    spec: &'a MotionUNetSpec,
    temb: usize,
}

impl Builder<'_> {
    fn resnet(&self, cin: usize, cout: usize, scale: f64, vb: VarBuilder) -> Result<ResnetBlock2D> {
        let mut c = ResnetBlock2DConfig::new(cin, cout)
            .temb(Some(self.temb))
            .groups(self.spec.norm_num_groups)
            .eps(self.spec.norm_eps);
        c.act = Activation::Silu;
        c.output_scale_factor = scale;
        ResnetBlock2D::new(&c, vb)
    }

    fn spatial(
        &self,
        c: usize,
        heads: usize,
        layers: usize,
        vb: VarBuilder,
    ) -> Result<Transformer2DModel> {
        let mut t = Transformer2DConfig::new(heads, c / heads.max(1), c);
        t.num_layers = layers;
        t.cross_attention_dim = Some(self.spec.cross_attention_dim);
        t.norm_num_groups = self.spec.norm_num_groups;
        t.use_linear_projection = self.spec.use_linear_projection;
        Transformer2DModel::new(&t, vb)
    }

    fn motion(
        &self,
        c: usize,
        heads: usize,
        layers: usize,
        max_seq: usize,
        vb: VarBuilder,
    ) -> Result<TransformerTemporalModel> {
        TransformerTemporalModel::new(
            &TransformerTemporalConfig {
                num_attention_heads: heads,
                attention_head_dim: c / heads.max(1),
                in_channels: c,
                num_layers: layers,
                norm_num_groups: self.spec.norm_num_groups,
                max_seq_length: Some(max_seq),
                cross_attention_dim: None,
            },
            vb,
        )
    }
}

impl UNetMotionModel {
    /// Builds the model: the 2-D layers from `vb`, the motion modules (when `spec.motion` is
    /// set) from `vb_motion` under the same keys (`down_blocks.N.motion_modules.M.*`,
    /// `mid_block.motion_modules.0.*`, `up_blocks.N.motion_modules.M.*`).
    ///
    /// # Errors
    /// An invalid spec; missing / mis-shaped tensors.
    pub fn new(spec: &MotionUNetSpec, vb: VarBuilder, vb_motion: VarBuilder) -> Result<Self> {
        spec.validate_motion()?;
        let ch = &spec.block_out_channels;
        let n = ch.len();
        let c0 = ch[0];
        let temb = 4 * c0;
        let bld = Builder { spec, temb };
        let motion = spec.motion.as_ref();
        let conv_in = common::conv_in(
            spec.in_channels,
            spec.ckpt_in_channels,
            c0,
            vb.pp("conv_in"),
        )?;
        let time_proj = Timesteps::new(c0, spec.flip_sin_to_cos, spec.freq_shift);
        let time_embedding =
            TimestepEmbedding::new(c0, temb, None, Activation::Silu, vb.pp("time_embedding"))?;

        let mut down_blocks = Vec::with_capacity(n);
        let mut out_c = c0;
        for (i, &c) in ch.iter().enumerate() {
            let in_c = out_c;
            out_c = c;
            let p = format!("down_blocks.{i}");
            let (vbb, vbm) = (vb.pp(&p), vb_motion.pp(&p));
            let mut layers = Vec::new();
            for j in 0..spec.layers_per_block[i] {
                let cin = if j == 0 { in_c } else { out_c };
                layers.push(MLayer {
                    resnet: bld.resnet(cin, out_c, 1.0, vbb.pp(format!("resnets.{j}")))?,
                    attn: if spec.down_cross[i] {
                        Some(bld.spatial(
                            out_c,
                            spec.heads[i],
                            spec.transformer_layers[i],
                            vbb.pp(format!("attentions.{j}")),
                        )?)
                    } else {
                        None
                    },
                    motion: match motion {
                        Some(m) => Some(bld.motion(
                            out_c,
                            m.heads[i],
                            m.transformer_layers[i],
                            m.max_seq_length,
                            vbm.pp(format!("motion_modules.{j}")),
                        )?),
                        None => None,
                    },
                    name: format!("{p}.attentions.{j}"),
                });
            }
            let down = if i + 1 < n {
                Some(Downsample2D::new(
                    out_c,
                    true,
                    out_c,
                    spec.downsample_padding,
                    vbb.pp("downsamplers.0"),
                )?)
            } else {
                None
            };
            down_blocks.push(MBlock {
                layers,
                down,
                up: None,
            });
        }

        let cl = ch[n - 1];
        let scale = spec.mid_block_scale_factor;
        let (vbb, vbm) = (vb.pp("mid_block"), vb_motion.pp("mid_block"));
        let mid_motion =
            match motion.and_then(|m| m.mid_transformer_layers.as_ref().map(|t| (m, t))) {
                Some((m, tl)) => Some(bld.motion(
                    cl,
                    m.heads[n - 1],
                    tl.first().copied().unwrap_or(1),
                    m.max_seq_length,
                    vbm.pp("motion_modules.0"),
                )?),
                None => None,
            };
        let mid_block = MMid {
            resnet0: bld.resnet(cl, cl, scale, vbb.pp("resnets.0"))?,
            layers: vec![MLayer {
                attn: Some(bld.spatial(
                    cl,
                    spec.heads[n - 1],
                    spec.mid_transformer_layers,
                    vbb.pp("attentions.0"),
                )?),
                motion: mid_motion,
                resnet: bld.resnet(cl, cl, scale, vbb.pp("resnets.1"))?,
                name: "mid_block.attentions.0".into(),
            }],
        };

        let rch = rev(ch);
        let rheads = rev(&spec.heads);
        let rlayers = rev(&spec.layers_per_block);
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_c = rch[0];
        for i in 0..n {
            let prev = out_c;
            out_c = rch[i];
            let in_c = rch[(i + 1).min(n - 1)];
            let p = format!("up_blocks.{i}");
            let (vbb, vbm) = (vb.pp(&p), vb_motion.pp(&p));
            let nl = rlayers[i] + 1;
            let mut layers = Vec::with_capacity(nl);
            for j in 0..nl {
                let skip = if j + 1 == nl { in_c } else { out_c };
                let rin = if j == 0 { prev } else { out_c };
                layers.push(MLayer {
                    resnet: bld.resnet(rin + skip, out_c, 1.0, vbb.pp(format!("resnets.{j}")))?,
                    attn: if spec.up_cross[i] {
                        Some(bld.spatial(
                            out_c,
                            rheads[i],
                            spec.up_transformer_layers[i],
                            vbb.pp(format!("attentions.{j}")),
                        )?)
                    } else {
                        None
                    },
                    motion: match motion {
                        Some(m) => Some(bld.motion(
                            out_c,
                            m.up_heads[i],
                            m.up_transformer_layers[i],
                            m.max_seq_length,
                            vbm.pp(format!("motion_modules.{j}")),
                        )?),
                        None => None,
                    },
                    name: format!("{p}.attentions.{j}"),
                });
            }
            let up = if i + 1 < n {
                Some(Upsample2D::new(out_c, true, out_c, vbb.pp("upsamplers.0"))?)
            } else {
                None
            };
            up_blocks.push(MBlock {
                layers,
                down: None,
                up,
            });
        }
        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(
                spec.norm_num_groups,
                c0,
                spec.norm_eps,
                vb.pp("conv_norm_out"),
            )?,
            conv_out: Conv2d::new(c0, spec.out_channels, 3, 1, 1, true, vb.pp("conv_out"))?,
            spec: spec.clone(),
        })
    }

    /// Loads a saved diffusers `UNetMotionModel` directory strictly.
    ///
    /// # Errors
    /// Unreadable files, a bad config field, missing or mis-shaped tensors (named).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let md = ModelDir::open(dir)?;
        let cfg: UNetMotionConfig = md.config()?;
        let spec = MotionUNetSpec::from_motion_config(&cfg)?;
        md.load(dtype, device, |vb| Self::new(&spec, vb.clone(), vb))
    }

    /// Assembles the motion UNet from an SD `UNet2DConditionModel` directory and a
    /// `MotionAdapter` directory (diffusers' `from_unet2d`), both loaded strictly. Returns the
    /// load reports of the UNet and of the adapter.
    ///
    /// # Errors
    /// Incompatible configs, unreadable files, missing or mis-shaped tensors (named).
    pub fn load_from_parts(
        unet_dir: impl AsRef<Path>,
        adapter_dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport, LoadReport)> {
        let mu = ModelDir::open(unet_dir)?;
        let ma = ModelDir::open(adapter_dir)?;
        let spec = MotionUNetSpec::from_parts(&mu.config()?, &ma.config()?)?;
        let (vbu, tu) = mu.var_builder(dtype, device);
        let (vba, ta) = ma.var_builder(dtype, device);
        let res = Self::new(&spec, vbu, vba);
        let (ru, ra) = (tu.report(), ta.report());
        for r in [&ru, &ra] {
            if !r.is_clean() {
                return Err(r.clone().into_error());
            }
        }
        Ok((res?, ru, ra))
    }

    /// Loads an SD `UNet2DConditionModel` directory as a per-frame video UNet (no temporal
    /// layers): each frame is denoised independently, exactly as the 2-D UNet.
    ///
    /// # Errors
    /// As [`UNetMotionModel::from_pretrained`].
    pub fn load_unet2d(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let md = ModelDir::open(dir)?;
        let spec = MotionUNetSpec::from_unet2d(&md.config()?)?;
        md.load(dtype, device, |vb| Self::new(&spec, vb.clone(), vb))
    }

    /// Inflates an SD `UNet2DConditionModel` checkpoint alone into a video UNet: the 2-D layers
    /// come from the checkpoint (strictly loaded), and a new AnimateDiff-layout motion module
    /// follows every ResNet / transformer pair (and the mid block), with random weights except
    /// `proj_out`, which is **zero**, so every motion module starts as the identity and the
    /// video UNet equals the 2-D UNet applied per frame. With `cfg.in_channels` above the
    /// checkpoint's, `conv_in` gets zero-initialised extra input channels too.
    ///
    /// Returns the model, the [`VarMap`] holding the new motion-module parameters (train them
    /// through it; keys as a diffusers `MotionAdapter`), and the load report of the checkpoint.
    ///
    /// # Errors
    /// As [`UNetMotionModel::load_unet2d`]; `in_channels` below the checkpoint's.
    pub fn inflate(
        dir: impl AsRef<Path>,
        cfg: &InflateConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap, LoadReport)> {
        let md = ModelDir::open(dir)?;
        let ucfg: UNet2DConditionConfig = md.config()?;
        let mut spec = MotionUNetSpec::from_unet2d(&ucfg)?;
        let adapter = MotionAdapterConfig::for_unet(&ucfg, cfg.motion_heads, cfg.max_frames)?;
        let motion = MotionUNetSpec::from_parts(&ucfg, &adapter)?.motion;
        spec.motion = motion;
        if let Some(c) = cfg.in_channels {
            if c < spec.ckpt_in_channels {
                return Err(Error::invalid(
                    "in_channels",
                    format!(
                        "{c} is below the checkpoint's {}; only widening is supported",
                        spec.ckpt_in_channels
                    ),
                ));
            }
            spec.in_channels = c;
        }
        let varmap = VarMap::new();
        let vbm = VarBuilder::from_varmap(&varmap, dtype, device);
        let (model, report) = md.load(dtype, device, |vb| Self::new(&spec, vb, vbm))?;
        zero_proj_out(&varmap)?;
        Ok((model, varmap, report))
    }

    /// As [`UNetMotionModel::load_unet2d`] / `load`, but with `in_channels` widened for
    /// channel-concat conditioning; the extra channels of `conv_in` start at zero. Pass an
    /// adapter directory to include motion modules.
    ///
    /// # Errors
    /// `in_channels` below the checkpoint's; as [`UNetMotionModel::load_from_parts`].
    pub fn load_widened(
        unet_dir: impl AsRef<Path>,
        adapter_dir: Option<&Path>,
        in_channels: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let mu = ModelDir::open(unet_dir)?;
        let ucfg: UNet2DConditionConfig = mu.config()?;
        let (mut spec, ma) = match adapter_dir {
            Some(a) => {
                let ma = ModelDir::open(a)?;
                (MotionUNetSpec::from_parts(&ucfg, &ma.config()?)?, Some(ma))
            }
            None => (MotionUNetSpec::from_unet2d(&ucfg)?, None),
        };
        if in_channels < spec.ckpt_in_channels {
            return Err(Error::invalid(
                "in_channels",
                format!(
                    "{in_channels} is below the checkpoint's {}; only widening is supported",
                    spec.ckpt_in_channels
                ),
            ));
        }
        spec.in_channels = in_channels;
        let (vbu, tu) = mu.var_builder(dtype, device);
        let (vbm, ta) = match &ma {
            Some(ma) => {
                let (v, t) = ma.var_builder(dtype, device);
                (v, Some(t))
            }
            None => (vbu.clone(), None),
        };
        let res = Self::new(&spec, vbu, vbm);
        let ru = tu.report();
        if !ru.is_clean() {
            return Err(ru.into_error());
        }
        if let Some(ta) = ta {
            let ra = ta.report();
            if !ra.is_clean() {
                return Err(ra.into_error());
            }
        }
        Ok((res?, ru))
    }

    /// The resolved layout.
    pub fn spec(&self) -> &MotionUNetSpec {
        &self.spec
    }

    /// The noise prediction.
    ///
    /// # Shapes
    /// * `sample`: `[B, in_channels, T, H, W]`, `T ≤ motion_max_seq_length` with motion modules
    /// * `timestep`: scalar, `[1]` or `[B]` (any dtype)
    /// * `encoder_hidden_states`: per frame `[B·T, S, D]` (as diffusers' `UNetMotionModel`, which
    ///   AnimateDiff's pipeline feeds prompt embeddings repeated per frame) or per video
    ///   `[B, S, D]` (repeated over frames here)
    /// * returns `[B, out_channels, T, H, W]`
    ///
    /// # Errors
    /// Wrong ranks, channel counts, context width / batch, or more frames than the motion
    /// modules' positional capacity: typed errors naming the argument.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with_hooks(sample, timestep, encoder_hidden_states, &NoHooks)
    }

    /// The 2-D UNet's call on images (`UNet2DConditionModel.forward(...).sample`), valid with or
    /// without motion modules (one frame per image).
    ///
    /// # Shapes
    /// `sample [B, C, H, W]`, `timestep` scalar / `[1]` / `[B]`, context `[B, S, D]` →
    /// `[B, out_channels, H, W]`.
    ///
    /// # Errors
    /// As [`UNetMotionModel::forward`].
    pub fn forward_images(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        if sample.rank() != 4 {
            return Err(Error::invalid(
                "sample",
                format!(
                    "expected [B, C, H, W] images, got shape {:?}",
                    sample.dims()
                ),
            ));
        }
        let v = sample.unsqueeze(2)?; // [B, C, 1, H, W]
        Ok(self
            .forward(&v, timestep, encoder_hidden_states)?
            .squeeze(2)?)
    }

    /// [`UNetMotionModel::forward`] with `hooks` called after every spatial transformer
    /// ([`HookPoint::AfterSpatialAttention`]) and after its motion module
    /// ([`HookPoint::AfterTemporalLayers`]), at sites `down_blocks.i.attentions.j`,
    /// `mid_block.attentions.0`, `up_blocks.i.attentions.j` (blocks without spatial
    /// transformers report only the temporal point). [`NoHooks`] costs nothing.
    ///
    /// # Shapes
    /// As [`UNetMotionModel::forward`]; hooks see `[B, C, T, H, W]`.
    pub fn forward_with_hooks(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        hooks: &dyn UNetHooks,
    ) -> Result<Tensor> {
        // On a rayon worker: hundreds of parallel ops, none handed off from an outside thread.
        vidgen_video_core::in_pool(|| {
            self.run(sample, timestep, encoder_hidden_states, hooks, None)
        })
    }

    /// [`UNetMotionModel::forward`] that also returns the outputs of the top-level modules,
    /// named as the reference's forward hooks (`time_proj`, `time_embedding` (per video, before
    /// the repeat over frames), `conv_in`, `down_blocks.i`, `mid_block`, `up_blocks.i`,
    /// `conv_norm_out` (before the SiLU), `conv_out`), for bisecting a mismatch. The output is
    /// bit-identical to [`UNetMotionModel::forward`].
    ///
    /// # Shapes
    /// As [`UNetMotionModel::forward`]; block outputs are frame batches `[B·T, C, h, w]`.
    ///
    /// # Errors
    /// As [`UNetMotionModel::forward`].
    pub fn forward_traced(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let mut trace = Vec::new();
        let out = vidgen_video_core::in_pool(|| {
            self.run(
                sample,
                timestep,
                encoder_hidden_states,
                &NoHooks,
                Some(&mut trace),
            )
        })?;
        Ok((out, trace))
    }

    fn run(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        hooks: &dyn UNetHooks,
        mut trace: Option<&mut Vec<(String, Tensor)>>,
    ) -> Result<Tensor> {
        let tracing = trace.is_some();
        let mut rec = |name: String, t: &Tensor| {
            if let Some(tr) = trace.as_deref_mut() {
                tr.push((name, t.clone()));
            }
        };
        let s = check_sample(sample, self.spec.in_channels)?;
        let t = s.t;
        if let Some(m) = &self.spec.motion {
            if t > m.max_seq_length {
                return Err(Error::invalid(
                    "num_frames",
                    format!(
                        "{t} frames exceed the motion modules' positional capacity of {} \
                         (motion_max_seq_length)",
                        m.max_seq_length
                    ),
                ));
            }
        }
        // 1. time embedding [B, 4·C0] -> per frame [B·T, 4·C0]
        let ts = timesteps(timestep, s.b)?;
        let t_emb = self.time_proj.forward(&ts)?;
        rec("time_proj".into(), &t_emb);
        let emb = self
            .time_embedding
            .forward(&t_emb.to_dtype(sample.dtype())?)?;
        rec("time_embedding".into(), &emb);
        let emb = common::repeat_interleave(&emb, t)?;
        // 2. context per frame [B·T, S, D]
        let ctx = frame_context(encoder_hidden_states, s, self.spec.cross_attention_dim)?
            .to_dtype(sample.dtype())?;
        // 3. (B, C, T, H, W) -> frames (B·T, C, H, W); conv_in
        let (frames, _) = VideoShape::fold(sample)?;
        let mut h = self.conv_in.forward(&frames)?;
        rec("conv_in".into(), &h);
        // 4. down blocks
        let mut skips = vec![h.clone()];
        for (i, b) in self.down_blocks.iter().enumerate() {
            for l in &b.layers {
                h = self.layer(l, h, &emb, &ctx, t, hooks, true)?;
                skips.push(h.clone());
            }
            if let Some(d) = &b.down {
                h = d.forward(&h)?;
                skips.push(h.clone());
            }
            rec(format!("down_blocks.{i}"), &h);
        }
        // 5. mid block: resnet, then (attn, motion, resnet)
        h = self.mid_block.resnet0.forward(&h, Some(&emb))?;
        for l in &self.mid_block.layers {
            h = self.layer(l, h, &emb, &ctx, t, hooks, false)?;
        }
        rec("mid_block".into(), &h);
        // 6. up blocks
        for (i, b) in self.up_blocks.iter().enumerate() {
            for l in &b.layers {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::invalid("skips", "exhausted"))?;
                h = Tensor::cat(&[&h, &skip], 1)?;
                h = self.layer(l, h, &emb, &ctx, t, hooks, true)?;
            }
            if let Some(u) = &b.up {
                // To the next skip's size (odd sizes: as `forward_upsample_size`).
                let size = skips.last().map(|s| (s.dims()[2], s.dims()[3]));
                h = u.forward(&h, size)?;
            }
            rec(format!("up_blocks.{i}"), &h);
        }
        // 7. norm, SiLU, conv_out; frames -> (B, C', T, H, W)
        if tracing {
            // The reference's hook sees the norm alone; the fused pass below stays the path.
            rec("conv_norm_out".into(), &self.conv_norm_out.forward(&h)?);
        }
        h = self.conv_norm_out.forward_silu(&h)?;
        h = self.conv_out.forward(&h)?;
        rec("conv_out".into(), &h);
        let out = VideoShape::unfold(&h, t)?;
        check_finite(&out, "UNetMotionModel forward: output sample")?;
        Ok(out)
    }

    /// `resnet → attn → motion` (down / up blocks, `resnet_first`) or
    /// `attn → motion → resnet` (mid block).
    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        l: &MLayer,
        mut h: Tensor,
        emb: &Tensor,
        ctx: &Tensor,
        t: usize,
        hooks: &dyn UNetHooks,
        resnet_first: bool,
    ) -> Result<Tensor> {
        if resnet_first {
            h = l.resnet.forward(&h, Some(emb))?;
        }
        if let Some(a) = &l.attn {
            h = a.forward(&h, Some(ctx))?;
            h = hook(hooks, &l.name, HookPoint::AfterSpatialAttention, h, t)?;
        }
        if let Some(m) = &l.motion {
            h = on_video(&h, t, |v| m.forward(v))?;
            h = hook(hooks, &l.name, HookPoint::AfterTemporalLayers, h, t)?;
        }
        if !resnet_first {
            h = l.resnet.forward(&h, Some(emb))?;
        }
        Ok(h)
    }
}

/// Zeroes every `proj_out` of the motion modules in `varmap` (AnimateDiff's zero-initialised
/// output projections), so new temporal layers start as the identity.
fn zero_proj_out(varmap: &VarMap) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::invalid("varmap", "lock poisoned"))?;
    for (name, var) in data.iter() {
        if name.contains(".proj_out.") {
            var.set(&var.as_tensor().zeros_like()?)?;
        }
    }
    Ok(())
}
