//! `vidgen edit`: VIDiff instruction-driven video editing, any length, clip by clip with an
//! overlap (see `vidgen_pipelines::vidiff`).

use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use vidgen_pipelines::vidiff::{FrameSource, Temporal, VidiffLoad};
use vidgen_pipelines::{PipelineFolder, VidiffCall, VidiffPipeline};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::{Frame, Video};

use super::{device, read_image, step_bar, write_output, Common, Timings};

/// Arguments of `vidgen edit`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A pipeline folder: an InstructPix2Pix (or any Stable Diffusion) folder whose 2-D `unet/`
    /// is inflated to video, or a trained VIDiff folder (`unet/` a `UNetMotionModel` /
    /// `UNet3DConditionModel` with 8 input channels; `image_encoder/`, `feature_extractor/`,
    /// `instruction_mlp/` for image instructions).
    #[arg(long)]
    pub model: PathBuf,
    /// Weight variant (`fp16` loads `*.fp16.safetensors`).
    #[arg(long)]
    pub variant: Option<String>,
    /// The source video: `.mp4` / `.mkv` / `.webm` / `.mov` / `.avi` (needs the `ffmpeg`
    /// feature), `.gif`, or a folder of PNG frames; sides multiples of the VAE factor.
    #[arg(long)]
    pub video: PathBuf,
    /// Use only the first N frames of the source.
    #[arg(long)]
    pub max_frames: Option<usize>,
    /// The text instruction (may be empty with `--instruction-image`).
    #[arg(long, default_value = "")]
    pub instruction: String,
    /// An image instruction (PNG or GIF), e.g. a style reference.
    #[arg(long)]
    pub instruction_image: Option<PathBuf>,
    /// What to steer away from (default: the empty prompt).
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Frames per clip (default 16, at most the UNet's temporal positions).
    #[arg(long)]
    pub clip_frames: Option<usize>,
    /// Frames each clip shares with the previous one (the already edited ones).
    #[arg(long, default_value_t = 2)]
    pub overlap: usize,
    /// Do not prefix the instruction of later clips with "Based on the first n frames, ".
    #[arg(long)]
    pub no_overlap_prefix: bool,
    /// Temporal layers of a 2-D `unet/` from this AnimateDiff `MotionAdapter` folder (default:
    /// new zero-output layers).
    #[arg(long, conflicts_with = "per_frame")]
    pub motion_adapter: Option<PathBuf>,
    /// No temporal layers: edit each frame on its own (InstructPix2Pix per frame).
    #[arg(long)]
    pub per_frame: bool,
    /// Denoising steps per clip.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Text / instruction guidance scale.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// Source-video guidance scale.
    #[arg(long, default_value_t = 1.5)]
    pub video_guidance: f64,
    #[command(flatten)]
    /// Shared flags.
    pub common: Common,
}

/// Reads a source video: a GIF, a folder of PNG frames, or (with the `ffmpeg` feature) any
/// container FFmpeg decodes.
///
/// # Errors
/// An unreadable file (named); mp4 without the `ffmpeg` feature.
pub fn read_video(path: &Path, max_frames: Option<usize>) -> Result<Video> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let v = if path.is_dir() {
        vidgen_video_io::read_png_folder(path, 8.0)?
    } else if ext == "gif" {
        vidgen_video_io::read_gif(path)?
    } else {
        return vidgen_video_io::read_video(path, max_frames);
    };
    match max_frames {
        Some(n) if n < v.len() => v.slice(0, n.max(1)),
        _ => Ok(v),
    }
}

/// Frames of a decoded video, turned into tensors only when the pipeline asks for them.
struct VideoFrames<'a> {
    video: &'a Video,
    device: Device,
}

impl FrameSource for VideoFrames<'_> {
    fn num_frames(&self) -> usize {
        self.video.len()
    }

    fn frames(&mut self, range: Range<usize>) -> Result<Tensor> {
        let frames =
            self.video.frames().get(range.clone()).ok_or_else(|| {
                Error::invalid("video", format!("frames {range:?} are past its end"))
            })?;
        let ts = frames
            .iter()
            .map(|f| {
                vidgen_pipelines::rgb_to_tensor(
                    f.data(),
                    f.height() as usize,
                    f.width() as usize,
                    &self.device,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&ts, 0)?)
    }
}

/// Runs the subcommand; returns the `--json` report.
///
/// # Errors
/// Unreadable model folder, video or image (named), invalid arguments (named), I/O errors.
pub fn run(a: &Args) -> Result<serde_json::Value> {
    let dev = device();
    let mut t = Timings::start();
    let folder = PipelineFolder::open_variant(&a.model, a.variant.as_deref())?;
    let temporal = match (&a.motion_adapter, a.per_frame) {
        (Some(ad), _) => Temporal::Adapter(ad.clone()),
        (None, true) => Temporal::PerFrame,
        (None, false) => Temporal::default(),
    };
    let pipe = VidiffPipeline::from_pretrained(
        &folder,
        &VidiffLoad { temporal },
        a.common.dtype.dtype(),
        &dev,
    )?;
    t.mark("load");
    let video = read_video(&a.video, a.max_frames)?;
    let instruction_image = match &a.instruction_image {
        Some(p) => Some(read_image(p, &dev)?),
        None => None,
    };
    t.mark("read");
    let mut call = VidiffCall {
        prompt: a.instruction.clone(),
        negative_prompt: a.negative_prompt.clone(),
        instruction_image,
        num_inference_steps: a.steps,
        guidance_scale: a.guidance,
        video_guidance_scale: a.video_guidance,
        clip_frames: a.clip_frames,
        overlap: a.overlap,
        seed: a.common.seed,
        ..VidiffCall::default()
    };
    if a.no_overlap_prefix {
        call.overlap_prompt = None;
    }
    let bar = step_bar(a.steps, "edit", a.common.json);
    let mut src = VideoFrames {
        video: &video,
        device: dev.clone(),
    };
    let mut out_frames: Vec<Frame> = Vec::with_capacity(video.len());
    let clips = pipe.edit_streaming(
        &mut src,
        &call,
        &mut |s| {
            bar.set_length(s.total as u64);
            bar.set_position((s.index + 1) as u64)
        },
        &mut |_, frames| {
            let (_, _, h, w) = frames.dims4()?;
            for rgb in vidgen_pipelines::tensor_to_rgb(&frames)? {
                out_frames.push(Frame::new(w as u32, h as u32, rgb)?);
            }
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    t.mark("edit");
    let edited = Video::new(out_frames, a.common.out_fps)?;
    write_output(&a.common.out, &edited)?;
    t.mark("write");
    let components: Vec<String> = pipe.report.iter().map(|r| r.to_string()).collect();
    let clip_list: Vec<[usize; 3]> = clips.iter().map(|c| [c.start, c.len, c.carried]).collect();
    serde_json::to_value(serde_json::json!({
        "command": "edit",
        "model": a.model,
        "video": a.video,
        "instruction": a.instruction,
        "instruction_image": a.instruction_image,
        "out": a.common.out,
        "frames": edited.len(),
        "size": [edited.height(), edited.width()],
        "clips_start_len_carried": clip_list,
        "steps": a.steps,
        "guidance_scale": a.guidance,
        "video_guidance_scale": a.video_guidance,
        "seed": a.common.seed,
        "components": components,
        "timings_s": t.phases,
    }))
    .map_err(|e| Error::invalid("json report", e.to_string()))
}
