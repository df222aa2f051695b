//! The adapters' configs (AdapterConfig, DQFormerConfig, MultimodalInstructionConfig) never
//! panic when parsed and validated, whatever the bytes or field values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use vidgen_adapters::{AdapterConfig, DQFormerConfig, MultimodalInstructionConfig};
use vidgen_video_core::loading::parse_config;

#[test]
fn adapter_config_never_panics() {
    video_testkit::assert_config_never_panics(
        r#"{"bottleneck_ratio": 0.25, "short_term_kernel": [3, 3, 3], "long_term_head_dim": 64}"#,
        |b| {
            let c: AdapterConfig = parse_config(b, None)?;
            c.validate()?;
            let _ = c.bottleneck(320);
            Ok::<_, vidgen_video_core::Error>(c)
        },
    );
}

#[test]
fn dqformer_config_never_panics() {
    video_testkit::assert_config_never_panics(
        r#"{"dim": 64, "heads": 8, "num_frames": 4, "tokens_per_frame": 4, "text_dim": 32,
            "visual_dim": 32, "state_dim": 32, "context_dim": 16, "ffn_mult": 4}"#,
        |b| {
            let c: DQFormerConfig = parse_config(b, None)?;
            c.validate()?;
            Ok::<_, vidgen_video_core::Error>(c)
        },
    );
}

#[test]
fn instruction_config_never_panics() {
    video_testkit::assert_config_never_panics(
        r#"{"image_dim": 32, "hidden_dim": 64, "text_dim": 16}"#,
        |b| {
            let c: MultimodalInstructionConfig = parse_config(b, None)?;
            c.validate()?;
            Ok::<_, vidgen_video_core::Error>(c)
        },
    );
}
