//! Each objective's loss decreases over 50 steps on a tiny model and the synthetic world:
//! the loss on a fixed batch with fixed draws (σ or t, noise), measured before and after.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use vidgen_samplers::PredictionType;
use vidgen_trainer::data::DataPosition;
use vidgen_trainer::{CondDropout, DiscreteObjective, EdmObjective, Objective, Recipe, Session};

fn decreases(recipe: Recipe, objective: Objective, what: &str) {
    common::setup();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::tiny_config(recipe, dir.path(), 50);
    cfg.trainable = Some(vec!["*".into()]);
    cfg.objective = Some(objective);
    cfg.dropout = Some(CondDropout::none());
    let t0 = std::time::Instant::now();
    let mut s = Session::new(&cfg).unwrap();
    let b = s.batch_at(DataPosition::default()).unwrap();
    let eval = |s: &mut Session| -> f64 {
        (0..4)
            .map(|k| s.eval_loss(&b, 100 + k).unwrap() as f64)
            .sum::<f64>()
            / 4.0
    };
    let before = eval(&mut s);
    let o = s.run().unwrap();
    let after = eval(&mut s);
    let (a, z) = common::first_last(&o.summary.rows, 10);
    println!(
        "{what}: fixed-batch loss {before:.4} -> {after:.4}; logged {a:.4} (steps 1-10) -> {z:.4} (41-50); {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(o.summary.rows.len(), 50);
    assert!(after < 0.7 * before, "{what}: {before} -> {after}");
}

#[test]
fn edm_svd_preconditioning_loss_decreases() {
    decreases(
        Recipe::Svd,
        Objective::Edm(EdmObjective::svd()),
        "edm/svd on SVD UNet",
    );
}

#[test]
fn edm_karras_preconditioning_loss_decreases() {
    decreases(
        Recipe::Unet3d,
        Objective::Edm(EdmObjective::karras()),
        "edm/karras on UNet3D",
    );
}

#[test]
fn epsilon_prediction_loss_decreases() {
    decreases(
        Recipe::Unet3d,
        Objective::Discrete(DiscreteObjective::stable_diffusion()),
        "epsilon on UNet3D",
    );
}

#[test]
fn v_prediction_loss_decreases() {
    decreases(
        Recipe::Animate,
        Objective::Discrete(DiscreteObjective {
            prediction: PredictionType::VPrediction,
            ..DiscreteObjective::animatediff()
        }),
        "v-prediction on UNetMotion",
    );
}
