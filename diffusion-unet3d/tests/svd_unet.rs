//! Parity of the SVD UNet with diffusers on every `svd_unet` fixture, strict loading, hooks,
//! half precision and bad-input errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
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
        let want = fx.outputs();
        let inter = fx.intermediates();
        let mut p = fx.parity();
        for (name, got) in &trace {
            if let Some(w) = inter.get(name) {
                let tol = 1e-4
                    * w.abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap() as f64;
                p.check(name, got, w, tol.max(5e-6), 0.0);
            }
        }
        let w = take(&want, "sample", "outputs");
        let scale = w
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        p.check("sample", &out, w, 1e-3 * scale, 0.0);
        let c = p.finish();
        assert!(c.max_rel <= 1e-3, "{}: max_rel {}", fx.id(), c.max_rel);
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

/// Counts calls and returns `h` unchanged.
struct Identity(std::sync::atomic::AtomicUsize);

impl UNetHooks for Identity {
    fn apply(&self, site: &HookSite<'_>, h: &Tensor) -> vidgen_video_core::Result<Tensor> {
        assert_eq!(h.rank(), 5);
        assert_eq!(h.dims()[2], site.num_frames);
        assert!(site.block.contains("attentions."));
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

#[test]
fn identity_hook_is_bit_identical_and_hooks_change_output() {
    let Some(fx) = fixtures("svd_unet").into_iter().next() else {
        return;
    };
    let m = load(&fx, DType::F32);
    let x = inputs(&fx);
    let plain = m
        .forward(&x.sample, &x.timestep, &x.ctx, &x.ids, None)
        .unwrap();
    let nohooks = m
        .forward_with_hooks(&x.sample, &x.timestep, &x.ctx, &x.ids, None, &NoHooks)
        .unwrap();
    let id = Identity(Default::default());
    let hooked = m
        .forward_with_hooks(&x.sample, &x.timestep, &x.ctx, &x.ids, None, &id)
        .unwrap();
    let a = plain.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = hooked.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let c = nohooks.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(a.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()));
    // two points per transformer layer
    assert!(id.0.load(std::sync::atomic::Ordering::Relaxed) >= 2);
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
    let d = (changed - &plain)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        d > 1e-3,
        "a hook that adds 0.5 must change the output (max diff {d})"
    );
}

#[test]
fn half_precision_stays_close_and_finite() {
    let Some(fx) = fixtures("svd_unet").into_iter().next() else {
        return;
    };
    let x = inputs(&fx);
    let want = m_out(&load(&fx, DType::F32), &x, DType::F32);
    let scale = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    // bf16 keeps 8 mantissa bits (ε = 2^-8 ≈ 3.9e-3), f16 11 (ε ≈ 4.9e-4): after a few dozen
    // rounded layers the error is a few ε relative to the output's scale.
    for (dt, bound) in [(DType::BF16, 8e-2f32), (DType::F16, 1e-2)] {
        let m = load(&fx, dt);
        let got = m_out(&m, &x, dt);
        vidgen_video_core::check_finite(&got, "half-precision unet output").unwrap();
        let err = (got.to_dtype(DType::F32).unwrap() - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        println!("{dt:?}: max_abs={err:.3e} rel={:.3e}", err / scale);
        assert!(
            err / scale < bound,
            "{dt:?}: relative error {} ≥ {bound}",
            err / scale
        );
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
    let Some(fx) = fixtures("svd_unet").into_iter().next() else {
        return;
    };
    let m = load(&fx, DType::F32);
    let x = inputs(&fx);
    let (b, f, c, h, w) = x.sample.dims5().unwrap();
    // 4 latent channels instead of 8
    let half = x.sample.narrow(2, 0, c / 2).unwrap();
    let e = m
        .forward(&half, &x.timestep, &x.ctx, &x.ids, None)
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
    let many = Tensor::zeros((b, m.max_frames() + 1, c, h, w), DType::F32, &Device::Cpu).unwrap();
    let e = m
        .forward(&many, &x.timestep, &x.ctx, &x.ids, None)
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { ref name, .. } if name == "num_frames"),
        "{e}"
    );
    // odd latent size
    let odd = x.sample.narrow(3, 0, h - 1).unwrap();
    assert!(m.forward(&odd, &x.timestep, &x.ctx, &x.ids, None).is_err());
    // wrong context width
    let ctx = Tensor::zeros((b, 1, 3), DType::F32, &Device::Cpu).unwrap();
    let e = m
        .forward(&x.sample, &x.timestep, &ctx, &x.ids, None)
        .unwrap_err();
    assert!(
        matches!(e, Error::ShapeMismatch { ref key, .. } if key == "encoder_hidden_states"),
        "{e}"
    );
    let _ = f;
}
