//! The LLM over Video-LaVIT's vocabulary: a llama-video `LlamaForCausalLM` trained with
//! next-token loss on the keyframe and motion spans, and generation that follows the
//! reference's rules:
//!
//! - after `[IMG]`, only keyframe codes may be drawn (the miniature's keyframe grid is fixed,
//!   so exactly `h · w` codes are drawn and `[/IMG]` appended; Video-LaVIT draws 20–500 until
//!   `[/IMG]`), then `[MOV]` is appended and only motion codes may be drawn (135, then
//!   `[/MOV]`);
//! - classifier-free guidance on log-softmax scores, the unconditional branch seeing only the
//!   last tag token (`[IMG]` or `[MOV]`) and what was generated after it; Video-LaVIT's scales
//!   are 4.0 (keyframe) and 7.0 (motion), and motion is decoded greedily.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_llama_video::{
    next_token_loss, sample, KvCache, LlamaConfig, LlamaForCausalLM, LogitsToKeep, SamplingConfig,
    TrainBatch,
};
use vidgen_video_core::{Error, Result};

use super::sequence::{ClipTokens, SampleKind, TextTable, TrainingSample, VocabLayout};

/// Sizes of the miniature LLM (a Llama; tied embeddings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LmSize {
    /// Width.
    pub hidden: usize,
    /// SwiGLU width.
    pub intermediate: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key / value heads.
    pub kv_heads: usize,
    /// Longest sequence.
    pub max_len: usize,
}

impl Default for LmSize {
    fn default() -> Self {
        Self {
            hidden: 128,
            intermediate: 256,
            layers: 4,
            heads: 4,
            kv_heads: 2,
            max_len: 512,
        }
    }
}

impl LmSize {
    /// The transformers config of a model over `vocab` ids.
    pub fn llama_config(&self, vocab: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size: vocab,
            hidden_size: self.hidden,
            intermediate_size: self.intermediate,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: Some(self.kv_heads),
            max_position_embeddings: self.max_len,
            rope_theta: Some(10_000.0),
            tie_word_embeddings: true,
            ..LlamaConfig::default()
        }
    }
}

/// How a clip is drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    /// Keyframe codes per keyframe (the image tokenizer's grid).
    pub keyframe_tokens: usize,
    /// Motion codes per clip (135).
    pub motion_tokens: usize,
    /// Keyframe sampling temperature (0: greedy).
    pub keyframe_temperature: f64,
    /// Keyframe top-k (0: off).
    pub keyframe_top_k: usize,
    /// Keyframe guidance scale (Video-LaVIT: 4.0; 1: off).
    pub keyframe_cfg: f64,
    /// Motion temperature (0: greedy, Video-LaVIT's text-to-video choice).
    pub motion_temperature: f64,
    /// Motion guidance scale (Video-LaVIT: 7.0; 1: off).
    pub motion_cfg: f64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            keyframe_tokens: 45,
            motion_tokens: 135,
            keyframe_temperature: 1.0,
            keyframe_top_k: 0,
            keyframe_cfg: 4.0,
            motion_temperature: 0.0,
            motion_cfg: 7.0,
        }
    }
}

/// The LLM with its vocabulary layout.
#[derive(Debug, Clone)]
pub struct LavitLm {
    model: LlamaForCausalLM,
    layout: VocabLayout,
}

/// Tokens per second of a generation, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GenStats {
    /// Keyframe tokens drawn.
    pub keyframe_tokens: usize,
    /// Motion tokens drawn.
    pub motion_tokens: usize,
    /// Seconds spent drawing keyframe tokens.
    pub keyframe_s: f64,
    /// Seconds spent drawing motion tokens.
    pub motion_s: f64,
}

impl LavitLm {
    /// Wraps a model whose vocabulary is `layout`'s.
    ///
    /// # Errors
    /// A vocabulary size that differs.
    pub fn new(model: LlamaForCausalLM, layout: VocabLayout) -> Result<Self> {
        layout.validate()?;
        if model.vocab_size() != layout.vocab_size() {
            return Err(Error::config(
                "vocab_size",
                format!(
                    "the LLM has {} ids, the layout {}",
                    model.vocab_size(),
                    layout.vocab_size()
                ),
            ));
        }
        Ok(Self { model, layout })
    }

    /// Loads a transformers folder.
    ///
    /// # Errors
    /// As `LlamaForCausalLM::from_pretrained`.
    pub fn load(dir: impl AsRef<Path>, layout: VocabLayout, device: &Device) -> Result<Self> {
        let (m, _) = LlamaForCausalLM::from_pretrained(dir, DType::F32, device)?;
        Self::new(m, layout)
    }

    /// The model.
    pub fn model(&self) -> &LlamaForCausalLM {
        &self.model
    }

    /// The layout.
    pub fn layout(&self) -> &VocabLayout {
        &self.layout
    }

    fn step(&self, cache: &mut KvCache, ids: &[u32]) -> Result<Vec<f32>> {
        let t = Tensor::from_vec(ids.to_vec(), (1, ids.len()), self.model.device())?;
        let logits = self
            .model
            .forward(&t, Some(cache), LogitsToKeep::Last)?
            .to_dtype(DType::F32)?
            .flatten_all()?;
        Ok(logits.to_vec1()?)
    }

    /// Draws one clip after `prefix` (text slots and earlier clips, already in the vocabulary):
    /// the keyframe's codes (unless `keyframe` gives them), then the motion codes.
    ///
    /// # Errors
    /// Ids out of the vocabulary; a sequence longer than the cache; model errors.
    pub fn generate_clip(
        &self,
        prefix: &[u32],
        keyframe: Option<&[u32]>,
        g: &GenerationConfig,
        rng: &mut impl Rng,
    ) -> Result<(ClipTokens, GenStats)> {
        let l = &self.layout;
        let max = prefix.len() + g.keyframe_tokens + g.motion_tokens + 8;
        let mut cond = self.model.new_cache(1, max)?;
        let mut unc = self.model.new_cache(1, max)?;
        let mut stats = GenStats::default();
        let kf: Vec<u32> = match keyframe {
            Some(k) => k.to_vec(),
            None => {
                let t0 = std::time::Instant::now();
                let mut ids = prefix.to_vec();
                ids.push(l.img_start());
                let mut c = self.step(&mut cond, &ids)?;
                let guided = (g.keyframe_cfg - 1.0).abs() > 1e-12;
                let mut u = if guided {
                    Some(self.step(&mut unc, &[l.img_start()])?)
                } else {
                    None
                };
                let sc = SamplingConfig {
                    temperature: g.keyframe_temperature,
                    top_k: (g.keyframe_top_k > 0).then_some(g.keyframe_top_k),
                    cfg_scale: g.keyframe_cfg,
                    allowed: Some(l.image_range()),
                    ..SamplingConfig::default()
                };
                let mut out = Vec::with_capacity(g.keyframe_tokens);
                for i in 0..g.keyframe_tokens {
                    let id = sample(&c, u.as_deref(), &[], &sc, rng)?;
                    out.push(id - l.image_base());
                    if i + 1 < g.keyframe_tokens {
                        c = self.step(&mut cond, &[id])?;
                        if let Some(uu) = u.as_mut() {
                            *uu = self.step(&mut unc, &[id])?;
                        }
                    } else {
                        // Keep the cache in step with the sequence.
                        let _ = self.step(&mut cond, &[id])?;
                    }
                }
                stats.keyframe_tokens = out.len();
                stats.keyframe_s = t0.elapsed().as_secs_f64();
                out
            }
        };
        let t0 = std::time::Instant::now();
        let mut ids = Vec::new();
        if keyframe.is_some() {
            ids.extend_from_slice(prefix);
            ids.push(l.img_start());
            for &k in &kf {
                ids.push(l.id(super::sequence::Token::Image(k))?);
            }
        }
        ids.push(l.img_end());
        ids.push(l.mov_start());
        let mut c = self.step(&mut cond, &ids)?;
        let guided = (g.motion_cfg - 1.0).abs() > 1e-12;
        unc.reset();
        let mut u = if guided {
            Some(self.step(&mut unc, &[l.mov_start()])?)
        } else {
            None
        };
        let sc = SamplingConfig {
            temperature: g.motion_temperature,
            cfg_scale: g.motion_cfg,
            allowed: Some(l.motion_range()),
            ..SamplingConfig::default()
        };
        let mut motion = Vec::with_capacity(g.motion_tokens);
        for i in 0..g.motion_tokens {
            let id = sample(&c, u.as_deref(), &[], &sc, rng)?;
            motion.push(id - l.motion_base());
            if i + 1 < g.motion_tokens {
                c = self.step(&mut cond, &[id])?;
                if let Some(uu) = u.as_mut() {
                    *uu = self.step(&mut unc, &[id])?;
                }
            }
        }
        stats.motion_tokens = motion.len();
        stats.motion_s = t0.elapsed().as_secs_f64();
        Ok((
            ClipTokens {
                keyframe: kf,
                motion,
            },
            stats,
        ))
    }
}

/// One tokenized training video: its prompt (tokenizer ids) and one or two clips.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LmExample {
    /// Prompt ids (the text tokenizer's).
    pub text: Vec<u32>,
    /// One clip, or two consecutive clips of one video.
    pub clips: Vec<ClipTokens>,
}

/// Training settings of the LLM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LmTrainConfig {
    /// Steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps (then cosine to a tenth).
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Relative frequency of text → video, no-text → video, image → video, continuation and
    /// motion-only samples.
    pub mix: [f64; 5],
    /// Seed.
    pub seed: u64,
}

impl Default for LmTrainConfig {
    fn default() -> Self {
        Self {
            steps: 1500,
            batch: 8,
            lr: 3e-3,
            warmup: 100,
            weight_decay: 0.01,
            mix: [0.55, 0.1, 0.15, 0.1, 0.1],
            seed: 0,
        }
    }
}

impl LmTrainConfig {
    fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup.max(1) as f64;
        }
        let t = ((step - self.warmup) as f64
            / self.steps.saturating_sub(self.warmup).max(1) as f64)
            .min(1.0);
        self.lr / 10.0 + 0.45 * self.lr * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

fn pick_kind(mix: &[f64; 5], r: f64) -> SampleKind {
    let total: f64 = mix.iter().sum();
    let kinds = [
        SampleKind::TextToVideo,
        SampleKind::NoTextToVideo,
        SampleKind::ImageToVideo,
        SampleKind::Continuation,
        SampleKind::MotionOnly,
    ];
    let mut acc = 0.0;
    for (k, w) in kinds.iter().zip(mix) {
        acc += w / total.max(1e-12);
        if r < acc {
            return *k;
        }
    }
    SampleKind::TextToVideo
}

/// A padded batch of samples (`[B, N]` ids and loss mask).
///
/// # Errors
/// An empty batch.
pub fn batch_of(samples: &[TrainingSample], device: &Device) -> Result<TrainBatch> {
    let n = samples.iter().map(|s| s.ids.len()).max().unwrap_or(0);
    if samples.is_empty() || n == 0 {
        return Err(Error::invalid("batch", "no samples"));
    }
    let mut ids = Vec::with_capacity(samples.len() * n);
    let mut mask = Vec::with_capacity(samples.len() * n);
    for s in samples {
        ids.extend_from_slice(&s.ids);
        ids.extend(std::iter::repeat_n(0, n - s.ids.len()));
        mask.extend(s.loss_mask.iter().map(|&m| m as f32));
        mask.extend(std::iter::repeat_n(0f32, n - s.ids.len()));
    }
    TrainBatch::new(
        Tensor::from_vec(ids, (samples.len(), n), device)?,
        Tensor::from_vec(mask, (samples.len(), n), device)?,
    )
}

/// A trained LLM with its variables.
pub struct TrainedLm {
    /// The model.
    pub lm: LavitLm,
    /// Its variables.
    pub vars: VarMap,
    /// The loss of every step.
    pub losses: Vec<f32>,
}

impl std::fmt::Debug for TrainedLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrainedLm({} steps)", self.losses.len())
    }
}

/// Trains the LLM on tokenized examples. Each sequence is drawn by kind (`mix`): text →
/// video, no-text → video, image → video and motion-only use an example's first clip;
/// continuation uses an example with two clips (falls back to text → video when none has).
///
/// # Errors
/// No examples; a bad size; non-finite losses.
pub fn train_lm(
    size: &LmSize,
    t: &LmTrainConfig,
    layout: &VocabLayout,
    table: &TextTable,
    examples: &[LmExample],
    device: &Device,
    mut on_step: impl FnMut(usize, f32),
) -> Result<TrainedLm> {
    let singles: Vec<&LmExample> = examples.iter().filter(|e| !e.clips.is_empty()).collect();
    let pairs: Vec<&LmExample> = examples.iter().filter(|e| e.clips.len() >= 2).collect();
    if singles.is_empty() || t.batch == 0 {
        return Err(Error::invalid("examples", "need examples and a batch ≥ 1"));
    }
    let cfg = size.llama_config(layout.vocab_size());
    cfg.validate()?;
    let vars = VarMap::new();
    let model = LlamaForCausalLM::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, device))?;
    super::keyframe::seeded_init(&vars, t.seed)?;
    let mut opt = AdamW::new(
        vars.all_vars(),
        ParamsAdamW {
            lr: t.lr_at(0),
            weight_decay: t.weight_decay,
            ..Default::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(t.seed ^ 0x6c6c_6d00);
    let mut losses = Vec::with_capacity(t.steps);
    for step in 0..t.steps {
        let mut samples = Vec::with_capacity(t.batch);
        for _ in 0..t.batch {
            let mut kind = pick_kind(&t.mix, rng.random::<f64>());
            if kind == SampleKind::Continuation && pairs.is_empty() {
                kind = SampleKind::TextToVideo;
            }
            let s = if kind == SampleKind::Continuation {
                let e = pairs[rng.random_range(0..pairs.len())];
                TrainingSample::new(kind, &e.text, &e.clips[..2], layout, table)?
            } else {
                let e = singles[rng.random_range(0..singles.len())];
                TrainingSample::new(kind, &e.text, &e.clips[..1], layout, table)?
            };
            samples.push(s);
        }
        let batch = batch_of(&samples, device)?;
        opt.set_learning_rate(t.lr_at(step));
        // Forward and backward on a rayon worker: a few thousand small parallel ops, each
        // otherwise injected from this thread while it sleeps.
        let lv = vidgen_video_core::in_pool(|| -> Result<f32> {
            let loss = next_token_loss(&model, None, &batch)?;
            let lv = loss.to_scalar::<f32>()?;
            if !lv.is_finite() {
                return Err(Error::NonFinite {
                    location: format!("LLM training loss at step {step}"),
                    nan: usize::from(lv.is_nan()),
                    inf: usize::from(lv.is_infinite()),
                    total: 1,
                });
            }
            opt.backward_step(&loss)?;
            Ok(lv)
        })?;
        on_step(step, lv);
        losses.push(lv);
    }
    Ok(TrainedLm {
        lm: LavitLm::new(model, *layout)?,
        vars,
        losses,
    })
}

/// Writes the LLM as a transformers folder (`config.json` + `model.safetensors` in `dtype`).
///
/// # Errors
/// Unwritable folder.
pub fn save_lm(lm: &LavitLm, vars: &VarMap, dir: &Path, dtype: DType) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut cfg = serde_json::to_value(lm.model().config())
        .map_err(|e| Error::invalid("config", e.to_string()))?;
    if let Some(o) = cfg.as_object_mut() {
        o.insert("model_type".into(), "llama".into());
        o.insert(
            "architectures".into(),
            serde_json::json!(["LlamaForCausalLM"]),
        );
    }
    let p = dir.join("config.json");
    let text =
        serde_json::to_string_pretty(&cfg).map_err(|e| Error::invalid("config", e.to_string()))?;
    std::fs::write(&p, text + "\n").map_err(|source| Error::Io { path: p, source })?;
    super::keyframe::save_vars(vars, &dir.join("model.safetensors"), dtype)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn trains_generates_in_range_and_reloads() {
        let layout = VocabLayout {
            text: 4,
            image: 6,
            motion: 5,
        };
        let table = TextTable::compact_from([10, 11, 12]);
        let ex = LmExample {
            text: vec![10, 12],
            clips: vec![
                ClipTokens {
                    keyframe: vec![1, 2, 3],
                    motion: vec![4, 0, 4, 0],
                },
                ClipTokens {
                    keyframe: vec![3, 2, 1],
                    motion: vec![0, 0, 1, 1],
                },
            ],
        };
        let size = LmSize {
            hidden: 16,
            intermediate: 32,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            max_len: 64,
        };
        let t = LmTrainConfig {
            steps: 40,
            batch: 4,
            lr: 1e-2,
            warmup: 5,
            ..LmTrainConfig::default()
        };
        let r = train_lm(
            &size,
            &t,
            &layout,
            &table,
            std::slice::from_ref(&ex),
            &Device::Cpu,
            |_, _| {},
        )
        .unwrap();
        assert!(r.losses[39] < r.losses[0]);
        let g = GenerationConfig {
            keyframe_tokens: 3,
            motion_tokens: 4,
            ..GenerationConfig::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let prefix: Vec<u32> = ex.text.iter().map(|&t| table.slot(t).unwrap()).collect();
        let (clip, stats) = r.lm.generate_clip(&prefix, None, &g, &mut rng).unwrap();
        assert_eq!(clip.keyframe.len(), 3);
        assert_eq!(clip.motion.len(), 4);
        assert!(clip.keyframe.iter().all(|&k| k < 6) && clip.motion.iter().all(|&m| m < 5));
        assert_eq!(stats.motion_tokens, 4);
        let (clip2, _) =
            r.lm.generate_clip(&prefix, Some(&[1, 2, 3]), &g, &mut rng)
                .unwrap();
        assert_eq!(clip2.keyframe, vec![1, 2, 3]);
        let dir = tempfile::tempdir().unwrap();
        save_lm(&r.lm, &r.vars, dir.path(), DType::F32).unwrap();
        let back = LavitLm::load(dir.path(), layout, &Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (c3, _) = back
            .generate_clip(&prefix, Some(&[1, 2, 3]), &g, &mut rng)
            .unwrap();
        assert_eq!(c3.motion, clip2.motion);
    }
}
