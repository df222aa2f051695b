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
