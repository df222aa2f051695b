//! `Upsample2D` to an explicit size (the UNets' up blocks on latent sizes the downsampling does
//! not divide): torch's nearest indices, and a backward for non-integer factors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, Var};
use vidgen_video_nn::Upsample2D;

/// torch's `F.interpolate(size=(oh, ow), mode="nearest")` by its index rule (f32 scale).
fn reference(x: &[f32], (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f32> {
    let idx = |i: usize, n_in: usize, n_out: usize| {
        if n_out == n_in {
            i
        } else if n_out == 2 * n_in {
            i / 2
        } else {
            ((i as f32 * (n_in as f32 / n_out as f32)).floor() as usize).min(n_in - 1)
        }
    };
    let mut out = Vec::with_capacity(oh * ow);
    for i in 0..oh {
        for j in 0..ow {
            out.push(x[idx(i, h, oh) * w + idx(j, w, ow)]);
        }
    }
    out
}

#[test]
fn explicit_sizes_match_torch_nearest_and_have_a_backward() {
    let dev = Device::Cpu;
    let up = Upsample2D::new(1, false, 1, candle_nn::VarBuilder::zeros(DType::F32, &dev)).unwrap();
    // (input, output): the odd sizes a stride-2 down block makes (⌈n/2⌉ back to n), a few
    // arbitrary ones, shrinking, and the exact ×2 path.
    for ((h, w), (oh, ow)) in [
        ((5, 4), (9, 7)),
        ((1, 1), (1, 1)),
        ((3, 2), (5, 3)),
        ((4, 6), (7, 13)),
        ((6, 5), (4, 3)),
        ((3, 3), (6, 6)),
    ] {
        let v: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
        let x =
            Var::from_tensor(&Tensor::from_vec(v.clone(), (1, 1, h, w), &dev).unwrap()).unwrap();
        let y = up.forward(x.as_tensor(), Some((oh, ow))).unwrap();
        assert_eq!(y.dims(), &[1, 1, oh, ow]);
        let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, reference(&v, (h, w), (oh, ow)), "{h}x{w} -> {oh}x{ow}");
        // d(sum y)/dx counts how often each input value was read.
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).expect("a gradient for the input");
        let gx = gx.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut counts = vec![0f32; h * w];
        for val in &got {
            counts[*val as usize] += 1.0;
        }
        assert_eq!(gx, counts, "{h}x{w} -> {oh}x{ow}: gradient");
    }
}
