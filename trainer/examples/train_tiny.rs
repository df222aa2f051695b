//! Trains a tiny UNet on the synthetic moving-shapes world for a few steps, in pixel space
//! (no VAE, no CLIP: captions through `HashText`, the first frame through `PooledImage`).
//!
//! ```text
//! cargo run --release -p vidgen-trainer --example train_tiny -- [svd|aid|unet3d|animate|vidiff] [steps] [out]
//! ```
//!
//! Writes `loss.csv`, `loss.png`, `checkpoints/` and `final/` into `out` (default
//! `target/train_tiny/<recipe>`); run it again with the same arguments and `--resume` as a 4th
//! argument to continue from the last checkpoint.

use std::path::PathBuf;

use vidgen_trainer::data::ClipSpec;
use vidgen_trainer::{train, DataConfig, LrDecay, OptimConfig, Recipe, TrainConfig};

fn tiny_unet_config(recipe: Recipe) -> serde_json::Value {
    match recipe {
        Recipe::Svd | Recipe::Aid => serde_json::json!({
            "_class_name": "UNetSpatioTemporalConditionModel",
            "in_channels": 6, "out_channels": 3,
            "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
            "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
            "block_out_channels": [32, 32], "layers_per_block": 1,
            "cross_attention_dim": 16, "num_attention_heads": [2, 2],
            "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 24,
            "transformer_layers_per_block": 1, "num_frames": 8
        }),
        Recipe::Unet3d => serde_json::json!({
            "_class_name": "UNet3DConditionModel",
            "in_channels": 3, "out_channels": 3,
            "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
            "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
            "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
            "cross_attention_dim": 16, "attention_head_dim": 4
        }),
        Recipe::Animate | Recipe::Vidiff => serde_json::json!({
            "_class_name": "UNetMotionModel",
            "in_channels": 3, "out_channels": 3,
            "down_block_types": ["CrossAttnDownBlockMotion", "DownBlockMotion"],
            "up_block_types": ["UpBlockMotion", "CrossAttnUpBlockMotion"],
            "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
            "cross_attention_dim": 16, "num_attention_heads": 2,
            "motion_num_attention_heads": 2, "motion_max_seq_length": 16
        }),
    }
}

fn main() -> vidgen_video_core::Result<()> {
    vidgen_trainer::prefer_rayon_threads();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let recipe = Recipe::parse(args.first().map_or("svd", String::as_str))?;
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let out = args
        .get(2)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/train_tiny").join(recipe.name()));
    let resume = args.get(3).is_some_and(|a| a == "--resume");
    let cfg = TrainConfig {
        recipe,
        model: None,
        unet_config: Some(tiny_unet_config(recipe)),
        data: DataConfig::Synthetic {
            width: 32,
            height: 32,
            frames: 8,
            clips: 32,
            seed: 0,
        },
        clip: ClipSpec {
            frames: 4,
            stride: 2,
            random_start: true,
            width: 16,
            height: 16,
            flip: 0.5,
        },
        out: out.clone(),
        steps,
        batch: 2,
        optim: OptimConfig {
            lr: 1e-3,
            warmup: 5,
            decay: LrDecay::Cosine,
            ema_decay: Some(0.99),
            ..OptimConfig::default()
        },
        checkpoint_every: Some(10),
        resume: resume.then(|| out.clone()),
        aid: vidgen_trainer::recipes::AidSettings {
            dqformer_dim: 32,
            dqformer_heads: 4,
            tokens_per_frame: 2,
            long_term_head_dim: 8,
            ..Default::default()
        },
        motion_heads: 2,
        ..TrainConfig::default()
    };
    let o = train(&cfg)?;
    let rows = &o.summary.rows;
    let mean = |r: &[vidgen_trainer::log::LogRow]| {
        r.iter().map(|x| x.loss as f64).sum::<f64>() / r.len().max(1) as f64
    };
    let k = (rows.len() / 3).max(1);
    println!(
        "{}: {} steps, {:.2} steps/s, loss {:.4} (first {k}) -> {:.4} (last {k}); wrote {}",
        recipe.name(),
        o.summary.steps_done,
        o.summary.steps_per_second(),
        mean(&rows[..k.min(rows.len())]),
        mean(&rows[rows.len().saturating_sub(k)..]),
        o.out.display()
    );
    Ok(())
}
