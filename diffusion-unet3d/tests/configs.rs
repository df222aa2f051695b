#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Every config type of the crate, parsed from arbitrary bytes, arbitrary JSON and edits of a
//! real `config.json` (video-testkit's seeded never-panics runs): a typed error or a config,
//! never a panic, through parsing, validation and what is derived from a config without
//! building a model (attention sites, per-block values, strides).

use video_testkit::{assert_config_never_panics, fixtures};
use vidgen_diffusion_unet3d::sd::{
    AutoencoderKLConfig, MotionAdapterConfig, MotionUNetSpec, UNet2DConditionConfig, UNet3DConfig,
    UNetMotionConfig,
};
use vidgen_diffusion_unet3d::svd::{TemporalVaeConfig, UNetSpatioTemporalConfig};
use vidgen_video_core::loading::parse_config;
use vidgen_video_core::Result;

/// `config.json` of the first fixture of `kind`, in model folder `sub`.
fn sample(kind: &str, sub: &str) -> String {
    let fx = fixtures(kind).into_iter().next().unwrap();
    std::fs::read_to_string(fx.dir.join(sub).join("config.json")).unwrap()
}

#[test]
fn unet_spatio_temporal_config_never_panics() {
    let parse = |b: &[u8]| -> Result<usize> {
        let c: UNetSpatioTemporalConfig = parse_config(b, None)?;
        c.validate()?;
        Ok(c.attention_sites()?.len() + c.num_added_ids() + c.spatial_multiple())
    };
    assert_config_never_panics(&sample("svd_unet", "model"), parse);
    assert_config_never_panics(vidgen_diffusion_unet3d::svd::SVD_XT_UNET_CONFIG, parse);
}

#[test]
fn temporal_vae_config_never_panics() {
    assert_config_never_panics(&sample("svd_vae", "model"), |b| -> Result<usize> {
        let c: TemporalVaeConfig = parse_config(b, None)?;
        c.validate()?;
        Ok(c.spatial_stride())
    });
}

#[test]
fn unet3d_config_never_panics() {
    assert_config_never_panics(&sample("unet3d", "model"), |b| -> Result<usize> {
        let c: UNet3DConfig = parse_config(b, None)?;
        c.validate()?;
        Ok(c.attention_sites()?.len() + c.block_heads()?.len() + c.groups()?)
    });
}

#[test]
fn unet2d_condition_config_never_panics() {
    assert_config_never_panics(&sample("animatediff", "unet2d"), |b| -> Result<usize> {
        let c: UNet2DConditionConfig = parse_config(b, None)?;
        c.validate()?;
        Ok(c.attention_sites()?.len() + c.heads()?.len())
    });
}

#[test]
fn unet_motion_config_never_panics() {
    assert_config_never_panics(
        &sample("animatediff", "unet_motion"),
        |b| -> Result<usize> {
            let c: UNetMotionConfig = parse_config(b, None)?;
            let spec = MotionUNetSpec::from_motion_config(&c)?;
            Ok(c.attention_sites()?.len() + spec.attention_sites()?.len())
        },
    );
}

#[test]
fn motion_adapter_config_never_panics() {
    // An adapter is only ever used with a UNet: parse it and merge it with the fixture's.
    let unet: UNet2DConditionConfig =
        parse_config(sample("animatediff", "unet2d").as_bytes(), None).unwrap();
    assert_config_never_panics(
        &sample("animatediff", "motion_adapter"),
        |b| -> Result<usize> {
            let a: MotionAdapterConfig = parse_config(b, None)?;
            let spec = MotionUNetSpec::from_parts(&unet, &a)?;
            Ok(spec.attention_sites()?.len())
        },
    );
}

#[test]
fn autoencoder_kl_config_never_panics() {
    assert_config_never_panics(&sample("sd_vae", "model"), |b| -> Result<usize> {
        let c: AutoencoderKLConfig = parse_config(b, None)?;
        c.validate()?;
        Ok(c.encoder()?.block_out_channels.len()
            + c.decoder()?.block_out_channels.len()
            + c.spatial_stride())
    });
}
