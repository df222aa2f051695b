//! `final/unet/` of a VIDiff / AnimateDiff run that inflated a 2-D UNet is a diffusers
//! `UNetMotionModel` folder: its config describes the inflated model, so the trained motion
//! modules load with it (strictly: no missing or unused key) instead of being dropped by a
//! 2-D config.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use candle_core::{DType, Device};
use vidgen_diffusion_unet3d::sd::UNetMotionModel;
use vidgen_trainer::Recipe;

#[test]
fn an_inflated_2d_unet_exports_as_a_motion_unet_with_its_trained_motion_modules() {
    common::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::tiny_config(Recipe::Vidiff, dir.path(), 2);
    cfg.unet_config = Some(serde_json::json!({
        "_class_name": "UNet2DConditionModel",
        "in_channels": 3, "out_channels": 3,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
        "cross_attention_dim": 16, "attention_head_dim": 2,
        "flip_sin_to_cos": true, "freq_shift": 0
    }));
    let out = vidgen_trainer::train(&cfg).unwrap();
    let unet = out.final_dir.expect("a final/ folder").join("unet");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(unet.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["_class_name"], "UNetMotionModel");
    assert_eq!(c["down_block_types"][0], "CrossAttnDownBlockMotion");
    assert_eq!(c["motion_max_seq_length"], 8);
    let (m, report) = UNetMotionModel::from_pretrained(&unet, DType::F32, &Device::Cpu).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(
        m.spec().motion.is_some(),
        "the motion modules are part of the model"
    );
    // The motion modules trained away from their zero output projections.
    let w = candle_core::safetensors::load(
        unet.join("diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let proj = w
        .iter()
        .find(|(k, _)| k.contains("motion_modules") && k.ends_with("proj_out.weight"))
        .map(|(_, t)| {
            t.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .expect("a motion module's proj_out");
    assert!(proj > 0.0);
}
