#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parity of `AutoencoderKL` with diffusers on every `sd_vae` fixture, strict loads, chunked
//! video encode / decode, and bad-input errors.

use candle_core::{DType, Device, Tensor};
use video_testkit::{fixtures, take};
use vidgen_diffusion_unet3d::sd::AutoencoderKL;
use vidgen_video_core::{Codec, Error, ModelDir, VideoShape};

const ATOL: f64 = 5e-5;
const RTOL: f64 = 1e-4;

#[test]
fn sd_vae_parity_every_fixture() {
    for fx in fixtures("sd_vae") {
        let dev = Device::Cpu;
        let (vae, report) = AutoencoderKL::load(fx.dir.join("model"), DType::F32, &dev).unwrap();
        assert!(report.is_clean(), "{}: {report}", fx.id());
        assert!(
            report.unused.is_empty(),
            "{}: unused keys: {report}",
            fx.id()
        );
        let inp = fx.inputs();
        let out = fx.outputs();
        let x = take(&inp, "x", "inputs");
        let z = take(&inp, "z", "inputs");
        let mut p = fx.parity();
        let moments = vae.moments(x).unwrap();
        p.check(
            "moments",
            &moments,
            take(&out, "moments", "outputs"),
            ATOL,
            RTOL,
        );
        let d = vae.encode_frames(x).unwrap();
        p.check("mean", &d.mean, take(&out, "mean", "outputs"), ATOL, RTOL);
        p.check(
            "logvar",
            &d.logvar,
            take(&out, "logvar", "outputs"),
            ATOL,
            RTOL,
        );
        p.check(
            "std",
            &d.std().unwrap(),
            take(&out, "std", "outputs"),
            ATOL,
            RTOL,
        );
        let dz = vae.decode_frames(z).unwrap();
        p.check(
            "decoded_z",
            &dz,
            take(&out, "decoded_z", "outputs"),
            ATOL,
            RTOL,
        );
        let dm = vae.decode_frames(&d.mean).unwrap();
        p.check(
            "decoded_mean",
            &dm,
            take(&out, "decoded_mean", "outputs"),
            ATOL,
            RTOL,
        );
        let c = p.finish();
        assert!(c.max_rel <= 1e-3);
    }
}

/// Treating the fixture's image batch as one video of N frames: chunked video encode / decode
/// equals the per-frame results for every chunk size.
#[test]
fn sd_vae_video_chunks_equal_frames() {
    for fx in fixtures("sd_vae") {
        let dev = Device::Cpu;
        let (vae, _) = AutoencoderKL::load(fx.dir.join("model"), DType::F32, &dev).unwrap();
        let inp = fx.inputs();
        let x = take(&inp, "x", "inputs");
        let n = x.dim(0).unwrap();
        let video = VideoShape::unfold(x, n).unwrap(); // [1, 3, N, H, W]
        let want = VideoShape::unfold(&vae.encode_frames(x).unwrap().mean, n).unwrap();
        for chunk in [1, 2, 5] {
            let v = vae.clone().with_chunk_frames(chunk);
            let got = v.encode_video(&video).unwrap().mean;
            video_testkit::assert_close("chunked encode", &got, &want, 1e-6, 1e-6);
            let dec = v.decode_video(&got).unwrap();
            let want_dec = VideoShape::unfold(
                &vae.decode_frames(&want.squeeze(0).unwrap().permute((1, 0, 2, 3)).unwrap())
                    .unwrap(),
                n,
            )
            .unwrap();
            video_testkit::assert_close("chunked decode", &dec, &want_dec, 1e-5, 1e-5);
        }
        // Codec: scaled latents round trip through the scaling factor.
        let code = vae.encode(&video).unwrap();
        let sf = vae.config().scaling_factor;
        video_testkit::assert_close("codec scale", &code, &(&want * sf).unwrap(), 1e-6, 1e-6);
        let s = vae.strides();
        assert_eq!(
            (s.temporal, s.spatial),
            (1, x.dim(2).unwrap() / want.dim(3).unwrap())
        );
        let dec = vae.decode(&code).unwrap();
        assert_eq!(dec.dims(), video.dims());
    }
}

#[test]
fn sd_vae_bad_inputs_are_typed_errors() {
    let Some(fx) = fixtures("sd_vae").into_iter().next() else {
        return;
    };
    let dev = Device::Cpu;
    let (vae, _) = AutoencoderKL::load(fx.dir.join("model"), DType::F32, &dev).unwrap();
    let four_ch = Tensor::zeros((1, 4, 2, 16, 16), DType::F32, &dev).unwrap();
    assert!(matches!(
        vae.encode_video(&four_ch),
        Err(Error::InvalidArgument { .. })
    ));
    let rank4 = Tensor::zeros((1, 3, 16, 16), DType::F32, &dev).unwrap();
    assert!(matches!(
        vae.encode_video(&rank4),
        Err(Error::InvalidArgument { .. })
    ));
    let lat3 = Tensor::zeros((1, 3, 2, 4, 4), DType::F32, &dev).unwrap();
    assert!(matches!(
        vae.decode_video(&lat3),
        Err(Error::InvalidArgument { .. })
    ));
    let img = Tensor::zeros((2, 5, 16, 16), DType::F32, &dev).unwrap();
    assert!(matches!(
        vae.moments(&img),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn sd_vae_missing_key_is_named() {
    let Some(fx) = fixtures("sd_vae").into_iter().next() else {
        return;
    };
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
    match AutoencoderKL::load(tmp.path(), DType::F32, &dev) {
        Err(Error::MissingTensor { key, .. }) => assert_eq!(key, "decoder.conv_out.bias"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}
