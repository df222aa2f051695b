//! The miniature's world: sprites from the synthetic moving-shapes world, moved by exactly one
//! token cell per frame on a flat background, and the demo / query episodes built from them.

use rand::Rng;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{
    seeded_rng, Action, ActionKind, Colour, Direction, MovingShapes, Shape, WorldConfig,
};
use vidgen_video_io::{Frame, Video};

/// Geometry of the miniature (saved next to the weights as `mini.json`).
///
/// Frames are `size × size` RGB; the tokenizer cuts them into `patch × patch` patches, so a
/// frame is `(size / patch)²` tokens. Objects move `speed` pixels per frame; with
/// `speed == patch` a move is exactly one token cell, which is what lets a decoder this small
/// learn the task in minutes on a laptop CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiniConfig {
    /// Frame side in pixels.
    pub size: u32,
    /// Tokenizer patch side in pixels (divides `size`).
    pub patch: u32,
    /// Object speed in pixels per frame (each moving axis).
    pub speed: u32,
    /// Object radius in pixels (the synthetic world's `radius`; at least 2).
    pub radius: u32,
    /// Frames of a demo clip (the object moves in every frame).
    pub demo_frames: usize,
    /// Frames of the query given to the model (the object is at rest in all of them).
    pub query_frames: usize,
    /// Frames the model generates after the query (the ground truth moves the object).
    pub gen_frames: usize,
    /// The flat background colour (RGB).
    pub background: [u8; 3],
    /// Frames per second written into GIFs.
    pub fps: f64,
}

impl Default for MiniConfig {
    /// 16×16 frames, 4×4 patches (16 tokens per frame), 4 px/frame, radius 2, a 3-frame demo,
    /// a 1-frame query and 1 generated frame.
    fn default() -> Self {
        MiniConfig {
            size: 16,
            patch: 4,
            speed: 4,
            radius: 2,
            demo_frames: 3,
            query_frames: 1,
            gen_frames: 1,
            background: [56, 60, 72],
            fps: 2.0,
        }
    }
}

impl MiniConfig {
    /// Token rows (= columns) per frame.
    pub fn grid(&self) -> usize {
        (self.size / self.patch.max(1)) as usize
    }

    /// Tokens per frame.
    pub fn tokens_per_frame(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Largest object side in pixels (`2·radius + 1`).
    pub fn max_object(&self) -> u32 {
        2 * self.radius + 1
    }

    /// Pixels the query object travels during the generated frames.
    pub fn query_travel(&self) -> u32 {
        self.speed * self.gen_frames as u32
    }

    /// Length of a training sequence (demo, query and its ground-truth continuation).
    pub fn train_len(&self) -> usize {
        (self.demo_frames + self.query_frames + self.gen_frames) * self.tokens_per_frame()
    }

    /// Checks that the numbers fit together; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.patch == 0 || !self.size.is_multiple_of(self.patch) {
            return Err(Error::config(
                "patch",
                format!("{} must divide size {}", self.patch, self.size),
            ));
        }
        if self.radius < 2 {
            return Err(Error::config(
                "radius",
                "the synthetic world draws radius >= 2",
            ));
        }
        if self.speed == 0 {
            return Err(Error::config("speed", "must be >= 1 pixel per frame"));
        }
        if self.demo_frames < 2 || self.query_frames == 0 || self.gen_frames == 0 {
            return Err(Error::config(
                "demo_frames / query_frames / gen_frames",
                "need a demo of >= 2 frames, >= 1 query frame and >= 1 generated frame",
            ));
        }
        // The query object must be able to move either way along both axes.
        if self.max_object() + 2 * self.query_travel() > self.size {
            return Err(Error::config(
                "size",
                format!(
                    "{} px cannot hold a {} px object travelling {} px either way",
                    self.size,
                    self.max_object(),
                    self.query_travel()
                ),
            ));
        }
        if self.max_object() + self.speed * (self.demo_frames as u32 - 1) > self.size {
            return Err(Error::config(
                "demo_frames",
                "the demo object would leave the frame",
            ));
        }
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(Error::config("fps", "must be > 0"));
        }
        Ok(())
    }
}

/// One object cut out of a synthetic-world frame: its shape, colour, texture and pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Sprite {
    /// The outline.
    pub shape: Shape,
    /// The base colour.
    pub colour: Colour,
    /// Width of the bounding box in pixels.
    pub w: u32,
    /// Height of the bounding box in pixels.
    pub h: u32,
    /// `h × w` row-major: `Some(rgb)` where the object is drawn.
    pixels: Vec<Option<[u8; 3]>>,
}

/// A demo / query episode: the frames the model is shown and the ground truth.
#[derive(Debug, Clone)]
pub struct Episode {
    /// The demo clip (`demo_frames` frames), if the condition has one.
    pub demo: Option<Video>,
    /// The direction the demo's object moves in.
    pub demo_direction: Option<Direction>,
    /// The query frames given to the model (object at rest).
    pub query: Video,
    /// The ground-truth continuation (`gen_frames` frames, object moving).
    pub truth: Video,
    /// The direction the query object really moves in the ground truth.
    pub query_direction: Direction,
}

/// Sprites and episodes of the miniature.
#[derive(Debug, Clone)]
pub struct MiniWorld {
    cfg: MiniConfig,
    shapes: MovingShapes,
}

/// The direction pointing the other way.
pub fn opposite(d: Direction) -> Direction {
    let i = Direction::ALL.iter().position(|&x| x == d).unwrap_or(0);
    Direction::ALL[(i + 4) % 8]
}

impl MiniWorld {
    /// A world for `cfg` (validated).
    pub fn new(cfg: MiniConfig) -> Result<Self> {
        cfg.validate()?;
        let r = cfg.radius as f32 / cfg.size as f32;
        let world = WorldConfig {
            speed: (1, 1),
            radius: (r, r),
            actions: vec![ActionKind::Translate],
            ..WorldConfig::new(cfg.size, cfg.size, 2)
        };
        Ok(MiniWorld {
            cfg,
            shapes: MovingShapes::new(world)?,
        })
    }

    /// The geometry.
    pub fn config(&self) -> &MiniConfig {
        &self.cfg
    }

    /// Draws a sprite with the synthetic world's appearance sampler; with `unlike`, the shape
    /// and colour both differ from it (bounded redraws).
    pub fn sprite<R: Rng + ?Sized>(&self, rng: &mut R, unlike: Option<&Sprite>) -> Result<Sprite> {
        let mut app = self.shapes.sample_appearance(rng)?;
        if let Some(u) = unlike {
            for _ in 0..64 {
                if app.shape != u.shape && app.colour != u.colour {
                    break;
                }
                app = self.shapes.sample_appearance(rng)?;
            }
        }
        let action = Action::Translate {
            direction: Direction::Right,
            speed: 1,
        };
        let clip = self.shapes.render(action, app, rng)?;
        let frame = clip
            .video
            .frames()
            .first()
            .ok_or_else(|| Error::invalid("synthetic clip", "no frames"))?;
        let mask = clip
            .masks
            .first()
            .ok_or_else(|| Error::invalid("synthetic clip", "no masks"))?;
        let s = self.cfg.size as usize;
        let (mut x0, mut y0, mut x1, mut y1) = (s, s, 0usize, 0usize);
        for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
            let (x, y) = (i % s, i / s);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x + 1);
            y1 = y1.max(y + 1);
        }
        if x1 <= x0 || y1 <= y0 {
            return Err(Error::invalid(
                "synthetic clip",
                "the object is not visible",
            ));
        }
        let (w, h) = (x1 - x0, y1 - y0);
        let mut pixels = Vec::with_capacity(w * h);
        for y in y0..y1 {
            for x in x0..x1 {
                pixels.push(if mask[y * s + x] {
                    frame.get(x as u32, y as u32)
                } else {
                    None
                });
            }
        }
        Ok(Sprite {
            shape: app.shape,
            colour: app.colour,
            w: w as u32,
            h: h as u32,
            pixels,
        })
    }

    /// One frame: the flat background with `sprite`'s top-left corner at `(x, y)`.
    ///
    /// # Errors
    /// The sprite would stick out of the frame.
    pub fn frame(&self, sprite: &Sprite, x: i64, y: i64) -> Result<Frame> {
        let s = self.cfg.size as i64;
        if x < 0 || y < 0 || x + sprite.w as i64 > s || y + sprite.h as i64 > s {
            return Err(Error::invalid(
                "sprite position",
                format!(
                    "({x}, {y}) puts a {}×{} sprite outside the {s}×{s} frame",
                    sprite.w, sprite.h
                ),
            ));
        }
        let mut f = Frame::filled(self.cfg.size, self.cfg.size, self.cfg.background)?;
        for sy in 0..sprite.h {
            for sx in 0..sprite.w {
                if let Some(rgb) = sprite.pixels[(sy * sprite.w + sx) as usize] {
                    f.put(x as u32 + sx, y as u32 + sy, rgb);
                }
            }
        }
        Ok(f)
    }

    /// `n` frames of `sprite` starting at `(x, y)` and moving `speed` px per frame along `dir`
    /// (`dir = None`: at rest).
    pub fn clip(
        &self,
        sprite: &Sprite,
        (x, y): (i64, i64),
        dir: Option<Direction>,
        n: usize,
    ) -> Result<Video> {
        let (dx, dy) = dir.map_or((0, 0), |d| d.delta());
        let v = self.cfg.speed as i64;
        let frames = (0..n as i64)
            .map(|t| self.frame(sprite, x + dx as i64 * v * t, y + dy as i64 * v * t))
            .collect::<Result<Vec<_>>>()?;
        Video::new(frames, self.cfg.fps)
    }

    /// A demo clip of `sprite` moving along `dir`, placed at random where it stays in view.
    pub fn demo<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        sprite: &Sprite,
        dir: Direction,
    ) -> Result<Video> {
        let travel = (self.cfg.speed * (self.cfg.demo_frames as u32 - 1)) as i64;
        let s = self.cfg.size as i64;
        let (dx, dy) = dir.delta();
        let span = |d: i32, side: u32| -> (i64, i64) {
            let lo = if d < 0 { travel } else { 0 };
            let hi = s - side as i64 - if d > 0 { travel } else { 0 };
            (lo, hi.max(lo))
        };
        let (xs, ys) = (span(dx, sprite.w), span(dy, sprite.h));
        let x = rng.random_range(xs.0..=xs.1);
        let y = rng.random_range(ys.0..=ys.1);
        self.clip(sprite, (x, y), Some(dir), self.cfg.demo_frames)
    }

    /// A query position from which the object can move in any of the 8 directions for the
    /// generated frames (so the query's position does not reveal its direction).
    pub fn query_start<R: Rng + ?Sized>(&self, rng: &mut R, sprite: &Sprite) -> (i64, i64) {
        let m = self.cfg.query_travel() as i64;
        let s = self.cfg.size as i64;
        let x = rng.random_range(m..=(s - sprite.w as i64 - m).max(m));
        let y = rng.random_range(m..=(s - sprite.h as i64 - m).max(m));
        (x, y)
    }

    /// The query frames (object at rest at `start`) and the ground-truth continuation (moving
    /// along `dir` from there).
    pub fn query(
        &self,
        sprite: &Sprite,
        start: (i64, i64),
        dir: Direction,
    ) -> Result<(Video, Video)> {
        let c = &self.cfg;
        let query = self.clip(sprite, start, None, c.query_frames)?;
        let moving = self.clip(sprite, start, Some(dir), c.gen_frames + 1)?;
        let truth = moving.slice(1, c.gen_frames + 1)?;
        Ok((query, truth))
    }

    /// Episode `index` of the evaluation stream `seed`: the query (sprite, position, true
    /// direction) and the demo sprite depend only on `(seed, index)`, so every condition sees
    /// the same queries; `demo_direction` picks the demo's motion (`None`: no demo).
    pub fn episode(
        &self,
        seed: u64,
        index: u64,
        demo_direction: impl FnOnce(Direction, &mut rand_chacha::ChaCha8Rng) -> Option<Direction>,
    ) -> Result<Episode> {
        let mut q_rng = seeded_rng(mix(seed, index, 0));
        let query_direction = Direction::ALL[q_rng.random_range(0..8)];
        let q_sprite = self.sprite(&mut q_rng, None)?;
        let start = self.query_start(&mut q_rng, &q_sprite);
        let (query, truth) = self.query(&q_sprite, start, query_direction)?;
        let mut d_rng = seeded_rng(mix(seed, index, 1));
        let d_sprite = self.sprite(&mut d_rng, Some(&q_sprite))?;
        let demo_dir = demo_direction(query_direction, &mut d_rng);
        let demo = match demo_dir {
            Some(d) => Some(self.demo(&mut d_rng, &d_sprite, d)?),
            None => None,
        };
        Ok(Episode {
            demo,
            demo_direction: demo_dir,
            query,
            truth,
            query_direction,
        })
    }

    /// A training episode: demo and query share a uniformly drawn direction.
    pub fn train_episode<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Episode> {
        let dir = Direction::ALL[rng.random_range(0..8)];
        let q_sprite = self.sprite(rng, None)?;
        let start = self.query_start(rng, &q_sprite);
        let (query, truth) = self.query(&q_sprite, start, dir)?;
        let d_sprite = self.sprite(rng, Some(&q_sprite))?;
        let demo = self.demo(rng, &d_sprite, dir)?;
        Ok(Episode {
            demo: Some(demo),
            demo_direction: Some(dir),
            query,
            truth,
            query_direction: dir,
        })
    }
}

/// A 64-bit seed from `(seed, index, stream)` (splitmix64 finaliser).
pub fn mix(seed: u64, index: u64, stream: u64) -> u64 {
    let mut z = seed
        ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn query_and_truth_move_one_cell() {
        let w = MiniWorld::new(MiniConfig::default()).unwrap();
        for i in 0..50 {
            let e = w.episode(3, i, |d, _| Some(d)).unwrap();
            assert_eq!(e.query.len(), 1);
            assert_eq!(e.truth.len(), 1);
            assert_eq!(e.demo.as_ref().unwrap().len(), 3);
            assert_eq!(e.demo_direction, Some(e.query_direction));
            assert_ne!(e.query.frames()[0], e.truth.frames()[0]);
        }
        // Same queries across conditions.
        let a = w.episode(3, 7, |d, _| Some(d)).unwrap();
        let b = w.episode(3, 7, |_, _| None).unwrap();
        assert_eq!(a.query.frames(), b.query.frames());
        assert!(b.demo.is_none());
    }

    #[test]
    fn opposite_is_an_involution() {
        for d in Direction::ALL {
            assert_eq!(opposite(opposite(d)), d);
            let (a, b) = (d.delta(), opposite(d).delta());
            assert_eq!((a.0 + b.0, a.1 + b.1), (0, 0));
        }
    }

    #[test]
    fn bad_geometry_is_rejected() {
        let cfg = MiniConfig {
            gen_frames: 3,
            ..MiniConfig::default()
        };
        assert!(MiniWorld::new(cfg).is_err());
    }
}
