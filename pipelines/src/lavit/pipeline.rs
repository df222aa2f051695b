//! [`LavitPipeline`]: video → tokens → video, and prompt (and / or keyframe) → tokens → video.
//!
//! A pipeline folder holds:
//!
//! | path | what |
//! |---|---|
//! | `lavit.json` | [`LavitConfig`]: frame geometry, motion extraction, vocabulary layout, text table, generation defaults |
//! | `text_tokenizer/` | a CLIP tokenizer folder (`vocab.json` + `merges.txt`, or `tokenizer.json`) |
//! | `keyframe_tokenizer/` | a diffusers `VQModel` folder |
//! | `motion_tokenizer/` | `vidgen_motion_codec::MotionTokenizer::save`'s folder |
//! | `llm/` | a transformers `LlamaForCausalLM` folder |
//! | `detokenizer/` | [`VideoDetokenizer`]'s folder |

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_clip_encoders::CLIPTokenizer;
use vidgen_motion_codec::{MotionTokenizer, MotionTokenizerConfig};
use vidgen_samplers::{plan_clips, ClipNoise, NoiseSharing};
use vidgen_video_core::{Error, Result, TokenGrid, VideoShape};
use vidgen_video_io::{Frame, ResizeFilter, Video};

use super::detokenizer::{motion_to_grid, VideoDetokenizer};
use super::keyframe::{frames_to_tensor, tensor_to_frames, KeyframeTokenizer};
use super::llm::{GenStats, GenerationConfig, LavitLm};
use super::motion::{self, ClipSpan, MotionConfig};
use super::sequence::{ClipTokens, LavitSequence, TextTable, VocabLayout};
use super::world::LavitWorldConfig;

/// `lavit.json`: everything of the pipeline that is not a weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LavitConfig {
    /// Frame size, fps, clip length (and, for the miniature, its world).
    pub world: LavitWorldConfig,
    /// Motion extraction.
    pub motion: MotionConfig,
    /// Vocabulary layout of the LLM.
    pub layout: VocabLayout,
    /// Text slots.
    pub text: TextTable,
    /// Generation defaults.
    pub generation: GenerationConfig,
}

impl LavitConfig {
    /// The file name in a pipeline folder.
    pub const FILE: &'static str = "lavit.json";

    /// Reads `dir/lavit.json`.
    ///
    /// # Errors
    /// A missing or invalid file, naming it.
    pub fn load(dir: &Path) -> Result<Self> {
        vidgen_video_core::loading::read_config(dir.join(Self::FILE))
    }

    /// Writes `dir/lavit.json` (pretty JSON).
    ///
    /// # Errors
    /// An unwritable file, naming it.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let cp = dir.join(Self::FILE);
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::invalid("config", e.to_string()))?;
        std::fs::write(&cp, json + "\n").map_err(|source| Error::Io { path: cp, source })
    }
}

/// The token file `vidgen lavit tokenize` writes (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenFile {
    /// Format version (1).
    pub version: u32,
    /// Frame width and height of the pipeline.
    pub size: [u32; 2],
    /// Frames per second.
    pub fps: f64,
    /// Frames of the (resampled) video.
    pub frames: usize,
    /// Shot starts (keyframes) found in it.
    pub keyframes: Vec<usize>,
    /// Where each clip lies.
    pub spans: Vec<ClipSpan>,
    /// The clips' tokens (keyframe codes, motion codes).
    pub sequence: LavitSequence,
    /// The same as LLM ids (the layout's vocabulary).
    pub ids: Vec<u32>,
}

/// A generation's result.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The video (all clips; later clips start at the previous clip's last frame, which is
    /// not repeated).
    pub video: Video,
    /// The token sequence.
    pub sequence: LavitSequence,
    /// Timings of the LLM.
    pub stats: Vec<GenStats>,
}

/// Video-LaVIT's whole system.
#[derive(Debug)]
pub struct LavitPipeline {
    cfg: LavitConfig,
    text: CLIPTokenizer,
    keyframe: KeyframeTokenizer,
    motion: MotionTokenizer,
    lm: LavitLm,
    detok: VideoDetokenizer,
    device: Device,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl LavitPipeline {
    /// Assembles a pipeline from its parts.
    ///
    /// # Errors
    /// Parts that do not fit each other (codebook sizes against the layout, the motion
    /// tokenizer's clip against the motion config, latent channels, grids).
    pub fn new(
        cfg: LavitConfig,
        text: CLIPTokenizer,
        keyframe: KeyframeTokenizer,
        motion: MotionTokenizer,
        lm: LavitLm,
        detok: VideoDetokenizer,
        device: Device,
    ) -> Result<Self> {
        let l = &cfg.layout;
        l.validate()?;
        let mc = motion.config();
        if keyframe.num_codes() != l.image || mc.num_codes != l.motion || cfg.text.slots() != l.text
        {
            return Err(Error::config(
                "layout",
                format!(
                    "{l:?} does not fit {} keyframe codes, {} motion codes, {} text slots",
                    keyframe.num_codes(),
                    mc.num_codes,
                    cfg.text.slots()
                ),
            ));
        }
        if *lm.layout() != cfg.layout {
            return Err(Error::config(
                "layout",
                "the LLM was built for another layout",
            ));
        }
        if (mc.frames, mc.height, mc.width)
            != (cfg.motion.clip_len, cfg.motion.grid[0], cfg.motion.grid[1])
            || cfg.world.clip_frames != cfg.motion.clip_len
        {
            return Err(Error::config(
                "motion",
                "the motion tokenizer's clip differs from the motion config's",
            ));
        }
        let (h, w) = (cfg.world.height as usize, cfg.world.width as usize);
        let grid = keyframe.grid(h, w);
        let dc = detok.config();
        if dc.latent_channels != keyframe.latent_channels()
            || dc.grid != [grid.0, grid.1]
            || dc.frames != cfg.motion.clip_len
        {
            return Err(Error::config(
                "detokenizer",
                format!(
                    "latents {}x{:?}x{} do not match the keyframe tokenizer's {}x{:?} / clip {}",
                    dc.latent_channels,
                    dc.grid,
                    dc.frames,
                    keyframe.latent_channels(),
                    grid,
                    cfg.motion.clip_len
                ),
            ));
        }
        let (t, gh, gw) = mc.code_dims();
        let mut cfg = cfg;
        cfg.generation.keyframe_tokens = grid.0 * grid.1;
        cfg.generation.motion_tokens = t * gh * gw;
        Ok(Self {
            cfg,
            text,
            keyframe,
            motion,
            lm,
            detok,
            device,
        })
    }

    /// Loads a pipeline folder (see the module docs).
    ///
    /// # Errors
    /// Missing or invalid files, naming them; parts that do not fit.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg = LavitConfig::load(dir)?;
        let text = CLIPTokenizer::from_dir(dir.join("text_tokenizer"))?;
        let keyframe = KeyframeTokenizer::load(dir.join("keyframe_tokenizer"), device)?;
        let (motion, _) =
            MotionTokenizer::from_pretrained(dir.join("motion_tokenizer"), DType::F32, device)?;
        let lm = LavitLm::load(dir.join("llm"), cfg.layout, device)?;
        let detok = VideoDetokenizer::from_pretrained(dir.join("detokenizer"), device)?;
        Self::new(cfg, text, keyframe, motion, lm, detok, device.clone())
    }

    /// The configuration.
    pub fn config(&self) -> &LavitConfig {
        &self.cfg
    }

    /// The text tokenizer.
    pub fn text_tokenizer(&self) -> &CLIPTokenizer {
        &self.text
    }

    /// The keyframe tokenizer.
    pub fn keyframe_tokenizer(&self) -> &KeyframeTokenizer {
        &self.keyframe
    }

    /// The motion tokenizer.
    pub fn motion_tokenizer(&self) -> &MotionTokenizer {
        &self.motion
    }

    /// The LLM.
    pub fn lm(&self) -> &LavitLm {
        &self.lm
    }

    /// The video detokenizer.
    pub fn detokenizer(&self) -> &VideoDetokenizer {
        &self.detok
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The keyframe token grid `(h, w)`.
    pub fn keyframe_grid(&self) -> (usize, usize) {
        self.keyframe.grid(
            self.cfg.world.height as usize,
            self.cfg.world.width as usize,
        )
    }

    /// `video` at the pipeline's frame rate and size (resampled, scaled to cover, centre-cropped).
    ///
    /// # Errors
    /// An empty video.
    pub fn prepare(&self, video: &Video) -> Result<Video> {
        let w = &self.cfg.world;
        let v = if (video.fps() - w.fps).abs() > 1e-6 {
            video.resample_fps(w.fps)?
        } else {
            video.clone()
        };
        if (v.width(), v.height()) == (w.width, w.height) {
            Ok(v)
        } else {
            v.resize_and_crop(w.width, w.height, ResizeFilter::Bilinear)
        }
    }

    /// A frame scaled to the pipeline's size.
    ///
    /// # Errors
    /// Resize errors.
    pub fn prepare_frame(&self, frame: &Frame) -> Result<Frame> {
        let v = Video::new(vec![frame.clone()], self.cfg.world.fps)?;
        let v = self.prepare(&v)?;
        v.frames()
            .first()
            .cloned()
            .ok_or_else(|| Error::invalid("frame", "empty"))
    }

    /// Keyframe codes of frames.
    ///
    /// # Errors
    /// Frames of another size.
    pub fn tokenize_keyframes(&self, frames: &[&Frame]) -> Result<Vec<Vec<u32>>> {
        self.keyframe
            .tokenize(&frames_to_tensor(frames, &self.device)?)
    }

    /// Motion codes of one clip of `clip_len` frames (pipeline size).
    ///
    /// # Errors
    /// A clip of another length; extraction errors.
    pub fn tokenize_motion(&self, clip: &Video) -> Result<Vec<u32>> {
        let m = motion::motion_of_clip(clip, &self.cfg.motion, &self.device)?;
        let ids = self.motion.tokenize(&m.unsqueeze(0)?)?;
        Ok(ids.ids().flatten_all()?.to_vec1()?)
    }

    /// A whole video as tokens: resampled and resized, cut into shots (keyframes) and clips,
    /// each clip's keyframe and motion tokenized.
    ///
    /// # Errors
    /// An empty video; extraction errors.
    pub fn tokenize(&self, video: &Video) -> Result<TokenFile> {
        let v = self.prepare(video)?;
        let keys = motion::keyframes(&v)?;
        let l = self.cfg.motion.clip_len;
        let spans = motion::plan_spans(v.len(), &keys, l)?;
        let mut clips = Vec::with_capacity(spans.len());
        for s in &spans {
            let clip = motion::span_clip(&v, s, l)?;
            let kf = self.tokenize_keyframes(&[&clip.frames()[0]])?;
            let mo = self.tokenize_motion(&clip)?;
            clips.push(ClipTokens {
                keyframe: kf.into_iter().next().unwrap_or_default(),
                motion: mo,
            });
        }
        let sequence = LavitSequence {
            text: Vec::new(),
            clips,
        };
        let ids = sequence.to_ids(&self.cfg.layout, &self.cfg.text)?;
        Ok(TokenFile {
            version: 1,
            size: [self.cfg.world.width, self.cfg.world.height],
            fps: self.cfg.world.fps,
            frames: v.len(),
            keyframes: keys,
            spans,
            sequence,
            ids,
        })
    }

    fn check_clip(&self, c: &ClipTokens) -> Result<()> {
        let g = &self.cfg.generation;
        if c.keyframe.len() != g.keyframe_tokens || c.motion.len() != g.motion_tokens {
            return Err(Error::invalid(
                "clip tokens",
                format!(
                    "{} keyframe and {} motion tokens; this pipeline needs {} and {}",
                    c.keyframe.len(),
                    c.motion.len(),
                    g.keyframe_tokens,
                    g.motion_tokens
                ),
            ));
        }
        Ok(())
    }

    /// Decoded motion of a clip's motion codes on the latent grid (scaled for the detokenizer).
    ///
    /// # Shapes
    /// Returns `[1, 2, F, h, w]`.
    ///
    /// # Errors
    /// Codes out of range or of the wrong count.
    pub fn motion_condition(&self, motion: &[u32]) -> Result<Tensor> {
        let (t, h, w) = self.motion.config().code_dims();
        if motion.len() != t * h * w {
            return Err(Error::invalid(
                "motion tokens",
                format!("{} tokens, the clip has {}", motion.len(), t * h * w),
            ));
        }
        let ids = Tensor::from_vec(motion.to_vec(), (1, t, h, w), &self.device)?;
        let m = self.motion.detokenize(&TokenGrid::new(ids)?)?;
        let dc = self.detok.config();
        motion_to_grid(&m, dc.grid, dc.motion_scale)
    }

    /// Scaled keyframe latents `[1, C, h, w]` of a keyframe (noise-augmented as in sampling
    /// and training: `x + noise_aug · N(0, 1)` with the seeded `rng`).
    ///
    /// # Errors
    /// A frame of another size.
    pub fn keyframe_latents(&self, frame: &Frame, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let dc = self.detok.config();
        let x = frames_to_tensor(&[frame], &self.device)?;
        let n = randn(rng, x.dims(), &self.device)?;
        let x = (x + (n * dc.noise_aug)?)?;
        Ok((self.keyframe.encode(&x)? * dc.latent_scale)?)
    }

    /// Decodes scaled clip latents `[1, C, F, h, w]` into frames.
    ///
    /// # Errors
    /// Another layout.
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Vec<Frame>> {
        let (_, c, f, h, w) = latents.dims5()?;
        let x = (latents.squeeze(0)?.permute((1, 0, 2, 3))?.contiguous()?
            / self.detok.config().latent_scale)?;
        let x = x.reshape((f, c, h, w))?;
        tensor_to_frames(&self.keyframe.decode_latents(&x)?)
    }

    /// One clip from its keyframe picture and motion codes.
    ///
    /// # Errors
    /// Wrong counts; model errors.
    pub fn render_clip(
        &self,
        keyframe: &Frame,
        motion: &[u32],
        noise: &Tensor,
        rng: &mut ChaCha8Rng,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Frame>> {
        let kf = self.keyframe_latents(keyframe, rng)?;
        let mo = self.motion_condition(motion)?;
        let lat = self.detok.sample(noise, &kf, &mo, &mut *on_step)?;
        self.decode_latents(&lat)
    }

    fn latent_shape(&self) -> VideoShape {
        let dc = self.detok.config();
        VideoShape {
            b: 1,
            c: dc.latent_channels,
            t: dc.frames,
            h: dc.grid[0],
            w: dc.grid[1],
        }
    }

    /// Tokens back to a video: each clip's keyframe from its codes (the keyframe tokenizer's
    /// decoder), then its frames from the detokenizer; every clip keeps the frames its span
    /// covers.
    ///
    /// # Errors
    /// Malformed tokens; model errors.
    pub fn detokenize(
        &self,
        tokens: &TokenFile,
        seed: u64,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Video> {
        let n = tokens.sequence.clips.len();
        if n == 0 {
            return Err(Error::invalid("tokens", "no clips"));
        }
        let spans: Vec<ClipSpan> = if tokens.spans.len() == n {
            tokens.spans.clone()
        } else {
            (0..n)
                .map(|i| ClipSpan {
                    start: i * self.cfg.motion.clip_len,
                    frames: self.cfg.motion.clip_len,
                })
                .collect()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let grid = self.keyframe_grid();
        let mut out = Vec::new();
        let shape = self.latent_shape();
        for (c, span) in tokens.sequence.clips.iter().zip(&spans) {
            self.check_clip(c)?;
            let kf =
                self.keyframe
                    .detokenize(std::slice::from_ref(&c.keyframe), grid, &self.device)?;
            let kf = tensor_to_frames(&kf)?;
            let noise = randn(&mut rng, &shape.dims(), &self.device)?;
            let frames = self.render_clip(&kf[0], &c.motion, &noise, &mut rng, on_step)?;
            out.extend(frames.into_iter().take(span.frames.max(1)));
        }
        Video::new(out, self.cfg.world.fps)
    }

    /// Text slots of a prompt (`None` or empty: no text).
    ///
    /// # Errors
    /// Tokenizer errors.
    pub fn text_slots(&self, prompt: Option<&str>) -> Result<(Vec<u32>, Vec<u32>)> {
        match prompt {
            Some(p) if !p.trim().is_empty() => {
                let ids = self.text.encode(p)?;
                let slots = ids
                    .iter()
                    .map(|&i| self.cfg.text.slot(i))
                    .collect::<Result<Vec<_>>>()?;
                Ok((ids, slots))
            }
            _ => Ok((Vec::new(), Vec::new())),
        }
    }

    /// Generates a video of `clips` clips from a prompt and / or a keyframe picture.
    ///
    /// Clip 1: the LLM draws the keyframe's codes (unless `image` is given: its codes are
    /// used) and the motion codes; the detokenizer renders the clip. Each later clip starts at
    /// the previous clip's last frame: that frame is re-tokenized as the next keyframe, the LLM
    /// draws the next motion codes after the whole sequence so far, and the detokenizer's
    /// initial noise for the shared frame is the previous clip's noise for it
    /// (`samplers::long_video`'s `NoiseSharing::Constrained` over clips overlapping by one
    /// frame). Video-LaVIT constrains each later keyframe's diffusion to start from the
    /// previous clip's last frame noised to 85 % of the schedule; the miniature's keyframes
    /// come from a VQ decoder with no noise, so the last frame itself is used.
    ///
    /// # Errors
    /// `clips == 0`; model errors.
    pub fn generate(
        &self,
        prompt: Option<&str>,
        image: Option<&Frame>,
        clips: usize,
        seed: u64,
        gen: Option<&GenerationConfig>,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Generated> {
        if clips == 0 {
            return Err(Error::invalid("clips", "need at least one clip"));
        }
        let mut g = gen.cloned().unwrap_or_else(|| self.cfg.generation.clone());
        g.keyframe_tokens = self.cfg.generation.keyframe_tokens;
        g.motion_tokens = self.cfg.generation.motion_tokens;
        let (text_ids, slots) = self.text_slots(prompt)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut noise_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e6f_6973);
        let l = self.cfg.motion.clip_len;
        let total = clips * (l - 1) + 1;
        let plan = plan_clips(total, l, 1)?;
        let mut noise = ClipNoise::new(NoiseSharing::Constrained);
        let mut seq = LavitSequence {
            text: text_ids,
            clips: Vec::new(),
        };
        let mut frames: Vec<Frame> = Vec::new();
        let mut stats = Vec::new();
        let mut keyframe: Option<Frame> = match image {
            Some(f) => Some(self.prepare_frame(f)?),
            None => None,
        };
        for clip in plan.iter().take(clips) {
            let mut prefix = slots.clone();
            let prev = LavitSequence {
                text: Vec::new(),
                clips: seq.clips.clone(),
            };
            prefix.extend(prev.to_ids(&self.cfg.layout, &self.cfg.text)?);
            let kf_codes = match &keyframe {
                Some(f) => Some(
                    self.tokenize_keyframes(&[f])?
                        .into_iter()
                        .next()
                        .unwrap_or_default(),
                ),
                None => None,
            };
            let (ct, st) = self
                .lm
                .generate_clip(&prefix, kf_codes.as_deref(), &g, &mut rng)?;
            stats.push(st);
            let kf_frame = match &keyframe {
                Some(f) => f.clone(),
                None => {
                    let grid = self.keyframe_grid();
                    let x = self.keyframe.detokenize(
                        std::slice::from_ref(&ct.keyframe),
                        grid,
                        &self.device,
                    )?;
                    tensor_to_frames(&x)?
                        .into_iter()
                        .next()
                        .ok_or_else(|| Error::invalid("keyframe", "decoded no frame"))?
                }
            };
            let nz = noise.next(clip, self.latent_shape(), &self.device, &mut noise_rng)?;
            let out = self.render_clip(&kf_frame, &ct.motion, &nz, &mut rng, on_step)?;
            let skip = usize::from(!frames.is_empty());
            keyframe = out.last().cloned();
            frames.extend(out.into_iter().skip(skip));
            seq.clips.push(ct);
        }
        Ok(Generated {
            video: Video::new(frames, self.cfg.world.fps)?,
            sequence: seq,
            stats,
        })
    }

    /// The default config of the miniature (72×40 frames at 6 fps, 24-frame clips, a 5×9
    /// keyframe grid of 512 codes, 256 motion codes).
    pub fn mini_config(text: TextTable) -> LavitConfig {
        LavitConfig {
            world: LavitWorldConfig::default(),
            motion: MotionConfig::default(),
            layout: VocabLayout {
                text: text.slots(),
                image: 512,
                motion: 256,
            },
            text,
            generation: GenerationConfig::default(),
        }
    }
}

/// Standard normal noise from a seeded generator.
///
/// # Errors
/// Tensor creation.
pub fn randn(rng: &mut ChaCha8Rng, shape: &[usize], device: &Device) -> Result<Tensor> {
    use rand_distr::{Distribution, StandardNormal};
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// Reads a token file.
///
/// # Errors
/// Unreadable or malformed JSON, naming the file.
pub fn read_token_file(path: &Path) -> Result<TokenFile> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes a token file.
///
/// # Errors
/// Unwritable path.
pub fn write_token_file(path: &Path, t: &TokenFile) -> Result<()> {
    let text = serde_json::to_string(t).map_err(|e| Error::invalid("tokens", e.to_string()))?;
    std::fs::write(path, text).map_err(io(path))
}

/// The miniature motion tokenizer's config: Video-LaVIT's layout (`[2, 24, 20, 36]` in,
/// 135 tokens) at width 32, one transformer block in each temporally downsampled stage.
pub fn mini_motion_config() -> MotionTokenizerConfig {
    MotionTokenizerConfig {
        hidden: 32,
        heads: 2,
        depth: 1,
        stage_depths: vec![0, 0, 1, 1],
        mlp_ratio: 2,
        num_codes: 256,
        ..MotionTokenizerConfig::default()
    }
}
