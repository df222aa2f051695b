//! What is trained: frozen tensors stay bit-identical, zero-initialised adapters start as the
//! identity and only their tensors move, patterns select what they say, checkpoints load
//! strictly (missing / mis-shaped keys named) and widened `conv_in` pads with zeros.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use vidgen_trainer::data::DataPosition;
use vidgen_trainer::recipes::RecipeNet;
use vidgen_trainer::{ParamStore, Pattern, Recipe, Selection, Session};

fn bits(m: &BTreeMap<String, Tensor>) -> BTreeMap<String, Vec<u32>> {
    m.iter()
        .map(|(k, t)| (k.clone(), common::bits(t)))
        .collect()
}

#[test]
fn frozen_parameters_are_bit_identical_after_training() {
    common::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::tiny_config(Recipe::Animate, dir.path(), 8);
    cfg.trainable = Some(vec!["*motion_modules*".into()]);
    let mut s = Session::new(&cfg).unwrap();
    let store = s.trainer().store().clone();
    let r = store.report();
    println!("animate, motion modules only: {r}");
    assert!(r.trainable > 0 && r.frozen > 0);
    for (k, _) in store.trainable_vars() {
        assert!(k.contains("motion_modules"), "{k} should be frozen");
    }
    let frozen0 = bits(&store.frozen_tensors());
    let train0 = bits(&store.trainable_tensors());
    s.run().unwrap();
    assert_eq!(
        bits(&store.frozen_tensors()),
        frozen0,
        "a frozen tensor changed"
    );
    let train1 = bits(&store.trainable_tensors());
    let moved = train0.iter().filter(|(k, v)| train1[*k] != **v).count();
    println!("{moved} of {} trainable tensors moved", train0.len());
    assert!(moved > train0.len() / 2);
}

#[test]
fn zero_initialised_adapters_are_the_identity_and_only_they_move() {
    common::setup();
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::tiny_config(Recipe::Aid, dir.path(), 6);
    let mut s = Session::new(&cfg).unwrap();
    let store = s.trainer().store().clone();
    println!("aid: {}", store.report());
    for (k, _) in store.trainable_vars() {
        assert!(
            k.starts_with("adapters.") || k.starts_with("dqformer."),
            "{k}"
        );
    }
    // The adapted UNet equals the base UNet, bit for bit, at initialisation.
    let b = s.batch_at(DataPosition::default()).unwrap();
    let (x0, mut cond) = s.prepare(&b, 3).unwrap();
    let c_noise = Tensor::new(&[0.3f32, -0.2], &Device::Cpu).unwrap();
    let net = s.network().unwrap();
    let RecipeNet::Svd {
        unet,
        adapters: Some(adapters),
        dqformer: Some(dq),
    } = net
    else {
        panic!("AID builds an SVD UNet with adapters and a DQFormer");
    };
    let ctx = dq
        .forward(
            &cond.extra["text"],
            &cond.extra["visual"],
            &cond.extra["states"],
        )
        .unwrap();
    cond.context = Some(ctx);
    let x_in = (&x0 * 0.5).unwrap();
    let with = unet
        .forward_raw_with_hooks(&x_in, &c_noise, &cond, adapters)
        .unwrap();
    let without = unet.forward_raw(&x_in, &c_noise, &cond).unwrap();
    let same = bits(&BTreeMap::from([("o".to_string(), with)]))
        == bits(&BTreeMap::from([("o".to_string(), without)]));
    assert!(same, "zero-initialised adapters changed the UNet's output");
    // Up-projections start at zero.
    let ups: Vec<String> = store
        .trainable_vars()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("adapters.") && k.contains(".up."))
        .collect();
    assert!(!ups.is_empty());
    for k in &ups {
        let t = &store.trainable_tensors()[k];
        assert_eq!(
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0,
            "{k}"
        );
    }
    // Train: only the adapters and the DQFormer move.
    let frozen0 = bits(&store.frozen_tensors());
    s.run().unwrap();
    assert_eq!(
        bits(&store.frozen_tensors()),
        frozen0,
        "the frozen SVD changed"
    );
    let moved_up = ups
        .iter()
        .filter(|k| {
            let t = &store.trainable_tensors()[*k];
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        })
        .count();
    println!("{moved_up} of {} up-projections moved off zero", ups.len());
    assert_eq!(moved_up, ups.len());
}

#[test]
fn patterns_select_what_they_say() {
    let p = |s: &str, n: &str| Pattern::new(s).matches(n);
    assert!(p("*", "a.b.c"));
    assert!(p("down_blocks.1", "down_blocks.1"));
    assert!(p("down_blocks.1", "down_blocks.1.resnets.0.conv1.weight"));
    assert!(!p("down_blocks.1", "down_blocks.10.resnets.0.conv1.weight"));
    assert!(p(
        "*.motion_modules.*",
        "up_blocks.3.motion_modules.2.proj_out.weight"
    ));
    assert!(!p("*.motion_modules.*", "motion_modules.x"));
    assert!(!p("*temporal*", "down_blocks.0.temp_attentions.0.x"));
    assert!(p(
        "*attn*.to_q.*",
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    ));
    let s = Selection::parse(&["adapters", "dqformer", "!*.queries"]);
    assert!(s.selects("adapters.mid_block.attentions.0.spatial.up.weight"));
    assert!(s.selects("dqformer.proj_out.weight"));
    assert!(!s.selects("dqformer.queries"));
    assert!(!s.selects("conv_in.weight"));
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    #[test]
    fn glob_agrees_with_a_regex_model(p in "[ab.*]{0,8}", n in "[ab.]{0,10}") {
        // Reference: * = any run; literal otherwise (patterns with a star only).
        fn re(p: &[u8], s: &[u8]) -> bool {
            match p.first() {
                None => s.is_empty(),
                Some(b'*') => (0..=s.len()).any(|i| re(&p[1..], &s[i..])),
                Some(c) => s.first() == Some(c) && re(&p[1..], &s[1..]),
            }
        }
        if p.contains('*') {
            prop_assert_eq!(Pattern::new(p.clone()).matches(&n), re(p.as_bytes(), n.as_bytes()));
        } else {
            let want = n == p || (n.starts_with(&p) && n.as_bytes().get(p.len()) == Some(&b'.'));
            prop_assert_eq!(Pattern::new(p.clone()).matches(&n), want);
        }
    }
}

fn write_ckpt(dir: &std::path::Path, tensors: &[(&str, Tensor)]) {
    std::fs::create_dir_all(dir).unwrap();
    let m: std::collections::HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    candle_core::safetensors::save(&m, dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
}

#[test]
fn checkpoints_load_strictly_and_widen_with_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let w = Tensor::arange(0f32, 2.0 * 3.0 * 3.0 * 3.0, &dev)
        .unwrap()
        .reshape((2, 3, 3, 3))
        .unwrap();
    write_ckpt(
        dir.path(),
        &[
            ("conv_in.weight", w.clone()),
            ("conv_in.bias", Tensor::ones(2, DType::F32, &dev).unwrap()),
        ],
    );
    // Widened: 5 input channels from a 3-channel checkpoint, extra channels zero.
    let store = ParamStore::new(0, &dev)
        .with_checkpoint("", dir.path())
        .unwrap()
        .trainable(Selection::all())
        .widen(Selection::parse(&["conv_in.weight"]));
    let vb = store.var_builder(DType::F32);
    let t = vb.get((2, 5, 3, 3), "conv_in.weight").unwrap();
    let head = t
        .narrow(1, 0, 3)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(head, w.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    let tail = t
        .narrow(1, 3, 2)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(tail, 0.0);
    assert_eq!(store.trainable_vars().len(), 1);
    // Without widening: a shape mismatch naming the key and both shapes.
    let strict = ParamStore::new(0, &dev)
        .with_checkpoint("", dir.path())
        .unwrap();
    let e = strict
        .var_builder(DType::F32)
        .get((2, 5, 3, 3), "conv_in.weight")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("conv_in.weight") && e.contains("[2, 5, 3, 3]") && e.contains("[2, 3, 3, 3]"),
        "{e}"
    );
    // A missing key is named, with the nearest keys.
    let e = strict
        .var_builder(DType::F32)
        .get(2, "conv_in.bais")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("conv_in.bais") && e.contains("conv_in.bias"),
        "{e}"
    );
    // Unused keys are reported.
    let _ = strict
        .var_builder(DType::F32)
        .get(2, "conv_in.bias")
        .unwrap();
    let unused = strict.unused_checkpoint_keys();
    assert_eq!(unused.len(), 1);
    assert_eq!(unused[0].1, vec!["conv_in.weight".to_string()]);
}

#[test]
fn created_tensors_match_the_testkit_seeded_builder() {
    let dev = Device::Cpu;
    let store = ParamStore::new(7, &dev)
        .create(Selection::all())
        .trainable(Selection::all());
    let a =
        vidgen_video_nn::Linear::new(6, 4, true, store.var_builder(DType::F32).pp("l")).unwrap();
    let b = vidgen_video_nn::Linear::new(
        6,
        4,
        true,
        video_testkit::seeded_var_builder(7, DType::F32, &dev).pp("l"),
    )
    .unwrap();
    let x = Tensor::ones((1, 6), DType::F32, &dev).unwrap();
    assert_eq!(
        a.forward(&x).unwrap().to_vec2::<f32>().unwrap(),
        b.forward(&x).unwrap().to_vec2::<f32>().unwrap()
    );
}

/// `keep_freed_memory` applies every setting on Linux with glibc (mallopt accepts them), and
/// is a no-op elsewhere; a second call is harmless.
#[test]
fn keep_freed_memory_is_accepted_by_glibc() {
    let applied = vidgen_trainer::keep_freed_memory();
    let any_var = [
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_TOP_PAD_",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if cfg!(all(target_os = "linux", target_env = "gnu")) && !any_var {
        assert!(applied, "mallopt refused a setting");
    } else {
        assert!(!applied);
    }
    let v = vec![0u8; 64 << 20];
    assert_eq!(v.len(), 64 << 20);
}
