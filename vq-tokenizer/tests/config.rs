//! `VQModelConfig` parsing and validation never panic, whatever the bytes or field values, and a
//! model is built from every config that validates (tiny sizes only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device};
use vidgen_video_core::loading::parse_config;
use vidgen_vq_tokenizer::{VQModel, VQModelConfig};

#[test]
fn vqmodel_config_never_panics() {
    let sample = std::fs::read_to_string(
        video_testkit::fixtures("vqmodel")[0]
            .dir
            .join("model/config.json"),
    )
    .unwrap();
    video_testkit::assert_config_never_panics(&sample, |b| {
        let cfg: VQModelConfig = parse_config(b, None)?;
        cfg.validate()?;
        // Build what validates, when it is small enough to build quickly.
        let small = cfg.block_out_channels.iter().all(|&c| c <= 64)
            && cfg.block_out_channels.len() <= 3
            && cfg.layers_per_block <= 2
            && cfg.num_vq_embeddings <= 4096
            && cfg.embed_dim() <= 64
            && cfg.latent_channels <= 64
            && cfg.in_channels <= 8
            && cfg.out_channels <= 8;
        if small {
            VQModel::new(&cfg, candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu))?;
        }
        Ok::<_, vidgen_video_core::Error>(cfg)
    });
}
