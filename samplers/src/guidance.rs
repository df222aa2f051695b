//! Guidance wrappers, each itself a [`Denoiser`]: classifier-free guidance ([`Cfg`]), dual
//! frame + text guidance in the InstructPix2Pix form ([`DualGuidance`], VIDiff / AID), and SVD's
//! per-frame linear guidance ([`PerFrameGuidance`]).
//!
//! Guidance is applied to the x₀ estimates. Every combination here has weights summing to 1, and
//! preconditioning is affine in the network output with a shared `c_skip·x` term, so this equals
//! guiding the raw ε / v outputs as diffusers' pipelines do.
//!
//! The unconditional variants come from [`Conditioning::without`] (dropped parts become zeros of
//! the same shape). With `batched = true` (the default) the passes are concatenated on the batch
//! axis ([`Conditioning::cat_batch`]) and run as one network call.

use candle_core::Tensor;
use vidgen_video_core::{CondDrop, Conditioning, Denoiser, Error, Result};

use crate::schedule::torch_linspace_f32;
use crate::util::f32_of;

/// Runs `inner` on several conditionings of the same `x`, batched into one call when asked.
fn passes<D: Denoiser + ?Sized>(
    inner: &D,
    x: &Tensor,
    sigma: &Tensor,
    conds: &[&Conditioning],
    batched: bool,
) -> Result<Vec<Tensor>> {
    if !batched || conds.len() == 1 {
        return conds.iter().map(|c| inner.denoise(x, sigma, c)).collect();
    }
    let b = x.dims().first().copied().unwrap_or(1);
    let k = conds.len();
    let xs: Vec<&Tensor> = (0..k).map(|_| x).collect();
    let xk = Tensor::cat(&xs, 0)?;
    let sk = match sigma.elem_count() {
        1 => sigma.clone(),
        n if n == b => {
            let ss: Vec<&Tensor> = (0..k).map(|_| sigma).collect();
            Tensor::cat(&ss, 0)?
        }
        _ => return Err(Error::shape("sigma", &[b], sigma.dims())),
    };
    let ck = Conditioning::cat_batch(conds)?;
    let out = inner.denoise(&xk, &sk, &ck)?;
    if out.dims().first() != Some(&(b * k)) {
        return Err(Error::shape(
            "batched guidance output",
            &[b * k],
            out.dims(),
        ));
    }
    (0..k).map(|i| Ok(out.narrow(0, i * b, b)?)).collect()
}

fn union(a: CondDrop, b: CondDrop) -> CondDrop {
    CondDrop {
        context: a.context || b.context,
        concat: a.concat || b.concat,
        added: a.added || b.added,
    }
}

/// Classifier-free guidance: `D = D_u + s·(D_c − D_u)`, `D_u` with the parts in `drop` zeroed.
///
/// With `scale == 1` the unconditional pass is skipped (the result is exactly the conditional
/// output).
#[derive(Debug, Clone)]
pub struct Cfg<D> {
    /// The conditional denoiser.
    pub inner: D,
    /// Guidance scale `s` (1 = no guidance).
    pub scale: f64,
    /// What the unconditional pass drops (default: the cross-attention context).
    pub drop: CondDrop,
    /// Batch the two passes into one call.
    pub batched: bool,
}

impl<D> Cfg<D> {
    /// Text CFG (drops the context), batched.
    pub fn new(inner: D, scale: f64) -> Self {
        Self {
            inner,
            scale,
            drop: CondDrop {
                context: true,
                ..Default::default()
            },
            batched: true,
        }
    }
}

impl<D: Denoiser> Denoiser for Cfg<D> {
    /// # Shapes
    /// `x` `[B, …]`, `sigma` `[B]` or scalar; returns `[B, …]`. Batched: one call on `[2B, …]`.
    fn denoise(&self, x: &Tensor, sigma: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        if self.scale == 1.0 {
            return self.inner.denoise(x, sigma, cond);
        }
        let uncond = cond.without(self.drop)?;
        let out = passes(&self.inner, x, sigma, &[&uncond, cond], self.batched)?;
        let (u, c) = (f32_of(&out[0])?, f32_of(&out[1])?);
        Ok(c.sub(&u)?
            .affine(self.scale, 0.0)?
            .add(&u)?
            .to_dtype(x.dtype())?)
    }
}

/// Dual guidance in the InstructPix2Pix form:
/// `D = D_∅ + s_T·(D_{F,T} − D_F) + s_F·(D_F − D_∅)`, where `D_{F,T}` is fully conditioned, `D_F`
/// drops the text (`text_drop`) and `D_∅` drops text and frames (`text_drop ∪ frame_drop`).
///
/// `frame_scale` is InstructPix2Pix's `image_guidance_scale` (VIDiff's video scale, AID's frame
/// scale); `text_scale` its `guidance_scale`. With both scales 1 only the full pass runs.
#[derive(Debug, Clone)]
pub struct DualGuidance<D> {
    /// The conditional denoiser.
    pub inner: D,
    /// Frame / image / video guidance scale.
    pub frame_scale: f64,
    /// Text / instruction guidance scale.
    pub text_scale: f64,
    /// What "no frames" drops (default: the channel-concatenated latents).
    pub frame_drop: CondDrop,
    /// What "no text" drops (default: the cross-attention context).
    pub text_drop: CondDrop,
    /// Batch the three passes into one call.
    pub batched: bool,
}

impl<D> DualGuidance<D> {
    /// Frames on `concat`, text on `context`, batched.
    pub fn new(inner: D, frame_scale: f64, text_scale: f64) -> Self {
        Self {
            inner,
            frame_scale,
            text_scale,
            frame_drop: CondDrop {
                concat: true,
                ..Default::default()
            },
            text_drop: CondDrop {
                context: true,
                ..Default::default()
            },
            batched: true,
        }
    }
}

impl<D: Denoiser> Denoiser for DualGuidance<D> {
    /// # Shapes
    /// `x` `[B, …]`, `sigma` `[B]` or scalar; returns `[B, …]`. Batched: one call on `[3B, …]`.
    fn denoise(&self, x: &Tensor, sigma: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        if self.frame_scale == 1.0 && self.text_scale == 1.0 {
            return self.inner.denoise(x, sigma, cond);
        }
        let frame_only = cond.without(self.text_drop)?;
        let none = cond.without(union(self.text_drop, self.frame_drop))?;
        let out = passes(
            &self.inner,
            x,
            sigma,
            &[cond, &frame_only, &none],
            self.batched,
        )?;
        let (full, fr, un) = (f32_of(&out[0])?, f32_of(&out[1])?, f32_of(&out[2])?);
        let text_term = full.sub(&fr)?.affine(self.text_scale, 0.0)?;
        let frame_term = fr.sub(&un)?.affine(self.frame_scale, 0.0)?;
        Ok(un.add(&text_term)?.add(&frame_term)?.to_dtype(x.dtype())?)
    }
}

/// Stable Video Diffusion's per-frame guidance: CFG whose scale grows linearly over the frames,
/// `s_f = linspace(min_scale, max_scale, T)[f]`, broadcast over `[B, C, T, H, W]`. The
/// unconditional pass drops the image embedding (context) and the conditioning latents (concat),
/// as SVD does. As in SVD's pipeline, guidance is off (conditional output only) when
/// `max_scale ≤ 1`.
#[derive(Debug, Clone)]
pub struct PerFrameGuidance<D> {
    /// The conditional denoiser.
    pub inner: D,
    /// Scale at the first frame (SVD: 1.0).
    pub min_scale: f64,
    /// Scale at the last frame (SVD: 3.0).
    pub max_scale: f64,
    /// What the unconditional pass drops.
    pub drop: CondDrop,
    /// Batch both passes into one call.
    pub batched: bool,
}

impl<D> PerFrameGuidance<D> {
    /// SVD's guidance (drops context and concat), batched.
    pub fn new(inner: D, min_scale: f64, max_scale: f64) -> Self {
        Self {
            inner,
            min_scale,
            max_scale,
            drop: CondDrop {
                context: true,
                concat: true,
                added: false,
            },
            batched: true,
        }
    }

    /// The per-frame scales for `t` frames (float32, as `torch.linspace`).
    pub fn scales(&self, t: usize) -> Vec<f32> {
        torch_linspace_f32(self.min_scale as f32, self.max_scale as f32, t)
    }
}

impl<D: Denoiser> Denoiser for PerFrameGuidance<D> {
    /// # Shapes
    /// `x` `[B, C, T, H, W]`, `sigma` `[B]` or scalar; returns `[B, C, T, H, W]`.
    fn denoise(&self, x: &Tensor, sigma: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        if self.max_scale <= 1.0 {
            return self.inner.denoise(x, sigma, cond);
        }
        if x.rank() != 5 {
            return Err(Error::invalid(
                "x",
                format!(
                    "per-frame guidance needs video [B, C, T, H, W], got {:?}",
                    x.dims()
                ),
            ));
        }
        let t = x.dim(2)?;
        let scale = Tensor::from_vec(self.scales(t), (1, 1, t, 1, 1), x.device())?;
        let uncond = cond.without(self.drop)?;
        let out = passes(&self.inner, x, sigma, &[&uncond, cond], self.batched)?;
        let (u, c) = (f32_of(&out[0])?, f32_of(&out[1])?);
        Ok(c.sub(&u)?
            .broadcast_mul(&scale)?
            .add(&u)?
            .to_dtype(x.dtype())?)
    }
}
