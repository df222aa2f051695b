//! The Video-LaVIT motion tokenizer: a spatio-temporal transformer encoder with conv3d
//! downsamplers, a 1024 × 32 VQ codebook, and the mirrored decoder.
//!
//! ```text
//! motion [B, 2, 24, 20, 36]
//!   → permute [B, T, H, W, 2] → embed (linear 2→D) + pos_spatial[H·W] + pos_temporal[T]
//!   → for each stride s in (1,2,2), (2,1,1), (2,1,1), (2,2,2):
//!        depth × block (temporal attention, spatial attention, MLP; pre-LN, residual)
//!        down: conv3d D→D, kernel 3, padding 1, stride s        [B, D, T', H', W']
//!   → norm → to_code (linear D→32)                               [B, 3, 5, 9, 32]
//!   → nearest code of 1024 (vq-tokenizer)                        ids [B, 3, 5, 9] = 135 tokens
//! decoder: lookup → from_code (32→D) + positions → for each stride reversed:
//!        up: nearest ×s then conv3d D→D k3 p1, depth × block
//!   → norm → out (linear D→2) → crop                             [B, 2, 24, 20, 36]
//! ```
//!
//! The layers are video-nn's ([`Linear`], [`LayerNorm`] with ε = 1e-6, [`Conv3d`], exact
//! GELU); attention is `video_kernels::attention` over a fused `qkv` projection.
//!
//! # Building and loading
//! One constructor, [`MotionTokenizer::new`]`(&cfg, vb)`, serves every source of weights:
//! [`MotionTokenizer::from_pretrained`] (a folder through `vidgen_video_core::ModelDir`, with a
//! `LoadReport`), [`MotionTokenizer::random`] (a seeded ChaCha8 backend, ViT-style init), or
//! any `VarBuilder` (a `VarMap` for training). [`MotionTokenizer::save`] writes exactly the
//! tensors `new` asked for, under the same keys, so a saved (trained) tokenizer loads back.
//!
//! # Checkpoint keys
//! `D` = `hidden`, `r` = `mlp_ratio`, `(T, H, W)` = `(frames, height, width)`, `(t, h, w)` =
//! [`MotionTokenizerConfig::code_dims`]; `i` runs over the stages (the decoder's stage `i`
//! mirrors the encoder's), `j` over the stage's depth ([`MotionTokenizerConfig::depth_of`]); every `*.weight` / `*.bias` pair is PyTorch's
//! layout (`Linear` `[out, in]`, `Conv3d` `[out, in, 3, 3, 3]`).
//!
//! | key | shape |
//! |---|---|
//! | `encoder.embed.{weight,bias}` | `[D, in_channels]`, `[D]` |
//! | `encoder.pos_spatial`, `encoder.pos_temporal` | `[H·W, D]`, `[T, D]` |
//! | `{encoder,decoder}.stages.{i}.blocks.{j}.{norm_t,norm_s,norm_mlp}.{weight,bias}` | `[D]` |
//! | `{encoder,decoder}.stages.{i}.blocks.{j}.{attn_t,attn_s}.qkv.{weight,bias}` | `[3D, D]`, `[3D]` (rows q, k, v; heads contiguous in each) |
//! | `{encoder,decoder}.stages.{i}.blocks.{j}.{attn_t,attn_s}.proj.{weight,bias}` | `[D, D]`, `[D]` |
//! | `{encoder,decoder}.stages.{i}.blocks.{j}.mlp.fc1.{weight,bias}` | `[r·D, D]`, `[r·D]` |
//! | `{encoder,decoder}.stages.{i}.blocks.{j}.mlp.fc2.{weight,bias}` | `[D, r·D]`, `[D]` |
//! | `encoder.stages.{i}.down.{weight,bias}` (stride `strides[i]`) | `[D, D, 3, 3, 3]`, `[D]` |
//! | `decoder.stages.{i}.up.{weight,bias}` (stride 1, after nearest ×`strides[i]`) | `[D, D, 3, 3, 3]`, `[D]` |
//! | `encoder.norm.{weight,bias}`, `decoder.norm.{weight,bias}` | `[D]` |
//! | `encoder.to_code.{weight,bias}` | `[code_dim, D]`, `[code_dim]` |
//! | `quantize.embedding.weight` | `[num_codes, code_dim]` |
//! | `decoder.from_code.{weight,bias}` | `[D, code_dim]`, `[D]` |
//! | `decoder.pos_spatial`, `decoder.pos_temporal` | `[h·w, D]`, `[t, D]` |
//! | `decoder.out.{weight,bias}` | `[in_channels, D]`, `[in_channels]` |

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Codec, CodecStrides, Error, LoadReport, ModelDir, Result, TokenGrid};
use vidgen_video_kernels::{attention, AttentionOpts};
use vidgen_video_nn::{Activation, Conv3d, Conv3dConfig, LayerNorm, Linear};
use vidgen_vq_tokenizer::{QuantizerConfig, VectorQuantizer};

/// Sizes of a [`MotionTokenizer`]; the defaults give Video-LaVIT's token layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MotionTokenizerConfig {
    /// Motion channels (2: dx, dy).
    pub in_channels: usize,
    /// Frames per clip (24).
    pub frames: usize,
    /// Grid height (20).
    pub height: usize,
    /// Grid width (36).
    pub width: usize,
    /// Transformer width `D`.
    pub hidden: usize,
    /// Attention heads (`hidden` must be a multiple).
    pub heads: usize,
    /// Transformer blocks per stage.
    pub depth: usize,
    /// Blocks of each stage when they differ (`stage_depths[i]` for stage `i`, encoder and its
    /// mirror in the decoder); empty (the default): `depth` for every stage. A miniature can
    /// leave the full-resolution stage (`24 × 20 × 36` positions, 720-token spatial attention)
    /// without blocks and keep them in the downsampled stages.
    pub stage_depths: Vec<usize>,
    /// MLP hidden size as a multiple of `hidden`.
    pub mlp_ratio: usize,
    /// Downsampler strides `[t, h, w]`, one stage each.
    pub strides: Vec<[usize; 3]>,
    /// Codebook size (1024).
    pub num_codes: usize,
    /// Code dimension (32).
    pub code_dim: usize,
}

impl Default for MotionTokenizerConfig {
    fn default() -> Self {
        Self {
            in_channels: 2,
            frames: 24,
            height: 20,
            width: 36,
            hidden: 256,
            heads: 4,
            depth: 1,
            stage_depths: Vec::new(),
            mlp_ratio: 4,
            strides: vec![[1, 2, 2], [2, 1, 1], [2, 1, 1], [2, 2, 2]],
            num_codes: 1024,
            code_dim: 32,
        }
    }
}

impl MotionTokenizerConfig {
    /// Checks every size.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let pos = [
            ("in_channels", self.in_channels),
            ("frames", self.frames),
            ("height", self.height),
            ("width", self.width),
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("mlp_ratio", self.mlp_ratio),
            ("num_codes", self.num_codes),
            ("code_dim", self.code_dim),
        ];
        for (name, v) in pos {
            if v == 0 {
                return Err(Error::config(name, "must be ≥ 1"));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(Error::config(
                "heads",
                format!(
                    "hidden = {} is not a multiple of heads = {}",
                    self.hidden, self.heads
                ),
            ));
        }
        if !self.stage_depths.is_empty() && self.stage_depths.len() != self.strides.len() {
            return Err(Error::config(
                "stage_depths",
                format!(
                    "{} entries for {} stages (leave it empty to use depth everywhere)",
                    self.stage_depths.len(),
                    self.strides.len()
                ),
            ));
        }
        for (i, s) in self.strides.iter().enumerate() {
            if s.contains(&0) {
                return Err(Error::config(
                    format!("strides[{i}]"),
                    "must be ≥ 1 per dim",
                ));
            }
        }
        Ok(())
    }

    /// Transformer blocks of stage `i` (`stage_depths[i]`, else `depth`).
    pub fn depth_of(&self, i: usize) -> usize {
        self.stage_depths.get(i).copied().unwrap_or(self.depth)
    }

    /// The code grid `(t, h, w)` (each stage: `ceil(n / s)`, as a kernel-3, padding-1 conv).
    pub fn code_dims(&self) -> (usize, usize, usize) {
        let mut d = [self.frames, self.height, self.width];
        for s in &self.strides {
            for k in 0..3 {
                d[k] = d[k].div_ceil(s[k]);
            }
        }
        (d[0], d[1], d[2])
    }

    /// The sizes `(t, h, w)` before each stage, plus the final one.
    fn stage_dims(&self) -> Vec<[usize; 3]> {
        let mut d = [self.frames, self.height, self.width];
        let mut out = vec![d];
        for s in &self.strides {
            for k in 0..3 {
                d[k] = d[k].div_ceil(s[k]);
            }
            out.push(d);
        }
        out
    }
}

/// The key of the codebook.
const CODEBOOK_KEY: &str = "quantize.embedding.weight";

/// Layer-norm ε of every norm in the tokenizer.
const LN_EPS: f64 = 1e-6;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the data is intact.
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Random weights for [`MotionTokenizer::random`]: one ChaCha8 stream, drawn in the order the
/// model asks for its tensors (so a seed always gives the same weights), ViT-style whatever
/// the layers' hints: linear weights and positions `N(0, 0.02)`, conv weights
/// `N(0, 1/fan_in)`, norm weights 1, biases 0, the codebook `U(±1/K)`.
struct VitInit {
    rng: Mutex<ChaCha8Rng>,
}

impl SimpleBackend for VitInit {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = s.dims();
        let n = s.elem_count();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        enum Draw {
            Const(f32),
            Normal(f64),
            Uniform(f64),
        }
        let draw = if name == CODEBOOK_KEY {
            Draw::Uniform(1.0 / dims.first().copied().unwrap_or(1).max(1) as f64)
        } else {
            match (leaf, dims.len()) {
                ("bias", _) => Draw::Const(0.0),
                ("weight", 1) => Draw::Const(1.0),
                ("weight", 5) => {
                    let fan_in: usize = dims[1..].iter().product();
                    Draw::Normal(1.0 / (fan_in.max(1) as f64).sqrt())
                }
                _ => Draw::Normal(0.02),
            }
        };
        let mut rng = lock(&self.rng);
        let data: Vec<f32> = match draw {
            Draw::Const(c) => vec![c; n],
            Draw::Normal(std) => {
                let d = Normal::new(0.0, std).map_err(candle_core::Error::wrap)?;
                (0..n).map(|_| d.sample(&mut *rng) as f32).collect()
            }
            Draw::Uniform(b) => (0..n).map(|_| rng.random_range(-b..b) as f32).collect(),
        };
        Tensor::from_vec(data, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!(
            "random init needs a shape for `{name}`"
        )))
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

fn linear(i: usize, o: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::new(i, o, true, vb)
}

fn layer_norm(d: usize, vb: VarBuilder) -> Result<LayerNorm> {
    LayerNorm::new(d, LN_EPS, true, vb)
}

/// Multi-head self-attention with timm's fused `qkv` projection (`[3D, D]`) and `proj`.
struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    fn new(d: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            qkv: linear(d, 3 * d, vb.pp("qkv"))?,
            proj: linear(d, d, vb.pp("proj"))?,
            heads,
        })
    }

    /// `[N, L, D]` → `[N, L, D]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, l, d) = x.dims3()?;
        let hd = d / self.heads;
        // (N, L, 3, heads, hd) → 3 × (N, heads, L, hd)
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((n, l, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let o = attention(&q, &k, &v, &AttentionOpts::default())?;
        let o = o.transpose(1, 2)?.reshape((n, l, d))?;
        self.proj.forward(&o)
    }
}

/// Divided space-time attention block (temporal, then spatial, then MLP; pre-LN).
struct Block {
    norm_t: LayerNorm,
    attn_t: Attention,
    norm_s: LayerNorm,
    attn_s: Attention,
    norm_mlp: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn new(cfg: &MotionTokenizerConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden;
        Ok(Self {
            norm_t: layer_norm(d, vb.pp("norm_t"))?,
            attn_t: Attention::new(d, cfg.heads, vb.pp("attn_t"))?,
            norm_s: layer_norm(d, vb.pp("norm_s"))?,
            attn_s: Attention::new(d, cfg.heads, vb.pp("attn_s"))?,
            norm_mlp: layer_norm(d, vb.pp("norm_mlp"))?,
            fc1: linear(d, d * cfg.mlp_ratio, vb.pp("mlp.fc1"))?,
            fc2: linear(d * cfg.mlp_ratio, d, vb.pp("mlp.fc2"))?,
        })
    }

    /// `x [B, T, H, W, D]` → same.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h, w, d) = x.dims5()?;
        // Temporal: sequences over T at each (b, h, w).
        let xt = self
            .norm_t
            .forward(x)?
            .permute((0, 2, 3, 1, 4))?
            .reshape((b * h * w, t, d))?;
        let yt = self
            .attn_t
            .forward(&xt)?
            .reshape((b, h, w, t, d))?
            .permute((0, 3, 1, 2, 4))?;
        let x = (x + yt)?;
        // Spatial: sequences over H·W at each (b, t).
        let xs = self.norm_s.forward(&x)?.reshape((b * t, h * w, d))?;
        let ys = self.attn_s.forward(&xs)?.reshape((b, t, h, w, d))?;
        let x = (x + ys)?;
        let hidden = Activation::Gelu.forward(&self.fc1.forward(&self.norm_mlp.forward(&x)?)?)?;
        let m = self.fc2.forward(&hidden)?;
        Ok((x + m)?)
    }
}

/// The kernel-3, padding-1 conv3d of a stage.
fn conv(d: usize, stride: [usize; 3], vb: VarBuilder) -> Result<Conv3d> {
    let cfg = Conv3dConfig {
        stride,
        padding: [1, 1, 1],
        ..Conv3dConfig::default()
    };
    Conv3d::new(d, d, [3, 3, 3], &cfg, vb)
}

/// Applies a conv3d to `[B, T, H, W, D]` (channels-last) and returns channels-last.
fn conv_cl(c: &Conv3d, x: &Tensor) -> Result<Tensor> {
    let y = c.forward(&x.permute((0, 4, 1, 2, 3))?.contiguous()?)?;
    Ok(y.permute((0, 2, 3, 4, 1))?.contiguous()?)
}

/// Nearest-neighbour upsampling of `[B, T, H, W, D]` by `s` per dim.
fn upsample(x: &Tensor, s: [usize; 3]) -> Result<Tensor> {
    let mut x = x.clone();
    for (axis, &f) in s.iter().enumerate() {
        if f == 1 {
            continue;
        }
        let dim = axis + 1;
        let mut shape = x.dims().to_vec();
        let mut rep = shape.clone();
        rep.insert(dim + 1, f);
        x = x.unsqueeze(dim + 1)?.broadcast_as(rep)?.contiguous()?;
        shape[dim] *= f;
        x = x.reshape(shape)?;
    }
    Ok(x)
}

/// Learned spatial (`[H·W, D]`) and temporal (`[T, D]`) position tables.
struct Positions {
    pos_spatial: Tensor,
    pos_temporal: Tensor,
}

impl Positions {
    fn new(d: usize, dims: [usize; 3], vb: &VarBuilder) -> Result<Self> {
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        Ok(Self {
            pos_spatial: vb.get_with_hints((dims[1] * dims[2], d), "pos_spatial", init)?,
            pos_temporal: vb.get_with_hints((dims[0], d), "pos_temporal", init)?,
        })
    }

    /// Adds both to `[B, T, H, W, D]`.
    fn add(&self, x: &Tensor) -> Result<Tensor> {
        let (_, t, h, w, d) = x.dims5()?;
        let s = self.pos_spatial.reshape((1, 1, h, w, d))?;
        let tt = self.pos_temporal.reshape((1, t, 1, 1, d))?;
        Ok(x.broadcast_add(&s)?.broadcast_add(&tt)?)
    }
}

struct Stage {
    blocks: Vec<Block>,
    conv: Conv3d,
}

/// Video-LaVIT's motion tokenizer; see the module docs for the architecture and the
/// checkpoint keys.
pub struct MotionTokenizer {
    cfg: MotionTokenizerConfig,
    dtype: DType,
    enc_embed: Linear,
    enc_pos: Positions,
    enc_stages: Vec<Stage>,
    enc_norm: LayerNorm,
    to_code: Linear,
    quantizer: VectorQuantizer,
    from_code: Linear,
    dec_pos: Positions,
    dec_stages: Vec<Stage>,
    dec_norm: LayerNorm,
    dec_out: Linear,
    tensors: Vec<(String, Tensor)>,
}

impl std::fmt::Debug for MotionTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MotionTokenizer({:?}, {:?}, {} tensors)",
            self.cfg,
            self.dtype,
            self.tensors.len()
        )
    }
}

impl MotionTokenizer {
    /// Builds the tokenizer from `vb` (keys as in the module docs, relative to `vb`'s prefix).
    /// The model computes in `vb`'s dtype (f32 accumulation in the layers for f16 / bf16);
    /// the codebook search is in f32.
    ///
    /// # Errors
    /// A bad config field ([`Error::BadConfig`]); a missing or mis-shaped tensor.
    pub fn new(cfg: &MotionTokenizerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let dtype = vb.dtype();
        let (vb, rec) = vidgen_video_nn::record::recording(vb);
        // The order of the requests below is the order of `random`'s draws: keep it.
        let d = cfg.hidden;
        let dims = cfg.stage_dims();
        let enc = vb.pp("encoder");
        let enc_embed = linear(cfg.in_channels, d, enc.pp("embed"))?;
        let enc_pos = Positions::new(d, dims[0], &enc)?;
        let mut enc_stages = Vec::new();
        for (i, s) in cfg.strides.iter().enumerate() {
            let sp = enc.pp(format!("stages.{i}"));
            let blocks = (0..cfg.depth_of(i))
                .map(|j| Block::new(cfg, sp.pp(format!("blocks.{j}"))))
                .collect::<Result<_>>()?;
            enc_stages.push(Stage {
                blocks,
                conv: conv(d, *s, sp.pp("down"))?,
            });
        }
        let enc_norm = layer_norm(d, enc.pp("norm"))?;
        let to_code = linear(d, cfg.code_dim, enc.pp("to_code"))?;
        let bound = 1.0 / cfg.num_codes as f64;
        let codebook = vb.get_with_hints(
            (cfg.num_codes, cfg.code_dim),
            CODEBOOK_KEY,
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let quantizer = VectorQuantizer::from_codebook(
            &QuantizerConfig::new(cfg.num_codes, cfg.code_dim),
            codebook.to_dtype(DType::F32)?,
        )?;
        let dec = vb.pp("decoder");
        let from_code = linear(cfg.code_dim, d, dec.pp("from_code"))?;
        let dec_pos = Positions::new(d, dims[dims.len() - 1], &dec)?;
        let mut dec_stages = Vec::new();
        for i in (0..cfg.strides.len()).rev() {
            let sp = dec.pp(format!("stages.{i}"));
            let conv = conv(d, [1, 1, 1], sp.pp("up"))?;
            let blocks = (0..cfg.depth_of(i))
                .map(|j| Block::new(cfg, sp.pp(format!("blocks.{j}"))))
                .collect::<Result<_>>()?;
            dec_stages.push(Stage { blocks, conv });
        }
        let dec_norm = layer_norm(d, dec.pp("norm"))?;
        let dec_out = linear(d, cfg.in_channels, dec.pp("out"))?;
        let tensors = rec.tensors();
        Ok(Self {
            cfg: cfg.clone(),
            dtype,
            enc_embed,
            enc_pos,
            enc_stages,
            enc_norm,
            to_code,
            quantizer,
            from_code,
            dec_pos,
            dec_stages,
            dec_norm,
            dec_out,
            tensors,
        })
    }

    /// A randomly initialised f32 tokenizer, reproducible from `seed`: [`MotionTokenizer::new`]
    /// over a builder that draws every tensor from one ChaCha8 stream seeded with `seed`, in
    /// construction order, ViT-style (linear weights and positions `N(0, 0.02)`, conv weights
    /// `N(0, 1/fan_in)`, norm weights 1, biases 0, codebook `U(±1/K)`).
    ///
    /// # Errors
    /// A bad config field.
    pub fn random(cfg: &MotionTokenizerConfig, seed: u64, device: &Device) -> Result<Self> {
        let backend = VitInit {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        };
        Self::new(
            cfg,
            VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone()),
        )
    }

    /// Loads a folder with `config.json` ([`MotionTokenizerConfig`]) and `model.safetensors`
    /// (or a transformers-style sharded index), as written by [`MotionTokenizer::save`],
    /// strictly: every key `new` needs must be present with its shape. Keys the model does not
    /// use are listed in the report's `unused`, not an error (as every `from_pretrained`).
    /// Weights are converted to `dtype`.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing folder / file, [`Error::BadConfig`] for a bad config field
    /// (named, with the file), [`Error::Malformed`] for an invalid safetensors file,
    /// [`Error::MissingTensor`] / [`Error::ShapeMismatch`] / [`Error::Load`] naming the keys.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let md = ModelDir::open(dir.as_ref())?;
        let cfg: MotionTokenizerConfig = md.config()?;
        md.load(dtype, device, |vb| Self::new(&cfg, vb))
    }

    /// The configuration.
    pub fn config(&self) -> &MotionTokenizerConfig {
        &self.cfg
    }

    /// The dtype the model computes in (its weights').
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The quantiser (1024 × 32 codebook by default).
    pub fn quantizer(&self) -> &VectorQuantizer {
        &self.quantizer
    }

    /// Number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.tensors.iter().map(|(_, t)| t.elem_count()).sum()
    }

    /// Every parameter under its checkpoint key, in construction order (the tensors the
    /// builder handed out: with a `VarMap` they are its variables, so they follow training).
    pub fn named_tensors(&self) -> &[(String, Tensor)] {
        &self.tensors
    }

    /// Writes `config.json` and `model.safetensors` (the keys of
    /// [`MotionTokenizer::named_tensors`], in the model's dtype) into the folder `dir`
    /// (created if needed); [`MotionTokenizer::from_pretrained`] reads it back.
    ///
    /// # Errors
    /// [`Error::Io`] when the folder or files cannot be written.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let cfg_path = dir.join("config.json");
        let json = serde_json::to_string_pretty(&self.cfg)
            .map_err(|e| Error::invalid("config", e.to_string()))?;
        std::fs::write(&cfg_path, json).map_err(io(&cfg_path))?;
        let map: HashMap<String, Tensor> = self.tensors.iter().cloned().collect();
        let st = dir.join("model.safetensors");
        candle_core::safetensors::save(&map, &st).map_err(|e| Error::Io {
            path: st.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(())
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let c = &self.cfg;
        let want = [c.in_channels, c.frames, c.height, c.width];
        match x.dims() {
            [_, rest @ ..] if rest == want => Ok(()),
            d => Err(Error::shape(
                "motion",
                &[0, want[0], want[1], want[2], want[3]],
                d,
            )),
        }
    }

    /// The continuous (pre-quantisation) codes, f32 whatever the model's dtype.
    ///
    /// # Shapes
    /// `motion [B, 2, T, H, W]` (the preprocessed motion ÷ 10) → `[B, t, h, w, code_dim]`
    /// (`3 × 5 × 9` for the defaults).
    ///
    /// # Errors
    /// A wrong input shape; [`Error::NonFinite`] when the codes hold NaN / Inf (location
    /// `motion tokenizer encoder output`).
    pub fn encode_continuous(&self, motion: &Tensor) -> Result<Tensor> {
        self.check_input(motion)?;
        let x = motion
            .to_dtype(self.dtype)?
            .permute((0, 2, 3, 4, 1))?
            .contiguous()?;
        let mut x = self.enc_pos.add(&self.enc_embed.forward(&x)?)?;
        for st in &self.enc_stages {
            for b in &st.blocks {
                x = b.forward(&x)?;
            }
            x = conv_cl(&st.conv, &x)?;
        }
        let z = self
            .to_code
            .forward(&self.enc_norm.forward(&x)?)?
            .to_dtype(DType::F32)?;
        vidgen_video_core::check_finite(&z, "motion tokenizer encoder output")?;
        Ok(z)
    }

    /// Decodes continuous or looked-up codes into f32 motion.
    ///
    /// # Shapes
    /// `codes [B, t, h, w, code_dim]` → motion `[B, 2, T, H, W]`.
    ///
    /// # Errors
    /// A code grid of another size than [`MotionTokenizerConfig::code_dims`];
    /// [`Error::NonFinite`] when the output holds NaN / Inf (location
    /// `motion tokenizer decoder output`).
    pub fn decode_continuous(&self, codes: &Tensor) -> Result<Tensor> {
        let (t, h, w) = self.cfg.code_dims();
        let dims = codes.dims();
        if dims.len() != 5 || dims[1..] != [t, h, w, self.cfg.code_dim] {
            return Err(Error::shape(
                "codes",
                &[0, t, h, w, self.cfg.code_dim],
                dims,
            ));
        }
        let sd = self.cfg.stage_dims();
        let codes = codes.to_dtype(self.dtype)?;
        let mut x = self.dec_pos.add(&self.from_code.forward(&codes)?)?;
        for (k, (i, s)) in self.cfg.strides.iter().enumerate().rev().enumerate() {
            let st = &self.dec_stages[k];
            x = upsample(&x, *s)?;
            // Crop to the size this stage had in the encoder (ceil division may overshoot).
            let target = sd[i];
            for (a, &n) in target.iter().enumerate() {
                if x.dim(a + 1)? > n {
                    x = x.narrow(a + 1, 0, n)?;
                }
            }
            x = conv_cl(&st.conv, &x.contiguous()?)?;
            for b in &st.blocks {
                x = b.forward(&x)?;
            }
        }
        let y = self.dec_out.forward(&self.dec_norm.forward(&x)?)?;
        let y = y
            .permute((0, 4, 1, 2, 3))?
            .to_dtype(DType::F32)?
            .contiguous()?;
        vidgen_video_core::check_finite(&y, "motion tokenizer decoder output")?;
        Ok(y)
    }

    /// Token ids of a batch of motion clips.
    ///
    /// # Shapes
    /// `motion [B, 2, 24, 20, 36]` → ids `[B, 3, 5, 9]` (135 tokens per clip).
    ///
    /// # Errors
    /// A wrong input shape; non-finite values.
    pub fn tokenize(&self, motion: &Tensor) -> Result<TokenGrid> {
        let z = self.encode_continuous(motion)?;
        let (b, t, h, w, c) = z.dims5()?;
        let (ids, _) = self.quantizer.nearest(&z.reshape((b * t * h * w, c))?)?;
        TokenGrid::new(ids.reshape((b, t, h, w))?)
    }

    /// Motion from token ids.
    ///
    /// # Shapes
    /// ids `[B, 3, 5, 9]` → motion `[B, 2, 24, 20, 36]`.
    ///
    /// # Errors
    /// Ids out of the codebook, a grid of the wrong size.
    pub fn detokenize(&self, tokens: &TokenGrid) -> Result<Tensor> {
        let codes = self.quantizer.lookup(tokens.ids())?;
        self.decode_continuous(&codes.to_dtype(DType::F32)?)
    }
}

impl Codec for MotionTokenizer {
    type Code = TokenGrid;

    /// # Shapes
    /// Not pixels: `motion [B, 2, 24, 20, 36]` (LaVIT-preprocessed, ÷ 10) → `[B, 3, 5, 9]`.
    fn encode(&self, video: &Tensor) -> Result<TokenGrid> {
        self.tokenize(video)
    }

    fn decode(&self, code: &TokenGrid) -> Result<Tensor> {
        self.detokenize(code)
    }

    fn strides(&self) -> CodecStrides {
        let (t, h, _) = self.cfg.code_dims();
        CodecStrides {
            temporal: self.cfg.frames / t.max(1),
            spatial: self.cfg.height / h.max(1),
        }
    }
}
