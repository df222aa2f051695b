//! Codec motion vectors: FFmpeg's `AV_FRAME_DATA_MOTION_VECTORS` side data (decoder opened
//! with `flags2=+export_mvs`) into [`MotionField`]s and [`FrameVectors`], and re-encoding to
//! MPEG-4 Part 2 at 6 fps as Video-LaVIT does. The side-data parser is pure Rust and always
//! built; the file functions need the `ffmpeg` feature and otherwise return
//! [`Error::FeatureDisabled`].

use std::path::Path;

use vidgen_video_core::{Error, Result};

use crate::field::{FrameType, LumaFrame, MotionField};
use crate::lavit::{BlockVector, FrameVectors};

/// One `AVMotionVector` as FFmpeg lays it out (libavutil/motion_vector.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawMotionVector {
    /// Where the reference is: negative = past, positive = future (frame distance sign).
    pub source: i32,
    /// Block width.
    pub w: u8,
    /// Block height.
    pub h: u8,
    /// Reference block centre `x`.
    pub src_x: i16,
    /// Reference block centre `y`.
    pub src_y: i16,
    /// Current block centre `x`.
    pub dst_x: i16,
    /// Current block centre `y`.
    pub dst_y: i16,
    /// Extra flags (unused by FFmpeg's decoders today).
    pub flags: u64,
    /// `src − dst` along `x`, in `1 / motion_scale` pixels.
    pub motion_x: i32,
    /// `src − dst` along `y`, in `1 / motion_scale` pixels.
    pub motion_y: i32,
    /// Sub-pixel units per pixel (2 for half-pel MPEG-4, 4 for quarter-pel H.264).
    pub motion_scale: u16,
}

/// Size in bytes of one `AVMotionVector` (40: 8-byte alignment of `flags`).
pub const AV_MOTION_VECTOR_SIZE: usize = 40;

impl RawMotionVector {
    /// The displacement in this crate's convention (`source · motion / motion_scale`, see
    /// [`MotionField`]); `None` for a zero scale.
    pub fn displacement(&self) -> Option<(f32, f32)> {
        if self.motion_scale == 0 {
            return None;
        }
        let s = self.source.signum() as f32 / self.motion_scale as f32;
        Some((self.motion_x as f32 * s, self.motion_y as f32 * s))
    }
}

/// Parses `AV_FRAME_DATA_MOTION_VECTORS` side data: an array of `AVMotionVector` in native
/// byte order.
///
/// # Errors
/// [`Error::Malformed`] (path `<side data>`) when the length is not a multiple of 40 bytes.
pub fn parse_motion_vectors(bytes: &[u8]) -> Result<Vec<RawMotionVector>> {
    if !bytes.len().is_multiple_of(AV_MOTION_VECTOR_SIZE) {
        return Err(Error::Malformed {
            path: "<motion vector side data>".into(),
            reason: format!(
                "{} bytes is not a whole number of {AV_MOTION_VECTOR_SIZE}-byte AVMotionVector",
                bytes.len()
            ),
        });
    }
    let i16at = |c: &[u8], o: usize| i16::from_ne_bytes([c[o], c[o + 1]]);
    let i32at = |c: &[u8], o: usize| i32::from_ne_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
    Ok(bytes
        .chunks_exact(AV_MOTION_VECTOR_SIZE)
        .map(|c| {
            let mut f = [0u8; 8];
            f.copy_from_slice(&c[16..24]);
            RawMotionVector {
                source: i32at(c, 0),
                w: c[4],
                h: c[5],
                src_x: i16at(c, 6),
                src_y: i16at(c, 8),
                dst_x: i16at(c, 10),
                dst_y: i16at(c, 12),
                flags: u64::from_ne_bytes(f),
                motion_x: i32at(c, 24),
                motion_y: i32at(c, 28),
                motion_scale: u16::from_ne_bytes([c[32], c[33]]),
            }
        })
        .collect())
}

/// Puts codec vectors on a grid of `block_size` blocks: each vector goes to the cell holding
/// its destination centre; several vectors in one cell (sub-blocks) are averaged, weighted by
/// their area. Cells with no vector (intra blocks, I-frames) are invalid and zero.
///
/// # Errors
/// [`Error::InvalidArgument`] for a zero block size or a frame smaller than one block.
pub fn field_from_vectors(
    vectors: &[RawMotionVector],
    width: usize,
    height: usize,
    block_size: usize,
    frame_type: FrameType,
) -> Result<MotionField> {
    if block_size == 0 || width < block_size || height < block_size {
        return Err(Error::invalid(
            "block_size",
            format!("{block_size} does not fit a {width}x{height} frame"),
        ));
    }
    let (rows, cols) = (height / block_size, width / block_size);
    let n = rows * cols;
    let mut acc = vec![(0f32, 0f32, 0f32); n];
    for v in vectors {
        let Some((dx, dy)) = v.displacement() else {
            continue;
        };
        if v.dst_x < 0 || v.dst_y < 0 {
            continue;
        }
        let (c, r) = (v.dst_x as usize / block_size, v.dst_y as usize / block_size);
        if r >= rows || c >= cols {
            continue;
        }
        let wgt = (v.w as f32 * v.h as f32).max(1.0);
        let a = &mut acc[r * cols + c];
        a.0 += wgt * dx;
        a.1 += wgt * dy;
        a.2 += wgt;
    }
    let mut field = MotionField::zeros(rows, cols, block_size);
    for (i, a) in acc.iter().enumerate() {
        if a.2 > 0.0 {
            field.set(i / cols, i % cols, (a.0 / a.2, a.1 / a.2));
        } else {
            field.valid[i] = false;
        }
    }
    field.frame_type = Some(frame_type);
    Ok(field)
}

/// Codec vectors of a frame as LaVIT preprocessing input.
pub fn frame_vectors(
    vectors: &[RawMotionVector],
    width: usize,
    height: usize,
    frame_type: FrameType,
) -> FrameVectors {
    FrameVectors {
        width,
        height,
        frame_type,
        vectors: vectors
            .iter()
            .filter_map(|v| {
                v.displacement().map(|(dx, dy)| BlockVector {
                    dst_x: v.dst_x as i32,
                    dst_y: v.dst_y as i32,
                    w: v.w,
                    h: v.h,
                    dx,
                    dy,
                })
            })
            .collect(),
    }
}

/// Everything read from one coded video.
#[derive(Clone, Debug)]
pub struct CodecMotion {
    /// Per decoded frame: its vectors on the block grid, with its frame type.
    pub fields: Vec<MotionField>,
    /// Per decoded frame: the raw vectors for [`crate::preprocess`].
    pub vectors: Vec<FrameVectors>,
    /// Per decoded frame: the decoded luma (for reconstruction and PSNR).
    pub luma: Vec<LumaFrame>,
    /// Frames per second of the stream.
    pub fps: f64,
}

impl CodecMotion {
    /// The frame types in decode output (display) order.
    pub fn frame_types(&self) -> Vec<FrameType> {
        self.fields
            .iter()
            .map(|f| f.frame_type.unwrap_or(FrameType::Other))
            .collect()
    }
}

/// Decodes `path` with `flags2=+export_mvs` and reads every frame's motion vectors, frame
/// type and luma (at most `max_frames` frames when given). Block grid: `block_size` (16).
///
/// # Errors
/// [`Error::InvalidArgument`] for `max_frames == Some(0)` or a zero `block_size`, checked
/// before the file is opened (asking for zero frames is the caller's mistake, not the file's;
/// video-io's `read_video` answers the same); [`Error::Io`] for a missing file,
/// [`Error::Malformed`] for a corrupt or truncated file or one with zero decodable frames,
/// [`Error::Unsupported`] for a pixel format without a luma plane,
/// [`Error::FeatureDisabled`] without the `ffmpeg` feature.
pub fn read_codec_motion(
    path: impl AsRef<Path>,
    block_size: usize,
    max_frames: Option<usize>,
) -> Result<CodecMotion> {
    if max_frames == Some(0) {
        return Err(Error::invalid(
            "max_frames",
            "Some(0): nothing to read; pass None for all frames",
        ));
    }
    if block_size == 0 {
        return Err(Error::invalid("block_size", "must be ≥ 1"));
    }
    imp::read(path.as_ref(), block_size, max_frames)
}

/// Re-encodes `video` as Video-LaVIT does before reading motion: resampled to `fps` (6) and
/// written as MPEG-4 Part 2 (FFmpeg's `mpeg4` encoder, quantiser `qscale`, a keyframe every
/// `gop` frames) to `path` (`.mp4`, `.avi`, ...).
///
/// # Errors
/// Odd frame sizes, unwritable paths, [`Error::FeatureDisabled`] without the `ffmpeg` feature.
pub fn encode_mpeg4(
    video: &vidgen_video_io::Video,
    path: impl AsRef<Path>,
    fps: f64,
    qscale: u32,
    gop: u32,
) -> Result<()> {
    if !(fps.is_finite() && fps > 0.0) {
        return Err(Error::invalid("fps", format!("{fps}: must be > 0")));
    }
    if !vidgen_video_io::FFMPEG_ENABLED {
        return Err(disabled("MPEG-4 re-encoding"));
    }
    let v = if (video.fps() - fps).abs() > 1e-6 {
        video.resample_fps(fps)?
    } else {
        video.clone()
    };
    vidgen_video_io::write_video(
        path,
        &v,
        &vidgen_video_io::EncodeOptions {
            codec: vidgen_video_io::VideoCodec::Mpeg4,
            quality: qscale,
            gop,
        },
    )?;
    Ok(())
}

fn disabled(what: &str) -> Error {
    Error::FeatureDisabled {
        what: what.into(),
        feature: "ffmpeg".into(),
        krate: "motion-codec".into(),
    }
}

#[cfg(not(feature = "ffmpeg"))]
mod imp {
    use super::*;
    pub(super) fn read(_: &Path, _: usize, _: Option<usize>) -> Result<CodecMotion> {
        Err(disabled("reading codec motion vectors"))
    }
}

#[cfg(feature = "ffmpeg")]
mod imp {
    use super::*;
    use ff::format::Pixel;
    use ffmpeg_next as ff;

    fn luma_of(frame: &ff::frame::Video) -> Result<LumaFrame> {
        let ok = matches!(
            frame.format(),
            Pixel::YUV420P
                | Pixel::YUVJ420P
                | Pixel::YUV422P
                | Pixel::YUVJ422P
                | Pixel::YUV444P
                | Pixel::YUVJ444P
                | Pixel::GRAY8
                | Pixel::NV12
        );
        if !ok {
            return Err(Error::Unsupported {
                field: "pixel format".into(),
                value: format!("{:?}", frame.format()),
                supported: "8-bit YUV planar / NV12 / GRAY8".into(),
            });
        }
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let stride = frame.stride(0);
        let data = frame.data(0);
        if stride < w || data.len() < stride * h.saturating_sub(1) + w {
            return Err(Error::Malformed {
                path: "<decoded frame>".into(),
                reason: format!(
                    "luma plane of {} bytes, stride {stride}, for {w}x{h}",
                    data.len()
                ),
            });
        }
        let mut out = Vec::with_capacity(w * h);
        for y in 0..h {
            out.extend_from_slice(&data[y * stride..y * stride + w]);
        }
        LumaFrame::new(w, h, out)
    }

    pub(super) fn read(path: &Path, bs: usize, max_frames: Option<usize>) -> Result<CodecMotion> {
        let mut reader = vidgen_video_io::VideoReader::open_with(
            path,
            &vidgen_video_io::DecodeOptions {
                threads: 1,
                export_motion_vectors: true,
            },
        )?;
        let fps = reader.info().fps;
        let (mut fields, mut vectors, mut luma) = (Vec::new(), Vec::new(), Vec::new());
        while max_frames.is_none_or(|m| fields.len() < m) {
            let Some((frame, _)) = reader.next_raw()? else {
                break;
            };
            let ft = match frame.kind() {
                ff::picture::Type::I => FrameType::I,
                ff::picture::Type::P => FrameType::P,
                ff::picture::Type::B => FrameType::B,
                _ => FrameType::Other,
            };
            let raw = match frame.side_data(ff::frame::side_data::Type::MotionVectors) {
                Some(sd) => parse_motion_vectors(sd.data())?,
                None => Vec::new(),
            };
            let l = luma_of(&frame)?;
            let (w, h) = (l.width(), l.height());
            fields.push(field_from_vectors(&raw, w, h, bs, ft)?);
            vectors.push(frame_vectors(&raw, w, h, ft));
            luma.push(l);
        }
        if fields.is_empty() {
            return Err(Error::Malformed {
                path: path.to_path_buf(),
                reason: "zero frames: no video frame could be decoded".into(),
            });
        }
        Ok(CodecMotion {
            fields,
            vectors,
            luma,
            fps,
        })
    }
}
