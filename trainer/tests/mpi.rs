//! Data-parallel training over real MPI ranks: each test re-runs this test binary under
//! `mpirun -np 2`, where the `*_rank` test (ignored in a plain run) trains as one rank.
//!
//! - 20 steps of the AID recipe (noise augmentation, condition dropout, random starts and
//!   flips all on) with batch 2 on each of 2 ranks give the weights of one process with
//!   batch 4, to f32 round-off of the reduction order;
//! - stopping after 10 steps and resuming on 2 ranks (rank 0 sends the checkpoint) gives the
//!   2-rank straight run bit for bit;
//! - a rank killed mid-run ends the job with an error instead of a hang.
#![cfg(feature = "mpi")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use video_testkit::mpirun;
use vidgen_collective::{init, or_abort, Collective};
use vidgen_trainer::checkpoint::load_tensors;
use vidgen_trainer::{train, CondDropout, Recipe, Session, TrainConfig};

fn config(out: &Path, batch: usize) -> TrainConfig {
    let mut c = common::tiny_config(Recipe::Aid, out, 20);
    c.batch = batch;
    c.dropout = Some(CondDropout::independent(0.3, 0.3));
    c.optim.grad_clip = Some(0.5);
    c.checkpoint_every = Some(5);
    c
}

fn child_env(key: &str) -> Option<PathBuf> {
    if !video_testkit::is_mpi_child() {
        return None;
    }
    std::env::var_os(key).map(PathBuf::from)
}

/// One rank's run: `VIDGEN_TEST_OUT` the output folder, `VIDGEN_TEST_STOP` / `_RESUME` as
/// the config's `stop_after` / `resume`, `VIDGEN_TEST_PIDS` a folder for `rank-R.pid`.
#[test]
#[ignore = "run under mpirun by the tests below"]
fn train_rank() {
    let Some(out) = child_env("VIDGEN_TEST_OUT") else {
        return;
    };
    common::setup();
    let group: Rc<dyn Collective> = Rc::from(init().unwrap());
    if let Some(pids) = child_env("VIDGEN_TEST_PIDS") {
        std::fs::write(
            pids.join(format!("rank-{}.pid", group.rank())),
            std::process::id().to_string(),
        )
        .unwrap();
    }
    let mut cfg = config(&out, 2);
    cfg.stop_after = std::env::var("VIDGEN_TEST_STOP")
        .ok()
        .map(|s| s.parse().unwrap());
    cfg.resume = child_env("VIDGEN_TEST_RESUME");
    if std::env::var_os("VIDGEN_TEST_SLOW").is_some() {
        cfg.steps = 100_000;
        cfg.checkpoint_every = None;
    }
    or_abort(group.as_ref(), || {
        Session::new_in(&cfg, group.clone())?.run()
    })
    .unwrap();
}

fn f32s(p: &Path) -> Vec<(String, Vec<f32>)> {
    load_tensors(p)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// (max |a − b|, max |a|, fraction of weights with |a − b| > 1e-5).
fn max_diff(a: &Path, b: &Path) -> (f32, f32, f64) {
    let (ta, tb) = (f32s(a), f32s(b));
    assert_eq!(ta.len(), tb.len());
    let (mut abs, mut scale) = (0f32, 0f32);
    let (mut n, mut far) = (0usize, 0usize);
    for ((ka, va), (kb, vb)) in ta.iter().zip(&tb) {
        assert_eq!(ka, kb);
        let mut m = 0f32;
        for (x, y) in va.iter().zip(vb) {
            m = m.max((x - y).abs());
            scale = scale.max(x.abs());
            n += 1;
            far += usize::from((x - y).abs() > 1e-5);
        }
        if m > 1e-5 {
            println!("  {ka}: max_abs {m:.3e}");
        }
        abs = abs.max(m);
    }
    println!("  {far} of {n} weights differ by more than 1e-5");
    (abs, scale, far as f64 / n.max(1) as f64)
}

#[test]
fn two_ranks_train_what_one_process_trains_with_the_global_batch() {
    common::setup();
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let single = train(&config(one.path(), 4)).unwrap();
    let t_one = t0.elapsed();
    let t0 = Instant::now();
    let env = [("VIDGEN_TEST_OUT", two.path().display().to_string())];
    let (ok, out) = mpirun(2, "train_rank", &env, Duration::from_secs(600), || {});
    let t_two = t0.elapsed();
    assert!(ok, "{out}");
    // rank 0 wrote everything, once
    let f = two.path().join("final");
    assert!(f.join("trainable.safetensors").is_file());
    let rows = std::fs::read_to_string(two.path().join("loss.csv")).unwrap();
    assert_eq!(rows.lines().count(), 21, "{rows}");
    let (abs, scale, frac) = max_diff(
        &one.path().join("final/trainable.safetensors"),
        &f.join("trainable.safetensors"),
    );
    let losses = |p: &Path| -> Vec<f64> {
        std::fs::read_to_string(p.join("loss.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    let (la, lb) = (losses(one.path()), losses(two.path()));
    let loss_diff = la
        .iter()
        .zip(&lb)
        .map(|(a, b)| (a - b).abs() / a.abs().max(1e-12))
        .fold(0f64, f64::max);
    println!(
        "dp 2 ranks x batch 2 vs 1 x batch 4 after 20 AID steps: weights max_abs {abs:.3e} (max |w| {scale:.3}), loss max_rel {loss_diff:.3e}; 1 process {:.1} s, 2 ranks {:.1} s",
        t_one.as_secs_f64(),
        t_two.as_secs_f64()
    );
    // The ranks sum the gradient in a different order than one process, so gradients differ
    // by f32 round-off. AdamW turns that into differences of up to lr per step for weights
    // whose gradient is near zero (its update is m / √v, about ±lr whatever the gradient's
    // size): seen 74 of 18 432 weights beyond 1e-5, the largest 1.5e-3 (a zero-initialised
    // adapter bias), with the loss curves equal to 2e-7.
    assert!(loss_diff <= 1e-5, "losses differ by {loss_diff}");
    assert!(
        frac <= 0.01,
        "{:.2}% of the weights differ by > 1e-5",
        frac * 100.0
    );
    assert!(abs <= 2e-3, "weights differ by {abs} (more than lr)");
    assert_eq!(
        single.summary.steps_done, 20,
        "the single-process run finished"
    );
}

#[test]
fn resuming_on_two_ranks_continues_exactly() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(600);
    let env = [("VIDGEN_TEST_OUT", a.path().display().to_string())];
    let (ok, out) = mpirun(2, "train_rank", &env, limit, || {});
    assert!(ok, "{out}");
    let env = [
        ("VIDGEN_TEST_OUT", b.path().display().to_string()),
        ("VIDGEN_TEST_STOP", "10".into()),
    ];
    let (ok, out) = mpirun(2, "train_rank", &env, limit, || {});
    assert!(ok, "{out}");
    assert!(!b.path().join("final").exists());
    let env = [
        ("VIDGEN_TEST_OUT", b.path().display().to_string()),
        ("VIDGEN_TEST_RESUME", b.path().display().to_string()),
    ];
    let (ok, out) = mpirun(2, "train_rank", &env, limit, || {});
    assert!(ok, "{out}");
    for f in [
        "trainable.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
    ] {
        let (abs, _, _) = max_diff(
            &a.path().join("final").join(f),
            &b.path().join("final").join(f),
        );
        assert_eq!(abs, 0.0, "{f}: resumed run differs by {abs}");
    }
    assert_eq!(
        std::fs::read_to_string(a.path().join("loss.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect::<Vec<_>>(),
        std::fs::read_to_string(b.path().join("loss.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect::<Vec<_>>(),
        "loss logs (step, loss, lr, grad norm) differ"
    );
}

#[test]
fn a_killed_rank_ends_the_job_with_an_error() {
    let out = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    let env = [
        ("VIDGEN_TEST_OUT", out.path().display().to_string()),
        ("VIDGEN_TEST_PIDS", pids.path().display().to_string()),
        ("VIDGEN_TEST_SLOW", "1".into()),
    ];
    let csv = out.path().join("loss.csv");
    let pidfile = pids.path().join("rank-1.pid");
    let mut killed = false;
    let t0 = Instant::now();
    let (ok, text) = mpirun(2, "train_rank", &env, Duration::from_secs(300), || {
        // Once training runs (two steps logged), kill rank 1 outright.
        let steps =
            std::fs::read_to_string(&csv).map_or(0, |s| s.lines().count().saturating_sub(1));
        if !killed && steps >= 2 {
            if let Ok(pid) = std::fs::read_to_string(&pidfile) {
                let st = Command::new("kill")
                    .args(["-9", pid.trim()])
                    .status()
                    .unwrap();
                assert!(st.success());
                killed = true;
            }
        }
    });
    assert!(killed, "training never reached step 2:\n{text}");
    assert!(
        !ok,
        "the job exited successfully after a rank was killed:\n{text}"
    );
    println!(
        "killed rank 1: the job ended in {:.1} s with: {}",
        t0.elapsed().as_secs_f64(),
        text.lines()
            .find(|l| l.contains("signal") || l.contains("exited"))
            .unwrap_or("")
    );
}
