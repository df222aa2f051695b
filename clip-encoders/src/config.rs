//! Configurations as transformers' `configuration_clip.py` (5.23) writes them to `config.json`:
//! the per-tower [`CLIPTextConfig`] / [`CLIPVisionConfig`] (`model_type` `clip_text_model` /
//! `clip_vision_model`, what `CLIPTextModel`, `CLIPVisionModelWithProjection`, a diffusers
//! pipeline's `text_encoder/` or `image_encoder/` save) and the combined [`CLIPConfig`]
//! (`model_type` `clip`, a full `CLIPModel` checkpoint, with `text_config` / `vision_config`).
//!
//! Unknown keys are ignored, absent keys take transformers' defaults (those of
//! `openai/clip-vit-base-patch32`), and [`CLIPTextConfig::validate`] /
//! [`CLIPVisionConfig::validate`] reject what the reference would reject at construction, each
//! error naming the field.

use std::path::Path;

use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;
use vidgen_video_core::{Error, Result};
use vidgen_video_nn::Activation;

/// The activations transformers' `ACT2FN` offers that CLIP checkpoints use, by name.
pub const SUPPORTED_ACTIVATIONS: &str =
    "quick_gelu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu, swish, mish";

/// Parses a transformers `hidden_act` (the names of `ACT2FN` we support).
///
/// # Errors
/// [`Error::Unsupported`] naming `hidden_act` and the value.
pub fn parse_hidden_act(name: &str) -> Result<Activation> {
    let act = match name {
        "quick_gelu" => Activation::QuickGelu,
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        "silu" | "swish" => Activation::Silu,
        "mish" => Activation::Mish,
        other => {
            return Err(Error::Unsupported {
                field: "hidden_act".into(),
                value: other.into(),
                supported: SUPPORTED_ACTIVATIONS.into(),
            })
        }
    };
    Ok(act)
}

fn d_text_vocab() -> usize {
    49408
}
fn d_text_hidden() -> usize {
    512
}
fn d_text_inter() -> usize {
    2048
}
fn d_proj() -> Option<usize> {
    Some(512)
}
fn d_layers() -> usize {
    12
}
fn d_text_heads() -> usize {
    8
}
fn d_text_positions() -> usize {
    77
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}
fn d_pad() -> Option<i64> {
    Some(1)
}
fn d_bos() -> Option<i64> {
    Some(49406)
}
fn d_eos() -> TokenId {
    TokenId(Some(49407))
}
fn d_vis_hidden() -> usize {
    768
}
fn d_vis_inter() -> usize {
    3072
}
fn d_vis_proj() -> usize {
    512
}
fn d_vis_heads() -> usize {
    12
}
fn d_channels() -> usize {
    3
}
fn d_image_size() -> SquareSize {
    SquareSize(224)
}
fn d_patch_size() -> SquareSize {
    SquareSize(32)
}
fn d_logit_scale() -> f64 {
    2.6592
}

/// A token id that `config.json` may write as an integer, a one-element list or `null`
/// (transformers 5 types `eos_token_id` as `int | list[int] | None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenId(pub Option<i64>);

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(i64),
            Many(Vec<i64>),
            Null(()),
        }
        match Raw::deserialize(d)? {
            Raw::One(v) => Ok(TokenId(Some(v))),
            Raw::Many(v) if v.len() == 1 => Ok(TokenId(Some(v[0]))),
            Raw::Many(v) if v.is_empty() => Ok(TokenId(None)),
            Raw::Many(v) => Err(serde::de::Error::custom(format!(
                "a list of {} token ids is not supported for CLIP's pooled output (one id or null)",
                v.len()
            ))),
            Raw::Null(()) => Ok(TokenId(None)),
        }
    }
}

/// An image or patch side written as an integer or as `[h, w]` (transformers 5 types
/// `image_size` / `patch_size` as `int | list[int]`; CLIP's embeddings only work with squares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquareSize(pub usize);

impl<'de> Deserialize<'de> for SquareSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(usize),
            Pair(Vec<usize>),
        }
        match Raw::deserialize(d)? {
            Raw::One(v) => Ok(SquareSize(v)),
            Raw::Pair(v) if v.len() == 2 && v[0] == v[1] => Ok(SquareSize(v[0])),
            Raw::Pair(v) => Err(serde::de::Error::custom(format!(
                "{v:?}: CLIP's vision embeddings need a square size (an integer or [n, n])"
            ))),
        }
    }
}

/// `CLIPTextConfig` (transformers 5.23 defaults: `openai/clip-vit-base-patch32`'s text tower).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct CLIPTextConfig {
    /// Rows of the token embedding.
    #[serde(default = "d_text_vocab")]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[serde(default = "d_text_hidden")]
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    #[serde(default = "d_text_inter")]
    pub intermediate_size: usize,
    /// Output width of `text_projection` (`CLIPTextModelWithProjection`); may be `null` for a
    /// model without projection.
    #[serde(default = "d_proj")]
    pub projection_dim: Option<usize>,
    /// Encoder layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads (dividing `hidden_size`).
    #[serde(default = "d_text_heads")]
    pub num_attention_heads: usize,
    /// Positions of the position embedding: the longest accepted sequence.
    #[serde(default = "d_text_positions")]
    pub max_position_embeddings: usize,
    /// The MLP activation (`quick_gelu` for OpenAI's checkpoints, `gelu` for OpenCLIP's).
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Epsilon of every LayerNorm.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id (informational: the model never reads it).
    #[serde(default = "d_pad")]
    pub pad_token_id: Option<i64>,
    /// Beginning-of-text token id (informational).
    #[serde(default = "d_bos")]
    pub bos_token_id: Option<i64>,
    /// End-of-text token id, which selects the pooled position (see
    /// [`crate::CLIPTextModel`]); `2` selects the legacy argmax rule.
    #[serde(default = "d_eos")]
    pub eos_token_id: TokenId,
}

impl Default for CLIPTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: d_text_vocab(),
            hidden_size: d_text_hidden(),
            intermediate_size: d_text_inter(),
            projection_dim: d_proj(),
            num_hidden_layers: d_layers(),
            num_attention_heads: d_text_heads(),
            max_position_embeddings: d_text_positions(),
            hidden_act: d_act(),
            layer_norm_eps: d_eps(),
            pad_token_id: d_pad(),
            bos_token_id: d_bos(),
            eos_token_id: d_eos(),
        }
    }
}

/// `CLIPVisionConfig` (transformers 5.23 defaults: ViT-B/32).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct CLIPVisionConfig {
    /// Width of the residual stream.
    #[serde(default = "d_vis_hidden")]
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    #[serde(default = "d_vis_inter")]
    pub intermediate_size: usize,
    /// Output width of `visual_projection` (`CLIPVisionModelWithProjection`).
    #[serde(default = "d_vis_proj")]
    pub projection_dim: usize,
    /// Encoder layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads (dividing `hidden_size`).
    #[serde(default = "d_vis_heads")]
    pub num_attention_heads: usize,
    /// Input channels of the patch embedding.
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    /// Side of the (square) training resolution, in pixels.
    #[serde(default = "d_image_size")]
    pub image_size: SquareSize,
    /// Side of a (square) patch, in pixels.
    #[serde(default = "d_patch_size")]
    pub patch_size: SquareSize,
    /// The MLP activation.
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Epsilon of every LayerNorm.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

impl Default for CLIPVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: d_vis_hidden(),
            intermediate_size: d_vis_inter(),
            projection_dim: d_vis_proj(),
            num_hidden_layers: d_layers(),
            num_attention_heads: d_vis_heads(),
            num_channels: d_channels(),
            image_size: d_image_size(),
            patch_size: d_patch_size(),
            hidden_act: d_act(),
            layer_norm_eps: d_eps(),
        }
    }
}

/// What the encoder layers of both towers need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct EncoderDims {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub layers: usize,
    pub eps: f64,
    pub act: Activation,
}

fn positive(field: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::config(field, "must be at least 1"));
    }
    Ok(())
}

fn check_common(
    hidden: usize,
    inter: usize,
    heads: usize,
    eps: f64,
    act: &str,
) -> Result<Activation> {
    positive("hidden_size", hidden)?;
    positive("intermediate_size", inter)?;
    positive("num_attention_heads", heads)?;
    if !hidden.is_multiple_of(heads) {
        return Err(Error::config(
            "num_attention_heads",
            format!("the hidden size ({hidden}) is not a multiple of the number of attention heads ({heads})"),
        ));
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::config(
            "layer_norm_eps",
            format!("{eps} must be finite and > 0"),
        ));
    }
    parse_hidden_act(act)
}

// Sizes above these are not CLIP models but corrupt configs; refusing them keeps a random
// initialisation from trying to allocate terabytes.
const MAX_WIDTH: usize = 1 << 16;
const MAX_ROWS: usize = 1 << 22;

fn bounded(field: &str, v: usize, max: usize) -> Result<()> {
    if v > max {
        return Err(Error::config(field, format!("{v} exceeds {max}")));
    }
    Ok(())
}

impl CLIPTextConfig {
    /// Checks what transformers checks at construction (width divisible by heads) and what
    /// the model needs (non-zero sizes, a supported activation, a positive epsilon).
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field, [`Error::Unsupported`] for `hidden_act`.
    pub fn validate(&self) -> Result<()> {
        self.dims().map(|_| ())
    }

    pub(crate) fn dims(&self) -> Result<EncoderDims> {
        let act = check_common(
            self.hidden_size,
            self.intermediate_size,
            self.num_attention_heads,
            self.layer_norm_eps,
            &self.hidden_act,
        )?;
        positive("vocab_size", self.vocab_size)?;
        positive("max_position_embeddings", self.max_position_embeddings)?;
        if self.projection_dim == Some(0) {
            return Err(Error::config("projection_dim", "must be at least 1"));
        }
        bounded("hidden_size", self.hidden_size, MAX_WIDTH)?;
        bounded("intermediate_size", self.intermediate_size, 4 * MAX_WIDTH)?;
        bounded(
            "projection_dim",
            self.projection_dim.unwrap_or(0),
            MAX_WIDTH,
        )?;
        bounded("vocab_size", self.vocab_size, MAX_ROWS)?;
        bounded(
            "max_position_embeddings",
            self.max_position_embeddings,
            MAX_ROWS,
        )?;
        bounded("num_hidden_layers", self.num_hidden_layers, 1024)?;
        Ok(EncoderDims {
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            heads: self.num_attention_heads,
            layers: self.num_hidden_layers,
            eps: self.layer_norm_eps,
            act,
        })
    }

    /// Parses the bytes of a `config.json`: a per-tower text config, or the `text_config` of a
    /// combined [`CLIPConfig`] (whose top-level `projection_dim` then applies).
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field (never a panic, whatever the bytes); validation
    /// errors as [`CLIPTextConfig::validate`].
    pub fn from_json_bytes(bytes: &[u8], file: Option<&Path>) -> Result<Self> {
        match TowerSource::parse(bytes, file)? {
            TowerSource::Combined(c) => Ok(c.text_config),
            TowerSource::Tower(v) => {
                let cfg: Self = from_value(v, file)?;
                cfg.validate()?;
                Ok(cfg)
            }
        }
    }

    /// Reads a `config.json` file (see [`CLIPTextConfig::from_json_bytes`]).
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read; otherwise as [`CLIPTextConfig::from_json_bytes`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json_bytes(&read(path)?, Some(path))
    }
}

impl CLIPVisionConfig {
    /// Checks the sizes (non-zero, patch no larger than the image, width divisible by heads),
    /// the activation and the epsilon.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field, [`Error::Unsupported`] for `hidden_act`.
    pub fn validate(&self) -> Result<()> {
        self.dims().map(|_| ())
    }

    pub(crate) fn dims(&self) -> Result<EncoderDims> {
        let act = check_common(
            self.hidden_size,
            self.intermediate_size,
            self.num_attention_heads,
            self.layer_norm_eps,
            &self.hidden_act,
        )?;
        positive("num_channels", self.num_channels)?;
        positive("patch_size", self.patch_size.0)?;
        positive("projection_dim", self.projection_dim)?;
        if self.image_size.0 < self.patch_size.0 {
            return Err(Error::config(
                "image_size",
                format!(
                    "{} is smaller than the patch size {}",
                    self.image_size.0, self.patch_size.0
                ),
            ));
        }
        bounded("hidden_size", self.hidden_size, MAX_WIDTH)?;
        bounded("intermediate_size", self.intermediate_size, 4 * MAX_WIDTH)?;
        bounded("projection_dim", self.projection_dim, MAX_WIDTH)?;
        bounded("num_channels", self.num_channels, 64)?;
        bounded("image_size", self.image_size.0, 1 << 14)?;
        bounded("num_hidden_layers", self.num_hidden_layers, 1024)?;
        Ok(EncoderDims {
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            heads: self.num_attention_heads,
            layers: self.num_hidden_layers,
            eps: self.layer_norm_eps,
            act,
        })
    }

    /// Patches per side at the configured image size.
    pub fn grid(&self) -> usize {
        self.image_size.0 / self.patch_size.0.max(1)
    }

    /// Positions of the position embedding: the class token plus `grid²` patches.
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// Parses the bytes of a `config.json`: a per-tower vision config, or the `vision_config`
    /// of a combined [`CLIPConfig`] (whose top-level `projection_dim` then applies).
    ///
    /// # Errors
    /// As [`CLIPTextConfig::from_json_bytes`].
    pub fn from_json_bytes(bytes: &[u8], file: Option<&Path>) -> Result<Self> {
        match TowerSource::parse(bytes, file)? {
            TowerSource::Combined(c) => Ok(c.vision_config),
            TowerSource::Tower(v) => {
                let cfg: Self = from_value(v, file)?;
                cfg.validate()?;
                Ok(cfg)
            }
        }
    }

    /// Reads a `config.json` file (see [`CLIPVisionConfig::from_json_bytes`]).
    ///
    /// # Errors
    /// As [`CLIPTextConfig::from_file`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json_bytes(&read(path)?, Some(path))
    }
}

/// `CLIPConfig`: both towers and the shared projection width of a `CLIPModel`.
///
/// As in transformers, the top-level `projection_dim` is the width of both projections of a
/// `CLIPModel`; it is copied into each tower's `projection_dim` here, so the towers built from
/// [`CLIPConfig::text_config`] / [`CLIPConfig::vision_config`] load the `CLIPModel`'s
/// `text_projection` / `visual_projection`. The legacy `text_config_dict` /
/// `vision_config_dict` keys override `text_config` / `vision_config` key by key, as
/// transformers' `__post_init__` does.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CLIPConfig {
    /// The text tower.
    pub text_config: CLIPTextConfig,
    /// The vision tower.
    pub vision_config: CLIPVisionConfig,
    /// Width of both projections.
    pub projection_dim: usize,
    /// Initial value of `logit_scale` (a parameter in the checkpoint; informational).
    pub logit_scale_init_value: f64,
}

impl Default for CLIPConfig {
    fn default() -> Self {
        let projection_dim = 512;
        let text_config = CLIPTextConfig {
            projection_dim: Some(projection_dim),
            ..Default::default()
        };
        let vision_config = CLIPVisionConfig {
            projection_dim,
            ..Default::default()
        };
        Self {
            text_config,
            vision_config,
            projection_dim,
            logit_scale_init_value: d_logit_scale(),
        }
    }
}

impl CLIPConfig {
    /// Validates both towers.
    ///
    /// # Errors
    /// As the towers' `validate`, the field prefixed with `text_config.` / `vision_config.`.
    pub fn validate(&self) -> Result<()> {
        self.text_config
            .validate()
            .map_err(|e| prefixed(e, "text_config"))?;
        self.vision_config
            .validate()
            .map_err(|e| prefixed(e, "vision_config"))
    }

    /// Parses the bytes of a combined `config.json` (`model_type` `clip`).
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field (never a panic), validation errors of both towers.
    pub fn from_json_bytes(bytes: &[u8], file: Option<&Path>) -> Result<Self> {
        let root: Json = vidgen_video_core::loading::parse_config(bytes, file)?;
        Self::from_json(root, file)
    }

    /// Reads a combined `config.json` file.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read; otherwise as [`CLIPConfig::from_json_bytes`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_json_bytes(&read(path)?, Some(path))
    }

    fn from_json(root: Json, file: Option<&Path>) -> Result<Self> {
        let Json::Object(map) = root else {
            return Err(bad("<root>", "expected a JSON object", file));
        };
        let sub = |key: &str, legacy: &str| -> Result<Json> {
            let mut base = match map.get(key) {
                None | Some(Json::Null) => serde_json::Map::new(),
                Some(Json::Object(m)) => m.clone(),
                Some(_) => return Err(bad(key, "expected an object or null", file)),
            };
            match map.get(legacy) {
                None | Some(Json::Null) => {}
                Some(Json::Object(m)) => {
                    for (k, v) in m {
                        base.insert(k.clone(), v.clone());
                    }
                }
                Some(_) => return Err(bad(legacy, "expected an object or null", file)),
            }
            Ok(Json::Object(base))
        };
        let projection_dim = match map.get("projection_dim") {
            None => 512,
            Some(v) => v
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| bad("projection_dim", "expected a non-negative integer", file))?,
        };
        let logit_scale_init_value = match map.get("logit_scale_init_value") {
            None | Some(Json::Null) => d_logit_scale(),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad("logit_scale_init_value", "expected a number", file))?,
        };
        let mut text_config: CLIPTextConfig =
            from_value(sub("text_config", "text_config_dict")?, file)
                .map_err(|e| prefixed(e, "text_config"))?;
        let mut vision_config: CLIPVisionConfig =
            from_value(sub("vision_config", "vision_config_dict")?, file)
                .map_err(|e| prefixed(e, "vision_config"))?;
        text_config.projection_dim = Some(projection_dim);
        vision_config.projection_dim = projection_dim;
        let cfg = Self {
            text_config,
            vision_config,
            projection_dim,
            logit_scale_init_value,
        };
        if projection_dim == 0 {
            return Err(bad("projection_dim", "must be at least 1", file));
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A `config.json` seen from one tower: the combined config, or a tower's own.
enum TowerSource {
    Combined(Box<CLIPConfig>),
    Tower(Json),
}

impl TowerSource {
    fn parse(bytes: &[u8], file: Option<&Path>) -> Result<Self> {
        let root: Json = vidgen_video_core::loading::parse_config(bytes, file)?;
        if is_combined(&root) {
            Ok(TowerSource::Combined(Box::new(CLIPConfig::from_json(
                root, file,
            )?)))
        } else {
            Ok(TowerSource::Tower(root))
        }
    }
}

/// Whether a parsed `config.json` is a combined `CLIPConfig` (`model_type` `clip`, or a
/// `text_config` / `vision_config` object).
pub fn is_combined(root: &Json) -> bool {
    root.get("model_type").and_then(Json::as_str) == Some("clip")
        || root.get("text_config").is_some_and(Json::is_object)
        || root.get("vision_config").is_some_and(Json::is_object)
}

fn from_value<T: serde::de::DeserializeOwned>(v: Json, file: Option<&Path>) -> Result<T> {
    let bytes = serde_json::to_vec(&v).map_err(|e| bad("<root>", e.to_string(), file))?;
    vidgen_video_core::loading::parse_config(&bytes, file)
}

fn bad(field: &str, reason: impl Into<String>, file: Option<&Path>) -> Error {
    Error::BadConfig {
        field: field.into(),
        reason: reason.into(),
        file: file.map(|p| p.display().to_string()),
    }
}

fn prefixed(e: Error, prefix: &str) -> Error {
    match e {
        Error::BadConfig {
            field,
            reason,
            file,
        } => Error::BadConfig {
            field: if field == "<root>" {
                prefix.to_string()
            } else {
                format!("{prefix}.{field}")
            },
            reason,
            file,
        },
        Error::Unsupported {
            field,
            value,
            supported,
        } => Error::Unsupported {
            field: format!("{prefix}.{field}"),
            value,
            supported,
        },
        other => other,
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_vit_b32() {
        let t = CLIPTextConfig::from_json_bytes(b"{}", None).unwrap();
        assert_eq!(t, CLIPTextConfig::default());
        assert_eq!(t.eos_token_id, TokenId(Some(49407)));
        let v = CLIPVisionConfig::from_json_bytes(b"{}", None).unwrap();
        assert_eq!(v.num_positions(), 50);
    }

    #[test]
    fn combined_config_takes_towers_and_projection() {
        let json = br#"{"model_type": "clip", "projection_dim": 768,
            "text_config": {"hidden_size": 64, "num_attention_heads": 4, "eos_token_id": 2},
            "text_config_dict": {"hidden_act": "gelu"},
            "vision_config": {"image_size": [336, 336], "patch_size": 14}}"#;
        let c = CLIPConfig::from_json_bytes(json, None).unwrap();
        assert_eq!(c.text_config.hidden_size, 64);
        assert_eq!(c.text_config.hidden_act, "gelu");
        assert_eq!(c.text_config.projection_dim, Some(768));
        assert_eq!(c.vision_config.projection_dim, 768);
        assert_eq!(c.vision_config.image_size, SquareSize(336));
        assert_eq!(c.vision_config.num_positions(), 577);
        let t = CLIPTextConfig::from_json_bytes(json, None).unwrap();
        assert_eq!(t, c.text_config);
    }

    #[test]
    fn bad_values_are_typed_errors() {
        let e = CLIPTextConfig::from_json_bytes(br#"{"hidden_act": "gelu_10"}"#, None).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { ref field, .. } if field == "hidden_act"),
            "{e}"
        );
        let e = CLIPTextConfig::from_json_bytes(br#"{"hidden_size": 30}"#, None).unwrap_err();
        assert!(
            matches!(e, Error::BadConfig { ref field, .. } if field == "num_attention_heads"),
            "{e}"
        );
        let e =
            CLIPVisionConfig::from_json_bytes(br#"{"image_size": [224, 192]}"#, None).unwrap_err();
        assert!(
            matches!(e, Error::BadConfig { ref field, .. } if field == "image_size"),
            "{e}"
        );
        let e = CLIPConfig::from_json_bytes(br#"{"vision_config": {"hidden_act": "tanh"}}"#, None)
            .unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { ref field, .. } if field == "vision_config.hidden_act"),
            "{e}"
        );
        let e = CLIPTextConfig::from_json_bytes(br#"{"eos_token_id": [1, 2]}"#, None).unwrap_err();
        assert!(
            matches!(e, Error::BadConfig { ref field, .. } if field == "eos_token_id"),
            "{e}"
        );
    }
}
