//! The data side: same seed → same clips; a new order every epoch; the worker loader equals
//! the synchronous batches; folders of frame folders / GIFs with sidecar captions and
//! manifests; clip cutting, resizing, flips; short items skipped; typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use candle_core::Device;
use vidgen_trainer::data::{
    epoch_order, flip_video, BatchShard, ClipSource, ClipSpec, DataPosition, DataShard, Dataset,
    FolderSource, Loader, LoaderConfig, MemorySource,
};
use vidgen_video_core::Error;
use vidgen_video_io::synth::WorldConfig;
use vidgen_video_io::{write_gif, write_png_folder, Frame, Video};

fn spec(frames: usize, stride: usize) -> ClipSpec {
    ClipSpec {
        frames,
        stride,
        random_start: true,
        width: 12,
        height: 12,
        flip: 0.5,
    }
}

fn synth(n: usize) -> Arc<Dataset> {
    let src = MemorySource::synthetic(&WorldConfig::new(16, 16, 8), n, 3).unwrap();
    Arc::new(Dataset::new(Arc::new(src), spec(3, 2)).unwrap())
}

fn flat(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn same_seed_gives_the_same_clips_and_another_seed_does_not() {
    common::setup();
    let ds = synth(10);
    let run = |seed: u64| {
        let mut pos = DataPosition::default();
        let mut out = Vec::new();
        for _ in 0..6 {
            let b = ds.batch_at(seed, pos, 4, &Device::Cpu).unwrap();
            pos = b.next;
            out.push((
                b.items.clone(),
                b.starts.clone(),
                flat(&b.video),
                b.captions.clone(),
            ));
        }
        out
    };
    let (a, b, c) = (run(5), run(5), run(6));
    assert!(a == b, "same seed, different clips");
    assert!(a != c, "another seed gave the same clips");
    // 6 batches of 4 over 10 items: 2.4 epochs, each item seen once per epoch.
    let items: Vec<usize> = a.iter().flat_map(|x| x.0.clone()).collect();
    for e in 0..2 {
        let mut ep: Vec<usize> = items[e * 10..(e + 1) * 10].to_vec();
        ep.sort();
        assert_eq!(
            ep,
            (0..10).collect::<Vec<_>>(),
            "epoch {e} is not a permutation"
        );
    }
}

#[test]
fn every_epoch_has_another_order() {
    let mut seen = HashSet::new();
    for e in 0..40 {
        let o = epoch_order(11, e, 12);
        let mut s = o.clone();
        s.sort();
        assert_eq!(s, (0..12).collect::<Vec<_>>());
        assert!(seen.insert(o), "epoch {e} repeats an earlier order");
    }
    // Reproducible from the seed.
    assert_eq!(epoch_order(11, 3, 12), epoch_order(11, 3, 12));
    assert_ne!(epoch_order(11, 3, 12), epoch_order(12, 3, 12));
}

#[test]
fn loader_thread_yields_the_synchronous_batches() {
    common::setup();
    let ds = synth(7);
    let start = DataPosition { epoch: 2, index: 5 };
    let mut l = Loader::spawn(
        ds.clone(),
        LoaderConfig {
            batch: 3,
            seed: 9,
            prefetch: 2,
        },
        start,
        Device::Cpu,
    )
    .unwrap();
    let mut pos = start;
    for _ in 0..5 {
        let want = ds.batch_at(9, pos, 3, &Device::Cpu).unwrap();
        let got = l.next_batch().unwrap();
        assert_eq!(got.items, want.items);
        assert_eq!(got.starts, want.starts);
        assert_eq!(flat(&got.video), flat(&want.video));
        assert_eq!(got.next, want.next);
        assert_eq!(l.position(), want.next);
        pos = want.next;
    }
    drop(l); // joins the worker while it is blocked on a full channel
}

/// Data-parallel loaders: rank r of 3 (batch 2 each, global batch 6) gets rows 2r..2r+2 of the
/// one-process batch of 6, every rank is at the global position after each step, and over an
/// epoch the ranks read every clip exactly once between them.
#[test]
fn sharded_loaders_split_the_global_batch() {
    common::setup();
    let ds = synth(12);
    let cfg = LoaderConfig {
        batch: 2,
        seed: 4,
        prefetch: 1,
    };
    let mut loaders: Vec<Loader> = (0..3)
        .map(|rank| {
            Loader::spawn_shard(
                ds.clone(),
                cfg,
                DataPosition::default(),
                Device::Cpu,
                DataShard { rank, world: 3 },
            )
            .unwrap()
        })
        .collect();
    let mut pos = DataPosition::default();
    let mut epoch0 = Vec::new();
    for step in 0..3 {
        let whole = ds.batch_at(4, pos, 6, &Device::Cpu).unwrap();
        let w = flat(&whole.video);
        let per = w.len() / 6;
        for (rank, l) in loaders.iter_mut().enumerate() {
            let b = l.next_batch().unwrap();
            assert_eq!(
                b.shard,
                BatchShard {
                    offset: 2 * rank,
                    len: 2,
                    global: 6
                }
            );
            assert_eq!(b.items, whole.items[2 * rank..2 * rank + 2]);
            assert_eq!(flat(&b.video), w[2 * rank * per..(2 * rank + 2) * per]);
            assert_eq!(b.next, whole.next);
            if step < 2 {
                epoch0.extend(b.items.clone());
            }
        }
        pos = whole.next;
    }
    epoch0.sort_unstable();
    assert_eq!(
        epoch0,
        (0..12).collect::<Vec<_>>(),
        "every clip once per epoch"
    );
    assert!(
        Loader::spawn_shard(ds, cfg, pos, Device::Cpu, DataShard { rank: 3, world: 3 }).is_err()
    );
    // per-sample draws: a shard keeps its rows of the global draw
    let mut n = 0u32;
    let all = BatchShard::whole(6).draw(2, || {
        n += 1;
        n
    });
    let mut n = 0u32;
    let mid = BatchShard::of(6, 1, 3).draw(2, || {
        n += 1;
        n
    });
    assert_eq!(mid, all[4..8]);
}

fn frames(n: usize, w: u32, h: u32, tag: u8) -> Video {
    let fs = (0..n)
        .map(|i| {
            let mut f = Frame::filled(w, h, [tag, (i * 10) as u8, 0]).unwrap();
            f.put(0, 0, [255, 255, 255]); // marks the left edge
            f
        })
        .collect();
    Video::new(fs, 8.0).unwrap()
}

#[test]
fn folders_of_frames_and_gifs_with_captions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_png_folder(root.join("clip10"), &frames(6, 20, 10, 1)).unwrap();
    write_png_folder(root.join("clip2"), &frames(5, 20, 10, 2)).unwrap();
    std::fs::write(root.join("clip2.txt"), "a red ball rolls\n").unwrap();
    std::fs::write(root.join("clip10").join("caption.txt"), "blue cube").unwrap();
    write_gif(root.join("anim.gif"), &frames(5, 20, 10, 3)).unwrap();
    std::fs::write(root.join("anim.txt"), "a gif").unwrap();
    write_png_folder(root.join("short"), &frames(2, 20, 10, 4)).unwrap();
    std::fs::write(root.join("notes.md"), "ignored").unwrap();
    let src = FolderSource::open(root).unwrap();
    // natural order: anim.gif, clip2, clip10, short
    let names: Vec<String> = (0..src.len())
        .map(|i| {
            std::path::Path::new(&src.name(i))
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["anim.gif", "clip2", "clip10", "short"]);
    let caps: Vec<String> = (0..src.len()).map(|i| src.caption(i)).collect();
    assert_eq!(caps, ["a gif", "a red ball rolls", "blue cube", ""]);
    assert_eq!(src.frame_count(2).unwrap(), 6);
    // Frames 1, 3, 5 of clip10 (green channel = 10·i).
    let (v, s) = src.read(2, 1, 3, 2).unwrap();
    assert!(s.is_none());
    let g: Vec<u8> = v.frames().iter().map(|f| f.get(5, 5).unwrap()[1]).collect();
    assert_eq!(g, [10, 30, 50]);
    // A dataset of 3-frame clips at stride 2 spans 5 frames: `short` (2) is skipped.
    let ds = Dataset::new(Arc::new(src), spec(3, 2)).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.skipped().len(), 1);
    let b = ds
        .batch_at(0, DataPosition::default(), 3, &Device::Cpu)
        .unwrap();
    assert_eq!(b.video.dims(), &[3, 3, 3, 12, 12]); // resized to cover, centre-cropped
    let mut caps = b.captions.clone();
    caps.sort();
    assert_eq!(caps, ["a gif", "a red ball rolls", "blue cube"]);
}

#[test]
fn manifests_pair_sources_and_name_bad_lines() {
    common::setup();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_png_folder(root.join("in0"), &frames(4, 12, 12, 10)).unwrap();
    write_png_folder(root.join("out0"), &frames(4, 12, 12, 20)).unwrap();
    write_gif(root.join("in1.gif"), &frames(4, 12, 12, 30)).unwrap();
    write_gif(root.join("out1.gif"), &frames(4, 12, 12, 40)).unwrap();
    std::fs::write(
        root.join("manifest.jsonl"),
        "{\"video\": \"out0\", \"source\": \"in0\", \"instruction\": \"make it brighter\"}\n\n{\"path\": \"out1.gif\", \"source\": \"in1.gif\", \"text\": \"again\"}\n",
    )
    .unwrap();
    let src = FolderSource::open(root).unwrap();
    assert_eq!(src.len(), 2);
    assert!(src.has_source(0) && src.has_source(1));
    let ds = Dataset::new(Arc::new(src), spec(2, 1)).unwrap();
    let b = ds
        .batch_at(1, DataPosition::default(), 2, &Device::Cpu)
        .unwrap();
    let s = b.source.as_ref().unwrap();
    assert_eq!(s.dims(), b.video.dims());
    // Target and source are cut at the same frames and flipped together: red channel tags.
    for i in 0..2 {
        let tv = b
            .video
            .get(i)
            .unwrap()
            .get(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let sv = s
            .get(i)
            .unwrap()
            .get(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let (t, sr) = ((tv[40] + 1.0) * 127.5, (sv[40] + 1.0) * 127.5);
        assert!((t - sr - 10.0).abs() < 1.5, "target {t}, source {sr}");
    }
    std::fs::write(
        root.join("manifest.jsonl"),
        "{\"video\": \"out0\"}\n{\"caption\": 3}\n",
    )
    .unwrap();
    match FolderSource::open(root) {
        Err(Error::Malformed { reason, .. }) => assert!(reason.starts_with("line 2"), "{reason}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
    std::fs::write(
        root.join("manifest.jsonl"),
        "{\"video\": \"missing.mp4\"}\n",
    )
    .unwrap();
    assert!(matches!(
        FolderSource::open(root),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn flips_mirror_and_bad_specs_are_named() {
    let v = frames(2, 5, 3, 7);
    let f = flip_video(&v).unwrap();
    assert_eq!(f.frames()[0].get(4, 0).unwrap(), [255, 255, 255]);
    assert_eq!(flip_video(&f).unwrap(), v);
    let src: Arc<dyn ClipSource> = Arc::new(MemorySource::new(vec![(v, "x".into())]));
    for (s, field) in [
        (
            ClipSpec {
                frames: 0,
                ..spec(1, 1)
            },
            "clip.frames",
        ),
        (
            ClipSpec {
                stride: 0,
                ..spec(1, 1)
            },
            "clip.stride",
        ),
        (
            ClipSpec {
                flip: 1.5,
                ..spec(1, 1)
            },
            "clip.flip",
        ),
    ] {
        match Dataset::new(src.clone(), s) {
            Err(Error::BadConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected BadConfig {field}, got {other:?}"),
        }
    }
    // Every item too short: an error saying so.
    assert!(matches!(
        Dataset::new(src, spec(3, 2)),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn empty_or_missing_folders_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        FolderSource::open(dir.path()),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        FolderSource::open(dir.path().join("nope")),
        Err(Error::Io { .. })
    ));
}

#[cfg(not(feature = "ffmpeg"))]
#[test]
fn video_files_need_the_ffmpeg_feature() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.mp4"), b"not really").unwrap();
    match FolderSource::open(dir.path()) {
        Err(Error::FeatureDisabled { feature, .. }) => assert_eq!(feature, "ffmpeg"),
        other => panic!("expected FeatureDisabled, got {other:?}"),
    }
}

#[cfg(feature = "ffmpeg")]
#[test]
fn mp4_clips_are_the_decoded_frames() {
    use vidgen_video_io::sample;
    common::setup();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample::bunny_file().unwrap(), dir.path().join("bunny.mp4")).unwrap();
    std::fs::write(dir.path().join("bunny.txt"), "a rabbit").unwrap();
    let src = FolderSource::open(dir.path()).unwrap();
    assert_eq!(src.frame_count(0).unwrap(), sample::BUNNY_FRAMES);
    let all = vidgen_video_io::read_video(dir.path().join("bunny.mp4"), None).unwrap();
    for start in [0usize, 1, 17, 40] {
        let (v, _) = src.read(0, start, 4, 3).unwrap();
        for k in 0..4 {
            assert!(
                v.frames()[k] == all.frames()[start + 3 * k],
                "frame {} of a clip from {start} is not decoded frame {}",
                k,
                start + 3 * k
            );
        }
    }
    // A clip running past the end is an error, not a short clip.
    assert!(src.read(0, 45, 4, 3).is_err());
    let ds = Dataset::new(Arc::new(src), spec(4, 3)).unwrap();
    let b = ds
        .batch_at(0, DataPosition::default(), 2, &Device::Cpu)
        .unwrap();
    assert_eq!(b.video.dims(), &[2, 3, 4, 12, 12]);
    assert_eq!(b.captions, ["a rabbit", "a rabbit"]);
    assert!((b.fps[0] - sample::BUNNY_FPS / 3.0).abs() < 1e-9);
}
