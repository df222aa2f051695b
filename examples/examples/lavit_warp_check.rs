//! Does the detokenizer's warped keyframe (`warp_keyframe`) follow the object? For held-out
//! clips of LaVIT-mini's world: the clip's true motion codes, decoded onto the latent grid as
//! the detokenizer gets them, carry the keyframe's latents along; the error against the
//! clip's own latents (object cells) is printed for the static keyframe (no warp), the warp at
//! the factor derived from the config, its opposite sign, and 1.5 / 2 times it (unfaded; the
//! figures are in `examples/assets/lavit-mini/README.md`).
//!
//! ```text
//! cargo run --release -p examples --example lavit_warp_check -- [DIR] [CLIPS]
//! ```

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vidgen_pipelines::lavit::detokenizer::{warp_cells_per_unit, warp_keyframe};
use vidgen_pipelines::lavit::keyframe::frames_to_tensor;
use vidgen_pipelines::lavit::{LavitConfig, LavitPipeline, LavitWorld, PromptSpec};
use vidgen_video_core::Result;

fn main() -> Result<()> {
    let (dir, n) = examples::cli::lavit::example_args(32)?;
    let dev = candle_core::Device::Cpu;
    let cfg = LavitConfig::load(&dir)?;
    let p = LavitPipeline::load(&dir, &dev)?;
    let dc = p.detokenizer().config().clone();
    let k = warp_cells_per_unit(&cfg.motion, &dc);
    println!("derived cells per unit: {k:?}");
    let world = LavitWorld::new(cfg.world.clone())?;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let factors: [(&str, Option<f64>); 5] = [
        ("static keyframe", None),
        ("warp ×1", Some(1.0)),
        ("warp ×-1", Some(-1.0)),
        ("warp ×1.5", Some(1.5)),
        ("warp ×2", Some(2.0)),
    ];
    let mut err = [[0f64; 4]; 5];
    let mut err_r = [[0f64; 4]; 5];
    let mut n_right = 0usize;
    let picks = [0usize, 8, 16, 23];
    for _ in 0..n {
        let spec = PromptSpec::sample(&mut rng);
        let v = world.render(&spec, 1, &mut rng)?;
        let f = v.video.frames();
        let motion = p.tokenize_motion(&v.video)?;
        let m = p.motion_condition(&motion)?;
        let kf = p.keyframe_latents(&f[0], &mut rng)?;
        let refs: Vec<&_> = f.iter().collect();
        let truth = (p
            .keyframe_tokenizer()
            .encode(&frames_to_tensor(&refs, &dev)?)?
            * dc.latent_scale)?; // [F, C, h, w]
                                 // Object cells of each frame: where its latents differ from the flat background's.
        let bgf = vidgen_video_io::Frame::new(
            cfg.world.width,
            cfg.world.height,
            cfg.world
                .background
                .iter()
                .copied()
                .cycle()
                .take(3 * (cfg.world.width * cfg.world.height) as usize)
                .collect(),
        )?;
        let bg = (p
            .keyframe_tokenizer()
            .encode(&frames_to_tensor(&[&bgf], &dev)?)?
            * dc.latent_scale)?; // [1, C, h, w]
        let mask = truth
            .broadcast_sub(&bg)?
            .sqr()?
            .mean_keepdim(1)?
            .gt(0.1)?
            .to_dtype(candle_core::DType::F32)?; // [F, 1, h, w]
        let right = spec.direction.delta().0 > 0;
        if right {
            n_right += 1;
        }
        for (r, (_, fac)) in factors.iter().enumerate() {
            let cand = match fac {
                None => {
                    let (b, c, h, w) = kf.dims4()?;
                    kf.unsqueeze(2)?
                        .broadcast_as((b, c, dc.frames, h, w))?
                        .contiguous()?
                }
                Some(s) => warp_keyframe(&kf, &m, [k[0] * s, k[1] * s], 0.0)?,
            };
            let cand = cand.squeeze(0)?.permute((1, 0, 2, 3))?.contiguous()?; // [F, C, h, w]
            for (q, &t) in picks.iter().enumerate() {
                let d = (cand.get(t)? - truth.get(t)?)?.broadcast_mul(&mask.get(t)?)?;
                let m = mask.get(t)?.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
                let e = d.sqr()?.sum_all()?.to_scalar::<f32>()? as f64 / m;
                err[r][q] += e;
                if right {
                    err_r[r][q] += e;
                }
            }
        }
    }
    println!(
        "{n} clips ({n_right} moving right); squared error of the conditioning against the clip's latents on the object's cells, frames 0 / 8 / 16 / 23: all clips | leftward or vertical | rightward"
    );
    let nl = (n - n_right).max(1) as f64;
    let nr = n_right.max(1) as f64;
    for (r, (label, _)) in factors.iter().enumerate() {
        let a: Vec<String> = (0..4)
            .map(|q| format!("{:6.3}", err[r][q] / n as f64))
            .collect();
        let l: Vec<String> = (0..4)
            .map(|q| format!("{:6.3}", (err[r][q] - err_r[r][q]) / nl))
            .collect();
        let rr: Vec<String> = (0..4)
            .map(|q| format!("{:6.3}", err_r[r][q] / nr))
            .collect();
        println!(
            "{label:<16} {} | {} | {}",
            a.join(" "),
            l.join(" "),
            rr.join(" ")
        );
    }
    Ok(())
}
