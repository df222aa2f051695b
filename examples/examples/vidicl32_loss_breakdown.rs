//! Where does a 32×32 Vid-ICL decoder's training loss go? Teacher-forced cross-entropy per
//! frame of paired training episodes (demo structure), summed per frame (nats), and for the
//! continuation split into tokens that changed from the frame before and tokens that did not.
//!
//! ```text
//! cargo run --release -p examples --example vidicl32_loss_breakdown -- DIR [EPISODES]
//! ```

use std::path::PathBuf;

use candle_core::{DType, Tensor};
use examples::vidicl::recipes::prompt32;
use examples::vidicl::sharp::Sharp;
use vidgen_llama_video::{LossOn, TrainBatch};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::seeded_rng;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).ok_or_else(|| Error::invalid("args", "DIR"))?);
    let n: usize = args
        .get(2)
        .map_or(Ok(32), |s| s.parse())
        .map_err(|e| Error::invalid("EPISODES", format!("{e}")))?;
    let sharp = Sharp::load(&dir)?;
    let world = &sharp.world;
    let c = world.config().clone();
    let tpf = c.tokens_per_frame();
    let frames = c.sequence_frames();
    let mut rng = seeded_rng(99);
    let mut per_frame = vec![0f64; frames];
    let mut changed = (0f64, 0usize);
    let mut unchanged = (0f64, 0usize);
    for _ in 0..n {
        let e = world.train_episode(&mut rng)?;
        let p = prompt32(&sharp.tokenizer, &[&e], true, true, None)?;
        let base = TrainBatch::from_prompts(&[p], LossOn::AllVideo)?;
        let ids = base.ids().to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let row = &ids[0];
        let len = row.len();
        let eval = |w: Vec<f32>| -> Result<f64> {
            let k: f32 = w.iter().sum();
            let wt = Tensor::from_vec(w, (1, len), &candle_core::Device::Cpu)?;
            let b = base.clone().with_loss_weights(&wt)?;
            let l = sharp
                .lm
                .loss(&b)?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?;
            Ok(l as f64 * k as f64)
        };
        for (f, acc) in per_frame.iter_mut().enumerate() {
            let start = len - (frames - f) * tpf;
            let mut w = vec![0f32; len];
            for x in w.iter_mut().skip(start.max(1)).take(tpf) {
                *x = 1.0;
            }
            if w.iter().sum::<f32>() > 0.0 {
                *acc += eval(w)?;
            }
        }
        let q0 = len - (c.gen_frames) * tpf;
        let mut wc = vec![0f32; len];
        let mut wu = vec![0f32; len];
        for j in q0..len {
            if row[j] != row[j - tpf] {
                wc[j] = 1.0;
            } else {
                wu[j] = 1.0;
            }
        }
        let kc = wc.iter().sum::<f32>() as usize;
        let ku = wu.iter().sum::<f32>() as usize;
        if kc > 0 {
            changed.0 += eval(wc)?;
            changed.1 += kc;
        }
        if ku > 0 {
            unchanged.0 += eval(wu)?;
            unchanged.1 += ku;
        }
    }
    println!("nats per frame (mean over {n} episodes):");
    for (f, s) in per_frame.iter().enumerate() {
        println!("  frame {f}: {:.2}", s / n as f64);
    }
    println!(
        "continuation: changed tokens {:.1} per episode, {:.3} nats each; unchanged {:.1}, {:.4} nats each",
        changed.1 as f64 / n as f64,
        changed.0 / changed.1.max(1) as f64,
        unchanged.1 as f64 / n as f64,
        unchanged.0 / unchanged.1.max(1) as f64
    );
    Ok(())
}
