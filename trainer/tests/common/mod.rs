//! Tiny models and data shared by the trainer tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use vidgen_trainer::data::ClipSpec;
use vidgen_trainer::{DataConfig, OptimConfig, Recipe, TrainConfig};

/// Makes candle's element-wise thread pool single-threaded for this test process, before
/// any tensor op runs. candle 0.11 spin-waits for its barrier-pool workers; with rayon's
/// threads also busy on a 2-core machine the spinning caller starves the worker it waits for
/// (a tiny training step went from 0.7 s to 3.3 s). Every test calls this first.
pub fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        vidgen_trainer::prefer_rayon_threads();
        // Reuse freed step buffers instead of re-faulting fresh pages (as the CLI does).
        vidgen_trainer::keep_freed_memory();
    });
}

/// The smallest UNet of each family that still exercises every block kind, on pixels
/// (3 channels; SVD: 3 noisy + 3 conditioning).
pub fn tiny_unet(recipe: Recipe) -> serde_json::Value {
    match recipe {
        Recipe::Svd | Recipe::Aid => serde_json::json!({
            "_class_name": "UNetSpatioTemporalConditionModel",
            "in_channels": 6, "out_channels": 3,
            "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
            "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
            "block_out_channels": [32, 32], "layers_per_block": 1,
            "cross_attention_dim": 16, "num_attention_heads": [2, 2],
            "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 24,
            "transformer_layers_per_block": 1, "num_frames": 4
        }),
        Recipe::Unet3d => serde_json::json!({
            "_class_name": "UNet3DConditionModel",
            "in_channels": 3, "out_channels": 3,
            "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
            "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
            "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
            "cross_attention_dim": 16, "attention_head_dim": 4
        }),
        Recipe::Animate | Recipe::Vidiff => serde_json::json!({
            "_class_name": "UNetMotionModel",
            "in_channels": 3, "out_channels": 3,
            "down_block_types": ["CrossAttnDownBlockMotion", "DownBlockMotion"],
            "up_block_types": ["UpBlockMotion", "CrossAttnUpBlockMotion"],
            "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
            "cross_attention_dim": 16, "num_attention_heads": 2,
            "motion_num_attention_heads": 2, "motion_max_seq_length": 8
        }),
    }
}

/// A tiny run of `recipe` on the synthetic world: 8×8 pixels, 2 frames, batch 2.
pub fn tiny_config(recipe: Recipe, out: &Path, steps: usize) -> TrainConfig {
    TrainConfig {
        recipe,
        model: None,
        unet_config: Some(tiny_unet(recipe)),
        data: DataConfig::Synthetic {
            width: 16,
            height: 16,
            frames: 4,
            clips: 8,
            seed: 0,
        },
        clip: ClipSpec {
            frames: 2,
            stride: 2,
            random_start: true,
            width: 8,
            height: 8,
            flip: 0.5,
        },
        out: out.to_path_buf(),
        steps,
        batch: 2,
        optim: OptimConfig {
            lr: 2e-3,
            ..OptimConfig::default()
        },
        progress: false,
        verbose: false,
        aid: vidgen_trainer::recipes::AidSettings {
            dqformer_dim: 16,
            dqformer_heads: 2,
            tokens_per_frame: 2,
            long_term_head_dim: 8,
            ..Default::default()
        },
        motion_heads: 2,
        motion_max_frames: 8,
        ..TrainConfig::default()
    }
}

/// Mean of the first and last `k` logged losses.
pub fn first_last(rows: &[vidgen_trainer::log::LogRow], k: usize) -> (f64, f64) {
    let m = |r: &[vidgen_trainer::log::LogRow]| {
        r.iter().map(|x| x.loss as f64).sum::<f64>() / r.len() as f64
    };
    (m(&rows[..k]), m(&rows[rows.len() - k..]))
}

/// A tensor's elements as bits, for bit-exact comparisons: `u32` as they are, anything else
/// through f32.
pub fn bits(t: &candle_core::Tensor) -> Vec<u32> {
    let flat = t.flatten_all().unwrap();
    match t.dtype() {
        candle_core::DType::U32 => flat.to_vec1::<u32>().unwrap(),
        _ => flat
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect(),
    }
}
