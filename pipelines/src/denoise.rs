//! What the Stable Diffusion family of pipelines here (InstructPix2Pix, AnimateDiff, VIDiff)
//! share: the guided denoising loop of diffusers' `__call__` (scale the input, concatenate the
//! conditioning latents on channels, one batched UNet call, guidance, the scheduler step), the
//! guidance rules, a trace of intermediates, and loading the VAE and scheduler components.

use candle_core::{DType, Device, Tensor};
use vidgen_diffusion_unet3d::sd::{AutoencoderKL, AutoencoderKLConfig};
use vidgen_samplers::diffusers::{DdimScheduler, Scheduler, SchedulerConfig, StepMemory};
use vidgen_video_core::{check_finite, Error, Result};

use crate::folder::{ComponentReport, PipelineFolder};
use crate::{randn_seeded, StepInfo};

/// Scheduler classes the pipelines accept in `scheduler/` (every class
/// [`SchedulerConfig`] reads).
pub const SCHEDULER_CLASSES: &[&str] = &[
    "DDIMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DDPMScheduler",
    "HeunDiscreteScheduler",
    "EDMEulerScheduler",
];

/// How the UNet outputs of one step are combined, and so how the UNet batch is laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Guidance {
    /// One conditional pass.
    None,
    /// Classifier-free guidance on the batch `[uncond, cond]`: `u + s·(c − u)`.
    Cfg {
        /// `guidance_scale`.
        scale: f64,
    },
    /// InstructPix2Pix's three-way guidance on the batch `[text + image, uncond + image,
    /// uncond + zero image]`: `u + s_T·(t − i) + s_I·(i − u)` (diffusers' operation order).
    Dual {
        /// `guidance_scale` (text / instruction).
        text_scale: f64,
        /// `image_guidance_scale` (source image / video).
        image_scale: f64,
    },
}

impl Guidance {
    /// InstructPix2Pix's rule: guidance on when `guidance_scale > 1` and
    /// `image_guidance_scale ≥ 1`, else one conditional pass.
    pub fn instruct(text_scale: f64, image_scale: f64) -> Self {
        if text_scale > 1.0 && image_scale >= 1.0 {
            Guidance::Dual {
                text_scale,
                image_scale,
            }
        } else {
            Guidance::None
        }
    }

    /// Classifier-free guidance when `scale > 1` (diffusers' `do_classifier_free_guidance`).
    pub fn cfg(scale: f64) -> Self {
        if scale > 1.0 {
            Guidance::Cfg { scale }
        } else {
            Guidance::None
        }
    }

    /// UNet passes per sample (batch multiplier).
    pub fn passes(&self) -> usize {
        match self {
            Guidance::None => 1,
            Guidance::Cfg { .. } => 2,
            Guidance::Dual { .. } => 3,
        }
    }

    /// Combines the batched UNet output `[k·B, …]` into `[B, …]`.
    fn combine(&self, pred: &Tensor, b: usize) -> Result<Tensor> {
        Ok(match *self {
            Guidance::None => pred.clone(),
            Guidance::Cfg { scale } => {
                let u = pred.narrow(0, 0, b)?;
                let c = pred.narrow(0, b, b)?;
                (&u + ((c - &u)? * scale)?)?
            }
            Guidance::Dual {
                text_scale,
                image_scale,
            } => {
                let t = pred.narrow(0, 0, b)?;
                let i = pred.narrow(0, b, b)?;
                let u = pred.narrow(0, 2 * b, b)?;
                ((&u + ((t - &i)? * text_scale)?)? + ((i - &u)? * image_scale)?)?
            }
        })
    }
}

/// Intermediate values of a run, named as the pipeline fixtures name them, for bisecting a
/// mismatch against the reference.
#[derive(Debug, Clone, Default)]
pub struct DenoiseTrace {
    /// The scheduler's timesteps.
    pub timesteps: Vec<f64>,
    /// The UNet's inputs on the first step (`sample`, `timestep`, `encoder_hidden_states`), as
    /// the pipeline batches them, in f32.
    pub unet_call0: Vec<(String, Tensor)>,
    /// Latents after each scheduler step (f32).
    pub latents_after_step: Vec<Tensor>,
}

/// The UNet as the loop calls it: `(sample, timestep [1], context) → prediction`.
pub(crate) type UNetCall<'a> = dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + 'a;

/// One guided denoising run.
pub(crate) struct Denoise<'a> {
    /// Guidance (and so the batch layout of `ctx` / `concat`).
    pub guidance: Guidance,
    /// Cross-attention context, already batched for the guidance (model dtype).
    pub ctx: &'a Tensor,
    /// Latents concatenated on channels after the noisy ones, batched (model dtype).
    pub concat: Option<&'a Tensor>,
    /// Caller noise for stochastic steps, one per step (`None`: drawn from `seed`).
    pub step_noise: Option<&'a [Tensor]>,
    /// Seed of step noise that is not given.
    pub seed: u64,
    /// The UNet's dtype.
    pub dtype: DType,
    /// Names the run in errors ("InstructPix2Pix latents after step 3").
    pub what: &'a str,
}

/// Seed offset of per-step scheduler noise (kept apart from the initial latents' stream).
pub(crate) const STEP_NOISE_SEED: u64 = 0x57e9_0001;

impl Denoise<'_> {
    /// Runs the loop from `latents` (already times `init_noise_sigma`, f32) and returns the
    /// final latents (f32).
    pub fn run(
        &self,
        sched: &dyn Scheduler,
        mut latents: Tensor,
        unet: &UNetCall<'_>,
        on_step: &mut dyn FnMut(StepInfo),
        mut trace: Option<&mut DenoiseTrace>,
    ) -> Result<Tensor> {
        let dev = latents.device().clone();
        let b = latents.dim(0)?;
        let k = self.guidance.passes();
        let ts_all = sched.timesteps().to_vec();
        let n = ts_all.len();
        if let Some(tr) = trace.as_deref_mut() {
            tr.timesteps = ts_all.clone();
        }
        let mut mem = StepMemory::default();
        for (i, &t) in ts_all.iter().enumerate() {
            // 1. latent_model_input = cat([latents] * k); scale; cat the conditioning latents.
            let inp = if k > 1 {
                Tensor::cat(&vec![&latents; k], 0)?
            } else {
                latents.clone()
            };
            let inp = sched.scale_model_input(&inp, i)?.to_dtype(self.dtype)?;
            let inp = match self.concat {
                Some(c) => Tensor::cat(&[&inp, c], 1)?,
                None => inp,
            };
            let ts = Tensor::new(&[t as f32], &dev)?;
            if i == 0 {
                if let Some(tr) = trace.as_deref_mut() {
                    tr.unet_call0 = vec![
                        ("sample".into(), inp.to_dtype(DType::F32)?),
                        ("timestep".into(), ts.clone()),
                        (
                            "encoder_hidden_states".into(),
                            self.ctx.to_dtype(DType::F32)?,
                        ),
                    ];
                }
            }
            // 2. the UNet on the whole guidance batch, then guidance.
            let pred = unet(&inp, &ts, self.ctx)?.to_dtype(DType::F32)?;
            let pred = self.guidance.combine(&pred, b)?;
            // 3. the scheduler step (caller noise for stochastic steps).
            let noise = if sched.needs_noise(i) {
                Some(match self.step_noise {
                    Some(all) => {
                        let z = all.get(i).ok_or_else(|| {
                            Error::invalid(
                                "step_noise",
                                format!("{} tensors given, step {i} needs one", all.len()),
                            )
                        })?;
                        if z.dims() != latents.dims() {
                            return Err(Error::shape(
                                format!("step_noise[{i}]"),
                                latents.dims(),
                                z.dims(),
                            ));
                        }
                        z.to_dtype(DType::F32)?.to_device(&dev)?
                    }
                    None => randn_seeded(
                        self.seed
                            .wrapping_add(STEP_NOISE_SEED)
                            .wrapping_add(i as u64),
                        latents.dims(),
                        &dev,
                    )?,
                })
            } else {
                None
            };
            latents = sched
                .step(&pred, i, &latents, noise.as_ref(), &mut mem)?
                .prev_sample;
            check_finite(&latents, &format!("{} latents after step {i}", self.what))?;
            if let Some(tr) = trace.as_deref_mut() {
                tr.latents_after_step.push(latents.clone());
            }
            on_step(StepInfo {
                index: i,
                total: n,
                timestep: t,
            });
        }
        Ok(latents)
    }
}

/// Builds the scheduler of a config with DDIM's `eta` (other schedulers ignore `eta`, as
/// diffusers' `prepare_extra_step_kwargs` passes it only to schedulers that take it).
///
/// # Errors
/// A non-finite or negative `eta`; as [`SchedulerConfig::build`].
pub(crate) fn build_scheduler(
    cfg: &SchedulerConfig,
    eta: f64,
    steps: usize,
) -> Result<Box<dyn Scheduler + Send + Sync>> {
    if !eta.is_finite() || eta < 0.0 {
        return Err(Error::invalid(
            "eta",
            format!("{eta} must be finite and ≥ 0"),
        ));
    }
    let mut s: Box<dyn Scheduler + Send + Sync> = match cfg {
        SchedulerConfig::Ddim(c) => {
            let mut d = DdimScheduler::new(c.clone())?;
            d.eta = eta;
            Box::new(d)
        }
        other => other.build()?,
    };
    if steps == 0 {
        return Err(Error::invalid("num_inference_steps", "must be at least 1"));
    }
    s.set_timesteps(steps)?;
    Ok(s)
}

/// Loads `vae/` (`AutoencoderKL`).
///
/// # Errors
/// As [`PipelineFolder::load_model`].
pub(crate) fn load_vae(
    folder: &PipelineFolder,
    dtype: DType,
    device: &Device,
) -> Result<(AutoencoderKL, ComponentReport)> {
    let (_, vae, r) = folder.load_model(
        "vae",
        &["AutoencoderKL"],
        dtype,
        device,
        |cfg: &AutoencoderKLConfig, vb| AutoencoderKL::new(cfg, vb),
    )?;
    Ok((vae, r))
}

/// Reads `scheduler/scheduler_config.json`.
///
/// # Errors
/// An unsupported class; a malformed or invalid config (named).
pub(crate) fn load_scheduler(
    folder: &PipelineFolder,
) -> Result<(SchedulerConfig, ComponentReport)> {
    let r = folder.weightless("scheduler", SCHEDULER_CLASSES)?;
    let cfg = SchedulerConfig::from_file(
        folder
            .root()
            .join("scheduler")
            .join("scheduler_config.json"),
    )?;
    Ok((cfg, r))
}

/// The VAE's spatial factor (`2^(len(block_out_channels) − 1)`, 8 for SD).
pub(crate) fn vae_factor(vae: &AutoencoderKL) -> usize {
    vae.config().spatial_stride()
}

/// Checks `[B, 3, H, W]` pictures in `[0, 1]` whose sides are positive multiples of `factor`.
///
/// # Errors
/// Another rank or channel count, an empty batch, a side not a multiple of the VAE factor,
/// NaN / infinity.
pub(crate) fn check_pictures(
    x: &Tensor,
    factor: usize,
    what: &str,
) -> Result<(usize, usize, usize)> {
    let (b, c, h, w) = match x.dims() {
        &[b, c, h, w] => (b, c, h, w),
        d => {
            return Err(Error::invalid(
                what,
                format!("expected [B, 3, H, W] pictures in [0, 1], got shape {d:?}"),
            ))
        }
    };
    if c != 3 || b == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(
            what,
            format!(
                "expected [B ≥ 1, 3, H ≥ 1, W ≥ 1] in [0, 1], got {:?}",
                x.dims()
            ),
        ));
    }
    if !h.is_multiple_of(factor) || !w.is_multiple_of(factor) {
        return Err(Error::invalid(
            what,
            format!(
                "size {h}×{w} is not a multiple of the VAE factor {factor}; resize or crop it \
                 first (diffusers resizes down to the nearest multiple)"
            ),
        ));
    }
    check_finite(x, what)?;
    Ok((b, h, w))
}

/// Given initial latents (checked against `shape`, f32 on `dev`) or a seeded draw.
///
/// # Errors
/// Given latents of another shape.
pub(crate) fn initial_latents(
    given: Option<&Tensor>,
    shape: &[usize],
    seed: u64,
    dev: &Device,
) -> Result<Tensor> {
    match given {
        Some(l) => {
            if l.dims() != shape {
                return Err(Error::shape("latents", shape, l.dims()));
            }
            Ok(l.to_dtype(DType::F32)?.to_device(dev)?)
        }
        None => randn_seeded(seed, shape, dev),
    }
}

/// VAE output in `[-1, 1]` → `[0, 1]` as diffusers' `postprocess` (`(x / 2 + 0.5).clamp(0, 1)`),
/// in f32.
pub(crate) fn to_unit_range(x: &Tensor) -> Result<Tensor> {
    Ok(((x.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
}

/// Encodes pictures `[N, 3, H, W]` in `[0, 1]` to unscaled latents, `latent_dist.mode()`, as
/// InstructPix2Pix's `prepare_image_latents` (`sample_mode="argmax"`).
///
/// # Errors
/// VAE errors; NaN in the moments.
pub(crate) fn encode_mode(vae: &AutoencoderKL, x: &Tensor, dtype: DType) -> Result<Tensor> {
    let x = ((x.to_dtype(DType::F32)? * 2.0)? - 1.0)?.to_dtype(dtype)?;
    Ok(vae.encode_frames(&x)?.mode().clone())
}
