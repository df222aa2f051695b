//! The CLIP text tower: `CLIPTextModel` and `CLIPTextModelWithProjection` of transformers'
//! `modeling_clip.py` (5.23).
//!
//! ```text
//! h₀ = token_embedding(ids) + position_embedding(0..N)          [B, N, D]
//! h₁…h_L = encoder layers, causal (query i sees keys ≤ i)         hidden_states = [h₀, …, h_L]
//! last_hidden_state = final_layer_norm(h_L)
//! pooler_output = last_hidden_state[b, p_b]                      p_b: see below
//! text_embeds = text_projection(pooler_output)                   (with projection, no bias)
//! ```
//!
//! The pooled position `p_b` is the first position of `eos_token_id` in row `b` (position 0 when
//! the row has none, as `argmax` of an all-false row), except when the config says
//! `eos_token_id == 2` (configs written before transformers PR #24773, e.g.
//! `openai/clip-vit-large-patch14`): then it is the position of the largest id of the row (its
//! first occurrence), the legacy rule.
//!
//! Checkpoint layouts: transformers 5 saves `CLIPTextModel` without a prefix
//! (`embeddings.token_embedding.weight`, …), v4-era checkpoints (Stable Diffusion's
//! `text_encoder/`) and `CLIPTextModelWithProjection` / `CLIPModel` put the tower under
//! `text_model.`; [`CLIPTextModel::from_pretrained`] accepts both.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, LoadReport, ModelDir, Result};
use vidgen_video_nn::{Embedding, LayerNorm, Linear};

use crate::config::CLIPTextConfig;
use crate::encoder::ClipEncoder;
use crate::loading::{open_tower, Tower};

/// What the text tower returns.
#[derive(Debug, Clone)]
pub struct CLIPTextOutput {
    /// `final_layer_norm` of the last layer's output, `[B, N, D]`.
    pub last_hidden_state: Tensor,
    /// The embedding output and every layer's output, before the final LayerNorm
    /// (`L + 1` tensors `[B, N, D]`; `hidden_states[L − 1]` is the "penultimate layer" SD2 /
    /// SDXL condition on).
    pub hidden_states: Vec<Tensor>,
    /// `last_hidden_state` at the pooled position of each row, `[B, D]`.
    pub pooler_output: Tensor,
    /// `text_projection(pooler_output)`, `[B, projection_dim]` (models with projection only).
    pub text_embeds: Option<Tensor>,
}

impl CLIPTextOutput {
    /// The output of the layer before the last (`hidden_states[-2]`), before any LayerNorm.
    ///
    /// # Errors
    /// A model with no layer (there is no penultimate state).
    pub fn penultimate(&self) -> Result<&Tensor> {
        let n = self.hidden_states.len();
        if n < 2 {
            return Err(Error::invalid(
                "hidden_states",
                "a model without layers has no penultimate hidden state",
            ));
        }
        Ok(&self.hidden_states[n - 2])
    }
}

/// The text transformer (transformers v4's `CLIPTextTransformer`): embeddings, encoder and
/// final LayerNorm, keys `embeddings.*`, `encoder.layers.{i}.*`, `final_layer_norm.*`.
#[derive(Debug, Clone)]
pub struct CLIPTextTransformer {
    token_embedding: Embedding,
    position_embedding: Embedding,
    encoder: ClipEncoder,
    final_layer_norm: LayerNorm,
    config: CLIPTextConfig,
}

impl CLIPTextTransformer {
    /// Builds (or loads) the tower from `vb`.
    ///
    /// # Errors
    /// An invalid config (see [`CLIPTextConfig::validate`]); missing / mis-shaped tensors.
    pub fn new(cfg: &CLIPTextConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.dims()?;
        let emb = vb.pp("embeddings");
        Ok(Self {
            token_embedding: Embedding::new(
                cfg.vocab_size,
                cfg.hidden_size,
                emb.pp("token_embedding"),
            )?,
            position_embedding: Embedding::new(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                emb.pp("position_embedding"),
            )?,
            encoder: ClipEncoder::new(&d, vb.pp("encoder"))?,
            final_layer_norm: LayerNorm::new(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                true,
                vb.pp("final_layer_norm"),
            )?,
            config: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CLIPTextConfig {
        &self.config
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.token_embedding.weight().dtype()
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        self.token_embedding.weight().device()
    }

    /// Encodes token ids (see the module docs); `attention_mask` (1 = attend, 0 = padding) is
    /// combined with the causal mask as transformers' `create_causal_mask` does. Stable
    /// Diffusion pipelines pass no mask: padding positions then attend to the tokens before
    /// them, which is what the checkpoints were trained with.
    ///
    /// # Shapes
    /// `input_ids [B, N]` (or `[N]`, taken as `B = 1`), any integer dtype, `N ≤
    /// max_position_embeddings`; `attention_mask [B, N]` → [`CLIPTextOutput`] with `[B, N, D]`
    /// states and `[B, D]` pooled output.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a float or wrongly ranked id tensor, an empty or too long
    /// sequence, an id outside the vocabulary, a mask of another shape.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<CLIPTextOutput> {
        let ids = match input_ids.rank() {
            1 => input_ids.unsqueeze(0)?,
            2 => input_ids.clone(),
            r => {
                return Err(Error::invalid(
                    "input_ids",
                    format!(
                        "expected [B, N] token ids, found rank {r} {:?}",
                        input_ids.dims()
                    ),
                ))
            }
        };
        if ids.dtype().is_float() {
            return Err(Error::invalid(
                "input_ids",
                format!("expected integer token ids, found {:?}", ids.dtype()),
            ));
        }
        let (b, n) = ids.dims2()?;
        let max = self.config.max_position_embeddings;
        if n == 0 || n > max {
            return Err(Error::invalid(
                "input_ids",
                format!("sequence length {n} must be in 1..={max} (max_position_embeddings)"),
            ));
        }
        if b == 0 {
            return Err(Error::invalid("input_ids", "the batch is empty"));
        }
        let ids = ids.to_device(self.device())?;
        // 1. embeddings [B, N, D]
        let tok = self.token_embedding.forward(&ids)?;
        let pos = self.position_embedding.weight().narrow(0, 0, n)?;
        let h = tok.broadcast_add(&pos)?;
        // 2. encoder, causal (+ padding mask)
        let mask = match attention_mask {
            Some(m) => Some(padding_mask(m, b, n, self.device())?),
            None => None,
        };
        let hidden_states = self.encoder.forward(&h, mask.as_ref(), true)?;
        let last = hidden_states
            .last()
            .ok_or_else(|| Error::invalid("encoder", "no hidden state"))?;
        // 3. final LayerNorm and pooling
        let last_hidden_state = self.final_layer_norm.forward(last)?;
        let positions = pooled_positions(&ids, self.config.eos_token_id.0)?;
        let pooler_output = gather_rows(&last_hidden_state, &positions)?;
        Ok(CLIPTextOutput {
            last_hidden_state,
            hidden_states,
            pooler_output,
            text_embeds: None,
        })
    }
}

/// The pooled position of each row: the first `eos` (0 if absent), or with `eos == 2` the
/// first position of the row's largest id.
pub fn pooled_positions(ids: &Tensor, eos: Option<i64>) -> Result<Vec<usize>> {
    let rows = ids.to_dtype(DType::I64)?.to_vec2::<i64>()?;
    Ok(rows
        .iter()
        .map(|row| {
            if eos == Some(2) {
                // torch.argmax: the first maximal value.
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = i;
                    }
                }
                best
            } else {
                row.iter().position(|&v| Some(v) == eos).unwrap_or(0)
            }
        })
        .collect())
}

/// `x[b, positions[b], :]` for every row.
fn gather_rows(x: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let (b, n, d) = x.dims3()?;
    let idx: Vec<u32> = positions
        .iter()
        .enumerate()
        .map(|(i, &p)| (i * n + p) as u32)
        .collect();
    let idx = Tensor::from_vec(idx, b, x.device())?;
    Ok(x.reshape((b * n, d))?.index_select(&idx, 0)?)
}

/// A `[B, N]` 1 / 0 mask as an additive `[B, 1, 1, N]` f32 bias (0 / `f32::MIN`, transformers'
/// `finfo.min` convention: a row with every key masked attends uniformly instead of giving NaN).
fn padding_mask(m: &Tensor, b: usize, n: usize, device: &Device) -> Result<Tensor> {
    if m.dims() != [b, n] {
        return Err(Error::shape("attention_mask", &[b, n], m.dims()));
    }
    let keep = m.to_dtype(DType::F32)?.to_device(device)?;
    let bias = keep
        .ne(0f32)?
        .where_cond(&keep.zeros_like()?, &(keep.ones_like()? * f32::MIN as f64)?)?;
    Ok(bias.reshape((b, 1, 1, n))?)
}

/// `CLIPTextModel`: the text tower without projection. [`CLIPTextModel::new`] reads the
/// transformers 5 layout (keys at the root of `vb`); [`CLIPTextModel::from_pretrained`] also
/// reads the `text_model.` layout of v4 checkpoints and `CLIPModel`s.
#[derive(Debug, Clone)]
pub struct CLIPTextModel {
    text_model: CLIPTextTransformer,
}

impl CLIPTextModel {
    /// Builds (or loads) the model from `vb` (keys `embeddings.*`, `encoder.*`,
    /// `final_layer_norm.*`).
    ///
    /// # Errors
    /// As [`CLIPTextTransformer::new`].
    pub fn new(cfg: &CLIPTextConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            text_model: CLIPTextTransformer::new(cfg, vb)?,
        })
    }

    /// Loads a transformers checkpoint folder (`config.json` + `model.safetensors`, sharded or
    /// not), a diffusers pipeline folder (its `text_encoder/`), or a `CLIPModel` folder (the
    /// text tower of it), strictly: every key the model needs must be present with its shape.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::BadConfig`] for the config, [`Error::MissingTensor`] naming the
    /// key and its nearest keys, [`Error::ShapeMismatch`], or [`Error::Load`] listing several.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let (md, cfg, prefix) = open_text(dir.as_ref(), false)?;
        md.load(dtype, device, |vb| {
            let vb = if prefix.is_empty() {
                vb
            } else {
                vb.pp(prefix.trim_end_matches('.'))
            };
            Self::new(&cfg, vb)
        })
    }

    /// The tower.
    pub fn text_model(&self) -> &CLIPTextTransformer {
        &self.text_model
    }

    /// The configuration.
    pub fn config(&self) -> &CLIPTextConfig {
        self.text_model.config()
    }

    /// Encodes token ids without a padding mask (as Stable Diffusion pipelines call it).
    ///
    /// # Shapes
    /// `input_ids [B, N]` → `last_hidden_state [B, N, D]`, `pooler_output [B, D]`,
    /// `hidden_states` `L + 1` × `[B, N, D]`.
    ///
    /// # Errors
    /// As [`CLIPTextTransformer::forward`].
    pub fn forward(&self, input_ids: &Tensor) -> Result<CLIPTextOutput> {
        self.text_model.forward(input_ids, None)
    }

    /// [`CLIPTextModel::forward`] with a padding mask (`[B, N]`, 1 = attend).
    ///
    /// # Shapes
    /// As [`CLIPTextModel::forward`].
    ///
    /// # Errors
    /// As [`CLIPTextTransformer::forward`].
    pub fn forward_masked(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<CLIPTextOutput> {
        self.text_model.forward(input_ids, attention_mask)
    }
}

/// `CLIPTextModelWithProjection`: the text tower (`text_model.*`) and `text_projection`
/// (no bias), as SDXL's second text encoder and CLIP retrieval use it.
#[derive(Debug, Clone)]
pub struct CLIPTextModelWithProjection {
    text_model: CLIPTextTransformer,
    text_projection: Linear,
}

impl CLIPTextModelWithProjection {
    /// Builds (or loads) the model from `vb` (keys `text_model.*`, `text_projection.weight`).
    ///
    /// # Errors
    /// A config without `projection_dim`; as [`CLIPTextTransformer::new`].
    pub fn new(cfg: &CLIPTextConfig, vb: VarBuilder) -> Result<Self> {
        Self::with_tower_prefix(cfg, vb, "text_model")
    }

    fn with_tower_prefix(cfg: &CLIPTextConfig, vb: VarBuilder, prefix: &str) -> Result<Self> {
        let proj = cfg.projection_dim.ok_or_else(|| {
            Error::config(
                "projection_dim",
                "a model with projection needs a projection_dim",
            )
        })?;
        let tower_vb = if prefix.is_empty() {
            vb.clone()
        } else {
            vb.pp(prefix.trim_end_matches('.'))
        };
        Ok(Self {
            text_model: CLIPTextTransformer::new(cfg, tower_vb)?,
            text_projection: Linear::new(cfg.hidden_size, proj, false, vb.pp("text_projection"))?,
        })
    }

    /// Loads a checkpoint folder as [`CLIPTextModel::from_pretrained`] does; the folder must
    /// hold `text_projection.weight` (a `CLIPTextModelWithProjection` or a `CLIPModel`).
    ///
    /// # Errors
    /// As [`CLIPTextModel::from_pretrained`].
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let (md, cfg, prefix) = open_text(dir.as_ref(), true)?;
        md.load(dtype, device, |vb| {
            Self::with_tower_prefix(&cfg, vb, prefix.trim_end_matches('.'))
        })
    }

    /// The tower.
    pub fn text_model(&self) -> &CLIPTextTransformer {
        &self.text_model
    }

    /// The projection (`[projection_dim, D]`, no bias).
    pub fn text_projection(&self) -> &Linear {
        &self.text_projection
    }

    /// The configuration.
    pub fn config(&self) -> &CLIPTextConfig {
        self.text_model.config()
    }

    /// Encodes token ids without a padding mask; `text_embeds` is set.
    ///
    /// # Shapes
    /// `input_ids [B, N]` → as [`CLIPTextModel::forward`], plus `text_embeds [B, projection_dim]`.
    ///
    /// # Errors
    /// As [`CLIPTextTransformer::forward`].
    pub fn forward(&self, input_ids: &Tensor) -> Result<CLIPTextOutput> {
        self.forward_masked(input_ids, None)
    }

    /// [`CLIPTextModelWithProjection::forward`] with a padding mask (`[B, N]`, 1 = attend).
    ///
    /// # Shapes
    /// As [`CLIPTextModelWithProjection::forward`].
    ///
    /// # Errors
    /// As [`CLIPTextTransformer::forward`].
    pub fn forward_masked(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<CLIPTextOutput> {
        let mut out = self.text_model.forward(input_ids, attention_mask)?;
        out.text_embeds = Some(self.text_projection.forward(&out.pooler_output)?);
        Ok(out)
    }
}

/// Opens the folder and finds where the text tower's keys live.
fn open_text(
    dir: &Path,
    with_projection: bool,
) -> Result<(ModelDir, CLIPTextConfig, &'static str)> {
    let (md, cfg_path) = open_tower(dir, Tower::Text)?;
    let cfg = CLIPTextConfig::from_file(&cfg_path)?;
    let prefix = if md.contains("embeddings.token_embedding.weight") && !with_projection {
        ""
    } else if md.contains("text_model.embeddings.token_embedding.weight") {
        "text_model."
    } else if md.contains("embeddings.token_embedding.weight") {
        ""
    } else if with_projection {
        // Neither layout: report the missing keys of the canonical one.
        "text_model."
    } else {
        ""
    };
    Ok((md, cfg, prefix))
}
