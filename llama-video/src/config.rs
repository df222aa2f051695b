//! The Llama configuration, read from transformers' `config.json` as written.
//!
//! Both spellings of the rotary settings are accepted: transformers ≤ 4 writes `rope_theta` and
//! `rope_scaling` (`{"type" | "rope_type": ..., "factor": ...}`), transformers 5 writes one
//! `rope_parameters` object (`{"rope_type": ..., "rope_theta": ..., ...}`). When both are present,
//! `rope_parameters` wins, as in transformers 5.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};

/// The rotary-embedding parameters as they appear in `rope_parameters` / `rope_scaling`.
///
/// Every field is optional; unknown keys (`beta_fast`, `mrope_section`, ...) are ignored here and
/// rejected later only if the `rope_type` that needs them is unsupported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    /// `default`, `linear`, `dynamic`, `llama3` (others give [`Error::Unsupported`]).
    #[serde(default)]
    pub rope_type: Option<String>,
    /// The older spelling of `rope_type` used by `rope_scaling`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// RoPE base θ (transformers 5 keeps it here).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Scaling factor of `linear`, `dynamic` and `llama3`.
    #[serde(default)]
    pub factor: Option<f64>,
    /// Context length the model was pre-trained with (`llama3`; optional for `dynamic`).
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
    /// `llama3`: wavelengths longer than `original / low_freq_factor` are divided by `factor`.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// `llama3`: wavelengths shorter than `original / high_freq_factor` are kept.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// Fraction of `head_dim` that is rotated (transformers 5 may keep it here).
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
}

/// `LlamaConfig` of transformers: the fields this crate reads, with transformers' defaults.
///
/// Read it with [`LlamaConfig::from_file`] (or `ModelDir::config` followed by
/// [`LlamaConfig::validate`]). Unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of `embed_tokens`, columns of the logits). Default 32000.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Model width. Default 4096.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP. Default 11008.
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Number of decoder layers. Default 32.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Query heads. Default 32.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); `None` means `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; `None` means `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Context length (positions the model was trained for). Default 2048.
    #[serde(default = "d_maxpos")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon. Default 1e-6.
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base θ of transformers ≤ 4 (transformers 5 writes it in `rope_parameters`).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// RoPE scaling of transformers ≤ 4 (`null` for none).
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    /// RoPE settings of transformers 5.
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// Fraction of `head_dim` that is rotated; `None` means 1.
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    /// Bias on `q_proj`, `k_proj`, `v_proj`, `o_proj`. Default false.
    #[serde(default)]
    pub attention_bias: bool,
    /// Bias on `gate_proj`, `up_proj`, `down_proj`. Default false.
    #[serde(default)]
    pub mlp_bias: bool,
    /// `lm_head` shares `embed_tokens`' weight. Default false (Llama's default).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// MLP activation; only `silu` (SwiGLU) is supported. Default `silu`.
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Beginning-of-sequence token id, if any.
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    /// End-of-sequence token id(s), if any.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

fn d_vocab() -> usize {
    32000
}
fn d_hidden() -> usize {
    4096
}
fn d_inter() -> usize {
    11008
}
fn d_layers() -> usize {
    32
}
fn d_heads() -> usize {
    32
}
fn d_maxpos() -> usize {
    2048
}
fn d_eps() -> f64 {
    1e-6
}
fn d_act() -> String {
    "silu".into()
}

impl Default for LlamaConfig {
    /// transformers' `LlamaConfig()` defaults (Llama-2-7B sizes).
    fn default() -> Self {
        LlamaConfig {
            vocab_size: d_vocab(),
            hidden_size: d_hidden(),
            intermediate_size: d_inter(),
            num_hidden_layers: d_layers(),
            num_attention_heads: d_heads(),
            num_key_value_heads: None,
            head_dim: None,
            max_position_embeddings: d_maxpos(),
            rms_norm_eps: d_eps(),
            rope_theta: None,
            rope_scaling: None,
            rope_parameters: None,
            partial_rotary_factor: None,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
            hidden_act: d_act(),
            bos_token_id: None,
            eos_token_id: None,
        }
    }
}

/// The resolved rotary scheme (what `rope_type` selects), see transformers' `modeling_rope_utils`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeKind {
    /// Plain RoPE: `inv_freq[i] = θ^(-2i/dim)`.
    Default,
    /// Position interpolation: `inv_freq / factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Dynamic NTK: beyond `original_max` positions θ grows with the sequence length.
    Dynamic {
        /// The scaling factor.
        factor: f64,
        /// Length up to which plain RoPE is used.
        original_max: usize,
    },
    /// Llama 3.1 frequency-dependent scaling.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Low-frequency wavelength threshold factor.
        low_freq_factor: f64,
        /// High-frequency wavelength threshold factor.
        high_freq_factor: f64,
        /// The pre-training context length.
        original_max: usize,
    },
}

/// Rotary settings resolved from either config spelling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeConfig {
    /// The base θ.
    pub theta: f64,
    /// The scheme.
    pub kind: RopeKind,
    /// Rotated dimensions per head (even, `≤ head_dim`).
    pub rotary_dim: usize,
}

impl LlamaConfig {
    /// Reads and validates a `config.json`; errors name the field and the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let cfg: LlamaConfig = vidgen_video_core::loading::read_config(path)?;
        cfg.validate().map_err(|e| match e {
            Error::BadConfig { field, reason, .. } => Error::BadConfig {
                field,
                reason,
                file: Some(path.display().to_string()),
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Reads and validates `<dir>/config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(dir.as_ref().join("config.json"))
    }

    /// Key/value heads (`num_key_value_heads`, or `num_attention_heads` when absent).
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width (`head_dim`, or `hidden_size / num_attention_heads` when absent).
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &str, v: usize| -> Result<()> {
            if v == 0 {
                return Err(Error::config(name, "must be >= 1"));
            }
            Ok(())
        };
        positive("vocab_size", self.vocab_size)?;
        positive("hidden_size", self.hidden_size)?;
        positive("intermediate_size", self.intermediate_size)?;
        positive("num_hidden_layers", self.num_hidden_layers)?;
        positive("num_attention_heads", self.num_attention_heads)?;
        positive("max_position_embeddings", self.max_position_embeddings)?;
        if let Some(kv) = self.num_key_value_heads {
            positive("num_key_value_heads", kv)?;
            if !self.num_attention_heads.is_multiple_of(kv) {
                return Err(Error::config(
                    "num_key_value_heads",
                    format!(
                        "num_attention_heads = {} is not a multiple of num_key_value_heads = {kv}",
                        self.num_attention_heads
                    ),
                ));
            }
        }
        match self.head_dim {
            Some(d) => positive("head_dim", d)?,
            None => {
                if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
                    return Err(Error::config(
                        "head_dim",
                        format!(
                            "absent, and hidden_size = {} is not a multiple of \
                             num_attention_heads = {}",
                            self.hidden_size, self.num_attention_heads
                        ),
                    ));
                }
            }
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(Error::config(
                "rms_norm_eps",
                format!("must be a positive number, got {}", self.rms_norm_eps),
            ));
        }
        if self.hidden_act != "silu" {
            return Err(Error::Unsupported {
                field: "hidden_act".into(),
                value: self.hidden_act.clone(),
                supported: "silu".into(),
            });
        }
        self.rope()?;
        Ok(())
    }

    /// Resolves the rotary settings from `rope_parameters` (transformers 5) or
    /// `rope_theta` + `rope_scaling` (transformers ≤ 4).
    pub fn rope(&self) -> Result<RopeConfig> {
        let (params, field) = match (&self.rope_parameters, &self.rope_scaling) {
            (Some(p), _) => (p.clone(), "rope_parameters"),
            (None, Some(s)) => (s.clone(), "rope_scaling"),
            (None, None) => (RopeParameters::default(), "rope_parameters"),
        };
        let theta = params.rope_theta.or(self.rope_theta).unwrap_or(10000.0);
        if !(theta.is_finite() && theta > 0.0) {
            return Err(Error::config(
                format!("{field}.rope_theta"),
                format!("must be a positive number, got {theta}"),
            ));
        }
        let kind_name = params
            .rope_type
            .clone()
            .or(params.type_.clone())
            .unwrap_or_else(|| "default".into());
        let factor = |name: &str| -> Result<f64> {
            match params.factor {
                Some(f) if f.is_finite() && f > 0.0 => Ok(f),
                Some(f) => Err(Error::config(
                    format!("{field}.factor"),
                    format!("must be a positive number, got {f} (rope_type `{name}`)"),
                )),
                None => Err(Error::config(
                    format!("{field}.factor"),
                    format!("required by rope_type `{name}`"),
                )),
            }
        };
        let kind = match kind_name.as_str() {
            "default" => RopeKind::Default,
            "linear" => RopeKind::Linear {
                factor: factor("linear")?,
            },
            "dynamic" => RopeKind::Dynamic {
                factor: factor("dynamic")?,
                original_max: params
                    .original_max_position_embeddings
                    .unwrap_or(self.max_position_embeddings),
            },
            "llama3" => {
                let f = factor("llama3")?;
                let get = |v: Option<f64>, name: &str| -> Result<f64> {
                    match v {
                        Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                        Some(x) => Err(Error::config(
                            format!("{field}.{name}"),
                            format!("must be a positive number, got {x}"),
                        )),
                        None => Err(Error::config(
                            format!("{field}.{name}"),
                            "required by rope_type `llama3`",
                        )),
                    }
                };
                let low = get(params.low_freq_factor, "low_freq_factor")?;
                let high = get(params.high_freq_factor, "high_freq_factor")?;
                if high <= low {
                    return Err(Error::config(
                        format!("{field}.high_freq_factor"),
                        format!("must be larger than low_freq_factor ({high} <= {low})"),
                    ));
                }
                let original_max = params.original_max_position_embeddings.ok_or_else(|| {
                    Error::config(
                        format!("{field}.original_max_position_embeddings"),
                        "required by rope_type `llama3`",
                    )
                })?;
                if original_max == 0 {
                    return Err(Error::config(
                        format!("{field}.original_max_position_embeddings"),
                        "must be >= 1",
                    ));
                }
                RopeKind::Llama3 {
                    factor: f,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max,
                }
            }
            other => {
                return Err(Error::Unsupported {
                    field: format!("{field}.rope_type"),
                    value: other.to_string(),
                    supported: "default, linear, dynamic, llama3".into(),
                })
            }
        };
        let prf = params
            .partial_rotary_factor
            .or(self.partial_rotary_factor)
            .unwrap_or(1.0);
        if !(prf.is_finite() && prf > 0.0 && prf <= 1.0) {
            return Err(Error::config(
                "partial_rotary_factor",
                format!("must be in (0, 1], got {prf}"),
            ));
        }
        let head_dim = self.head_dim();
        // transformers: dim = int(head_dim * partial_rotary_factor)
        let rotary_dim = (head_dim as f64 * prf) as usize;
        if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
            return Err(Error::config(
                "partial_rotary_factor",
                format!(
                    "rotated dimension head_dim·factor = {head_dim}·{prf} = {rotary_dim} \
                     must be even and >= 2"
                ),
            ));
        }
        Ok(RopeConfig {
            theta,
            kind,
            rotary_dim,
        })
    }

    /// The longest sequence (prompt plus generated tokens) the model accepts, or `None` when
    /// unbounded: `max_position_embeddings`, except with `dynamic` RoPE scaling, whose purpose is
    /// to run beyond it.
    pub fn context_len(&self) -> Option<usize> {
        match self.rope() {
            Ok(RopeConfig {
                kind: RopeKind::Dynamic { .. },
                ..
            }) => None,
            _ => Some(self.max_position_embeddings),
        }
    }

    /// A small config for tests and examples: `vocab` tokens, `hidden` width, `layers` layers,
    /// `heads` query heads and `kv_heads` key/value heads, SwiGLU width `2·hidden`,
    /// 1024 positions, θ = 10000, eps 1e-5.
    pub fn tiny(vocab: usize, hidden: usize, layers: usize, heads: usize, kv_heads: usize) -> Self {
        LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: 2 * hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            head_dim: None,
            max_position_embeddings: 1024,
            rms_norm_eps: 1e-5,
            rope_theta: Some(10000.0),
            ..Default::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(s: &str) -> LlamaConfig {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn defaults_are_transformers() {
        let c = parse("{}");
        assert_eq!(c.vocab_size, 32000);
        assert_eq!(c.kv_heads(), 32);
        assert_eq!(c.head_dim(), 128);
        assert_eq!(c.rms_norm_eps, 1e-6);
        let r = c.rope().unwrap();
        assert_eq!(r.theta, 10000.0);
        assert_eq!(r.kind, RopeKind::Default);
        assert_eq!(r.rotary_dim, 128);
        assert!(!c.tie_word_embeddings);
        c.validate().unwrap();
    }

    #[test]
    fn both_rope_spellings() {
        let v4 =
            parse(r#"{"rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 2.0}}"#);
        let r = v4.rope().unwrap();
        assert_eq!(r.theta, 500000.0);
        assert_eq!(r.kind, RopeKind::Linear { factor: 2.0 });
        let v5 = parse(
            r#"{"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}}"#,
        );
        let r = v5.rope().unwrap();
        assert_eq!(r.theta, 500000.0);
        assert!(matches!(
            r.kind,
            RopeKind::Llama3 {
                original_max: 8192,
                ..
            }
        ));
        let partial =
            parse(r#"{"hidden_size": 64, "num_attention_heads": 4, "partial_rotary_factor": 0.5}"#);
        assert_eq!(partial.rope().unwrap().rotary_dim, 8);
    }

    #[test]
    fn unsupported_rope_type_is_named() {
        let c = parse(r#"{"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}"#);
        match c.validate() {
            Err(Error::Unsupported { field, value, .. }) => {
                assert_eq!(field, "rope_parameters.rope_type");
                assert_eq!(value, "yarn");
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let c = parse(r#"{"num_attention_heads": 6, "num_key_value_heads": 4}"#);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
        let c = parse(r#"{"rope_scaling": {"type": "dynamic"}}"#);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("rope_scaling.factor"), "{e}");
        let c = parse(r#"{"hidden_act": "gelu"}"#);
        assert!(matches!(c.validate(), Err(Error::Unsupported { .. })));
        let c = parse(r#"{"vocab_size": 0}"#);
        assert!(c.validate().unwrap_err().to_string().contains("vocab_size"));
    }
}
