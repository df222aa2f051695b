//! Quantiser properties (proptest), EMA, k-means, errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use proptest::prelude::*;
use vidgen_video_core::{Codec, Error, TokenGrid};
use vidgen_vq_tokenizer::{
    kmeans, nearest_composed, EmaConfig, FrameTokenizer, QuantizerConfig, VQModel, VQModelConfig,
    VectorQuantizer,
};

fn vq(k: usize, d: usize, data: Vec<f32>, l2: bool) -> VectorQuantizer {
    let mut cfg = QuantizerConfig::new(k, d);
    cfg.l2_normalize = l2;
    VectorQuantizer::from_codebook(&cfg, Tensor::from_vec(data, (k, d), &Device::Cpu).unwrap())
        .unwrap()
}

fn arb_codebook() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (1usize..40, 1usize..48).prop_flat_map(|(k, d)| {
        (
            Just(k),
            Just(d),
            proptest::collection::vec(-4f32..4.0, k * d),
        )
    })
}

/// Distinct codes: a code's own vector must be strictly nearest to itself.
fn distinct(k: usize, d: usize, e: &[f32]) -> bool {
    for a in 0..k {
        for b in 0..a {
            let s: f32 = (0..d).map(|j| (e[a * d + j] - e[b * d + j]).powi(2)).sum();
            if s < 1e-3 {
                return false;
            }
        }
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn code_vector_returns_own_id((k, d, e) in arb_codebook(), l2 in any::<bool>()) {
        prop_assume!(distinct(k, d, &e));
        let q = vq(k, d, e.clone(), l2);
        if l2 {
            // Normalised codes must stay distinct too.
            let en = q.effective_codebook().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            prop_assume!(distinct(k, d, &en));
        }
        let z = q.codebook().clone();
        let (ids, dist) = q.nearest(&z).unwrap();
        let ids = ids.to_vec1::<u32>().unwrap();
        prop_assert_eq!(ids, (0..k as u32).collect::<Vec<_>>());
        for v in dist.to_vec1::<f32>().unwrap() {
            prop_assert!(v.abs() < 1e-3);
        }
    }

    #[test]
    fn quantisation_is_idempotent((k, d, e) in arb_codebook(), n in 1usize..50, seed in 0u64..1000, l2 in any::<bool>()) {
        let q = vq(k, d, e, l2);
        let z = {
            use rand::{Rng, SeedableRng};
            let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let v: Vec<f32> = (0..n * d).map(|_| r.random_range(-4f32..4.0)).collect();
            Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
        };
        let once = q.forward_flat(&z).unwrap();
        let twice = q.forward_flat(&once.quantized).unwrap();
        let a = once.quantized.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = twice.quantized.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (x, y) in a.iter().zip(&b) {
            prop_assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        // The fused search agrees with the composed candle ops on distinct scores.
        if !l2 {
            let want = nearest_composed(&z, q.codebook()).unwrap().to_vec1::<u32>().unwrap();
            let got = once.indices.to_vec1::<u32>().unwrap();
            let e = q.codebook().to_vec2::<f32>().unwrap();
            let zz = z.to_vec2::<f32>().unwrap();
            for i in 0..n {
                let dist = |c: u32| -> f32 { zz[i].iter().zip(&e[c as usize]).map(|(a, b)| (a - b) * (a - b)).sum() };
                prop_assert!((dist(got[i]) - dist(want[i])).abs() <= 1e-4 * (1.0 + dist(want[i])));
            }
        }
    }

    #[test]
    fn straight_through_gradient_is_identity((k, d, e) in arb_codebook(), n in 1usize..20, seed in 0u64..1000) {
        let q = vq(k, d, e, false);
        let z = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, d), &Device::Cpu).unwrap()).unwrap();
        let g = {
            use rand::{Rng, SeedableRng};
            let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let v: Vec<f32> = (0..n * d).map(|_| r.random_range(-1f32..1.0)).collect();
            Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
        };
        let out = q.forward_flat(z.as_tensor()).unwrap();
        let grads = (out.quantized * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let dz = grads.get(z.as_tensor()).unwrap();
        let diff = (dz - &g).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        prop_assert!(diff < 1e-6);
    }

    #[test]
    fn ema_decay_zero_sets_used_codes_to_means((k, d, e) in arb_codebook(), n in 1usize..60, seed in 0u64..1000) {
        let mut q = vq(k, d, e.clone(), false);
        q.enable_ema(EmaConfig { decay: 0.0, eps: 0.0, ..EmaConfig::default() }).unwrap();
        let z = {
            use rand::{Rng, SeedableRng};
            let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let v: Vec<f32> = (0..n * d).map(|_| r.random_range(-4f32..4.0)).collect();
            Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
        };
        let (ids, _) = q.nearest(&z).unwrap();
        q.ema_update(&z, &ids).unwrap();
        let ids = ids.to_vec1::<u32>().unwrap();
        let zz = z.to_vec2::<f32>().unwrap();
        let cb = q.codebook().to_vec2::<f32>().unwrap();
        for c in 0..k {
            let members: Vec<usize> = (0..n).filter(|&i| ids[i] as usize == c).collect();
            for j in 0..d {
                if members.is_empty() {
                    prop_assert_eq!(cb[c][j], e[c * d + j]);
                } else {
                    let mean = members.iter().map(|&i| zz[i][j] as f64).sum::<f64>() / members.len() as f64;
                    prop_assert!((cb[c][j] as f64 - mean).abs() < 1e-5, "code {} dim {}: {} vs {}", c, j, cb[c][j], mean);
                }
            }
        }
    }

    #[test]
    fn kmeans_never_returns_empty_clusters(n in 1usize..120, d in 1usize..6, kfrac in 0.05f64..1.0, seed in 0u64..1000, clumped in any::<bool>()) {
        let k = ((n as f64 * kfrac).ceil() as usize).clamp(1, n);
        use rand::{Rng, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // Clumped data (a few tight blobs) provokes empty clusters in plain Lloyd.
        let v: Vec<f32> = (0..n * d)
            .map(|i| if clumped { ((i / d) % 3) as f32 * 10.0 + r.random_range(0f32..1e-2) } else { r.random_range(-1f32..1.0) })
            .collect();
        // Draws can repeat a row (f32 noise of 1e-2 on clumped data); with fewer distinct rows
        // than k no clustering can leave every cluster non-empty, and that is a typed error.
        let mut rows: Vec<Vec<u32>> = v.chunks(d).map(|r| r.iter().map(|x| x.to_bits()).collect()).collect();
        rows.sort();
        rows.dedup();
        let data = Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap();
        if rows.len() < k {
            let e = kmeans(&data, k, 10, seed).unwrap_err().to_string();
            prop_assert!(e.contains("distinct rows"), "{}", e);
            return Ok(());
        }
        let km = kmeans(&data, k, 10, seed).unwrap();
        prop_assert_eq!(km.counts.len(), k);
        prop_assert!(km.counts.iter().all(|&c| c >= 1), "{:?}", km.counts);
        prop_assert_eq!(km.counts.iter().sum::<usize>(), n);
        let mut recount = vec![0usize; k];
        for &a in &km.assignments { recount[a as usize] += 1; }
        prop_assert_eq!(recount, km.counts.clone());
        // Seeded: same seed, same answer.
        let again = kmeans(&data, k, 10, seed).unwrap();
        prop_assert_eq!(again.assignments, km.assignments);
    }
}

#[test]
fn losses_follow_legacy_flag() {
    let e = vec![0f32, 0.0, 1.0, 1.0];
    let z = Tensor::from_vec(vec![0.1f32, 0.2, 0.9, 0.7], (2, 2), &Device::Cpu).unwrap();
    let mse = (0.01 + 0.04 + 0.01 + 0.09) / 4.0;
    for legacy in [true, false] {
        let mut cfg = QuantizerConfig::new(2, 2);
        cfg.legacy = legacy;
        cfg.beta = 0.5;
        let q = VectorQuantizer::from_codebook(
            &cfg,
            Tensor::from_vec(e.clone(), (2, 2), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let out = q.forward_flat(&z).unwrap();
        let loss = out.loss.to_scalar::<f32>().unwrap() as f64;
        assert!((loss - 1.5 * mse).abs() < 1e-6, "{loss}");
        // Gradients: legacy puts β on the codebook term.
        let cbv =
            Var::from_tensor(&Tensor::from_vec(e.clone(), (2, 2), &Device::Cpu).unwrap()).unwrap();
        let q = VectorQuantizer::from_codebook(&cfg, cbv.as_tensor().clone()).unwrap();
        let zv = Var::from_tensor(&z).unwrap();
        let out = q.forward_flat(zv.as_tensor()).unwrap();
        let g = out.loss.backward().unwrap();
        let gz = g
            .get(zv.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        let ge = g
            .get(cbv.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        let (gz, ge) = (
            gz.to_scalar::<f32>().unwrap(),
            ge.to_scalar::<f32>().unwrap(),
        );
        let ratio = ge / gz;
        let want = if legacy { 0.5 } else { 2.0 };
        assert!((ratio - want).abs() < 1e-4, "legacy={legacy}: {ratio}");
    }
}

#[test]
fn ema_restarts_dead_codes_seeded() {
    let run = || {
        let k = 16;
        let mut q = vq(k, 2, (0..k * 2).map(|i| 100.0 + i as f32).collect(), false);
        q.enable_ema(EmaConfig {
            decay: 0.5,
            eps: 1e-5,
            dead_threshold: 0.5,
            recent_capacity: 64,
            seed: 7,
        })
        .unwrap();
        let z = Tensor::randn(0f32, 1.0, (32, 2), &Device::Cpu).unwrap();
        let (ids, _) = q.nearest(&z).unwrap();
        let rep = q.ema_update(&z, &ids).unwrap();
        (
            rep,
            q.codebook().to_vec2::<f32>().unwrap(),
            z.to_vec2::<f32>().unwrap(),
        )
    };
    let (rep, cb, z) = run();
    // All inputs go to code 0 (the closest to the origin); the other 15 are dead and restarted.
    assert_eq!(rep.restarted, (1..16).collect::<Vec<u32>>());
    assert_eq!(rep.usage.dead_codes(), 15);
    for c in 1..16 {
        assert!(
            z.iter().any(|r| r == &cb[c]),
            "code {c} is not a recent input"
        );
    }
    let mut q = vq(4, 2, vec![0.0; 8], false);
    let z = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::zeros(3, DType::U32, &Device::Cpu).unwrap();
    assert!(matches!(
        q.ema_update(&z, &ids),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn usage_statistics() {
    let q = vq(4, 1, vec![0.0, 1.0, 2.0, 3.0], false);
    let ids = Tensor::from_vec(vec![0u32, 0, 1, 1], 4, &Device::Cpu).unwrap();
    let u = q.usage(&ids).unwrap();
    assert_eq!(u.histogram, vec![2, 2, 0, 0]);
    assert!((u.perplexity() - 2.0).abs() < 1e-12);
    assert!((u.dead_fraction() - 0.5).abs() < 1e-12);
}

#[test]
fn kmeans_init_sets_codebook() {
    let mut q = vq(3, 2, vec![0.0; 6], false);
    let data = Tensor::from_vec(
        vec![0f32, 0., 0.1, 0., 5., 5., 5.1, 5., -5., 5., -5.1, 5.],
        (6, 2),
        &Device::Cpu,
    )
    .unwrap();
    let km = q.init_kmeans(&data, 20, 3).unwrap();
    assert!(km.inertia < 0.02, "{}", km.inertia);
    let mut cb = q.codebook().to_vec2::<f32>().unwrap();
    cb.sort_by(|a, b| a[0].total_cmp(&b[0]));
    assert!((cb[0][0] + 5.05).abs() < 1e-5 && (cb[1][0] - 0.05).abs() < 1e-5);
    // Fewer distinct rows than clusters is an error, not a hang or an empty cluster.
    let same = Tensor::ones((5, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(kmeans(&same, 3, 5, 0).is_err());
    assert!(kmeans(&same, 6, 5, 0).is_err());
}

fn tiny_model() -> VQModel {
    let cfg: VQModelConfig = serde_json::from_str(
        r#"{"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "norm_num_groups": 4,
            "latent_channels": 4, "num_vq_embeddings": 32}"#,
    )
    .unwrap();
    let vm = VarMap::new();
    VQModel::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap()
}

#[test]
fn bad_inputs_are_typed_errors() {
    let q = vq(4, 3, vec![0.5; 12], false);
    // Ids out of range.
    let ids = Tensor::from_vec(vec![0u32, 4], 2, &Device::Cpu).unwrap();
    let e = q.lookup(&ids).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(e.to_string().contains("4"), "{e}");
    let neg = Tensor::from_vec(vec![-1i64], 1, &Device::Cpu).unwrap();
    assert!(matches!(q.lookup(&neg), Err(Error::InvalidArgument { .. })));
    assert!(matches!(
        q.lookup(&Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()),
        Err(Error::DType { .. })
    ));
    // Wrong channel count.
    let z = Tensor::zeros((5, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(q.nearest(&z), Err(Error::ShapeMismatch { .. })));
    let z4 = Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(q.forward(&z4), Err(Error::ShapeMismatch { .. })));
    // Non-finite.
    let nan = Tensor::from_vec(vec![0f32, f32::NAN, 1.0], (1, 3), &Device::Cpu).unwrap();
    assert!(matches!(q.forward_flat(&nan), Err(Error::NonFinite { .. })));
    let inf = Tensor::from_vec(vec![0f32, f32::INFINITY, 1.0], (1, 3), &Device::Cpu).unwrap();
    assert!(matches!(q.nearest(&inf), Err(Error::NonFinite { .. })));

    // The model and the codec.
    let tok = FrameTokenizer::new(tiny_model(), 2).unwrap();
    let bad_c = Tensor::zeros((1, 4, 2, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        tok.encode(&bad_c),
        Err(Error::ShapeMismatch { .. })
    ));
    let bad_hw = Tensor::zeros((1, 3, 2, 7, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        tok.encode(&bad_hw),
        Err(Error::InvalidArgument { .. })
    ));
    let mut v = vec![0f32; 3 * 2 * 8 * 8];
    v[17] = f32::NAN;
    let nan_video = Tensor::from_vec(v, (1, 3, 2, 8, 8), &Device::Cpu).unwrap();
    assert!(matches!(
        tok.encode(&nan_video),
        Err(Error::NonFinite { .. })
    ));
    let grid = TokenGrid::from_vec(vec![0, 1, 2, 32], 1, 2, 2).unwrap();
    assert!(matches!(
        tok.decode(&grid),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(FrameTokenizer::new(tiny_model(), 0).is_err());
    // Bad configs name the field.
    let bad: VQModelConfig = serde_json::from_str(r#"{"block_out_channels": [8, 12], "norm_num_groups": 8,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}"#).unwrap();
    let e = VQModel::new(&bad, VarBuilder::zeros(DType::F32, &Device::Cpu)).unwrap_err();
    assert!(e.to_string().contains("block_out_channels[1]"), "{e}");
}

#[test]
fn codec_round_trip_is_chunk_independent() {
    let model = tiny_model();
    let video = Tensor::rand(-1f32, 1.0, (2, 3, 3, 8, 12), &Device::Cpu).unwrap();
    let a = FrameTokenizer::new(model.clone(), 1).unwrap();
    let b = FrameTokenizer::new(model, 16).unwrap();
    let ta = a.encode(&video).unwrap();
    let tb = b.encode(&video).unwrap();
    assert_eq!(ta.dims4(), (2, 3, 4, 6));
    assert_eq!(
        ta.ids().flatten_all().unwrap().to_vec1::<u32>().unwrap(),
        tb.ids().flatten_all().unwrap().to_vec1::<u32>().unwrap()
    );
    // Frame order: frame (b, t) of the grid is the tokenisation of that frame alone.
    let frame = video
        .narrow(0, 1, 1)
        .unwrap()
        .narrow(2, 2, 1)
        .unwrap()
        .squeeze(2)
        .unwrap();
    let alone = a.model().tokenize(&frame).unwrap();
    let in_grid = ta
        .ids()
        .narrow(0, 1, 1)
        .unwrap()
        .narrow(1, 2, 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    assert_eq!(
        alone.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
        in_grid.flatten_all().unwrap().to_vec1::<u32>().unwrap()
    );
    let va = a.decode(&ta).unwrap();
    let vb = b.decode(&tb).unwrap();
    assert_eq!(va.dims(), video.dims());
    let diff = (va - vb)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5);
    // Decoded codes re-quantise to themselves.
    let cb = a.model().quantizer().lookup(ta.ids()).unwrap(); // [B, T, h, w, D]
    let rows = cb.flatten_to(3).unwrap();
    let (ids, _) = a.model().quantizer().nearest(&rows).unwrap();
    assert_eq!(
        ids.to_vec1::<u32>().unwrap(),
        ta.ids().flatten_all().unwrap().to_vec1::<u32>().unwrap()
    );
}

#[test]
fn spatial_norm_and_attn_blocks_build_and_run() {
    let cfg: VQModelConfig = serde_json::from_str(
        r#"{"block_out_channels": [32, 32], "down_block_types": ["AttnDownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "AttnUpDecoderBlock2D"], "norm_num_groups": 8,
            "latent_channels": 4, "num_vq_embeddings": 16, "vq_embed_dim": 4, "norm_type": "spatial", "act_fn": "gelu"}"#,
    )
    .unwrap();
    let vm = VarMap::new();
    let m = VQModel::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
    for k in [
        "decoder.conv_norm_out.conv_y.weight",
        "decoder.mid_block.attentions.0.spatial_norm.norm_layer.weight",
        "decoder.up_blocks.1.attentions.1.to_out.0.weight",
        "encoder.down_blocks.0.attentions.0.group_norm.weight",
        "quantize.embedding.weight",
    ] {
        assert!(names.iter().any(|n| n == k), "missing {k}");
    }
    let x = Tensor::rand(-1f32, 1.0, (1, 3, 8, 8), &Device::Cpu).unwrap();
    let h = m.encode(&x).unwrap();
    assert_eq!(h.dims(), &[1, 4, 4, 4]);
    assert_eq!(m.decode(&h, false).unwrap().dims(), &[1, 3, 8, 8]);
}
