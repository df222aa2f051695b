//! [`VimiPipeline`]: a prompt plus examples (given images / clips, or retrieved from an index)
//! → a video, by DDIM over the denoiser with the VIMI context.
//!
//! ```text
//! states  = MiniLM token states of the prompt (padded to text_len)       [B, L, 384]
//! e       = vision(examples) (CLIP image embeds, one per image / frame)  [B, k, F, E]
//! ctx     = conditioner([states ‖ e])                                     [B, L + k·F, D]
//! x_T ~ N(0, I); for t in DDIM steps: pred = guided(denoiser(x_t, t, ·)); x = step(pred)
//! ```
//!
//! Guidance (both scales 1 = one conditional pass): with examples,
//! `u + s_T·(p_text − u) + s_E·(p_full − p_text)` where `u` is the empty prompt without
//! examples and `p_text` the prompt without examples; without examples,
//! `u + s_T·(p_text − u)`. Each branch is its own denoiser call (their contexts differ in
//! length).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use vidgen_samplers::diffusers::{DdimConfig, DdimScheduler, Scheduler, StepMemory};
use vidgen_video_core::{check_finite, Error, Result};
use vidgen_video_io::{tensor_to_videos, videos_to_tensor, Frame, PixelRange, Video};

use super::model::VimiModel;
use super::text::SentenceStates;
use crate::{randn_seeded, StepInfo};

/// One example of a prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    /// An image (a subject): one token.
    Image(Frame),
    /// A clip (e.g. a motion to follow): one token per frame.
    Clip(Video),
}

impl Example {
    /// The frames the example is encoded from.
    pub fn frames(&self) -> Vec<&Frame> {
        match self {
            Example::Image(f) => vec![f],
            Example::Clip(v) => v.frames().iter().collect(),
        }
    }
}

/// Guidance scales (1 = that condition is used without guidance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VimiGuidance {
    /// `s_T`, on the prompt.
    pub text: f64,
    /// `s_E`, on the examples.
    pub example: f64,
}

impl Default for VimiGuidance {
    /// `s_T = 1.5`, `s_E = 1.5` (the miniature's best on a sweep over an episode stream apart
    /// from its evaluation's; see `examples/assets/vimi-mini/README.md`).
    fn default() -> Self {
        Self {
            text: 1.5,
            example: 1.5,
        }
    }
}

/// How to sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VimiOptions {
    /// DDIM steps.
    pub steps: usize,
    /// Guidance scales.
    pub guidance: VimiGuidance,
    /// Seed of the initial noise (and of DDIM's noise when `eta > 0`).
    pub seed: u64,
    /// DDIM's η (0: deterministic).
    pub eta: f64,
}

impl Default for VimiOptions {
    /// 20 steps, default guidance, seed 0, η 0.
    fn default() -> Self {
        Self {
            steps: 20,
            guidance: VimiGuidance::default(),
            seed: 0,
            eta: 0.0,
        }
    }
}

/// The contexts of one batch: the full instruction (with examples, if any), the prompt alone,
/// and the unconditional (empty prompt, no examples).
#[derive(Debug, Clone)]
pub struct Contexts {
    /// `[B, L + k·F, D]` when the batch has examples.
    pub full: Option<Tensor>,
    /// `[B, L, D]`.
    pub text: Tensor,
    /// `[B, L, D]`.
    pub uncond: Tensor,
}

/// A generated batch.
#[derive(Debug, Clone)]
pub struct VimiOutput {
    /// The clips, `u8`.
    pub videos: Vec<Video>,
    /// The final sample `[B, 3, T, H, W]` in `[-1, 1]`.
    pub sample: Tensor,
}

/// The pipeline (see the module docs).
#[derive(Debug)]
pub struct VimiPipeline {
    text: SentenceStates,
    model: VimiModel,
    scheduler: DdimConfig,
}

impl VimiPipeline {
    /// Joins a prompt encoder and a model.
    ///
    /// # Errors
    /// A prompt encoder whose width or length differ from the model's config.
    pub fn new(text: SentenceStates, model: VimiModel) -> Result<Self> {
        let cfg = &model.config;
        if text.dim() != cfg.conditioner.text_dim || text.len() != cfg.text_len {
            return Err(Error::invalid(
                "text encoder",
                format!(
                    "gives [{}, {}] states; the model takes [{}, {}] ({})",
                    text.len(),
                    text.dim(),
                    cfg.text_len,
                    cfg.conditioner.text_dim,
                    cfg.text_encoder
                ),
            ));
        }
        let scheduler = cfg.scheduler_config()?;
        Ok(Self {
            text,
            model,
            scheduler,
        })
    }

    /// Loads a model folder ([`VimiModel::load`], f32 on the CPU) and the prompt encoder from
    /// `minilm_dir`.
    ///
    /// # Errors
    /// As [`VimiModel::load`] and [`SentenceStates::load`].
    pub fn load(model_dir: &Path, minilm_dir: &Path) -> Result<Self> {
        let (model, _) = VimiModel::load(model_dir, DType::F32, &Device::Cpu)?;
        let text = SentenceStates::load(minilm_dir, model.config.text_len)?;
        Self::new(text, model)
    }

    /// The model.
    pub fn model(&self) -> &VimiModel {
        &self.model
    }

    /// The prompt encoder.
    pub fn text(&self) -> &SentenceStates {
        &self.text
    }

    fn device(&self) -> Device {
        Device::Cpu
    }

    /// The examples as the vision tower's input.
    ///
    /// # Shapes
    /// `B` lists of `k` examples of `F` frames each → `[B, k, F, 3, s, s]` in `[-1, 1]`
    /// (`None` when `k = 0`).
    ///
    /// # Errors
    /// Lists of different lengths or frame counts; frames of another size than the model's.
    pub fn example_pixels(&self, examples: &[Vec<Example>]) -> Result<Option<Tensor>> {
        let Some(first) = examples.first() else {
            return Ok(None);
        };
        let k = first.len();
        if k == 0 {
            if examples.iter().any(|e| !e.is_empty()) {
                return Err(Error::invalid(
                    "examples",
                    "every prompt of a batch needs the same number of examples",
                ));
            }
            return Ok(None);
        }
        let f = first[0].frames().len();
        let s = self.model.config.world.size;
        let mut videos = Vec::with_capacity(examples.len() * k);
        for list in examples {
            if list.len() != k {
                return Err(Error::invalid(
                    "examples",
                    "every prompt of a batch needs the same number of examples",
                ));
            }
            for ex in list {
                let frames: Vec<Frame> = ex.frames().into_iter().cloned().collect();
                if frames.len() != f {
                    return Err(Error::invalid(
                        "examples",
                        "every example of a batch needs the same number of frames",
                    ));
                }
                if frames.iter().any(|fr| fr.width() != s || fr.height() != s) {
                    return Err(Error::invalid(
                        "examples",
                        format!("example frames must be {s}×{s} (the model's image size)"),
                    ));
                }
                videos.push(Video::new(frames, 1.0)?);
            }
        }
        // [B·k, 3, F, s, s] -> [B, k, F, 3, s, s]
        let t = videos_to_tensor(&videos, PixelRange::MinusOneToOne, &self.device())?;
        let t = t
            .reshape((examples.len(), k, 3, f, s as usize, s as usize))?
            .permute((0, 1, 3, 2, 4, 5))?
            .contiguous()?;
        Ok(Some(t))
    }

    /// The three contexts of a batch.
    ///
    /// # Errors
    /// As [`VimiPipeline::example_pixels`]; `prompts` and `examples` of different lengths.
    pub fn contexts(&self, prompts: &[&str], examples: &[Vec<Example>]) -> Result<Contexts> {
        if !examples.is_empty() && examples.len() != prompts.len() {
            return Err(Error::invalid(
                "examples",
                format!("{} lists for {} prompts", examples.len(), prompts.len()),
            ));
        }
        let states = self.text.states(prompts)?;
        let null = self.text.states(&vec![""; prompts.len()])?;
        let cond = &self.model.conditioner;
        let full = match self.example_pixels(examples)? {
            Some(px) => {
                let e = self.model.embed_examples(&px)?;
                Some(cond.context(&states, Some(&e))?)
            }
            None => None,
        };
        Ok(Contexts {
            full,
            text: cond.context(&states, None)?,
            uncond: cond.context(&null, None)?,
        })
    }

    /// Generates one clip per prompt (see the module docs). `examples` is empty (no examples)
    /// or one list per prompt, all of the same shape.
    ///
    /// # Errors
    /// As [`VimiPipeline::contexts`] and [`VimiPipeline::denoise`].
    pub fn generate(
        &self,
        prompts: &[&str],
        examples: &[Vec<Example>],
        opts: &VimiOptions,
        on_step: &mut dyn FnMut(StepInfo),
    ) -> Result<VimiOutput> {
        let ctx = self.contexts(prompts, examples)?;
        let sample = self.denoise(&ctx, opts, on_step)?;
        let videos = tensor_to_videos(
            &sample.clamp(-1f32, 1f32)?,
            PixelRange::MinusOneToOne,
            self.model.config.world.fps,
        )?;
        Ok(VimiOutput { videos, sample })
    }

    /// The guided DDIM loop on given contexts.
    ///
    /// # Shapes
    /// Contexts of batch `B` → `[B, 3, T, H, W]` (the world's sizes).
    ///
    /// # Errors
    /// Zero steps, a bad η, NaN / infinity in the sample.
    pub fn denoise(
        &self,
        ctx: &Contexts,
        opts: &VimiOptions,
        on_step: &mut dyn FnMut(StepInfo),
    ) -> Result<Tensor> {
        if opts.steps == 0 {
            return Err(Error::invalid("steps", "must be at least 1"));
        }
        if !(opts.eta.is_finite() && opts.eta >= 0.0) {
            return Err(Error::invalid("eta", "must be finite and ≥ 0"));
        }
        let g = opts.guidance;
        if !(g.text.is_finite() && g.example.is_finite()) {
            return Err(Error::invalid("guidance", "scales must be finite"));
        }
        let w = &self.model.config.world;
        let b = ctx.text.dim(0)?;
        let shape = [b, 3, w.frames, w.size as usize, w.size as usize];
        let mut sched = DdimScheduler::new(self.scheduler.clone())?;
        sched.eta = opts.eta;
        sched.set_timesteps(opts.steps)?;
        let dev = self.device();
        let mut x = (randn_seeded(opts.seed, &shape, &dev)? * sched.init_noise_sigma())?;
        let dit = &self.model.dit;
        let ts_all = sched.timesteps().to_vec();
        let mut mem = StepMemory::default();
        for (i, &t) in ts_all.iter().enumerate() {
            let ts = Tensor::new(&[t as f32], &dev)?;
            let inp = sched.scale_model_input(&x, i)?;
            let pred_text = dit.forward(&inp, &ts, &ctx.text)?;
            let need_uncond = g.text != 1.0;
            let uncond = if need_uncond {
                Some(dit.forward(&inp, &ts, &ctx.uncond)?)
            } else {
                None
            };
            // p = u + s_T (p_text − u)  (= p_text when s_T = 1)
            let mut pred = match &uncond {
                Some(u) => (u + ((&pred_text - u)? * g.text)?)?,
                None => pred_text.clone(),
            };
            if let Some(full) = &ctx.full {
                let pf = dit.forward(&inp, &ts, full)?;
                pred = (pred + ((pf - &pred_text)? * g.example)?)?;
            }
            let noise = if sched.needs_noise(i) {
                Some(randn_seeded(
                    opts.seed.wrapping_add(0x5717_0000).wrapping_add(i as u64),
                    &shape,
                    &dev,
                )?)
            } else {
                None
            };
            x = sched
                .step(&pred, i, &x, noise.as_ref(), &mut mem)?
                .prev_sample;
            check_finite(&x, &format!("VIMI sample after step {i}"))?;
            on_step(StepInfo {
                index: i,
                total: ts_all.len(),
                timestep: t,
            });
        }
        Ok(x)
    }
}
