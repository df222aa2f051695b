//! The backward of whole UNets gives the same bits every time, whether it runs from an outside
//! thread or on a rayon worker (where `Trainer::step` runs it, for speed): no gradient may
//! depend on how work stealing happened to split a parallel sum. `resume.rs` relies on this
//! (20 steps straight = 10 + resume + 10), and so does anyone comparing two runs.
//! The tests' tiny UNets at 32×32, batch 2: the convolutions' weight gradients span many tiles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use candle_core::{DType, Device, Tensor, Var};
use vidgen_diffusion_unet3d::sd::{UNet3DConditionModel, UNet3DConfig};
use vidgen_diffusion_unet3d::svd::{UNetSpatioTemporalConditionModel, UNetSpatioTemporalConfig};
use vidgen_trainer::{ParamStore, Recipe, Selection};

/// Deterministic, non-trivial values (no RNG: candle's `randn` is not seedable on CPU).
fn wave(shape: &[usize], phase: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.618 + phase).sin()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Every gradient (parameters and the sample) as bits, in a fixed order.
fn grad_bits(store: &ParamStore, sample: &Var, loss: &Tensor) -> Vec<(String, Vec<u32>)> {
    let g = loss.backward().unwrap();
    let mut out: Vec<(String, Vec<u32>)> = store
        .trainable_vars()
        .iter()
        .filter_map(|(k, v)| g.get(v.as_tensor()).map(|t| (k.clone(), t.clone())))
        .chain(std::iter::once((
            "input.sample".to_string(),
            g.get(sample.as_tensor()).unwrap().clone(),
        )))
        .map(|(k, t)| (k, common::bits(&t)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn check(name: &str, run: impl Fn() -> Vec<(String, Vec<u32>)> + Sync) {
    let first = run();
    assert!(first.len() > 10, "{name}: only {} gradients", first.len());
    for k in 0..6 {
        // Alternately from this thread and on a rayon worker.
        let again = if k % 2 == 0 {
            vidgen_video_core::in_pool(&run)
        } else {
            run()
        };
        for ((n0, a), (n1, b)) in first.iter().zip(&again) {
            assert_eq!(n0, n1);
            let diff = a.iter().zip(b).filter(|(x, y)| x != y).count();
            assert_eq!(
                diff, 0,
                "{name}, run {k}: {diff} elements of ∂loss/∂{n0} differ"
            );
        }
    }
    println!(
        "{name}: {} gradients bit-identical over 7 runs",
        first.len()
    );
}

#[test]
fn svd_unet_backward_is_bit_deterministic() {
    common::setup();
    let cfg: UNetSpatioTemporalConfig =
        serde_json::from_value(common::tiny_unet(Recipe::Svd)).unwrap();
    let store = ParamStore::new(0, &Device::Cpu)
        .create(Selection::all())
        .trainable(Selection::all());
    let m = UNetSpatioTemporalConditionModel::new(&cfg, store.var_builder(DType::F32)).unwrap();
    let sample = Var::from_tensor(&wave(&[2, 4, 6, 32, 32], 0.1)).unwrap();
    let ctx = wave(&[2, 1, 16], 0.2);
    let t = Tensor::new(&[0.3f32, 0.7], &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[6f32, 127.0, 0.02], [6.0, 127.0, 0.02]], &Device::Cpu).unwrap();
    let cot = wave(&[2, 4, 3, 32, 32], 0.3);
    check("unet_svd (32×32, 4 frames, batch 2)", || {
        let out = m.forward(sample.as_tensor(), &t, &ctx, &ids, None).unwrap();
        let loss = out.mul(&cot).unwrap().sum_all().unwrap();
        grad_bits(&store, &sample, &loss)
    });
}

#[test]
fn unet3d_backward_is_bit_deterministic() {
    common::setup();
    let cfg: UNet3DConfig = serde_json::from_value(common::tiny_unet(Recipe::Unet3d)).unwrap();
    let store = ParamStore::new(0, &Device::Cpu)
        .create(Selection::all())
        .trainable(Selection::all());
    let m = UNet3DConditionModel::new(&cfg, store.var_builder(DType::F32)).unwrap();
    let sample = Var::from_tensor(&wave(&[2, 3, 4, 32, 32], 0.1)).unwrap();
    let ctx = wave(&[2, 5, 16], 0.2);
    let t = Tensor::new(&[300i64, 700], &Device::Cpu).unwrap();
    let cot = wave(&[2, 3, 4, 32, 32], 0.3);
    check("unet3d (32×32, 4 frames, batch 2)", || {
        let out = m.forward(sample.as_tensor(), &t, &ctx).unwrap();
        let loss = out.mul(&cot).unwrap().sum_all().unwrap();
        grad_bits(&store, &sample, &loss)
    });
}
