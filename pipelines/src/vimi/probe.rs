//! Measuring a generated clip of the miniature's world: the object's colour, its shape and its
//! direction of motion, from the pixels alone.
//!
//! - **Object pixels**: those farther than `object_threshold` (Euclidean RGB) from the flat
//!   background.
//! - **Colour**: the palette colour nearest (Euclidean RGB) to the mean of the object pixels,
//!   over all frames.
//! - **Shape**: per frame, the world's shape mask placed at every offset within ±2 px of the
//!   object's centroid; the shape whose best placement has the highest intersection over union
//!   with the object pixels; a majority vote over the frames.
//! - **Direction**: the displacement of the object's centroid from the first to the last
//!   frame, rounded to the nearest of the 8 directions by angle; `None` when it moved less
//!   than `min_motion` pixels.
//!
//! On ground-truth clips of the world every figure is exact (tested), so what an evaluation
//! reports is the generator's accuracy, not the probe's.

use vidgen_video_io::synth::{Colour, Direction, Shape};
use vidgen_video_io::{Frame, Video};

use super::world::MiniWorld;

/// What the probe read off a clip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The colour, if any object pixel was found.
    pub colour: Option<Colour>,
    /// The shape, if any object pixel was found.
    pub shape: Option<Shape>,
    /// The direction, if the object moved enough.
    pub direction: Option<Direction>,
    /// The centroid displacement `(dx, dy)` in pixels (x right, y down).
    pub displacement: (f64, f64),
    /// Mean intersection over union of the best shape placement (a quality figure).
    pub shape_iou: f64,
}

/// The probe (see the module docs).
#[derive(Debug, Clone)]
pub struct Probe {
    world: MiniWorld,
    /// RGB distance from the background above which a pixel is the object's.
    pub object_threshold: f64,
    /// Least centroid displacement (pixels) that counts as motion.
    pub min_motion: f64,
}

fn dist(a: [u8; 3], b: [f64; 3]) -> f64 {
    (0..3)
        .map(|i| (a[i] as f64 - b[i]).powi(2))
        .sum::<f64>()
        .sqrt()
}

impl Probe {
    /// A probe for `world`'s clips (threshold 80, minimum motion 1.5 px).
    pub fn new(world: MiniWorld) -> Self {
        Self {
            world,
            object_threshold: 80.0,
            min_motion: 1.5,
        }
    }

    fn object_mask(&self, f: &Frame) -> Vec<bool> {
        let bg = self.world.spec().background.map(|v| v as f64);
        f.data()
            .chunks(3)
            .map(|p| dist([p[0], p[1], p[2]], bg) > self.object_threshold)
            .collect()
    }

    fn centroid(&self, mask: &[bool]) -> Option<(f64, f64)> {
        let n = self.world.spec().size as usize;
        let (mut sx, mut sy, mut c) = (0.0, 0.0, 0usize);
        for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
            sx += (i % n) as f64 + 0.5;
            sy += (i / n) as f64 + 0.5;
            c += 1;
        }
        (c > 0).then(|| (sx / c as f64, sy / c as f64))
    }

    /// The best shape for one frame's object mask, with its IoU.
    fn shape_of(&self, mask: &[bool]) -> Option<(Shape, f64)> {
        let (cx, cy) = self.centroid(mask)?;
        let n = self.world.spec().size as i32;
        let side = self.world.side() as i32;
        let mut best: Option<(Shape, f64)> = None;
        for &shape in self.world.shapes() {
            let Some(m) = self.world.mask(shape) else {
                continue;
            };
            // the template's own centroid, to align it with the object's
            let (mut tx, mut ty, mut tc) = (0.0, 0.0, 0usize);
            for (i, _) in m.iter().enumerate().filter(|(_, &b)| b) {
                tx += (i as i32 % side) as f64 + 0.5;
                ty += (i as i32 / side) as f64 + 0.5;
                tc += 1;
            }
            let (tx, ty) = (tx / tc.max(1) as f64, ty / tc.max(1) as f64);
            let (bx, by) = ((cx - tx).round() as i32, (cy - ty).round() as i32);
            for oy in -2..=2 {
                for ox in -2..=2 {
                    let (x0, y0) = (bx + ox, by + oy);
                    let mut inter = 0usize;
                    let mut tmpl = 0usize;
                    for (i, &b) in m.iter().enumerate() {
                        if !b {
                            continue;
                        }
                        tmpl += 1;
                        let (x, y) = (x0 + i as i32 % side, y0 + i as i32 / side);
                        if x >= 0 && y >= 0 && x < n && y < n && mask[(y * n + x) as usize] {
                            inter += 1;
                        }
                    }
                    let obj = mask.iter().filter(|&&b| b).count();
                    let union = tmpl + obj - inter;
                    let iou = inter as f64 / union.max(1) as f64;
                    if best.is_none_or(|(_, b)| iou > b) {
                        best = Some((shape, iou));
                    }
                }
            }
        }
        best
    }

    /// Reads a clip (see the module docs).
    pub fn read(&self, clip: &Video) -> Reading {
        let frames = clip.frames();
        let masks: Vec<Vec<bool>> = frames.iter().map(|f| self.object_mask(f)).collect();
        // colour: mean of the object pixels over every frame
        let (mut sum, mut count) = ([0f64; 3], 0usize);
        for (f, m) in frames.iter().zip(&masks) {
            for (p, _) in f.data().chunks(3).zip(m).filter(|(_, &b)| b) {
                for c in 0..3 {
                    sum[c] += p[c] as f64;
                }
                count += 1;
            }
        }
        let colour = (count > 0).then(|| {
            let mean = sum.map(|s| s / count as f64);
            let mut best = (self.world.colours()[0], f64::INFINITY);
            for &c in self.world.colours() {
                let d = dist(c.rgb(), mean);
                if d < best.1 {
                    best = (c, d);
                }
            }
            best.0
        });
        // shape: majority over frames (ties: the higher summed IoU)
        let mut votes: Vec<(Shape, usize, f64)> = Vec::new();
        for m in &masks {
            if let Some((s, iou)) = self.shape_of(m) {
                match votes.iter_mut().find(|v| v.0 == s) {
                    Some(v) => {
                        v.1 += 1;
                        v.2 += iou;
                    }
                    None => votes.push((s, 1, iou)),
                }
            }
        }
        votes.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.total_cmp(&a.2)));
        let shape = votes.first().map(|v| v.0);
        let total: usize = votes.iter().map(|v| v.1).sum();
        let shape_iou = votes.iter().map(|v| v.2).sum::<f64>() / total.max(1) as f64;
        // direction: centroid displacement first → last frame
        let first = masks.first().and_then(|m| self.centroid(m));
        let last = masks.last().and_then(|m| self.centroid(m));
        let displacement = match (first, last) {
            (Some(a), Some(b)) => (b.0 - a.0, b.1 - a.1),
            _ => (0.0, 0.0),
        };
        let direction = direction_of(displacement, self.min_motion);
        Reading {
            colour,
            shape,
            direction,
            displacement,
            shape_iou,
        }
    }
}

/// The nearest of the 8 directions to `(dx, dy)` (x right, y down) by angle; `None` below
/// `min_len` pixels.
pub fn direction_of((dx, dy): (f64, f64), min_len: f64) -> Option<Direction> {
    if (dx * dx + dy * dy).sqrt() < min_len {
        return None;
    }
    // screen y grows downwards; Direction::ALL goes counter-clockwise from Right in 45° steps
    let angle = (-dy).atan2(dx);
    let k = ((angle / (std::f64::consts::PI / 4.0)).round() as i64).rem_euclid(8) as usize;
    Some(Direction::ALL[k])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::vimi::world::WorldSpec;
    use vidgen_video_io::synth::seeded_rng;

    #[test]
    fn reads_ground_truth_exactly() {
        let w = MiniWorld::new(WorldSpec::default()).unwrap();
        let p = Probe::new(w.clone());
        let mut rng = seeded_rng(7);
        for _ in 0..400 {
            let sc = w.scene(&mut rng, None, None, None).unwrap();
            let r = p.read(&w.clip(&sc).unwrap());
            assert_eq!(r.colour, Some(sc.colour), "{sc:?}");
            assert_eq!(r.shape, Some(sc.shape), "{sc:?} {r:?}");
            assert_eq!(r.direction, Some(sc.direction), "{sc:?} {r:?}");
            assert!(r.shape_iou > 0.999);
        }
        // an empty clip reads as nothing
        let bg = Frame::filled(16, 16, w.spec().background).unwrap();
        let r = p.read(&Video::new(vec![bg; 4], 4.0).unwrap());
        assert_eq!((r.colour, r.shape, r.direction), (None, None, None));
        assert_eq!(direction_of((1.0, -1.0), 0.5), Some(Direction::UpRight));
        assert_eq!(direction_of((-2.0, 0.1), 0.5), Some(Direction::Left));
        assert_eq!(direction_of((0.1, 0.1), 0.5), None);
    }
}
