//! Global motion: one summary of a motion field (which way did the camera or the object move,
//! and how far), from robust statistics over the block vectors.

use vidgen_video_core::{Error, Result};
pub use vidgen_video_io::synth::Direction;

use crate::block::{estimate_motion, BlockMatchConfig};
use crate::field::{LumaFrame, MotionField};

/// What kind of motion a field shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MotionKind {
    /// (Almost) no block moves.
    Static,
    /// Most blocks share one vector: the camera pans (the picture moves opposite to it).
    CameraPan,
    /// A minority of blocks moves coherently over a still background: an object moves.
    ObjectMotion,
    /// The vectors point away from (zoom in) or towards (zoom out) the centre.
    Zoom,
    /// Motion that none of the above explains (several objects, rotation, noise).
    Complex,
}

/// Settings of the global-motion summary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GlobalMotionConfig {
    /// Block matching used when the summary is computed from frames.
    pub block_match: BlockMatchConfig,
    /// Vectors shorter than this (pixels) count as still.
    pub still_threshold: f32,
    /// Distance (pixels) within which a vector agrees with the dominant one.
    pub inlier_tolerance: f32,
    /// Fraction of all blocks that must agree with a non-zero dominant vector for a pan.
    pub pan_fraction: f32,
    /// Blocks whose luma standard deviation is below this carry no motion information
    /// (flat areas) and do not vote. Only used when frames are given.
    pub min_texture: f32,
}

impl Default for GlobalMotionConfig {
    /// Full search over ±16 px on 16×16 blocks (exhaustive, so noise-like textures cannot
    /// trap it in a local minimum), still below 0.5 px, inliers within 1 px, pan when ≥ 50 %
    /// of the blocks agree, blocks with luma std < 2 ignored.
    fn default() -> Self {
        Self {
            block_match: BlockMatchConfig {
                method: crate::block::SearchMethod::Full,
                ..BlockMatchConfig::default()
            },
            still_threshold: 0.5,
            inlier_tolerance: 1.0,
            pan_fraction: 0.5,
            min_texture: 2.0,
        }
    }
}

/// The summary of one motion field.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalMotion {
    /// Dominant content displacement along `x`, pixels per frame (positive: rightward). For a
    /// pan this is the picture's motion, opposite to the camera's; for an object, the object's.
    pub dx: f32,
    /// Dominant content displacement along `y`, pixels per frame (positive: downward).
    pub dy: f32,
    /// The 8-way direction of `(dx, dy)` (45° sectors), `None` when static.
    pub direction: Option<Direction>,
    /// `√(dx² + dy²)`, pixels per frame.
    pub magnitude: f32,
    /// Pan, object motion, zoom, static or complex.
    pub kind: MotionKind,
    /// For [`MotionKind::CameraPan`], the direction the camera moves (opposite to
    /// `direction`); `None` otherwise.
    pub camera_direction: Option<Direction>,
    /// Fraction of the voting blocks that move (longer than the still threshold).
    pub moving_fraction: f32,
    /// Fraction of the voting blocks within the inlier tolerance of `(dx, dy)`.
    pub inlier_fraction: f32,
    /// Least-squares zoom rate: the divergence of the field per pixel of distance from the
    /// centre (`> 0` zoom in, `< 0` zoom out, `0` for a pure translation).
    pub zoom: f32,
    /// How many blocks voted.
    pub votes: usize,
}

/// The 8-way direction of a displacement `(dx, dy)` (`y` down), `None` for a zero vector.
pub fn direction_of(dx: f32, dy: f32) -> Option<Direction> {
    if !(dx.is_finite() && dy.is_finite()) || (dx == 0.0 && dy == 0.0) {
        return None;
    }
    // Angle counter-clockwise from +x on screen (y up), in sectors of 45° centred on the axes.
    let angle = (-dy).atan2(dx).to_degrees();
    let sector = ((angle + 360.0 + 22.5) / 45.0).floor() as usize % 8;
    Direction::ALL.get(sector).copied()
}

fn opposite(d: Direction) -> Direction {
    let (x, y) = d.delta();
    direction_of(-x as f32, -y as f32).unwrap_or(d)
}

fn median(values: &mut [f32]) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let m = values.len() / 2;
    if values.len() % 2 == 1 {
        values[m]
    } else {
        0.5 * (values[m - 1] + values[m])
    }
}

/// Component-wise median of a set of vectors.
fn median_vec(v: &[(f32, f32)]) -> (f32, f32) {
    let mut xs: Vec<f32> = v.iter().map(|p| p.0).collect();
    let mut ys: Vec<f32> = v.iter().map(|p| p.1).collect();
    (median(&mut xs), median(&mut ys))
}

/// Summarises a motion field; `weights[i]` (when given) says whether block `i` votes.
///
/// The dominant vector is the component-wise median of the voting blocks (robust to up to
/// half outliers). If it is non-zero and at least `pan_fraction` of the voters agree, the
/// camera panned. Otherwise, if some blocks move, the consensus of the moving blocks (the
/// vector most of them agree with, refined by the median of those) is the object's motion, unless a least-squares zoom model `v = s · (p − c)` explains the moving
/// blocks better than a translation (zoom). Object motion needs a third of the moving blocks
/// to agree with their median (the object's boundary blocks mix object and background). Codec fields contribute their valid blocks only.
///
/// # Errors
/// [`Error::InvalidArgument`] when `votes` has the wrong length.
pub fn summarize_field(
    field: &MotionField,
    votes: Option<&[bool]>,
    cfg: &GlobalMotionConfig,
) -> Result<GlobalMotion> {
    Ok(summarize_points(&field_points(field, votes)?, cfg))
}

type Point = ((f32, f32), (f32, f32));

/// The voting blocks of a field: (vector, block centre relative to the frame centre).
fn field_points(field: &MotionField, votes: Option<&[bool]>) -> Result<Vec<Point>> {
    let n = field.rows * field.cols;
    if let Some(v) = votes {
        if v.len() != n {
            return Err(Error::shape("votes", &[n], &[v.len()]));
        }
    }
    if field.data.len() != 2 * n || field.valid.len() != n {
        return Err(Error::shape(
            "field.data",
            &[2, field.rows, field.cols],
            &[field.data.len()],
        ));
    }
    let mut pts: Vec<Point> = Vec::new();
    let bs = field.block_size as f32;
    let (cx, cy) = (field.cols as f32 * bs / 2.0, field.rows as f32 * bs / 2.0);
    for i in 0..n {
        if !field.valid[i] || votes.is_some_and(|v| !v[i]) {
            continue;
        }
        let (r, c) = (i / field.cols, i % field.cols);
        let v = (field.data[i], field.data[n + i]);
        if !(v.0.is_finite() && v.1.is_finite()) {
            continue;
        }
        let p = ((c as f32 + 0.5) * bs - cx, (r as f32 + 0.5) * bs - cy);
        pts.push((v, p));
    }
    Ok(pts)
}

fn summarize_points(pts: &[Point], cfg: &GlobalMotionConfig) -> GlobalMotion {
    let votes_n = pts.len();
    let len = |v: (f32, f32)| (v.0 * v.0 + v.1 * v.1).sqrt();
    let moving: Vec<Point> = pts
        .iter()
        .copied()
        .filter(|(v, _)| len(*v) >= cfg.still_threshold)
        .collect();
    let frac = |k: usize| {
        if votes_n == 0 {
            0.0
        } else {
            k as f32 / votes_n as f32
        }
    };
    let moving_fraction = frac(moving.len());
    let agree = |d: (f32, f32), set: &[Point]| {
        set.iter()
            .filter(|(v, _)| len((v.0 - d.0, v.1 - d.1)) <= cfg.inlier_tolerance)
            .count()
    };
    let all: Vec<(f32, f32)> = pts.iter().map(|p| p.0).collect();
    let dominant = median_vec(&all);
    // Zoom: least-squares s in v ≈ s · p over the moving blocks (after removing their median).
    let zoom = {
        let (num, den) = moving.iter().fold((0f32, 0f32), |(n, d), (v, p)| {
            (n + v.0 * p.0 + v.1 * p.1, d + p.0 * p.0 + p.1 * p.1)
        });
        if den > 0.0 {
            num / den
        } else {
            0.0
        }
    };
    let summary = |d: (f32, f32), kind: MotionKind, inliers: usize| {
        let direction = if kind == MotionKind::Static || kind == MotionKind::Zoom {
            None
        } else {
            direction_of(d.0, d.1)
        };
        GlobalMotion {
            dx: d.0,
            dy: d.1,
            direction,
            magnitude: len(d),
            kind,
            camera_direction: match kind {
                MotionKind::CameraPan => direction.map(opposite),
                _ => None,
            },
            moving_fraction,
            inlier_fraction: frac(inliers),
            zoom,
            votes: votes_n,
        }
    };
    if votes_n == 0 || moving.is_empty() {
        return summary((0.0, 0.0), MotionKind::Static, votes_n);
    }
    let dom_inliers = agree(dominant, pts);
    if len(dominant) >= cfg.still_threshold && frac(dom_inliers) >= cfg.pan_fraction {
        return summary(dominant, MotionKind::CameraPan, dom_inliers);
    }
    // The object's vector: the consensus (mode) of the moving blocks, then the median of its
    // inliers. A mode rather than a plain median because boundary blocks that mix object,
    // revealed background and periodic background textures scatter in every direction.
    let object = {
        let mut cands: Vec<(f32, f32)> = moving.iter().map(|p| p.0).collect();
        cands.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        cands.dedup();
        let step = (moving.len() / 2048).max(1);
        let sample: Vec<Point> = moving.iter().step_by(step).copied().collect();
        let mut best = (0usize, f32::INFINITY, (0.0f32, 0.0f32));
        for c in cands {
            let k = agree(c, &sample);
            if k > best.0 || (k == best.0 && len(c) < best.1) {
                best = (k, len(c), c);
            }
        }
        let inl: Vec<(f32, f32)> = moving
            .iter()
            .filter(|(v, _)| len((v.0 - best.2 .0, v.1 - best.2 .1)) <= cfg.inlier_tolerance)
            .map(|p| p.0)
            .collect();
        if inl.is_empty() {
            best.2
        } else {
            median_vec(&inl)
        }
    };
    let obj_inliers = agree(object, &moving);
    // Residuals of the two models over the moving blocks.
    let (mut res_t, mut res_z) = (0f32, 0f32);
    for (v, p) in &moving {
        res_t += len((v.0 - object.0, v.1 - object.1));
        res_z += len((v.0 - zoom * p.0, v.1 - zoom * p.1));
    }
    if res_z < 0.5 * res_t && moving_fraction >= 0.25 {
        return summary((0.0, 0.0), MotionKind::Zoom, 0);
    }
    if len(object) >= cfg.still_threshold && obj_inliers * 3 >= moving.len() {
        if moving_fraction >= cfg.pan_fraction {
            return summary(object, MotionKind::CameraPan, obj_inliers);
        }
        return summary(object, MotionKind::ObjectMotion, obj_inliers);
    }
    summary(object, MotionKind::Complex, obj_inliers)
}

/// Whether each block of `frame` has enough texture (luma std ≥ `min_std`) to vote.
pub fn textured_blocks(frame: &LumaFrame, block_size: usize, min_std: f32) -> Vec<bool> {
    if block_size == 0 {
        return Vec::new();
    }
    let (rows, cols) = (frame.height() / block_size, frame.width() / block_size);
    let w = frame.width();
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let (mut s, mut s2) = (0f64, 0f64);
            for y in r * block_size..(r + 1) * block_size {
                for &p in &frame.data()[y * w + c * block_size..][..block_size] {
                    let p = p as f64;
                    s += p;
                    s2 += p * p;
                }
            }
            let n = (block_size * block_size) as f64;
            let var = (s2 / n - (s / n) * (s / n)).max(0.0);
            out.push(var.sqrt() as f32 >= min_std);
        }
    }
    out
}

/// The global motion between two luma frames: block matching, then [`summarize_field`] with
/// only the textured blocks that their vector explains voting (still, or matched at ≤ half the
/// zero-motion cost).
///
/// `(dx, dy)` is how the picture content moved from `prev` to `cur` (pixels, `y` down); see
/// [`GlobalMotion`].
///
/// # Errors
/// As [`estimate_motion`](crate::estimate_motion): different sizes, sizes not multiples of the
/// block size, a zero block size.
pub fn estimate_global_motion(
    prev: &LumaFrame,
    cur: &LumaFrame,
    cfg: &GlobalMotionConfig,
) -> Result<GlobalMotion> {
    let field = estimate_motion(prev, cur, &cfg.block_match)?;
    let votes = pair_votes(prev, cur, &field, cfg);
    summarize_field(&field, Some(&votes), cfg)
}

/// The global motion of a whole video: every consecutive pair through
/// [`estimate_global_motion`] (frames cropped to a multiple of the block size), then one
/// summary over the blocks of all pairs pooled (as [`summarize_field`] on one big field).
/// Returns `(overall, per_pair)`.
///
/// # Errors
/// [`Error::InvalidArgument`] for fewer than two frames or frames smaller than one block.
pub fn video_global_motion(
    video: &vidgen_video_io::Video,
    cfg: &GlobalMotionConfig,
) -> Result<(GlobalMotion, Vec<GlobalMotion>)> {
    if video.len() < 2 {
        return Err(Error::invalid(
            "video",
            format!("{} frame(s): motion needs at least two frames", video.len()),
        ));
    }
    let (lumas, _, _) = LumaFrame::from_video_in_blocks(video, cfg.block_match.block_size)?;
    let mut per_pair = Vec::with_capacity(lumas.len() - 1);
    let mut pooled: Vec<Point> = Vec::new();
    for p in lumas.windows(2) {
        let field = estimate_motion(&p[0], &p[1], &cfg.block_match)?;
        let votes = pair_votes(&p[0], &p[1], &field, cfg);
        let pts = field_points(&field, Some(&votes))?;
        per_pair.push(summarize_points(&pts, cfg));
        pooled.extend(pts);
    }
    // One robust summary over every block of every pair: medians over many more samples than
    // one pair offers (a small object covers few blocks per frame).
    Ok((summarize_points(&pooled, cfg), per_pair))
}

/// Which blocks vote: textured (luma std ≥ `min_texture` in either frame) and well explained
/// by their vector: either still (mean absolute frame difference < 1) or matched with at most
/// half the zero-motion cost. Blocks that no single vector explains (occlusions, an object's
/// boundary over a moving background, the aperture problem) would only add noise.
fn pair_votes(
    prev: &LumaFrame,
    cur: &LumaFrame,
    field: &MotionField,
    cfg: &GlobalMotionConfig,
) -> Vec<bool> {
    let bs = field.block_size;
    let a = textured_blocks(prev, bs, cfg.min_texture);
    let b = textured_blocks(cur, bs, cfg.min_texture);
    let w = cur.width();
    let (pd, cd) = (prev.data(), cur.data());
    (0..a.len())
        .map(|i| {
            let (r, c) = (i / field.cols, i % field.cols);
            let mut s = 0u64;
            for y in r * bs..(r + 1) * bs {
                let o = y * w + c * bs;
                s += pd[o..o + bs]
                    .iter()
                    .zip(&cd[o..o + bs])
                    .map(|(&p, &q)| p.abs_diff(q) as u64)
                    .sum::<u64>();
            }
            let zero = s as f32 / (bs * bs) as f32;
            let best = field
                .cost
                .as_ref()
                .and_then(|c| c.get(i))
                .copied()
                .unwrap_or(0.0);
            let explained = zero < 1.0 || best <= 0.5 * zero;
            (a[i] || b[i]) && explained
        })
        .collect()
}

/// One summary of several per-pair summaries (median displacement, majority kind).
pub fn combine(parts: &[GlobalMotion]) -> GlobalMotion {
    let moving: Vec<&GlobalMotion> = parts
        .iter()
        .filter(|g| g.kind != MotionKind::Static)
        .collect();
    let kinds = [
        MotionKind::CameraPan,
        MotionKind::ObjectMotion,
        MotionKind::Zoom,
        MotionKind::Complex,
    ];
    let kind = if moving.len() * 2 < parts.len().max(1) {
        MotionKind::Static
    } else {
        kinds
            .iter()
            .copied()
            .max_by_key(|k| moving.iter().filter(|g| g.kind == *k).count())
            .unwrap_or(MotionKind::Static)
    };
    let same: Vec<(f32, f32)> = moving
        .iter()
        .filter(|g| g.kind == kind)
        .map(|g| (g.dx, g.dy))
        .collect();
    let d = if kind == MotionKind::Static || kind == MotionKind::Zoom {
        (0.0, 0.0)
    } else {
        median_vec(&same)
    };
    let mean = |f: fn(&GlobalMotion) -> f32| {
        if parts.is_empty() {
            0.0
        } else {
            parts.iter().map(f).sum::<f32>() / parts.len() as f32
        }
    };
    let direction = match kind {
        MotionKind::Static | MotionKind::Zoom => None,
        _ => direction_of(d.0, d.1),
    };
    GlobalMotion {
        dx: d.0,
        dy: d.1,
        direction,
        magnitude: (d.0 * d.0 + d.1 * d.1).sqrt(),
        kind,
        camera_direction: match kind {
            MotionKind::CameraPan => direction.map(opposite),
            _ => None,
        },
        moving_fraction: mean(|g| g.moving_fraction),
        inlier_fraction: mean(|g| g.inlier_fraction),
        zoom: mean(|g| g.zoom),
        votes: parts.iter().map(|g| g.votes).sum(),
    }
}
