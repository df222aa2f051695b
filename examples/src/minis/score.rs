//! Reading the object back out of a generated frame of the synthetic world: where it is, what
//! colour and shape it has, and which way it moved over a clip.
//!
//! The world paints objects in saturated colours (one channel ≥ 200) on muted backgrounds
//! (every channel in 40..=156), so a pixel is the object's when its brightest channel is at
//! least [`OBJECT_THRESHOLD`]: half way between the two ranges, which also cuts a blurred edge at
//! about half its height. From that mask:
//! - **position**: the mask's centroid (pixel centres at `x + 0.5`);
//! - **colour**: the mean RGB of the mask, snapped to the nearest of the world's 8 colours;
//! - **shape**: the best intersection-over-union between the mask and each candidate outline
//!   drawn at the mask's centroid over a range of radii (the outlines are video-io's,
//!   `Shape::contains`, the ones the world renders);
//! - **direction**: the displacement of the centroid between two frames, snapped to the
//!   nearest of the 8 directions (`y` down, as [`Direction::delta`]), or none when it moved
//!   less than [`MIN_DISPLACEMENT`] pixels.

use vidgen_video_io::synth::{Colour, Direction, Shape};
use vidgen_video_io::Frame;

/// A pixel belongs to the object when its brightest channel reaches this.
pub const OBJECT_THRESHOLD: u8 = 178;

/// Centroid displacements shorter than this (pixels) count as "no motion".
pub const MIN_DISPLACEMENT: f64 = 1.5;

/// Fewest mask pixels that count as an object.
pub const MIN_AREA: usize = 6;

/// The centroid of `shape`'s outline relative to its centre, in radii (the triangle's sits
/// below its centre).
fn outline_centroid(shape: Shape) -> (f64, f64) {
    let n = 200;
    let (mut sx, mut sy, mut c) = (0f64, 0f64, 0usize);
    for j in 0..n {
        for i in 0..n {
            let u = -1.0 + (i as f32 + 0.5) * 2.0 / n as f32;
            let v = -1.0 + (j as f32 + 0.5) * 2.0 / n as f32;
            if shape.contains(u, v) {
                sx += u as f64;
                sy += v as f64;
                c += 1;
            }
        }
    }
    if c == 0 {
        (0.0, 0.0)
    } else {
        (sx / c as f64, sy / c as f64)
    }
}

/// What [`read_object`] found in a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectReading {
    /// Mask centroid `(x, y)` in pixels (`y` down).
    pub centroid: (f64, f64),
    /// Mask pixels.
    pub area: usize,
    /// Mean RGB of the mask.
    pub mean_rgb: [f64; 3],
    /// Nearest world colour to `mean_rgb`.
    pub colour: Colour,
    /// Best-matching outline among the candidates.
    pub shape: Shape,
    /// Its intersection-over-union with the mask.
    pub shape_iou: f64,
}

/// The object mask of `frame` (row-major, `true` = object).
pub fn object_mask(frame: &Frame) -> Vec<bool> {
    frame
        .data()
        .chunks_exact(3)
        .map(|p| p[0].max(p[1]).max(p[2]) >= OBJECT_THRESHOLD)
        .collect()
}

/// The world colour nearest to `rgb` (Euclidean in RGB).
pub fn nearest_colour(rgb: [f64; 3], candidates: &[Colour]) -> Colour {
    let d = |c: &Colour| {
        let p = c.rgb();
        (0..3).map(|k| (p[k] as f64 - rgb[k]).powi(2)).sum::<f64>()
    };
    candidates
        .iter()
        .copied()
        .min_by(|a, b| d(a).total_cmp(&d(b)))
        .unwrap_or(Colour::White)
}

/// Reads the object of `frame` (`None` when fewer than [`MIN_AREA`] pixels look like one),
/// classifying its shape among `shapes` at radii `radii` (pixels).
pub fn read_object(frame: &Frame, shapes: &[Shape], radii: &[f32]) -> Option<ObjectReading> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let mask = object_mask(frame);
    let area = mask.iter().filter(|&&m| m).count();
    if area < MIN_AREA {
        return None;
    }
    let (mut sx, mut sy, mut rgb) = (0f64, 0f64, [0f64; 3]);
    for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
        sx += (i % w) as f64 + 0.5;
        sy += (i / w) as f64 + 0.5;
        let p = &frame.data()[3 * i..3 * i + 3];
        for k in 0..3 {
            rgb[k] += p[k] as f64;
        }
    }
    let a = area as f64;
    let centroid = (sx / a, sy / a);
    let mean_rgb = [rgb[0] / a, rgb[1] / a, rgb[2] / a];
    let (mut best, mut best_iou) = (shapes.first().copied().unwrap_or(Shape::Circle), -1.0);
    for &s in shapes {
        let (ou, ov) = outline_centroid(s);
        for &r in radii {
            let (cx, cy) = (centroid.0 - ou * r as f64, centroid.1 - ov * r as f64);
            let (mut inter, mut union) = (0usize, 0usize);
            for (i, &m) in mask.iter().enumerate() {
                let u = ((i % w) as f64 + 0.5 - cx) as f32 / r;
                let v = ((i / w) as f64 + 0.5 - cy) as f32 / r;
                let t = s.contains(u, v);
                inter += usize::from(t && m);
                union += usize::from(t || m);
            }
            let iou = inter as f64 / union.max(1) as f64;
            if iou > best_iou {
                best_iou = iou;
                best = s;
            }
        }
    }
    let _ = h;
    Some(ObjectReading {
        centroid,
        area,
        mean_rgb,
        colour: nearest_colour(mean_rgb, &Colour::ALL),
        shape: best,
        shape_iou: best_iou.max(0.0),
    })
}

/// The direction of a displacement `(dx, dy)` (`y` down) snapped to the nearest of the 8, or
/// `None` when it is shorter than `min_len`.
pub fn direction_of(dx: f64, dy: f64, min_len: f64) -> Option<Direction> {
    if (dx * dx + dy * dy).sqrt() < min_len {
        return None;
    }
    // Counter-clockwise from right with y up, as Direction::ALL is ordered.
    let angle = (-dy).atan2(dx);
    let k = (angle / std::f64::consts::FRAC_PI_4).round() as i64;
    Some(Direction::ALL[k.rem_euclid(8) as usize])
}

/// The unit-step vector `[dx, dy]` of a direction (`y` down), for reports.
pub fn direction_vector(d: Direction) -> [i32; 2] {
    let (x, y) = d.delta();
    [x, y]
}

/// The opposite direction.
pub fn opposite(d: Direction) -> Direction {
    let i = Direction::ALL.iter().position(|&x| x == d).unwrap_or(0);
    Direction::ALL[(i + 4) % 8]
}

/// Dash-separated name as instructions spell it (`"up-left"`).
pub fn direction_words(d: Direction) -> String {
    d.name().replace('_', "-")
}

/// The most frequent value of `items` (ties: the first to reach the count).
pub fn majority<T: PartialEq + Copy>(items: &[T]) -> Option<T> {
    let mut best: Option<(T, usize)> = None;
    for &a in items {
        let n = items.iter().filter(|&&b| b == a).count();
        if best.is_none_or(|(_, m)| n > m) {
            best = Some((a, n));
        }
    }
    best.map(|(a, _)| a)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use vidgen_video_io::synth::{
        seeded_rng, Action, Appearance, Background, MovingShapes, Texture, WorldConfig,
    };

    #[test]
    fn directions_snap() {
        assert_eq!(direction_of(3.0, 0.0, 1.0), Some(Direction::Right));
        assert_eq!(direction_of(2.0, -2.1, 1.0), Some(Direction::UpRight));
        assert_eq!(direction_of(0.0, 3.0, 1.0), Some(Direction::Down));
        assert_eq!(direction_of(-3.0, 2.5, 1.0), Some(Direction::DownLeft));
        assert_eq!(direction_of(0.2, 0.1, 1.0), None);
        for d in Direction::ALL {
            let (x, y) = d.delta();
            assert_eq!(direction_of(x as f64 * 4.0, y as f64 * 4.0, 1.0), Some(d));
            assert_eq!(opposite(opposite(d)), d);
        }
    }

    /// The outlines here are the world's: the world's own masks equal them, and the reader
    /// finds the right colour, shape and motion on the world's clips.
    #[test]
    fn reads_the_worlds_objects() {
        let world = MovingShapes::new(WorldConfig::new(32, 32, 4)).unwrap();
        let mut rng = seeded_rng(3);
        let shapes = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Cross];
        let mut n = 0;
        for (i, &shape) in shapes.iter().cycle().take(48).enumerate() {
            let colour = Colour::ALL[i % 8];
            let dir = Direction::ALL[(i / 4) % 8];
            let app = Appearance {
                shape,
                colour,
                texture: Texture::Solid,
                radius: 5,
                background: Background::ALL[i % 3],
                background_seed: i as u64,
            };
            let clip = world
                .render(
                    Action::Translate {
                        direction: dir,
                        speed: 2,
                    },
                    app,
                    &mut rng,
                )
                .unwrap();
            let f0 = &clip.video.frames()[0];
            assert_eq!(object_mask(f0), clip.masks[0], "mask of clip {i}");
            let a = read_object(f0, &shapes, &[4.0, 4.5, 5.0, 5.5, 6.0]).unwrap();
            let b = read_object(&clip.video.frames()[3], &shapes, &[5.0]).unwrap();
            assert_eq!(a.colour, colour);
            assert_eq!(a.shape, shape, "clip {i}: iou {}", a.shape_iou);
            let d = direction_of(
                b.centroid.0 - a.centroid.0,
                b.centroid.1 - a.centroid.1,
                1.5,
            );
            assert_eq!(d, Some(dir));
            n += 1;
        }
        assert_eq!(n, 48);
    }

    #[test]
    fn majority_vote() {
        assert_eq!(majority(&[1, 2, 2, 3]), Some(2));
        assert_eq!(majority::<u8>(&[]), None);
    }
}
