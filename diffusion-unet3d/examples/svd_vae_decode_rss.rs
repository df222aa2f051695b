//! Decodes 25 frames of 4×32×32 latents with the small temporal VAE of the peer case
//! `vae_svd_decode_25f` (block_out_channels [32, 64, 64], random weights), either in one pass
//! or streamed one frame at a time, for peak-RSS measurement:
//!
//! ```text
//! /usr/bin/time -v target/release/examples/svd_vae_decode_rss single
//! /usr/bin/time -v target/release/examples/svd_vae_decode_rss stream [chunk]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{DType, Device};
use vidgen_diffusion_unet3d::svd::{AutoencoderKLTemporalDecoder, TemporalVaeConfig};

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
        (1, 4, 25, 32, 32),
        "latents",
        candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        },
    )?;
    let t0 = std::time::Instant::now();
    let mut frames = 0;
    if mode == "single" {
        frames = vae.decode_chunked(&z, 25)?.dims()[2];
    } else {
        vae.decode_streaming(&z, chunk, |_, t| {
            frames += t.dims()[2];
            Ok(())
        })?;
    }
    println!(
        "{mode}: decoded {frames} frames in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
