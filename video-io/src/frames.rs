//! RGB frames, videos, and their conversion to and from `[B, C, T, H, W]` tensors.

use candle_core::{DType, Device, Tensor};
use vidgen_video_core::{Error, Result};

/// Largest width or height accepted for a frame: keeps `width * height * 3` far from overflow
/// and rejects nonsense sizes from malformed files before anything is allocated.
pub const MAX_SIDE: u32 = 1 << 15;

/// One RGB image, 8 bits per channel, row-major `[H, W, 3]` (HWC), top row first.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({}x{})", self.width, self.height)
    }
}

impl Frame {
    /// Wraps `data` (`[H, W, 3]` RGB, `width * height * 3` bytes) as a frame.
    ///
    /// Errors when a side is zero or above [`MAX_SIDE`], or when `data` has the wrong length.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        check_size(width, height)?;
        let expected = width as usize * height as usize * 3;
        if data.len() != expected {
            return Err(Error::shape(
                "frame data",
                &[height as usize, width as usize, 3],
                &[data.len()],
            ));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// A frame of one colour.
    pub fn filled(width: u32, height: u32, rgb: [u8; 3]) -> Result<Self> {
        check_size(width, height)?;
        let n = width as usize * height as usize;
        let mut data = Vec::with_capacity(n * 3);
        for _ in 0..n {
            data.extend_from_slice(&rgb);
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixels, `[H, W, 3]` RGB row-major.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The pixels, mutable, `[H, W, 3]` RGB row-major.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// The pixel buffer, `[H, W, 3]` RGB row-major.
    pub fn into_raw(self) -> Vec<u8> {
        self.data
    }

    /// The colour at column `x`, row `y`, or `None` outside the frame.
    pub fn get(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        Some([self.data[i], self.data[i + 1], self.data[i + 2]])
    }

    /// Sets the colour at column `x`, row `y`; does nothing outside the frame.
    pub fn put(&mut self, x: u32, y: u32, rgb: [u8; 3]) {
        if x >= self.width || y >= self.height {
            return;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        self.data[i..i + 3].copy_from_slice(&rgb);
    }

    /// The `width × height` window whose top-left corner is (`x`, `y`).
    ///
    /// Errors when the window is empty or leaves the frame.
    pub fn crop(&self, x: u32, y: u32, width: u32, height: u32) -> Result<Frame> {
        check_size(width, height)?;
        if x as u64 + width as u64 > self.width as u64
            || y as u64 + height as u64 > self.height as u64
        {
            return Err(Error::invalid(
                "crop",
                format!(
                    "window {width}x{height} at ({x}, {y}) leaves the {}x{} frame",
                    self.width, self.height
                ),
            ));
        }
        let (w, x0, y0) = (self.width as usize, x as usize, y as usize);
        let mut data = Vec::with_capacity(width as usize * height as usize * 3);
        for row in y0..y0 + height as usize {
            let start = (row * w + x0) * 3;
            data.extend_from_slice(&self.data[start..start + width as usize * 3]);
        }
        Frame::new(width, height, data)
    }

    /// The central `width × height` window (offsets rounded down when the margin is odd).
    pub fn center_crop(&self, width: u32, height: u32) -> Result<Frame> {
        if width > self.width || height > self.height {
            return Err(Error::invalid(
                "center_crop",
                format!(
                    "crop {width}x{height} is larger than the {}x{} frame",
                    self.width, self.height
                ),
            ));
        }
        self.crop(
            (self.width - width) / 2,
            (self.height - height) / 2,
            width,
            height,
        )
    }
}

pub(crate) fn check_size(width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(Error::invalid(
            "frame size",
            format!("{width}x{height}: each side must be in 1..={MAX_SIDE}"),
        ));
    }
    Ok(())
}

/// A clip: at least one [`Frame`], all of one size, shown at `fps` frames per second.
#[derive(Clone, PartialEq)]
pub struct Video {
    frames: Vec<Frame>,
    fps: f64,
}

impl std::fmt::Debug for Video {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Video({} frames of {}x{} at {} fps)",
            self.frames.len(),
            self.width(),
            self.height(),
            self.fps
        )
    }
}

/// The value range of a float video tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PixelRange {
    /// `[-1, 1]`: `x = u8 / 127.5 - 1`, the range inside models.
    #[default]
    MinusOneToOne,
    /// `[0, 1]`: `x = u8 / 255`.
    ZeroToOne,
}

impl PixelRange {
    fn to_float(self, v: u8) -> f32 {
        match self {
            PixelRange::MinusOneToOne => v as f32 / 127.5 - 1.0,
            PixelRange::ZeroToOne => v as f32 / 255.0,
        }
    }

    fn to_u8(self, x: f32) -> u8 {
        let v = match self {
            PixelRange::MinusOneToOne => (x + 1.0) * 127.5,
            PixelRange::ZeroToOne => x * 255.0,
        };
        // Callers have rejected non-finite input (`tensor_to_videos`).
        v.round().clamp(0.0, 255.0) as u8
    }
}

impl Video {
    /// A video from its frames, which must be non-empty and all of one size; `fps` must be
    /// finite and positive.
    pub fn new(frames: Vec<Frame>, fps: f64) -> Result<Self> {
        let Some(first) = frames.first() else {
            return Err(Error::invalid(
                "frames",
                "a video needs at least one frame (got zero)",
            ));
        };
        if !(fps.is_finite() && fps > 0.0) {
            return Err(Error::invalid(
                "fps",
                format!("{fps}: must be finite and > 0"),
            ));
        }
        let (w, h) = (first.width, first.height);
        for (i, f) in frames.iter().enumerate() {
            if (f.width, f.height) != (w, h) {
                return Err(Error::shape(
                    format!("frame {i}"),
                    &[h as usize, w as usize, 3],
                    &[f.height as usize, f.width as usize, 3],
                ));
            }
        }
        Ok(Self { frames, fps })
    }

    /// The frames, first to last.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// The frames, consuming the video.
    pub fn into_frames(self) -> Vec<Frame> {
        self.frames
    }

    /// Frames per second.
    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// Number of frames (at least one).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Always `false`: a video has at least one frame. Present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frame width in pixels.
    pub fn width(&self) -> u32 {
        self.frames.first().map_or(0, |f| f.width)
    }

    /// Frame height in pixels.
    pub fn height(&self) -> u32 {
        self.frames.first().map_or(0, |f| f.height)
    }

    /// Duration in seconds: `len / fps`.
    pub fn duration(&self) -> f64 {
        self.frames.len() as f64 / self.fps
    }

    /// The video as one `[1, 3, T, H, W]` f32 tensor in `range`.
    ///
    /// # Shapes
    /// `T` frames of `H × W` → `[1, 3, T, H, W]`.
    pub fn to_tensor(&self, range: PixelRange, device: &Device) -> Result<Tensor> {
        videos_to_tensor(std::slice::from_ref(self), range, device)
    }

    /// Every frame resized to `width × height` with `filter` (antialiased when downscaling).
    pub fn resize(&self, width: u32, height: u32, filter: crate::ResizeFilter) -> Result<Video> {
        let frames = self
            .frames
            .iter()
            .map(|f| crate::resize::resize_frame(f, width, height, filter))
            .collect::<Result<Vec<_>>>()?;
        Video::new(frames, self.fps)
    }

    /// Every frame centre-cropped to `width × height` (see [`Frame::center_crop`]).
    pub fn center_crop(&self, width: u32, height: u32) -> Result<Video> {
        let frames = self
            .frames
            .iter()
            .map(|f| f.center_crop(width, height))
            .collect::<Result<Vec<_>>>()?;
        Video::new(frames, self.fps)
    }

    /// Scales so the frame covers `width × height` (aspect kept, shorter side fitted), then
    /// centre-crops to exactly `width × height`: the usual preprocessing before a model.
    pub fn resize_and_crop(
        &self,
        width: u32,
        height: u32,
        filter: crate::ResizeFilter,
    ) -> Result<Video> {
        check_size(width, height)?;
        let (sw, sh) = (self.width() as f64, self.height() as f64);
        let scale = (width as f64 / sw).max(height as f64 / sh);
        let rw = ((sw * scale).round() as u32).max(width);
        let rh = ((sh * scale).round() as u32).max(height);
        self.resize(rw, rh, filter)?.center_crop(width, height)
    }

    /// The frames that a camera running at `target_fps` would have recorded: output frame `k`
    /// (at time `k / target_fps`) is the latest input frame shown at that time, i.e. input index
    /// `floor(k * fps / target_fps)`. The output has `max(1, floor(len * target_fps / fps))`
    /// frames and fps `target_fps`. A target above the source fps repeats frames.
    pub fn resample_fps(&self, target_fps: f64) -> Result<Video> {
        if !(target_fps.is_finite() && target_fps > 0.0) {
            return Err(Error::invalid(
                "target_fps",
                format!("{target_fps}: must be finite and > 0"),
            ));
        }
        let n = self.frames.len();
        let ratio = self.fps / target_fps;
        // The epsilon keeps exact ratios (30 → 10 fps) from losing a frame to rounding.
        let out_len = ((n as f64 / ratio + 1e-9).floor() as usize).max(1);
        let frames = (0..out_len)
            .map(|k| {
                let idx = ((k as f64 * ratio + 1e-9).floor() as usize).min(n - 1);
                self.frames[idx].clone()
            })
            .collect();
        Video::new(frames, target_fps)
    }

    /// Every `step`-th frame starting at `start`, with fps divided by `step`.
    pub fn subsample(&self, start: usize, step: usize) -> Result<Video> {
        if step == 0 {
            return Err(Error::invalid("step", "must be >= 1"));
        }
        let frames: Vec<Frame> = self
            .frames
            .iter()
            .skip(start)
            .step_by(step)
            .cloned()
            .collect();
        if frames.is_empty() {
            return Err(Error::invalid(
                "start",
                format!(
                    "{start} is past the last frame of a {}-frame video",
                    self.len()
                ),
            ));
        }
        Video::new(frames, self.fps / step as f64)
    }

    /// Frames `start..end` (clamped to the video).
    pub fn slice(&self, start: usize, end: usize) -> Result<Video> {
        let end = end.min(self.len());
        if start >= end {
            return Err(Error::invalid(
                "slice",
                format!(
                    "{start}..{end} selects no frame of a {}-frame video",
                    self.len()
                ),
            ));
        }
        Video::new(self.frames[start..end].to_vec(), self.fps)
    }
}

/// Stacks videos of equal length and size into one `[B, 3, T, H, W]` f32 tensor in `range`.
///
/// # Shapes
/// `B` videos of `T` frames of `H × W` → `[B, 3, T, H, W]`.
pub fn videos_to_tensor(videos: &[Video], range: PixelRange, device: &Device) -> Result<Tensor> {
    let Some(first) = videos.first() else {
        return Err(Error::invalid("videos", "need at least one video"));
    };
    let (t, h, w) = (first.len(), first.height() as usize, first.width() as usize);
    for (i, v) in videos.iter().enumerate() {
        if (v.len(), v.height() as usize, v.width() as usize) != (t, h, w) {
            return Err(Error::shape(
                format!("video {i} (T, H, W)"),
                &[t, h, w],
                &[v.len(), v.height() as usize, v.width() as usize],
            ));
        }
    }
    let plane = h * w;
    let mut out = vec![0f32; videos.len() * 3 * t * plane];
    for (b, v) in videos.iter().enumerate() {
        for (ti, f) in v.frames.iter().enumerate() {
            for c in 0..3 {
                let base = ((b * 3 + c) * t + ti) * plane;
                let dst = &mut out[base..base + plane];
                for (p, d) in dst.iter_mut().enumerate() {
                    *d = range.to_float(f.data[p * 3 + c]);
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (videos.len(), 3, t, h, w), device)?)
}

/// Splits a `[B, C, T, H, W]` tensor (f32, f16, bf16 or f64; `C` = 3, or 1 for grey) in `range`
/// into `B` videos at `fps`. Values are clamped to the range and rounded to the nearest `u8`.
///
/// # Shapes
/// `[B, C, T, H, W]` → `B` videos of `T` frames of `H × W`.
///
/// # Errors
/// [`Error::InvalidArgument`] / [`Error::ShapeMismatch`] for another rank, channel count or an
/// empty batch; [`Error::NonFinite`] (location `tensor_to_videos input`, with the counts) when
/// the tensor holds a NaN or an infinity, which would otherwise become silent black or
/// saturated pixels.
pub fn tensor_to_videos(video: &Tensor, range: PixelRange, fps: f64) -> Result<Vec<Video>> {
    let dims = video.dims();
    let [b, c, t, h, w] = dims else {
        return Err(Error::invalid(
            "video",
            format!("expected rank 5 [B, C, T, H, W], found {dims:?}"),
        ));
    };
    let (b, c, t, h, w) = (*b, *c, *t, *h, *w);
    if c != 3 && c != 1 {
        return Err(Error::shape("video channels", &[b, 3, t, h, w], dims));
    }
    if b == 0 || t == 0 {
        return Err(Error::invalid("video", format!("{dims:?} holds no frame")));
    }
    let (fw, fh) = (u32::try_from(w), u32::try_from(h));
    let (Ok(fw), Ok(fh)) = (fw, fh) else {
        return Err(Error::invalid(
            "video",
            format!("frame size {w}x{h} too large"),
        ));
    };
    check_size(fw, fh)?;
    vidgen_video_core::check_finite(video, "tensor_to_videos input")?;
    let data = video
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = h * w;
    let mut videos = Vec::with_capacity(b);
    for bi in 0..b {
        let mut frames = Vec::with_capacity(t);
        for ti in 0..t {
            let mut px = vec![0u8; plane * 3];
            for ch in 0..3 {
                let src_c = if c == 1 { 0 } else { ch };
                let base = ((bi * c + src_c) * t + ti) * plane;
                for p in 0..plane {
                    px[p * 3 + ch] = range.to_u8(data[base + p]);
                }
            }
            frames.push(Frame::new(fw, fh, px)?);
        }
        videos.push(Video::new(frames, fps)?);
    }
    Ok(videos)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ramp(w: u32, h: u32, t: usize) -> Video {
        let frames = (0..t)
            .map(|k| {
                let data = (0..w * h * 3)
                    .map(|i| ((i as usize * 7 + k * 31) % 256) as u8)
                    .collect();
                Frame::new(w, h, data).unwrap()
            })
            .collect();
        Video::new(frames, 10.0).unwrap()
    }

    #[test]
    fn tensor_round_trip_is_exact_in_both_ranges() {
        let v = ramp(5, 3, 4);
        for range in [PixelRange::MinusOneToOne, PixelRange::ZeroToOne] {
            let t = v.to_tensor(range, &Device::Cpu).unwrap();
            assert_eq!(t.dims(), &[1, 3, 4, 3, 5]);
            let back = tensor_to_videos(&t, range, 10.0).unwrap();
            assert_eq!(back[0], v);
        }
    }

    #[test]
    fn tensor_layout_is_bcthw() {
        let mut f = Frame::filled(4, 2, [0, 0, 0]).unwrap();
        f.put(3, 1, [255, 0, 51]);
        let v = Video::new(vec![f.clone(), f], 1.0).unwrap();
        let t = v.to_tensor(PixelRange::ZeroToOne, &Device::Cpu).unwrap();
        let flat = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // [1, 3, 2, 2, 4]: index of (c, t, y, x) = ((c * 2 + t) * 2 + y) * 4 + x.
        let red = flat[15]; // (c 0, t 1, y 1, x 3)
        let blue = flat[39]; // (c 2, t 0, y 1, x 3)
        assert_eq!(red, 1.0);
        assert!((blue - 0.2).abs() < 1e-6);
    }

    #[test]
    fn resample_fps_picks_expected_frames() {
        let v = ramp(2, 2, 30);
        let v = Video::new(v.into_frames(), 30.0).unwrap();
        let out = v.resample_fps(10.0).unwrap();
        assert_eq!(out.len(), 10);
        for (k, f) in out.frames().iter().enumerate() {
            assert_eq!(f, &v.frames()[3 * k]);
        }
        let up = v.resample_fps(60.0).unwrap();
        assert_eq!(up.len(), 60);
        assert_eq!(up.frames()[5], v.frames()[2]);
        let tiny = v.resample_fps(0.5).unwrap();
        assert_eq!(tiny.len(), 1);
        assert!(v.resample_fps(0.0).is_err());
        assert!(v.resample_fps(f64::NAN).is_err());
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        assert!(matches!(
            Frame::new(2, 2, vec![0; 11]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            Frame::new(0, 2, vec![]),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            Video::new(vec![], 1.0),
            Err(Error::InvalidArgument { .. })
        ));
        let a = Frame::filled(2, 2, [0; 3]).unwrap();
        let b = Frame::filled(3, 2, [0; 3]).unwrap();
        assert!(matches!(
            Video::new(vec![a.clone(), b], 1.0),
            Err(Error::ShapeMismatch { .. })
        ));
        let t = Tensor::zeros((1, 4, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(tensor_to_videos(&t, PixelRange::ZeroToOne, 1.0).is_err());
        let t = Tensor::zeros((3, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(tensor_to_videos(&t, PixelRange::ZeroToOne, 1.0).is_err());
        assert!(a.center_crop(3, 1).is_err());
        assert!(a.crop(1, 1, 2, 1).is_err());
    }

    #[test]
    fn center_crop_takes_the_middle() {
        let v = ramp(6, 5, 1);
        let c = v.frames()[0].center_crop(2, 3).unwrap();
        assert_eq!(c.get(0, 0), v.frames()[0].get(2, 1));
        assert_eq!(c.get(1, 2), v.frames()[0].get(3, 3));
    }
}
