//! Objects and backgrounds of video-io's synthetic world, placed where an episode needs them.
//!
//! The world draws an object at a random place ([`MovingShapes::render`]); the miniatures'
//! episodes need it at a chosen one (a start from which every direction stays in view, so
//! that the position reveals nothing about the motion). Both pieces come from the world
//! itself: the object's pixels are cut out of a rendered frame along its mask, and the
//! background is a frame of the same appearance after the object has disappeared. Speeds are
//! whole pixels, so pasting the cut-out at an integer offset is exactly what the world would
//! draw there (hard edges sampled at pixel centres), background included.

use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{
    Action, ActionKind, Appearance, Background, Colour, Direction, MovingShapes, Shape, Texture,
    WorldConfig,
};
use vidgen_video_io::Frame;

/// The object of one appearance, as offsets from its centre pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct Sprite {
    /// Outline.
    pub shape: Shape,
    /// Colour.
    pub colour: Colour,
    /// `(dx, dy, rgb)` of every object pixel relative to the centre pixel.
    pub pixels: Vec<(i64, i64, [u8; 3])>,
}

/// Object and background of one appearance.
#[derive(Debug, Clone)]
pub struct Scene {
    /// The object.
    pub sprite: Sprite,
    /// The empty background.
    pub background: Frame,
    /// The appearance drawn.
    pub appearance: Appearance,
}

/// The world's renderer at one size, solid objects of a fixed radius.
#[derive(Debug, Clone)]
pub struct SpriteWorld {
    world: MovingShapes,
    size: u32,
    radius: u32,
}

impl SpriteWorld {
    /// A `size × size` world of solid objects of `radius` pixels with the given shapes and
    /// colours.
    ///
    /// # Errors
    /// An invalid world configuration (named).
    pub fn new(size: u32, radius: u32, shapes: &[Shape], colours: &[Colour]) -> Result<Self> {
        let r = radius as f32 / size as f32;
        let cfg = WorldConfig {
            speed: (1, 1),
            radius: (r, r),
            shapes: shapes.to_vec(),
            colours: colours.to_vec(),
            actions: vec![ActionKind::Translate],
            ..WorldConfig::new(size, size, 2)
        };
        Ok(Self {
            world: MovingShapes::new(cfg)?,
            size,
            radius,
        })
    }

    /// Frame side in pixels.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Object radius in pixels.
    pub fn radius(&self) -> u32 {
        self.radius
    }

    /// Draws an appearance (the world's sampler, then a solid texture).
    ///
    /// # Errors
    /// World errors.
    pub fn sample_appearance<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> Result<Appearance> {
        let mut app = self.world.sample_appearance(rng)?;
        app.texture = Texture::Solid;
        Ok(app)
    }

    /// The object and background of `app`.
    ///
    /// # Errors
    /// World errors; an object that is not visible.
    pub fn scene<R: rand::Rng + ?Sized>(&self, app: Appearance, rng: &mut R) -> Result<Scene> {
        let clip = self.world.render(
            Action::Translate {
                direction: Direction::Right,
                speed: 1,
            },
            app,
            rng,
        )?;
        let gone = self.world.render(Action::Disappear { at: 1 }, app, rng)?;
        let background = gone
            .video
            .frames()
            .get(1)
            .cloned()
            .ok_or_else(|| Error::invalid("synthetic clip", "no second frame"))?;
        let (frame, mask, centre) = match (
            clip.video.frames().first(),
            clip.masks.first(),
            clip.centers.first(),
        ) {
            (Some(f), Some(m), Some(c)) => (f, m, *c),
            _ => return Err(Error::invalid("synthetic clip", "no first frame")),
        };
        let s = self.size as usize;
        let (cx, cy) = (centre.0.floor() as i64, centre.1.floor() as i64);
        let mut pixels = Vec::new();
        for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
            let (x, y) = ((i % s) as u32, (i / s) as u32);
            if let Some(rgb) = frame.get(x, y) {
                pixels.push((x as i64 - cx, y as i64 - cy, rgb));
            }
        }
        if pixels.is_empty() {
            return Err(Error::invalid(
                "synthetic clip",
                "the object is not visible",
            ));
        }
        Ok(Scene {
            sprite: Sprite {
                shape: app.shape,
                colour: app.colour,
                pixels,
            },
            background,
            appearance: app,
        })
    }

    /// A random scene.
    ///
    /// # Errors
    /// World errors.
    pub fn random_scene<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> Result<Scene> {
        let app = self.sample_appearance(rng)?;
        self.scene(app, rng)
    }
}

/// `background` with `sprite` centred on pixel `(x, y)` (pixels outside the frame are
/// dropped).
pub fn compose(background: &Frame, sprite: &Sprite, (x, y): (i64, i64)) -> Frame {
    let mut f = background.clone();
    let (w, h) = (f.width() as i64, f.height() as i64);
    for &(dx, dy, rgb) in &sprite.pixels {
        let (px, py) = (x + dx, y + dy);
        if px >= 0 && py >= 0 && px < w && py < h {
            f.put(px as u32, py as u32, rgb);
        }
    }
    f
}

/// Every background kind, in the world's order.
pub const BACKGROUNDS: [Background; 3] = Background::ALL;

/// Parses shape names (`"circle"`).
///
/// # Errors
/// An unknown name.
pub fn parse_shapes(names: &[String]) -> Result<Vec<Shape>> {
    names
        .iter()
        .map(|n| {
            Shape::ALL
                .iter()
                .copied()
                .find(|s| s.name() == n)
                .ok_or_else(|| Error::Unsupported {
                    field: "shapes".into(),
                    value: n.clone(),
                    supported: "circle, square, triangle, diamond, cross, ring".into(),
                })
        })
        .collect()
}

/// Parses colour names (`"red"`).
///
/// # Errors
/// An unknown name.
pub fn parse_colours(names: &[String]) -> Result<Vec<Colour>> {
    names
        .iter()
        .map(|n| {
            Colour::ALL
                .iter()
                .copied()
                .find(|c| c.name() == n)
                .ok_or_else(|| Error::Unsupported {
                    field: "colours".into(),
                    value: n.clone(),
                    supported: "red, green, blue, yellow, cyan, magenta, orange, white".into(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use vidgen_video_io::synth::seeded_rng;

    /// A pasted sprite moved by whole pixels is what the world draws.
    #[test]
    fn compose_equals_the_worlds_drawing() {
        let sw = SpriteWorld::new(32, 5, &Shape::ALL, &Colour::ALL).unwrap();
        let world = MovingShapes::new(WorldConfig {
            speed: (2, 2),
            radius: (5.0 / 32.0, 5.0 / 32.0),
            ..WorldConfig::new(32, 32, 3)
        })
        .unwrap();
        let mut rng = seeded_rng(1);
        for i in 0..12 {
            let app = sw.sample_appearance(&mut rng).unwrap();
            let scene = sw.scene(app, &mut rng).unwrap();
            let clip = world
                .render(
                    Action::Translate {
                        direction: Direction::ALL[i % 8],
                        speed: 2,
                    },
                    app,
                    &mut rng,
                )
                .unwrap();
            for t in 0..3 {
                let c = clip.centers[t];
                let f = compose(
                    &scene.background,
                    &scene.sprite,
                    (c.0.floor() as i64, c.1.floor() as i64),
                );
                assert!(f == clip.video.frames()[t], "clip {i} frame {t}");
            }
        }
    }
}
