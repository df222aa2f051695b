//! Frame tokenizer: a [`VQModel`] applied frame by frame, as a [`vidgen_video_core::Codec`].

use candle_core::Tensor;
use vidgen_video_core::{Codec, CodecStrides, Error, Result, TokenGrid, VideoShape};

use crate::vqmodel::VQModel;

/// Turns video into per-frame token grids with a VQGAN / VQ-VAE image model (Vid-ICL style:
/// every frame is tokenised independently) and back.
///
/// Frames are folded into the batch with [`VideoShape::fold`] and run in chunks of
/// [`FrameTokenizer::chunk_frames`] frames, so peak memory is that of one chunk whatever the
/// clip length.
#[derive(Debug, Clone)]
pub struct FrameTokenizer {
    model: VQModel,
    chunk_frames: usize,
}

impl FrameTokenizer {
    /// Wraps a model; `chunk_frames` frames (≥ 1) go through the model at a time.
    pub fn new(model: VQModel, chunk_frames: usize) -> Result<Self> {
        if chunk_frames == 0 {
            return Err(Error::invalid("chunk_frames", "must be at least 1"));
        }
        Ok(FrameTokenizer {
            model,
            chunk_frames,
        })
    }

    /// The wrapped model.
    pub fn model(&self) -> &VQModel {
        &self.model
    }

    /// Frames per model call.
    pub fn chunk_frames(&self) -> usize {
        self.chunk_frames
    }

    /// Vocabulary size (codebook size).
    pub fn vocab_size(&self) -> usize {
        self.model.config().num_vq_embeddings
    }

    fn chunked(&self, x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let n = x.dim(0)?;
        let mut outs = Vec::with_capacity(n.div_ceil(self.chunk_frames));
        let mut s = 0;
        while s < n {
            let len = self.chunk_frames.min(n - s);
            outs.push(f(&x.narrow(0, s, len)?)?);
            s += len;
        }
        Ok(Tensor::cat(&outs, 0)?)
    }
}

impl Codec for FrameTokenizer {
    type Code = TokenGrid;

    /// # Shapes
    /// `video [B, C, T, H, W]` in `[-1, 1]` → `TokenGrid [B, T, H/s, W/s]`.
    ///
    /// # Errors
    /// Wrong rank or channel count, `H`/`W` not multiples of the stride, non-finite values.
    fn encode(&self, video: &Tensor) -> Result<TokenGrid> {
        let (frames, shape) = VideoShape::fold(video)?;
        let ids = self.chunked(&frames, |x| self.model.tokenize(x))?; // [B·T, h, w]
        let (_, h, w) = ids.dims3()?;
        TokenGrid::new(ids.reshape((shape.b, shape.t, h, w))?)
    }

    /// # Shapes
    /// `TokenGrid [B, T, h, w]` → video `[B, out_channels, T, h·s, w·s]`.
    ///
    /// # Errors
    /// An id ≥ the codebook size.
    fn decode(&self, code: &TokenGrid) -> Result<Tensor> {
        code.check_vocab(self.vocab_size())?;
        let (b, t, h, w) = code.dims4();
        let ids = code.ids().reshape((b * t, h, w))?;
        let frames = self.chunked(&ids, |i| self.model.detokenize(i))?; // [B·T, C, H, W]
        VideoShape::unfold(&frames, t)
    }

    fn strides(&self) -> CodecStrides {
        CodecStrides {
            temporal: 1,
            spatial: self.model.config().spatial_stride(),
        }
    }
}
