//! Checked video and token-grid shapes, and the only place that folds time into the batch.

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// The shape of a video tensor in vidgen's layout `[B, C, T, H, W]` (PyTorch `Conv3d` order).
///
/// Frame batches `[B·T, C, H, W]` are made only by [`VideoShape::fold`] and undone by
/// [`VideoShape::unfold`], so the order of frames inside the batch (batch-major: all frames of
/// video 0, then video 1, ...) is defined in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VideoShape {
    /// Batch size.
    pub b: usize,
    /// Channels.
    pub c: usize,
    /// Frames.
    pub t: usize,
    /// Height in pixels (or latent cells).
    pub h: usize,
    /// Width in pixels (or latent cells).
    pub w: usize,
}

impl VideoShape {
    /// A shape from its five dimensions; every dimension must be at least 1.
    pub fn new(b: usize, c: usize, t: usize, h: usize, w: usize) -> Result<Self> {
        let s = VideoShape { b, c, t, h, w };
        if s.dims().contains(&0) {
            return Err(Error::invalid(
                "video shape",
                format!(
                    "every dimension of [B, C, T, H, W] must be >= 1, got {:?}",
                    s.dims()
                ),
            ));
        }
        Ok(s)
    }

    /// Reads the shape of a `[B, C, T, H, W]` tensor, checking its rank.
    pub fn of(x: &Tensor) -> Result<Self> {
        match x.dims() {
            &[b, c, t, h, w] => Self::new(b, c, t, h, w),
            d => Err(Error::invalid(
                "video",
                format!("expected a rank-5 [B, C, T, H, W] tensor, got shape {d:?}"),
            )),
        }
    }

    /// The dimensions as `[B, C, T, H, W]`.
    pub fn dims(&self) -> [usize; 5] {
        [self.b, self.c, self.t, self.h, self.w]
    }

    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.dims().iter().product()
    }

    /// Checks that `x` has exactly this shape; the error names `what` and both shapes.
    pub fn check(&self, what: &str, x: &Tensor) -> Result<()> {
        if x.dims() != self.dims() {
            return Err(Error::shape(what, &self.dims(), x.dims()));
        }
        Ok(())
    }

    /// Folds time into the batch.
    ///
    /// # Shapes
    /// `[B, C, T, H, W]` → `[B·T, C, H, W]`, frame `t` of video `b` at index `b·T + t`.
    pub fn fold(x: &Tensor) -> Result<(Tensor, VideoShape)> {
        let s = Self::of(x)?;
        // (B, C, T, H, W) -> (B, T, C, H, W) -> (B·T, C, H, W)
        let y = x
            .permute((0, 2, 1, 3, 4))?
            .reshape((s.b * s.t, s.c, s.h, s.w))?;
        Ok((y, s))
    }

    /// Undoes [`VideoShape::fold`] for frames with `t` frames per video; channels and spatial
    /// size may differ from the folded input (a per-frame network changes them).
    ///
    /// # Shapes
    /// `[B·T, C', H', W']` → `[B, C', T, H', W']`.
    pub fn unfold(frames: &Tensor, t: usize) -> Result<Tensor> {
        let (bt, c, h, w) = match frames.dims() {
            &[bt, c, h, w] => (bt, c, h, w),
            d => {
                return Err(Error::invalid(
                    "frames",
                    format!("expected a rank-4 [B·T, C, H, W] tensor, got shape {d:?}"),
                ))
            }
        };
        if t == 0 || bt % t != 0 {
            return Err(Error::invalid(
                "frames",
                format!("batch of {bt} frames is not a multiple of T = {t}"),
            ));
        }
        // (B·T, C, H, W) -> (B, T, C, H, W) -> (B, C, T, H, W)
        Ok(frames
            .reshape((bt / t, t, c, h, w))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?)
    }

    /// Turns a video into one sequence over time per pixel, the layout of temporal attention.
    ///
    /// # Shapes
    /// `[B, C, T, H, W]` → `[B·H·W, T, C]`; the sequence of pixel `(b, h, w)` is at index
    /// `(b·H + h)·W + w`. Undone by [`VideoShape::from_time_sequences`].
    pub fn to_time_sequences(x: &Tensor) -> Result<(Tensor, VideoShape)> {
        let s = Self::of(x)?;
        // (B, C, T, H, W) -> (B, H, W, T, C) -> (B·H·W, T, C)
        let y = crate::contiguous(&x.permute((0, 3, 4, 2, 1))?)?.reshape((
            s.b * s.h * s.w,
            s.t,
            s.c,
        ))?;
        Ok((y, s))
    }

    /// Undoes [`VideoShape::to_time_sequences`] for a video of shape `shape`; the channel count
    /// may differ from `shape.c` (a projection changes it).
    ///
    /// # Shapes
    /// `[B·H·W, T, C']` → `[B, C', T, H, W]`.
    pub fn from_time_sequences(seq: &Tensor, shape: VideoShape) -> Result<Tensor> {
        let c = match seq.dims() {
            &[n, t, c] if n == shape.b * shape.h * shape.w && t == shape.t => c,
            d => {
                return Err(Error::invalid(
                    "time sequences",
                    format!(
                        "expected [B·H·W, T, C] = [{}, {}, C] for video shape {:?}, got {d:?}",
                        shape.b * shape.h * shape.w,
                        shape.t,
                        shape.dims()
                    ),
                ))
            }
        };
        // (B·H·W, T, C) -> (B, H, W, T, C) -> (B, C, T, H, W)
        crate::contiguous(
            &seq.reshape((shape.b, shape.h, shape.w, shape.t, c))?
                .permute((0, 4, 3, 1, 2))?,
        )
    }

    /// Converts `[B, C, T, H, W]` to the `[B, T, C, H, W]` layout of Stable Video Diffusion.
    pub fn to_btchw(x: &Tensor) -> Result<Tensor> {
        Self::of(x)?;
        Ok(x.permute((0, 2, 1, 3, 4))?.contiguous()?)
    }

    /// Converts SVD's `[B, T, C, H, W]` to `[B, C, T, H, W]`.
    pub fn from_btchw(x: &Tensor) -> Result<Tensor> {
        if x.rank() != 5 {
            return Err(Error::invalid(
                "video",
                format!(
                    "expected a rank-5 [B, T, C, H, W] tensor, got shape {:?}",
                    x.dims()
                ),
            ));
        }
        Ok(x.permute((0, 2, 1, 3, 4))?.contiguous()?)
    }
}

/// A grid of discrete visual tokens `[B, t, h, w]` of `u32` ids.
///
/// `t` is the number of token frames (after any temporal stride), `h`, `w` the token rows and
/// columns. Flattening is raster order within a frame, frames in time order: the sequence order
/// a Vid-ICL decoder reads.
#[derive(Debug, Clone)]
pub struct TokenGrid {
    ids: Tensor,
}

impl TokenGrid {
    /// Wraps a `[B, t, h, w]` `u32` tensor.
    pub fn new(ids: Tensor) -> Result<Self> {
        if ids.rank() != 4 {
            return Err(Error::invalid(
                "token grid",
                format!(
                    "expected a rank-4 [B, t, h, w] tensor, got shape {:?}",
                    ids.dims()
                ),
            ));
        }
        if ids.dtype() != DType::U32 {
            return Err(Error::DType {
                key: "token grid".into(),
                expected: "u32".into(),
                found: format!("{:?}", ids.dtype()),
            });
        }
        Ok(TokenGrid { ids })
    }

    /// Builds a grid from flat ids `[B, t·h·w]` (raster order per frame, frames in order).
    pub fn from_flat(flat: &Tensor, t: usize, h: usize, w: usize) -> Result<Self> {
        let n = t * h * w;
        match flat.dims() {
            &[b, len] if len == n => Self::new(flat.reshape((b, t, h, w))?),
            d => Err(Error::ShapeMismatch {
                key: "flat token ids".into(),
                expected: vec![d.first().copied().unwrap_or(1), n],
                found: d.to_vec(),
                file: None,
            }),
        }
    }

    /// Builds a single-video grid from a slice of ids.
    pub fn from_vec(ids: Vec<u32>, t: usize, h: usize, w: usize) -> Result<Self> {
        if ids.len() != t * h * w {
            return Err(Error::shape("token ids", &[t * h * w], &[ids.len()]));
        }
        Self::new(Tensor::from_vec(
            ids,
            (1, t, h, w),
            &candle_core::Device::Cpu,
        )?)
    }

    /// The ids, `[B, t, h, w]` `u32`.
    pub fn ids(&self) -> &Tensor {
        &self.ids
    }

    /// `(B, t, h, w)`.
    pub fn dims4(&self) -> (usize, usize, usize, usize) {
        let d = self.ids.dims();
        (d[0], d[1], d[2], d[3])
    }

    /// Tokens per frame, `h·w`.
    pub fn tokens_per_frame(&self) -> usize {
        let (_, _, h, w) = self.dims4();
        h * w
    }

    /// Flat ids `[B, t·h·w]`.
    pub fn flatten(&self) -> Result<Tensor> {
        let (b, t, h, w) = self.dims4();
        Ok(self.ids.reshape((b, t * h * w))?)
    }

    /// Checks every id is below `vocab`; the error names the largest id found.
    pub fn check_vocab(&self, vocab: usize) -> Result<()> {
        let max = self.ids.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize;
        if max >= vocab {
            return Err(Error::invalid(
                "token ids",
                format!("id {max} is out of range for a codebook / vocabulary of {vocab}"),
            ));
        }
        Ok(())
    }
}
