//! Config parsers never panic, whatever the bytes (video-testkit's property checks: arbitrary
//! JSON, objects with the sample's keys, every single-field edit), and a model built from any
//! config a parser accepts either builds or returns an error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device};
use video_testkit::assert_config_never_panics;
use vidgen_clip_encoders::{
    CLIPConfig, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection,
    ImageProcessorConfig,
};

const TEXT: &str = r#"{"vocab_size": 99, "hidden_size": 32, "intermediate_size": 64, "projection_dim": 16,
    "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 16,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05, "pad_token_id": 1, "bos_token_id": 0,
    "eos_token_id": 98, "model_type": "clip_text_model"}"#;

const VISION: &str = r#"{"hidden_size": 32, "intermediate_size": 64, "projection_dim": 16,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_channels": 3, "image_size": 32,
    "patch_size": 8, "hidden_act": "gelu", "layer_norm_eps": 1e-05, "model_type": "clip_vision_model"}"#;

#[test]
fn text_config_never_panics() {
    assert_config_never_panics(TEXT, |b| {
        let cfg = CLIPTextConfig::from_json_bytes(b, None)?;
        // Small enough configs are also built (random weights): typed errors only.
        if cfg.vocab_size * cfg.hidden_size <= 1 << 16
            && cfg.num_hidden_layers <= 4
            && cfg.intermediate_size <= 256
            && cfg.max_position_embeddings * cfg.hidden_size <= 1 << 16
        {
            let vb = video_testkit::seeded_var_builder(0, DType::F32, &Device::Cpu);
            CLIPTextModel::new(&cfg, vb)?;
        }
        Ok::<_, vidgen_video_core::Error>(cfg)
    });
}

#[test]
fn vision_config_never_panics() {
    assert_config_never_panics(VISION, |b| {
        let cfg = CLIPVisionConfig::from_json_bytes(b, None)?;
        if cfg.hidden_size <= 64
            && cfg.num_hidden_layers <= 4
            && cfg.intermediate_size <= 256
            && cfg.image_size.0 <= 64
            && cfg.projection_dim <= 64
        {
            let vb = video_testkit::seeded_var_builder(0, DType::F32, &Device::Cpu);
            CLIPVisionModelWithProjection::new(&cfg, vb)?;
        }
        Ok::<_, vidgen_video_core::Error>(cfg)
    });
}

#[test]
fn combined_config_never_panics() {
    let sample = format!(
        r#"{{"model_type": "clip", "projection_dim": 16, "logit_scale_init_value": 2.6592,
            "text_config": {TEXT}, "vision_config": {VISION}}}"#
    );
    assert_config_never_panics(&sample, |b| CLIPConfig::from_json_bytes(b, None));
}

#[test]
fn preprocessor_config_never_panics() {
    let sample = r#"{"crop_size": {"height": 224, "width": 224}, "do_center_crop": true,
        "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "CLIPImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224}}"#;
    assert_config_never_panics(sample, |b| ImageProcessorConfig::from_json_bytes(b, None));
}
