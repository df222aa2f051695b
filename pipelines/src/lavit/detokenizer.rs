//! The video detokenizer: a spatio-temporal UNet (diffusers' SVD `UNetSpatioTemporalConditionModel`)
//! that generates a clip's latents from the keyframe and the decoded motion.
//!
//! Conditioning, as Video-LaVIT's `video_detokenizer.py` does, on both paths:
//! - **channel concat** (SVD style): the UNet input is `[noisy latents (C) | keyframe latents
//!   (C, repeated over the frames) | motion (2)]`, `2C + 2` channels (Video-LaVIT: `4 + 4 + 2`);
//! - **cross-attention**: each frame's spatial transformers attend to that frame's motion
//!   tokens (one per latent cell, `Linear(2 → D)` plus a learned position per cell;
//!   Video-LaVIT's condition encoder adds 12 transformer blocks on a `16 × 16` grid). The
//!   temporal transformers attend to the first frame's tokens, as diffusers' SVD UNet does
//!   (Video-LaVIT's attend per position to the 24-frame motion sequence).
//!
//! - **warped keyframe** (optional, [`DetokenizerConfig::warp`]; not in Video-LaVIT): the
//!   keyframe latents carried along the decoded motion's trajectories ([`warp_keyframe`]),
//!   `C` more concat channels between the keyframe and the motion. Video-LaVIT's detokenizer
//!   has to move the keyframe's content across the frame through attention alone; the
//!   miniature's lost the object's colour doing so, and the warp hands it the content where
//!   the motion says it went.
//!
//! The motion is the motion tokenizer's output (`[2, 24, 20, 36]`, tokenizer units) resized
//! bicubically to the latent grid and multiplied by `motion_scale` (Video-LaVIT divides by
//! 10; the miniature's slow synthetic motion is about 100× smaller than real footage, so its
//! tokenizer units are already scaled up — `MotionConfig::divisor` 0.02 — and its
//! `motion_scale` is 0.1). Latents are the keyframe tokenizer's continuous latents
//! times `latent_scale` (unit variance). Denoising is EDM (`samplers::EdmPrecond`,
//! `c_noise = ¼ ln σ` as SVD's UNet expects) with a Karras schedule and Euler steps; the
//! unconditional branch zeroes the keyframe latents, the motion channels and the motion
//! tokens, and guidance rises linearly over the frames (Video-LaVIT: 1 → 4).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_diffusion_unet3d::svd::{UNetSpatioTemporalConditionModel, UNetSpatioTemporalConfig};
use vidgen_samplers::{EdmPrecond, EdmSampler, EdmTraining, Solver};
use vidgen_video_core::{Conditioning, Denoiser, Error, Result};
use vidgen_video_nn::Linear;

/// The detokenizer's settings (`config.json` of its folder).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetokenizerConfig {
    /// The UNet's `config.json` (diffusers' `UNetSpatioTemporalConditionModel`); its
    /// `in_channels` must be `2 · latent_channels + 2`, `out_channels` `latent_channels`.
    pub unet: serde_json::Value,
    /// Latent channels (the keyframe tokenizer's code dimension).
    pub latent_channels: usize,
    /// Latent grid `[h, w]`.
    pub grid: [usize; 2],
    /// Frames per clip.
    pub frames: usize,
    /// Latents are the tokenizer's times this.
    pub latent_scale: f64,
    /// Motion (tokenizer units) times this.
    pub motion_scale: f64,
    /// EDM σ_data.
    pub sigma_data: f64,
    /// Sampling steps.
    pub steps: usize,
    /// Smallest σ of the schedule.
    pub sigma_min: f64,
    /// Largest σ.
    pub sigma_max: f64,
    /// Guidance on the first and the last frame (linear in between); `[1, 1]` = none.
    pub guidance: [f64; 2],
    /// SVD's added time ids (Video-LaVIT: fps 6, motion bucket 127, noise 0.02).
    pub time_ids: [f64; 3],
    /// Noise added to the keyframe pixels before encoding (0.02).
    pub noise_aug: f64,
    /// Also condition on the keyframe carried along the motion ([`warp_keyframe`]): latent
    /// cells per unit of the scaled motion, `[x, y]`. `None` (absent from older folders): off,
    /// Video-LaVIT's conditioning alone. See [`DetokenizerConfig::with_warp`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warp: Option<[f64; 2]>,
    /// With [`Self::warp`]: the warped keyframe fades in with the distance its trajectory
    /// carried it, reaching full strength at this many latent cells (0: no fade). Without the
    /// fade, a cell the object has left traces back to itself and shows the object where it
    /// was (the disocclusion of backward warping); faded, the warp holds only what moved.
    #[serde(default)]
    pub warp_fade: f64,
}

impl Default for DetokenizerConfig {
    fn default() -> Self {
        Self {
            unet: mini_unet_json(8, 32, &[32, 64]),
            latent_channels: 8,
            grid: [5, 9],
            frames: 24,
            latent_scale: 1.0,
            motion_scale: 50.0,
            sigma_data: 1.0,
            steps: 16,
            sigma_min: 0.02,
            sigma_max: 40.0,
            guidance: [1.0, 1.0],
            time_ids: [6.0, 127.0, 0.02],
            noise_aug: 0.02,
            warp: None,
            warp_fade: 0.0,
        }
    }
}

/// A small SVD UNet config: two levels (`CrossAttnDown`, `Down` / `Up`, `CrossAttnUp`), one
/// layer per block, `latent_channels` out and `2 · latent_channels + 2` in.
pub fn mini_unet_json(
    latent_channels: usize,
    cross: usize,
    channels: &[usize],
) -> serde_json::Value {
    let n = channels.len();
    let mut down = vec!["CrossAttnDownBlockSpatioTemporal"; n];
    down[n - 1] = "DownBlockSpatioTemporal";
    let mut up = vec!["CrossAttnUpBlockSpatioTemporal"; n];
    up[0] = "UpBlockSpatioTemporal";
    serde_json::json!({
        "_class_name": "UNetSpatioTemporalConditionModel",
        "in_channels": 2 * latent_channels + 2,
        "out_channels": latent_channels,
        "block_out_channels": channels,
        "down_block_types": down,
        "up_block_types": up,
        "layers_per_block": 1,
        "cross_attention_dim": cross,
        "num_attention_heads": channels.iter().map(|c| (c / 16).max(1)).collect::<Vec<_>>(),
        "transformer_layers_per_block": 1,
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 24,
        "num_frames": 24,
    })
}

impl DetokenizerConfig {
    /// The parsed UNet config, checked against the latent channels.
    ///
    /// # Errors
    /// A bad UNet config; channel counts that do not fit.
    pub fn unet_config(&self) -> Result<UNetSpatioTemporalConfig> {
        let u: UNetSpatioTemporalConfig = serde_json::from_value(self.unet.clone())
            .map_err(|e| Error::config("unet", e.to_string()))?;
        u.validate()?;
        let c = self.latent_channels;
        if u.in_channels != self.in_channels() || u.out_channels != c {
            return Err(Error::config(
                "unet.in_channels/out_channels",
                format!(
                    "{} in / {} out; {c} latent channels{} need {} in and {c} out",
                    u.in_channels,
                    u.out_channels,
                    if self.warp.is_some() {
                        " with the warped keyframe"
                    } else {
                        ""
                    },
                    self.in_channels()
                ),
            ));
        }
        if self.grid.contains(&0) || self.frames == 0 || self.steps == 0 {
            return Err(Error::config("grid/frames/steps", "must be ≥ 1"));
        }
        if let Some(k) = self.warp {
            if k.iter().any(|v| !v.is_finite()) {
                return Err(Error::config("warp", format!("{k:?}: must be finite")));
            }
        }
        if !(self.warp_fade.is_finite() && self.warp_fade >= 0.0) {
            return Err(Error::config(
                "warp_fade",
                format!("{}: must be a finite number ≥ 0", self.warp_fade),
            ));
        }
        Ok(u)
    }

    /// The UNet's input channels: noisy latents, keyframe latents, motion (`2C + 2`), plus the
    /// warped keyframe (`C`) when [`Self::warp`] is set.
    pub fn in_channels(&self) -> usize {
        let c = self.latent_channels;
        2 * c + 2 + if self.warp.is_some() { c } else { 0 }
    }

    /// Turns the warped-keyframe conditioning on (`cells_per_unit`, see [`Self::warp`]) or off
    /// (`None`) and sets the UNet's `in_channels` to match.
    pub fn with_warp(mut self, cells_per_unit: Option<[f64; 2]>) -> Self {
        self.warp = cells_per_unit;
        let n = self.in_channels();
        if let Some(o) = self.unet.as_object_mut() {
            o.insert("in_channels".into(), serde_json::json!(n));
        }
        self
    }

    fn cross_dim(&self) -> Result<usize> {
        match self.unet.get("cross_attention_dim") {
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| Error::config("unet.cross_attention_dim", "not an integer")),
            _ => Err(Error::config(
                "unet.cross_attention_dim",
                "the detokenizer needs one cross-attention width",
            )),
        }
    }
}

/// Per-frame motion tokens: one per latent cell, `Linear(2 → D)` plus a learned position.
#[derive(Debug, Clone)]
struct MotionEncoder {
    proj: Linear,
    pos: Tensor,
}

impl MotionEncoder {
    fn new(cells: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj: Linear::new(2, dim, true, vb.pp("proj"))?,
            pos: vb.get_with_hints(
                (cells, dim),
                "pos",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
        })
    }

    /// `[B, 2, F, h, w]` → `[B·F, h·w, D]`.
    fn forward(&self, motion: &Tensor) -> Result<Tensor> {
        let (b, c, f, h, w) = motion.dims5()?;
        let x = motion
            .permute((0, 2, 3, 4, 1))?
            .reshape((b * f, h * w, c))?
            .contiguous()?;
        Ok(self.proj.forward(&x)?.broadcast_add(&self.pos)?)
    }
}

/// The detokenizer model.
#[derive(Debug, Clone)]
pub struct VideoDetokenizer {
    cfg: DetokenizerConfig,
    unet: UNetSpatioTemporalConditionModel,
    motion: MotionEncoder,
    device: Device,
}

/// The detokenizer's weights file.
pub const DETOK_WEIGHTS: &str = "model.safetensors";

impl VideoDetokenizer {
    /// Builds the model (keys `unet.*`, `motion_encoder.{proj.weight, proj.bias, pos}`).
    ///
    /// # Errors
    /// A bad config; missing / mis-shaped tensors.
    pub fn new(cfg: &DetokenizerConfig, vb: VarBuilder) -> Result<Self> {
        let ucfg = cfg.unet_config()?;
        let mut unet = UNetSpatioTemporalConditionModel::new(&ucfg, vb.pp("unet"))?;
        unet.set_max_frames(cfg.frames.max(ucfg.num_frames));
        let motion = MotionEncoder::new(
            cfg.grid[0] * cfg.grid[1],
            cfg.cross_dim()?,
            vb.pp("motion_encoder"),
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            unet,
            motion,
            device: vb.device().clone(),
        })
    }

    /// Loads a folder (`config.json` + `model.safetensors`) strictly.
    ///
    /// # Errors
    /// Missing files or keys.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let md = vidgen_video_core::ModelDir::open(dir.as_ref())?;
        let cfg: DetokenizerConfig = md.config()?;
        let (m, _) = md.load(DType::F32, device, |vb| Self::new(&cfg, vb))?;
        Ok(m)
    }

    /// The settings.
    pub fn config(&self) -> &DetokenizerConfig {
        &self.cfg
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The UNet.
    pub fn unet(&self) -> &UNetSpatioTemporalConditionModel {
        &self.unet
    }

    /// The conditioning of a batch: concat `[B, C + 2, F, h, w]` (keyframe latents repeated,
    /// motion; `[B, 2C + 2, F, h, w]` with the warped keyframe between them when
    /// [`DetokenizerConfig::warp`] is set) and the per-frame motion tokens `[B·F, h·w, D]`.
    ///
    /// # Shapes
    /// `keyframe [B, C, h, w]` (scaled latents), `motion [B, 2, F, h, w]` (scaled, on the latent
    /// grid).
    ///
    /// # Errors
    /// Mismatched shapes.
    pub fn conditioning(&self, keyframe: &Tensor, motion: &Tensor) -> Result<Conditioning> {
        let (b, c, h, w) = keyframe.dims4()?;
        let (mb, mc, f, mh, mw) = motion.dims5()?;
        if (mb, mc, mh, mw) != (b, 2, h, w) || c != self.cfg.latent_channels {
            return Err(Error::shape(
                "motion",
                &[b, 2, self.cfg.frames, h, w],
                motion.dims(),
            ));
        }
        let kf = keyframe.unsqueeze(2)?.broadcast_as((b, c, f, h, w))?;
        let concat = match self.cfg.warp {
            Some(k) => {
                let warped = warp_keyframe(keyframe, motion, k, self.cfg.warp_fade)?;
                Tensor::cat(&[&kf, &warped, motion], 1)?
            }
            None => Tensor::cat(&[&kf, motion], 1)?,
        };
        let context = self.motion.forward(motion)?;
        Ok(Conditioning::none()
            .with_concat(concat)
            .with_context(context))
    }

    /// The raw network `F(x_in, c_noise, cond)`.
    ///
    /// # Shapes
    /// `x_in [B, C, F, h, w]`, `c_noise [B]` → `[B, C, F, h, w]`.
    fn network(&self, x: &Tensor, c_noise: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let concat = cond
            .concat
            .as_ref()
            .ok_or_else(|| Error::invalid("conditioning", "the detokenizer needs its concat"))?;
        let context = cond
            .context
            .as_ref()
            .ok_or_else(|| Error::invalid("conditioning", "the detokenizer needs its context"))?;
        let b = x.dim(0)?;
        // [B, 2C+2, F, h, w] → SVD's [B, F, 2C+2, h, w]
        let inp = Tensor::cat(&[x, &concat.to_dtype(x.dtype())?], 1)?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?;
        let ids: Vec<f32> = self
            .cfg
            .time_ids
            .iter()
            .cycle()
            .take(3 * b)
            .map(|&v| v as f32)
            .collect();
        let ids = Tensor::from_vec(ids, (b, 3), x.device())?;
        let out = self.unet.forward(&inp, c_noise, context, &ids, None)?;
        Ok(out.permute((0, 2, 1, 3, 4))?.contiguous()?)
    }

    /// The EDM denoiser `D(x; σ, cond)`.
    pub fn denoiser(&self) -> impl Denoiser + '_ {
        EdmPrecond::new(
            move |x: &Tensor, c: &Tensor, cond: &Conditioning| self.network(x, c, cond),
            self.cfg.sigma_data,
        )
    }

    /// Samples a clip's latents from initial noise.
    ///
    /// # Shapes
    /// `noise [B, C, F, h, w]` (unit normal), `keyframe [B, C, h, w]`, `motion [B, 2, F, h, w]`
    /// → latents `[B, C, F, h, w]` (scaled).
    ///
    /// # Errors
    /// Shape mismatches; non-finite values.
    pub fn sample(
        &self,
        noise: &Tensor,
        keyframe: &Tensor,
        motion: &Tensor,
        mut on_step: impl FnMut(usize, usize),
    ) -> Result<Tensor> {
        let cond = self.conditioning(keyframe, motion)?;
        let c = &self.cfg;
        let sampler = EdmSampler::karras(c.steps, c.sigma_min, c.sigma_max, 7.0, Solver::Euler)?;
        let x = (noise * sampler.init_noise_sigma())?;
        let [g0, g1] = c.guidance;
        let guided = (g0 - 1.0).abs() > 1e-9 || (g1 - 1.0).abs() > 1e-9;
        let den = self.denoiser();
        let frames = noise.dim(2)?;
        let scale = if guided {
            let v: Vec<f32> = (0..frames)
                .map(|i| {
                    let t = if frames > 1 {
                        i as f64 / (frames - 1) as f64
                    } else {
                        0.0
                    };
                    (g0 + (g1 - g0) * t) as f32
                })
                .collect();
            Some(Tensor::from_vec(v, (1, 1, frames, 1, 1), noise.device())?)
        } else {
            None
        };
        let uncond = if guided {
            Some(cond.without(vidgen_video_core::CondDrop {
                context: true,
                concat: true,
                added: false,
            })?)
        } else {
            None
        };
        struct Guided<'a, D: Denoiser> {
            den: &'a D,
            uncond: Option<&'a Conditioning>,
            scale: Option<&'a Tensor>,
        }
        impl<D: Denoiser> Denoiser for Guided<'_, D> {
            fn denoise(&self, x: &Tensor, sigma: &Tensor, cond: &Conditioning) -> Result<Tensor> {
                let c = self.den.denoise(x, sigma, cond)?;
                match (self.uncond, self.scale) {
                    (Some(u), Some(s)) => {
                        let u = self.den.denoise(x, sigma, u)?;
                        Ok((&u + (c - &u)?.broadcast_mul(s)?)?)
                    }
                    _ => Ok(c),
                }
            }
        }
        let g = Guided {
            den: &den,
            uncond: uncond.as_ref(),
            scale: scale.as_ref(),
        };
        let total = sampler.steps();
        let mut noise_src = ChaCha8Rng::seed_from_u64(0);
        vidgen_samplers::sample(&g, &x, &cond, &sampler, &mut noise_src, |s| {
            on_step(s.index, total)
        })
    }
}

/// The keyframe carried along the motion: frame `t`'s cell `p` takes the keyframe's value
/// (bilinear, clamped at the border) at the point reached by following the motion back from
/// `p` through frames `t, t − 1, …, 1` (`q ← q − k ⊙ m_s(q)`, `m_s` sampled bilinearly; the
/// motion of frame `s` is the content's displacement from frame `s − 1` to `s`, the sign of
/// FFmpeg's exported vectors and of block matching; frame 0 is the keyframe itself).
///
/// With `fade > 0` each cell is scaled by `min(1, |q − p| / fade)` (`|q − p|` the distance
/// its trajectory carried it, in cells): only what moved is kept, so a cell the object has
/// left (whose background the keyframe never saw) does not show the object again.
///
/// Why: the detokenizer otherwise has to move the keyframe's object across the frame through
/// its attention alone, and the miniature's did so losing the colour (70 % right at frame 0,
/// 48.5 % by frame 23; `lavit_colour_probe`). Following the trajectory back and sampling the
/// keyframe once (not warping frame by frame) blurs the latents once, not `t` times.
/// Computed on the host (`F² · h · w / 2` bilinear lookups per clip: conditioning, like the
/// tokenizers, not a model op), then moved back to the keyframe's device.
///
/// # Shapes
/// `keyframe [B, C, h, w]`, `motion [B, 2, F, h, w]` (the detokenizer's scaled motion, `dx`
/// then `dy`), `cells_per_unit` `[x, y]` latent cells per motion unit → `[B, C, F, h, w]`.
///
/// # Errors
/// Mismatched shapes; non-finite factors.
pub fn warp_keyframe(
    keyframe: &Tensor,
    motion: &Tensor,
    cells_per_unit: [f64; 2],
    fade: f64,
) -> Result<Tensor> {
    let (b, c, h, w) = keyframe.dims4()?;
    let (mb, mc, f, mh, mw) = motion.dims5()?;
    if (mb, mc, mh, mw) != (b, 2, h, w) {
        return Err(Error::shape("motion", &[b, 2, f, h, w], motion.dims()));
    }
    if cells_per_unit.iter().any(|v| !v.is_finite()) || !(fade.is_finite() && fade >= 0.0) {
        return Err(Error::invalid(
            "warp",
            format!("{cells_per_unit:?}, fade {fade}: must be finite (the fade ≥ 0)"),
        ));
    }
    let kv: Vec<f32> = keyframe
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1()?;
    let mv: Vec<f32> = motion
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1()?;
    // Bilinear sample of one `[h, w]` plane at (x, y) in cell units (cell centres at integers).
    let sample = |plane: &[f32], x: f32, y: f32| -> f32 {
        let x = x.clamp(0.0, (w - 1) as f32);
        let y = y.clamp(0.0, (h - 1) as f32);
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let top = plane[y0 * w + x0] * (1.0 - fx) + plane[y0 * w + x1] * fx;
        let bot = plane[y1 * w + x0] * (1.0 - fx) + plane[y1 * w + x1] * fx;
        top * (1.0 - fy) + bot * fy
    };
    let (kx, ky) = (cells_per_unit[0] as f32, cells_per_unit[1] as f32);
    let hw = h * w;
    let mut out = vec![0f32; b * c * f * hw];
    for bi in 0..b {
        let mo = &mv[bi * 2 * f * hw..(bi + 1) * 2 * f * hw];
        let kf = &kv[bi * c * hw..(bi + 1) * c * hw];
        for t in 0..f {
            for i in 0..h {
                for j in 0..w {
                    let (mut x, mut y) = (j as f32, i as f32);
                    for s in (1..=t).rev() {
                        let dx = sample(&mo[s * hw..(s + 1) * hw], x, y);
                        let dy = sample(&mo[(f + s) * hw..(f + s + 1) * hw], x, y);
                        x -= kx * dx;
                        y -= ky * dy;
                    }
                    let gain = if fade > 0.0 {
                        let moved = ((x - j as f32).powi(2) + (y - i as f32).powi(2)).sqrt();
                        (moved / fade as f32).min(1.0)
                    } else {
                        1.0
                    };
                    for ch in 0..c {
                        out[((bi * c + ch) * f + t) * hw + i * w + j] =
                            gain * sample(&kf[ch * hw..(ch + 1) * hw], x, y);
                    }
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, c, f, h, w), &Device::Cpu)?
        .to_device(keyframe.device())?
        .to_dtype(keyframe.dtype())?)
}

/// The warp factor of a pipeline: latent cells per unit of the detokenizer's motion, `[x, y]`.
///
/// A displacement of `d` pixels along `x` reaches the detokenizer as
/// `d / (W · std_x · divisor) · motion_scale` (Video-LaVIT's normalisation by the frame size
/// and the data's std, the tokenizer divisor, then [`DetokenizerConfig::motion_scale`]), and
/// spans `d · w / W` latent cells; so `[x, y]` = `grid · std · divisor / motion_scale` per
/// axis. Max-pooling and the bicubic resize to the latent grid make the field an estimate of
/// this, not an exact one (`lavit_warp_check` measures how well it carries the object).
pub fn warp_cells_per_unit(
    motion: &super::motion::MotionConfig,
    detok: &DetokenizerConfig,
) -> [f64; 2] {
    let std = motion.lavit().std;
    let per = f64::from(motion.divisor) / detok.motion_scale;
    [
        detok.grid[1] as f64 * f64::from(std[0]) * per,
        detok.grid[0] as f64 * f64::from(std[1]) * per,
    ]
}

/// Bicubic resize of motion `[B, 2, F, H, W]` to `[B, 2, F, h, w]` (PyTorch's
/// `interpolate(mode="bicubic", align_corners=False)`, per frame), times `scale`.
///
/// # Errors
/// Another rank.
pub fn motion_to_grid(motion: &Tensor, grid: [usize; 2], scale: f64) -> Result<Tensor> {
    let (b, c, f, h, w) = motion.dims5()?;
    let v: Vec<f32> = motion.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let (oh, ow) = (grid[0], grid[1]);
    let mut out = Vec::with_capacity(b * c * f * oh * ow);
    for p in 0..b * c * f {
        let r = vidgen_motion_codec::bicubic_resize(&v[p * h * w..(p + 1) * h * w], h, w, oh, ow)?;
        out.extend(r.into_iter().map(|x| x * scale as f32));
    }
    Ok(Tensor::from_vec(out, (b, c, f, oh, ow), motion.device())?)
}

/// One training example of the detokenizer.
#[derive(Clone, Debug)]
pub struct DetokExample {
    /// Scaled clip latents `[C, F, h, w]`.
    pub latents: Tensor,
    /// Scaled keyframe latents `[C, h, w]` (noise-augmented keyframe).
    pub keyframe: Tensor,
    /// Scaled motion on the latent grid `[2, F, h, w]` (as decoded by the motion tokenizer).
    pub motion: Tensor,
    /// Per-cell loss weight `[1, F, h, w]` (`None`: 1 everywhere). The miniature weights the
    /// cells its object covers: on a flat background, the plain loss is met by the background
    /// long before the object, and the model learns to ignore its conditioning.
    pub weight: Option<Tensor>,
}

/// Training settings of the detokenizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetokTrainConfig {
    /// Steps.
    pub steps: usize,
    /// Clips per step.
    pub batch: usize,
    /// Peak learning rate (50 warm-up steps, cosine to a tenth).
    pub lr: f64,
    /// Probability of dropping every condition (classifier-free guidance).
    pub cond_dropout: f64,
    /// EDM's `P_mean` of ln σ.
    pub p_mean: f64,
    /// EDM's `P_std`.
    pub p_std: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for DetokTrainConfig {
    fn default() -> Self {
        Self {
            steps: 1500,
            batch: 4,
            lr: 1e-3,
            cond_dropout: 0.1,
            p_mean: -0.4,
            p_std: 1.2,
            seed: 0,
        }
    }
}

/// A trained detokenizer and its variables.
pub struct TrainedDetokenizer {
    /// The model.
    pub model: VideoDetokenizer,
    /// Its variables.
    pub vars: VarMap,
    /// The loss of every step.
    pub losses: Vec<f32>,
}

impl std::fmt::Debug for TrainedDetokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrainedDetokenizer({:?})", self.model)
    }
}

/// Trains a detokenizer on examples with EDM's loss.
///
/// # Errors
/// No examples; a bad config; non-finite losses.
pub fn train_detokenizer(
    cfg: &DetokenizerConfig,
    t: &DetokTrainConfig,
    examples: &[DetokExample],
    device: &Device,
    mut on_step: impl FnMut(usize, f32),
) -> Result<TrainedDetokenizer> {
    if examples.is_empty() || t.batch == 0 {
        return Err(Error::invalid("examples", "need examples and a batch ≥ 1"));
    }
    let vars = VarMap::new();
    let model = VideoDetokenizer::new(cfg, VarBuilder::from_varmap(&vars, DType::F32, device))?;
    super::keyframe::seeded_init(&vars, t.seed)?;
    let mut opt = AdamW::new(
        vars.all_vars(),
        ParamsAdamW {
            lr: t.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let edm = EdmTraining {
        p_mean: t.p_mean,
        p_std: t.p_std,
        sigma_data: cfg.sigma_data,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(t.seed ^ 0x6465_746f);
    let mut losses = Vec::with_capacity(t.steps);
    let warm = 50usize.min(t.steps.max(1));
    for step in 0..t.steps {
        let picks: Vec<&DetokExample> = (0..t.batch)
            .map(|_| &examples[rng.random_range(0..examples.len())])
            .collect();
        let stack = |f: &dyn Fn(&DetokExample) -> &Tensor| -> Result<Tensor> {
            let v: Vec<Tensor> = picks.iter().map(|e| f(e).clone()).collect();
            Ok(Tensor::stack(&v, 0)?.to_device(device)?)
        };
        let x0 = stack(&|e| &e.latents)?;
        let mut kf = stack(&|e| &e.keyframe)?;
        let mut mo = stack(&|e| &e.motion)?;
        // Condition dropout per sample: zero keyframe, motion and motion tokens together.
        let keep: Vec<f32> = (0..t.batch)
            .map(|_| f32::from(u8::from(rng.random::<f64>() >= t.cond_dropout)))
            .collect();
        let keep = Tensor::from_vec(keep, t.batch, device)?;
        kf = kf.broadcast_mul(&keep.reshape((t.batch, 1, 1, 1))?)?;
        mo = mo.broadcast_mul(&keep.reshape((t.batch, 1, 1, 1, 1))?)?;
        let mut cond = model.conditioning(&kf, &mo)?;
        if let Some(ctx) = cond.context.take() {
            let f = mo.dim(2)?;
            let k = keep
                .unsqueeze(1)?
                .broadcast_as((t.batch, f))?
                .reshape((t.batch * f, 1, 1))?;
            cond.context = Some(ctx.broadcast_mul(&k)?);
        }
        let den = model.denoiser();
        // EDM's loss mean(λ(σ)·w·(D(x₀ + σ·n; σ) − x₀)²) with the examples' cell weights.
        let sigmas = edm.sample_sigmas(t.batch, &mut rng, device)?;
        let noise = vidgen_samplers::randn_like(&mut rng, &x0)?;
        let s5 = sigmas.reshape((t.batch, 1, 1, 1, 1))?;
        let x = (&x0 + noise.broadcast_mul(&s5)?)?;
        let d = den.denoise(&x, &sigmas, &cond)?;
        let lam = edm.loss_weights(&sigmas)?.reshape((t.batch, 1, 1, 1, 1))?;
        let mut err = (d - &x0)?.sqr()?.broadcast_mul(&lam)?;
        if picks.iter().any(|e| e.weight.is_some()) {
            let ws: Vec<Tensor> = picks
                .iter()
                .map(|e| match &e.weight {
                    Some(w) => Ok(w.clone()),
                    None => Ok(Tensor::ones(
                        (1, x0.dim(2)?, x0.dim(3)?, x0.dim(4)?),
                        DType::F32,
                        device,
                    )?),
                })
                .collect::<Result<_>>()?;
            let w = Tensor::stack(&ws, 0)?.to_device(device)?;
            err = err.broadcast_mul(&w)?;
        }
        let loss = err.mean_all()?;
        let lv = loss.to_scalar::<f32>()?;
        if !lv.is_finite() {
            return Err(Error::NonFinite {
                location: format!("detokenizer training loss at step {step}"),
                nan: usize::from(lv.is_nan()),
                inf: usize::from(lv.is_infinite()),
                total: 1,
            });
        }
        let lr = if step < warm {
            t.lr * (step + 1) as f64 / warm as f64
        } else {
            let p = (step - warm) as f64 / (t.steps - warm).max(1) as f64;
            t.lr / 10.0 + 0.45 * t.lr * (1.0 + (std::f64::consts::PI * p).cos())
        };
        opt.set_learning_rate(lr);
        // On a rayon worker: the backward's parallel ops are nested jobs there.
        vidgen_video_core::in_pool(|| opt.backward_step(&loss))?;
        on_step(step, lv);
        losses.push(lv);
    }
    Ok(TrainedDetokenizer {
        model,
        vars,
        losses,
    })
}

/// Writes a detokenizer folder (`config.json` + `model.safetensors` in `dtype`).
///
/// # Errors
/// Unwritable folder.
pub fn save_detokenizer(
    cfg: &DetokenizerConfig,
    vars: &VarMap,
    dir: &Path,
    dtype: DType,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let p = dir.join("config.json");
    let text =
        serde_json::to_string_pretty(cfg).map_err(|e| Error::invalid("config", e.to_string()))?;
    std::fs::write(&p, text + "\n").map_err(|source| Error::Io { path: p, source })?;
    super::keyframe::save_vars(vars, &dir.join(DETOK_WEIGHTS), dtype)
}

/// Parameter count of a var map.
pub fn count_params(vars: &VarMap) -> usize {
    vars.all_vars().iter().map(|v| v.elem_count()).sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn tiny() -> DetokenizerConfig {
        DetokenizerConfig {
            unet: mini_unet_json(4, 32, &[32, 32]),
            latent_channels: 4,
            grid: [3, 5],
            frames: 4,
            steps: 2,
            guidance: [1.0, 3.0],
            ..DetokenizerConfig::default()
        }
    }

    #[test]
    fn trains_samples_saves_and_loads() {
        let cfg = tiny();
        let dev = Device::Cpu;
        let ex = DetokExample {
            latents: Tensor::randn(0f32, 1.0, (4, 4, 3, 5), &dev).unwrap(),
            keyframe: Tensor::randn(0f32, 1.0, (4, 3, 5), &dev).unwrap(),
            motion: Tensor::randn(0f32, 1.0, (2, 4, 3, 5), &dev).unwrap(),
            weight: Some(Tensor::ones((1, 4, 3, 5), DType::F32, &dev).unwrap()),
        };
        let t = DetokTrainConfig {
            steps: 2,
            batch: 2,
            ..DetokTrainConfig::default()
        };
        let r = train_detokenizer(&cfg, &t, std::slice::from_ref(&ex), &dev, |_, _| {}).unwrap();
        assert_eq!(r.losses.len(), 2);
        let noise = Tensor::randn(0f32, 1.0, (1, 4, 4, 3, 5), &dev).unwrap();
        let kf = ex.keyframe.unsqueeze(0).unwrap();
        let mo = ex.motion.unsqueeze(0).unwrap();
        let out = r.model.sample(&noise, &kf, &mo, |_, _| {}).unwrap();
        assert_eq!(out.dims(), &[1, 4, 4, 3, 5]);
        let dir = tempfile::tempdir().unwrap();
        save_detokenizer(&cfg, &r.vars, dir.path(), DType::F32).unwrap();
        let back = VideoDetokenizer::from_pretrained(dir.path(), &dev).unwrap();
        let out2 = back.sample(&noise, &kf, &mo, |_, _| {}).unwrap();
        let d = max_diff(&out, &out2);
        assert!(d < 1e-4, "{d}");
        // With the warped keyframe: one more block of input channels, trains, saves, loads.
        let wcfg = tiny().with_warp(Some([0.5, 0.25]));
        assert_eq!(wcfg.unet_config().unwrap().in_channels, 3 * 4 + 2);
        let r = train_detokenizer(&wcfg, &t, std::slice::from_ref(&ex), &dev, |_, _| {}).unwrap();
        let out = r.model.sample(&noise, &kf, &mo, |_, _| {}).unwrap();
        save_detokenizer(&wcfg, &r.vars, dir.path(), DType::F32).unwrap();
        let back = VideoDetokenizer::from_pretrained(dir.path(), &dev).unwrap();
        assert_eq!(back.config().warp, Some([0.5, 0.25]));
        let out2 = back.sample(&noise, &kf, &mo, |_, _| {}).unwrap();
        let d = max_diff(&out, &out2);
        assert!(d < 1e-4, "{d}");
        // A warp factor that does not match in_channels is refused.
        let mut bad = tiny();
        bad.warp = Some([1.0, 1.0]);
        assert!(bad.unet_config().is_err());
        let m = Tensor::ones((1, 2, 4, 20, 36), DType::F32, &dev).unwrap();
        let g = motion_to_grid(&m, [5, 9], 2.0).unwrap();
        assert_eq!(g.dims(), &[1, 2, 4, 5, 9]);
        let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| (x - 2.0).abs() < 1e-5));
    }

    /// A keyframe with one hot cell; `[B, 2, F, h, w]` motion of `(dx, dy)` everywhere.
    fn hot_and_uniform(dx: f32, dy: f32, f: usize) -> (Tensor, Tensor) {
        let dev = Device::Cpu;
        let (h, w) = (5, 9);
        let mut k = vec![0f32; 2 * h * w];
        k[2 * w + 3] = 1.0; // channel 0, row 2, column 3
        k[h * w + 2 * w + 3] = -2.0; // channel 1, same cell
        let kf = Tensor::from_vec(k, (1, 2, h, w), &dev).unwrap();
        let mut m = vec![dx; f * h * w];
        m.extend(std::iter::repeat_n(dy, f * h * w));
        let mo = Tensor::from_vec(m, (1, 2, f, h, w), &dev).unwrap();
        (kf, mo)
    }

    #[test]
    fn warp_carries_the_keyframe_along_the_motion() {
        // Zero motion: every frame is the keyframe.
        let (kf, mo) = hot_and_uniform(0.0, 0.0, 4);
        let w = warp_keyframe(&kf, &mo, [0.5, 0.5], 0.0).unwrap();
        assert_eq!(w.dims(), &[1, 2, 4, 5, 9]);
        for t in 0..4 {
            let d = max_diff(&w.narrow(2, t, 1).unwrap().squeeze(2).unwrap(), &kf);
            assert!(d < 1e-6, "frame {t}: {d}");
        }
        // 2 units right and 2 down per frame at 0.5 cells per unit: the hot cell moves one
        // cell right and one down per frame (frame 0 has no motion of its own to follow).
        let (kf, mo) = hot_and_uniform(2.0, 2.0, 3);
        let w = warp_keyframe(&kf, &mo, [0.5, 0.5], 0.0).unwrap();
        let v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let at = |c: usize, t: usize, i: usize, j: usize| v[((c * 3) + t) * 45 + i * 9 + j];
        assert_eq!(at(0, 0, 2, 3), 1.0);
        assert_eq!(at(0, 1, 3, 4), 1.0);
        assert_eq!(at(0, 2, 4, 5), 1.0);
        assert_eq!(at(1, 2, 4, 5), -2.0);
        assert_eq!(at(0, 2, 2, 3), 0.0);
        // Half a cell: bilinear, split between the two cells.
        let (kf, mo) = hot_and_uniform(1.0, 0.0, 2);
        let w = warp_keyframe(&kf, &mo, [0.5, 0.5], 0.0).unwrap();
        let v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let at = |t: usize, i: usize, j: usize| v[t * 45 + i * 9 + j];
        assert!((at(1, 2, 3) - 0.5).abs() < 1e-6 && (at(1, 2, 4) - 0.5).abs() < 1e-6);
        // Bad shapes and factors are errors, not panics.
        let bad = Tensor::zeros((1, 2, 2, 4, 9), DType::F32, &Device::Cpu).unwrap();
        assert!(warp_keyframe(&kf, &bad, [0.5, 0.5], 0.0).is_err());
        assert!(warp_keyframe(&kf, &mo, [f64::NAN, 0.5], 0.0).is_err());
        assert!(warp_keyframe(&kf, &mo, [0.5, 0.5], -1.0).is_err());
        // Faded: a cell carried half a cell at fade 1 keeps half; one not carried, nothing.
        let (kf, mo) = hot_and_uniform(1.0, 0.0, 2);
        let w = warp_keyframe(&kf, &mo, [0.5, 0.5], 1.0).unwrap();
        let v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            (v[45 + 2 * 9 + 4] - 0.25).abs() < 1e-6,
            "{}",
            v[45 + 2 * 9 + 4]
        );
        assert_eq!(v[2 * 9 + 3], 0.0, "frame 0 moved nothing");
    }
}
