//! Times the SVD UNet forward of the "small" benchmark config (block_out_channels
//! [64, 128, 128, 128], 8 frames of 32×32 latents, head_dim 64), random weights.
//!
//! ```text
//! cargo run --release -p diffusion-unet3d --example svd_unet_small -- [repeats]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use diffusion_unet3d::svd::{UNetSpatioTemporalConditionModel, UNetSpatioTemporalConfig};

/// The peer's `SVD_SMALL_CONFIG` (`../shared/peers/torch_peers.py`, case `unet_svd_small`).
pub fn small_config() -> UNetSpatioTemporalConfig {
    serde_json::from_str(
        r#"{"sample_size": 32, "in_channels": 8, "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal",
                                 "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
            "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal",
                               "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
            "block_out_channels": [64, 128, 128, 128], "addition_time_embed_dim": 32,
            "projection_class_embeddings_input_dim": 96, "layers_per_block": 2,
            "cross_attention_dim": 64, "transformer_layers_per_block": 1,
            "num_attention_heads": [1, 2, 2, 2], "num_frames": 8}"#,
    )
    .expect("valid config")
}

fn main() -> video_core::Result<()> {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let unet = UNetSpatioTemporalConditionModel::new(&small_config(), vb)?;
    let sample = Tensor::randn(0f32, 1.0, (1, 8, 8, 32, 32), &dev)?;
    let t = Tensor::new(&[0.25f32 * 5f32.ln()], &dev)?;
    let ctx = Tensor::randn(0f32, 1.0, (1, 1, 64), &dev)?;
    let ids = Tensor::new(&[[6f32, 127.0, 0.02]], &dev)?;
    let _ = unet.forward(&sample, &t, &ctx, &ids, None)?; // warm-up
    let mut times = Vec::new();
    for _ in 0..repeats {
        let t0 = Instant::now();
        let out = unet.forward(&sample, &t, &ctx, &ids, None)?;
        times.push(t0.elapsed().as_secs_f64());
        assert_eq!(out.dims(), &[1, 8, 4, 32, 32]);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "unet_svd_small forward: median {:.1} ms, min {:.1} ms over {repeats} runs",
        times[times.len() / 2] * 1e3,
        times[0] * 1e3
    );
    Ok(())
}
