//! `force_reference()`: while a guard lives, every fused op returns exactly (bit for bit) what
//! its `*_reference` twin returns.
//!
//! The switch is process-wide, so this file holds a single test: no other test of this binary
//! can run while the guard is held.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use video_testkit::uniform as rand;
use vidgen_video_kernels as vk;
use vk::{AttentionOpts, Conv2dOpts, Conv3dOpts};

/// The same dims, dtype and bits.
fn identical(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.dims(), b.dims(), "{what}: dims");
    assert_eq!(a.dtype(), b.dtype(), "{what}: dtype");
    let bits = |t: &Tensor| -> Vec<u32> {
        let t = t.flatten_all().unwrap();
        match t.dtype() {
            DType::U32 => t.to_vec1::<u32>().unwrap(),
            _ => t
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect(),
        }
    };
    assert!(bits(a) == bits(b), "{what}: values differ");
}

#[test]
fn every_fused_op_runs_its_twin_under_the_guard() {
    let env_set = std::env::var(vk::REFERENCE_ENV).is_ok();
    if !env_set {
        assert!(!vk::reference_forced());
    }
    let outer = vk::force_reference();
    {
        // Guards nest.
        let _inner = vk::force_reference();
        assert!(vk::reference_forced());
    }
    assert!(vk::reference_forced());

    // Attention: GQA, causal, additive mask.
    let (q, k, v) = (
        rand(&[1, 4, 20, 16], 1),
        rand(&[1, 2, 24, 16], 2),
        rand(&[1, 2, 24, 16], 3),
    );
    let opts = AttentionOpts {
        causal: true,
        mask: Some(rand(&[1, 1, 20, 24], 4)),
        ..AttentionOpts::default()
    };
    identical(
        "attention",
        &vk::attention(&q, &k, &v, &opts).unwrap(),
        &vk::attention_reference(&q, &k, &v, &opts).unwrap(),
    );

    // conv3d: general with bias, and depthwise; conv2d.
    let x = rand(&[1, 4, 3, 9, 10], 5);
    let w = rand(&[6, 4, 3, 3, 3], 6);
    let b = rand(&[6], 7);
    let o = Conv3dOpts {
        padding: [1, 1, 1],
        ..Conv3dOpts::default()
    };
    identical(
        "conv3d",
        &vk::conv3d(&x, &w, Some(&b), &o).unwrap(),
        &vk::conv3d_reference(&x, &w, Some(&b), &o).unwrap(),
    );
    let wd = rand(&[4, 1, 3, 3, 3], 8);
    let od = Conv3dOpts { groups: 4, ..o };
    identical(
        "conv3d depthwise",
        &vk::conv3d(&x, &wd, None, &od).unwrap(),
        &vk::conv3d_reference(&x, &wd, None, &od).unwrap(),
    );
    let (x2, w2) = (rand(&[2, 3, 9, 7], 9), rand(&[5, 3, 3, 3], 10));
    let o2 = Conv2dOpts {
        stride: [2, 1],
        padding: [1, 1],
        ..Conv2dOpts::default()
    };
    identical(
        "conv2d",
        &vk::conv2d(&x2, &w2, None, &o2).unwrap(),
        &vk::conv2d_reference(&x2, &w2, None, &o2).unwrap(),
    );

    // linear: the few-row kernel and the gemm path.
    let (wl, bl) = (rand(&[40, 33], 11), rand(&[40], 12));
    for rows in [2usize, 30] {
        let xl = rand(&[rows, 33], 13);
        identical(
            &format!("linear {rows} rows"),
            &vk::linear(&xl, &wl, Some(&bl)).unwrap(),
            &vk::linear_reference(&xl, &wl, Some(&bl)).unwrap(),
        );
    }

    // Norms.
    let xr = rand(&[3, 5, 48], 14);
    let (g, res) = (rand(&[48], 15), rand(&[3, 5, 48], 16));
    identical(
        "rms_norm",
        &vk::rms_norm(&xr, &g, 1e-6).unwrap(),
        &vk::rms_norm_reference(&xr, &g, 1e-6).unwrap(),
    );
    let (s, n) = vk::add_rms_norm(&xr, &res, &g, 1e-6).unwrap();
    let (rs, rn) = vk::add_rms_norm_reference(&xr, &res, &g, 1e-6).unwrap();
    identical("add_rms_norm sum", &s, &rs);
    identical("add_rms_norm normed", &n, &rn);
    identical(
        "layer_norm",
        &vk::layer_norm(&xr, Some(&g), Some(&g), 1e-5).unwrap(),
        &vk::layer_norm_reference(&xr, Some(&g), Some(&g), 1e-5).unwrap(),
    );
    let xg = rand(&[2, 8, 3, 5, 4], 17);
    let (gw, gb) = (rand(&[8], 18), rand(&[8], 19));
    for silu in [false, true] {
        identical(
            &format!("group_norm silu={silu}"),
            &vk::group_norm(&xg, &gw, &gb, 4, 1e-6, silu).unwrap(),
            &vk::group_norm_reference(&xg, &gw, &gb, 4, 1e-6, silu).unwrap(),
        );
        // With given moments the plain-ops path (other devices) runs: it has no twin to be
        // identical to, but must agree with the reference GroupNorm.
        let m = vk::group_norm_moments(&xg, 4).unwrap();
        let got = vk::group_norm_with_moments(&xg, &gw, &gb, 4, &m, 1e-6, silu).unwrap();
        let want = vk::group_norm_reference(&xg, &gw, &gb, 4, 1e-6, silu).unwrap();
        let d = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            d < 1e-5,
            "group_norm_with_moments (plain ops) silu={silu}: {d}"
        );
    }

    // Activations.
    let xa = rand(&[4, 70], 20);
    identical(
        "swiglu",
        &vk::swiglu(&xa).unwrap(),
        &vk::swiglu_reference(&xa).unwrap(),
    );
    identical(
        "geglu",
        &vk::geglu(&xa).unwrap(),
        &vk::geglu_reference(&xa).unwrap(),
    );
    identical(
        "gelu_erf",
        &vk::gelu_erf(&xa).unwrap(),
        &vk::gelu_erf_reference(&xa).unwrap(),
    );
    identical(
        "silu",
        &vk::silu(&xa).unwrap(),
        &vk::silu_reference(&xa).unwrap(),
    );

    // Nearest code, on tensors and through a prepared codebook.
    let (z, e) = (rand(&[50, 8], 21), rand(&[70, 8], 22));
    let (ids, dist) = vk::nearest_code(&z, &e).unwrap();
    let (rids, rdist) = vk::nearest_code_reference(&z, &e).unwrap();
    identical("nearest_code ids", &ids, &rids);
    identical("nearest_code distances", &dist, &rdist);
    let cb = vk::PreparedCodebook::from_tensor(&e).unwrap();
    let zv = z.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (pids, pdist) = cb.nearest(&zv).unwrap();
    identical(
        "prepared ids",
        &Tensor::new(pids, &Device::Cpu).unwrap(),
        &rids,
    );
    identical(
        "prepared distances",
        &Tensor::new(pdist, &Device::Cpu).unwrap(),
        &rdist,
    );

    // Element-wise: a residual add with a per-channel broadcast, and the SVD mix.
    let (x, y) = (rand(&[2, 64, 32, 32], 30), rand(&[2, 64, 1, 1], 31));
    identical(
        "add",
        &vk::add(&x, &y).unwrap(),
        &vk::add_reference(&x, &y).unwrap(),
    );
    let (s2, t2, al) = (
        rand(&[2, 64, 32, 32], 32),
        rand(&[2, 64, 32, 32], 33),
        rand(&[2, 1, 1, 1], 34),
    );
    identical(
        "blend",
        &vk::blend(&s2, &t2, &al).unwrap(),
        &vk::blend_reference(&s2, &t2, &al).unwrap(),
    );

    drop(outer);
    if !env_set {
        assert!(!vk::reference_forced());
    }
}
