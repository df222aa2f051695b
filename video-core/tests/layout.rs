//! `contiguous` equals candle's `Tensor::contiguous` on permuted, narrowed and broadcast views.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, IndexOp, Tensor};
use proptest::prelude::*;
use vidgen_video_core::contiguous;

fn check(t: &Tensor) {
    let want = t.contiguous().unwrap();
    let got = contiguous(t).unwrap();
    assert!(got.is_contiguous());
    assert_eq!(got.dims(), want.dims());
    let (g, w) = (
        got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert_eq!(g, w, "layout {:?}", t.layout());
}

/// A permutation of `0..n` from `seed` (Fisher-Yates with a tiny LCG).
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..n).collect();
    let mut s = seed;
    for i in (1..n).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        perm.swap(i, (s >> 33) as usize % (i + 1));
    }
    perm
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(48))]
    #[test]
    fn permuted_views_match_candle(
        dims in prop::collection::vec(1usize..16, 2..=5),
        perm_seed in any::<u64>(),
        narrow in any::<bool>(),
    ) {
        let n: usize = dims.iter().product();
        let x = Tensor::arange(0f32, n as f32, &Device::Cpu).unwrap().reshape(dims.clone()).unwrap();
        let perm = permutation(dims.len(), perm_seed);
        let mut t = x.permute(perm).unwrap();
        if narrow && t.dims()[0] > 2 {
            let len = t.dims()[0] - 2;
            t = t.narrow(0, 1, len).unwrap();
        }
        check(&t);
    }
}

#[test]
fn large_permutes_and_broadcasts_match_candle() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 64, 8, 16, 16), &dev).unwrap();
    check(&x.permute((0, 3, 4, 2, 1)).unwrap());
    check(&x.permute((0, 2, 3, 4, 1)).unwrap());
    check(&x.transpose(1, 2).unwrap());
    let row = Tensor::randn(0f32, 1.0, (1, 64, 1), &dev).unwrap();
    check(&row.broadcast_as((3, 64, 700)).unwrap());
    // Already contiguous and other dtypes take candle's path.
    check(&x);
    let h = x.to_dtype(DType::F16).unwrap().transpose(1, 2).unwrap();
    assert_eq!(contiguous(&h).unwrap().dtype(), DType::F16);
}

#[test]
fn gradients_flow_through() {
    let dev = Device::Cpu;
    let x = candle_core::Var::randn(0f32, 1.0, (4, 32, 8, 16), &dev).unwrap();
    let y = contiguous(&x.as_tensor().permute((0, 2, 3, 1)).unwrap()).unwrap();
    let w = Tensor::randn(0f32, 1.0, y.dims(), &dev).unwrap();
    let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = g
        .get(x.as_tensor())
        .expect("no gradient through contiguous");
    let want = w.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(flat(gx), flat(&want));
}

/// The element at multi-index `idx` of a view, computed from its layout by hand.
fn by_index(data: &[f32], t: &Tensor) -> Vec<f32> {
    let (dims, strides, start) = (t.dims(), t.stride(), t.layout().start_offset());
    let n: usize = dims.iter().product();
    (0..n)
        .map(|mut i| {
            let mut off = start;
            for d in (0..dims.len()).rev() {
                off += (i % dims[d]) * strides[d];
                i /= dims[d];
            }
            data[off]
        })
        .collect()
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(48))]
    /// candle's own `contiguous` (vendored and patched: a strided innermost dimension is
    /// gathered row by row, in parallel above 16 Ki elements) against index arithmetic, on
    /// permuted, narrowed and broadcast views large enough to split into tasks.
    #[test]
    fn candle_contiguous_matches_index_arithmetic(
        dims in prop::collection::vec(1usize..24, 2..=4),
        perm_seed in any::<u64>(),
        narrow in any::<bool>(),
        broadcast in any::<bool>(),
    ) {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let x = Tensor::from_vec(data.clone(), dims.clone(), &Device::Cpu).unwrap();
        let perm = permutation(dims.len(), perm_seed);
        let mut t = x.permute(perm).unwrap();
        if narrow && t.dims()[0] > 2 {
            let len = t.dims()[0] - 2;
            t = t.narrow(0, 1, len).unwrap();
        }
        if broadcast {
            // A leading broadcast dimension (stride 0) of 40: above 16 Ki elements for most.
            let mut shape = vec![40];
            shape.extend_from_slice(t.dims());
            t = t.broadcast_as(shape).unwrap();
        }
        let want = by_index(&data, &t);
        let got = t.contiguous().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        prop_assert_eq!(got, want, "layout {:?}", t.layout());
    }
}

#[test]
fn candle_contiguous_of_large_transposes_matches_index_arithmetic() {
    let n = 2 * 96 * 33 * 40;
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let x = Tensor::from_vec(data.clone(), (2, 96, 33, 40), &Device::Cpu).unwrap();
    for t in [
        x.transpose(1, 3).unwrap(),
        x.permute((0, 2, 3, 1)).unwrap(),
        x.permute((3, 0, 1, 2)).unwrap(),
        x.narrow(3, 3, 30).unwrap().transpose(2, 3).unwrap(),
        x.i((.., .., .., 7)).unwrap().t().unwrap(),
    ] {
        let got = t.contiguous().unwrap().flatten_all().unwrap();
        assert_eq!(
            got.to_vec1::<f32>().unwrap(),
            by_index(&data, &t),
            "{:?}",
            t.layout()
        );
    }
}
