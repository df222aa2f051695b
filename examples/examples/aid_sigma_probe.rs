//! Where does the AID miniature's base lose the object's shape? One denoiser evaluation of the
//! SVD base on ground-truth episodes noised to σ, decoded and scored like `vidgen aid eval`.
//!
//! `cargo run --release -p examples --example aid_sigma_probe -- DIR [EPISODES]`
//!
//! For each σ of the miniature's 8-step Karras schedule, prints identity / colour / shape kept
//! over the predicted frames of `D(x₀ + σ·n; σ)` (the base's own estimate of the clean clip at
//! that noise level), with the same episodes and scorer as the evaluation.
use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp, Tensor};
use examples::aidmini::eval::{eval_episodes, frames_tensor, score_clip, to_frames};
use examples::aidmini::folder::load_pipeline;
use examples::aidmini::train::clip_pixels;
use examples::aidmini::{Episodes, MiniConfig};
use examples::minis::sprites::parse_shapes;
use vidgen_pipelines::randn_seeded;
use vidgen_samplers::SvdPrecond;
use vidgen_video_core::{Conditioning, Denoiser};

fn main() -> vidgen_video_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(
        args.get(1)
            .map(String::as_str)
            .unwrap_or("examples/assets/aid-mini"),
    );
    let n_eps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let cfg = MiniConfig::load(&dir)?;
    let pipe = load_pipeline(&dir)?;
    let svd = &pipe.svd;
    let dev = Device::Cpu;
    let shapes = parse_shapes(&cfg.shapes)?;
    let eps = Episodes::new(&cfg)?;
    let episodes = eval_episodes(&eps, 2024, n_eps)?;
    let (n, k) = (cfg.frames, cfg.cond_frames);
    let sf = svd.vae.config().scaling_factor;
    let unet = &svd.unet;
    let net = |x: &Tensor, c: &Tensor, cond: &Conditioning| unet.forward_raw(x, c, cond);
    let den = SvdPrecond::new(net);
    let sigmas = [0.02, 0.11, 0.45, 1.43, 3.87, 9.23, 20.0];
    let mut tallies = vec![[0usize; 3]; sigmas.len()];
    let mut per_frame = vec![vec![0usize; n]; sigmas.len()];
    for (ci, chunk) in episodes.chunks(25).enumerate() {
        let b = chunk.len();
        let x = Tensor::cat(
            &chunk
                .iter()
                .map(|e| frames_tensor(&e.frames, &dev))
                .collect::<vidgen_video_core::Result<Vec<_>>>()?,
            0,
        )?; // [B·N, 3, H, W] in [0, 1]
        let z = svd.vae.encode_frames(&((&x * 2.0)? - 1.0)?)?.mode().clone();
        let (_, c, h, w) = z.dims4()?;
        // forward_raw's layout: [B, C, T, h, w].
        let z = z
            .reshape((b, n, c, h, w))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?;
        let x0 = (&z * sf)?;
        let cond_lat = z.i((.., .., 0..1))?.repeat((1, 1, n, 1, 1))?.contiguous()?;
        let first = x
            .reshape((b, n, 3, cfg.size as usize, cfg.size as usize))?
            .i((.., 0))?;
        let emb = svd
            .image_encoder
            .forward(&clip_pixels(&first.contiguous()?, &svd.feature_extractor)?)?
            .image_embeds
            .ok_or_else(|| vidgen_video_core::Error::invalid("clip", "no embeds"))?;
        let mut cond = Conditioning::none().with_context(emb.unsqueeze(1)?);
        cond.concat = Some(cond_lat);
        cond.added.insert(
            "added_time_ids".into(),
            Tensor::new(&[[6f32, 127.0, 0.02]], &dev)?.repeat((b, 1))?,
        );
        for (si, &s) in sigmas.iter().enumerate() {
            let noise = randn_seeded(1000 + ci as u64 * 31 + si as u64, x0.dims(), &dev)?;
            let xn = (&x0 + (noise * s)?)?;
            let sig = Tensor::new(&[s as f32], &dev)?.repeat(b)?;
            let d = den.denoise(&xn, &sig, &cond)?;
            let d = d.permute((0, 2, 1, 3, 4))?.contiguous()?; // decode takes [B, F, C, h, w]
            let dec = svd.decode(&d, None, vidgen_pipelines::DecodeMode::Chunked)?;
            for (j, e) in chunk.iter().enumerate() {
                let f = to_frames(&dec.get(j)?.to_dtype(DType::F32)?)?;
                let sc = score_clip(&f, k, &shapes, cfg.radius as f32);
                let (col, sh) = (sc.colour == Some(e.colour), sc.shape == Some(e.shape));
                tallies[si][0] += usize::from(col && sh);
                tallies[si][1] += usize::from(col);
                tallies[si][2] += usize::from(sh);
                for (fi, fr) in f.iter().enumerate() {
                    let r = examples::minis::score::read_object(
                        fr,
                        &shapes,
                        &[
                            cfg.radius as f32 - 1.0,
                            cfg.radius as f32 - 0.5,
                            cfg.radius as f32,
                            cfg.radius as f32 + 0.5,
                            cfg.radius as f32 + 1.0,
                        ],
                    );
                    per_frame[si][fi] += usize::from(r.map(|r| r.shape) == Some(e.shape));
                }
            }
        }
    }
    println!("sigma | identity | colour | shape | shape per frame (0..{n})");
    for (si, s) in sigmas.iter().enumerate() {
        let t = tallies[si];
        let pct = |v: usize| 100.0 * v as f64 / n_eps as f64;
        let pf: Vec<String> = per_frame[si]
            .iter()
            .map(|&v| format!("{:.0}", pct(v)))
            .collect();
        println!(
            "{s:5} | {:5.1}% | {:5.1}% | {:5.1}% | {}",
            pct(t[0]),
            pct(t[1]),
            pct(t[2]),
            pf.join(" ")
        );
    }
    Ok(())
}
