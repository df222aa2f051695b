//! Sharded FVD / KVD with the real I3D weights: over 2 MPI ranks (this test binary re-run
//! under `mpirun -np 2`), and over 3 file shards + `--merge`, equal to one process.
#![cfg(feature = "mpi")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../examples/common/mod.rs"]
mod common;
#[path = "common/mod.rs"]
mod testing;

use std::path::Path;
use std::time::{Duration, Instant};

use vidgen_eval_metrics::weights::I3D_FILE;

/// Two folders of small GIF clips (10 frames, 64×48): 4 and 3 clips.
fn folders(root: &Path) {
    let mk = |seed: u32| testing::band_video(seed, 3 + seed % 4, 7 + seed);
    for (s, seeds) in [("a", &[1u32, 2, 3, 4][..]), ("b", &[5, 9, 11][..])] {
        let d = root.join(s);
        std::fs::create_dir_all(&d).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            vidgen_video_io::write_gif(d.join(format!("clip{i}.gif")), &mk(*seed)).unwrap();
        }
    }
}

fn argv(root: &Path, w: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        root.join("a").display().to_string(),
        root.join("b").display().to_string(),
        "--frames".into(),
        "10".into(),
        "--batch".into(),
        "1".into(),
        "--kvd".into(),
        "-q".into(),
        "--weights".into(),
        w.display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// (FVD, KVD mean) of report lines.
fn scores(lines: &[String]) -> (f64, f64) {
    let num = |l: &str| l.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap();
    (num(&lines[0]), num(&lines[1]))
}

#[test]
#[ignore = "run under mpirun by sharded_fvd_equals_one_process"]
fn fvd_rank() {
    let (true, Some(root), Some(w)) = (
        video_testkit::is_mpi_child(),
        std::env::var_os("VIDGEN_TEST_ROOT"),
        std::env::var_os("VIDGEN_TEST_WEIGHTS"),
    ) else {
        return;
    };
    let root = Path::new(&root);
    let a = common::Args::parse(&argv(root, Path::new(&w), &[])).unwrap();
    let lines = common::run(&a, true).unwrap();
    if !lines.is_empty() {
        std::fs::write(root.join("mpi.txt"), lines.join("\n")).unwrap();
    }
}

#[test]
fn sharded_fvd_equals_one_process() {
    let Some(w) = testing::weights(I3D_FILE) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    folders(root);
    let t0 = Instant::now();
    let one = common::run(&common::Args::parse(&argv(root, &w, &[])).unwrap(), true).unwrap();
    let t_one = t0.elapsed();
    let (fvd, kvd) = scores(&one);

    // 2 MPI ranks
    let t0 = Instant::now();
    let env = [
        ("VIDGEN_TEST_ROOT", root.display().to_string()),
        ("VIDGEN_TEST_WEIGHTS", w.display().to_string()),
    ];
    let (ok, out) = video_testkit::mpirun(2, "fvd_rank", &env, Duration::from_secs(600), || {});
    assert!(ok, "{out}");
    let t_two = t0.elapsed();
    let mpi: Vec<String> = std::fs::read_to_string(root.join("mpi.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let (fvd2, kvd2) = scores(&mpi);

    // 3 file shards + merge
    let mut parts = Vec::new();
    for i in 0..3 {
        let p = root.join(format!("part{i}.safetensors"));
        let s = format!("{i}/3");
        let lines = common::run(
            &common::Args::parse(&argv(
                root,
                &w,
                &["--shard", &s, "--partial", p.to_str().unwrap()],
            ))
            .unwrap(),
            true,
        )
        .unwrap();
        assert!(lines[0].starts_with(&format!("shard {i}/3")), "{lines:?}");
        parts.push(p.display().to_string());
    }
    let mut m = vec!["--merge".to_string(), "--kvd".into(), "-q".into()];
    m.extend(parts.iter().cloned());
    let merged = common::run(&common::Args::parse(&m).unwrap(), true).unwrap();
    let (fvd3, kvd3) = scores(&merged);
    let rel = |a: f64, b: f64| (a - b).abs() / a.abs().max(1e-300);
    println!(
        "sharded FVD: one process {fvd:.9} ({:.1} s), 2 MPI ranks {fvd2:.9} ({:.1} s, rel {:.1e}), 3 file shards {fvd3:.9} (rel {:.1e}); KVD {kvd:.6e} / {kvd2:.6e} / {kvd3:.6e}",
        t_one.as_secs_f64(),
        t_two.as_secs_f64(),
        rel(fvd, fvd2),
        rel(fvd, fvd3)
    );
    assert!(
        one[0].contains("n1 = 4, n2 = 3")
            && mpi[0].contains("n1 = 4, n2 = 3")
            && merged[0].contains("n1 = 4, n2 = 3")
    );
    assert!(rel(fvd, fvd2) <= 1e-9 && rel(fvd, fvd3) <= 1e-9);
    assert!(rel(kvd, kvd2) <= 1e-9 && rel(kvd, kvd3) <= 1e-9);

    // A missing or repeated shard is named.
    let e = common::run(
        &common::Args::parse(&[m[0].clone(), parts[0].clone(), parts[2].clone()]).unwrap(),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("missing 1/3"), "{e}");
    let e = common::run(
        &common::Args::parse(&[m[0].clone(), parts[0].clone(), parts[0].clone()]).unwrap(),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("given twice"), "{e}");
}
