//! AID's DQFormer (dual-query transformer): turns an instruction into the UNet's
//! cross-attention context, with a global (multimodal) part and a per-frame (decomposed) part.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_nn::{LayerNorm, Linear, MhaConfig, MultiHeadAttention};

fn d_heads() -> usize {
    8
}
fn d_ffn() -> usize {
    4
}

/// Sizes of a [`DQFormer`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DQFormerConfig {
    /// Model width `C` (divisible by `heads`).
    pub dim: usize,
    /// Attention heads (default 8).
    #[serde(default = "d_heads")]
    pub heads: usize,
    /// Frames `N` the decomposed queries cover.
    pub num_frames: usize,
    /// Queries per frame `Nt`.
    pub tokens_per_frame: usize,
    /// Width of the instruction tokens `t1` (projected to `C`).
    pub text_dim: usize,
    /// Width of the visual features `v` (projected to `C`).
    pub visual_dim: usize,
    /// Width of the state features `t2` (projected to `C`).
    pub state_dim: usize,
    /// Width of the output context (the UNet's `cross_attention_dim`).
    pub context_dim: usize,
    /// FFN hidden width as a multiple of `C` (default 4).
    #[serde(default = "d_ffn")]
    pub ffn_mult: usize,
}

impl DQFormerConfig {
    /// Checks the fields.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("dim", self.dim),
            ("heads", self.heads),
            ("num_frames", self.num_frames),
            ("tokens_per_frame", self.tokens_per_frame),
            ("text_dim", self.text_dim),
            ("visual_dim", self.visual_dim),
            ("state_dim", self.state_dim),
            ("context_dim", self.context_dim),
            ("ffn_mult", self.ffn_mult),
        ] {
            if v == 0 {
                return Err(Error::config(name, "must be ≥ 1"));
            }
        }
        if !self.dim.is_multiple_of(self.heads) {
            return Err(Error::config(
                "heads",
                format!("{} heads must divide dim = {}", self.heads, self.dim),
            ));
        }
        Ok(())
    }
}

/// `Linear` over the last dim.
fn lin(l: &Linear, x: &Tensor) -> Result<Tensor> {
    l.forward(x)
}

/// Multi-head attention `[B, Lq, C] × [B, Lk, C] → [B, Lq, C]`: `to_q` / `to_k` / `to_v`
/// without bias, `to_out` with.
#[derive(Debug, Clone)]
struct Mha(MultiHeadAttention);

impl Mha {
    fn new(c: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = MhaConfig {
            embed_dim: c,
            num_heads: heads,
            kv_dim: None,
            qkv_bias: false,
            out_bias: true,
            names: ["to_q", "to_k", "to_v", "to_out"].map(String::from),
            scale: None,
        };
        Ok(Self(MultiHeadAttention::new(&cfg, vb)?))
    }

    fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        self.0.forward(x, Some(ctx), None, false)
    }
}

#[derive(Debug, Clone)]
struct Ffn {
    fc1: Linear,
    fc2: Linear,
}

impl Ffn {
    fn new(c: usize, mult: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(c, c * mult, true, vb.pp("fc1"))?,
            fc2: Linear::new(c * mult, c, true, vb.pp("fc2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        lin(&self.fc2, &lin(&self.fc1, x)?.gelu_erf()?)
    }
}

fn ln(c: usize, vb: VarBuilder) -> Result<LayerNorm> {
    LayerNorm::new(c, 1e-5, true, vb)
}

fn norm(l: &LayerNorm, x: &Tensor) -> Result<Tensor> {
    l.forward(x)
}

/// The dual-query transformer (pre-norm residual blocks):
///
/// * **multimodal branch**: `h = proj_t1(t1)`; `h += SelfAttn(LN(h))`;
///   `h += CrossAttn(LN(h), proj_v(v))`; `h += FFN(LN(h))` → `[B, L1, C]`;
/// * **decomposed branch**: learnable `queries [N·Nt, C]`; `q += CrossAttn(LN(q), proj_t1(t1))`;
///   `q += CrossAttn(LN(q), proj_t2(t2))`; `q += FFN(LN(q))` → `[B, N·Nt, C]`;
/// * both concatenated on the token axis and projected to `context_dim`:
///   `[B, L1 + N·Nt, context_dim]`.
///
/// **Per-frame slicing.** Decomposed query `j` belongs to frame `j / Nt`: frame `f` owns tokens
/// `L1 + f·Nt .. L1 + (f+1)·Nt` of the output. [`DQFormer::frame_context`] builds frame `f`'s
/// context (the `L1` multimodal tokens followed by its `Nt` queries) and
/// [`DQFormer::per_frame_contexts`] stacks all frames as `[B·N, L1 + Nt, context_dim]`, the
/// frame-folded layout of a UNet's per-frame cross-attention.
///
/// Keys: `proj_t1`, `proj_v`, `proj_t2`, `queries` `[N·Nt, C]`, `mm.{norm1,attn1,norm2,attn2,
/// norm3,ffn}`, `dec.{norm1,attn1,norm2,attn2,norm3,ffn}`, `proj_out`.
#[derive(Debug, Clone)]
pub struct DQFormer {
    proj_t1: Linear,
    proj_v: Linear,
    proj_t2: Linear,
    queries: Tensor,
    mm: [LayerNorm; 3],
    mm_self: Mha,
    mm_cross: Mha,
    mm_ffn: Ffn,
    dec: [LayerNorm; 3],
    dec_text: Mha,
    dec_state: Mha,
    dec_ffn: Ffn,
    proj_out: Linear,
    cfg: DQFormerConfig,
}

impl DQFormer {
    /// Builds the transformer.
    ///
    /// # Errors
    /// An invalid config; missing / mis-shaped tensors in `vb`.
    pub fn new(cfg: &DQFormerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let c = cfg.dim;
        let h = cfg.heads;
        let (m, d) = (vb.pp("mm"), vb.pp("dec"));
        Ok(Self {
            proj_t1: Linear::new(cfg.text_dim, c, true, vb.pp("proj_t1"))?,
            proj_v: Linear::new(cfg.visual_dim, c, true, vb.pp("proj_v"))?,
            proj_t2: Linear::new(cfg.state_dim, c, true, vb.pp("proj_t2"))?,
            queries: vb.get_with_hints(
                (cfg.num_frames * cfg.tokens_per_frame, c),
                "queries",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            mm: [
                ln(c, m.pp("norm1"))?,
                ln(c, m.pp("norm2"))?,
                ln(c, m.pp("norm3"))?,
            ],
            mm_self: Mha::new(c, h, m.pp("attn1"))?,
            mm_cross: Mha::new(c, h, m.pp("attn2"))?,
            mm_ffn: Ffn::new(c, cfg.ffn_mult, m.pp("ffn"))?,
            dec: [
                ln(c, d.pp("norm1"))?,
                ln(c, d.pp("norm2"))?,
                ln(c, d.pp("norm3"))?,
            ],
            dec_text: Mha::new(c, h, d.pp("attn1"))?,
            dec_state: Mha::new(c, h, d.pp("attn2"))?,
            dec_ffn: Ffn::new(c, cfg.ffn_mult, d.pp("ffn"))?,
            proj_out: Linear::new(c, cfg.context_dim, true, vb.pp("proj_out"))?,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DQFormerConfig {
        &self.cfg
    }

    /// Runs both branches and concatenates them.
    ///
    /// # Shapes
    /// - `t1`: instruction tokens `[B, L1, text_dim]`
    /// - `v`: visual features `[B, Lv, visual_dim]`
    /// - `t2`: state features `[B, L2, state_dim]`
    /// - returns `[B, L1 + N·Nt, context_dim]` (multimodal tokens first, then the decomposed
    ///   queries frame by frame)
    ///
    /// # Errors
    /// Wrong ranks, widths or batch sizes (named).
    pub fn forward(&self, t1: &Tensor, v: &Tensor, t2: &Tensor) -> Result<Tensor> {
        let cfg = &self.cfg;
        let b = check3("t1", t1, None, cfg.text_dim)?;
        check3("v", v, Some(b), cfg.visual_dim)?;
        check3("t2", t2, Some(b), cfg.state_dim)?;
        let t1p = lin(&self.proj_t1, t1)?;
        let vp = lin(&self.proj_v, v)?;
        let t2p = lin(&self.proj_t2, t2)?;
        // multimodal branch
        let mut h = t1p.clone();
        let n = norm(&self.mm[0], &h)?;
        h = (&h + self.mm_self.forward(&n, &n)?)?;
        h = (&h + self.mm_cross.forward(&norm(&self.mm[1], &h)?, &vp)?)?;
        h = (&h + self.mm_ffn.forward(&norm(&self.mm[2], &h)?)?)?;
        // decomposed branch
        let nq = self.queries.dims()[0];
        let mut q = self
            .queries
            .to_dtype(t1p.dtype())?
            .unsqueeze(0)?
            .broadcast_as((b, nq, cfg.dim))?
            .contiguous()?;
        q = (&q + self.dec_text.forward(&norm(&self.dec[0], &q)?, &t1p)?)?;
        q = (&q + self.dec_state.forward(&norm(&self.dec[1], &q)?, &t2p)?)?;
        q = (&q + self.dec_ffn.forward(&norm(&self.dec[2], &q)?)?)?;
        let out = Tensor::cat(&[&h, &q], 1)?;
        lin(&self.proj_out, &out)
    }

    /// Frame `frame`'s context: the multimodal tokens and that frame's `Nt` decomposed queries.
    ///
    /// # Shapes
    /// `context [B, L1 + N·Nt, D]` (from [`DQFormer::forward`]) → `[B, L1 + Nt, D]`.
    ///
    /// # Errors
    /// `frame ≥ N`, or a context whose token count is not `L1 + N·Nt` for some `L1`.
    pub fn frame_context(&self, context: &Tensor, frame: usize) -> Result<Tensor> {
        let (l1, nt) = self.split_sizes(context)?;
        if frame >= self.cfg.num_frames {
            return Err(Error::invalid(
                "frame",
                format!("{frame} ≥ num_frames = {}", self.cfg.num_frames),
            ));
        }
        Ok(Tensor::cat(
            &[
                &context.narrow(1, 0, l1)?,
                &context.narrow(1, l1 + frame * nt, nt)?,
            ],
            1,
        )?)
    }

    /// Every frame's context, frames folded into the batch (video `b`, frame `f` at `b·N + f`).
    ///
    /// # Shapes
    /// `context [B, L1 + N·Nt, D]` → `[B·N, L1 + Nt, D]`.
    ///
    /// # Errors
    /// As [`DQFormer::frame_context`].
    pub fn per_frame_contexts(&self, context: &Tensor) -> Result<Tensor> {
        let (l1, nt) = self.split_sizes(context)?;
        let (b, _, d) = context.dims3()?;
        let n = self.cfg.num_frames;
        let mm = context
            .narrow(1, 0, l1)?
            .unsqueeze(1)?
            .broadcast_as((b, n, l1, d))?;
        let dec = context.narrow(1, l1, n * nt)?.reshape((b, n, nt, d))?;
        Ok(Tensor::cat(&[&mm, &dec], 2)?.reshape((b * n, l1 + nt, d))?)
    }

    fn split_sizes(&self, context: &Tensor) -> Result<(usize, usize)> {
        let nq = self.cfg.num_frames * self.cfg.tokens_per_frame;
        match context.dims() {
            &[_, l, d] if l >= nq && d == self.cfg.context_dim => {
                Ok((l - nq, self.cfg.tokens_per_frame))
            }
            d => Err(Error::invalid(
                "context",
                format!(
                    "expected [B, L1 + {nq}, {}], found {d:?}",
                    self.cfg.context_dim
                ),
            )),
        }
    }
}

fn check3(name: &str, x: &Tensor, batch: Option<usize>, width: usize) -> Result<usize> {
    match x.dims() {
        &[b, l, w] if w == width && l > 0 && batch.is_none_or(|bb| bb == b) => {
            if !matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) {
                return Err(Error::invalid(name, "must be a float tensor"));
            }
            Ok(b)
        }
        d => Err(Error::shape(
            name,
            &[batch.unwrap_or(d.first().copied().unwrap_or(1)), 1, width],
            d,
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn cfg(n: usize, nt: usize) -> DQFormerConfig {
        DQFormerConfig {
            dim: 32,
            heads: 4,
            num_frames: n,
            tokens_per_frame: nt,
            text_dim: 24,
            visual_dim: 40,
            state_dim: 12,
            context_dim: 16,
            ffn_mult: 2,
        }
    }

    #[test]
    fn shapes_for_several_n_nt() {
        let dev = Device::Cpu;
        for (n, nt) in [(1, 1), (3, 2), (5, 4), (8, 1), (2, 7)] {
            let vm = VarMap::new();
            let c = cfg(n, nt);
            let m = DQFormer::new(&c, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
            let b = 2;
            let t1 = Tensor::ones((b, 5, 24), DType::F32, &dev).unwrap();
            let v = Tensor::ones((b, 9, 40), DType::F32, &dev).unwrap();
            let t2 = Tensor::ones((b, 3, 12), DType::F32, &dev).unwrap();
            let out = m.forward(&t1, &v, &t2).unwrap();
            assert_eq!(out.dims(), &[b, 5 + n * nt, 16]);
            let f = m.frame_context(&out, n - 1).unwrap();
            assert_eq!(f.dims(), &[b, 5 + nt, 16]);
            let all = m.per_frame_contexts(&out).unwrap();
            assert_eq!(all.dims(), &[b * n, 5 + nt, 16]);
            // per_frame_contexts row b·N + f equals frame_context(f) of video b
            let want = f.narrow(0, 1, 1).unwrap();
            let got = all.narrow(0, n + n - 1, 1).unwrap();
            let diff = (want - got).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
            assert!(m.frame_context(&out, n).is_err());
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let m = DQFormer::new(&cfg(2, 2), VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let t1 = Tensor::ones((2, 5, 24), DType::F32, &dev).unwrap();
        let v = Tensor::ones((3, 9, 40), DType::F32, &dev).unwrap();
        let t2 = Tensor::ones((2, 3, 12), DType::F32, &dev).unwrap();
        assert!(m.forward(&t1, &v, &t2).is_err());
        let bad = DQFormerConfig {
            heads: 5,
            ..cfg(2, 2)
        };
        assert!(DQFormer::new(&bad, VarBuilder::from_varmap(&vm, DType::F32, &dev)).is_err());
    }
}
