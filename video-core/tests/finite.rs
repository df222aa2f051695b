#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `check_finite` counts NaN and infinities exactly in every float dtype and layout, in place
//! for contiguous CPU tensors.

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use vidgen_video_core::{check_finite, Error};

fn counts(r: vidgen_video_core::Result<()>) -> (usize, usize, usize) {
    match r {
        Ok(()) => (0, 0, 0),
        Err(Error::NonFinite {
            nan, inf, total, ..
        }) => (nan, inf, total),
        Err(e) => panic!("{e:?}"),
    }
}

/// Values with NaN (both signs, quiet and signalling payloads) and infinities sprinkled in.
fn values() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            8 => -1e4f32..1e4,
            1 => Just(f32::NAN),
            1 => Just(-f32::NAN),
            1 => Just(f32::from_bits(0x7f80_0001)),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::MAX),
            1 => Just(0.0f32),
        ],
        1..300,
    )
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    #[test]
    fn counts_match_a_plain_loop(v in values(), cols in 1usize..5) {
        let nan = v.iter().filter(|x| x.is_nan()).count();
        let inf = v.iter().filter(|x| x.is_infinite()).count();
        let n = v.len();
        let t = Tensor::from_vec(v, n, &Device::Cpu).unwrap();
        prop_assert_eq!(counts(check_finite(&t, "x")), if nan + inf > 0 { (nan, inf, n) } else { (0, 0, 0) });
        for dt in [DType::F16, DType::BF16, DType::F64] {
            // f32::MAX overflows to infinity in f16 (and rounds to it in bf16): count after conversion
            let c = t.to_dtype(dt).unwrap();
            let back = c.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
            let nan = back.iter().filter(|x| x.is_nan()).count();
            let inf = back.iter().filter(|x| x.is_infinite()).count();
            let want = if nan + inf > 0 { (nan, inf, n) } else { (0, 0, 0) };
            prop_assert_eq!(counts(check_finite(&c, "x")), want, "{:?}", dt);
        }
        // a strided view: only the elements in the view count
        let rows = n / cols;
        if rows > 0 {
            let m = t.narrow(0, 0, rows * cols).unwrap().reshape((rows, cols)).unwrap();
            let view = m.t().unwrap().narrow(0, 0, 1).unwrap(); // column 0, strided
            let col: Vec<f32> = view.flatten_all().unwrap().to_vec1().unwrap();
            let nan = col.iter().filter(|x| x.is_nan()).count();
            let inf = col.iter().filter(|x| x.is_infinite()).count();
            let want = if nan + inf > 0 { (nan, inf, rows) } else { (0, 0, 0) };
            prop_assert_eq!(counts(check_finite(&view, "x")), want);
            // a narrowed contiguous slice (non-zero start offset)
            let tail = t.narrow(0, n / 2, n - n / 2).unwrap();
            let tv: Vec<f32> = tail.to_vec1().unwrap();
            let nan = tv.iter().filter(|x| x.is_nan()).count();
            let inf = tv.iter().filter(|x| x.is_infinite()).count();
            let want = if nan + inf > 0 { (nan, inf, tv.len()) } else { (0, 0, 0) };
            prop_assert_eq!(counts(check_finite(&tail, "x")), want);
        }
    }
}

#[test]
fn large_tensors_take_the_parallel_scan() {
    let n = 1 << 20;
    let mut v = vec![0.5f32; n];
    v[3] = f32::NAN;
    v[n - 1] = f32::NEG_INFINITY;
    v[n / 2] = f32::INFINITY;
    let t = Tensor::from_vec(v, (1024, 1024), &Device::Cpu).unwrap();
    assert_eq!(counts(check_finite(&t, "big")), (1, 2, n));
    let ok = Tensor::ones((1024, 1024), DType::BF16, &Device::Cpu).unwrap();
    assert!(check_finite(&ok, "big").is_ok());
}

#[test]
fn integer_and_empty_tensors_are_finite() {
    let dev = Device::Cpu;
    assert!(check_finite(&Tensor::zeros(3, DType::U8, &dev).unwrap(), "x").is_ok());
    assert!(check_finite(&Tensor::zeros(3, DType::I64, &dev).unwrap(), "x").is_ok());
    assert!(check_finite(&Tensor::zeros((0, 4), DType::F32, &dev).unwrap(), "x").is_ok());
    assert!(check_finite(&Tensor::new(1f32, &dev).unwrap(), "x").is_ok());
    assert_eq!(
        counts(check_finite(&Tensor::new(f32::NAN, &dev).unwrap(), "x")),
        (1, 0, 1)
    );
}

#[test]
fn f8_is_counted_too() {
    let t = Tensor::new(&[1f32, f32::NAN, 2.], &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F8E4M3)
        .unwrap();
    assert_eq!(counts(check_finite(&t, "x")).0, 1);
}
