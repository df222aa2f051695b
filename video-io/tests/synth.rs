#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The moving-shapes world: determinism, exact motion labels, pairing, palette safety.

use std::collections::HashSet;

use proptest::prelude::*;
use vidgen_video_io::synth::{
    seeded_rng, Action, ActionKind, Clip, Colour, Direction, MovingShapes, Shape, WorldConfig,
};
use vidgen_video_io::Frame;

fn world(w: u32, h: u32, t: usize) -> MovingShapes {
    MovingShapes::new(WorldConfig::new(w, h, t)).unwrap()
}

/// Whether the object's mask touches the border at frame `t` (then it may be clipped).
fn touches_border(clip: &Clip, t: usize) -> bool {
    let (w, h) = (clip.video.width() as usize, clip.video.height() as usize);
    clip.masks[t]
        .iter()
        .enumerate()
        .any(|(i, &m)| m && (i % w == 0 || i % w == w - 1 || i / w == 0 || i / w == h - 1))
}

fn px(f: &Frame, x: i64, y: i64) -> Option<[u8; 3]> {
    if x < 0 || y < 0 {
        return None;
    }
    f.get(x as u32, y as u32)
}

#[test]
fn same_seed_same_clips_other_seed_other_clips() {
    for (w, h) in [(32, 32), (64, 64), (48, 40)] {
        let g = world(w, h, 8);
        for seed in 0..6 {
            let a = g.clip(&mut seeded_rng(seed)).unwrap();
            let b = g.clip(&mut seeded_rng(seed)).unwrap();
            assert_eq!(a.video, b.video);
            assert_eq!(a.label, b.label);
            assert_eq!(a.masks, b.masks);
            let c = g.clip(&mut seeded_rng(seed + 100)).unwrap();
            assert_ne!(a.video, c.video, "seeds {seed} and {} agree", seed + 100);
        }
    }
}

#[test]
fn every_translation_moves_the_object_by_the_stated_pixels() {
    for (w, h) in [(32, 32), (64, 64)] {
        let g = world(w, h, 8);
        let mut rng = seeded_rng(11);
        for direction in Direction::ALL {
            for speed in 1..=2u32 {
                let clip = g
                    .clip_with_action(Action::Translate { direction, speed }, &mut rng)
                    .unwrap();
                // The frames are large enough that the requested speed is kept.
                assert_eq!(clip.label.action, Action::Translate { direction, speed });
                let (dx, dy) = direction.delta();
                let (sx, sy) = (dx as i64 * speed as i64, dy as i64 * speed as i64);
                for t in 0..clip.video.len() - 1 {
                    assert!(!touches_border(&clip, t), "{w}x{h} {direction:?} t={t}");
                    let (x0, y0) = clip.mask_centroid(t).unwrap();
                    let (x1, y1) = clip.mask_centroid(t + 1).unwrap();
                    assert!(
                        (x1 - x0 - sx as f64).abs() < 1e-9 && (y1 - y0 - sy as f64).abs() < 1e-9,
                        "{w}x{h} {direction:?} speed {speed} t={t}: centroid moved by ({}, {})",
                        x1 - x0,
                        y1 - y0
                    );
                    assert_eq!(clip.mask_area(t), clip.mask_area(t + 1));
                    // Rigid motion: every object pixel, texture included, reappears shifted.
                    let (f0, f1) = (&clip.video.frames()[t], &clip.video.frames()[t + 1]);
                    let wu = w as usize;
                    for (i, _) in clip.masks[t].iter().enumerate().filter(|(_, &m)| m) {
                        let (x, y) = ((i % wu) as i64, (i / wu) as i64);
                        assert_eq!(px(f0, x, y), px(f1, x + sx, y + sy));
                        let j = (y + sy) as usize * wu + (x + sx) as usize;
                        assert!(clip.masks[t + 1][j]);
                    }
                    // The stated centres agree with the masks' motion.
                    let (c0, c1) = (clip.centers[t], clip.centers[t + 1]);
                    assert_eq!(((c1.0 - c0.0) as i64, (c1.1 - c0.1) as i64), (sx, sy));
                }
            }
        }
    }
}

#[test]
fn every_pan_shifts_the_whole_picture_opposite_to_the_camera() {
    for (w, h) in [(32, 32), (64, 64)] {
        let g = world(w, h, 6);
        let mut rng = seeded_rng(5);
        for direction in Direction::AXES {
            for speed in 1..=3u32 {
                let clip = g
                    .clip_with_action(Action::Pan { direction, speed }, &mut rng)
                    .unwrap();
                assert_eq!(clip.label.action.speed(), speed);
                let (dx, dy) = direction.delta();
                let (sx, sy) = (dx as i64 * speed as i64, dy as i64 * speed as i64);
                for t in 0..clip.video.len() - 1 {
                    let (f0, f1) = (&clip.video.frames()[t], &clip.video.frames()[t + 1]);
                    // The camera moved by (sx, sy): what was at (x + sx, y + sy) is now at (x, y).
                    let mut compared = 0;
                    for y in 0..h as i64 {
                        for x in 0..w as i64 {
                            if let Some(before) = px(f0, x + sx, y + sy) {
                                assert_eq!(
                                    px(f1, x, y),
                                    Some(before),
                                    "{direction:?} t={t} ({x},{y})"
                                );
                                compared += 1;
                            }
                        }
                    }
                    assert!(compared > 0);
                    // The background is not flat: the frames really differ.
                    assert_ne!(f0, f1, "{direction:?} speed {speed}: pan not visible");
                    if !touches_border(&clip, t) && !touches_border(&clip, t + 1) {
                        let (x0, y0) = clip.mask_centroid(t).unwrap();
                        let (x1, y1) = clip.mask_centroid(t + 1).unwrap();
                        assert!((x1 - x0 + sx as f64).abs() < 1e-9);
                        assert!((y1 - y0 + sy as f64).abs() < 1e-9);
                    }
                }
            }
        }
    }
}

#[test]
fn zoom_grows_and_shrinks_the_object() {
    let g = world(64, 64, 8);
    let mut rng = seeded_rng(2);
    for _ in 0..4 {
        let zin = g
            .clip_with_action(Action::ZoomIn { rate: 1.1 }, &mut rng)
            .unwrap();
        let zout = g
            .clip_with_action(Action::ZoomOut { rate: 1.1 }, &mut rng)
            .unwrap();
        // Sampling at pixel centres makes the area of a small, thin shape jitter by a few
        // pixels from frame to frame; over two frames (rate^2 = 1.21) the trend dominates.
        for t in 0..6 {
            assert!(zin.mask_area(t + 2) > zin.mask_area(t), "zoom in t={t}");
            assert!(zout.mask_area(t + 2) < zout.mask_area(t), "zoom out t={t}");
        }
        // rate^7 = 1.95 in size, ~3.8x in area (less where the grown object is clipped).
        assert!(zin.mask_area(7) as f64 > 2.0 * zin.mask_area(0) as f64);
        assert!((zout.mask_area(7) as f64) < 0.45 * zout.mask_area(0) as f64);
    }
}

#[test]
fn appear_and_disappear_switch_at_the_stated_frame() {
    let g = world(32, 32, 8);
    let mut rng = seeded_rng(3);
    for at in 1..8 {
        let a = g.clip_with_action(Action::Appear { at }, &mut rng).unwrap();
        let d = g
            .clip_with_action(Action::Disappear { at }, &mut rng)
            .unwrap();
        for t in 0..8 {
            assert_eq!(a.mask_area(t) > 0, t >= at, "appear at {at}, frame {t}");
            assert_eq!(d.mask_area(t) > 0, t < at, "disappear at {at}, frame {t}");
        }
        assert!(g
            .clip_with_action(Action::Appear { at: 0 }, &mut rng)
            .is_err());
        assert!(g
            .clip_with_action(Action::Disappear { at: 8 }, &mut rng)
            .is_err());
    }
}

#[test]
fn pairs_share_the_action_and_differ_in_looks() {
    let g = world(32, 32, 8);
    let mut rng = seeded_rng(9);
    let mut classes = HashSet::new();
    for _ in 0..40 {
        let (a, b) = g.pair(&mut rng).unwrap();
        assert_eq!(a.label.action.class_index(), b.label.action.class_index());
        assert_eq!(a.label.action.name(), b.label.action.name());
        let (x, y) = (a.label.appearance, b.label.appearance);
        assert_ne!(x.shape, y.shape);
        assert_ne!(x.colour, y.colour);
        assert_ne!(x.background_seed, y.background_seed);
        classes.insert(a.label.action.class_index());
    }
    assert!(
        classes.len() >= 10,
        "40 pairs covered only {} classes",
        classes.len()
    );
    let ep = g.episode(5, &mut rng).unwrap();
    assert_eq!(ep.len(), 5);
    assert!(ep.iter().all(|c| c.label.action == ep[0].label.action));
}

#[test]
fn class_indices_cover_0_to_15_once() {
    let mut seen = HashSet::new();
    for d in Direction::ALL {
        seen.insert(
            Action::Translate {
                direction: d,
                speed: 1,
            }
            .class_index(),
        );
    }
    for d in Direction::AXES {
        seen.insert(
            Action::Pan {
                direction: d,
                speed: 1,
            }
            .class_index(),
        );
    }
    for a in [
        Action::ZoomIn { rate: 1.1 },
        Action::ZoomOut { rate: 1.1 },
        Action::Appear { at: 1 },
        Action::Disappear { at: 1 },
    ] {
        seen.insert(a.class_index());
    }
    assert_eq!(seen, (0..Action::NUM_CLASSES).collect());
}

#[test]
fn restricted_configs_and_bad_configs() {
    let mut cfg = WorldConfig::small();
    cfg.shapes = vec![Shape::Ring];
    cfg.colours = vec![Colour::Red];
    cfg.actions = vec![ActionKind::Translate];
    let g = MovingShapes::new(cfg.clone()).unwrap();
    let (a, b) = g.pair(&mut seeded_rng(1)).unwrap();
    assert_eq!(a.label.appearance.shape, Shape::Ring);
    assert_eq!(b.label.appearance.colour, Colour::Red);
    assert_eq!(a.label.action.kind(), ActionKind::Translate);

    for bad in [
        WorldConfig {
            frames: 1,
            ..cfg.clone()
        },
        WorldConfig {
            width: 4,
            ..cfg.clone()
        },
        WorldConfig {
            speed: (0, 2),
            ..cfg.clone()
        },
        WorldConfig {
            speed: (3, 2),
            ..cfg.clone()
        },
        WorldConfig {
            radius: (0.3, 0.2),
            ..cfg.clone()
        },
        WorldConfig {
            zoom_rate: 1.0,
            ..cfg.clone()
        },
        WorldConfig {
            fps: 0.0,
            ..cfg.clone()
        },
        WorldConfig {
            shapes: vec![],
            ..cfg.clone()
        },
    ] {
        let err = MovingShapes::new(bad.clone()).unwrap_err();
        assert!(
            matches!(err, vidgen_video_core::Error::BadConfig { .. }),
            "{bad:?} -> {err}"
        );
    }
    let g = world(32, 32, 4);
    let mut rng = seeded_rng(0);
    let diag_pan = Action::Pan {
        direction: Direction::UpLeft,
        speed: 1,
    };
    assert!(g.clip_with_action(diag_pan, &mut rng).is_err());
    let still = Action::Translate {
        direction: Direction::Up,
        speed: 0,
    };
    assert!(g.clip_with_action(still, &mut rng).is_err());
    assert!(g
        .clip_with_action(Action::ZoomIn { rate: 0.9 }, &mut rng)
        .is_err());
}

#[test]
fn long_clips_lower_the_speed_and_stay_valid() {
    let g = world(32, 32, 40);
    let clip = g
        .clip_with_action(
            Action::Translate {
                direction: Direction::Right,
                speed: 3,
            },
            &mut seeded_rng(4),
        )
        .unwrap();
    assert_eq!(clip.video.len(), 40);
    assert_eq!(clip.label.action.speed(), 1);
    // Too long even at 1 px/frame: the object leaves the view, nothing panics.
    let g = world(16, 16, 64);
    for seed in 0..8 {
        let clip = g.clip(&mut seeded_rng(seed)).unwrap();
        assert_eq!(clip.masks.len(), 64);
        assert!(clip.label.action.speed() >= 1 || clip.label.action.direction().is_none());
    }
}

#[test]
fn clips_are_palette_safe() {
    let g = world(64, 64, 8);
    let mut rng = seeded_rng(21);
    for _ in 0..20 {
        let clip = g.clip(&mut rng).unwrap();
        for f in clip.video.frames() {
            let colours: HashSet<&[u8]> = f.data().chunks_exact(3).collect();
            assert!(colours.len() <= 256, "{} colours", colours.len());
        }
    }
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(40))]

    #[test]
    fn any_size_and_length_gives_consistent_clips(
        w in 8u32..80, h in 8u32..80, t in 2usize..12, seed in any::<u64>()
    ) {
        let g = world(w, h, t);
        let clip = g.clip(&mut seeded_rng(seed)).unwrap();
        prop_assert_eq!(clip.video.len(), t);
        prop_assert_eq!((clip.video.width(), clip.video.height()), (w, h));
        prop_assert_eq!(clip.masks.len(), t);
        prop_assert!(clip.masks.iter().all(|m| m.len() == (w * h) as usize));
        prop_assert!(clip.label.action.class_index() < 16);
        if let Action::Translate { direction, speed } = clip.label.action {
            let (dx, dy) = direction.delta();
            for k in 0..t - 1 {
                if touches_border(&clip, k) || touches_border(&clip, k + 1) {
                    continue;
                }
                let (Some(a), Some(b)) = (clip.mask_centroid(k), clip.mask_centroid(k + 1)) else {
                    continue;
                };
                prop_assert!((b.0 - a.0 - (dx * speed as i32) as f64).abs() < 1e-9);
                prop_assert!((b.1 - a.1 - (dy * speed as i32) as f64).abs() < 1e-9);
            }
        }
    }
}
