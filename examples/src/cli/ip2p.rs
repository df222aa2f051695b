//! `vidgen ip2p`: InstructPix2Pix image editing from a diffusers pipeline folder.

use std::path::PathBuf;

use vidgen_pipelines::{InstructPix2PixPipeline, Ip2pCall, PipelineFolder};
use vidgen_video_core::{Error, Result};

use super::{device, frames_to_video, read_image, step_bar, write_output, Common, Timings};

/// Arguments of `vidgen ip2p` (defaults as diffusers' `StableDiffusionInstructPix2PixPipeline`).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A `StableDiffusionInstructPix2PixPipeline` folder (`model_index.json`, `unet/`, `vae/`,
    /// `text_encoder/`, `tokenizer/`, `scheduler/`).
    #[arg(long)]
    pub model: PathBuf,
    /// Weight variant (`fp16` loads `*.fp16.safetensors`).
    #[arg(long)]
    pub variant: Option<String>,
    /// The picture to edit (PNG or GIF), its sides multiples of the VAE factor (8 for SD).
    #[arg(long)]
    pub image: PathBuf,
    /// The edit instruction.
    #[arg(long)]
    pub prompt: String,
    /// What to steer away from (default: the empty prompt).
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Denoising steps.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Text guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// Image guidance scale.
    #[arg(long, default_value_t = 1.5)]
    pub image_guidance: f64,
    /// DDIM's eta (ignored by other schedulers).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    #[command(flatten)]
    /// Shared flags (`--out` a `.png`, `.gif` or a folder).
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
    let pipe = InstructPix2PixPipeline::from_pretrained(&folder, a.common.dtype.dtype(), &dev)?;
    t.mark("load");
    let image = read_image(&a.image, &dev)?;
    let (_, _, h, w) = image.dims4()?;
    let call = Ip2pCall {
        prompt: a.prompt.clone(),
        negative_prompt: a.negative_prompt.clone(),
        num_inference_steps: a.steps,
        guidance_scale: a.guidance,
        image_guidance_scale: a.image_guidance,
        eta: a.eta,
        latents: None,
        step_noise: None,
        seed: a.common.seed,
    };
    let bar = step_bar(a.steps, "ip2p", a.common.json);
    let out = pipe.call(&image, &call, &mut |s| {
        bar.set_length(s.total as u64);
        bar.set_position((s.index + 1) as u64)
    })?;
    bar.finish_and_clear();
    t.mark("generate");
    let video = frames_to_video(&out.image, a.common.out_fps)?;
    write_picture_or_video(&a.common.out, &video)?;
    t.mark("write");
    let components: Vec<String> = pipe.report.iter().map(|r| r.to_string()).collect();
    serde_json::to_value(serde_json::json!({
        "command": "ip2p",
        "model": a.model,
        "image": a.image,
        "prompt": a.prompt,
        "out": a.common.out,
        "size": [h, w],
        "steps": a.steps,
        "guidance_scale": a.guidance,
        "image_guidance_scale": a.image_guidance,
        "seed": a.common.seed,
        "components": components,
        "timings_s": t.phases,
    }))
    .map_err(|e| Error::invalid("json report", e.to_string()))
}

/// A `.png` path gets the first frame as a picture; anything else as [`write_output`].
///
/// # Errors
/// As [`write_output`]; an unwritable PNG.
pub fn write_picture_or_video(out: &std::path::Path, video: &vidgen_video_io::Video) -> Result<()> {
    let is_png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        let first = video.frames().first().ok_or_else(|| {
            Error::invalid(format!("--out {}", out.display()), "nothing to write")
        })?;
        return vidgen_video_io::write_png(out, first);
    }
    write_output(out, video)
}
