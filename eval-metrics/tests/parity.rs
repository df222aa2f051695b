#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parity with every `metrics` fixture folder: FID (every reference value recorded), KID
//! (every `*_first<N>` MMD² over the first N rows of each set, and the torch-fidelity subset
//! protocol), PSNR and the three SSIM flavours. Every number and tensor a folder records is
//! compared (one left over fails the test), and each folder prints one
//! `parity metrics/<name> ...` line. Tolerances: `../shared/fixtures/README.md` (FID / KID f64
//! `rtol 1e-9`, PSNR / SSIM `1e-9` relative), tighter where the figures allow.

mod common;

use candle_core::{DType, Tensor};
use common::{scalar, vec_t, Keys, Tensors};
use video_testkit::{fixtures, Fixture, Parity};
use vidgen_eval_metrics::*;

/// FID / KID in f64: the README's rule.
const FD_RTOL: f64 = 1e-9;

/// Checks that the shape a case records under `key` is the tensor's, and its dtype.
fn check_shape(r: &Keys, key: &str, t: &Tensor, dtype: DType) {
    assert_eq!(t.dims(), r.counts(key).as_slice(), "shape of `{key}`");
    assert_eq!(t.dtype(), dtype, "dtype of `{key}`");
}

/// The dtype a case records (`"float64"`).
fn case_dtype(r: &Keys) -> DType {
    match r.str("dtype") {
        "float64" => DType::F64,
        "float32" => DType::F32,
        other => panic!("unknown dtype `{other}`"),
    }
}

fn check_fid(p: &mut Parity, name: &str, t: &Tensors, r: &Keys) {
    let dtype = case_dtype(r);
    let f1 = t.get("features_1");
    let f2 = t.get("features_2");
    check_shape(r, "features_1", f1, dtype);
    check_shape(r, "features_2", f2, dtype);
    // Streaming statistics reproduce the stored np.mean / np.cov.
    let s1 = FeatureStats::from_features(f1).unwrap();
    let s2 = FeatureStats::from_features(f2).unwrap();
    let (g1, g2) = (s1.gaussian().unwrap(), s2.gaussian().unwrap());
    let d = g1.dim();
    let sig =
        |g: &GaussianStats| Tensor::from_vec(g.sigma().to_vec(), (d, d), f1.device()).unwrap();
    p.check(
        &format!("{name} mu_1"),
        &vec_t(g1.mu()),
        t.get("mu_1"),
        1e-13,
        1e-12,
    );
    p.check(
        &format!("{name} mu_2"),
        &vec_t(g2.mu()),
        t.get("mu_2"),
        1e-13,
        1e-12,
    );
    p.check(
        &format!("{name} sigma_1"),
        &sig(&g1),
        t.get("sigma_1"),
        1e-13,
        1e-12,
    );
    p.check(
        &format!("{name} sigma_2"),
        &sig(&g2),
        t.get("sigma_2"),
        1e-13,
        1e-12,
    );
    // FD from the stored statistics (as a user of .npz files would), from streamed stats,
    // swapped, and the exact low-rank value from the features.
    let stored1 = GaussianStats::from_tensors(t.get("mu_1"), t.get("sigma_1")).unwrap();
    let stored2 = GaussianStats::from_tensors(t.get("mu_2"), t.get("sigma_2")).unwrap();
    let ours = [
        (
            "fd(stored stats)",
            frechet_distance(&stored1, &stored2).unwrap(),
        ),
        ("fd(streamed)", frechet_distance(&g1, &g2).unwrap()),
        ("fd(b, a)", frechet_distance(&stored2, &stored1).unwrap()),
        (
            "fd(exact low-rank)",
            frechet_distance_features(f1, f2).unwrap(),
        ),
    ];
    // Every other number of the case is a reference FD value.
    let refs: Vec<String> = r
        .keys()
        .into_iter()
        .filter(|k| !matches!(k.as_str(), "features_1" | "features_2" | "dtype"))
        .cloned()
        .collect();
    assert!(!refs.is_empty(), "{name}: no reference FD value");
    // Rank-deficient covariances (N − 1 < D, the small-sample FVD case): scipy's `sqrtm`
    // and torch-fidelity's `eigvals` add √ of the singular product's round-off eigenvalues,
    // which pulls their FD down. On fid_rank_deficient ([12, 32] vs [10, 32]) the references
    // are 1.36e-9 apart among themselves, and our four values (which drop those eigenvalues)
    // lie 1.1e-8 … 1.9e-8 relative above them; our exact low-rank value 52.095553055703675
    // matches numpy's f64 evaluation of |μ1−μ2|² + tr S1 + tr S2 − 2‖A1A2ᵀ‖_*/√((n1−1)(n2−1))
    // (52.095553055703704) to 6e-16. So the README's 1e-9 cannot hold against these
    // references there: 2.5e-8. Full-rank cases use 1e-9 (measured ≤ 1.3e-14).
    let (n1, n2) = (f1.dim(0).unwrap(), f2.dim(0).unwrap());
    let rank_deficient = n1 - 1 < d || n2 - 1 < d;
    let rtol = if rank_deficient { 2.5e-8 } else { FD_RTOL };
    for (what, v) in ours {
        let rels: Vec<String> = refs
            .iter()
            .map(|k| format!("{k} {:.2e}", (v - r.num(k)).abs() / r.num(k).abs()))
            .collect();
        println!("  {name} {what} = {v:.15}: rel. to {}", rels.join(", "));
    }
    for reference in &refs {
        let want = scalar(r.num(reference));
        for (what, v) in ours {
            p.check(
                &format!("{name} {what} vs {reference}"),
                &scalar(v),
                &want,
                0.0,
                rtol,
            );
        }
    }
    let pf = r.num(refs[0].as_str());
    println!(
        "  {name}: fd={:.15} exact={:.15} {}={pf} rel={:.2e} (rtol {rtol:.1e})",
        ours[0].1,
        ours[3].1,
        refs[0],
        (ours[0].1 - pf).abs() / pf,
    );
}

/// `N` of a key ending in `_first<N>`.
fn first_n(key: &str) -> Option<usize> {
    key.rsplit_once("_first").and_then(|(_, n)| n.parse().ok())
}

fn check_kid(p: &mut Parity, name: &str, t: &Tensors, r: &Keys) {
    let dtype = case_dtype(r);
    let f1 = t.get("features_1");
    let f2 = t.get("features_2");
    check_shape(r, "features_1", f1, dtype);
    check_shape(r, "features_2", f2, dtype);
    // The polynomial kernel (x·y/d + 1)^3 of torch-fidelity / StyleGAN (README: metrics.json
    // does not record it; these are its published constants).
    let k = PolynomialKernel {
        degree: 3,
        gamma: None,
        coef0: 1.0,
    };
    let (n1, n2) = (f1.dim(0).unwrap(), f2.dim(0).unwrap());
    // `mmd2_unbiased_first50`, `stylegan_formula_first50`: the first N rows of each set.
    let mut firsts = 0;
    for key in r.keys() {
        let Some(n) = first_n(key) else { continue };
        assert!(
            n <= n1 && n <= n2,
            "{name}: `{key}` needs {n} rows, the sets have {n1} and {n2}"
        );
        let got = mmd2_unbiased(
            &f1.narrow(0, 0, n).unwrap(),
            &f2.narrow(0, 0, n).unwrap(),
            &k,
        )
        .unwrap();
        p.check(
            &format!("{name} {key}"),
            &scalar(got),
            &scalar(r.num(key)),
            0.0,
            1e-10,
        );
        println!("  {name}: {key} = {got:.15} (first {n} of each set)");
        firsts += 1;
    }
    assert!(firsts > 0, "{name}: no `*_first<N>` value");
    // The saved subsets.
    let idx = |key: &str| -> Vec<Vec<usize>> {
        t.get(key)
            .to_vec2::<i64>()
            .unwrap()
            .into_iter()
            .map(|row| row.into_iter().map(|v| v as usize).collect())
            .collect()
    };
    let (i1, i2) = (idx("subset_idx_1"), idx("subset_idx_2"));
    let opts = KidOptions {
        subsets: r.count("subsets"),
        subset_size: r.count("subset_size"),
        seed: r.count("rng_seed") as u32,
        kernel: k,
    };
    assert_eq!(i1.len(), opts.subsets, "{name}: subset_idx_1 rows");
    assert!(i1.iter().chain(&i2).all(|s| s.len() == opts.subset_size));
    let with = kernel_distance_with_subsets(f1, f2, &i1, &i2, &k).unwrap();
    p.check(
        &format!("{name} subset_mmd2 (saved subsets)"),
        &vec_t(&with.subset_values),
        t.get("subset_mmd2"),
        0.0,
        1e-10,
    );
    // The seeded sampler draws the very same subsets as numpy's RandomState(seed).
    let mut rng = NumpyRandomState::new(opts.seed);
    for s in 0..opts.subsets {
        assert_eq!(
            rng.choice_without_replacement(n1, opts.subset_size)
                .unwrap(),
            i1[s],
            "subset {s} of features_1"
        );
        assert_eq!(
            rng.choice_without_replacement(n2, opts.subset_size)
                .unwrap(),
            i2[s],
            "subset {s} of features_2"
        );
    }
    let kid = kernel_distance(f1, f2, &opts).unwrap();
    for (key, got) in [
        ("torch_fidelity_kid_mean", kid.mean),
        ("torch_fidelity_kid_std", kid.std),
        ("subset_mmds_mean", kid.mean),
        ("subset_mmds_std_ddof0", kid.std),
        ("subset_mmds_mean", with.mean),
        ("subset_mmds_std_ddof0", with.std),
    ] {
        p.check(
            &format!("{name} {key}"),
            &scalar(got),
            &scalar(r.num(key)),
            0.0,
            1e-10,
        );
    }
    p.check(
        &format!("{name} subsets (seeded draw)"),
        &vec_t(&kid.subset_values),
        t.get("subset_mmd2"),
        0.0,
        1e-10,
    );
    println!("  {name}: mean={:.15} std={:.15}", kid.mean, kid.std);
}

/// `[F, H, W, C]` → `[1, C, F, H, W]`.
fn fhwc_to_bcthw(x: &Tensor) -> Tensor {
    x.permute((3, 0, 1, 2))
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .contiguous()
        .unwrap()
}

fn check_psnr_ssim(p: &mut Parity, name: &str, t: &Tensors, r: &Keys) {
    assert_eq!(r.str("layout"), "FHWC", "{name} layout");
    let dtype = case_dtype(r);
    let (a, b) = (t.get("reference"), t.get("distorted"));
    check_shape(r, "video", a, dtype);
    check_shape(r, "video", b, dtype);
    let (a, b) = (fhwc_to_bcthw(a), fhwc_to_bcthw(b));
    // README: `data_range = 1` (metrics.json does not record it; read it where a case does).
    let range = if r.has("data_range") {
        DataRange {
            min: 0.0,
            max: r.num("data_range"),
        }
    } else {
        DataRange::UNIT
    };
    let ps = psnr(&a, &b, range).unwrap();
    let rows: [(&str, Tensor); 5] = [
        ("psnr_skimage_per_frame", vec_t(&ps.per_frame)),
        ("psnr_skimage_mean_of_frames", scalar(ps.mean_of_frames)),
        ("psnr_skimage_global", scalar(ps.global)),
        ("psnr_torchmetrics_global", scalar(ps.global_torchmetrics())),
        (
            "psnr_torchmetrics_per_frame",
            vec_t(&ps.per_frame_torchmetrics()),
        ),
    ];
    for (key, got) in rows {
        let want = if r.get(key).is_number() {
            scalar(r.num(key))
        } else {
            vec_t(&r.nums(key))
        };
        p.check(&format!("{name} {key}"), &got, &want, 0.0, 1e-12);
    }
    for (flavour, key) in [
        (SsimFlavour::SkimageGaussian, "ssim_skimage_gaussian"),
        (SsimFlavour::SkimageDefault, "ssim_skimage_default"),
        (SsimFlavour::Torchmetrics, "ssim_torchmetrics"),
    ] {
        let s = ssim(&a, &b, range, flavour).unwrap();
        println!(
            "  {key}: mean={:.15} ref={}",
            s.mean,
            r.num(&format!("{key}_mean"))
        );
        p.check(
            &format!("{name} {key} per frame"),
            &vec_t(&s.per_frame),
            &vec_t(&r.nums(&format!("{key}_per_frame"))),
            0.0,
            1e-10,
        );
        p.check(
            &format!("{name} {key} mean"),
            &scalar(s.mean),
            &scalar(r.num(&format!("{key}_mean"))),
            0.0,
            1e-10,
        );
    }
}

fn metrics_json(f: &Fixture) -> serde_json::Value {
    let p = f.dir.join("metrics.json");
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap()
}

#[test]
fn metrics_fixtures() {
    let all = fixtures("metrics");
    assert!(!all.is_empty(), "no `metrics` fixture folder");
    for f in &all {
        let json = metrics_json(f);
        let top = Keys::new(format!("{} metrics.json", f.id()), &json);
        top.note("versions"); // the reference stack, for the record
        let results = top.get("results");
        top.finish();
        let cases = Keys::new(format!("{} results", f.id()), results);
        let mut p = f.parity();
        let mut files = std::collections::BTreeSet::new();
        for name in cases.keys() {
            let file = format!("{name}.safetensors");
            assert!(
                f.has(&file),
                "{}: metrics.json names `{name}` but {file} is absent",
                f.id()
            );
            files.insert(file.clone());
            let r = Keys::new(format!("{} results/{name}", f.id()), cases.get(name));
            let t = Tensors::new(format!("{} {file}", f.id()), f.load(&file));
            if name.starts_with("fid") {
                check_fid(&mut p, name, &t, &r);
            } else if name.starts_with("kid") {
                check_kid(&mut p, name, &t, &r);
            } else if name.starts_with("psnr") {
                check_psnr_ssim(&mut p, name, &t, &r);
            } else {
                panic!("{}: unknown metric case `{name}`", f.id());
            }
            r.finish();
            t.finish();
        }
        cases.finish();
        // A tensor file no case names would go uncompared.
        for e in std::fs::read_dir(&f.dir).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            if n.ends_with(".safetensors") {
                assert!(files.contains(&n), "{}: {n} is named by no case", f.id());
            }
        }
        p.finish();
    }
}
