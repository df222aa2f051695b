//! Decodes 25 frames of 4×32×32 latents with the small temporal VAE of the peer case
//! `vae_svd_decode_25f` (block_out_channels [32, 64, 64], random weights), either in one pass
//! or streamed one frame at a time, for peak-RSS measurement:
//!
//! ```text
//! /usr/bin/time -v target/release/examples/svd_vae_decode_rss single
//! /usr/bin/time -v target/release/examples/svd_vae_decode_rss stream [chunk]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
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
    // Random init through a VarMap, then a model on detached copies: plain tensors, as a
    // loaded checkpoint holds (variables would select the autograd paths of the norms).
    let vm = VarMap::new();
    AutoencoderKLTemporalDecoder::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    let weights = vm
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let vae = AutoencoderKLTemporalDecoder::new(
        &cfg,
        VarBuilder::from_tensors(weights, DType::F32, &dev),
    )?;
    let z = Tensor::randn(0f32, 1.0, (1, 4, 25, 32, 32), &dev)?;
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
