//! Multimodal instructions (VIDiff: image embedding → MLP, concatenated with the text
//! embedding; VIMI: plus `k` retrieved example embeddings, found by
//! [`crate::retrieval::ExampleBank`]).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_nn::Linear;

/// Sizes of a [`MultimodalInstruction`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct MultimodalInstructionConfig {
    /// Width of the image embedding (e.g. CLIP vision, 1024).
    pub image_dim: usize,
    /// Width of the text embedding, and of the output context (e.g. CLIP text, 1024).
    pub text_dim: usize,
    /// Hidden width of the image MLP.
    pub hidden_dim: usize,
    /// Width of retrieved example embeddings (projected to `text_dim`); `None`: no examples.
    #[serde(default)]
    pub example_dim: Option<usize>,
}

impl MultimodalInstructionConfig {
    /// Checks the fields.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming a zero width.
    pub fn validate(&self) -> Result<()> {
        if self.image_dim == 0 || self.text_dim == 0 || self.hidden_dim == 0 {
            return Err(Error::config(
                "image_dim/text_dim/hidden_dim",
                "must be ≥ 1",
            ));
        }
        if self.example_dim == Some(0) {
            return Err(Error::config("example_dim", "must be ≥ 1"));
        }
        Ok(())
    }
}

/// VIDiff's multimodal instruction encoder: image tokens go through `mlp.fc1 → GELU → mlp.fc2`
/// into the text space and are appended to the text tokens; VIMI-style, `k` retrieved example
/// embeddings (through `example_proj`) are prepended as in-context tokens.
#[derive(Debug, Clone)]
pub struct MultimodalInstruction {
    fc1: Linear,
    fc2: Linear,
    example_proj: Option<Linear>,
    cfg: MultimodalInstructionConfig,
}

impl MultimodalInstruction {
    /// Builds the encoder.
    ///
    /// # Errors
    /// Zero sizes; missing / mis-shaped tensors in `vb`.
    pub fn new(cfg: &MultimodalInstructionConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let example_proj = match cfg.example_dim {
            Some(d) => Some(Linear::new(d, cfg.text_dim, true, vb.pp("example_proj"))?),
            None => None,
        };
        Ok(Self {
            fc1: Linear::new(cfg.image_dim, cfg.hidden_dim, true, vb.pp("mlp").pp("fc1"))?,
            fc2: Linear::new(cfg.hidden_dim, cfg.text_dim, true, vb.pp("mlp").pp("fc2"))?,
            example_proj,
            cfg: cfg.clone(),
        })
    }

    /// The image tokens mapped into the text space.
    ///
    /// # Shapes
    /// `image [B, Li, image_dim]` → `[B, Li, text_dim]`.
    ///
    /// # Errors
    /// A wrong rank or width.
    pub fn embed_image(&self, image: &Tensor) -> Result<Tensor> {
        check3("image", image, None, self.cfg.image_dim)?;
        self.fc2.forward(&self.fc1.forward(image)?.gelu_erf()?)
    }

    /// The instruction context: `[examples ‖ text ‖ MLP(image)]` on the token axis.
    ///
    /// # Shapes
    /// - `text`: `[B, Lt, text_dim]`
    /// - `image`: `[B, Li, image_dim]`
    /// - `examples`: `[B, k, example_dim]` (retrieved example embeddings, e.g. by
    ///   [`crate::retrieval::ExampleBank::top_k`]) or `None`
    /// - returns `[B, k + Lt + Li, text_dim]` (`k = 0` without examples)
    ///
    /// # Errors
    /// Wrong ranks, widths or batch sizes; examples given to an encoder built without
    /// `example_dim`.
    pub fn forward(
        &self,
        text: &Tensor,
        image: &Tensor,
        examples: Option<&Tensor>,
    ) -> Result<Tensor> {
        let b = check3("text", text, None, self.cfg.text_dim)?;
        check3("image", image, Some(b), self.cfg.image_dim)?;
        let img = self.embed_image(image)?;
        let mut parts = Vec::with_capacity(3);
        if let Some(ex) = examples {
            let proj = self.example_proj.as_ref().ok_or_else(|| {
                Error::invalid(
                    "examples",
                    "this encoder was built without example_dim (no example projection)",
                )
            })?;
            let d = self.cfg.example_dim.unwrap_or(0);
            check3("examples", ex, Some(b), d)?;
            parts.push(proj.forward(ex)?);
        }
        parts.push(text.clone());
        parts.push(img);
        Ok(Tensor::cat(&parts, 1)?)
    }
}

fn check3(name: &str, x: &Tensor, batch: Option<usize>, width: usize) -> Result<usize> {
    match x.dims() {
        &[b, l, w] if w == width && l > 0 && batch.is_none_or(|bb| bb == b) => Ok(b),
        d => Err(Error::shape(
            name,
            &[batch.unwrap_or(d.first().copied().unwrap_or(1)), 1, width],
            d,
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::retrieval::ExampleBank;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn instruction_shapes_and_errors() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let cfg = MultimodalInstructionConfig {
            image_dim: 20,
            text_dim: 16,
            hidden_dim: 32,
            example_dim: Some(12),
        };
        let m = MultimodalInstruction::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))
            .unwrap();
        let text = Tensor::ones((2, 7, 16), DType::F32, &dev).unwrap();
        let img = Tensor::ones((2, 3, 20), DType::F32, &dev).unwrap();
        let out = m.forward(&text, &img, None).unwrap();
        assert_eq!(out.dims(), &[2, 10, 16]);
        // the text tokens are passed through unchanged
        let d = (out.narrow(1, 0, 7).unwrap() - &text)
            .unwrap()
            .abs()
            .unwrap();
        assert_eq!(d.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        // VIMI: retrieved examples prepended
        let bank = Tensor::randn(0f32, 1.0, (50, 12), &dev).unwrap();
        let eb = ExampleBank::new(&bank).unwrap().with_chunk(16);
        let q = Tensor::randn(0f32, 1.0, (2, 12), &dev).unwrap();
        let hits = eb.top_k(&q, 4).unwrap();
        let ex: Vec<Tensor> = hits.iter().map(|h| eb.rows(&h.indices).unwrap()).collect();
        let ex = Tensor::stack(&ex, 0).unwrap();
        let out = m.forward(&text, &img, Some(&ex)).unwrap();
        assert_eq!(out.dims(), &[2, 14, 16]);
        assert!(m
            .forward(&text, &img.narrow(0, 0, 1).unwrap(), None)
            .is_err());
        assert!(eb.rows(&[50]).is_err());
        assert!(eb
            .top_k(&Tensor::ones((1, 5), DType::F32, &dev).unwrap(), 2)
            .is_err());
    }
}
