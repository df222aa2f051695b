//! Decodes 25 frames of 4×32×32 latents with the small temporal VAE of the peer case
//! `vae_svd_decode_25f` (block_out_channels [32, 64, 64], random weights) in one of four ways,
//! for peak-RSS measurement, or compares the chunked decodes with the single pass:
//!
//! ```text
//! /usr/bin/time -v target/release/examples/svd_vae_decode_rss single
//! /usr/bin/time -v target/release/examples/svd_vae_decode_rss stream [chunk]   # diffusers' chunking
//! /usr/bin/time -v target/release/examples/svd_vae_decode_rss exact [chunk]    # decode_exact
//! target/release/examples/svd_vae_decode_rss compare
//! ```
//!
//! `compare` prints the largest difference from the single pass of diffusers' chunked decode,
//! of a halo decode (each chunk decoded as its own clip with `k` neighbouring frames on each
//! side, keeping its own frames) and of the exact chunked decode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{DType, Device, Tensor};
use vidgen_diffusion_unet3d::svd::{AutoencoderKLTemporalDecoder, TemporalVaeConfig};

const T: usize = 25;

/// Each `chunk` frames decoded as their own clip together with up to `halo` frames on each side.
fn halo_decode(
    vae: &AutoencoderKLTemporalDecoder,
    z: &Tensor,
    chunk: usize,
    halo: usize,
) -> vidgen_video_core::Result<Tensor> {
    let mut parts = Vec::new();
    let mut t0 = 0;
    while t0 < T {
        let n = chunk.min(T - t0);
        let (a, b) = (t0.saturating_sub(halo), (t0 + n + halo).min(T));
        let win = vae.decode_chunked(&z.narrow(2, a, b - a)?, b - a)?;
        parts.push(win.narrow(2, t0 - a, n)?);
        t0 += n;
    }
    Ok(Tensor::cat(&parts, 2)?)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> vidgen_video_core::Result<f32> {
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
}

fn main() -> vidgen_video_core::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "single".into());
    let chunk: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let cfg: TemporalVaeConfig = serde_json::from_str(
        r#"{"in_channels": 3, "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "block_out_channels": [32, 64, 64], "layers_per_block": 1, "latent_channels": 4,
            "sample_size": 128}"#,
    )
    .expect("valid config");
    let dev = Device::Cpu;
    // Seeded random weights (the same every run) as plain tensors, as a loaded checkpoint
    // holds (variables would select the autograd paths of the norms).
    let vb = video_testkit::seeded_var_builder(0, DType::F32, &dev);
    let vae = AutoencoderKLTemporalDecoder::new(&cfg, vb.pp("vae"))?;
    let z = vb.get_with_hints(
        (1, 4, T, 32, 32),
        "latents",
        candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        },
    )?;
    let t0 = std::time::Instant::now();
    let mut frames = 0;
    match mode.as_str() {
        "single" => frames = vae.decode_chunked(&z, T)?.dims()[2],
        "stream" => vae.decode_streaming(&z, chunk, |_, t| {
            frames += t.dims()[2];
            Ok(())
        })?,
        "exact" => vae.decode_exact_streaming(&z, chunk, |_, t| {
            frames += t.dims()[2];
            Ok(())
        })?,
        "compare" => {
            let single = vae.decode_chunked(&z, T)?;
            println!(
                "max |single| = {:.3}",
                max_abs_diff(&single, &single.zeros_like()?)?
            );
            for chunk in [1, 5, 8] {
                let d = max_abs_diff(&vae.decode_chunked(&z, chunk)?, &single)?;
                let e = max_abs_diff(&vae.decode_exact(&z, chunk)?, &single)?;
                print!("chunk {chunk}: diffusers chunked {d:.3e}, exact {e:.3e}, halo");
                for halo in [1, 2, 4, 8, 12] {
                    let h = max_abs_diff(&halo_decode(&vae, &z, chunk, halo)?, &single)?;
                    print!(" {halo}: {h:.3e}");
                }
                println!();
            }
            return Ok(());
        }
        other => {
            return Err(vidgen_video_core::Error::invalid(
                "mode",
                format!("{other}: expected single, stream, exact or compare"),
            ))
        }
    }
    println!(
        "{mode}: decoded {frames} frames in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
