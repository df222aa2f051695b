#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parity of `UNet3DConditionModel` with diffusers on every `unet3d` fixture, strict loads,
//! channel widening and bad-input errors.

use candle_core::{DType, Device, Tensor};
mod common;

use common::{assert_non_finite, with_nan, ModelParity};
use video_testkit::{fixtures, take, Fixture};
use vidgen_diffusion_unet3d::sd::UNet3DConditionModel;
use vidgen_video_core::hooks::{HookPoint, HookSite, UNetHooks};
use vidgen_video_core::Error;

fn load(fx: &Fixture) -> UNet3DConditionModel {
    let (m, report) =
        UNet3DConditionModel::from_pretrained(fx.dir.join("model"), DType::F32, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", fx.id()));
    assert!(report.is_clean(), "{}: {report}", fx.id());
    assert!(
        report.unused.is_empty(),
        "{}: unused keys: {report}",
        fx.id()
    );
    m
}

#[test]
fn unet3d_parity_every_fixture() {
    for fx in fixtures("unet3d") {
        let m = load(&fx);
        let inp = fx.inputs();
        let (x, t, c) = (
            take(&inp, "sample", "inputs"),
            take(&inp, "timestep", "inputs"),
            take(&inp, "encoder_hidden_states", "inputs"),
        );
        let (got, trace) = m.forward_traced(x, t, c).unwrap();
        let plain = m.forward(x, t, c).unwrap();
        video_testkit::assert_close("traced = plain", &got, &plain, 0.0, 0.0);
        let mut p = ModelParity::new(&fx);
        // The fp32 reference itself is 8.5e-5 from the same model run in fp64 at this block
        // (|ref| up to 17, where the rule's 5e-5 cap assumes O(1) values); this port is 2.3e-5
        // from fp64 there and 9.3e-5 from the fp32 reference. Every other tensor of the fixture
        // (the output included) meets the rule.
        p.allow(
            "unet3d/base",
            "up_blocks.1",
            1.5e-4,
            "the fp32 reference is 8.5e-5 off its own fp64 run here",
        );
        p.trace(&trace);
        p.output("sample", &got);
        p.finish();
    }
}

/// NaN in the input is caught where the output leaves the model, naming it.
#[test]
fn unet3d_nan_input_is_non_finite_error() {
    let fx = fixtures("unet3d").into_iter().next().unwrap();
    let m = load(&fx);
    let inp = fx.inputs();
    let r = m.forward(
        &with_nan(take(&inp, "sample", "inputs")),
        take(&inp, "timestep", "inputs"),
        take(&inp, "encoder_hidden_states", "inputs"),
    );
    assert_non_finite(r, "UNet3DConditionModel");
}

/// `in_channels` 4 → 8 with zero-initialised extra channels: the widened model equals the
/// original whatever the extra (source-video) latents are.
#[test]
fn unet3d_widened_initially_equals_original() {
    for fx in fixtures("unet3d") {
        let dev = Device::Cpu;
        let dir = fx.dir.join("model");
        let (m, _) = UNet3DConditionModel::from_pretrained(&dir, DType::F32, &dev).unwrap();
        let cin = m.config().in_channels;
        let (w, report) =
            UNet3DConditionModel::load_widened(&dir, 2 * cin, DType::F32, &dev).unwrap();
        assert!(report.is_clean() && report.unused.is_empty(), "{report}");
        assert_eq!(w.config().in_channels, 2 * cin);
        let inp = fx.inputs();
        let x = take(&inp, "sample", "inputs");
        let src = common::randn(3, x.dims());
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
    for fx in fixtures("unet3d") {
        bad_inputs(&fx);
    }
}

fn bad_inputs(fx: &Fixture) {
    let dev = Device::Cpu;
    let m = load(fx);
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
    // timesteps neither one nor one per video
    let tn = Tensor::zeros(b + 1, DType::F32, &dev).unwrap();
    assert!(matches!(
        m.forward(x, &tn, c),
        Err(Error::InvalidArgument { .. })
    ));
}

/// Records every hook call and adds a constant.
struct Recorder(std::sync::Mutex<Vec<(String, HookPoint, usize)>>, f64);

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

/// Hooks run after every spatial transformer and its temporal transformer (the config's
/// attention sites); identity hooks leave the output unchanged, a modifying hook changes it.
#[test]
fn unet3d_hooks_are_called_at_every_site() {
    for fx in fixtures("unet3d") {
        let m = load(&fx);
        let inp = fx.inputs();
        let x = take(&inp, "sample", "inputs");
        let t = take(&inp, "timestep", "inputs");
        let c = take(&inp, "encoder_hidden_states", "inputs");
        let plain = m.forward(x, t, c).unwrap();
        let rec = Recorder(Default::default(), 0.0);
        let hooked = m.forward_with_hooks(x, t, c, &rec).unwrap();
        video_testkit::assert_close("identity hooks", &hooked, &plain, 0.0, 0.0);
        let calls = rec.0.lock().unwrap().clone();
        let sites = m.config().attention_sites().unwrap();
        let want: Vec<(String, HookPoint, usize)> = sites
            .iter()
            .flat_map(|s| {
                [
                    HookPoint::AfterSpatialAttention,
                    HookPoint::AfterTemporalLayers,
                ]
                .map(|p| (s.path.clone(), p, x.dim(2).unwrap()))
            })
            .collect();
        assert_eq!(calls, want, "{}", fx.id());
        let shifted = m
            .forward_with_hooks(x, t, c, &Recorder(Default::default(), 0.5))
            .unwrap();
        let diff = common::max_abs(&(shifted - &plain).unwrap());
        assert!(
            diff > 1e-3,
            "{}: a modifying hook must change the output",
            fx.id()
        );
    }
}
