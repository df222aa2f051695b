//! `group_norm` and `layer_norm` against their plain-ops twins over random shapes and f32 / f16 /
//! bf16 (proptest), the fused GroupNorm backward against the twin's autograd, and argument
//! errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use video_testkit::assert_close;
use vidgen_video_core::Error;
use vidgen_video_kernels::{
    group_norm, group_norm_moments, group_norm_reference, group_norm_with_moments, layer_norm,
    layer_norm_reference, merge_group_moments, GroupMoments,
};

/// Uniform values in `offset ± scale`.
fn rand(shape: &[usize], seed: u64, offset: f32, scale: f32) -> Tensor {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| offset + (r.random::<f32>() * 2.0 - 1.0) * scale)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// `got` against `want` within `rel · max(1, max|want|)`, both read as f32.
fn close(what: &str, got: &Tensor, want: &Tensor, rel: f64) {
    let (g, w) = (
        got.to_dtype(DType::F32).unwrap(),
        want.to_dtype(DType::F32).unwrap(),
    );
    assert_close(what, &g, &w, rel * max_abs(&w).max(1.0), 0.0);
}

/// Largest relative step of one rounding in each dtype, with room for one flip of the last bit
/// between two f32 results that differ in their last places.
fn dtype_rel(dt: DType) -> f64 {
    match dt {
        DType::F16 => 2e-3,
        DType::BF16 => 1.6e-2,
        _ => 2e-5,
    }
}

#[derive(Debug, Clone)]
struct GnCase {
    shape: Vec<usize>,
    groups: usize,
    eps: f64,
    silu: bool,
    dtype: DType,
    offset: f32,
    seed: u64,
}

fn gn_case() -> impl Strategy<Value = GnCase> {
    (
        (
            1usize..=2,
            prop::sample::select(vec![1usize, 2, 4, 8]),
            1usize..=4,
        ),
        prop::collection::vec(1usize..=7, 1..=3),
        (
            prop::sample::select(vec![1e-5, 1e-6]),
            any::<bool>(),
            prop::sample::select(vec![DType::F32, DType::F16, DType::BF16]),
            prop::sample::select(vec![0.0f32, 3.0]),
            any::<u64>(),
        ),
    )
        .prop_map(
            |((b, groups, cpg), spatial, (eps, silu, dtype, offset, seed))| {
                let mut shape = vec![b, groups * cpg];
                shape.extend(spatial);
                GnCase {
                    shape,
                    groups,
                    eps,
                    silu,
                    dtype,
                    offset,
                    seed,
                }
            },
        )
}

fn gn_tensors(c: &GnCase) -> (Tensor, Tensor, Tensor) {
    let ch = c.shape[1];
    let x = rand(&c.shape, c.seed, c.offset, 2.0);
    let w = rand(&[ch], c.seed ^ 1, 1.0, 0.5);
    let b = rand(&[ch], c.seed ^ 2, 0.0, 0.5);
    (x, w, b)
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    /// The fused pass (f64 statistics) against the twin (f32 statistics) on the same inputs in
    /// each dtype; the output keeps the input's dtype and shape.
    #[test]
    fn group_norm_matches_reference(c in gn_case()) {
        let (x, w, b) = gn_tensors(&c);
        let dt = c.dtype;
        let (x, w, b) = (x.to_dtype(dt).unwrap(), w.to_dtype(dt).unwrap(), b.to_dtype(dt).unwrap());
        let got = group_norm(&x, &w, &b, c.groups, c.eps, c.silu).unwrap();
        let want = group_norm_reference(&x, &w, &b, c.groups, c.eps, c.silu).unwrap();
        prop_assert_eq!(got.dtype(), dt);
        prop_assert_eq!(got.dims(), x.dims());
        close(&format!("{c:?}"), &got, &want, dtype_rel(dt));
    }

    /// Gradients of `Σ y·dy` w.r.t. x, weight and bias: the fused op's own backward against
    /// candle's autograd through the twin (f32).
    #[test]
    fn group_norm_backward_matches_reference(c in gn_case()) {
        let (x, w, b) = gn_tensors(&c);
        let dy = rand(&c.shape, c.seed ^ 3, 0.0, 1.0);
        let grads = |f: fn(&Tensor, &Tensor, &Tensor, usize, f64, bool) -> vidgen_video_core::Result<Tensor>| {
            let (xv, wv, bv) = (
                Var::from_tensor(&x).unwrap(),
                Var::from_tensor(&w).unwrap(),
                Var::from_tensor(&b).unwrap(),
            );
            let y = f(xv.as_tensor(), wv.as_tensor(), bv.as_tensor(), c.groups, c.eps, c.silu).unwrap();
            let g = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let get = |v: &Var| g.get(v.as_tensor()).expect("no gradient").clone();
            [y, get(&xv), get(&wv), get(&bv)]
        };
        let got = grads(group_norm);
        let want = grads(group_norm_reference);
        for (name, (g, w)) in ["y", "dx", "dweight", "dbias"].iter().zip(got.iter().zip(want.iter())) {
            // dweight / dbias sum over B·spatial products: f32 sums of hundreds of terms.
            close(&format!("{c:?} {name}"), g, w, 1e-4);
        }
    }
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(128))]

    /// Moments gathered over chunks of dim 2 and merged equal the whole input's, and the
    /// GroupNorm applied per chunk with them equals the GroupNorm of the whole input (what the
    /// exact chunked decode of SVD's temporal VAE rests on).
    #[test]
    fn chunked_moments_give_the_whole_group_norm(c in gn_case(), cut in 0.0f64..1.0) {
        let (x, w, b) = gn_tensors(&c);
        let t = c.shape[2];
        let k = ((cut * t as f64) as usize).min(t);
        let parts: Vec<Tensor> = [(0, k), (k, t - k)]
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|&(s, n)| x.narrow(2, s, n).unwrap())
            .collect();
        let mut acc: Vec<GroupMoments> = Vec::new();
        for p in &parts {
            merge_group_moments(&mut acc, &group_norm_moments(p, c.groups).unwrap()).unwrap();
        }
        let whole = group_norm_moments(&x, c.groups).unwrap();
        prop_assert_eq!(acc.len(), whole.len());
        for (a, m) in acc.iter().zip(&whole) {
            prop_assert_eq!(a.count, m.count);
            prop_assert!((a.mean - m.mean).abs() <= 1e-12 * (1.0 + m.mean.abs()));
            prop_assert!((a.m2 - m.m2).abs() <= 1e-9 * (1.0 + m.m2));
        }
        let got: Vec<Tensor> = parts
            .iter()
            .map(|p| group_norm_with_moments(p, &w, &b, c.groups, &acc, c.eps, c.silu).unwrap())
            .collect();
        let got = Tensor::cat(&got, 2).unwrap();
        let want = group_norm(&x, &w, &b, c.groups, c.eps, c.silu).unwrap();
        close(&format!("{c:?} cut {k}"), &got, &want, 2e-6);
    }
}

#[test]
fn moments_errors_are_named() {
    let x = rand(&[2, 4, 3, 5], 7, 0.0, 1.0);
    let (w, b) = (rand(&[4], 8, 1.0, 0.1), rand(&[4], 9, 0.0, 0.1));
    assert!(group_norm_moments(&x, 3).is_err());
    let rank2 = x.flatten_from(1).unwrap();
    assert!(group_norm_moments(&rank2, 1).is_err());
    let m = group_norm_moments(&x, 2).unwrap();
    assert_eq!(m.len(), 4);
    let e = group_norm_with_moments(&x, &w, &b, 2, &m[..3], 1e-6, false).unwrap_err();
    assert!(e.to_string().contains("moments"), "{e}");
    let mut acc = m.clone();
    assert!(merge_group_moments(&mut acc, &m[..2]).is_err());
    // Merging with nothing is the identity.
    assert_eq!(GroupMoments::default().merge(m[0]), m[0]);
    assert_eq!(m[0].merge(GroupMoments::default()), m[0]);
}

#[derive(Debug, Clone)]
struct LnCase {
    lead: Vec<usize>,
    d: usize,
    affine: (bool, bool),
    dtype: DType,
    offset: f32,
    seed: u64,
}

fn ln_case() -> impl Strategy<Value = LnCase> {
    (
        prop::collection::vec(1usize..=5, 0..=2),
        prop_oneof![1usize..=40, 41usize..=300],
        (any::<bool>(), any::<bool>()),
        prop::sample::select(vec![DType::F32, DType::F16, DType::BF16]),
        prop::sample::select(vec![0.0f32, 3.0]),
        any::<u64>(),
    )
        .prop_map(|(lead, d, affine, dtype, offset, seed)| LnCase {
            lead,
            d,
            affine,
            dtype,
            offset,
            seed,
        })
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    #[test]
    fn layer_norm_matches_reference(c in ln_case()) {
        let mut shape = c.lead.clone();
        shape.push(c.d);
        let dt = c.dtype;
        let x = rand(&shape, c.seed, c.offset, 2.0).to_dtype(dt).unwrap();
        let w = c.affine.0.then(|| rand(&[c.d], c.seed ^ 1, 1.0, 0.5).to_dtype(dt).unwrap());
        let b = c.affine.1.then(|| rand(&[c.d], c.seed ^ 2, 0.0, 0.5).to_dtype(dt).unwrap());
        let got = layer_norm(&x, w.as_ref(), b.as_ref(), 1e-5).unwrap();
        let want = layer_norm_reference(&x, w.as_ref(), b.as_ref(), 1e-5).unwrap();
        prop_assert_eq!(got.dtype(), dt);
        prop_assert_eq!(got.dims(), x.dims());
        close(&format!("{c:?}"), &got, &want, dtype_rel(dt));
    }
}

#[test]
fn layer_norm_keeps_gradients_and_matches_torch_values() {
    // torch.nn.functional.layer_norm(torch.tensor([[1., 2., 4.], [-1., 0., 7.]]), (3,), eps=1e-5),
    // computed in f64.
    let x = Tensor::new(&[[1f32, 2., 4.], [-1., 0., 7.]], &Device::Cpu).unwrap();
    let y = layer_norm(&x, None, None, 1e-5).unwrap();
    let want = Tensor::new(
        &[
            [-1.069_041_5f32, -0.267_260_4, 1.336_301_9],
            [-0.842_926_9, -0.561_951_3, 1.404_878_2],
        ],
        &Device::Cpu,
    )
    .unwrap();
    assert_close("layer_norm", &y, &want, 2e-6, 0.0);
    // Tracked inputs take the differentiable twin.
    let xv = Var::from_tensor(&x).unwrap();
    let w = Var::from_tensor(&Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap()).unwrap();
    let y = layer_norm(xv.as_tensor(), Some(w.as_tensor()), None, 1e-5).unwrap();
    let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(xv.as_tensor()).is_some() && g.get(w.as_tensor()).is_some());
}

#[test]
fn group_norm_matches_torch_values() {
    // torch.nn.functional.group_norm(x, 2, w, b, eps=1e-5) for x = arange(12).reshape(1, 4, 3)
    // ** 1.5, w = [1, 2, 3, 4], b = [0, 1, 0, -1] (its definition, in f64); then silu.
    let x: Vec<f32> = (0..12).map(|i| (i as f32).powf(1.5)).collect();
    let x = Tensor::from_vec(x, (1, 4, 3), &Device::Cpu).unwrap();
    let w = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu).unwrap();
    let b = Tensor::new(&[0f32, 1., 0., -1.], &Device::Cpu).unwrap();
    let y = group_norm(&x, &w, &b, 2, 1e-5, false).unwrap();
    // Per group: values, mean, biased variance, in f64.
    let xs: Vec<f64> = (0..12).map(|i| (i as f64).powf(1.5)).collect();
    let mut want = vec![0f32; 12];
    let (wv, bv) = ([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, -1.0]);
    for g in 0..2 {
        let s = &xs[g * 6..g * 6 + 6];
        let mean = s.iter().sum::<f64>() / 6.0;
        let var = s.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 6.0;
        for (j, v) in s.iter().enumerate() {
            let ch = g * 2 + j / 3;
            want[g * 6 + j] = ((v - mean) / (var + 1e-5).sqrt() * wv[ch] + bv[ch]) as f32;
        }
    }
    let want = Tensor::from_vec(want, (1, 4, 3), &Device::Cpu).unwrap();
    assert_close("group_norm", &y, &want, 2e-6, 0.0);
    let ys = group_norm(&x, &w, &b, 2, 1e-5, true).unwrap();
    let want_silu = candle_nn::ops::silu(&want).unwrap();
    assert_close("group_norm + silu", &ys, &want_silu, 2e-6, 0.0);
}

#[test]
fn bad_arguments_are_typed_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 6, 4), DType::F32, &dev).unwrap();
    let w = Tensor::ones(6, DType::F32, &dev).unwrap();
    let b = Tensor::zeros(6, DType::F32, &dev).unwrap();
    let bad_w = Tensor::ones(5, DType::F32, &dev).unwrap();
    let x2 = Tensor::zeros((2, 6), DType::F32, &dev).unwrap();
    let xi = Tensor::zeros((2, 6, 4), DType::U32, &dev).unwrap();
    for (what, r) in [
        ("rank 2", group_norm(&x2, &w, &b, 3, 1e-5, false)),
        ("groups 4", group_norm(&x, &w, &b, 4, 1e-5, false)),
        ("groups 0", group_norm(&x, &w, &b, 0, 1e-5, false)),
        ("weight [5]", group_norm(&x, &bad_w, &b, 3, 1e-5, false)),
        ("bias [5]", group_norm(&x, &w, &bad_w, 3, 1e-5, true)),
        ("u32 input", group_norm(&xi, &w, &b, 3, 1e-5, false)),
        (
            "ref rank 2",
            group_norm_reference(&x2, &w, &b, 3, 1e-5, false),
        ),
        ("ln weight", layer_norm(&x, Some(&bad_w), None, 1e-5)),
        ("ln bias", layer_norm(&x, None, Some(&w), 1e-5)),
        ("ln u32", layer_norm(&xi, None, None, 1e-5)),
        (
            "ln ref weight",
            layer_norm_reference(&x, Some(&bad_w), None, 1e-5),
        ),
    ] {
        match r {
            Err(
                Error::InvalidArgument { .. } | Error::ShapeMismatch { .. } | Error::DType { .. },
            ) => {}
            other => panic!("{what}: expected a typed error, got {other:?}"),
        }
    }
    // Empty tensors are fine (and empty).
    let e = Tensor::zeros((0, 6, 4), DType::F32, &dev).unwrap();
    assert_eq!(
        group_norm(&e, &w, &b, 3, 1e-5, true).unwrap().dims(),
        &[0, 6, 4]
    );
    let e = Tensor::zeros((2, 6, 0), DType::F32, &dev).unwrap();
    assert_eq!(
        group_norm(&e, &w, &b, 3, 1e-5, true).unwrap().dims(),
        &[2, 6, 0]
    );
    let e = Tensor::zeros((0, 6), DType::F32, &dev).unwrap();
    assert_eq!(
        layer_norm(&e, Some(&w), Some(&b), 1e-5).unwrap().dims(),
        &[0, 6]
    );
}
