//! Vid-ICL in-context prompts: demo clips then a query clip as one flat token sequence, with an
//! optional text prefix, and the bookkeeping that maps sequence positions back to frames.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, Result, TokenGrid};
use vidgen_video_nn::Linear;

/// What a run of the sequence holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// Demonstration clip number `i` (in the order added).
    Demo(usize),
    /// The query clip, which generation continues.
    Query,
}

/// One clip's place in the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Demo or query.
    pub kind: SegmentKind,
    /// Position of its first token in the full sequence (the text prefix included).
    pub start: usize,
    /// Token frames.
    pub t: usize,
    /// Token rows per frame.
    pub h: usize,
    /// Token columns per frame.
    pub w: usize,
}

impl Segment {
    /// Number of tokens, `t·h·w`.
    pub fn len(&self) -> usize {
        self.t * self.h * self.w
    }

    /// Whether the clip has no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a sequence position lies in the video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Inside the text prefix, at this index.
    Text(usize),
    /// A video token: its clip, frame, row and column.
    Video {
        /// The clip.
        kind: SegmentKind,
        /// Frame within the clip.
        frame: usize,
        /// Token row.
        row: usize,
        /// Token column.
        col: usize,
    },
    /// A frame generated after the prompt (continuing the query): frame index counted from the
    /// first generated frame.
    Generated {
        /// Generated frame index.
        frame: usize,
        /// Token row.
        row: usize,
        /// Token column.
        col: usize,
    },
}

/// A Vid-ICL prompt: `[text prefix] demo₀ demo₁ … query`, each clip flattened in raster order
/// per frame, frames in time order, **no separator tokens** (Vid-ICL's format).
///
/// Build it with [`VideoPrompt::builder`]. Every clip is a [`TokenGrid`] `[B, t, h, w]` with
/// the same batch `B`; clips may differ in `t` (and in `h`, `w`). The text prefix, when given,
/// is `[B, L, D]` embeddings from any text encoder; a [`TextProjection`] maps `D` to the
/// model's hidden size when they differ.
#[derive(Debug, Clone)]
pub struct VideoPrompt {
    text: Option<Tensor>,
    segments: Vec<Segment>,
    ids: Tensor,
    batch: usize,
}

/// Builder of [`VideoPrompt`].
#[derive(Debug, Clone, Default)]
pub struct VideoPromptBuilder {
    text: Option<Tensor>,
    demos: Vec<TokenGrid>,
    query: Option<TokenGrid>,
}

impl VideoPromptBuilder {
    /// Appends a demonstration clip.
    pub fn demo(mut self, clip: TokenGrid) -> Self {
        self.demos.push(clip);
        self
    }

    /// Sets the query clip (the one generation continues).
    pub fn query(mut self, clip: TokenGrid) -> Self {
        self.query = Some(clip);
        self
    }

    /// Sets the text prefix embeddings `[B, L, D]` (any float dtype; `D` is the text
    /// encoder's width).
    pub fn text_prefix(mut self, embeds: Tensor) -> Self {
        self.text = Some(embeds);
        self
    }

    /// Checks shapes and flattens the clips.
    ///
    /// # Errors
    /// No query clip, clips of different batch sizes, a text prefix that is not `[B, L, D]`
    /// with the clips' `B`.
    pub fn build(self) -> Result<VideoPrompt> {
        let query = self
            .query
            .ok_or_else(|| Error::invalid("video prompt", "no query clip (call .query(..))"))?;
        let (batch, ..) = query.dims4();
        let text_len = match &self.text {
            Some(t) => match t.dims() {
                &[b, l, _] if b == batch => l,
                d => {
                    return Err(Error::invalid(
                        "text prefix",
                        format!(
                            "expected [B, L, D] with B = {batch} (the clips' batch), got {d:?}"
                        ),
                    ))
                }
            },
            None => 0,
        };
        let mut segments = Vec::with_capacity(self.demos.len() + 1);
        let mut flat = Vec::with_capacity(self.demos.len() + 1);
        let mut pos = text_len;
        let clips = self
            .demos
            .iter()
            .enumerate()
            .map(|(i, c)| (SegmentKind::Demo(i), c))
            .chain(std::iter::once((SegmentKind::Query, &query)));
        for (kind, clip) in clips {
            let (b, t, h, w) = clip.dims4();
            if b != batch {
                return Err(Error::invalid(
                    "video prompt",
                    format!("{kind:?} has batch {b}, the query has {batch}"),
                ));
            }
            let seg = Segment {
                kind,
                start: pos,
                t,
                h,
                w,
            };
            pos += seg.len();
            if !seg.is_empty() {
                // [B, t, h, w] -> [B, t·h·w]: raster order per frame, frames in order.
                flat.push(clip.flatten()?.to_device(&Device::Cpu)?);
            }
            segments.push(seg);
        }
        let ids = if flat.is_empty() {
            Tensor::zeros((batch, 0), DType::U32, &Device::Cpu)?
        } else {
            Tensor::cat(&flat, 1)?
        };
        Ok(VideoPrompt {
            text: self.text,
            segments,
            ids,
            batch,
        })
    }
}

impl VideoPrompt {
    /// A new builder.
    pub fn builder() -> VideoPromptBuilder {
        VideoPromptBuilder::default()
    }

    /// Batch size `B`.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The text prefix embeddings `[B, L, D]`, if any.
    pub fn text_prefix(&self) -> Option<&Tensor> {
        self.text.as_ref()
    }

    /// Text prefix length `L` (0 without one).
    pub fn text_len(&self) -> usize {
        self.text.as_ref().map(|t| t.dims()[1]).unwrap_or(0)
    }

    /// The flat video token ids `[B, N]` `u32` (on the CPU), demos then query, no separators.
    pub fn ids(&self) -> &Tensor {
        &self.ids
    }

    /// Number of video tokens `N`.
    pub fn video_len(&self) -> usize {
        self.ids.dims()[1]
    }

    /// Full sequence length, text prefix plus video tokens.
    pub fn len(&self) -> usize {
        self.text_len() + self.video_len()
    }

    /// Whether the sequence is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The clips in sequence order (demos, then the query last).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The query clip's segment.
    pub fn query(&self) -> Segment {
        // `build` always pushes the query last.
        self.segments[self.segments.len() - 1]
    }

    /// Where position `pos` of the full sequence lies. Positions past the prompt continue the
    /// query: they are generated frames of the query's `h × w`.
    pub fn locate(&self, pos: usize) -> Location {
        let tl = self.text_len();
        if pos < tl {
            return Location::Text(pos);
        }
        for s in &self.segments {
            if pos >= s.start && pos < s.start + s.len() {
                let i = pos - s.start;
                let hw = s.h * s.w;
                return Location::Video {
                    kind: s.kind,
                    frame: i / hw,
                    row: (i % hw) / s.w,
                    col: i % s.w,
                };
            }
        }
        let q = self.query();
        let i = pos - self.len();
        let hw = (q.h * q.w).max(1);
        Location::Generated {
            frame: i / hw,
            row: (i % hw) / q.w.max(1),
            col: i % q.w.max(1),
        }
    }

    /// Video-token mask over the full sequence `[B, len]` f32: 1 at the positions of the
    /// chosen clips, 0 elsewhere (text prefix included). With `query_only`, only the query
    /// clip; else every clip.
    pub fn video_mask(&self, query_only: bool) -> Result<Tensor> {
        let mut m = vec![0f32; self.len()];
        for s in &self.segments {
            if !query_only || s.kind == SegmentKind::Query {
                for x in &mut m[s.start..s.start + s.len()] {
                    *x = 1.0;
                }
            }
        }
        let row = Tensor::from_vec(m, (1, self.len()), &Device::Cpu)?;
        Ok(row.repeat((self.batch, 1))?)
    }

    /// Folds tokens generated after the prompt back into frames of the query's size.
    ///
    /// # Shapes
    /// `generated`: `[B, n·h·w]` ids → `TokenGrid` `[B, n, h, w]`.
    pub fn to_frames(&self, generated: &Tensor) -> Result<TokenGrid> {
        let q = self.query();
        let (b, n) = generated.dims2()?;
        let hw = q.h * q.w;
        if b != self.batch || hw == 0 || n % hw != 0 {
            return Err(Error::shape(
                "generated tokens",
                &[self.batch, n.div_ceil(hw.max(1)) * hw],
                generated.dims(),
            ));
        }
        TokenGrid::from_flat(&generated.to_dtype(DType::U32)?, n / hw, q.h, q.w)
    }
}

/// How [`TextProjection`] maps text embeddings to the hidden size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionKind {
    /// One linear layer `linear_1`.
    Linear,
    /// LLaVA's projector: `linear_2(gelu(linear_1(x)))` with `linear_1` of width `hidden`.
    Mlp {
        /// Width of the inner layer.
        hidden: usize,
    },
}

/// Configuration of [`TextProjection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextProjectionConfig {
    /// Width of the text encoder's embeddings.
    pub text_dim: usize,
    /// The decoder's hidden size.
    pub hidden_size: usize,
    /// Linear or two-layer MLP.
    pub kind: ProjectionKind,
}

/// Maps text-encoder embeddings `[B, L, text_dim]` to decoder inputs `[B, L, hidden_size]`
/// (keys `linear_1.{weight,bias}`, `linear_2.{weight,bias}` as LLaVA's
/// `multi_modal_projector`).
#[derive(Debug, Clone)]
pub struct TextProjection {
    linear_1: Linear,
    linear_2: Option<Linear>,
    cfg: TextProjectionConfig,
}

impl TextProjection {
    /// Builds the projection from `vb` (random init with a `VarMap`, or a checkpoint).
    pub fn new(cfg: &TextProjectionConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.text_dim == 0 || cfg.hidden_size == 0 {
            return Err(Error::config("text_dim / hidden_size", "must be >= 1"));
        }
        let (linear_1, linear_2) = match cfg.kind {
            ProjectionKind::Linear => (
                Linear::new(cfg.text_dim, cfg.hidden_size, true, vb.pp("linear_1"))?,
                None,
            ),
            ProjectionKind::Mlp { hidden } => {
                if hidden == 0 {
                    return Err(Error::config("kind.hidden", "must be >= 1"));
                }
                (
                    Linear::new(cfg.text_dim, hidden, true, vb.pp("linear_1"))?,
                    Some(Linear::new(
                        hidden,
                        cfg.hidden_size,
                        true,
                        vb.pp("linear_2"),
                    )?),
                )
            }
        };
        Ok(TextProjection {
            linear_1,
            linear_2,
            cfg: *cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TextProjectionConfig {
        &self.cfg
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.linear_1.weight().dtype()
    }

    /// # Shapes
    /// `x`: `[B, L, text_dim]` → `[B, L, hidden_size]`.
    ///
    /// # Errors
    /// A last dimension other than `text_dim` is an [`Error::ShapeMismatch`].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match x.dims() {
            &[_, _, d] if d == self.cfg.text_dim => {}
            d => {
                let mut want = d.to_vec();
                if let Some(l) = want.last_mut() {
                    *l = self.cfg.text_dim;
                }
                return Err(Error::shape(
                    "text prefix embeddings [B, L, text_dim]",
                    &want,
                    d,
                ));
            }
        }
        let y = self.linear_1.forward(x)?;
        match &self.linear_2 {
            None => Ok(y),
            Some(l2) => l2.forward(&y.gelu_erf()?),
        }
    }
}
