//! Video-LaVIT's motion-vector preprocessing: per-macroblock vectors → normalised, max-pooled,
//! I-frame-interpolated, bicubic-resized `[2, T, 20, 36]` clips of 24 frames.
//!
//! The steps, per frame (as in Video-LaVIT's motion extraction):
//! 1. every macroblock vector is written at its destination pixel `(dst_x, dst_y)` (clamped
//!    into the frame; a later vector at the same pixel replaces an earlier one) of an
//!    `[H, W, 2]` map whose other pixels are "missing";
//! 2. `dx` is divided by the frame width and `dy` by its height, then by the dataset standard
//!    deviations `(0.0993703, 0.1130276)`;
//! 3. 16×16 max-pooling (stride 16, floor) per channel, missing pixels never win;
//! 4. cells with no vector at all become 0.
//!
//! Then per sequence: I-frames (which carry no vectors) take the mean of their neighbours'
//! grids (one neighbour at the ends); every grid is resized bicubically (PyTorch
//! `interpolate(mode="bicubic", align_corners=False)`, `A = −0.75`, no antialiasing) to
//! 20 (H) × 36 (W); clips are the 24 frames starting at each I-frame. The tokenizer sees the
//! result divided by 10.

use candle_core::{Device, Tensor};
use vidgen_video_core::{Error, Result};

use crate::field::{FrameType, MotionField};

/// One macroblock's vector as a codec reports it, in this crate's sign convention
/// (content displacement, see [`MotionField`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockVector {
    /// Destination (current-frame) block centre `x`, pixels.
    pub dst_x: i32,
    /// Destination block centre `y`, pixels.
    pub dst_y: i32,
    /// Block width in pixels.
    pub w: u8,
    /// Block height in pixels.
    pub h: u8,
    /// Displacement along `x`, pixels (FFmpeg's `source · motion_x / motion_scale`).
    pub dx: f32,
    /// Displacement along `y`, pixels.
    pub dy: f32,
}

/// The vectors of one frame with its size and type.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameVectors {
    /// Frame width in pixels.
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
    /// Coded frame type (`I` frames have no vectors and are interpolated).
    pub frame_type: FrameType,
    /// The macroblock vectors.
    pub vectors: Vec<BlockVector>,
}

impl FrameVectors {
    /// The vectors of a block-matching field, one per valid block at its centre. The frame
    /// type is the field's, else `P` (block matching always predicts from the previous frame).
    pub fn from_field(field: &MotionField) -> Self {
        let bs = field.block_size;
        let mut vectors = Vec::with_capacity(field.rows * field.cols);
        for r in 0..field.rows {
            for c in 0..field.cols {
                if !field.valid[r * field.cols + c] {
                    continue;
                }
                if let Some((dx, dy)) = field.get(r, c) {
                    vectors.push(BlockVector {
                        dst_x: (c * bs + bs / 2) as i32,
                        dst_y: (r * bs + bs / 2) as i32,
                        w: bs.min(255) as u8,
                        h: bs.min(255) as u8,
                        dx,
                        dy,
                    });
                }
            }
        }
        Self {
            width: field.cols * bs,
            height: field.rows * bs,
            frame_type: field.frame_type.unwrap_or(FrameType::P),
            vectors,
        }
    }
}

/// The constants of the preprocessing (defaults are Video-LaVIT's).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LavitConfig {
    /// Standard deviations of `(dx / W, dy / H)` over the training data.
    pub std: [f32; 2],
    /// Max-pool window and stride, pixels.
    pub pool: usize,
    /// Output grid height (20).
    pub out_h: usize,
    /// Output grid width (36).
    pub out_w: usize,
    /// Frames per clip (24).
    pub clip_len: usize,
    /// The tokenizer input is the normalised motion divided by this (10).
    pub tokenizer_divisor: f32,
}

impl Default for LavitConfig {
    fn default() -> Self {
        Self {
            std: [0.099_370_3, 0.113_027_6],
            pool: 16,
            out_h: 20,
            out_w: 36,
            clip_len: 24,
            tokenizer_divisor: 10.0,
        }
    }
}

/// Steps 1–4 for one frame: the normalised, max-pooled grid `[2, H / pool, W / pool]`
/// (row-major, `dx` plane first), missing cells 0.
///
/// # Errors
/// [`Error::InvalidArgument`] for a frame smaller than one pooling window, a zero pool, or a
/// side above [`vidgen_video_io::MAX_SIDE`].
pub fn pooled_grid(fv: &FrameVectors, cfg: &LavitConfig) -> Result<(usize, usize, Vec<f32>)> {
    let p = cfg.pool;
    let max = vidgen_video_io::MAX_SIDE as usize;
    if fv.width > max || fv.height > max {
        return Err(Error::invalid(
            "frame",
            format!(
                "{}x{}: each side must be at most {max}",
                fv.width, fv.height
            ),
        ));
    }
    if p == 0 || fv.width < p || fv.height < p {
        return Err(Error::invalid(
            "frame",
            format!(
                "{}x{} frame with a {p}-pixel pooling window: need at least one window",
                fv.width, fv.height
            ),
        ));
    }
    if cfg.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(Error::config("std", format!("{:?}: must be > 0", cfg.std)));
    }
    let (gh, gw) = (fv.height / p, fv.width / p);
    // Last write wins per pixel, as numpy fancy assignment does.
    let mut at_pixel: std::collections::HashMap<(usize, usize), (f32, f32)> =
        std::collections::HashMap::with_capacity(fv.vectors.len());
    for v in &fv.vectors {
        let x = v.dst_x.clamp(0, fv.width as i32 - 1) as usize;
        let y = v.dst_y.clamp(0, fv.height as i32 - 1) as usize;
        let nx = v.dx / fv.width as f32 / cfg.std[0];
        let ny = v.dy / fv.height as f32 / cfg.std[1];
        if nx.is_finite() && ny.is_finite() {
            at_pixel.insert((x, y), (nx, ny));
        }
    }
    let mut grid = vec![f32::NEG_INFINITY; 2 * gh * gw];
    for ((x, y), (nx, ny)) in at_pixel {
        let (r, c) = (y / p, x / p);
        if r < gh && c < gw {
            let i = r * gw + c;
            grid[i] = grid[i].max(nx);
            grid[gh * gw + i] = grid[gh * gw + i].max(ny);
        }
    }
    for v in &mut grid {
        if *v == f32::NEG_INFINITY {
            *v = 0.0;
        }
    }
    Ok((gh, gw, grid))
}

/// PyTorch's cubic convolution weights (`A = −0.75`) for fractional offset `t`.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [c2(t + 1.0), c1(t), c1(1.0 - t), c2(2.0 - t)]
}

/// Bicubic resize of one `[h, w]` plane to `[oh, ow]`, PyTorch `align_corners=False`
/// semantics (source index `(i + 0.5) · in / out − 0.5`, taps clamped at the border).
///
/// # Shapes
/// `src [h, w]` row-major (exactly `h · w` values) → `[oh, ow]` row-major.
///
/// # Errors
/// [`Error::InvalidArgument`] when a size is zero or `h · w` / `oh · ow` overflows;
/// [`Error::ShapeMismatch`] when `src` does not hold `h · w` values.
pub fn bicubic_resize(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Result<Vec<f32>> {
    if [h, w, oh, ow].contains(&0) {
        return Err(Error::invalid(
            "bicubic_resize",
            format!("sizes [{h}, {w}] → [{oh}, {ow}]: every side must be ≥ 1"),
        ));
    }
    let (Some(n_in), Some(_), Some(_)) = (h.checked_mul(w), h.checked_mul(ow), oh.checked_mul(ow))
    else {
        return Err(Error::invalid(
            "bicubic_resize",
            format!("sizes [{h}, {w}] → [{oh}, {ow}] overflow"),
        ));
    };
    if src.len() != n_in {
        return Err(Error::shape("bicubic_resize src", &[h, w], &[src.len()]));
    }
    let taps = |n_in: usize, n_out: usize| -> Vec<([usize; 4], [f32; 4])> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|i| {
                let s = (i as f32 + 0.5) * scale - 0.5;
                let f = s.floor();
                let wts = cubic_weights(s - f);
                let idx = [-1isize, 0, 1, 2]
                    .map(|k| (f as isize + k).clamp(0, n_in as isize - 1) as usize);
                (idx, wts)
            })
            .collect()
    };
    let (ty, tx) = (taps(h, oh), taps(w, ow));
    // Rows first (W), then columns (H).
    let mut mid = vec![0f32; h * ow];
    for y in 0..h {
        for (j, (idx, wt)) in tx.iter().enumerate() {
            mid[y * ow + j] = (0..4).map(|k| wt[k] * src[y * w + idx[k]]).sum();
        }
    }
    let mut out = vec![0f32; oh * ow];
    for (i, (idx, wt)) in ty.iter().enumerate() {
        for j in 0..ow {
            out[i * ow + j] = (0..4).map(|k| wt[k] * mid[idx[k] * ow + j]).sum();
        }
    }
    Ok(out)
}

/// The preprocessed motion of a whole sequence: `[2, T, out_h, out_w]` (not yet divided by
/// the tokenizer divisor) and the frame types.
#[derive(Clone, Debug)]
pub struct LavitMotion {
    /// `[2, T, out_h, out_w]` row-major values.
    pub data: Vec<f32>,
    /// Frames.
    pub frames: usize,
    /// Frame types, one per frame.
    pub types: Vec<FrameType>,
    /// The config used.
    pub config: LavitConfig,
}

impl LavitMotion {
    /// The motion as a tensor.
    ///
    /// # Shapes
    /// `[2, T, out_h, out_w]`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.data.clone(),
            (2, self.frames, self.config.out_h, self.config.out_w),
            device,
        )?)
    }

    /// Clips of `clip_len` frames starting at each I-frame (each start at least `clip_len`
    /// after the previous one, so clips do not overlap), already divided by the tokenizer
    /// divisor: the tokenizer's input. When no frame is an I-frame, clips start at frame 0 and
    /// every `clip_len` frames.
    ///
    /// # Shapes
    /// Returns `(start, [1, 2, clip_len, out_h, out_w])` pairs.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the sequence is shorter than one clip, or when `types`
    /// does not hold one frame type per frame; [`Error::Candle`] when `data` does not hold
    /// `2 · frames · out_h · out_w` values.
    pub fn tokenizer_clips(&self, device: &Device) -> Result<Vec<(usize, Tensor)>> {
        if self.types.len() != self.frames {
            return Err(Error::invalid(
                "types",
                format!(
                    "{} frame type(s) for {} frames: need one per frame",
                    self.types.len(),
                    self.frames
                ),
            ));
        }
        let l = self.config.clip_len;
        if l == 0 || self.frames < l {
            return Err(Error::invalid(
                "motion",
                format!("{} frame(s): a clip needs {l}", self.frames),
            ));
        }
        let mut starts: Vec<usize> = Vec::new();
        let has_i = self.types.contains(&FrameType::I);
        for i in 0..=self.frames - l {
            let ok = if has_i {
                self.types[i] == FrameType::I
            } else {
                i % l == 0
            };
            if ok && starts.last().is_none_or(|&s| i >= s + l) {
                starts.push(i);
            }
        }
        if starts.is_empty() {
            return Err(Error::invalid(
                "motion",
                format!("no I-frame leaves room for a {l}-frame clip"),
            ));
        }
        let all = self.to_tensor(device)?;
        let div = self.config.tokenizer_divisor as f64;
        starts
            .into_iter()
            .map(|s| {
                let clip = (all.narrow(1, s, l)?.unsqueeze(0)? / div)?;
                Ok((s, clip))
            })
            .collect()
    }
}

/// Runs the whole preprocessing over a sequence of frames' vectors.
///
/// # Errors
/// [`Error::InvalidArgument`] for zero frames, frames of different sizes, or frames smaller
/// than one pooling window.
pub fn preprocess(frames: &[FrameVectors], cfg: &LavitConfig) -> Result<LavitMotion> {
    let Some(first) = frames.first() else {
        return Err(Error::invalid(
            "frames",
            "zero frames: nothing to preprocess",
        ));
    };
    if cfg.out_h == 0 || cfg.out_w == 0 {
        return Err(Error::config("out_h/out_w", "must be ≥ 1"));
    }
    let mut grids = Vec::with_capacity(frames.len());
    let (mut gh, mut gw) = (0, 0);
    for f in frames {
        if f.width != first.width || f.height != first.height {
            return Err(Error::shape(
                "frame",
                &[first.height, first.width],
                &[f.height, f.width],
            ));
        }
        let (h, w, g) = pooled_grid(f, cfg)?;
        (gh, gw) = (h, w);
        grids.push(g);
    }
    // I-frame interpolation from the neighbours (original, not interpolated, grids).
    let n = frames.len();
    let orig = grids.clone();
    for t in 0..n {
        if frames[t].frame_type != FrameType::I {
            continue;
        }
        let prev = (t > 0).then(|| &orig[t - 1]);
        let next = (t + 1 < n).then(|| &orig[t + 1]);
        grids[t] = match (prev, next) {
            (Some(a), Some(b)) => a.iter().zip(b).map(|(x, y)| 0.5 * (x + y)).collect(),
            (Some(a), None) => a.clone(),
            (None, Some(b)) => b.clone(),
            (None, None) => orig[t].clone(),
        };
    }
    let (oh, ow) = (cfg.out_h, cfg.out_w);
    let mut data = vec![0f32; 2 * n * oh * ow];
    for (t, g) in grids.iter().enumerate() {
        for ch in 0..2 {
            let plane = &g[ch * gh * gw..(ch + 1) * gh * gw];
            let r = bicubic_resize(plane, gh, gw, oh, ow)?;
            let off = (ch * n + t) * oh * ow;
            data[off..off + oh * ow].copy_from_slice(&r);
        }
    }
    Ok(LavitMotion {
        data,
        frames: n,
        types: frames.iter().map(|f| f.frame_type).collect(),
        config: *cfg,
    })
}
