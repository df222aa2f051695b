//! Resuming is exact: 20 steps straight and 10 steps + resume + 10 steps give bit-identical
//! weights, EMA, optimiser state and loss log (dropout, noise augmentation, random starts,
//! flips, gradient accumulation, clipping and a warm-up + cosine schedule all on).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use vidgen_trainer::checkpoint::{latest_checkpoint, load_tensors, Checkpoint};
use vidgen_trainer::{train, CondDropout, LrDecay, Recipe, TrainConfig};

fn config(recipe: Recipe, out: &Path) -> TrainConfig {
    let mut c = common::tiny_config(recipe, out, 20);
    c.optim.accumulation = 2;
    c.optim.warmup = 3;
    c.optim.decay = LrDecay::Cosine;
    c.optim.grad_clip = Some(0.5);
    c.optim.ema_decay = Some(0.95);
    c.dropout = Some(CondDropout::independent(0.3, 0.3));
    c.checkpoint_every = Some(7);
    c
}

fn bits(p: &Path) -> Vec<(String, Vec<u32>)> {
    load_tensors(p)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, common::bits(&t)))
        .collect()
}

fn check(recipe: Recipe) {
    common::setup();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    let straight = train(&config(recipe, a.path())).unwrap();
    assert_eq!(straight.summary.steps_done, 20);

    let mut first = config(recipe, b.path());
    first.stop_after = Some(10);
    let half = train(&first).unwrap();
    assert_eq!(half.summary.steps_done, 10);
    assert!(half.final_dir.is_none());
    let ck = latest_checkpoint(b.path()).unwrap().unwrap();
    assert!(ck.ends_with("step-000010"), "{}", ck.display());
    assert_eq!(Checkpoint::load(&ck).unwrap().state.step, 10);

    let mut second = config(recipe, b.path());
    second.resume = Some(b.path().to_path_buf());
    let rest = train(&second).unwrap();
    assert_eq!(rest.summary.steps_done, 20);
    assert_eq!(rest.summary.session_steps, 10);

    let fa = a.path().join("final");
    let fb = b.path().join("final");
    for f in [
        "trainable.safetensors",
        "ema.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
    ] {
        assert!(
            bits(&fa.join(f)) == bits(&fb.join(f)),
            "{}: {f} differs",
            recipe.name()
        );
    }
    let oa = a
        .path()
        .join("checkpoints/step-000020/optimizer.safetensors");
    let ob = b
        .path()
        .join("checkpoints/step-000020/optimizer.safetensors");
    assert!(bits(&oa) == bits(&ob), "optimizer state differs");
    let sa = Checkpoint::load(&a.path().join("checkpoints/step-000020"))
        .unwrap()
        .state;
    let sb = Checkpoint::load(&b.path().join("checkpoints/step-000020"))
        .unwrap()
        .state;
    assert_eq!(sa, sb, "run state (data position, generator) differs");
    let csv = |d: &Path| {
        std::fs::read_to_string(d.join("loss.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string()) // drop the timing column
            .collect::<Vec<_>>()
    };
    assert_eq!(csv(a.path()), csv(b.path()), "loss logs differ");
    assert_eq!(csv(a.path()).len(), 21);
    println!(
        "{}: 20 steps straight == 10 + resume + 10 (weights, EMA, AdamW state, data position, rng, losses); {:.1} s",
        recipe.name(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn resume_is_exact_discrete() {
    check(Recipe::Unet3d);
}

#[test]
fn resume_is_exact_edm_aid() {
    check(Recipe::Aid);
}
