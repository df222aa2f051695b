//! The miniature's world: video-io's moving shapes (`vidgen_video_io::synth`) on a flat
//! background, one object translating one pixel per frame in one of 8 directions, and the
//! prompts that describe it (`"a red square moves left"`).
//!
//! Clips are drawn by [`MovingShapes`] (shape, colour, texture, radius, placement, motion)
//! and then every pixel outside the object's mask is painted the flat background colour: the
//! miniature's tokenizers and detokenizer are small enough to train in minutes on a CPU, and
//! the world's textured backgrounds would take most of their capacity. The object keeps its
//! texture, so block matching still finds its motion.

use rand::Rng;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{
    Action, ActionKind, Colour, Direction, MovingShapes, Shape, WorldConfig,
};
use vidgen_video_io::{Frame, Video};

/// Geometry of the miniature's world (saved as `world.json` with its weights).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LavitWorldConfig {
    /// Frame width, pixels (72: the `20 × 36` motion grid's aspect).
    pub width: u32,
    /// Frame height, pixels (40).
    pub height: u32,
    /// Frames per clip (24, Video-LaVIT's 4 s at 6 fps).
    pub clip_frames: usize,
    /// Frames per second (6).
    pub fps: f64,
    /// Object radius as a fraction of the height, inclusive range.
    pub radius: (f32, f32),
    /// The flat background colour.
    pub background: [u8; 3],
}

impl Default for LavitWorldConfig {
    fn default() -> Self {
        Self {
            width: 72,
            height: 40,
            clip_frames: 24,
            fps: 6.0,
            radius: (0.15, 0.175),
            background: [56, 60, 72],
        }
    }
}

/// What a prompt asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptSpec {
    /// The object's colour.
    pub colour: Colour,
    /// The object's shape.
    pub shape: Shape,
    /// Where it moves (screen: x right, y down).
    pub direction: Direction,
}

/// The words of a direction in prompts (`"up and left"`).
pub fn direction_words(d: Direction) -> &'static str {
    match d {
        Direction::Right => "right",
        Direction::UpRight => "up and right",
        Direction::Up => "up",
        Direction::UpLeft => "up and left",
        Direction::Left => "left",
        Direction::DownLeft => "down and left",
        Direction::Down => "down",
        Direction::DownRight => "down and right",
    }
}

impl PromptSpec {
    /// `"a {colour} {shape} moves {direction}"`.
    pub fn text(&self) -> String {
        format!(
            "a {} {} moves {}",
            self.colour.name(),
            self.shape.name(),
            direction_words(self.direction)
        )
    }

    /// Reads a prompt of the grammar back (case and extra spaces ignored); `None` when it does
    /// not name exactly one colour, one shape and a direction.
    pub fn parse(text: &str) -> Option<Self> {
        let words: Vec<String> = text
            .split_whitespace()
            .map(|w| {
                w.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            })
            .collect();
        let colour = Colour::ALL
            .into_iter()
            .find(|c| words.iter().any(|w| w == c.name()))?;
        let shape = Shape::ALL
            .into_iter()
            .find(|s| words.iter().any(|w| w == s.name()))?;
        let pos = words.iter().position(|w| w == "moves" || w == "move")?;
        let rest = words[pos + 1..].join(" ");
        let direction = Direction::ALL
            .into_iter()
            .find(|d| direction_words(*d) == rest.trim())?;
        Some(Self {
            colour,
            shape,
            direction,
        })
    }

    /// A uniformly random prompt.
    pub fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Self {
            colour: Colour::ALL[rng.random_range(0..Colour::ALL.len())],
            shape: Shape::ALL[rng.random_range(0..Shape::ALL.len())],
            direction: Direction::ALL[rng.random_range(0..Direction::ALL.len())],
        }
    }

    /// Every word any prompt of the grammar uses.
    pub fn vocabulary() -> Vec<&'static str> {
        let mut v = vec!["a", "moves", "and"];
        v.extend(Colour::ALL.iter().map(|c| c.name()));
        v.extend(Shape::ALL.iter().map(|s| s.name()));
        v.extend(["left", "right", "up", "down"]);
        v
    }
}

/// One rendered video with what it shows.
#[derive(Clone, Debug)]
pub struct WorldVideo {
    /// The frames (flat background).
    pub video: Video,
    /// The prompt it satisfies.
    pub spec: PromptSpec,
    /// Object centre per frame, pixels.
    pub centers: Vec<(f32, f32)>,
}

/// The miniature's world.
#[derive(Clone, Debug)]
pub struct LavitWorld {
    cfg: LavitWorldConfig,
}

impl LavitWorld {
    /// A world of `cfg`.
    ///
    /// # Errors
    /// Sizes below 16 px, fewer than 2 frames per clip, a bad radius range or fps.
    pub fn new(cfg: LavitWorldConfig) -> Result<Self> {
        if cfg.width < 16 || cfg.height < 16 {
            return Err(Error::config("width/height", "need at least 16x16 pixels"));
        }
        if cfg.clip_frames < 2 {
            return Err(Error::config("clip_frames", "need at least 2"));
        }
        if !(cfg.fps.is_finite() && cfg.fps > 0.0) {
            return Err(Error::config("fps", "must be > 0"));
        }
        let (a, b) = cfg.radius;
        if !(a > 0.0 && a <= b && b <= 0.5) {
            return Err(Error::config("radius", "need 0 < min <= max <= 0.5"));
        }
        Ok(Self { cfg })
    }

    /// The geometry.
    pub fn config(&self) -> &LavitWorldConfig {
        &self.cfg
    }

    fn shapes(&self, frames: usize, spec: &PromptSpec) -> Result<MovingShapes> {
        let c = &self.cfg;
        let mut w = WorldConfig::new(c.width, c.height, frames);
        w.fps = c.fps;
        w.speed = (1, 1);
        // The synthetic world's radius is a fraction of the shorter side (the height here).
        w.radius = c.radius;
        w.shapes = vec![spec.shape];
        w.colours = vec![spec.colour];
        w.actions = vec![ActionKind::Translate];
        MovingShapes::new(w)
    }

    /// A video of `clips` clips (`clips · clip_frames` frames) of `spec`: the object moves
    /// one pixel per frame (it may leave the view in long videos).
    ///
    /// # Errors
    /// `clips == 0`; rendering errors.
    pub fn render<R: Rng + ?Sized>(
        &self,
        spec: &PromptSpec,
        clips: usize,
        rng: &mut R,
    ) -> Result<WorldVideo> {
        if clips == 0 {
            return Err(Error::invalid("clips", "need at least one clip"));
        }
        let frames = clips * self.cfg.clip_frames;
        let world = self.shapes(frames, spec)?;
        let clip = world.clip_with_action(
            Action::Translate {
                direction: spec.direction,
                speed: 1,
            },
            rng,
        )?;
        let bg = self.cfg.background;
        let flat: Vec<Frame> = clip
            .video
            .frames()
            .iter()
            .zip(&clip.masks)
            .map(|(f, m)| {
                let mut d = f.data().to_vec();
                for (i, inside) in m.iter().enumerate() {
                    if !inside {
                        d[3 * i..3 * i + 3].copy_from_slice(&bg);
                    }
                }
                Frame::new(f.width(), f.height(), d)
            })
            .collect::<Result<_>>()?;
        Ok(WorldVideo {
            video: Video::new(flat, self.cfg.fps)?,
            spec: *spec,
            centers: clip.centers,
        })
    }

    /// A random prompt and its video.
    ///
    /// # Errors
    /// As [`LavitWorld::render`].
    pub fn sample<R: Rng + ?Sized>(&self, clips: usize, rng: &mut R) -> Result<WorldVideo> {
        let spec = PromptSpec::sample(rng);
        self.render(&spec, clips, rng)
    }
}

/// What a frame shows, as far as a simple reader can tell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameReading {
    /// The palette colour most object pixels are nearest to (`None`: no object pixels).
    pub colour: Option<Colour>,
    /// The outline whose template best overlaps the object's mask (IoU), `None` without one.
    pub shape: Option<Shape>,
    /// Object pixels.
    pub area: usize,
}

/// Reads the object's colour and shape off a frame: pixels farther than 60 (RGB distance)
/// from the background are the object; each votes for its nearest palette colour (a pixel
/// also matches a colour's darker texture shade, 3/5 of it); the mask is compared by IoU with
/// every outline centred on the mask's centroid, at the radius whose area matches.
pub fn read_frame(frame: &Frame, background: [u8; 3]) -> FrameReading {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let d = frame.data();
    let dist = |a: [u8; 3], b: &[u8]| -> f32 {
        (0..3)
            .map(|k| {
                let x = a[k] as f32 - b[k] as f32;
                x * x
            })
            .sum::<f32>()
            .sqrt()
    };
    let mut votes = [0usize; 8];
    let mut mask = vec![false; w * h];
    let (mut sx, mut sy, mut n) = (0f32, 0f32, 0usize);
    for i in 0..w * h {
        let p = &d[3 * i..3 * i + 3];
        if dist(background, p) <= 60.0 {
            continue;
        }
        mask[i] = true;
        sx += (i % w) as f32 + 0.5;
        sy += (i / w) as f32 + 0.5;
        n += 1;
        let mut best = (f32::INFINITY, 0);
        for (k, c) in Colour::ALL.iter().enumerate() {
            let rgb = c.rgb();
            let dark = [rgb[0] / 5 * 3, rgb[1] / 5 * 3, rgb[2] / 5 * 3];
            let e = dist(rgb, p).min(dist(dark, p));
            if e < best.0 {
                best = (e, k);
            }
        }
        votes[best.1] += 1;
    }
    if n == 0 {
        return FrameReading {
            colour: None,
            shape: None,
            area: 0,
        };
    }
    let colour = votes
        .iter()
        .enumerate()
        .max_by_key(|(_, v)| **v)
        .map(|(k, _)| Colour::ALL[k]);
    let (cx, cy) = (sx / n as f32, sy / n as f32);
    let mut best: Option<(f32, Shape)> = None;
    for shape in Shape::ALL {
        // The radius whose template area matches the mask's (searched over half pixels).
        let area_at = |r: f32| -> usize {
            let mut a = 0;
            for y in 0..h {
                for x in 0..w {
                    let (u, v) = ((x as f32 + 0.5 - cx) / r, (y as f32 + 0.5 - cy) / r);
                    a += usize::from(shape.contains(u, v));
                }
            }
            a
        };
        let mut r_best = (usize::MAX, 1.0f32);
        let mut r = 1.0f32;
        while r <= h as f32 {
            let diff = area_at(r).abs_diff(n);
            if diff < r_best.0 {
                r_best = (diff, r);
            }
            r += 0.5;
        }
        let r = r_best.1;
        let (mut inter, mut uni) = (0usize, 0usize);
        for y in 0..h {
            for x in 0..w {
                let (u, v) = ((x as f32 + 0.5 - cx) / r, (y as f32 + 0.5 - cy) / r);
                let t = shape.contains(u, v);
                let m = mask[y * w + x];
                inter += usize::from(t && m);
                uni += usize::from(t || m);
            }
        }
        let iou = inter as f32 / uni.max(1) as f32;
        if best.is_none_or(|(b, _)| iou > b) {
            best = Some((iou, shape));
        }
    }
    FrameReading {
        colour,
        shape: best.map(|(_, s)| s),
        area: n,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use vidgen_video_io::synth::seeded_rng;

    #[test]
    fn prompts_round_trip() {
        let mut rng = seeded_rng(3);
        for _ in 0..50 {
            let s = PromptSpec::sample(&mut rng);
            assert_eq!(PromptSpec::parse(&s.text()), Some(s));
        }
        assert_eq!(PromptSpec::parse("a red square"), None);
        assert_eq!(
            PromptSpec::parse("A Red Square moves  LEFT!").map(|s| s.direction),
            Some(Direction::Left)
        );
    }

    #[test]
    fn rendered_clips_show_the_prompt() {
        let world = LavitWorld::new(LavitWorldConfig::default()).unwrap();
        let mut rng = seeded_rng(5);
        let (mut colour_ok, mut shape_ok, n) = (0, 0, 24);
        for _ in 0..n {
            let v = world.sample(1, &mut rng).unwrap();
            assert_eq!(v.video.len(), 24);
            assert_eq!((v.video.width(), v.video.height()), (72, 40));
            let (x0, y0) = v.centers[0];
            let (x1, y1) = v.centers[23];
            let (dx, dy) = v.spec.direction.delta();
            assert_eq!(((x1 - x0) / 23.0, (y1 - y0) / 23.0), (dx as f32, dy as f32));
            let r = read_frame(&v.video.frames()[0], world.config().background);
            colour_ok += usize::from(r.colour == Some(v.spec.colour));
            shape_ok += usize::from(r.shape == Some(v.spec.shape));
        }
        assert_eq!(colour_ok, n);
        assert!(shape_ok >= n * 3 / 4, "shape read right on {shape_ok}/{n}");
    }
}
