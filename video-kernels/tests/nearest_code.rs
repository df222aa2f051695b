//! `nearest_code` / `PreparedCodebook::nearest` against `nearest_code_reference`: exact ids
//! (ties to the lowest index included) where the arithmetic is exact, near-optimal distances on
//! general data, both the register-blocked (`D ≤ 32`) and the gemm path, and argument errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vidgen_video_core::Error;
use vidgen_video_kernels::{nearest_code, nearest_code_reference, PreparedCodebook, SMALL_DIM};

/// Values on the grid `{-1, -3/4, …, 1}`: every product, sum and squared distance below is
/// exact in f32, so fast and reference scores are exact and ties are frequent.
fn grid(n: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| r.random_range(-4i32..=4) as f32 / 4.0)
        .collect()
}

fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

fn t(v: &[f32], rows: usize, cols: usize) -> Tensor {
    Tensor::from_slice(v, (rows, cols), &Device::Cpu).unwrap()
}

/// Codebooks that repeat some of their codes, so that exact ties happen across tiles.
fn with_duplicates(mut e: Vec<f32>, k: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..k / 4 {
        let (src, dst) = (r.random_range(0..k), r.random_range(0..k));
        let row: Vec<f32> = e[src * d..(src + 1) * d].to_vec();
        e[dst * d..(dst + 1) * d].copy_from_slice(&row);
    }
    e
}

/// `(rows, codes, dim, seed)`: rows across the 64-row task blocks, codes mostly few (one tile)
/// and sometimes past the 1024-code tile of the small-dim path (the gemm path's tile is 512),
/// dims on both sides of [`SMALL_DIM`]. Larger shapes (several 256-row gemm tasks) are the
/// crate's unit tests.
fn dims() -> impl Strategy<Value = (usize, usize, usize, u64)> {
    (
        0usize..=80,
        prop_oneof![8 => 1usize..=64, 1 => 1025usize..=1060],
        prop_oneof![1usize..=SMALL_DIM, (SMALL_DIM + 1)..=72],
        any::<u64>(),
    )
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    /// On the exact grid the ids equal the reference's exactly (lowest index on ties) and so do
    /// the distances.
    #[test]
    fn exact_argmin_with_lowest_index_on_ties((n, k, d, seed) in dims()) {
        let z = grid(n * d, seed);
        let e = with_duplicates(grid(k * d, seed ^ 1), k, d, seed ^ 2);
        let (ids, dist) = nearest_code(&t(&z, n, d), &t(&e, k, d)).unwrap();
        let (rids, rdist) = nearest_code_reference(&t(&z, n, d), &t(&e, k, d)).unwrap();
        prop_assert_eq!(ids.to_vec1::<u32>().unwrap(), rids.to_vec1::<u32>().unwrap());
        prop_assert_eq!(dist.to_vec1::<f32>().unwrap(), rdist.to_vec1::<f32>().unwrap());
    }

    /// On general data the chosen code is optimal up to the f32 rounding of the expanded
    /// distance, and its reported distance is that code's distance.
    #[test]
    fn near_optimal_on_general_data((n, k, d, seed) in dims()) {
        let z = uniform(n * d, seed);
        let e = uniform(k * d, seed ^ 1);
        let cb = PreparedCodebook::new(&e, k, d).unwrap();
        let (ids, dist) = cb.nearest(&z).unwrap();
        let (_, rdist) = nearest_code_reference(&t(&z, n, d), &t(&e, k, d)).unwrap();
        let rdist = rdist.to_vec1::<f32>().unwrap();
        for r in 0..n {
            let zr = &z[r * d..(r + 1) * d];
            let id = ids[r] as usize;
            let own: f32 = zr.iter().zip(&e[id * d..(id + 1) * d]).map(|(a, b)| (a - b) * (a - b)).sum();
            let zz: f32 = zr.iter().map(|v| v * v).sum();
            let slack = 1e-5 * (zz + d as f32);
            prop_assert!(own <= rdist[r] + slack, "row {}: code {} at {} vs best {}", r, id, own, rdist[r]);
            prop_assert!((dist[r] - own).abs() <= slack, "row {}: distance {} vs {}", r, dist[r], own);
        }
    }
}

#[test]
fn half_precision_inputs_and_doc_example() {
    let e = grid(40 * 8, 5);
    let z = grid(33 * 8, 6);
    for dt in [DType::F16, DType::BF16] {
        let (zh, eh) = (
            t(&z, 33, 8).to_dtype(dt).unwrap(),
            t(&e, 40, 8).to_dtype(dt).unwrap(),
        );
        let (ids, dist) = nearest_code(&zh, &eh).unwrap();
        assert_eq!((ids.dtype(), dist.dtype()), (DType::U32, DType::F32));
        let (rids, _) = nearest_code_reference(&zh, &eh).unwrap();
        assert_eq!(
            ids.to_vec1::<u32>().unwrap(),
            rids.to_vec1::<u32>().unwrap()
        );
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    let dev = Device::Cpu;
    let z = Tensor::zeros((4, 3), DType::F32, &dev).unwrap();
    let e = Tensor::zeros((5, 3), DType::F32, &dev).unwrap();
    let cases = [
        (
            "rank 1 z",
            nearest_code(&Tensor::zeros(3, DType::F32, &dev).unwrap(), &e),
        ),
        (
            "other D",
            nearest_code(&z, &Tensor::zeros((5, 4), DType::F32, &dev).unwrap()),
        ),
        (
            "no codes",
            nearest_code(&z, &Tensor::zeros((0, 3), DType::F32, &dev).unwrap()),
        ),
        ("u32 z", nearest_code(&z.to_dtype(DType::U32).unwrap(), &e)),
        (
            "reference other D",
            nearest_code_reference(&z, &Tensor::zeros((5, 4), DType::F32, &dev).unwrap()),
        ),
    ];
    for (what, r) in cases {
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. } | Error::DType { .. })),
            "{what}: {r:?}"
        );
    }
    assert!(PreparedCodebook::new(&[0.0; 6], 2, 4).is_err());
    assert!(PreparedCodebook::new(&[], 0, 4).is_err());
    assert!(PreparedCodebook::new(&[0.0; 6], 6, 0).is_err());
    let cb = PreparedCodebook::new(&[0.0; 6], 2, 3).unwrap();
    assert!(matches!(
        cb.nearest(&[0.0; 4]),
        Err(Error::InvalidArgument { .. })
    ));
    // No rows is an empty answer.
    let (ids, dist) = cb.nearest(&[]).unwrap();
    assert!(ids.is_empty() && dist.is_empty());
    let (ids, _) = nearest_code(&Tensor::zeros((0, 3), DType::F32, &dev).unwrap(), &e).unwrap();
    assert_eq!(ids.dims(), &[0]);
}
