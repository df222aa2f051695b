//! VIDiff in miniature: instruction-driven video editing on the synthetic world, every part of
//! the seed's system at toy size and trained here.
//!
//! - **Task.** A source clip of `N = 8` frames (32×32) in which one object (radius 5, 4 shapes
//!   × 8 colours, on a checker / stripe / noise background) moves 1 px per frame in one of 8
//!   directions, and an instruction → the same clip with the edit applied and the motion kept:
//!   - colour: `"make it blue"`;
//!   - shape: `"make it a triangle"`;
//!   - background: `"make the background stripes"` / `"make the background a checkerboard"`
//!     (checker ↔ stripes; the same two background colours, the world's own pattern);
//!   - an image instruction: a swatch of the target colour, with an empty text.
//! - **Model** (a diffusers folder loaded by [`vidgen_pipelines::VidiffPipeline`]): an
//!   `AutoencoderKL` (factor 2: 32×32 ↔ 4×16×16), an SD `UNet2DConditionModel` trained for
//!   frame editing (InstructPix2Pix: 4 noisy + 4 source latent channels), inflated to video with
//!   zero-initialised AnimateDiff motion modules and trained on clips (shipped as a
//!   `UNetMotionModel`), frozen random CLIP towers, and VIDiff's instruction MLP (CLIP image
//!   embedding → one context token). See [`folder`].
//! - **Long videos**: the pipeline's iterative mode (clips of 8 with 2 frames of overlap, the
//!   overlap prefix on the instruction), trained for by replacing the first source frames with
//!   the edited ones and prefixing the instruction in part of the clips; measured on 24-frame
//!   clips whose object moves there and back.
//! - [`train`] runs the stages (VAE, image, video); [`eval`] measures edits and motion with
//!   Wilson intervals and writes the clips.

pub mod eval;
pub mod folder;
#[cfg(test)]
mod smoke_tests;
pub mod train;

use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{seeded_rng, Appearance, Background, Colour, Direction, Shape};
use vidgen_video_io::Frame;

use crate::aidmini::mix;
use crate::minis::sprites::{compose, parse_colours, parse_shapes, SpriteWorld};

/// The folder name of the shipped miniature under `examples/assets/`.
pub const ASSET: &str = "vidiff-mini";

/// The shipped miniature (`examples/assets/vidiff-mini`).
pub fn shipped_dir() -> PathBuf {
    crate::minis::asset_dir(ASSET)
}

/// Episode geometry and inference defaults (`mini.json` in the miniature's folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MiniConfig {
    /// Frame side in pixels.
    pub size: u32,
    /// Frames of a clip (the UNet's temporal positions).
    pub frames: usize,
    /// Frames of a long video (the iterative mode's evaluation).
    pub long_frames: usize,
    /// Frames each clip of a long video shares with the previous one.
    pub overlap: usize,
    /// Object radius in pixels.
    pub radius: u32,
    /// Shapes drawn.
    pub shapes: Vec<String>,
    /// Colours drawn.
    pub colours: Vec<String>,
    /// Frames per second of written GIFs.
    pub fps: f64,
    /// Denoising steps of an evaluation call.
    pub steps: usize,
    /// Text / instruction guidance `s_T`.
    pub text_guidance: f64,
    /// Source-video guidance `s_V`.
    pub video_guidance: f64,
    /// Correlation of the initial noise across frames, in `[0, 1)`: each frame's noise is
    /// `√α · ε_shared + √(1 − α) · ε_frame` (PYoCo's mixed noise prior), still `N(0, 1)` per
    /// frame. DDIM is deterministic given the noise, so frames that start alike and see alike
    /// sources come out alike: less flicker, at no cost to what each frame edits. 0 is the
    /// pipeline's independent noise.
    pub frame_noise: f64,
}

impl Default for MiniConfig {
    fn default() -> Self {
        Self {
            size: 32,
            frames: 8,
            long_frames: 24,
            overlap: 2,
            radius: 5,
            shapes: ["circle", "square", "triangle", "cross"]
                .map(String::from)
                .to_vec(),
            colours: Colour::ALL.iter().map(|c| c.name().to_string()).collect(),
            fps: 4.0,
            steps: 10,
            text_guidance: 2.0,
            video_guidance: 1.0,
            frame_noise: 0.95,
        }
    }
}

impl MiniConfig {
    /// Reads `mini.json` from a miniature folder.
    ///
    /// # Errors
    /// An unreadable or invalid file (named).
    pub fn load(dir: &Path) -> Result<Self> {
        let c: Self = crate::minis::read_json(&dir.join("mini.json"))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks the geometry.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.frames < 2 || self.overlap >= self.frames || self.long_frames < self.frames {
            return Err(Error::config(
                "frames / overlap / long_frames",
                "need frames >= 2, overlap < frames, long_frames >= frames",
            ));
        }
        if !(0.0..1.0).contains(&self.frame_noise) {
            return Err(Error::config(
                "frame_noise",
                format!("{} is not in [0, 1)", self.frame_noise),
            ));
        }
        if self.radius < 2 || self.steps == 0 || !self.size.is_multiple_of(2) {
            return Err(Error::config(
                "radius / steps / size",
                "radius >= 2, steps >= 1 and an even size (the VAE halves it)",
            ));
        }
        let (lo, hi) = self.start_box();
        if lo > hi {
            return Err(Error::config(
                "size",
                format!(
                    "a {0}×{0} frame leaves no start from which a radius-{1} object can move {2} px \
                     every way",
                    self.size,
                    self.radius,
                    self.travel()
                ),
            ));
        }
        let shapes = parse_shapes(&self.shapes)?;
        let colours = parse_colours(&self.colours)?;
        if shapes.len() < 2 || colours.len() < 2 {
            return Err(Error::config(
                "shapes / colours",
                "at least two of each, so that an edit can change them",
            ));
        }
        Ok(())
    }

    /// Pixels the object travels over a clip (1 px per frame).
    pub fn travel(&self) -> i64 {
        self.frames as i64 - 1
    }

    /// The centre pixels (inclusive, both axes) from which the object stays in view (with the
    /// world's one-pixel margin) whichever way it moves.
    pub fn start_box(&self) -> (i64, i64) {
        let r = self.radius as i64;
        (
            r + 1 + self.travel(),
            self.size as i64 - r - 2 - self.travel(),
        )
    }

    /// The sprite world of this geometry.
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn world(&self) -> Result<SpriteWorld> {
        SpriteWorld::new(
            self.size,
            self.radius,
            &parse_shapes(&self.shapes)?,
            &parse_colours(&self.colours)?,
        )
    }

    /// The shapes drawn.
    ///
    /// # Errors
    /// An unknown name.
    pub fn shape_list(&self) -> Result<Vec<Shape>> {
        parse_shapes(&self.shapes)
    }

    /// The colours drawn.
    ///
    /// # Errors
    /// An unknown name.
    pub fn colour_list(&self) -> Result<Vec<Colour>> {
        parse_colours(&self.colours)
    }
}

/// The kinds of edit, in the order episodes cycle through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EditKind {
    /// Text: change the object's colour.
    Colour,
    /// Text: change the object's shape.
    Shape,
    /// Text: checker ↔ stripes.
    Background,
    /// Image: a swatch of the target colour, empty text.
    Swatch,
}

impl EditKind {
    /// All, in order.
    pub const ALL: [EditKind; 4] = [
        EditKind::Colour,
        EditKind::Shape,
        EditKind::Background,
        EditKind::Swatch,
    ];

    /// Its name (`colour`, `shape`, `background`, `swatch`).
    pub fn name(self) -> &'static str {
        match self {
            EditKind::Colour => "colour",
            EditKind::Shape => "shape",
            EditKind::Background => "background",
            EditKind::Swatch => "swatch",
        }
    }
}

/// One edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Recolour the object.
    Colour(Colour),
    /// Reshape the object.
    Shape(Shape),
    /// Repaint the background with this pattern (same colours).
    Background(Background),
    /// Recolour the object to the colour of an image.
    Swatch(Colour),
}

/// The name of a background pattern as instructions say it.
pub fn background_words(b: Background) -> &'static str {
    match b {
        Background::Checker => "a checkerboard",
        Background::Stripes => "stripes",
        Background::Noise => "noise",
    }
}

/// The name of a background pattern.
pub fn background_name(b: Background) -> &'static str {
    match b {
        Background::Checker => "checker",
        Background::Stripes => "stripes",
        Background::Noise => "noise",
    }
}

impl Edit {
    /// Its kind.
    pub fn kind(self) -> EditKind {
        match self {
            Edit::Colour(_) => EditKind::Colour,
            Edit::Shape(_) => EditKind::Shape,
            Edit::Background(_) => EditKind::Background,
            Edit::Swatch(_) => EditKind::Swatch,
        }
    }

    /// The text instruction (empty for a swatch: the image is the instruction).
    pub fn instruction(self) -> String {
        match self {
            Edit::Colour(c) => format!("make it {}", c.name()),
            Edit::Shape(s) => format!("make it a {}", s.name()),
            Edit::Background(b) => format!("make the background {}", background_words(b)),
            Edit::Swatch(_) => String::new(),
        }
    }

    /// The swatch's colour, for an image instruction.
    pub fn swatch(self) -> Option<Colour> {
        match self {
            Edit::Swatch(c) => Some(c),
            _ => None,
        }
    }

    /// `appearance` as the edit changes it.
    pub fn apply(self, mut app: Appearance) -> Appearance {
        match self {
            Edit::Colour(c) | Edit::Swatch(c) => app.colour = c,
            Edit::Shape(s) => app.shape = s,
            Edit::Background(b) => app.background = b,
        }
        app
    }
}

/// A swatch image: `size × size` pixels of `colour`.
///
/// # Errors
/// A zero size.
pub fn swatch(colour: Colour, size: u32) -> Result<Frame> {
    Frame::filled(size, size, colour.rgb())
}

/// One editing episode: source and target clips and their labels.
#[derive(Debug, Clone)]
pub struct EditEpisode {
    /// The source frames.
    pub source: Vec<Frame>,
    /// The same clip edited.
    pub target: Vec<Frame>,
    /// The edit.
    pub edit: Edit,
    /// The source's appearance.
    pub appearance: Appearance,
    /// The target's appearance.
    pub edited: Appearance,
    /// Where the object moves (in a long video: on its way out; it comes back, then out
    /// again).
    pub direction: Direction,
    /// Its centre pixel in the first frame.
    pub start: (i64, i64),
}

/// Offset along the motion of frame `t` of an `n`-frame clip whose object travels `travel` px
/// out: straight out for a clip, there and back again for a long video.
pub fn offset(t: usize, travel: i64) -> i64 {
    let period = 2 * travel.max(1);
    let p = (t as i64).rem_euclid(period);
    if p <= travel {
        p
    } else {
        period - p
    }
}

/// Episodes of a [`MiniConfig`].
#[derive(Debug, Clone)]
pub struct Episodes {
    cfg: MiniConfig,
    world: SpriteWorld,
    shapes: Vec<Shape>,
    colours: Vec<Colour>,
}

impl Episodes {
    /// The generator of `cfg`'s episodes.
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn new(cfg: &MiniConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            world: cfg.world()?,
            shapes: cfg.shape_list()?,
            colours: cfg.colour_list()?,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MiniConfig {
        &self.cfg
    }

    /// The sprite world.
    pub fn world(&self) -> &SpriteWorld {
        &self.world
    }

    /// Episode `index` of stream `seed` (the same every time): an edit of `kind` (or one drawn
    /// uniformly) on a clip of `frames` frames.
    ///
    /// # Errors
    /// World errors.
    pub fn episode(
        &self,
        seed: u64,
        index: u64,
        kind: Option<EditKind>,
        frames: usize,
    ) -> Result<EditEpisode> {
        let mut rng = seeded_rng(mix(seed, index, 0xED17));
        let drawn = EditKind::ALL[rng.random_range(0..EditKind::ALL.len())];
        let kind = kind.unwrap_or(drawn);
        let direction = Direction::ALL[rng.random_range(0..8)];
        let mut app = self.world.sample_appearance(&mut rng)?;
        let other = |all: &[Colour], c: Colour, rng: &mut rand_chacha::ChaCha8Rng| {
            let rest: Vec<Colour> = all.iter().copied().filter(|&x| x != c).collect();
            rest[rng.random_range(0..rest.len())]
        };
        let edit = match kind {
            EditKind::Colour => Edit::Colour(other(&self.colours, app.colour, &mut rng)),
            EditKind::Swatch => Edit::Swatch(other(&self.colours, app.colour, &mut rng)),
            EditKind::Shape => {
                let rest: Vec<Shape> = self
                    .shapes
                    .iter()
                    .copied()
                    .filter(|&s| s != app.shape)
                    .collect();
                Edit::Shape(rest[rng.random_range(0..rest.len())])
            }
            EditKind::Background => {
                // Checker ↔ stripes: the two patterns the target is fixed for by the source.
                if app.background == Background::Noise {
                    app.background = if rng.random::<bool>() {
                        Background::Checker
                    } else {
                        Background::Stripes
                    };
                }
                Edit::Background(if app.background == Background::Checker {
                    Background::Stripes
                } else {
                    Background::Checker
                })
            }
        };
        let edited = edit.apply(app);
        let src = self.world.scene(app, &mut rng)?;
        let dst = self.world.scene(edited, &mut rng)?;
        let (lo, hi) = self.cfg.start_box();
        let start = (rng.random_range(lo..=hi), rng.random_range(lo..=hi));
        let (dx, dy) = direction.delta();
        let travel = self.cfg.travel();
        let place = |t: usize| {
            let s = offset(t, travel);
            (start.0 + dx as i64 * s, start.1 + dy as i64 * s)
        };
        let source = (0..frames)
            .map(|t| compose(&src.background, &src.sprite, place(t)))
            .collect();
        let target = (0..frames)
            .map(|t| compose(&dst.background, &dst.sprite, place(t)))
            .collect();
        Ok(EditEpisode {
            source,
            target,
            edit,
            appearance: app,
            edited,
            direction,
            start,
        })
    }

    /// The empty background of `app` (the scorer's reference for background edits).
    ///
    /// # Errors
    /// World errors.
    pub fn background(&self, app: Appearance) -> Result<Frame> {
        let mut rng = seeded_rng(app.background_seed);
        Ok(self.world.scene(app, &mut rng)?.background)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::minis::score::{direction_of, read_object};

    #[test]
    fn episodes_edit_one_attribute_and_keep_the_motion() {
        let cfg = MiniConfig::default();
        let eps = Episodes::new(&cfg).unwrap();
        let shapes = cfg.shape_list().unwrap();
        for i in 0..24 {
            for kind in EditKind::ALL {
                let e = eps.episode(3, i, Some(kind), cfg.frames).unwrap();
                assert_eq!(e.edit.kind(), kind);
                assert_eq!(e.source.len(), cfg.frames);
                let a = read_object(&e.source[0], &shapes, &[5.0]).unwrap();
                let b = read_object(&e.target[0], &shapes, &[5.0]).unwrap();
                let z = read_object(&e.target[cfg.frames - 1], &shapes, &[5.0]).unwrap();
                assert_eq!(a.colour, e.appearance.colour);
                assert_eq!(b.colour, e.edited.colour);
                assert_eq!(b.shape, e.edited.shape);
                let d = direction_of(
                    z.centroid.0 - b.centroid.0,
                    z.centroid.1 - b.centroid.1,
                    1.5,
                );
                assert_eq!(d, Some(e.direction));
                match e.edit {
                    Edit::Colour(c) | Edit::Swatch(c) => assert_ne!(c, e.appearance.colour),
                    Edit::Shape(s) => assert_ne!(s, e.appearance.shape),
                    Edit::Background(bg) => {
                        assert_ne!(bg, e.appearance.background);
                        assert_ne!(bg, Background::Noise);
                        assert_eq!(
                            eps.background(e.edited).unwrap().data(),
                            eps.background(e.edited).unwrap().data()
                        );
                    }
                }
                let again = eps.episode(3, i, Some(kind), cfg.frames).unwrap();
                assert!(again.source == e.source && again.target == e.target);
            }
        }
    }

    #[test]
    fn long_videos_go_there_and_back() {
        assert_eq!(
            (0..16).map(|t| offset(t, 7)).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2, 1, 0, 1]
        );
        let cfg = MiniConfig::default();
        let eps = Episodes::new(&cfg).unwrap();
        let e = eps.episode(1, 0, None, cfg.long_frames).unwrap();
        assert_eq!(e.source.len(), 24);
        assert!(e.source[0] == e.source[14]);
    }

    #[test]
    fn instructions_and_config_checks() {
        assert_eq!(Edit::Colour(Colour::Blue).instruction(), "make it blue");
        assert_eq!(
            Edit::Shape(Shape::Triangle).instruction(),
            "make it a triangle"
        );
        assert_eq!(
            Edit::Background(Background::Stripes).instruction(),
            "make the background stripes"
        );
        assert_eq!(Edit::Swatch(Colour::Red).instruction(), "");
        assert_eq!(
            swatch(Colour::Red, 4).unwrap().get(3, 3),
            Some(Colour::Red.rgb())
        );
        let bad = MiniConfig {
            size: 16,
            ..MiniConfig::default()
        };
        assert!(bad.validate().is_err());
        assert!(MiniConfig::default().validate().is_ok());
    }
}
