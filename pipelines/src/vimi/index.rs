//! Building and querying VIMI retrieval indexes with real encoders: captions by
//! all-MiniLM-L6-v2 (space `text`) or CLIP text (`clip_text`), images by CLIP vision through
//! `clip-encoders` (`clip_image`, or the miniature's own vision tower: `image`), and a fixed
//! pixel embedding (`pixels`) that finds near-duplicates without any model. BM25 over the
//! captions comes with every index ([`vidgen_adapters::retrieval::RetrievalIndex`]).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use vidgen_adapters::retrieval::{
    Dedup, EmbeddingModel, Hit, Modality, Query, RetrievalIndex, SearchOptions,
};
use vidgen_clip_encoders::{CLIPImageProcessor, CLIPModel, CLIPTokenizer, ImageU8};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::Frame;

use super::model::VimiModel;
use super::text::SentenceStates;

/// Space names.
pub mod spaces {
    /// Caption embeddings by the sentence encoder.
    pub const TEXT: &str = "text";
    /// The pixel embedding ([`super::PIXEL_MODEL`]).
    pub const PIXELS: &str = "pixels";
    /// Image embeddings by the VIMI model's own vision tower.
    pub const IMAGE: &str = "image";
    /// Caption embeddings by a CLIP text tower.
    pub const CLIP_TEXT: &str = "clip_text";
    /// Image embeddings by a CLIP vision tower.
    pub const CLIP_IMAGE: &str = "clip_image";
}

/// Id of the pixel embedding: the image box-averaged to 8×8, minus its mean, flattened (192
/// values, L2-normalised by the index). Identical images have cosine 1; it is for
/// near-duplicates, not semantics.
pub const PIXEL_MODEL: &str = "pixels-8x8-centred";

/// The pixel embedding of a frame (see [`PIXEL_MODEL`]).
///
/// # Shapes
/// → `[192]`.
pub fn pixel_embedding(f: &Frame) -> Vec<f32> {
    let (w, h) = (f.width() as usize, f.height() as usize);
    let mut out = vec![0f64; 192];
    let mut count = vec![0usize; 64];
    for y in 0..h {
        for x in 0..w {
            let cell = (y * 8 / h.max(1)) * 8 + x * 8 / w.max(1);
            let p = &f.data()[(y * w + x) * 3..(y * w + x) * 3 + 3];
            for c in 0..3 {
                out[cell * 3 + c] += p[c] as f64;
            }
            count[cell] += 1;
        }
    }
    for (i, v) in out.iter_mut().enumerate() {
        *v /= count[i / 3].max(1) as f64;
    }
    let mean = out.iter().sum::<f64>() / 192.0;
    out.iter().map(|v| (v - mean) as f32).collect()
}

/// Adds the `pixels` space from one frame per item.
///
/// # Errors
/// A frame count other than the index's items; as [`RetrievalIndex::add_space`].
pub fn add_pixel_space(index: &mut RetrievalIndex, frames: &[Frame]) -> Result<()> {
    let rows: Vec<f32> = frames.iter().flat_map(pixel_embedding).collect();
    let t = Tensor::from_vec(rows, (frames.len(), 192), &Device::Cpu)?;
    index.add_space(
        spaces::PIXELS,
        Modality::Image,
        EmbeddingModel::new(PIXEL_MODEL, 192),
        &t,
    )
}

/// The embedding model of a sentence encoder's captions.
pub fn sentence_model(states: &SentenceStates) -> EmbeddingModel {
    EmbeddingModel::new(states.encoder().model_id(), states.encoder().dim())
}

/// Adds the `text` space: every caption by the sentence encoder.
///
/// # Errors
/// As [`SentenceStates::embed`] and [`RetrievalIndex::add_space`].
pub fn add_text_space(index: &mut RetrievalIndex, states: &SentenceStates) -> Result<()> {
    let caps: Vec<&str> = index.items().iter().map(|i| i.caption.as_str()).collect();
    let e = states.embed(&caps)?;
    index.add_space(spaces::TEXT, Modality::Text, sentence_model(states), &e)
}

/// The embedding model of a VIMI model's vision tower: its id carries a fingerprint of the
/// weights, so an index made by other weights is refused.
///
/// # Errors
/// Tensor reads.
pub fn vision_model_id(model: &VimiModel) -> Result<EmbeddingModel> {
    // FNV-1a over the projection weights' bits: cheap, and any retraining changes it.
    let w = model
        .vision
        .visual_projection()
        .weight()
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in w {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let dim = model.config.conditioner.example_dim;
    Ok(EmbeddingModel::new(format!("vimi-vision-{h:016x}"), dim))
}

/// Adds the `image` space: one frame per item through the VIMI model's vision tower.
///
/// # Errors
/// Frames of another size than the model's; as [`RetrievalIndex::add_space`].
pub fn add_image_space(
    index: &mut RetrievalIndex,
    model: &VimiModel,
    frames: &[Frame],
) -> Result<()> {
    let s = model.config.world.size;
    let mut rows = Vec::with_capacity(frames.len());
    for chunk in frames.chunks(256) {
        let mut px = Vec::with_capacity(chunk.len() * 3 * (s * s) as usize);
        for f in chunk {
            if f.width() != s || f.height() != s {
                return Err(Error::invalid("frames", format!("must be {s}×{s}")));
            }
            px.extend(frame_chw(f));
        }
        let t = Tensor::from_vec(px, (chunk.len(), 3, s as usize, s as usize), &Device::Cpu)?;
        rows.push(model.embed_images(&t)?);
    }
    let e = Tensor::cat(&rows, 0)?;
    index.add_space(spaces::IMAGE, Modality::Image, vision_model_id(model)?, &e)
}

/// A frame as `[3, H, W]` values in `[-1, 1]`.
pub fn frame_chw(f: &Frame) -> Vec<f32> {
    let n = (f.width() * f.height()) as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, p) in f.data().chunks(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = p[c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

/// A CLIP model with its tokenizer and image processor (a transformers `CLIPModel` folder).
#[derive(Debug)]
pub struct ClipEmbedder {
    model: CLIPModel,
    tokenizer: CLIPTokenizer,
    processor: CLIPImageProcessor,
    id: String,
}

impl ClipEmbedder {
    /// Loads `dir` (config, weights, tokenizer, `preprocessor_config.json`).
    ///
    /// # Errors
    /// As the three loaders.
    pub fn load(dir: &Path) -> Result<Self> {
        let (model, _) = CLIPModel::from_pretrained(dir, DType::F32, &Device::Cpu)?;
        let id = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "clip".into());
        Ok(Self {
            model,
            tokenizer: CLIPTokenizer::from_dir(dir)?,
            processor: CLIPImageProcessor::from_dir(dir)?,
            id,
        })
    }

    /// The embedding model (`clip:<folder>`, the projection width).
    pub fn embedding_model(&self) -> EmbeddingModel {
        EmbeddingModel::new(
            format!("clip:{}", self.id),
            self.model.config().projection_dim,
        )
    }

    /// Text features (`get_text_features`).
    ///
    /// # Shapes
    /// `B` texts → `[B, projection_dim]`.
    ///
    /// # Errors
    /// Tokenizer / model errors.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        let mut out = Vec::new();
        for chunk in texts.chunks(64) {
            let tok = self.tokenizer.encode_batch(chunk, &Device::Cpu)?;
            out.push(
                self.model
                    .get_text_features(&tok.input_ids, Some(&tok.attention_mask))?,
            );
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    /// Image features (`get_image_features` after the processor).
    ///
    /// # Shapes
    /// `B` frames → `[B, projection_dim]`.
    ///
    /// # Errors
    /// Processor / model errors.
    pub fn embed_frames(&self, frames: &[Frame]) -> Result<Tensor> {
        let mut out = Vec::new();
        for chunk in frames.chunks(64) {
            let imgs: Vec<ImageU8> = chunk
                .iter()
                .map(|f| ImageU8 {
                    data: f.data(),
                    height: f.height() as usize,
                    width: f.width() as usize,
                    channels: 3,
                })
                .collect();
            let px = self.processor.preprocess(&imgs, &Device::Cpu)?;
            out.push(self.model.get_image_features(&px)?);
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    /// Adds the `clip_text` (captions) and `clip_image` (`frames`) spaces.
    ///
    /// # Errors
    /// As the embedders and [`RetrievalIndex::add_space`].
    pub fn add_spaces(&self, index: &mut RetrievalIndex, frames: &[Frame]) -> Result<()> {
        let caps: Vec<&str> = index.items().iter().map(|i| i.caption.as_str()).collect();
        let m = self.embedding_model();
        let t = self.embed_texts(&caps)?;
        index.add_space(spaces::CLIP_TEXT, Modality::Text, m.clone(), &t)?;
        let i = self.embed_frames(frames)?;
        index.add_space(spaces::CLIP_IMAGE, Modality::Image, m, &i)
    }
}

/// How a text query is ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRetrieval {
    /// BM25 over the captions (VIMI's method).
    Bm25,
    /// Cosine in the `text` space (the sentence encoder).
    Sentence,
}

impl TextRetrieval {
    /// `bm25` / `minilm`.
    pub fn name(self) -> &'static str {
        match self {
            TextRetrieval::Bm25 => "bm25",
            TextRetrieval::Sentence => "minilm",
        }
    }
}

/// Top-`k` items for text queries, with optional self-exclusion (`exclude[q]` is query `q`'s
/// own item) and near-duplicate removal in the `pixels` space (`dedup` threshold).
///
/// # Errors
/// A missing space; another sentence encoder than the index's (`embedding_model`).
pub fn search_text(
    index: &RetrievalIndex,
    states: Option<&SentenceStates>,
    queries: &[&str],
    k: usize,
    method: TextRetrieval,
    exclude: Option<Vec<usize>>,
    dedup: Option<f32>,
) -> Result<Vec<Vec<Hit>>> {
    let opts = SearchOptions {
        k,
        exclude_items: exclude,
        dedup: dedup.map(|threshold| Dedup {
            space: spaces::PIXELS.into(),
            threshold,
        }),
    };
    match method {
        TextRetrieval::Bm25 => index.search(Query::Bm25(queries), &opts),
        TextRetrieval::Sentence => {
            let st = states.ok_or_else(|| {
                Error::invalid(
                    "text encoder",
                    "sentence retrieval needs the sentence encoder",
                )
            })?;
            let model = sentence_model(st);
            let q = st.embed(queries)?;
            index.search(
                Query::Embeddings {
                    space: spaces::TEXT,
                    model: &model,
                    queries: &q,
                },
                &opts,
            )
        }
    }
}
