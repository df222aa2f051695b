//! `nn.Linear` with PyTorch's `[out, in]` weight, applied to any leading dims as one matrix
//! product.

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, Result};

/// `y = x · weightᵀ (+ bias)`, keys `weight` `[out, in]` and `bias` `[out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` (and `bias` when `bias` is true) from `vb`. With a `VarMap` the weight
    /// is initialised Kaiming-normal and the bias uniform in `±1/√in`, as candle-nn's `linear`.
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bias = if bias {
            let bound = 1.0 / (in_dim as f64).sqrt();
            Some(vb.get_with_hints(
                out_dim,
                "bias",
                candle_nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Wraps existing tensors (`weight` `[out, in]`, `bias` `[out]`), e.g. a tied `lm_head`.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_dim, _) = weight.dims2()?;
        if let Some(b) = &bias {
            if b.dims() != [out_dim] {
                return Err(Error::shape("linear bias", &[out_dim], b.dims()));
            }
        }
        Ok(Linear { weight, bias })
    }

    /// One linear layer computing `layers` side by side: weights concatenated on the output
    /// dim (`[Σ out, in]`), outputs in the order given. `None` when any weight or bias is a
    /// training variable (a concatenated copy would not follow its updates) or when the layers
    /// disagree on `in` or on having a bias.
    ///
    /// Why: one `[rows, in] × [in, Σ out]` product packs the input once and splits the work
    /// over threads better than several narrower ones (q/k/v and gate/up in prefill).
    pub fn fuse(layers: &[&Linear]) -> Result<Option<Linear>> {
        let Some(first) = layers.first() else {
            return Ok(None);
        };
        let in_dim = first.weight.dim(1)?;
        let has_bias = first.bias.is_some();
        for l in layers {
            let tracked = l.weight.track_op() || l.bias.as_ref().is_some_and(|b| b.track_op());
            if tracked || l.weight.dim(1)? != in_dim || l.bias.is_some() != has_bias {
                return Ok(None);
            }
        }
        let ws: Vec<&Tensor> = layers.iter().map(|l| &l.weight).collect();
        let weight = Tensor::cat(&ws, 0)?;
        let bias = if has_bias {
            let bs: Vec<&Tensor> = layers.iter().filter_map(|l| l.bias.as_ref()).collect();
            Some(Tensor::cat(&bs, 0)?)
        } else {
            None
        };
        Ok(Some(Linear { weight, bias }))
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// # Shapes
    /// `x`: `[..., in]` → `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (out_dim, in_dim) = self.weight.dims2()?;
        let last = x.dim(D::Minus1)?;
        if last != in_dim {
            return Err(Error::invalid(
                "linear input",
                format!(
                    "last dim {last} != in_features {in_dim} (shape {:?})",
                    x.dims()
                ),
            ));
        }
        // One to a few rows (decoding) stream the weight through video-kernels' own kernel,
        // anything else is candle's matmul; both compute [..., in] · [in, out] (+ bias).
        let y = vidgen_video_kernels::linear(x, &self.weight, self.bias.as_ref())?;
        debug_assert_eq!(y.dim(D::Minus1)?, out_dim);
        Ok(y)
    }
}
