#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Seeded random weights: same seed → bit-identical, independent of request order, dtype and
//! recording; the `Init` hint is honoured.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, Optimizer, VarBuilder};
use video_testkit::{seeded_var_builder, SeededVarMap};

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// A small model's weights, asked for in a given order.
fn weights(vb: &VarBuilder, reverse: bool) -> Vec<(String, Vec<u32>)> {
    let mut names = vec!["conv.weight", "conv.bias", "emb.weight", "norm.weight"];
    if reverse {
        names.reverse();
    }
    let mut out: Vec<(String, Vec<u32>)> = names
        .into_iter()
        .map(|n| {
            let (shape, init): (&[usize], Init) = match n {
                "conv.weight" => (&[8, 4, 3, 3], candle_nn::init::DEFAULT_KAIMING_NORMAL),
                "conv.bias" => (&[8], Init::Uniform { lo: -0.5, up: 0.5 }),
                "emb.weight" => (
                    &[16, 8],
                    Init::Randn {
                        mean: 0.,
                        stdev: 1.,
                    },
                ),
                _ => (&[8], Init::Const(1.)),
            };
            (
                n.to_string(),
                bits(&vb.get_with_hints(shape, n, init).unwrap()),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn same_seed_same_weights_in_any_order() {
    let dev = Device::Cpu;
    let a = weights(&seeded_var_builder(42, DType::F32, &dev), false);
    let b = weights(&seeded_var_builder(42, DType::F32, &dev), true);
    assert_eq!(a, b);
    // a layer built twice
    let l1 = candle_nn::linear(5, 3, seeded_var_builder(1, DType::F32, &dev).pp("l")).unwrap();
    let l2 = candle_nn::linear(5, 3, seeded_var_builder(1, DType::F32, &dev).pp("l")).unwrap();
    assert_eq!(bits(l1.weight()), bits(l2.weight()));
    assert_eq!(bits(l1.bias().unwrap()), bits(l2.bias().unwrap()));
    // and from threads at once
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                weights(
                    &seeded_var_builder(42, DType::F32, &Device::Cpu),
                    i % 2 == 0,
                )
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), a);
    }
}

#[test]
fn different_seeds_and_names_differ() {
    let dev = Device::Cpu;
    let a = weights(&seeded_var_builder(1, DType::F32, &dev), false);
    let b = weights(&seeded_var_builder(2, DType::F32, &dev), false);
    for ((na, va), (_, vb)) in a.iter().zip(&b) {
        if na == "norm.weight" {
            assert_eq!(va, vb, "a constant does not depend on the seed");
        } else {
            assert_ne!(va, vb, "{na}");
        }
    }
    let vb = seeded_var_builder(1, DType::F32, &dev);
    let x = vb
        .get_with_hints(
            64,
            "x",
            Init::Randn {
                mean: 0.,
                stdev: 1.,
            },
        )
        .unwrap();
    let y = vb
        .get_with_hints(
            64,
            "y",
            Init::Randn {
                mean: 0.,
                stdev: 1.,
            },
        )
        .unwrap();
    assert_ne!(bits(&x), bits(&y));
}

#[test]
fn init_hints_are_honoured() {
    let vb = seeded_var_builder(7, DType::F32, &Device::Cpu);
    let v = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let c = v(vb.get_with_hints(10, "c", Init::Const(0.25)).unwrap());
    assert!(c.iter().all(|&x| x == 0.25));
    let n = 40_000;
    let r = v(vb
        .get_with_hints(
            n,
            "r",
            Init::Randn {
                mean: 2.,
                stdev: 0.5,
            },
        )
        .unwrap());
    let mean = r.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    let var = r
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    assert!((mean - 2.).abs() < 0.02, "{mean}");
    assert!((var.sqrt() - 0.5).abs() < 0.02, "{}", var.sqrt());
    let u = v(vb
        .get_with_hints(n, "u", Init::Uniform { lo: -3., up: -1. })
        .unwrap());
    assert!(u.iter().all(|&x| (-3.0..=-1.0).contains(&x)));
    let um = u.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    assert!((um + 2.).abs() < 0.02, "{um}");
    // Kaiming uniform with fan-in 4·3·3 = 36, ReLU gain √2: bound √3·√2/6 = 0.408
    let k = v(vb
        .get_with_hints(
            (64, 4, 3, 3),
            "k",
            Init::Kaiming {
                dist: NormalOrUniform::Uniform,
                fan: FanInOut::FanIn,
                non_linearity: NonLinearity::ReLU,
            },
        )
        .unwrap());
    let bound = 3f32.sqrt() * 2f32.sqrt() / 6.;
    assert!(k.iter().all(|&x| x.abs() <= bound));
    assert!(k.iter().any(|&x| x.abs() > 0.9 * bound));
    assert!(vb.contains_tensor("anything.at.all"));
    assert!(vb.get_unchecked("w").is_err());
}

#[test]
fn dtype_and_device_do_not_change_the_draw() {
    let dev = Device::Cpu;
    let f = seeded_var_builder(3, DType::F32, &dev)
        .get(100, "w")
        .unwrap();
    let h = seeded_var_builder(3, DType::BF16, &dev)
        .get(100, "w")
        .unwrap();
    assert_eq!(h.dtype(), DType::BF16);
    assert_eq!(bits(&f.to_dtype(DType::BF16).unwrap()), bits(&h));
}

#[test]
fn var_map_records_reuses_and_saves() {
    let dev = Device::Cpu;
    let map = SeededVarMap::new(42);
    let vb = map.var_builder(DType::F32, &dev);
    let lin = candle_nn::linear(4, 3, vb.pp("lin")).unwrap();
    // the same values as the plain builder
    let plain =
        candle_nn::linear(4, 3, seeded_var_builder(42, DType::F32, &dev).pp("lin")).unwrap();
    assert_eq!(bits(lin.weight()), bits(plain.weight()));
    // asked again: the same variable
    let again = vb.pp("lin").get((3, 4), "weight").unwrap();
    assert_eq!(again.id(), lin.weight().id());
    assert!(vb.pp("lin").get((4, 4), "weight").is_err());
    assert_eq!(vb.get_unchecked("lin.bias").unwrap().dims(), &[3]);
    assert!(vb.get_unchecked("nope").is_err());
    assert_eq!(map.all_vars().len(), 2);
    assert_eq!(map.seed(), 42);

    // trainable: one SGD step moves the weights
    let x = Tensor::ones((2, 4), DType::F32, &dev).unwrap();
    let loss = lin.forward(&x).unwrap().sqr().unwrap().sum_all().unwrap();
    let before = bits(lin.weight());
    let mut sgd = <candle_nn::SGD as Optimizer>::new(map.all_vars(), 0.1).unwrap();
    sgd.backward_step(&loss).unwrap();
    assert_ne!(bits(lin.weight()), before);
    assert_eq!(bits(&map.tensors()["lin.weight"]), bits(lin.weight()));

    // saved and read back bit-exactly
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    map.save(&p).unwrap();
    let back = candle_core::safetensors::load(&p, &dev).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(bits(&back["lin.weight"]), bits(lin.weight()));
    assert_eq!(
        map.tensors().keys().collect::<Vec<_>>(),
        ["lin.bias", "lin.weight"]
    );
}
