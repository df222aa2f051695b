//! Sinusoidal timestep embeddings (`Timesteps`) and their MLP (`TimestepEmbedding`).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, Result};

use crate::nn::{Activation, Linear};

/// diffusers' `get_timestep_embedding`, computed in f32 with torch's operation order:
///
/// ```text
/// freq_i = exp(−ln(max_period)·i / (half − shift)),  i = 0..half
/// emb    = [sin(t·freq), cos(t·freq)]     (flip_sin_to_cos → [cos, sin]); zero-padded if dim is odd
/// ```
///
/// # Shapes
/// `timesteps [N]` (any float or integer dtype) → `[N, dim]` f32.
pub fn timestep_embedding(
    timesteps: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
    scale: f64,
    max_period: f64,
) -> Result<Tensor> {
    let t = timesteps.to_dtype(DType::F32)?;
    let t = match t.rank() {
        0 => t.reshape(1)?,
        1 => t,
        _ => {
            return Err(Error::invalid(
                "timesteps",
                format!("expected a [N] tensor, found {:?}", timesteps.dims()),
            ))
        }
    };
    let tv = t.to_vec1::<f32>()?;
    let half = dim / 2;
    let neg_log = -(max_period.ln()) as f32;
    let denom = (half as f64 - downscale_freq_shift) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((neg_log * i as f32) / denom).exp())
        .collect();
    let mut out = Vec::with_capacity(tv.len() * dim);
    let scale = scale as f32;
    for &tt in &tv {
        let args: Vec<f32> = freqs.iter().map(|f| scale * (tt * f)).collect();
        let (first, second): (Vec<f32>, Vec<f32>) = if flip_sin_to_cos {
            (
                args.iter().map(|a| a.cos()).collect(),
                args.iter().map(|a| a.sin()).collect(),
            )
        } else {
            (
                args.iter().map(|a| a.sin()).collect(),
                args.iter().map(|a| a.cos()).collect(),
            )
        };
        out.extend(first);
        out.extend(second);
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Ok(Tensor::from_vec(out, (tv.len(), dim), timesteps.device())?)
}

/// diffusers' `Timesteps` module (no weights): a sinusoidal embedding of `num_channels`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timesteps {
    /// Output size.
    pub num_channels: usize,
    /// `[cos, sin]` instead of `[sin, cos]`.
    pub flip_sin_to_cos: bool,
    /// Subtracted from `half` in the frequency denominator (0 or 1 in diffusers models).
    pub downscale_freq_shift: f64,
    /// Multiplier of the arguments (1 everywhere in SD / SVD).
    pub scale: f64,
}

impl Timesteps {
    /// `Timesteps(num_channels, flip_sin_to_cos, downscale_freq_shift)` with scale 1.
    pub fn new(num_channels: usize, flip_sin_to_cos: bool, downscale_freq_shift: f64) -> Self {
        Self {
            num_channels,
            flip_sin_to_cos,
            downscale_freq_shift,
            scale: 1.0,
        }
    }

    /// Embeds timesteps (max period 10000).
    ///
    /// # Shapes
    /// `[N]` → `[N, num_channels]` f32.
    pub fn forward(&self, timesteps: &Tensor) -> Result<Tensor> {
        timestep_embedding(
            timesteps,
            self.num_channels,
            self.flip_sin_to_cos,
            self.downscale_freq_shift,
            self.scale,
            10000.0,
        )
    }

    /// Embeds `0, 1, …, n−1` (temporal positions), on `device`.
    ///
    /// # Shapes
    /// → `[n, num_channels]` f32.
    pub fn positions(&self, n: usize, device: &Device) -> Result<Tensor> {
        let t = Tensor::arange(0u32, n as u32, device)?;
        self.forward(&t)
    }
}

/// diffusers' `TimestepEmbedding`: `linear_2(act(linear_1(x)))` (keys `linear_1`, `linear_2`).
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    act: Activation,
}

impl TimestepEmbedding {
    /// `TimestepEmbedding(in_channels, time_embed_dim, act_fn, out_dim)`; `out_dim = None`
    /// means `time_embed_dim`.
    ///
    /// # Errors
    /// Missing / mis-shaped tensors.
    pub fn new(
        in_channels: usize,
        time_embed_dim: usize,
        out_dim: Option<usize>,
        act: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::new(in_channels, time_embed_dim, true, vb.pp("linear_1"))?,
            linear_2: Linear::new(
                time_embed_dim,
                out_dim.unwrap_or(time_embed_dim),
                true,
                vb.pp("linear_2"),
            )?,
            act,
        })
    }

    /// # Shapes
    /// `[N, in_channels]` → `[N, out_dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.linear_1.forward(x)?;
        let h = self.act.forward(&h)?;
        self.linear_2.forward(&h)
    }
}
