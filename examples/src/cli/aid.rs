//! `vidgen aid`: AID instruction-guided video prediction (K frames + an instruction → N
//! frames) on an SVD pipeline folder with AID's weights file.

use std::path::PathBuf;

use candle_core::Tensor;
use vidgen_pipelines::{AidCall, AidPipeline, PipelineFolder, TextEncoderSource};
use vidgen_video_core::{Error, Result};

use super::{device, frames_to_video, read_image, step_bar, write_output, Common, Timings};

/// Arguments of `vidgen aid`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The SVD pipeline folder (`StableVideoDiffusionPipeline`).
    #[arg(long)]
    pub model: PathBuf,
    /// AID's weights (adapters + DQFormer), as `AidWeights::save` writes them.
    #[arg(long)]
    pub adapters: PathBuf,
    /// A folder with the CLIP `text_encoder/` and `tokenizer/` (default: `--model`).
    #[arg(long)]
    pub text_encoder: Option<PathBuf>,
    /// Weight variant of the SVD folder (`fp16`).
    #[arg(long)]
    pub variant: Option<String>,
    /// The conditioning frames, in order (PNG or GIF), all of one size.
    #[arg(long, num_args = 1.., required = true)]
    pub frames: Vec<PathBuf>,
    /// Plan the stages with this instruct LLM (a GGUF, e.g. SmolLM2-135M-Instruct) instead of
    /// the template planner.
    #[arg(long)]
    pub planner_gguf: Option<PathBuf>,
    /// The instruction ("move left"); without it the text branch is off.
    #[arg(long)]
    pub instruction: Option<String>,
    /// Frames to predict in all, the conditioning frames included (default: AID's N).
    #[arg(long)]
    pub num_frames: Option<usize>,
    /// Denoising steps.
    #[arg(long, default_value_t = 25)]
    pub steps: usize,
    /// Frame guidance at the first frame.
    #[arg(long, default_value_t = 1.0)]
    pub min_guidance: f64,
    /// Frame guidance at the last frame (s_V).
    #[arg(long, default_value_t = 3.0)]
    pub max_guidance: f64,
    /// Text guidance (s_T; 0 turns the text branch off).
    #[arg(long, default_value_t = 7.5)]
    pub text_guidance: f64,
    /// Frames per second the base is conditioned on.
    #[arg(long, default_value_t = 7)]
    pub fps: usize,
    /// Motion bucket id.
    #[arg(long, default_value_t = 127)]
    pub motion_bucket_id: usize,
    /// Noise added to the conditioning frames.
    #[arg(long, default_value_t = 0.02)]
    pub noise_aug_strength: f64,
    #[command(flatten)]
    /// Shared flags.
    pub common: Common,
}

/// Runs the subcommand; returns the `--json` report.
///
/// # Errors
/// Unreadable folders, weights or frames (named), frames of different sizes, invalid
/// arguments (named).
pub fn run(a: &Args) -> Result<serde_json::Value> {
    let dev = device();
    let mut t = Timings::start();
    let folder = PipelineFolder::open_variant(&a.model, a.variant.as_deref())?;
    let text = TextEncoderSource {
        dir: a.text_encoder.clone().unwrap_or_else(|| a.model.clone()),
    };
    let pipe =
        AidPipeline::from_pretrained(&folder, &text, &a.adapters, a.common.dtype.dtype(), &dev)?;
    t.mark("load");
    let imgs = a
        .frames
        .iter()
        .map(|p| read_image(p, &dev))
        .collect::<Result<Vec<_>>>()?;
    let d0 = imgs[0].dims().to_vec();
    if let Some((p, img)) = a
        .frames
        .iter()
        .zip(&imgs)
        .find(|(_, i)| i.dims() != d0.as_slice())
    {
        return Err(Error::invalid(
            format!("--frames {}", p.display()),
            format!(
                "size {:?} differs from the first frame's {:?}",
                img.dims(),
                d0
            ),
        ));
    }
    let frames = Tensor::stack(&imgs, 1)?; // K × [1, 3, H, W] -> [1, K, 3, H, W]
    let call = AidCall {
        instruction: a.instruction.clone(),
        num_frames: a.num_frames,
        num_inference_steps: a.steps,
        min_guidance_scale: a.min_guidance,
        max_guidance_scale: a.max_guidance,
        text_guidance_scale: a.text_guidance,
        fps: a.fps,
        motion_bucket_id: a.motion_bucket_id,
        noise_aug_strength: a.noise_aug_strength,
        seed: a.common.seed,
        ..AidCall::default()
    };
    let bar = step_bar(a.steps, "aid", a.common.json);
    let out = pipe.call(&frames, &call, &mut |s| {
        bar.set_position((s.index + 1) as u64)
    })?;
    bar.finish_and_clear();
    t.mark("generate");
    let video = frames_to_video(&out.frames.get(0)?, a.common.out_fps)?;
    write_output(&a.common.out, &video)?;
    t.mark("write");
    let components: Vec<String> = pipe.report.iter().map(|r| r.to_string()).collect();
    Ok(serde_json::json!({
        "command": "aid",
        "model": a.model,
        "adapters": a.adapters,
        "conditioning_frames": a.frames.len(),
        "instruction": a.instruction,
        "stages": out.stages,
        "out": a.common.out,
        "frames": video.len(),
        "steps": a.steps,
        "seed": a.common.seed,
        "components": components,
        "timings_s": t.phases,
    }))
}
