//! A patch-VQ frame tokenizer: each `p × p` RGB patch is one token, the nearest of `K` code
//! vectors (a [`VectorQuantizer`] whose codebook is fitted with k-means, i.e. Lloyd's VQ
//! training). Decoding pastes the code vectors back as patches.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, ModelDir, Result, TokenGrid};
use vidgen_video_io::{Frame, Video};

use super::io_err;
use vidgen_vq_tokenizer::{kmeans, KMeans, QuantizerConfig, VectorQuantizer};

/// The codebook key in `model.safetensors` (diffusers `VQModel`'s name for it).
pub const CODEBOOK_KEY: &str = "quantize.embedding.weight";

/// `config.json` of a [`PatchTokenizer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchVqConfig {
    /// Always `"PatchVQ"`.
    pub model_type: String,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Channels (3, RGB).
    pub in_channels: usize,
    /// Codebook size `K`.
    pub num_vq_embeddings: usize,
    /// Frame side in pixels the tokenizer was fitted on.
    pub sample_size: usize,
}

impl PatchVqConfig {
    /// Code dimension `p·p·C`.
    pub fn dim(&self) -> usize {
        self.patch_size * self.patch_size * self.in_channels
    }

    fn validate(&self) -> Result<()> {
        if self.patch_size == 0 || !self.sample_size.is_multiple_of(self.patch_size) {
            return Err(Error::config(
                "patch_size",
                format!(
                    "{} must divide sample_size {}",
                    self.patch_size, self.sample_size
                ),
            ));
        }
        if self.in_channels != 3 {
            return Err(Error::config("in_channels", "only RGB (3) frames"));
        }
        if self.num_vq_embeddings == 0 {
            return Err(Error::config("num_vq_embeddings", "must be >= 1"));
        }
        Ok(())
    }
}

/// Frames ↔ token grids by patch vector quantisation.
#[derive(Debug, Clone)]
pub struct PatchTokenizer {
    cfg: PatchVqConfig,
    vq: VectorQuantizer,
    codebook: Vec<f32>,
}

impl PatchTokenizer {
    /// Wraps a `[K, p·p·3]` codebook (values in `[-1, 1]`, pixels `u8 / 127.5 − 1`).
    pub fn from_codebook(cfg: PatchVqConfig, codebook: Tensor) -> Result<Self> {
        cfg.validate()?;
        let codebook = codebook.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let vq = VectorQuantizer::from_codebook(
            &QuantizerConfig::new(cfg.num_vq_embeddings, cfg.dim()),
            codebook.clone(),
        )?;
        let codebook = codebook.flatten_all()?.to_vec1::<f32>()?;
        Ok(PatchTokenizer { cfg, vq, codebook })
    }

    /// Fits a `k`-code codebook to the patches of `frames` with k-means++ and `iters` Lloyd
    /// iterations (seeded), returning the tokenizer and the clustering (inertia, counts).
    pub fn fit(
        frames: &[Frame],
        patch: usize,
        k: usize,
        iters: usize,
        seed: u64,
    ) -> Result<(Self, KMeans)> {
        let first = frames
            .first()
            .ok_or_else(|| Error::invalid("frames", "need at least one frame"))?;
        let cfg = PatchVqConfig {
            model_type: "PatchVQ".into(),
            patch_size: patch,
            in_channels: 3,
            num_vq_embeddings: k,
            sample_size: first.width() as usize,
        };
        cfg.validate()?;
        let mut rows = Vec::new();
        for f in frames {
            rows.extend(patches(&cfg, f)?);
        }
        let n = rows.len() / cfg.dim();
        let data = Tensor::from_vec(rows, (n, cfg.dim()), &Device::Cpu)?;
        let km = kmeans(&data, k, iters, seed)?;
        Ok((Self::from_codebook(cfg, km.centroids.clone())?, km))
    }

    /// The configuration.
    pub fn config(&self) -> &PatchVqConfig {
        &self.cfg
    }

    /// Codebook size (the decoder's vocabulary).
    pub fn vocab_size(&self) -> usize {
        self.cfg.num_vq_embeddings
    }

    /// Token rows (= columns) per frame.
    pub fn grid(&self) -> usize {
        self.cfg.sample_size / self.cfg.patch_size
    }

    /// Token ids of frames, frame after frame, raster order within a frame.
    ///
    /// # Errors
    /// A frame of another size than the tokenizer's.
    pub fn encode_frames(&self, frames: &[Frame]) -> Result<Vec<u32>> {
        let mut rows = Vec::new();
        for f in frames {
            rows.extend(patches(&self.cfg, f)?);
        }
        let n = rows.len() / self.cfg.dim();
        if n == 0 {
            return Ok(Vec::new());
        }
        let z = Tensor::from_vec(rows, (n, self.cfg.dim()), &Device::Cpu)?;
        let (ids, _) = self.vq.nearest(&z)?;
        Ok(ids.to_vec1::<u32>()?)
    }

    /// Tokens of a batch of equally long videos.
    ///
    /// # Shapes
    /// `B` videos of `T` frames → `TokenGrid [B, T, g, g]` (`g = size / patch`).
    pub fn encode_videos(&self, videos: &[&Video]) -> Result<TokenGrid> {
        let t = videos.first().map_or(0, |v| v.len());
        if videos.is_empty() || videos.iter().any(|v| v.len() != t) {
            return Err(Error::invalid(
                "videos",
                "need at least one video, all of the same length",
            ));
        }
        let mut ids = Vec::new();
        for v in videos {
            ids.extend(self.encode_frames(v.frames())?);
        }
        let g = self.grid();
        TokenGrid::new(Tensor::from_vec(
            ids,
            (videos.len(), t, g, g),
            &Device::Cpu,
        )?)
    }

    /// Frames from token ids (a multiple of `g²`, frame after frame).
    ///
    /// # Errors
    /// A length that is not a whole number of frames, an id outside the codebook.
    pub fn decode_ids(&self, ids: &[u32]) -> Result<Vec<Frame>> {
        let g = self.grid();
        let (p, s, d) = (self.cfg.patch_size, self.cfg.sample_size, self.cfg.dim());
        if !ids.len().is_multiple_of(g * g) {
            return Err(Error::invalid(
                "token ids",
                format!(
                    "{} ids are not a whole number of {}-token frames",
                    ids.len(),
                    g * g
                ),
            ));
        }
        ids.chunks(g * g)
            .map(|frame_ids| {
                let mut data = vec![0u8; s * s * 3];
                for (cell, &id) in frame_ids.iter().enumerate() {
                    let code = self
                        .codebook
                        .get(id as usize * d..(id as usize + 1) * d)
                        .ok_or_else(|| {
                            Error::invalid(
                                "token id",
                                format!("{id} >= codebook size {}", self.cfg.num_vq_embeddings),
                            )
                        })?;
                    let (r0, c0) = ((cell / g) * p, (cell % g) * p);
                    for (j, v) in code.iter().enumerate() {
                        let (py, px, ch) = (j / (p * 3), (j / 3) % p, j % 3);
                        data[((r0 + py) * s + c0 + px) * 3 + ch] =
                            ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
                    }
                }
                Frame::new(s as u32, s as u32, data)
            })
            .collect()
    }

    /// Writes `config.json` and `model.safetensors` (key [`CODEBOOK_KEY`], `[K, p·p·3]` f32).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let json = serde_json::to_string_pretty(&self.cfg)
            .map_err(|e| Error::config("config.json", e.to_string()))?;
        let cfg_path = dir.join("config.json");
        std::fs::write(&cfg_path, json + "\n").map_err(|e| io_err(&cfg_path, e))?;
        let cb = self.vq.codebook().clone();
        candle_core::safetensors::save(
            &std::collections::HashMap::from([(CODEBOOK_KEY.to_string(), cb)]),
            dir.join("model.safetensors"),
        )?;
        Ok(())
    }

    /// Loads a directory written by [`PatchTokenizer::save`] (strict: the key and its shape).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let md = ModelDir::open(dir.as_ref())?;
        let cfg: PatchVqConfig = md.config()?;
        cfg.validate()?;
        let cb = md.get(CODEBOOK_KEY, &Device::Cpu)?;
        if cb.dims() != [cfg.num_vq_embeddings, cfg.dim()] {
            return Err(Error::shape(
                CODEBOOK_KEY,
                &[cfg.num_vq_embeddings, cfg.dim()],
                cb.dims(),
            ));
        }
        Self::from_codebook(cfg, cb)
    }
}

/// The patches of one frame as rows of `p·p·3` values in `[-1, 1]` (raster order of patches,
/// each patch row-major with interleaved RGB).
fn patches(cfg: &PatchVqConfig, f: &Frame) -> Result<Vec<f32>> {
    let s = cfg.sample_size;
    if f.width() as usize != s || f.height() as usize != s {
        return Err(Error::invalid(
            "frame",
            format!("{}×{}, the tokenizer takes {s}×{s}", f.width(), f.height()),
        ));
    }
    let (p, g) = (cfg.patch_size, s / cfg.patch_size);
    let data = f.data();
    let mut out = Vec::with_capacity(s * s * 3);
    for gr in 0..g {
        for gc in 0..g {
            for py in 0..p {
                let row = (gr * p + py) * s + gc * p;
                for v in &data[row * 3..(row + p) * 3] {
                    out.push(*v as f32 / 127.5 - 1.0);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn codebook_of_all_patches_round_trips_exactly() {
        // Two frames whose 4 patches are all distinct: with K = 8 every patch is a code.
        let mut frames = Vec::new();
        for k in 0..2u8 {
            let mut f = Frame::filled(8, 8, [0, 0, 0]).unwrap();
            for y in 0..8 {
                for x in 0..8 {
                    let q = (y / 4) * 2 + x / 4;
                    f.put(x, y, [q as u8 * 60 + k * 10, 255 - q as u8 * 50, k * 200]);
                }
            }
            frames.push(f);
        }
        let (tok, km) = PatchTokenizer::fit(&frames, 4, 8, 10, 0).unwrap();
        assert!(km.inertia < 1e-6);
        let ids = tok.encode_frames(&frames).unwrap();
        assert_eq!(ids.len(), 8);
        let back = tok.decode_ids(&ids).unwrap();
        assert_eq!(back, frames);

        let dir = tempfile::tempdir().unwrap();
        tok.save(dir.path()).unwrap();
        let again = PatchTokenizer::load(dir.path()).unwrap();
        assert_eq!(again.encode_frames(&frames).unwrap(), ids);
        assert!(tok.decode_ids(&[99, 0, 0, 0]).is_err());
        assert!(tok.decode_ids(&[0, 0, 0]).is_err());
    }
}
