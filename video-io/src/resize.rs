//! Separable image resampling with PIL's filters, antialiased when downscaling.
//!
//! This follows PIL's `ImagingResample` (and torchvision's `antialias=True`, which copies it):
//! each output pixel `i` has centre `(i + 0.5) * scale` in input pixels, and the filter kernel
//! is stretched by `max(scale, 1)` so that downscaling averages every input pixel it covers
//! instead of skipping some (aliasing). Weights are renormalised at the borders. Unlike PIL,
//! the intermediate (horizontal pass) is kept in `f32` rather than rounded to 8 bits.

use candle_core::{DType, Tensor};
use vidgen_video_core::{Error, Result};

use crate::frames::{check_size, Frame};

/// The interpolation kernel used by [`resize_frame`] and friends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResizeFilter {
    /// Triangle kernel (support 1): PIL `BILINEAR`, torchvision `bilinear, antialias=True`.
    #[default]
    Bilinear,
    /// Keys cubic with `a = -0.5` (support 2): PIL `BICUBIC`, torchvision `bicubic,
    /// antialias=True`. Can overshoot; results are clamped when converted to `u8`.
    Bicubic,
    /// Box kernel (support 1/2): the mean of the covered input pixels, PIL `BOX`; equals
    /// torch's `area` (adaptive average pooling) for integer downscale factors.
    Area,
}

impl ResizeFilter {
    fn support(self) -> f64 {
        match self {
            ResizeFilter::Bilinear => 1.0,
            ResizeFilter::Bicubic => 2.0,
            ResizeFilter::Area => 0.5,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            ResizeFilter::Area => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            ResizeFilter::Bilinear => (1.0 - x.abs()).max(0.0),
            ResizeFilter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// For each output index: the first input index and the normalised weights.
struct Coeffs {
    starts: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

fn coeffs(in_len: usize, out_len: usize, filter: ResizeFilter) -> Coeffs {
    let scale = in_len as f64 / out_len as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let mut starts = Vec::with_capacity(out_len);
    let mut weights = Vec::with_capacity(out_len);
    for i in 0..out_len {
        let center = (i as f64 + 0.5) * scale;
        let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
        let hi = ((center + support + 0.5).floor() as usize).min(in_len);
        let mut w: Vec<f64> = (lo..hi)
            .map(|x| filter.weight((x as f64 - center + 0.5) / filterscale))
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        } else if let Some(nearest) = w.first_mut() {
            // Only reachable for degenerate sizes; fall back to the first covered pixel.
            *nearest = 1.0;
        }
        starts.push(lo);
        weights.push(w.into_iter().map(|v| v as f32).collect());
    }
    Coeffs { starts, weights }
}

/// Resamples one interleaved image `src` (`[h, w, c]`, row-major) to `[oh, ow, c]`.
pub(crate) fn resample_hwc(
    src: &[f32],
    (w, h, c): (usize, usize, usize),
    (ow, oh): (usize, usize),
    filter: ResizeFilter,
) -> Vec<f32> {
    // Horizontal pass: [h, w, c] -> [h, ow, c]; skipped when the width does not change.
    let horiz: Vec<f32> = if ow == w {
        src.to_vec()
    } else {
        let cx = coeffs(w, ow, filter);
        let mut out = vec![0f32; h * ow * c];
        for y in 0..h {
            let row = &src[y * w * c..(y + 1) * w * c];
            for (x, (start, ws)) in cx.starts.iter().zip(&cx.weights).enumerate() {
                let dst = &mut out[(y * ow + x) * c..(y * ow + x + 1) * c];
                for (k, wt) in ws.iter().enumerate() {
                    let s = &row[(start + k) * c..(start + k + 1) * c];
                    for (d, v) in dst.iter_mut().zip(s) {
                        *d += wt * v;
                    }
                }
            }
        }
        out
    };
    if oh == h {
        return horiz;
    }
    // Vertical pass: [h, ow, c] -> [oh, ow, c].
    let cy = coeffs(h, oh, filter);
    let stride = ow * c;
    let mut out = vec![0f32; oh * stride];
    for (y, (start, ws)) in cy.starts.iter().zip(&cy.weights).enumerate() {
        let dst = &mut out[y * stride..(y + 1) * stride];
        for (k, wt) in ws.iter().enumerate() {
            let s = &horiz[(start + k) * stride..(start + k + 1) * stride];
            for (d, v) in dst.iter_mut().zip(s) {
                *d += wt * v;
            }
        }
    }
    out
}

/// `frame` resized to `width × height` with `filter`; antialiased when downscaling (see the
/// module docs). Values are rounded to the nearest `u8` and clamped.
pub fn resize_frame(frame: &Frame, width: u32, height: u32, filter: ResizeFilter) -> Result<Frame> {
    check_size(width, height)?;
    if (width, height) == (frame.width(), frame.height()) {
        return Ok(frame.clone());
    }
    let src: Vec<f32> = frame.data().iter().map(|&v| v as f32).collect();
    let out = resample_hwc(
        &src,
        (frame.width() as usize, frame.height() as usize, 3),
        (width as usize, height as usize),
        filter,
    );
    let data = out
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    Frame::new(width, height, data)
}

/// Resizes the frames of a float video tensor `[B, C, T, H, W]` to `height × width` with
/// `filter` (antialiased when downscaling). No clamping: values keep their range (bicubic may
/// overshoot slightly). Computed on the CPU in f32 and returned on the input's device and dtype.
///
/// # Shapes
/// `[B, C, T, H, W]` → `[B, C, T, height, width]`.
pub fn resize_tensor(
    video: &Tensor,
    height: usize,
    width: usize,
    filter: ResizeFilter,
) -> Result<Tensor> {
    let dims = video.dims();
    let [b, c, t, h, w] = dims else {
        return Err(Error::invalid(
            "video",
            format!("expected rank 5 [B, C, T, H, W], found {dims:?}"),
        ));
    };
    let (b, c, t, h, w) = (*b, *c, *t, *h, *w);
    if height == 0 || width == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(
            "resize_tensor",
            format!("cannot resize {h}x{w} frames to {height}x{width}"),
        ));
    }
    let data = video
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let planes = b * c * t;
    let mut out = Vec::with_capacity(planes * height * width);
    for p in 0..planes {
        let src = &data[p * h * w..(p + 1) * h * w];
        out.extend(resample_hwc(src, (w, h, 1), (width, height), filter));
    }
    Ok(Tensor::from_vec(out, (b, c, t, height, width), video.device())?.to_dtype(video.dtype())?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn gray(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Frame {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let v = f(x, y);
                data.extend_from_slice(&[v, v, v]);
            }
        }
        Frame::new(w, h, data).unwrap()
    }

    #[test]
    fn constant_images_stay_constant() {
        let f = gray(13, 7, |_, _| 77);
        for filter in [
            ResizeFilter::Bilinear,
            ResizeFilter::Bicubic,
            ResizeFilter::Area,
        ] {
            for (w, h) in [(5, 3), (26, 14), (13, 20), (1, 1)] {
                let r = resize_frame(&f, w, h, filter).unwrap();
                assert!(r.data().iter().all(|&v| v == 77), "{filter:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn area_downscale_by_two_is_the_block_mean() {
        let f = gray(4, 2, |x, _| [0, 100, 200, 50][x as usize]);
        let r = resize_frame(&f, 2, 1, ResizeFilter::Area).unwrap();
        assert_eq!(r.get(0, 0), Some([50; 3]));
        assert_eq!(r.get(1, 0), Some([125; 3]));
    }

    #[test]
    fn downscaling_is_antialiased() {
        // A 1-pixel checkerboard must become flat grey, not a copy of every other pixel.
        let f = gray(64, 64, |x, y| if (x + y) % 2 == 0 { 255 } else { 0 });
        for filter in [
            ResizeFilter::Bilinear,
            ResizeFilter::Bicubic,
            ResizeFilter::Area,
        ] {
            let r = resize_frame(&f, 16, 16, filter).unwrap();
            // Border rows renormalise over fewer taps; look at the interior.
            for y in 2..14 {
                for x in 2..14 {
                    let v = r.get(x, y).unwrap()[0] as i32;
                    assert!((v - 128).abs() <= 2, "{filter:?} at ({x},{y}) = {v}");
                }
            }
        }
    }

    #[test]
    fn bilinear_upscale_matches_pil_values() {
        // PIL: Image.fromarray(np.array([[0, 255]], np.uint8)).resize((4, 1), BILINEAR)
        // gives [0, 64, 191, 255].
        let f = gray(2, 1, |x, _| if x == 0 { 0 } else { 255 });
        let r = resize_frame(&f, 4, 1, ResizeFilter::Bilinear).unwrap();
        let row: Vec<u8> = (0..4).map(|x| r.get(x, 0).unwrap()[0]).collect();
        assert_eq!(row, vec![0, 64, 191, 255]);
    }

    #[test]
    fn tensor_resize_matches_frame_resize() {
        let f = gray(12, 9, |x, y| ((x * 19 + y * 7) % 256) as u8);
        let v = crate::Video::new(vec![f.clone()], 1.0).unwrap();
        let t = v
            .to_tensor(crate::PixelRange::ZeroToOne, &Device::Cpu)
            .unwrap();
        let rt = resize_tensor(&t, 4, 5, ResizeFilter::Bicubic).unwrap();
        assert_eq!(rt.dims(), &[1, 3, 1, 4, 5]);
        let back = crate::tensor_to_videos(&rt, crate::PixelRange::ZeroToOne, 1.0).unwrap();
        let direct = resize_frame(&f, 5, 4, ResizeFilter::Bicubic).unwrap();
        for (a, b) in back[0].frames()[0].data().iter().zip(direct.data()) {
            assert!((*a as i32 - *b as i32).abs() <= 1);
        }
    }
}
