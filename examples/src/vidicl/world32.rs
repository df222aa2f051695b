//! The sharper miniature's world: 32×32 frames on a flat background, one solid sprite of the
//! synthetic moving-shapes world inside an 8×8 box that lives on a 4-px grid (the VQGAN
//! tokenizer's cells), pushed one cell (4 px) per frame and blocked by the walls.
//!
//! Three ways to draw from it:
//! - **paired episodes** ([`World32::episode`], [`World32::train_episode`]): a demo clip of one
//!   object moving in a direction, a query frame of another object at rest, and the ground
//!   truth continuation (the query object pushed the demo's way for `gen_frames` frames);
//! - **continuous clips** ([`World32::continuous_clip`], the zero-shot recipe's training data):
//!   one object in one uninterrupted clip that keeps its direction with some momentum, may
//!   stop for a frame, and changes direction now and then;
//! - **the environment** ([`World32::push`], used by [`super::sim`]): a position and a push.
//!
//! Physics: a push moves the box by `(dx, dy)` cells, each axis clamped to the frame (a diagonal
//! push against a wall slides along it). The query object starts at least
//! [`World32Config::query_margin`] cells from every wall, so every direction moves it at least
//! that many times and its position says nothing about its direction.

use rand::Rng;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{
    seeded_rng, Action, ActionKind, Colour, Direction, MovingShapes, Shape, Texture, WorldConfig,
};
use vidgen_video_io::{Frame, Video};

use super::world::{mix, opposite, Episode};

/// Geometry of the sharper miniature (saved as `world.json` next to its weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct World32Config {
    /// Frame side in pixels.
    pub size: u32,
    /// Grid cell side in pixels (the tokenizer's stride: one token per cell).
    pub cell: u32,
    /// Side of the object's box in cells.
    pub box_cells: u32,
    /// Object radius in pixels (the synthetic world's; the sprite is `2·radius + 1` wide at
    /// most and must fit in the box).
    pub radius: u32,
    /// Frames of a demo clip (the object moves in every one).
    pub demo_frames: usize,
    /// Frames of the query given to the model (object at rest).
    pub query_frames: usize,
    /// Frames generated after the query.
    pub gen_frames: usize,
    /// Smallest distance in cells from the query object to every wall.
    pub query_margin: u32,
    /// The flat background colour (RGB).
    pub background: [u8; 3],
    /// Frames per second written into GIFs.
    pub fps: f64,
}

impl Default for World32Config {
    /// 32×32 frames, 4-px cells (8×8 = 64 tokens per frame), 8×8 px boxes (2×2 cells),
    /// radius 3, a 3-frame demo, a 1-frame query, 4 generated frames, query margin 2.
    fn default() -> Self {
        World32Config {
            size: 32,
            cell: 4,
            box_cells: 2,
            radius: 3,
            demo_frames: 3,
            query_frames: 1,
            gen_frames: 4,
            query_margin: 2,
            background: [56, 60, 72],
            fps: 4.0,
        }
    }
}

impl World32Config {
    /// Cells per row (= per column).
    pub fn grid(&self) -> usize {
        (self.size / self.cell.max(1)) as usize
    }

    /// Tokens per frame.
    pub fn tokens_per_frame(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Box positions per axis (`grid − box_cells + 1`).
    pub fn positions(&self) -> i64 {
        self.grid() as i64 - self.box_cells as i64 + 1
    }

    /// Frames of a training sequence (demo, query, continuation); also the length of a
    /// zero-shot training clip, so both recipes see sequences of one length.
    pub fn sequence_frames(&self) -> usize {
        self.demo_frames + self.query_frames + self.gen_frames
    }

    /// Checks that the numbers fit together; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.cell == 0 || !self.size.is_multiple_of(self.cell) {
            return Err(Error::config(
                "cell",
                format!("{} must divide size {}", self.cell, self.size),
            ));
        }
        if self.radius < 2 || 2 * self.radius + 1 > self.box_cells * self.cell {
            return Err(Error::config(
                "radius",
                format!(
                    "{} must be >= 2 (the synthetic world's least) and the sprite must fit the \
                     {}-px box",
                    self.radius,
                    self.box_cells * self.cell
                ),
            ));
        }
        if self.demo_frames < 2 || self.query_frames == 0 || self.gen_frames == 0 {
            return Err(Error::config(
                "demo_frames / query_frames / gen_frames",
                "need a demo of >= 2 frames, >= 1 query frame and >= 1 generated frame",
            ));
        }
        let p = self.positions();
        if p < 2 * self.query_margin as i64 + 1 {
            return Err(Error::config(
                "query_margin",
                format!(
                    "{p} positions per axis cannot keep a margin of {}",
                    self.query_margin
                ),
            ));
        }
        if (self.demo_frames as i64 - 1) >= p {
            return Err(Error::config(
                "demo_frames",
                "the demo object would hit a wall",
            ));
        }
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(Error::config("fps", "must be > 0"));
        }
        Ok(())
    }
}

/// A box position in cells (top-left corner; `x` right, `y` down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pos {
    /// Column of the box's left cell.
    pub x: i64,
    /// Row of the box's top cell.
    pub y: i64,
}

/// A solid sprite cut from a synthetic-world frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Sprite32 {
    /// Outline.
    pub shape: Shape,
    /// Colour.
    pub colour: Colour,
    w: u32,
    h: u32,
    pixels: Vec<Option<[u8; 3]>>,
}

/// The zero-shot recipe's clip statistics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClipDynamics {
    /// Chance per frame of turning to a new random direction.
    pub turn: f64,
    /// Chance per frame of resting (no move; the direction is kept).
    pub rest: f64,
}

impl Default for ClipDynamics {
    /// Turns 15% of frames, rests 10%.
    fn default() -> Self {
        ClipDynamics {
            turn: 0.15,
            rest: 0.10,
        }
    }
}

/// Sprites, rendering, physics and episodes of the sharper miniature.
#[derive(Debug, Clone)]
pub struct World32 {
    cfg: World32Config,
    shapes: MovingShapes,
}

impl World32 {
    /// A world for `cfg` (validated).
    pub fn new(cfg: World32Config) -> Result<Self> {
        cfg.validate()?;
        let r = cfg.radius as f32 / cfg.size as f32;
        let world = WorldConfig {
            speed: (1, 1),
            radius: (r, r),
            actions: vec![ActionKind::Translate],
            ..WorldConfig::new(cfg.size, cfg.size, 2)
        };
        Ok(World32 {
            cfg,
            shapes: MovingShapes::new(world)?,
        })
    }

    /// The geometry.
    pub fn config(&self) -> &World32Config {
        &self.cfg
    }

    /// A solid sprite with the synthetic world's shapes and colours; with `unlike`, both shape
    /// and colour differ from it.
    pub fn sprite<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        unlike: Option<&Sprite32>,
    ) -> Result<Sprite32> {
        let mut app = self.shapes.sample_appearance(rng)?;
        if let Some(u) = unlike {
            for _ in 0..64 {
                if app.shape != u.shape && app.colour != u.colour {
                    break;
                }
                app = self.shapes.sample_appearance(rng)?;
            }
        }
        // Solid objects: a 4-px cell of a textured sprite would need far more codes than the
        // small codebook holds (see the asset README).
        app.texture = Texture::Solid;
        let clip = self.shapes.render(
            Action::Translate {
                direction: Direction::Right,
                speed: 1,
            },
            app,
            rng,
        )?;
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
        let side = (self.cfg.box_cells * self.cfg.cell) as usize;
        if w > side || h > side {
            return Err(Error::invalid(
                "sprite",
                format!("{w}×{h} does not fit the {side}-px box"),
            ));
        }
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
        Ok(Sprite32 {
            shape: app.shape,
            colour: app.colour,
            w: w as u32,
            h: h as u32,
            pixels,
        })
    }

    /// Whether `p` keeps the box inside the frame.
    pub fn in_bounds(&self, p: Pos) -> bool {
        let n = self.cfg.positions();
        (0..n).contains(&p.x) && (0..n).contains(&p.y)
    }

    /// The position after pushing the box one cell along `dir` (each axis clamped to the
    /// frame: a blocked axis does not move, the other still does).
    pub fn push(&self, p: Pos, dir: Direction) -> Pos {
        let (dx, dy) = dir.delta();
        let n = self.cfg.positions() - 1;
        Pos {
            x: (p.x + dx as i64).clamp(0, n),
            y: (p.y + dy as i64).clamp(0, n),
        }
    }

    /// One frame: the flat background with `sprite` centred in its box at `p`.
    ///
    /// # Errors
    /// A position outside the frame.
    pub fn frame(&self, sprite: &Sprite32, p: Pos) -> Result<Frame> {
        if !self.in_bounds(p) {
            return Err(Error::invalid(
                "box position",
                format!(
                    "({}, {}) is outside the {n}×{n} positions",
                    p.x,
                    p.y,
                    n = self.cfg.positions()
                ),
            ));
        }
        let side = self.cfg.box_cells * self.cfg.cell;
        let ox = p.x as u32 * self.cfg.cell + (side - sprite.w) / 2;
        let oy = p.y as u32 * self.cfg.cell + (side - sprite.h) / 2;
        let mut f = Frame::filled(self.cfg.size, self.cfg.size, self.cfg.background)?;
        for sy in 0..sprite.h {
            for sx in 0..sprite.w {
                if let Some(rgb) = sprite.pixels[(sy * sprite.w + sx) as usize] {
                    f.put(ox + sx, oy + sy, rgb);
                }
            }
        }
        Ok(f)
    }

    /// Frames of `sprite` at each position.
    pub fn render(&self, sprite: &Sprite32, path: &[Pos]) -> Result<Video> {
        let frames = path
            .iter()
            .map(|&p| self.frame(sprite, p))
            .collect::<Result<Vec<_>>>()?;
        Video::new(frames, self.cfg.fps)
    }

    /// `n` positions starting at `p`, each the push of the previous one along `dir`
    /// (`None`: at rest).
    pub fn path(&self, p: Pos, dir: Option<Direction>, n: usize) -> Vec<Pos> {
        let mut out = Vec::with_capacity(n);
        let mut q = p;
        for i in 0..n {
            if i > 0 {
                if let Some(d) = dir {
                    q = self.push(q, d);
                }
            }
            out.push(q);
        }
        out
    }

    /// A uniformly drawn start from which `steps` pushes along `dir` never touch a wall.
    pub fn free_start<R: Rng + ?Sized>(&self, rng: &mut R, dir: Direction, steps: i64) -> Pos {
        let n = self.cfg.positions();
        let (dx, dy) = dir.delta();
        let span = |d: i32| -> (i64, i64) {
            let lo = if d < 0 { steps } else { 0 };
            let hi = n - 1 - if d > 0 { steps } else { 0 };
            (lo, hi.max(lo))
        };
        let (xs, ys) = (span(dx), span(dy));
        Pos {
            x: rng.random_range(xs.0..=xs.1),
            y: rng.random_range(ys.0..=ys.1),
        }
    }

    /// A query start at least `query_margin` cells from every wall.
    pub fn query_start<R: Rng + ?Sized>(&self, rng: &mut R) -> Pos {
        let m = self.cfg.query_margin as i64;
        let hi = self.cfg.positions() - 1 - m;
        Pos {
            x: rng.random_range(m..=hi.max(m)),
            y: rng.random_range(m..=hi.max(m)),
        }
    }

    /// A demo clip of `sprite` moving along `dir` without touching a wall.
    pub fn demo<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        sprite: &Sprite32,
        dir: Direction,
    ) -> Result<Video> {
        let n = self.cfg.demo_frames;
        let start = self.free_start(rng, dir, n as i64 - 1);
        self.render(sprite, &self.path(start, Some(dir), n))
    }

    /// The query frames (at rest at `start`) and the ground truth (pushed along `dir`).
    pub fn query(&self, sprite: &Sprite32, start: Pos, dir: Direction) -> Result<(Video, Video)> {
        let c = &self.cfg;
        let query = self.render(sprite, &vec![start; c.query_frames])?;
        let moving = self.path(start, Some(dir), c.gen_frames + 1);
        let truth = self.render(sprite, &moving[1..])?;
        Ok((query, truth))
    }

    /// Episode `index` of evaluation stream `seed`. The query (sprite, start, true direction)
    /// and the demo's sprite and placement depend only on `(seed, index)`, so every condition
    /// sees the same queries; `demo_direction` picks the demo's motion (`None`: no demo).
    pub fn episode(
        &self,
        seed: u64,
        index: u64,
        demo_direction: impl FnOnce(Direction, &mut rand_chacha::ChaCha8Rng) -> Option<Direction>,
    ) -> Result<Episode> {
        let mut q_rng = seeded_rng(mix(seed, index, 100));
        let query_direction = Direction::ALL[q_rng.random_range(0..8)];
        let q_sprite = self.sprite(&mut q_rng, None)?;
        let start = self.query_start(&mut q_rng);
        let (query, truth) = self.query(&q_sprite, start, query_direction)?;
        let mut d_rng = seeded_rng(mix(seed, index, 101));
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

    /// The query object's shape and colour in episode `index` of stream `seed` (replays the
    /// draws of [`World32::episode`]).
    pub fn query_appearance(&self, seed: u64, index: u64) -> Result<(Shape, Colour)> {
        let mut q_rng = seeded_rng(mix(seed, index, 100));
        let _ = q_rng.random_range(0..8usize);
        let s = self.sprite(&mut q_rng, None)?;
        Ok((s.shape, s.colour))
    }

    /// A paired training episode: demo and query share a uniformly drawn direction.
    pub fn train_episode<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Episode> {
        let dir = Direction::ALL[rng.random_range(0..8)];
        let q_sprite = self.sprite(rng, None)?;
        let start = self.query_start(rng);
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

    /// One continuous clip of `n` frames (the zero-shot recipe): one object from a uniform
    /// start with a uniform first direction; before each move it turns to a new random
    /// direction with probability `dynamics.turn` (always when the wall blocks it completely)
    /// and rests with probability `dynamics.rest`. Returns the clip and the direction of each
    /// move (`None` for a rest).
    pub fn continuous_clip<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        n: usize,
        dynamics: &ClipDynamics,
    ) -> Result<(Video, Vec<Option<Direction>>)> {
        let sprite = self.sprite(rng, None)?;
        let np = self.cfg.positions();
        let mut p = Pos {
            x: rng.random_range(0..np),
            y: rng.random_range(0..np),
        };
        let mut dir = Direction::ALL[rng.random_range(0..8)];
        let mut path = vec![p];
        let mut moves = Vec::with_capacity(n.saturating_sub(1));
        for _ in 1..n {
            if rng.random_bool(dynamics.turn.clamp(0.0, 1.0)) || self.push(p, dir) == p {
                // A new direction that moves the object (one always exists).
                for _ in 0..32 {
                    dir = Direction::ALL[rng.random_range(0..8)];
                    if self.push(p, dir) != p {
                        break;
                    }
                }
            }
            if rng.random_bool(dynamics.rest.clamp(0.0, 1.0)) {
                moves.push(None);
            } else {
                p = self.push(p, dir);
                moves.push(Some(dir));
            }
            path.push(p);
        }
        Ok((self.render(&sprite, &path)?, moves))
    }

    /// Every frame a tokenizer should see: the frames of `n` paired training episodes and of
    /// `n` continuous clips (seeded).
    pub fn tokenizer_frames(&self, seed: u64, n: usize) -> Result<Vec<Frame>> {
        let mut rng = seeded_rng(seed);
        let mut frames = Vec::new();
        for _ in 0..n {
            let e = self.train_episode(&mut rng)?;
            if let Some(d) = &e.demo {
                frames.extend(d.frames().iter().cloned());
            }
            frames.extend(e.query.frames().iter().cloned());
            frames.extend(e.truth.frames().iter().cloned());
            let (clip, _) = self.continuous_clip(
                &mut rng,
                self.cfg.sequence_frames(),
                &ClipDynamics::default(),
            )?;
            frames.extend(clip.into_frames());
        }
        Ok(frames)
    }
}

/// The demo direction of a condition that conflicts with `d` (the opposite way).
pub fn conflicting(d: Direction) -> Direction {
    opposite(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use vidgen_motion_codec::{sequence_direction, FrameShiftConfig};

    #[test]
    fn episodes_have_the_configured_lengths_and_true_motion() {
        let w = World32::new(World32Config::default()).unwrap();
        let cfg = FrameShiftConfig::default();
        for i in 0..40 {
            let e = w.episode(1, i, |d, _| Some(d)).unwrap();
            assert_eq!(e.demo.as_ref().unwrap().len(), 3);
            assert_eq!(e.query.len(), 1);
            assert_eq!(e.truth.len(), 4);
            let mut run: Vec<&Frame> = vec![&e.query.frames()[0]];
            run.extend(e.truth.frames());
            assert_eq!(
                sequence_direction(&run, &cfg).unwrap(),
                Some(e.query_direction),
                "episode {i}"
            );
            let demo: Vec<&Frame> = e.demo.as_ref().unwrap().frames().iter().collect();
            assert_eq!(sequence_direction(&demo, &cfg).unwrap(), e.demo_direction);
        }
        let a = w.episode(1, 3, |d, _| Some(d)).unwrap();
        let b = w.episode(1, 3, |_, _| None).unwrap();
        assert_eq!(a.query.frames(), b.query.frames());
        assert!(b.demo.is_none());
    }

    #[test]
    fn pushes_slide_along_walls() {
        let w = World32::new(World32Config::default()).unwrap();
        let p = w.push(Pos { x: 0, y: 3 }, Direction::UpLeft);
        assert_eq!(p, Pos { x: 0, y: 2 });
        let p = w.push(Pos { x: 6, y: 6 }, Direction::DownRight);
        assert_eq!(p, Pos { x: 6, y: 6 });
        assert_eq!(
            w.path(Pos { x: 2, y: 2 }, Some(Direction::Left), 4).len(),
            4
        );
    }

    #[test]
    fn continuous_clips_move_most_of_the_time() {
        let w = World32::new(World32Config::default()).unwrap();
        let mut rng = seeded_rng(4);
        let (clip, moves) = w
            .continuous_clip(&mut rng, 8, &ClipDynamics::default())
            .unwrap();
        assert_eq!(clip.len(), 8);
        assert_eq!(moves.len(), 7);
        let mut moved = 0;
        for i in 0..50 {
            let (c, _) = w
                .continuous_clip(&mut seeded_rng(i), 8, &ClipDynamics::default())
                .unwrap();
            moved += c.frames().windows(2).filter(|p| p[0] != p[1]).count();
        }
        assert!(moved > 50 * 7 / 2, "{moved}");
    }
}
