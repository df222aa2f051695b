//! Image helpers at the pipeline boundary: u8 pictures to `[0, 1]` tensors and back.

use candle_core::{DType, Device, Tensor};
use vidgen_video_core::{Error, Result};

/// The CLIP image processor of a `feature_extractor/` folder; SVD and AID use only its
/// mean / std normalisation (`normalize`), as diffusers does.
pub type ImageNormalize = vidgen_clip_encoders::CLIPImageProcessor;

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
