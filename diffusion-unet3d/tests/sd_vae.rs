#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parity of `AutoencoderKL` with diffusers on every `sd_vae` fixture, strict loads, chunked
//! video encode / decode, and bad-input errors.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_non_finite, with_nan, ModelParity};
use video_testkit::{fixtures, take, Fixture};
use vidgen_diffusion_unet3d::sd::AutoencoderKL;
use vidgen_video_core::{Codec, Error, ModelDir, VideoShape};

fn load(fx: &Fixture) -> AutoencoderKL {
    let (vae, report) =
        AutoencoderKL::from_pretrained(fx.dir.join("model"), DType::F32, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", fx.id()));
    assert!(report.is_clean(), "{}: {report}", fx.id());
    assert!(
        report.unused.is_empty(),
        "{}: unused keys: {report}",
        fx.id()
    );
    vae
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn sd_vae_parity_every_fixture() {
    for fx in fixtures("sd_vae") {
        let vae = load(&fx);
        let inp = fx.inputs();
        let x = take(&inp, "x", "inputs");
        let z = take(&inp, "z", "inputs");
        let mut p = ModelParity::new(&fx);
        let (moments, trace) = vae.moments_traced(x).unwrap();
        assert_eq!(
            bits(&moments),
            bits(&vae.moments(x).unwrap()),
            "traced = plain"
        );
        p.trace(&trace);
        p.output("moments", &moments);
        let d = vae.encode_frames(x).unwrap();
        p.output("mean", &d.mean);
        p.output("logvar", &d.logvar);
        p.output("std", &d.std().unwrap());
        let (dz, trace) = vae.decode_frames_traced(z).unwrap();
        assert_eq!(
            bits(&dz),
            bits(&vae.decode_frames(z).unwrap()),
            "traced = plain"
        );
        p.trace(&trace);
        p.output("decoded_z", &dz);
        p.output("decoded_mean", &vae.decode_frames(&d.mean).unwrap());
        p.finish();
    }
}

/// Treating the fixture's image batch as one video of N frames: chunked video encode / decode
/// equals the per-frame results for every chunk size, and every shape follows from the config
/// (`⌊H/s⌋` latents, `s·h` decoded, `s = 2^(levels−1)`).
#[test]
fn sd_vae_video_chunks_equal_frames() {
    for fx in fixtures("sd_vae") {
        let vae = load(&fx);
        let cfg = vae.config().clone();
        let st = cfg.spatial_stride();
        let inp = fx.inputs();
        let x = take(&inp, "x", "inputs");
        let (n, _, hx, wx) = x.dims4().unwrap();
        let video = VideoShape::unfold(x, n).unwrap(); // [1, 3, N, H, W]
        let s = VideoShape::of(&video).unwrap();
        let (h, w) = (hx / st, wx / st);
        let want = VideoShape::unfold(&vae.encode_frames(x).unwrap().mean, n).unwrap();
        assert_eq!(want.dims(), &[1, cfg.latent_channels, n, h, w]);
        assert_eq!(vae.code_dims(s), (n, h, w));
        let s_codec = vae.strides();
        assert_eq!((s_codec.temporal, s_codec.spatial), (1, st));
        let want_dec = VideoShape::unfold(
            &vae.decode_frames(&VideoShape::fold(&want).unwrap().0)
                .unwrap(),
            n,
        )
        .unwrap();
        assert_eq!(want_dec.dims(), &[1, cfg.out_channels, n, h * st, w * st]);
        for chunk in [1, 2, n.max(1) - 1, n, n + 3] {
            let v = vae.clone().with_chunk_frames(chunk);
            let got = v.encode_video(&video).unwrap().mean;
            video_testkit::assert_close("chunked encode", &got, &want, 1e-6, 1e-6);
            let dec = v.decode_video(&got).unwrap();
            video_testkit::assert_close("chunked decode", &dec, &want_dec, 1e-5, 1e-5);
        }
        // Codec: scaled latents round trip through the scaling factor.
        let code = vae.encode(&video).unwrap();
        let sf = cfg.scaling_factor;
        video_testkit::assert_close("codec scale", &code, &(&want * sf).unwrap(), 1e-6, 1e-6);
        let dec = vae.decode(&code).unwrap();
        assert_eq!(dec.dims(), want_dec.dims());
    }
}

#[test]
fn sd_vae_bad_inputs_are_typed_errors() {
    for fx in fixtures("sd_vae") {
        let dev = Device::Cpu;
        let vae = load(&fx);
        let cfg = vae.config();
        let (cin, lat) = (cfg.in_channels, cfg.latent_channels);
        let wrong_ch = Tensor::zeros((1, cin + 1, 2, 16, 16), DType::F32, &dev).unwrap();
        assert!(matches!(
            vae.encode_video(&wrong_ch),
            Err(Error::InvalidArgument { .. })
        ));
        let rank4 = Tensor::zeros((1, cin, 16, 16), DType::F32, &dev).unwrap();
        assert!(matches!(
            vae.encode_video(&rank4),
            Err(Error::InvalidArgument { .. })
        ));
        let wrong_lat = Tensor::zeros((1, lat + 1, 2, 4, 4), DType::F32, &dev).unwrap();
        assert!(matches!(
            vae.decode_video(&wrong_lat),
            Err(Error::InvalidArgument { .. })
        ));
        let img = Tensor::zeros((2, cin + 2, 16, 16), DType::F32, &dev).unwrap();
        assert!(matches!(
            vae.moments(&img),
            Err(Error::InvalidArgument { .. })
        ));
    }
}

/// NaN in the images or the latents is caught where encode / decode hand their result out.
#[test]
fn sd_vae_nan_is_a_non_finite_error() {
    let fx = fixtures("sd_vae").into_iter().next().unwrap();
    let vae = load(&fx);
    let inp = fx.inputs();
    let x = take(&inp, "x", "inputs");
    let z = take(&inp, "z", "inputs");
    assert_non_finite(vae.moments(&with_nan(x)), "AutoencoderKL");
    assert_non_finite(vae.decode_frames(&with_nan(z)), "AutoencoderKL");
    let n = x.dim(0).unwrap();
    let video = VideoShape::unfold(&with_nan(x), n).unwrap();
    assert_non_finite(vae.encode(&video), "AutoencoderKL");
    let zv = VideoShape::unfold(&with_nan(z), z.dim(0).unwrap()).unwrap();
    assert_non_finite(vae.decode_video(&zv), "AutoencoderKL");
}

#[test]
fn sd_vae_missing_key_is_named() {
    let fx = fixtures("sd_vae").into_iter().next().unwrap();
    // Drop one tensor from the checkpoint and load strictly.
    let md = ModelDir::open(fx.dir.join("model")).unwrap();
    let dev = Device::Cpu;
    let mut ts = std::collections::HashMap::new();
    for t in md.tensors() {
        if t.name != "decoder.conv_out.bias" {
            ts.insert(t.name.clone(), md.get(&t.name, &dev).unwrap());
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fx.dir.join("model/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    candle_core::safetensors::save(&ts, tmp.path().join("diffusion_pytorch_model.safetensors"))
        .unwrap();
    match AutoencoderKL::from_pretrained(tmp.path(), DType::F32, &dev) {
        Err(Error::MissingTensor { key, .. }) => assert_eq!(key, "decoder.conv_out.bias"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}
