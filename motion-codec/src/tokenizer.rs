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
//! Weights are named as the fields here (`encoder.stages.0.blocks.0.attn_t.qkv.weight`, ...);
//! [`MotionTokenizer::random`] initialises them from a seed, [`MotionTokenizer::save`] /
//! [`MotionTokenizer::load`] write and read a folder with `config.json` and
//! `model.safetensors`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Codec, CodecStrides, Error, Result, TokenGrid};
use vidgen_video_kernels::{attention, AttentionOpts, Conv3d, Conv3dOpts};
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

/// How a parameter is initialised in random mode.
#[derive(Clone, Copy)]
enum Init {
    Normal(f64),
    Const(f32),
    Uniform(f64),
}

/// Parameter source: a `VarBuilder` (checkpoint) or a seeded RNG; records every tensor so the
/// model can be saved.
#[derive(Clone)]
struct Params<'a> {
    vb: Option<VarBuilder<'a>>,
    rng: Option<Rc<RefCell<ChaCha8Rng>>>,
    prefix: String,
    device: Device,
    rec: Rc<RefCell<Vec<(String, Tensor)>>>,
}

impl Params<'_> {
    fn pp(&self, s: impl std::fmt::Display) -> Self {
        let mut p = self.clone();
        p.prefix = if self.prefix.is_empty() {
            s.to_string()
        } else {
            format!("{}.{s}", self.prefix)
        };
        p
    }

    fn get(&self, shape: &[usize], name: &str, init: Init) -> Result<Tensor> {
        let full = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        let t = if let Some(vb) = &self.vb {
            let t = vb.get(shape, &full)?.to_dtype(DType::F32)?;
            if t.dims() != shape {
                return Err(Error::shape(full, shape, t.dims()));
            }
            t
        } else if let Some(rng) = &self.rng {
            let n: usize = shape.iter().product();
            let mut r = rng.borrow_mut();
            let data: Vec<f32> = match init {
                Init::Const(c) => vec![c; n],
                Init::Normal(std) => {
                    let d =
                        Normal::new(0.0, std).map_err(|e| Error::invalid("init", e.to_string()))?;
                    (0..n).map(|_| d.sample(&mut *r) as f32).collect()
                }
                Init::Uniform(b) => (0..n).map(|_| r.random_range(-b..b) as f32).collect(),
            };
            Tensor::from_vec(data, shape, &self.device)?
        } else {
            return Err(Error::invalid("params", "no source"));
        };
        self.rec.borrow_mut().push((full, t.clone()));
        Ok(t)
    }
}

struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(i: usize, o: usize, p: &Params) -> Result<Self> {
        Ok(Self {
            weight: p.get(&[o, i], "weight", Init::Normal(0.02))?,
            bias: p.get(&[o], "bias", Init::Const(0.0))?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)?)
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn new(d: usize, p: &Params) -> Result<Self> {
        Ok(Self {
            weight: p.get(&[d], "weight", Init::Const(1.0))?,
            bias: p.get(&[d], "bias", Init::Const(0.0))?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(
            x,
            &self.weight,
            &self.bias,
            1e-6,
        )?)
    }
}

struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    fn new(d: usize, heads: usize, p: &Params) -> Result<Self> {
        Ok(Self {
            qkv: Linear::new(d, 3 * d, &p.pp("qkv"))?,
            proj: Linear::new(d, d, &p.pp("proj"))?,
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
    fn new(cfg: &MotionTokenizerConfig, p: &Params) -> Result<Self> {
        let d = cfg.hidden;
        Ok(Self {
            norm_t: LayerNorm::new(d, &p.pp("norm_t"))?,
            attn_t: Attention::new(d, cfg.heads, &p.pp("attn_t"))?,
            norm_s: LayerNorm::new(d, &p.pp("norm_s"))?,
            attn_s: Attention::new(d, cfg.heads, &p.pp("attn_s"))?,
            norm_mlp: LayerNorm::new(d, &p.pp("norm_mlp"))?,
            fc1: Linear::new(d, d * cfg.mlp_ratio, &p.pp("mlp.fc1"))?,
            fc2: Linear::new(d * cfg.mlp_ratio, d, &p.pp("mlp.fc2"))?,
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
        let m = self
            .fc2
            .forward(&self.fc1.forward(&self.norm_mlp.forward(&x)?)?.gelu_erf()?)?;
        Ok((x + m)?)
    }
}

fn conv(d: usize, stride: [usize; 3], p: &Params) -> Result<Conv3d> {
    let fan_in = (d * 27) as f64;
    let weight = p.get(
        &[d, d, 3, 3, 3],
        "weight",
        Init::Normal(1.0 / fan_in.sqrt()),
    )?;
    let bias = p.get(&[d], "bias", Init::Const(0.0))?;
    Conv3d::from_parts(
        weight,
        Some(bias),
        Conv3dOpts {
            stride,
            padding: [1, 1, 1],
            ..Conv3dOpts::default()
        },
    )
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

struct Positions {
    pos_spatial: Tensor,
    pos_temporal: Tensor,
}

impl Positions {
    fn new(d: usize, dims: [usize; 3], p: &Params) -> Result<Self> {
        Ok(Self {
            pos_spatial: p.get(&[dims[1] * dims[2], d], "pos_spatial", Init::Normal(0.02))?,
            pos_temporal: p.get(&[dims[0], d], "pos_temporal", Init::Normal(0.02))?,
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

/// Video-LaVIT's motion tokenizer (random-init or loaded); see the module docs for the
/// architecture.
pub struct MotionTokenizer {
    cfg: MotionTokenizerConfig,
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
            "MotionTokenizer({:?}, {} tensors)",
            self.cfg,
            self.tensors.len()
        )
    }
}

impl MotionTokenizer {
    /// Loads the weights from `vb` (names as in the module docs).
    ///
    /// # Errors
    /// A bad config field; a missing or mis-shaped tensor.
    pub fn new(cfg: &MotionTokenizerConfig, vb: VarBuilder) -> Result<Self> {
        let device = vb.device().clone();
        Self::build(cfg, Some(vb), None, device)
    }

    /// A randomly initialised tokenizer, reproducible from `seed` (ViT-style: linear weights
    /// and positions `N(0, 0.02)`, conv weights `N(0, 1/fan_in)`, codebook `U(±1/K)`).
    ///
    /// # Errors
    /// A bad config field.
    pub fn random(cfg: &MotionTokenizerConfig, seed: u64, device: &Device) -> Result<Self> {
        let rng = Rc::new(RefCell::new(ChaCha8Rng::seed_from_u64(seed)));
        Self::build(cfg, None, Some(rng), device.clone())
    }

    fn build(
        cfg: &MotionTokenizerConfig,
        vb: Option<VarBuilder>,
        rng: Option<Rc<RefCell<ChaCha8Rng>>>,
        device: Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let p = Params {
            vb,
            rng,
            prefix: String::new(),
            device,
            rec: Rc::new(RefCell::new(Vec::new())),
        };
        let d = cfg.hidden;
        let dims = cfg.stage_dims();
        let enc = p.pp("encoder");
        let enc_embed = Linear::new(cfg.in_channels, d, &enc.pp("embed"))?;
        let enc_pos = Positions::new(d, dims[0], &enc)?;
        let mut enc_stages = Vec::new();
        for (i, s) in cfg.strides.iter().enumerate() {
            let sp = enc.pp(format!("stages.{i}"));
            let blocks = (0..cfg.depth)
                .map(|j| Block::new(cfg, &sp.pp(format!("blocks.{j}"))))
                .collect::<Result<_>>()?;
            enc_stages.push(Stage {
                blocks,
                conv: conv(d, *s, &sp.pp("down"))?,
            });
        }
        let enc_norm = LayerNorm::new(d, &enc.pp("norm"))?;
        let to_code = Linear::new(d, cfg.code_dim, &enc.pp("to_code"))?;
        let codebook = p.get(
            &[cfg.num_codes, cfg.code_dim],
            "quantize.embedding.weight",
            Init::Uniform(1.0 / cfg.num_codes as f64),
        )?;
        let quantizer = VectorQuantizer::from_codebook(
            &QuantizerConfig::new(cfg.num_codes, cfg.code_dim),
            codebook,
        )?;
        let dec = p.pp("decoder");
        let from_code = Linear::new(cfg.code_dim, d, &dec.pp("from_code"))?;
        let dec_pos = Positions::new(d, dims[dims.len() - 1], &dec)?;
        let mut dec_stages = Vec::new();
        for i in (0..cfg.strides.len()).rev() {
            let sp = dec.pp(format!("stages.{i}"));
            let conv = conv(d, [1, 1, 1], &sp.pp("up"))?;
            let blocks = (0..cfg.depth)
                .map(|j| Block::new(cfg, &sp.pp(format!("blocks.{j}"))))
                .collect::<Result<_>>()?;
            dec_stages.push(Stage { blocks, conv });
        }
        let dec_norm = LayerNorm::new(d, &dec.pp("norm"))?;
        let dec_out = Linear::new(d, cfg.in_channels, &dec.pp("out"))?;
        let tensors = p.rec.borrow().clone();
        Ok(Self {
            cfg: cfg.clone(),
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

    /// The configuration.
    pub fn config(&self) -> &MotionTokenizerConfig {
        &self.cfg
    }

    /// The quantiser (1024 × 32 codebook by default).
    pub fn quantizer(&self) -> &VectorQuantizer {
        &self.quantizer
    }

    /// Number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.tensors.iter().map(|(_, t)| t.elem_count()).sum()
    }

    /// Writes `config.json` and `model.safetensors` into the folder `dir` (created if needed).
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
        candle_core::safetensors::save(&map, &st)?;
        Ok(())
    }

    /// Reads a folder written by [`MotionTokenizer::save`]. Keys in the file that the model
    /// does not use are an error, as are missing or mis-shaped ones.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Malformed`] (bad JSON or safetensors), [`Error::BadConfig`],
    /// missing / unused / mis-shaped tensors.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| Error::Io {
            path: cfg_path.clone(),
            source,
        })?;
        let cfg: MotionTokenizerConfig =
            serde_json::from_str(&text).map_err(|e| Error::Malformed {
                path: cfg_path.clone(),
                reason: e.to_string(),
            })?;
        let st = dir.join("model.safetensors");
        if !st.is_file() {
            return Err(Error::Io {
                path: st,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let map = candle_core::safetensors::load(&st, device).map_err(|e| Error::Malformed {
            path: st.clone(),
            reason: e.to_string(),
        })?;
        let keys: Vec<String> = map.keys().cloned().collect();
        let vb = VarBuilder::from_tensors(map, DType::F32, device);
        let model = Self::build(&cfg, Some(vb), None, device.clone()).map_err(|e| match e {
            Error::Candle(c) => Error::Malformed {
                path: st.clone(),
                reason: c.to_string(),
            },
            other => other,
        })?;
        let used: std::collections::HashSet<&str> =
            model.tensors.iter().map(|(k, _)| k.as_str()).collect();
        let mut unused: Vec<&String> = keys.iter().filter(|k| !used.contains(k.as_str())).collect();
        unused.sort();
        if let Some(k) = unused.first() {
            return Err(Error::Malformed {
                path: st,
                reason: format!("{} unused tensor(s), first `{k}`", unused.len()),
            });
        }
        Ok(model)
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

    /// The continuous (pre-quantisation) codes.
    ///
    /// # Shapes
    /// `motion [B, 2, T, H, W]` (the preprocessed motion ÷ 10) → `[B, t, h, w, code_dim]`
    /// (`3 × 5 × 9` for the defaults).
    ///
    /// # Errors
    /// A wrong input shape; non-finite values.
    pub fn encode_continuous(&self, motion: &Tensor) -> Result<Tensor> {
        self.check_input(motion)?;
        let x = motion
            .to_dtype(DType::F32)?
            .permute((0, 2, 3, 4, 1))?
            .contiguous()?;
        let mut x = self.enc_pos.add(&self.enc_embed.forward(&x)?)?;
        for st in &self.enc_stages {
            for b in &st.blocks {
                x = b.forward(&x)?;
            }
            x = conv_cl(&st.conv, &x)?;
        }
        self.to_code.forward(&self.enc_norm.forward(&x)?)
    }

    /// Decodes continuous or looked-up codes.
    ///
    /// # Shapes
    /// `codes [B, t, h, w, code_dim]` → motion `[B, 2, T, H, W]`.
    ///
    /// # Errors
    /// A code grid of another size than [`MotionTokenizerConfig::code_dims`].
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
        let mut x = self.dec_pos.add(&self.from_code.forward(codes)?)?;
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
        Ok(y.permute((0, 4, 1, 2, 3))?.contiguous()?)
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
