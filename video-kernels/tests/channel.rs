//! `add_channel` / `mul_channel` against candle's broadcast ops over random shapes and axes
//! (values bit-identical, gradients of both operands within f32 rounding), `channel_sum`'s
//! independence of the thread count, the training paths of `linear`, `layer_norm`, `rms_norm`
//! and `add_rms_norm` (which now use them) against the reference twins' autograd, and argument
//! errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use video_testkit::assert_close;
use vidgen_video_kernels::{
    add_channel, add_rms_norm, add_rms_norm_reference, channel_sum, layer_norm,
    layer_norm_reference, linear, linear_reference, mul_channel, rms_norm, rms_norm_reference,
};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| r.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn bshape(dims: &[usize], axis: usize) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    s[axis] = dims[axis];
    s
}

/// `(dims, axis)` with 1 to 4 dims of 1..=7 (and sometimes a large leading dim, several rayon
/// tasks).
fn case() -> impl Strategy<Value = (Vec<usize>, usize)> {
    (
        prop::collection::vec(1usize..8, 1..5),
        any::<prop::sample::Index>(),
        0usize..4,
    )
        .prop_map(|(mut dims, ax, big)| {
            if big == 0 {
                dims[0] *= 3000;
            }
            let axis = ax.index(dims.len());
            (dims, axis)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Values equal candle's broadcast bit for bit; gradients of `Σ y · dy` for both operands
    /// match candle's autograd of the broadcast.
    #[test]
    fn channel_ops_match_broadcast((dims, axis) in case(), seed in 0u64..1000) {
        let c = dims[axis];
        let x = Var::from_tensor(&rand(&dims, seed)).unwrap();
        let v = Var::from_tensor(&rand(&[c], seed + 1)).unwrap();
        let dy = rand(&dims, seed + 2);
        let vb = |v: &Var| v.as_tensor().reshape(bshape(&dims, axis)).unwrap();
        for mul in [false, true] {
            let (got, want) = if mul {
                (
                    mul_channel(x.as_tensor(), v.as_tensor(), axis).unwrap(),
                    x.as_tensor().broadcast_mul(&vb(&v)).unwrap(),
                )
            } else {
                (
                    add_channel(x.as_tensor(), v.as_tensor(), axis).unwrap(),
                    x.as_tensor().broadcast_add(&vb(&v)).unwrap(),
                )
            };
            let (g, w) = (
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            prop_assert_eq!(g, w);
            // The gradients against candle's autograd of the broadcast in f64: the vector's is
            // a sum of `n / C` terms of magnitude ≤ 1, so its f32 rounding grows with that
            // count (either summation order, ours or candle's).
            let x64 = Var::from_tensor(&x.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
            let v64 = Var::from_tensor(&v.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
            let vb64 = v64.as_tensor().reshape(bshape(&dims, axis)).unwrap();
            let want64 = if mul {
                x64.as_tensor().broadcast_mul(&vb64).unwrap()
            } else {
                x64.as_tensor().broadcast_add(&vb64).unwrap()
            };
            let dy64 = dy.to_dtype(DType::F64).unwrap();
            let gg = (&got * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let gw = (&want64 * &dy64).unwrap().sum_all().unwrap().backward().unwrap();
            let terms = (x.as_tensor().elem_count() / c) as f64;
            for (t, t64, atol) in [
                (x.as_tensor(), x64.as_tensor(), 1e-6),
                (v.as_tensor(), v64.as_tensor(), 1e-5 + 1e-7 * terms),
            ] {
                let (a, b) = (gg.get(t).unwrap(), gw.get(t64).unwrap());
                prop_assert_eq!(a.dims(), b.dims());
                assert_close(&format!("grad {dims:?} axis {axis} mul {mul}"), a, b, atol, 1e-5);
            }
        }
    }
}

#[test]
fn channel_sum_is_the_same_on_any_thread_count() {
    let x = rand(&[4001, 5, 3], 7);
    let y = rand(&[4001, 5, 3], 8);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            channel_sum(&x, Some(&y), 1)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
    // And the values: Σ x·y per channel in f64.
    let (xs, ys) = (
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    for (c, got) in one.iter().enumerate() {
        let want: f64 = (0..4001)
            .flat_map(|o| (0..3).map(move |i| o * 15 + c * 3 + i))
            .map(|k| xs[k] as f64 * ys[k] as f64)
            .sum();
        assert!(
            (*got as f64 - want).abs() < 1e-3,
            "channel {c}: {got} vs {want}"
        );
    }
}

/// Gradients of every tracked operand of `f` (the fast entry point) and `r` (its reference
/// twin) for `Σ y · dy`.
fn grads_match(what: &str, vars: &[&Var], f: impl Fn() -> Tensor, r: impl Fn() -> Tensor) {
    let (yf, yr) = (f(), r());
    assert_close(&format!("{what} values"), &yf, &yr, 1e-6, 1e-6);
    let dy = rand(yf.dims(), 99);
    let gf = (&yf * &dy).unwrap().sum_all().unwrap().backward().unwrap();
    let gr = (&yr * &dy).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, v) in vars.iter().enumerate() {
        let (a, b) = (
            gf.get(v.as_tensor()).unwrap(),
            gr.get(v.as_tensor()).unwrap(),
        );
        assert_close(&format!("{what} grad {i}"), a, b, 1e-4, 1e-4);
    }
}

#[test]
fn training_paths_match_the_reference_twins() {
    let x = Var::from_tensor(&rand(&[3, 37, 24], 1)).unwrap();
    let w = Var::from_tensor(&rand(&[16, 24], 2)).unwrap();
    let b = Var::from_tensor(&rand(&[16], 3)).unwrap();
    grads_match(
        "linear",
        &[&x, &w, &b],
        || linear(x.as_tensor(), w.as_tensor(), Some(b.as_tensor())).unwrap(),
        || linear_reference(x.as_tensor(), w.as_tensor(), Some(b.as_tensor())).unwrap(),
    );
    let g = Var::from_tensor(&(rand(&[24], 4) + 1.0).unwrap()).unwrap();
    let h = Var::from_tensor(&rand(&[24], 5)).unwrap();
    grads_match(
        "layer_norm",
        &[&x, &g, &h],
        || {
            layer_norm(
                x.as_tensor(),
                Some(g.as_tensor()),
                Some(h.as_tensor()),
                1e-5,
            )
            .unwrap()
        },
        || {
            layer_norm_reference(
                x.as_tensor(),
                Some(g.as_tensor()),
                Some(h.as_tensor()),
                1e-5,
            )
            .unwrap()
        },
    );
    grads_match(
        "rms_norm",
        &[&x, &g],
        || rms_norm(x.as_tensor(), g.as_tensor(), 1e-6).unwrap(),
        || rms_norm_reference(x.as_tensor(), g.as_tensor(), 1e-6).unwrap(),
    );
    let r = Var::from_tensor(&rand(&[3, 37, 24], 6)).unwrap();
    grads_match(
        "add_rms_norm",
        &[&x, &r, &g],
        || {
            let (s, n) = add_rms_norm(x.as_tensor(), r.as_tensor(), g.as_tensor(), 1e-6).unwrap();
            (s + n).unwrap()
        },
        || {
            let (s, n) =
                add_rms_norm_reference(x.as_tensor(), r.as_tensor(), g.as_tensor(), 1e-6).unwrap();
            (s + n).unwrap()
        },
    );
}

/// A frozen (untracked) vector on a tracked input, as in adapter training on a frozen model:
/// the input's gradient matches candle's, and none is made for the vector.
#[test]
fn frozen_vectors_get_no_gradient() {
    let x = Var::from_tensor(&rand(&[5, 7, 3], 1)).unwrap();
    let w = rand(&[7], 2);
    let dy = rand(&[5, 7, 3], 3);
    for mul in [false, true] {
        let (got, want) = if mul {
            (
                mul_channel(x.as_tensor(), &w, 1).unwrap(),
                x.as_tensor()
                    .broadcast_mul(&w.reshape((1, 7, 1)).unwrap())
                    .unwrap(),
            )
        } else {
            (
                add_channel(x.as_tensor(), &w, 1).unwrap(),
                x.as_tensor()
                    .broadcast_add(&w.reshape((1, 7, 1)).unwrap())
                    .unwrap(),
            )
        };
        let gg = (&got * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        let gw = (&want * &dy)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(gg.get(&w).is_none());
        let (a, b) = (
            gg.get(x.as_tensor()).unwrap(),
            gw.get(x.as_tensor()).unwrap(),
        );
        assert_close(&format!("frozen mul {mul}"), a, b, 1e-6, 1e-6);
    }
}

#[test]
fn other_dtypes_take_candles_broadcast() {
    let x = rand(&[2, 3, 4], 1).to_dtype(DType::F64).unwrap();
    let v = rand(&[3], 2).to_dtype(DType::F64).unwrap();
    let got = add_channel(&x, &v, 1).unwrap();
    let want = x.broadcast_add(&v.reshape((1, 3, 1)).unwrap()).unwrap();
    assert_close("f64 add", &got, &want, 0.0, 0.0);
}

#[test]
fn bad_arguments_are_errors() {
    let x = rand(&[2, 3, 4], 1);
    let e = add_channel(&x, &rand(&[4], 2), 1).unwrap_err().to_string();
    assert!(e.contains("[3]"), "{e}");
    let e = mul_channel(&x, &rand(&[3], 2), 3).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
    let e = add_channel(&x, &rand(&[3], 2).to_dtype(DType::F64).unwrap(), 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("F64"), "{e}");
    let e = channel_sum(&x, Some(&rand(&[2, 3], 3)), 1)
        .unwrap_err()
        .to_string();
    assert!(!e.is_empty());
}
