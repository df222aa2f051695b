//! `CLIPImageProcessor` as configured by a `preprocessor_config.json`: convert to RGB, resize
//! (shortest edge, or an exact size) with an antialiased bicubic / bilinear filter, center
//! crop, rescale, normalise.
//!
//! Two resize backends, both exact to the uint8 value:
//!
//! - [`ResizeBackend::Torchvision`] (the default): transformers 5's `CLIPImageProcessor`, which
//!   resizes uint8 images with torchvision's `resize(antialias=True)`, i.e. PyTorch's native
//!   uint8 kernel (`UpSampleKernelAVXAntialias.h`, used on CPUs with AVX2);
//! - [`ResizeBackend::Pil`]: Pillow's `Image.resize` (`Resample.c`), used by
//!   `CLIPImageProcessorPil` and by transformers 4's `CLIPImageProcessor`.
//!
//! Both are the same separable convolution: per axis, output pixel `i` has centre
//! `c = (i + ½)·s` (`s = in/out`), taps `x ∈ [⌊c − r + ½⌋, ⌊c + r + ½⌋)` clipped to the image,
//! with filter support `r = 2·max(s, 1)` (bicubic, Keys `a = −0.5`) or `max(s, 1)` (bilinear),
//! weights `f((x − c + ½)/max(s, 1))` normalised to sum 1 and rounded to fixed point; the
//! horizontal pass runs first into a uint8 image, then the vertical one, each rounding
//! (`+ 2^(p−1)`, `>> p`) and clamping to `0..=255`. They differ only in the fixed-point
//! precision: Pillow uses `p = 22` bits, PyTorch the largest `p ≤ 22` for which the largest
//! weight of the axis still fits an int16 (about 14–15 bits), so about one pixel in a few
//! hundred differs by one level between them.
//!
//! Then center crop (zero padding when the crop is larger, split as each backend splits it),
//! and `(x·rescale_factor − mean) / std` per channel in f32 (torchvision fuses it as
//! `(x − mean/rescale_factor) / (std/rescale_factor)`; both orders are reproduced).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use serde_json::Value as Json;
use vidgen_video_core::{Error, Result};

/// OpenAI CLIP's normalisation mean (transformers' `OPENAI_CLIP_MEAN`).
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP's normalisation std (transformers' `OPENAI_CLIP_STD`).
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Which library's resize the processor reproduces (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeBackend {
    /// transformers 5's `CLIPImageProcessor` (torchvision / PyTorch's uint8 kernel).
    #[default]
    Torchvision,
    /// `CLIPImageProcessorPil`, transformers 4's `CLIPImageProcessor` (Pillow).
    Pil,
}

/// The resampling filter (`resample` of the config, PIL's enum values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// `2`: triangle filter, support 1.
    Bilinear,
    /// `3`: Keys' cubic with `a = −0.5`, support 2 (CLIP's).
    Bicubic,
}

impl Resample {
    fn support(self) -> f64 {
        match self {
            Resample::Bilinear => 1.0,
            Resample::Bicubic => 2.0,
        }
    }
}

/// The resize target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// The shorter side becomes this; the longer one `⌊size·long/short⌋` (aspect kept).
    ShortestEdge(usize),
    /// Exactly `height × width`.
    Exact {
        /// Output height.
        height: usize,
        /// Output width.
        width: usize,
    },
}

/// The settings of a `CLIPImageProcessor` (the fields of `preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    /// Resize first.
    pub do_resize: bool,
    /// The resize target (`size`).
    pub size: ResizeTo,
    /// The filter (`resample`).
    pub resample: Resample,
    /// Center crop after the resize.
    pub do_center_crop: bool,
    /// Crop `(height, width)` (`crop_size`).
    pub crop_size: (usize, usize),
    /// Multiply by `rescale_factor`.
    pub do_rescale: bool,
    /// Usually `1/255`.
    pub rescale_factor: f64,
    /// Normalise with `image_mean` / `image_std`.
    pub do_normalize: bool,
    /// Per-channel mean.
    pub image_mean: [f64; 3],
    /// Per-channel std.
    pub image_std: [f64; 3],
    /// Convert gray / RGBA inputs to RGB (else they are refused).
    pub do_convert_rgb: bool,
}

impl Default for ImageProcessorConfig {
    /// transformers' `CLIPImageProcessor()` defaults (224 px, OpenAI mean / std).
    fn default() -> Self {
        Self {
            do_resize: true,
            size: ResizeTo::ShortestEdge(224),
            resample: Resample::Bicubic,
            do_center_crop: true,
            crop_size: (224, 224),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
            do_convert_rgb: true,
        }
    }
}

#[derive(Deserialize)]
struct RawConfig {
    do_resize: Option<bool>,
    size: Option<Json>,
    resample: Option<i64>,
    do_center_crop: Option<bool>,
    crop_size: Option<Json>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<Json>,
    image_std: Option<Json>,
    do_convert_rgb: Option<bool>,
}

fn bad(field: &str, reason: impl Into<String>, file: Option<&Path>) -> Error {
    Error::BadConfig {
        field: field.into(),
        reason: reason.into(),
        file: file.map(|p| p.display().to_string()),
    }
}

fn side(v: &Json, field: &str, file: Option<&Path>) -> Result<usize> {
    let n = v.as_u64().ok_or_else(|| {
        bad(
            field,
            format!("expected a positive integer, found {v}"),
            file,
        )
    })?;
    if n == 0 || n > 1 << 15 {
        return Err(bad(field, format!("{n} must be in 1..=32768"), file));
    }
    Ok(n as usize)
}

/// `size` as transformers' `get_size_dict(size, default_to_square=False)` reads it: an
/// integer (v4 `CLIPFeatureExtractor` configs) is a shortest edge.
fn parse_size(v: &Json, file: Option<&Path>) -> Result<ResizeTo> {
    if v.is_u64() {
        return Ok(ResizeTo::ShortestEdge(side(v, "size", file)?));
    }
    let obj = v.as_object().ok_or_else(|| {
        bad(
            "size",
            format!("expected an integer or an object, found {v}"),
            file,
        )
    })?;
    if obj.contains_key("longest_edge") || obj.contains_key("max_height") {
        return Err(Error::Unsupported {
            field: "size".into(),
            value: v.to_string(),
            supported: "{\"shortest_edge\": n}, {\"height\": h, \"width\": w}, or an integer"
                .into(),
        });
    }
    if let Some(s) = obj.get("shortest_edge") {
        return Ok(ResizeTo::ShortestEdge(side(s, "size.shortest_edge", file)?));
    }
    match (obj.get("height"), obj.get("width")) {
        (Some(h), Some(w)) => Ok(ResizeTo::Exact {
            height: side(h, "size.height", file)?,
            width: side(w, "size.width", file)?,
        }),
        _ => Err(bad(
            "size",
            "needs shortest_edge, or height and width",
            file,
        )),
    }
}

/// `crop_size`: an integer is a square (`get_size_dict(crop_size, default_to_square=True)`).
fn parse_crop(v: &Json, file: Option<&Path>) -> Result<(usize, usize)> {
    if v.is_u64() {
        let s = side(v, "crop_size", file)?;
        return Ok((s, s));
    }
    match (v.get("height"), v.get("width")) {
        (Some(h), Some(w)) => Ok((
            side(h, "crop_size.height", file)?,
            side(w, "crop_size.width", file)?,
        )),
        _ => Err(bad(
            "crop_size",
            "needs height and width, or an integer",
            file,
        )),
    }
}

fn parse_triplet(v: &Json, field: &str, file: Option<&Path>, positive: bool) -> Result<[f64; 3]> {
    let vals: Vec<f64> = match v {
        Json::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN); 3],
        Json::Array(a) => a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect(),
        _ => {
            return Err(bad(
                field,
                format!("expected a number or 3 numbers, found {v}"),
                file,
            ))
        }
    };
    let ok = vals.len() == 3
        && vals
            .iter()
            .all(|x| x.is_finite() && (!positive || *x > 0.0));
    if !ok {
        return Err(bad(
            field,
            format!(
                "expected 3 finite numbers{}, found {v}",
                if positive { " > 0" } else { "" }
            ),
            file,
        ));
    }
    Ok([vals[0], vals[1], vals[2]])
}

impl ImageProcessorConfig {
    /// Parses the bytes of a `preprocessor_config.json` (absent keys take
    /// `CLIPImageProcessor`'s defaults). Never panics, whatever the bytes.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field; [`Error::Unsupported`] for a `resample` other
    /// than bilinear (2) / bicubic (3) or a `size` with `longest_edge`.
    pub fn from_json_bytes(bytes: &[u8], file: Option<&Path>) -> Result<Self> {
        let raw: RawConfig = vidgen_video_core::loading::parse_config(bytes, file)?;
        let d = Self::default();
        let resample = match raw.resample {
            None | Some(3) => Resample::Bicubic,
            Some(2) => Resample::Bilinear,
            Some(other) => {
                return Err(Error::Unsupported {
                    field: "resample".into(),
                    value: other.to_string(),
                    supported: "2 (bilinear), 3 (bicubic)".into(),
                })
            }
        };
        let rescale_factor = raw.rescale_factor.unwrap_or(d.rescale_factor);
        if !rescale_factor.is_finite() || rescale_factor == 0.0 {
            return Err(bad(
                "rescale_factor",
                format!("{rescale_factor} must be finite and non-zero"),
                file,
            ));
        }
        Ok(Self {
            do_resize: raw.do_resize.unwrap_or(d.do_resize),
            size: match &raw.size {
                Some(v) => parse_size(v, file)?,
                None => d.size,
            },
            resample,
            do_center_crop: raw.do_center_crop.unwrap_or(d.do_center_crop),
            crop_size: match &raw.crop_size {
                Some(v) => parse_crop(v, file)?,
                None => d.crop_size,
            },
            do_rescale: raw.do_rescale.unwrap_or(d.do_rescale),
            rescale_factor,
            do_normalize: raw.do_normalize.unwrap_or(d.do_normalize),
            image_mean: match &raw.image_mean {
                Some(v) => parse_triplet(v, "image_mean", file, false)?,
                None => d.image_mean,
            },
            image_std: match &raw.image_std {
                Some(v) => parse_triplet(v, "image_std", file, true)?,
                None => d.image_std,
            },
            do_convert_rgb: raw.do_convert_rgb.unwrap_or(d.do_convert_rgb),
        })
    }
}

/// A borrowed uint8 image, rows of interleaved channels (`[H, W, C]`, what image decoders give).
#[derive(Debug, Clone, Copy)]
pub struct ImageU8<'a> {
    /// `height · width · channels` bytes.
    pub data: &'a [u8],
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// 1 (gray), 3 (RGB) or 4 (RGBA).
    pub channels: usize,
}

impl<'a> ImageU8<'a> {
    /// An RGB image (`[H, W, 3]`).
    pub fn rgb(data: &'a [u8], height: usize, width: usize) -> Self {
        Self {
            data,
            height,
            width,
            channels: 3,
        }
    }

    fn check(&self) -> Result<()> {
        if self.height == 0 || self.width == 0 {
            return Err(Error::invalid(
                "image",
                format!("{}×{} is empty", self.height, self.width),
            ));
        }
        if !matches!(self.channels, 1 | 3 | 4) {
            return Err(Error::invalid(
                "image",
                format!(
                    "{} channels: expected 1 (gray), 3 (RGB) or 4 (RGBA)",
                    self.channels
                ),
            ));
        }
        let want = self
            .height
            .checked_mul(self.width)
            .and_then(|n| n.checked_mul(self.channels));
        if want != Some(self.data.len()) {
            return Err(Error::invalid(
                "image",
                format!(
                    "{} bytes for {}×{}×{}",
                    self.data.len(),
                    self.height,
                    self.width,
                    self.channels
                ),
            ));
        }
        Ok(())
    }
}

/// A planar uint8 RGB image `[3, H, W]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanarU8 {
    /// `3 · height · width` bytes, channel planes one after another.
    pub data: Vec<u8>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// The fixed-point coefficients of one axis.
struct Axis {
    /// First tap and tap count of every output index.
    bounds: Vec<(usize, usize)>,
    /// `out · ksize` weights.
    coeffs: Vec<i32>,
    ksize: usize,
    precision: u32,
}

fn filter(resample: Resample, backend: ResizeBackend, x: f64) -> f64 {
    let x = x.abs();
    match resample {
        Resample::Bilinear => {
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        }
        Resample::Bicubic => {
            const A: f64 = -0.5;
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                match backend {
                    // Resample.c's `bicubic_filter`
                    ResizeBackend::Pil => (((x - 5.0) * x + 8.0) * x - 4.0) * A,
                    // UpSample.h's `cubic_convolution2`
                    ResizeBackend::Torchvision => ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A,
                }
            } else {
                0.0
            }
        }
    }
}

/// PIL's `precompute_coeffs` + `normalize_coeffs_8bpc`, or PyTorch's
/// `_compute_index_ranges_weights` + `_compute_index_ranges_int16_weights`.
fn axis_coeffs(input: usize, output: usize, resample: Resample, backend: ResizeBackend) -> Axis {
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = resample.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(output);
    let mut weights = vec![0f64; output * ksize];
    let mut wt_max = 0f64;
    for i in 0..output {
        let center = (i as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(input as i64);
        let n = (xmax - xmin).clamp(0, ksize as i64) as usize;
        let w = &mut weights[i * ksize..i * ksize + n];
        let mut total = 0f64;
        for (j, wj) in w.iter_mut().enumerate() {
            *wj = filter(
                resample,
                backend,
                ((j as i64 + xmin) as f64 - center + 0.5) * inv,
            );
            total += *wj;
        }
        if total != 0.0 {
            for wj in w.iter_mut() {
                *wj /= total;
                wt_max = wt_max.max(*wj);
            }
        }
        bounds.push((xmin as usize, n));
    }
    let precision = match backend {
        ResizeBackend::Pil => 22,
        ResizeBackend::Torchvision => {
            let mut p = 0u32;
            while p < 22 {
                if (0.5 + wt_max * (1u64 << (p + 1)) as f64) as i64 >= 1 << 15 {
                    break;
                }
                p += 1;
            }
            p
        }
    };
    let one = (1u64 << precision) as f64;
    let coeffs = weights
        .iter()
        .map(|&k| {
            if k < 0.0 {
                (-0.5 + k * one) as i32
            } else {
                (0.5 + k * one) as i32
            }
        })
        .collect();
    Axis {
        bounds,
        coeffs,
        ksize,
        precision,
    }
}

/// One fixed-point pass over `[planes, h, w]` along rows (`horizontal`) or columns.
fn resample_pass(
    src: &[u8],
    planes: usize,
    (h, w): (usize, usize),
    axis: &Axis,
    horizontal: bool,
) -> Vec<u8> {
    let (oh, ow) = if horizontal {
        (h, axis.bounds.len())
    } else {
        (axis.bounds.len(), w)
    };
    let half = 1i64 << (axis.precision.max(1) - 1);
    let mut out = vec![0u8; planes * oh * ow];
    for p in 0..planes {
        let img = &src[p * h * w..(p + 1) * h * w];
        let dst = &mut out[p * oh * ow..(p + 1) * oh * ow];
        for y in 0..oh {
            for x in 0..ow {
                let (o, (start, n)) = if horizontal {
                    (x, axis.bounds[x])
                } else {
                    (y, axis.bounds[y])
                };
                let k = &axis.coeffs[o * axis.ksize..o * axis.ksize + n];
                let mut acc: i64 = if axis.precision == 0 { 0 } else { half };
                for (j, &c) in k.iter().enumerate() {
                    let v = if horizontal {
                        img[y * w + start + j]
                    } else {
                        img[(start + j) * w + x]
                    };
                    acc += i64::from(v) * i64::from(c);
                }
                dst[y * ow + x] = (acc >> axis.precision).clamp(0, 255) as u8;
            }
        }
    }
    out
}

/// Resizes a planar uint8 image `[planes, h, w]` to `[planes, oh, ow]` as the backend does:
/// horizontal pass first (skipped when the width is unchanged), then vertical.
///
/// # Errors
/// Zero sizes or a buffer of another length ([`Error::InvalidArgument`]).
pub fn resize_planar_u8(
    src: &[u8],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    resample: Resample,
    backend: ResizeBackend,
) -> Result<Vec<u8>> {
    if h == 0 || w == 0 || oh == 0 || ow == 0 || planes == 0 {
        return Err(Error::invalid(
            "resize",
            format!("sizes {h}×{w} → {oh}×{ow} ({planes} planes) must be non-empty"),
        ));
    }
    if src.len() != planes * h * w {
        return Err(Error::invalid(
            "resize",
            format!("{} bytes for {planes}×{h}×{w}", src.len()),
        ));
    }
    let mut cur = src.to_vec();
    let mut cw = w;
    if ow != w {
        let ax = axis_coeffs(w, ow, resample, backend);
        cur = resample_pass(&cur, planes, (h, w), &ax, true);
        cw = ow;
    }
    if oh != h {
        let ax = axis_coeffs(h, oh, resample, backend);
        cur = resample_pass(&cur, planes, (h, cw), &ax, false);
    }
    Ok(cur)
}

/// `get_resize_output_image_size(default_to_square=False)`: the short side becomes `size`,
/// the long one `int(size · long / short)`.
pub fn shortest_edge_size(height: usize, width: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (size as f64 * long as f64 / short as f64) as usize;
    if width <= height {
        (new_long, size)
    } else {
        (size, new_long)
    }
}

/// `CLIPImageProcessor` (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct CLIPImageProcessor {
    config: ImageProcessorConfig,
    backend: ResizeBackend,
}

impl Default for CLIPImageProcessor {
    fn default() -> Self {
        Self::new(ImageProcessorConfig::default())
    }
}

impl CLIPImageProcessor {
    /// A processor with `config` and the default (torchvision) backend.
    pub fn new(config: ImageProcessorConfig) -> Self {
        Self {
            config,
            backend: ResizeBackend::default(),
        }
    }

    /// The same processor with another resize backend.
    pub fn with_backend(mut self, backend: ResizeBackend) -> Self {
        self.backend = backend;
        self
    }

    /// Reads `preprocessor_config.json` from `dir`, or from its `feature_extractor/` folder
    /// (a diffusers pipeline).
    ///
    /// # Errors
    /// [`Error::Io`] when absent; as [`ImageProcessorConfig::from_json_bytes`].
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut path = dir.join("preprocessor_config.json");
        if !path.is_file() {
            let sub = dir
                .join("feature_extractor")
                .join("preprocessor_config.json");
            if sub.is_file() {
                path = sub;
            }
        }
        let bytes = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self::new(ImageProcessorConfig::from_json_bytes(
            &bytes,
            Some(&path),
        )?))
    }

    /// The settings.
    pub fn config(&self) -> &ImageProcessorConfig {
        &self.config
    }

    /// The resize backend.
    pub fn backend(&self) -> ResizeBackend {
        self.backend
    }

    /// Conversion to planar RGB, resize and center crop of one image (the uint8 steps).
    ///
    /// # Errors
    /// An empty image, a channel count other than 1 / 3 / 4 (or other than 3 without
    /// `do_convert_rgb`), a buffer of the wrong length ([`Error::InvalidArgument`]).
    pub fn resize_and_crop(&self, image: &ImageU8) -> Result<PlanarU8> {
        image.check()?;
        let cfg = &self.config;
        if image.channels != 3 && !cfg.do_convert_rgb {
            return Err(Error::invalid(
                "image",
                format!(
                    "{} channels with do_convert_rgb = false: expected RGB",
                    image.channels
                ),
            ));
        }
        let (h, w) = (image.height, image.width);
        let mut planar = self.to_rgb_planar(image);
        let (mut ch, mut cw) = (h, w);
        if cfg.do_resize {
            let (oh, ow) = match cfg.size {
                ResizeTo::ShortestEdge(s) => shortest_edge_size(h, w, s),
                ResizeTo::Exact { height, width } => (height, width),
            };
            if oh == 0 || ow == 0 {
                return Err(Error::invalid(
                    "image",
                    format!("{h}×{w} resizes to an empty {oh}×{ow}"),
                ));
            }
            planar = resize_planar_u8(&planar, 3, (h, w), (oh, ow), cfg.resample, self.backend)?;
            (ch, cw) = (oh, ow);
        }
        if cfg.do_center_crop {
            (planar, ch, cw) = self.center_crop(&planar, (ch, cw));
        }
        Ok(PlanarU8 {
            data: planar,
            height: ch,
            width: cw,
        })
    }

    /// RGB planes: gray replicated; RGBA composited onto white as the backend's
    /// `convert_to_rgb` does for arrays.
    fn to_rgb_planar(&self, image: &ImageU8) -> Vec<u8> {
        let (h, w, c) = (image.height, image.width, image.channels);
        let n = h * w;
        let mut out = vec![0u8; 3 * n];
        for i in 0..n {
            let px = &image.data[i * c..(i + 1) * c];
            let rgb: [u8; 3] = match c {
                1 => [px[0]; 3],
                4 => {
                    let a = px[3];
                    [0, 1, 2].map(|k| self.composite(px[k], a))
                }
                _ => [px[0], px[1], px[2]],
            };
            for k in 0..3 {
                out[k * n + i] = rgb[k];
            }
        }
        out
    }

    fn composite(&self, v: u8, a: u8) -> u8 {
        match self.backend {
            // torchvision: to float / 255, blend, back with `mul(255 + 1 − 1e-3)` truncated.
            ResizeBackend::Torchvision => {
                let (vf, af) = (f32::from(v) / 255.0, f32::from(a) / 255.0);
                let blended = vf * af + (1.0 - af);
                (blended * (256.0f64 - 1e-3) as f32) as u8
            }
            // numpy: `round(a/255 · v + (1 − a/255) · 255)` in f64.
            ResizeBackend::Pil => {
                let af = f64::from(a) / 255.0;
                (af * f64::from(v) + (1.0 - af) * 255.0).round_ties_even() as u8
            }
        }
    }

    fn center_crop(&self, src: &[u8], (h, w): (usize, usize)) -> (Vec<u8>, usize, usize) {
        let (ch, cw) = self.config.crop_size;
        // Zero padding when the crop is larger: torchvision puts the odd pixel after, the
        // numpy crop before.
        let pad = |crop: usize, size: usize| -> usize {
            if crop <= size {
                0
            } else {
                match self.backend {
                    ResizeBackend::Torchvision => (crop - size) / 2,
                    ResizeBackend::Pil => (crop - size).div_ceil(2),
                }
            }
        };
        let (pt, pl) = (pad(ch, h), pad(cw, w));
        let (ph, pw) = (h.max(ch), w.max(cw));
        let mut padded = vec![0u8; 3 * ph * pw];
        for k in 0..3 {
            for y in 0..h {
                let s = &src[k * h * w + y * w..k * h * w + (y + 1) * w];
                let d0 = k * ph * pw + (y + pt) * pw + pl;
                padded[d0..d0 + w].copy_from_slice(s);
            }
        }
        let (top, left) = ((ph - ch) / 2, (pw - cw) / 2);
        let mut out = vec![0u8; 3 * ch * cw];
        for k in 0..3 {
            for y in 0..ch {
                let s0 = k * ph * pw + (y + top) * pw + left;
                out[k * ch * cw + y * cw..k * ch * cw + (y + 1) * cw]
                    .copy_from_slice(&padded[s0..s0 + cw]);
            }
        }
        (out, ch, cw)
    }

    /// Rescale and normalise a planar uint8 image in f32 as the backend does.
    fn to_pixel_values(&self, img: &PlanarU8) -> Vec<f32> {
        let cfg = &self.config;
        let n = img.height * img.width;
        let mut out = vec![0f32; 3 * n];
        for k in 0..3 {
            let (mean, std) = (cfg.image_mean[k], cfg.image_std[k]);
            let src = &img.data[k * n..(k + 1) * n];
            let dst = &mut out[k * n..(k + 1) * n];
            match (self.backend, cfg.do_rescale, cfg.do_normalize) {
                (ResizeBackend::Torchvision, true, true) => {
                    // Fused: mean / rescale_factor and std / rescale_factor, f32 tensors.
                    let inv = (1.0 / cfg.rescale_factor) as f32;
                    let (m, s) = (mean as f32 * inv, std as f32 * inv);
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = (f32::from(v) - m) / s;
                    }
                }
                (ResizeBackend::Pil, true, true) => {
                    let (m, s) = (mean as f32, std as f32);
                    for (d, &v) in dst.iter_mut().zip(src) {
                        let x = (f64::from(v) * cfg.rescale_factor) as f32;
                        *d = (x - m) / s;
                    }
                }
                (ResizeBackend::Torchvision, true, false) => {
                    let r = cfg.rescale_factor as f32;
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = f32::from(v) * r;
                    }
                }
                (ResizeBackend::Pil, true, false) => {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = (f64::from(v) * cfg.rescale_factor) as f32;
                    }
                }
                (_, false, true) => {
                    let (m, s) = (mean as f32, std as f32);
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = (f32::from(v) - m) / s;
                    }
                }
                (_, false, false) => {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = f32::from(v);
                    }
                }
            }
        }
        out
    }

    /// Processes one image into `pixel_values` `[3, H', W']` (f32, planar).
    ///
    /// # Errors
    /// As [`CLIPImageProcessor::resize_and_crop`].
    pub fn preprocess_one(&self, image: &ImageU8) -> Result<(Vec<f32>, usize, usize)> {
        let img = self.resize_and_crop(image)?;
        Ok((self.to_pixel_values(&img), img.height, img.width))
    }

    /// Processes a batch (transformers' `processor(images=…, return_tensors="pt").pixel_values`).
    ///
    /// # Shapes
    /// `B` images `[H_i, W_i, C_i]` u8 → `[B, 3, H', W']` f32 (`H' × W'` = `crop_size` with
    /// center crop; without it every image must resize to the same size).
    ///
    /// # Errors
    /// An empty batch, images of different output sizes; as
    /// [`CLIPImageProcessor::resize_and_crop`].
    pub fn preprocess(&self, images: &[ImageU8], device: &Device) -> Result<Tensor> {
        let first = images
            .first()
            .ok_or_else(|| Error::invalid("images", "the batch is empty"))?;
        let (v, h, w) = self.preprocess_one(first)?;
        let mut all = v;
        for (i, img) in images.iter().enumerate().skip(1) {
            let (v, hi, wi) = self.preprocess_one(img)?;
            if (hi, wi) != (h, w) {
                return Err(Error::invalid(
                    "images",
                    format!("image {i} processes to {hi}×{wi}, image 0 to {h}×{w}"),
                ));
            }
            all.extend(v);
        }
        Ok(Tensor::from_vec(all, (images.len(), 3, h, w), device)?)
    }

    /// Normalises float images already in `[0, 1]` (`(x − mean) / std` per channel, f32): the
    /// feature extractor's call in SVD's pipeline (`do_resize`, `do_rescale`,
    /// `do_center_crop` off), after [`crate::resize_with_antialiasing`].
    ///
    /// # Shapes
    /// `[B, 3, H, W]` → same, f32.
    ///
    /// # Errors
    /// Another rank or channel count, a non-float tensor ([`Error::InvalidArgument`]).
    pub fn normalize(&self, x: &Tensor) -> Result<Tensor> {
        let d = x.dims();
        if d.len() != 4 || d[1] != 3 || !x.dtype().is_float() {
            return Err(Error::invalid(
                "normalize input",
                format!("expected float [B, 3, H, W], found {:?} {d:?}", x.dtype()),
            ));
        }
        let mean: Vec<f32> = self.config.image_mean.iter().map(|&m| m as f32).collect();
        let std: Vec<f32> = self.config.image_std.iter().map(|&s| s as f32).collect();
        let mean = Tensor::from_vec(mean, (1, 3, 1, 1), x.device())?;
        let std = Tensor::from_vec(std, (1, 3, 1, 1), x.device())?;
        Ok(x.to_dtype(DType::F32)?
            .broadcast_sub(&mean)?
            .broadcast_div(&std)?)
    }
}
