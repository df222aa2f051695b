#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests (shard merge == one pass, FD symmetric and zero on itself, KID of identical
//! sets ≈ 0, PSNR / SSIM of identical inputs) and typed errors on bad input.

use candle_core::{Device, Tensor};
use proptest::prelude::*;
use vidgen_eval_metrics::*;
use vidgen_video_core::Error;

fn mat(v: &[f64], n: usize, d: usize) -> Tensor {
    Tensor::from_vec(v.to_vec(), (n, d), &Device::Cpu).unwrap()
}

fn randn(seed: u64, n: usize, d: usize, mean: f64, scale: f64) -> Tensor {
    // A small deterministic generator (candle's randn is not seedable per call).
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let v: Vec<f64> = (0..n * d)
        .map(|_| {
            let (u1, u2) = (next().max(1e-300), next());
            mean + scale * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect();
    mat(&v, n, d)
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(48))]

    #[test]
    fn merge_equals_one_pass(n1 in 1usize..20, n2 in 1usize..20, d in 1usize..6, seed in 0u64..1000, offset in -1e3f64..1e3) {
        let a = (randn(seed, n1, d, 0.0, 1.0) + offset).unwrap();
        let b = (randn(seed + 7, n2, d, 0.0, 1.0) + offset).unwrap();
        let mut s = FeatureStats::from_features(&a).unwrap();
        s.merge(&FeatureStats::from_features(&b).unwrap()).unwrap();
        let all = Tensor::cat(&[&a, &b], 0).unwrap();
        let one = FeatureStats::from_features(&all).unwrap();
        prop_assert_eq!(s.count(), one.count());
        for (x, y) in s.mean().iter().zip(one.mean()) {
            prop_assert!((x - y).abs() <= 1e-9 * (1.0 + y.abs()));
        }
        let (c1, c2) = (s.covariance().unwrap(), one.covariance().unwrap());
        for (x, y) in c1.iter().zip(&c2) {
            prop_assert!((x - y).abs() <= 1e-9 * (1.0 + y.abs()), "{} vs {}", x, y);
        }
        // Row-by-row streaming (Welford) agrees too.
        let mut w = FeatureStats::new(d).unwrap();
        let v = all.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for r in v.chunks_exact(d) {
            w.add_rows(r, 1).unwrap();
        }
        for (x, y) in w.covariance().unwrap().iter().zip(&c2) {
            prop_assert!((x - y).abs() <= 1e-9 * (1.0 + y.abs()));
        }
    }

    #[test]
    fn fd_symmetric_and_zero_on_self(n in 3usize..30, d in 1usize..12, seed in 0u64..1000, shift in -2.0f64..2.0) {
        let a = FeatureStats::from_features(&randn(seed, n, d, 0.0, 1.0)).unwrap().gaussian().unwrap();
        let b = FeatureStats::from_features(&randn(seed + 1, n + 3, d, shift, 1.3)).unwrap().gaussian().unwrap();
        let ab = frechet_distance(&a, &b).unwrap();
        let ba = frechet_distance(&b, &a).unwrap();
        // A singular covariance (n − 1 < d) takes the eigendecomposition path, whose √ of
        // round-off eigenvalues moves FD by ~1e-8 relative (seed 910, n = 4, d = 5: 2.0e-8;
        // the rank-deficient metrics fixture: 1.1–1.9e-8); full rank agrees to ~1e-12.
        let tol = if n - 1 < d { 1e-7 } else { 1e-8 };
        prop_assert!((ab - ba).abs() <= tol * (1.0 + ab.abs()), "{} vs {}", ab, ba);
        prop_assert!(ab >= -1e-9);
        let aa = frechet_distance(&a, &a).unwrap();
        let scale = a.sigma().iter().fold(0.0f64, |m, v| m.max(v.abs())) * d as f64;
        prop_assert!(aa.abs() <= 1e-7 * (1.0 + scale), "FD(a, a) = {}", aa);
    }

    #[test]
    fn psnr_ssim_of_identical(t in 1usize..3, h in 11usize..16, w in 11usize..16, seed in 0u64..100) {
        let v = randn(seed, 3 * t * h, w, 0.5, 0.1).clamp(0.0, 1.0).unwrap().reshape((1, 3, t, h, w)).unwrap();
        let p = psnr(&v, &v, DataRange::UNIT).unwrap();
        prop_assert!(p.global.is_infinite() && p.global > 0.0);
        prop_assert!(p.per_frame.iter().all(|x| x.is_infinite()));
        for f in [SsimFlavour::SkimageGaussian, SsimFlavour::SkimageDefault, SsimFlavour::Torchmetrics] {
            let s = ssim(&v, &v, DataRange::UNIT, f).unwrap();
            prop_assert!((s.mean - 1.0).abs() < 1e-12, "{:?}: {}", f, s.mean);
        }
    }
}

#[test]
fn kid_of_identical_sets_is_zero_within_std() {
    let a = randn(3, 120, 16, 0.0, 1.0);
    let b = randn(4, 120, 16, 0.0, 1.0);
    let opts = KidOptions {
        subsets: 20,
        subset_size: 50,
        seed: 2020,
        kernel: PolynomialKernel::default(),
    };
    let same = kernel_distance(&a, &b, &opts).unwrap();
    assert!(
        same.mean.abs() <= 3.0 * same.std + 1e-12,
        "KID of same distribution {} ± {}",
        same.mean,
        same.std
    );
    let shifted = (randn(5, 120, 16, 0.0, 1.0) + 1.0).unwrap();
    let far = kernel_distance(&a, &shifted, &opts).unwrap();
    assert!(far.mean > 10.0 * same.std.max(1e-6), "{far:?}");
    // f32 features agree with f64 to f32 precision.
    let a32 = a.to_dtype(candle_core::DType::F32).unwrap();
    let s32 = kernel_distance(
        &a32,
        &shifted.to_dtype(candle_core::DType::F32).unwrap(),
        &opts,
    )
    .unwrap();
    assert!(
        (s32.mean - far.mean).abs() < 1e-4 * far.mean.abs().max(1.0),
        "{} vs {}",
        s32.mean,
        far.mean
    );
}

#[test]
fn safetensors_round_trip_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    let a = FeatureStats::from_features(&randn(1, 30, 5, 1.0, 2.0)).unwrap();
    let p = dir.path().join("a.safetensors");
    a.save_safetensors(&p).unwrap();
    let back = FeatureStats::load_safetensors(&p).unwrap();
    assert_eq!(back.count(), 30);
    for (x, y) in back
        .covariance()
        .unwrap()
        .iter()
        .zip(&a.covariance().unwrap())
    {
        assert!((x - y).abs() < 1e-12);
    }
    let g = GaussianStats::load_safetensors(&p).unwrap();
    assert!(frechet_distance(&g, &a.gaussian().unwrap()).unwrap().abs() < 1e-9);
    // A Gaussian-only file cannot be merged.
    let q = dir.path().join("g.safetensors");
    g.save_safetensors(&q).unwrap();
    assert!(matches!(
        FeatureStats::load_safetensors(&q),
        Err(Error::MissingTensor { .. })
    ));
}

fn zip_npz(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(bytes).unwrap();
        }
        z.finish().unwrap();
    }
    buf.into_inner()
}

#[test]
fn npz_statistics_and_malformed_input() {
    let dir = tempfile::tempdir().unwrap();
    let s = FeatureStats::from_features(&randn(2, 20, 4, 0.0, 1.0))
        .unwrap()
        .gaussian()
        .unwrap();
    let npz = zip_npz(&[
        (
            "mu.npy",
            vidgen_eval_metrics::npy::write_npy(s.mu(), &[4]).unwrap(),
        ),
        (
            "sigma.npy",
            vidgen_eval_metrics::npy::write_npy(s.sigma(), &[4, 4]).unwrap(),
        ),
    ]);
    let p = dir.path().join("stats.npz");
    std::fs::write(&p, &npz).unwrap();
    let back = GaussianStats::load_npz(&p).unwrap();
    assert_eq!(back, s);
    // Malformed archives and arrays are typed errors.
    let bad_cases: Vec<(&str, Vec<u8>)> = vec![
        ("not a zip", b"hello".to_vec()),
        (
            "no sigma",
            zip_npz(&[(
                "mu.npy",
                vidgen_eval_metrics::npy::write_npy(s.mu(), &[4]).unwrap(),
            )]),
        ),
        (
            "wrong sigma shape",
            zip_npz(&[
                (
                    "mu.npy",
                    vidgen_eval_metrics::npy::write_npy(s.mu(), &[4]).unwrap(),
                ),
                (
                    "sigma.npy",
                    vidgen_eval_metrics::npy::write_npy(&s.sigma()[..12], &[3, 4]).unwrap(),
                ),
            ]),
        ),
        (
            "truncated npy",
            zip_npz(&[
                (
                    "mu.npy",
                    vidgen_eval_metrics::npy::write_npy(s.mu(), &[4]).unwrap()[..70].to_vec(),
                ),
                (
                    "sigma.npy",
                    vidgen_eval_metrics::npy::write_npy(s.sigma(), &[4, 4]).unwrap(),
                ),
            ]),
        ),
    ];
    for (what, bytes) in bad_cases {
        let q = dir.path().join("bad.npz");
        std::fs::write(&q, &bytes).unwrap();
        let e = GaussianStats::load_npz(&q);
        assert!(matches!(e, Err(Error::Malformed { .. })), "{what}: {e:?}");
    }
    let e = GaussianStats::load_npz(dir.path().join("missing.npz"));
    assert!(matches!(e, Err(Error::Io { .. })));
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(64))]
    /// The .npy parser never panics on arbitrary bytes, including corrupted valid files.
    #[test]
    fn npy_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), flip in 0usize..200, val in any::<u8>()) {
        let _ = vidgen_eval_metrics::npy::parse_npy(&bytes);
        let mut good = vidgen_eval_metrics::npy::write_npy(&[1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let i = flip % good.len();
        good[i] = val;
        let _ = vidgen_eval_metrics::npy::parse_npy(&good);
    }
}

#[test]
fn npy_fortran_order_and_f32() {
    let mut hdr = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }".to_string();
    while !(10 + hdr.len() + 1).is_multiple_of(64) {
        hdr.push(' ');
    }
    hdr.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(hdr.len() as u16).to_le_bytes());
    b.extend_from_slice(hdr.as_bytes());
    // Column-major [[1,2,3],[4,5,6]] = 1 4 2 5 3 6.
    for v in [1f32, 4., 2., 5., 3., 6.] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let a = vidgen_eval_metrics::npy::parse_npy(&b).unwrap();
    assert_eq!(a.shape, vec![2, 3]);
    assert_eq!(a.data, vec![1., 2., 3., 4., 5., 6.]);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let a = randn(1, 10, 4, 0.0, 1.0);
    let b = randn(2, 10, 5, 0.0, 1.0);
    // Mismatched dims.
    let ga = FeatureStats::from_features(&a).unwrap().gaussian().unwrap();
    let gb = FeatureStats::from_features(&b).unwrap().gaussian().unwrap();
    assert!(matches!(
        frechet_distance(&ga, &gb),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        frechet_distance_features(&a, &b),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut s = FeatureStats::new(4).unwrap();
    assert!(matches!(s.update(&b), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(
        s.merge(&FeatureStats::new(5).unwrap()),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        mmd2_unbiased(&a, &b, &PolynomialKernel::default()),
        Err(Error::ShapeMismatch { .. })
    ));
    // < 2 samples.
    let one = randn(3, 1, 4, 0.0, 1.0);
    assert!(matches!(
        FeatureStats::from_features(&one).unwrap().gaussian(),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        frechet_distance_features(&one, &a),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        mmd2_unbiased(&one, &a, &PolynomialKernel::default()),
        Err(Error::InvalidArgument { .. })
    ));
    let too_big = KidOptions {
        subsets: 2,
        subset_size: 11,
        ..KidOptions::default()
    };
    assert!(matches!(
        kernel_distance(&a, &a, &too_big),
        Err(Error::InvalidArgument { .. })
    ));
    // Non-finite features.
    let mut v = a.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    v[3] = f64::NAN;
    v[7] = f64::INFINITY;
    let nan = mat(&v, 10, 4);
    assert!(matches!(
        FeatureStats::from_features(&nan),
        Err(Error::NonFinite { nan: 1, inf: 1, .. })
    ));
    assert!(matches!(
        mmd2_unbiased(&nan, &a, &PolynomialKernel::default()),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        GaussianStats::new(vec![0.0, f64::NAN], vec![1.0, 0.0, 0.0, 1.0]),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        GaussianStats::new(vec![0.0, 0.0], vec![1.0, 0.5, 0.0, 1.0]),
        Err(Error::InvalidArgument { .. })
    ));
    // Wrong rank.
    let v3 = Tensor::zeros((2, 3, 4), candle_core::DType::F64, &Device::Cpu).unwrap();
    assert!(matches!(
        FeatureStats::from_features(&v3),
        Err(Error::InvalidArgument { .. })
    ));
    // Wrong image ranges, shapes and sizes.
    let img = Tensor::ones((1, 3, 2, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    let signed = (img.clone() * -1.0).unwrap();
    assert!(matches!(
        psnr(&img, &signed, DataRange::UNIT),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(psnr(&img, &signed, DataRange::SIGNED).is_ok());
    let other = Tensor::ones((1, 3, 2, 16, 17), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        ssim(&img, &other, DataRange::UNIT, SsimFlavour::Torchmetrics),
        Err(Error::ShapeMismatch { .. })
    ));
    let small = Tensor::ones((1, 3, 2, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        ssim(
            &small,
            &small,
            DataRange::UNIT,
            SsimFlavour::SkimageGaussian
        ),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(ssim(&small, &small, DataRange::UNIT, SsimFlavour::SkimageDefault).is_ok());
    let frames4 = Tensor::ones((2, 16, 16, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        psnr(&frames4, &frames4, DataRange::UNIT),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        colourfulness(
            &Tensor::ones((1, 1, 2, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap(),
            DataRange::UNIT
        ),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn frechet_eps_options_and_rank_deficient() {
    // d = 6 from 3 samples each: rank-deficient covariances (rank 2).
    let a = randn(10, 3, 6, 0.0, 1.0);
    let b = randn(11, 3, 6, 0.3, 1.0);
    let exact = frechet_distance_features(&a, &b).unwrap();
    let ga = FeatureStats::from_features(&a).unwrap().gaussian().unwrap();
    let gb = FeatureStats::from_features(&b).unwrap().gaussian().unwrap();
    let full = frechet_distance(&ga, &gb).unwrap();
    assert!(
        (full - exact).abs() < 1e-6 * exact.abs(),
        "{full} vs {exact}"
    );
    let never = frechet_distance_with(
        &ga,
        &gb,
        &FrechetOptions {
            offset: EpsOffset::Never,
            ..Default::default()
        },
    )
    .unwrap();
    assert!((never - full).abs() < 1e-12 * full.abs());
    let always = frechet_distance_with(
        &ga,
        &gb,
        &FrechetOptions {
            offset: EpsOffset::Always(1e-6),
            ..Default::default()
        },
    )
    .unwrap();
    assert!((always - full).abs() < 1e-3 * full.abs());
}
