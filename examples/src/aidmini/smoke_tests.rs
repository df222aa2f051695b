#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The shipped AID miniature (`examples/assets/aid-mini`): its weights load strictly (no
//! missing, mismatched or unused key in any component, the tuned cross-attention included),
//! AID's parts are a small share of the UNet, and on 50 seeded episodes the predicted motion
//! follows the instruction in at least 80 % of the clips (chance: 12.5 %), with a moving
//! object that keeps its colour and its shape (identity) in at least 80 % of them.
//!
//! The identity target (95 % over 200 episodes) is not asserted here: the shipped
//! weights measure 93.5 % [89.2, 96.2] (see the asset's README), and a 50-episode smoke test
//! guards against regressions, not the target.

use super::eval::{eval_episodes, run_condition, Condition, EvalOptions};
use super::folder::load_pipeline;
use super::train::param_share;
use super::{shipped_dir, Episodes, MiniConfig};

/// Of 50 clips, those whose motion follows the instruction (the 80 %).
const MIN_DIRECTION: usize = 40;
/// Of 50 clips, those in which a moving object is found.
const MIN_MOVING: usize = 30;
/// Of 50 clips, those whose object keeps its colour (measured 100 % of 200 on this stream).
const MIN_COLOUR: usize = 40;
/// Of 50 clips, those whose object keeps its colour and shape (measured 93.5 % of 200 on this
/// stream).
const MIN_IDENTITY: usize = 40;

/// The instructed condition on `n` episodes of stream `seed`: every clip has the folder's
/// frame count, and there are `n` of them.
fn run_instructed(
    pipe: &vidgen_pipelines::AidPipeline,
    cfg: &MiniConfig,
    seed: u64,
    n: usize,
) -> super::eval::ConditionReport {
    let eps = Episodes::new(cfg).unwrap();
    let episodes = eval_episodes(&eps, seed, n).unwrap();
    let opts = EvalOptions {
        episodes: n,
        seed,
        sweep: Vec::new(),
        references: false,
        ..EvalOptions::default()
    };
    let cond = Condition {
        label: "instructed".into(),
        text: true,
        text_guidance: cfg.text_guidance,
    };
    let mut clips = 0;
    let rep = run_condition(pipe, cfg, &cond, &episodes, &opts, &mut |_, frames, _| {
        assert_eq!(frames.len(), cfg.frames);
        clips += 1;
    })
    .unwrap();
    assert_eq!(clips, n);
    rep
}

#[test]
fn shipped_aid_mini_loads_strictly_and_follows_instructions() {
    let dir = shipped_dir();
    let cfg = MiniConfig::load(&dir).unwrap();
    let pipe = load_pipeline(&dir).unwrap();
    let unclean = crate::minis::unclean_loads(&pipe.report);
    assert!(unclean.is_empty(), "{unclean:?}");
    let share = param_share(&dir).unwrap();
    assert!(share.adapters > 0 && share.dqformer > 0 && share.tuned_unet > 0);
    assert!(share.share() < 0.1, "AID's share {}", share.share());

    let n = 50;
    let rep = run_instructed(&pipe, &cfg, 7, n);
    println!(
        "instructed: direction agrees {} (chance 12.5%), colour {}, identity {}, no motion {}",
        rep.direction.display(),
        rep.colour.display(),
        rep.identity.display(),
        rep.still.display()
    );
    assert!(
        rep.direction.hits >= MIN_DIRECTION,
        "the motion follows the instruction in only {}/{n}",
        rep.direction.hits
    );
    let moving = n - rep.still.hits;
    assert!(moving >= MIN_MOVING, "a moving object in only {moving}/{n}");
    assert!(
        rep.colour.hits >= MIN_COLOUR,
        "colour kept in only {}/{n}",
        rep.colour.hits
    );
    assert!(
        rep.identity.hits >= MIN_IDENTITY,
        "colour and shape kept in only {}/{n}",
        rep.identity.hits
    );
}

/// A folder with 2 latent channels (neither SVD's 4 nor the shipped miniature's 8) and a
/// factor-2 VAE (16×16 latents) trains through every stage and runs through `AidPipeline`: the
/// pipelines read the latent width and the VAE's factor from the folder, not constants.
#[test]
fn quick_training_with_two_latent_channels_and_a_factor_2_vae_runs_end_to_end() {
    use super::train::{train, Stage, StageOptions, TrainOptions};
    let dir = tempfile::tempdir().unwrap();
    let tiny = |batch| StageOptions {
        steps: 2,
        batch,
        lr: 1e-3,
    };
    let mini = MiniConfig {
        latent_channels: 2,
        vae_factor: 2,
        unet_channels: vec![32, 32],
        steps: 2,
        ..MiniConfig::default()
    };
    mini.validate().unwrap();
    let opts = TrainOptions {
        mini: mini.clone(),
        clips: 4,
        vae: tiny(2),
        decoder: tiny(1),
        base: tiny(2),
        aid: tiny(2),
        progress: false,
        ..TrainOptions::default()
    };
    let done = train(&opts, &Stage::ALL, dir.path()).unwrap();
    assert_eq!(done.len(), 4);
    let back = MiniConfig::load(dir.path()).unwrap();
    assert_eq!((back.latent_channels, back.vae_factor), (2, 2));
    let pipe = load_pipeline(dir.path()).unwrap();
    assert_eq!(pipe.svd.latent_channels(), 2);
    assert_eq!(pipe.svd.vae_scale_factor(), 2);
    assert!(crate::minis::unclean_loads(&pipe.report).is_empty());
    run_instructed(&pipe, &mini, 3, 2);

    // The shipped (8-channel) VAE under this 2-channel UNet: a typed error at load, not a
    // shape failure at the first step.
    let vae = dir.path().join("vae");
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(shipped_dir().join("vae").join(f), vae.join(f)).unwrap();
    }
    let err = load_pipeline(dir.path())
        .err()
        .expect("mismatched latent widths load");
    assert!(err.to_string().contains("latent channels"), "{err}");
}
