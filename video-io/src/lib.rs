//! # video-io
//!
//! Video in and out of tensors. Use this crate to turn files and frames a person can look at
//! into the `[B, C, T, H, W]` tensors vidgen's models take, and back; to write results as
//! PNG folders, animated GIFs and side-by-side comparisons; to decode and encode real video
//! files through FFmpeg; and to generate the synthetic "moving shapes" world, whose clips come
//! with exact motion labels, for tests, probes and in-context demos.
//!
//! - [`Frame`] (`[H, W, 3]` RGB `u8`) and [`Video`] (frames + fps); [`videos_to_tensor`] /
//!   [`tensor_to_videos`] convert to and from `[B, 3, T, H, W]` f32 in `[-1, 1]` or `[0, 1]`
//!   ([`PixelRange`]); a tensor holding NaN or Inf is `Error::NonFinite`, not black pixels.
//! - Resizing with bilinear / bicubic / area filters, antialiased when downscaling like PIL and
//!   torchvision's `antialias=True` ([`resize_frame`], [`Video::resize`], [`resize_tensor`]);
//!   centre crops; temporal resampling to a target fps ([`Video::resample_fps`]).
//! - PNG frames and frame folders (read in natural order, `2.png` before `10.png`:
//!   [`natural_cmp`], [`sorted_frame_paths`]), animated GIF (exact for frames of ≤ 256 colours), and
//!   grids / strips of videos ([`side_by_side`], [`contact_sheet`]).
//! - [`synth`]: the seeded moving-shapes generator.
//! - [`VideoReader`] (streaming, seekable decode: a seek past the end, however far, ends the
//!   iterator; where the demuxer cannot seek exactly, as in MPEG-TS, it decodes from the
//!   start), [`probe`], [`count_frames`], [`read_video`] (`Some(0)` frames is
//!   `Error::InvalidArgument`), [`write_mp4`]: FFmpeg, behind the `ffmpeg` feature.
//! - [`sample`]: a small real clip (Big Buck Bunny, CC-BY 3.0) shipped with the crate.
//!
//! ```
//! use candle_core::Device;
//! use vidgen_video_io::synth::{seeded_rng, MovingShapes, WorldConfig};
//! use vidgen_video_io::{tensor_to_videos, PixelRange, ResizeFilter};
//!
//! # fn main() -> vidgen_video_core::Result<()> {
//! let world = MovingShapes::new(WorldConfig::new(64, 64, 8))?;
//! let clip = world.clip(&mut seeded_rng(0))?;
//! println!("{}: {} px/frame", clip.label.action.name(), clip.label.action.speed());
//!
//! let small = clip.video.resize(32, 32, ResizeFilter::Area)?;
//! let x = small.to_tensor(PixelRange::MinusOneToOne, &Device::Cpu)?; // [1, 3, 8, 32, 32]
//! assert_eq!(x.dims(), &[1, 3, 8, 32, 32]);
//! let back = tensor_to_videos(&x, PixelRange::MinusOneToOne, small.fps())?;
//! assert_eq!(back[0], small); // exact for u8 content
//!
//! let gif = vidgen_video_io::encode_gif(&clip.video)?; // palette-safe: exact round trip
//! assert_eq!(vidgen_video_io::decode_gif(&gif, "clip.gif".as_ref())?.frames(), clip.video.frames());
//! # Ok(()) }
//! ```
//!
//! ## Features
//! - `ffmpeg` (off by default): video files through the system FFmpeg libraries (≥ 5.1), via
//!   `ffmpeg-next`. Building it needs FFmpeg's development files, `pkg-config` and libclang;
//!   on Debian / Ubuntu: `apt-get install libavcodec-dev libavformat-dev libavutil-dev
//!   libswscale-dev libavdevice-dev libavfilter-dev pkg-config clang libclang-dev`. Without it,
//!   the file functions return `Error::FeatureDisabled`; everything else works.
#![deny(missing_docs)]

mod frames;
pub mod grid;
mod media;
mod order;
mod resize;
pub mod sample;
mod still;
pub mod synth;

pub use frames::{tensor_to_videos, videos_to_tensor, Frame, PixelRange, Video, MAX_SIDE};
pub use grid::{contact_sheet, side_by_side, GridStyle};
pub use media::{
    count_frames, probe, read_video, write_mp4, write_video, DecodeOptions, DecodedFrame,
    EncodeOptions, VideoCodec, VideoInfo, VideoReader, FFMPEG_ENABLED,
};
pub use order::{natural_cmp, natural_path_cmp, sorted_frame_paths};
pub use resize::{resize_frame, resize_tensor, ResizeFilter};
pub use still::{
    decode_gif, decode_png, encode_gif, encode_png, gif_delay_cs, read_gif, read_png,
    read_png_folder, write_gif, write_png, write_png_folder, MAX_DECODED_BYTES,
};

#[cfg(feature = "ffmpeg")]
/// The FFmpeg binding this crate is built on (`ffmpeg` feature), re-exported so that users of
/// [`VideoReader::next_raw`] (motion-codec) name the same types.
pub use ffmpeg_next;
