//! AID adapters inside the inflated SD UNets (`UNet3DConditionModel`, AnimateDiff's
//! `UNetMotionModel`): sites found by one recorded forward pass, zero-init identity, and
//! gradients reaching the adapters through the frozen base.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use video_testkit::{fixtures, take};
use vidgen_adapters::{count_params, frozen_builder, AdapterConfig, AdapterSet, SiteRecorder};
use vidgen_diffusion_unet3d::sd::{UNet3DConditionModel, UNetMotionModel};
use vidgen_video_core::hooks::{HookPoint, UNetHooks};

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Builds AID adapters at the recorded `calls`: (trainable map, plain-tensor copy for exact
/// inference).
fn fresh_sets(calls: &[(String, HookPoint, usize)]) -> (VarMap, AdapterSet, AdapterSet) {
    let am = VarMap::new();
    let cfg = AdapterConfig {
        long_term_head_dim: 4,
        ..AdapterConfig::default()
    };
    let trainable = AdapterSet::aid_for_calls(
        calls,
        &cfg,
        VarBuilder::from_varmap(&am, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let plain = AdapterSet::aid_for_calls(
        calls,
        &cfg,
        frozen_builder(&am, DType::F32, &Device::Cpu).unwrap(),
    )
    .unwrap();
    (am, trainable, plain)
}

/// The identity at init and a gradient for every up-projection, for one UNet's forward.
fn check_model(
    id: &str,
    forward: &dyn Fn(&dyn UNetHooks) -> Tensor,
    base: &Tensor,
    want_sites: usize,
) {
    let rec = SiteRecorder::new();
    let recorded = forward(&rec);
    assert_eq!(
        bits(&recorded),
        bits(base),
        "{id}: the recorder changed the output"
    );
    let calls = rec.calls().unwrap();
    for point in [
        HookPoint::AfterSpatialAttention,
        HookPoint::AfterTemporalLayers,
    ] {
        assert!(
            calls.iter().any(|(_, p, _)| *p == point),
            "{id}: no {point:?} site"
        );
    }
    let sites = rec.sites().unwrap();
    assert_eq!(sites.len(), want_sites, "{id}: {sites:?}");
    let (am, trainable, plain) = fresh_sets(&calls);
    assert_eq!(
        bits(&forward(&plain)),
        bits(base),
        "{id}: zero-init adapters changed the output"
    );
    // Tracked adapters: same output to rounding (the base's norms take their autograd path),
    // and the loss reaches every zero-initialised up-projection.
    let out = forward(&trainable);
    let diff = (&out - base)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-4, "{id}: tracked adapters differ by {diff}");
    let grads = out.sqr().unwrap().mean_all().unwrap().backward().unwrap();
    let data = am.data().lock().unwrap();
    let mut ups = 0;
    let missing: Vec<&String> = data
        .iter()
        .filter(|(k, v)| k.contains(".up.") && grads.get(v.as_tensor()).is_none())
        .map(|(k, _)| k)
        .collect();
    assert!(missing.is_empty(), "{id}: no gradient for {missing:?}");
    for (k, v) in data.iter() {
        if k.contains(".up.") {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{id}: no gradient for {k}"));
            let n = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(n > 0.0, "{id}: zero gradient for {k}");
            ups += 1;
        }
    }
    drop(data);
    let spatial = calls
        .iter()
        .filter(|c| c.1 == HookPoint::AfterSpatialAttention)
        .count();
    // two tensors (weight, bias) per up-projection; two temporal adapters per temporal site
    assert_eq!(ups, 2 * (spatial + 2 * (calls.len() - spatial)));
    println!(
        "{id}: AID adapters at {} sites, {} hook points ({} params): identity at init, gradients reach all {ups} up-projection tensors",
        sites.len(),
        calls.len(),
        count_params(&am)
    );
}

#[test]
fn unet3d_with_adapters() {
    for fx in fixtures("unet3d") {
        let dev = Device::Cpu;
        let (m, _) =
            UNet3DConditionModel::from_pretrained(fx.dir.join("model"), DType::F32, &dev).unwrap();
        let inp = fx.inputs();
        let (x, t, c) = (
            take(&inp, "sample", "inputs"),
            take(&inp, "timestep", "inputs"),
            take(&inp, "encoder_hidden_states", "inputs"),
        );
        let base = m.forward(x, t, c).unwrap();
        let fwd = |h: &dyn UNetHooks| m.forward_with_hooks(x, t, c, h).unwrap();
        // one transformer per layer of each cross-attention down block, layers + 1 per up
        // block, and the mid block
        let cfg = m.config();
        let cross = |ty: &String| ty.starts_with("CrossAttn");
        let want = cfg.down_block_types.iter().filter(|b| cross(b)).count() * cfg.layers_per_block
            + cfg.up_block_types.iter().filter(|b| cross(b)).count() * (cfg.layers_per_block + 1)
            + 1;
        check_model(&fx.id(), &fwd, &base, want);
    }
}

#[test]
fn unet_motion_with_adapters() {
    for fx in fixtures("animatediff") {
        let dev = Device::Cpu;
        let (m, _) =
            UNetMotionModel::from_pretrained(fx.dir.join("unet_motion"), DType::F32, &dev).unwrap();
        let inp = fx.inputs();
        let (x, t, c) = (
            take(&inp, "sample_video", "inputs"),
            take(&inp, "timestep", "inputs"),
            take(&inp, "encoder_hidden_states_frames", "inputs"),
        );
        let base = m.forward(x, t, c).unwrap();
        let fwd = |h: &dyn UNetHooks| m.forward_with_hooks(x, t, c, h).unwrap();
        let rec = SiteRecorder::new();
        fwd(&rec);
        let want = rec.sites().unwrap().len();
        assert!(want > 0, "{}: no sites", fx.id());
        check_model(&fx.id(), &fwd, &base, want);
    }
}
