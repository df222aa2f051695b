//! Multimodal instructions (VIDiff: image embedding → MLP, concatenated with the text
//! embedding; VIMI: plus `k` retrieved example embeddings) and exact top-k cosine retrieval.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_nn::Linear;

/// Sizes of a [`MultimodalInstruction`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct MultimodalInstructionConfig {
    /// Width of the image embedding (e.g. CLIP vision, 1024).
    pub image_dim: usize,
    /// Width of the text embedding, and of the output context (e.g. CLIP text, 1024).
    pub text_dim: usize,
    /// Hidden width of the image MLP.
    pub hidden_dim: usize,
    /// Width of retrieved example embeddings (projected to `text_dim`); `None`: no examples.
    #[serde(default)]
    pub example_dim: Option<usize>,
}

/// VIDiff's multimodal instruction encoder: image tokens go through `mlp.fc1 → GELU → mlp.fc2`
/// into the text space and are appended to the text tokens; VIMI-style, `k` retrieved example
/// embeddings (through `example_proj`) are prepended as in-context tokens.
#[derive(Debug, Clone)]
pub struct MultimodalInstruction {
    fc1: Linear,
    fc2: Linear,
    example_proj: Option<Linear>,
    cfg: MultimodalInstructionConfig,
}

impl MultimodalInstruction {
    /// Builds the encoder.
    ///
    /// # Errors
    /// Zero sizes; missing / mis-shaped tensors in `vb`.
    pub fn new(cfg: &MultimodalInstructionConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.image_dim == 0 || cfg.text_dim == 0 || cfg.hidden_dim == 0 {
            return Err(Error::config(
                "image_dim/text_dim/hidden_dim",
                "must be ≥ 1",
            ));
        }
        let example_proj = match cfg.example_dim {
            Some(0) => return Err(Error::config("example_dim", "must be ≥ 1")),
            Some(d) => Some(Linear::new(d, cfg.text_dim, true, vb.pp("example_proj"))?),
            None => None,
        };
        Ok(Self {
            fc1: Linear::new(cfg.image_dim, cfg.hidden_dim, true, vb.pp("mlp").pp("fc1"))?,
            fc2: Linear::new(cfg.hidden_dim, cfg.text_dim, true, vb.pp("mlp").pp("fc2"))?,
            example_proj,
            cfg: cfg.clone(),
        })
    }

    /// The image tokens mapped into the text space.
    ///
    /// # Shapes
    /// `image [B, Li, image_dim]` → `[B, Li, text_dim]`.
    ///
    /// # Errors
    /// A wrong rank or width.
    pub fn embed_image(&self, image: &Tensor) -> Result<Tensor> {
        check3("image", image, None, self.cfg.image_dim)?;
        self.fc2.forward(&self.fc1.forward(image)?.gelu_erf()?)
    }

    /// The instruction context: `[examples ‖ text ‖ MLP(image)]` on the token axis.
    ///
    /// # Shapes
    /// - `text`: `[B, Lt, text_dim]`
    /// - `image`: `[B, Li, image_dim]`
    /// - `examples`: `[B, k, example_dim]` (retrieved example embeddings, e.g. by
    ///   [`ExampleBank::top_k`]) or `None`
    /// - returns `[B, k + Lt + Li, text_dim]` (`k = 0` without examples)
    ///
    /// # Errors
    /// Wrong ranks, widths or batch sizes; examples given to an encoder built without
    /// `example_dim`.
    pub fn forward(
        &self,
        text: &Tensor,
        image: &Tensor,
        examples: Option<&Tensor>,
    ) -> Result<Tensor> {
        let b = check3("text", text, None, self.cfg.text_dim)?;
        check3("image", image, Some(b), self.cfg.image_dim)?;
        let img = self.embed_image(image)?;
        let mut parts = Vec::with_capacity(3);
        if let Some(ex) = examples {
            let proj = self.example_proj.as_ref().ok_or_else(|| {
                Error::invalid(
                    "examples",
                    "this encoder was built without example_dim (no example projection)",
                )
            })?;
            let d = self.cfg.example_dim.unwrap_or(0);
            check3("examples", ex, Some(b), d)?;
            parts.push(proj.forward(ex)?);
        }
        parts.push(text.clone());
        parts.push(img);
        Ok(Tensor::cat(&parts, 1)?)
    }
}

fn check3(name: &str, x: &Tensor, batch: Option<usize>, width: usize) -> Result<usize> {
    match x.dims() {
        &[b, l, w] if w == width && l > 0 && batch.is_none_or(|bb| bb == b) => Ok(b),
        d => Err(Error::shape(
            name,
            &[batch.unwrap_or(d.first().copied().unwrap_or(1)), 1, width],
            d,
        )),
    }
}

/// Top-k results for one query, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// Bank row indices, best first (ties broken by the smaller index).
    pub indices: Vec<usize>,
    /// Cosine similarities, in `[-1, 1]`, matching `indices`.
    pub scores: Vec<f32>,
}

/// A bank of example embeddings, L2-normalised once, searched exactly by cosine similarity.
///
/// Rows with zero norm have similarity 0 to everything.
#[derive(Debug, Clone)]
pub struct ExampleBank {
    normed: Tensor,
    chunk: usize,
}

fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    // zero rows stay zero (divide by 1 instead of 0)
    let n = n.maximum(1e-12)?;
    Ok(x.broadcast_div(&n)?)
}

impl ExampleBank {
    /// Default number of bank rows per matmul.
    pub const DEFAULT_CHUNK: usize = 4096;

    /// Normalises and keeps `bank`.
    ///
    /// # Shapes
    /// `bank [N, D]`, any float dtype (computed in f32).
    ///
    /// # Errors
    /// Not rank 2, empty, or non-finite values.
    pub fn new(bank: &Tensor) -> Result<Self> {
        let (n, d) = bank.dims2().map_err(|_| {
            Error::invalid("bank", format!("expected [N, D], found {:?}", bank.dims()))
        })?;
        if n == 0 || d == 0 {
            return Err(Error::invalid(
                "bank",
                format!("empty bank {:?}", bank.dims()),
            ));
        }
        vidgen_video_core::check_finite(bank, "bank")?;
        Ok(Self {
            normed: l2_normalise(bank)?.contiguous()?,
            chunk: Self::DEFAULT_CHUNK,
        })
    }

    /// Sets the number of bank rows per matmul (≥ 1): memory is `Q × chunk` scores at a time.
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.normed.dims()[0]
    }

    /// True when the bank is empty (never, after [`ExampleBank::new`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bank's device.
    pub fn device(&self) -> &Device {
        self.normed.device()
    }

    /// The `k` most cosine-similar bank rows for each query (`k` clipped to the bank size):
    /// one `[Q, D] × [D, chunk]` matmul per chunk of the bank, merged into a running top-k.
    ///
    /// # Shapes
    /// `queries [Q, D]` → `Q` results of `min(k, N)` entries.
    ///
    /// # Errors
    /// Not rank 2, a width other than the bank's, non-finite values.
    pub fn top_k(&self, queries: &Tensor, k: usize) -> Result<Vec<TopK>> {
        let d = self.normed.dims()[1];
        let q = match queries.dims() {
            &[_, qd] if qd == d => queries,
            other => return Err(Error::shape("queries", &[1, d], other)),
        };
        vidgen_video_core::check_finite(q, "queries")?;
        let qn = l2_normalise(&q.to_device(self.device())?)?;
        let nq = qn.dims()[0];
        let k = k.min(self.len());
        let mut best: Vec<Vec<(f32, usize)>> = vec![Vec::with_capacity(k + 1); nq];
        let mut start = 0;
        while start < self.len() {
            let len = self.chunk.min(self.len() - start);
            let chunk = self.normed.narrow(0, start, len)?;
            // [Q, D] × [D, len] -> [Q, len]
            let s = qn.matmul(&chunk.t()?)?.to_vec2::<f32>()?;
            for (row, list) in s.iter().zip(best.iter_mut()) {
                for (j, &v) in row.iter().enumerate() {
                    insert_top(list, k, (v, start + j));
                }
            }
            start += len;
        }
        Ok(best
            .into_iter()
            .map(|list| TopK {
                indices: list.iter().map(|p| p.1).collect(),
                scores: list.iter().map(|p| p.0).collect(),
            })
            .collect())
    }

    /// The bank rows at `indices` (normalised), for building a VIMI context.
    ///
    /// # Shapes
    /// `len(indices) = k` → `[k, D]`.
    ///
    /// # Errors
    /// An index out of range.
    pub fn rows(&self, indices: &[usize]) -> Result<Tensor> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::invalid(
                "indices",
                format!("{bad} out of range for a bank of {}", self.len()),
            ));
        }
        let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, indices.len(), self.device())?;
        Ok(self.normed.index_select(&idx, 0)?)
    }
}

/// Better = higher score, then smaller index.
fn better(a: (f32, usize), b: (f32, usize)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// Inserts `item` into the sorted `list` (best first), keeping at most `k` entries.
fn insert_top(list: &mut Vec<(f32, usize)>, k: usize, item: (f32, usize)) {
    if k == 0 {
        return;
    }
    if list.len() == k {
        match list.last() {
            Some(&last) if !better(item, last) => return,
            _ => {}
        }
    }
    let pos = list.partition_point(|&e| better(e, item));
    list.insert(pos, item);
    list.truncate(k);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use candle_nn::VarMap;
    use proptest::prelude::*;

    fn brute(bank: &[Vec<f32>], q: &[f32]) -> Vec<f64> {
        let nrm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let qn = nrm(q);
        bank.iter()
            .map(|r| {
                let rn = nrm(r);
                if rn == 0.0 || qn == 0.0 {
                    0.0
                } else {
                    r.iter()
                        .zip(q)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        / (rn * qn)
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn top_k_matches_brute_force(
            n in 1usize..60, d in 1usize..12, nq in 1usize..4, k in 0usize..10,
            chunk in 1usize..17, seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let bank: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..d).map(|_| rng.random_range(-1f32..1.0)).collect())
                .collect();
            let qs: Vec<Vec<f32>> = (0..nq)
                .map(|_| (0..d).map(|_| rng.random_range(-1f32..1.0)).collect())
                .collect();
            let flat: Vec<f32> = bank.iter().flatten().copied().collect();
            let bt = Tensor::from_vec(flat, (n, d), &Device::Cpu).unwrap();
            let qf: Vec<f32> = qs.iter().flatten().copied().collect();
            let qt = Tensor::from_vec(qf, (nq, d), &Device::Cpu).unwrap();
            let res = ExampleBank::new(&bt).unwrap().with_chunk(chunk).top_k(&qt, k).unwrap();
            prop_assert_eq!(res.len(), nq);
            for (q, r) in qs.iter().zip(&res) {
                let s = brute(&bank, q);
                let mut sorted = s.clone();
                sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
                prop_assert_eq!(r.indices.len(), k.min(n));
                for (i, (&idx, &sc)) in r.indices.iter().zip(&r.scores).enumerate() {
                    // the returned score is the true cosine of the returned row …
                    prop_assert!((s[idx] - sc as f64).abs() < 1e-5);
                    // … and equals the i-th best true cosine (ties may reorder indices)
                    prop_assert!((sorted[i] - sc as f64).abs() < 1e-5);
                }
                let mut u = r.indices.clone();
                u.sort_unstable();
                u.dedup();
                prop_assert_eq!(u.len(), r.indices.len());
            }
        }
    }

    #[test]
    fn instruction_shapes_and_errors() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let cfg = MultimodalInstructionConfig {
            image_dim: 20,
            text_dim: 16,
            hidden_dim: 32,
            example_dim: Some(12),
        };
        let m = MultimodalInstruction::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))
            .unwrap();
        let text = Tensor::ones((2, 7, 16), DType::F32, &dev).unwrap();
        let img = Tensor::ones((2, 3, 20), DType::F32, &dev).unwrap();
        let out = m.forward(&text, &img, None).unwrap();
        assert_eq!(out.dims(), &[2, 10, 16]);
        // the text tokens are passed through unchanged
        let d = (out.narrow(1, 0, 7).unwrap() - &text)
            .unwrap()
            .abs()
            .unwrap();
        assert_eq!(d.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        // VIMI: retrieved examples prepended
        let bank = Tensor::randn(0f32, 1.0, (50, 12), &dev).unwrap();
        let eb = ExampleBank::new(&bank).unwrap().with_chunk(16);
        let q = Tensor::randn(0f32, 1.0, (2, 12), &dev).unwrap();
        let hits = eb.top_k(&q, 4).unwrap();
        let ex: Vec<Tensor> = hits.iter().map(|h| eb.rows(&h.indices).unwrap()).collect();
        let ex = Tensor::stack(&ex, 0).unwrap();
        let out = m.forward(&text, &img, Some(&ex)).unwrap();
        assert_eq!(out.dims(), &[2, 14, 16]);
        assert!(m
            .forward(&text, &img.narrow(0, 0, 1).unwrap(), None)
            .is_err());
        assert!(eb.rows(&[50]).is_err());
        assert!(eb
            .top_k(&Tensor::ones((1, 5), DType::F32, &dev).unwrap(), 2)
            .is_err());
    }
}
