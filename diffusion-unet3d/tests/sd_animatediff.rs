#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parity of `UNetMotionModel` (AnimateDiff) with diffusers on every `animatediff` fixture, by
//! both loading paths; the 2-D UNet per frame; inflation and widening identities; errors.

use candle_core::{DType, Device, Tensor};
mod common;

use common::{assert_non_finite, with_nan, ModelParity};
use video_testkit::{fixtures, take};
use vidgen_diffusion_unet3d::sd::{InflateConfig, UNetMotionModel};
use vidgen_video_core::{Error, VideoShape};

const ATOL: f64 = 5e-5;
const RTOL: f64 = 1e-4;

#[test]
fn animatediff_parity_every_fixture() {
    for fx in fixtures("animatediff") {
        let dev = Device::Cpu;
        let inp = fx.inputs();
        let t = take(&inp, "timestep", "inputs");
        let x = take(&inp, "sample_video", "inputs");
        let ctx_frames = take(&inp, "encoder_hidden_states_frames", "inputs");
        let mut p = ModelParity::new(&fx);
        // (a) the saved UNetMotionModel directory; the intermediates are its modules' outputs
        let (m, r) =
            UNetMotionModel::from_pretrained(fx.dir.join("unet_motion"), DType::F32, &dev).unwrap();
        assert!(r.is_clean() && r.unused.is_empty(), "{}: {r}", fx.id());
        let (got, trace) = m.forward_traced(x, t, ctx_frames).unwrap();
        let plain = m.forward(x, t, ctx_frames).unwrap();
        video_testkit::assert_close("traced = plain", &got, &plain, 0.0, 0.0);
        p.trace(&trace);
        p.output("sample_video", &got);
        // (b) unet2d + motion_adapter, assembled as from_unet2d
        let (m2, ru, ra) = UNetMotionModel::load_from_parts(
            fx.dir.join("unet2d"),
            fx.dir.join("motion_adapter"),
            DType::F32,
            &dev,
        )
        .unwrap();
        assert!(ru.is_clean() && ru.unused.is_empty(), "{}: {ru}", fx.id());
        assert!(ra.is_clean() && ra.unused.is_empty(), "{}: {ra}", fx.id());
        let got2 = m2.forward(x, t, ctx_frames).unwrap();
        p.output_as("sample_video (from parts)", "sample_video", &got2);
        // (c) the 2-D UNet on images
        let (u2, r2) =
            UNetMotionModel::load_unet2d(fx.dir.join("unet2d"), DType::F32, &dev).unwrap();
        assert!(r2.is_clean() && r2.unused.is_empty(), "{}: {r2}", fx.id());
        let got3 = u2
            .forward_images(
                take(&inp, "sample_2d", "inputs"),
                t,
                take(&inp, "encoder_hidden_states", "inputs"),
            )
            .unwrap();
        p.output("sample_2d", &got3);
        p.finish();
    }
}

/// Heads for new motion modules that divide every block's channels (the largest of 8, 4, 2, 1).
fn motion_heads(channels: &[usize]) -> usize {
    [8, 4, 2, 1]
        .into_iter()
        .find(|h| channels.iter().all(|c| c % h == 0))
        .unwrap_or(1)
}

/// Inflating the 2-D checkpoint alone: on a video of identical frames (and on any video) the
/// inflated UNet's output equals the 2-D UNet applied per frame.
#[test]
fn inflated_unet_equals_2d_unet_per_frame() {
    for fx in fixtures("animatediff") {
        let dev = Device::Cpu;
        let inp = fx.inputs();
        let out = fx.outputs();
        let t = take(&inp, "timestep", "inputs");
        let ctx = take(&inp, "encoder_hidden_states", "inputs");
        let img = take(&inp, "sample_2d", "inputs");
        let frames = 4;
        let (u2, _) =
            UNetMotionModel::load_unet2d(fx.dir.join("unet2d"), DType::F32, &dev).unwrap();
        let cfg = InflateConfig {
            motion_heads: motion_heads(&u2.spec().block_out_channels),
            max_frames: 8,
            in_channels: None,
        };
        let (inflated, varmap, report) =
            UNetMotionModel::inflate(fx.dir.join("unet2d"), &cfg, DType::F32, &dev).unwrap();
        assert!(report.is_clean() && report.unused.is_empty(), "{report}");
        assert!(
            !varmap.all_vars().is_empty(),
            "the new temporal layers are trainable vars"
        );
        // identical frames: [B, C, H, W] -> [B, C, T, H, W]
        let (b, c, h, w) = img.dims4().unwrap();
        let video = img
            .unsqueeze(2)
            .unwrap()
            .broadcast_as((b, c, frames, h, w))
            .unwrap()
            .contiguous()
            .unwrap();
        let got = inflated.forward(&video, t, ctx).unwrap();
        let want2d = take(&out, "sample_2d", "outputs");
        for f in 0..frames {
            let frame = got.narrow(2, f, 1).unwrap().squeeze(2).unwrap();
            video_testkit::assert_close(
                "inflated frame vs diffusers 2-D",
                &frame,
                want2d,
                ATOL,
                RTOL,
            );
        }
        // any video: equal to the per-frame 2-D UNet
        let rnd = common::randn(11, &[b, c, 3, h, w]);
        let a = inflated.forward(&rnd, t, ctx).unwrap();
        let (fr, _) = VideoShape::fold(&rnd).unwrap();
        // the per-frame 2-D call needs one context per frame image: [B, S, D] -> [B·3, S, D]
        let (cb, cs, cd) = ctx.dims3().unwrap();
        let ctx_frames = ctx
            .unsqueeze(1)
            .unwrap()
            .broadcast_as((cb, 3, cs, cd))
            .unwrap()
            .reshape((cb * 3, cs, cd))
            .unwrap();
        let per_frame = u2.forward_images(&fr, t, &ctx_frames).unwrap();
        let per_frame = VideoShape::unfold(&per_frame, 3).unwrap();
        video_testkit::assert_close("inflated vs per-frame 2-D", &a, &per_frame, 1e-5, 1e-5);
        // too many frames for the positional table: typed error
        let long = Tensor::zeros((1, c, cfg.max_frames + 1, h, w), DType::F32, &dev).unwrap();
        assert!(matches!(
            inflated.forward(&long, t, &ctx.narrow(0, 0, 1).unwrap()),
            Err(Error::InvalidArgument { .. })
        ));
    }
}

/// Channel-concat widening 4 → 8 (with and without motion modules): the widened model
/// initially equals the original.
#[test]
fn widened_motion_unet_equals_original() {
    for fx in fixtures("animatediff") {
        let dev = Device::Cpu;
        let inp = fx.inputs();
        let t = take(&inp, "timestep", "inputs");
        let x = take(&inp, "sample_video", "inputs");
        let ctx = take(&inp, "encoder_hidden_states_frames", "inputs");
        let unet = fx.dir.join("unet2d");
        let adapter = fx.dir.join("motion_adapter");
        let (m, _, _) =
            UNetMotionModel::load_from_parts(&unet, &adapter, DType::F32, &dev).unwrap();
        let cin = m.spec().in_channels;
        let (w, r) = UNetMotionModel::load_widened(
            &unet,
            Some(adapter.as_path()),
            2 * cin,
            DType::F32,
            &dev,
        )
        .unwrap();
        assert!(r.is_clean() && r.unused.is_empty(), "{r}");
        let src = common::randn(5, x.dims());
        let xw = Tensor::cat(&[x, &src], 1).unwrap();
        let a = m.forward(x, t, ctx).unwrap();
        let b = w.forward(&xw, t, ctx).unwrap();
        video_testkit::assert_close("widened motion unet", &b, &a, 1e-6, 1e-6);
        // inflation with widening
        let cfg = InflateConfig {
            motion_heads: motion_heads(&m.spec().block_out_channels),
            max_frames: 8,
            in_channels: Some(2 * cin),
        };
        let (inf, _, _) = UNetMotionModel::inflate(&unet, &cfg, DType::F32, &dev).unwrap();
        let (u2, _) = UNetMotionModel::load_unet2d(&unet, DType::F32, &dev).unwrap();
        video_testkit::assert_close(
            "widened inflated",
            &inf.forward(&xw, t, ctx).unwrap(),
            &u2.forward(x, t, ctx).unwrap(),
            1e-5,
            1e-5,
        );
        assert!(matches!(
            w.forward(x, t, ctx),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}

#[test]
fn motion_unet_bad_inputs_are_typed_errors() {
    for fx in fixtures("animatediff") {
        let dev = Device::Cpu;
        let (m, _) =
            UNetMotionModel::from_pretrained(fx.dir.join("unet_motion"), DType::F32, &dev).unwrap();
        let inp = fx.inputs();
        let x = take(&inp, "sample_video", "inputs");
        let t = take(&inp, "timestep", "inputs");
        let c = take(&inp, "encoder_hidden_states_frames", "inputs");
        let (b, ch, f, h, w) = x.dims5().unwrap();
        let x_bad = Tensor::zeros((b, ch + 4, f, h, w), DType::F32, &dev).unwrap();
        assert!(matches!(
            m.forward(&x_bad, t, c),
            Err(Error::ShapeMismatch { .. })
        ));
        let max = m.spec().motion.as_ref().unwrap().max_seq_length;
        let x_long = Tensor::zeros((1, ch, max + 1, h, w), DType::F32, &dev).unwrap();
        let c1 = c.narrow(0, 0, 1).unwrap();
        match m.forward(&x_long, t, &c1) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "num_frames"),
            other => panic!("expected a num_frames error, got {other:?}"),
        }
        // a context batch that is neither B nor B·T
        let (_, s, d) = c.dims3().unwrap();
        let c_bad = Tensor::zeros((b * f + 1, s, d), DType::F32, &dev).unwrap();
        assert!(matches!(
            m.forward(x, t, &c_bad),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            m.forward_images(x, t, c),
            Err(Error::InvalidArgument { .. })
        ));
    }
}

/// NaN in the input is caught where the output leaves the model, naming it.
#[test]
fn motion_unet_nan_input_is_non_finite_error() {
    let fx = fixtures("animatediff").into_iter().next().unwrap();
    let (m, _) =
        UNetMotionModel::from_pretrained(fx.dir.join("unet_motion"), DType::F32, &Device::Cpu)
            .unwrap();
    let inp = fx.inputs();
    let r = m.forward(
        &with_nan(take(&inp, "sample_video", "inputs")),
        take(&inp, "timestep", "inputs"),
        take(&inp, "encoder_hidden_states_frames", "inputs"),
    );
    assert_non_finite(r, "UNetMotionModel");
    let r = m.forward_images(
        &with_nan(take(&inp, "sample_2d", "inputs")),
        take(&inp, "timestep", "inputs"),
        take(&inp, "encoder_hidden_states", "inputs"),
    );
    assert_non_finite(r, "UNetMotionModel");
}
