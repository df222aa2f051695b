//! Parity of the SVD UNet with diffusers on every `svd_unet` fixture, strict loading, hooks,
//! half precision and bad-input errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
mod common;

use common::{assert_non_finite, with_nan, ModelParity};
use video_testkit::{fixtures, take, Fixture};
use vidgen_diffusion_unet3d::svd::UNetSpatioTemporalConditionModel;
use vidgen_video_core::hooks::{HookPoint, HookSite, NoHooks, UNetHooks};
use vidgen_video_core::{Error, ModelDir};

fn load(fx: &Fixture, dtype: DType) -> UNetSpatioTemporalConditionModel {
    let (mut m, report) = UNetSpatioTemporalConditionModel::from_pretrained(
        fx.dir.join("model"),
        dtype,
        &Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", fx.id()));
    assert!(report.is_clean(), "{report}");
    assert!(
        report.unused.is_empty(),
        "{}: unused keys\n{report}",
        fx.id()
    );
    // The reference has no frame limit; the fixture's frame count is what it ran.
    let f = fx.inputs()["sample"].dims()[1];
    if f > m.max_frames() {
        m.set_max_frames(f);
    }
    m
}

struct Inputs {
    sample: Tensor,
    timestep: Tensor,
    ctx: Tensor,
    ids: Tensor,
}

fn inputs(fx: &Fixture) -> Inputs {
    let i = fx.inputs();
    Inputs {
        sample: take(&i, "sample", "inputs").clone(),
        timestep: take(&i, "timestep", "inputs").clone(),
        ctx: take(&i, "encoder_hidden_states", "inputs").clone(),
        ids: take(&i, "added_time_ids", "inputs").clone(),
    }
}

#[test]
fn parity_every_fixture() {
    for fx in fixtures("svd_unet") {
        let m = load(&fx, DType::F32);
        let x = inputs(&fx);
        let (out, trace) = m
            .forward_traced(&x.sample, &x.timestep, &x.ctx, &x.ids, None)
            .unwrap();
        let mut p = ModelParity::new(&fx);
        p.trace(&trace);
        p.output("sample", &out);
        p.finish();
    }
}

#[test]
fn strict_load_reports_no_missing_or_unused_keys() {
    for fx in fixtures("svd_unet") {
        let md = ModelDir::open(fx.dir.join("model")).unwrap();
        let cfg = vidgen_diffusion_unet3d::svd::UNetSpatioTemporalConfig::from_file(
            fx.dir.join("model/config.json"),
        )
        .unwrap();
        let (_, report) = md
            .load(DType::F32, &Device::Cpu, |vb| {
                UNetSpatioTemporalConditionModel::new(&cfg, vb)
            })
            .unwrap();
        assert!(
            report.missing.is_empty() && report.mismatched.is_empty() && report.unused.is_empty(),
            "{report}"
        );
        assert_eq!(report.loaded, md.tensors().len());
    }
}

/// Counts calls and returns `h` unchanged; checks each site's channels against the config's
/// attention sites.
struct Identity {
    calls: std::sync::atomic::AtomicUsize,
    channels: std::collections::HashMap<String, usize>,
}

impl UNetHooks for Identity {
    fn apply(&self, site: &HookSite<'_>, h: &Tensor) -> vidgen_video_core::Result<Tensor> {
        assert_eq!(h.rank(), 5);
        assert_eq!(h.dims()[2], site.num_frames);
        let c = self
            .channels
            .get(site.block)
            .unwrap_or_else(|| panic!("hook at {}, not an attention site", site.block));
        assert_eq!(h.dims()[1], *c, "channels at {}", site.block);
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(h.clone())
    }
}

/// Adds a constant after the temporal layers of one block.
struct AddAt(&'static str);

impl UNetHooks for AddAt {
    fn apply(&self, site: &HookSite<'_>, h: &Tensor) -> vidgen_video_core::Result<Tensor> {
        if site.block == self.0 && site.point == HookPoint::AfterTemporalLayers {
            return Ok((h + 0.5)?);
        }
        Ok(h.clone())
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
fn identity_hook_is_bit_identical_and_hooks_change_output() {
    for fx in fixtures("svd_unet") {
        let m = load(&fx, DType::F32);
        let x = inputs(&fx);
        let plain = m
            .forward(&x.sample, &x.timestep, &x.ctx, &x.ids, None)
            .unwrap();
        let nohooks = m
            .forward_with_hooks(&x.sample, &x.timestep, &x.ctx, &x.ids, None, &NoHooks)
            .unwrap();
        let sites = m.config().attention_sites().unwrap();
        let id = Identity {
            calls: Default::default(),
            channels: sites.iter().map(|s| (s.path.clone(), s.channels)).collect(),
        };
        let hooked = m
            .forward_with_hooks(&x.sample, &x.timestep, &x.ctx, &x.ids, None, &id)
            .unwrap();
        assert_eq!(bits(&plain), bits(&hooked), "{}", fx.id());
        assert_eq!(bits(&plain), bits(&nohooks), "{}", fx.id());
        // two points per transformer layer of every site
        let layers: usize = sites.iter().map(|s| s.layers).sum();
        assert_eq!(
            id.calls.load(std::sync::atomic::Ordering::Relaxed),
            2 * layers,
            "{}",
            fx.id()
        );
        let changed = m
            .forward_with_hooks(
                &x.sample,
                &x.timestep,
                &x.ctx,
                &x.ids,
                None,
                &AddAt("mid_block.attentions.0"),
            )
            .unwrap();
        let d = common::max_abs(&(changed - &plain).unwrap());
        assert!(
            d > 1e-3,
            "{}: a hook that adds 0.5 must change the output (max diff {d})",
            fx.id()
        );
    }
}

#[test]
fn half_precision_stays_close_and_finite() {
    for fx in fixtures("svd_unet") {
        let x = inputs(&fx);
        let want = m_out(&load(&fx, DType::F32), &x, DType::F32);
        let scale = common::max_abs(&want);
        // bf16 keeps 8 mantissa bits (ε = 2^-8 ≈ 3.9e-3), f16 11 (ε ≈ 4.9e-4): after a few
        // dozen rounded layers the error is a few ε relative to the output's scale.
        for (dt, bound) in [(DType::BF16, 8e-2), (DType::F16, 1e-2)] {
            let m = load(&fx, dt);
            let got = m_out(&m, &x, dt);
            vidgen_video_core::check_finite(&got, "half-precision unet output").unwrap();
            let err = common::max_abs(&(got - &want).unwrap());
            println!(
                "{} {dt:?}: max_abs={err:.3e} rel={:.3e}",
                fx.id(),
                err / scale
            );
            assert!(
                err / scale < bound,
                "{} {dt:?}: relative error {} ≥ {bound}",
                fx.id(),
                err / scale
            );
        }
    }
}

fn m_out(m: &UNetSpatioTemporalConditionModel, x: &Inputs, dt: DType) -> Tensor {
    let c = |t: &Tensor| t.to_dtype(dt).unwrap();
    m.forward(&c(&x.sample), &x.timestep, &c(&x.ctx), &x.ids, None)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

#[test]
fn bad_inputs_give_typed_errors() {
    for fx in fixtures("svd_unet") {
        let m = load(&fx, DType::F32);
        let x = inputs(&fx);
        let (b, _f, c, h, w) = x.sample.dims5().unwrap();
        // one latent channel too few
        let fewer = x.sample.narrow(2, 0, c - 1).unwrap();
        let e = m
            .forward(&fewer, &x.timestep, &x.ctx, &x.ids, None)
            .unwrap_err();
        assert!(
            matches!(e, Error::ShapeMismatch { ref key, .. } if key == "sample"),
            "{e}"
        );
        // added_time_ids of the wrong length
        let ids = x.ids.narrow(1, 0, x.ids.dims()[1] - 1).unwrap();
        let e = m
            .forward(&x.sample, &x.timestep, &x.ctx, &ids, None)
            .unwrap_err();
        assert!(
            matches!(e, Error::ShapeMismatch { ref key, .. } if key == "added_time_ids"),
            "{e}"
        );
        // more frames than the model's limit
        let many =
            Tensor::zeros((b, m.max_frames() + 1, c, h, w), DType::F32, &Device::Cpu).unwrap();
        let e = m
            .forward(&many, &x.timestep, &x.ctx, &x.ids, None)
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { ref name, .. } if name == "num_frames"),
            "{e}"
        );
        // an empty latent
        let empty = x.sample.narrow(3, 0, 0).unwrap();
        let e = m
            .forward(&empty, &x.timestep, &x.ctx, &x.ids, None)
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { ref name, .. } if name == "sample"),
            "{e}"
        );
        // wrong context width
        let d = x.ctx.dims()[2];
        let ctx = Tensor::zeros((b, 1, d + 1), DType::F32, &Device::Cpu).unwrap();
        let e = m
            .forward(&x.sample, &x.timestep, &ctx, &x.ids, None)
            .unwrap_err();
        assert!(
            matches!(e, Error::ShapeMismatch { ref key, .. } if key == "encoder_hidden_states"),
            "{e}"
        );
        // timesteps neither one nor one per video
        let ts = Tensor::zeros(b + 1, DType::F32, &Device::Cpu).unwrap();
        let e = m.forward(&x.sample, &ts, &x.ctx, &x.ids, None).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { ref name, .. } if name == "timestep"),
            "{e}"
        );
    }
}

/// Latent sizes that are not multiples of the downsampling factor run (diffusers forwards the
/// skip sizes to the upsamplers): every size from 1 up to two factors, on a one-frame video.
#[test]
fn any_latent_size_runs_and_keeps_its_size() {
    let fx = fixtures("svd_unet").into_iter().next().unwrap();
    let m = load(&fx, DType::F32);
    let x = inputs(&fx);
    let c = x.sample.dims()[2];
    let s = m.config().spatial_multiple();
    let ctx = x.ctx.narrow(0, 0, 1).unwrap();
    let ids = x.ids.narrow(0, 0, 1).unwrap();
    for (h, w) in [(1, 1), (s + 1, 2 * s - 1), (2 * s + 1, 3), (3, s)] {
        let sample = common::randn(h as u64 * 31 + w as u64, &[1, 1, c, h, w]);
        let out = m.forward(&sample, &x.timestep, &ctx, &ids, None).unwrap();
        assert_eq!(
            out.dims(),
            &[1, 1, m.config().out_channels, h, w],
            "latent {h}×{w}"
        );
    }
}

/// NaN in the input is caught where the output leaves the model, naming it.
#[test]
fn nan_input_is_non_finite_error() {
    let fx = fixtures("svd_unet").into_iter().next().unwrap();
    let m = load(&fx, DType::F32);
    let x = inputs(&fx);
    let r = m.forward(&with_nan(&x.sample), &x.timestep, &x.ctx, &x.ids, None);
    assert_non_finite(r, "UNetSpatioTemporalConditionModel");
}

/// A per-frame context `[B·F, M, D]` holding each video's context repeated is the per-video
/// call; different frames' contexts change only what the spatial cross-attention sees (the
/// temporal layers keep reading each video's first frame).
#[test]
fn per_frame_context_equals_the_repeated_per_video_context() {
    for fx in fixtures("svd_unet") {
        let m = load(&fx, DType::F32);
        let x = inputs(&fx);
        let (b, f) = (x.sample.dims()[0], x.sample.dims()[1]);
        if f < 2 {
            continue;
        }
        let (_, mm, d) = x.ctx.dims3().unwrap();
        let want = m
            .forward(&x.sample, &x.timestep, &x.ctx, &x.ids, None)
            .unwrap();
        let per_frame = x
            .ctx
            .unsqueeze(1)
            .unwrap()
            .broadcast_as((b, f, mm, d))
            .unwrap()
            .reshape((b * f, mm, d))
            .unwrap();
        let got = m
            .forward(&x.sample, &x.timestep, &per_frame, &x.ids, None)
            .unwrap();
        let diff = (got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(
            diff,
            0.0,
            "{}: per-frame copy of the context differs",
            fx.id()
        );
        // Changing a later frame's context changes the output.
        let other = (per_frame.clone() * 0.0).unwrap();
        let mixed = Tensor::cat(
            &[
                &per_frame.narrow(0, 0, 1).unwrap(),
                &other.narrow(0, 1, b * f - 1).unwrap(),
            ],
            0,
        )
        .unwrap();
        let changed = m
            .forward(&x.sample, &x.timestep, &mixed, &x.ids, None)
            .unwrap();
        let d2 = (changed - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d2 > 0.0, "{}: per-frame contexts were ignored", fx.id());
        // A context batch that is neither B nor B·F is refused.
        let bad = per_frame.narrow(0, 0, b * f - 1).unwrap();
        if b * f - 1 != b {
            assert!(m
                .forward(&x.sample, &x.timestep, &bad, &x.ids, None)
                .is_err());
        }
    }
}
