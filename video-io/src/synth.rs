//! The synthetic "moving shapes" world: short clips with known motion, for tests, probes and
//! in-context demos.
//!
//! A clip shows one textured shape on a textured background and one labelled [`Action`]:
//! the object translating in one of 8 directions, the camera panning in one of 4, the camera
//! zooming in or out, or the object appearing / disappearing. Everything is drawn with hard
//! edges from a handful of colours (well under 256 per frame), so clips survive GIF exactly.
//!
//! Geometry (why the labels are exact): the world is continuous and the camera samples it at
//! pixel centres `(x + 0.5, y + 0.5)`. Speeds are whole pixels per frame, so a translating
//! object's pixels at frame `t + 1` are exactly its pixels at frame `t` moved by
//! `speed × direction`, texture included (the texture is fixed to the object); a pan moves the
//! whole picture by `speed` pixels opposite to the camera's direction (the background is fixed
//! to the world). Screen coordinates: `x` grows to the right, `y` grows downwards, so
//! [`Direction::Up`] is `(0, -1)`.
//!
//! Randomness comes only from the RNG passed in: the same seed gives the same clips.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vidgen_video_core::{Error, Result};

use crate::frames::{check_size, Frame, Video};

/// A ChaCha8 RNG seeded with `seed`: the generator to pass to [`MovingShapes`] for
/// reproducible clips.
pub fn seeded_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// The object's outline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// A disc.
    Circle,
    /// An axis-aligned square.
    Square,
    /// A triangle pointing up.
    Triangle,
    /// A square turned 45°.
    Diamond,
    /// A plus sign.
    Cross,
    /// A disc with a hole (the background shows through).
    Ring,
}

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 6] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Diamond,
        Shape::Cross,
        Shape::Ring,
    ];

    /// Lower-case name (`"circle"`).
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Diamond => "diamond",
            Shape::Cross => "cross",
            Shape::Ring => "ring",
        }
    }

    /// Whether the point `(u, v)`, in units of the object's radius from its centre, is inside.
    /// Every shape fits in `|u|, |v| <= 1`. The renderer paints exactly these outlines, so
    /// scorers and masks built on them match the rendered pixels.
    pub fn contains(self, u: f32, v: f32) -> bool {
        match self {
            Shape::Circle => u * u + v * v <= 1.0,
            Shape::Square => u.abs() <= 0.8 && v.abs() <= 0.8,
            Shape::Triangle => (-0.9..=0.8).contains(&v) && u.abs() <= (v + 0.9) / 1.7,
            Shape::Diamond => u.abs() + v.abs() <= 1.0,
            Shape::Cross => {
                (u.abs() <= 0.33 && v.abs() <= 0.95) || (v.abs() <= 0.33 && u.abs() <= 0.95)
            }
            Shape::Ring => {
                let r2 = u * u + v * v;
                (0.25..=1.0).contains(&r2)
            }
        }
    }
}

/// The object's colour (saturated; backgrounds use muted colours, so the two never coincide).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Colour {
    /// (230, 40, 40)
    Red,
    /// (40, 200, 60)
    Green,
    /// (50, 90, 240)
    Blue,
    /// (240, 220, 40)
    Yellow,
    /// (40, 220, 230)
    Cyan,
    /// (220, 50, 220)
    Magenta,
    /// (250, 140, 20)
    Orange,
    /// (250, 250, 250)
    White,
}

impl Colour {
    /// Every colour.
    pub const ALL: [Colour; 8] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Cyan,
        Colour::Magenta,
        Colour::Orange,
        Colour::White,
    ];

    /// The RGB value.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [230, 40, 40],
            Colour::Green => [40, 200, 60],
            Colour::Blue => [50, 90, 240],
            Colour::Yellow => [240, 220, 40],
            Colour::Cyan => [40, 220, 230],
            Colour::Magenta => [220, 50, 220],
            Colour::Orange => [250, 140, 20],
            Colour::White => [250, 250, 250],
        }
    }

    /// Lower-case name (`"red"`).
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Cyan => "cyan",
            Colour::Magenta => "magenta",
            Colour::Orange => "orange",
            Colour::White => "white",
        }
    }
}

/// The pattern painted on the object (in the object's own coordinates, so it moves with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Texture {
    /// One colour.
    Solid,
    /// Diagonal stripes of the colour and a darker shade, 3 px wide.
    Stripes,
    /// A 3-px checkerboard of the colour and a darker shade.
    Checker,
    /// Darker dots on a 4-px lattice.
    Dots,
}

impl Texture {
    /// Every texture.
    pub const ALL: [Texture; 4] = [
        Texture::Solid,
        Texture::Stripes,
        Texture::Checker,
        Texture::Dots,
    ];

    fn dark(self, lx: f32, ly: f32) -> bool {
        let (ix, iy) = (lx.floor() as i64, ly.floor() as i64);
        match self {
            Texture::Solid => false,
            Texture::Stripes => (ix + iy).div_euclid(3) % 2 == 0,
            Texture::Checker => (ix.div_euclid(3) + iy.div_euclid(3)) % 2 == 0,
            Texture::Dots => ix.rem_euclid(4) == 0 && iy.rem_euclid(4) == 0,
        }
    }
}

/// The background pattern (fixed to the world, so it moves only when the camera does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Background {
    /// Checkerboard of two muted colours, cells of 4–8 px.
    Checker,
    /// Diagonal stripes of two muted colours.
    Stripes,
    /// Blocks of random muted shades (value noise on a 3–6 px lattice).
    Noise,
}

impl Background {
    /// Every background.
    pub const ALL: [Background; 3] = [Background::Checker, Background::Stripes, Background::Noise];
}

/// The 8 directions of motion, in screen coordinates (`y` down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `(+1, 0)`
    Right,
    /// `(+1, -1)`
    UpRight,
    /// `(0, -1)`
    Up,
    /// `(-1, -1)`
    UpLeft,
    /// `(-1, 0)`
    Left,
    /// `(-1, +1)`
    DownLeft,
    /// `(0, +1)`
    Down,
    /// `(+1, +1)`
    DownRight,
}

impl Direction {
    /// All 8, counter-clockwise from right.
    pub const ALL: [Direction; 8] = [
        Direction::Right,
        Direction::UpRight,
        Direction::Up,
        Direction::UpLeft,
        Direction::Left,
        Direction::DownLeft,
        Direction::Down,
        Direction::DownRight,
    ];

    /// The 4 axis directions (the ones a camera pans in).
    pub const AXES: [Direction; 4] = [
        Direction::Right,
        Direction::Up,
        Direction::Left,
        Direction::Down,
    ];

    /// The unit step `(dx, dy)` in pixels, `y` down: a diagonal moves one pixel on each axis.
    pub fn delta(self) -> (i32, i32) {
        match self {
            Direction::Right => (1, 0),
            Direction::UpRight => (1, -1),
            Direction::Up => (0, -1),
            Direction::UpLeft => (-1, -1),
            Direction::Left => (-1, 0),
            Direction::DownLeft => (-1, 1),
            Direction::Down => (0, 1),
            Direction::DownRight => (1, 1),
        }
    }

    /// Whether this is one of [`Direction::AXES`].
    pub fn is_axis(self) -> bool {
        let (dx, dy) = self.delta();
        dx == 0 || dy == 0
    }

    /// Snake-case name (`"up_left"`).
    pub fn name(self) -> &'static str {
        match self {
            Direction::Right => "right",
            Direction::UpRight => "up_right",
            Direction::Up => "up",
            Direction::UpLeft => "up_left",
            Direction::Left => "left",
            Direction::DownLeft => "down_left",
            Direction::Down => "down",
            Direction::DownRight => "down_right",
        }
    }

    fn index(self) -> usize {
        Direction::ALL.iter().position(|&d| d == self).unwrap_or(0)
    }
}

/// The family of an [`Action`], for configuring which actions are sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    /// [`Action::Translate`]
    Translate,
    /// [`Action::Pan`]
    Pan,
    /// [`Action::ZoomIn`]
    ZoomIn,
    /// [`Action::ZoomOut`]
    ZoomOut,
    /// [`Action::Appear`]
    Appear,
    /// [`Action::Disappear`]
    Disappear,
}

impl ActionKind {
    /// Every kind.
    pub const ALL: [ActionKind; 6] = [
        ActionKind::Translate,
        ActionKind::Pan,
        ActionKind::ZoomIn,
        ActionKind::ZoomOut,
        ActionKind::Appear,
        ActionKind::Disappear,
    ];
}

/// What happens in a clip.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// The object moves `speed` pixels per frame along `direction` (each axis component moves
    /// `speed` pixels: a diagonal step is `(±speed, ±speed)`); camera and background still.
    Translate {
        /// Where the object goes.
        direction: Direction,
        /// Pixels per frame along each moving axis (≥ 1).
        speed: u32,
    },
    /// The camera moves `speed` pixels per frame along `direction` (an axis direction), so the
    /// whole picture shifts the opposite way; the object is still in the world.
    Pan {
        /// Where the camera goes (the picture moves the opposite way).
        direction: Direction,
        /// Pixels per frame (≥ 1).
        speed: u32,
    },
    /// The camera zooms in on the frame centre: magnification `rate^t` at frame `t`.
    ZoomIn {
        /// Magnification per frame (> 1).
        rate: f32,
    },
    /// The camera zooms out from the frame centre: magnification `rate^-t` at frame `t`.
    ZoomOut {
        /// Demagnification per frame (> 1).
        rate: f32,
    },
    /// The object is absent before frame `at` and present from it on (camera still).
    Appear {
        /// First frame showing the object.
        at: usize,
    },
    /// The object is present before frame `at` and absent from it on (camera still).
    Disappear {
        /// First frame without the object.
        at: usize,
    },
}

impl Action {
    /// Number of action classes: 8 translations + 4 pans + zoom in + zoom out + appear +
    /// disappear.
    pub const NUM_CLASSES: usize = 16;

    /// The family of this action.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Translate { .. } => ActionKind::Translate,
            Action::Pan { .. } => ActionKind::Pan,
            Action::ZoomIn { .. } => ActionKind::ZoomIn,
            Action::ZoomOut { .. } => ActionKind::ZoomOut,
            Action::Appear { .. } => ActionKind::Appear,
            Action::Disappear { .. } => ActionKind::Disappear,
        }
    }

    /// The direction of a translation or pan.
    pub fn direction(&self) -> Option<Direction> {
        match self {
            Action::Translate { direction, .. } | Action::Pan { direction, .. } => Some(*direction),
            _ => None,
        }
    }

    /// Pixels per frame of a translation or pan, else 0.
    pub fn speed(&self) -> u32 {
        match self {
            Action::Translate { speed, .. } | Action::Pan { speed, .. } => *speed,
            _ => 0,
        }
    }

    /// The class in `0..NUM_CLASSES` (ignores speed, rate and frame): translations 0–7 in
    /// [`Direction::ALL`] order, pans 8–11 in [`Direction::AXES`] order, then zoom in, zoom
    /// out, appear, disappear.
    pub fn class_index(&self) -> usize {
        match self {
            Action::Translate { direction, .. } => direction.index(),
            Action::Pan { direction, .. } => {
                8 + Direction::AXES
                    .iter()
                    .position(|d| d == direction)
                    .unwrap_or(0)
            }
            Action::ZoomIn { .. } => 12,
            Action::ZoomOut { .. } => 13,
            Action::Appear { .. } => 14,
            Action::Disappear { .. } => 15,
        }
    }

    /// A short label: `translate_up_left`, `pan_right`, `zoom_in`, `zoom_out`, `appear`,
    /// `disappear`.
    pub fn name(&self) -> String {
        match self {
            Action::Translate { direction, .. } => format!("translate_{}", direction.name()),
            Action::Pan { direction, .. } => format!("pan_{}", direction.name()),
            Action::ZoomIn { .. } => "zoom_in".into(),
            Action::ZoomOut { .. } => "zoom_out".into(),
            Action::Appear { .. } => "appear".into(),
            Action::Disappear { .. } => "disappear".into(),
        }
    }
}

/// What the scene looks like, independent of what happens in it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Appearance {
    /// The object's outline.
    pub shape: Shape,
    /// The object's base colour.
    pub colour: Colour,
    /// The pattern on the object.
    pub texture: Texture,
    /// The object's radius in pixels (it fits in a `2·radius` square).
    pub radius: u32,
    /// The background pattern.
    pub background: Background,
    /// Seeds the background's colours, cell size and noise.
    pub background_seed: u64,
}

/// Everything a clip's labels say.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipLabel {
    /// What happens (direction, speed in pixels per frame, zoom rate or frame index).
    pub action: Action,
    /// What it looks like (shape, colour, texture, size, background).
    pub appearance: Appearance,
}

/// A generated clip with its labels and per-frame ground truth.
#[derive(Clone, Debug)]
pub struct Clip {
    /// The frames (RGB u8) at [`WorldConfig::fps`].
    pub video: Video,
    /// The action and appearance.
    pub label: ClipLabel,
    /// Per frame, the object's centre in view pixels (`x`, `y`; pixel `(i, j)` covers
    /// `[i, i+1) × [j, j+1)`). May lie outside the view, and is given even where the object is
    /// hidden (appear / disappear).
    pub centers: Vec<(f32, f32)>,
    /// Per frame, `H × W` row-major: `true` where the object is drawn.
    pub masks: Vec<Vec<bool>>,
}

impl Clip {
    /// The centroid (`x`, `y`, in pixel-centre coordinates) of the object's mask at frame `t`,
    /// or `None` when the object is not visible.
    pub fn mask_centroid(&self, t: usize) -> Option<(f64, f64)> {
        let mask = self.masks.get(t)?;
        let w = self.video.width() as usize;
        let (mut sx, mut sy, mut n) = (0f64, 0f64, 0usize);
        for (i, &m) in mask.iter().enumerate() {
            if m {
                sx += (i % w) as f64 + 0.5;
                sy += (i / w) as f64 + 0.5;
                n += 1;
            }
        }
        (n > 0).then(|| (sx / n as f64, sy / n as f64))
    }

    /// Number of object pixels at frame `t`.
    pub fn mask_area(&self, t: usize) -> usize {
        self.masks
            .get(t)
            .map_or(0, |m| m.iter().filter(|&&b| b).count())
    }
}

/// Settings of the generator. The defaults give 8-frame 64×64 clips at 8 fps with every
/// shape, colour and action.
#[derive(Clone, Debug, PartialEq)]
pub struct WorldConfig {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per clip (≥ 2).
    pub frames: usize,
    /// Frames per second written into the clips.
    pub fps: f64,
    /// Speeds (pixels per frame) to draw translations and pans from, inclusive. A sampled speed
    /// is lowered (to no less than 1) when the object would otherwise leave the view.
    pub speed: (u32, u32),
    /// Object radius as a fraction of the shorter side, inclusive range.
    pub radius: (f32, f32),
    /// Zoom rate per frame for zoom in / out (> 1).
    pub zoom_rate: f32,
    /// Shapes to draw from.
    pub shapes: Vec<Shape>,
    /// Colours to draw from.
    pub colours: Vec<Colour>,
    /// Actions to draw from.
    pub actions: Vec<ActionKind>,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self::new(64, 64, 8)
    }
}

impl WorldConfig {
    /// A `width × height` world with `frames`-frame clips and the other settings at their
    /// defaults (8 fps, speeds 1–3, radius 12–20 % of the shorter side, zoom 1.08 per frame,
    /// all shapes, colours and actions).
    pub fn new(width: u32, height: u32, frames: usize) -> Self {
        Self {
            width,
            height,
            frames,
            fps: 8.0,
            speed: (1, 3),
            radius: (0.12, 0.2),
            zoom_rate: 1.08,
            shapes: Shape::ALL.to_vec(),
            colours: Colour::ALL.to_vec(),
            actions: ActionKind::ALL.to_vec(),
        }
    }

    /// 32×32 pixels, 8 frames.
    pub fn small() -> Self {
        Self::new(32, 32, 8)
    }

    fn validate(&self) -> Result<()> {
        check_size(self.width, self.height)?;
        if self.width < 8 || self.height < 8 {
            return Err(Error::config(
                "width/height",
                format!(
                    "{}x{}: the world needs at least 8x8 pixels",
                    self.width, self.height
                ),
            ));
        }
        if self.frames < 2 {
            return Err(Error::config(
                "frames",
                format!(
                    "{}: a clip needs at least 2 frames to show motion",
                    self.frames
                ),
            ));
        }
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(Error::config("fps", format!("{}: must be > 0", self.fps)));
        }
        if self.speed.0 == 0 || self.speed.0 > self.speed.1 {
            return Err(Error::config(
                "speed",
                format!("{:?}: need 1 <= min <= max", self.speed),
            ));
        }
        let (r0, r1) = self.radius;
        if !(r0 > 0.0 && r0 <= r1 && r1 <= 0.5) {
            return Err(Error::config(
                "radius",
                format!("{:?}: need 0 < min <= max <= 0.5", self.radius),
            ));
        }
        if !(self.zoom_rate.is_finite() && self.zoom_rate > 1.0) {
            return Err(Error::config(
                "zoom_rate",
                format!("{}: must be > 1", self.zoom_rate),
            ));
        }
        for (name, empty) in [
            ("shapes", self.shapes.is_empty()),
            ("colours", self.colours.is_empty()),
            ("actions", self.actions.is_empty()),
        ] {
            if empty {
                return Err(Error::config(name, "must not be empty"));
            }
        }
        Ok(())
    }
}

/// The generator. Cheap to build; holds only its [`WorldConfig`].
///
/// ```
/// use vidgen_video_io::synth::{seeded_rng, MovingShapes, WorldConfig};
///
/// # fn main() -> vidgen_video_core::Result<()> {
/// let world = MovingShapes::new(WorldConfig::small())?;
/// let mut rng = seeded_rng(7);
/// let (demo, query) = world.pair(&mut rng)?; // same action, different looks
/// assert_eq!(demo.label.action.class_index(), query.label.action.class_index());
/// assert_eq!(demo.video.len(), 8);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MovingShapes {
    config: WorldConfig,
}

fn pick<T: Copy, R: Rng + ?Sized>(items: &[T], rng: &mut R) -> Result<T> {
    if items.is_empty() {
        return Err(Error::invalid("choices", "empty list"));
    }
    Ok(items[rng.random_range(0..items.len())])
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash3(seed: u64, a: i64, b: i64) -> u64 {
    splitmix(seed ^ splitmix((a as u64).wrapping_mul(0x1000_0000_01B3) ^ splitmix(b as u64)))
}

/// A background resolved from its seed: colours, cell size and pattern.
struct BackgroundPaint {
    kind: Background,
    seed: u64,
    colours: [[u8; 3]; 2],
    cell: f32,
}

impl BackgroundPaint {
    fn new(kind: Background, seed: u64) -> Self {
        // Muted colours: every channel in 40..=140, far from the saturated object colours.
        let muted = |h: u64| -> [u8; 3] {
            [
                40 + (h % 101) as u8,
                40 + ((h >> 8) % 101) as u8,
                40 + ((h >> 16) % 101) as u8,
            ]
        };
        let h0 = splitmix(seed);
        let h1 = splitmix(h0);
        let cell = 3.0
            + (splitmix(h1) % 4) as f32
            + if kind == Background::Checker {
                1.0
            } else {
                0.0
            };
        Self {
            kind,
            seed,
            colours: [muted(h0), muted(h1)],
            cell,
        }
    }

    fn at(&self, wx: f32, wy: f32) -> [u8; 3] {
        let (cx, cy) = (
            (wx / self.cell).floor() as i64,
            (wy / self.cell).floor() as i64,
        );
        let which = match self.kind {
            Background::Checker => (cx + cy).rem_euclid(2) as usize,
            Background::Stripes => (((wx + wy) / self.cell).floor() as i64).rem_euclid(2) as usize,
            Background::Noise => (hash3(self.seed, cx, cy) % 2) as usize,
        };
        let base = self.colours[which];
        // A little per-2px grain so that pans are visible even on flat regions: 3 levels.
        let grain = (hash3(
            self.seed ^ 0xA5A5,
            (wx / 2.0).floor() as i64,
            (wy / 2.0).floor() as i64,
        ) % 3) as u8
            * 8;
        [base[0] + grain, base[1] + grain, base[2] + grain]
    }
}

impl MovingShapes {
    /// A generator for `config`; errors name the invalid field.
    pub fn new(config: WorldConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    /// Draws an action from the configured kinds (direction uniform, speed uniform in the
    /// configured range, appear / disappear at the middle frame).
    pub fn sample_action<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Action> {
        let c = &self.config;
        let speed = rng.random_range(c.speed.0..=c.speed.1);
        Ok(match pick(&c.actions, rng)? {
            ActionKind::Translate => Action::Translate {
                direction: pick(&Direction::ALL, rng)?,
                speed,
            },
            ActionKind::Pan => Action::Pan {
                direction: pick(&Direction::AXES, rng)?,
                speed,
            },
            ActionKind::ZoomIn => Action::ZoomIn { rate: c.zoom_rate },
            ActionKind::ZoomOut => Action::ZoomOut { rate: c.zoom_rate },
            ActionKind::Appear => Action::Appear { at: c.frames / 2 },
            ActionKind::Disappear => Action::Disappear { at: c.frames / 2 },
        })
    }

    /// Draws an appearance (shape, colour, texture, radius, background) uniformly.
    pub fn sample_appearance<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Appearance> {
        let c = &self.config;
        let side = c.width.min(c.height) as f32;
        let (r0, r1) = c.radius;
        let lo = ((r0 * side).round() as u32).max(2);
        let hi = ((r1 * side).round() as u32).max(lo);
        Ok(Appearance {
            shape: pick(&c.shapes, rng)?,
            colour: pick(&c.colours, rng)?,
            texture: pick(&Texture::ALL, rng)?,
            radius: rng.random_range(lo..=hi),
            background: pick(&Background::ALL, rng)?,
            background_seed: rng.random(),
        })
    }

    /// One clip with a random action and appearance.
    pub fn clip<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Clip> {
        let action = self.sample_action(rng)?;
        self.clip_with_action(action, rng)
    }

    /// One clip of `action` with a random appearance and placement.
    pub fn clip_with_action<R: Rng + ?Sized>(&self, action: Action, rng: &mut R) -> Result<Clip> {
        let appearance = self.sample_appearance(rng)?;
        self.render(action, appearance, rng)
    }

    /// Two clips with the same action and different appearance (another shape and colour
    /// whenever the configuration offers more than one, and another background): a
    /// demonstration and a query for in-context learning.
    pub fn pair<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<(Clip, Clip)> {
        let mut clips = self.episode(2, rng)?.into_iter();
        match (clips.next(), clips.next()) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(Error::invalid(
                "pair",
                "episode returned fewer than 2 clips",
            )),
        }
    }

    /// `n` clips sharing one randomly drawn action, each with its own appearance (consecutive
    /// clips differ in shape, colour and background where the configuration allows).
    pub fn episode<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Result<Vec<Clip>> {
        let action = self.sample_action(rng)?;
        let mut apps: Vec<Appearance> = Vec::with_capacity(n);
        for _ in 0..n {
            let mut app = self.sample_appearance(rng)?;
            if let Some(prev) = apps.last() {
                // Bounded redraws: the configuration may offer a single shape or colour.
                for _ in 0..32 {
                    let differs = (app.shape != prev.shape || self.config.shapes.len() < 2)
                        && (app.colour != prev.colour || self.config.colours.len() < 2)
                        && app.background_seed != prev.background_seed;
                    if differs {
                        break;
                    }
                    app = self.sample_appearance(rng)?;
                }
            }
            apps.push(app);
        }
        let render_all = |action: Action, rng: &mut R| -> Result<Vec<Clip>> {
            apps.iter().map(|&a| self.render(action, a, rng)).collect()
        };
        let clips = render_all(action, rng)?;
        // A large object may have needed a lower speed; the clips must agree on the action.
        let slowest = clips
            .iter()
            .map(|c| c.label.action)
            .min_by_key(|a| a.speed());
        match slowest {
            Some(a) if a != action && clips.iter().any(|c| c.label.action != a) => {
                render_all(a, rng)
            }
            _ => Ok(clips),
        }
    }

    /// Draws `action` with `appearance`; `rng` only places the object.
    ///
    /// Translations and pans keep the object fully in view for the whole clip when the frame is
    /// large enough: the speed is lowered if needed (to no less than 1 pixel per frame; the
    /// label holds the speed actually used), and only when even that cannot fit does the
    /// object leave the view. Errors for invalid actions: speed 0, a diagonal pan, a zoom rate
    /// not above 1, an appear / disappear frame outside `1..frames`.
    pub fn render<R: Rng + ?Sized>(
        &self,
        action: Action,
        appearance: Appearance,
        rng: &mut R,
    ) -> Result<Clip> {
        let c = &self.config;
        let (w, h, n) = (c.width as f32, c.height as f32, c.frames);
        let r = appearance.radius.max(1) as f32;
        let mut action = action;
        let is_pan = matches!(action, Action::Pan { .. });
        // Start centre (view pixels, on a pixel centre so masks are symmetric).
        let centre_xy = |rng: &mut R, span_x: (f32, f32), span_y: (f32, f32)| -> (f32, f32) {
            let draw = |rng: &mut R, (lo, hi): (f32, f32)| -> f32 {
                let (lo, hi) = (lo.ceil() as i64, hi.floor() as i64);
                let v = if hi > lo {
                    rng.random_range(lo..=hi)
                } else {
                    lo
                };
                v as f32 + 0.5
            };
            (draw(rng, span_x), draw(rng, span_y))
        };
        let start = match &mut action {
            Action::Translate { direction, speed } | Action::Pan { direction, speed } => {
                if *speed == 0 {
                    return Err(Error::invalid(
                        "action.speed",
                        "must be >= 1 pixel per frame",
                    ));
                }
                if is_pan && !direction.is_axis() {
                    return Err(Error::invalid(
                        "action.direction",
                        format!("a pan goes along an axis, not {}", direction.name()),
                    ));
                }
                let (dx, dy) = direction.delta();
                // On screen, a pan moves the object opposite to the camera.
                let (sx, sy) = if is_pan { (-dx, -dy) } else { (dx, dy) };
                let steps = (n - 1) as f32;
                // Largest speed <= requested that keeps the whole object in view.
                // A one-pixel margin keeps the object off the border rows and columns.
                let room_x = if sx != 0 {
                    (w - 2.0 * r - 3.0) / steps
                } else {
                    f32::INFINITY
                };
                let room_y = if sy != 0 {
                    (h - 2.0 * r - 3.0) / steps
                } else {
                    f32::INFINITY
                };
                let fit = room_x.min(room_y).floor();
                if fit < *speed as f32 {
                    *speed = (fit.max(1.0)) as u32;
                }
                let travel = *speed as f32 * steps;
                let span = |size: f32, s: i32| -> (f32, f32) {
                    let (lo, hi) = (r + 1.0, size - r - 2.0);
                    match s {
                        1 => (lo, (hi - travel).max(lo)),
                        -1 => ((lo + travel).min(hi), hi),
                        _ => (lo, hi),
                    }
                };
                centre_xy(rng, span(w, sx), span(h, sy))
            }
            Action::ZoomIn { rate } | Action::ZoomOut { rate } => {
                if !(rate.is_finite() && *rate > 1.0) {
                    return Err(Error::invalid(
                        "action.rate",
                        format!("{rate}: must be > 1"),
                    ));
                }
                // Near the centre, so that zooming in keeps the object in view.
                let jx = (w / 8.0).floor();
                let jy = (h / 8.0).floor();
                centre_xy(
                    rng,
                    (w / 2.0 - jx - 0.5, w / 2.0 + jx - 0.5),
                    (h / 2.0 - jy - 0.5, h / 2.0 + jy - 0.5),
                )
            }
            Action::Appear { at } | Action::Disappear { at } => {
                if *at == 0 || *at >= n {
                    return Err(Error::invalid(
                        "action.at",
                        format!("{at}: must be in 1..{n} so both states are shown"),
                    ));
                }
                centre_xy(rng, (r + 1.0, w - r - 2.0), (r + 1.0, h - r - 2.0))
            }
        };
        self.draw(action, appearance, start)
    }

    fn draw(&self, action: Action, app: Appearance, start: (f32, f32)) -> Result<Clip> {
        let c = &self.config;
        let (wi, hi) = (c.width as usize, c.height as usize);
        let (cxv, cyv) = (c.width as f32 / 2.0, c.height as f32 / 2.0);
        let bg = BackgroundPaint::new(app.background, app.background_seed);
        let r = app.radius.max(1) as f32;
        let rgb = app.colour.rgb();
        let dark = [rgb[0] / 5 * 3, rgb[1] / 5 * 3, rgb[2] / 5 * 3];
        let mut frames = Vec::with_capacity(c.frames);
        let mut masks = Vec::with_capacity(c.frames);
        let mut centers = Vec::with_capacity(c.frames);
        for t in 0..c.frames {
            let tf = t as f32;
            // Camera offset (world = view + cam at zoom 1), zoom, object centre in the world,
            // and visibility for this frame.
            let (mut cam, mut zoom, mut obj, mut visible) = ((0f32, 0f32), 1f32, start, true);
            match action {
                Action::Translate { direction, speed } => {
                    let (dx, dy) = direction.delta();
                    obj = (
                        start.0 + (dx * speed as i32) as f32 * tf,
                        start.1 + (dy * speed as i32) as f32 * tf,
                    );
                }
                Action::Pan { direction, speed } => {
                    let (dx, dy) = direction.delta();
                    cam = (
                        (dx * speed as i32) as f32 * tf,
                        (dy * speed as i32) as f32 * tf,
                    );
                }
                Action::ZoomIn { rate } => zoom = rate.powi(t as i32),
                Action::ZoomOut { rate } => zoom = rate.powi(-(t as i32)),
                Action::Appear { at } => visible = t >= at,
                Action::Disappear { at } => visible = t < at,
            }
            centers.push((
                cxv + (obj.0 - cam.0 - cxv) * zoom,
                cyv + (obj.1 - cam.1 - cyv) * zoom,
            ));
            let mut data = Vec::with_capacity(wi * hi * 3);
            let mut mask = Vec::with_capacity(wi * hi);
            for y in 0..hi {
                for x in 0..wi {
                    let wx = cxv + (x as f32 + 0.5 - cxv) / zoom + cam.0;
                    let wy = cyv + (y as f32 + 0.5 - cyv) / zoom + cam.1;
                    let (lx, ly) = (wx - obj.0, wy - obj.1);
                    let inside = visible && app.shape.contains(lx / r, ly / r);
                    let px = if inside {
                        if app.texture.dark(lx, ly) {
                            dark
                        } else {
                            rgb
                        }
                    } else {
                        bg.at(wx, wy)
                    };
                    data.extend_from_slice(&px);
                    mask.push(inside);
                }
            }
            frames.push(Frame::new(c.width, c.height, data)?);
            masks.push(mask);
        }
        Ok(Clip {
            video: Video::new(frames, c.fps)?,
            label: ClipLabel {
                action,
                appearance: app,
            },
            centers,
            masks,
        })
    }
}
