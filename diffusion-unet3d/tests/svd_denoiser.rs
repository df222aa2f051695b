//! The SVD UNet as a `vidgen_video_core::Denoiser` through samplers' `SvdPrecond`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use video_testkit::{fixtures, take};
use vidgen_diffusion_unet3d::svd::UNetSpatioTemporalConditionModel;
use vidgen_samplers::SvdPrecond;
use vidgen_video_core::{Conditioning, Denoiser, VideoShape};

#[test]
fn svd_precond_wraps_forward_raw() {
    let Some(fx) = fixtures("svd_unet").into_iter().next() else {
        return;
    };
    let (mut unet, _) = UNetSpatioTemporalConditionModel::from_pretrained(
        fx.dir.join("model"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let i = fx.inputs();
    let sample = take(&i, "sample", "inputs"); // [B, F, 8, H, W]
    let (b, f, c, h, w) = sample.dims5().unwrap();
    unet.set_max_frames(f.max(unet.max_frames()));
    let ctx = take(&i, "encoder_hidden_states", "inputs").clone();
    let ids = take(&i, "added_time_ids", "inputs").clone();
    // noisy half and image-latent half, in vidgen's [B, C, T, H, W]
    let video = VideoShape::from_btchw(sample).unwrap();
    let x = video.narrow(1, 0, c / 2).unwrap();
    let image = video.narrow(1, c / 2, c - c / 2).unwrap();
    let cond = Conditioning::none()
        .with_context(ctx.clone())
        .with_concat(image.clone())
        .with_added("added_time_ids", ids.clone());
    let sigma = 5.0f32;
    let den =
        SvdPrecond::new(|x: &Tensor, t: &Tensor, cond: &Conditioning| unet.forward_raw(x, t, cond));
    let got = den
        .denoise(&x, &Tensor::new(&[sigma; 1], &Device::Cpu).unwrap(), &cond)
        .unwrap();
    // By hand: D = x/(σ²+1) − σ/√(σ²+1)·F(x/√(σ²+1); ¼ ln σ)
    let s2 = sigma * sigma + 1.0;
    let x_in = (&x / (s2 as f64).sqrt()).unwrap();
    let inp = VideoShape::to_btchw(&Tensor::cat(&[&x_in, &image], 1).unwrap()).unwrap();
    let t = Tensor::new(&[0.25 * sigma.ln()], &Device::Cpu).unwrap();
    let raw = unet.forward(&inp, &t, &ctx, &ids, None).unwrap();
    let raw = VideoShape::from_btchw(&raw).unwrap();
    let want = ((&x / s2 as f64).unwrap() - (raw * (sigma / s2.sqrt()) as f64).unwrap()).unwrap();
    assert_eq!(got.dims(), &[b, c / 2, f, h, w]);
    let d = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-5, "max diff {d}");
    // missing conditioning is a typed error, not a panic
    assert!(den
        .denoise(
            &x,
            &Tensor::new(&[sigma; 1], &Device::Cpu).unwrap(),
            &Conditioning::none()
        )
        .is_err());
}
