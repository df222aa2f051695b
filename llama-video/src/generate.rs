//! [`VideoLm`]: a decoder plus an optional text projection, with frame generation
//! (sampling, classifier-free guidance, progress) and the training loss.

use candle_core::{DType, Tensor};
use candle_nn::Optimizer;
use rand::Rng;
use vidgen_video_core::{Error, Result, TokenGrid};

use crate::model::{LlamaForCausalLM, LogitsToKeep};
use crate::prompt::{TextProjection, VideoPrompt};
use crate::sampling::{last_rows, sample, SamplingConfig};
use crate::train::{next_token_loss, TrainBatch};

/// What the unconditional pass of classifier-free guidance sees in place of the text prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UncondPrefix {
    /// The projected prefix replaced by zeros of the same length (positions unchanged; the
    /// convention of `vidgen_video_core::Conditioning::without`). Default.
    #[default]
    Zeros,
    /// No prefix at all: the video tokens start at position 0.
    Drop,
}

/// Where generation stands, passed to the progress callback after every finished frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Frames finished so far (1-based count).
    pub frames_done: usize,
    /// Frames asked for.
    pub n_frames: usize,
    /// Tokens generated so far (per batch row).
    pub tokens_done: usize,
    /// Tokens to generate in all (per batch row).
    pub tokens_total: usize,
}

/// Names the generation step (and frame, token, batch row) in an [`Error::NonFinite`]; other
/// errors pass unchanged.
///
/// `hw`: tokens per frame, for frame generation (`None`: plain text generation).
fn at_step(e: Error, step: usize, hw: Option<usize>, row: Option<usize>) -> Error {
    match e {
        Error::NonFinite {
            location,
            nan,
            inf,
            total,
        } => {
            let mut parts = Vec::new();
            if let Some(hw) = hw.filter(|&h| h > 0) {
                parts.push(format!("frame {}, token {}", step / hw, step % hw));
            }
            if let Some(r) = row {
                parts.push(format!("batch row {r}"));
            }
            let detail = if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join(", "))
            };
            Error::NonFinite {
                location: format!("generation step {step}{detail}: {location}"),
                nan,
                inf,
                total,
            }
        }
        other => other,
    }
}

/// A Llama decoder over video tokens with an optional text-prefix projection.
///
/// Generation ([`VideoLm::generate_frames`]) continues the query clip of a [`VideoPrompt`]
/// frame by frame with a KV cache; training ([`VideoLm::train_step`]) minimises next-token
/// cross-entropy over a [`TrainBatch`].
#[derive(Debug, Clone)]
pub struct VideoLm {
    model: LlamaForCausalLM,
    text_projection: Option<TextProjection>,
    uncond: UncondPrefix,
}

impl VideoLm {
    /// Wraps a decoder; text prefixes must then already have the hidden size.
    pub fn new(model: LlamaForCausalLM) -> Self {
        VideoLm {
            model,
            text_projection: None,
            uncond: UncondPrefix::default(),
        }
    }

    /// Adds a projection for text prefixes from an encoder of another width.
    pub fn with_text_projection(mut self, projection: TextProjection) -> Self {
        self.text_projection = Some(projection);
        self
    }

    /// Chooses the unconditional prefix of classifier-free guidance.
    pub fn with_uncond_prefix(mut self, uncond: UncondPrefix) -> Self {
        self.uncond = uncond;
        self
    }

    /// The decoder.
    pub fn model(&self) -> &LlamaForCausalLM {
        &self.model
    }

    /// The text projection, if any.
    pub fn text_projection(&self) -> Option<&TextProjection> {
        self.text_projection.as_ref()
    }

    /// The text prefix mapped to decoder inputs (projected if a projection is set).
    ///
    /// # Shapes
    /// `[B, L, D]` → `[B, L, hidden]` in the model's dtype.
    ///
    /// # Errors
    /// `D` differs from the projection's `text_dim`, or (no projection) from `hidden_size`.
    pub fn project_text(&self, text: &Tensor) -> Result<Tensor> {
        let text = text.to_device(self.model.device())?;
        let y = match &self.text_projection {
            Some(p) => p.forward(&text.to_dtype(p.dtype())?)?,
            None => {
                let h = self.model.hidden_size();
                match text.dims() {
                    &[_, _, d] if d == h => text,
                    d => {
                        let mut want = d.to_vec();
                        if let Some(l) = want.last_mut() {
                            *l = h;
                        }
                        return Err(Error::shape(
                            "text prefix embeddings (no TextProjection: last dim = hidden_size)",
                            &want,
                            d,
                        ));
                    }
                }
            }
        };
        Ok(y.to_dtype(self.model.dtype())?)
    }

    /// The decoder input of a prompt: projected text prefix then token embeddings.
    ///
    /// # Shapes
    /// → `[B, text_len + video_len, hidden]`.
    pub fn prompt_embeds(&self, prompt: &VideoPrompt) -> Result<Tensor> {
        let prefix = match prompt.text_prefix() {
            Some(t) => Some(self.project_text(t)?),
            None => None,
        };
        self.embeds_with_prefix(prefix.as_ref(), prompt.ids())
    }

    fn embeds_with_prefix(&self, prefix: Option<&Tensor>, ids: &Tensor) -> Result<Tensor> {
        let ids = ids.to_device(self.model.device())?;
        let video = if ids.dim(1)? > 0 {
            Some(self.model.embed(&ids)?)
        } else {
            None
        };
        match (prefix, video) {
            (Some(p), Some(v)) => Ok(Tensor::cat(&[p, &v], 1)?),
            (Some(p), None) => Ok(p.clone()),
            (None, Some(v)) => Ok(v),
            (None, None) => Err(Error::invalid(
                "video prompt",
                "empty: no text and no tokens",
            )),
        }
    }

    /// Generates `n_frames` frames continuing the query clip.
    ///
    /// The prompt is prefilled once into a KV cache, then tokens are drawn one at a time with
    /// `sampling` and `rng` (the only source of randomness: a seeded RNG gives the same frames
    /// every run) and fed back. With `sampling.cfg_scale ≠ 1` an unconditional pass (see
    /// [`UncondPrefix`]) runs beside the conditional one with its own cache. `progress` is
    /// called after every finished frame.
    ///
    /// # Shapes
    /// Returns a `TokenGrid` `[B, n_frames, h, w]` with the query clip's `h × w`.
    ///
    /// # Errors
    /// Prompt plus generated tokens longer than the context, guidance without a text prefix,
    /// invalid sampling settings, out-of-vocabulary prompt ids, mismatched embedding widths;
    /// [`Error::NonFinite`] naming the generation step when the logits hold NaN or ±inf.
    pub fn generate_frames(
        &self,
        prompt: &VideoPrompt,
        n_frames: usize,
        sampling: &SamplingConfig,
        rng: &mut impl Rng,
        mut progress: impl FnMut(Progress),
    ) -> Result<TokenGrid> {
        let vocab = self.model.vocab_size();
        sampling.validate(vocab)?;
        let q = prompt.query();
        let hw = q.h * q.w;
        if hw == 0 {
            return Err(Error::invalid("query clip", "has h·w = 0 tokens per frame"));
        }
        let total = n_frames * hw;
        let b = prompt.batch();
        if total == 0 {
            return TokenGrid::new(Tensor::zeros(
                (b, 0, q.h, q.w),
                DType::U32,
                &candle_core::Device::Cpu,
            )?);
        }
        // The last generated token is never fed back: the cache needs len + total − 1.
        let need = prompt.len() + total - 1;
        if let Some(ctx) = self.model.config().context_len() {
            if need > ctx {
                return Err(Error::invalid(
                    "video prompt",
                    format!(
                        "{} prompt positions + {total} generated tokens ({n_frames} frames of \
                         {hw}) exceed the model's context of {ctx} positions",
                        prompt.len()
                    ),
                ));
            }
        }
        let prefix = match prompt.text_prefix() {
            Some(t) => Some(self.project_text(t)?),
            None => None,
        };
        let embeds = self.embeds_with_prefix(prefix.as_ref(), prompt.ids())?;
        let mut cache = self.model.new_cache(b, need)?;
        let mut logits = self
            .model
            .forward_embeds(&embeds, Some(&mut cache), LogitsToKeep::Last)
            .map_err(|e| at_step(e, 0, Some(hw), None))?;

        let mut uncond = if sampling.uses_cfg() {
            let p = prefix.as_ref().ok_or_else(|| {
                Error::invalid(
                    "sampling.cfg_scale",
                    "classifier-free guidance needs a text prefix in the prompt",
                )
            })?;
            let up = match self.uncond {
                UncondPrefix::Zeros => Some(p.zeros_like()?),
                UncondPrefix::Drop => None,
            };
            let ue = self.embeds_with_prefix(up.as_ref(), prompt.ids())?;
            let mut uc = self.model.new_cache(b, ue.dim(1)? + total - 1)?;
            let ul = self
                .model
                .forward_embeds(&ue, Some(&mut uc), LogitsToKeep::Last)
                .map_err(|e| at_step(e, 0, Some(hw), None))?;
            Some((uc, ul))
        } else {
            None
        };

        let mut history: Vec<Vec<u32>> = prompt.ids().to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let mut generated: Vec<Vec<u32>> = vec![Vec::with_capacity(total); b];
        for step in 0..total {
            let rows = last_rows(&logits)?;
            let urows = match &uncond {
                Some((_, ul)) => Some(last_rows(ul)?),
                None => None,
            };
            let mut next = Vec::with_capacity(b);
            for (i, row) in rows.iter().enumerate() {
                let u = urows.as_ref().and_then(|u| u.get(i)).map(|r| r.as_slice());
                let tok = sample(row, u, &history[i], sampling, rng)
                    .map_err(|e| at_step(e, step, Some(hw), Some(i)))?;
                history[i].push(tok);
                generated[i].push(tok);
                next.push(tok);
            }
            if (step + 1) % hw == 0 {
                progress(Progress {
                    frames_done: (step + 1) / hw,
                    n_frames,
                    tokens_done: step + 1,
                    tokens_total: total,
                });
            }
            if step + 1 < total {
                let tok = Tensor::from_vec(next, (b, 1), self.model.device())?;
                // These logits are sampled at the next step.
                logits = self
                    .model
                    .forward(&tok, Some(&mut cache), LogitsToKeep::Last)
                    .map_err(|e| at_step(e, step + 1, Some(hw), None))?;
                if let Some((uc, ul)) = uncond.as_mut() {
                    *ul = self
                        .model
                        .forward(&tok, Some(uc), LogitsToKeep::Last)
                        .map_err(|e| at_step(e, step + 1, Some(hw), None))?;
                }
            }
        }
        let flat: Vec<u32> = generated.into_iter().flatten().collect();
        let flat = Tensor::from_vec(flat, (b, total), &candle_core::Device::Cpu)?;
        prompt.to_frames(&flat)
    }

    /// Mean next-token cross-entropy of a batch (differentiable; see [`next_token_loss`]).
    ///
    /// # Shapes
    /// Returns a scalar `[]` f32.
    pub fn loss(&self, batch: &TrainBatch) -> Result<Tensor> {
        let prefix = match batch.text_prefix() {
            Some(t) => Some(self.project_text(t)?),
            None => None,
        };
        next_token_loss(&self.model, prefix.as_ref(), batch)
    }

    /// One optimisation step: loss, backward, `optimizer.backward_step`. Returns the loss
    /// before the step. The optimizer must hold the variables to train (e.g. a `VarMap`'s
    /// `all_vars()` given to `candle_nn::AdamW`).
    ///
    /// The step runs on a worker of rayon's pool ([`vidgen_video_core::in_pool`]): its
    /// forward and backward are a few thousand small parallel operations, which from an outside
    /// thread would each be injected into the pool while the caller sleeps.
    pub fn train_step<O: Optimizer + Send>(
        &self,
        optimizer: &mut O,
        batch: &TrainBatch,
    ) -> Result<f32> {
        vidgen_video_core::in_pool(|| {
            let loss = self.loss(batch)?;
            optimizer.backward_step(&loss)?;
            Ok(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?)
        })
    }
}

impl LlamaForCausalLM {
    /// Continues a token sequence (text generation, e.g. an instruct model's answer to a chat
    /// prompt): the prompt is prefilled into a KV cache, then up to `max_new_tokens` tokens
    /// are drawn one at a time with `sampling` and `rng` and fed back. Generation stops after
    /// a token in `stop` (e.g. the tokenizer's end-of-turn id), which is returned as the last
    /// token. The repetition penalty sees the prompt and the tokens drawn so far.
    ///
    /// Returns the new tokens only.
    ///
    /// # Errors
    /// An empty prompt, ids outside the vocabulary, prompt plus `max_new_tokens` beyond the
    /// context, invalid sampling settings (classifier-free guidance needs an unconditional
    /// branch: use [`VideoLm`]); [`Error::NonFinite`] naming the generation step.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_new_tokens: usize,
        sampling: &SamplingConfig,
        stop: &[u32],
        rng: &mut impl Rng,
    ) -> Result<Vec<u32>> {
        sampling.validate(self.vocab_size())?;
        if sampling.uses_cfg() {
            return Err(Error::invalid(
                "sampling.cfg_scale",
                "text generation has no unconditional branch; use VideoLm for guidance",
            ));
        }
        if prompt.is_empty() {
            return Err(Error::invalid("prompt", "empty: no token to continue"));
        }
        if max_new_tokens == 0 {
            return Ok(Vec::new());
        }
        // The last drawn token is never fed back.
        let need = prompt.len() + max_new_tokens - 1;
        if let Some(ctx) = self.config().context_len() {
            if need > ctx {
                return Err(Error::invalid(
                    "max_new_tokens",
                    format!(
                        "{} prompt tokens + {max_new_tokens} new tokens exceed the model's \
                         context of {ctx} positions",
                        prompt.len()
                    ),
                ));
            }
        }
        let mut cache = self.new_cache(1, need)?;
        let ids = Tensor::from_slice(prompt, (1, prompt.len()), self.device())?;
        let mut logits = self
            .forward(&ids, Some(&mut cache), LogitsToKeep::Last)
            .map_err(|e| at_step(e, 0, None, None))?;
        let mut history = prompt.to_vec();
        let mut out = Vec::with_capacity(max_new_tokens);
        for step in 0..max_new_tokens {
            let rows = last_rows(&logits)?;
            let row = rows
                .first()
                .ok_or_else(|| Error::invalid("logits", "no batch row"))?;
            let tok = sample(row, None, &history, sampling, rng)
                .map_err(|e| at_step(e, step, None, None))?;
            history.push(tok);
            out.push(tok);
            if stop.contains(&tok) || step + 1 == max_new_tokens {
                break;
            }
            let t = Tensor::from_slice(&[tok], (1, 1), self.device())?;
            logits = self
                .forward(&t, Some(&mut cache), LogitsToKeep::Last)
                .map_err(|e| at_step(e, step + 1, None, None))?;
        }
        Ok(out)
    }
}
