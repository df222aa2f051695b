//! AID (seed 003): instruction-guided video prediction on a frozen Stable Video Diffusion, with
//! AID's adapters inside the UNet and a DQFormer turning the instruction into per-frame
//! cross-attention context.
//!
//! What a call does, on top of [`SvdPipeline`]'s steps:
//! 1. **Frame condition.** The `K` conditioning frames are VAE-encoded (noise-augmented, the
//!    posterior's mode, unscaled, as SVD encodes its one image). Slot `i < K` of the `N` latent
//!    frames concatenated on channels holds frame `i`'s latents; every later slot holds the
//!    latest known frame's (SVD's own convention generalised: SVD repeats its single frame in
//!    every slot). The UNet is unchanged (8 input channels), and with `K = 1` the frame
//!    condition is exactly SVD's.
//! 2. **Stages.** A [`StagePlanner`] splits the instruction into per-stage state descriptions
//!    ([`TemplatePlanner`]; an LLM planner on `vidgen-llama-video` is the seed's MLLM).
//! 3. **Condition tokens.** CLIP text encodes the instruction (`t1`, the last hidden state) and
//!    each stage (`t2`, one pooled vector per stage); CLIP vision's last hidden state of the
//!    first frame is `v`. The DQFormer gives `[B, L1 + N·Nt, D]`, split per frame into
//!    `[B·N, L1 + Nt, D]`, and each frame's context is `[CLIP image embedding; those tokens]`.
//! 4. **Dual classifier-free guidance** (InstructPix2Pix form, as the seed writes it):
//!    `ε = ε(∅,∅) + s_V·(ε(c_V,∅) − ε(∅,∅)) + s_T·(ε(c_V,c_T) − ε(c_V,∅))`. `(∅,∅)` has zero
//!    frame latents and a zero image embedding (SVD's unconditional branch); `(c_V,∅)` is SVD's
//!    conditional branch (image embedding only, no text tokens); `(c_V,c_T)` adds the DQFormer
//!    tokens. `s_V` is per frame, `linspace(min_guidance_scale, max_guidance_scale, N)` as SVD;
//!    `s_T` is one scale. With the text branch off (`text_guidance_scale = 0` or no
//!    instruction), and freshly initialised adapters (zero up-projections), a call is exactly
//!    [`SvdPipeline::call`].
//! 5. The UNet runs with the adapters as hooks ([`vidgen_video_core::hooks`]), sampled by the
//!    pipeline's Euler scheduler (the EDM formulation SVD is trained with: Karras σ, v-prediction
//!    preconditioning).
//!
//! AID's weights (adapters + DQFormer) are one safetensors file with the configuration in its
//! metadata (key `aid_config`, JSON of [`AidConfig`]); [`AidWeights::save`] writes it,
//! [`AidWeights::load`] reads it strictly.
//!
//! **Tuned UNet layers.** AID's recipe trains the UNet's cross-attention layers with the
//! adapters and the DQFormer (the paper's method figure; everything else in the UNet, and the
//! VAE, stays frozen). Their trained values travel in the same file under `unet.<UNet key>`
//! ([`AidWeights::unet`]); [`AidPipeline::from_pretrained`] builds the UNet from the base folder
//! with those keys replaced, strictly: every `unet.` key must be one the UNet asks for, with the
//! shape it asks for. A file without `unet.` keys leaves the base untouched.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use vidgen_adapters::{AdapterConfig, AdapterSet, DQFormer, DQFormerConfig};
use vidgen_clip_encoders::{CLIPTextModel, CLIPTokenizer};
use vidgen_diffusion_unet3d::svd::UNetSpatioTemporalConfig;
use vidgen_samplers::diffusers::StepMemory;
use vidgen_video_core::{check_finite, AttentionSite, Error, LoadReport, ModelDir, Result};

use crate::folder::{ComponentReport, PipelineFolder, TensorOverrides};
use crate::svd::{DecodeMode, SvdPipeline};
use crate::{randn_seeded, StepInfo};
use vidgen_video_nn::record::{recording, Recorded};

/// Sizes of AID's trainable parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AidConfig {
    /// The adapters (bottleneck ratio, kernels, heads).
    pub adapters: AdapterConfig,
    /// The DQFormer; `num_frames` is the `N` predicted-video length it makes contexts for,
    /// `context_dim` the UNet's `cross_attention_dim`.
    pub dqformer: DQFormerConfig,
    /// Stage descriptions per instruction (the length of `t2`).
    pub stages: usize,
}

impl AidConfig {
    /// Checks the fields.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.stages == 0 {
            return Err(Error::config("stages", "must be at least 1"));
        }
        self.dqformer.validate()?;
        self.adapters.validate()
    }
}

/// AID's trainable parts: the adapters at every attention site of the UNet and the DQFormer.
pub struct AidWeights {
    /// The configuration.
    pub config: AidConfig,
    /// Adapters keyed by hook site (key prefix `adapters.`).
    pub adapters: AdapterSet,
    /// The DQFormer (key prefix `dqformer.`).
    pub dqformer: DQFormer,
    /// UNet tensors AID trained (its recipe tunes the cross-attention layers), keyed as in the
    /// UNet's checkpoint (`down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight`);
    /// stored under `unet.` in the file and applied over the base by
    /// [`AidPipeline::from_pretrained`]. Empty: the base UNet as it is.
    pub unet: BTreeMap<String, Tensor>,
    recorded: Recorded,
}

impl AidWeights {
    /// Builds the weights from `vb` (random init: zero-output adapters; a checkpoint: its
    /// values) for a UNet with these attention `sites`.
    ///
    /// # Errors
    /// An invalid config; builder errors.
    pub fn new(
        config: &AidConfig,
        sites: &[AttentionSite],
        vb: VarBuilder<'static>,
    ) -> Result<Self> {
        config.validate()?;
        let (vb, recorded) = recording(vb);
        let adapters =
            AdapterSet::aid_for_attention_sites(sites, &config.adapters, vb.pp("adapters"))?;
        let dqformer = DQFormer::new(&config.dqformer, vb.pp("dqformer"))?;
        Ok(Self {
            config: config.clone(),
            adapters,
            dqformer,
            unet: BTreeMap::new(),
            recorded,
        })
    }

    /// Loads an AID weights file strictly (every key the config needs, with its shape).
    ///
    /// # Errors
    /// An unreadable file, a missing or invalid `aid_config` metadata entry, missing or
    /// mis-shaped keys (named).
    pub fn load(
        path: impl AsRef<Path>,
        sites: &[AttentionSite],
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let path = path.as_ref();
        let config = read_aid_config(path)?;
        let md = ModelDir::from_files(
            path.parent().unwrap_or_else(|| Path::new(".")),
            &[path.to_path_buf()],
        )?;
        let tuned: Vec<(String, Vec<usize>)> = md
            .tensors()
            .into_iter()
            .filter_map(|t| {
                t.name
                    .strip_prefix(UNET_PREFIX)
                    .map(|k| (k.to_string(), t.shape.clone()))
            })
            .collect();
        md.load(dtype, device, |vb| -> Result<Self> {
            let mut w = Self::new(&config, sites, vb.clone())?;
            for (k, shape) in tuned {
                let t = vb.get(shape, &format!("{UNET_PREFIX}{k}"))?;
                w.unet.insert(k, t);
            }
            Ok(w)
        })
    }

    /// Writes every tensor (keys `adapters.…`, `dqformer.…`, and `unet.…` for
    /// [`AidWeights::unet`]) and the config to `path`.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.save_as(path, None)
    }

    /// [`AidWeights::save`] with every tensor stored as `dtype` (`None`: as held). Loading
    /// converts to the pipeline's dtype, so an f16 file halves the size of a checkpoint meant
    /// to run in f32.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn save_as(&self, path: impl AsRef<Path>, dtype: Option<DType>) -> Result<()> {
        let meta = serde_json::to_string(&self.config)
            .map_err(|e| Error::invalid("aid_config", e.to_string()))?;
        let mut all = self.recorded.tensors();
        all.extend(
            self.unet
                .iter()
                .map(|(k, t)| (format!("{UNET_PREFIX}{k}"), t.clone())),
        );
        if let Some(dt) = dtype {
            for (_, t) in &mut all {
                *t = t.to_dtype(dt)?;
            }
        }
        vidgen_video_nn::record::save_safetensors(
            &all,
            Some(HashMap::from([("aid_config".to_string(), meta)])),
            path,
        )
    }

    /// Every adapter and DQFormer tensor, by key (shares storage with the model: trained values
    /// are seen). The tuned UNet tensors are [`AidWeights::unet`].
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.recorded.tensors().into_iter().collect()
    }

    /// Parameters of the tuned UNet layers ([`AidWeights::unet`]).
    pub fn unet_param_count(&self) -> usize {
        self.unet.values().map(Tensor::elem_count).sum()
    }
}

/// Key prefix of the tuned UNet tensors in an AID weights file.
pub const UNET_PREFIX: &str = "unet.";

/// Reads the `aid_config` metadata of an AID weights file.
///
/// # Errors
/// An unreadable file or header, a missing or invalid entry.
pub fn read_aid_config(path: &Path) -> Result<AidConfig> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let text = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("aid_config"))
        .ok_or_else(|| Error::Malformed {
            path: path.to_path_buf(),
            reason: "no `aid_config` metadata: not an AID weights file".into(),
        })?;
    let cfg: AidConfig = serde_json::from_str(text).map_err(|e| Error::BadConfig {
        field: "aid_config".into(),
        reason: e.to_string(),
        file: Some(path.display().to_string()),
    })?;
    cfg.validate()?;
    Ok(cfg)
}

/// Splits an instruction into per-stage state descriptions (AID's MLLM state decomposition).
pub trait StagePlanner: Send + Sync {
    /// `stages` descriptions of the states the video passes through while following
    /// `instruction`, in order.
    ///
    /// # Errors
    /// Planner failures (an LLM that produced no usable lines, …).
    fn plan(&self, instruction: &str, stages: usize) -> Result<Vec<String>>;
}

/// The template planner: stage `i` of `S` is `"<instruction>, stage i of S"`; a deterministic
/// stand-in for the seed's MLLM, enough for instructions whose stages differ only in progress
/// (a motion). Trained miniatures use it, so their text branch learns these exact strings.
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplatePlanner;

impl StagePlanner for TemplatePlanner {
    fn plan(&self, instruction: &str, stages: usize) -> Result<Vec<String>> {
        Ok((0..stages)
            .map(|i| format!("{}, stage {} of {stages}", instruction.trim(), i + 1))
            .collect())
    }
}

/// The dual-guidance combination (see the module docs).
///
/// # Shapes
/// `e00`, `ev0`, `evt`: `[B, F, C, H, W]`; `s_v`: broadcastable per-frame scales
/// `[1, F, 1, 1, 1]` → `[B, F, C, H, W]`.
///
/// # Errors
/// Shape mismatches.
pub fn dual_guidance(
    e00: &Tensor,
    ev0: &Tensor,
    evt: Option<&Tensor>,
    s_v: &Tensor,
    s_t: f64,
) -> Result<Tensor> {
    let g = (e00 + (ev0 - e00)?.broadcast_mul(s_v)?)?;
    Ok(match evt {
        Some(evt) => (g + ((evt - ev0)? * s_t)?)?,
        None => g,
    })
}

/// The arguments of an AID call (SVD's, plus the instruction and the text guidance).
#[derive(Debug, Clone)]
pub struct AidCall {
    /// The instruction (`None` or empty: the text branch is off).
    pub instruction: Option<String>,
    /// Frames to predict in all, conditioning frames included (`None`: the DQFormer's `N`).
    pub num_frames: Option<usize>,
    /// Denoising steps (25).
    pub num_inference_steps: usize,
    /// Frame guidance at the first frame (1.0).
    pub min_guidance_scale: f64,
    /// Frame guidance at the last frame (3.0).
    pub max_guidance_scale: f64,
    /// Text guidance `s_T` (7.5; 0 turns the text branch off).
    pub text_guidance_scale: f64,
    /// Frames per second the base is conditioned on (7).
    pub fps: usize,
    /// Motion bucket (127).
    pub motion_bucket_id: usize,
    /// Noise added to the conditioning frames (0.02).
    pub noise_aug_strength: f64,
    /// Frames decoded at a time (`None`: all).
    pub decode_chunk_size: Option<usize>,
    /// Initial latents `[B, N, C, h, w]` (`C`: the VAE's latent channels; `None`: drawn from
    /// `seed`).
    pub latents: Option<Tensor>,
    /// The noise-augmentation draw `[B, K, 3, H, W]` (`None`: drawn from `seed`).
    pub aug_noise: Option<Tensor>,
    /// Conditioning by replacement (off: the reference's sampling): after every step the `K`
    /// conditioning frames' latents are set to their clean encodings (without the noise
    /// augmentation) plus the step's σ times one fixed draw, so the temporal layers see the
    /// true frames at each noise level (Ho et al. 2022, "Video Diffusion Models", §3.1); the
    /// last step leaves them exactly the encoded frames.
    pub replace_conditioning: bool,
    /// Seed of the draws that are not given.
    pub seed: u64,
}

impl Default for AidCall {
    fn default() -> Self {
        Self {
            instruction: None,
            num_frames: None,
            num_inference_steps: 25,
            min_guidance_scale: 1.0,
            max_guidance_scale: 3.0,
            text_guidance_scale: 7.5,
            fps: 7,
            motion_bucket_id: 127,
            noise_aug_strength: 0.02,
            decode_chunk_size: None,
            latents: None,
            aug_noise: None,
            replace_conditioning: false,
            seed: 0,
        }
    }
}

/// What [`AidPipeline::call`] returns.
#[derive(Debug, Clone)]
pub struct AidOutput {
    /// The video `[B, N, 3, H, W]` in `[0, 1]`: the predicted frames, the first `K` slots
    /// reconstructing the conditioning frames.
    pub frames: Tensor,
    /// The final latents `[B, N, C, h, w]`.
    pub latents: Tensor,
    /// The stage descriptions used (empty with the text branch off).
    pub stages: Vec<String>,
}

/// AID on a frozen SVD pipeline folder.
pub struct AidPipeline {
    /// The frozen base.
    pub svd: SvdPipeline,
    /// CLIP text encoder for the instruction and the stages.
    pub text_encoder: CLIPTextModel,
    /// Its tokenizer.
    pub tokenizer: CLIPTokenizer,
    /// Adapters + DQFormer.
    pub aid: AidWeights,
    /// The stage planner.
    pub planner: Box<dyn StagePlanner>,
    /// What was loaded.
    pub report: Vec<ComponentReport>,
}

/// Where the CLIP text encoder comes from: `text_encoder/` + `tokenizer/` of a folder (an
/// SVD folder extended with them, or any SD / CLIP folder).
#[derive(Debug, Clone)]
pub struct TextEncoderSource {
    /// The folder holding `text_encoder/` and `tokenizer/`.
    pub dir: PathBuf,
}

impl AidPipeline {
    /// Loads the SVD base from `folder`, the CLIP text encoder from `text`, and AID's weights
    /// from `aid_weights` (a file written by [`AidWeights::save`]).
    ///
    /// # Errors
    /// As [`SvdPipeline::from_pretrained`]; a missing `text_encoder/` or `tokenizer/` (named);
    /// AID weights that do not fit the UNet (named keys).
    pub fn from_pretrained(
        folder: &PipelineFolder,
        text: &TextEncoderSource,
        aid_weights: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        // AID's file is read first: its tuned UNet layers replace the base's as the UNet loads
        // (one load), and only the UNet's config is needed for the adapter sites.
        let (_, unet_dir) = folder.component("unet", &["UNetSpatioTemporalConditionModel"])?;
        let ucfg: UNetSpatioTemporalConfig =
            vidgen_video_core::loading::read_config(unet_dir.join("config.json"))?;
        let sites = ucfg.attention_sites()?;
        let (aid, load) = AidWeights::load(aid_weights, &sites, dtype, device)?;
        let tuned = (!aid.unet.is_empty()).then(|| TensorOverrides {
            tensors: aid.unet.clone(),
            file: aid_weights.to_path_buf(),
            prefix: UNET_PREFIX.into(),
        });
        let svd = SvdPipeline::from_pretrained_with(folder, dtype, device, tuned.as_ref())?;
        let mut report = svd.report.clone();
        report.push(ComponentReport {
            name: "aid".into(),
            class: if aid.unet.is_empty() {
                "AID adapters + DQFormer".into()
            } else {
                "AID adapters + DQFormer + tuned UNet layers".into()
            },
            dtype: Some(dtype),
            params: aid
                .tensors()
                .values()
                .map(|t| t.elem_count())
                .sum::<usize>()
                + aid.unet_param_count(),
            load: Some(load),
        });
        let (text_encoder, tokenizer, r) = load_text(text, dtype, device)?;
        report.push(r);
        Ok(Self {
            svd,
            text_encoder,
            tokenizer,
            aid,
            planner: Box::new(TemplatePlanner),
            report,
        })
    }

    /// Assembles a pipeline from loaded parts (freshly initialised AID weights, for training or
    /// the identity test).
    pub fn from_parts(
        svd: SvdPipeline,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        aid: AidWeights,
    ) -> Self {
        let report = svd.report.clone();
        Self {
            svd,
            text_encoder,
            tokenizer,
            aid,
            planner: Box::new(TemplatePlanner),
            report,
        }
    }

    /// Replaces the stage planner.
    pub fn with_planner(mut self, planner: Box<dyn StagePlanner>) -> Self {
        self.planner = planner;
        self
    }

    /// The text tokens of `texts`: `(last_hidden_state [n, L, D], pooler_output [n, D])`.
    fn encode_text(&self, texts: &[&str], device: &Device) -> Result<(Tensor, Tensor)> {
        let tok = self.tokenizer.encode_batch(texts, device)?;
        let out = self.text_encoder.forward(&tok.input_ids)?;
        Ok((out.last_hidden_state, out.pooler_output))
    }

    /// The per-frame context `[B·N, 1 + L1 + Nt, D]` of the text branch.
    fn text_context(
        &self,
        image_embeds: &Tensor,
        visual: &Tensor,
        instruction: &str,
        stages: &[String],
        n: usize,
    ) -> Result<Tensor> {
        let dev = image_embeds.device();
        let (b, _) = image_embeds.dims2()?;
        let dt = self.svd.dtype;
        let (t1, _) = self.encode_text(&[instruction], dev)?;
        let stage_refs: Vec<&str> = stages.iter().map(String::as_str).collect();
        let (_, pooled) = self.encode_text(&stage_refs, dev)?;
        let (_, l1, dt1) = t1.dims3()?;
        let t1 = t1.broadcast_as((b, l1, dt1))?.contiguous()?;
        // [S, D] -> [B, S, D]
        let (ns, ds) = pooled.dims2()?;
        let t2 = pooled
            .unsqueeze(0)?
            .broadcast_as((b, ns, ds))?
            .contiguous()?;
        let ctx = self.aid.dqformer.forward(
            &t1.to_dtype(dt)?,
            &visual.to_dtype(dt)?,
            &t2.to_dtype(dt)?,
        )?;
        let per_frame = self.aid.dqformer.per_frame_contexts(&ctx)?; // [B·Nq, L1 + Nt, D]
        let nq = self.aid.config.dqformer.num_frames;
        if n != nq {
            return Err(Error::invalid(
                "num_frames",
                format!("the DQFormer makes contexts for {nq} frames, the call asks for {n}"),
            ));
        }
        // [B, D] -> [B·N, 1, D]
        let (_, d) = image_embeds.dims2()?;
        let img = image_embeds
            .reshape((b, 1, 1, d))?
            .broadcast_as((b, n, 1, d))?
            .reshape((b * n, 1, d))?;
        Ok(Tensor::cat(&[&img.to_dtype(dt)?, &per_frame], 1)?)
    }

    /// Predicts a video from `frames` (the `K` conditioning frames) and the instruction.
    ///
    /// # Shapes
    /// `frames [B, K, 3, H, W]` in `[0, 1]` → [`AidOutput`] `frames [B, N, 3, H, W]`.
    ///
    /// # Errors
    /// `K = 0` or `K > N`, sizes not multiples of the VAE factor, an `N` the DQFormer was not
    /// built for (with the text branch on), given latents / noise of another shape, NaN.
    pub fn call(
        &self,
        frames: &Tensor,
        call: &AidCall,
        on_step: &mut dyn FnMut(StepInfo),
    ) -> Result<AidOutput> {
        let dev = frames.device().clone();
        let dt = self.svd.dtype;
        let (b, k, c, hh, ww) = frames.dims5().map_err(|_| {
            Error::invalid(
                "frames",
                format!("expected [B, K, 3, H, W], got {:?}", frames.dims()),
            )
        })?;
        let s = self.svd.vae_scale_factor();
        if c != 3 || b == 0 || k == 0 || hh == 0 || ww == 0 {
            return Err(Error::invalid(
                "frames",
                format!("expected [B ≥ 1, K ≥ 1, 3, H, W], got {:?}", frames.dims()),
            ));
        }
        if !hh.is_multiple_of(s) || !ww.is_multiple_of(s) {
            return Err(Error::invalid(
                "frames",
                format!("size {hh}×{ww} is not a multiple of the VAE factor {s}"),
            ));
        }
        check_finite(frames, "AID conditioning frames")?;
        let n = call
            .num_frames
            .unwrap_or(self.aid.config.dqformer.num_frames);
        if n < k || n == 0 || call.num_inference_steps == 0 {
            return Err(Error::invalid(
                "num_frames",
                format!("{n} frames cannot continue {k} conditioning frames (and steps ≥ 1)"),
            ));
        }
        let instruction = call
            .instruction
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let text_on = instruction.is_some() && call.text_guidance_scale != 0.0;
        let frame_cfg = call.max_guidance_scale > 1.0;
        let (h, w) = (hh / s, ww / s);

        // 1. CLIP of the first frame: image embedding and visual tokens.
        let first = frames.narrow(1, 0, 1)?.squeeze(1)?.to_dtype(DType::F32)?;
        let x = ((first * 2.0)? - 1.0)?;
        let clip_in =
            ((vidgen_clip_encoders::resize_with_antialiasing(&x, (224, 224))? + 1.0)? / 2.0)?;
        let pv = self.svd.feature_extractor.normalize(&clip_in)?;
        let vis = self.svd.image_encoder.forward(&pv.to_dtype(dt)?)?;
        let image_embeds = vis
            .image_embeds
            .clone()
            .ok_or_else(|| Error::invalid("image_encoder", "returned no image_embeds"))?
            .unsqueeze(1)?; // [B, 1, D]

        // 2. Frame condition: K encoded frames, the last repeated into the later slots.
        let aug_shape = [b, k, 3, hh, ww];
        let aug = match &call.aug_noise {
            Some(a) => {
                if a.dims() != aug_shape {
                    return Err(Error::shape("aug_noise", &aug_shape, a.dims()));
                }
                a.to_dtype(DType::F32)?.to_device(&dev)?
            }
            None => randn_seeded(call.seed ^ 0x5eed_a0e5, &aug_shape, &dev)?,
        };
        let pix = ((frames.to_dtype(DType::F32)? * 2.0)? - 1.0)?;
        let pix = (pix + (aug * call.noise_aug_strength)?)?.reshape((b * k, 3, hh, ww))?;
        let enc = self
            .svd
            .vae
            .encode_frames(&pix.to_dtype(dt)?)?
            .mode()
            .reshape((b, k, self.svd.latent_channels(), h, w))?;
        // Replacement's targets: the K frames encoded without the augmentation, scaled as the
        // latents are, and the fixed draw that noises them to each step's σ.
        let replace = if call.replace_conditioning {
            let clean =
                ((frames.to_dtype(DType::F32)? * 2.0)? - 1.0)?.reshape((b * k, 3, hh, ww))?;
            let x0 = (self
                .svd
                .vae
                .encode_frames(&clean.to_dtype(dt)?)?
                .mode()
                .reshape((b, k, self.svd.latent_channels(), h, w))?
                .to_dtype(DType::F32)?
                * self.svd.vae.config().scaling_factor)?;
            let eps = randn_seeded(call.seed ^ 0x7e91_ace0, x0.dims(), &dev)?;
            Some((x0, eps))
        } else {
            None
        };
        let last = enc.narrow(1, k - 1, 1)?;
        let cond = if n > k {
            Tensor::cat(&[&enc, &last.repeat((1, n - k, 1, 1, 1))?], 1)?
        } else {
            enc
        }
        .to_dtype(dt)?; // [B, N, C, h, w]

        // 3. Stages and the text branch's per-frame context.
        let (stages, text_ctx) = match (text_on, instruction) {
            (true, Some(instr)) => {
                let stages = self.planner.plan(instr, self.aid.config.stages)?;
                if stages.len() != self.aid.config.stages {
                    return Err(Error::invalid(
                        "stage planner",
                        format!(
                            "returned {} stages, the DQFormer expects {}",
                            stages.len(),
                            self.aid.config.stages
                        ),
                    ));
                }
                let ctx = self.text_context(
                    &image_embeds.squeeze(1)?,
                    &vis.last_hidden_state,
                    instr,
                    &stages,
                    n,
                )?;
                (stages, Some(ctx))
            }
            _ => (Vec::new(), None),
        };

        // 4. Scheduler, latents, guidance scales, time ids.
        let mut sched = self.svd.scheduler.build()?;
        sched.set_timesteps(call.num_inference_steps)?;
        let lat_shape = [b, n, self.svd.latent_channels(), h, w];
        let latents = match &call.latents {
            Some(l) => {
                if l.dims() != lat_shape {
                    return Err(Error::shape("latents", &lat_shape, l.dims()));
                }
                l.to_dtype(DType::F32)?.to_device(&dev)?
            }
            None => randn_seeded(call.seed, &lat_shape, &dev)?,
        };
        let mut latents = (latents * sched.init_noise_sigma())?;
        let with_known = |latents: &Tensor, step: usize| -> Result<Tensor> {
            let Some((x0, eps)) = &replace else {
                return Ok(latents.clone());
            };
            let sigma = sched
                .sigmas()
                .and_then(|s| s.get(step).copied())
                .ok_or_else(|| {
                    Error::invalid(
                        "replace_conditioning",
                        "needs a σ-based scheduler (the SVD folder's Euler)",
                    )
                })?;
            let known = (x0 + (eps * f64::from(sigma))?)?;
            Ok(if n > k {
                Tensor::cat(&[&known, &latents.narrow(1, k, n - k)?], 1)?
            } else {
                known
            })
        };
        latents = with_known(&latents, 0)?;
        let scales: Vec<f32> = (0..n)
            .map(|i| {
                let t = if n > 1 {
                    i as f64 / (n - 1) as f64
                } else {
                    0.0
                };
                (call.min_guidance_scale + t * (call.max_guidance_scale - call.min_guidance_scale))
                    as f32
            })
            .collect();
        let s_v = Tensor::from_vec(scales, (1, n, 1, 1, 1), &dev)?;
        let ids_row = Tensor::new(
            &[[
                (call.fps as f32) - 1.0,
                call.motion_bucket_id as f32,
                call.noise_aug_strength as f32,
            ]],
            &dev,
        )?;
        // Batch of the frame-guided branches: [(∅,∅); (c_V,∅)] as SVD orders them.
        let (vid_ctx, vid_cond, nb) = if frame_cfg {
            (
                Tensor::cat(&[&image_embeds.zeros_like()?, &image_embeds], 0)?,
                Tensor::cat(&[&cond.zeros_like()?, &cond], 0)?,
                2 * b,
            )
        } else {
            (image_embeds.clone(), cond.clone(), b)
        };
        let vid_ctx = vid_ctx.to_dtype(dt)?;
        let ids_v = ids_row.repeat((nb, 1))?.to_dtype(dt)?;
        let ids_t = ids_row.repeat((b, 1))?.to_dtype(dt)?;

        // 5. Denoising loop.
        let total = sched.timesteps().len();
        let mut mem = StepMemory::default();
        for i in 0..total {
            let t = sched.timesteps()[i];
            let ts = Tensor::new(&[t as f32], &dev)?.to_dtype(dt)?;
            let x_in = sched.scale_model_input(&latents, i)?.to_dtype(dt)?;
            let rep = if frame_cfg {
                Tensor::cat(&[&x_in, &x_in], 0)?
            } else {
                x_in.clone()
            };
            let inp = Tensor::cat(&[&rep, &vid_cond], 2)?;
            let out = self
                .svd
                .unet
                .forward_with_hooks(&inp, &ts, &vid_ctx, &ids_v, None, &self.aid.adapters)?
                .to_dtype(DType::F32)?;
            let (e00, ev0) = if frame_cfg {
                (out.narrow(0, 0, b)?, out.narrow(0, b, b)?)
            } else {
                (out.clone(), out)
            };
            let evt = match &text_ctx {
                Some(ctx) => {
                    let inp = Tensor::cat(&[&x_in, &cond], 2)?;
                    Some(
                        self.svd
                            .unet
                            .forward_with_hooks(&inp, &ts, ctx, &ids_t, None, &self.aid.adapters)?
                            .to_dtype(DType::F32)?,
                    )
                }
                None => None,
            };
            let pred = if frame_cfg {
                dual_guidance(&e00, &ev0, evt.as_ref(), &s_v, call.text_guidance_scale)?
            } else {
                match &evt {
                    Some(evt) => (&ev0 + ((evt - &ev0)? * call.text_guidance_scale)?)?,
                    None => ev0,
                }
            };
            // Stochastic schedulers (Euler ancestral, churn) draw their step noise from the
            // call's seed, as the other pipelines' loops do.
            let noise = if sched.needs_noise(i) {
                Some(randn_seeded(
                    call.seed
                        .wrapping_add(crate::denoise::STEP_NOISE_SEED)
                        .wrapping_add(i as u64),
                    latents.dims(),
                    &dev,
                )?)
            } else {
                None
            };
            latents = sched
                .step(&pred, i, &latents, noise.as_ref(), &mut mem)?
                .prev_sample;
            latents = with_known(&latents, i + 1)?;
            check_finite(&latents, &format!("AID latents after step {i}"))?;
            on_step(StepInfo {
                index: i,
                total,
                timestep: t,
            });
        }
        let frames = self
            .svd
            .decode(&latents, call.decode_chunk_size, DecodeMode::Chunked)?;
        Ok(AidOutput {
            frames,
            latents,
            stages,
        })
    }
}

/// Loads `text_encoder/` and `tokenizer/` from a folder.
fn load_text(
    src: &TextEncoderSource,
    dtype: DType,
    device: &Device,
) -> Result<(CLIPTextModel, CLIPTokenizer, ComponentReport)> {
    let te = src.dir.join("text_encoder");
    let tk = src.dir.join("tokenizer");
    for d in [&te, &tk] {
        if !d.is_dir() {
            return Err(Error::invalid(
                d.display().to_string(),
                "AID needs a CLIP text encoder: no such folder",
            ));
        }
    }
    let (model, load) = CLIPTextModel::from_pretrained(&te, dtype, device)?;
    let tokenizer = CLIPTokenizer::from_dir(&tk)?;
    let params = ModelDir::open(&te)?
        .tensors()
        .iter()
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    Ok((
        model,
        tokenizer,
        ComponentReport {
            name: "text_encoder".into(),
            class: "CLIPTextModel".into(),
            dtype: Some(dtype),
            params,
            load: Some(load),
        },
    ))
}

/// Loads the CLIP text encoder and tokenizer of `dir` (`text_encoder/`, `tokenizer/`).
///
/// # Errors
/// Missing folders (named), loader errors.
pub fn load_text_encoder(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(CLIPTextModel, CLIPTokenizer)> {
    let (m, t, _) = load_text(
        &TextEncoderSource {
            dir: dir.to_path_buf(),
        },
        dtype,
        device,
    )?;
    Ok((m, t))
}
