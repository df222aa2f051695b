//! The three AID adapters. Each is a bottleneck (`C → r → C`) added as a residual to video
//! hidden states `[B, C, T, H, W]`, with its up-projection initialised to zero so that a freshly
//! built adapter is exactly the identity.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result, VideoShape};
use vidgen_video_nn::{Conv3d, Conv3dConfig, Linear, MhaConfig, MultiHeadAttention};

/// Sizes shared by the adapters of one [`crate::AdapterSet`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AdapterConfig {
    /// Bottleneck width as a fraction of the block's channels: `r = max(1, round(C · ratio))`.
    /// Default 0.25 (the AIM / ST-Adapter bottleneck).
    #[serde(default = "d_ratio")]
    pub bottleneck_ratio: f64,
    /// Depthwise kernel `[kT, kH, kW]` of the short-term adapter; odd sizes ("same" padding).
    /// Default `[3, 3, 3]`.
    #[serde(default = "d_kernel")]
    pub short_term_kernel: [usize; 3],
    /// Head size of the long-term adapter's temporal attention: `heads = r / head_dim` when it
    /// divides `r`, else one head of size `r`. Default 64.
    #[serde(default = "d_head_dim")]
    pub long_term_head_dim: usize,
}

fn d_ratio() -> f64 {
    0.25
}
fn d_kernel() -> [usize; 3] {
    [3, 3, 3]
}
fn d_head_dim() -> usize {
    64
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self {
            bottleneck_ratio: d_ratio(),
            short_term_kernel: d_kernel(),
            long_term_head_dim: d_head_dim(),
        }
    }
}

impl AdapterConfig {
    /// The bottleneck width for `channels` input channels.
    pub fn bottleneck(&self, channels: usize) -> usize {
        ((channels as f64 * self.bottleneck_ratio).round() as usize).max(1)
    }

    /// Heads of the long-term adapter for bottleneck `r`.
    pub fn long_term_heads(&self, r: usize) -> usize {
        let hd = self.long_term_head_dim;
        if hd > 0 && r.is_multiple_of(hd) {
            r / hd
        } else {
            1
        }
    }

    /// Checks the fields.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.bottleneck_ratio.is_finite() && self.bottleneck_ratio > 0.0) {
            return Err(Error::config(
                "bottleneck_ratio",
                format!("must be a positive number, found {}", self.bottleneck_ratio),
            ));
        }
        if self.short_term_kernel.iter().any(|&k| k == 0 || k % 2 == 0) {
            return Err(Error::config(
                "short_term_kernel",
                format!(
                    "every size must be odd (same padding), found {:?}",
                    self.short_term_kernel
                ),
            ));
        }
        Ok(())
    }
}

fn check_video(what: &str, x: &Tensor, channels: usize) -> Result<VideoShape> {
    let s = VideoShape::of(x)?;
    if s.c != channels {
        return Err(Error::shape(
            what,
            &[s.b, channels, s.t, s.h, s.w],
            x.dims(),
        ));
    }
    Ok(s)
}

/// `[B, C, T, H, W]` → `[B, T, H, W, C]` so a `Linear` acts on channels.
fn channels_last(x: &Tensor) -> Result<Tensor> {
    Ok(x.permute((0, 2, 3, 4, 1))?)
}

/// `[B, T, H, W, C]` → `[B, C, T, H, W]`.
fn channels_first(x: &Tensor) -> Result<Tensor> {
    Ok(x.permute((0, 4, 1, 2, 3))?.contiguous()?)
}

/// A `Linear` with PyTorch's default init.
fn linear(i: usize, o: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::new(i, o, true, vb)
}

/// A `Linear` whose weight and bias start at zero (the adapters' up-projections).
fn zero_linear(i: usize, o: usize, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints((o, i), "weight", Init::Const(0.0))?;
    let b = vb.get_with_hints(o, "bias", Init::Const(0.0))?;
    Linear::from_weights(w, Some(b))
}

/// AID's spatial adapter: `x + up(GELU(down(x)))` applied at every pixel of every frame.
///
/// Keys: `down.{weight,bias}` (`[r, C]`, `[r]`), `up.{weight,bias}` (`[C, r]`, `[C]`, zero-init).
#[derive(Debug, Clone)]
pub struct SpatialAdapter {
    down: Linear,
    up: Linear,
    channels: usize,
}

impl SpatialAdapter {
    /// Builds the adapter for `channels` channels and bottleneck `r`.
    ///
    /// # Errors
    /// Zero sizes; missing / mis-shaped tensors in `vb`.
    pub fn new(channels: usize, r: usize, vb: VarBuilder) -> Result<Self> {
        if channels == 0 || r == 0 {
            return Err(Error::config("channels/bottleneck", "must be ≥ 1"));
        }
        Ok(Self {
            down: linear(channels, r, vb.pp("down"))?,
            up: zero_linear(r, channels, vb.pp("up"))?,
            channels,
        })
    }

    /// Applies the adapter.
    ///
    /// # Shapes
    /// `x [B, C, T, H, W]` → `[B, C, T, H, W]`.
    ///
    /// # Errors
    /// `x` not rank 5 or with another channel count.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_video("spatial adapter input", x, self.channels)?;
        let z = self.down.forward(&channels_last(x)?)?.gelu_erf()?;
        let z = channels_first(&self.up.forward(&z)?)?;
        Ok((x + z)?)
    }
}

/// AID's short-term temporal adapter: `x + up(dwconv3d(down(x)))`, a depthwise 3D convolution
/// (`groups = r`, "same" zero padding) mixing neighbouring frames and pixels in the bottleneck.
///
/// Keys: `down.*`, `conv.{weight,bias}` (`[r, 1, kT, kH, kW]`, `[r]`), `up.*` (zero-init).
#[derive(Debug, Clone)]
pub struct ShortTermTemporalAdapter {
    down: Linear,
    conv: Conv3d,
    up: Linear,
    channels: usize,
}

impl ShortTermTemporalAdapter {
    /// Builds the adapter for `channels` channels, bottleneck `r` and depthwise `kernel`
    /// (`[kT, kH, kW]`, odd sizes).
    ///
    /// # Errors
    /// Zero sizes, even kernel sizes; missing / mis-shaped tensors in `vb`.
    pub fn new(channels: usize, r: usize, kernel: [usize; 3], vb: VarBuilder) -> Result<Self> {
        if channels == 0 || r == 0 {
            return Err(Error::config("channels/bottleneck", "must be ≥ 1"));
        }
        if kernel.iter().any(|&k| k == 0 || k % 2 == 0) {
            return Err(Error::config(
                "short_term_kernel",
                format!("every size must be odd (same padding), found {kernel:?}"),
            ));
        }
        // Depthwise (groups = r), "same" zero padding; PyTorch's init (±1/√taps).
        let conv_cfg = Conv3dConfig {
            padding: [kernel[0] / 2, kernel[1] / 2, kernel[2] / 2],
            groups: r,
            ..Default::default()
        };
        Ok(Self {
            down: linear(channels, r, vb.pp("down"))?,
            conv: Conv3d::new(r, r, kernel, &conv_cfg, vb.pp("conv"))?,
            up: zero_linear(r, channels, vb.pp("up"))?,
            channels,
        })
    }

    /// Applies the adapter.
    ///
    /// # Shapes
    /// `x [B, C, T, H, W]` → `[B, C, T, H, W]` (bottleneck `[B, r, T, H, W]` inside).
    ///
    /// # Errors
    /// `x` not rank 5 or with another channel count.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_video("short-term adapter input", x, self.channels)?;
        let z = channels_first(&self.down.forward(&channels_last(x)?)?)?;
        let z = self.conv.forward(&z)?;
        let z = channels_first(&self.up.forward(&channels_last(&z)?)?)?;
        Ok((x + z)?)
    }
}

/// Fixed sinusoidal frame positions `[T, d]` (`[sin | cos]` halves, period base 10000), added to
/// the long-term adapter's sequences: attention alone is blind to frame order.
fn frame_positions(t: usize, d: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let half = d / 2;
    let mut v = vec![0f32; t * d];
    for p in 0..t {
        for i in 0..half {
            let freq = (-(10000f64.ln()) * i as f64 / half.max(1) as f64).exp();
            let a = p as f64 * freq;
            v[p * d + i] = a.sin() as f32;
            v[p * d + half + i] = a.cos() as f32;
        }
    }
    Ok(Tensor::from_vec(v, (t, d), dev)?.to_dtype(dtype)?)
}

/// AID's long-term temporal adapter: `x + up(attn_T(down(x)))`, self-attention over all frames
/// at each spatial position (sequences `[B·H·W, T, r]` from
/// [`VideoShape::to_time_sequences`]), with sinusoidal frame positions added before `q`/`k`/`v`.
///
/// Keys: `down.*`, `to_q`, `to_k`, `to_v`, `to_out` (`[r, r]` with bias), `up.*` (zero-init).
#[derive(Debug, Clone)]
pub struct LongTermTemporalAdapter {
    down: Linear,
    attn: MultiHeadAttention,
    up: Linear,
    channels: usize,
    r: usize,
}

impl LongTermTemporalAdapter {
    /// Builds the adapter for `channels` channels, bottleneck `r` and `heads` heads (dividing
    /// `r`).
    ///
    /// # Errors
    /// Zero sizes, `heads` not dividing `r`; missing / mis-shaped tensors in `vb`.
    pub fn new(channels: usize, r: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        if channels == 0 || r == 0 {
            return Err(Error::config("channels/bottleneck", "must be ≥ 1"));
        }
        if heads == 0 || !r.is_multiple_of(heads) {
            return Err(Error::config(
                "long_term_heads",
                format!("{heads} heads must be ≥ 1 and divide the bottleneck {r}"),
            ));
        }
        Ok(Self {
            down: linear(channels, r, vb.pp("down"))?,
            attn: MultiHeadAttention::new(
                &MhaConfig {
                    embed_dim: r,
                    num_heads: heads,
                    kv_dim: None,
                    qkv_bias: true,
                    out_bias: true,
                    names: ["to_q", "to_k", "to_v", "to_out"].map(String::from),
                    scale: None,
                },
                vb.clone(),
            )?,
            up: zero_linear(r, channels, vb.pp("up"))?,
            channels,
            r,
        })
    }

    /// Applies the adapter.
    ///
    /// # Shapes
    /// `x [B, C, T, H, W]` → `[B, C, T, H, W]`; inside, `[B·H·W, T, r]` sequences and
    /// `[B·H·W, heads, T, r/heads]` attention.
    ///
    /// # Errors
    /// `x` not rank 5 or with another channel count.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = check_video("long-term adapter input", x, self.channels)?;
        let (seq, shape) = VideoShape::to_time_sequences(x)?;
        let z = self.down.forward(&seq)?;
        let pos = frame_positions(s.t, self.r, z.dtype(), z.device())?;
        let z = z.broadcast_add(&pos)?;
        // [N, T, r] self-attention over frames (heads inside), then the zero-init up-projection.
        let a = self
            .up
            .forward(&self.attn.forward(&z, None, None, false)?)?;
        let z = VideoShape::from_time_sequences(&a, shape)?;
        Ok((x + z)?)
    }
}

/// Parameters of one adapter of each kind for `channels` channels (for counting without
/// building): `(spatial, short_term, long_term)`.
pub fn adapter_param_counts(cfg: &AdapterConfig, channels: usize) -> (usize, usize, usize) {
    let c = channels;
    let r = cfg.bottleneck(c);
    let taps: usize = cfg.short_term_kernel.iter().product();
    let down_up = (c * r + r) + (r * c + c);
    (down_up, down_up + r * taps + r, down_up + 4 * (r * r + r))
}
