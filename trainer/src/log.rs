//! Logs of a run: the loss of every step in a CSV file, a loss-curve PNG drawn with
//! `plotters`, and an `indicatif` progress bar with the loss, steps per second and ETA.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use vidgen_video_core::{Error, Result};
use vidgen_video_io::Frame;

/// One logged optimiser step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogRow {
    /// Optimiser step (1-based: the number of steps completed).
    pub step: usize,
    /// Mean loss over the step's micro-batches.
    pub loss: f32,
    /// Learning rate it ran at.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall time of the step, seconds.
    pub seconds: f64,
}

impl From<&crate::trainer::StepStats> for LogRow {
    /// The row of a finished step (its fields, one for one).
    fn from(s: &crate::trainer::StepStats) -> Self {
        LogRow {
            step: s.step,
            loss: s.loss,
            lr: s.lr,
            grad_norm: s.grad_norm,
            seconds: s.seconds,
        }
    }
}

const HEADER: &str = "step,loss,lr,grad_norm,seconds";

/// `loss.csv`: a header and one row per step, flushed as it goes. Opening it for a resumed run
/// keeps only the rows up to the resumed step, so the file reads as one uninterrupted run.
#[derive(Debug)]
pub struct CsvLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    rows: Vec<LogRow>,
}

fn io(p: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: p.to_path_buf(),
        source: e,
    }
}

impl CsvLog {
    /// Creates `path` (or, when `resume_step` is given, keeps its rows with `step ≤
    /// resume_step`).
    ///
    /// # Errors
    /// I/O.
    pub fn open(path: &Path, resume_step: Option<usize>) -> Result<Self> {
        let mut rows = Vec::new();
        if let (Some(s), true) = (resume_step, path.is_file()) {
            let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
            rows = parse_rows(&text)
                .into_iter()
                .filter(|r| r.step <= s)
                .collect();
        }
        let mut file = std::fs::File::create(path).map_err(|e| io(path, e))?;
        let mut text = String::from(HEADER);
        text.push('\n');
        for r in &rows {
            text.push_str(&fmt_row(r));
        }
        file.write_all(text.as_bytes()).map_err(|e| io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
            rows,
        })
    }

    /// A log kept in memory only (data-parallel ranks other than 0 write no file).
    pub fn memory() -> Self {
        Self {
            path: PathBuf::new(),
            file: None,
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    ///
    /// # Errors
    /// I/O.
    pub fn push(&mut self, row: LogRow) -> Result<()> {
        if let Some(file) = &mut self.file {
            file.write_all(fmt_row(&row).as_bytes())
                .and_then(|_| file.flush())
                .map_err(|e| io(&self.path, e))?;
        }
        self.rows.push(row);
        Ok(())
    }

    /// Every row so far.
    pub fn rows(&self) -> &[LogRow] {
        &self.rows
    }

    /// The file (empty for [`CsvLog::memory`]).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn fmt_row(r: &LogRow) -> String {
    format!(
        "{},{:e},{:e},{:e},{:.6}\n",
        r.step, r.loss, r.lr, r.grad_norm, r.seconds
    )
}

/// Rows of a `loss.csv` (malformed lines are skipped).
pub fn parse_rows(text: &str) -> Vec<LogRow> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some(LogRow {
                step: f.first()?.parse().ok()?,
                loss: f.get(1)?.parse().ok()?,
                lr: f.get(2)?.parse().ok()?,
                grad_norm: f.get(3)?.parse().ok()?,
                seconds: f.get(4)?.parse().ok()?,
            })
        })
        .collect()
}

/// A system TrueType font for the plot's text, registered once with plotters' ab_glyph
/// backend: `$VIDGEN_PLOT_FONT`, else DejaVu Sans / Liberation Sans / Arial where the OS keeps
/// them. `None` when none is found (the plot is then drawn without text).
fn plot_font() -> Option<&'static str> {
    static FONT: OnceLock<Option<&'static str>> = OnceLock::new();
    *FONT.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("VIDGEN_PLOT_FONT") {
            candidates.push(p.into());
        }
        for p in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/Library/Fonts/Arial.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ] {
            candidates.push(p.into());
        }
        for p in candidates {
            if let Ok(bytes) = std::fs::read(&p) {
                // plotters keeps fonts for the process's lifetime (`&'static`): one font, once.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("vidgen-sans", FontStyle::Normal, bytes).is_ok() {
                    return Some("vidgen-sans");
                }
            }
        }
        None
    })
}

/// Draws the loss curve of `rows` (raw loss, and its exponential moving average with factor
/// 0.9) into a `width × height` PNG at `path`, log-scaled on the loss axis when every loss is
/// positive. Axis labels and a title are drawn when a system font is found.
///
/// # Errors
/// No rows; a drawing or I/O failure.
pub fn plot_loss(rows: &[LogRow], path: &Path, title: &str, width: u32, height: u32) -> Result<()> {
    if rows.is_empty() {
        return Err(Error::invalid("loss curve", "no logged step"));
    }
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    draw(rows, &mut buf, title, width, height)
        .map_err(|e| Error::backend("plotters", e.to_string()))?;
    let frame = Frame::new(width, height, buf)?;
    // Loss curves ship with the trained miniatures: the compact encoding keeps them small.
    vidgen_video_io::write_png_compact(path, &frame)
}

fn smoothed(rows: &[LogRow]) -> Vec<(f64, f64)> {
    let mut s = None;
    rows.iter()
        .map(|r| {
            let v = r.loss as f64;
            let e = match s {
                None => v,
                Some(p) => 0.9 * p + 0.1 * v,
            };
            s = Some(e);
            (r.step as f64, e)
        })
        .collect()
}

fn draw(
    rows: &[LogRow],
    buf: &mut [u8],
    title: &str,
    width: u32,
    height: u32,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let font = plot_font();
    let root = BitMapBackend::with_buffer(buf, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let x0 = rows.first().map_or(0, |r| r.step) as f64;
    let x1 = (rows.last().map_or(1, |r| r.step) as f64).max(x0 + 1.0);
    let finite: Vec<f64> = rows
        .iter()
        .map(|r| r.loss as f64)
        .filter(|v| v.is_finite())
        .collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let raw: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.step as f64, r.loss as f64))
        .collect();
    let smooth = smoothed(rows);
    let light = RGBColor(160, 190, 230);
    let dark = RGBColor(20, 70, 160);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(12);
    if let Some(f) = font {
        builder
            .caption(title, (f, 18))
            .x_label_area_size(32)
            .y_label_area_size(56);
    }
    if lo > 0.0 {
        let (a, b) = (lo * 0.9, (hi * 1.1).max(lo * 1.01));
        let mut chart = builder.build_cartesian_2d(x0..x1, (a..b).log_scale())?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(RGBColor(235, 235, 235));
        if let Some(f) = font {
            mesh.x_desc("step")
                .y_desc("loss")
                .label_style((f, 13))
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| format!("{v:.3}"));
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw()?;
        chart.draw_series(LineSeries::new(raw, &light))?;
        chart.draw_series(LineSeries::new(smooth, dark.stroke_width(2)))?;
    } else {
        let pad = ((hi - lo) * 0.05).max(1e-6);
        let mut chart = builder.build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(RGBColor(235, 235, 235));
        if let Some(f) = font {
            mesh.x_desc("step")
                .y_desc("loss")
                .label_style((f, 13))
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| format!("{v:.3}"));
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw()?;
        chart.draw_series(LineSeries::new(raw, &light))?;
        chart.draw_series(LineSeries::new(smooth, dark.stroke_width(2)))?;
    }
    root.present()?;
    Ok(())
}

/// The run's progress bar (hidden when `enabled` is false or stderr is not a terminal).
pub fn progress_bar(total: usize, start: usize, enabled: bool) -> indicatif::ProgressBar {
    let bar = if enabled {
        indicatif::ProgressBar::new(total as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let style = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_position(start as u64);
    bar.reset_eta();
    bar
}
