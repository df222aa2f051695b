//! Parity of SVD's `AutoencoderKLTemporalDecoder` with diffusers on every `svd_vae` fixture,
//! strict loading, chunked / streaming decode and the `Codec` impl.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
mod common;

use common::{assert_non_finite, max_abs, with_nan, ModelParity};
use video_testkit::{fixtures, take, Fixture};
use vidgen_diffusion_unet3d::svd::AutoencoderKLTemporalDecoder;
use vidgen_video_core::{Codec, VideoShape};

fn load(fx: &Fixture) -> AutoencoderKLTemporalDecoder {
    let (m, report) = AutoencoderKLTemporalDecoder::from_pretrained(
        fx.dir.join("model"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", fx.id()));
    assert!(
        report.is_clean() && report.unused.is_empty(),
        "{}: {report}",
        fx.id()
    );
    m
}

fn frames(fx: &Fixture) -> usize {
    fx.meta_at("num_frames")
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
        .expect("meta.json num_frames")
}

#[test]
fn parity_every_fixture() {
    for fx in fixtures("svd_vae") {
        let m = load(&fx);
        let f = frames(&fx);
        let i = fx.inputs();
        let (x, z) = (take(&i, "x", "inputs"), take(&i, "z", "inputs"));
        let mut p = ModelParity::new(&fx);
        p.intermediate("encoder", &m.encoder().forward(x).unwrap());
        let moments = m.moments(x).unwrap();
        p.intermediate("quant_conv", &moments);
        p.output("moments", &moments);
        let post = m.encode_frames(x).unwrap();
        p.output("mean", &post.mean);
        p.output("logvar", &post.logvar);
        p.output("std", &post.std().unwrap());
        let (dz, trace) = m.decode_traced(z, f).unwrap();
        assert_eq!(bits(&dz), bits(&m.decode(z, f).unwrap()), "traced = plain");
        p.trace(&trace);
        p.output("decoded_z", &dz);
        let dm = m.decode(&post.mean, f).unwrap();
        p.output("decoded_mean", &dm);
        p.finish();
    }
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
fn streaming_equals_chunked_and_one_chunk_equals_single_pass() {
    for fx in fixtures("svd_vae") {
        let m = load(&fx);
        let f = frames(&fx);
        let z = take(&fx.inputs(), "z", "inputs").clone();
        let single = m.decode(&z, f).unwrap(); // [B·F, 3, H, W]
        let zv = VideoShape::unfold(&z, f).unwrap(); // [B, 4, F, h, w]
        for chunk in 1..=f + 1 {
            let chunked = m.decode_chunked(&zv, chunk).unwrap();
            let mut parts = Vec::new();
            let mut starts = Vec::new();
            m.decode_streaming(&zv, chunk, |t0, t| {
                starts.push(t0);
                parts.push(t);
                Ok(())
            })
            .unwrap();
            assert_eq!(starts, (0..f).step_by(chunk).collect::<Vec<_>>());
            let streamed = Tensor::cat(&parts, 2).unwrap();
            let a = chunked.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = streamed.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
            // The reference pipeline's loop: each chunk decoded as its own clip.
            let mut reference = Vec::new();
            for t0 in (0..f).step_by(chunk) {
                let n = chunk.min(f - t0);
                let (fr, _) = VideoShape::fold(&zv.narrow(2, t0, n).unwrap()).unwrap();
                reference.push(VideoShape::unfold(&m.decode(&fr, n).unwrap(), n).unwrap());
            }
            let reference = Tensor::cat(&reference, 2).unwrap();
            let d = max_abs(&(&chunked - &reference).unwrap());
            assert_eq!(
                d, 0.0,
                "chunk {chunk}: differs from per-chunk decode by {d}"
            );
            let vs_single = max_abs(&(VideoShape::fold(&chunked).unwrap().0 - &single).unwrap());
            if chunk >= f {
                assert_eq!(vs_single, 0.0, "one chunk must equal the single pass");
            } else {
                // temporal layers see only their chunk: documented to differ
                println!(
                    "{} chunk {chunk}: max |chunked − single| = {vs_single:.3e}",
                    fx.id()
                );
                assert!(vs_single > 0.0);
            }
        }
    }
}

/// The exact chunked decode equals the single pass for every chunk size (where diffusers'
/// chunked decode differs by the order of the output), for one video and for a batch of two;
/// the streaming form hands the chunks out in order; bad arguments are errors.
#[test]
fn exact_chunked_decode_equals_the_single_pass() {
    for fx in fixtures("svd_vae") {
        let m = load(&fx);
        let f = frames(&fx);
        let z = take(&fx.inputs(), "z", "inputs").clone();
        let single = m.decode(&z, f).unwrap(); // [B·F, 3, H, W]
        let scale = max_abs(&single).max(1.0);
        let zv = VideoShape::unfold(&z, f).unwrap(); // [B, 4, F, h, w]
                                                     // A second, different video in the batch: statistics are per video.
        let z2 = Tensor::cat(&[&zv, &(&zv * -0.5).unwrap()], 0).unwrap();
        let (z2f, _) = VideoShape::fold(&z2).unwrap();
        let single2 = VideoShape::unfold(&m.decode(&z2f, f).unwrap(), f).unwrap();
        for chunk in 1..=f + 1 {
            let exact = m.decode_exact(&zv, chunk).unwrap();
            let d = max_abs(&(VideoShape::fold(&exact).unwrap().0 - &single).unwrap());
            let diffusers = max_abs(
                &(VideoShape::fold(&m.decode_chunked(&zv, chunk).unwrap())
                    .unwrap()
                    .0
                    - &single)
                    .unwrap(),
            );
            println!(
                "{} chunk {chunk}: max |exact − single| = {d:.3e}, max |diffusers chunked − \
                 single| = {diffusers:.3e}",
                fx.id()
            );
            assert!(
                d <= 2e-5 * scale,
                "{} chunk {chunk}: exact decode differs from the single pass by {d}",
                fx.id()
            );
            let d2 = max_abs(&(m.decode_exact(&z2, chunk).unwrap() - &single2).unwrap());
            assert!(d2 <= 2e-5 * scale, "batch of 2, chunk {chunk}: {d2}");
            let mut starts = Vec::new();
            let mut parts = Vec::new();
            m.decode_exact_streaming(&zv, chunk, |t0, t| {
                starts.push(t0);
                parts.push(t);
                Ok(())
            })
            .unwrap();
            assert_eq!(starts, (0..f).step_by(chunk).collect::<Vec<_>>());
            assert_eq!(
                bits(&Tensor::cat(&parts, 2).unwrap()),
                bits(&exact),
                "streamed = collected"
            );
        }
        assert!(m.decode_exact(&zv, 0).is_err());
        let bad = Tensor::zeros((1, 5, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(m.decode_exact(&bad, 1).is_err());
        let e = m
            .decode_exact_streaming(&zv, 1, |_, _| {
                Err(vidgen_video_core::Error::invalid("sink", "full"))
            })
            .unwrap_err();
        assert!(e.to_string().contains("full"), "{e}");
    }
}

/// The `Codec` impl on the fixture's video and on the video cropped by one pixel (sizes the
/// downsampling does not divide): shapes computed from the config alone (`⌊H/s⌋` latents,
/// `s·⌊H/s⌋` decoded), the scaling factor, and typed errors.
#[test]
fn codec_roundtrip_shapes_and_scaling() {
    for fx in fixtures("svd_vae") {
        let m = load(&fx);
        let f = frames(&fx);
        let cfg = m.config().clone();
        let st = cfg.spatial_stride();
        let x = take(&fx.inputs(), "x", "inputs").clone();
        let full = VideoShape::unfold(&x, f).unwrap(); // [B, C, F, H, W]
        let s0 = VideoShape::of(&full).unwrap();
        let mut videos = vec![full.clone()];
        if s0.h > st && s0.w > st {
            videos.push(
                full.narrow(3, 0, s0.h - 1)
                    .unwrap()
                    .narrow(4, 0, s0.w - 1)
                    .unwrap(),
            );
        }
        for video in videos {
            let s = VideoShape::of(&video).unwrap();
            let (h, w) = (s.h / st, s.w / st);
            assert_eq!(m.code_dims(s), (s.t, h, w));
            let code = m.encode(&video).unwrap();
            assert_eq!(code.dims(), &[s.b, cfg.latent_channels, s.t, h, w]);
            let (frames_in, _) = VideoShape::fold(&video).unwrap();
            let mean = VideoShape::unfold(&m.encode_frames(&frames_in).unwrap().mean, f).unwrap();
            let d = max_abs(&((&code / cfg.scaling_factor).unwrap() - &mean).unwrap());
            assert!(d < 1e-6, "{}: code ≠ mean·scaling_factor ({d})", fx.id());
            let want = [s.b, cfg.out_channels, s.t, h * st, w * st];
            let dec = Codec::decode(&m, &code).unwrap();
            assert_eq!(dec.dims(), &want);
            let m1 = m.clone().with_decode_chunk_size(Some(1));
            assert_eq!(Codec::decode(&m1, &code).unwrap().dims(), &want);
            assert!(m.decode_chunked(&code, 0).is_err());
        }
        let bad = Tensor::zeros(
            (1, cfg.latent_channels + 1, 2, 4, 4),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        assert!(m.decode_chunked(&bad, 1).is_err());
    }
}

/// NaN in the images or the latents is caught where encode / decode hand their result out.
#[test]
fn nan_is_a_non_finite_error() {
    let fx = fixtures("svd_vae").into_iter().next().unwrap();
    let m = load(&fx);
    let f = frames(&fx);
    let i = fx.inputs();
    let (x, z) = (take(&i, "x", "inputs"), take(&i, "z", "inputs"));
    assert_non_finite(m.moments(&with_nan(x)), "AutoencoderKLTemporalDecoder");
    assert_non_finite(m.decode(&with_nan(z), f), "AutoencoderKLTemporalDecoder");
    let zv = VideoShape::unfold(&with_nan(z), f).unwrap();
    assert_non_finite(m.decode_chunked(&zv, 1), "AutoencoderKLTemporalDecoder");
    assert_non_finite(m.decode_exact(&zv, 1), "AutoencoderKLTemporalDecoder");
    let video = VideoShape::unfold(&with_nan(x), f).unwrap();
    assert_non_finite(m.encode(&video), "AutoencoderKLTemporalDecoder");
}
