//! VIDiff instruction-driven video editing (arXiv 2311.18837): a source video and an
//! instruction (text, an instruction image, or both) → the edited video, of any length.
//!
//! No code of VIDiff is public; this is the method as the paper's figures describe it
//! (`../shared/research/aid-vidiff-vimi-vidicl.md`), on InstructPix2Pix's conventions where the
//! paper is silent. With one frame, no instruction image and zero-output temporal layers it
//! **is** [`crate::InstructPix2PixPipeline`] (tested bit for bit).
//!
//! # The model
//! - **UNet**: a Stable Diffusion UNet inflated to video. From a 2-D `UNet2DConditionModel`
//!   (an InstructPix2Pix checkpoint, or any SD UNet whose `conv_in` is widened with zero
//!   weights to the 8 input channels) with new AnimateDiff-layout temporal attention whose output
//!   projection is zero ([`Temporal::New`], diffusion-unet3d's `UNetMotionModel::inflate`), or
//!   whose temporal layers come from an AnimateDiff `MotionAdapter` folder
//!   ([`Temporal::Adapter`]), or none ([`Temporal::PerFrame`]: InstructPix2Pix frame by frame).
//!   A trained VIDiff checkpoint is a folder whose `unet/` is a `UNetMotionModel` or a
//!   `UNet3DConditionModel` with 8 input channels, loaded as is.
//! - **Conditioning**: the source frames VAE-encoded one by one (`latent_dist.mode()`, unscaled,
//!   as InstructPix2Pix), `[1, 4, T, h, w]`, concatenated on channels after the noisy latents.
//! - **Multimodal instruction** (the seed: "an image instruction through CLIP vision + a new
//!   MLP, concatenated with the text embedding"): the context is
//!   `[CLIP text tokens (77) ‖ MLP(CLIP image_embeds) (1 token)]` on the token axis
//!   (`vidgen_adapters::MultimodalInstruction`); text only when no instruction image is given.
//!   The unconditional instruction is the negative text's tokens joined, when an image is given,
//!   with the MLP of a **zero** image embedding (diffusers' convention for unconditional image
//!   embeddings). The pieces load from the folder's `image_encoder/`
//!   (`CLIPVisionModelWithProjection`), `feature_extractor/` (`CLIPImageProcessor`) and
//!   `instruction_mlp/` (`config.json` with `image_dim`, `text_dim`, `hidden_dim`; weights
//!   `mlp.fc1.*`, `mlp.fc2.*`), or are attached with [`VidiffPipeline::with_image_instruction`].
//! - **Dual guidance** (text scale, video scale): InstructPix2Pix's three-way batch
//!   `[instruction + video, uncond + video, uncond + zero video]`,
//!   `u + s_T·(t − v) + s_V·(v − u)`; on when `s_T > 1` and `s_V ≥ 1`.
//!
//! # Long videos: clip by clip with an overlap
//! What is implemented, exactly (the seed's iterative scheme):
//! 1. The video of `F` frames is cut by `vidgen_samplers::plan_clips(F, clip_frames, overlap)`:
//!    clips of `clip_frames` frames, each starting `clip_frames − overlap` after the previous
//!    one; the last clip is shifted back to stay `clip_frames` long (it then carries more than
//!    `overlap` frames). A video of at most `clip_frames` frames is one clip.
//! 2. Clip `k + 1`'s **source** frames are the source video's, except its first `carried`
//!    frames (`overlap`, more for a shifted last clip), which are replaced by the frames
//!    already **edited** for those positions (the last `carried` output frames of clip `k`, in
//!    `[0, 1]` f32, not rounded to u8); they are VAE-encoded like any source frame.
//! 3. Clip `k + 1`'s text instruction gets the paper's prefix naming the overlap:
//!    [`VidiffCall::overlap_prompt`] (default `"Based on the first {n} frames, {prompt}"`,
//!    `{n}` = carried frames); `None` keeps the prompt unchanged.
//! 4. Only the clip's new frames (after the carried ones) are emitted; the carried positions
//!    keep clip `k`'s output.
//! 5. Initial noise: slices of the caller's whole-video latents `[1, 4, F, h, w]` when given
//!    (so overlapped frames start from the noise they had in clip `k`), else drawn clip by clip
//!    under [`VidiffCall::noise_sharing`] (default `Constrained`: the same).
//!
//! Frames are pulled from a [`FrameSource`] and handed to a sink clip by clip
//! ([`VidiffPipeline::edit_streaming`]), so the working set is one source clip, one edited clip,
//! the previous edited clip and one clip's latents and activations, whatever the length.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;
use vidgen_adapters::{MultimodalInstruction, MultimodalInstructionConfig};
use vidgen_clip_encoders::{CLIPImageProcessor, CLIPVisionModelWithProjection, ImageU8};
use vidgen_diffusion_unet3d::sd::{
    AutoencoderKL, InflateConfig, UNet3DConditionModel, UNetMotionModel,
};
use vidgen_samplers::diffusers::SchedulerConfig;
use vidgen_samplers::{iterate_clips, plan_clips, Clip, ClipNoise, NoiseSharing};
use vidgen_video_core::{check_finite, Error, ModelDir, Result, VideoShape};

use crate::animatediff::report_dir;
use crate::denoise::{
    build_scheduler, check_pictures, encode_mode, load_scheduler, load_vae, to_unit_range,
    vae_factor, Denoise, DenoiseTrace, Guidance,
};
use crate::folder::{ComponentReport, PipelineFolder};
use crate::image::tensor_to_rgb;
use crate::prompt::PromptEncoder;
use crate::StepInfo;

/// Pipeline classes whose folders [`VidiffPipeline::from_pretrained`] reads.
pub const VIDIFF_CLASSES: &[&str] = &[
    "VidiffPipeline",
    "StableDiffusionInstructPix2PixPipeline",
    "StableDiffusionPipeline",
    "TextToVideoSDPipeline",
    "AnimateDiffPipeline",
];

/// Where the temporal layers of a 2-D `unet/` come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Temporal {
    /// New AnimateDiff-layout motion modules with a zero output projection (the video UNet
    /// starts equal to the 2-D UNet per frame); their parameters are in
    /// [`VidiffPipeline::temporal_params`] for training.
    New(InflateConfig),
    /// The motion modules of a diffusers `MotionAdapter` folder (AnimateDiff), as trained.
    Adapter(PathBuf),
    /// No temporal layers: the 2-D UNet edits each frame on its own.
    PerFrame,
}

impl Default for Temporal {
    fn default() -> Self {
        Temporal::New(InflateConfig::default())
    }
}

/// The video UNet.
#[derive(Debug, Clone)]
pub enum VidiffUNet {
    /// A per-frame SD UNet with motion modules (inflated, adapter or trained), or none.
    Motion(Box<UNetMotionModel>),
    /// A `UNet3DConditionModel` (ModelScope layout) checkpoint.
    UNet3D(Box<UNet3DConditionModel>),
}

impl VidiffUNet {
    /// The noise prediction.
    ///
    /// # Shapes
    /// `sample [B, C, T, h, w]`, `timestep [1]`, `context [B, S, D]` → `[B, 4, T, h, w]`.
    ///
    /// # Errors
    /// As the wrapped model's `forward`.
    pub fn forward(&self, sample: &Tensor, timestep: &Tensor, context: &Tensor) -> Result<Tensor> {
        match self {
            VidiffUNet::Motion(m) => m.forward(sample, timestep, context),
            VidiffUNet::UNet3D(m) => m.forward(sample, timestep, context),
        }
    }

    /// Input channels (noisy + source latents).
    pub fn in_channels(&self) -> usize {
        match self {
            VidiffUNet::Motion(m) => m.spec().in_channels,
            VidiffUNet::UNet3D(m) => m.config().in_channels,
        }
    }

    /// Context width.
    pub fn cross_attention_dim(&self) -> usize {
        match self {
            VidiffUNet::Motion(m) => m.spec().cross_attention_dim,
            VidiffUNet::UNet3D(m) => m.config().cross_attention_dim,
        }
    }

    /// The most frames one pass accepts (`None`: unbounded).
    pub fn max_frames(&self) -> Option<usize> {
        match self {
            VidiffUNet::Motion(m) => m.spec().motion.as_ref().map(|s| s.max_seq_length),
            VidiffUNet::UNet3D(_) => None,
        }
    }
}

/// The image half of the multimodal instruction: CLIP vision, its processor and the MLP.
pub struct ImageInstruction {
    /// CLIP vision tower with projection (`image_embeds`).
    pub image_encoder: CLIPVisionModelWithProjection,
    /// Its `CLIPImageProcessor`.
    pub processor: CLIPImageProcessor,
    /// The instruction MLP (`image_dim` = the projection width, `text_dim` = the context width).
    pub mlp: MultimodalInstruction,
}

/// An encoded instruction: the conditional and unconditional contexts.
#[derive(Debug, Clone)]
pub struct Instruction {
    /// `[1, S, D]`: text tokens, plus one image token when an instruction image was given.
    pub cond: Tensor,
    /// `[1, S, D]`: the negative text (and the MLP of a zero image embedding).
    pub uncond: Tensor,
}

/// How [`VidiffPipeline::from_pretrained`] builds the video UNet from a 2-D `unet/`.
#[derive(Debug, Clone, Default)]
pub struct VidiffLoad {
    /// The temporal layers.
    pub temporal: Temporal,
}

/// The arguments of an edit (defaults: InstructPix2Pix's for what the two share).
#[derive(Debug, Clone)]
pub struct VidiffCall {
    /// The text instruction (may be empty when an instruction image is given).
    pub prompt: String,
    /// The unconditional text (`None`: `""`).
    pub negative_prompt: Option<String>,
    /// The instruction image `[1, 3, H, W]` in `[0, 1]` (any size; the CLIP processor resizes
    /// it), e.g. a style reference.
    pub instruction_image: Option<Tensor>,
    /// Denoising steps per clip (100).
    pub num_inference_steps: usize,
    /// Text / instruction guidance (7.5).
    pub guidance_scale: f64,
    /// Source-video guidance (1.5).
    pub video_guidance_scale: f64,
    /// DDIM's η (0.0; ignored by other schedulers).
    pub eta: f64,
    /// Frames per clip (`None`: 16, at most the UNet's temporal positions).
    pub clip_frames: Option<usize>,
    /// Frames each clip shares with the previous one (2).
    pub overlap: usize,
    /// Instruction template of clips that carry edited frames: `{n}` becomes the number of
    /// carried frames, `{prompt}` the prompt (`None`: the prompt unchanged).
    pub overlap_prompt: Option<String>,
    /// Initial noise of clips when `latents` is not given (`Constrained`).
    pub noise_sharing: NoiseSharing,
    /// Frames decoded at a time (8; SD's VAE is per frame, so it only bounds memory).
    pub decode_chunk_size: usize,
    /// Initial latents of the whole video `[1, 4, F, h, w]` (unscaled noise), sliced per clip.
    pub latents: Option<Tensor>,
    /// Seed of the draws that are not given.
    pub seed: u64,
}

impl Default for VidiffCall {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: None,
            instruction_image: None,
            num_inference_steps: 100,
            guidance_scale: 7.5,
            video_guidance_scale: 1.5,
            eta: 0.0,
            clip_frames: None,
            overlap: 2,
            overlap_prompt: Some("Based on the first {n} frames, {prompt}".into()),
            noise_sharing: NoiseSharing::Constrained,
            decode_chunk_size: 8,
            latents: None,
            seed: 0,
        }
    }
}

/// What [`VidiffPipeline::edit`] returns.
#[derive(Debug, Clone)]
pub struct VidiffOutput {
    /// The edited video `[F, 3, H, W]` in `[0, 1]`.
    pub frames: Tensor,
    /// The clips it was edited in.
    pub clips: Vec<Clip>,
}

/// Where [`VidiffPipeline::edit_streaming`] reads source frames.
pub trait FrameSource {
    /// Frames in the video.
    fn num_frames(&self) -> usize;
    /// Frames `range` as `[n, 3, H, W]` in `[0, 1]`.
    ///
    /// # Errors
    /// Whatever reading them may fail with.
    fn frames(&mut self, range: Range<usize>) -> Result<Tensor>;
}

/// A video in memory, `[F, 3, H, W]` in `[0, 1]`.
impl FrameSource for Tensor {
    fn num_frames(&self) -> usize {
        self.dims().first().copied().unwrap_or(0)
    }

    fn frames(&mut self, range: Range<usize>) -> Result<Tensor> {
        Ok(self.narrow(0, range.start, range.len())?)
    }
}

/// VIDiff, loaded from a diffusers pipeline folder.
pub struct VidiffPipeline {
    /// `tokenizer/` and `text_encoder/`.
    pub prompt_encoder: PromptEncoder,
    /// The video UNet.
    pub unet: VidiffUNet,
    /// `vae/`.
    pub vae: AutoencoderKL,
    /// `scheduler/scheduler_config.json`.
    pub scheduler: SchedulerConfig,
    /// The image instruction encoder, when the folder has one (or one was attached).
    pub image_instruction: Option<ImageInstruction>,
    /// New temporal parameters ([`Temporal::New`]), keyed as a diffusers `MotionAdapter`.
    pub temporal_params: Option<VarMap>,
    /// What was loaded.
    pub report: Vec<ComponentReport>,
    /// The dtype the weights were loaded in.
    pub dtype: DType,
}

impl VidiffPipeline {
    /// Loads a folder whose class is one of [`VIDIFF_CLASSES`]: `text_encoder/`, `tokenizer/`,
    /// `vae/`, `scheduler/`, `unet/` (a 2-D `UNet2DConditionModel` inflated as `load` says, or
    /// a `UNetMotionModel` / `UNet3DConditionModel` with twice the latent channels), and, when
    /// present, `image_encoder/` + `feature_extractor/` + `instruction_mlp/`.
    ///
    /// # Errors
    /// Another pipeline class, missing components, a video UNet without the source channels,
    /// an instruction MLP whose widths do not fit, config or weight errors (named with their
    /// files).
    pub fn from_pretrained(
        folder: &PipelineFolder,
        load: &VidiffLoad,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        folder.expect_class(VIDIFF_CLASSES)?;
        let (prompt_encoder, mut report) = PromptEncoder::from_folder(folder, dtype, device)?;
        let (vae, rv) = load_vae(folder, dtype, device)?;
        let lc = vae.config().latent_channels;
        let (unet, temporal_params, ru) = load_unet(folder, load, 2 * lc, dtype, device)?;
        report.extend(ru);
        report.push(rv);
        let (scheduler, r) = load_scheduler(folder)?;
        report.push(r);
        if unet.in_channels() != 2 * lc {
            return Err(Error::invalid(
                "unet",
                format!(
                    "has {} input channels; VIDiff feeds {lc} noisy + {lc} source latent channels",
                    unet.in_channels()
                ),
            ));
        }
        if unet.cross_attention_dim() != prompt_encoder.width() {
            return Err(Error::invalid(
                "unet / text_encoder",
                format!(
                    "the UNet attends to width {}, the text encoder gives {}",
                    unet.cross_attention_dim(),
                    prompt_encoder.width()
                ),
            ));
        }
        let mut pipe = Self {
            prompt_encoder,
            unet,
            vae,
            scheduler,
            image_instruction: None,
            temporal_params,
            report,
            dtype,
        };
        let mlp_dir = folder.root().join("instruction_mlp");
        if mlp_dir.is_dir() {
            let (_, dir) = folder.component("image_encoder", &["CLIPVisionModelWithProjection"])?;
            let (image_encoder, load) =
                CLIPVisionModelWithProjection::from_pretrained(&dir, dtype, device)?;
            pipe.report
                .push(folder.report_for("image_encoder", dtype, load)?);
            let processor = CLIPImageProcessor::from_dir(folder.root().join("feature_extractor"))?;
            let md = ModelDir::open_variant(&mlp_dir, folder.variant())?;
            let cfg: MultimodalInstructionConfig = md.config()?;
            let (mlp, load) = md.load(dtype, device, |vb| MultimodalInstruction::new(&cfg, vb))?;
            pipe.report.push(report_dir(
                "instruction_mlp",
                "MultimodalInstruction",
                &mlp_dir,
                dtype,
                load,
            )?);
            pipe = pipe.with_image_instruction(ImageInstruction {
                image_encoder,
                processor,
                mlp,
            })?;
        }
        Ok(pipe)
    }

    /// Attaches (or replaces) the image instruction encoder.
    ///
    /// # Errors
    /// An MLP whose text width is not the context width.
    pub fn with_image_instruction(mut self, ii: ImageInstruction) -> Result<Self> {
        let d = self.unet.cross_attention_dim();
        let mlp_out = ii
            .mlp
            .embed_image(&Tensor::zeros(
                (1, 1, ii.image_encoder.config().projection_dim),
                self.dtype,
                self.prompt_encoder.text_encoder.text_model().device(),
            )?)
            .map_err(|e| Error::invalid("instruction_mlp", e.to_string()))?;
        if mlp_out.dims()[2] != d {
            return Err(Error::invalid(
                "instruction_mlp",
                format!(
                    "maps images to width {}, the UNet attends to width {d}",
                    mlp_out.dims()[2]
                ),
            ));
        }
        self.image_instruction = Some(ii);
        Ok(self)
    }

    /// The VAE's spatial factor (8 for SD).
    pub fn vae_scale_factor(&self) -> usize {
        vae_factor(&self.vae)
    }

    /// Frames per clip for `call` (its `clip_frames`, else 16, capped by the UNet).
    pub fn clip_frames(&self, call: &VidiffCall) -> usize {
        let k = call.clip_frames.unwrap_or(16);
        match (call.clip_frames, self.unet.max_frames()) {
            (None, Some(m)) => k.min(m),
            _ => k,
        }
    }

    /// Encodes the instruction: `prompt` (CLIP text) and, when given, `image` through CLIP
    /// vision and the MLP, appended as one token (see the module docs).
    ///
    /// # Shapes
    /// `image [1, 3, H, W]` in `[0, 1]` → [`Instruction`] `[1, S, D]` (`S = 77 (+ 1)`).
    ///
    /// # Errors
    /// An empty prompt without an image; an image without an image instruction encoder; a
    /// picture of another layout.
    pub fn encode_instruction(
        &self,
        prompt: &str,
        negative: Option<&str>,
        image: Option<&Tensor>,
    ) -> Result<Instruction> {
        if prompt.trim().is_empty() && image.is_none() {
            return Err(Error::invalid(
                "instruction",
                "the prompt is empty and no instruction image is given: VIDiff needs a text \
                 instruction, an instruction image, or both",
            ));
        }
        let (p, n) = self.prompt_encoder.encode_pair(prompt, negative)?;
        let Some(img) = image else {
            return Ok(Instruction { cond: p, uncond: n });
        };
        let ii = self.image_instruction.as_ref().ok_or_else(|| {
            Error::invalid(
                "instruction_image",
                "this pipeline has no image instruction encoder (image_encoder/ + \
                 instruction_mlp/); attach one with with_image_instruction",
            )
        })?;
        match img.dims() {
            &[1, 3, h, w] if h > 0 && w > 0 => {}
            d => {
                return Err(Error::invalid(
                    "instruction_image",
                    format!("expected [1, 3, H, W] in [0, 1], got shape {d:?}"),
                ))
            }
        }
        check_finite(img, "instruction_image")?;
        let (_, _, h, w) = img.dims4()?;
        let rgb = tensor_to_rgb(&img.to_dtype(DType::F32)?)?;
        let dev = self
            .prompt_encoder
            .text_encoder
            .text_model()
            .device()
            .clone();
        let pixels = ii
            .processor
            .preprocess(&[ImageU8::rgb(&rgb[0], h, w)], &dev)?
            .to_dtype(self.dtype)?;
        let embeds = ii
            .image_encoder
            .forward(&pixels)?
            .image_embeds
            .ok_or_else(|| Error::invalid("image_encoder", "returned no image_embeds"))?
            .unsqueeze(1)?; // [1, 1, P]
        let cond = ii.mlp.forward(&p, &embeds, None)?;
        let uncond = ii.mlp.forward(&n, &embeds.zeros_like()?, None)?;
        Ok(Instruction { cond, uncond })
    }

    /// Edits one clip (no overlap handling): the building block of [`VidiffPipeline::edit`].
    ///
    /// # Shapes
    /// `source [T, 3, H, W]` in `[0, 1]` (`H`, `W` multiples of the VAE factor), `latents
    /// [1, 4, T, h, w]` unscaled initial noise → `[T, 3, H, W]` in `[0, 1]`.
    ///
    /// # Errors
    /// A source of another layout or size, more frames than the UNet takes, latents of another
    /// shape, NaN on the way (named by step).
    pub fn edit_clip(
        &self,
        source: &Tensor,
        instruction: &Instruction,
        call: &VidiffCall,
        latents: &Tensor,
        on_step: &mut dyn FnMut(StepInfo),
        trace: Option<&mut DenoiseTrace>,
    ) -> Result<Tensor> {
        let dev = latents.device().clone();
        let dtype = self.dtype;
        let s = self.vae_scale_factor();
        let (t, height, width) = check_pictures(source, s, "source video")?;
        if let Some(m) = self.unet.max_frames() {
            if t > m {
                return Err(Error::invalid(
                    "clip_frames",
                    format!("{t} frames exceed the UNet's {m} temporal positions"),
                ));
            }
        }
        let lc = self.vae.config().latent_channels;
        let shape = [1, lc, t, height / s, width / s];
        if latents.dims() != shape {
            return Err(Error::shape("latents", &shape, latents.dims()));
        }
        let guidance = Guidance::instruct(call.guidance_scale, call.video_guidance_scale);

        // 1. Instruction contexts: [cond, uncond, uncond] with guidance.
        let ctx = match guidance {
            Guidance::Dual { .. } => Tensor::cat(
                &[&instruction.cond, &instruction.uncond, &instruction.uncond],
                0,
            )?,
            _ => instruction.cond.clone(),
        }
        .to_dtype(dtype)?;

        // 2. Source latents per frame (mode, unscaled) [1, 4, T, h, w]: [src, src, zeros].
        let mut parts = Vec::new();
        let chunk = call.decode_chunk_size.max(1);
        let mut s0 = 0;
        while s0 < t {
            let n = chunk.min(t - s0);
            parts.push(encode_mode(&self.vae, &source.narrow(0, s0, n)?, dtype)?);
            s0 += n;
        }
        let src = VideoShape::unfold(&Tensor::cat(&parts, 0)?, t)?;
        let src = match guidance {
            Guidance::Dual { .. } => Tensor::cat(&[&src, &src, &src.zeros_like()?], 0)?,
            _ => src,
        };

        // 3. Scheduler and initial latents.
        let sched = build_scheduler(&self.scheduler, call.eta, call.num_inference_steps)?;
        let latents = (latents.to_dtype(DType::F32)?.to_device(&dev)? * sched.init_noise_sigma())?;

        // 4. Denoising loop.
        let unet = |x: &Tensor, ts: &Tensor, c: &Tensor| self.unet.forward(x, ts, c);
        let latents = Denoise {
            guidance,
            ctx: &ctx,
            concat: Some(&src),
            step_noise: None,
            seed: call.seed,
            dtype,
            what: "VIDiff",
        }
        .run(sched.as_ref(), latents, &unet, on_step, trace)?;

        // 5. Decode frame by frame (`latents / scaling_factor`, as InstructPix2Pix).
        self.decode(&latents, chunk)
    }

    /// Decodes clip latents to frames in `[0, 1]`, `chunk` frames at a time.
    ///
    /// # Shapes
    /// `latents [1, 4, T, h, w]` → `[T, 3, h·s, w·s]`.
    ///
    /// # Errors
    /// A wrong latent shape, NaN in the output.
    pub fn decode(&self, latents: &Tensor, chunk: usize) -> Result<Tensor> {
        let sf = self.vae.config().scaling_factor;
        let (z, _) = VideoShape::fold(&(latents / sf)?.to_dtype(self.dtype)?)?; // [T, 4, h, w]
        let t = z.dim(0)?;
        let chunk = chunk.max(1);
        let mut parts = Vec::with_capacity(t.div_ceil(chunk));
        let mut s0 = 0;
        while s0 < t {
            let n = chunk.min(t - s0);
            parts.push(self.vae.decode_frames(&z.narrow(0, s0, n)?)?);
            s0 += n;
        }
        let x = Tensor::cat(&parts, 0)?;
        check_finite(&x, "VIDiff decoded frames")?;
        to_unit_range(&x)
    }

    /// Edits a whole video in memory, clip by clip (see the module docs).
    ///
    /// # Shapes
    /// `video [F, 3, H, W]` in `[0, 1]` → [`VidiffOutput`] `frames [F, 3, H, W]`.
    ///
    /// # Errors
    /// As [`VidiffPipeline::edit_streaming`].
    pub fn edit(
        &self,
        video: &Tensor,
        call: &VidiffCall,
        on_step: &mut dyn FnMut(StepInfo),
    ) -> Result<VidiffOutput> {
        let mut src = video.clone();
        let mut parts = Vec::new();
        let clips = self.edit_streaming(&mut src, call, on_step, &mut |_, f| {
            parts.push(f);
            Ok(())
        })?;
        Ok(VidiffOutput {
            frames: Tensor::cat(&parts, 0)?,
            clips,
        })
    }

    /// Edits a video of any length clip by clip, pulling source frames from `source` and
    /// handing each clip's new frames (`[n, 3, H, W]` in `[0, 1]`, in order) to `sink`. The
    /// step callback counts steps over all clips.
    ///
    /// # Errors
    /// An empty prompt without an instruction image, `overlap ≥ clip_frames`, zero clip
    /// frames or steps, an empty video, source frames of another layout or a size that is not
    /// a multiple of the VAE factor, whole-video latents of another shape; errors from the
    /// source or sink; NaN on the way.
    pub fn edit_streaming(
        &self,
        source: &mut dyn FrameSource,
        call: &VidiffCall,
        on_step: &mut dyn FnMut(StepInfo),
        sink: &mut dyn FnMut(&Clip, Tensor) -> Result<()>,
    ) -> Result<Vec<Clip>> {
        // Argument checks before any work.
        if call.prompt.trim().is_empty() && call.instruction_image.is_none() {
            return Err(Error::invalid(
                "instruction",
                "the prompt is empty and no instruction image is given: VIDiff needs a text \
                 instruction, an instruction image, or both",
            ));
        }
        let k = self.clip_frames(call);
        if k == 0 {
            return Err(Error::invalid("clip_frames", "must be at least 1"));
        }
        if call.overlap >= k {
            return Err(Error::invalid(
                "overlap",
                format!(
                    "{} overlapping frames must be fewer than the {k} frames of a clip",
                    call.overlap
                ),
            ));
        }
        if call.num_inference_steps == 0 {
            return Err(Error::invalid("num_inference_steps", "must be at least 1"));
        }
        let total = source.num_frames();
        if total == 0 {
            return Err(Error::invalid("video", "has no frames"));
        }
        let plan = plan_clips(total, k, call.overlap)?;
        let s = self.vae_scale_factor();
        let lc = self.vae.config().latent_channels;
        let dev = self
            .prompt_encoder
            .text_encoder
            .text_model()
            .device()
            .clone();
        if let Some(l) = &call.latents {
            let d = l.dims();
            if d.len() != 5 || d[0] != 1 || d[1] != lc || d[2] != total {
                return Err(Error::invalid(
                    "latents",
                    format!(
                        "expected whole-video latents [1, {lc}, {total}, h, w], got shape {d:?}"
                    ),
                ));
            }
        }

        let mut instructions: HashMap<usize, Instruction> = HashMap::new();
        let mut noise = ClipNoise::new(call.noise_sharing);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(call.seed);
        let steps = call.num_inference_steps;
        let n_clips = plan.len();
        let mut size: Option<(usize, usize)> = None;

        iterate_clips(
            total,
            k,
            call.overlap,
            // [n, 3, H, W] -> [1, 3, n, H, W]
            |r| {
                let f = source.frames(r.clone())?;
                let (n, _, h, w) = match f.dims() {
                    &[n, c, h, w] if c == 3 => (n, c, h, w),
                    d => {
                        return Err(Error::invalid(
                            "source video",
                            format!("expected frames [n, 3, H, W], got shape {d:?}"),
                        ))
                    }
                };
                if n != r.len() {
                    return Err(Error::shape("source frames", &[r.len()], &[n]));
                }
                match size {
                    None => size = Some((h, w)),
                    Some(hw) if hw != (h, w) => {
                        return Err(Error::invalid(
                            "source video",
                            format!("frames {r:?} are {h}×{w}, earlier ones {}×{}", hw.0, hw.1),
                        ))
                    }
                    _ => {}
                }
                Ok(f.permute((1, 0, 2, 3))?.unsqueeze(0)?)
            },
            |clip, cond| {
                let frames = cond.squeeze(0)?.permute((1, 0, 2, 3))?.contiguous()?;
                let (_, _, h, w) = frames.dims4()?;
                check_pictures(&frames, s, "source video")?;
                // The instruction, with the overlap prefix for clips carrying edited frames.
                let ins = match instructions.entry(clip.carried) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let text = match (&call.overlap_prompt, clip.carried) {
                            (Some(tpl), c) if c > 0 => tpl
                                .replace("{n}", &c.to_string())
                                .replace("{prompt}", &call.prompt),
                            _ => call.prompt.clone(),
                        };
                        e.insert(self.encode_instruction(
                            &text,
                            call.negative_prompt.as_deref(),
                            call.instruction_image.as_ref(),
                        )?)
                    }
                };
                // Initial noise of the clip.
                let lat = match &call.latents {
                    Some(l) => {
                        let (lh, lw) = (l.dims()[3], l.dims()[4]);
                        if (lh, lw) != (h / s, w / s) {
                            return Err(Error::shape(
                                "latents",
                                &[1, lc, total, h / s, w / s],
                                l.dims(),
                            ));
                        }
                        l.narrow(2, clip.start, clip.len)?
                    }
                    None => noise.next(
                        clip,
                        VideoShape::new(1, lc, clip.len, h / s, w / s)?,
                        &dev,
                        &mut rng,
                    )?,
                };
                let base = clip.index * steps;
                let mut per_clip = |st: StepInfo| {
                    on_step(StepInfo {
                        index: base + st.index,
                        total: n_clips * st.total,
                        timestep: st.timestep,
                    })
                };
                let clip_call = VidiffCall {
                    seed: call.seed.wrapping_add(clip.index as u64),
                    ..call.clone()
                };
                let out = self.edit_clip(&frames, ins, &clip_call, &lat, &mut per_clip, None)?;
                // [T, 3, H, W] -> [1, 3, T, H, W]
                Ok(out.permute((1, 0, 2, 3))?.unsqueeze(0)?)
            },
            |clip, new| sink(clip, new.squeeze(0)?.permute((1, 0, 2, 3))?.contiguous()?),
        )?;
        Ok(plan)
    }
}

/// Loads `unet/` as the video UNet (see [`Temporal`]); returns it, the new temporal
/// parameters (if any) and its report rows.
fn load_unet(
    folder: &PipelineFolder,
    load: &VidiffLoad,
    in_channels: usize,
    dtype: DType,
    device: &Device,
) -> Result<(VidiffUNet, Option<VarMap>, Vec<ComponentReport>)> {
    let (spec, dir) = folder.component(
        "unet",
        &[
            "UNet2DConditionModel",
            "UNetMotionModel",
            "UNet3DConditionModel",
        ],
    )?;
    match spec.class.as_str() {
        "UNet2DConditionModel" => match &load.temporal {
            Temporal::New(cfg) => {
                let cfg = InflateConfig {
                    in_channels: Some(cfg.in_channels.unwrap_or(0).max(in_channels)),
                    ..cfg.clone()
                };
                let (m, vm, report) = UNetMotionModel::inflate(&dir, &cfg, dtype, device)?;
                let m = detached_motion(&m, &vm, &dir, dtype, device)?;
                let params: usize = vm
                    .all_vars()
                    .iter()
                    .map(|v| v.as_tensor().elem_count())
                    .sum();
                let rows = vec![
                    folder.report_for("unet", dtype, report)?,
                    ComponentReport {
                        name: "unet (new temporal)".into(),
                        class: "motion modules, proj_out = 0".into(),
                        dtype: Some(dtype),
                        params,
                        load: None,
                    },
                ];
                Ok((VidiffUNet::Motion(Box::new(m)), Some(vm), rows))
            }
            Temporal::Adapter(a) => {
                let (m, report) = UNetMotionModel::load_widened(
                    &dir,
                    Some(a.as_path()),
                    in_channels,
                    dtype,
                    device,
                )?;
                let rows = vec![
                    folder.report_for("unet", dtype, report)?,
                    ComponentReport {
                        name: "motion_adapter".into(),
                        class: "MotionAdapter".into(),
                        dtype: Some(dtype),
                        params: ModelDir::open(a)?
                            .tensors()
                            .iter()
                            .map(|t| t.shape.iter().product::<usize>())
                            .sum(),
                        load: None,
                    },
                ];
                Ok((VidiffUNet::Motion(Box::new(m)), None, rows))
            }
            Temporal::PerFrame => {
                let (m, report) =
                    UNetMotionModel::load_widened(&dir, None, in_channels, dtype, device)?;
                Ok((
                    VidiffUNet::Motion(Box::new(m)),
                    None,
                    vec![folder.report_for("unet", dtype, report)?],
                ))
            }
        },
        "UNetMotionModel" => {
            let (m, report) = UNetMotionModel::from_pretrained(&dir, dtype, device)?;
            if m.spec().in_channels < in_channels {
                return Err(Error::invalid(
                    "unet",
                    format!(
                        "this UNetMotionModel takes {} input channels, VIDiff {in_channels}: \
                         load the 2-D unet/ with its motion adapter (Temporal::Adapter) to widen \
                         conv_in",
                        m.spec().in_channels
                    ),
                ));
            }
            Ok((
                VidiffUNet::Motion(Box::new(m)),
                None,
                vec![folder.report_for("unet", dtype, report)?],
            ))
        }
        _ => {
            let (m, report) = UNet3DConditionModel::load_widened(&dir, in_channels, dtype, device)?;
            Ok((
                VidiffUNet::UNet3D(Box::new(m)),
                None,
                vec![folder.report_for("unet", dtype, report)?],
            ))
        }
    }
}

/// The inflated UNet rebuilt on the same weights without autograd: the checkpoint's tensors,
/// and the new temporal parameters **detached** from `vm`'s variables (same storage, so updates
/// through `vm`'s `Var::set` still show). A forward on `Var`s records its whole graph in the
/// output, and the pipeline's outputs feed the next step and the next clip, so every
/// activation of every step would stay alive: memory would grow with the video's length.
fn detached_motion(
    m: &UNetMotionModel,
    vm: &VarMap,
    dir: &std::path::Path,
    dtype: DType,
    device: &Device,
) -> Result<UNetMotionModel> {
    let detached: HashMap<String, Tensor> = vm
        .data()
        .lock()
        .map_err(|_| Error::invalid("temporal parameters", "lock poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let (vb, _) = ModelDir::open(dir)?.var_builder(dtype, device);
    UNetMotionModel::new(
        m.spec(),
        vb,
        candle_nn::VarBuilder::from_tensors(detached, dtype, device),
    )
}
