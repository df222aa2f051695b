//! `add` and `blend` against their candle twins: bit-identical over random shapes and broadcast
//! patterns (proptest), the fallbacks (tracked, f16, strided, unsupported broadcasts) equal the
//! twins, and shape errors stay errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Tensor, Var};
use proptest::prelude::*;
use video_testkit::{f32_bits as bits, uniform as rand};
use vidgen_video_kernels::{add, add_reference, blend, blend_reference};

fn same(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    assert!(bits(got) == bits(want), "{what}: values differ");
}

/// `big` with each dim kept or set to 1 by `mask`'s bits, then `drop` leading dims removed.
fn broadcast_of(big: &[usize], mask: u32, drop: usize) -> Vec<usize> {
    let s: Vec<usize> = big
        .iter()
        .enumerate()
        .map(|(i, &d)| if mask >> i & 1 == 1 { d } else { 1 })
        .collect();
    s[drop.min(s.len())..].to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn add_equals_candle_for_every_broadcast(
        dims in prop::collection::vec(1usize..24, 1..5),
        mask in 0u32..32,
        drop in 0usize..3,
        seed in 0u64..1000,
    ) {
        // Large enough for the fast path on most draws: scale the first dim up.
        let mut big = dims.clone();
        big[0] *= 64;
        let small = broadcast_of(&big, mask, drop);
        let a = rand(&big, seed);
        let b = rand(&small, seed + 1);
        same(&format!("{big:?} + {small:?}"), &add(&a, &b).unwrap(), &add_reference(&a, &b).unwrap());
    }

    #[test]
    fn blend_equals_candle_for_every_broadcast(
        dims in prop::collection::vec(1usize..24, 1..5),
        mask in 0u32..32,
        seed in 0u64..1000,
    ) {
        let mut big = dims.clone();
        big[0] *= 64;
        let alpha_shape = broadcast_of(&big, mask, 0);
        let (s, t) = (rand(&big, seed), rand(&big, seed + 1));
        let alpha = (rand(&alpha_shape, seed + 2) * 0.5).unwrap().affine(1.0, 0.5).unwrap();
        same(
            &format!("{big:?} α {alpha_shape:?}"),
            &blend(&s, &t, &alpha).unwrap(),
            &blend_reference(&s, &t, &alpha).unwrap(),
        );
    }
}

#[test]
fn the_unet_shapes_take_the_fast_path_and_match() {
    // Residual, time embedding on [B·F, C, H, W], per-frame mix on [B, C, F, H, W] and on tokens.
    let x = rand(&[8, 64, 32, 32], 1);
    same(
        "residual",
        &add(&x, &rand(&[8, 64, 32, 32], 2)).unwrap(),
        &(&x + rand(&[8, 64, 32, 32], 2)).unwrap(),
    );
    let temb = rand(&[8, 64, 1, 1], 3);
    same(
        "temb",
        &add(&x, &temb).unwrap(),
        &x.broadcast_add(&temb).unwrap(),
    );
    let bias = rand(&[32], 4);
    same(
        "bias",
        &add(&x, &bias).unwrap(),
        &x.broadcast_add(&bias).unwrap(),
    );
    let v = rand(&[1, 64, 8, 32, 32], 5);
    let w = rand(&[1, 64, 8, 32, 32], 6);
    let a = rand(&[1, 1, 8, 1, 1], 7);
    same(
        "mix video",
        &blend(&v, &w, &a).unwrap(),
        &blend_reference(&v, &w, &a).unwrap(),
    );
    let seq = rand(&[8, 1024, 64], 8);
    let seq2 = rand(&[8, 1024, 64], 9);
    let a = rand(&[8, 1, 1], 10);
    let rows = rand(&[8, 1, 64], 11);
    same(
        "frame rows",
        &add(&seq, &rows).unwrap(),
        &seq.broadcast_add(&rows).unwrap(),
    );
    same(
        "mix tokens",
        &blend(&seq, &seq2, &a).unwrap(),
        &blend_reference(&seq, &seq2, &a).unwrap(),
    );
}

#[test]
fn fallbacks_equal_candle_and_keep_gradients() {
    let x = rand(&[4, 64, 16, 16], 1);
    let y = rand(&[4, 64, 16, 16], 2);
    // Strided operand.
    let yt = y.transpose(2, 3).unwrap();
    same(
        "strided",
        &add(&x, &yt).unwrap(),
        &x.broadcast_add(&yt).unwrap(),
    );
    // f16.
    let (xh, yh) = (
        x.to_dtype(DType::F16).unwrap(),
        y.to_dtype(DType::F16).unwrap(),
    );
    assert_eq!(add(&xh, &yh).unwrap().dtype(), DType::F16);
    // A tracked operand takes candle's op, so gradients flow.
    let v = Var::from_tensor(&x).unwrap();
    let out = add(v.as_tensor(), &y).unwrap();
    let g = out.sum_all().unwrap().backward().unwrap();
    let gx = g
        .get(v.as_tensor())
        .expect("gradient of the tracked operand");
    assert_eq!(gx.dims(), x.dims());
    let a = Var::from_tensor(&rand(&[4, 1, 1, 1], 3)).unwrap();
    let m = blend(&x, &y, a.as_tensor()).unwrap();
    let g = m.sum_all().unwrap().backward().unwrap();
    assert!(g.get(a.as_tensor()).is_some(), "α keeps its gradient");
}

#[test]
fn shape_mismatches_are_errors_not_panics() {
    let x = rand(&[4, 64, 16, 16], 1);
    assert!(add(&x, &rand(&[3, 64, 16, 16], 2)).is_err());
    assert!(add(&x, &rand(&[17], 2)).is_err());
    assert!(blend(&x, &rand(&[4, 64, 16, 8], 2), &rand(&[4, 1, 1, 1], 3)).is_err());
    assert!(blend(&x, &x, &rand(&[5, 1, 1, 1], 3)).is_err());
}
