#![doc = include_str!("../README.md")]
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
    decode_gif, decode_png, encode_gif, encode_png, encode_png_compact, gif_delay_cs, read_gif,
    read_png, read_png_folder, write_gif, write_png, write_png_compact, write_png_folder,
    MAX_DECODED_BYTES,
};

#[cfg(feature = "ffmpeg")]
/// The FFmpeg binding this crate is built on (`ffmpeg` feature), re-exported so that users of
/// [`VideoReader::next_raw`] (motion-codec) name the same types.
pub use ffmpeg_next;
