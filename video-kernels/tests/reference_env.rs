//! `VIDGEN_REFERENCE_KERNELS=1` forces the twins for the whole process. The variable is read
//! once, on first use, so this file holds a single test that sets it before any op runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{Device, Tensor};
use vidgen_video_kernels as vk;

#[test]
fn the_environment_variable_forces_the_twins() {
    std::env::set_var(vk::REFERENCE_ENV, "1");
    assert!(vk::reference_forced());
    // Still forced with no guard alive, after a guard came and went.
    drop(vk::force_reference());
    assert!(vk::reference_forced());
    let q = Tensor::randn(0f32, 1.0, (1, 2, 9, 8), &Device::Cpu).unwrap();
    let opts = vk::AttentionOpts::causal();
    let fast = vk::attention(&q, &q, &q, &opts).unwrap();
    let twin = vk::attention_reference(&q, &q, &q, &opts).unwrap();
    let bits = |t: &Tensor| -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    };
    assert_eq!(bits(&fast), bits(&twin));
}
