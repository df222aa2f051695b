//! VIMI's multimodal conditioning: the prompt's token states and the retrieved (or given)
//! examples' embeddings mapped into one cross-attention context.
//!
//! # The mixing, and why
//! VIMI feeds the prompt and the retrieved image–text pairs through a frozen multimodal LLM
//! whose output conditions the video generator; which LLM and how its tokens enter are not
//! published. vidgen has no multimodal LLM small enough for the miniature, so the instruction
//! is assembled directly in the denoiser's context space, **on the token axis**:
//!
//! ```text
//! context = [ text_proj(prompt states)  ‖  example tokens of example 1 ‖ … ‖ of example k ]
//!             [B, L_text, D]                 [B, F, D] each (F = 1 for an image, T for a clip)
//! example token (j, f) = example_proj(e_{j,f}) + slot[j] + (image_type | frame[f])
//! motion token j (clips, `motion_token` on) = motion_proj(e_{j,F−1} − e_{j,0}) + slot[j] + motion_type
//! ```
//!
//! - Concatenation keeps every example separately attendable (cross-attention can take the
//!   subject's look from one token and the motion from the text), costs nothing when there are
//!   no examples, and makes "no examples" exactly the text-only model: the context is then the
//!   text tokens alone (tested).
//! - Per-example tokens: an image is one token (its projected CLIP image embedding); a clip is
//!   one token per frame with a learned frame embedding, so the order of the frames (the
//!   motion) is readable.
//! - `slot[j]` tells examples apart (which frames belong together).
//! - The motion token (configs with `motion_token`; older folders have none): cross-attention
//!   weights are a softmax, so the context it reads is a convex mix of its tokens' values, and
//!   the *difference* of two frames' embeddings (where the example's object went) cannot be
//!   formed from per-frame tokens by one attention. The example encoder's embedding places the
//!   object linearly (its stage-0 position head), so `e_last − e_first` carries the motion
//!   linearly, and one token holds it. Without it, the miniature's example-clip task stayed at
//!   chance (15%).
//!
//! Guidance: training drops all examples of a step (example dropout) and replaces the prompt
//! by the empty prompt (text dropout), so the generator learns the unconditional, text-only and
//! full predictions; [`crate::vimi::pipeline`] combines them (`s_T` on the text, `s_E` on the
//! examples).

use candle_core::{Tensor, D};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_nn::Linear;

/// Sizes of a [`VimiConditioner`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VimiConditionerConfig {
    /// Width of the prompt's token states (384 for all-MiniLM-L6-v2).
    pub text_dim: usize,
    /// Width of an example embedding (the CLIP vision projection).
    pub example_dim: usize,
    /// Width of the denoiser's context tokens.
    pub context_dim: usize,
    /// Most examples per prompt (slot table).
    pub max_examples: usize,
    /// Most frames per example clip (frame table).
    pub max_frames: usize,
    /// One more token per example clip carrying its motion (see the module docs); absent
    /// (false) in folders written before it existed.
    #[serde(default)]
    pub motion_token: bool,
}

impl VimiConditionerConfig {
    fn validate(&self) -> Result<()> {
        for (f, v) in [
            ("text_dim", self.text_dim),
            ("example_dim", self.example_dim),
            ("context_dim", self.context_dim),
            ("max_examples", self.max_examples),
            ("max_frames", self.max_frames),
        ] {
            if v == 0 || v > 1 << 16 {
                return Err(Error::config(f, format!("{v} must be in 1..=65536")));
            }
        }
        Ok(())
    }
}

/// Initialiser of the learned embeddings (slots, frames, types).
const EMBEDDING_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

/// The conditioner (see the module docs). Keys: `text_proj.*`, `example_proj.*`, `slot
/// [max_examples, D]`, `frame [max_frames, D]`, `image_type [D]`; with `motion_token`, also
/// `motion_proj.*` and `motion_type [D]`.
#[derive(Debug, Clone)]
pub struct VimiConditioner {
    text_proj: Linear,
    example_proj: Linear,
    slot: Tensor,
    frame: Tensor,
    image_type: Tensor,
    motion: Option<(Linear, Tensor)>,
    cfg: VimiConditionerConfig,
}

impl VimiConditioner {
    /// Builds (or loads) the conditioner from `vb`.
    ///
    /// # Errors
    /// Zero sizes; missing / mis-shaped tensors.
    pub fn new(cfg: &VimiConditionerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.context_dim;
        let emb = EMBEDDING_INIT;
        Ok(Self {
            text_proj: Linear::new(cfg.text_dim, d, true, vb.pp("text_proj"))?,
            example_proj: Linear::new(cfg.example_dim, d, true, vb.pp("example_proj"))?,
            slot: vb.get_with_hints((cfg.max_examples, d), "slot", emb)?,
            frame: vb.get_with_hints((cfg.max_frames, d), "frame", emb)?,
            image_type: vb.get_with_hints(d, "image_type", emb)?,
            motion: if cfg.motion_token {
                Some((
                    Linear::new(cfg.example_dim, d, true, vb.pp("motion_proj"))?,
                    vb.get_with_hints(d, "motion_type", emb)?,
                ))
            } else {
                None
            },
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VimiConditionerConfig {
        &self.cfg
    }

    /// The prompt's tokens in the context space.
    ///
    /// # Shapes
    /// `[B, L, text_dim]` → `[B, L, context_dim]`.
    ///
    /// # Errors
    /// Another width or rank.
    pub fn text_tokens(&self, text: &Tensor) -> Result<Tensor> {
        match text.dims() {
            &[_, l, w] if l > 0 && w == self.cfg.text_dim => self.text_proj.forward(text),
            other => Err(Error::shape(
                "text states",
                &[1, 1, self.cfg.text_dim],
                other,
            )),
        }
    }

    /// The examples' tokens: `F = 1` embeddings per example are images, `F > 1` are clips'
    /// frames (followed, with `motion_token`, by each clip's motion token).
    ///
    /// # Shapes
    /// `[B, k, F, example_dim]` (`1 ≤ k ≤ max_examples`, `1 ≤ F ≤ max_frames`) →
    /// `[B, k·F, context_dim]`, or `[B, k·(F + 1), context_dim]` for clips with
    /// `motion_token`.
    ///
    /// # Errors
    /// Another width or rank; too many examples or frames.
    pub fn example_tokens(&self, examples: &Tensor) -> Result<Tensor> {
        let (b, k, f, w) = examples.dims4().map_err(|_| {
            Error::shape(
                "examples",
                &[1, 1, 1, self.cfg.example_dim],
                examples.dims(),
            )
        })?;
        if w != self.cfg.example_dim || k == 0 || f == 0 {
            return Err(Error::shape(
                "examples",
                &[b, k.max(1), f.max(1), self.cfg.example_dim],
                examples.dims(),
            ));
        }
        if k > self.cfg.max_examples || f > self.cfg.max_frames {
            return Err(Error::invalid(
                "examples",
                format!(
                    "{k} examples of {f} frames; this conditioner takes at most {} of {}",
                    self.cfg.max_examples, self.cfg.max_frames
                ),
            ));
        }
        let d = self.cfg.context_dim;
        let x = self.example_proj.forward(examples)?; // [B, k, F, D]
        let slot = self.slot.narrow(0, 0, k)?.reshape((1, k, 1, d))?;
        let kind = if f == 1 {
            self.image_type.reshape((1, 1, 1, d))?
        } else {
            self.frame.narrow(0, 0, f)?.reshape((1, 1, f, d))?
        };
        let x = x.broadcast_add(&slot)?.broadcast_add(&kind)?;
        match &self.motion {
            Some((proj, kind)) if f > 1 => {
                let delta = (examples.narrow(2, f - 1, 1)? - examples.narrow(2, 0, 1)?)?;
                let m = proj
                    .forward(&delta)? // [B, k, 1, D]
                    .broadcast_add(&slot)?
                    .broadcast_add(&kind.reshape((1, 1, 1, d))?)?;
                Ok(Tensor::cat(&[&x, &m], 2)?.reshape((b, k * (f + 1), d))?)
            }
            _ => Ok(x.reshape((b, k * f, d))?),
        }
    }

    /// The instruction context `[text ‖ examples]` (see the module docs); without examples,
    /// exactly [`VimiConditioner::text_tokens`].
    ///
    /// # Shapes
    /// `text [B, L, text_dim]`, `examples [B, k, F, example_dim]` → `[B, L + k·F,
    /// context_dim]` (`L + k·(F + 1)` for clips with `motion_token`).
    ///
    /// # Errors
    /// As the two token functions; batch sizes that differ.
    pub fn context(&self, text: &Tensor, examples: Option<&Tensor>) -> Result<Tensor> {
        let t = self.text_tokens(text)?;
        match examples {
            None => Ok(t),
            Some(e) => {
                if e.dims().first() != t.dims().first() {
                    return Err(Error::invalid(
                        "examples",
                        format!(
                            "batch {:?} differs from the prompts' {:?}",
                            e.dims(),
                            t.dims()
                        ),
                    ));
                }
                let e = self.example_tokens(e)?.to_dtype(t.dtype())?;
                Ok(Tensor::cat(&[&t, &e], D::Minus2)?)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn context_layout_and_errors() {
        let dev = Device::Cpu;
        let cfg = VimiConditionerConfig {
            motion_token: false,
            text_dim: 12,
            example_dim: 6,
            context_dim: 8,
            max_examples: 3,
            max_frames: 4,
        };
        let c = VimiConditioner::new(&cfg, video_testkit::seeded_var_builder(2, DType::F32, &dev))
            .unwrap();
        let text = Tensor::randn(0f32, 1.0, (2, 5, 12), &dev).unwrap();
        let only = c.context(&text, None).unwrap();
        assert_eq!(only.dims(), &[2, 5, 8]);
        let img = Tensor::randn(0f32, 1.0, (2, 2, 1, 6), &dev).unwrap();
        let ctx = c.context(&text, Some(&img)).unwrap();
        assert_eq!(ctx.dims(), &[2, 7, 8]);
        // the text part is the text-only context
        let d = (ctx.narrow(1, 0, 5).unwrap() - &only)
            .unwrap()
            .abs()
            .unwrap();
        assert_eq!(d.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        let clip = Tensor::randn(0f32, 1.0, (2, 1, 4, 6), &dev).unwrap();
        assert_eq!(c.context(&text, Some(&clip)).unwrap().dims(), &[2, 9, 8]);
        // same embedding in two slots gives two different tokens
        let same = Tensor::ones((1, 2, 1, 6), DType::F32, &dev).unwrap();
        let t = c.example_tokens(&same).unwrap();
        let diff = (t.get(0).unwrap().get(0).unwrap() - t.get(0).unwrap().get(1).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff > 0.0);
        assert!(c
            .context(
                &text,
                Some(&Tensor::ones((2, 4, 1, 6), DType::F32, &dev).unwrap())
            )
            .is_err());
        assert!(c
            .context(
                &text,
                Some(&Tensor::ones((2, 1, 5, 6), DType::F32, &dev).unwrap())
            )
            .is_err());
        assert!(c
            .context(
                &text,
                Some(&Tensor::ones((1, 1, 1, 6), DType::F32, &dev).unwrap())
            )
            .is_err());
        assert!(c
            .context(
                &text,
                Some(&Tensor::ones((2, 1, 1, 7), DType::F32, &dev).unwrap())
            )
            .is_err());
        assert!(c
            .text_tokens(&Tensor::ones((2, 5, 11), DType::F32, &dev).unwrap())
            .is_err());
    }

    /// With `motion_token`, each clip gets one more token after its frames,
    /// `motion_proj(e_last − e_first) + slot[j] + motion_type`; images get none; without it
    /// the layout is unchanged.
    #[test]
    fn motion_token_layout_and_value() {
        let dev = Device::Cpu;
        let cfg = VimiConditionerConfig {
            motion_token: true,
            text_dim: 12,
            example_dim: 6,
            context_dim: 8,
            max_examples: 3,
            max_frames: 4,
        };
        let vb = video_testkit::seeded_var_builder(2, DType::F32, &dev);
        let c = VimiConditioner::new(&cfg, vb.clone()).unwrap();
        let img = Tensor::randn(0f32, 1.0, (2, 2, 1, 6), &dev).unwrap();
        assert_eq!(c.example_tokens(&img).unwrap().dims(), &[2, 2, 8]);
        let clip = Tensor::randn(0f32, 1.0, (2, 2, 4, 6), &dev).unwrap();
        let t = c.example_tokens(&clip).unwrap();
        assert_eq!(t.dims(), &[2, 10, 8]);
        // Example 1's motion token is position 2·5 − 1 = 9.
        let proj = Linear::new(6, 8, true, vb.pp("motion_proj")).unwrap();
        let kind = vb.get_with_hints(8, "motion_type", EMBEDDING_INIT).unwrap();
        let slot = vb.get_with_hints((3, 8), "slot", EMBEDDING_INIT).unwrap();
        let delta = (clip.get(0).unwrap().get(1).unwrap().get(3).unwrap()
            - clip.get(0).unwrap().get(1).unwrap().get(0).unwrap())
        .unwrap();
        let want = ((proj
            .forward(&delta.unsqueeze(0).unwrap())
            .unwrap()
            .squeeze(0)
            .unwrap()
            + slot.get(1).unwrap())
        .unwrap()
            + kind)
            .unwrap();
        let got = t.get(0).unwrap().get(9).unwrap();
        let err = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err < 1e-6, "{err}");
        // The frame tokens are those of a conditioner without the motion token.
        let plain = VimiConditioner::new(
            &VimiConditionerConfig {
                motion_token: false,
                ..cfg.clone()
            },
            vb,
        )
        .unwrap();
        let p = plain.example_tokens(&clip).unwrap(); // [2, 8, 8]
        let frames = t.reshape((2, 2, 5, 8)).unwrap().narrow(2, 0, 4).unwrap();
        let d = (frames.reshape((2, 8, 8)).unwrap() - p)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0);
    }
}
