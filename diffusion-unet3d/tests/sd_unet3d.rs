#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parity of `UNet3DConditionModel` with diffusers on every `unet3d` fixture, strict loads,
//! channel widening and bad-input errors.

use candle_core::{DType, Device, Tensor};
use video_testkit::{fixtures, take};
use vidgen_diffusion_unet3d::sd::UNet3DConditionModel;
use vidgen_video_core::Error;

#[test]
fn unet3d_parity_every_fixture() {
    for fx in fixtures("unet3d") {
        let dev = Device::Cpu;
        let (m, report) =
            UNet3DConditionModel::load(fx.dir.join("model"), DType::F32, &dev).unwrap();
        assert!(report.is_clean(), "{}: {report}", fx.id());
        assert!(
            report.unused.is_empty(),
            "{}: unused keys: {report}",
            fx.id()
        );
        let inp = fx.inputs();
        let out = fx.outputs();
        let got = m
            .forward(
                take(&inp, "sample", "inputs"),
                take(&inp, "timestep", "inputs"),
                take(&inp, "encoder_hidden_states", "inputs"),
            )
            .unwrap();
        let mut p = fx.parity();
        p.check("sample", &got, take(&out, "sample", "outputs"), 5e-5, 1e-4);
        let c = p.finish();
        assert!(c.max_rel <= 1e-3);
    }
}

/// `in_channels` 4 → 8 with zero-initialised extra channels: the widened model equals the
/// original whatever the extra (source-video) latents are.
#[test]
fn unet3d_widened_initially_equals_original() {
    for fx in fixtures("unet3d") {
        let dev = Device::Cpu;
        let dir = fx.dir.join("model");
        let (m, _) = UNet3DConditionModel::load(&dir, DType::F32, &dev).unwrap();
        let cin = m.config().in_channels;
        let (w, report) =
            UNet3DConditionModel::load_widened(&dir, 2 * cin, DType::F32, &dev).unwrap();
        assert!(report.is_clean() && report.unused.is_empty(), "{report}");
        assert_eq!(w.config().in_channels, 2 * cin);
        let inp = fx.inputs();
        let x = take(&inp, "sample", "inputs");
        let src = Tensor::randn(0f32, 1.0, x.dims(), &dev).unwrap();
        let xw = Tensor::cat(&[x, &src], 1).unwrap();
        let t = take(&inp, "timestep", "inputs");
        let c = take(&inp, "encoder_hidden_states", "inputs");
        let a = m.forward(x, t, c).unwrap();
        let b = w.forward(&xw, t, c).unwrap();
        video_testkit::assert_close("widened", &b, &a, 1e-6, 1e-6);
        // The original width is now refused with a typed error.
        assert!(matches!(
            w.forward(x, t, c),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(UNet3DConditionModel::load_widened(&dir, cin - 1, DType::F32, &dev).is_err());
    }
}

#[test]
fn unet3d_bad_inputs_are_typed_errors() {
    let Some(fx) = fixtures("unet3d").into_iter().next() else {
        return;
    };
    let dev = Device::Cpu;
    let (m, _) = UNet3DConditionModel::load(fx.dir.join("model"), DType::F32, &dev).unwrap();
    let inp = fx.inputs();
    let x = take(&inp, "sample", "inputs");
    let t = take(&inp, "timestep", "inputs");
    let c = take(&inp, "encoder_hidden_states", "inputs");
    let (b, ch, f, h, w) = x.dims5().unwrap();
    // wrong channel count
    let x8 = Tensor::zeros((b, ch + 1, f, h, w), DType::F32, &dev).unwrap();
    assert!(matches!(
        m.forward(&x8, t, c),
        Err(Error::ShapeMismatch { .. })
    ));
    // rank 4 instead of 5
    let x4 = Tensor::zeros((b, ch, h, w), DType::F32, &dev).unwrap();
    assert!(matches!(
        m.forward(&x4, t, c),
        Err(Error::InvalidArgument { .. })
    ));
    // context of the wrong width
    let (cb, cs, cd) = c.dims3().unwrap();
    let c_bad = Tensor::zeros((cb, cs, cd + 3), DType::F32, &dev).unwrap();
    assert!(matches!(
        m.forward(x, t, &c_bad),
        Err(Error::InvalidArgument { .. })
    ));
    // context batch that is neither B nor B·T
    let c_b = Tensor::zeros((b * f + 1, cs, cd), DType::F32, &dev).unwrap();
    assert!(matches!(
        m.forward(x, t, &c_b),
        Err(Error::InvalidArgument { .. })
    ));
    // timesteps of the wrong count
    let t3 = Tensor::new(&[1f32, 2., 3.], &dev).unwrap();
    assert!(matches!(
        m.forward(x, &t3, c),
        Err(Error::InvalidArgument { .. })
    ));
}

/// Hooks run after every spatial transformer and its temporal transformer; identity hooks
/// leave the output unchanged, a modifying hook changes it.
#[test]
fn unet3d_hooks_are_called_at_every_site() {
    use std::sync::Mutex;
    use vidgen_video_core::hooks::{HookPoint, HookSite, UNetHooks};

    struct Recorder(Mutex<Vec<(String, HookPoint, usize)>>, f64);
    impl UNetHooks for Recorder {
        fn apply(&self, site: &HookSite<'_>, h: &Tensor) -> vidgen_video_core::Result<Tensor> {
            self.0
                .lock()
                .unwrap()
                .push((site.block.to_string(), site.point, site.num_frames));
            assert_eq!(h.rank(), 5);
            Ok((h + self.1)?)
        }
    }
    let Some(fx) = fixtures("unet3d").into_iter().next() else {
        return;
    };
    let dev = Device::Cpu;
    let (m, _) = UNet3DConditionModel::load(fx.dir.join("model"), DType::F32, &dev).unwrap();
    let inp = fx.inputs();
    let x = take(&inp, "sample", "inputs");
    let t = take(&inp, "timestep", "inputs");
    let c = take(&inp, "encoder_hidden_states", "inputs");
    let plain = m.forward(x, t, c).unwrap();
    let rec = Recorder(Mutex::new(Vec::new()), 0.0);
    let hooked = m.forward_with_hooks(x, t, c, &rec).unwrap();
    video_testkit::assert_close("identity hooks", &hooked, &plain, 0.0, 0.0);
    let calls = rec.0.lock().unwrap().clone();
    let cfg = m.config();
    let n_cross_down = cfg
        .down_block_types
        .iter()
        .filter(|t| t.starts_with("CrossAttn"))
        .count();
    let n_cross_up = cfg
        .up_block_types
        .iter()
        .filter(|t| t.starts_with("CrossAttn"))
        .count();
    let sites = n_cross_down * cfg.layers_per_block + 1 + n_cross_up * (cfg.layers_per_block + 1);
    assert_eq!(calls.len(), 2 * sites, "{calls:?}");
    assert!(calls
        .iter()
        .any(|(b, p, _)| b == "mid_block.attentions.0" && *p == HookPoint::AfterTemporalLayers));
    assert!(calls.iter().all(|(_, _, f)| *f == x.dim(2).unwrap()));
    let shifted = m
        .forward_with_hooks(x, t, c, &Recorder(Mutex::new(Vec::new()), 0.5))
        .unwrap();
    let diff = (shifted - &plain)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff > 1e-3, "a modifying hook must change the output");
}
