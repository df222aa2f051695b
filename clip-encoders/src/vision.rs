//! The CLIP vision tower: `CLIPVisionModel` and `CLIPVisionModelWithProjection` of
//! transformers' `modeling_clip.py` (5.23).
//!
//! ```text
//! patches = patch_embedding(pixel_values)   conv k = s = patch, no bias      [B, D, H/p, W/p]
//! h = [class_embedding; patches flattened] + position_embedding            [B, 1 + P, D]
//! h₀ = pre_layrnorm(h)                                                      (sic: "layrnorm")
//! h₁…h_L = encoder layers (no mask)            hidden_states = [h₀, …, h_L]
//! last_hidden_state = h_L                                                   (no LayerNorm)
//! pooler_output = post_layernorm(h_L[:, 0])
//! image_embeds = visual_projection(pooler_output)                           (no bias)
//! ```
//!
//! Other image sizes run with [`CLIPVisionTransformer::forward_interpolated`]: the patch grid's
//! position embeddings are resized with bicubic interpolation (`align_corners=False`), exactly
//! as transformers' `interpolate_pos_encoding`.
//!
//! Checkpoint layouts: `vision_model.*` (+ `visual_projection.weight`) for
//! `CLIPVisionModelWithProjection`, v4 `CLIPVisionModel` and `CLIPModel`; a transformers 5
//! `CLIPVisionModel` may be saved without the prefix. [`CLIPVisionModel::from_pretrained`]
//! accepts both.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, LoadReport, ModelDir, Result};
use vidgen_video_nn::{Conv2d, Conv2dConfig, Embedding, LayerNorm, Linear};

use crate::config::CLIPVisionConfig;
use crate::encoder::ClipEncoder;
use crate::interpolate::interpolate_bicubic;
use crate::loading::{open_tower, Tower};

/// What the vision tower returns.
#[derive(Debug, Clone)]
pub struct CLIPVisionOutput {
    /// The last layer's output, `[B, 1 + P, D]` (no LayerNorm).
    pub last_hidden_state: Tensor,
    /// The input of the first layer (after `pre_layrnorm`) and every layer's output
    /// (`L + 1` tensors `[B, 1 + P, D]`).
    pub hidden_states: Vec<Tensor>,
    /// `post_layernorm` of the class token, `[B, D]`.
    pub pooler_output: Tensor,
    /// `visual_projection(pooler_output)`, `[B, projection_dim]` (models with projection only).
    pub image_embeds: Option<Tensor>,
}

/// The vision transformer (transformers v4's `CLIPVisionTransformer`), keys `embeddings.*`,
/// `pre_layrnorm.*`, `encoder.layers.{i}.*`, `post_layernorm.*`.
#[derive(Debug, Clone)]
pub struct CLIPVisionTransformer {
    class_embedding: Tensor,
    patch_embedding: Conv2d,
    position_embedding: Embedding,
    pre_layrnorm: LayerNorm,
    encoder: ClipEncoder,
    post_layernorm: LayerNorm,
    config: CLIPVisionConfig,
}

impl CLIPVisionTransformer {
    /// Builds (or loads) the tower from `vb`.
    ///
    /// # Errors
    /// An invalid config (see [`CLIPVisionConfig::validate`]); missing / mis-shaped tensors.
    pub fn new(cfg: &CLIPVisionConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.dims()?;
        let emb = vb.pp("embeddings");
        let p = cfg.patch_size.0;
        let dim = cfg.hidden_size;
        let class_embedding = emb.get_with_hints(
            dim,
            "class_embedding",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        let conv = Conv2dConfig {
            stride: [p, p],
            bias: false,
            ..Default::default()
        };
        Ok(Self {
            class_embedding,
            patch_embedding: Conv2d::with_config(
                cfg.num_channels,
                dim,
                [p, p],
                &conv,
                emb.pp("patch_embedding"),
            )?,
            position_embedding: Embedding::new(
                cfg.num_positions(),
                dim,
                emb.pp("position_embedding"),
            )?,
            pre_layrnorm: LayerNorm::new(dim, cfg.layer_norm_eps, true, vb.pp("pre_layrnorm"))?,
            encoder: ClipEncoder::new(&d, vb.pp("encoder"))?,
            post_layernorm: LayerNorm::new(dim, cfg.layer_norm_eps, true, vb.pp("post_layernorm"))?,
            config: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CLIPVisionConfig {
        &self.config
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.class_embedding.dtype()
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        self.class_embedding.device()
    }

    /// Encodes images at the configured size (`image_size × image_size`).
    ///
    /// # Shapes
    /// `pixel_values [B, num_channels, image_size, image_size]` (normalised, e.g. by
    /// [`crate::CLIPImageProcessor`]) → [`CLIPVisionOutput`] with `[B, 1 + P, D]` states,
    /// `P = (image_size / patch_size)²`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for another rank, channel count or size (use
    /// [`CLIPVisionTransformer::forward_interpolated`] for other sizes).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<CLIPVisionOutput> {
        self.run(pixel_values, false)
    }

    /// Encodes images of any size of at least one patch, interpolating the position
    /// embeddings to the patch grid (transformers' `interpolate_pos_encoding=True`).
    ///
    /// # Shapes
    /// `pixel_values [B, num_channels, H, W]` → states `[B, 1 + ⌊H/p⌋·⌊W/p⌋, D]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for another rank or channel count, or an image smaller than a
    /// patch.
    pub fn forward_interpolated(&self, pixel_values: &Tensor) -> Result<CLIPVisionOutput> {
        self.run(pixel_values, true)
    }

    fn run(&self, pixel_values: &Tensor, interpolate: bool) -> Result<CLIPVisionOutput> {
        let cfg = &self.config;
        let dims = pixel_values.dims();
        if dims.len() != 4 || dims[1] != cfg.num_channels {
            return Err(Error::invalid(
                "pixel_values",
                format!("expected [B, {}, H, W], found {dims:?}", cfg.num_channels),
            ));
        }
        let (b, _, h, w) = (dims[0], dims[1], dims[2], dims[3]);
        let (size, p) = (cfg.image_size.0, cfg.patch_size.0);
        if b == 0 {
            return Err(Error::invalid("pixel_values", "the batch is empty"));
        }
        if !interpolate && (h != size || w != size) {
            return Err(Error::invalid(
                "pixel_values",
                format!(
                    "input image size ({h}*{w}) doesn't match model ({size}*{size}); \
                     use forward_interpolated for other sizes"
                ),
            ));
        }
        if h < p || w < p {
            return Err(Error::invalid(
                "pixel_values",
                format!("image {h}×{w} is smaller than one {p}×{p} patch"),
            ));
        }
        if !pixel_values.dtype().is_float() {
            return Err(Error::invalid(
                "pixel_values",
                format!("expected float pixels, found {:?}", pixel_values.dtype()),
            ));
        }
        let x = pixel_values
            .to_device(self.device())?
            .to_dtype(self.dtype())?;
        // 1. patches [B, D, gh, gw] -> [B, gh·gw, D]
        let patches = self.patch_embedding.forward(&x)?;
        let (_, dim, gh, gw) = patches.dims4()?;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?;
        // 2. class token first, then position embeddings
        let cls = self
            .class_embedding
            .reshape((1, 1, dim))?
            .broadcast_as((b, 1, dim))?;
        let h0 = Tensor::cat(&[&cls, &patches], 1)?;
        let pos = if interpolate {
            self.interpolated_positions(gh, gw, h, w)?
        } else {
            self.position_embedding.weight().clone()
        };
        let h0 = h0.broadcast_add(&pos.unsqueeze(0)?)?;
        // 3. pre-LN, encoder, pooled class token
        let h0 = self.pre_layrnorm.forward(&h0)?;
        let hidden_states = self.encoder.forward(&h0, None, false)?;
        let last_hidden_state = hidden_states
            .last()
            .cloned()
            .ok_or_else(|| Error::invalid("encoder", "no hidden state"))?;
        let cls_out = last_hidden_state.narrow(1, 0, 1)?.squeeze(1)?;
        let pooler_output = self.post_layernorm.forward(&cls_out)?;
        Ok(CLIPVisionOutput {
            last_hidden_state,
            hidden_states,
            pooler_output,
            image_embeds: None,
        })
    }

    /// The position embeddings for a `gh × gw` grid of an `h × w` image, `[1 + gh·gw, D]`:
    /// the stored ones when the patch count equals the stored count and the image is square,
    /// else the class position followed by the stored grid resized bicubically to `gh × gw`.
    fn interpolated_positions(&self, gh: usize, gw: usize, h: usize, w: usize) -> Result<Tensor> {
        let weight = self.position_embedding.weight();
        let (n_pos, dim) = weight.dims2()?;
        let n = n_pos - 1;
        if gh * gw == n && h == w {
            return Ok(weight.clone());
        }
        let side = (n as f64).sqrt() as usize;
        if side * side != n {
            return Err(Error::invalid(
                "position_embedding",
                format!("{n} patch positions are not a square grid"),
            ));
        }
        let class_pos = weight.narrow(0, 0, 1)?;
        // [n, D] -> [1, D, side, side]
        let grid = weight
            .narrow(0, 1, n)?
            .reshape((1, side, side, dim))?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        let resized = interpolate_bicubic(&grid, (gh, gw), false)?;
        // [1, D, gh, gw] -> [gh·gw, D]
        let resized = resized.permute((0, 2, 3, 1))?.reshape((gh * gw, dim))?;
        Ok(Tensor::cat(&[&class_pos, &resized], 0)?)
    }
}

/// `CLIPVisionModel`: the vision tower without projection. [`CLIPVisionModel::new`] reads the
/// transformers 5 layout (keys at the root of `vb`); [`CLIPVisionModel::from_pretrained`] also
/// reads the `vision_model.` layout of v4 checkpoints and `CLIPModel`s.
#[derive(Debug, Clone)]
pub struct CLIPVisionModel {
    vision_model: CLIPVisionTransformer,
}

impl CLIPVisionModel {
    /// Builds (or loads) the model from `vb` (keys `embeddings.*`, `pre_layrnorm.*`,
    /// `encoder.*`, `post_layernorm.*`).
    ///
    /// # Errors
    /// As [`CLIPVisionTransformer::new`].
    pub fn new(cfg: &CLIPVisionConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            vision_model: CLIPVisionTransformer::new(cfg, vb)?,
        })
    }

    /// Loads a transformers checkpoint folder, a diffusers pipeline folder (its
    /// `image_encoder/`) or a `CLIPModel` folder (its vision tower), strictly.
    ///
    /// # Errors
    /// As [`crate::CLIPTextModel::from_pretrained`].
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let (md, cfg, prefix) = open_vision(dir.as_ref(), false)?;
        md.load(dtype, device, |vb| {
            let vb = if prefix.is_empty() {
                vb
            } else {
                vb.pp(prefix.trim_end_matches('.'))
            };
            Ok::<_, Error>(Self {
                vision_model: CLIPVisionTransformer::new(&cfg, vb)?,
            })
        })
    }

    /// The tower.
    pub fn vision_model(&self) -> &CLIPVisionTransformer {
        &self.vision_model
    }

    /// The configuration.
    pub fn config(&self) -> &CLIPVisionConfig {
        self.vision_model.config()
    }

    /// Encodes images at the configured size.
    ///
    /// # Shapes
    /// As [`CLIPVisionTransformer::forward`].
    ///
    /// # Errors
    /// As [`CLIPVisionTransformer::forward`].
    pub fn forward(&self, pixel_values: &Tensor) -> Result<CLIPVisionOutput> {
        self.vision_model.forward(pixel_values)
    }

    /// Encodes images of any size (interpolated position embeddings).
    ///
    /// # Shapes
    /// As [`CLIPVisionTransformer::forward_interpolated`].
    ///
    /// # Errors
    /// As [`CLIPVisionTransformer::forward_interpolated`].
    pub fn forward_interpolated(&self, pixel_values: &Tensor) -> Result<CLIPVisionOutput> {
        self.vision_model.forward_interpolated(pixel_values)
    }
}

/// `CLIPVisionModelWithProjection`: the tower (`vision_model.*`) and `visual_projection`
/// (no bias): SVD's image encoder, IP-Adapter's, CLIP retrieval's.
#[derive(Debug, Clone)]
pub struct CLIPVisionModelWithProjection {
    vision_model: CLIPVisionTransformer,
    visual_projection: Linear,
}

impl CLIPVisionModelWithProjection {
    /// Builds (or loads) the model from `vb` (keys `vision_model.*`, `visual_projection.weight`).
    ///
    /// # Errors
    /// As [`CLIPVisionTransformer::new`].
    pub fn new(cfg: &CLIPVisionConfig, vb: VarBuilder) -> Result<Self> {
        Self::with_tower_prefix(cfg, vb, "vision_model")
    }

    fn with_tower_prefix(cfg: &CLIPVisionConfig, vb: VarBuilder, prefix: &str) -> Result<Self> {
        let tower_vb = if prefix.is_empty() {
            vb.clone()
        } else {
            vb.pp(prefix.trim_end_matches('.'))
        };
        Ok(Self {
            vision_model: CLIPVisionTransformer::new(cfg, tower_vb)?,
            visual_projection: Linear::new(
                cfg.hidden_size,
                cfg.projection_dim,
                false,
                vb.pp("visual_projection"),
            )?,
        })
    }

    /// Loads a checkpoint folder as [`CLIPVisionModel::from_pretrained`] does; the folder must
    /// hold `visual_projection.weight`.
    ///
    /// # Errors
    /// As [`crate::CLIPTextModel::from_pretrained`].
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let (md, cfg, prefix) = open_vision(dir.as_ref(), true)?;
        md.load(dtype, device, |vb| {
            Self::with_tower_prefix(&cfg, vb, prefix.trim_end_matches('.'))
        })
    }

    /// The tower.
    pub fn vision_model(&self) -> &CLIPVisionTransformer {
        &self.vision_model
    }

    /// The projection (`[projection_dim, D]`, no bias).
    pub fn visual_projection(&self) -> &Linear {
        &self.visual_projection
    }

    /// The configuration.
    pub fn config(&self) -> &CLIPVisionConfig {
        self.vision_model.config()
    }

    /// Encodes images at the configured size; `image_embeds` is set.
    ///
    /// # Shapes
    /// As [`CLIPVisionTransformer::forward`], plus `image_embeds [B, projection_dim]`.
    ///
    /// # Errors
    /// As [`CLIPVisionTransformer::forward`].
    pub fn forward(&self, pixel_values: &Tensor) -> Result<CLIPVisionOutput> {
        self.project(self.vision_model.forward(pixel_values)?)
    }

    /// Encodes images of any size (interpolated position embeddings); `image_embeds` is set.
    ///
    /// # Shapes
    /// As [`CLIPVisionTransformer::forward_interpolated`], plus `image_embeds`.
    ///
    /// # Errors
    /// As [`CLIPVisionTransformer::forward_interpolated`].
    pub fn forward_interpolated(&self, pixel_values: &Tensor) -> Result<CLIPVisionOutput> {
        self.project(self.vision_model.forward_interpolated(pixel_values)?)
    }

    fn project(&self, mut out: CLIPVisionOutput) -> Result<CLIPVisionOutput> {
        out.image_embeds = Some(self.visual_projection.forward(&out.pooler_output)?);
        Ok(out)
    }
}

/// Opens the folder and finds where the vision tower's keys live.
fn open_vision(
    dir: &Path,
    with_projection: bool,
) -> Result<(ModelDir, CLIPVisionConfig, &'static str)> {
    let (md, cfg_path) = open_tower(dir, Tower::Vision)?;
    let cfg = CLIPVisionConfig::from_file(&cfg_path)?;
    let prefix = if md.contains("embeddings.patch_embedding.weight") && !with_projection {
        ""
    } else if md.contains("vision_model.embeddings.patch_embedding.weight") {
        "vision_model."
    } else if md.contains("embeddings.patch_embedding.weight") {
        ""
    } else if with_projection {
        // Neither layout: report the missing keys of the canonical one.
        "vision_model."
    } else {
        ""
    };
    Ok((md, cfg, prefix))
}
