//! Stable Video Diffusion image-to-video: diffusers' `StableVideoDiffusionPipeline`.
//!
//! Reference: `diffusers/pipelines/stable_video_diffusion/pipeline_stable_video_diffusion.py`
//! (0.42). The steps of `__call__`, numbered as below:
//! 1. CLIP image embedding of the conditioning image: `[0, 1] → [-1, 1]`, SVD's
//!    `_resize_with_antialiasing` to 224×224, back to `[0, 1]`, the feature extractor's
//!    mean / std, `image_encoder(..).image_embeds` → `[B, 1, D]`.
//! 2. The image in `[-1, 1]` plus `noise_aug_strength · aug_noise`, VAE-encoded,
//!    `latent_dist.mode()` (not scaled), repeated over the frames.
//! 3. `added_time_ids = [fps − 1, motion_bucket_id, noise_aug_strength]`.
//! 4. The Euler scheduler of `scheduler/` with `num_inference_steps`; latents (given or drawn)
//!    times `init_noise_sigma`.
//! 5. Per-frame guidance `linspace(min_guidance_scale, max_guidance_scale, F)`; classifier-free
//!    guidance when `max_guidance_scale > 1`, with the unconditional branch built from zero
//!    image embeddings and zero image latents, batch order `[uncond, cond]`.
//! 6. Each step: scale the input, concatenate the image latents on channels, the UNet, guidance,
//!    the scheduler step.
//! 7. Decode `latents / scaling_factor` (see [`DecodeMode`]) and map to `[0, 1]`.

use candle_core::{DType, Device, Tensor};
use vidgen_clip_encoders::{
    resize_with_antialiasing, CLIPImageProcessor, CLIPVisionModelWithProjection,
};
use vidgen_diffusion_unet3d::svd::{
    AutoencoderKLTemporalDecoder, TemporalVaeConfig, UNetSpatioTemporalConditionModel,
    UNetSpatioTemporalConfig,
};
use vidgen_samplers::diffusers::{SchedulerConfig, StepMemory};
use vidgen_video_core::{check_finite, Error, Result, VideoShape};

use crate::folder::{ComponentReport, PipelineFolder, TensorOverrides};
use crate::{randn_seeded, StepInfo};

/// How the final latents are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeMode {
    /// diffusers' behaviour: `decode_chunk_size` frames at a time, each chunk decoded as its own
    /// clip (`num_frames = chunk length`). The temporal layers see only their chunk, so the
    /// result depends on the chunk size.
    #[default]
    Chunked,
    /// All frames in one pass of the temporal decoder (what `decode_chunk_size ≥ num_frames`
    /// gives): the reference result without chunking artefacts, at the memory of one pass.
    Whole,
    /// The [`DecodeMode::Whole`] result (to f32 round-off) computed `decode_chunk_size` frames
    /// at a time, layer by layer, with the temporal layers' statistics and neighbours taken
    /// over the whole clip ([`AutoencoderKLTemporalDecoder::decode_exact`]): no chunking
    /// artefacts, at a lower peak memory than one pass.
    Exact,
}

/// The arguments of `StableVideoDiffusionPipeline.__call__`, with its defaults (`None` =
/// derived from the model as diffusers does).
#[derive(Debug, Clone)]
pub struct SvdCall {
    /// Output height in pixels (`None`: `unet.sample_size · vae_scale_factor`).
    pub height: Option<usize>,
    /// Output width in pixels (`None`: as `height`).
    pub width: Option<usize>,
    /// Frames to generate (`None`: the UNet's `num_frames`).
    pub num_frames: Option<usize>,
    /// Denoising steps (25).
    pub num_inference_steps: usize,
    /// Guidance at the first frame (1.0).
    pub min_guidance_scale: f64,
    /// Guidance at the last frame (3.0).
    pub max_guidance_scale: f64,
    /// Frames per second the model is conditioned on (7; passed to the UNet as `fps − 1`).
    pub fps: usize,
    /// Motion bucket (127).
    pub motion_bucket_id: usize,
    /// Noise added to the conditioning image (0.02).
    pub noise_aug_strength: f64,
    /// Frames decoded at a time (`None`: all frames).
    pub decode_chunk_size: Option<usize>,
    /// How to decode.
    pub decode_mode: DecodeMode,
    /// Initial latents `[B, F, C, h, w]` (`C` = [`SvdPipeline::latent_channels`]; unscaled
    /// noise; `None`: drawn from `seed`).
    pub latents: Option<Tensor>,
    /// The noise-augmentation draw `[B, 3, H, W]` (`None`: drawn from `seed`).
    pub aug_noise: Option<Tensor>,
    /// Seed of the draws that are not given.
    pub seed: u64,
}

impl Default for SvdCall {
    fn default() -> Self {
        Self {
            height: None,
            width: None,
            num_frames: None,
            num_inference_steps: 25,
            min_guidance_scale: 1.0,
            max_guidance_scale: 3.0,
            fps: 7,
            motion_bucket_id: 127,
            noise_aug_strength: 0.02,
            decode_chunk_size: None,
            decode_mode: DecodeMode::Chunked,
            latents: None,
            aug_noise: None,
            seed: 0,
        }
    }
}

/// What [`SvdPipeline::call`] returns.
#[derive(Debug, Clone)]
pub struct SvdOutput {
    /// The video `[B, F, 3, H, W]` in `[0, 1]` (diffusers' `output_type="pt"`).
    pub frames: Tensor,
    /// The final latents `[B, F, C, h, w]` (before `1 / scaling_factor`).
    pub latents: Tensor,
}

/// Intermediate values of a run, for bisecting a mismatch against the reference.
#[derive(Debug, Clone, Default)]
pub struct SvdTrace {
    /// CLIP input `[B, 3, 224, 224]`.
    pub clip_pixel_values: Option<Tensor>,
    /// `image_embeds [B, D]`.
    pub image_embeds: Option<Tensor>,
    /// The scheduler's σ (with the trailing 0) and timesteps.
    pub sigmas: Vec<f32>,
    /// The scheduler's timesteps.
    pub timesteps: Vec<f64>,
    /// The UNet's inputs on the first step: sample, timestep, encoder_hidden_states,
    /// added_time_ids.
    pub unet_call0: Vec<(String, Tensor)>,
    /// Latents after each step.
    pub latents_after_step: Vec<Tensor>,
}

/// Stable Video Diffusion image-to-video, loaded from a diffusers pipeline folder.
pub struct SvdPipeline {
    /// `image_encoder/`.
    pub image_encoder: CLIPVisionModelWithProjection,
    /// `feature_extractor/` (only its normalisation is used, as diffusers does).
    pub feature_extractor: CLIPImageProcessor,
    /// `unet/`.
    pub unet: UNetSpatioTemporalConditionModel,
    /// `vae/`.
    pub vae: AutoencoderKLTemporalDecoder,
    /// `scheduler/scheduler_config.json`.
    pub scheduler: SchedulerConfig,
    /// What was loaded.
    pub report: Vec<ComponentReport>,
    /// The dtype the weights were loaded in (the models compute in it, accumulating in f32).
    pub dtype: DType,
}

impl SvdPipeline {
    /// The `model_index.json` diffusers writes for this pipeline (components and their classes),
    /// for tools that assemble a pipeline folder from parts.
    pub fn model_index() -> serde_json::Value {
        serde_json::json!({
            "_class_name": "StableVideoDiffusionPipeline",
            "_diffusers_version": "0.42.1",
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
            "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
            "vae": ["diffusers", "AutoencoderKLTemporalDecoder"]
        })
    }

    /// Loads a `StableVideoDiffusionPipeline` folder.
    ///
    /// # Errors
    /// Another pipeline class, a missing component or component folder, an unsupported class,
    /// config or weight errors (named with their files).
    pub fn from_pretrained(folder: &PipelineFolder, dtype: DType, device: &Device) -> Result<Self> {
        Self::from_pretrained_with(folder, dtype, device, None)
    }

    /// As [`SvdPipeline::from_pretrained`], with some UNet tensors replaced by `unet` (tuned
    /// layers stored elsewhere, e.g. AID's cross-attention), strictly.
    ///
    /// # Errors
    /// As [`SvdPipeline::from_pretrained`]; an override the UNet does not use (named).
    pub fn from_pretrained_with(
        folder: &PipelineFolder,
        dtype: DType,
        device: &Device,
        unet: Option<&TensorOverrides>,
    ) -> Result<Self> {
        folder.expect_class(&["StableVideoDiffusionPipeline"])?;
        let (_, dir) = folder.component("image_encoder", &["CLIPVisionModelWithProjection"])?;
        let (image_encoder, load) =
            CLIPVisionModelWithProjection::from_pretrained(&dir, dtype, device)?;
        let r1 = folder.report_for("image_encoder", dtype, load)?;
        let (_, unet, r2) = folder.load_model_with(
            "unet",
            &["UNetSpatioTemporalConditionModel"],
            dtype,
            device,
            unet,
            |cfg: &UNetSpatioTemporalConfig, vb| UNetSpatioTemporalConditionModel::new(cfg, vb),
        )?;
        let (_, vae, r3) = folder.load_model(
            "vae",
            &["AutoencoderKLTemporalDecoder"],
            dtype,
            device,
            |cfg: &TemporalVaeConfig, vb| AutoencoderKLTemporalDecoder::new(cfg, vb),
        )?;
        let r4 = folder.weightless("scheduler", &["EulerDiscreteScheduler"])?;
        let scheduler = SchedulerConfig::from_file(
            folder
                .root()
                .join("scheduler")
                .join("scheduler_config.json"),
        )?;
        let r5 = folder.weightless("feature_extractor", &["CLIPImageProcessor"])?;
        let feature_extractor =
            CLIPImageProcessor::from_dir(folder.root().join("feature_extractor"))?;
        // The UNet denoises the VAE's latents with the conditioning image's latents on the
        // channels (diffusers reads the latent width as `unet.config.in_channels // 2`).
        let (lc, uc) = (vae.config().latent_channels, unet.config());
        if uc.in_channels != 2 * lc || uc.out_channels != lc {
            return Err(Error::config(
                "unet/config.json",
                format!(
                    "in_channels {} / out_channels {} do not fit the VAE's {lc} latent channels \
                     (expected {} / {lc})",
                    uc.in_channels,
                    uc.out_channels,
                    2 * lc
                ),
            ));
        }
        Ok(Self {
            image_encoder,
            feature_extractor,
            unet,
            vae,
            scheduler,
            report: vec![r1, r2, r3, r4, r5],
            dtype,
        })
    }

    /// Channels of the VAE's latents (4 for SVD); the UNet takes twice as many.
    pub fn latent_channels(&self) -> usize {
        self.vae.config().latent_channels
    }

    /// The VAE's spatial factor (8 for SVD).
    pub fn vae_scale_factor(&self) -> usize {
        1 << self.vae.config().block_out_channels.len().saturating_sub(1)
    }

    /// Generates a video from `image`.
    ///
    /// # Shapes
    /// `image [B, 3, H, W]` in `[0, 1]` (f32) → [`SvdOutput`] `frames [B, F, 3, H, W]`.
    ///
    /// # Errors
    /// An image whose size is not the requested `height × width` (resize it first) or not a
    /// multiple of the VAE factor, zero frames or steps, shapes of given latents / noise that
    /// do not fit, NaN anywhere on the way (named by step).
    pub fn call(
        &self,
        image: &Tensor,
        call: &SvdCall,
        on_step: &mut dyn FnMut(StepInfo),
    ) -> Result<SvdOutput> {
        self.call_traced(image, call, on_step, None)
    }

    /// [`SvdPipeline::call`] recording the intermediates into `trace`.
    ///
    /// # Errors
    /// As [`SvdPipeline::call`].
    pub fn call_traced(
        &self,
        image: &Tensor,
        call: &SvdCall,
        on_step: &mut dyn FnMut(StepInfo),
        mut trace: Option<&mut SvdTrace>,
    ) -> Result<SvdOutput> {
        let dev = image.device().clone();
        let dtype = self.unet_dtype();
        let (b, c, ih, iw) = image.dims4().map_err(|_| {
            Error::invalid(
                "image",
                format!("expected [B, 3, H, W], got {:?}", image.dims()),
            )
        })?;
        if c != 3 || b == 0 || ih == 0 || iw == 0 {
            return Err(Error::invalid(
                "image",
                format!(
                    "expected [B ≥ 1, 3, H ≥ 1, W ≥ 1] in [0, 1], got {:?}",
                    image.dims()
                ),
            ));
        }
        check_finite(image, "SVD conditioning image")?;
        let s = self.vae_scale_factor();
        let ucfg = self.unet.config();
        let height = call
            .height
            .or(ucfg.sample_size.map(|n| n * s))
            .ok_or_else(|| {
                Error::invalid("height", "not given and the UNet config has no sample_size")
            })?;
        let width = call.width.unwrap_or(height);
        if !height.is_multiple_of(s) || !width.is_multiple_of(s) || height == 0 || width == 0 {
            return Err(Error::invalid(
                "height / width",
                format!("{height}×{width} must be positive multiples of the VAE factor {s}"),
            ));
        }
        if (ih, iw) != (height, width) {
            return Err(Error::invalid(
                "image",
                format!(
                    "size {ih}×{iw} differs from the requested {height}×{width}; resize the \
                     image first (diffusers resizes with PIL)"
                ),
            ));
        }
        let f = call.num_frames.unwrap_or(ucfg.num_frames);
        if f == 0 || call.num_inference_steps == 0 {
            return Err(Error::invalid(
                "num_frames / num_inference_steps",
                "must be at least 1",
            ));
        }
        let cfg_on = call.max_guidance_scale > 1.0;
        let (h, w) = (height / s, width / s);

        // 1. CLIP image embedding.
        let x = ((image.to_dtype(DType::F32)? * 2.0)? - 1.0)?;
        let clip_in = ((resize_with_antialiasing(&x, (224, 224))? + 1.0)? / 2.0)?;
        let pixel_values = self.feature_extractor.normalize(&clip_in)?;
        let embeds = self
            .image_encoder
            .forward(&pixel_values.to_dtype(dtype)?)?
            .image_embeds
            .ok_or_else(|| Error::invalid("image_encoder", "returned no image_embeds"))?;
        if let Some(t) = trace.as_deref_mut() {
            t.clip_pixel_values = Some(pixel_values.clone());
            t.image_embeds = Some(embeds.to_dtype(DType::F32)?);
        }
        let embeds = embeds.unsqueeze(1)?; // [B, 1, D]
        let embeds = if cfg_on {
            Tensor::cat(&[&embeds.zeros_like()?, &embeds], 0)?
        } else {
            embeds
        };

        // 2. Noise-augmented image latents (mode, unscaled).
        let aug = match &call.aug_noise {
            Some(n) => {
                if n.dims() != image.dims() {
                    return Err(Error::shape("aug_noise", image.dims(), n.dims()));
                }
                n.to_dtype(DType::F32)?.to_device(&dev)?
            }
            None => randn_seeded(call.seed ^ 0x5eed_a0e5, image.dims(), &dev)?,
        };
        let cond_img = (x + (aug * call.noise_aug_strength)?)?;
        let img_lat = self
            .vae
            .encode_frames(&cond_img.to_dtype(dtype)?)?
            .mode()
            .clone(); // [B, C, h, w]
        let img_lat = if cfg_on {
            Tensor::cat(&[&img_lat.zeros_like()?, &img_lat], 0)?
        } else {
            img_lat
        };
        let bb = img_lat.dims()[0];
        // [B', C, h, w] -> [B', F, C, h, w]
        let img_lat = img_lat
            .unsqueeze(1)?
            .repeat((1, f, 1, 1, 1))?
            .to_dtype(dtype)?;

        // 3. Added time ids.
        let ids = Tensor::new(
            &[[
                (call.fps as f32) - 1.0,
                call.motion_bucket_id as f32,
                call.noise_aug_strength as f32,
            ]],
            &dev,
        )?
        .repeat((bb, 1))?
        .to_dtype(dtype)?;

        // 4. Scheduler and initial latents.
        let mut sched = self.scheduler.build()?;
        sched.set_timesteps(call.num_inference_steps)?;
        let lat_shape = [b, f, self.latent_channels(), h, w];
        let latents = match &call.latents {
            Some(l) => {
                if l.dims() != lat_shape {
                    return Err(Error::shape("latents", &lat_shape, l.dims()));
                }
                l.to_dtype(DType::F32)?.to_device(&dev)?
            }
            None => randn_seeded(call.seed, &lat_shape, &dev)?,
        };
        let mut latents = (latents * sched.init_noise_sigma())?;
        if let Some(t) = trace.as_deref_mut() {
            t.sigmas = sched.sigmas().map(<[f32]>::to_vec).unwrap_or_default();
            t.timesteps = sched.timesteps().to_vec();
        }

        // 5. Per-frame guidance [1, F, 1, 1, 1].
        let scales: Vec<f32> = (0..f)
            .map(|i| {
                let t = if f > 1 {
                    i as f64 / (f - 1) as f64
                } else {
                    0.0
                };
                (call.min_guidance_scale + t * (call.max_guidance_scale - call.min_guidance_scale))
                    as f32
            })
            .collect();
        let guidance = Tensor::from_vec(scales, (1, f, 1, 1, 1), &dev)?;

        // 6. Denoising loop.
        let n = sched.timesteps().len();
        let mut mem = StepMemory::default();
        for i in 0..n {
            let t = sched.timesteps()[i];
            let inp = if cfg_on {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let inp = sched.scale_model_input(&inp, i)?;
            let inp = Tensor::cat(&[&inp.to_dtype(dtype)?, &img_lat], 2)?;
            let ts = Tensor::new(&[t as f32], &dev)?.to_dtype(dtype)?;
            if i == 0 {
                if let Some(tr) = trace.as_deref_mut() {
                    tr.unet_call0 = vec![
                        ("sample".into(), inp.to_dtype(DType::F32)?),
                        ("timestep".into(), ts.to_dtype(DType::F32)?),
                        ("encoder_hidden_states".into(), embeds.to_dtype(DType::F32)?),
                        ("added_time_ids".into(), ids.to_dtype(DType::F32)?),
                    ];
                }
            }
            let pred = self
                .unet
                .forward(&inp, &ts, &embeds.to_dtype(dtype)?, &ids, None)?
                .to_dtype(DType::F32)?;
            let pred = if cfg_on {
                let un = pred.narrow(0, 0, b)?;
                let co = pred.narrow(0, b, b)?;
                (&un + (co - &un)?.broadcast_mul(&guidance)?)?
            } else {
                pred
            };
            latents = sched.step(&pred, i, &latents, None, &mut mem)?.prev_sample;
            check_finite(&latents, &format!("SVD latents after step {i}"))?;
            if let Some(tr) = trace.as_deref_mut() {
                tr.latents_after_step.push(latents.clone());
            }
            on_step(StepInfo {
                index: i,
                total: n,
                timestep: t,
            });
        }

        // 7. Decode.
        let frames = self.decode(&latents, call.decode_chunk_size, call.decode_mode)?;
        Ok(SvdOutput { frames, latents })
    }

    /// Decodes final latents to frames in `[0, 1]`.
    ///
    /// # Shapes
    /// `latents [B, F, C, h, w]` (as the scheduler leaves them) → `[B, F, 3, H, W]`.
    ///
    /// # Errors
    /// A zero chunk size, a wrong latent shape, NaN in the output.
    pub fn decode(
        &self,
        latents: &Tensor,
        chunk: Option<usize>,
        mode: DecodeMode,
    ) -> Result<Tensor> {
        let (b, f, c, h, w) = latents.dims5()?;
        let sf = self.vae.config().scaling_factor;
        let dtype = self.unet_dtype();
        // [B, F, C, h, w] -> [B·F, C, h, w]
        let z = (latents.reshape((b * f, c, h, w))? / sf)?.to_dtype(dtype)?;
        let chunk = match mode {
            DecodeMode::Whole => f,
            DecodeMode::Chunked | DecodeMode::Exact => chunk.unwrap_or(f),
        };
        if chunk == 0 {
            return Err(Error::invalid("decode_chunk_size", "must be at least 1"));
        }
        let mut videos = Vec::with_capacity(b);
        for bi in 0..b {
            let zb = z.narrow(0, bi * f, f)?;
            if mode == DecodeMode::Exact {
                // [F, C, h, w] -> [1, C, F, h, w] -> [1, 3, F, H, W] -> [F, 3, H, W]
                let v = self.vae.decode_exact(&VideoShape::unfold(&zb, f)?, chunk)?;
                videos.push(VideoShape::fold(&v)?.0);
                continue;
            }
            let mut parts = Vec::new();
            let mut s0 = 0;
            while s0 < f {
                let n = chunk.min(f - s0);
                parts.push(self.vae.decode(&zb.narrow(0, s0, n)?, n)?);
                s0 += n;
            }
            videos.push(Tensor::cat(&parts, 0)?); // [F, 3, H, W]
        }
        let frames = Tensor::stack(&videos, 0)?.to_dtype(DType::F32)?; // [B, F, 3, H, W]
        check_finite(&frames, "SVD decoded frames")?;
        Ok(((frames / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }

    fn unet_dtype(&self) -> DType {
        self.dtype
    }
}
