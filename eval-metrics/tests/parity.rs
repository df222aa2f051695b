#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parity with every `metrics` fixture (and `features/fid_real_images` when present): FID
//! (three references), KID (first-50 MMD² and the torch-fidelity subset protocol), PSNR and
//! the three SSIM flavours. Each folder prints one `parity metrics/<name> ...` line.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use video_testkit::{fixtures, take, Fixture, Parity};
use vidgen_eval_metrics::*;

fn scalar(v: f64) -> Tensor {
    Tensor::new(&[v], &Device::Cpu).unwrap()
}

fn vec_t(v: &[f64]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn num(r: &serde_json::Value, key: &str) -> f64 {
    r[key]
        .as_f64()
        .unwrap_or_else(|| panic!("metrics.json: `{key}` missing or not a number"))
}

fn nums(r: &serde_json::Value, key: &str) -> Vec<f64> {
    r[key]
        .as_array()
        .unwrap_or_else(|| panic!("metrics.json: `{key}` missing"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn results(f: &Fixture) -> serde_json::Value {
    let p = f.dir.join("metrics.json");
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    v["results"].clone()
}

fn check_fid(p: &mut Parity, name: &str, t: &HashMap<String, Tensor>, r: &serde_json::Value) {
    let f1 = take(t, "features_1", name);
    let f2 = take(t, "features_2", name);
    // Streaming statistics reproduce the stored np.mean / np.cov.
    let s1 = FeatureStats::from_features(f1).unwrap();
    let s2 = FeatureStats::from_features(f2).unwrap();
    let (g1, g2) = (s1.gaussian().unwrap(), s2.gaussian().unwrap());
    p.check(
        &format!("{name} mu_1"),
        &vec_t(g1.mu()),
        take(t, "mu_1", name),
        1e-13,
        1e-12,
    );
    let d = g1.dim();
    let sig =
        |g: &GaussianStats| Tensor::from_vec(g.sigma().to_vec(), (d, d), &Device::Cpu).unwrap();
    p.check(
        &format!("{name} sigma_1"),
        &sig(&g1),
        take(t, "sigma_1", name),
        1e-13,
        1e-12,
    );
    p.check(
        &format!("{name} sigma_2"),
        &sig(&g2),
        take(t, "sigma_2", name),
        1e-13,
        1e-12,
    );
    // FD from the stored statistics (as a user of .npz files would) and from streamed stats.
    let stored1 =
        GaussianStats::from_tensors(take(t, "mu_1", name), take(t, "sigma_1", name)).unwrap();
    let stored2 =
        GaussianStats::from_tensors(take(t, "mu_2", name), take(t, "sigma_2", name)).unwrap();
    let fd_stored = frechet_distance(&stored1, &stored2).unwrap();
    let fd_stream = frechet_distance(&g1, &g2).unwrap();
    let fd_rev = frechet_distance(&stored2, &stored1).unwrap();
    let fd_exact = frechet_distance_features(f1, f2).unwrap();
    for reference in ["pytorch_fid", "torch_fidelity_eigvals", "stylegan_v"] {
        let want = scalar(num(r, reference));
        p.check(
            &format!("{name} fd(stored stats) vs {reference}"),
            &scalar(fd_stored),
            &want,
            0.0,
            1e-6,
        );
        p.check(
            &format!("{name} fd(streamed) vs {reference}"),
            &scalar(fd_stream),
            &want,
            0.0,
            1e-6,
        );
        p.check(
            &format!("{name} fd(b, a) vs {reference}"),
            &scalar(fd_rev),
            &want,
            0.0,
            1e-6,
        );
        p.check(
            &format!("{name} fd(exact low-rank) vs {reference}"),
            &scalar(fd_exact),
            &want,
            0.0,
            1e-6,
        );
    }
    println!(
        "  {name}: fd={fd_stored:.15} exact={fd_exact:.15} pytorch_fid={} rel={:.2e}",
        num(r, "pytorch_fid"),
        (fd_stored - num(r, "pytorch_fid")).abs() / num(r, "pytorch_fid")
    );
}

fn check_kid(p: &mut Parity, t: &HashMap<String, Tensor>, r: &serde_json::Value) {
    let f1 = take(t, "features_1", "kid");
    let f2 = take(t, "features_2", "kid");
    let k = PolynomialKernel::default();
    let m = f1.dim(0).unwrap().min(f2.dim(0).unwrap());
    let first = mmd2_unbiased(
        &f1.narrow(0, 0, m).unwrap(),
        &f2.narrow(0, 0, m).unwrap(),
        &k,
    )
    .unwrap();
    p.check(
        "kid first-50 mmd2",
        &scalar(first),
        &scalar(num(r, "mmd2_unbiased_first50")),
        0.0,
        1e-10,
    );
    p.check(
        "kid first-50 vs stylegan",
        &scalar(first),
        &scalar(num(r, "stylegan_formula_first50")),
        0.0,
        1e-10,
    );
    // The saved subsets.
    let idx = |key: &str| -> Vec<Vec<usize>> {
        take(t, key, "kid")
            .to_vec2::<i64>()
            .unwrap()
            .into_iter()
            .map(|row| row.into_iter().map(|v| v as usize).collect())
            .collect()
    };
    let (i1, i2) = (idx("subset_idx_1"), idx("subset_idx_2"));
    let with = kernel_distance_with_subsets(f1, f2, &i1, &i2, &k).unwrap();
    p.check(
        "kid subset_mmd2 (saved subsets)",
        &vec_t(&with.subset_values),
        take(t, "subset_mmd2", "kid"),
        0.0,
        1e-10,
    );
    // The seeded sampler draws the very same subsets as numpy's RandomState(2020).
    let opts = KidOptions {
        subsets: num(r, "subsets") as usize,
        subset_size: num(r, "subset_size") as usize,
        seed: num(r, "rng_seed") as u32,
        kernel: k,
    };
    let mut rng = NumpyRandomState::new(opts.seed);
    for s in 0..opts.subsets {
        assert_eq!(
            rng.choice_without_replacement(f1.dim(0).unwrap(), opts.subset_size)
                .unwrap(),
            i1[s],
            "subset {s} of features_1"
        );
        assert_eq!(
            rng.choice_without_replacement(f2.dim(0).unwrap(), opts.subset_size)
                .unwrap(),
            i2[s],
            "subset {s} of features_2"
        );
    }
    let kid = kernel_distance(f1, f2, &opts).unwrap();
    p.check(
        "kid mean",
        &scalar(kid.mean),
        &scalar(num(r, "torch_fidelity_kid_mean")),
        0.0,
        1e-10,
    );
    p.check(
        "kid std",
        &scalar(kid.std),
        &scalar(num(r, "torch_fidelity_kid_std")),
        0.0,
        1e-10,
    );
    p.check(
        "kid subsets",
        &vec_t(&kid.subset_values),
        take(t, "subset_mmd2", "kid"),
        0.0,
        1e-10,
    );
    println!(
        "  kid: mean={:.15} std={:.15} first50={first:.15}",
        kid.mean, kid.std
    );
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

fn check_psnr_ssim(p: &mut Parity, t: &HashMap<String, Tensor>, r: &serde_json::Value) {
    assert_eq!(r["layout"].as_str(), Some("FHWC"), "psnr_ssim layout");
    let a = fhwc_to_bcthw(take(t, "reference", "psnr_ssim"));
    let b = fhwc_to_bcthw(take(t, "distorted", "psnr_ssim"));
    let range = DataRange::UNIT;
    let ps = psnr(&a, &b, range).unwrap();
    p.check(
        "psnr per frame",
        &vec_t(&ps.per_frame),
        &vec_t(&nums(r, "psnr_skimage_per_frame")),
        0.0,
        1e-12,
    );
    p.check(
        "psnr mean of frames",
        &scalar(ps.mean_of_frames),
        &scalar(num(r, "psnr_skimage_mean_of_frames")),
        0.0,
        1e-12,
    );
    p.check(
        "psnr global",
        &scalar(ps.global),
        &scalar(num(r, "psnr_skimage_global")),
        0.0,
        1e-12,
    );
    p.check(
        "psnr torchmetrics global",
        &scalar(ps.global_torchmetrics()),
        &scalar(num(r, "psnr_torchmetrics_global")),
        0.0,
        1e-12,
    );
    p.check(
        "psnr torchmetrics per frame",
        &vec_t(&ps.per_frame_torchmetrics()),
        &vec_t(&nums(r, "psnr_torchmetrics_per_frame")),
        0.0,
        1e-12,
    );
    for (flavour, key) in [
        (SsimFlavour::SkimageGaussian, "ssim_skimage_gaussian"),
        (SsimFlavour::SkimageDefault, "ssim_skimage_default"),
        (SsimFlavour::Torchmetrics, "ssim_torchmetrics"),
    ] {
        let s = ssim(&a, &b, range, flavour).unwrap();
        println!(
            "  {key}: mean={:.15} ref={}",
            s.mean,
            num(r, &format!("{key}_mean"))
        );
        p.check(
            &format!("{key} per frame"),
            &vec_t(&s.per_frame),
            &vec_t(&nums(r, &format!("{key}_per_frame"))),
            0.0,
            1e-10,
        );
        p.check(
            &format!("{key} mean"),
            &scalar(s.mean),
            &scalar(num(r, &format!("{key}_mean"))),
            0.0,
            1e-10,
        );
    }
}

#[test]
fn metrics_fixtures() {
    let all = fixtures("metrics");
    for f in &all {
        let res = results(f);
        let obj = res.as_object().expect("metrics.json results is an object");
        let mut p = f.parity();
        for (name, r) in obj {
            let file = format!("{name}.safetensors");
            if !f.has(&file) {
                panic!(
                    "{}: metrics.json names `{name}` but {file} is absent",
                    f.id()
                );
            }
            let t = f.load(&file);
            if name.starts_with("fid") {
                check_fid(&mut p, name, &t, r);
            } else if name.starts_with("kid") {
                check_kid(&mut p, &t, r);
            } else if name.starts_with("psnr") {
                check_psnr_ssim(&mut p, &t, r);
            } else {
                panic!("{}: unknown metric case `{name}`", f.id());
            }
        }
        p.finish();
    }
}

/// `features/fid_real_images`: FD of 4 vs 4 real 2048-d Inception features, rank 3 each,
/// against the exact low-rank value (rtol 1e-6, the fixture's tolerance).
#[test]
fn fid_real_images_feature_fixture() {
    let mut dirs: Vec<Fixture> = fixtures("features")
        .into_iter()
        .filter(|f| f.name == "fid_real_images")
        .collect();
    if dirs.is_empty() {
        let shared = video_testkit::repo_root().join("../shared/fixtures/features/fid_real_images");
        if shared.is_dir() {
            let meta =
                serde_json::from_str(&std::fs::read_to_string(shared.join("meta.json")).unwrap())
                    .unwrap();
            dirs.push(Fixture {
                kind: "features".into(),
                name: "fid_real_images".into(),
                dir: PathBuf::from(&shared),
                meta,
            });
        }
    }
    if dirs.is_empty() {
        eprintln!("features/fid_real_images absent: skipped");
        return;
    }
    for f in dirs {
        let out = f.outputs();
        let (f1, f2) = (
            take(&out, "features_1", "fid"),
            take(&out, "features_2", "fid"),
        );
        let exact_ref = f
            .meta_at("fid/f64_exact_lowrank_nuclear")
            .and_then(|v| v.as_f64())
            .unwrap();
        let mut p = f.parity();
        let exact = frechet_distance_features(f1, f2).unwrap();
        p.check(
            "fd exact low-rank",
            &scalar(exact),
            &scalar(exact_ref),
            0.0,
            1e-6,
        );
        let g1 = FeatureStats::from_features(f1).unwrap().gaussian().unwrap();
        let g2 = FeatureStats::from_features(f2).unwrap().gaussian().unwrap();
        let full = frechet_distance(&g1, &g2).unwrap();
        p.check(
            "fd 2048x2048 path",
            &scalar(full),
            &scalar(exact_ref),
            0.0,
            1e-6,
        );
        println!("  fid_real_images: exact={exact:.12} full={full:.12} ref={exact_ref:.12}");
        p.finish();
    }
}
