//! Stable Video Diffusion's `UNetSpatioTemporalConditionModel`
//! (diffusers `models/unets/unet_spatio_temporal_condition.py`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::{Conditioning, Error, LoadReport, ModelDir, Result, VideoShape};

use super::blocks::{
    Site, SpatioTemporalResBlock, SpatioTemporalResOpts, TransformerSpatioTemporalModel,
};
use super::config::UNetSpatioTemporalConfig;
use vidgen_video_core::hooks::{NoHooks, UNetHooks};
use vidgen_video_nn::{
    Activation, Conv2d, Downsample2D, GroupNorm, TimestepEmbedding, Timesteps, Upsample2D,
};

/// One down or up level: ResNets, optional transformers after each ResNet, optional resampler.
#[derive(Debug, Clone)]
struct Level {
    resnets: Vec<SpatioTemporalResBlock>,
    attentions: Vec<TransformerSpatioTemporalModel>,
    downsampler: Option<Downsample2D>,
    upsampler: Option<Upsample2D>,
}

/// Per-call state shared by every block.
struct Ctx<'a> {
    temb: &'a Tensor,
    context: &'a Tensor,
    frames: usize,
    indicator: Option<&'a Tensor>,
    hooks: &'a dyn UNetHooks,
}

impl Level {
    fn resnet_attn(&self, i: usize, h: &Tensor, ctx: &Ctx<'_>, path: &str) -> Result<Tensor> {
        let r = self
            .resnets
            .get(i)
            .ok_or_else(|| Error::invalid("level", "resnet index out of range"))?;
        let h = r.forward(h, Some(ctx.temb), ctx.frames, ctx.indicator)?;
        match self.attentions.get(i) {
            Some(a) => {
                let p = format!("{path}.attentions.{i}");
                let site = Site {
                    path: &p,
                    hooks: ctx.hooks,
                };
                a.forward_site(&h, Some(ctx.context), ctx.frames, ctx.indicator, &site)
            }
            None => Ok(h),
        }
    }
}

/// Stable Video Diffusion's UNet, loading a diffusers `unet/` directory unchanged.
///
/// The forward pass, numbered as in the reference:
/// 1. time: `time_proj` (sinusoidal of the timestep `c_noise = ¼ ln σ`) → `time_embedding`;
///    each added time id (`[fps − 1, motion_bucket_id, noise_aug_strength]`) through
///    `add_time_proj`, concatenated → `add_embedding`; the sum is repeated per frame;
/// 2. frames are folded into the batch `[B·F, C, H, W]`, `conv_in`;
/// 3. down blocks (`SpatioTemporalResBlock` + `TransformerSpatioTemporalModel`), keeping skips;
/// 4. mid block; 5. up blocks with skips; 6. `conv_norm_out` → SiLU → `conv_out`;
/// 7. unfold to `[B, F, C, H, W]`.
#[derive(Debug, Clone)]
pub struct UNetSpatioTemporalConditionModel {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    add_time_proj: Timesteps,
    add_embedding: TimestepEmbedding,
    down_blocks: Vec<Level>,
    mid_resnets: Vec<SpatioTemporalResBlock>,
    mid_attentions: Vec<TransformerSpatioTemporalModel>,
    up_blocks: Vec<Level>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    cfg: UNetSpatioTemporalConfig,
    max_frames: usize,
}

impl UNetSpatioTemporalConditionModel {
    /// Builds the model from `vb` (random weights, e.g. video-testkit's seeded builder, or a
    /// checkpoint).
    ///
    /// # Errors
    /// An invalid config (field named); missing / mis-shaped tensors.
    pub fn new(cfg: &UNetSpatioTemporalConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let lv = cfg.levels()?;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let c0 = ch[0];
        let ted = c0 * 4;
        let temb = Some(ted);
        let cross = |i: usize| Some(lv.cross[i]);

        let mut down_blocks = Vec::with_capacity(n);
        let mut out_ch = c0;
        for (i, ty) in cfg.down_block_types.iter().enumerate() {
            let in_ch = out_ch;
            out_ch = ch[i];
            let is_final = i == n - 1;
            let has_attn = ty == "CrossAttnDownBlockSpatioTemporal";
            let eps = if has_attn { 1e-6 } else { 1e-5 };
            let vbd = vb.pp("down_blocks").pp(i);
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..lv.layers[i] {
                let cin = if j == 0 { in_ch } else { out_ch };
                resnets.push(SpatioTemporalResBlock::new(
                    cin,
                    out_ch,
                    temb,
                    SpatioTemporalResOpts::unet(eps),
                    vbd.pp("resnets").pp(j),
                )?);
                if has_attn {
                    attentions.push(TransformerSpatioTemporalModel::new(
                        lv.heads[i],
                        out_ch / lv.heads[i],
                        out_ch,
                        lv.tlayers[i],
                        cross(i),
                        vbd.pp("attentions").pp(j),
                    )?);
                }
            }
            let downsampler = if is_final {
                None
            } else {
                Some(Downsample2D::new(
                    out_ch,
                    true,
                    out_ch,
                    1,
                    vbd.pp("downsamplers").pp(0),
                )?)
            };
            down_blocks.push(Level {
                resnets,
                attentions,
                downsampler,
                upsampler: None,
            });
        }

        let cl = ch[n - 1];
        let vbm = vb.pp("mid_block");
        let mid_opts = SpatioTemporalResOpts::unet(1e-5);
        let mid_resnets = vec![
            SpatioTemporalResBlock::new(cl, cl, temb, mid_opts, vbm.pp("resnets").pp(0))?,
            SpatioTemporalResBlock::new(cl, cl, temb, mid_opts, vbm.pp("resnets").pp(1))?,
        ];
        let mid_attentions = vec![TransformerSpatioTemporalModel::new(
            lv.heads[n - 1],
            cl / lv.heads[n - 1],
            cl,
            lv.tlayers[n - 1],
            cross(n - 1),
            vbm.pp("attentions").pp(0),
        )?];

        let rev_ch: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_ch = rev_ch[0];
        for (i, ty) in cfg.up_block_types.iter().enumerate() {
            let ri = n - 1 - i;
            let is_final = i == n - 1;
            let prev = out_ch;
            out_ch = rev_ch[i];
            let in_ch = rev_ch[(i + 1).min(n - 1)];
            let layers = lv.layers[ri] + 1;
            let has_attn = ty == "CrossAttnUpBlockSpatioTemporal";
            let vbu = vb.pp("up_blocks").pp(i);
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { in_ch } else { out_ch };
                let rin = if j == 0 { prev } else { out_ch };
                resnets.push(SpatioTemporalResBlock::new(
                    rin + skip,
                    out_ch,
                    temb,
                    SpatioTemporalResOpts::unet(1e-6),
                    vbu.pp("resnets").pp(j),
                )?);
                if has_attn {
                    attentions.push(TransformerSpatioTemporalModel::new(
                        lv.heads[ri],
                        out_ch / lv.heads[ri],
                        out_ch,
                        lv.tlayers[ri],
                        cross(ri),
                        vbu.pp("attentions").pp(j),
                    )?);
                }
            }
            let upsampler = if is_final {
                None
            } else {
                Some(Upsample2D::new(
                    out_ch,
                    true,
                    out_ch,
                    vbu.pp("upsamplers").pp(0),
                )?)
            };
            up_blocks.push(Level {
                resnets,
                attentions,
                downsampler: None,
                upsampler,
            });
        }

        Ok(Self {
            conv_in: Conv2d::new(cfg.in_channels, c0, 3, 1, 1, true, vb.pp("conv_in"))?,
            time_proj: Timesteps::new(c0, true, 0.0),
            time_embedding: TimestepEmbedding::new(
                c0,
                ted,
                None,
                Activation::Silu,
                vb.pp("time_embedding"),
            )?,
            add_time_proj: Timesteps::new(cfg.addition_time_embed_dim, true, 0.0),
            add_embedding: TimestepEmbedding::new(
                cfg.projection_class_embeddings_input_dim,
                ted,
                None,
                Activation::Silu,
                vb.pp("add_embedding"),
            )?,
            down_blocks,
            mid_resnets,
            mid_attentions,
            up_blocks,
            conv_norm_out: GroupNorm::new(32, c0, 1e-5, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(c0, cfg.out_channels, 3, 1, 1, true, vb.pp("conv_out"))?,
            max_frames: cfg.num_frames,
            cfg: cfg.clone(),
        })
    }

    /// Loads a diffusers `unet/` directory strictly (every key the model needs present with
    /// its shape; the report lists unused keys).
    ///
    /// # Errors
    /// Unreadable / invalid config; missing or mis-shaped keys (named, with the file).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let md = ModelDir::open(dir.as_ref())?;
        let cfg = UNetSpatioTemporalConfig::from_file(dir.as_ref().join("config.json"))?;
        md.load(dtype, device, |vb| Self::new(&cfg, vb))
    }

    /// The configuration.
    pub fn config(&self) -> &UNetSpatioTemporalConfig {
        &self.cfg
    }

    /// The largest accepted frame count (default: the config's `num_frames`).
    pub fn max_frames(&self) -> usize {
        self.max_frames
    }

    /// Changes the frame limit. The temporal layers (sinusoidal frame positions, temporal convs
    /// and attention) accept any count; the limit guards against running far outside the
    /// trained range by accident (diffusers does not check).
    pub fn set_max_frames(&mut self, max_frames: usize) {
        self.max_frames = max_frames;
    }

    fn check_inputs(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        context: &Tensor,
        added_time_ids: &Tensor,
        indicator: Option<&Tensor>,
    ) -> Result<(usize, usize)> {
        let cfg = &self.cfg;
        let (b, f, c, h, w) = match sample.dims() {
            &[b, f, c, h, w] => (b, f, c, h, w),
            d => {
                return Err(Error::invalid(
                    "sample",
                    format!("expected a rank-5 [B, F, C, H, W] tensor, found {d:?}"),
                ))
            }
        };
        if c != cfg.in_channels {
            return Err(Error::shape(
                "sample",
                &[b, f, cfg.in_channels, h, w],
                sample.dims(),
            ));
        }
        if b == 0 || f == 0 || h == 0 || w == 0 {
            return Err(Error::invalid(
                "sample",
                format!("empty shape {:?}", sample.dims()),
            ));
        }
        if f > self.max_frames {
            return Err(Error::invalid(
                "num_frames",
                format!(
                    "{f} frames exceed this model's limit of {} (config num_frames; raise it with \
                     set_max_frames)",
                    self.max_frames
                ),
            ));
        }
        let nt = timestep.elem_count();
        if timestep.rank() > 1 || (nt != 1 && nt != b) {
            return Err(Error::invalid(
                "timestep",
                format!(
                    "expected a scalar, [1] or [B = {b}], found {:?}",
                    timestep.dims()
                ),
            ));
        }
        let cross = cfg.levels()?.cross[0];
        match context.dims() {
            // per video [B, M, D] (the pipeline's CLIP embedding) or per frame [B·F, M, D]
            &[cb, _, cd] if (cb == b || cb == b * f) && cd == cross => {}
            d => {
                return Err(Error::shape(
                    "encoder_hidden_states",
                    &[b, d.get(1).copied().unwrap_or(1), cross],
                    d,
                ))
            }
        }
        let na = cfg.num_added_ids();
        if added_time_ids.dims() != [b, na] {
            return Err(Error::shape(
                "added_time_ids",
                &[b, na],
                added_time_ids.dims(),
            ));
        }
        if let Some(ind) = indicator {
            if ind.dims() != [b, f] {
                return Err(Error::shape("image_only_indicator", &[b, f], ind.dims()));
            }
        }
        Ok((b, f))
    }

    /// Runs the UNet as diffusers does (no hooks).
    ///
    /// # Shapes
    /// - `sample`: `[B, F, in_channels, H, W]` (SVD's layout: noisy latents already scaled by
    ///   `1/√(σ²+1)`, concatenated on channels with the conditioning-image latents);
    ///   any `H`, `W` ≥ 1 (sizes not divisible by `2^(levels−1)` are upsampled back to each
    ///   skip connection's size, as diffusers does), `F ≤ max_frames()`
    /// - `timestep`: scalar, `[1]` or `[B]` (`c_noise = ¼ ln σ`)
    /// - `encoder_hidden_states`: `[B, M, cross_attention_dim]` (CLIP image embeds, `M = 1`),
    ///   repeated over the frames as diffusers does; or one context per frame,
    ///   `[B·F, M, cross_attention_dim]` (video `b`, frame `i` at row `b·F + i`: AID's
    ///   per-frame DQFormer conditions). The temporal transformers cross-attend to each video's
    ///   first-frame context in both cases, as the reference does.
    /// - `added_time_ids`: `[B, n]`, `n·addition_time_embed_dim = projection_class_embeddings_input_dim`
    /// - `image_only_indicator`: `[B, F]` (1 = image-only frame) or `None` (zeros)
    /// - returns `[B, F, out_channels, H, W]`
    ///
    /// # Errors
    /// Wrong channel count, mismatched `added_time_ids` length, too many frames, batch
    /// mismatches: typed errors naming the argument. [`Error::NonFinite`] when the output holds
    /// NaN or infinity.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        added_time_ids: &Tensor,
        image_only_indicator: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_with_hooks(
            sample,
            timestep,
            encoder_hidden_states,
            added_time_ids,
            image_only_indicator,
            &NoHooks,
        )
    }

    /// [`Self::forward`] with `hooks` called inside every `TransformerSpatioTemporalModel`
    /// (see [`vidgen_video_core::hooks`]).
    ///
    /// # Shapes
    /// As [`Self::forward`].
    pub fn forward_with_hooks(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        added_time_ids: &Tensor,
        image_only_indicator: Option<&Tensor>,
        hooks: &dyn UNetHooks,
    ) -> Result<Tensor> {
        // On a rayon worker: hundreds of parallel ops, none handed off from an outside thread.
        vidgen_video_core::in_pool(|| {
            self.run(
                sample,
                timestep,
                encoder_hidden_states,
                added_time_ids,
                image_only_indicator,
                hooks,
                None,
            )
        })
    }

    /// [`Self::forward`] that also returns the outputs of the top-level modules, named as the
    /// reference's forward hooks (`time_proj`, `time_embedding`, `add_time_proj`,
    /// `add_embedding`, `conv_in`, `down_blocks.i`, `mid_block`, `up_blocks.i`,
    /// `conv_norm_out`, `conv_out`), for bisecting a mismatch.
    ///
    /// # Shapes
    /// As [`Self::forward`]; block outputs are frame batches `[B·F, C, h, w]`.
    pub fn forward_traced(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        added_time_ids: &Tensor,
        image_only_indicator: Option<&Tensor>,
    ) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let mut trace = Vec::new();
        let out = self.run(
            sample,
            timestep,
            encoder_hidden_states,
            added_time_ids,
            image_only_indicator,
            &NoHooks,
            Some(&mut trace),
        )?;
        Ok((out, trace))
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        added_time_ids: &Tensor,
        image_only_indicator: Option<&Tensor>,
        hooks: &dyn UNetHooks,
        mut trace: Option<&mut Vec<(String, Tensor)>>,
    ) -> Result<Tensor> {
        let (b, f) = self.check_inputs(
            sample,
            timestep,
            encoder_hidden_states,
            added_time_ids,
            image_only_indicator,
        )?;
        let dt = sample.dtype();
        let mut rec = |name: &str, t: &Tensor| {
            if let Some(tr) = trace.as_deref_mut() {
                tr.push((name.to_string(), t.clone()));
            }
        };
        // 1. time embeddings: [B] -> [B, c0] -> [B, 4·c0]
        let ts = timestep.to_dtype(DType::F32)?.flatten_all()?;
        let ts = if ts.elem_count() == 1 {
            ts.broadcast_as(b)?.contiguous()?
        } else {
            ts
        };
        let t_emb = self.time_proj.forward(&ts)?;
        rec("time_proj", &t_emb);
        let emb = self.time_embedding.forward(&t_emb.to_dtype(dt)?)?;
        rec("time_embedding", &emb);
        // added ids: [B, n] -> [B·n] -> [B·n, a] -> [B, n·a] -> [B, 4·c0]
        let tid = self.add_time_proj.forward(&added_time_ids.flatten_all()?)?;
        rec("add_time_proj", &tid);
        let tid = tid.reshape((b, ()))?.to_dtype(dt)?;
        let aug = self.add_embedding.forward(&tid)?;
        rec("add_embedding", &aug);
        let emb = (emb + aug)?;
        // repeat_interleave over frames: [B, D] -> [B, F, D] -> [B·F, D]
        let rep = |t: &Tensor| -> Result<Tensor> {
            let mut d = t.dims().to_vec();
            let mut e = d.clone();
            e.insert(1, f);
            d[0] = b * f;
            Ok(t.unsqueeze(1)?.broadcast_as(e)?.contiguous()?.reshape(d)?)
        };
        let emb = rep(&emb)?;
        let context = if encoder_hidden_states.dims()[0] == b * f && f > 1 {
            encoder_hidden_states.to_dtype(dt)?
        } else {
            rep(&encoder_hidden_states.to_dtype(dt)?)?
        };
        // 2. [B, F, C, H, W] -> [B·F, C, H, W]
        let (_, _, c, h, w) = sample.dims5()?;
        let x = sample.reshape((b * f, c, h, w))?;
        let mut x = self.conv_in.forward(&x)?;
        rec("conv_in", &x);
        let ctx = Ctx {
            temb: &emb,
            context: &context,
            frames: f,
            indicator: image_only_indicator,
            hooks,
        };
        // 3. down
        let mut skips = vec![x.clone()];
        for (i, lvl) in self.down_blocks.iter().enumerate() {
            let path = format!("down_blocks.{i}");
            for j in 0..lvl.resnets.len() {
                x = lvl.resnet_attn(j, &x, &ctx, &path)?;
                skips.push(x.clone());
            }
            if let Some(d) = &lvl.downsampler {
                x = d.forward(&x)?;
                skips.push(x.clone());
            }
            rec(&path, &x);
        }
        // 4. mid
        x = self.mid_resnets[0].forward(&x, Some(&emb), f, image_only_indicator)?;
        for (k, (a, r)) in self
            .mid_attentions
            .iter()
            .zip(&self.mid_resnets[1..])
            .enumerate()
        {
            let p = format!("mid_block.attentions.{k}");
            let site = Site { path: &p, hooks };
            x = a.forward_site(&x, Some(&context), f, image_only_indicator, &site)?;
            x = r.forward(&x, Some(&emb), f, image_only_indicator)?;
        }
        rec("mid_block", &x);
        // 5. up
        for (i, lvl) in self.up_blocks.iter().enumerate() {
            let path = format!("up_blocks.{i}");
            for j in 0..lvl.resnets.len() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::invalid("up_blocks", "ran out of skip connections"))?;
                x = Tensor::cat(&[&x, &skip], 1)?;
                x = lvl.resnet_attn(j, &x, &ctx, &path)?;
            }
            if let Some(u) = &lvl.upsampler {
                // To the size of the next skip connection (diffusers' `forward_upsample_size`):
                // `2h × 2w` for sizes divisible by 2^(levels−1), nearest interpolation to an odd
                // size otherwise.
                let size = skips.last().map(|s| (s.dims()[2], s.dims()[3]));
                x = u.forward(&x, size)?;
            }
            rec(&path, &x);
        }
        // 6. out
        let x = self.conv_norm_out.forward(&x)?;
        rec("conv_norm_out", &x);
        let x = vidgen_video_kernels::silu(&x)?;
        let x = self.conv_out.forward(&x)?;
        rec("conv_out", &x);
        // 7. [B·F, C', H, W] -> [B, F, C', H, W]
        let co = x.dims()[1];
        let out = x.reshape((b, f, co, h, w))?;
        vidgen_video_core::check_finite(
            &out,
            "UNetSpatioTemporalConditionModel forward: output sample",
        )?;
        Ok(out)
    }

    /// The raw network in vidgen's layout, for `samplers`' preconditioning wrappers
    /// (`SvdPrecond::new(|x, c, cond| unet.forward_raw(x, c, cond))`).
    ///
    /// Convention: `x_in` is the already-scaled noisy latent `c_in·x`, `c_noise` the timestep;
    /// `cond.concat` holds the conditioning-image latents `[B, C', T, H, W]` (concatenated after
    /// `x_in` on channels), `cond.context` the image embeddings `[B, M, D]`,
    /// `cond.added["added_time_ids"]` the `[B, n]` ids, `cond.frame_mask` (optional
    /// `[B, 1, T, 1, 1]`, 1 = image-only frame) the `image_only_indicator`. Returns the raw
    /// output (SVD: the v-prediction).
    ///
    /// # Shapes
    /// `x_in [B, C, T, H, W]`, `c_noise [B]` or scalar → `[B, out_channels, T, H, W]`.
    ///
    /// # Errors
    /// Missing `context` / `added_time_ids`, and everything [`Self::forward`] rejects.
    pub fn forward_raw(
        &self,
        x_in: &Tensor,
        c_noise: &Tensor,
        cond: &Conditioning,
    ) -> Result<Tensor> {
        self.forward_raw_with_hooks(x_in, c_noise, cond, &NoHooks)
    }

    /// [`Self::forward_raw`] with hooks.
    ///
    /// # Shapes
    /// As [`Self::forward_raw`].
    pub fn forward_raw_with_hooks(
        &self,
        x_in: &Tensor,
        c_noise: &Tensor,
        cond: &Conditioning,
        hooks: &dyn UNetHooks,
    ) -> Result<Tensor> {
        let x = match &cond.concat {
            Some(c) => Tensor::cat(&[x_in, &c.to_dtype(x_in.dtype())?], 1)?,
            None => x_in.clone(),
        };
        let s = VideoShape::of(&x)?;
        let context = cond.context.as_ref().ok_or_else(|| {
            Error::invalid(
                "cond.context",
                "SVD needs the CLIP image embeddings [B, 1, D]",
            )
        })?;
        let ids = cond.added.get("added_time_ids").ok_or_else(|| {
            Error::invalid(
                "cond.added[\"added_time_ids\"]",
                "SVD needs [fps − 1, motion_bucket_id, noise_aug_strength] per sample",
            )
        })?;
        let indicator = match &cond.frame_mask {
            Some(m) => Some(m.reshape((s.b, s.t))?),
            None => None,
        };
        let sample = VideoShape::to_btchw(&x)?;
        let out =
            self.forward_with_hooks(&sample, c_noise, context, ids, indicator.as_ref(), hooks)?;
        VideoShape::from_btchw(&out)
    }
}
