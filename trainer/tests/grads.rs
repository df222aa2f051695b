//! Gradients of whole UNets against PyTorch (`fixtures/grads/`, made by
//! `fixtures/scripts/make_grads.py`): `∂loss/∂θ` for every parameter and `∂loss/∂input` of a
//! fixed loss `sum(unet(inputs) · cotangent)`, built through the trainer's `ParamStore` (every
//! tensor a trainable `Var`), so this checks every backward the kernels and layers define.
//! Also `torch.optim.AdamW` steps against our `AdamW`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use video_testkit::{fixtures, fixtures_root, take, Fixture};
use vidgen_diffusion_unet3d::sd::{UNet3DConditionModel, UNet3DConfig};
use vidgen_diffusion_unet3d::svd::{UNetSpatioTemporalConditionModel, UNetSpatioTemporalConfig};
use vidgen_trainer::{AdamW, AdamWConfig, Gradients, ParamStore, Selection};

fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn unet_grads(fx: &Fixture) {
    let class = fx
        .meta_at("class")
        .and_then(|v| v.as_str())
        .unwrap()
        .to_string();
    let model_dir = fixtures_root().join(fx.meta_at("model").and_then(|v| v.as_str()).unwrap());
    let inputs = fx.inputs();
    let refs = fx.load("grads.safetensors");
    let global = fx
        .meta_at("global_max_abs")
        .and_then(|v| v.as_f64())
        .unwrap();
    let zero: Vec<String> = fx
        .meta_at("zero_grad_tensors")
        .and_then(|v| v.as_array())
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let torch_rel: HashMap<String, f64> = fx
        .meta_at("torch_fp32_rel")
        .and_then(|v| v.as_object())
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect();
    let dev = Device::Cpu;
    let store = ParamStore::new(0, &dev)
        .with_checkpoint("", &model_dir)
        .unwrap()
        .trainable(Selection::all());
    let vb = store.var_builder(DType::F32);
    let sample = Var::from_tensor(take(&inputs, "sample", "inputs")).unwrap();
    let ctx = Var::from_tensor(take(&inputs, "encoder_hidden_states", "inputs")).unwrap();
    let t = take(&inputs, "timestep", "inputs");
    let cot = take(&inputs, "cotangent", "inputs");
    let t0 = std::time::Instant::now();
    let out = match class.as_str() {
        "UNetSpatioTemporalConditionModel" => {
            let cfg = UNetSpatioTemporalConfig::from_file(model_dir.join("config.json")).unwrap();
            let m = UNetSpatioTemporalConditionModel::new(&cfg, vb).unwrap();
            let ids = take(&inputs, "added_time_ids", "inputs");
            m.forward(sample.as_tensor(), t, ctx.as_tensor(), ids, None)
                .unwrap()
        }
        "UNet3DConditionModel" => {
            let cfg: UNet3DConfig =
                vidgen_video_core::loading::read_config(model_dir.join("config.json")).unwrap();
            let m = UNet3DConditionModel::new(&cfg, vb).unwrap();
            m.forward(sample.as_tensor(), t, ctx.as_tensor()).unwrap()
        }
        other => panic!("{}: unknown class {other}", fx.id()),
    };
    let loss = out.mul(cot).unwrap().sum_all().unwrap();
    let want_loss = fx.meta_at("loss_fp64").and_then(|v| v.as_f64()).unwrap();
    let got_loss = loss.to_scalar::<f32>().unwrap() as f64;
    let grads = loss.backward().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        (got_loss - want_loss).abs() <= 1e-4 * want_loss.abs().max(1.0),
        "loss {got_loss} vs {want_loss}"
    );

    let mut parity = fx.parity();
    let mut n_zero = 0;
    let mut worst_zero = 0f64;
    let mut seen = 0;
    let vars = store.trainable_vars();
    assert_eq!(
        vars.len(),
        fx.meta_at("param_tensors")
            .and_then(|v| v.as_u64())
            .unwrap() as usize
    );
    let mut items: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(k, v)| {
            (
                format!("param.{k}"),
                grads
                    .get(v.as_tensor())
                    .cloned()
                    .unwrap_or_else(|| v.as_tensor().zeros_like().unwrap()),
            )
        })
        .collect();
    for (k, v) in [("sample", &sample), ("encoder_hidden_states", &ctx)] {
        items.push((
            format!("input.{k}"),
            grads.get(v.as_tensor()).unwrap().clone(),
        ));
    }
    for (name, got) in &items {
        let want = take(&refs, name, "grads");
        seen += 1;
        if zero.contains(name) {
            // Exactly zero in exact arithmetic: only rounding noise to match.
            let d = max_abs(&(got - want).unwrap());
            assert!(
                d <= 1e-6 * global,
                "{}: {name} should be ~0, max_abs {d:e}",
                fx.id()
            );
            n_zero += 1;
            worst_zero = worst_zero.max(d);
            continue;
        }
        let tol = 1e-4f64.max(2.0 * torch_rel.get(name).copied().unwrap_or(0.0));
        parity.check(name, got, want, tol * max_abs(want), 0.0);
    }
    assert_eq!(
        seen,
        refs.len(),
        "{}: every recorded gradient is compared",
        fx.id()
    );
    println!(
        "{}: loss {got_loss:.6} (torch fp64 {want_loss:.6}); {} gradients, {n_zero} of them exactly zero in the reference (ours ≤ {worst_zero:.1e}); forward + backward {secs:.2} s",
        fx.id(),
        items.len()
    );
    parity.finish();
}

fn adamw_steps(fx: &Fixture) {
    let t = fx.load("steps.safetensors");
    let lrs = take(&t, "lr", "steps").to_vec1::<f64>().unwrap();
    let n = fx
        .meta_at("shapes")
        .and_then(|v| v.as_array())
        .unwrap()
        .len();
    let vars: Vec<(String, Var)> = (0..n)
        .map(|i| {
            (
                format!("p{i}"),
                Var::from_tensor(take(&t, &format!("p0.{i}"), "steps")).unwrap(),
            )
        })
        .collect();
    let mut opt = AdamW::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    })
    .unwrap();
    let mut parity = fx.parity();
    for (k, lr) in lrs.iter().enumerate() {
        // Gradients through a GradStore of the loss sum(p · g), whose gradient is g.
        let loss = vars
            .iter()
            .enumerate()
            .map(|(i, (_, v))| {
                v.as_tensor()
                    .mul(take(&t, &format!("grad.{k}.{i}"), "steps"))
                    .unwrap()
                    .sum_all()
                    .unwrap()
            })
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let mut g = Gradients::new();
        g.accumulate(&loss.backward().unwrap(), &vars, 1.0).unwrap();
        opt.step(&vars, &g, *lr).unwrap();
        for (i, (_, v)) in vars.iter().enumerate() {
            let want = take(&t, &format!("p.{k}.{i}"), "steps");
            parity.check(
                &format!("step {k} param {i}"),
                v.as_tensor(),
                want,
                1e-6,
                1e-6,
            );
        }
    }
    parity.finish();
}

#[test]
fn unet_gradients_and_adamw_match_pytorch() {
    common::setup();
    for fx in fixtures("grads") {
        match fx.name.as_str() {
            "adamw" => adamw_steps(&fx),
            _ => unet_grads(&fx),
        }
    }
}
