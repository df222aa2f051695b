//! Next-token training: batches of token sequences with a loss mask, and the masked
//! cross-entropy.

use candle_core::{DType, Device, Tensor, D};
use vidgen_video_core::{Error, Result};

use crate::model::{LlamaForCausalLM, LogitsToKeep};
use crate::prompt::VideoPrompt;

/// Which tokens of a prompt are trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossOn {
    /// Every video token that has a predecessor (demos and query).
    AllVideo,
    /// Only the query clip's tokens (the in-context continuation).
    Query,
}

/// A batch of token sequences for next-token training.
///
/// `loss_mask[b, j] = 1` makes token `j` of row `b` a target, predicted from everything before
/// it (the text prefix included). Token 0 of a row can only be a target when there is a text
/// prefix; without one its mask value is ignored. Rows of different lengths are right-padded
/// (id 0, mask 0): under causal attention padding never influences earlier positions.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    ids: Tensor,
    loss_mask: Tensor,
    text: Option<Tensor>,
}

impl TrainBatch {
    /// A batch from ids `[B, N]` (`u32` / `i64`) and a loss mask `[B, N]` (any float or
    /// integer dtype, nonzero = target).
    pub fn new(ids: Tensor, loss_mask: Tensor) -> Result<Self> {
        if ids.rank() != 2 {
            return Err(Error::invalid(
                "ids",
                format!("expected [B, N], got {:?}", ids.dims()),
            ));
        }
        if loss_mask.dims() != ids.dims() {
            return Err(Error::shape("loss_mask", ids.dims(), loss_mask.dims()));
        }
        let loss_mask = loss_mask
            .to_dtype(DType::F32)?
            .ne(0f32)?
            .to_dtype(DType::F32)?;
        Ok(TrainBatch {
            ids,
            loss_mask,
            text: None,
        })
    }

    /// Weights the targets: `weights [B, N]` (finite, ≥ 0) multiplies the loss mask, and the
    /// loss becomes the weighted mean `Σ w·nll / Σ w` over the targets. For example, to spend
    /// more of the loss on the few tokens that decide a continuation.
    ///
    /// # Errors
    /// A shape other than the ids', a negative or non-finite weight, or no target left with a
    /// positive weight.
    pub fn with_loss_weights(mut self, weights: &Tensor) -> Result<Self> {
        if weights.dims() != self.ids.dims() {
            return Err(Error::shape(
                "loss weights",
                self.ids.dims(),
                weights.dims(),
            ));
        }
        let w = weights.to_dtype(DType::F32)?;
        let v = w.flatten_all()?.to_vec1::<f32>()?;
        if let Some(bad) = v.iter().find(|x| !x.is_finite() || **x < 0.0) {
            return Err(Error::invalid(
                "loss weights",
                format!("must be finite and ≥ 0, found {bad}"),
            ));
        }
        let m = (&self.loss_mask * w)?;
        if m.sum_all()?.to_scalar::<f32>()? <= 0.0 {
            return Err(Error::invalid(
                "loss weights",
                "leave no target with a positive weight",
            ));
        }
        self.loss_mask = m;
        Ok(self)
    }

    /// Adds text prefix embeddings `[B, L, D]` (projected by the [`crate::VideoLm`]).
    pub fn with_text_prefix(mut self, text: Tensor) -> Result<Self> {
        let b = self.ids.dim(0)?;
        match text.dims() {
            &[tb, _, _] if tb == b => {}
            d => {
                return Err(Error::invalid(
                    "text prefix",
                    format!("expected [B, L, D] with B = {b}, got {d:?}"),
                ))
            }
        }
        self.text = Some(text);
        Ok(self)
    }

    /// A batch from prompts (each of batch 1 or more; rows are concatenated), right-padded to
    /// the longest. Text prefixes must be present on all or none and of one length.
    pub fn from_prompts(prompts: &[VideoPrompt], on: LossOn) -> Result<Self> {
        if prompts.is_empty() {
            return Err(Error::invalid("prompts", "empty batch"));
        }
        let n = prompts.iter().map(|p| p.video_len()).max().unwrap_or(0);
        let mut ids = Vec::new();
        let mut masks = Vec::new();
        for p in prompts {
            let tl = p.text_len();
            let pad = n - p.video_len();
            // The prompt's mask covers [text | video]; keep the video part.
            let m = p
                .video_mask(on == LossOn::Query)?
                .narrow(1, tl, p.video_len())?;
            let id = p.ids().to_dtype(DType::U32)?;
            let b = p.batch();
            if pad > 0 {
                ids.push(Tensor::cat(
                    &[&id, &Tensor::zeros((b, pad), DType::U32, &Device::Cpu)?],
                    1,
                )?);
                masks.push(Tensor::cat(
                    &[&m, &Tensor::zeros((b, pad), DType::F32, &Device::Cpu)?],
                    1,
                )?);
            } else {
                ids.push(id);
                masks.push(m);
            }
        }
        let with_text = prompts.iter().filter(|p| p.text_prefix().is_some()).count();
        let text = if with_text == 0 {
            None
        } else if with_text == prompts.len() {
            let ts: Vec<&Tensor> = prompts.iter().filter_map(|p| p.text_prefix()).collect();
            let l0 = ts[0].dims();
            if ts.iter().any(|t| t.dims()[1..] != l0[1..]) {
                return Err(Error::invalid(
                    "text prefix",
                    "prompts of one batch need text prefixes of one length and width",
                ));
            }
            Some(Tensor::cat(&ts, 0)?)
        } else {
            return Err(Error::invalid(
                "text prefix",
                "present in some prompts of the batch but not in others",
            ));
        };
        let mut batch = TrainBatch::new(Tensor::cat(&ids, 0)?, Tensor::cat(&masks, 0)?)?;
        if let Some(t) = text {
            batch = batch.with_text_prefix(t)?;
        }
        Ok(batch)
    }

    /// Token ids `[B, N]`.
    pub fn ids(&self) -> &Tensor {
        &self.ids
    }

    /// Loss mask `[B, N]` f32: 0 / 1, or the targets' weights after
    /// [`TrainBatch::with_loss_weights`].
    pub fn loss_mask(&self) -> &Tensor {
        &self.loss_mask
    }

    /// Text prefix `[B, L, D]`, if any.
    pub fn text_prefix(&self) -> Option<&Tensor> {
        self.text.as_ref()
    }
}

/// Masked mean next-token cross-entropy (natural log), differentiable with candle's autograd.
///
/// The decoder reads `[prefix | embed(ids)]` and the logits at position `p` score the token at
/// `p + 1`; the loss averages `−log softmax(logits)[target]` over the targets the mask selects.
///
/// # Shapes
/// `prefix`: `[B, L, hidden]` (already projected) or `None`; returns a scalar `[]` f32.
///
/// # Errors
/// A mask that selects no predictable token, out-of-vocabulary ids, mismatched widths.
pub fn next_token_loss(
    model: &LlamaForCausalLM,
    prefix: Option<&Tensor>,
    batch: &TrainBatch,
) -> Result<Tensor> {
    let dev = model.device();
    let ids = batch.ids.to_device(dev)?;
    let (_, n) = ids.dims2()?;
    let tokens = model.embed(&ids)?;
    let (embeds, l) = match prefix {
        Some(p) => (
            Tensor::cat(&[&p.to_dtype(model.dtype())?, &tokens], 1)?,
            p.dim(1)?,
        ),
        None => (tokens, 0),
    };
    // Targets are ids[j] for j ≥ first, scored by the logits at position l + j − 1.
    let first = if l == 0 { 1 } else { 0 };
    if n <= first {
        return Err(Error::invalid("ids", "too short: nothing to predict"));
    }
    let m = n - first;
    let logits = model.forward_embeds(&embeds, None, LogitsToKeep::All)?;
    let logits = logits.narrow(1, l + first - 1, m)?.to_dtype(DType::F32)?; // [B, m, V]
    let targets = ids.narrow(1, first, m)?.to_dtype(DType::U32)?; // [B, m]
    let mask = batch.loss_mask.to_device(dev)?.narrow(1, first, m)?; // [B, m]
    let count = mask.sum_all()?.to_scalar::<f32>()?;
    if count <= 0.0 {
        return Err(Error::invalid(
            "loss_mask",
            "selects no predictable token (token 0 is only predictable after a text prefix)",
        ));
    }
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    // [B, m, V] gather [B, m, 1] -> [B, m]
    let nll = logp
        .gather(&targets.unsqueeze(2)?.contiguous()?, 2)?
        .squeeze(2)?
        .neg()?;
    Ok(((nll * mask)?.sum_all()? / count as f64)?)
}
