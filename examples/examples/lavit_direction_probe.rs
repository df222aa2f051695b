//! Where a Video-LaVIT pipeline loses the direction of motion: for prompts of the eval's stream
//! with the true keyframe given (the `image` condition of `vidgen lavit eval`), the direction
//! read from three stages of one generation:
//! - `truth field`: the motion tokenizer's decoding of the real clip's motion tokens (the
//!   ceiling of the token path);
//! - `generated field`: its decoding of the LLM's motion tokens (the LLM's share of the loss);
//! - `video`: the detokenizer's clip, read by the eval's scorer (the detokenizer's share: clips
//!   whose field was right and whose video is not).
//!
//! The direction of a field is the 8-way direction nearest to the sum of its vectors at least
//! 0.3× as long as its longest one. The misses are listed as `expected -> read`.
//!
//! ```text
//! cargo run --release -p examples --example lavit_direction_probe [-- DIR [PROMPTS [SEED]]]
//! ```
//! Defaults: the shipped `examples/assets/lavit-mini`, 100 prompts, stream 99 (the stream the
//! generation settings were chosen on).

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, D};
use examples::cli::lavit::shipped_dir;
use vidgen_pipelines::lavit::eval::{episode_rng, read_clip};
use vidgen_pipelines::lavit::{LavitPipeline, LavitWorld, PromptSpec};
use vidgen_video_io::synth::Direction;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The 8-way direction of a decoded motion field (`None`: no motion).
fn field_direction(p: &LavitPipeline, codes: &[u32]) -> Res<Option<Direction>> {
    let m = p.motion_condition(codes)?.squeeze(0)?.flatten_from(1)?; // [2 (x, y), F·h·w]
    let len = m.sqr()?.sum(0)?.sqrt()?;
    let longest = len.max(D::Minus1)?.to_scalar::<f32>()?;
    if longest.is_nan() || longest <= 1e-6 {
        return Ok(None);
    }
    let keep = len.ge(0.3 * longest)?.to_dtype(DType::F32)?.unsqueeze(0)?;
    let v: Vec<f32> = m.broadcast_mul(&keep)?.sum(1)?.to_vec1()?;
    let score = |d: &Direction| {
        let (x, y) = d.delta();
        (x as f32 * v[0] + y as f32 * v[1]) / ((x * x + y * y) as f32).sqrt()
    };
    Ok(Direction::ALL
        .into_iter()
        .max_by(|a, b| score(a).total_cmp(&score(b))))
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map(PathBuf::from).unwrap_or_else(shipped_dir);
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let seed: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(99);
    let p = LavitPipeline::load(&dir, &Device::Cpu)?;
    let cfg = p.config().clone();
    let world = LavitWorld::new(cfg.world.clone())?;
    let (mut truth, mut field, mut video, mut detok_lost) = (0, 0, 0, 0);
    let mut misses: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        // The eval's episode stream and generation seeds.
        let mut rng = episode_rng(seed, i);
        let spec = PromptSpec::sample(&mut rng);
        let real = world.render(&spec, 1, &mut rng)?;
        let keyframe = real.video.frames()[0].clone();
        let g = p.generate(
            Some(&spec.text()),
            Some(&keyframe),
            1,
            seed.wrapping_add(i as u64 * 7919),
            None,
            &mut |_, _| {},
        )?;
        let want = Some(spec.direction);
        let t = field_direction(&p, &p.tokenize_motion(&real.video)?)?;
        let f = field_direction(&p, &g.sequence.clips[0].motion)?;
        let v = read_clip(&g.video, cfg.world.background)?.direction;
        truth += usize::from(t == want);
        field += usize::from(f == want);
        video += usize::from(v == want);
        let key = if f != want {
            format!("field {:?} -> {:?}", spec.direction, f)
        } else if v != want {
            detok_lost += 1;
            format!("video {:?} -> {:?}", spec.direction, v)
        } else {
            continue;
        };
        *misses.entry(key).or_insert(0) += 1;
    }
    let pct = |k: usize| 100.0 * k as f64 / n.max(1) as f64;
    println!("{n} prompts (stream {seed}), true keyframe given:");
    println!("  truth field     {:5.1}%", pct(truth));
    println!("  generated field {:5.1}%", pct(field));
    println!(
        "  video           {:5.1}%  (field right, video wrong: {detok_lost})",
        pct(video)
    );
    for (k, c) in misses {
        println!("  {c:3}  {k}");
    }
    Ok(())
}
