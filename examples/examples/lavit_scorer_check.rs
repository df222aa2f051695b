//! Checks the LaVIT eval's direction scorer on clips whose answer is known: the world's clips
//! as rendered (sharp) and through the keyframe tokenizer's round trip (blurred, as generated
//! clips are), read from frame pairs 1, 2, 3 and 4 frames apart. The eval reads pairs
//! `SCORER_STRIDE` (3) apart: at 1 apart, integer-pel block matching of a soft-edged object
//! moving one pixel per frame splits a diagonal step into axis votes.
//!
//! ```text
//! cargo run --release -p examples --example lavit_scorer_check [-- DIR [CLIPS [SEED]]]
//! ```
//! Defaults: the shipped `examples/assets/lavit-mini` (its keyframe tokenizer and world), 200
//! clips, stream 99.

use std::path::PathBuf;

use candle_core::Device;
use examples::cli::lavit::shipped_dir;
use vidgen_pipelines::lavit::eval::{episode_rng, read_clip_with_stride, SCORER_STRIDE};
use vidgen_pipelines::lavit::keyframe::{frames_to_tensor, tensor_to_frames};
use vidgen_pipelines::lavit::{LavitPipeline, LavitWorld, PromptSpec};
use vidgen_video_io::Video;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map(PathBuf::from).unwrap_or_else(shipped_dir);
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let seed: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(99);
    let dev = Device::Cpu;
    let p = LavitPipeline::load(&dir, &dev)?;
    let cfg = p.config().clone();
    let world = LavitWorld::new(cfg.world.clone())?;
    let grid = p.keyframe_grid();
    let strides = [1usize, 2, 3, 4];
    // Per stride: sharp right, blurred right, blurred diagonals right.
    let mut right = vec![[0usize; 3]; strides.len()];
    let mut diagonals = 0;
    for i in 0..n {
        let mut rng = episode_rng(seed, i);
        let spec = PromptSpec::sample(&mut rng);
        let real = world.render(&spec, 1, &mut rng)?;
        let refs: Vec<_> = real.video.frames().iter().collect();
        let codes = p
            .keyframe_tokenizer()
            .tokenize(&frames_to_tensor(&refs, &dev)?)?;
        let blurred = Video::new(
            tensor_to_frames(&p.keyframe_tokenizer().detokenize(&codes, grid, &dev)?)?,
            cfg.world.fps,
        )?;
        let (dx, dy) = spec.direction.delta();
        let diagonal = dx != 0 && dy != 0;
        diagonals += usize::from(diagonal);
        let want = Some(spec.direction);
        for (k, &s) in strides.iter().enumerate() {
            let a = read_clip_with_stride(&real.video, cfg.world.background, s)?.direction == want;
            let b = read_clip_with_stride(&blurred, cfg.world.background, s)?.direction == want;
            right[k][0] += usize::from(a);
            right[k][1] += usize::from(b);
            right[k][2] += usize::from(b && diagonal);
        }
    }
    println!("{n} clips (stream {seed}), {diagonals} diagonal; the eval reads pairs {SCORER_STRIDE} apart");
    println!("pairs apart | sharp | round trip | round trip, diagonals");
    for (k, s) in strides.iter().enumerate() {
        let [a, b, c] = right[k];
        println!("{s:11} | {a:5} | {b:10} | {c:5} / {diagonals}");
    }
    Ok(())
}
