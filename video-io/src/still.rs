//! PNG frames and frame folders, and animated GIF, through the `image` and `gif` crates.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufWriter, Cursor, Read, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use image::ImageEncoder;
use vidgen_video_core::{Error, Result};

use crate::frames::{check_size, Frame, Video, MAX_SIDE};

/// Largest decoded size (bytes of RGB pixels, all frames together) a reader will produce from
/// one file: a guard against decompression bombs in GIFs and PNGs from unknown sources.
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io_err(path, e))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    let mut w = BufWriter::new(f);
    w.write_all(bytes).map_err(|e| io_err(path, e))?;
    w.flush().map_err(|e| io_err(path, e))
}

// ---------------------------------------------------------------------------------------------
// PNG

/// Encodes `frame` as an 8-bit RGB PNG.
pub fn encode_png(frame: &Frame) -> Result<Vec<u8>> {
    encode_png_with(frame, image::codecs::png::CompressionType::default())
}

/// Encodes `frame` as a PNG at the `image` crate's best compression: slower to write, and 3 to 4
/// times smaller than [`encode_png`] on flat figures such as loss curves (which ship in the
/// repository's assets).
pub fn encode_png_compact(frame: &Frame) -> Result<Vec<u8>> {
    encode_png_with(frame, image::codecs::png::CompressionType::Best)
}

/// Writes `frame` to `path` as [`encode_png_compact`] encodes it.
pub fn write_png_compact(path: impl AsRef<Path>, frame: &Frame) -> Result<()> {
    write_file(path.as_ref(), &encode_png_compact(frame)?)
}

fn encode_png_with(
    frame: &Frame,
    compression: image::codecs::png::CompressionType,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        compression,
        image::codecs::png::FilterType::default(),
    )
    .write_image(
        frame.data(),
        frame.width(),
        frame.height(),
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| Error::invalid("frame", format!("PNG encoding failed: {e}")))?;
    Ok(out)
}

/// Decodes a PNG (any bit depth / colour type; alpha is dropped, grey is replicated, 16-bit is
/// scaled to 8) into an RGB frame. `path` only names the source in errors.
pub fn decode_png(bytes: &[u8], path: &Path) -> Result<Frame> {
    let mut decoder = image::codecs::png::PngDecoder::new(Cursor::new(bytes))
        .map_err(|e| malformed(path, format!("not a readable PNG: {e}")))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    image::ImageDecoder::set_limits(&mut decoder, limits)
        .map_err(|e| malformed(path, format!("PNG too large: {e}")))?;
    let img = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| malformed(path, format!("PNG decoding failed: {e}")))?;
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    check_size(w, h)?;
    Frame::new(w, h, rgb.into_raw())
}

/// Writes `frame` to `path` as a PNG.
pub fn write_png(path: impl AsRef<Path>, frame: &Frame) -> Result<()> {
    write_file(path.as_ref(), &encode_png(frame)?)
}

/// Reads the PNG at `path` as an RGB frame.
pub fn read_png(path: impl AsRef<Path>) -> Result<Frame> {
    let path = path.as_ref();
    decode_png(&read_file(path)?, path)
}

/// Writes every frame of `video` to `dir/frame_000000.png`, `frame_000001.png`, ... (the folder
/// is created if needed) and returns the paths written. The fps is not stored: pass it again
/// to [`read_png_folder`].
pub fn write_png_folder(dir: impl AsRef<Path>, video: &Video) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    video
        .frames()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let p = dir.join(format!("frame_{i:06}.png"));
            write_png(&p, f)?;
            Ok(p)
        })
        .collect()
}

/// Reads every `*.png` file of `dir` (not recursive) as one video at `fps`, in natural order of
/// the file names ([`crate::natural_cmp`]: `2.png` before `10.png`; the list is
/// [`crate::sorted_frame_paths`]`(dir, &["png"])`).
///
/// Errors: the folder is missing ([`Error::Io`]), holds no PNG ("zero frames",
/// [`Error::Malformed`]), a file is not a PNG ([`Error::Malformed`] naming it), or the frames
/// differ in size ([`Error::ShapeMismatch`] naming the file).
pub fn read_png_folder(dir: impl AsRef<Path>, fps: f64) -> Result<Video> {
    let dir = dir.as_ref();
    let paths = crate::order::sorted_frame_paths(dir, &["png"])?;
    if paths.is_empty() {
        return Err(malformed(dir, "zero frames: the folder holds no .png file"));
    }
    let mut frames: Vec<Frame> = Vec::with_capacity(paths.len());
    for p in &paths {
        let f = read_png(p)?;
        if let Some(first) = frames.first() {
            if (f.width(), f.height()) != (first.width(), first.height()) {
                return Err(Error::ShapeMismatch {
                    key: "frame size [H, W, 3]".into(),
                    expected: vec![first.height() as usize, first.width() as usize, 3],
                    found: vec![f.height() as usize, f.width() as usize, 3],
                    file: Some(p.display().to_string()),
                });
            }
        }
        frames.push(f);
    }
    Video::new(frames, fps)
}

// ---------------------------------------------------------------------------------------------
// GIF

/// The GIF frame delay for `fps`, in the format's centiseconds (at least 2: browsers show
/// delays of 0 or 1 as 10, so 50 fps is the fastest honest GIF).
pub fn gif_delay_cs(fps: f64) -> u16 {
    (100.0 / fps).round().clamp(2.0, u16::MAX as f64) as u16
}

/// Palette and indices for `frame`: exact when it has at most 256 colours, else NeuQuant.
fn gif_frame(frame: &Frame, w: u16, h: u16) -> gif::Frame<'static> {
    let mut map: HashMap<[u8; 3], u8> = HashMap::new();
    let mut palette: Vec<u8> = Vec::new();
    let mut indices = Vec::with_capacity(w as usize * h as usize);
    let mut exact = true;
    for px in frame.data().chunks_exact(3) {
        let key = [px[0], px[1], px[2]];
        let idx = match map.get(&key) {
            Some(&i) => i,
            None => {
                if map.len() == 256 {
                    exact = false;
                    break;
                }
                let i = map.len() as u8;
                map.insert(key, i);
                palette.extend_from_slice(&key);
                i
            }
        };
        indices.push(idx);
    }
    if exact {
        gif::Frame {
            width: w,
            height: h,
            buffer: Cow::Owned(indices),
            palette: Some(palette),
            ..gif::Frame::default()
        }
    } else {
        // speed 10: NeuQuant's default trade-off between quality and time.
        gif::Frame::from_rgb_speed(w, h, frame.data(), 10)
    }
}

/// Encodes `video` as an animated GIF that loops forever, with one local palette per frame.
///
/// Frames with at most 256 distinct colours are stored exactly ("palette-safe" content, like
/// the synthetic world's clips); others are quantised with NeuQuant and are lossy. The frame
/// delay is `round(100 / fps)` centiseconds (see [`gif_delay_cs`]), so fps values that do not
/// divide 100 come back slightly changed.
pub fn encode_gif(video: &Video) -> Result<Vec<u8>> {
    let (Ok(w), Ok(h)) = (u16::try_from(video.width()), u16::try_from(video.height())) else {
        return Err(Error::invalid(
            "video",
            format!(
                "{}x{} is larger than GIF's 65535x65535",
                video.width(),
                video.height()
            ),
        ));
    };
    let gif_err =
        |e: gif::EncodingError| Error::invalid("video", format!("GIF encoding failed: {e}"));
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, w, h, &[]).map_err(gif_err)?;
        enc.set_repeat(gif::Repeat::Infinite).map_err(gif_err)?;
        let delay = gif_delay_cs(video.fps());
        for f in video.frames() {
            let mut gf = gif_frame(f, w, h);
            gf.delay = delay;
            enc.write_frame(&gf).map_err(gif_err)?;
        }
    }
    Ok(out)
}

/// Decodes an animated (or still) GIF into a video. Frames are composited as a viewer shows
/// them (frame rectangles, transparency and disposal methods applied), transparent pixels
/// become black, and the fps is `100 / delay` of the first frame (10 fps when that delay is
/// 0). `path` only names the source in errors.
///
/// Errors with [`Error::Malformed`] for bytes that are not a GIF, truncated data, a GIF with
/// zero frames, or one that would decode to more than [`MAX_DECODED_BYTES`].
pub fn decode_gif(bytes: &[u8], path: &Path) -> Result<Video> {
    decode_gif_from(Cursor::new(bytes), path)
}

fn decode_gif_from<R: Read>(reader: R, path: &Path) -> Result<Video> {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    if let Some(limit) = NonZeroU64::new(MAX_DECODED_BYTES) {
        opts.set_memory_limit(gif::MemoryLimit::Bytes(limit));
    }
    let mut dec = opts
        .read_info(reader)
        .map_err(|e| malformed(path, format!("not a readable GIF: {e}")))?;
    let (cw, ch) = (dec.width() as usize, dec.height() as usize);
    check_size(cw as u32, ch as u32).map_err(|e| malformed(path, e.to_string()))?;
    let frame_bytes = (cw * ch * 3) as u64;
    // The RGBA canvas must fit the budget too (found by fuzzing: a 5-byte screen descriptor
    // can ask for a 4 GB canvas).
    if (cw * ch * 4) as u64 > MAX_DECODED_BYTES {
        return Err(malformed(
            path,
            format!("{cw}x{ch} canvas is larger than {MAX_DECODED_BYTES} bytes"),
        ));
    }
    // The canvas is RGBA so that transparency survives until the frame is emitted; it is
    // allocated with the first frame, so a header without images costs nothing.
    let mut canvas: Vec<u8> = Vec::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut first_delay: Option<u16> = None;
    loop {
        let next = dec
            .read_next_frame()
            .map_err(|e| malformed(path, format!("GIF frame {} unreadable: {e}", frames.len())))?;
        let Some(f) = next else { break };
        if (frames.len() as u64 + 1) * frame_bytes > MAX_DECODED_BYTES {
            return Err(malformed(
                path,
                format!("decodes to more than {MAX_DECODED_BYTES} bytes"),
            ));
        }
        first_delay.get_or_insert(f.delay);
        if canvas.is_empty() {
            canvas = vec![0u8; cw * ch * 4];
        }
        let (fl, ft, fw, fh) = (
            f.left as usize,
            f.top as usize,
            f.width as usize,
            f.height as usize,
        );
        if f.buffer.len() < fw * fh * 4 {
            return Err(malformed(
                path,
                format!("GIF frame {} is short", frames.len()),
            ));
        }
        let saved = (f.dispose == gif::DisposalMethod::Previous).then(|| canvas.clone());
        // Draw the frame rectangle, clipped to the canvas; fully transparent pixels keep
        // what was below (the RGBA converter gives them alpha 0).
        for y in 0..fh {
            let cy = ft + y;
            if cy >= ch {
                break;
            }
            for x in 0..fw {
                let cx = fl + x;
                if cx >= cw {
                    break;
                }
                let s = (y * fw + x) * 4;
                if f.buffer[s + 3] == 0 {
                    continue;
                }
                let d = (cy * cw + cx) * 4;
                canvas[d..d + 4].copy_from_slice(&f.buffer[s..s + 4]);
            }
        }
        let mut rgb = Vec::with_capacity(cw * ch * 3);
        for px in canvas.chunks_exact(4) {
            let a = px[3] as u32;
            for &c in &px[..3] {
                // Blend over black so that transparent areas are defined.
                rgb.push(((c as u32 * a + 127) / 255) as u8);
            }
        }
        frames.push(Frame::new(cw as u32, ch as u32, rgb)?);
        match f.dispose {
            gif::DisposalMethod::Background => {
                for y in ft..(ft + fh).min(ch) {
                    for x in fl..(fl + fw).min(cw) {
                        let d = (y * cw + x) * 4;
                        canvas[d..d + 4].fill(0);
                    }
                }
            }
            gif::DisposalMethod::Previous => {
                if let Some(s) = saved {
                    canvas = s;
                }
            }
            gif::DisposalMethod::Any | gif::DisposalMethod::Keep => {}
        }
    }
    if frames.is_empty() {
        return Err(malformed(path, "zero frames: the GIF holds no image"));
    }
    let fps = match first_delay {
        Some(d) if d > 0 => 100.0 / d as f64,
        _ => 10.0,
    };
    Video::new(frames, fps)
}

/// Writes `video` to `path` as an animated GIF (see [`encode_gif`]).
pub fn write_gif(path: impl AsRef<Path>, video: &Video) -> Result<()> {
    write_file(path.as_ref(), &encode_gif(video)?)
}

/// Reads the animated GIF at `path` (see [`decode_gif`]).
pub fn read_gif(path: impl AsRef<Path>) -> Result<Video> {
    let path = path.as_ref();
    let f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    decode_gif_from(std::io::BufReader::new(f), path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn noise_frame(w: u32, h: u32, seed: u32) -> Frame {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        let data = (0..w * h * 3)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 24) as u8
            })
            .collect();
        Frame::new(w, h, data).unwrap()
    }

    #[test]
    fn png_round_trip_is_exact() {
        let f = noise_frame(7, 5, 3);
        let back = decode_png(&encode_png(&f).unwrap(), Path::new("mem")).unwrap();
        assert_eq!(back, f);
    }

    /// The compact encoding is lossless and, on a flat figure, smaller.
    #[test]
    fn compact_png_is_exact_and_smaller() {
        let f = noise_frame(9, 4, 2);
        let back = decode_png(&encode_png_compact(&f).unwrap(), Path::new("mem")).unwrap();
        assert_eq!(back, f);
        let mut data = vec![255u8; 200 * 120 * 3];
        for x in 0..200 {
            let y = 60 + (x as f32 / 15.0).sin() as i32 * 40;
            data[(y as usize * 200 + x) * 3] = 0;
        }
        let plot = Frame::new(200, 120, data).unwrap();
        let (fast, best) = (
            encode_png(&plot).unwrap(),
            encode_png_compact(&plot).unwrap(),
        );
        assert!(best.len() < fast.len(), "{} vs {}", best.len(), fast.len());
        assert_eq!(decode_png(&best, Path::new("mem")).unwrap(), plot);
    }

    #[test]
    fn gif_with_many_colours_is_quantised_not_rejected() {
        let v = Video::new(vec![noise_frame(40, 30, 1), noise_frame(40, 30, 2)], 25.0).unwrap();
        let back = decode_gif(&encode_gif(&v).unwrap(), Path::new("mem")).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back.width(), back.height()), (40, 30));
        assert_eq!(back.fps(), 25.0);
    }

    #[test]
    fn gif_delays() {
        assert_eq!(gif_delay_cs(25.0), 4);
        assert_eq!(gif_delay_cs(10.0), 10);
        assert_eq!(gif_delay_cs(1000.0), 2);
    }

    #[test]
    fn gif_compositing_honours_subrectangles() {
        // A 4x4 red canvas, then a 2x2 green patch at (1, 1) drawn over it (dispose Keep).
        let mut out = Vec::new();
        {
            let mut enc = gif::Encoder::new(&mut out, 4, 4, &[]).unwrap();
            let mut a = gif::Frame::from_palette_pixels(4, 4, vec![0u8; 16], vec![255, 0, 0], None);
            a.dispose = gif::DisposalMethod::Keep;
            enc.write_frame(&a).unwrap();
            let mut b = gif::Frame::from_palette_pixels(2, 2, vec![0u8; 4], vec![0, 255, 0], None);
            b.left = 1;
            b.top = 1;
            enc.write_frame(&b).unwrap();
        }
        let v = decode_gif(&out, Path::new("mem")).unwrap();
        assert_eq!(v.len(), 2);
        let f = &v.frames()[1];
        assert_eq!(f.get(0, 0), Some([255, 0, 0]));
        assert_eq!(f.get(1, 1), Some([0, 255, 0]));
        assert_eq!(f.get(3, 3), Some([255, 0, 0]));
    }
}
