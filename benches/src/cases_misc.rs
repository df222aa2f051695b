//! Registry cases without a PyTorch peer, kept so regressions show in `BENCHMARKS.md`:
//! sampler steps (network excluded), motion-codec block matching and the Video-LaVIT motion
//! pipeline, and the cost of AID adapters inside an SVD UNet (ratio against the same UNet
//! without them).

use candle_core::{Device, Tensor};
use vidgen_diffusion_unet3d::svd::{UNetSpatioTemporalConditionModel, UNetSpatioTemporalConfig};
use vidgen_motion_codec::{
    estimate_motion, preprocess, BlockMatchConfig, BlockVector, FrameType, FrameVectors,
    LavitConfig, LumaFrame, MotionTokenizer, MotionTokenizerConfig, SearchMethod,
};
use vidgen_samplers::diffusers::{DdimConfig, EulerDiscreteConfig, StepMemory};
use vidgen_samplers::{DdimScheduler, EdmSampler, EulerDiscreteScheduler, Scheduler, Solver};
use vidgen_video_core::{Conditioning, Denoiser, Error, Result};

use crate::{consume, randn, random_model, Amount, Case, Work};

const LATENT: [usize; 5] = [1, 4, 16, 64, 64];

/// Bytes of `passes` elementwise passes over the latent (4 bytes per element and pass).
fn latent_bytes(passes: usize) -> Option<Amount> {
    Some(Amount::Bytes(
        (passes * 4 * LATENT.iter().product::<usize>()) as f64,
    ))
}

/// One solver step on an SVD-sized latent, network excluded.
pub fn samplers() -> Vec<Case> {
    vec![
        Case {
            krate: "samplers",
            name: "edm_euler_step_b1c4t16h64w64",
            shape: "EDM Euler step on [1, 4, 16, 64, 64] f32 (denoiser returns a fixed x0); ~10 passes",
            amount: latent_bytes(10),
            ours: |d| step(d, Which::Euler),
            twins: vec![],
            torch: None,
        },
        Case {
            krate: "samplers",
            name: "edm_heun_step_b1c4t16h64w64",
            shape: "EDM Heun step (two evaluations); ~30 passes",
            amount: latent_bytes(30),
            ours: |d| step(d, Which::Heun),
            twins: vec![],
            torch: None,
        },
        Case {
            krate: "samplers",
            name: "euler_discrete_svd_step_b1c4t16h64w64",
            shape: "diffusers EulerDiscreteScheduler.step, SVD config (v-prediction, Karras σ); ~17 passes",
            amount: latent_bytes(17),
            ours: |d| step(d, Which::EulerDiscrete),
            twins: vec![],
            torch: None,
        },
        Case {
            krate: "samplers",
            name: "ddim_step_b1c4t16h64w64",
            shape: "diffusers DDIMScheduler.step, SD config (ε); ~14 passes",
            amount: latent_bytes(14),
            ours: |d| step(d, Which::Ddim),
            twins: vec![],
            torch: None,
        },
    ]
}

/// A denoiser that costs nothing: returns a fixed x₀ estimate.
struct Fixed(Tensor);
impl Denoiser for Fixed {
    fn denoise(&self, _x: &Tensor, _s: &Tensor, _c: &Conditioning) -> Result<Tensor> {
        Ok(self.0.clone())
    }
}

#[derive(Clone, Copy)]
enum Which {
    Euler,
    Heun,
    EulerDiscrete,
    Ddim,
}

fn json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::config("bench config", e.to_string()))
}

fn step(d: &Device, which: Which) -> Result<Work> {
    let x = randn(&LATENT, 1, 10.0, d)?;
    let x0 = randn(&LATENT, 2, 1.0, d)?;
    let cond = Conditioning::none();
    Ok(match which {
        Which::Euler | Which::Heun => {
            let solver = if matches!(which, Which::Euler) {
                Solver::Euler
            } else {
                Solver::Heun
            };
            let s = EdmSampler::karras(25, 0.002, 80.0, 7.0, solver)?;
            let den = Fixed(x0);
            Box::new(move || consume(&s.step(&den, &x, 3, &cond, None)?.x_next))
        }
        Which::EulerDiscrete => {
            let mut s = EulerDiscreteScheduler::new(json::<EulerDiscreteConfig>(
                r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                    "prediction_type": "v_prediction", "use_karras_sigmas": true,
                    "sigma_min": 0.002, "sigma_max": 700.0, "timestep_spacing": "leading",
                    "timestep_type": "continuous", "steps_offset": 1}"#,
            )?)?;
            s.set_timesteps(25)?;
            Box::new(move || {
                let mut mem = StepMemory::default();
                consume(&s.step(&x0, 3, &x, None, &mut mem)?.prev_sample)
            })
        }
        Which::Ddim => {
            let mut s = DdimScheduler::new(json::<DdimConfig>(
                r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                    "clip_sample": false, "set_alpha_to_one": false, "steps_offset": 1}"#,
            )?)?;
            s.set_timesteps(25)?;
            Box::new(move || {
                let mut mem = StepMemory::default();
                consume(&s.step(&x0, 3, &x, None, &mut mem)?.prev_sample)
            })
        }
    })
}

/// Block matching and the LaVIT motion pipeline.
pub fn motion_codec() -> Vec<Case> {
    vec![
        Case {
            krate: "motion_codec",
            name: "block_match_diamond_256x256",
            shape: "one 256×256 luma frame pair, 16×16 blocks, ±16 px, diamond search with predictors (bytes: both frames)",
            amount: Some(Amount::Bytes(2.0 * 256.0 * 256.0)),
            ours: |_| block_match(SearchMethod::Diamond, false),
            twins: vec![("full_search", |_| block_match(SearchMethod::Full, false))],
            torch: None,
        },
        Case {
            krate: "motion_codec",
            name: "block_match_diamond_halfpel_256x256",
            shape: "same, with half-pel refinement",
            amount: Some(Amount::Bytes(2.0 * 256.0 * 256.0)),
            ours: |_| block_match(SearchMethod::Diamond, true),
            twins: vec![],
            torch: None,
        },
        Case {
            krate: "motion_codec",
            name: "lavit_preprocess_tokenize_24f",
            shape: "24 frames of 320×180 codec vectors -> LaVIT preprocessing -> motion tokenizer (random init, 135 tokens)",
            amount: None,
            ours: lavit,
            twins: vec![],
            torch: None,
        },
    ]
}

fn tex(x: f32, y: f32) -> u8 {
    let v = 128.0
        + 50.0 * (0.21 * x).sin() * (0.17 * y).cos()
        + 35.0 * (0.09 * (x + 1.7 * y)).sin()
        + 25.0 * (0.05 * x - 0.08 * y).cos()
        + 8.0 * ((x * 12.9898 + y * 78.233).sin() * 43758.547).fract();
    v.clamp(0.0, 255.0) as u8
}

fn frame(sx: f32, sy: f32) -> Result<LumaFrame> {
    let data = (0..256 * 256)
        .map(|i| tex((i % 256) as f32 - sx, (i / 256) as f32 - sy))
        .collect();
    LumaFrame::new(256, 256, data)
}

fn block_match(method: SearchMethod, half_pel: bool) -> Result<Work> {
    let (prev, cur) = (frame(0.0, 0.0)?, frame(5.0, -3.0)?);
    let cfg = BlockMatchConfig {
        method,
        half_pel,
        ..Default::default()
    };
    Ok(Box::new(move || {
        std::hint::black_box(estimate_motion(&prev, &cur, &cfg)?);
        Ok(())
    }))
}

fn lavit(d: &Device) -> Result<Work> {
    let frames: Vec<FrameVectors> = (0..24usize)
        .map(|t| FrameVectors {
            width: 320,
            height: 180,
            frame_type: if t == 0 { FrameType::I } else { FrameType::P },
            vectors: if t == 0 {
                Vec::new()
            } else {
                (0..12i32)
                    .flat_map(|r| {
                        (0..20i32).map(move |col| BlockVector {
                            dst_x: col * 16 + 8,
                            dst_y: r * 16 + 8,
                            w: 16,
                            h: 16,
                            dx: ((col + t as i32) % 7) as f32 - 3.0,
                            dy: ((r * 3 + t as i32) % 5) as f32 - 2.0,
                        })
                    })
                    .collect()
            },
        })
        .collect();
    let tok = MotionTokenizer::random(&MotionTokenizerConfig::default(), 0, d)?;
    let dev = d.clone();
    Ok(Box::new(move || {
        let m = preprocess(&frames, &LavitConfig::default())?;
        let clips = m.tokenizer_clips(&dev)?;
        let first = clips
            .first()
            .ok_or_else(|| Error::invalid("clips", "preprocessing gave no clip"))?;
        std::hint::black_box(tok.tokenize(&first.1)?);
        Ok(())
    }))
}

/// AID adapters at every transformer of the peers' small SVD UNet.
pub fn adapters() -> Vec<Case> {
    vec![Case {
        krate: "adapters",
        name: "unet_svd_small_aid",
        shape: "unet_svd_small with AID spatial + short-term + long-term adapters at all 9 transformers (bottleneck C/4); twin: the same UNet without them (ratio < 1 = adapter overhead)",
        amount: None,
        ours: |d| svd_small_adapted(d, true),
        twins: vec![("without_adapters", |d| svd_small_adapted(d, false))],
        torch: None,
    }]
}

fn svd_small_adapted(d: &Device, with: bool) -> Result<Work> {
    let c: UNetSpatioTemporalConfig =
        serde_json::from_value(crate::cases_diffusion::svd_small_config())
            .map_err(|e| Error::config("bench config", e.to_string()))?;
    let m = random_model(d, |vb| UNetSpatioTemporalConditionModel::new(&c, vb))?;
    let set = random_model(d, |vb| {
        vidgen_adapters::AdapterSet::aid_for_attention_sites(
            &c.attention_sites()?,
            &vidgen_adapters::AdapterConfig::default(),
            vb,
        )
    })?;
    let x = randn(&[1, 8, 8, 32, 32], 10, 1.0, d)?;
    let t = Tensor::new(&[0.25f32 * 5f32.ln()], d)?;
    let ctx = randn(&[1, 1, 64], 11, 1.0, d)?;
    let ids = Tensor::new(&[[6f32, 127.0, 0.02]], d)?;
    Ok(Box::new(move || {
        let y = if with {
            m.forward_with_hooks(&x, &t, &ctx, &ids, None, &set)?
        } else {
            m.forward(&x, &t, &ctx, &ids, None)?
        };
        consume(&y)
    }))
}
