//! # llama-video
//!
//! A Llama decoder over video tokens (planned; see the llama-video issue): loads transformers
//! `LlamaForCausalLM` directories (RMSNorm, RoPE, SwiGLU, grouped-query attention through
//! `video_kernels::attention`, KV cache), builds Vid-ICL in-context prompts (demo clips then a
//! query clip, no separators), optional text prefix projection, sampling and generation.
