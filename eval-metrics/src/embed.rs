//! Metrics over network embeddings that the caller's network provides: LPIPS (the `lpips`
//! package's linear heads over a user-supplied backbone), CLIP score and frame consistency.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, D};
use vidgen_video_core::{Error, Result};

use crate::frame::{video, DataRange};
use crate::stats::check_finite_slice;

/// The `lpips` package's `ScalingLayer` shift, applied to `[-1, 1]` RGB before the backbone.
pub const LPIPS_SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
/// The `lpips` package's `ScalingLayer` scale.
pub const LPIPS_SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// A backbone returning the feature maps LPIPS compares (for `lpips` v0.1: VGG16's
/// `relu1_2, relu2_2, relu3_3, relu4_3, relu5_3`, AlexNet's `relu1..relu5`, SqueezeNet's 7).
pub trait LpipsBackbone {
    /// Feature maps of a batch of images already passed through the scaling layer.
    ///
    /// # Shapes
    /// `x`: `[N, 3, H, W]`; returns one `[N, C_l, H_l, W_l]` per layer.
    fn features(&self, x: &Tensor) -> Result<Vec<Tensor>>;
}

/// LPIPS's learned linear heads: per layer a non-negative weight per channel (`lin{l}.model.1.weight`,
/// a 1×1 conv without bias in the `lpips` package).
#[derive(Debug, Clone)]
pub struct LpipsHead {
    weights: Vec<Tensor>,
}

impl LpipsHead {
    /// Heads from per-layer weights, each `[C_l]` or `[1, C_l, 1, 1]`.
    pub fn new(weights: Vec<Tensor>) -> Result<Self> {
        if weights.is_empty() {
            return Err(Error::invalid("weights", "LPIPS needs at least one layer"));
        }
        let weights = weights
            .into_iter()
            .enumerate()
            .map(|(l, w)| {
                let c = w.elem_count();
                let ok = w.dims().len() == 1 || w.dims() == [1, c, 1, 1];
                if !ok {
                    return Err(Error::shape(
                        format!("lin{l}.model.1.weight"),
                        &[1, c, 1, 1],
                        w.dims(),
                    ));
                }
                Ok(w.to_dtype(DType::F32)?.reshape((1, c, 1, 1))?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { weights })
    }

    /// Heads from a tensor map with the `lpips` package's keys `lin0.model.1.weight`,
    /// `lin1.model.1.weight`, … (consecutive from 0); `lin{l}.weight` is accepted too.
    pub fn from_tensors(map: &HashMap<String, Tensor>, file: &str) -> Result<Self> {
        let mut ws = Vec::new();
        for l in 0.. {
            let t = map
                .get(&format!("lin{l}.model.1.weight"))
                .or_else(|| map.get(&format!("lin{l}.weight")));
            match t {
                Some(t) => ws.push(t.clone()),
                None => break,
            }
        }
        if ws.is_empty() {
            let mut nearest: Vec<String> = map.keys().cloned().collect();
            nearest.sort();
            nearest.truncate(5);
            return Err(Error::MissingTensor {
                key: "lin0.model.1.weight".into(),
                file: file.into(),
                nearest,
            });
        }
        Self::new(ws)
    }

    /// Loads the heads from a safetensors file (convert the package's `weights/v0.1/vgg.pth`
    /// with `safetensors.torch.save_file(torch.load(p), out)`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu)?;
        Self::from_tensors(&map, &path.display().to_string())
    }

    /// The number of layers.
    pub fn layers(&self) -> usize {
        self.weights.len()
    }

    /// LPIPS distance from two lists of feature maps: per layer, unit-normalise each position's
    /// channel vector (`x / (‖x‖ + 1e-10)`), square the difference, weight channels by the
    /// head, average over space; sum over layers.
    ///
    /// # Shapes
    /// `feats_a[l]`, `feats_b[l]`: `[N, C_l, H_l, W_l]`; returns `[N]` (f32).
    pub fn distance(&self, feats_a: &[Tensor], feats_b: &[Tensor]) -> Result<Tensor> {
        if feats_a.len() != self.weights.len() || feats_b.len() != self.weights.len() {
            return Err(Error::invalid(
                "features",
                format!(
                    "the head has {} layers, got {} and {} feature maps",
                    self.weights.len(),
                    feats_a.len(),
                    feats_b.len()
                ),
            ));
        }
        let mut total: Option<Tensor> = None;
        for (l, ((a, b), w)) in feats_a.iter().zip(feats_b).zip(&self.weights).enumerate() {
            if a.dims() != b.dims() {
                return Err(Error::shape(format!("features_b[{l}]"), a.dims(), b.dims()));
            }
            let c = w.dims()[1];
            if a.dims().len() != 4 || a.dims()[1] != c {
                return Err(Error::invalid(
                    format!("features_a[{l}]"),
                    format!("expected [N, {c}, H, W], found {:?}", a.dims()),
                ));
            }
            let norm = |x: &Tensor| -> Result<Tensor> {
                let x = x.to_dtype(DType::F32)?;
                let n = x.sqr()?.sum_keepdim(1)?.sqrt()?.affine(1.0, 1e-10)?;
                Ok(x.broadcast_div(&n)?)
            };
            let diff = (norm(a)? - norm(b)?)?.sqr()?;
            let d = diff
                .broadcast_mul(w)?
                .sum(1)?
                .mean(D::Minus1)?
                .mean(D::Minus1)?;
            total = Some(match total {
                None => d,
                Some(t) => (t + d)?,
            });
        }
        total.ok_or_else(|| Error::invalid("features", "no layers"))
    }

    /// LPIPS between two image batches through `backbone`: scaling layer, features, heads.
    ///
    /// # Shapes
    /// `a`, `b`: `[N, 3, H, W]` in `[-1, 1]`; returns `[N]`.
    pub fn forward(&self, backbone: &dyn LpipsBackbone, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let prep = |x: &Tensor| -> Result<Tensor> {
            let dev = x.device();
            let shift = Tensor::from_slice(&LPIPS_SHIFT, (1, 3, 1, 1), dev)?;
            let scale = Tensor::from_slice(&LPIPS_SCALE, (1, 3, 1, 1), dev)?;
            Ok(x.to_dtype(DType::F32)?
                .broadcast_sub(&shift)?
                .broadcast_div(&scale)?)
        };
        let fa = backbone.features(&prep(a)?)?;
        let fb = backbone.features(&prep(b)?)?;
        self.distance(&fa, &fb)
    }
}

fn rows(x: &Tensor, what: &str) -> Result<(Vec<f64>, usize, usize)> {
    crate::stats::features_f64(x, what)
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-12)
}

/// CLIP score (Hessel et al. 2021, torchmetrics): `100 · max(cos(image, text), 0)` per pair and
/// the mean.
///
/// # Shapes
/// `image_embeds`, `text_embeds`: `[N, D]` (pair `i` is row `i` of each). Returns `N` values and
/// their mean.
pub fn clip_score(image_embeds: &Tensor, text_embeds: &Tensor) -> Result<(Vec<f64>, f64)> {
    let (a, n, d) = rows(image_embeds, "image_embeds")?;
    let (b, n2, d2) = rows(text_embeds, "text_embeds")?;
    if (n, d) != (n2, d2) {
        return Err(Error::shape("text_embeds", &[n, d], &[n2, d2]));
    }
    if n == 0 {
        return Err(Error::invalid("image_embeds", "no pairs"));
    }
    let v: Vec<f64> = a
        .chunks_exact(d)
        .zip(b.chunks_exact(d))
        .map(|(x, y)| 100.0 * cosine(x, y).max(0.0))
        .collect();
    let mean = v.iter().sum::<f64>() / n as f64;
    Ok((v, mean))
}

/// Frame consistency: the mean cosine similarity of consecutive frames' image embeddings
/// (as used by VIDiff / Tune-A-Video with CLIP image embeddings).
///
/// # Shapes
/// `embeds`: `[B, T, D]` (or `[T, D]` for one video), `T ≥ 2`. Returns one value per video and
/// their mean.
pub fn frame_consistency(embeds: &Tensor) -> Result<(Vec<f64>, f64)> {
    let e = match embeds.dims().len() {
        2 => embeds.unsqueeze(0)?,
        3 => embeds.clone(),
        _ => {
            return Err(Error::invalid(
                "embeds",
                format!("expected [B, T, D] or [T, D], found {:?}", embeds.dims()),
            ))
        }
    };
    let (b, t, d) = e.dims3()?;
    if t < 2 {
        return Err(Error::invalid(
            "embeds",
            format!("need at least 2 frames, found {t}"),
        ));
    }
    let v = e.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    check_finite_slice(&v, "embeds")?;
    let per: Vec<f64> = (0..b)
        .map(|bi| {
            let base = bi * t * d;
            (0..t - 1)
                .map(|i| {
                    let x = &v[base + i * d..base + (i + 1) * d];
                    let y = &v[base + (i + 1) * d..base + (i + 2) * d];
                    cosine(x, y)
                })
                .sum::<f64>()
                / (t - 1) as f64
        })
        .collect();
    let mean = per.iter().sum::<f64>() / b as f64;
    Ok((per, mean))
}

/// An image embedder (e.g. a CLIP vision tower with its projection) supplied by the caller.
pub trait ImageEmbedder {
    /// Embeds a batch of frames.
    ///
    /// # Shapes
    /// `frames`: `[N, C, H, W]` in the range the caller declared; returns `[N, D]`.
    fn embed(&self, frames: &Tensor) -> Result<Tensor>;
}

/// [`frame_consistency`] of videos through `embedder`: the frames are folded to
/// `[B·T, C, H, W]` (order `b·T + t`), embedded, and unfolded to `[B, T, D]`.
///
/// # Shapes
/// `videos`: `[B, C, T, H, W]` inside `range`, `T ≥ 2`.
pub fn frame_consistency_with(
    embedder: &dyn ImageEmbedder,
    videos: &Tensor,
    range: DataRange,
) -> Result<(Vec<f64>, f64)> {
    let v = video(videos, "videos", Some(range))?;
    let [b, c, t, h, w] = v.dims;
    let frames = videos
        .permute((0, 2, 1, 3, 4))?
        .contiguous()?
        .reshape((b * t, c, h, w))?;
    let e = embedder.embed(&frames)?;
    let dims = e.dims().to_vec();
    if dims.len() != 2 || dims[0] != b * t {
        return Err(Error::invalid(
            "embedder output",
            format!("expected [{}, D], found {dims:?}", b * t),
        ));
    }
    frame_consistency(&e.reshape((b, t, dims[1]))?)
}
