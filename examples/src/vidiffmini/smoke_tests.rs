#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The shipped VIDiff miniature (`examples/assets/vidiff-mini`): its weights load strictly (no
//! missing, mismatched or unused key in any component), and on 52 seeded clips (13 of each kind
//! of edit: colour, shape, background, swatch) the edit is applied and the source's motion kept
//! in at least 80 % of them (the smoke thresholds), while the unconditional instruction
//! applies almost none.

use super::eval::{edit_episode, eval_episodes, score_clip, EvalOptions};
use super::folder::load_pipeline;
use super::{shipped_dir, Episodes, MiniConfig};

#[test]
fn shipped_vidiff_mini_loads_strictly_and_applies_its_edits() {
    let dir = shipped_dir();
    let cfg = MiniConfig::load(&dir).unwrap();
    let pipe = load_pipeline(&dir).unwrap();
    let unclean = crate::minis::unclean_loads(&pipe.report);
    assert!(unclean.is_empty(), "{unclean:?}");
    assert!(
        pipe.image_instruction.is_some(),
        "the swatch path is loaded"
    );
    let n = 52;
    let eps = Episodes::new(&cfg).unwrap();
    let episodes = eval_episodes(&eps, 7, n, cfg.frames).unwrap();
    let opts = EvalOptions {
        seed: 7,
        ..EvalOptions::default()
    };
    let (mut edit, mut motion, mut unasked_edit) = (0, 0, 0);
    for (i, e) in episodes.iter().enumerate() {
        let frames = edit_episode(&pipe, &cfg, &opts, e, i, false).unwrap();
        assert_eq!(frames.len(), cfg.frames);
        let s = score_clip(&eps, e, &frames).unwrap();
        edit += usize::from(s.edit_applied);
        motion += usize::from(s.motion_kept);
        if i % 4 == 0 {
            let f = edit_episode(&pipe, &cfg, &opts, e, i, true).unwrap();
            unasked_edit += usize::from(score_clip(&eps, e, &f).unwrap().edit_applied);
        }
    }
    println!("edit applied {edit}/{n}, motion kept {motion}/{n}, unasked edits {unasked_edit}/13");
    assert!(edit * 5 >= n * 4, "the edit is applied in only {edit}/{n}");
    assert!(
        motion * 5 >= n * 4,
        "the motion is kept in only {motion}/{n}"
    );
    assert!(
        unasked_edit <= 4,
        "without the instruction {unasked_edit}/13 clips were edited"
    );
}
