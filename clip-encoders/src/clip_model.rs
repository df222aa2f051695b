//! `CLIPModel`: both towers, their projections and `logit_scale` (a full OpenAI / OpenCLIP
//! checkpoint as transformers saves it: `text_model.*`, `vision_model.*`,
//! `text_projection.weight`, `visual_projection.weight`, `logit_scale`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, LoadReport, ModelDir, Result};
use vidgen_video_nn::Linear;

use crate::config::CLIPConfig;
use crate::text::CLIPTextTransformer;
use crate::vision::CLIPVisionTransformer;

/// What [`CLIPModel::forward`] returns.
#[derive(Debug, Clone)]
pub struct CLIPModelOutput {
    /// `exp(logit_scale) · cos(image_i, text_j)`, `[N_images, N_texts]`.
    pub logits_per_image: Tensor,
    /// The transpose, `[N_texts, N_images]`.
    pub logits_per_text: Tensor,
    /// L2-normalised text embeddings, `[N_texts, projection_dim]`.
    pub text_embeds: Tensor,
    /// L2-normalised image embeddings, `[N_images, projection_dim]`.
    pub image_embeds: Tensor,
}

/// `CLIPModel` of transformers' `modeling_clip.py`.
#[derive(Debug, Clone)]
pub struct CLIPModel {
    text_model: CLIPTextTransformer,
    vision_model: CLIPVisionTransformer,
    text_projection: Linear,
    visual_projection: Linear,
    logit_scale: Tensor,
    config: CLIPConfig,
}

impl CLIPModel {
    /// Builds (or loads) the model from `vb`.
    ///
    /// # Errors
    /// An invalid config; missing / mis-shaped tensors.
    pub fn new(cfg: &CLIPConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let p = cfg.projection_dim;
        Ok(Self {
            text_model: CLIPTextTransformer::new(&cfg.text_config, vb.pp("text_model"))?,
            vision_model: CLIPVisionTransformer::new(&cfg.vision_config, vb.pp("vision_model"))?,
            text_projection: Linear::new(
                cfg.text_config.hidden_size,
                p,
                false,
                vb.pp("text_projection"),
            )?,
            visual_projection: Linear::new(
                cfg.vision_config.hidden_size,
                p,
                false,
                vb.pp("visual_projection"),
            )?,
            logit_scale: vb.get_with_hints(
                (),
                "logit_scale",
                candle_nn::Init::Const(cfg.logit_scale_init_value),
            )?,
            config: cfg.clone(),
        })
    }

    /// Loads a `CLIPModel` folder (`config.json` with `text_config` / `vision_config` +
    /// weights) strictly.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::BadConfig`] for the config, missing / mis-shaped keys as
    /// [`crate::CLIPTextModel::from_pretrained`].
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("config.json");
        let cfg = CLIPConfig::from_file(&cfg_path)?;
        ModelDir::open(dir)?.load(dtype, device, |vb| Self::new(&cfg, vb))
    }

    /// The configuration.
    pub fn config(&self) -> &CLIPConfig {
        &self.config
    }

    /// The text tower.
    pub fn text_model(&self) -> &CLIPTextTransformer {
        &self.text_model
    }

    /// The vision tower.
    pub fn vision_model(&self) -> &CLIPVisionTransformer {
        &self.vision_model
    }

    /// `logit_scale` (a scalar; the logits are scaled by its exponential).
    pub fn logit_scale(&self) -> &Tensor {
        &self.logit_scale
    }

    /// `text_projection(pooler_output)`, not normalised (transformers' `get_text_features`).
    ///
    /// # Shapes
    /// `input_ids [B, N]`, `attention_mask [B, N]` → `[B, projection_dim]`.
    ///
    /// # Errors
    /// As [`CLIPTextTransformer::forward`].
    pub fn get_text_features(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let out = self.text_model.forward(input_ids, attention_mask)?;
        self.text_projection.forward(&out.pooler_output)
    }

    /// `visual_projection(pooler_output)`, not normalised (transformers' `get_image_features`).
    ///
    /// # Shapes
    /// `pixel_values [B, C, image_size, image_size]` → `[B, projection_dim]`.
    ///
    /// # Errors
    /// As [`CLIPVisionTransformer::forward`].
    pub fn get_image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let out = self.vision_model.forward(pixel_values)?;
        self.visual_projection.forward(&out.pooler_output)
    }

    /// Both towers, normalised embeddings and the scaled cosine logits (`CLIPModel.forward`).
    ///
    /// # Shapes
    /// `input_ids [T, N]`, `pixel_values [I, C, S, S]` → `logits_per_image [I, T]`,
    /// `logits_per_text [T, I]`, `text_embeds [T, P]`, `image_embeds [I, P]`.
    ///
    /// # Errors
    /// As the towers' forwards.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        pixel_values: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<CLIPModelOutput> {
        let image_embeds = l2_normalize(&self.get_image_features(pixel_values)?)?;
        let text_embeds = l2_normalize(&self.get_text_features(input_ids, attention_mask)?)?;
        let scale = self.logit_scale.to_dtype(DType::F32)?.exp()?;
        let logits_per_text = text_embeds
            .to_dtype(DType::F32)?
            .matmul(&image_embeds.to_dtype(DType::F32)?.t()?)?
            .broadcast_mul(&scale)?
            .to_dtype(text_embeds.dtype())?;
        let logits_per_image = logits_per_text.t()?.contiguous()?;
        Ok(CLIPModelOutput {
            logits_per_image,
            logits_per_text,
            text_embeds,
            image_embeds,
        })
    }
}

/// `x / ‖x‖₂` over the last dim (transformers' `_get_vector_norm`), computed in f32.
///
/// # Shapes
/// `[…, D]` → same, in the input's dtype.
///
/// # Errors
/// A rank-0 tensor.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    if x.rank() == 0 {
        return Err(Error::invalid("l2_normalize", "needs at least one dim"));
    }
    let dt = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let norm = xf.sqr()?.sum_keepdim(x.rank() - 1)?.sqrt()?;
    Ok(xf.broadcast_div(&norm)?.to_dtype(dt)?)
}
