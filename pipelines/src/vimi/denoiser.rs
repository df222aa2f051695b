//! Denoisers VIMI conditions through their cross-attention context: any [`ContextDenoiser`]
//! (diffusers' `UNet3DConditionModel` for real text-to-video checkpoints, and [`VideoDiT`],
//! the miniature's small video diffusion transformer).
//!
//! [`VideoDiT`] (DiT, Peebles & Xie 2023, made spatio-temporal): the clip is cut into
//! `patch × patch` patches per frame, each a token; tokens get learned spatial and temporal
//! position embeddings; every block is adaLN-Zero self-attention over all the clip's tokens,
//! cross-attention to the context (the VIMI instruction tokens), and an adaLN-Zero MLP; a final
//! adaLN layer maps tokens back to patches. Every gate and the output layer start at zero, so
//! a new model predicts 0. Why not the UNet for the miniature: on 2 CPU cores, candle's conv
//! backward made a 1.6 M-parameter UNet3D step on `[16, 3, 4, 16, 16]` take 16–40 s; this
//! transformer's step is matrix products only.

use candle_core::{DType, Tensor, D};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};
use vidgen_diffusion_unet3d::sd::UNet3DConditionModel;
use vidgen_video_core::{Error, Result};
use vidgen_video_nn::{
    Activation, LayerNorm, Linear, MhaConfig, MultiHeadAttention, TimestepEmbedding, Timesteps,
};

/// A denoising network conditioned by a cross-attention context.
pub trait ContextDenoiser: Send + Sync {
    /// The network's prediction (ε, v or x₀, as it was trained).
    ///
    /// # Shapes
    /// `sample [B, C, T, H, W]`, `timestep` `[1]` or `[B]` (discrete steps), `context [B, M,
    /// context_dim]` (any `M ≥ 1`) → `[B, C, T, H, W]`.
    ///
    /// # Errors
    /// Shape mismatches.
    fn predict(&self, sample: &Tensor, timestep: &Tensor, context: &Tensor) -> Result<Tensor>;

    /// Width of the context tokens.
    fn context_dim(&self) -> usize;
}

impl ContextDenoiser for UNet3DConditionModel {
    fn predict(&self, sample: &Tensor, timestep: &Tensor, context: &Tensor) -> Result<Tensor> {
        self.forward(sample, timestep, context)
    }

    fn context_dim(&self) -> usize {
        self.config().cross_attention_dim
    }
}

/// Sizes of a [`VideoDiT`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoDiTConfig {
    /// Channels of the sample (3 for RGB pixels).
    pub in_channels: usize,
    /// Patch side (divides `height` and `width`).
    pub patch: usize,
    /// Frame height.
    pub height: usize,
    /// Frame width.
    pub width: usize,
    /// Most frames a clip may have (temporal position table).
    pub max_frames: usize,
    /// Token width.
    pub hidden: usize,
    /// Attention heads (divide `hidden`).
    pub heads: usize,
    /// Blocks.
    pub layers: usize,
    /// MLP width as a multiple of `hidden`.
    pub mlp_ratio: usize,
    /// Width of the context tokens.
    pub context_dim: usize,
    /// Add fixed sine–cosine positions (2-D over the patch grid, 1-D over frames, as DiT / MAE)
    /// to the learned ones: tokens know where they are from the first step, which a
    /// 16×16-pixel model with 4×4 patches needs to place one compact object (its learned
    /// positions start at 0.02 and learn slowly). Off (absent) in folders written before it.
    #[serde(default)]
    pub sincos_pos: bool,
}

impl Default for VideoDiTConfig {
    /// The miniature's: 16×16 RGB, 4×4 patches, up to 4 frames, width 96, 4 heads, 4 blocks.
    fn default() -> Self {
        Self {
            in_channels: 3,
            patch: 4,
            height: 16,
            width: 16,
            max_frames: 4,
            hidden: 96,
            heads: 4,
            layers: 4,
            mlp_ratio: 4,
            context_dim: 96,
            sincos_pos: true,
        }
    }
}

impl VideoDiTConfig {
    /// Checks the sizes; errors name the field.
    ///
    /// # Errors
    /// [`Error::BadConfig`].
    pub fn validate(&self) -> Result<()> {
        for (f, v) in [
            ("in_channels", self.in_channels),
            ("patch", self.patch),
            ("height", self.height),
            ("width", self.width),
            ("max_frames", self.max_frames),
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("mlp_ratio", self.mlp_ratio),
            ("context_dim", self.context_dim),
        ] {
            if v == 0 || v > 1 << 16 {
                return Err(Error::config(f, format!("{v} must be in 1..=65536")));
            }
        }
        if !self.height.is_multiple_of(self.patch) || !self.width.is_multiple_of(self.patch) {
            return Err(Error::config(
                "patch",
                format!("{} must divide {}×{}", self.patch, self.height, self.width),
            ));
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(Error::config(
                "heads",
                format!("{} heads do not divide hidden {}", self.heads, self.hidden),
            ));
        }
        if self.layers > 256 {
            return Err(Error::config("layers", "at most 256"));
        }
        Ok(())
    }

    fn grid(&self) -> (usize, usize) {
        (self.height / self.patch, self.width / self.patch)
    }
}

/// A zero-initialised linear layer (adaLN gates, the output layer).
fn zero_linear(i: usize, o: usize, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints((o, i), "weight", Init::Const(0.0))?;
    let b = vb.get_with_hints(o, "bias", Init::Const(0.0))?;
    Linear::from_weights(w, Some(b))
}

/// `x·(1 + scale) + shift` with per-sample `[B, D]` modulation on `[B, N, D]` tokens.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let s = (scale.unsqueeze(1)? + 1.0)?;
    Ok(x.broadcast_mul(&s)?.broadcast_add(&shift.unsqueeze(1)?)?)
}

#[derive(Debug, Clone)]
struct DiTBlock {
    norm1: LayerNorm,
    attn: MultiHeadAttention,
    norm2: LayerNorm,
    cross: MultiHeadAttention,
    norm3: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ada: Linear,
}

impl DiTBlock {
    fn new(c: &VideoDiTConfig, vb: VarBuilder) -> Result<Self> {
        let d = c.hidden;
        let mha = |kv: Option<usize>| MhaConfig {
            embed_dim: d,
            num_heads: c.heads,
            kv_dim: kv,
            qkv_bias: true,
            out_bias: true,
            names: ["to_q", "to_k", "to_v", "to_out"].map(String::from),
            scale: None,
        };
        Ok(Self {
            norm1: LayerNorm::new(d, 1e-6, false, vb.pp("norm1"))?,
            attn: MultiHeadAttention::new(&mha(None), vb.pp("attn"))?,
            norm2: LayerNorm::new(d, 1e-6, true, vb.pp("norm2"))?,
            cross: MultiHeadAttention::new(&mha(Some(c.context_dim)), vb.pp("cross"))?,
            norm3: LayerNorm::new(d, 1e-6, false, vb.pp("norm3"))?,
            fc1: Linear::new(d, d * c.mlp_ratio, true, vb.pp("mlp").pp("fc1"))?,
            fc2: Linear::new(d * c.mlp_ratio, d, true, vb.pp("mlp").pp("fc2"))?,
            ada: zero_linear(d, 6 * d, vb.pp("ada"))?,
        })
    }

    /// # Shapes
    /// `x [B, N, D]`, `temb [B, D]` (already SiLU'd), `ctx [B, M, Dc]` → `[B, N, D]`.
    fn forward(&self, x: &Tensor, temb: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let m = self.ada.forward(temb)?.chunk(6, D::Minus1)?;
        let h = modulate(&self.norm1.forward(x)?, &m[0], &m[1])?;
        let h = self.attn.forward(&h, None, None, false)?;
        let x = (x + h.broadcast_mul(&m[2].unsqueeze(1)?)?)?;
        let h = self
            .cross
            .forward(&self.norm2.forward(&x)?, Some(ctx), None, false)?;
        let x = (x + h)?;
        let h = modulate(&self.norm3.forward(&x)?, &m[3], &m[4])?;
        let h = self
            .fc2
            .forward(&Activation::GeluTanh.forward(&self.fc1.forward(&h)?)?)?;
        Ok((x + h.broadcast_mul(&m[5].unsqueeze(1)?)?)?)
    }
}

/// The miniature's video diffusion transformer (see the module docs). Keys: `patch_embed.*`,
/// `pos_spatial [S, D]`, `pos_temporal [max_frames, D]`, `time_embed.linear_{1,2}.*`,
/// `blocks.{i}.{norm2, attn, cross, mlp.fc1, mlp.fc2, ada}.*`, `final_ada.*`, `proj_out.*`.
#[derive(Debug, Clone)]
pub struct VideoDiT {
    patch_embed: Linear,
    pos_spatial: Tensor,
    pos_temporal: Tensor,
    /// Fixed sine–cosine positions `[max_frames, gh·gw, D]` (when `sincos_pos`).
    pos_fixed: Option<Tensor>,
    time_proj: Timesteps,
    time_embed: TimestepEmbedding,
    blocks: Vec<DiTBlock>,
    final_norm: LayerNorm,
    final_ada: Linear,
    proj_out: Linear,
    cfg: VideoDiTConfig,
}

impl VideoDiT {
    /// Builds (or loads) the model from `vb`.
    ///
    /// # Errors
    /// An invalid config; missing / mis-shaped tensors.
    pub fn new(cfg: &VideoDiTConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.hidden;
        let (gh, gw) = cfg.grid();
        let pdim = cfg.in_channels * cfg.patch * cfg.patch;
        let pos = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        Ok(Self {
            patch_embed: Linear::new(pdim, d, true, vb.pp("patch_embed"))?,
            pos_spatial: vb.get_with_hints((gh * gw, d), "pos_spatial", pos)?,
            pos_temporal: vb.get_with_hints((cfg.max_frames, d), "pos_temporal", pos)?,
            time_proj: Timesteps::new(d, true, 0.0),
            time_embed: TimestepEmbedding::new(d, d, None, Activation::Silu, vb.pp("time_embed"))?,
            blocks: (0..cfg.layers)
                .map(|i| DiTBlock::new(cfg, vb.pp("blocks").pp(i)))
                .collect::<Result<_>>()?,
            final_norm: LayerNorm::new(d, 1e-6, false, vb.pp("final_norm"))?,
            final_ada: zero_linear(d, 2 * d, vb.pp("final_ada"))?,
            proj_out: zero_linear(d, pdim, vb.pp("proj_out"))?,
            pos_fixed: if cfg.sincos_pos {
                Some(sincos_positions(cfg.max_frames, gh, gw, d, vb.device())?)
            } else {
                None
            },
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VideoDiTConfig {
        &self.cfg
    }

    /// The prediction for `sample` at `timestep` given `context`.
    ///
    /// # Shapes
    /// `sample [B, C, T, H, W]` (`T ≤ max_frames`, `H, W` as configured), `timestep [1]` or
    /// `[B]`, `context [B, M, context_dim]` → `[B, C, T, H, W]`.
    ///
    /// # Errors
    /// Shapes other than the configured ones.
    pub fn forward(&self, sample: &Tensor, timestep: &Tensor, context: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, ch, t, h, w) = sample.dims5()?;
        if ch != c.in_channels || h != c.height || w != c.width || t == 0 || t > c.max_frames {
            return Err(Error::shape(
                "sample",
                &[b, c.in_channels, c.max_frames, c.height, c.width],
                sample.dims(),
            ));
        }
        match context.dims() {
            &[cb, m, cd] if cb == b && m > 0 && cd == c.context_dim => {}
            other => return Err(Error::shape("context", &[b, 1, c.context_dim], other)),
        }
        let (p, d) = (c.patch, c.hidden);
        let (gh, gw) = c.grid();
        let _ = (h, w);
        // 1. patches [B, T·S, C·p·p] -> tokens
        let x = self.patch_embed.forward(&patchify(sample, p)?)?;
        // 2. positions: spatial [S, D] + temporal [T, D] -> [T·S, D]
        let s = gh * gw;
        let pos = self
            .pos_temporal
            .narrow(0, 0, t)?
            .unsqueeze(1)?
            .broadcast_add(&self.pos_spatial.unsqueeze(0)?)?
            .reshape((t * s, d))?;
        let pos = match &self.pos_fixed {
            Some(f) => {
                (pos + f
                    .narrow(0, 0, t)?
                    .reshape((t * s, d))?
                    .to_dtype(x.dtype())?)?
            }
            None => pos,
        };
        let mut x = x.broadcast_add(&pos)?;
        // 3. timestep embedding [B, D]
        let ts = timestep.flatten_all()?.to_dtype(DType::F32)?;
        let ts = match ts.dims1()? {
            1 => ts.broadcast_as(b)?.contiguous()?,
            n if n == b => ts,
            _ => return Err(Error::shape("timestep", &[b], timestep.dims())),
        };
        let temb = self.time_embed.forward(&self.time_proj.forward(&ts)?)?;
        let temb = Activation::Silu.forward(&temb)?;
        let ctx = context.to_dtype(x.dtype())?;
        // 4. blocks
        for blk in &self.blocks {
            x = blk.forward(&x, &temb, &ctx)?;
        }
        // 5. final adaLN and patches back: [B, T·S, C·p·p] -> [B, C, T, H, W]
        let m = self.final_ada.forward(&temb)?.chunk(2, D::Minus1)?;
        let x = modulate(&self.final_norm.forward(&x)?, &m[0], &m[1])?;
        let x = self.proj_out.forward(&x)?;
        unpatchify(&x, (b, ch, t, h, w), p)
    }
}

/// Fixed positions `[frames, gh·gw, d]`: per token, the frame's 1-D sine–cosine code over all
/// `d` channels plus the 2-D code of its grid cell (first half of the channels for the row,
/// second half for the column; frequencies `1 / 10000^(k / (d/4))`, as MAE's).
fn sincos_positions(
    frames: usize,
    gh: usize,
    gw: usize,
    d: usize,
    dev: &candle_core::Device,
) -> Result<Tensor> {
    fn code(pos: f64, dim: usize, out: &mut [f32]) {
        let half = dim / 2;
        for k in 0..half {
            let w = 1.0 / 10000f64.powf(k as f64 / half.max(1) as f64);
            out[k] += (pos * w).sin() as f32;
            out[half + k] += (pos * w).cos() as f32;
        }
    }
    let mut v = vec![0f32; frames * gh * gw * d];
    for f in 0..frames {
        for y in 0..gh {
            for x in 0..gw {
                let o = ((f * gh + y) * gw + x) * d;
                let tok = &mut v[o..o + d];
                code(f as f64, d, tok);
                let h = d / 2;
                code(y as f64, h, &mut tok[..h]);
                code(x as f64, d - h, &mut tok[h..]);
            }
        }
    }
    Ok(Tensor::from_vec(v, (frames, gh * gw, d), dev)?)
}

/// Cuts a clip into per-frame patches, frame-major then row-major.
///
/// # Shapes
/// `[B, C, T, H, W]` → `[B, T·(H/p)·(W/p), C·p·p]` (each token `[C, p, p]` flattened).
///
/// # Errors
/// `p` not dividing `H` and `W`.
pub fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    let (b, ch, t, h, w) = x.dims5()?;
    if p == 0 || !h.is_multiple_of(p) || !w.is_multiple_of(p) {
        return Err(Error::invalid("patch", format!("{p} must divide {h}×{w}")));
    }
    let (gh, gw) = (h / p, w / p);
    // [B, C, T, H, W] -> [B·T, C, gh, p, gw, p] -> [B·T, gh, gw, C, p, p]
    Ok(x.permute((0, 2, 1, 3, 4))?
        .contiguous()?
        .reshape((b * t, ch, gh, p, gw, p))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((b, t * gh * gw, ch * p * p))?)
}

/// The inverse of [`patchify`].
///
/// # Shapes
/// `[B, T·(H/p)·(W/p), C·p·p]` → `[B, C, T, H, W]` for `shape = (B, C, T, H, W)`.
///
/// # Errors
/// A token tensor of another size.
pub fn unpatchify(
    x: &Tensor,
    shape: (usize, usize, usize, usize, usize),
    p: usize,
) -> Result<Tensor> {
    let (b, ch, t, h, w) = shape;
    if p == 0 || !h.is_multiple_of(p) || !w.is_multiple_of(p) {
        return Err(Error::invalid("patch", format!("{p} must divide {h}×{w}")));
    }
    let (gh, gw) = (h / p, w / p);
    if x.dims() != [b, t * gh * gw, ch * p * p] {
        return Err(Error::shape(
            "tokens",
            &[b, t * gh * gw, ch * p * p],
            x.dims(),
        ));
    }
    // [B·T, gh, gw, C, p, p] -> [B·T, C, gh, p, gw, p] -> [B, T, C, H, W] -> [B, C, T, H, W]
    Ok(x.reshape((b * t, gh, gw, ch, p, p))?
        .permute((0, 3, 1, 4, 2, 5))?
        .contiguous()?
        .reshape((b, t, ch, h, w))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()?)
}

impl ContextDenoiser for VideoDiT {
    fn predict(&self, sample: &Tensor, timestep: &Tensor, context: &Tensor) -> Result<Tensor> {
        self.forward(sample, timestep, context)
    }

    fn context_dim(&self) -> usize {
        self.cfg.context_dim
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn patches_round_trip_and_a_new_model_predicts_zero() {
        let dev = Device::Cpu;
        let cfg = VideoDiTConfig {
            hidden: 32,
            heads: 2,
            layers: 2,
            context_dim: 8,
            ..VideoDiTConfig::default()
        };
        let vb = video_testkit::seeded_var_builder(1, DType::F32, &dev);
        let m = VideoDiT::new(&cfg, vb).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 3, 16, 16), &dev).unwrap();
        let ctx = Tensor::randn(0f32, 1.0, (2, 5, 8), &dev).unwrap();
        let y = m
            .forward(&x, &Tensor::new(&[10f32, 500.0], &dev).unwrap(), &ctx)
            .unwrap();
        assert_eq!(y.dims(), x.dims());
        assert_eq!(
            y.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        // patches round-trip, and a token is one frame's p×p block
        let tok = patchify(&x, 4).unwrap();
        assert_eq!(tok.dims(), &[2, 3 * 16, 48]);
        let back = unpatchify(&tok, (2, 3, 3, 16, 16), 4).unwrap();
        assert_eq!(
            (back - &x)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        // token 1·16 + 1·4 + 2 (frame 1, row 1, column 2), element (c 0, 1, 3)
        let v = tok
            .get(0)
            .unwrap()
            .get(16 + 4 + 2)
            .unwrap()
            .get(4 + 3)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = x
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(1)
            .unwrap()
            .get(4 + 1)
            .unwrap()
            .get(8 + 3)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(v, want);
        assert!(m
            .forward(
                &x,
                &Tensor::new(&[1f32], &dev).unwrap(),
                &ctx.narrow(2, 0, 4).unwrap()
            )
            .is_err());
        assert!(m
            .forward(
                &x.narrow(3, 0, 8).unwrap(),
                &Tensor::new(&[1f32], &dev).unwrap(),
                &ctx
            )
            .is_err());
        let bad = VideoDiTConfig {
            patch: 5,
            ..cfg.clone()
        };
        assert!(bad.validate().is_err());
    }
}
