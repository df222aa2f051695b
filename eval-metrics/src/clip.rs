//! CLIP score and CLIP frame consistency with a loaded `vidgen-clip-encoders` model (cargo
//! feature `clip`): [`ClipEmbedder`] tokenises prompts and preprocesses frames as transformers
//! does (`CLIPTokenizer` with `padding="max_length", max_length=77, truncation=True`;
//! `CLIPImageProcessor` from the folder's `preprocessor_config.json`), runs a `CLIPModel`'s
//! `get_text_features` / `get_image_features`, and hands the embeddings to [`clip_score`] and
//! [`frame_consistency`](crate::frame_consistency) (through
//! [`frame_consistency_with`](crate::frame_consistency_with), as an [`ImageEmbedder`]).
//!
//! Frames arrive as floats in a declared [`DataRange`] and are quantised to uint8
//! (`round(255 · (x − min) / span)`) before the image processor, as torchmetrics expects its
//! images (uint8 `[0, 255]`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use vidgen_clip_encoders::{CLIPImageProcessor, CLIPModel, CLIPTokenizer, ImageU8};
use vidgen_video_core::{Error, Result};

use crate::{clip_score, DataRange, ImageEmbedder};

/// A `CLIPModel` with its tokenizer and image processor, embedding prompts and frames.
#[derive(Debug, Clone)]
pub struct ClipEmbedder {
    model: CLIPModel,
    tokenizer: CLIPTokenizer,
    processor: CLIPImageProcessor,
    range: DataRange,
}

impl ClipEmbedder {
    /// Wraps loaded parts; frames given to [`ClipEmbedder::embed_images`] are in `range`.
    pub fn new(
        model: CLIPModel,
        tokenizer: CLIPTokenizer,
        processor: CLIPImageProcessor,
        range: DataRange,
    ) -> Self {
        Self {
            model,
            tokenizer,
            processor,
            range,
        }
    }

    /// Loads a `CLIPModel` folder as transformers saves a CLIP repository (`config.json`,
    /// weights, `tokenizer.json` or `vocab.json` + `merges.txt`, `preprocessor_config.json`).
    ///
    /// # Errors
    /// Whatever `CLIPModel::from_pretrained`, `CLIPTokenizer::from_dir` or
    /// `CLIPImageProcessor::from_dir` report (missing files or keys, bad configs).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        range: DataRange,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let (model, _) = CLIPModel::from_pretrained(dir, dtype, device)?;
        Ok(Self::new(
            model,
            CLIPTokenizer::from_dir(dir)?,
            CLIPImageProcessor::from_dir(dir)?,
            range,
        ))
    }

    /// The model.
    pub fn model(&self) -> &CLIPModel {
        &self.model
    }

    /// `get_text_features` of the prompts (not normalised).
    ///
    /// # Shapes
    /// `N` prompts → `[N, projection_dim]` f32.
    ///
    /// # Errors
    /// An empty list; the tokenizer's or model's errors.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        let device = self.model.text_model().device().clone();
        let t = self.tokenizer.encode_batch(texts, &device)?;
        let e = self
            .model
            .get_text_features(&t.input_ids, Some(&t.attention_mask))?;
        Ok(e.to_dtype(DType::F32)?)
    }

    /// `get_image_features` of frames (not normalised).
    ///
    /// # Shapes
    /// `frames [N, C, H, W]` (C = 1, 3 or 4) in the declared range → `[N, projection_dim]` f32.
    ///
    /// # Errors
    /// Another rank, values outside the range or not finite, an empty batch; the processor's
    /// or model's errors.
    pub fn embed_images(&self, frames: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = frames.dims4().map_err(|_| {
            Error::invalid(
                "frames",
                format!("expected [N, C, H, W], found {:?}", frames.dims()),
            )
        })?;
        if n == 0 {
            return Err(Error::invalid("frames", "the batch is empty"));
        }
        // [N, C, H, W] -> [N, H, W, C] u8
        let v = frames
            .permute((0, 2, 3, 1))?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let (lo, span) = (self.range.min, self.range.span());
        let mut bytes = Vec::with_capacity(v.len());
        for &x in &v {
            if !x.is_finite() || x < lo || x > self.range.max {
                return Err(Error::invalid(
                    "frames",
                    format!(
                        "value {x} outside the declared range [{}, {}]",
                        self.range.min, self.range.max
                    ),
                ));
            }
            bytes.push((255.0 * (x - lo) / span).round().clamp(0.0, 255.0) as u8);
        }
        let per = h * w * c;
        let images: Vec<ImageU8> = bytes
            .chunks_exact(per)
            .map(|d| ImageU8 {
                data: d,
                height: h,
                width: w,
                channels: c,
            })
            .collect();
        let device = self.model.vision_model().device().clone();
        let px = self.processor.preprocess(&images, &device)?;
        Ok(self.model.get_image_features(&px)?.to_dtype(DType::F32)?)
    }

    /// [`clip_score`] of frame `i` with prompt `i` (`100 · max(cos, 0)` per pair, and the mean).
    ///
    /// # Shapes
    /// `frames [N, C, H, W]`, `N` prompts → `N` scores and their mean.
    ///
    /// # Errors
    /// A prompt count other than `N`; as [`ClipEmbedder::embed_images`] / `embed_texts`.
    pub fn clip_score(&self, frames: &Tensor, texts: &[&str]) -> Result<(Vec<f64>, f64)> {
        let n = frames.dims().first().copied().unwrap_or(0);
        if texts.len() != n {
            return Err(Error::invalid(
                "texts",
                format!("{} prompts for {n} frames", texts.len()),
            ));
        }
        clip_score(&self.embed_images(frames)?, &self.embed_texts(texts)?)
    }
}

impl ImageEmbedder for ClipEmbedder {
    fn embed(&self, frames: &Tensor) -> Result<Tensor> {
        self.embed_images(frames)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// clip-encoders' tiny `CLIPModel` (transformers 5.23 reference embeddings beside it).
    fn tiny() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../clip-encoders/tests/data/tiny_clip")
    }

    #[test]
    fn embeddings_match_transformers_and_feed_the_metrics() {
        let dev = Device::Cpu;
        let e = ClipEmbedder::from_pretrained(tiny(), DataRange::U8, DType::F32, &dev).unwrap();
        let t = candle_core::safetensors::load(tiny().join("cases.safetensors"), &dev).unwrap();
        // [2, 40, 50, 3] u8 -> [2, 3, 40, 50] floats in [0, 255]
        let frames = t["images"]
            .permute((0, 3, 1, 2))
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let img = e.embed_images(&frames).unwrap();
        let d = (img - &t["image_embeds"]).unwrap().abs().unwrap();
        let d = d
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 2e-5, "image embeds differ by {d}");
        let texts = ["a photo of a cat", "the red square moves to the left"];
        let txt = e.embed_texts(&texts).unwrap();
        let d = (txt - &t["text_embeds"]).unwrap().abs().unwrap();
        let d = d
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 2e-5, "text embeds differ by {d}");
        // Reference cosines are negative for this random model: the score clamps them at 0.
        let (per, mean) = e.clip_score(&frames, &texts).unwrap();
        let want: Vec<f32> = t["clip_score"].to_vec1().unwrap();
        for (p, w) in per.iter().zip(&want) {
            assert!((p - f64::from(w.max(0.0))).abs() < 1e-3, "{p} vs {w}");
        }
        assert!(mean >= 0.0);
        // Frame consistency of one 2-frame video through the embedder.
        let video = frames.permute((1, 0, 2, 3)).unwrap().unsqueeze(0).unwrap();
        let (fc, _) = crate::frame_consistency_with(&e, &video, DataRange::U8).unwrap();
        assert!(fc[0].abs() <= 1.0 + 1e-9);
        // Out-of-range frames and mismatched prompt counts are typed errors.
        let bad = (frames.clone() + 300.0).unwrap();
        assert!(matches!(
            e.embed_images(&bad),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            e.clip_score(&frames, &texts[..1]),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
