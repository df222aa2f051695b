//! Block-matching motion estimation on luma planes (SAD cost): full search and a two-pass
//! diamond search with zero / median / neighbour predictors, optional half-pixel refinement.

use rayon::prelude::*;
use vidgen_video_core::{Error, Result};

use crate::field::{LumaFrame, MotionField};

/// How candidate vectors are visited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SearchMethod {
    /// Every integer vector within the search range (exact minimum of the SAD over the range).
    Full,
    /// Diamond search (large diamond until the centre wins, then the small diamond), started
    /// from the zero vector, then refined from the median and the 4 neighbours of a first
    /// pass. Finds the exact vector for smooth, textured content; a local minimum otherwise.
    #[default]
    Diamond,
}

/// Settings of [`estimate_motion`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockMatchConfig {
    /// Side of a macroblock in pixels (16, as MPEG-4 Part 2 and H.264 macroblocks).
    pub block_size: usize,
    /// Largest `|dx|` and `|dy|` tried, in pixels.
    pub search_range: usize,
    /// Full or diamond search.
    pub method: SearchMethod,
    /// Refine each integer vector to the best of its 8 half-pixel neighbours (bilinear
    /// interpolation of the previous frame).
    pub half_pel: bool,
}

impl Default for BlockMatchConfig {
    /// 16×16 blocks, range ±16, diamond search, integer vectors.
    fn default() -> Self {
        Self {
            block_size: 16,
            search_range: 16,
            method: SearchMethod::Diamond,
            half_pel: false,
        }
    }
}

impl BlockMatchConfig {
    /// Checks the config against a frame size.
    ///
    /// # Errors
    /// [`Error::BadConfig`] for a zero block size, [`Error::InvalidArgument`] for a frame whose
    /// sides are not multiples of the block size (crop with [`LumaFrame::crop`] first).
    pub fn check(&self, width: usize, height: usize) -> Result<()> {
        if self.block_size == 0 {
            return Err(Error::config("block_size", "must be ≥ 1"));
        }
        if !width.is_multiple_of(self.block_size) || !height.is_multiple_of(self.block_size) {
            return Err(Error::invalid(
                "frame",
                format!(
                    "{width}x{height} is not a multiple of the block size {bs}; crop to {}x{}",
                    width / self.block_size * self.block_size,
                    height / self.block_size * self.block_size,
                    bs = self.block_size
                ),
            ));
        }
        Ok(())
    }
}

/// Sum of absolute differences between the current block at `(bx, by)` and the previous frame
/// at `(bx − dx, by − dy)`, giving up (returning a value > `limit`) once it exceeds `limit`.
/// The caller guarantees the displaced block lies inside `prev`.
#[inline]
fn sad(
    prev: &LumaFrame,
    cur: &LumaFrame,
    bx: usize,
    by: usize,
    bs: usize,
    v: (i32, i32),
    limit: u32,
) -> u32 {
    let w = cur.width();
    let px = (bx as isize - v.0 as isize) as usize;
    let py = (by as isize - v.1 as isize) as usize;
    let (c, p) = (cur.data(), prev.data());
    let mut total = 0u32;
    for row in 0..bs {
        let a = &c[(by + row) * w + bx..][..bs];
        let b = &p[(py + row) * w + px..][..bs];
        total += a
            .iter()
            .zip(b)
            .map(|(&x, &y)| x.abs_diff(y) as u32)
            .sum::<u32>();
        if total > limit {
            return total;
        }
    }
    total
}

/// Search state of one block.
struct Block<'a> {
    prev: &'a LumaFrame,
    cur: &'a LumaFrame,
    bx: usize,
    by: usize,
    bs: usize,
    range: i32,
}

impl Block<'_> {
    /// Whether vector `v` is inside the range and keeps the displaced block inside `prev`.
    #[inline]
    fn admissible(&self, v: (i32, i32)) -> bool {
        let px = self.bx as i64 - v.0 as i64;
        let py = self.by as i64 - v.1 as i64;
        v.0.abs() <= self.range
            && v.1.abs() <= self.range
            && px >= 0
            && py >= 0
            && px + self.bs as i64 <= self.prev.width() as i64
            && py + self.bs as i64 <= self.prev.height() as i64
    }

    /// Cost of `v` (`u32::MAX` when inadmissible), abandoning past `limit`.
    #[inline]
    fn cost(&self, v: (i32, i32), limit: u32) -> u32 {
        if self.admissible(v) {
            sad(self.prev, self.cur, self.bx, self.by, self.bs, v, limit)
        } else {
            u32::MAX
        }
    }

    /// Whether `(cost, v)` beats `(best_cost, best)`: lower SAD, ties to the shorter vector
    /// (so flat regions report no motion), then to the lexicographically smaller one.
    #[inline]
    fn better(c: u32, v: (i32, i32), best_c: u32, best: (i32, i32)) -> bool {
        let len = |v: (i32, i32)| v.0.abs() + v.1.abs();
        c < best_c || (c == best_c && (len(v), v) < (len(best), best))
    }

    fn full(&self) -> ((i32, i32), u32) {
        let mut best = (0, 0);
        let mut best_c = self.cost(best, u32::MAX);
        for dy in -self.range..=self.range {
            for dx in -self.range..=self.range {
                let v = (dx, dy);
                let c = self.cost(v, best_c);
                if Self::better(c, v, best_c, best) {
                    best = v;
                    best_c = c;
                }
            }
        }
        (best, best_c)
    }

    /// Large diamond until the centre is best, then one small diamond step.
    fn diamond(&self, start: (i32, i32), start_c: u32) -> ((i32, i32), u32) {
        const LARGE: [(i32, i32); 8] = [
            (0, -2),
            (1, -1),
            (2, 0),
            (1, 1),
            (0, 2),
            (-1, 1),
            (-2, 0),
            (-1, -1),
        ];
        const SMALL: [(i32, i32); 4] = [(0, -1), (1, 0), (0, 1), (-1, 0)];
        let (mut best, mut best_c) = (start, start_c);
        // Each move strictly lowers the cost (or the vector length at equal cost), so this
        // terminates; the bound is a guard against pathological plateaus.
        for _ in 0..(4 * self.range as usize + 8) {
            let centre = best;
            for d in LARGE {
                let v = (centre.0 + d.0, centre.1 + d.1);
                let c = self.cost(v, best_c);
                if Self::better(c, v, best_c, best) {
                    best = v;
                    best_c = c;
                }
            }
            if best == centre {
                break;
            }
        }
        let centre = best;
        for d in SMALL {
            let v = (centre.0 + d.0, centre.1 + d.1);
            let c = self.cost(v, best_c);
            if Self::better(c, v, best_c, best) {
                best = v;
                best_c = c;
            }
        }
        (best, best_c)
    }

    /// SAD of a half-pixel vector `(hx, hy)` in half-pixel units, with bilinear interpolation
    /// (rounded as MPEG-4 does, `(a + b + 1) >> 1` and `(a + b + c + d + 2) >> 2`). Returns
    /// `u32::MAX` when the 2×2 support leaves the frame or the vector leaves the range.
    fn half_cost(&self, h: (i32, i32)) -> u32 {
        let fx = h.0.div_euclid(2);
        let fy = h.1.div_euclid(2);
        // Integer part in the "displacement" convention: the source sample is at
        // (bx − hx/2, by − hy/2) = (bx − fx − rx/2, ...): floor then the fraction goes negative.
        let (rx, ry) = (h.0.rem_euclid(2), h.1.rem_euclid(2));
        // Source position top-left = (bx - fx - rx, by - fy - ry) with weights toward +1.
        let sx = self.bx as i64 - fx as i64 - rx as i64;
        let sy = self.by as i64 - fy as i64 - ry as i64;
        let bs = self.bs as i64;
        if (h.0.abs() + 1) / 2 > self.range
            || (h.1.abs() + 1) / 2 > self.range
            || sx < 0
            || sy < 0
            || sx + bs + rx as i64 > self.prev.width() as i64
            || sy + bs + ry as i64 > self.prev.height() as i64
        {
            return u32::MAX;
        }
        let w = self.cur.width();
        let (c, p) = (self.cur.data(), self.prev.data());
        let (sx, sy) = (sx as usize, sy as usize);
        let (rx, ry) = (rx as usize, ry as usize);
        let mut total = 0u32;
        for row in 0..self.bs {
            let cr = &c[(self.by + row) * w + self.bx..][..self.bs];
            let r0 = (sy + row) * w + sx;
            let r1 = r0 + ry * w;
            for (i, &cv) in cr.iter().enumerate() {
                let a = p[r0 + i] as u32;
                let b = p[r0 + i + rx] as u32;
                let cc = p[r1 + i] as u32;
                let d = p[r1 + i + rx] as u32;
                let s = match (rx, ry) {
                    (0, 0) => a,
                    (1, 0) => (a + b + 1) >> 1,
                    (0, _) => (a + cc + 1) >> 1,
                    _ => (a + b + cc + d + 2) >> 2,
                };
                total += s.abs_diff(cv as u32);
            }
        }
        total
    }

    /// The best of the integer vector and its 8 half-pixel neighbours, in pixels.
    fn refine_half(&self, v: (i32, i32), c: u32) -> ((f32, f32), u32) {
        let centre = (2 * v.0, 2 * v.1);
        let (mut best, mut best_c) = (centre, c);
        for dy in -1..=1 {
            for dx in -1..=1 {
                if dx == 0 && dy == 0 {
                    continue;
                }
                let h = (centre.0 + dx, centre.1 + dy);
                let hc = self.half_cost(h);
                if hc < best_c {
                    best = h;
                    best_c = hc;
                }
            }
        }
        ((best.0 as f32 / 2.0, best.1 as f32 / 2.0), best_c)
    }
}

fn check_pair(prev: &LumaFrame, cur: &LumaFrame, cfg: &BlockMatchConfig) -> Result<()> {
    if prev.width() != cur.width() || prev.height() != cur.height() {
        return Err(Error::shape(
            "cur",
            &[prev.height(), prev.width()],
            &[cur.height(), cur.width()],
        ));
    }
    cfg.check(cur.width(), cur.height())?;
    if cfg.search_range > i32::MAX as usize / 4 {
        return Err(Error::config("search_range", "too large"));
    }
    Ok(())
}

fn median3(a: i32, b: i32, c: i32) -> i32 {
    a.max(b).min(a.min(b).max(c))
}

/// Estimates the motion from `prev` to `cur` by block matching on luma.
///
/// Blocks are searched in parallel (rayon). See [`MotionField`] for the sign convention:
/// `cur(x, y) ≈ prev(x − dx, y − dy)` inside each block. Candidate blocks must lie wholly
/// inside `prev` (no edge padding), so a block at the border only sees vectors that stay in
/// the picture.
///
/// # Shapes
/// `prev`, `cur`: `[H, W]` luma with `H`, `W` multiples of `block_size`; returns a field
/// `[2, H / block_size, W / block_size]`.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the frames differ in size, [`Error::InvalidArgument`] when
/// the size is not a multiple of the block size, [`Error::BadConfig`] for a zero block size.
pub fn estimate_motion(
    prev: &LumaFrame,
    cur: &LumaFrame,
    cfg: &BlockMatchConfig,
) -> Result<MotionField> {
    check_pair(prev, cur, cfg)?;
    let bs = cfg.block_size;
    let (rows, cols) = (cur.height() / bs, cur.width() / bs);
    let n = rows * cols;
    let block = |i: usize| Block {
        prev,
        cur,
        bx: (i % cols) * bs,
        by: (i / cols) * bs,
        bs,
        range: cfg.search_range as i32,
    };
    let mut ints: Vec<((i32, i32), u32)> = match cfg.method {
        SearchMethod::Full => (0..n).into_par_iter().map(|i| block(i).full()).collect(),
        SearchMethod::Diamond => {
            let first: Vec<((i32, i32), u32)> = (0..n)
                .into_par_iter()
                .map(|i| {
                    let b = block(i);
                    b.diamond((0, 0), b.cost((0, 0), u32::MAX))
                })
                .collect();
            // Second pass: predictors from the neighbours' first-pass vectors (median of
            // left / top / right / bottom, and each of them) and the frame's median vector
            // (a global-motion predictor); restart the diamond from any predictor that beats
            // the first-pass result.
            let global = {
                let mut xs: Vec<i32> = first.iter().map(|f| f.0 .0).collect();
                let mut ys: Vec<i32> = first.iter().map(|f| f.0 .1).collect();
                xs.sort_unstable();
                ys.sort_unstable();
                (xs[xs.len() / 2], ys[ys.len() / 2])
            };
            (0..n)
                .into_par_iter()
                .map(|i| {
                    let b = block(i);
                    let (r, c) = (i / cols, i % cols);
                    let mut preds: Vec<(i32, i32)> = Vec::with_capacity(5);
                    if c > 0 {
                        preds.push(first[i - 1].0);
                    }
                    if r > 0 {
                        preds.push(first[i - cols].0);
                    }
                    if c + 1 < cols {
                        preds.push(first[i + 1].0);
                    }
                    if r + 1 < rows {
                        preds.push(first[i + cols].0);
                    }
                    if preds.len() >= 3 {
                        let med = (
                            median3(preds[0].0, preds[1].0, preds[2].0),
                            median3(preds[0].1, preds[1].1, preds[2].1),
                        );
                        preds.push(med);
                    }
                    preds.push(global);
                    let (mut best, mut best_c) = first[i];
                    for p in preds {
                        if p == best {
                            continue;
                        }
                        let c = b.cost(p, best_c);
                        if Block::better(c, p, best_c, best) {
                            let (v, vc) = b.diamond(p, c);
                            if Block::better(vc, v, best_c, best) {
                                best = v;
                                best_c = vc;
                            }
                        }
                    }
                    (best, best_c)
                })
                .collect()
        }
    };
    let mut field = MotionField::zeros(rows, cols, bs);
    let mut cost = vec![0f32; n];
    let area = (bs * bs) as f32;
    let refined: Vec<((f32, f32), u32)> = if cfg.half_pel {
        ints.par_iter()
            .enumerate()
            .map(|(i, &(v, c))| block(i).refine_half(v, c))
            .collect()
    } else {
        ints.drain(..)
            .map(|(v, c)| ((v.0 as f32, v.1 as f32), c))
            .collect()
    };
    for (i, (v, c)) in refined.into_iter().enumerate() {
        field.set(i / cols, i % cols, v);
        cost[i] = c as f32 / area;
    }
    field.cost = Some(cost);
    Ok(field)
}

/// Motion fields of every consecutive pair of a sequence: `fields[i]` is the motion from
/// frame `i` to frame `i + 1`.
///
/// # Errors
/// [`Error::InvalidArgument`] for fewer than two frames, and the errors of [`estimate_motion`].
pub fn estimate_sequence(frames: &[LumaFrame], cfg: &BlockMatchConfig) -> Result<Vec<MotionField>> {
    if frames.len() < 2 {
        return Err(Error::invalid(
            "frames",
            format!(
                "{} frame(s): motion needs at least two frames",
                frames.len()
            ),
        ));
    }
    frames
        .windows(2)
        .map(|w| estimate_motion(&w[0], &w[1], cfg))
        .collect()
}
