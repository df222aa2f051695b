//! The `vidgen` command line: one module per subcommand (`Args` parsed by clap, `run`), and
//! what they share: device / dtype flags, reading pictures and videos, writing GIF / PNG / mp4,
//! a progress bar on the pipelines' step callback, `--json` reports. Errors reach `main` as one
//! readable line naming the file or flag.

pub mod aid;
pub mod demo;
// The AID and VIDiff miniatures (issue 31).
pub mod aid_mini;
pub mod svd;
// InstructPix2Pix, VIDiff, AnimateDiff (issue 28).
pub mod animate;
pub mod edit;
pub mod edit_mini;
pub mod ip2p;
// Training (issue 29).
pub mod train;
// Vid-ICL (issue 33).
pub mod icl;
// VIMI (issue 32).
pub mod lavit;
pub mod vimi;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::{Frame, Video};

/// Weight dtype flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DTypeArg {
    /// 32-bit floats (the reference's default).
    F32,
    /// 16-bit floats (weights; accumulation stays f32).
    F16,
    /// bfloat16 (weights; accumulation stays f32).
    Bf16,
}

impl DTypeArg {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            DTypeArg::F32 => DType::F32,
            DTypeArg::F16 => DType::F16,
            DTypeArg::Bf16 => DType::BF16,
        }
    }
}

/// Flags every generating subcommand shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Where to write the result: a `.gif`, a `.mp4` (needs the `ffmpeg` feature) or a folder
    /// (PNG frames).
    #[arg(long, short, default_value = "out.gif")]
    pub out: PathBuf,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weight dtype.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// Frames per second of the written video.
    #[arg(long, default_value_t = 7.0)]
    pub out_fps: f64,
    /// Print what was run and its timings as one JSON object (no progress bars).
    #[arg(long)]
    pub json: bool,
}

/// The compute device (CPU; CUDA builds select it with `--device` in a later release).
pub fn device() -> Device {
    Device::Cpu
}

/// Reads a PNG / GIF (first frame) / JPEG-less picture as `[1, 3, H, W]` in `[0, 1]`.
///
/// # Errors
/// An unreadable file or an unsupported format, naming the path.
pub fn read_image(path: &Path, dev: &Device) -> Result<Tensor> {
    let frame = match ext(path).as_str() {
        "png" => vidgen_video_io::read_png(path)?,
        "gif" => vidgen_video_io::read_gif(path)?
            .into_frames()
            .into_iter()
            .next()
            .ok_or_else(|| Error::Malformed {
                path: path.to_path_buf(),
                reason: "the GIF has no frames".into(),
            })?,
        other => {
            return Err(Error::Unsupported {
                field: path.display().to_string(),
                value: format!(".{other}"),
                supported: ".png, .gif".into(),
            })
        }
    };
    vidgen_pipelines::rgb_to_tensor(
        frame.data(),
        frame.height() as usize,
        frame.width() as usize,
        dev,
    )
}

/// Frames `[F, 3, H, W]` in `[0, 1]` as a video-io [`Video`].
///
/// # Errors
/// A tensor of another layout.
pub fn frames_to_video(frames: &Tensor, fps: f64) -> Result<Video> {
    let (_, _, h, w) = frames.dims4()?;
    let rgb = vidgen_pipelines::tensor_to_rgb(frames)?;
    let frames = rgb
        .into_iter()
        .map(|d| Frame::new(w as u32, h as u32, d))
        .collect::<Result<Vec<_>>>()?;
    Video::new(frames, fps)
}

/// A still picture: a PNG, or a GIF's first frame.
///
/// # Errors
/// An unreadable file (named); another extension.
pub fn read_picture(p: &Path) -> Result<vidgen_video_io::Frame> {
    let ext = ext(p);
    match ext.as_str() {
        "png" => vidgen_video_io::read_png(p),
        "gif" => vidgen_video_io::read_gif(p)?
            .into_frames()
            .into_iter()
            .next()
            .ok_or_else(|| Error::Malformed {
                path: p.to_path_buf(),
                reason: "the GIF has no frames".into(),
            }),
        other => Err(Error::Unsupported {
            field: p.display().to_string(),
            value: format!(".{other}"),
            supported: ".png, .gif".into(),
        }),
    }
}

/// Writes `video` to `out`: GIF, mp4 (with FFmpeg) or a folder of PNG frames.
///
/// # Errors
/// An unsupported extension, an unwritable path, mp4 without the `ffmpeg` feature.
pub fn write_output(out: &Path, video: &Video) -> Result<()> {
    match ext(out).as_str() {
        "gif" => vidgen_video_io::write_gif(out, video),
        "mp4" | "mkv" | "webm" | "mov" | "avi" => {
            vidgen_video_io::write_video(out, video, &vidgen_video_io::EncodeOptions::default())
                .map(|_| ())
        }
        "" => {
            std::fs::create_dir_all(out).map_err(|source| Error::Io {
                path: out.to_path_buf(),
                source,
            })?;
            vidgen_video_io::write_png_folder(out, video).map(|_| ())
        }
        other => Err(Error::Unsupported {
            field: format!("--out {}", out.display()),
            value: format!(".{other}"),
            supported: ".gif, .mp4 (ffmpeg feature), or a folder for PNG frames".into(),
        }),
    }
}

fn ext(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// A progress bar over `n` denoising steps (hidden with `--json`).
pub fn step_bar(n: usize, what: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(n as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Wall-clock timings of a run's phases, in seconds.
#[derive(Debug, Default, serde::Serialize)]
pub struct Timings {
    /// Each phase and its seconds, in order.
    pub phases: Vec<(String, f64)>,
    #[serde(skip)]
    last: Option<Instant>,
}

impl Timings {
    /// Starts the clock.
    pub fn start() -> Self {
        Self {
            phases: Vec::new(),
            last: Some(Instant::now()),
        }
    }

    /// Records the time since the last mark as `phase`.
    pub fn mark(&mut self, phase: &str) {
        let now = Instant::now();
        if let Some(t) = self.last {
            self.phases
                .push((phase.to_string(), now.duration_since(t).as_secs_f64()));
        }
        self.last = Some(now);
    }
}
