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

/// Data-parallel losses: each shard's draws (dropout, σ or t, noise) are its rows of the whole
/// batch's, so the mean of the shards' losses is the whole batch's loss.
#[test]
fn shard_losses_average_to_the_whole_batch_loss() {
    use candle_core::{Device, Tensor};
    use rand::SeedableRng;
    use vidgen_trainer::data::BatchShard;
    use vidgen_trainer::Loss;
    use vidgen_video_core::Conditioning;
    common::setup();
    let x0 = Tensor::randn(0f32, 1.0, (4, 3, 2, 4, 4), &Device::Cpu).unwrap();
    // A per-sample network: its output for a row depends on that row only.
    let net = |x: &Tensor, c: &Tensor, _: &Conditioning| -> vidgen_video_core::Result<Tensor> {
        let c = c
            .to_dtype(candle_core::DType::F32)?
            .reshape(((), 1, 1, 1, 1))?;
        Ok((x * 0.5)?.broadcast_add(&c.broadcast_mul(&Tensor::new(0.01f32, x.device())?)?)?)
    };
    for objective in [
        Objective::Edm(EdmObjective::karras()),
        Objective::Discrete(DiscreteObjective::default()),
    ] {
        let loss = Loss::new(objective, CondDropout::independent(0.3, 0.3)).unwrap();
        let rng = || rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let whole = loss
            .compute(&net, &x0, &Conditioning::none(), &mut rng())
            .unwrap();
        let mut sum = 0f64;
        let mut levels = Vec::new();
        for r in 0..2 {
            let s = BatchShard::of(4, r, 2);
            let part = loss
                .compute_shard(
                    &net,
                    &x0.narrow(0, 2 * r, 2).unwrap(),
                    &Conditioning::none(),
                    &mut rng(),
                    s,
                )
                .unwrap();
            sum += part.loss.to_scalar::<f32>().unwrap() as f64;
            levels.extend(part.noise_levels);
        }
        assert_eq!(levels, whole.noise_levels);
        let w = whole.loss.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (sum / 2.0 - w).abs() <= 1e-6 * w.abs(),
            "{} vs {w}",
            sum / 2.0
        );
        // a shard that does not match its rows is an error
        let bad = BatchShard::of(4, 0, 2);
        assert!(loss
            .compute_shard(&net, &x0, &Conditioning::none(), &mut rng(), bad)
            .is_err());
    }
}

/// A region weight: ones give the unweighted loss (same draws), a weight that is `k` on every
/// element scales the loss by `k`, weighting one region moves the loss toward that region's
/// error, and a weight that does not broadcast is an error, not a panic.
#[test]
fn weighted_loss_weights_the_squared_error() {
    use candle_core::{Device, Tensor};
    use rand::SeedableRng;
    use vidgen_trainer::Loss;
    use vidgen_video_core::Conditioning;
    common::setup();
    let x0 = Tensor::randn(0f32, 1.0, (2, 3, 2, 4, 4), &Device::Cpu).unwrap();
    let net = |x: &Tensor, _: &Tensor, _: &Conditioning| -> vidgen_video_core::Result<Tensor> {
        Ok((x * 0.5)?)
    };
    for objective in [
        Objective::Edm(EdmObjective::svd()),
        Objective::Discrete(DiscreteObjective::default()),
    ] {
        let loss = Loss::new(objective, CondDropout::none()).unwrap();
        let rng = || rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let cond = Conditioning::none();
        let value = |w: Option<&Tensor>| -> f64 {
            let out = loss
                .compute_weighted(&net, &x0, &cond, &mut rng(), w)
                .unwrap();
            out.loss.to_scalar::<f32>().unwrap() as f64
        };
        let plain = loss
            .compute(&net, &x0, &cond, &mut rng())
            .unwrap()
            .loss
            .to_scalar::<f32>()
            .unwrap() as f64;
        assert_eq!(value(None), plain);
        let ones = Tensor::ones((2, 1, 2, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!((value(Some(&ones)) - plain).abs() <= 1e-6 * plain);
        let threes = (&ones * 3.0).unwrap();
        assert!((value(Some(&threes)) - 3.0 * plain).abs() <= 1e-5 * plain);
        // Weight one half of the cells: the loss is 1·(that half's error) + 0·(the rest), so
        // weighting one half and then the other adds back to the plain loss.
        let half = Tensor::cat(
            &[
                ones.narrow(4, 0, 2).unwrap(),
                ones.narrow(4, 2, 2).unwrap().zeros_like().unwrap(),
            ],
            4,
        )
        .unwrap();
        let other = (&ones - &half).unwrap();
        let (a, b) = (value(Some(&half)), value(Some(&other)));
        assert!(a > 0.0 && b > 0.0);
        assert!(
            (a + b - plain).abs() <= 1e-5 * plain,
            "{a} + {b} vs {plain}"
        );
        let bad = Tensor::ones((3, 1, 1, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = loss
            .compute_weighted(&net, &x0, &cond, &mut rng(), Some(&bad))
            .unwrap_err();
        assert!(err.to_string().contains("loss weight"), "{err}");
    }
}
