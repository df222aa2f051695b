//! Teacher-forced next-token loss and accuracy of a Video-LaVIT pipeline's LLM, on the keyframe
//! and motion spans of text → video sequences, for three sets of the miniature's world:
//! - `train`: the first 128 of the miniature's 1 536 training videos (the same seeded stream as
//!   `vidgen lavit train --seed 0`);
//! - `heldout`: its 64 held-out clips;
//! - `fresh`: 128 clips from another stream.
//!
//! A gap between `train` and the other two is memorisation: the shipped LLM's first version had
//! motion-token loss 0.07 on `train` and 1.29 on `heldout`.
//!
//! ```text
//! cargo run --release -p examples --example lavit_teacher_forcing [-- PIPELINE_DIR]
//! ```
//! The default folder is the shipped `examples/assets/lavit-mini`.

use candle_core::{DType, Device, Tensor, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vidgen_llama_video::LogitsToKeep;
use vidgen_pipelines::lavit::world::WorldVideo;
use vidgen_pipelines::lavit::{
    ClipTokens, LavitPipeline, LavitWorld, SampleKind, TrainingSample, VocabLayout,
};

/// Sums over one set's target tokens of one span kind.
#[derive(Default)]
struct Tally {
    nll: f64,
    right: usize,
    n: usize,
}

impl Tally {
    fn add(&mut self, log_probs: &[f32], target: u32) {
        let best = log_probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32);
        self.nll -= f64::from(log_probs[target as usize]);
        self.right += usize::from(best == Some(target));
        self.n += 1;
    }

    fn show(&self) -> String {
        let n = self.n.max(1) as f64;
        format!(
            "loss {:.3}, {:.1}% right ({} tokens)",
            self.nll / n,
            100.0 * self.right as f64 / n,
            self.n
        )
    }
}

/// Teacher-forced tallies (motion, keyframe) of `set`.
fn score(
    pipe: &LavitPipeline,
    layout: &VocabLayout,
    set: &[&WorldVideo],
) -> Result<(Tally, Tally), Box<dyn std::error::Error>> {
    let dev = pipe.device();
    let (mut motion, mut keyframe) = (Tally::default(), Tally::default());
    for v in set {
        let kf = pipe
            .tokenize_keyframes(&[&v.video.frames()[0]])?
            .pop()
            .ok_or("no keyframe codes")?;
        let mo = pipe.tokenize_motion(&v.video)?;
        let text = pipe.text_tokenizer().encode(&v.spec.text())?;
        let clip = ClipTokens {
            keyframe: kf,
            motion: mo,
        };
        let s = TrainingSample::new(
            SampleKind::TextToVideo,
            &text,
            &[clip],
            layout,
            &pipe.config().text,
        )?;
        let ids = Tensor::from_vec(s.ids.clone(), (1, s.ids.len()), dev)?;
        let logits = pipe
            .lm()
            .model()
            .forward(&ids, None, LogitsToKeep::All)?
            .to_dtype(DType::F32)?
            .squeeze(0)?;
        let lp: Vec<Vec<f32>> = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2()?;
        for j in 1..s.ids.len() {
            if s.loss_mask[j] == 0 {
                continue;
            }
            let t = s.ids[j];
            if layout.motion_range().contains(&t) {
                motion.add(&lp[j - 1], t);
            } else if layout.image_range().contains(&t) {
                keyframe.add(&lp[j - 1], t);
            }
        }
    }
    Ok((motion, keyframe))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("{}/assets/lavit-mini", env!("CARGO_MANIFEST_DIR")));
    let pipe = LavitPipeline::load(&dir, &dev)?;
    let layout = pipe.config().layout;
    let world = LavitWorld::new(pipe.config().world.clone())?;
    // `train_mini`'s stream at seed 0: 1 536 training videos, then 64 held-out ones.
    let mut rng = ChaCha8Rng::seed_from_u64(0x6c61_7669);
    let videos: Vec<WorldVideo> = (0..1536 + 64)
        .map(|_| world.sample(1, &mut rng))
        .collect::<Result<_, _>>()?;
    let mut fresh_rng = ChaCha8Rng::seed_from_u64(777);
    let fresh: Vec<WorldVideo> = (0..128)
        .map(|_| world.sample(1, &mut fresh_rng))
        .collect::<Result<_, _>>()?;
    let sets: [(&str, Vec<&WorldVideo>); 3] = [
        ("train", videos[..128].iter().collect()),
        ("heldout", videos[1536..].iter().collect()),
        ("fresh", fresh.iter().collect()),
    ];
    for (name, set) in &sets {
        let (m, k) = score(&pipe, &layout, set)?;
        println!("{name:8} motion: {}; keyframe: {}", m.show(), k.show());
    }
    Ok(())
}
