//! Text instructions for the sharper miniature ("move left"), encoded by a real CLIP text
//! tower of `clip-encoders` ([`CLIPTextModel`]) behind the real CLIP tokenizer (OpenAI's BPE
//! vocabulary of 49 408 tokens, `fixtures/clip_tokenizer/openai/tokenizer`).
//!
//! The tower is small (width 32, one layer) and **frozen at a seeded random initialisation**:
//! the miniature cannot afford to pretrain a language model, and does not need to: distinct
//! instructions get distinct features, and the decoder learns what they mean through
//! llama-video's [`vidgen_llama_video::TextProjection`], which is trained with it. Only the
//! seed and the configuration are shipped ([`TextEncoderSpec`] in `text_encoder.json`); the
//! weights are rebuilt bit for bit from them (ChaCha8 draws, no candle RNG).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use vidgen_clip_encoders::{CLIPTextConfig, CLIPTextModel, CLIPTokenizer};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{seeded_rng, Direction};

/// The tokenizer folder vendored with the workspace's fixtures.
pub fn clip_tokenizer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fixtures")
        .join("clip_tokenizer")
        .join("openai")
        .join("tokenizer")
}

/// How to rebuild the text encoder (saved as `text_encoder.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextEncoderSpec {
    /// Seed of the weights.
    pub seed: u64,
    /// Width of the tower (the embeddings' `D`).
    pub hidden: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Tokens per instruction (BOS, words, EOS, padding): the prefix length.
    pub max_length: usize,
}

impl Default for TextEncoderSpec {
    fn default() -> Self {
        TextEncoderSpec {
            seed: 7,
            hidden: 32,
            layers: 1,
            heads: 2,
            intermediate: 64,
            max_length: 8,
        }
    }
}

/// The instruction for a direction (`"move up left"`).
pub fn instruction(d: Direction) -> String {
    let words = match d {
        Direction::Right => "right",
        Direction::UpRight => "up right",
        Direction::Up => "up",
        Direction::UpLeft => "up left",
        Direction::Left => "left",
        Direction::DownLeft => "down left",
        Direction::Down => "down",
        Direction::DownRight => "down right",
    };
    format!("move {words}")
}

/// CLIP tokenizer + frozen CLIP text tower.
#[derive(Debug, Clone)]
pub struct InstructionEncoder {
    spec: TextEncoderSpec,
    tokenizer: CLIPTokenizer,
    model: CLIPTextModel,
}

impl InstructionEncoder {
    /// Builds the encoder of `spec` with the tokenizer in `tokenizer_dir`.
    pub fn new(spec: &TextEncoderSpec, tokenizer_dir: &Path) -> Result<Self> {
        let tokenizer = CLIPTokenizer::from_dir(tokenizer_dir)?.with_max_length(spec.max_length)?;
        let mut cfg = CLIPTextConfig::default();
        cfg.vocab_size = tokenizer.vocab_size();
        cfg.hidden_size = spec.hidden;
        cfg.intermediate_size = spec.intermediate;
        cfg.num_hidden_layers = spec.layers;
        cfg.num_attention_heads = spec.heads;
        cfg.max_position_embeddings = spec.max_length;
        cfg.projection_dim = None;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let model = CLIPTextModel::new(&cfg, vb)?;
        seeded_text_init(&vars, spec.seed)?;
        Ok(InstructionEncoder {
            spec: spec.clone(),
            tokenizer,
            model,
        })
    }

    /// The encoder of `spec` with the vendored tokenizer.
    pub fn with_vendored_tokenizer(spec: &TextEncoderSpec) -> Result<Self> {
        Self::new(spec, &clip_tokenizer_dir())
    }

    /// The specification.
    pub fn spec(&self) -> &TextEncoderSpec {
        &self.spec
    }

    /// Embedding width `D`.
    pub fn dim(&self) -> usize {
        self.spec.hidden
    }

    /// Embeds texts: the tower's `last_hidden_state` of the padded token ids.
    ///
    /// # Shapes
    /// `B` texts → `[B, max_length, D]` f32.
    pub fn embed(&self, texts: &[&str]) -> Result<Tensor> {
        let tok = self.tokenizer.encode_batch(texts, &Device::Cpu)?;
        let out = self
            .model
            .forward_masked(&tok.input_ids, Some(&tok.attention_mask))?;
        Ok(out.last_hidden_state.detach())
    }

    /// The 8 directions' instruction embeddings, in [`Direction::ALL`] order, each `[1, L, D]`.
    pub fn direction_table(&self) -> Result<Vec<Tensor>> {
        let texts: Vec<String> = Direction::ALL.iter().map(|&d| instruction(d)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let all = self.embed(&refs)?;
        (0..8)
            .map(|i| Ok(all.narrow(0, i, 1)?))
            .collect::<Result<Vec<_>>>()
    }
}

/// Draws every variable from ChaCha8 in name order: LayerNorm weights 1 and biases 0, other
/// biases 0, embeddings `N(0, 0.02)` (CLIP's initialiser range), matrices `N(0, 1/fan_in)`.
fn seeded_text_init(vars: &VarMap, seed: u64) -> Result<()> {
    let mut rng = seeded_rng(seed);
    vidgen_video_nn::reinit_var_map(vars, |name, dims| {
        let n: usize = dims.iter().product();
        Ok(if dims.len() == 1 {
            let one = name.contains("layer_norm") && name.ends_with(".weight");
            vec![if one { 1.0 } else { 0.0 }; n]
        } else {
            let std = if name.contains("embedding") {
                0.02
            } else {
                (dims[1..].iter().product::<usize>().max(1) as f32)
                    .sqrt()
                    .recip()
            };
            let normal =
                Normal::new(0.0f32, std).map_err(|e| Error::invalid("init", e.to_string()))?;
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn instructions_embed_reproducibly_and_differently() {
        let spec = TextEncoderSpec::default();
        let a = InstructionEncoder::with_vendored_tokenizer(&spec).unwrap();
        let b = InstructionEncoder::with_vendored_tokenizer(&spec).unwrap();
        let ta = a.direction_table().unwrap();
        let tb = b.direction_table().unwrap();
        assert_eq!(ta.len(), 8);
        assert_eq!(ta[0].dims(), &[1, 8, 32]);
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&ta[3]), v(&tb[3]));
        assert_ne!(v(&ta[0]), v(&ta[4]));
    }
}
