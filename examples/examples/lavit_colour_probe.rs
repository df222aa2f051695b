//! Where does LaVIT-mini lose the object's colour and shape? For held-out clips of the
//! miniature's world, reads colour and shape (the eval's reader) on frames 0, 8, 16, 23 of:
//! the real clip; the keyframe tokenizer's round trip of frame 0 (codes → picture); the
//! detokenizer's clip from the real frame 0 and the clip's true motion codes; and the same
//! from the decoded keyframe codes (the eval's "true tokens" path).
//!
//! ```text
//! cargo run --release -p examples --example lavit_colour_probe -- [DIR] [CLIPS]
//! ```

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vidgen_pipelines::lavit::keyframe::{frames_to_tensor, tensor_to_frames, KeyframeTokenizer};
use vidgen_pipelines::lavit::pipeline::randn;
use vidgen_pipelines::lavit::world::read_frame;
use vidgen_pipelines::lavit::{LavitConfig, LavitPipeline, LavitWorld, PromptSpec};
use vidgen_video_core::{Result, VideoShape};
use vidgen_video_io::Frame;

const PICKS: [usize; 4] = [0, 8, 16, 23];

#[derive(Default)]
struct Tally {
    colour: [usize; 4],
    shape: [usize; 4],
}

impl Tally {
    fn add(&mut self, frames: &[Frame], spec: &PromptSpec, bg: [u8; 3]) {
        for (k, &i) in PICKS.iter().enumerate() {
            let Some(f) = frames.get(i) else { continue };
            let r = read_frame(f, bg);
            self.colour[k] += usize::from(r.colour == Some(spec.colour));
            self.shape[k] += usize::from(r.shape == Some(spec.shape));
        }
    }
    fn line(&self, label: &str, n: usize) {
        let pct = |v: usize| 100.0 * v as f64 / n.max(1) as f64;
        println!(
            "{label:<34} colour {:5.1} {:5.1} {:5.1} {:5.1}   shape {:5.1} {:5.1} {:5.1} {:5.1}",
            pct(self.colour[0]),
            pct(self.colour[1]),
            pct(self.colour[2]),
            pct(self.colour[3]),
            pct(self.shape[0]),
            pct(self.shape[1]),
            pct(self.shape[2]),
            pct(self.shape[3]),
        );
    }
}

fn main() -> Result<()> {
    let (dir, n) = examples::cli::lavit::example_args(48)?;
    let dev = candle_core::Device::Cpu;
    // The keyframe tokenizer alone when the folder's LLM / detokenizer do not fit it (a
    // freshly pruned tokenizer).
    let cfg = LavitConfig::load(&dir)?;
    let kt = KeyframeTokenizer::load(dir.join("keyframe_tokenizer"), &dev)?;
    let grid = kt.grid(cfg.world.height as usize, cfg.world.width as usize);
    let p = match LavitPipeline::load(&dir, &dev) {
        Ok(p) => Some(p),
        Err(e) => {
            println!("pipeline not loaded ({e}): the keyframe tokenizer alone");
            None
        }
    };
    let world = LavitWorld::new(cfg.world.clone())?;
    let bg = cfg.world.background;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut real, mut round, mut from_real, mut from_codes, mut unquantised) = (
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
    );
    for _ in 0..n {
        let spec = PromptSpec::sample(&mut rng);
        let v = world.render(&spec, 1, &mut rng)?;
        let f = v.video.frames();
        real.add(f, &spec, bg);
        let kf_ids = kt.tokenize(&frames_to_tensor(&[&f[0]], &dev)?)?;
        let kf = tensor_to_frames(&kt.detokenize(&kf_ids, grid, &dev)?)?;
        round.add(&[kf[0].clone()], &spec, bg);
        let Some(p) = &p else { continue };
        let dc = p.detokenizer().config();
        let shape = VideoShape {
            b: 1,
            c: dc.latent_channels,
            t: dc.frames,
            h: dc.grid[0],
            w: dc.grid[1],
        };
        let motion = p.tokenize_motion(&v.video)?;
        let noise = randn(&mut rng, &shape.dims(), &dev)?;
        let mut r2 = rng.clone();
        let a = p.render_clip(&f[0], &motion, &noise, &mut rng, &mut |_, _| {})?;
        from_real.add(&a, &spec, bg);
        // The same clip decoded from the detokenizer's continuous latents without snapping
        // them to the codebook first.
        let kfl = p.keyframe_latents(&f[0], &mut r2)?;
        let lat = p
            .detokenizer()
            .sample(&noise, &kfl, &p.motion_condition(&motion)?, |_, _| {})?;
        let (_, c, t, h, w) = lat.dims5()?;
        let x = (lat.squeeze(0)?.permute((1, 0, 2, 3))?.contiguous()? / dc.latent_scale)?
            .reshape((t, c, h, w))?;
        let u = tensor_to_frames(&p.keyframe_tokenizer().model().decode(&x, true)?)?;
        unquantised.add(&u, &spec, bg);
        let b = p.render_clip(&kf[0], &motion, &noise, &mut rng, &mut |_, _| {})?;
        from_codes.add(&b, &spec, bg);
    }
    println!("{n} held-out clips; % read right on frames 0, 8, 16, 23");
    real.line("real clip", n);
    round.line("keyframe round trip (frame 0)", n);
    if p.is_some() {
        from_real.line("detokenizer, real keyframe", n);
        from_codes.line("detokenizer, keyframe from codes", n);
        unquantised.line("detokenizer, real kf, not snapped", n);
    }
    Ok(())
}
