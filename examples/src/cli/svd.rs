//! `vidgen svd`: Stable Video Diffusion image-to-video from a diffusers pipeline folder.

use std::path::PathBuf;

use vidgen_pipelines::{DecodeMode, PipelineFolder, SvdCall, SvdPipeline};
use vidgen_video_core::{Error, Result};

use super::{device, frames_to_video, read_image, step_bar, write_output, Common, Timings};

/// Arguments of `vidgen svd` (defaults as diffusers' `StableVideoDiffusionPipeline`).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A `StableVideoDiffusionPipeline` folder (`model_index.json`, `unet/`, `vae/`,
    /// `image_encoder/`, `scheduler/`, `feature_extractor/`).
    #[arg(long)]
    pub model: PathBuf,
    /// Weight variant (`fp16` loads `*.fp16.safetensors`).
    #[arg(long)]
    pub variant: Option<String>,
    /// The conditioning picture (PNG or GIF), at the output size.
    #[arg(long)]
    pub image: PathBuf,
    /// Frames to generate (default: the UNet's `num_frames`).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Denoising steps.
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    /// Guidance at the first frame.
    #[arg(long, default_value_t = 1.0)]
    pub min_guidance: f64,
    /// Guidance at the last frame.
    #[arg(long, default_value_t = 3.0)]
    pub max_guidance: f64,
    /// Frames per second the model is conditioned on.
    #[arg(long, default_value_t = 7)]
    pub fps: usize,
    /// Motion bucket id.
    #[arg(long, default_value_t = 127)]
    pub motion_bucket_id: usize,
    /// Noise added to the conditioning image.
    #[arg(long, default_value_t = 0.02)]
    pub noise_aug_strength: f64,
    /// Frames decoded at a time (diffusers' chunked decode; default: all at once).
    #[arg(long)]
    pub decode_chunk_size: Option<usize>,
    /// Decode `--decode-chunk-size` frames at a time with the single pass's result (the
    /// temporal layers see the whole clip's statistics and neighbours; diffusers' chunking
    /// changes the video). Lower peak memory than one pass.
    #[arg(long)]
    pub exact_decode: bool,
    #[command(flatten)]
    /// Shared flags.
    pub common: Common,
}

/// Runs the subcommand; returns the `--json` report.
///
/// # Errors
/// Unreadable model folder or image (named), invalid arguments (named), I/O errors.
pub fn run(a: &Args) -> Result<serde_json::Value> {
    let dev = device();
    let mut t = Timings::start();
    let folder = PipelineFolder::open_variant(&a.model, a.variant.as_deref())?;
    let pipe = SvdPipeline::from_pretrained(&folder, a.common.dtype.dtype(), &dev)?;
    t.mark("load");
    let image = read_image(&a.image, &dev)?;
    let (_, _, h, w) = image.dims4()?;
    let call = SvdCall {
        height: Some(h),
        width: Some(w),
        num_frames: a.frames,
        num_inference_steps: a.steps,
        min_guidance_scale: a.min_guidance,
        max_guidance_scale: a.max_guidance,
        fps: a.fps,
        motion_bucket_id: a.motion_bucket_id,
        noise_aug_strength: a.noise_aug_strength,
        decode_chunk_size: a.decode_chunk_size,
        decode_mode: if a.exact_decode {
            DecodeMode::Exact
        } else {
            DecodeMode::Chunked
        },
        latents: None,
        aug_noise: None,
        seed: a.common.seed,
    };
    let bar = step_bar(a.steps, "svd", a.common.json);
    let out = pipe.call(&image, &call, &mut |s| {
        bar.set_position((s.index + 1) as u64)
    })?;
    bar.finish_and_clear();
    t.mark("generate");
    let frames = out.frames.get(0)?;
    let video = frames_to_video(&frames, a.common.out_fps)?;
    write_output(&a.common.out, &video)?;
    t.mark("write");
    let components: Vec<String> = pipe.report.iter().map(|r| r.to_string()).collect();
    serde_json::to_value(serde_json::json!({
        "command": "svd",
        "model": a.model,
        "image": a.image,
        "out": a.common.out,
        "frames": video.len(),
        "size": [h, w],
        "steps": a.steps,
        "seed": a.common.seed,
        "components": components,
        "timings_s": t.phases,
    }))
    .map_err(|e| Error::invalid("json report", e.to_string()))
}
