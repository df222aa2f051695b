//! The miniature's world: one solid object (a shape of the synthetic moving-shapes world in one
//! of its colours) translating at a fixed speed on a flat background, with captions at several
//! levels of detail.
//!
//! Objects are cut from [`vidgen_video_io::synth`] renders (its shape outlines), then drawn
//! with a solid colour and moved by exactly `speed` pixels per frame, so that a clip's object,
//! colour and direction are known exactly and re-measurable from the pixels
//! ([`crate::vimi::probe`]).

use rand::Rng;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{
    seeded_rng, Action, ActionKind, Appearance, Background, Colour, Direction, MovingShapes, Shape,
    Texture, WorldConfig,
};
use vidgen_video_io::{Frame, Video};

/// Geometry and vocabulary of the world (saved with the miniature).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldSpec {
    /// Frame side in pixels.
    pub size: u32,
    /// Frames per clip.
    pub frames: usize,
    /// Object radius in pixels (the object fits a `2·radius + 1` square).
    pub radius: u32,
    /// Pixels per frame along each moving axis.
    pub speed: u32,
    /// The flat background (RGB).
    pub background: [u8; 3],
    /// Shapes objects are drawn from (names as [`Shape::name`]).
    pub shapes: Vec<String>,
    /// Colours objects are drawn from (names as [`Colour::name`]).
    pub colours: Vec<String>,
    /// Frames per second of written GIFs.
    pub fps: f64,
}

impl Default for WorldSpec {
    /// 16×16, 4 frames, radius 3, 2 px per frame, four shapes that stay distinct at this size
    /// (square, triangle, cross, ring) and six well-separated colours.
    fn default() -> Self {
        Self {
            size: 16,
            frames: 4,
            radius: 3,
            speed: 2,
            background: [56, 60, 72],
            shapes: ["square", "triangle", "cross", "ring"]
                .map(String::from)
                .to_vec(),
            colours: ["red", "green", "blue", "yellow", "magenta", "white"]
                .map(String::from)
                .to_vec(),
            fps: 4.0,
        }
    }
}

/// A shape by its name.
pub fn shape_named(name: &str) -> Option<Shape> {
    Shape::ALL.iter().copied().find(|s| s.name() == name)
}

/// A colour by its name.
pub fn colour_named(name: &str) -> Option<Colour> {
    Colour::ALL.iter().copied().find(|c| c.name() == name)
}

/// The words a caption uses for a direction (`"up and to the left"`).
pub fn direction_words(d: Direction) -> &'static str {
    match d {
        Direction::Right => "right",
        Direction::UpRight => "up and to the right",
        Direction::Up => "up",
        Direction::UpLeft => "up and to the left",
        Direction::Left => "left",
        Direction::DownLeft => "down and to the left",
        Direction::Down => "down",
        Direction::DownRight => "down and to the right",
    }
}

/// How much of a clip a caption names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptionStyle {
    /// `a blue triangle moving left`.
    Full,
    /// `a triangle moving left` (no colour).
    ShapeOnly,
    /// `a blue shape moving left` (no shape).
    ColourOnly,
    /// `a shape moving left` (appearance left open: VIMI-mini's ambiguous text).
    Ambiguous,
    /// `a blue triangle` (no motion: the subject alone).
    Subject,
    /// `a shape` (nothing).
    Nothing,
}

/// One clip's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scene {
    /// The outline.
    pub shape: Shape,
    /// The colour.
    pub colour: Colour,
    /// The direction of motion.
    pub direction: Direction,
    /// Top-left corner of the object's box in the first frame.
    pub start: (i32, i32),
}

impl Scene {
    /// The caption of this scene in `style`.
    pub fn caption(&self, style: CaptionStyle) -> String {
        let (c, s, d) = (
            self.colour.name(),
            self.shape.name(),
            direction_words(self.direction),
        );
        match style {
            CaptionStyle::Full => format!("a {c} {s} moving {d}"),
            CaptionStyle::ShapeOnly => format!("a {s} moving {d}"),
            CaptionStyle::ColourOnly => format!("a {c} shape moving {d}"),
            CaptionStyle::Ambiguous => format!("a shape moving {d}"),
            CaptionStyle::Subject => format!("a {c} {s}"),
            CaptionStyle::Nothing => "a shape".to_string(),
        }
    }
}

/// The world: sprite masks per shape, rendering, sampling.
#[derive(Debug, Clone)]
pub struct MiniWorld {
    spec: WorldSpec,
    shapes: Vec<Shape>,
    colours: Vec<Colour>,
    /// Per shape (in `shapes` order): the `(2r+1)²` mask, row-major.
    masks: Vec<Vec<bool>>,
}

impl MiniWorld {
    /// Builds the world (the shape masks come from one synthetic-world render each).
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field: unknown shape / colour names, empty lists, a
    /// radius below 2, a frame too small for the object's travel, fewer than 2 frames.
    pub fn new(spec: WorldSpec) -> Result<Self> {
        let shapes = spec
            .shapes
            .iter()
            .map(|n| {
                shape_named(n)
                    .ok_or_else(|| Error::config("shapes", format!("unknown shape `{n}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        let colours = spec
            .colours
            .iter()
            .map(|n| {
                colour_named(n)
                    .ok_or_else(|| Error::config("colours", format!("unknown colour `{n}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        if shapes.is_empty() || colours.is_empty() {
            return Err(Error::config("shapes / colours", "must not be empty"));
        }
        if spec.radius < 2 {
            return Err(Error::config(
                "radius",
                "the synthetic world draws radius >= 2",
            ));
        }
        if spec.frames < 2 || spec.speed == 0 {
            return Err(Error::config(
                "frames / speed",
                "need at least 2 frames and a speed of at least 1 pixel per frame",
            ));
        }
        let side = 2 * spec.radius + 1;
        if side + spec.speed * (spec.frames as u32 - 1) > spec.size {
            return Err(Error::config(
                "size",
                format!(
                    "{} px cannot hold a {side} px object travelling {} px",
                    spec.size,
                    spec.speed * (spec.frames as u32 - 1)
                ),
            ));
        }
        if !(spec.fps.is_finite() && spec.fps > 0.0) {
            return Err(Error::config("fps", "must be > 0"));
        }
        let masks = shapes
            .iter()
            .map(|&s| sprite_mask(s, spec.radius))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            spec,
            shapes,
            colours,
            masks,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &WorldSpec {
        &self.spec
    }

    /// The shapes.
    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// The colours.
    pub fn colours(&self) -> &[Colour] {
        &self.colours
    }

    /// Side of the object's box (`2·radius + 1`).
    pub fn side(&self) -> u32 {
        2 * self.spec.radius + 1
    }

    /// The object mask of `shape` (`side × side`, row-major), if the world has the shape.
    pub fn mask(&self, shape: Shape) -> Option<&[bool]> {
        let i = self.shapes.iter().position(|&s| s == shape)?;
        Some(&self.masks[i])
    }

    /// Pixels the object travels over the clip along a moving axis.
    pub fn travel(&self) -> u32 {
        self.spec.speed * (self.spec.frames as u32 - 1)
    }

    /// A random scene with the given appearance / direction where fixed.
    ///
    /// # Errors
    /// None in practice (a valid world always has room).
    pub fn scene<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        shape: Option<Shape>,
        colour: Option<Colour>,
        direction: Option<Direction>,
    ) -> Result<Scene> {
        let shape = shape.unwrap_or_else(|| self.shapes[rng.random_range(0..self.shapes.len())]);
        let colour =
            colour.unwrap_or_else(|| self.colours[rng.random_range(0..self.colours.len())]);
        let direction = direction.unwrap_or_else(|| Direction::ALL[rng.random_range(0..8)]);
        let (dx, dy) = direction.delta();
        let free = (self.spec.size - self.side()) as i32;
        let travel = self.travel() as i32;
        let span = |d: i32| -> (i32, i32) {
            match d {
                1 => (0, free - travel),
                -1 => (travel, free),
                _ => (0, free),
            }
        };
        let (x0, x1) = span(dx);
        let (y0, y1) = span(dy);
        Ok(Scene {
            shape,
            colour,
            direction,
            start: (rng.random_range(x0..=x1), rng.random_range(y0..=y1)),
        })
    }

    /// The object's top-left corner at frame `t`.
    pub fn position(&self, scene: &Scene, t: usize) -> (i32, i32) {
        let (dx, dy) = scene.direction.delta();
        let s = (self.spec.speed as i32) * t as i32;
        (scene.start.0 + dx * s, scene.start.1 + dy * s)
    }

    /// One frame of `scene` at time `t`.
    ///
    /// # Errors
    /// A shape the world does not have.
    pub fn frame(&self, scene: &Scene, t: usize) -> Result<Frame> {
        let mask = self
            .mask(scene.shape)
            .ok_or_else(|| Error::invalid("scene.shape", "not a shape of this world"))?;
        let n = self.spec.size;
        let mut f = Frame::filled(n, n, self.spec.background)?;
        let (x0, y0) = self.position(scene, t);
        let side = self.side() as i32;
        let rgb = scene.colour.rgb();
        for (i, &m) in mask.iter().enumerate() {
            if !m {
                continue;
            }
            let (x, y) = (x0 + i as i32 % side, y0 + i as i32 / side);
            if x >= 0 && y >= 0 && (x as u32) < n && (y as u32) < n {
                f.put(x as u32, y as u32, rgb);
            }
        }
        Ok(f)
    }

    /// The whole clip of `scene`.
    ///
    /// # Errors
    /// As [`MiniWorld::frame`].
    pub fn clip(&self, scene: &Scene) -> Result<Video> {
        let frames = (0..self.spec.frames)
            .map(|t| self.frame(scene, t))
            .collect::<Result<Vec<_>>>()?;
        Video::new(frames, self.spec.fps)
    }

    /// A still of the object (its first frame): an example image.
    ///
    /// # Errors
    /// As [`MiniWorld::frame`].
    pub fn still(&self, scene: &Scene) -> Result<Frame> {
        self.frame(scene, 0)
    }
}

/// The object mask of `shape` at `radius`, cut out of a synthetic-world render.
fn sprite_mask(shape: Shape, radius: u32) -> Result<Vec<bool>> {
    let size = (2 * radius + 1) * 4;
    let r = radius as f32 / size as f32;
    let world = MovingShapes::new(WorldConfig {
        speed: (1, 1),
        radius: (r, r),
        actions: vec![ActionKind::Translate],
        ..WorldConfig::new(size, size, 2)
    })?;
    let app = Appearance {
        shape,
        colour: Colour::White,
        texture: Texture::Solid,
        radius,
        background: Background::Checker,
        background_seed: 0,
    };
    let action = Action::Translate {
        direction: Direction::Right,
        speed: 1,
    };
    let clip = world.render(action, app, &mut seeded_rng(0))?;
    let mask = clip
        .masks
        .first()
        .ok_or_else(|| Error::invalid("synthetic clip", "no masks"))?;
    let (cx, cy) = clip
        .centers
        .first()
        .copied()
        .ok_or_else(|| Error::invalid("synthetic clip", "no centre"))?;
    // The centre sits on a pixel centre: pixel (floor(cx), floor(cy)) is the box's middle.
    let (mx, my) = (cx.floor() as i64, cy.floor() as i64);
    let side = (2 * radius + 1) as i64;
    let s = size as i64;
    let mut out = vec![false; (side * side) as usize];
    for y in 0..side {
        for x in 0..side {
            let (wx, wy) = (mx - radius as i64 + x, my - radius as i64 + y);
            if wx >= 0 && wy >= 0 && wx < s && wy < s {
                out[(y * side + x) as usize] = mask[(wy * s + wx) as usize];
            }
        }
    }
    if !out.iter().any(|&b| b) {
        return Err(Error::invalid(
            "synthetic clip",
            "the object is not visible",
        ));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn clips_move_by_speed_and_stay_in_view() {
        let w = MiniWorld::new(WorldSpec::default()).unwrap();
        let mut rng = seeded_rng(1);
        for _ in 0..200 {
            let sc = w.scene(&mut rng, None, None, None).unwrap();
            let clip = w.clip(&sc).unwrap();
            assert_eq!(clip.len(), 4);
            let count = |f: &Frame| {
                f.data()
                    .chunks(3)
                    .filter(|p| *p != w.spec().background)
                    .count()
            };
            let n0 = count(&clip.frames()[0]);
            assert!(n0 > 0);
            // the whole object is visible in every frame
            for f in clip.frames() {
                assert_eq!(count(f), n0, "{sc:?}");
            }
        }
        // masks differ between shapes
        let m: Vec<&[bool]> = w.shapes().iter().map(|&s| w.mask(s).unwrap()).collect();
        for i in 0..m.len() {
            for j in i + 1..m.len() {
                assert_ne!(m[i], m[j]);
            }
        }
        assert!(MiniWorld::new(WorldSpec {
            size: 8,
            ..WorldSpec::default()
        })
        .is_err());
        assert!(MiniWorld::new(WorldSpec {
            shapes: vec!["hexagon".into()],
            ..WorldSpec::default()
        })
        .is_err());
        let sc = Scene {
            shape: Shape::Triangle,
            colour: Colour::Blue,
            direction: Direction::UpLeft,
            start: (5, 5),
        };
        assert_eq!(
            sc.caption(CaptionStyle::Full),
            "a blue triangle moving up and to the left"
        );
        assert_eq!(
            sc.caption(CaptionStyle::Ambiguous),
            "a shape moving up and to the left"
        );
        assert_eq!(sc.caption(CaptionStyle::Subject), "a blue triangle");
    }
}
