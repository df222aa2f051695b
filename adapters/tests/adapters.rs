//! The adapters on their own: identity at init, shapes, errors, gradients, learning.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vidgen_adapters::{
    adapter_param_counts, count_params, Adapter, AdapterConfig, LongTermTemporalAdapter,
    ShortTermTemporalAdapter, SpatialAdapter,
};

fn rand_video(dims: (usize, usize, usize, usize, usize), seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = dims.0 * dims.1 * dims.2 * dims.3 * dims.4;
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1f32..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn build(kind: usize, c: usize, r: usize, vm: &VarMap) -> Adapter {
    let vb = VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
    match kind {
        0 => Adapter::Spatial(SpatialAdapter::new(c, r, vb).unwrap()),
        1 => Adapter::ShortTerm(ShortTermTemporalAdapter::new(c, r, [3, 3, 3], vb).unwrap()),
        _ => Adapter::LongTerm(LongTermTemporalAdapter::new(c, r, 2, vb).unwrap()),
    }
}

#[test]
fn fresh_adapters_are_the_identity_bitwise() {
    let x = rand_video((2, 16, 5, 6, 7), 1);
    for kind in 0..3 {
        let vm = VarMap::new();
        let a = build(kind, 16, 4, &vm);
        let y = a.forward(&x).unwrap();
        assert_eq!(y.dims(), x.dims());
        let (a, b) = (
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
    }
}

#[test]
fn param_counts_match_the_formula() {
    let cfg = AdapterConfig {
        bottleneck_ratio: 0.25,
        short_term_kernel: [3, 3, 3],
        long_term_head_dim: 2,
    };
    let (s, st, lt) = adapter_param_counts(&cfg, 16);
    let counts: Vec<usize> = (0..3)
        .map(|k| {
            let vm = VarMap::new();
            build(k, 16, 4, &vm);
            count_params(&vm)
        })
        .collect();
    assert_eq!(counts, vec![s, st, lt]);
}

#[test]
fn rejects_bad_inputs_and_configs() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let a = SpatialAdapter::new(8, 2, vb.pp("a")).unwrap();
    assert!(a.forward(&rand_video((1, 9, 2, 2, 2), 0)).is_err());
    assert!(a
        .forward(&Tensor::zeros((8, 2), DType::F32, &Device::Cpu).unwrap())
        .is_err());
    assert!(ShortTermTemporalAdapter::new(8, 2, [2, 3, 3], vb.pp("b")).is_err());
    assert!(LongTermTemporalAdapter::new(8, 3, 2, vb.pp("c")).is_err());
    assert!(AdapterConfig {
        bottleneck_ratio: -1.0,
        ..Default::default()
    }
    .validate()
    .is_err());
}

#[test]
fn non_cubic_kernels_keep_the_shape() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let a = ShortTermTemporalAdapter::new(8, 4, [5, 1, 3], vb).unwrap();
    let x = rand_video((1, 8, 6, 4, 5), 3);
    assert_eq!(a.forward(&x).unwrap().dims(), x.dims());
}

/// After the up-projection leaves zero, every adapter parameter gets a gradient, and the
/// adapter alone fits a target made by a same-kind adapter with random up-projection.
#[test]
fn each_adapter_learns_a_residual_target() {
    let x = rand_video((1, 8, 4, 3, 3), 5);
    for kind in 0..3 {
        // target: a "teacher" adapter of the same kind with non-zero up-projection
        let tm = VarMap::new();
        let teacher = build(kind, 8, 4, &tm);
        let mut rng = ChaCha8Rng::seed_from_u64(kind as u64);
        for (k, v) in tm.data().lock().unwrap().iter() {
            if k.starts_with("up.") {
                let vals: Vec<f32> = (0..v.elem_count())
                    .map(|_| rng.random_range(-0.5f32..0.5))
                    .collect();
                v.set(&Tensor::from_vec(vals, v.dims(), &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        let target = teacher.forward(&x).unwrap().detach();
        let vm = VarMap::new();
        let a = build(kind, 8, 4, &vm);
        let mut opt = candle_nn::AdamW::new(
            vm.all_vars(),
            candle_nn::ParamsAdamW {
                lr: 2e-2,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        let mut first = None;
        let mut last = 0.0;
        for step in 0..150 {
            let loss = (a.forward(&x).unwrap() - &target)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap();
            last = loss.to_scalar::<f32>().unwrap();
            first.get_or_insert(last);
            if step == 1 {
                let g = loss.backward().unwrap();
                for v in vm.all_vars() {
                    assert!(g.get(v.as_tensor()).is_some(), "kind {kind}: no gradient");
                }
            }
            opt.backward_step(&loss).unwrap();
        }
        let first = first.unwrap();
        println!("adapter kind {kind}: loss {first:.3e} -> {last:.3e}");
        assert!(last * 10.0 <= first, "kind {kind}: {first} -> {last}");
    }
}

#[test]
fn half_precision_inputs_keep_their_dtype() {
    for dt in [DType::BF16, DType::F16] {
        let x = rand_video((1, 8, 3, 4, 4), 9).to_dtype(dt).unwrap();
        for kind in 0..3 {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, dt, &Device::Cpu);
            let a = match kind {
                0 => Adapter::Spatial(SpatialAdapter::new(8, 4, vb).unwrap()),
                1 => {
                    Adapter::ShortTerm(ShortTermTemporalAdapter::new(8, 4, [3, 3, 3], vb).unwrap())
                }
                _ => Adapter::LongTerm(LongTermTemporalAdapter::new(8, 4, 2, vb).unwrap()),
            };
            let y = a.forward(&x).unwrap();
            assert_eq!((y.dtype(), y.dims()), (dt, x.dims()));
        }
    }
}

#[test]
fn adapter_set_routes_by_site_and_checks_frames() {
    use vidgen_adapters::AdapterSet;
    use vidgen_video_core::hooks::{HookPoint, HookSite, UNetHooks};
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let set =
        AdapterSet::aid_for_sites(&[("blk".into(), 16)], &AdapterConfig::default(), vb).unwrap();
    assert_eq!(set.len(), 3);
    assert!(!set.is_noop());
    assert_eq!(set.get("blk", HookPoint::AfterSpatialAttention).len(), 1);
    assert_eq!(set.get("blk", HookPoint::AfterTemporalLayers).len(), 2);
    let x = rand_video((1, 16, 3, 2, 2), 4);
    let other = HookSite {
        block: "elsewhere",
        point: HookPoint::AfterTemporalLayers,
        num_frames: 3,
    };
    assert_eq!(set.apply(&other, &x).unwrap().dims(), x.dims());
    let wrong_t = HookSite {
        block: "blk",
        point: HookPoint::AfterTemporalLayers,
        num_frames: 4,
    };
    assert!(set.apply(&wrong_t, &x).is_err());
    assert!(AdapterSet::new().is_noop());
}
