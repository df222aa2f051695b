#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests of the temporal building blocks of the inflated SD UNets.

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use video_testkit::seeded_var_builder;
use vidgen_diffusion_unet3d::sd::{
    TemporalConvLayer, TransformerTemporalConfig, TransformerTemporalModel,
};
use vidgen_video_core::VideoShape;

/// Standard-normal values of `shape`, the same for the same seed.
fn randn(seed: u64, shape: &[usize]) -> Tensor {
    seeded_var_builder(seed, DType::F32, &Device::Cpu)
        .get_with_hints(
            shape,
            "x",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )
        .unwrap()
}

proptest! {
    // 32 cases: each builds and runs a transformer (a few ms); the whole run takes < 1 s.
    #![proptest_config(video_testkit::proptest_config(32))]

    /// `[B, C, T, H, W] → [B·H·W, T, C] → back` is exact, and sequence `(b·H + h)·W + w` holds
    /// pixel `(b, h, w)` over time.
    #[test]
    fn time_sequences_round_trip(b in 1usize..3, c in 1usize..5, t in 1usize..5, h in 1usize..4, w in 1usize..4, seed in any::<u64>()) {
        let x = randn(seed, &[b, c, t, h, w]);
        let (seq, s) = VideoShape::to_time_sequences(&x).unwrap();
        prop_assert_eq!(seq.dims(), &[b * h * w, t, c]);
        let back = VideoShape::from_time_sequences(&seq, s).unwrap();
        let d = (back - &x).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        prop_assert_eq!(d, 0.0);
        let (bi, hi, wi) = (b - 1, h - 1, w - 1);
        let row = seq.get((bi * h + hi) * w + wi).unwrap(); // [T, C]
        let want = x.get(bi).unwrap().permute((2, 3, 1, 0)).unwrap().get(hi).unwrap().get(wi).unwrap(); // [T, C]
        let d = (row - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        prop_assert_eq!(d, 0.0);
    }

    /// A freshly built `TemporalConvLayer` is the identity (its last conv is zero-initialised),
    /// and a temporal transformer keeps the video shape.
    #[test]
    fn fresh_temporal_layers(b in 1usize..3, g in 1usize..3, t in 1usize..5, h in 1usize..4, w in 1usize..4, seed in any::<u64>()) {
        let c = 4 * g;
        let vb = seeded_var_builder(seed, DType::F32, &Device::Cpu);
        let layer = TemporalConvLayer::new(c, g, vb.pp("tc")).unwrap();
        let x = randn(seed ^ 1, &[b, c, t, h, w]);
        let y = layer.forward(&x).unwrap();
        let d = (y - &x).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        prop_assert_eq!(d, 0.0);
        let tt = TransformerTemporalModel::new(&TransformerTemporalConfig {
            num_attention_heads: 2,
            attention_head_dim: c / 2,
            in_channels: c,
            num_layers: 1,
            norm_num_groups: g,
            max_seq_length: Some(4),
            cross_attention_dim: None,
        }, vb.pp("tt")).unwrap();
        let y = tt.forward(&x).unwrap();
        prop_assert_eq!(y.dims(), x.dims());
    }
}
