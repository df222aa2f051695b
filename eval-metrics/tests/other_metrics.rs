#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! LPIPS heads, CLIP score, frame consistency, colourfulness, CDC, probe / classification
//! accuracy and Wilson intervals, on inputs with hand-computed answers.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use vidgen_eval_metrics::*;
use vidgen_video_core::Error;

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

#[test]
fn wilson_interval_known_values() {
    let (lo, hi) = wilson_interval(8, 10, Z95).unwrap();
    assert!(
        (lo - 0.490_158).abs() < 1e-5 && (hi - 0.943_317).abs() < 1e-5,
        "{lo} {hi}"
    );
    let (lo, hi) = wilson_interval(0, 20, Z95).unwrap();
    assert_eq!(lo, 0.0);
    assert!(hi > 0.1 && hi < 0.2);
    assert!(matches!(
        wilson_interval(3, 2, Z95),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        wilson_interval(0, 0, Z95),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn classification_accuracy_argmax() {
    let logits = t(&[0.1, 0.9, 0.8, 0.2, 0.3, 0.7, 0.6, 0.4], &[4, 2]);
    let acc = classification_accuracy(&logits, &[1, 0, 0, 0], Z95).unwrap();
    assert_eq!((acc.correct, acc.total), (3, 4));
    assert!((acc.value - 0.75).abs() < 1e-12);
    assert!(acc.ci_low < 0.75 && acc.ci_high > 0.75);
    assert!(matches!(
        classification_accuracy(&logits, &[1, 0, 2, 0], Z95),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        classification_accuracy(&logits, &[1, 0], Z95),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn linear_probe_separates_blobs_deterministically() {
    let (n, d) = (200usize, 4usize);
    let mut v = Vec::with_capacity(n * d);
    let mut labels = Vec::with_capacity(n);
    let mut s: u64 = 12345;
    let mut u = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    };
    for i in 0..n {
        let c = i % 3;
        labels.push(c);
        for j in 0..d {
            let centre = if j == c { 3.0 } else { 0.0 };
            v.push(centre + u());
        }
    }
    let x = t(&v, &[n, d]);
    let opts = ProbeOptions {
        epochs: 30,
        seed: 7,
        ..ProbeOptions::default()
    };
    let p = LinearProbe::fit(&x, &labels, 3, &opts).unwrap();
    let acc = p.accuracy(&x, &labels, Z95).unwrap();
    assert!(acc.value > 0.95, "{acc:?}");
    let p2 = LinearProbe::fit(&x, &labels, 3, &opts).unwrap();
    assert_eq!(p.predict(&x).unwrap(), p2.predict(&x).unwrap());
    assert!(matches!(
        LinearProbe::fit(&x, &labels, 1, &opts),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        p.predict(&t(&[0.0; 6], &[2, 3])),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn clip_score_and_frame_consistency() {
    let img = t(&[1.0, 0.0, 1.0, 0.0], &[2, 2]);
    let txt = t(&[1.0, 1.0, -1.0, 0.0], &[2, 2]);
    let (v, mean) = clip_score(&img, &txt).unwrap();
    assert!((v[0] - 100.0 / 2f64.sqrt()).abs() < 1e-9);
    assert_eq!(v[1], 0.0);
    assert!((mean - 50.0 / 2f64.sqrt()).abs() < 1e-9);
    assert!(matches!(
        clip_score(&img, &t(&[1.0; 3], &[1, 3])),
        Err(Error::ShapeMismatch { .. })
    ));

    let e = t(&[1.0, 0.0, 2.0, 0.0, 0.0, 3.0], &[3, 2]);
    let (per, mean) = frame_consistency(&e).unwrap();
    assert_eq!(per.len(), 1);
    assert!((mean - 0.5).abs() < 1e-12);
    assert!(matches!(
        frame_consistency(&t(&[1.0, 2.0], &[1, 2])),
        Err(Error::InvalidArgument { .. })
    ));

    // Through an embedder: the per-frame channel means as a 3-d embedding.
    struct MeanEmbed;
    impl ImageEmbedder for MeanEmbed {
        fn embed(&self, frames: &Tensor) -> vidgen_video_core::Result<Tensor> {
            Ok(frames.mean(3)?.mean(2)?)
        }
    }
    // [1, 3, 2, 2, 2]: frame 0 red, frame 1 green -> cosine 0.
    let mut v = vec![0.0; 3 * 2 * 4];
    for i in 0..4 {
        v[i] = 1.0; // c0 t0
        v[2 * 4 + 4 + i] = 1.0; // c1 t1: channel stride T·H·W = 8, frame stride 4
    }
    let video = t(&v, &[1, 3, 2, 2, 2]);
    let (_, m) = frame_consistency_with(&MeanEmbed, &video, DataRange::UNIT).unwrap();
    assert!(m.abs() < 1e-12, "{m}");
}

#[test]
fn lpips_heads_from_package_keys() {
    let mut map = HashMap::new();
    for l in 0..2 {
        map.insert(
            format!("lin{l}.model.1.weight"),
            Tensor::from_vec(vec![1f32, 2.0], (1, 2, 1, 1), &Device::Cpu).unwrap(),
        );
    }
    let head = LpipsHead::from_tensors(&map, "mem").unwrap();
    assert_eq!(head.layers(), 2);
    let a = Tensor::ones((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::cat(
        &[
            &Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap(),
            &Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap(),
        ],
        1,
    )
    .unwrap();
    let d = head
        .distance(&[a.clone(), a.clone()], &[b.clone(), b.clone()])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want = 2.0 * ((0.5f64.sqrt() - 1.0).powi(2) + 2.0 * 0.5);
    assert!((d[0] as f64 - want).abs() < 1e-5, "{} vs {want}", d[0]);
    let zero = head
        .distance(&[a.clone(), a.clone()], &[a.clone(), a.clone()])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(zero[0].abs() < 1e-7);
    assert!(matches!(
        head.distance(std::slice::from_ref(&a), std::slice::from_ref(&a)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        LpipsHead::from_tensors(&HashMap::new(), "empty"),
        Err(Error::MissingTensor { .. })
    ));

    struct Identity;
    impl LpipsBackbone for Identity {
        fn features(&self, x: &Tensor) -> vidgen_video_core::Result<Vec<Tensor>> {
            Ok(vec![x.clone()])
        }
    }
    let h3 = LpipsHead::new(vec![Tensor::new(&[1f32, 1.0, 1.0], &Device::Cpu).unwrap()]).unwrap();
    let img = Tensor::zeros((2, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let same = h3
        .forward(&Identity, &img, &img)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(same, vec![0.0, 0.0]);
}

#[test]
fn colourfulness_and_cdc() {
    // One pure-red frame in [0, 1]: rg = 255, yb = 127.5, no spread.
    let mut v = vec![0.0; 3 * 4];
    v[..4].iter_mut().for_each(|x| *x = 1.0);
    let red = t(&v, &[1, 3, 1, 2, 2]);
    let (_, m) = colourfulness(&red, DataRange::UNIT).unwrap();
    let want = 0.3 * (255.0f64.powi(2) + 127.5f64.powi(2)).sqrt();
    assert!((m - want).abs() < 1e-9, "{m} vs {want}");
    // Grey has no colour.
    let grey = t(&[0.5; 12], &[1, 3, 1, 2, 2]);
    assert!(colourfulness(&grey, DataRange::UNIT).unwrap().1.abs() < 1e-12);

    // CDC: a constant clip is perfectly consistent; a clip alternating black / white frames
    // has JS = 1 at dilation 1 and 0 at dilations 2 and 4, so CDC = 1/3.
    let constant = t(&[0.3; 6 * 4], &[1, 1, 6, 2, 2]);
    assert!(
        colour_distribution_consistency(&constant, DataRange::UNIT)
            .unwrap()
            .1
            .abs()
            < 1e-12
    );
    let alt: Vec<f64> = (0..6).flat_map(|f| vec![(f % 2) as f64; 4]).collect();
    let flicker = t(&alt, &[1, 1, 6, 2, 2]);
    let (_, c) = colour_distribution_consistency(&flicker, DataRange::UNIT).unwrap();
    assert!((c - 1.0 / 3.0).abs() < 1e-12, "{c}");
    assert!(matches!(
        colour_distribution_consistency(&t(&[0.0; 16], &[1, 1, 4, 2, 2]), DataRange::UNIT),
        Err(Error::InvalidArgument { .. })
    ));
    assert!((js_divergence(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-12);
}
