#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `linear` (the few-row streaming kernel) against `linear_reference` on random shapes, its
//! fall-back paths (many rows, f64, tracked gradients) and its argument errors.

use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use vidgen_video_kernels::{linear, linear_reference, SKINNY_ROWS};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    /// Rows 1 ..= SKINNY_ROWS + 2 (both paths), odd `in` / `out`, leading dims, optional bias.
    #[test]
    fn matches_reference(
        lead in prop::collection::vec(1usize..4, 0..3),
        rows_last in 1usize..=SKINNY_ROWS + 2,
        in_dim in 1usize..90,
        out_dim in 1usize..150,
        with_bias in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let mut shape = lead.clone();
        shape.push(rows_last);
        shape.push(in_dim);
        let x = randn(&shape, seed);
        let w = randn(&[out_dim, in_dim], seed + 1);
        let b = with_bias.then(|| randn(&[out_dim], seed + 2));
        let got = linear(&x, &w, b.as_ref()).unwrap();
        let want = linear_reference(&x, &w, b.as_ref()).unwrap();
        let mut out_shape = shape.clone();
        *out_shape.last_mut().unwrap() = out_dim;
        prop_assert_eq!(got.dims(), &out_shape[..]);
        prop_assert!(max_rel(&got, &want) < 1e-5, "{:?} x {:?}", shape, w.dims());
    }
}

/// Decode-sized products (one row, widths of the 25M Llama), a transposed (strided) weight and
/// a non-contiguous input.
#[test]
fn decode_shapes_and_strided_inputs() {
    for (out_dim, in_dim) in [
        (1536, 512),
        (512, 512),
        (1376, 512),
        (512, 1376),
        (16384, 512),
    ] {
        let x = randn(&[1, 1, in_dim], 3);
        let w = randn(&[out_dim, in_dim], 4);
        let got = linear(&x, &w, None).unwrap();
        let want = linear_reference(&x, &w, None).unwrap();
        assert!(max_rel(&got, &want) < 1e-5, "{out_dim}x{in_dim}");
    }
    let wt = randn(&[64, 96], 5).t().unwrap(); // [96, 64], strided
    let xt = randn(&[64, 3], 6).t().unwrap(); // [3, 64], strided
    let got = linear(&xt, &wt, None).unwrap();
    let want =
        linear_reference(&xt.contiguous().unwrap(), &wt.contiguous().unwrap(), None).unwrap();
    assert!(max_rel(&got, &want) < 1e-5);
}

/// f64 and tracked gradients take candle's path: gradients flow.
#[test]
fn fallbacks_keep_gradients_and_dtypes() {
    let x = randn(&[2, 8], 7);
    let w = Var::from_tensor(&randn(&[5, 8], 8)).unwrap();
    let y = linear(&x, w.as_tensor(), None).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(w.as_tensor()).is_some(), "no gradient for the weight");
    let x64 = x.to_dtype(DType::F64).unwrap();
    let w64 = w.as_tensor().to_dtype(DType::F64).unwrap();
    assert_eq!(linear(&x64, &w64, None).unwrap().dtype(), DType::F64);
}

#[test]
fn bad_shapes_are_errors() {
    let x = randn(&[2, 8], 9);
    let w = randn(&[5, 7], 10);
    let e = linear(&x, &w, None).unwrap_err().to_string();
    assert!(e.contains("[2, 8]") && e.contains("[5, 7]"), "{e}");
    let w = randn(&[5, 8], 11);
    let e = linear(&x, &w, Some(&randn(&[4], 12)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[5]") && e.contains("[4]"), "{e}");
    let e = linear(&x, &randn(&[5, 8, 1], 13), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[5, 8, 1]"), "{e}");
    let e = linear(&x.to_dtype(DType::F64).unwrap(), &w, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("F64"), "{e}");
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    /// `swiglu` equals silu(gate) · up on random shapes, including strided inputs.
    #[test]
    fn swiglu_matches_reference(
        lead in prop::collection::vec(1usize..5, 0..3),
        half in 1usize..300,
        transposed in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let mut shape = lead.clone();
        shape.push(2 * half);
        let x = (randn(&shape, seed) * 8.0).unwrap();
        let x = if transposed && shape.len() >= 2 {
            // A strided view with the same logical shape.
            let n = shape.len();
            let mut t = shape.clone();
            t.swap(n - 2, n - 1);
            (randn(&t, seed) * 8.0).unwrap().transpose(n - 2, n - 1).unwrap()
        } else {
            x
        };
        let got = vidgen_video_kernels::swiglu(&x).unwrap();
        let want = vidgen_video_kernels::swiglu_reference(&x).unwrap();
        prop_assert_eq!(got.dims(), want.dims());
        prop_assert!(max_rel(&got, &want) < 2e-6);
    }
}

#[test]
fn swiglu_errors_and_gradients() {
    let e = vidgen_video_kernels::swiglu(&randn(&[2, 5], 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[2, 5]") && e.contains("odd"), "{e}");
    let x = Var::from_tensor(&randn(&[3, 8], 2)).unwrap();
    let y = vidgen_video_kernels::swiglu(x.as_tensor()).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(x.as_tensor()).is_some());
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    /// `rms_norm` and `add_rms_norm` equal the candle-ops definition on random shapes.
    #[test]
    fn rms_norms_match_reference(
        lead in prop::collection::vec(1usize..6, 0..3),
        d in 1usize..200,
        seed in 0u64..1000,
    ) {
        let mut shape = lead.clone();
        shape.push(d);
        let x = (randn(&shape, seed) * 3.0).unwrap();
        let r = randn(&shape, seed + 1);
        let w = randn(&[d], seed + 2);
        let want = vidgen_video_kernels::rms_norm_reference(&x, &w, 1e-5).unwrap();
        prop_assert!(max_rel(&vidgen_video_kernels::rms_norm(&x, &w, 1e-5).unwrap(), &want) < 1e-5);
        let (s, n) = vidgen_video_kernels::add_rms_norm(&x, &r, &w, 1e-6).unwrap();
        let ws = (&x + &r).unwrap();
        prop_assert!(max_rel(&s, &ws) == 0.0);
        let wn = vidgen_video_kernels::rms_norm_reference(&ws, &w, 1e-6).unwrap();
        prop_assert!(max_rel(&n, &wn) < 1e-5);
    }
}

#[test]
fn rms_norm_errors_and_gradients() {
    let x = randn(&[3, 8], 1);
    let e = vidgen_video_kernels::rms_norm(&x, &randn(&[7], 2), 1e-5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[8]") && e.contains("[7]"), "{e}");
    let e = vidgen_video_kernels::add_rms_norm(&x, &randn(&[3, 7], 3), &randn(&[8], 4), 1e-5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[3, 8]") && e.contains("[3, 7]"), "{e}");
    let xv = Var::from_tensor(&x).unwrap();
    let y = vidgen_video_kernels::rms_norm(xv.as_tensor(), &randn(&[8], 5), 1e-5).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(xv.as_tensor()).is_some());
}

/// The many-row path split into column blocks (widths that are and are not multiples of the
/// block alignment), with and without a bias.
#[test]
fn many_rows_column_blocks() {
    for (rows, in_dim, out_dim) in [(20, 33, 300), (64, 64, 513), (9, 512, 1536), (17, 7, 2000)] {
        let x = randn(&[rows, in_dim], 21);
        let w = randn(&[out_dim, in_dim], 22);
        let b = randn(&[out_dim], 23);
        for bias in [None, Some(&b)] {
            let got = linear(&x, &w, bias).unwrap();
            let want = linear_reference(&x, &w, bias).unwrap();
            assert!(max_rel(&got, &want) < 1e-5, "{rows} {in_dim} {out_dim}");
        }
    }
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    /// `geglu` / `gelu_erf` equal the candle-ops definitions (libm `erff`) on random shapes.
    #[test]
    fn geglu_and_gelu_match_reference(
        lead in prop::collection::vec(1usize..5, 0..3),
        half in 1usize..300,
        seed in 0u64..1000,
    ) {
        let mut shape = lead.clone();
        shape.push(2 * half);
        let x = (randn(&shape, seed) * 6.0).unwrap();
        let abs_diff = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
        };
        let g = vidgen_video_kernels::geglu(&x).unwrap();
        let gr = vidgen_video_kernels::geglu_reference(&x).unwrap();
        prop_assert_eq!(g.dims(), gr.dims());
        prop_assert!(abs_diff(&g, &gr) < 1e-5);
        let e = vidgen_video_kernels::gelu_erf(&x).unwrap();
        let er = vidgen_video_kernels::gelu_erf_reference(&x).unwrap();
        prop_assert!(abs_diff(&e, &er) < 5e-6);
    }
}

/// `silu` / `silu_slice` against candle's `silu` over a wide range, including the tails.
#[test]
fn silu_matches_candle() {
    let v: Vec<f32> = (0..20_001).map(|i| -100.0 + i as f32 * 0.01).collect();
    let x = Tensor::new(v.as_slice(), &Device::Cpu).unwrap();
    let got = vidgen_video_kernels::silu(&x).unwrap();
    let want = candle_nn::ops::silu(&x).unwrap();
    assert!(max_rel(&got, &want) < 1e-6);
    let mut s = v.clone();
    vidgen_video_kernels::silu_slice(&mut s);
    assert!(max_rel(&Tensor::new(s.as_slice(), &Device::Cpu).unwrap(), &want) < 1e-6);
}

/// A frozen weight (plain tensor) with a tracked input takes the fused op: same output and
/// input gradient as candle's matmul, and no weight gradient is computed.
#[test]
fn frozen_weights_give_only_the_input_gradient() {
    for rows in [3usize, 40] {
        let xv = Var::from_tensor(&randn(&[rows, 24], 11)).unwrap();
        let w = randn(&[17, 24], 12);
        let b = randn(&[17], 13);
        let up = randn(&[rows, 17], 14);
        let y = linear(xv.as_tensor(), &w, Some(&b)).unwrap();
        let y_ref = linear_reference(xv.as_tensor(), &w, Some(&b)).unwrap();
        assert!(max_rel(&y, &y_ref) < 1e-5);
        let g = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (y_ref * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let dx = g.get(xv.as_tensor()).unwrap();
        assert!(
            max_rel(dx, g_ref.get(xv.as_tensor()).unwrap()) < 1e-5,
            "rows {rows}"
        );
        assert!(
            g.get(&w).is_none() && g.get(&b).is_none(),
            "a frozen weight got a gradient"
        );
    }
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(128))]

    /// Under gradient tracking `geglu` / `gelu_erf` take the custom op: values as the
    /// untracked path's, and the input gradient against candle's autograd of the reference in
    /// f64 (libm `erf`), within the `erfc` fit's error.
    #[test]
    fn tracked_geglu_and_gelu_gradients_match_f64_autograd(
        lead in prop::collection::vec(1usize..5, 0..3),
        half in 1usize..200,
        seed in 0u64..1000,
    ) {
        let mut shape = lead.clone();
        shape.push(2 * half);
        let x = (randn(&shape, seed) * 4.0).unwrap();
        let up_g = randn(&[shape[..shape.len() - 1].to_vec(), vec![half]].concat(), seed + 1);
        let up_e = randn(&shape, seed + 2);
        let err = |a: &Tensor, b: &Tensor| -> f64 {
            let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap().max(1.0);
            (a.to_dtype(DType::F64).unwrap() - b).unwrap().abs().unwrap().flatten_all().unwrap()
                .max(0).unwrap().to_scalar::<f64>().unwrap() / scale
        };
        for gated in [true, false] {
            let xv = Var::from_tensor(&x).unwrap();
            let (y, up) = if gated {
                (vidgen_video_kernels::geglu(xv.as_tensor()).unwrap(), &up_g)
            } else {
                (vidgen_video_kernels::gelu_erf(xv.as_tensor()).unwrap(), &up_e)
            };
            let untracked = if gated {
                vidgen_video_kernels::geglu(&x).unwrap()
            } else {
                vidgen_video_kernels::gelu_erf(&x).unwrap()
            };
            // The same kernel forward, tracked or not.
            prop_assert_eq!(
                y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                untracked.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            let g = (&y * up).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = g.get(xv.as_tensor()).unwrap();

            let x64 = Var::from_tensor(&x.to_dtype(DType::F64).unwrap()).unwrap();
            let y64 = if gated {
                vidgen_video_kernels::geglu_reference(x64.as_tensor()).unwrap()
            } else {
                vidgen_video_kernels::gelu_erf_reference(x64.as_tensor()).unwrap()
            };
            let g64 = (&y64 * up.to_dtype(DType::F64).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
            let dx64 = g64.get(x64.as_tensor()).unwrap();
            prop_assert!(err(&y, &y64) < 1e-6, "value, gated {}", gated);
            prop_assert!(err(dx, dx64) < 1e-5, "gradient, gated {}: {}", gated, err(dx, dx64));
        }
    }
}
