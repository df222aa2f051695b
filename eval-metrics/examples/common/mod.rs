//! Front ends shared by the `fid`, `fvd` and `merge_stats` examples (each `mod common;`; the
//! `cli` integration test includes this file too): walk an image folder or a folder of videos,
//! batch the inputs through the feature network, stream the features into [`FeatureStats`]
//! with a progress bar, and keep the feature rows for KID / KVD. Kept out of the library so it
//! does not depend on `vidgen-video-io` (a dev-dependency, for these examples only).
//!
//! Inputs:
//! * **images**: every `*.png` of a folder in natural order (`2.png` before `10.png`), any
//!   size, RGB;
//! * **videos**: every entry of a folder in natural order: a `*.gif`, a sub-folder of `*.png`
//!   frames, or (with video-io's `ffmpeg` feature) an `*.mp4` / `*.avi` / `*.mkv` / `*.webm` /
//!   `*.mov` file. The first `frames` frames of each are used; a shorter video is an error.
//! * a `*.safetensors` statistics file written by [`FeatureStats::save_safetensors`] stands in
//!   for a folder (its features are not kept, so KID / KVD need folders).
//!
//! Sharded runs: under `mpirun -np N` (eval-metrics built with its `mpi` feature) each rank
//! takes its share of every folder's files (contiguous, in natural order), and rank 0 prints the
//! scores of the statistics merged and the feature rows gathered from all ranks. Without MPI,
//! `--shard i/n --partial FILE` computes shard `i` of `n` and writes it to FILE, and
//! `--merge FILE...` combines every shard's file and prints the scores.

// Each example uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use vidgen_eval_metrics::weights::{weights_dir, FID_INCEPTION_FILE, I3D_FILE};
use vidgen_eval_metrics::{
    fid_preprocess, frechet_distance, frechet_distance_features, i3d_preprocess, kernel_distance,
    DataRange, FeatureStats, I3d, InceptionV3, KidOptions,
};
use vidgen_video_core::{Error, Result};

/// Features of one input set: streamed statistics and (when computed here) the rows.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    /// Mean / co-moment statistics over every row.
    pub stats: FeatureStats,
    /// The feature rows `[N, D]` (f32), absent when the set was loaded from a stats file.
    pub features: Option<Tensor>,
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The entries of `dir` in natural order of their file names.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    // video-io's order, the one its frame-folder reader uses.
    v.sort_by(|a, b| vidgen_video_io::natural_path_cmp(a, b));
    Ok(v)
}

fn ext_is(p: &Path, exts: &[&str]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The `*.png` files of `dir` in natural order; an empty folder is an error.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let v: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_file() && ext_is(p, &["png"]))
        .collect();
    if v.is_empty() {
        return Err(Error::invalid(
            "images",
            format!("{} holds no .png image", dir.display()),
        ));
    }
    Ok(v)
}

/// The videos of `dir` (GIFs, PNG-frame sub-folders, container files) in natural order; an
/// empty folder is an error.
pub fn list_videos(dir: &Path) -> Result<Vec<PathBuf>> {
    let v: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir() || ext_is(p, &["gif", "mp4", "avi", "mkv", "webm", "mov", "mpg"]))
        .collect();
    if v.is_empty() {
        return Err(Error::invalid(
            "videos",
            format!(
                "{} holds no video (gif, frame folder, mp4, ...)",
                dir.display()
            ),
        ));
    }
    Ok(v)
}

fn frame_to_nchw(f: &vidgen_video_io::Frame) -> Result<Tensor> {
    let (w, h) = (f.width() as usize, f.height() as usize);
    let v: Vec<f32> = f.data().iter().map(|&b| f32::from(b)).collect();
    Ok(Tensor::from_vec(v, (h, w, 3), &Device::Cpu)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?)
}

/// Reads one video as `[1, 3, frames, H, W]` pixel values 0..255 (its first `frames` frames).
pub fn read_clip(path: &Path, frames: usize) -> Result<Tensor> {
    let video = if path.is_dir() {
        vidgen_video_io::read_png_folder(path, 25.0)?
    } else if ext_is(path, &["gif"]) {
        vidgen_video_io::read_gif(path)?
    } else {
        vidgen_video_io::read_video(path, Some(frames))?
    };
    if video.len() < frames {
        return Err(Error::invalid(
            "video",
            format!(
                "{} has {} frames, the clip length is {frames}",
                path.display(),
                video.len()
            ),
        ));
    }
    let ts: Vec<Tensor> = video.frames()[..frames]
        .iter()
        .map(frame_to_nchw)
        .collect::<Result<_>>()?;
    // [T, 3, H, W] → [1, 3, T, H, W]
    Ok(Tensor::cat(&ts, 0)?.permute((1, 0, 2, 3))?.unsqueeze(0)?)
}

fn bar(n: usize, what: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(n as u64);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what} {{bar:40}} {{pos}}/{{len}} [{{elapsed_precise}} < {{eta_precise}}]"
    )) {
        pb.set_style(style);
    }
    pb
}

fn finish(stats: FeatureStats, rows: Vec<Tensor>, dim: usize) -> Result<FeatureSet> {
    let features = if rows.is_empty() {
        Tensor::zeros((0, dim), candle_core::DType::F32, &Device::Cpu)?
    } else {
        Tensor::cat(&rows, 0)?
    };
    Ok(FeatureSet {
        stats,
        features: Some(features),
    })
}

/// Inception features of every PNG of `dir`, `batch` images per forward pass.
pub fn image_folder_features(
    net: &InceptionV3,
    dir: &Path,
    batch: usize,
    progress: bool,
) -> Result<FeatureSet> {
    image_files_features(net, &list_images(dir)?, batch, progress)
}

/// Inception features of the PNG `files`, `batch` images per forward pass (no files: no rows).
pub fn image_files_features(
    net: &InceptionV3,
    files: &[PathBuf],
    batch: usize,
    progress: bool,
) -> Result<FeatureSet> {
    let batch = batch.max(1);
    let pb = bar(files.len(), "inception", progress);
    let mut stats = FeatureStats::new(InceptionV3::FEATURES)?;
    let mut rows = Vec::new();
    for chunk in files.chunks(batch) {
        let pre: Vec<Tensor> = chunk
            .iter()
            .map(|p| {
                let f = vidgen_video_io::read_png(p)?;
                fid_preprocess(&frame_to_nchw(&f)?, DataRange::U8)
            })
            .collect::<Result<_>>()?;
        let feats = net.features(&Tensor::cat(&pre, 0)?)?;
        stats.update(&feats)?;
        rows.push(feats);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    finish(stats, rows, I3d::CLASSES)
}

/// I3D logits of every video of `dir` (first `frames` frames each), `batch` clips per pass.
pub fn video_folder_features(
    net: &I3d,
    dir: &Path,
    frames: usize,
    batch: usize,
    progress: bool,
) -> Result<FeatureSet> {
    if frames < I3d::MIN_FRAMES {
        return Err(Error::invalid(
            "frames",
            format!(
                "I3D needs at least {} frames per clip, asked for {frames}",
                I3d::MIN_FRAMES
            ),
        ));
    }
    video_files_features(net, &list_videos(dir)?, frames, batch, progress)
}

/// I3D logits of the videos `files` (first `frames` frames each), `batch` clips per pass (no
/// files: no rows).
pub fn video_files_features(
    net: &I3d,
    files: &[PathBuf],
    frames: usize,
    batch: usize,
    progress: bool,
) -> Result<FeatureSet> {
    let batch = batch.max(1);
    let pb = bar(files.len(), "i3d", progress);
    let mut stats = FeatureStats::new(I3d::CLASSES)?;
    let mut rows = Vec::new();
    for chunk in files.chunks(batch) {
        let pre: Vec<Tensor> = chunk
            .iter()
            .map(|p| i3d_preprocess(&read_clip(p, frames)?, DataRange::U8))
            .collect::<Result<_>>()?;
        let logits = net.logits(&Tensor::cat(&pre, 0)?)?;
        stats.update(&logits)?;
        rows.push(logits);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    finish(stats, rows, I3d::CLASSES)
}

/// A stats file (`*.safetensors`) or the result of `compute` on a folder.
pub fn stats_or<F>(input: &Path, compute: F) -> Result<FeatureSet>
where
    F: FnOnce(&Path) -> Result<FeatureSet>,
{
    if input.is_file() && ext_is(input, &["safetensors"]) {
        Ok(FeatureSet {
            stats: FeatureStats::load_safetensors(input)?,
            features: None,
        })
    } else {
        compute(input)
    }
}

/// Merges statistics files into one (exact: same result as one pass over all the features).
pub fn merge_stats_files(inputs: &[PathBuf]) -> Result<FeatureStats> {
    let mut it = inputs.iter();
    let first = it
        .next()
        .ok_or_else(|| Error::invalid("inputs", "no statistics file given"))?;
    let mut s = FeatureStats::load_safetensors(first)?;
    for p in it {
        s.merge(&FeatureStats::load_safetensors(p)?)?;
    }
    Ok(s)
}

/// Command-line options shared by the `fid` and `fvd` examples.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// The two inputs (folders or stats files).
    pub inputs: Vec<PathBuf>,
    /// `--weights PATH` (default: the converted file in
    /// [`vidgen_eval_metrics::weights::weights_dir`]).
    pub weights: Option<PathBuf>,
    /// `--batch N` (default 8).
    pub batch: usize,
    /// `--frames N` (FVD clip length, default 16).
    pub frames: usize,
    /// `--save-stats A.safetensors B.safetensors`: where to write each input's statistics.
    pub save_stats: Vec<PathBuf>,
    /// `--kid` / `--kvd`: also print the kernel distance.
    pub kernel: bool,
    /// `--quiet`: no progress bar.
    pub quiet: bool,
    /// `--shard i/n`: compute only shard `i` of `n` of each folder (needs `--partial`).
    pub shard: Option<(usize, usize)>,
    /// `--partial FILE`: where a `--shard` run writes its shard.
    pub partial: Option<PathBuf>,
    /// `--merge`: the inputs are every shard's `--partial` file; print the scores.
    pub merge: bool,
}

impl Args {
    /// Parses `argv[1..]`; unknown flags and missing values are errors.
    pub fn parse(argv: &[String]) -> Result<Self> {
        let mut a = Args {
            inputs: Vec::new(),
            weights: None,
            batch: 8,
            frames: 16,
            save_stats: Vec::new(),
            kernel: false,
            quiet: false,
            shard: None,
            partial: None,
            merge: false,
        };
        let mut i = 0;
        let value = |i: usize, flag: &str| -> Result<String> {
            argv.get(i + 1)
                .cloned()
                .ok_or_else(|| Error::invalid(flag, "missing value"))
        };
        let number = |s: String, flag: &str| -> Result<usize> {
            s.parse::<usize>()
                .map_err(|_| Error::invalid(flag, format!("`{s}` is not a count")))
        };
        while i < argv.len() {
            match argv[i].as_str() {
                "--weights" => {
                    a.weights = Some(PathBuf::from(value(i, "--weights")?));
                    i += 1;
                }
                "--batch" => {
                    a.batch = number(value(i, "--batch")?, "--batch")?;
                    i += 1;
                }
                "--frames" => {
                    a.frames = number(value(i, "--frames")?, "--frames")?;
                    i += 1;
                }
                "--save-stats" => {
                    a.save_stats.push(PathBuf::from(value(i, "--save-stats")?));
                    a.save_stats
                        .push(PathBuf::from(value(i + 1, "--save-stats")?));
                    i += 2;
                }
                "--shard" => {
                    a.shard = Some(vidgen_collective::parse_shard(&value(i, "--shard")?)?);
                    i += 1;
                }
                "--partial" => {
                    a.partial = Some(PathBuf::from(value(i, "--partial")?));
                    i += 1;
                }
                "--merge" => a.merge = true,
                "--kid" | "--kvd" => a.kernel = true,
                "--quiet" | "-q" => a.quiet = true,
                f if f.starts_with('-') => {
                    return Err(Error::invalid(f, "unknown flag"));
                }
                p => a.inputs.push(PathBuf::from(p)),
            }
            i += 1;
        }
        if a.merge {
            if a.inputs.is_empty() || a.shard.is_some() {
                return Err(Error::invalid(
                    "--merge",
                    "give every shard's --partial file, and no --shard",
                ));
            }
            return Ok(a);
        }
        if a.shard.is_some() != a.partial.is_some() {
            return Err(Error::invalid(
                "--shard",
                "--shard i/n and --partial FILE go together",
            ));
        }
        if a.inputs.len() != 2 {
            return Err(Error::invalid(
                "inputs",
                format!(
                    "expected two inputs (folders or stats files), found {}",
                    a.inputs.len()
                ),
            ));
        }
        Ok(a)
    }
}

/// Runs FID (`video = false`) or FVD (`video = true`) for parsed [`Args`] and returns the
/// report lines (the score first, then KID / KVD when asked). Under `mpirun` each rank computes
/// its share and rank 0 returns the lines (the others none); a rank that fails aborts the job.
pub fn run(args: &Args, video: bool) -> Result<Vec<String>> {
    let group = vidgen_collective::init()?;
    vidgen_collective::or_abort(group.as_ref(), || run_in(group.as_ref(), args, video))
}

fn run_in(
    group: &dyn vidgen_collective::Collective,
    args: &Args,
    video: bool,
) -> Result<Vec<String>> {
    use vidgen_eval_metrics::shard::{
        gather_features, merge_partials, merge_stats_across, Partial,
    };
    let metric = if video { "fvd" } else { "fid" };
    if args.merge {
        let parts: Vec<Partial> = args
            .inputs
            .iter()
            .map(Partial::load)
            .collect::<Result<_>>()?;
        let merged = merge_partials(&parts)?;
        if merged.metric != metric || merged.sets.len() != 2 {
            return Err(Error::invalid(
                "--merge",
                format!(
                    "the shards are of `{}` with {} sets, not of {metric} with 2",
                    merged.metric,
                    merged.sets.len()
                ),
            ));
        }
        let sets: Vec<FeatureSet> = merged
            .sets
            .into_iter()
            .map(|(stats, f)| FeatureSet {
                stats,
                features: Some(f),
            })
            .collect();
        return score(&sets, args, video);
    }
    let (world, rank) = (group.world_size(), group.rank());
    if world > 1 && args.shard.is_some() {
        return Err(Error::invalid(
            "--shard",
            "not under mpirun: the ranks are the shards",
        ));
    }
    let (i, n) = if world > 1 {
        (rank, world)
    } else {
        args.shard.unwrap_or((0, 1))
    };
    let default = weights_dir().join(if video { I3D_FILE } else { FID_INCEPTION_FILE });
    let wpath = args.weights.clone().unwrap_or(default);
    let progress = !args.quiet && rank == 0;
    let shard_of = |files: Vec<PathBuf>| -> Vec<PathBuf> {
        let r = vidgen_collective::shard_range(files.len(), i, n);
        files[r].to_vec()
    };
    let sharded = n > 1;
    if sharded && args.inputs.iter().any(|p| !p.is_dir()) {
        return Err(Error::invalid(
            "inputs",
            "a sharded run needs two folders (a statistics file cannot be split)",
        ));
    }
    let mut sets: Vec<FeatureSet> = if video {
        let net = I3d::load(&wpath)?;
        args.inputs
            .iter()
            .map(|p| {
                if sharded {
                    video_files_features(
                        &net,
                        &shard_of(list_videos(p)?),
                        args.frames,
                        args.batch,
                        progress,
                    )
                } else {
                    stats_or(p, |d| {
                        video_folder_features(&net, d, args.frames, args.batch, progress)
                    })
                }
            })
            .collect::<Result<_>>()?
    } else {
        let net = InceptionV3::load(&wpath)?;
        args.inputs
            .iter()
            .map(|p| {
                if sharded {
                    image_files_features(&net, &shard_of(list_images(p)?), args.batch, progress)
                } else {
                    stats_or(p, |d| image_folder_features(&net, d, args.batch, progress))
                }
            })
            .collect::<Result<_>>()?
    };
    if world > 1 {
        // Exact merge of the statistics and every rank's rows in rank order: what one process
        // over all files holds.
        for s in &mut sets {
            s.stats = merge_stats_across(group, &s.stats)?;
            if let Some(f) = &s.features {
                s.features = Some(gather_features(group, f)?);
            }
        }
        if rank != 0 {
            return Ok(Vec::new());
        }
    } else if let (true, Some(out)) = (sharded, &args.partial) {
        let sets = sets
            .into_iter()
            .map(|s| {
                let f = s
                    .features
                    .ok_or_else(|| Error::invalid("features", "missing"))?;
                Ok((s.stats, f))
            })
            .collect::<Result<Vec<_>>>()?;
        let counts: Vec<u64> = sets.iter().map(|s| s.0.count()).collect();
        Partial {
            shard: (i, n),
            metric: metric.into(),
            sets,
        }
        .save(out)?;
        return Ok(vec![format!(
            "shard {i}/{n} of {metric}: {} + {} items written to {}",
            counts[0],
            counts[1],
            out.display()
        )]);
    }
    for (s, out) in sets.iter().zip(&args.save_stats) {
        s.stats.save_safetensors(out)?;
    }
    score(&sets, args, video)
}

/// The report lines of two feature sets.
fn score(sets: &[FeatureSet], args: &Args, video: bool) -> Result<Vec<String>> {
    let (name, kname) = if video {
        ("FVD", "KVD")
    } else {
        ("FID", "KID")
    };
    let mut lines = Vec::new();
    let fd = match (&sets[0].features, &sets[1].features) {
        // Exact low-rank path when both feature sets are at hand (N ≤ D is common for FVD).
        (Some(a), Some(b)) => frechet_distance_features(a, b)?,
        _ => frechet_distance(&sets[0].stats.gaussian()?, &sets[1].stats.gaussian()?)?,
    };
    lines.push(format!(
        "{name} {fd:.6} (n1 = {}, n2 = {})",
        sets[0].stats.count(),
        sets[1].stats.count()
    ));
    if args.kernel {
        match (&sets[0].features, &sets[1].features) {
            (Some(a), Some(b)) => {
                let n = a.dim(0)?.min(b.dim(0)?);
                let opts = KidOptions {
                    subset_size: n.min(1000),
                    ..Default::default()
                };
                let k = kernel_distance(a, b, &opts)?;
                lines.push(format!(
                    "{kname} {:.6} ± {:.6} (subset size {})",
                    k.mean, k.std, opts.subset_size
                ));
            }
            _ => lines.push(format!(
                "{kname} needs both inputs as folders (features), not stats files"
            )),
        }
    }
    Ok(lines)
}
