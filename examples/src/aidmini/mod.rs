//! AID in miniature: instruction-guided video prediction on the synthetic world, with every
//! part of the seed's system at toy size and trained here.
//!
//! - **Task.** `K = 2` conditioning frames of an object **at rest** (the same frame twice) and
//!   an instruction ("move up-left", 8 directions) → `N = 8` frames in which the object keeps
//!   its looks and moves that way (6 predicted frames, 1 px per frame). The start is drawn
//!   where the object can move 6 px in every direction, so nothing in the frames reveals the
//!   instruction.
//! - **Base** (a Stable Video Diffusion pipeline folder, loaded by
//!   [`vidgen_pipelines::SvdPipeline`]): a temporal VAE (`AutoencoderKLTemporalDecoder`, factor
//!   `vae_factor`, 4 in the shipped folder: 32×32 frames ↔ C×8×8 latents, `C` =
//!   `latent_channels`: 8 in the shipped folder), an SVD
//!   UNet (`UNetSpatioTemporalConditionModel`, 2 levels) trained image-to-video on the world (first frame → the object at rest, then moving in a
//!   random direction), and CLIP vision / text towers with frozen random weights (the real
//!   CLIP tokenizer's vocabulary, cut to 1 014 tokens). See [`folder`].
//! - **AID** ([`vidgen_pipelines::AidPipeline`]): adapters at every attention site of the frozen
//!   UNet, a DQFormer and the UNet's cross-attention layers (AID's recipe), trained on
//!   instruction-labelled episodes with the rest of the base frozen; the template planner writes
//!   the stages. The shipped weights move the object the instructed way in 99.5 % of 200
//!   episodes (13.0 % without the text, chance 12.5 %) and keep its colour and shape in
//!   93.5 %.
//! - [`train`] runs the stages (VAE, VAE decoder, base, AID); [`eval`] measures instruction following
//!   with Wilson intervals and writes the clips.

pub mod eval;
pub mod folder;
#[cfg(test)]
mod smoke_tests;
pub mod train;

use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{seeded_rng, Colour, Direction, Shape};
use vidgen_video_io::Frame;

use crate::minis::score::direction_words;
use crate::minis::sprites::{compose, parse_colours, parse_shapes, SpriteWorld};

/// The folder name of the shipped miniature under `examples/assets/`.
pub const ASSET: &str = "aid-mini";

/// The shipped miniature (`examples/assets/aid-mini`).
pub fn shipped_dir() -> PathBuf {
    crate::minis::asset_dir(ASSET)
}

/// The episode geometry and the inference defaults (`mini.json` in the miniature's folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MiniConfig {
    /// Frame side in pixels.
    pub size: u32,
    /// Frames of a video, conditioning frames included (`N`).
    pub frames: usize,
    /// Conditioning frames (`K`), the object at rest in all of them.
    pub cond_frames: usize,
    /// Pixels per frame the object moves after the conditioning frames.
    pub speed: u32,
    /// Object radius in pixels.
    pub radius: u32,
    /// Latent channels of the VAE (the UNet takes twice as many: noisy + conditioning
    /// latents). Folders written before this field existed have 4.
    pub latent_channels: usize,
    /// Downsampling factor of the VAE (a power of two: frames of `size` pixels become latents
    /// of `size / vae_factor`). Folders written before this field existed have 4.
    pub vae_factor: u32,
    /// The SVD UNet's `block_out_channels` (one level per entry, multiples of 32: the UNet's
    /// group norms have 32 groups; attention heads of 16 dimensions). Folders written before
    /// this field existed have `[32, 32]`.
    #[serde(default = "legacy_unet_channels")]
    pub unet_channels: Vec<usize>,
    /// The SVD UNet's `layers_per_block`. Folders written before this field existed have 1.
    #[serde(default = "legacy_unet_layers")]
    pub unet_layers: usize,
    /// Shapes drawn.
    pub shapes: Vec<String>,
    /// Colours drawn.
    pub colours: Vec<String>,
    /// Frames per second of written GIFs.
    pub fps: f64,
    /// Stage descriptions per instruction (the template planner's).
    pub stages: usize,
    /// Denoising steps of an evaluation call.
    pub steps: usize,
    /// Frame guidance `s_V` at the first and the last frame.
    pub frame_guidance: (f64, f64),
    /// Text guidance `s_T` of the evaluation.
    pub text_guidance: f64,
    /// Sample with the conditioning frames' latents replaced by their noised encodings after
    /// every step (`AidCall::replace_conditioning`; folders written before it: off).
    pub replace_conditioning: bool,
}

/// The UNet width of folders written before `unet_channels` existed.
fn legacy_unet_channels() -> Vec<usize> {
    vec![32, 32]
}

/// The UNet depth of folders written before `unet_layers` existed.
fn legacy_unet_layers() -> usize {
    1
}

impl Default for MiniConfig {
    fn default() -> Self {
        Self {
            size: 32,
            frames: 8,
            cond_frames: 2,
            speed: 1,
            radius: 7,
            latent_channels: 4,
            vae_factor: 4,
            unet_channels: vec![64, 64],
            unet_layers: 1,
            shapes: ["circle", "square", "triangle", "cross"]
                .map(String::from)
                .to_vec(),
            colours: Colour::ALL.iter().map(|c| c.name().to_string()).collect(),
            fps: 4.0,
            stages: 2,
            steps: 8,
            frame_guidance: (1.0, 1.0),
            text_guidance: 2.0,
            replace_conditioning: false,
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

    /// Checks the geometry: the start box must leave room to move in every direction.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.latent_channels == 0 {
            return Err(Error::config("latent_channels", "must be at least 1"));
        }
        if !self.vae_factor.is_power_of_two()
            || self.vae_factor < 2
            || !self.size.is_multiple_of(self.vae_factor)
            || self.size / self.vae_factor < 4
        {
            return Err(Error::config(
                "vae_factor",
                format!(
                    "{} must be a power of two >= 2 that divides size {} into at least 4 latent cells",
                    self.vae_factor, self.size
                ),
            ));
        }
        if self.unet_channels.is_empty()
            || self.unet_channels.iter().any(|&c| c == 0 || c % 32 != 0)
            || self.unet_layers == 0
        {
            return Err(Error::config(
                "unet_channels / unet_layers",
                format!(
                    "channels {:?} must be one or more multiples of 32, layers {} at least 1",
                    self.unet_channels, self.unet_layers
                ),
            ));
        }
        if self.cond_frames == 0 || self.cond_frames >= self.frames {
            return Err(Error::config(
                "cond_frames",
                format!("{} must be in 1..{}", self.cond_frames, self.frames),
            ));
        }
        if self.speed == 0 || self.radius < 2 || self.stages == 0 || self.steps == 0 {
            return Err(Error::config(
                "speed / radius / stages / steps",
                "speed, stages and steps must be >= 1, radius >= 2",
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
        parse_shapes(&self.shapes)?;
        parse_colours(&self.colours)?;
        Ok(())
    }

    /// Pixels travelled by the last frame.
    pub fn travel(&self) -> i64 {
        self.speed as i64 * (self.frames - self.cond_frames) as i64
    }

    /// The centre pixels (inclusive range, both axes) from which the object stays in view
    /// (with the world's one-pixel margin) whichever way it moves.
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
}

/// The instruction for a direction (`"move up-left"`).
pub fn instruction(d: Direction) -> String {
    format!("move {}", direction_words(d))
}

/// One episode: the ground-truth video and its labels.
#[derive(Debug, Clone)]
pub struct Episode {
    /// The `N` frames: `K` at rest, then the object moving along `direction`.
    pub frames: Vec<Frame>,
    /// Where it moves.
    pub direction: Direction,
    /// Its colour.
    pub colour: Colour,
    /// Its shape.
    pub shape: Shape,
    /// Its centre pixel at rest.
    pub start: (i64, i64),
}

impl Episode {
    /// The conditioning frames.
    pub fn cond(&self, k: usize) -> &[Frame] {
        &self.frames[..k.min(self.frames.len())]
    }
}

/// SplitMix-style mixing of a stream seed and an index.
pub fn mix(seed: u64, index: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(stream.wrapping_mul(0x94D0_49BB_1331_11EB));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Episodes of a [`MiniConfig`].
#[derive(Debug, Clone)]
pub struct Episodes {
    cfg: MiniConfig,
    world: SpriteWorld,
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
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MiniConfig {
        &self.cfg
    }

    /// Episode `index` of stream `seed` (the same every time), moving along `direction` (or a
    /// direction drawn uniformly).
    ///
    /// # Errors
    /// World errors.
    pub fn episode(&self, seed: u64, index: u64, direction: Option<Direction>) -> Result<Episode> {
        let mut rng = seeded_rng(mix(seed, index, 0xA1D));
        let drawn = Direction::ALL[rng.random_range(0..8)];
        let direction = direction.unwrap_or(drawn);
        let scene = self.world.random_scene(&mut rng)?;
        let (lo, hi) = self.cfg.start_box();
        let start = (rng.random_range(lo..=hi), rng.random_range(lo..=hi));
        let (dx, dy) = direction.delta();
        let k = self.cfg.cond_frames as i64;
        let v = self.cfg.speed as i64;
        let frames = (0..self.cfg.frames as i64)
            .map(|t| {
                let s = v * (t - (k - 1)).max(0);
                compose(
                    &scene.background,
                    &scene.sprite,
                    (start.0 + dx as i64 * s, start.1 + dy as i64 * s),
                )
            })
            .collect();
        Ok(Episode {
            frames,
            direction,
            colour: scene.sprite.colour,
            shape: scene.sprite.shape,
            start,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::minis::score::{direction_of, read_object};

    #[test]
    fn episodes_rest_then_move_and_are_reproducible() {
        let cfg = MiniConfig::default();
        let eps = Episodes::new(&cfg).unwrap();
        let shapes = parse_shapes(&cfg.shapes).unwrap();
        for i in 0..16 {
            let e = eps.episode(5, i, None).unwrap();
            assert_eq!(e.frames.len(), cfg.frames);
            assert!(e.frames[0] == e.frames[1], "conditioning frames at rest");
            assert!(e.frames[1] != e.frames[2]);
            let r = [cfg.radius as f32];
            let a = read_object(&e.frames[1], &shapes, &r).unwrap();
            let b = read_object(&e.frames[7], &shapes, &r).unwrap();
            assert_eq!(a.colour, e.colour);
            assert_eq!(a.shape, e.shape);
            let d = direction_of(
                b.centroid.0 - a.centroid.0,
                b.centroid.1 - a.centroid.1,
                1.5,
            );
            assert_eq!(d, Some(e.direction));
            let again = eps.episode(5, i, None).unwrap();
            assert!(again.frames == e.frames);
            let forced = eps.episode(5, i, Some(Direction::Left)).unwrap();
            assert_eq!(forced.direction, Direction::Left);
            assert!(
                forced.frames[0] == e.frames[0],
                "same scene whatever the direction"
            );
        }
    }

    #[test]
    fn geometry_is_checked() {
        let bad = MiniConfig {
            size: 16,
            ..MiniConfig::default()
        };
        assert!(bad.validate().is_err());
        assert!(MiniConfig::default().validate().is_ok());
        for (f, ok) in [
            (2, true),
            (4, true),
            (8, true),
            (0, false),
            (3, false),
            (16, false),
        ] {
            let c = MiniConfig {
                vae_factor: f,
                ..MiniConfig::default()
            };
            let r = c.validate();
            assert_eq!(r.is_ok(), ok, "vae_factor {f}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("vae_factor"), "{e}");
            }
        }
        // Folders written before the field existed load with factor 4.
        let old: MiniConfig =
            serde_json::from_str(r#"{"size": 32, "latent_channels": 8}"#).unwrap();
        assert_eq!(old.vae_factor, 4);
        assert_eq!((old.unet_channels, old.unet_layers), (vec![32, 32], 1));
        for (ch, layers, ok) in [
            (vec![64, 64], 1, true),
            (vec![32, 64, 96], 2, true),
            (vec![], 1, false),
            (vec![48, 48], 1, false),
            (vec![64, 64], 0, false),
        ] {
            let c = MiniConfig {
                unet_channels: ch.clone(),
                unet_layers: layers,
                ..MiniConfig::default()
            };
            let r = c.validate();
            assert_eq!(r.is_ok(), ok, "unet {ch:?} × {layers}: {r:?}");
        }
        assert_eq!(instruction(Direction::UpLeft), "move up-left");
    }
}
