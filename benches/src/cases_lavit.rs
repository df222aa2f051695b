//! Registry cases of the Video-LaVIT pipeline on the shipped miniature
//! (`examples/assets/lavit-mini`: 72×40 frames, 24-frame clips, 45 keyframe + 135 motion
//! tokens per clip): tokenizing one clip, the LLM drawing one clip's 135 motion tokens, and the
//! detokenizer rendering one clip. No peer implements Video-LaVIT at this size, so these are
//! reported alone (the LLM's and the UNet's kernels have their own PyTorch rows).

use std::path::PathBuf;

use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vidgen_pipelines::lavit::{LavitPipeline, LavitWorld, PromptSpec};
use vidgen_video_core::Result;

use crate::{Case, Work};

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/assets/lavit-mini")
}

/// The LaVIT cases.
pub fn lavit() -> Vec<Case> {
    vec![
        Case {
            krate: "pipelines",
            name: "lavit_tokenize_clip",
            shape: "LaVIT-mini: one 24-frame 72x40 clip -> block matching + LaVIT preprocessing [2,24,20,36] + motion tokenizer (135 codes) + keyframe VQ (45 codes)",
            amount: None,
            ours: tokenize,
            twins: vec![],
            torch: None,
        },
        Case {
            krate: "pipelines",
            name: "lavit_llm_motion_tokens",
            shape: "LaVIT-mini LLM (4 layers, d 128): prompt + given keyframe -> 135 motion tokens, greedy, no guidance (the shipped setting: one KV-cached stream)",
            amount: None,
            ours: llm,
            twins: vec![],
            torch: None,
        },
        Case {
            krate: "pipelines",
            name: "lavit_detokenize_clip",
            shape: "LaVIT-mini detokenizer: keyframe + 135 motion codes -> 24 frames 72x40 (SVD UNet [32,64] on 8x5x9 latents, 10 EDM steps with guidance 1.5->2.5: 20 UNet calls, VQ decode)",
            amount: None,
            ours: detokenize,
            twins: vec![],
            torch: None,
        },
    ]
}

fn setup(d: &Device) -> Result<(LavitPipeline, vidgen_pipelines::lavit::world::WorldVideo)> {
    let p = LavitPipeline::load(shipped(), d)?;
    let world = LavitWorld::new(p.config().world.clone())?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let spec = PromptSpec::sample(&mut rng);
    let v = world.render(&spec, 1, &mut rng)?;
    Ok((p, v))
}

fn tokenize(d: &Device) -> Result<Work> {
    let (p, v) = setup(d)?;
    Ok(Box::new(move || {
        std::hint::black_box(p.tokenize(&v.video)?);
        Ok(())
    }))
}

fn llm(d: &Device) -> Result<Work> {
    let (p, v) = setup(d)?;
    let kf = p.tokenize_keyframes(&[&v.video.frames()[0]])?;
    let kf = kf.into_iter().next().unwrap_or_default();
    let (_, slots) = p.text_slots(Some(&v.spec.text()))?;
    let g = p.config().generation.clone();
    Ok(Box::new(move || {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        std::hint::black_box(p.lm().generate_clip(&slots, Some(&kf), &g, &mut rng)?);
        Ok(())
    }))
}

fn detokenize(d: &Device) -> Result<Work> {
    let (p, v) = setup(d)?;
    let t = p.tokenize(&v.video)?;
    Ok(Box::new(move || {
        std::hint::black_box(p.detokenize(&t, 0, &mut |_, _| {})?);
        Ok(())
    }))
}

fn vidicl32_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/assets/vidicl-mini32")
}

/// The sharper Vid-ICL miniature (`examples/assets/vidicl-mini32`: 32×32 frames, 64 VQGAN
/// tokens per frame, a 4-layer Llama of width 64) through `VidIclPipeline`: one demo clip of 3
/// frames and a 1-frame query → 4 generated frames (256 tokens, greedy, KV cache), tokenizing
/// and decoding included. Reported alone, like the LaVIT cases (the Llama's own PyTorch row is
/// `llama_decode_25m`).
pub fn vidicl32() -> Vec<Case> {
    vec![Case {
        krate: "pipelines",
        name: "vidicl32_generate_4_frames",
        shape: "Vid-ICL mini32 (VQModel 68 codes + Llama 4x64): 3-frame demo + 1-frame query 32x32 -> 4 frames (256 tokens greedy, KV cache) incl. tokenize + decode",
        amount: None,
        ours: vidicl32_call,
        twins: vec![],
        torch: None,
    }]
}

fn vidicl32_call(d: &Device) -> Result<Work> {
    use vidgen_pipelines::vidicl::{VidIclCall, VidIclPipeline};
    let dir = vidicl32_dir();
    let p = VidIclPipeline::from_pretrained(
        dir.join("tokenizer"),
        dir.join("decoder"),
        candle_core::DType::F32,
        d,
    )?;
    // A bright 8×8 square on the world's background, stepping one 4-px cell right per frame in
    // the demo; the query holds it still.
    let clip = |frames: usize, step: usize| -> Result<candle_core::Tensor> {
        let mut v = Vec::with_capacity(3 * frames * 32 * 32);
        for (c, bg) in [(0usize, 56f32), (1, 60.0), (2, 72.0)] {
            for t in 0..frames {
                for y in 0..32usize {
                    for x in 0..32usize {
                        let x0 = 8 + step * t * 4;
                        let inside = (12..20).contains(&y) && (x0..x0 + 8).contains(&x);
                        let val = if inside { [240.0, 40.0, 40.0][c] } else { bg };
                        v.push(val / 127.5 - 1.0);
                    }
                }
            }
        }
        Ok(candle_core::Tensor::from_vec(v, (1, 3, frames, 32, 32), d)?)
    };
    let demo = clip(3, 1)?;
    let query = clip(1, 0)?;
    let call = VidIclCall::default();
    Ok(Box::new(move || {
        let out = p.call(std::slice::from_ref(&demo), &query, &call, |_| {})?;
        std::hint::black_box(out.frames);
        Ok(())
    }))
}
