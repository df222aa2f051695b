//! Image helpers at the pipeline boundary: u8 pictures to `[0, 1]` tensors and back, and the
//! normalisation of a `preprocessor_config.json`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use vidgen_video_core::{Error, Result};

/// The mean / std normalisation of a transformers image processor (`image_mean`,
/// `image_std` of `preprocessor_config.json`), as SVD's pipeline applies it (no resize, crop
/// or rescale: it prepares the pixels itself).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ImageNormalize {
    /// Per-channel mean.
    pub image_mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub image_std: Vec<f32>,
}

impl ImageNormalize {
    /// Reads `preprocessor_config.json`.
    ///
    /// # Errors
    /// The file missing or malformed; mean / std not three positive values.
    pub fn from_preprocessor_config(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let n: Self = vidgen_video_core::loading::read_config(path)?;
        if n.image_mean.len() != 3
            || n.image_std.len() != 3
            || n.image_std.iter().any(|&s| s.is_nan() || s <= 0.0)
        {
            return Err(Error::BadConfig {
                field: "image_mean / image_std".into(),
                reason: format!(
                    "expected three means and three positive stds, found {:?} / {:?}",
                    n.image_mean, n.image_std
                ),
                file: Some(path.display().to_string()),
            });
        }
        Ok(n)
    }

    /// `(x − mean) / std` per channel.
    ///
    /// # Shapes
    /// `[B, 3, H, W]` in `[0, 1]` → same shape.
    ///
    /// # Errors
    /// Not three channels.
    pub fn normalize(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = x.dims4()?;
        if c != 3 {
            return Err(Error::invalid(
                "image",
                format!("expected 3 channels, found {c}"),
            ));
        }
        let dev = x.device();
        let m = Tensor::new(self.image_mean.as_slice(), dev)?.reshape((1, 3, 1, 1))?;
        let s = Tensor::new(self.image_std.as_slice(), dev)?.reshape((1, 3, 1, 1))?;
        Ok(x.to_dtype(DType::F32)?
            .broadcast_sub(&m)?
            .broadcast_div(&s)?)
    }
}

/// An RGB picture (`[H, W, 3]` row-major u8) as `[1, 3, H, W]` in `[0, 1]`.
///
/// # Errors
/// A buffer whose length is not `H·W·3`, a zero size.
pub fn rgb_to_tensor(rgb: &[u8], height: usize, width: usize, device: &Device) -> Result<Tensor> {
    if height == 0 || width == 0 || rgb.len() != height * width * 3 {
        return Err(Error::invalid(
            "image",
            format!(
                "{} bytes do not make a {height}×{width} RGB picture",
                rgb.len()
            ),
        ));
    }
    let t = Tensor::from_slice(rgb, (height, width, 3), device)?;
    Ok((t.to_dtype(DType::F32)?.permute((2, 0, 1))?.unsqueeze(0)? / 255.0)?)
}

/// Frames `[F, 3, H, W]` in `[0, 1]` → one `[H, W, 3]` u8 buffer per frame (rounded, clamped).
///
/// # Errors
/// A tensor that is not rank 4 with 3 channels.
pub fn tensor_to_rgb(frames: &Tensor) -> Result<Vec<Vec<u8>>> {
    let (f, c, _, _) = frames.dims4()?;
    if c != 3 {
        return Err(Error::invalid(
            "frames",
            format!("expected 3 channels, found {c}"),
        ));
    }
    let u8s = (frames.to_dtype(DType::F32)?.clamp(0f32, 1f32)? * 255.0)?
        .round()?
        .permute((0, 2, 3, 1))?
        .to_dtype(DType::U8)?;
    (0..f)
        .map(|i| Ok(u8s.get(i)?.flatten_all()?.to_vec1::<u8>()?))
        .collect()
}
