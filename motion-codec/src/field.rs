//! Luma planes and motion fields: the data types every part of this crate passes around.

use candle_core::{Device, Tensor};
use vidgen_video_core::{Error, Result};

/// One 8-bit luma (grey) plane, row-major `[H, W]`.
///
/// Block matching runs on luma only, as video codecs do: the eye and the codec's cost both live
/// in the brightness channel, and one byte per pixel keeps the SAD loops tight.
#[derive(Clone, PartialEq, Eq)]
pub struct LumaFrame {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for LumaFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LumaFrame({}x{})", self.width, self.height)
    }
}

impl LumaFrame {
    /// A plane from row-major bytes (`data.len() == width · height`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero side or a length that is not `width · height`.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::invalid(
                "frame",
                format!("{width}x{height}: zero-sized frame"),
            ));
        }
        let need = width
            .checked_mul(height)
            .ok_or_else(|| Error::invalid("frame", "width × height overflows"))?;
        if data.len() != need {
            return Err(Error::shape("frame data", &[height, width], &[data.len()]));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// The luma of an RGB frame, BT.601 full range: `Y = (77 R + 150 G + 29 B + 128) >> 8`.
    pub fn from_rgb(frame: &vidgen_video_io::Frame) -> Self {
        let data = frame
            .data()
            .chunks_exact(3)
            .map(|p| ((77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32 + 128) >> 8) as u8)
            .collect();
        Self {
            width: frame.width() as usize,
            height: frame.height() as usize,
            data,
        }
    }

    /// The luma planes of every frame of a video.
    pub fn from_video(video: &vidgen_video_io::Video) -> Vec<Self> {
        video.frames().iter().map(Self::from_rgb).collect()
    }

    /// The luma planes of every frame of a video, cropped to the largest multiple of the
    /// block size `bs` (the area block matching covers); returns the planes and the cropped
    /// `(width, height)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the frames are smaller than one block.
    pub fn from_video_in_blocks(
        video: &vidgen_video_io::Video,
        bs: usize,
    ) -> Result<(Vec<Self>, usize, usize)> {
        let bs = bs.max(1);
        let (w, h) = (video.width() as usize, video.height() as usize);
        let (cw, ch) = (w / bs * bs, h / bs * bs);
        if cw == 0 || ch == 0 {
            return Err(Error::invalid(
                "video",
                format!("{w}x{h} frames are smaller than one {bs}x{bs} block"),
            ));
        }
        let lumas = Self::from_video(video)
            .iter()
            .map(|l| l.crop(cw, ch))
            .collect::<Result<_>>()?;
        Ok((lumas, cw, ch))
    }

    /// An RGB frame with this luma on all three channels (for viewing and PSNR on RGB tools).
    ///
    /// # Errors
    /// Only when the size exceeds what [`vidgen_video_io::Frame`] accepts.
    pub fn to_rgb(&self) -> Result<vidgen_video_io::Frame> {
        let data = self.data.iter().flat_map(|&y| [y, y, y]).collect();
        vidgen_video_io::Frame::new(self.width as u32, self.height as u32, data)
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Row-major bytes `[H, W]`.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The top-left `width × height` part (for cropping to a multiple of the block size).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the crop is empty or larger than the frame.
    pub fn crop(&self, width: usize, height: usize) -> Result<Self> {
        if width == 0 || height == 0 || width > self.width || height > self.height {
            return Err(Error::invalid(
                "crop",
                format!(
                    "{width}x{height} does not fit in {}x{}",
                    self.width, self.height
                ),
            ));
        }
        let data = (0..height)
            .flat_map(|y| {
                self.data[y * self.width..y * self.width + width]
                    .iter()
                    .copied()
            })
            .collect();
        Self::new(width, height, data)
    }

    /// The pixel at `(x, y)` with coordinates clamped into the frame (edge replication).
    #[inline]
    pub(crate) fn clamped(&self, x: isize, y: isize) -> u8 {
        let x = x.clamp(0, self.width as isize - 1) as usize;
        let y = y.clamp(0, self.height as isize - 1) as usize;
        self.data[y * self.width + x]
    }
}

/// Where a frame sits in a coded stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// Intra-coded (a keyframe): no motion vectors.
    I,
    /// Predicted from earlier frames.
    P,
    /// Bi-directionally predicted.
    B,
    /// Anything else FFmpeg reports (S, SI, SP, BI), or unknown.
    Other,
}

/// A motion field on a grid of blocks: one `(dx, dy)` per `block_size × block_size` block.
///
/// # Sign convention
/// Vectors are the **displacement of the block's content from the previous frame to the
/// current one**, in pixels, `x` right and `y` down: the block whose top-left corner is at
/// `(x, y)` in the current frame matches the previous frame at `(x − dx, y − dy)`.
/// An object moving right has `dx > 0`; a camera panning right gives `dx < 0` everywhere.
/// This is Video-LaVIT's convention (FFmpeg's `source · motion / motion_scale`), i.e. the
/// negative of FFmpeg's `src − dst` for a past reference.
///
/// # Layout
/// `data` is `[2, rows, cols]` row-major: all `dx` first, then all `dy`;
/// `rows = H / block_size`, `cols = W / block_size`.
#[derive(Clone, Debug, PartialEq)]
pub struct MotionField {
    /// Blocks per column (`H / block_size`).
    pub rows: usize,
    /// Blocks per row (`W / block_size`).
    pub cols: usize,
    /// Side of a block in pixels.
    pub block_size: usize,
    /// `[2, rows, cols]`: `dx` plane then `dy` plane, in pixels.
    pub data: Vec<f32>,
    /// Per block: whether a vector is known (block matching: always; codec side data: only
    /// the cells some macroblock vector landed in; intra blocks have none).
    pub valid: Vec<bool>,
    /// Per block matching cost: mean absolute difference per pixel of the best match
    /// (`None` for codec vectors).
    pub cost: Option<Vec<f32>>,
    /// The coded frame type, when the field came from a codec.
    pub frame_type: Option<FrameType>,
}

impl MotionField {
    /// An all-zero, all-valid field.
    pub fn zeros(rows: usize, cols: usize, block_size: usize) -> Self {
        Self {
            rows,
            cols,
            block_size,
            data: vec![0.0; 2 * rows * cols],
            valid: vec![true; rows * cols],
            cost: None,
            frame_type: None,
        }
    }

    /// The vector `(dx, dy)` of block `(row, col)`; `None` outside the grid.
    pub fn get(&self, row: usize, col: usize) -> Option<(f32, f32)> {
        if row >= self.rows || col >= self.cols {
            return None;
        }
        let i = row * self.cols + col;
        Some((self.data[i], self.data[self.rows * self.cols + i]))
    }

    /// Sets the vector of block `(row, col)` (ignored outside the grid).
    pub fn set(&mut self, row: usize, col: usize, v: (f32, f32)) {
        if row < self.rows && col < self.cols {
            let i = row * self.cols + col;
            self.data[i] = v.0;
            self.data[self.rows * self.cols + i] = v.1;
        }
    }

    /// All `(dx, dy)` of valid blocks, row-major.
    pub fn vectors(&self) -> Vec<(f32, f32)> {
        let n = self.rows * self.cols;
        (0..n)
            .filter(|&i| self.valid[i])
            .map(|i| (self.data[i], self.data[n + i]))
            .collect()
    }

    /// The field as an f32 tensor.
    ///
    /// # Shapes
    /// Returns `[2, rows, cols]` (`dx`, `dy` in pixels).
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.data.clone(),
            (2, self.rows, self.cols),
            device,
        )?)
    }
}
