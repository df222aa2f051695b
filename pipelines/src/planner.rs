//! AID's MLLM state decomposition with a real instruct model: the instruction is turned into
//! per-stage state descriptions by SmolLM2-135M-Instruct (or any Llama-architecture GGUF with a
//! ChatML template) through `vidgen-llama-video`, greedy.

use std::path::Path;

use candle_core::{DType, Device};
use rand::SeedableRng;
use vidgen_llama_video::tokenizer::{decode, encode, gguf_tokenizer, smollm2_chat_prompt};
use vidgen_llama_video::{ChatMessage, GgufFile, LlamaForCausalLM, SamplingConfig};
use vidgen_video_core::{Error, Result};

use crate::aid::StagePlanner;

/// A stage planner on an instruct LLM loaded from a GGUF file.
pub struct LlmPlanner {
    model: LlamaForCausalLM,
    tokenizer: tokenizers::Tokenizer,
    stop: Vec<u32>,
    /// Most tokens generated per plan (default 96).
    pub max_new_tokens: usize,
}

impl LlmPlanner {
    /// Loads a GGUF instruct model (dequantised to f32 on the CPU) and its embedded tokenizer.
    ///
    /// # Errors
    /// An unreadable or unsupported GGUF (named), a tokenizer that cannot be built from it.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = GgufFile::open(path)?;
        let tokenizer = gguf_tokenizer(&file)?;
        let (model, _) = LlamaForCausalLM::from_gguf(path, DType::F32, &Device::Cpu)?;
        let stop: Vec<u32> = ["<|im_end|>", "<|endoftext|>"]
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        Ok(Self {
            model,
            tokenizer,
            stop,
            max_new_tokens: 96,
        })
    }

    /// The chat prompt asking for `stages` states.
    pub fn prompt(instruction: &str, stages: usize) -> String {
        let user = format!(
            "Split the instruction into {stages} short steps that happen one after another, \
             one per line, numbered 1 to {stages}. Instruction: {}",
            instruction.trim()
        );
        smollm2_chat_prompt(&[ChatMessage::user(user)], true)
    }
}

/// The numbered lines of an LLM answer (`1. …`, `2) …`, `- …`), cleaned; at most `stages`.
pub fn parse_steps(answer: &str, stages: usize) -> Vec<String> {
    answer
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start_matches(['.', ')', ':', '-', '*'])
                .trim()
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .take(stages)
        .collect()
}

impl StagePlanner for LlmPlanner {
    fn plan(&self, instruction: &str, stages: usize) -> Result<Vec<String>> {
        let ids = encode(&self.tokenizer, &Self::prompt(instruction, stages))?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let out = self.model.generate(
            &ids,
            self.max_new_tokens,
            &SamplingConfig::greedy(),
            &self.stop,
            &mut rng,
        )?;
        let text = decode(&self.tokenizer, &out, true)?;
        let mut steps = parse_steps(&text, stages);
        if steps.is_empty() {
            return Err(Error::invalid(
                "stage planner",
                format!("the LLM gave no usable step for {instruction:?}: {text:?}"),
            ));
        }
        // Fewer lines than stages: the last state holds (the instruction is complete).
        while steps.len() < stages {
            let last = steps.last().cloned().unwrap_or_default();
            steps.push(last);
        }
        Ok(steps)
    }
}
