//! AID adapters inside the fixture SVD UNet: zero-init identity, frozen base, training.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use video_testkit::{fixtures, take, Fixture};
use vidgen_adapters::{count_params, frozen_builder, AdapterConfig, AdapterSet, ParamReport};
use vidgen_diffusion_unet3d::svd::{
    svd_xt_unet_config, UNetSpatioTemporalConditionModel, UNetSpatioTemporalConfig,
};
use vidgen_video_nn::count_by_construction;

/// AID's adapters at every attention site of `cfg`.
fn aid_svd(cfg: &UNetSpatioTemporalConfig, ac: &AdapterConfig, vb: VarBuilder) -> AdapterSet {
    AdapterSet::aid_for_attention_sites(&cfg.attention_sites().unwrap(), ac, vb).unwrap()
}

/// AID's parameter report for an SVD UNet config.
fn aid_report(cfg: &UNetSpatioTemporalConfig, ac: &AdapterConfig) -> ParamReport {
    ParamReport::aid(
        cfg.param_count().unwrap(),
        &cfg.attention_sites().unwrap(),
        ac,
    )
    .unwrap()
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

fn config(fx: &Fixture) -> UNetSpatioTemporalConfig {
    UNetSpatioTemporalConfig::from_file(fx.dir.join("model/config.json")).unwrap()
}

/// The base UNet in its own `VarMap` (loaded with the fixture weights), plus a frozen model
/// built from detached copies.
fn base(fx: &Fixture) -> (VarMap, UNetSpatioTemporalConditionModel) {
    let cfg = config(fx);
    let mut vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    UNetSpatioTemporalConditionModel::new(&cfg, vb).unwrap();
    vm.load(fx.dir.join("model/diffusion_pytorch_model.safetensors"))
        .unwrap();
    let frozen = frozen_builder(&vm, DType::F32, &Device::Cpu).unwrap();
    let m = UNetSpatioTemporalConditionModel::new(&cfg, frozen).unwrap();
    (vm, m)
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
fn zero_init_adapters_are_bit_identical() {
    for fx in fixtures("svd_unet") {
        let cfg = config(&fx);
        let (m, _) = UNetSpatioTemporalConditionModel::from_pretrained(
            fx.dir.join("model"),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let x = inputs(&fx);
        let want = m
            .forward(&x.sample, &x.timestep, &x.ctx, &x.ids, None)
            .unwrap();
        // Freshly initialised adapters, evaluated as plain tensors (inference): a tracked
        // input may take a different (plain-ops) path through the base's GroupNorm.
        let am = VarMap::new();
        aid_svd(
            &cfg,
            &AdapterConfig::default(),
            VarBuilder::from_varmap(&am, DType::F32, &Device::Cpu),
        );
        let set = aid_svd(
            &cfg,
            &AdapterConfig::default(),
            frozen_builder(&am, DType::F32, &Device::Cpu).unwrap(),
        );
        let sites = cfg.attention_sites().unwrap();
        assert_eq!(set.len(), 3 * sites.len());
        let got = m
            .forward_with_hooks(&x.sample, &x.timestep, &x.ctx, &x.ids, None, &set)
            .unwrap();
        assert_eq!(
            bits(&got),
            bits(&want),
            "{}: adapted output differs",
            fx.id()
        );
        println!(
            "{}: zero-init AID adapters at {} sites ({} adapter params) bit-identical",
            fx.id(),
            sites.len(),
            count_params(&am)
        );
    }
}

#[test]
fn counts_by_construction_match_the_checkpoint() {
    for fx in fixtures("svd_unet") {
        let cfg = config(&fx);
        let n =
            count_by_construction(|vb| UNetSpatioTemporalConditionModel::new(&cfg, vb)).unwrap();
        let (vm, _) = base(&fx);
        assert_eq!(n, count_params(&vm));
        if let Some(meta) = fx.meta_at("/model_dirs/model/num_params") {
            assert_eq!(n as u64, meta.as_u64().unwrap());
        }
        let am = VarMap::new();
        let ac = AdapterConfig::default();
        aid_svd(
            &cfg,
            &ac,
            VarBuilder::from_varmap(&am, DType::F32, &Device::Cpu),
        );
        let rep = aid_report(&cfg, &ac);
        assert_eq!(rep.trainable, count_params(&am));
        assert_eq!(rep.base, n);
        println!(
            "params {}: base {} + adapters {} = {} (trainable {:.3}%)",
            fx.id(),
            rep.base,
            rep.trainable,
            rep.total(),
            100.0 * rep.trainable_fraction()
        );
    }
}

#[test]
fn svd_xt_parameter_counts() {
    let cfg = svd_xt_unet_config().unwrap();
    for ratio in [0.25, 0.125] {
        let ac = AdapterConfig {
            bottleneck_ratio: ratio,
            ..AdapterConfig::default()
        };
        let rep = aid_report(&cfg, &ac);
        println!(
            "params svd-xt (bottleneck {ratio}): base {} + adapters {} = {} (trainable {:.3}%)",
            rep.base,
            rep.trainable,
            rep.total(),
            100.0 * rep.trainable_fraction()
        );
        // diffusers' SVD-XT UNet has 1,524,623,082 parameters.
        assert_eq!(rep.base, 1_524_623_082);
        assert!(rep.trainable_fraction() > 0.002 && rep.trainable_fraction() < 0.03);
    }
}

fn snapshot(vm: &VarMap) -> Vec<(String, Vec<u32>)> {
    let d = vm.data().lock().unwrap();
    let mut v: Vec<_> = d
        .iter()
        .map(|(k, v)| (k.clone(), bits(v.as_tensor())))
        .collect();
    v.sort();
    v
}

#[test]
fn one_step_changes_only_adapter_up_projections() {
    let Some(fx) = fixtures("svd_unet").into_iter().next() else {
        return;
    };
    let cfg = config(&fx);
    let (base_vm, m) = base(&fx);
    let am = VarMap::new();
    let set = aid_svd(
        &cfg,
        &AdapterConfig::default(),
        VarBuilder::from_varmap(&am, DType::F32, &Device::Cpu),
    );
    let x = inputs(&fx);
    let before_base = snapshot(&base_vm);
    let before = snapshot(&am);
    let out = m
        .forward_with_hooks(&x.sample, &x.timestep, &x.ctx, &x.ids, None, &set)
        .unwrap();
    let loss = out.sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    // no gradient reaches the frozen base (its tensors are detached copies)
    for v in base_vm.all_vars() {
        assert!(grads.get(v.as_tensor()).is_none());
    }
    let mut opt = candle_nn::SGD::new(am.all_vars(), 0.1).unwrap();
    opt.step(&grads).unwrap();
    assert_eq!(snapshot(&base_vm), before_base, "base weights moved");
    let after = snapshot(&am);
    let mut changed_up = 0;
    for ((k, a), (_, b)) in before.iter().zip(&after) {
        let changed = a != b;
        if k.contains(".up.") {
            changed_up += changed as usize;
        } else {
            // zero up-projection: nothing upstream of it gets a gradient on the first step
            assert!(!changed, "{k} changed on the first step");
        }
    }
    assert!(changed_up > 0, "no up-projection changed");
}

#[test]
fn adapters_alone_fit_a_synthetic_target() {
    let Some(fx) = fixtures("svd_unet").into_iter().next() else {
        return;
    };
    let cfg = config(&fx);
    let (_, m) = base(&fx);
    let ac = AdapterConfig::default();
    let x = inputs(&fx);
    // A small fixed batch: the first video, 8×8 latents.
    let sample = x
        .sample
        .narrow(0, 0, 1)
        .unwrap()
        .narrow(3, 0, 8)
        .unwrap()
        .narrow(4, 0, 8)
        .unwrap();
    let ctx = x.ctx.narrow(0, 0, 1).unwrap();
    let ids = x.ids.narrow(0, 0, 1).unwrap();
    // Target: the same UNet under a "teacher" adapter set with random (non-zero) up-projections,
    // so the target is exactly reachable by the adapters.
    let tm = VarMap::new();
    let teacher = aid_svd(
        &cfg,
        &ac,
        VarBuilder::from_varmap(&tm, DType::F32, &Device::Cpu),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (k, v) in tm.data().lock().unwrap().iter() {
        if k.contains(".up.") {
            let n = v.elem_count();
            let vals: Vec<f32> = (0..n).map(|_| rng.random_range(-0.3f32..0.3)).collect();
            v.set(&Tensor::from_vec(vals, v.dims(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let target = m
        .forward_with_hooks(&sample, &x.timestep, &ctx, &ids, None, &teacher)
        .unwrap()
        .detach();
    let am = VarMap::new();
    let set = aid_svd(
        &cfg,
        &ac,
        VarBuilder::from_varmap(&am, DType::F32, &Device::Cpu),
    );
    let vars: Vec<Var> = am.all_vars();
    let mut opt = candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr: 1e-2,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut losses = Vec::new();
    for _ in 0..60 {
        let out = m
            .forward_with_hooks(&sample, &x.timestep, &ctx, &ids, None, &set)
            .unwrap();
        let loss = (out - &target).unwrap().sqr().unwrap().mean_all().unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        if *losses.last().unwrap() * 10.0 <= losses[0] {
            break;
        }
        opt.backward_step(&loss).unwrap();
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    println!(
        "fit: loss {first:.3e} -> {last:.3e} in {} steps",
        losses.len() - 1
    );
    assert!(last * 10.0 <= first, "loss {first} -> {last}: {losses:?}");
}
