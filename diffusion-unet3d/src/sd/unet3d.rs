//! diffusers' `UNet3DConditionModel` (ModelScope text-to-video, VideoCrafter, Zeroscope).
//!
//! Reference: `diffusers/models/unets/unet_3d_condition.py` and `unet_3d_blocks.py`. Every
//! ResNet is followed by a [`TemporalConvLayer`], every spatial transformer by a
//! [`TransformerTemporalModel`]; `transformer_in` runs once after `conv_in`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::{check_finite, Error, LoadReport, ModelDir, Result, VideoShape};

use super::common::{self, check_sample, frame_context, hook, on_video, timesteps};
use super::config::UNet3DConfig;
use super::temporal::{TemporalConvLayer, TransformerTemporalConfig, TransformerTemporalModel};
use vidgen_video_core::hooks::{HookPoint, NoHooks, UNetHooks};
use vidgen_video_nn::{
    Activation, Conv2d, Downsample2D, GroupNorm, ResnetBlock2D, ResnetBlock2DConfig,
    TimestepEmbedding, Timesteps, Transformer2DConfig, Transformer2DModel, Upsample2D,
};

/// One `resnet → temp_conv → [attn → temp_attn]` step of a 3-D block.
#[derive(Debug, Clone)]
struct Layer3D {
    resnet: ResnetBlock2D,
    temp_conv: TemporalConvLayer,
    attn: Option<(Transformer2DModel, TransformerTemporalModel)>,
    name: String,
}

#[derive(Debug, Clone)]
struct Block3D {
    layers: Vec<Layer3D>,
    down: Option<Downsample2D>,
    up: Option<Upsample2D>,
}

#[derive(Debug, Clone)]
struct Mid3D {
    resnet0: ResnetBlock2D,
    temp_conv0: TemporalConvLayer,
    layers: Vec<(
        Transformer2DModel,
        TransformerTemporalModel,
        ResnetBlock2D,
        TemporalConvLayer,
    )>,
}

/// Shared construction arguments of the 3-D blocks.
struct Ctx<'a> {
    cfg: &'a UNet3DConfig,
    groups: usize,
    temb: usize,
}

impl Ctx<'_> {
    fn resnet(&self, cin: usize, cout: usize, scale: f64, vb: VarBuilder) -> Result<ResnetBlock2D> {
        let mut c = ResnetBlock2DConfig::new(cin, cout)
            .temb(Some(self.temb))
            .groups(self.groups)
            .eps(self.cfg.norm_eps);
        c.act = Activation::Silu;
        c.output_scale_factor = scale;
        ResnetBlock2D::new(&c, vb)
    }

    /// `Transformer2DModel(c // n, n)` and `TransformerTemporalModel(c // n, n)`: `n` is the
    /// head size, `c / n` heads (the reference's double swap).
    fn attn_pair(
        &self,
        c: usize,
        head_dim: usize,
        linear_proj: bool,
        vb_attn: VarBuilder,
        vb_temp: VarBuilder,
    ) -> Result<(Transformer2DModel, TransformerTemporalModel)> {
        let heads = c / head_dim.max(1);
        let mut t = Transformer2DConfig::new(heads, head_dim, c);
        t.cross_attention_dim = Some(self.cfg.cross_attention_dim);
        t.norm_num_groups = self.groups;
        t.use_linear_projection = linear_proj;
        let spatial = Transformer2DModel::new(&t, vb_attn)?;
        let temporal = TransformerTemporalModel::new(
            &TransformerTemporalConfig {
                num_attention_heads: heads,
                attention_head_dim: head_dim,
                in_channels: c,
                num_layers: 1,
                norm_num_groups: self.groups,
                max_seq_length: None,
                cross_attention_dim: Some(self.cfg.cross_attention_dim),
            },
            vb_temp,
        )?;
        Ok((spatial, temporal))
    }
}

/// diffusers' `UNet3DConditionModel`: an SD-style UNet whose ResNets and spatial transformers
/// run per frame, each followed by a temporal layer (ModelScope's `TemporalConvLayer`, a
/// [`TransformerTemporalModel`]); ε-prediction over discrete timesteps.
///
/// Loads diffusers directories unchanged ([`UNet3DConditionModel::from_pretrained`]). `in_channels` may be
/// widened beyond the checkpoint's for channel-concat conditioning
/// ([`UNet3DConditionModel::load_widened`]): the extra input channels start at zero weight, so
/// the widened model initially equals the original.
#[derive(Debug, Clone)]
pub struct UNet3DConditionModel {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    transformer_in: TransformerTemporalModel,
    down_blocks: Vec<Block3D>,
    mid_block: Mid3D,
    up_blocks: Vec<Block3D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    cfg: UNet3DConfig,
}

impl UNet3DConditionModel {
    /// Builds the model from `vb` (random weights, e.g. video-testkit's seeded builder, or
    /// checkpoint tensors).
    ///
    /// # Errors
    /// An invalid config (naming the field); missing / mis-shaped tensors.
    pub fn new(cfg: &UNet3DConfig, vb: VarBuilder) -> Result<Self> {
        Self::new_widened(cfg, cfg.in_channels, vb)
    }

    /// As [`UNet3DConditionModel::new`], with `cfg.in_channels` inputs while `conv_in` of the
    /// tensors in `vb` has `ckpt_in_channels` (≤ `cfg.in_channels`); the extra input channels
    /// get zero weights.
    ///
    /// # Errors
    /// As [`UNet3DConditionModel::new`].
    pub fn new_widened(
        cfg: &UNet3DConfig,
        ckpt_in_channels: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        cfg.validate()?;
        let groups = cfg.groups()?;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let c0 = ch[0];
        let temb = c0 * 4;
        let heads = cfg.block_heads()?;
        let ctx = Ctx { cfg, groups, temb };
        let conv_in = common::conv_in(cfg.in_channels, ckpt_in_channels, c0, vb.pp("conv_in"))?;
        let time_proj = Timesteps::new(c0, true, 0.0);
        let time_embedding =
            TimestepEmbedding::new(c0, temb, None, Activation::Silu, vb.pp("time_embedding"))?;
        // transformer_in: 8 heads (hard-coded) of size attention_head_dim.
        let head0 = heads[0].1;
        let transformer_in = TransformerTemporalModel::new(
            &TransformerTemporalConfig {
                num_attention_heads: 8,
                attention_head_dim: head0,
                in_channels: c0,
                num_layers: 1,
                norm_num_groups: groups,
                max_seq_length: None,
                cross_attention_dim: None,
            },
            vb.pp("transformer_in"),
        )?;

        let mut down_blocks = Vec::with_capacity(n);
        let mut out_c = c0;
        for (i, &c) in ch.iter().enumerate() {
            let in_c = out_c;
            out_c = c;
            let vbb = vb.pp(format!("down_blocks.{i}"));
            let cross = cfg.down_block_types[i] == "CrossAttnDownBlock3D";
            let mut layers = Vec::with_capacity(cfg.layers_per_block);
            for j in 0..cfg.layers_per_block {
                let cin = if j == 0 { in_c } else { out_c };
                layers.push(Layer3D {
                    resnet: ctx.resnet(cin, out_c, 1.0, vbb.pp(format!("resnets.{j}")))?,
                    temp_conv: TemporalConvLayer::new(
                        out_c,
                        groups,
                        vbb.pp(format!("temp_convs.{j}")),
                    )?,
                    attn: if cross {
                        Some(ctx.attn_pair(
                            out_c,
                            heads[i].1,
                            true,
                            vbb.pp(format!("attentions.{j}")),
                            vbb.pp(format!("temp_attentions.{j}")),
                        )?)
                    } else {
                        None
                    },
                    name: format!("down_blocks.{i}.attentions.{j}"),
                });
            }
            let down = if i + 1 < n {
                Some(Downsample2D::new(
                    out_c,
                    true,
                    out_c,
                    cfg.downsample_padding,
                    vbb.pp("downsamplers.0"),
                )?)
            } else {
                None
            };
            down_blocks.push(Block3D {
                layers,
                down,
                up: None,
            });
        }

        let cl = ch[n - 1];
        let vbm = vb.pp("mid_block");
        let scale = cfg.mid_block_scale_factor;
        let (a, ta) = ctx.attn_pair(
            cl,
            heads[n - 1].1,
            // `get_down_block` / `get_up_block` and UNetMidBlock3DCrossAttn all default to linear
            // projections, and UNet3DConditionModel overrides none of them.
            true,
            vbm.pp("attentions.0"),
            vbm.pp("temp_attentions.0"),
        )?;
        let mid_block = Mid3D {
            resnet0: ctx.resnet(cl, cl, scale, vbm.pp("resnets.0"))?,
            temp_conv0: TemporalConvLayer::new(cl, groups, vbm.pp("temp_convs.0"))?,
            layers: vec![(
                a,
                ta,
                ctx.resnet(cl, cl, scale, vbm.pp("resnets.1"))?,
                TemporalConvLayer::new(cl, groups, vbm.pp("temp_convs.1"))?,
            )],
        };

        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let rev_heads: Vec<usize> = heads.iter().rev().map(|h| h.1).collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_c = rev[0];
        for i in 0..n {
            let prev = out_c;
            out_c = rev[i];
            let in_c = rev[(i + 1).min(n - 1)];
            let vbb = vb.pp(format!("up_blocks.{i}"));
            let cross = cfg.up_block_types[i] == "CrossAttnUpBlock3D";
            let nl = cfg.layers_per_block + 1;
            let mut layers = Vec::with_capacity(nl);
            for j in 0..nl {
                let skip = if j + 1 == nl { in_c } else { out_c };
                let rin = if j == 0 { prev } else { out_c };
                layers.push(Layer3D {
                    resnet: ctx.resnet(rin + skip, out_c, 1.0, vbb.pp(format!("resnets.{j}")))?,
                    temp_conv: TemporalConvLayer::new(
                        out_c,
                        groups,
                        vbb.pp(format!("temp_convs.{j}")),
                    )?,
                    attn: if cross {
                        Some(ctx.attn_pair(
                            out_c,
                            rev_heads[i],
                            true,
                            vbb.pp(format!("attentions.{j}")),
                            vbb.pp(format!("temp_attentions.{j}")),
                        )?)
                    } else {
                        None
                    },
                    name: format!("up_blocks.{i}.attentions.{j}"),
                });
            }
            let up = if i + 1 < n {
                Some(Upsample2D::new(out_c, true, out_c, vbb.pp("upsamplers.0"))?)
            } else {
                None
            };
            up_blocks.push(Block3D {
                layers,
                down: None,
                up,
            });
        }
        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            transformer_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(groups, c0, cfg.norm_eps, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(c0, cfg.out_channels, 3, 1, 1, true, vb.pp("conv_out"))?,
            cfg: cfg.clone(),
        })
    }

    /// Loads a diffusers `UNet3DConditionModel` directory strictly.
    ///
    /// # Errors
    /// Unreadable files, a bad config field, missing or mis-shaped tensors (named).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let md = ModelDir::open(dir)?;
        let cfg: UNet3DConfig = md.config()?;
        md.load(dtype, device, |vb| Self::new(&cfg, vb))
    }

    /// Loads a checkpoint with `in_channels` widened to `in_channels` (≥ the checkpoint's) for
    /// channel-concat conditioning (e.g. 4 noisy + 4 source-video latents = 8); the extra input
    /// channels of `conv_in` are zero, so the widened model initially ignores them.
    ///
    /// # Errors
    /// `in_channels` below the checkpoint's; as [`UNet3DConditionModel::from_pretrained`].
    pub fn load_widened(
        dir: impl AsRef<Path>,
        in_channels: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let md = ModelDir::open(dir)?;
        let mut cfg: UNet3DConfig = md.config()?;
        let ckpt_in = cfg.in_channels;
        if in_channels < ckpt_in {
            return Err(Error::invalid(
                "in_channels",
                format!(
                    "{in_channels} is below the checkpoint's {ckpt_in}; only widening is supported"
                ),
            ));
        }
        cfg.in_channels = in_channels;
        md.load(dtype, device, |vb| Self::new_widened(&cfg, ckpt_in, vb))
    }

    /// The config (with the widened `in_channels`, if any).
    pub fn config(&self) -> &UNet3DConfig {
        &self.cfg
    }

    /// The noise prediction (diffusers' `forward(...).sample`).
    ///
    /// # Shapes
    /// * `sample`: `[B, in_channels, T, H, W]`
    /// * `timestep`: scalar, `[1]` or `[B]` (any dtype; discrete steps 0..999 for SD)
    /// * `encoder_hidden_states`: `[B, S, cross_attention_dim]` (repeated over frames inside,
    ///   as the reference) or already per frame `[B·T, S, cross_attention_dim]`
    /// * returns `[B, out_channels, T, H, W]`
    ///
    /// # Errors
    /// Wrong ranks, channel counts, context width or batch: [`Error::ShapeMismatch`] /
    /// [`Error::InvalidArgument`] naming the argument.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with_hooks(sample, timestep, encoder_hidden_states, &NoHooks)
    }

    /// [`UNet3DConditionModel::forward`] with `hooks` called after every spatial transformer
    /// ([`HookPoint::AfterSpatialAttention`]) and after its temporal transformer
    /// ([`HookPoint::AfterTemporalLayers`]), at sites named `down_blocks.i.attentions.j`,
    /// `mid_block.attentions.0`, `up_blocks.i.attentions.j`. [`NoHooks`] costs nothing.
    ///
    /// # Shapes
    /// As [`UNet3DConditionModel::forward`]; hooks see `[B, C, T, H, W]`.
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

    /// [`UNet3DConditionModel::forward`] that also returns the outputs of the top-level
    /// modules, named as the reference's forward hooks (`time_proj`, `time_embedding` (per
    /// video, before the repeat over frames), `conv_in`, `transformer_in`, `down_blocks.i`,
    /// `mid_block`, `up_blocks.i`, `conv_norm_out` (before the SiLU), `conv_out`), for
    /// bisecting a mismatch. The output is bit-identical to [`UNet3DConditionModel::forward`].
    ///
    /// # Shapes
    /// As [`UNet3DConditionModel::forward`]; block outputs are frame batches `[B·T, C, h, w]`.
    ///
    /// # Errors
    /// As [`UNet3DConditionModel::forward`].
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
        let s = check_sample(sample, self.cfg.in_channels)?;
        let t = s.t;
        // 1. time embedding [B, 4·C0], repeated per frame -> [B·T, 4·C0]
        let ts = timesteps(timestep, s.b)?;
        let t_emb = self.time_proj.forward(&ts)?;
        rec("time_proj".into(), &t_emb);
        let emb = self
            .time_embedding
            .forward(&t_emb.to_dtype(sample.dtype())?)?;
        rec("time_embedding".into(), &emb);
        let emb = common::repeat_interleave(&emb, t)?;
        // 2. context per frame [B·T, S, D]
        let ctx = frame_context(encoder_hidden_states, s, self.cfg.cross_attention_dim)?
            .to_dtype(sample.dtype())?;
        // 3. (B, C, T, H, W) -> frames (B·T, C, H, W); conv_in; transformer_in over frames
        let (frames, _) = VideoShape::fold(sample)?;
        let mut h = self.conv_in.forward(&frames)?;
        rec("conv_in".into(), &h);
        h = on_video(&h, t, |v| self.transformer_in.forward(v))?;
        rec("transformer_in".into(), &h);
        // 4. down blocks, keeping every skip
        let mut skips = vec![h.clone()];
        for (i, b) in self.down_blocks.iter().enumerate() {
            for l in &b.layers {
                h = self.layer(l, &h, &emb, &ctx, t, hooks)?;
                skips.push(h.clone());
            }
            if let Some(d) = &b.down {
                h = d.forward(&h)?;
                skips.push(h.clone());
            }
            rec(format!("down_blocks.{i}"), &h);
        }
        // 5. mid block: resnet, temp_conv, then (attn, temp_attn, resnet, temp_conv)
        let m = &self.mid_block;
        h = m.resnet0.forward(&h, Some(&emb))?;
        h = on_video(&h, t, |v| m.temp_conv0.forward(v))?;
        for (a, ta, r, tc) in &m.layers {
            h = a.forward(&h, Some(&ctx))?;
            h = hook(
                hooks,
                "mid_block.attentions.0",
                HookPoint::AfterSpatialAttention,
                h,
                t,
            )?;
            h = on_video(&h, t, |v| ta.forward(v))?;
            h = hook(
                hooks,
                "mid_block.attentions.0",
                HookPoint::AfterTemporalLayers,
                h,
                t,
            )?;
            h = r.forward(&h, Some(&emb))?;
            h = on_video(&h, t, |v| tc.forward(v))?;
        }
        rec("mid_block".into(), &h);
        // 6. up blocks, concatenating skips on channels (last in, first out)
        for (i, b) in self.up_blocks.iter().enumerate() {
            for l in &b.layers {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::invalid("skips", "exhausted"))?;
                h = Tensor::cat(&[&h, &skip], 1)?;
                h = self.layer(l, &h, &emb, &ctx, t, hooks)?;
            }
            if let Some(u) = &b.up {
                // Upsample to the next skip's size (odd sizes: as `forward_upsample_size`).
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
        check_finite(&out, "UNet3DConditionModel forward: output sample")?;
        Ok(out)
    }

    fn layer(
        &self,
        l: &Layer3D,
        h: &Tensor,
        emb: &Tensor,
        ctx: &Tensor,
        t: usize,
        hooks: &dyn UNetHooks,
    ) -> Result<Tensor> {
        let mut h = l.resnet.forward(h, Some(emb))?;
        h = on_video(&h, t, |v| l.temp_conv.forward(v))?;
        if let Some((a, ta)) = &l.attn {
            h = a.forward(&h, Some(ctx))?;
            h = hook(hooks, &l.name, HookPoint::AfterSpatialAttention, h, t)?;
            h = on_video(&h, t, |v| ta.forward(v))?;
            h = hook(hooks, &l.name, HookPoint::AfterTemporalLayers, h, t)?;
        }
        Ok(h)
    }
}
