//! The contracts through which vidgen's crates meet: codecs, denoisers and their conditioning.

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::{Result, VideoShape};

/// How much a [`Codec`] compresses time and space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecStrides {
    /// Frames per code frame (1 for per-frame image codecs).
    pub temporal: usize,
    /// Pixels per code cell along H and W (8 for SD's VAE, 16 for many VQGANs).
    pub spatial: usize,
}

/// Something that turns video into a compact code (continuous latents or discrete tokens) and back.
///
/// Frame VQ tokenizers (`Code = TokenGrid`), the motion tokenizer, and the VAEs
/// (`Code = Tensor` latents) implement it.
///
/// # Shapes
/// `encode`: video `[B, C, T, H, W]` in `[-1, 1]` → code with `T / strides.temporal` frames and
/// `H / strides.spatial × W / strides.spatial` cells. `decode` inverts it.
pub trait Codec {
    /// The code: `Tensor` latents `[B, C', t, h, w]` or a `TokenGrid` `[B, t, h, w]`.
    type Code;

    /// Encodes `[B, C, T, H, W]` video in `[-1, 1]`.
    fn encode(&self, video: &Tensor) -> Result<Self::Code>;

    /// Decodes a code back to `[B, C, T, H, W]` video in `[-1, 1]`.
    fn decode(&self, code: &Self::Code) -> Result<Tensor>;

    /// The compression strides, so shapes can be computed without running the model.
    fn strides(&self) -> CodecStrides;

    /// The code's `(t, h, w)` for a video shape (rounding up, as padded convolutions do).
    fn code_dims(&self, video: VideoShape) -> (usize, usize, usize) {
        let s = self.strides();
        (
            video.t.div_ceil(s.temporal.max(1)),
            video.h.div_ceil(s.spatial.max(1)),
            video.w.div_ceil(s.spatial.max(1)),
        )
    }
}

/// A denoiser in the EDM form: given a noisy sample and its noise level, estimate the clean one.
///
/// Networks trained with ε- or v-prediction over discrete timesteps are wrapped by the `samplers`
/// crate (preconditioning) into a `Denoiser`, so every sampler works with every network.
///
/// # Shapes
/// `x`: noisy sample, any layout the network accepts (for video: `[B, C, T, H, W]`);
/// `sigma`: the noise standard deviation, a `[B]` tensor (one σ per sample) or a scalar `[]`;
/// returns the x₀ estimate with the shape of `x`.
pub trait Denoiser {
    /// Estimates the clean sample `D(x; σ, cond)`.
    fn denoise(&self, x: &Tensor, sigma: &Tensor, cond: &Conditioning) -> Result<Tensor>;
}

impl<D: Denoiser + ?Sized> Denoiser for &D {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        (**self).denoise(x, sigma, cond)
    }
}

/// What a denoiser may be conditioned on. Every field is optional; a network reads the ones it
/// was trained with and ignores the rest.
///
/// Guidance wrappers build unconditional variants with [`Conditioning::without`] (the dropped
/// parts are replaced by zeros of the same shape, which is what SVD, InstructPix2Pix and AID use
/// as "null" conditions).
#[derive(Debug, Clone, Default)]
pub struct Conditioning {
    /// Cross-attention context `[B, L, D]` (text tokens, image embeddings, DQFormer output).
    pub context: Option<Tensor>,
    /// Latents concatenated on channels with the noisy input `[B, C', T, H, W]`
    /// (source video for VIDiff, initial frames for AID / SVD).
    pub concat: Option<Tensor>,
    /// Per-frame mask `[B, 1, T, 1, 1]`: 1 where a frame is given, 0 where it is predicted.
    pub frame_mask: Option<Tensor>,
    /// Added conditioning vectors by name (`added_time_ids [B, 3]`, `pooled [B, D]`).
    pub added: BTreeMap<String, Tensor>,
    /// Residuals or other tensors a specific network or adapter reads, by name.
    pub extra: BTreeMap<String, Tensor>,
}

/// Which parts of a [`Conditioning`] to drop when building an unconditional variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CondDrop {
    /// Zero the cross-attention context (text / instruction guidance).
    pub context: bool,
    /// Zero the channel-concatenated latents (frame / image guidance).
    pub concat: bool,
    /// Zero the added vectors.
    pub added: bool,
}

impl Conditioning {
    /// An empty conditioning (unconditional network).
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets the cross-attention context `[B, L, D]`.
    pub fn with_context(mut self, context: Tensor) -> Self {
        self.context = Some(context);
        self
    }

    /// Sets the channel-concatenated latents `[B, C', T, H, W]`.
    pub fn with_concat(mut self, concat: Tensor) -> Self {
        self.concat = Some(concat);
        self
    }

    /// Adds a named added-conditioning vector.
    pub fn with_added(mut self, name: impl Into<String>, t: Tensor) -> Self {
        self.added.insert(name.into(), t);
        self
    }

    /// A copy with the parts named in `drop` replaced by zeros of the same shape.
    pub fn without(&self, drop: CondDrop) -> Result<Self> {
        let zero = |t: &Option<Tensor>, yes: bool| -> Result<Option<Tensor>> {
            Ok(match t {
                Some(t) if yes => Some(t.zeros_like()?),
                other => other.clone(),
            })
        };
        let mut added = BTreeMap::new();
        for (k, v) in &self.added {
            added.insert(
                k.clone(),
                if drop.added {
                    v.zeros_like()?
                } else {
                    v.clone()
                },
            );
        }
        Ok(Conditioning {
            context: zero(&self.context, drop.context)?,
            concat: zero(&self.concat, drop.concat)?,
            frame_mask: self.frame_mask.clone(),
            added,
            extra: self.extra.clone(),
        })
    }

    /// Concatenates several conditionings along the batch (dim 0), for batched guidance passes.
    /// All must have the same fields present.
    pub fn cat_batch(parts: &[&Conditioning]) -> Result<Self> {
        fn cat(parts: Vec<Option<&Tensor>>, what: &str) -> Result<Option<Tensor>> {
            let present = parts.iter().filter(|p| p.is_some()).count();
            if present == 0 {
                return Ok(None);
            }
            if present != parts.len() {
                return Err(crate::Error::invalid(
                    what,
                    "present in some conditionings of a batch but not in others",
                ));
            }
            let ts: Vec<&Tensor> = parts.into_iter().flatten().collect();
            Ok(Some(Tensor::cat(&ts, 0)?))
        }
        let mut out = Conditioning {
            context: cat(
                parts.iter().map(|c| c.context.as_ref()).collect(),
                "context",
            )?,
            concat: cat(parts.iter().map(|c| c.concat.as_ref()).collect(), "concat")?,
            frame_mask: cat(
                parts.iter().map(|c| c.frame_mask.as_ref()).collect(),
                "frame_mask",
            )?,
            ..Default::default()
        };
        if let Some(first) = parts.first() {
            for k in first.added.keys() {
                let v = cat(parts.iter().map(|c| c.added.get(k)).collect(), k)?;
                if let Some(v) = v {
                    out.added.insert(k.clone(), v);
                }
            }
            for k in first.extra.keys() {
                let v = cat(parts.iter().map(|c| c.extra.get(k)).collect(), k)?;
                if let Some(v) = v {
                    out.extra.insert(k.clone(), v);
                }
            }
        }
        Ok(out)
    }
}
