//! How canonical are LaVIT-mini's keyframe codes? For clips of the miniature's world, tokenizes
//! frames 0 and 8 of each clip (the object moved 8 px) and counts the tokens that differ, and
//! the distinct codes that cells far from the object (pure background in both frames) take
//! across clips. A flat background should be one code per cell position.
//!
//! ```text
//! cargo run --release -p examples --example lavit_keyframe_codes -- [DIR] [CLIPS]
//! ```

use std::collections::{HashMap, HashSet};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vidgen_pipelines::lavit::{LavitPipeline, LavitWorld, PromptSpec};
use vidgen_video_core::Result;

fn main() -> Result<()> {
    let (dir, n) = examples::cli::lavit::example_args(64)?;
    let p = LavitPipeline::load(&dir, &candle_core::Device::Cpu)?;
    let world = LavitWorld::new(p.config().world.clone())?;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (mut changed, mut far_cells) = (0usize, 0usize);
    let mut far_codes: HashMap<usize, HashSet<u32>> = HashMap::new();
    let (w, h) = (
        p.config().world.width as usize,
        p.config().world.height as usize,
    );
    let (gw, gh) = (w / 8, h / 8);
    for _ in 0..n {
        let spec = PromptSpec::sample(&mut rng);
        let v = world.render(&spec, 1, &mut rng)?;
        let f = v.video.frames();
        let ids = p.tokenize_keyframes(&[&f[0], &f[8]])?;
        let (a, b) = (&ids[0], &ids[1]);
        changed += a.iter().zip(b).filter(|(x, y)| x != y).count();
        let (c0, c1) = (v.centers[0], v.centers[8]);
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            let (cx, cy) = ((i % gw) as f32 * 8.0 + 4.0, (i / gw) as f32 * 8.0 + 4.0);
            let far = |c: (f32, f32)| (cx - c.0).abs() > 20.0 || (cy - c.1).abs() > 20.0;
            if far(c0) && far(c1) {
                far_cells += 1;
                far_codes.entry(i).or_default().insert(x);
                far_codes.entry(i).or_default().insert(y);
            }
        }
    }
    let mean_codes =
        far_codes.values().map(|s| s.len()).sum::<usize>() as f64 / far_codes.len().max(1) as f64;
    println!(
        "{n} clips, {gw}×{gh} = {} tokens per keyframe: {:.1} tokens differ between frames 0 and 8; \
         background cells (> 20 px from the object in both): {far_cells} seen, {:.2} distinct codes per cell position across clips",
        gw * gh,
        changed as f64 / n as f64,
        mean_codes
    );
    Ok(())
}
