//! Registry cases of `diffusion-unet3d`: one denoiser evaluation of the SVD UNet (the parity
//! fixture and the peers' `unet_svd_small` config), of the inflated SD `UNet3DConditionModel`
//! (`unet3d_small`), and the temporal VAE decode of 25 frames. Configs, shapes and timestep
//! values mirror `../shared/peers/README.md`; weights are random (they do not change the work).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use vidgen_diffusion_unet3d::sd::{UNet3DConditionModel, UNet3DConfig};
use vidgen_diffusion_unet3d::svd::{
    AutoencoderKLTemporalDecoder, TemporalVaeConfig, UNetSpatioTemporalConditionModel,
    UNetSpatioTemporalConfig,
};
use vidgen_video_core::{Error, Result};

use crate::{consume, randn, random_model, Amount, Case, Work};

/// The peers' model FLOPs (`FlopCounterMode`: matmul, conv and SDPA only, a lower bound).
const SVD_FIXTURE_FLOPS: f64 = 0.82e9;
const SVD_SMALL_FLOPS: f64 = 78.1e9;
const UNET3D_SMALL_FLOPS: f64 = 49.4e9;
const VAE_25F_FLOPS: f64 = 143.5e9;

/// UNet forwards and the temporal VAE decode.
pub fn diffusion_unet3d() -> Vec<Case> {
    vec![
        Case {
            krate: "diffusion_unet3d",
            name: "unet_svd_fixture",
            shape: "svd_unet/base fixture (626 k params): sample [2, 3, 8, 16, 12] (B, F, C, H, W)",
            amount: Some(Amount::Flops(SVD_FIXTURE_FLOPS)),
            ours: svd_fixture,
            twins: vec![],
            torch: Some("unet_svd_fixture"),
        },
        Case {
            krate: "diffusion_unet3d",
            name: "unet_svd_small",
            shape: "SVD UNet, channels [64, 128, 128, 128], head dim 64 (23.3 M params): sample [1, 8, 8, 32, 32]",
            amount: Some(Amount::Flops(SVD_SMALL_FLOPS)),
            ours: svd_small,
            twins: vec![],
            torch: Some("unet_svd_small"),
        },
        Case {
            krate: "diffusion_unet3d",
            name: "unet3d_small",
            shape: "UNet3DConditionModel, channels [32, 64, 64, 64] (5.40 M params): sample [1, 4, 16, 32, 32], context [1, 77, 64]",
            amount: Some(Amount::Flops(UNET3D_SMALL_FLOPS)),
            ours: unet3d_small,
            twins: vec![],
            torch: Some("unet3d_small"),
        },
        Case {
            krate: "diffusion_unet3d",
            name: "vae_svd_decode_25f",
            shape: "AutoencoderKLTemporalDecoder, channels [32, 64, 64]: z [25, 4, 32, 32] -> [25, 3, 128, 128], one pass (PyTorch: its primary chunk25)",
            amount: Some(Amount::Flops(VAE_25F_FLOPS)),
            ours: |d| vae_decode(d, 25),
            twins: vec![("ours_streamed_chunk1", |d| vae_decode(d, 1))],
            torch: Some("vae_svd_decode_25f"),
        },
    ]
}

fn cfg<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::config("bench config", e.to_string()))
}

/// `[B, F, C, H, W]` and friends from the `svd_unet/base` fixture beside the repository.
fn svd_fixture(d: &Device) -> Result<Work> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/svd_unet/base");
    let (m, _) =
        UNetSpatioTemporalConditionModel::from_pretrained(dir.join("model"), DType::F32, d)?;
    let inp = candle_core::safetensors::load(dir.join("inputs.safetensors"), d)?;
    let get = |k: &str| -> Result<Tensor> {
        inp.get(k).cloned().ok_or_else(|| Error::MissingTensor {
            key: k.into(),
            file: dir.join("inputs.safetensors").display().to_string(),
            nearest: Vec::new(),
        })
    };
    let (x, t, c, ids) = (
        get("sample")?,
        get("timestep")?,
        get("encoder_hidden_states")?,
        get("added_time_ids")?,
    );
    Ok(Box::new(move || {
        consume(&m.forward(&x, &t, &c, &ids, None)?)
    }))
}

/// The peers' `unet_svd_small` config (`UNetSpatioTemporalConditionModel(**cfg)`).
pub fn svd_small_config() -> serde_json::Value {
    serde_json::json!({
        "sample_size": 32, "in_channels": 8, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal",
                             "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
        "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal",
                           "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
        "block_out_channels": [64, 128, 128, 128], "addition_time_embed_dim": 32,
        "projection_class_embeddings_input_dim": 96, "layers_per_block": 2,
        "cross_attention_dim": 64, "transformer_layers_per_block": 1,
        "num_attention_heads": [1, 2, 2, 2], "num_frames": 8
    })
}

fn svd_small(d: &Device) -> Result<Work> {
    let c: UNetSpatioTemporalConfig = cfg(svd_small_config())?;
    let m = random_model(d, |vb| UNetSpatioTemporalConditionModel::new(&c, vb))?;
    let x = randn(&[1, 8, 8, 32, 32], 10, 1.0, d)?;
    let t = Tensor::new(&[0.25f32 * 5f32.ln()], d)?;
    let ctx = randn(&[1, 1, 64], 11, 1.0, d)?;
    let ids = Tensor::new(&[[6f32, 127.0, 0.02]], d)?;
    Ok(Box::new(move || {
        consume(&m.forward(&x, &t, &ctx, &ids, None)?)
    }))
}

fn unet3d_small(d: &Device) -> Result<Work> {
    let c: UNet3DConfig = cfg(serde_json::json!({
        "sample_size": 32, "in_channels": 4, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
        "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
        "block_out_channels": [32, 64, 64, 64], "layers_per_block": 2, "norm_num_groups": 32,
        "cross_attention_dim": 64, "attention_head_dim": 8
    }))?;
    let m = random_model(d, |vb| UNet3DConditionModel::new(&c, vb))?;
    let x = randn(&[1, 4, 16, 32, 32], 10, 1.0, d)?;
    let t = Tensor::new(&[500i64], d)?;
    let ctx = randn(&[1, 77, 64], 11, 1.0, d)?;
    Ok(Box::new(move || consume(&m.forward(&x, &t, &ctx)?)))
}

fn vae_decode(d: &Device, chunk: usize) -> Result<Work> {
    let c: TemporalVaeConfig = cfg(serde_json::json!({
        "in_channels": 3, "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "block_out_channels": [32, 64, 64], "layers_per_block": 1, "latent_channels": 4,
        "sample_size": 128
    }))?;
    let vae = random_model(d, |vb| AutoencoderKLTemporalDecoder::new(&c, vb))?;
    // [B, C, T, h, w] = [1, 4, 25, 32, 32]: the peer's z [25, 4, 32, 32] as one video
    let z = randn(&[1, 4, 25, 32, 32], 10, 1.0, d)?;
    Ok(Box::new(move || {
        let mut last = None;
        vae.decode_streaming(&z, chunk, |_, t| {
            last = Some(t);
            Ok(())
        })?;
        match last {
            Some(t) => consume(&t),
            None => Ok(()),
        }
    }))
}
