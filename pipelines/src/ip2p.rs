//! InstructPix2Pix image editing: diffusers' `StableDiffusionInstructPix2PixPipeline`.
//!
//! Reference: `diffusers/pipelines/stable_diffusion/pipeline_stable_diffusion_instruct_pix2pix.py`
//! (0.42). The steps of `__call__`, numbered as below:
//! 1. Prompt embeddings (CLIP, padded to 77); with guidance the batch is
//!    `[prompt, negative, negative]` (`negative_prompt` or `""`).
//! 2. Image latents: the image in `[-1, 1]`, VAE-encoded, `latent_dist.mode()`, **not** scaled by
//!    `scaling_factor`; with guidance `[image, image, zeros]`.
//! 3. The scheduler of `scheduler/` with `num_inference_steps`; latents (given or drawn) times
//!    `init_noise_sigma`.
//! 4. Each step: `cat([latents] * 3)`, scaled, the image latents concatenated on channels (8 UNet
//!    input channels), the UNet, three-way guidance
//!    `u + guidance_scale·(t − i) + image_guidance_scale·(i − u)` on the batch
//!    `[text + image, uncond + image, uncond + zero image]`, the scheduler step (DDIM's `eta`;
//!    stochastic schedulers take caller noise).
//! 5. Decode `latents / scaling_factor` and map to `[0, 1]`.
//!
//! Guidance is on when `guidance_scale > 1` and `image_guidance_scale ≥ 1` (diffusers'
//! `do_classifier_free_guidance`); otherwise one conditional pass.

use candle_core::{DType, Device, Tensor};
use vidgen_diffusion_unet3d::sd::{
    AutoencoderKL, MotionUNetSpec, UNet2DConditionConfig, UNetMotionModel,
};
use vidgen_samplers::diffusers::SchedulerConfig;
use vidgen_video_core::{check_finite, Error, Result};

use crate::denoise::{
    build_scheduler, check_pictures, encode_mode, initial_latents, load_scheduler, load_vae,
    to_unit_range, vae_factor, Denoise, DenoiseTrace, Guidance,
};
use crate::folder::{ComponentReport, PipelineFolder};
use crate::prompt::PromptEncoder;
use crate::StepInfo;

/// The arguments of `StableDiffusionInstructPix2PixPipeline.__call__`, with its defaults.
#[derive(Debug, Clone)]
pub struct Ip2pCall {
    /// The edit instruction.
    pub prompt: String,
    /// The unconditional text (`None`: `""`).
    pub negative_prompt: Option<String>,
    /// Denoising steps (100).
    pub num_inference_steps: usize,
    /// Text guidance (7.5).
    pub guidance_scale: f64,
    /// Image guidance (1.5).
    pub image_guidance_scale: f64,
    /// DDIM's η (0.0; ignored by other schedulers).
    pub eta: f64,
    /// Initial latents `[B, 4, H/8, W/8]` (unscaled noise; `None`: drawn from `seed`).
    pub latents: Option<Tensor>,
    /// Noise of each stochastic scheduler step, shaped like the latents (`None`: drawn from
    /// `seed` where a step needs it).
    pub step_noise: Option<Vec<Tensor>>,
    /// Seed of the draws that are not given.
    pub seed: u64,
}

impl Default for Ip2pCall {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: None,
            num_inference_steps: 100,
            guidance_scale: 7.5,
            image_guidance_scale: 1.5,
            eta: 0.0,
            latents: None,
            step_noise: None,
            seed: 0,
        }
    }
}

/// What [`InstructPix2PixPipeline::call`] returns.
#[derive(Debug, Clone)]
pub struct Ip2pOutput {
    /// The edited pictures `[B, 3, H, W]` in `[0, 1]` (diffusers' `output_type="pt"`).
    pub image: Tensor,
    /// The final latents `[B, 4, h, w]` (before `1 / scaling_factor`).
    pub latents: Tensor,
}

/// InstructPix2Pix, loaded from a diffusers pipeline folder.
pub struct InstructPix2PixPipeline {
    /// `tokenizer/` and `text_encoder/`.
    pub prompt_encoder: PromptEncoder,
    /// `unet/`: the `UNet2DConditionModel` (8 input channels), built as a per-frame
    /// [`UNetMotionModel`] without motion modules (exactly the 2-D UNet).
    pub unet: UNetMotionModel,
    /// `vae/`.
    pub vae: AutoencoderKL,
    /// `scheduler/scheduler_config.json`.
    pub scheduler: SchedulerConfig,
    /// What was loaded.
    pub report: Vec<ComponentReport>,
    /// The dtype the weights were loaded in.
    pub dtype: DType,
}

/// Loads `unet/` as a plain 2-D UNet (`UNet2DConditionModel`), reporting it.
pub(crate) fn load_unet2d(
    folder: &PipelineFolder,
    dtype: DType,
    device: &Device,
) -> Result<(UNetMotionModel, ComponentReport)> {
    let (_, unet, r) = folder.load_model(
        "unet",
        &["UNet2DConditionModel"],
        dtype,
        device,
        |cfg: &UNet2DConditionConfig, vb| {
            let spec = MotionUNetSpec::from_unet2d(cfg)?;
            UNetMotionModel::new(&spec, vb.clone(), vb)
        },
    )?;
    Ok((unet, r))
}

impl InstructPix2PixPipeline {
    /// Loads a `StableDiffusionInstructPix2PixPipeline` folder (`unet/`, `vae/`,
    /// `text_encoder/`, `tokenizer/`, `scheduler/`; a safety checker, if listed, is not loaded).
    ///
    /// # Errors
    /// Another pipeline class, a missing component or folder, an unsupported class, config or
    /// weight errors (named with their files).
    pub fn from_pretrained(folder: &PipelineFolder, dtype: DType, device: &Device) -> Result<Self> {
        folder.expect_class(&["StableDiffusionInstructPix2PixPipeline"])?;
        let (prompt_encoder, mut report) = PromptEncoder::from_folder(folder, dtype, device)?;
        let (unet, r) = load_unet2d(folder, dtype, device)?;
        report.push(r);
        let (vae, r) = load_vae(folder, dtype, device)?;
        report.push(r);
        let (scheduler, r) = load_scheduler(folder)?;
        report.push(r);
        Ok(Self {
            prompt_encoder,
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

    /// Edits `image` by `call.prompt`.
    ///
    /// # Shapes
    /// `image [B, 3, H, W]` in `[0, 1]`, `H` and `W` multiples of the VAE factor →
    /// [`Ip2pOutput`] `image [B, 3, H, W]`.
    ///
    /// # Errors
    /// A picture of another layout or a size that is not a multiple of the VAE factor, a UNet
    /// whose input channels are not twice the latent channels, zero steps, latents / noise of
    /// another shape, NaN anywhere on the way (named by step).
    pub fn call(
        &self,
        image: &Tensor,
        call: &Ip2pCall,
        on_step: &mut dyn FnMut(StepInfo),
    ) -> Result<Ip2pOutput> {
        self.call_traced(image, call, on_step, None)
    }

    /// [`InstructPix2PixPipeline::call`] recording the intermediates into `trace`.
    ///
    /// # Errors
    /// As [`InstructPix2PixPipeline::call`].
    pub fn call_traced(
        &self,
        image: &Tensor,
        call: &Ip2pCall,
        on_step: &mut dyn FnMut(StepInfo),
        trace: Option<&mut DenoiseTrace>,
    ) -> Result<Ip2pOutput> {
        let dev = image.device().clone();
        let dtype = self.dtype;
        let s = self.vae_scale_factor();
        let (b, height, width) = check_pictures(image, s, "image")?;
        let lc = self.vae.config().latent_channels;
        let in_ch = self.unet.spec().in_channels;
        if in_ch != 2 * lc {
            return Err(Error::invalid(
                "unet",
                format!(
                    "expects {in_ch} input channels; InstructPix2Pix feeds {lc} noisy + {lc} \
                     image latent channels"
                ),
            ));
        }
        let guidance = Guidance::instruct(call.guidance_scale, call.image_guidance_scale);

        // 1. Prompt embeddings: [prompt, negative, negative] with guidance.
        let (p, n) = self
            .prompt_encoder
            .encode_pair(&call.prompt, call.negative_prompt.as_deref())?;
        let p = p.repeat((b, 1, 1))?;
        let ctx = match guidance {
            Guidance::Dual { .. } => {
                let n = n.repeat((b, 1, 1))?;
                Tensor::cat(&[&p, &n, &n], 0)?
            }
            _ => p,
        }
        .to_dtype(dtype)?;

        // 2. Image latents (mode, unscaled): [image, image, zeros] with guidance.
        let il = encode_mode(&self.vae, image, dtype)?;
        let il = match guidance {
            Guidance::Dual { .. } => Tensor::cat(&[&il, &il, &il.zeros_like()?], 0)?,
            _ => il,
        };

        // 3. Scheduler and initial latents.
        let sched = build_scheduler(&self.scheduler, call.eta, call.num_inference_steps)?;
        let shape = [b, lc, height / s, width / s];
        let latents = initial_latents(call.latents.as_ref(), &shape, call.seed, &dev)?;
        let latents = (latents * sched.init_noise_sigma())?;

        // 4. Denoising loop.
        let unet = |x: &Tensor, t: &Tensor, c: &Tensor| self.unet.forward_images(x, t, c);
        let latents = Denoise {
            guidance,
            ctx: &ctx,
            concat: Some(&il),
            step_noise: call.step_noise.as_deref(),
            seed: call.seed,
            dtype,
            what: "InstructPix2Pix",
        }
        .run(sched.as_ref(), latents, &unet, on_step, trace)?;

        // 5. Decode.
        let image = self.decode(&latents)?;
        Ok(Ip2pOutput { image, latents })
    }

    /// Decodes final latents to pictures in `[0, 1]`.
    ///
    /// # Shapes
    /// `latents [B, 4, h, w]` → `[B, 3, h·s, w·s]`.
    ///
    /// # Errors
    /// A wrong latent shape, NaN in the output.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let sf = self.vae.config().scaling_factor;
        let z = (latents / sf)?.to_dtype(self.dtype)?;
        let x = self.vae.decode_frames(&z)?;
        check_finite(&x, "InstructPix2Pix decoded image")?;
        to_unit_range(&x)
    }
}
