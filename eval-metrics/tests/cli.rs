#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The front ends of the `fid`, `fvd` and `merge_stats` examples (their shared module
//! `examples/common/mod.rs`, included here) on real images and small videos, with the real
//! weights; and the natural order of the folders they read (needs no weights).

#[path = "../examples/common/mod.rs"]
mod common;
#[path = "common/mod.rs"]
mod testing;

use candle_core::Tensor;
use video_testkit::{fixtures, Fixture};
use vidgen_eval_metrics::weights::{FID_INCEPTION_FILE, I3D_FILE};

#[test]
fn folders_are_read_in_natural_order() {
    let tmp = tempfile::tempdir().unwrap();
    let img = vidgen_video_io::Frame::new(2, 2, vec![0; 12]).unwrap();
    for name in ["10.png", "2.png", "1.png", "b.png", "a.txt"] {
        vidgen_video_io::write_png(tmp.path().join(name), &img).unwrap();
    }
    let got: Vec<String> = common::list_images(tmp.path())
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, ["1.png", "2.png", "10.png", "b.png"]);
    for name in ["clip10.gif", "clip9.gif"] {
        std::fs::write(tmp.path().join(name), b"").unwrap();
    }
    std::fs::create_dir(tmp.path().join("clip11")).unwrap();
    let got: Vec<String> = common::list_videos(tmp.path())
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, ["clip9.gif", "clip10.gif", "clip11"]);
}

fn to_frame(t: &Tensor) -> vidgen_video_io::Frame {
    let (h, w, _) = t.dims3().unwrap();
    let data = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    vidgen_video_io::Frame::new(w as u32, h as u32, data).unwrap()
}

/// The `fid` front end on the fid_real_images crops written as PNG folders, with statistics
/// saved, merged and reused; the `fvd` front end on small PNG-frame and GIF videos.
#[test]
fn cli_front_ends() {
    // Every Inception fixture with two image sets (fid_real_images and others like it).
    let fx: Vec<Fixture> = fixtures("features")
        .into_iter()
        .filter(|f| f.meta_at("set_1").is_some() && f.meta_at("fid").is_some())
        .collect();
    let (Some(wi), Some(wv)) = (
        testing::weights(FID_INCEPTION_FILE),
        testing::weights(I3D_FILE),
    ) else {
        return;
    };
    // The weights the tests found (VIDGEN_WEIGHTS is taken from the workspace root there).
    let with_weights = |mut a: common::Args, w: &std::path::Path| {
        a.weights = Some(w.to_path_buf());
        a
    };
    let tmp = tempfile::tempdir().unwrap();
    for f in fx {
        let inp = f.inputs();
        let exact = f
            .meta_at("fid/f64_exact_lowrank_nuclear")
            .and_then(|v| v.as_f64())
            .unwrap();
        let mut n = [0usize; 2];
        for s in [1, 2] {
            let d = tmp.path().join(format!("set{s}"));
            std::fs::create_dir_all(&d).unwrap();
            let names = f
                .meta_at(&format!("set_{s}"))
                .and_then(|v| v.as_array())
                .unwrap();
            for (i, name) in names.iter().enumerate() {
                let t = &inp[name.as_str().unwrap()];
                vidgen_video_io::write_png(d.join(format!("{i}.png")), &to_frame(t)).unwrap();
            }
            n[s - 1] = names.len();
        }
        let argv: Vec<String> = [
            "set1",
            "set2",
            "--quiet",
            "--batch",
            "3",
            "--save-stats",
            "s1.safetensors",
            "s2.safetensors",
        ]
        .iter()
        .map(|a| {
            if a.starts_with("set") || a.ends_with(".safetensors") {
                tmp.path().join(a).display().to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
        let args = with_weights(common::Args::parse(&argv).unwrap(), &wi);
        let lines = common::run(&args, false).unwrap();
        println!("  fid front end: {lines:?}");
        let fid: f64 = lines[0].split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((fid - exact).abs() <= 1e-3 * exact, "{fid} vs {exact}");
        // Saved statistics stand in for the folders (full-covariance path), and merge exactly.
        let s1 = tmp.path().join("s1.safetensors").display().to_string();
        let s2 = tmp.path().join("s2.safetensors").display().to_string();
        let again = common::run(
            &with_weights(
                common::Args::parse(&[s1.clone(), s2.clone(), "-q".into()]).unwrap(),
                &wi,
            ),
            false,
        )
        .unwrap();
        let fid2: f64 = again[0].split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((fid2 - exact).abs() <= 1e-3 * exact, "{fid2} vs {exact}");
        let merged = common::merge_stats_files(&[s1.clone().into(), s2.into()]).unwrap();
        assert_eq!(merged.count(), (n[0] + n[1]) as u64);
        assert!(common::Args::parse(&["only-one".to_string()]).is_err());
        assert!(common::Args::parse(&["a".into(), "b".into(), "--bogus".into()]).is_err());
    }
    // FVD / KVD on two sets of two synthetic 10-frame videos (PNG folder + GIF).
    let mk = |seed: u32| testing::band_video(seed, 3, 7);
    for (s, seeds) in [("va", [1, 2]), ("vb", [5, 9])] {
        let d = tmp.path().join(s);
        std::fs::create_dir_all(&d).unwrap();
        vidgen_video_io::write_png_folder(d.join("clip0"), &mk(seeds[0])).unwrap();
        vidgen_video_io::write_gif(d.join("clip1.gif"), &mk(seeds[1])).unwrap();
    }
    let va = tmp.path().join("va").display().to_string();
    let vb = tmp.path().join("vb").display().to_string();
    let args = with_weights(
        common::Args::parse(&[
            va.clone(),
            vb.clone(),
            "--frames".into(),
            "10".into(),
            "--kvd".into(),
            "-q".into(),
        ])
        .unwrap(),
        &wv,
    );
    let lines = common::run(&args, true).unwrap();
    println!("  fvd front end: {lines:?}");
    assert!(lines[0].starts_with("FVD ") && lines[1].starts_with("KVD "));
    // Clips longer than the videos, and clips shorter than I3D needs, are errors.
    let long = with_weights(
        common::Args::parse(&[
            va.clone(),
            vb.clone(),
            "--frames".into(),
            "16".into(),
            "-q".into(),
        ])
        .unwrap(),
        &wv,
    );
    assert!(common::run(&long, true).is_err());
    let short = with_weights(
        common::Args::parse(&[va, vb, "--frames".into(), "8".into(), "-q".into()]).unwrap(),
        &wv,
    );
    assert!(common::run(&short, true)
        .unwrap_err()
        .to_string()
        .contains("at least 9"));
}
