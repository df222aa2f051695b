//! `vidgen animate`: AnimateDiff text-to-video from a diffusers pipeline folder.

use std::path::PathBuf;

use vidgen_pipelines::{AnimateDiffCall, AnimateDiffPipeline, PipelineFolder};
use vidgen_video_core::{Error, Result};

use super::{device, frames_to_video, step_bar, write_output, Common, Timings};

/// Arguments of `vidgen animate` (defaults as diffusers' `AnimateDiffPipeline`).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// An `AnimateDiffPipeline` folder (its `unet/` a `UNetMotionModel`, or a 2-D UNet with
    /// `motion_adapter/`), or a Stable Diffusion folder together with `--motion-adapter`.
    #[arg(long)]
    pub model: PathBuf,
    /// A `MotionAdapter` folder to combine with the folder's 2-D `unet/`.
    #[arg(long)]
    pub motion_adapter: Option<PathBuf>,
    /// Weight variant (`fp16` loads `*.fp16.safetensors`).
    #[arg(long)]
    pub variant: Option<String>,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// What to steer away from (default: the empty prompt).
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Frames to generate.
    #[arg(long, default_value_t = 16)]
    pub frames: usize,
    /// Height in pixels (default: the UNet's sample_size × the VAE factor).
    #[arg(long)]
    pub height: Option<usize>,
    /// Width in pixels (default: as the height default).
    #[arg(long)]
    pub width: Option<usize>,
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// DDIM's eta (ignored by other schedulers).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Frames decoded at a time.
    #[arg(long, default_value_t = 16)]
    pub decode_chunk_size: usize,
    #[command(flatten)]
    /// Shared flags.
    pub common: Common,
}

/// Runs the subcommand; returns the `--json` report.
///
/// # Errors
/// Unreadable model folder (named), invalid arguments (named), I/O errors.
pub fn run(a: &Args) -> Result<serde_json::Value> {
    let dev = device();
    let mut t = Timings::start();
    let folder = PipelineFolder::open_variant(&a.model, a.variant.as_deref())?;
    let dtype = a.common.dtype.dtype();
    let pipe = match &a.motion_adapter {
        Some(ad) => AnimateDiffPipeline::from_parts(&folder, ad, dtype, &dev)?,
        None => AnimateDiffPipeline::from_pretrained(&folder, dtype, &dev)?,
    };
    t.mark("load");
    let call = AnimateDiffCall {
        prompt: a.prompt.clone(),
        negative_prompt: a.negative_prompt.clone(),
        num_frames: a.frames,
        height: a.height,
        width: a.width,
        num_inference_steps: a.steps,
        guidance_scale: a.guidance,
        eta: a.eta,
        decode_chunk_size: a.decode_chunk_size,
        latents: None,
        step_noise: None,
        seed: a.common.seed,
    };
    let bar = step_bar(a.steps, "animate", a.common.json);
    let out = pipe.call(&call, &mut |s| {
        bar.set_length(s.total as u64);
        bar.set_position((s.index + 1) as u64)
    })?;
    bar.finish_and_clear();
    t.mark("generate");
    let frames = out.frames.get(0)?; // [F, 3, H, W]
    let (_, _, h, w) = frames.dims4()?;
    let video = frames_to_video(&frames, a.common.out_fps)?;
    write_output(&a.common.out, &video)?;
    t.mark("write");
    let components: Vec<String> = pipe.report.iter().map(|r| r.to_string()).collect();
    serde_json::to_value(serde_json::json!({
        "command": "animate",
        "model": a.model,
        "motion_adapter": a.motion_adapter,
        "prompt": a.prompt,
        "out": a.common.out,
        "frames": video.len(),
        "size": [h, w],
        "steps": a.steps,
        "guidance_scale": a.guidance,
        "seed": a.common.seed,
        "components": components,
        "timings_s": t.phases,
    }))
    .map_err(|e| Error::invalid("json report", e.to_string()))
}
