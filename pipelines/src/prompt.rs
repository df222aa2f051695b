//! Prompt encoding as Stable Diffusion pipelines do it (diffusers' `encode_prompt` /
//! `_encode_prompt`): the CLIP tokenizer pads every text to `model_max_length` (77) with
//! truncation, and the CLIP text model's `last_hidden_state` is the cross-attention context.
//! No attention mask is passed (SD checkpoints have no `use_attention_mask`), and `clip_skip` is
//! not offered.

use candle_core::{DType, Device, Tensor};
use vidgen_clip_encoders::{CLIPTextModel, CLIPTokenizer};
use vidgen_video_core::{Error, Result};

use crate::folder::{ComponentReport, PipelineFolder};

/// A pipeline's `tokenizer/` and `text_encoder/`.
pub struct PromptEncoder {
    /// `tokenizer/` (`CLIPTokenizer`).
    pub tokenizer: CLIPTokenizer,
    /// `text_encoder/` (`CLIPTextModel`).
    pub text_encoder: CLIPTextModel,
}

impl PromptEncoder {
    /// Loads `tokenizer/` and `text_encoder/` of a pipeline folder; returns their report rows
    /// (`text_encoder`, `tokenizer`).
    ///
    /// # Errors
    /// A component missing or of another class; unreadable tokenizer files; text encoder
    /// config or weight errors (named with their files).
    pub fn from_folder(
        folder: &PipelineFolder,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, Vec<ComponentReport>)> {
        let (_, dir) = folder.component("text_encoder", &["CLIPTextModel"])?;
        let (text_encoder, load) = CLIPTextModel::from_pretrained(&dir, dtype, device)?;
        let r1 = folder.report_for("text_encoder", dtype, load)?;
        let (_, tdir) = folder.component("tokenizer", &["CLIPTokenizer", "CLIPTokenizerFast"])?;
        let tokenizer = CLIPTokenizer::from_dir(&tdir)?;
        let r2 = folder.weightless("tokenizer", &["CLIPTokenizer", "CLIPTokenizerFast"])?;
        Ok((
            Self {
                tokenizer,
                text_encoder,
            },
            vec![r1, r2],
        ))
    }

    /// Width of the embeddings (the text model's `hidden_size`).
    pub fn width(&self) -> usize {
        self.text_encoder.config().hidden_size
    }

    /// Encodes one text: ids padded / truncated to `max_length`, then `last_hidden_state`.
    ///
    /// # Shapes
    /// Returns `[1, max_length, D]` in the text encoder's dtype.
    ///
    /// # Errors
    /// Tokenizer failures; ids outside the text model's vocabulary or positions.
    pub fn encode(&self, text: &str) -> Result<Tensor> {
        let dev = self.text_encoder.text_model().device().clone();
        let (ids, _) = self.tokenizer.encode_padded(text)?;
        let n = ids.len();
        let ids = Tensor::from_vec(ids, (1, n), &dev)?;
        Ok(self.text_encoder.forward(&ids)?.last_hidden_state)
    }

    /// The prompt and the unconditional text (`negative_prompt`, or `""` as diffusers uses
    /// when none is given), each encoded on its own as diffusers does.
    ///
    /// # Shapes
    /// Returns `([1, N, D], [1, N, D])`.
    ///
    /// # Errors
    /// As [`PromptEncoder::encode`].
    pub fn encode_pair(&self, prompt: &str, negative: Option<&str>) -> Result<(Tensor, Tensor)> {
        let p = self.encode(prompt)?;
        let n = self.encode(negative.unwrap_or(""))?;
        if p.dims() != n.dims() {
            return Err(Error::shape(
                "negative prompt embeddings",
                p.dims(),
                n.dims(),
            ));
        }
        Ok((p, n))
    }
}
