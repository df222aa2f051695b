//! Registry cases of `vidgen-trainer`: one training step (forward + backward + AdamW, batch 1)
//! of the peers' small UNets, against `benches/peers/train_peers.py` doing the same in PyTorch:
//! `unet_svd_small` frozen with AID adapters training, and `unet3d_small` fully trainable.
//! Inputs and configs as the forward cases of `cases_diffusion`; loss = mean((out − target)²).

use candle_core::{DType, Device, Tensor};
use vidgen_adapters::{AdapterConfig, AdapterSet};
use vidgen_diffusion_unet3d::sd::{UNet3DConditionModel, UNet3DConfig};
use vidgen_diffusion_unet3d::svd::{UNetSpatioTemporalConditionModel, UNetSpatioTemporalConfig};
use vidgen_trainer::{OptimConfig, ParamStore, Selection, Trainer};
use vidgen_video_core::{Error, Result};

use crate::{randn, Case, Work};

/// Training-step cases.
pub fn trainer() -> Vec<Case> {
    vec![
        Case {
            krate: "trainer",
            name: "train_step_unet_svd_small_aid",
            shape: "unet_svd_small (23.3 M, frozen) + AID adapters at all 9 transformers (371 k trainable): forward + backward + AdamW, sample [1, 8, 8, 32, 32]",
            amount: None,
            ours: svd_aid_step,
            twins: vec![],
            torch: Some("train_step_unet_svd_small_aid"),
        },
        Case {
            krate: "trainer",
            name: "train_step_unet3d_small",
            shape: "unet3d_small (5.40 M, all trainable): forward + backward + AdamW, sample [1, 4, 16, 32, 32], context [1, 77, 64]",
            amount: None,
            ours: unet3d_step,
            twins: vec![],
            torch: Some("train_step_unet3d_small"),
        },
    ]
}

fn cfg<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::config("bench config", e.to_string()))
}

fn optim() -> OptimConfig {
    // PyTorch's step: AdamW(lr 1e-4, weight decay 0.01), no clipping, no accumulation.
    OptimConfig {
        lr: 1e-4,
        grad_clip: None,
        ..OptimConfig::default()
    }
}

fn mse(out: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok((out - target)?.sqr()?.mean_all()?)
}

fn svd_aid_step(d: &Device) -> Result<Work> {
    let c: UNetSpatioTemporalConfig = cfg(crate::cases_diffusion::svd_small_config())?;
    let store = ParamStore::new(0, d)
        .create(Selection::all())
        .trainable(Selection::parse(&["adapters"]));
    let vb = store.var_builder(DType::F32);
    let m = UNetSpatioTemporalConditionModel::new(&c, vb.clone())?;
    let set = AdapterSet::aid_for_attention_sites(
        &c.attention_sites()?,
        &AdapterConfig::default(),
        vb.pp("adapters"),
    )?;
    let mut tr = Trainer::new(store, &optim(), 1_000_000, 0)?;
    let x = randn(&[1, 8, 8, 32, 32], 10, 1.0, d)?;
    let t = Tensor::new(&[0.25f32 * 5f32.ln()], d)?;
    let ctx = randn(&[1, 1, 64], 11, 1.0, d)?;
    let ids = Tensor::new(&[[6f32, 127.0, 0.02]], d)?;
    let target = randn(&[1, 8, 4, 32, 32], 12, 1.0, d)?;
    Ok(Box::new(move || {
        tr.step(&mut |_, _| {
            mse(
                &m.forward_with_hooks(&x, &t, &ctx, &ids, None, &set)?,
                &target,
            )
        })?;
        Ok(())
    }))
}

fn unet3d_step(d: &Device) -> Result<Work> {
    let c: UNet3DConfig = cfg(serde_json::json!({
        "sample_size": 32, "in_channels": 4, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
        "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
        "block_out_channels": [32, 64, 64, 64], "layers_per_block": 2, "norm_num_groups": 32,
        "cross_attention_dim": 64, "attention_head_dim": 8
    }))?;
    let store = ParamStore::new(0, d)
        .create(Selection::all())
        .trainable(Selection::all());
    let m = UNet3DConditionModel::new(&c, store.var_builder(DType::F32))?;
    let mut tr = Trainer::new(store, &optim(), 1_000_000, 0)?;
    let x = randn(&[1, 4, 16, 32, 32], 10, 1.0, d)?;
    let t = Tensor::new(&[500i64], d)?;
    let ctx = randn(&[1, 77, 64], 11, 1.0, d)?;
    let target = randn(&[1, 4, 16, 32, 32], 12, 1.0, d)?;
    Ok(Box::new(move || {
        tr.step(&mut |_, _| mse(&m.forward(&x, &t, &ctx)?, &target))?;
        Ok(())
    }))
}
