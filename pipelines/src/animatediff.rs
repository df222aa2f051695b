//! AnimateDiff text-to-video: diffusers' `AnimateDiffPipeline`.
//!
//! Reference: `diffusers/pipelines/animatediff/pipeline_animatediff.py` (0.42). The steps of
//! `__call__`, numbered as below:
//! 1. Prompt embeddings (CLIP, padded to 77); with guidance the batch is `[negative, prompt]`
//!    (`negative_prompt` or `""`), then `repeat_interleave(num_frames)`: one context per frame,
//!    `[2·B·F, 77, D]`, as `UNetMotionModel` takes it.
//! 2. The scheduler of `scheduler/` with `num_inference_steps`; latents `[B, 4, F, h, w]` (given
//!    or drawn) times `init_noise_sigma`.
//! 3. Each step: `cat([latents] * 2)`, scaled, the motion UNet, `u + guidance_scale·(c − u)`,
//!    the scheduler step (DDIM's `eta`; stochastic schedulers take caller noise).
//! 4. Decode: `latents / scaling_factor`, frames `[B·F, 4, h, w]` through the VAE
//!    `decode_chunk_size` at a time (SD's VAE is per frame, so chunking bounds memory without
//!    changing the result), `[B, F, 3, H, W]` in `[0, 1]`.
//!
//! Two folder layouts load: a saved `AnimateDiffPipeline` (its `unet/` is already the combined
//! `UNetMotionModel`; the `motion_adapter/` saved beside it is not read again), or a folder
//! whose `unet/` is a 2-D `UNet2DConditionModel` plus a `MotionAdapter` folder, combined as
//! diffusers' `UNetMotionModel.from_unet2d` ([`AnimateDiffPipeline::from_parts`]).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use vidgen_diffusion_unet3d::sd::{
    AutoencoderKL, MotionUNetSpec, UNetMotionConfig, UNetMotionModel,
};
use vidgen_samplers::diffusers::SchedulerConfig;
use vidgen_video_core::{check_finite, Error, ModelDir, Result};

use crate::denoise::{
    build_scheduler, initial_latents, load_scheduler, load_vae, to_unit_range, vae_factor, Denoise,
    DenoiseTrace, Guidance,
};
use crate::folder::{ComponentReport, PipelineFolder};
use crate::prompt::PromptEncoder;
use crate::StepInfo;

/// The arguments of `AnimateDiffPipeline.__call__`, with its defaults.
#[derive(Debug, Clone)]
pub struct AnimateDiffCall {
    /// The prompt.
    pub prompt: String,
    /// The unconditional text (`None`: `""`).
    pub negative_prompt: Option<String>,
    /// Frames to generate (16).
    pub num_frames: usize,
    /// Height in pixels (`None`: `unet.sample_size · vae_scale_factor`).
    pub height: Option<usize>,
    /// Width in pixels (`None`: as the height default).
    pub width: Option<usize>,
    /// Denoising steps (50).
    pub num_inference_steps: usize,
    /// Classifier-free guidance (7.5; off at ≤ 1).
    pub guidance_scale: f64,
    /// DDIM's η (0.0; ignored by other schedulers).
    pub eta: f64,
    /// Frames decoded at a time (16).
    pub decode_chunk_size: usize,
    /// Initial latents `[1, 4, F, h, w]` (unscaled noise; `None`: drawn from `seed`).
    pub latents: Option<Tensor>,
    /// Noise of each stochastic scheduler step, shaped like the latents (`None`: drawn from
    /// `seed` where a step needs it).
    pub step_noise: Option<Vec<Tensor>>,
    /// Seed of the draws that are not given.
    pub seed: u64,
}

impl Default for AnimateDiffCall {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: None,
            num_frames: 16,
            height: None,
            width: None,
            num_inference_steps: 50,
            guidance_scale: 7.5,
            eta: 0.0,
            decode_chunk_size: 16,
            latents: None,
            step_noise: None,
            seed: 0,
        }
    }
}

/// What [`AnimateDiffPipeline::call`] returns.
#[derive(Debug, Clone)]
pub struct AnimateDiffOutput {
    /// The video `[1, F, 3, H, W]` in `[0, 1]` (diffusers' `output_type="pt"`).
    pub frames: Tensor,
    /// The final latents `[1, 4, F, h, w]` (before `1 / scaling_factor`).
    pub latents: Tensor,
}

/// AnimateDiff, loaded from a diffusers pipeline folder.
pub struct AnimateDiffPipeline {
    /// `tokenizer/` and `text_encoder/`.
    pub prompt_encoder: PromptEncoder,
    /// The motion UNet.
    pub unet: UNetMotionModel,
    /// `vae/`.
    pub vae: AutoencoderKL,
    /// `scheduler/scheduler_config.json`.
    pub scheduler: SchedulerConfig,
    /// `unet/config.json`'s `sample_size` (the default latent size).
    pub sample_size: Option<usize>,
    /// What was loaded.
    pub report: Vec<ComponentReport>,
    /// The dtype the weights were loaded in.
    pub dtype: DType,
}

#[derive(Deserialize)]
struct SampleSize {
    #[serde(default)]
    sample_size: Option<serde_json::Value>,
}

/// `sample_size` of `unet/config.json` (an integer; a `[h, w]` list takes `h`).
pub(crate) fn unet_sample_size(folder: &PipelineFolder) -> Option<usize> {
    let s: SampleSize = folder.read_json("unet", "config.json").ok()?;
    match s.sample_size? {
        serde_json::Value::Number(n) => n.as_u64().map(|v| v as usize),
        serde_json::Value::Array(a) => a.first()?.as_u64().map(|v| v as usize),
        _ => None,
    }
}

/// A report row for a model directory that `model_index.json` does not list.
pub(crate) fn report_dir(
    name: &str,
    class: &str,
    dir: &Path,
    dtype: DType,
    load: vidgen_video_core::LoadReport,
) -> Result<ComponentReport> {
    let md = ModelDir::open(dir)?;
    let params = md
        .tensors()
        .iter()
        .filter(|t| !load.unused.iter().any(|(u, _)| u == &t.name))
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    Ok(ComponentReport {
        name: name.to_string(),
        class: class.to_string(),
        dtype: Some(dtype),
        params,
        load: Some(load),
    })
}

const CLASSES: &[&str] = &["AnimateDiffPipeline"];

impl AnimateDiffPipeline {
    /// Loads an `AnimateDiffPipeline` folder: `unet/` a `UNetMotionModel`, or a
    /// `UNet2DConditionModel` combined with the folder's `motion_adapter/`.
    ///
    /// # Errors
    /// Another pipeline class, a missing component or folder, a 2-D `unet/` without
    /// `motion_adapter/`, config or weight errors (named with their files).
    pub fn from_pretrained(folder: &PipelineFolder, dtype: DType, device: &Device) -> Result<Self> {
        folder.expect_class(CLASSES)?;
        let (spec, _) = folder.component("unet", &["UNetMotionModel", "UNet2DConditionModel"])?;
        if spec.class == "UNet2DConditionModel" {
            let (_, adapter) = folder.component("motion_adapter", &["MotionAdapter"])?;
            return Self::from_parts(folder, &adapter, dtype, device);
        }
        let (prompt_encoder, mut report) = PromptEncoder::from_folder(folder, dtype, device)?;
        let (_, unet, r) = folder.load_model(
            "unet",
            &["UNetMotionModel"],
            dtype,
            device,
            |cfg: &UNetMotionConfig, vb| {
                let spec = MotionUNetSpec::from_motion_config(cfg)?;
                UNetMotionModel::new(&spec, vb.clone(), vb)
            },
        )?;
        report.push(r);
        Self::finish(folder, prompt_encoder, unet, report, dtype, device)
    }

    /// Loads a Stable Diffusion folder (`StableDiffusionPipeline` or `AnimateDiffPipeline`)
    /// whose `unet/` is a 2-D `UNet2DConditionModel`, plus the `MotionAdapter` folder
    /// `motion_adapter`, combined as `UNetMotionModel.from_unet2d(unet, motion_adapter)`.
    ///
    /// # Errors
    /// Another pipeline class, a `unet/` that is not 2-D, incompatible UNet and adapter
    /// configs, config or weight errors (named with their files).
    pub fn from_parts(
        folder: &PipelineFolder,
        motion_adapter: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        folder.expect_class(&["AnimateDiffPipeline", "StableDiffusionPipeline"])?;
        let (prompt_encoder, mut report) = PromptEncoder::from_folder(folder, dtype, device)?;
        let (_, unet_dir) = folder.component("unet", &["UNet2DConditionModel"])?;
        let (unet, ru, ra) =
            UNetMotionModel::load_from_parts(&unet_dir, motion_adapter, dtype, device)?;
        report.push(folder.report_for("unet", dtype, ru)?);
        report.push(report_dir(
            "motion_adapter",
            "MotionAdapter",
            motion_adapter,
            dtype,
            ra,
        )?);
        Self::finish(folder, prompt_encoder, unet, report, dtype, device)
    }

    fn finish(
        folder: &PipelineFolder,
        prompt_encoder: PromptEncoder,
        unet: UNetMotionModel,
        mut report: Vec<ComponentReport>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if unet.spec().motion.is_none() {
            return Err(Error::invalid(
                "unet",
                "has no motion modules (AnimateDiff needs a UNetMotionModel or a motion adapter)",
            ));
        }
        let (vae, r) = load_vae(folder, dtype, device)?;
        report.push(r);
        let (scheduler, r) = load_scheduler(folder)?;
        report.push(r);
        Ok(Self {
            prompt_encoder,
            sample_size: unet_sample_size(folder),
            unet,
            vae,
            scheduler,
            report,
            dtype,
        })
    }

    /// The VAE's spatial factor (8 for SD).
    pub fn vae_scale_factor(&self) -> usize {
        vae_factor(&self.vae)
    }

    /// Generates a video from `call.prompt`.
    ///
    /// # Shapes
    /// Returns [`AnimateDiffOutput`] `frames [1, F, 3, H, W]`.
    ///
    /// # Errors
    /// A size that is not a positive multiple of the VAE factor (or no size and no
    /// `sample_size`), zero frames / steps / chunk, more frames than the motion modules'
    /// positions, latents / noise of another shape, NaN anywhere on the way (named by step).
    pub fn call(
        &self,
        call: &AnimateDiffCall,
        on_step: &mut dyn FnMut(StepInfo),
    ) -> Result<AnimateDiffOutput> {
        self.call_traced(call, on_step, None)
    }

    /// [`AnimateDiffPipeline::call`] recording the intermediates into `trace`.
    ///
    /// # Errors
    /// As [`AnimateDiffPipeline::call`].
    pub fn call_traced(
        &self,
        call: &AnimateDiffCall,
        on_step: &mut dyn FnMut(StepInfo),
        trace: Option<&mut DenoiseTrace>,
    ) -> Result<AnimateDiffOutput> {
        let dev = self.unet_device();
        let dtype = self.dtype;
        let s = self.vae_scale_factor();
        let height = call
            .height
            .or(self.sample_size.map(|n| n * s))
            .ok_or_else(|| {
                Error::invalid("height", "not given and the UNet config has no sample_size")
            })?;
        let width = call
            .width
            .or(self.sample_size.map(|n| n * s))
            .unwrap_or(height);
        if height == 0 || width == 0 || !height.is_multiple_of(s) || !width.is_multiple_of(s) {
            return Err(Error::invalid(
                "height / width",
                format!("{height}×{width} must be positive multiples of the VAE factor {s}"),
            ));
        }
        let f = call.num_frames;
        if f == 0 {
            return Err(Error::invalid("num_frames", "must be at least 1"));
        }
        if let Some(m) = &self.unet.spec().motion {
            if f > m.max_seq_length {
                return Err(Error::invalid(
                    "num_frames",
                    format!(
                        "{f} frames exceed the motion modules' {} positions (motion_max_seq_length)",
                        m.max_seq_length
                    ),
                ));
            }
        }
        if call.decode_chunk_size == 0 {
            return Err(Error::invalid("decode_chunk_size", "must be at least 1"));
        }
        let guidance = Guidance::cfg(call.guidance_scale);

        // 1. Prompt embeddings [negative, prompt], repeated per frame.
        let (p, n) = self
            .prompt_encoder
            .encode_pair(&call.prompt, call.negative_prompt.as_deref())?;
        let ctx = match guidance {
            Guidance::Cfg { .. } => Tensor::cat(&[&n, &p], 0)?,
            _ => p,
        };
        let ctx = repeat_interleave(&ctx, f)?.to_dtype(dtype)?;

        // 2. Scheduler and initial latents.
        let sched = build_scheduler(&self.scheduler, call.eta, call.num_inference_steps)?;
        let lc = self.unet.spec().in_channels;
        let shape = [1, lc, f, height / s, width / s];
        let latents = initial_latents(call.latents.as_ref(), &shape, call.seed, &dev)?;
        let latents = (latents * sched.init_noise_sigma())?;

        // 3. Denoising loop.
        let unet = |x: &Tensor, t: &Tensor, c: &Tensor| self.unet.forward(x, t, c);
        let latents = Denoise {
            guidance,
            ctx: &ctx,
            concat: None,
            step_noise: call.step_noise.as_deref(),
            seed: call.seed,
            dtype,
            what: "AnimateDiff",
        }
        .run(sched.as_ref(), latents, &unet, on_step, trace)?;

        // 4. Decode in chunks.
        let frames = self.decode(&latents, call.decode_chunk_size)?;
        Ok(AnimateDiffOutput { frames, latents })
    }

    /// Decodes final latents to frames in `[0, 1]`, `chunk` frames at a time.
    ///
    /// # Shapes
    /// `latents [B, 4, F, h, w]` → `[B, F, 3, h·s, w·s]`.
    ///
    /// # Errors
    /// A zero chunk, a wrong latent shape, NaN in the output.
    pub fn decode(&self, latents: &Tensor, chunk: usize) -> Result<Tensor> {
        decode_video_chunked(&self.vae, latents, chunk, self.dtype, "AnimateDiff")
    }

    fn unet_device(&self) -> Device {
        self.prompt_encoder
            .text_encoder
            .text_model()
            .device()
            .clone()
    }
}

/// `1 / scaling_factor · latents` decoded per frame, `chunk` frames at a time (diffusers'
/// `decode_latents` of the video pipelines).
///
/// # Shapes
/// `latents [B, C, F, h, w]` → `[B, F, 3, H, W]` in `[0, 1]`.
pub(crate) fn decode_video_chunked(
    vae: &AutoencoderKL,
    latents: &Tensor,
    chunk: usize,
    dtype: DType,
    what: &str,
) -> Result<Tensor> {
    if chunk == 0 {
        return Err(Error::invalid("decode_chunk_size", "must be at least 1"));
    }
    let (b, c, f, h, w) = latents.dims5()?;
    let sf = vae.config().scaling_factor;
    // [B, C, F, h, w] -> [B·F, C, h, w]
    let z = (latents * (1.0 / sf))?
        .permute((0, 2, 1, 3, 4))?
        .reshape((b * f, c, h, w))?
        .to_dtype(dtype)?;
    let n = b * f;
    let mut parts = Vec::with_capacity(n.div_ceil(chunk));
    let mut s0 = 0;
    while s0 < n {
        let len = chunk.min(n - s0);
        parts.push(vae.decode_frames(&z.narrow(0, s0, len)?)?);
        s0 += len;
    }
    let x = Tensor::cat(&parts, 0)?; // [B·F, 3, H, W]
    check_finite(&x, &format!("{what} decoded frames"))?;
    let (_, xc, xh, xw) = x.dims4()?;
    to_unit_range(&x.reshape((b, f, xc, xh, xw))?)
}

/// torch's `repeat_interleave(n, dim=0)`.
///
/// # Shapes
/// `[B, …]` → `[B·n, …]`.
pub(crate) fn repeat_interleave(x: &Tensor, n: usize) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let mut exp = dims.clone();
    exp.insert(1, n);
    let mut out = dims;
    out[0] *= n;
    Ok(x.unsqueeze(1)?
        .broadcast_as(exp)?
        .contiguous()?
        .reshape(out)?)
}
