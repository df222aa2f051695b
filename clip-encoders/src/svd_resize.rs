//! SVD's CLIP preprocessing resize: diffusers' `_resize_with_antialiasing`
//! (`pipelines/stable_video_diffusion/pipeline_stable_video_diffusion.py`, 0.42.1) and its
//! helpers `_gaussian`, `_compute_padding`, `_filter2d`, `_gaussian_blur2d`, exactly:
//!
//! 1. per axis, `factor = in / out`, `σ = max((factor − 1) / 2, 0.001)`, kernel size
//!    `k = int(max(4σ, 3))`, made odd by adding one;
//! 2. a separable Gaussian blur in the input's precision (f32): taps
//!    `exp(−x² / (2σ²))`, `x = −k/2 … k/2`, normalised to sum 1; width first, then height;
//!    each pass pads by `(k − 1)/2` on both sides in `reflect` mode (the edge pixel is not
//!    repeated), then correlates;
//! 3. `F.interpolate(mode="bicubic", align_corners=True)` to the output size
//!    ([`crate::interpolate_bicubic`]).
//!
//! The pipeline calls it on the conditioning image in `[-1, 1]`, `[B, 3, H, W]`, with
//! `(224, 224)`, then maps back to `[0, 1]` and normalises with the feature extractor's mean
//! and std ([`crate::CLIPImageProcessor::normalize`]).

use candle_core::{DType, Tensor};
use vidgen_video_core::{Error, Result};

use crate::interpolate::bicubic_planes;

/// The σ and odd kernel size of one axis, as `_resize_with_antialiasing` computes them (in
/// Python floats, i.e. f64).
pub fn blur_params(input: usize, output: usize) -> (f64, usize) {
    let factor = input as f64 / output as f64;
    let sigma = ((factor - 1.0) / 2.0).max(0.001);
    let mut k = (2.0 * 2.0 * sigma).max(3.0) as usize;
    if k.is_multiple_of(2) {
        k += 1;
    }
    (sigma, k)
}

/// diffusers' `_gaussian(k, σ)` in f32: `exp(−x²/(2σ²))` over `x = i − k/2` (+ ½ for even `k`),
/// normalised by its sum.
pub fn gaussian_kernel(k: usize, sigma: f32) -> Vec<f32> {
    let half = (k / 2) as f32;
    let even = k.is_multiple_of(2);
    let two_s2 = 2.0 * sigma.powi(2);
    let g: Vec<f32> = (0..k)
        .map(|i| {
            let mut x = i as f32 - half;
            if even {
                x += 0.5;
            }
            (-(x * x) / two_s2).exp()
        })
        .collect();
    let sum: f32 = g.iter().sum();
    g.into_iter().map(|v| v / sum).collect()
}

/// Reflect index of `i` (may be negative or ≥ n) into `0..n` (`torch` `reflect` padding).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let r = if i < 0 {
        -i
    } else if i >= n {
        2 * (n - 1) - i
    } else {
        i
    };
    r as usize
}

/// One correlation pass along rows (`horizontal`) or columns of `[planes, h, w]`, with
/// `_compute_padding`'s reflect padding (front `(k − 1)/2`, rear the rest).
fn blur_pass(
    src: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    kernel: &[f32],
    horizontal: bool,
) -> Vec<f32> {
    let k = kernel.len();
    let front = ((k - 1) / 2) as isize;
    let mut out = vec![0f32; src.len()];
    for p in 0..planes {
        let img = &src[p * h * w..(p + 1) * h * w];
        let dst = &mut out[p * h * w..(p + 1) * h * w];
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0f32;
                for (j, &kv) in kernel.iter().enumerate() {
                    let o = j as isize - front;
                    let v = if horizontal {
                        img[y * w + reflect(x as isize + o, w)]
                    } else {
                        img[reflect(y as isize + o, h) * w + x]
                    };
                    acc += v * kv;
                }
                dst[y * w + x] = acc;
            }
        }
    }
    out
}

/// diffusers' `_gaussian_blur2d(x, (ky, kx), (σy, σx))`: the separable blur, width first.
///
/// # Shapes
/// `[B, C, H, W]` → same.
///
/// # Errors
/// A rank other than 4; a padding `(k − 1)/2` not smaller than the side it pads (PyTorch's
/// `reflect` mode refuses it too) ([`Error::InvalidArgument`]).
pub fn gaussian_blur2d(
    x: &Tensor,
    (ky, kx): (usize, usize),
    (sy, sx): (f32, f32),
) -> Result<Tensor> {
    let (b, c, h, w) = dims(x)?;
    check_pad(h, ky, "height")?;
    check_pad(w, kx, "width")?;
    let dt = x.dtype();
    let src = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let planes = b * c;
    let t = blur_pass(&src, planes, h, w, &gaussian_kernel(kx, sx), true);
    let t = blur_pass(&t, planes, h, w, &gaussian_kernel(ky, sy), false);
    Ok(Tensor::from_vec(t, (b, c, h, w), x.device())?.to_dtype(dt)?)
}

fn dims(x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    let d = x.dims();
    if d.len() != 4 || d.contains(&0) {
        return Err(Error::invalid(
            "resize input",
            format!("expected a non-empty [B, C, H, W] tensor, found {d:?}"),
        ));
    }
    if !x.dtype().is_float() {
        return Err(Error::invalid(
            "resize input",
            format!("expected float pixels, found {:?}", x.dtype()),
        ));
    }
    Ok((d[0], d[1], d[2], d[3]))
}

fn check_pad(side: usize, k: usize, axis: &str) -> Result<()> {
    let rear = k - 1 - (k - 1) / 2;
    if rear >= side {
        return Err(Error::invalid(
            "resize input",
            format!(
                "{axis} {side} is too small for a {k}-tap reflect-padded blur (padding {rear} must be < {side})"
            ),
        ));
    }
    Ok(())
}

/// `_resize_with_antialiasing(x, (oh, ow))` of diffusers' SVD pipeline (see the module docs),
/// in f32 whatever the input dtype, returned in the input's dtype.
///
/// # Shapes
/// `[B, C, H, W]` → `[B, C, oh, ow]`.
///
/// # Errors
/// An empty or non-float input, a zero output size, an input side too small for its blur
/// ([`Error::InvalidArgument`]).
pub fn resize_with_antialiasing(x: &Tensor, (oh, ow): (usize, usize)) -> Result<Tensor> {
    let (b, c, h, w) = dims(x)?;
    if oh == 0 || ow == 0 {
        return Err(Error::invalid(
            "resize size",
            format!("output {oh}×{ow} must be non-empty"),
        ));
    }
    let (sy, ky) = blur_params(h, oh);
    let (sx, kx) = blur_params(w, ow);
    let blurred = gaussian_blur2d(&x.to_dtype(DType::F32)?, (ky, kx), (sy as f32, sx as f32))?;
    let src = blurred.flatten_all()?.to_vec1::<f32>()?;
    let out = bicubic_planes(&src, b * c, (h, w), (oh, ow), true);
    Ok(Tensor::from_vec(out, (b, c, oh, ow), x.device())?.to_dtype(x.dtype())?)
}
