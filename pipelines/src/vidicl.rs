//! Vid-ICL (arXiv 2407.07356): video in-context generation on real checkpoints.
//!
//! A frame tokenizer (a diffusers `VQModel` folder: VQGAN / VQ-VAE, one token grid per
//! frame) and a decoder-only Llama (a transformers folder or a llama.cpp GGUF file) continue a
//! query clip after demonstration clips:
//!
//! 1. every clip `[1, 3, T, H, W]` (pixels in `[-1, 1]`) is tokenised frame by frame
//!    ([`vidgen_vq_tokenizer::FrameTokenizer`]);
//! 2. the sequence is `[text prefix] demo₁ … demoₖ query` with no separators (Vid-ICL's
//!    format, [`vidgen_llama_video::VideoPrompt`]); codes are shifted by
//!    [`VidIclPipeline::token_offset`] when the Llama's vocabulary puts them after other
//!    tokens, and sampling is then restricted to the codebook's ids;
//! 3. `num_frames` frames are generated token by token with a KV cache and the sampling
//!    options of [`vidgen_llama_video::SamplingConfig`] (greedy, temperature, top-k / top-p,
//!    repetition penalty; classifier-free guidance against a zeroed text prefix);
//! 4. the generated token grids are decoded back to frames.
//!
//! A text prefix is a tensor of embeddings from any text encoder; when the decoder folder holds
//! [`TEXT_PROJECTION_FILE`] (llama-video's [`TextProjection`]: `linear_1.*`, optionally
//! `linear_2.*`), it maps the encoder's width to the decoder's.
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use vidgen_pipelines::vidicl::{prepare_video, VidIclCall, VidIclPipeline};
//! use vidgen_video_io::read_gif;
//!
//! # fn main() -> vidgen_video_core::Result<()> {
//! let pipe = VidIclPipeline::from_pretrained("vq-model", "llama", DType::F32, &Device::Cpu)?;
//! let s = pipe.stride() as u32;
//! let demo = prepare_video(&read_gif("demo.gif")?, Some((8 * s, 8 * s)), s, &Device::Cpu)?;
//! let query = prepare_video(&read_gif("query.gif")?, Some((8 * s, 8 * s)), s, &Device::Cpu)?;
//! let out = pipe.call(&[demo], &query, &VidIclCall { num_frames: 4, ..VidIclCall::default() }, |_| {})?;
//! assert_eq!(out.frames.dims()[2], 4); // [1, 3, 4, H, W] in [-1, 1]
//! # Ok(()) }
//! ```

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use vidgen_llama_video::{
    LlamaForCausalLM, Progress, ProjectionKind, SamplingConfig, TextProjection,
    TextProjectionConfig, VideoLm, VideoPrompt,
};
use vidgen_video_core::{Codec, Error, LoadReport, Result, TokenGrid};
use vidgen_video_io::{PixelRange, ResizeFilter, Video};
use vidgen_vq_tokenizer::{FrameTokenizer, VQModel};

/// File of a decoder folder holding the text projection (optional).
pub const TEXT_PROJECTION_FILE: &str = "text_projection.safetensors";

/// Frames the tokenizer runs at a time.
const CHUNK_FRAMES: usize = 8;

/// Reads a [`TEXT_PROJECTION_FILE`]: linear (`linear_1.*`) or LLaVA's two-layer MLP (with
/// `linear_2.*`), sizes from the weights, in `dtype` on `device`.
///
/// # Errors
/// An unreadable file, a missing `linear_1.weight`, weights of other shapes than they imply.
pub fn load_text_projection(path: &Path, dtype: DType, device: &Device) -> Result<TextProjection> {
    let tensors = candle_core::safetensors::load(path, device)?;
    let w1 = tensors
        .get("linear_1.weight")
        .ok_or_else(|| Error::MissingTensor {
            key: "linear_1.weight".into(),
            file: path.display().to_string(),
            nearest: tensors.keys().take(4).cloned().collect(),
        })?;
    let (h1, text_dim) = w1.dims2()?;
    let (kind, hidden) = match tensors.get("linear_2.weight") {
        Some(w2) => (ProjectionKind::Mlp { hidden: h1 }, w2.dims2()?.0),
        None => (ProjectionKind::Linear, h1),
    };
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    TextProjection::new(
        &TextProjectionConfig {
            text_dim,
            hidden_size: hidden,
            kind,
        },
        vb,
    )
}

/// Loads a decoder: a transformers folder (with [`TEXT_PROJECTION_FILE`] when present) or a
/// `.gguf` file, strictly.
///
/// # Errors
/// As [`LlamaForCausalLM::from_pretrained`]; a projection whose width differs from the
/// decoder's hidden size.
pub fn load_video_lm(path: &Path, dtype: DType, device: &Device) -> Result<(VideoLm, LoadReport)> {
    let (model, report) = LlamaForCausalLM::from_pretrained(path, dtype, device)?;
    if !report.is_clean() {
        return Err(report.into_error());
    }
    let hidden = model.hidden_size();
    let mut lm = VideoLm::new(model);
    let p = path.join(TEXT_PROJECTION_FILE);
    if path.is_dir() && p.is_file() {
        let proj = load_text_projection(&p, dtype, device)?;
        if proj.config().hidden_size != hidden {
            return Err(Error::config(
                TEXT_PROJECTION_FILE,
                format!(
                    "projects to {} but the decoder is {hidden} wide",
                    proj.config().hidden_size
                ),
            ));
        }
        lm = lm.with_text_projection(proj);
    }
    Ok((lm, report))
}

/// A video as the pipeline's input `[1, 3, T, H, W]` in `[-1, 1]`: resized and centre-cropped
/// to `size` (`(width, height)`) when given, else centre-cropped to the largest multiples of
/// `stride` (the tokenizer's pixels per token).
///
/// # Errors
/// An empty video, a `size` that is not a multiple of `stride`, a frame smaller than `stride`.
pub fn prepare_video(
    video: &Video,
    size: Option<(u32, u32)>,
    stride: u32,
    device: &Device,
) -> Result<Tensor> {
    if video.is_empty() {
        return Err(Error::invalid("video", "has no frames"));
    }
    let s = stride.max(1);
    let v = match size {
        Some((w, h)) => {
            if w == 0 || h == 0 || w % s != 0 || h % s != 0 {
                return Err(Error::invalid(
                    "size",
                    format!("{w}×{h} is not a positive multiple of the tokenizer's stride {s}"),
                ));
            }
            if (video.width(), video.height()) == (w, h) {
                video.clone()
            } else {
                video.resize_and_crop(w, h, ResizeFilter::Bilinear)?
            }
        }
        None => {
            let (w, h) = (video.width() / s * s, video.height() / s * s);
            if w == 0 || h == 0 {
                return Err(Error::invalid(
                    "video",
                    format!(
                        "{}×{} frames are smaller than the tokenizer's stride {s}",
                        video.width(),
                        video.height()
                    ),
                ));
            }
            if (w, h) == (video.width(), video.height()) {
                video.clone()
            } else {
                video.center_crop(w, h)?
            }
        }
    };
    v.to_tensor(PixelRange::MinusOneToOne, device)
}

/// Arguments of [`VidIclPipeline::call`].
#[derive(Debug, Clone)]
pub struct VidIclCall {
    /// Frames to generate after the query.
    pub num_frames: usize,
    /// How tokens are drawn (greedy by default). With a token offset and no `allowed` range,
    /// draws are restricted to the codebook's ids.
    pub sampling: SamplingConfig,
    /// Seed of the sampling RNG (ChaCha8).
    pub seed: u64,
    /// Text prefix embeddings `[1, L, D]` (any text encoder; projected when the decoder has a
    /// text projection, else `D` must be the hidden size).
    pub text_prefix: Option<Tensor>,
}

impl Default for VidIclCall {
    /// 4 frames, greedy, seed 0, no text.
    fn default() -> Self {
        VidIclCall {
            num_frames: 4,
            sampling: SamplingConfig::greedy(),
            seed: 0,
            text_prefix: None,
        }
    }
}

/// Wall-clock seconds of each phase of a call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VidIclTimings {
    /// Tokenising the demos and the query.
    pub encode_s: f64,
    /// Prefill and token generation.
    pub generate_s: f64,
    /// Decoding the generated tokens.
    pub decode_s: f64,
}

/// What [`VidIclPipeline::call`] returns.
#[derive(Debug, Clone)]
pub struct VidIclOutput {
    /// The generated frames `[1, 3, num_frames, H, W]` in `[-1, 1]` (clamped), with the
    /// query's `H × W`.
    pub frames: Tensor,
    /// The generated codes `[1, num_frames, h, w]` (codebook ids, offset removed).
    pub tokens: TokenGrid,
    /// Positions of the prompt (text prefix + demo and query tokens).
    pub prompt_len: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Phase timings.
    pub timings: VidIclTimings,
}

impl VidIclOutput {
    /// Generated tokens per second of the generation phase.
    pub fn tokens_per_s(&self) -> f64 {
        self.generated_tokens as f64 / self.timings.generate_s.max(1e-9)
    }
}

/// `f` applied to every id of a grid (on the CPU, same shape).
fn shift_ids(ids: &Tensor, f: impl Fn(u32) -> u32) -> Result<TokenGrid> {
    let dims = ids.dims().to_vec();
    let v: Vec<u32> = ids
        .to_dtype(DType::U32)?
        .flatten_all()?
        .to_vec1::<u32>()?
        .into_iter()
        .map(f)
        .collect();
    TokenGrid::new(Tensor::from_vec(v, dims, &Device::Cpu)?)
}

/// Vid-ICL's two stages: a frame tokenizer and a Llama over its codes (see the module docs).
#[derive(Debug, Clone)]
pub struct VidIclPipeline {
    tokenizer: FrameTokenizer,
    lm: VideoLm,
    token_offset: u32,
    reports: Vec<LoadReport>,
}

impl VidIclPipeline {
    /// Wraps a tokenizer and a decoder whose vocabulary holds the codebook at ids
    /// `0..K` (see [`VidIclPipeline::with_token_offset`] otherwise).
    ///
    /// # Errors
    /// A codebook larger than the decoder's vocabulary.
    pub fn new(tokenizer: VQModel, lm: VideoLm) -> Result<Self> {
        let pipe = VidIclPipeline {
            tokenizer: FrameTokenizer::new(tokenizer, CHUNK_FRAMES)?,
            lm,
            token_offset: 0,
            reports: Vec::new(),
        };
        pipe.check_vocab()?;
        Ok(pipe)
    }

    /// Loads a diffusers `VQModel` folder and a decoder (transformers folder or `.gguf` file,
    /// see [`load_video_lm`]) strictly, in `dtype` on `device`.
    ///
    /// # Errors
    /// Unreadable or invalid folders (named), missing or mis-shaped keys, a codebook larger
    /// than the vocabulary.
    pub fn from_pretrained(
        tokenizer_dir: impl AsRef<Path>,
        model: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let (vq, vq_report) = VQModel::from_pretrained(tokenizer_dir.as_ref(), dtype, device)?;
        if !vq_report.is_clean() {
            return Err(vq_report.into_error());
        }
        let (lm, lm_report) = load_video_lm(model.as_ref(), dtype, device)?;
        let mut pipe = Self::new(vq, lm)?;
        pipe.reports = vec![vq_report, lm_report];
        Ok(pipe)
    }

    /// Places codebook id `c` at vocabulary id `offset + c` (a Llama whose vocabulary starts
    /// with text tokens).
    ///
    /// # Errors
    /// `offset + K` beyond the vocabulary.
    pub fn with_token_offset(mut self, offset: u32) -> Result<Self> {
        self.token_offset = offset;
        self.check_vocab()?;
        Ok(self)
    }

    fn check_vocab(&self) -> Result<()> {
        let k = self.tokenizer.vocab_size();
        let v = self.lm.model().vocab_size();
        if self.token_offset as usize + k > v {
            return Err(Error::config(
                "vocab_size",
                format!(
                    "the codebook's {k} codes at offset {} do not fit the decoder's {v} tokens",
                    self.token_offset
                ),
            ));
        }
        Ok(())
    }

    /// The load reports (tokenizer, decoder) when loaded by
    /// [`VidIclPipeline::from_pretrained`].
    pub fn reports(&self) -> &[LoadReport] {
        &self.reports
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &FrameTokenizer {
        &self.tokenizer
    }

    /// The decoder.
    pub fn lm(&self) -> &VideoLm {
        &self.lm
    }

    /// Vocabulary id of code 0.
    pub fn token_offset(&self) -> u32 {
        self.token_offset
    }

    /// Pixels per token along H and W.
    pub fn stride(&self) -> usize {
        self.tokenizer.strides().spatial
    }

    /// Tokenises a clip (codes shifted by the token offset).
    ///
    /// # Shapes
    /// `video [1, 3, T, H, W]` in `[-1, 1]` → `TokenGrid [1, T, H/s, W/s]`.
    pub fn encode(&self, video: &Tensor) -> Result<TokenGrid> {
        let g = self.tokenizer.encode(video)?;
        if self.token_offset == 0 {
            return Ok(g);
        }
        shift_ids(g.ids(), |v| v + self.token_offset)
    }

    /// Generates `call.num_frames` frames continuing `query` after `demos` (see the module
    /// docs); `progress` is called after every generated frame.
    ///
    /// # Shapes
    /// Each demo and the query `[1, 3, T, H, W]` in `[-1, 1]` (demos may differ in `T`, `H`,
    /// `W`; `H`, `W` multiples of [`VidIclPipeline::stride`]) → [`VidIclOutput`] with frames
    /// `[1, 3, num_frames, H_q, W_q]`.
    ///
    /// # Errors
    /// Clips of another layout or batch than 1, sizes not multiples of the stride, a prompt
    /// plus generation longer than the decoder's context, invalid sampling settings, a text
    /// prefix of the wrong width; [`Error::NonFinite`] naming the generation step.
    pub fn call(
        &self,
        demos: &[Tensor],
        query: &Tensor,
        call: &VidIclCall,
        progress: impl FnMut(Progress),
    ) -> Result<VidIclOutput> {
        if call.num_frames == 0 {
            return Err(Error::invalid("num_frames", "must be >= 1"));
        }
        for (i, c) in demos.iter().chain(std::iter::once(query)).enumerate() {
            match c.dims() {
                [1, 3, t, _, _] if *t > 0 => {}
                d => {
                    let what = if i < demos.len() {
                        format!("demo {i}")
                    } else {
                        "query".to_string()
                    };
                    return Err(Error::invalid(
                        what,
                        format!("expected one clip [1, 3, T, H, W] with T >= 1, found {d:?}"),
                    ));
                }
            }
        }
        let t0 = Instant::now();
        let mut b = VideoPrompt::builder();
        if let Some(t) = &call.text_prefix {
            b = b.text_prefix(t.clone());
        }
        for d in demos {
            b = b.demo(self.encode(d)?);
        }
        let prompt = b.query(self.encode(query)?).build()?;
        let encode_s = t0.elapsed().as_secs_f64();

        let mut sampling = call.sampling.clone();
        let k = self.tokenizer.vocab_size() as u32;
        if sampling.allowed.is_none()
            && (self.token_offset > 0 || (k as usize) < self.lm.model().vocab_size())
        {
            sampling.allowed = Some(self.token_offset..self.token_offset + k);
        }
        let t1 = Instant::now();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(call.seed);
        let grid =
            self.lm
                .generate_frames(&prompt, call.num_frames, &sampling, &mut rng, progress)?;
        let generate_s = t1.elapsed().as_secs_f64();

        let t2 = Instant::now();
        let off = self.token_offset;
        // Sampling is restricted to the codebook's range, so every id is >= the offset.
        let tokens = shift_ids(grid.ids(), |v| v.saturating_sub(off))?;
        let frames = self.tokenizer.decode(&tokens)?.clamp(-1f32, 1f32)?;
        let decode_s = t2.elapsed().as_secs_f64();
        let generated_tokens = tokens.ids().elem_count();
        Ok(VidIclOutput {
            frames,
            tokens,
            prompt_len: prompt.len(),
            generated_tokens,
            timings: VidIclTimings {
                encode_s,
                generate_s,
                decode_s,
            },
        })
    }
}
