//! SVD's spatio-temporal blocks: `TemporalResnetBlock`, `AlphaBlender`, `SpatioTemporalResBlock`,
//! `TemporalBasicTransformerBlock` and `TransformerSpatioTemporalModel`
//! (diffusers `models/resnet.py`, `models/attention.py`, `models/transformers/transformer_temporal.py`).
//!
//! Frame batches are `[B·F, C, H, W]` (frame `f` of video `b` at `b·F + f`, the order of both
//! diffusers' `flatten(0, 1)` and [`vidgen_video_core::VideoShape::fold`]); temporal layers see
//! `[B, C, F, H, W]`.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, Result, VideoShape};

use vidgen_video_core::hooks::{HookPoint, HookSite, UNetHooks};
use vidgen_video_nn::{
    Activation, Attention, AttentionConfig, BasicTransformerBlock, BasicTransformerBlockConfig,
    FeedForward, FeedForwardActivation, GroupNorm, LayerNorm, Linear, ResnetBlock2D,
    ResnetBlock2DConfig, TemporalConv, TimestepEmbedding, Timesteps,
};

/// diffusers' `TemporalResnetBlock`: a ResNet block whose convs are `(3, 1, 1)` 3D convolutions
/// over time (through [`vidgen_video_kernels::conv3d`]) and whose time embedding is per frame.
#[derive(Debug, Clone)]
pub struct TemporalResnetBlock {
    norm1: GroupNorm,
    conv1: TemporalConv,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: TemporalConv,
    conv_shortcut: Option<TemporalConv>,
}

impl TemporalResnetBlock {
    /// `TemporalResnetBlock(in, out, temb_channels, eps)` (GroupNorm(32)).
    ///
    /// # Errors
    /// Channels not divisible by 32; missing / mis-shaped tensors.
    pub fn new(
        cin: usize,
        cout: usize,
        temb_channels: Option<usize>,
        eps: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(32, cin, eps, vb.pp("norm1"))?,
            conv1: TemporalConv::new(cin, cout, 3, vb.pp("conv1"))?,
            time_emb_proj: match temb_channels {
                Some(t) => Some(Linear::new(t, cout, true, vb.pp("time_emb_proj"))?),
                None => None,
            },
            norm2: GroupNorm::new(32, cout, eps, vb.pp("norm2"))?,
            conv2: TemporalConv::new(cout, cout, 3, vb.pp("conv2"))?,
            conv_shortcut: if cin != cout {
                Some(TemporalConv::new(cin, cout, 1, vb.pp("conv_shortcut"))?)
            } else {
                None
            },
        })
    }

    /// # Shapes
    /// `x [B, Cin, F, H, W]`, `temb [B, F, Ct]` → `[B, Cout, F, H, W]`.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let h = self.norm1.forward_silu(x)?;
        let mut h = self.conv1.forward(&h)?;
        if let (Some(p), Some(t)) = (&self.time_emb_proj, temb) {
            let t = p.forward(&candle_nn::ops::silu(t)?)?; // [B, F, C]
                                                           // [B, F, C] -> [B, C, F, 1, 1]
            let t = t.permute((0, 2, 1))?.unsqueeze(3)?.unsqueeze(4)?;
            h = vidgen_video_kernels::add(&h, &vidgen_video_kernels::contiguous(&t)?)?;
        }
        let h = self.norm2.forward_silu(&h)?;
        let h = self.conv2.forward(&h)?;
        let x = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        vidgen_video_kernels::add(&x, &h)
    }
}

/// How an [`AlphaBlender`] turns `mix_factor` into the spatial weight α.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeStrategy {
    /// α = `mix_factor` (a buffer).
    Fixed,
    /// α = σ(`mix_factor`).
    Learned,
    /// α = 1 for frames marked image-only, σ(`mix_factor`) for video frames.
    LearnedWithImages,
}

/// diffusers' `AlphaBlender`: `α·spatial + (1−α)·temporal` (with
/// `switch_spatial_to_temporal_mix`, α ← 1−α). Key `mix_factor [1]`.
#[derive(Debug, Clone)]
pub struct AlphaBlender {
    mix_factor: Tensor,
    strategy: MergeStrategy,
    switch: bool,
}

impl AlphaBlender {
    /// `AlphaBlender(alpha, merge_strategy, switch_spatial_to_temporal_mix)`; `alpha` is the
    /// initial `mix_factor` for random init.
    ///
    /// # Errors
    /// Missing / mis-shaped `mix_factor`.
    pub fn new(alpha: f64, strategy: MergeStrategy, switch: bool, vb: VarBuilder) -> Result<Self> {
        let mix_factor = vb.get_with_hints(1, "mix_factor", candle_nn::Init::Const(alpha))?;
        Ok(Self {
            mix_factor,
            strategy,
            switch,
        })
    }

    /// The spatial weight per (video, frame), f32 `[B, F]`.
    fn alpha(&self, b: usize, f: usize, indicator: Option<&Tensor>) -> Result<Tensor> {
        let m = self.mix_factor.to_dtype(DType::F32)?;
        let dev = m.device().clone();
        let base = match self.strategy {
            MergeStrategy::Fixed => m,
            _ => candle_nn::ops::sigmoid(&m)?,
        };
        let mut a = base.reshape((1, 1))?.broadcast_as((b, f))?.contiguous()?;
        if self.strategy == MergeStrategy::LearnedWithImages {
            if let Some(ind) = indicator {
                if ind.dims() != [b, f] {
                    return Err(Error::shape("image_only_indicator", &[b, f], ind.dims()));
                }
                let mask = ind.to_dtype(DType::F32)?.ne(0f64)?;
                let ones = Tensor::ones((b, f), DType::F32, &dev)?;
                a = mask.where_cond(&ones, &a)?;
            }
        }
        if self.switch {
            a = (1.0 - a)?;
        }
        Ok(a)
    }

    /// Blends video tensors.
    ///
    /// # Shapes
    /// `spatial`, `temporal` `[B, C, F, H, W]`, `indicator [B, F]` → `[B, C, F, H, W]`.
    pub fn forward_video(
        &self,
        spatial: &Tensor,
        temporal: &Tensor,
        indicator: Option<&Tensor>,
    ) -> Result<Tensor> {
        let s = VideoShape::of(spatial)?;
        let a = self
            .alpha(s.b, s.t, indicator)?
            .reshape((s.b, 1, s.t, 1, 1))?
            .to_dtype(spatial.dtype())?;
        vidgen_video_kernels::blend(spatial, temporal, &a)
    }

    /// Blends token sequences of frames.
    ///
    /// # Shapes
    /// `spatial`, `temporal` `[B·F, N, C]`, `indicator [B, F]` → `[B·F, N, C]`.
    pub fn forward_seq(
        &self,
        spatial: &Tensor,
        temporal: &Tensor,
        b: usize,
        f: usize,
        indicator: Option<&Tensor>,
    ) -> Result<Tensor> {
        let a = self
            .alpha(b, f, indicator)?
            .reshape((b * f, 1, 1))?
            .to_dtype(spatial.dtype())?;
        vidgen_video_kernels::blend(spatial, temporal, &a)
    }
}

/// Options of a [`SpatioTemporalResBlock`] beyond its channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpatioTemporalResOpts {
    /// GroupNorm epsilon of the spatial block.
    pub eps: f64,
    /// GroupNorm epsilon of the temporal block (`None` = `eps`).
    pub temporal_eps: Option<f64>,
    /// Initial `mix_factor`.
    pub merge_factor: f64,
    /// Blending strategy.
    pub merge_strategy: MergeStrategy,
    /// α ← 1−α (the temporal VAE).
    pub switch_spatial_to_temporal_mix: bool,
}

impl SpatioTemporalResOpts {
    /// The UNet's blocks: `learned_with_images`, merge factor 0.5.
    pub fn unet(eps: f64) -> Self {
        Self {
            eps,
            temporal_eps: None,
            merge_factor: 0.5,
            merge_strategy: MergeStrategy::LearnedWithImages,
            switch_spatial_to_temporal_mix: false,
        }
    }
}

/// diffusers' `SpatioTemporalResBlock`: `ResnetBlock2D` per frame (`spatial_res_block`), then a
/// [`TemporalResnetBlock`] (`temporal_res_block`), blended by an [`AlphaBlender`] (`time_mixer`).
#[derive(Debug, Clone)]
pub struct SpatioTemporalResBlock {
    spatial_res_block: ResnetBlock2D,
    temporal_res_block: TemporalResnetBlock,
    time_mixer: AlphaBlender,
}

impl SpatioTemporalResBlock {
    /// Builds the block.
    ///
    /// # Errors
    /// Channels not divisible by 32; missing / mis-shaped tensors.
    pub fn new(
        cin: usize,
        cout: usize,
        temb_channels: Option<usize>,
        opts: SpatioTemporalResOpts,
        vb: VarBuilder,
    ) -> Result<Self> {
        let rc = ResnetBlock2DConfig::new(cin, cout)
            .temb(temb_channels)
            .eps(opts.eps);
        Ok(Self {
            spatial_res_block: ResnetBlock2D::new(&rc, vb.pp("spatial_res_block"))?,
            temporal_res_block: TemporalResnetBlock::new(
                cout,
                cout,
                temb_channels,
                opts.temporal_eps.unwrap_or(opts.eps),
                vb.pp("temporal_res_block"),
            )?,
            time_mixer: AlphaBlender::new(
                opts.merge_factor,
                opts.merge_strategy,
                opts.switch_spatial_to_temporal_mix,
                vb.pp("time_mixer"),
            )?,
        })
    }

    /// # Shapes
    /// `x [B·F, Cin, H, W]`, `temb [B·F, Ct]`, `indicator [B, F]` → `[B·F, Cout, H, W]`.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: Option<&Tensor>,
        num_frames: usize,
        indicator: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = self.spatial_res_block.forward(x, temb)?;
        // [B·F, C, H, W] -> [B, C, F, H, W]
        let h5 = VideoShape::unfold(&h, num_frames)?;
        let b = h5.dims()[0];
        // [B·F, Ct] -> [B, F, Ct]
        let temb = match temb {
            Some(t) => Some(t.reshape((b, num_frames, ()))?),
            None => None,
        };
        let t = self.temporal_res_block.forward(&h5, temb.as_ref())?;
        let mixed = self.time_mixer.forward_video(&h5, &t, indicator)?;
        // [B, C, F, H, W] -> [B·F, C, H, W]
        Ok(VideoShape::fold(&mixed)?.0)
    }

    /// [`Self::forward`] without a time embedding or indicator (the VAE decoder's use) over a
    /// clip held as consecutive chunks of frames, layer by layer, with the single pass's result:
    /// the spatial block runs per chunk; each temporal GroupNorm is applied with the moments of
    /// the **whole clip** (gathered over the chunks, then merged); each `(kT, 1, 1)` temporal
    /// convolution sees its chunk plus `kT / 2` neighbouring frames on each side. Equal to the
    /// single pass up to the summation order of the GroupNorm statistics (f32 round-off); it
    /// keeps two clip-sized activations of this block (its spatial output and the first
    /// temporal convolution's) and works on one chunk at a time otherwise.
    ///
    /// # Shapes
    /// `chunks[i] [B, Cin, nᵢ, H, W]` (frames in clip order) → `[B, Cout, nᵢ, H, W]`, in place.
    ///
    /// # Errors
    /// An empty chunk list or mis-shaped chunks.
    pub fn forward_frame_chunks(&self, chunks: &mut [Tensor]) -> Result<()> {
        if chunks.is_empty() {
            return Err(Error::invalid("chunks", "a clip needs at least one chunk"));
        }
        for c in chunks.iter_mut() {
            let (frames, s) = VideoShape::fold(c)?;
            *c = VideoShape::unfold(&self.spatial_res_block.forward(&frames, None)?, s.t)?;
        }
        let tr = &self.temporal_res_block;
        let m1 = clip_moments(&tr.norm1, chunks)?;
        let t1 = temporal_conv_over_chunks(chunks, tr.conv1.kernel_t() / 2, |w| {
            tr.conv1
                .forward(&tr.norm1.forward_with_moments(w, &m1, true)?)
        })?;
        let m2 = clip_moments(&tr.norm2, &t1)?;
        let halo = tr.conv2.kernel_t() / 2;
        for (i, x) in chunks.iter_mut().enumerate() {
            let t2 = temporal_conv_at(&t1, i, halo, |w| {
                tr.conv2
                    .forward(&tr.norm2.forward_with_moments(w, &m2, true)?)
            })?;
            let t = match &tr.conv_shortcut {
                Some(c) => vidgen_video_kernels::add(&c.forward(x)?, &t2)?,
                None => vidgen_video_kernels::add(x, &t2)?,
            };
            *x = self.time_mixer.forward_video(x, &t, None)?;
        }
        Ok(())
    }
}

/// The merged GroupNorm moments of a clip held as chunks `[B, C, nᵢ, H, W]`.
fn clip_moments(
    norm: &GroupNorm,
    chunks: &[Tensor],
) -> Result<Vec<vidgen_video_kernels::GroupMoments>> {
    let mut acc = Vec::new();
    for c in chunks {
        vidgen_video_kernels::merge_group_moments(&mut acc, &norm.moments(c)?)?;
    }
    Ok(acc)
}

/// `f` (a frame-local map followed by a temporal convolution of radius `halo`) applied to chunk
/// `i` of a clip of chunks `[B, C, nᵢ, H, W]`: the chunk is extended by up to `halo` frames
/// of the clip on each side (fewer at the clip's ends, where the convolution's zero padding
/// applies exactly as in the single pass), and only its own frames are kept. The frame-local
/// part of `f` is recomputed on those few borrowed frames rather than kept for the whole clip
/// (memory over a little repeated work).
pub(crate) fn temporal_conv_at(
    chunks: &[Tensor],
    i: usize,
    halo: usize,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let lens = chunks
        .iter()
        .map(|c| c.dim(2))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let start: usize = lens[..i].iter().sum();
    let (n, total) = (lens[i], lens.iter().sum::<usize>());
    let (a, b) = (start.saturating_sub(halo), (start + n + halo).min(total));
    // Frames [a, b) of the clip, gathered from the chunks that hold them.
    let mut parts = Vec::new();
    let mut s0 = 0;
    for (c, &len) in chunks.iter().zip(&lens) {
        let (lo, hi) = (a.max(s0), b.min(s0 + len));
        if lo < hi {
            parts.push(c.narrow(2, lo - s0, hi - lo)?);
        }
        s0 += len;
    }
    let window = Tensor::cat(&parts, 2)?;
    Ok(f(&window)?.narrow(2, start - a, n)?)
}

/// [`temporal_conv_at`] for every chunk.
pub(crate) fn temporal_conv_over_chunks(
    chunks: &[Tensor],
    halo: usize,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Vec<Tensor>> {
    (0..chunks.len())
        .map(|i| temporal_conv_at(chunks, i, halo, &f))
        .collect()
}

/// diffusers' `TemporalBasicTransformerBlock`: attention over the frames of each pixel
/// (`norm_in`, `ff_in`, `norm1`/`attn1`, `norm2`/`attn2`, `norm3`/`ff`).
#[derive(Debug, Clone)]
pub struct TemporalBasicTransformerBlock {
    norm_in: LayerNorm,
    ff_in: FeedForward,
    norm1: LayerNorm,
    attn1: Attention,
    norm2: Option<LayerNorm>,
    attn2: Option<Attention>,
    norm3: LayerNorm,
    ff: FeedForward,
    is_res: bool,
}

impl TemporalBasicTransformerBlock {
    /// `TemporalBasicTransformerBlock(dim, time_mix_inner_dim, heads, head_dim, cross_attention_dim)`.
    ///
    /// # Errors
    /// Missing / mis-shaped tensors.
    pub fn new(
        dim: usize,
        inner: usize,
        heads: usize,
        head_dim: usize,
        cross: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (norm2, attn2) = match cross {
            Some(c) => (
                Some(LayerNorm::new(inner, 1e-5, true, vb.pp("norm2"))?),
                Some(Attention::new(
                    &AttentionConfig::new(inner, Some(c), heads, head_dim),
                    vb.pp("attn2"),
                )?),
            ),
            None => (None, None),
        };
        Ok(Self {
            norm_in: LayerNorm::new(dim, 1e-5, true, vb.pp("norm_in"))?,
            ff_in: FeedForward::new(
                dim,
                Some(inner),
                4,
                FeedForwardActivation::Geglu,
                None,
                true,
                vb.pp("ff_in"),
            )?,
            norm1: LayerNorm::new(inner, 1e-5, true, vb.pp("norm1"))?,
            attn1: Attention::new(
                &AttentionConfig::new(inner, None, heads, head_dim),
                vb.pp("attn1"),
            )?,
            norm2,
            attn2,
            norm3: LayerNorm::new(inner, 1e-5, true, vb.pp("norm3"))?,
            ff: FeedForward::new(
                inner,
                None,
                4,
                FeedForwardActivation::Geglu,
                None,
                true,
                vb.pp("ff"),
            )?,
            is_res: dim == inner,
        })
    }

    /// # Shapes
    /// `x [B·F, N, C]`, `context [B·N, M, D]` (per pixel) → `[B·F, N, C]`.
    pub fn forward(
        &self,
        x: &Tensor,
        num_frames: usize,
        context: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (bf, n, c) = x.dims3()?;
        let f = num_frames;
        let b = bf / f;
        // [B·F, N, C] -> [B, F, N, C] -> [B, N, F, C] -> [B·N, F, C]
        let x = vidgen_video_kernels::contiguous(&x.reshape((b, f, n, c))?.permute((0, 2, 1, 3))?)?
            .reshape((b * n, f, c))?;
        let residual = &x;
        let mut h = self.ff_in.forward(&self.norm_in.forward(&x)?)?;
        if self.is_res {
            h = vidgen_video_kernels::add(&h, residual)?;
        }
        h = vidgen_video_kernels::add(&self.attn1.forward(&self.norm1.forward(&h)?, None)?, &h)?;
        if let (Some(n2), Some(a2)) = (&self.norm2, &self.attn2) {
            h = vidgen_video_kernels::add(&a2.forward(&n2.forward(&h)?, context)?, &h)?;
        }
        let ff = self.ff.forward(&self.norm3.forward(&h)?)?;
        let h = if self.is_res {
            vidgen_video_kernels::add(&ff, &h)?
        } else {
            ff
        };
        let c2 = h.dims()[2];
        // [B·N, F, C] -> [B, N, F, C] -> [B, F, N, C] -> [B·F, N, C]
        Ok(
            vidgen_video_kernels::contiguous(&h.reshape((b, n, f, c2))?.permute((0, 2, 1, 3))?)?
                .reshape((bf, n, c2))?,
        )
    }
}

/// diffusers' `TransformerSpatioTemporalModel`: GroupNorm → `proj_in` → per layer a spatial
/// [`BasicTransformerBlock`] and a [`TemporalBasicTransformerBlock`] (on the input plus a
/// sinusoidal frame-position embedding, cross-attending to the first frame's context) blended by
/// an [`AlphaBlender`] → `proj_out` → residual.
#[derive(Debug, Clone)]
pub struct TransformerSpatioTemporalModel {
    norm: GroupNorm,
    proj_in: Linear,
    transformer_blocks: Vec<BasicTransformerBlock>,
    temporal_transformer_blocks: Vec<TemporalBasicTransformerBlock>,
    time_pos_embed: TimestepEmbedding,
    time_proj: Timesteps,
    time_mixer: AlphaBlender,
    proj_out: Linear,
    inner_dim: usize,
}

/// Where a [`TransformerSpatioTemporalModel`] sits, for hooks.
pub(crate) struct Site<'a> {
    pub path: &'a str,
    pub hooks: &'a dyn UNetHooks,
}

impl TransformerSpatioTemporalModel {
    /// `TransformerSpatioTemporalModel(heads, head_dim, in_channels, num_layers, cross_attention_dim)`.
    ///
    /// # Errors
    /// Bad sizes; missing / mis-shaped tensors.
    pub fn new(
        heads: usize,
        head_dim: usize,
        in_channels: usize,
        num_layers: usize,
        cross: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        if inner != in_channels {
            return Err(Error::config(
                "num_attention_heads",
                format!(
                    "{heads} heads × {head_dim} = {inner} must equal the block's {in_channels} \
                     channels (diffusers reshapes with the channel count)"
                ),
            ));
        }
        let bc = BasicTransformerBlockConfig::new(inner, heads, head_dim, cross);
        let mut tb = Vec::with_capacity(num_layers);
        let mut ttb = Vec::with_capacity(num_layers);
        for i in 0..num_layers {
            tb.push(BasicTransformerBlock::new(
                &bc,
                vb.pp("transformer_blocks").pp(i),
            )?);
            ttb.push(TemporalBasicTransformerBlock::new(
                inner,
                inner,
                heads,
                head_dim,
                cross,
                vb.pp("temporal_transformer_blocks").pp(i),
            )?);
        }
        Ok(Self {
            norm: GroupNorm::new(32, in_channels, 1e-6, vb.pp("norm"))?,
            proj_in: Linear::new(in_channels, inner, true, vb.pp("proj_in"))?,
            transformer_blocks: tb,
            temporal_transformer_blocks: ttb,
            time_pos_embed: TimestepEmbedding::new(
                in_channels,
                in_channels * 4,
                Some(in_channels),
                Activation::Silu,
                vb.pp("time_pos_embed"),
            )?,
            time_proj: Timesteps::new(in_channels, true, 0.0),
            time_mixer: AlphaBlender::new(
                0.5,
                MergeStrategy::LearnedWithImages,
                false,
                vb.pp("time_mixer"),
            )?,
            proj_out: Linear::new(inner, in_channels, true, vb.pp("proj_out"))?,
            inner_dim: inner,
        })
    }

    /// Applies the transformer with no hooks.
    ///
    /// # Shapes
    /// `x [B·F, C, H, W]`, `context [B·F, M, D]` (per frame, as the UNet repeats it),
    /// `indicator [B, F]` → `[B·F, C, H, W]`.
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        num_frames: usize,
        indicator: Option<&Tensor>,
    ) -> Result<Tensor> {
        let site = Site {
            path: "",
            hooks: &vidgen_video_core::hooks::NoHooks,
        };
        self.forward_site(x, context, num_frames, indicator, &site)
    }

    pub(crate) fn forward_site(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        num_frames: usize,
        indicator: Option<&Tensor>,
        site: &Site<'_>,
    ) -> Result<Tensor> {
        let (bf, c, h, w) = x.dims4()?;
        let f = num_frames;
        if f == 0 || bf % f != 0 {
            return Err(Error::invalid(
                "num_frames",
                format!("{bf} frames are not a multiple of {f} frames per video"),
            ));
        }
        let b = bf / f;
        let n = h * w;
        // time_context: the first frame's context of each video, one copy per pixel:
        // [B·F, M, D] -> [B, F, M, D][:, 0] -> [B, 1, M, D] -> [B, HW, M, D] -> [B·HW, M, D]
        let time_context = match context {
            Some(ctx) => {
                let (_, m, d) = ctx.dims3()?;
                let first = ctx.reshape((b, f, m, d))?.narrow(1, 0, 1)?;
                Some(
                    first
                        .broadcast_as((b, n, m, d))?
                        .contiguous()?
                        .reshape((b * n, m, d))?,
                )
            }
            None => None,
        };
        let residual = x;
        let hn = self.norm.forward(x)?;
        // [B·F, C, H, W] -> [B·F, HW, C]
        let hn =
            vidgen_video_kernels::contiguous(&hn.permute((0, 2, 3, 1))?)?.reshape((bf, n, c))?;
        let mut hs = self.proj_in.forward(&hn)?;
        // Frame positions 0..F per video: [B·F] -> sinusoidal [B·F, C] -> MLP -> [B·F, 1, C]
        let pos = self.time_proj.positions(f, x.device())?.repeat((b, 1))?;
        let emb = self
            .time_pos_embed
            .forward(&pos.to_dtype(hs.dtype())?)?
            .unsqueeze(1)?;
        let hooked = !site.hooks.is_noop();
        let inner = self.inner_dim;
        // [B·F, HW, C] <-> [B, C, F, H, W] for hooks
        let to_video = |t: &Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, f, h, w, inner))?
                .permute((0, 4, 1, 2, 3))?
                .contiguous()?)
        };
        let from_video = |t: &Tensor| -> Result<Tensor> {
            if t.dims() != [b, inner, f, h, w] {
                return Err(Error::shape("hook output", &[b, inner, f, h, w], t.dims()));
            }
            Ok(t.permute((0, 2, 3, 4, 1))?.reshape((bf, n, inner))?)
        };
        for (blk, tblk) in self
            .transformer_blocks
            .iter()
            .zip(&self.temporal_transformer_blocks)
        {
            hs = blk.forward(&hs, context)?;
            if hooked {
                let s = HookSite {
                    block: site.path,
                    point: HookPoint::AfterSpatialAttention,
                    num_frames: f,
                };
                hs = from_video(&site.hooks.apply(&s, &to_video(&hs)?)?)?;
            }
            let mix = vidgen_video_kernels::add(&hs, &emb)?;
            let mix = tblk.forward(&mix, f, time_context.as_ref())?;
            hs = self.time_mixer.forward_seq(&hs, &mix, b, f, indicator)?;
            if hooked {
                let s = HookSite {
                    block: site.path,
                    point: HookPoint::AfterTemporalLayers,
                    num_frames: f,
                };
                hs = from_video(&site.hooks.apply(&s, &to_video(&hs)?)?)?;
            }
        }
        let out = self.proj_out.forward(&hs)?;
        // [B·F, HW, C] -> [B·F, C, H, W]
        let out =
            vidgen_video_kernels::contiguous(&out.reshape((bf, h, w, c))?.permute((0, 3, 1, 2))?)?;
        vidgen_video_kernels::add(&out, residual)
    }
}
