#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! FFmpeg decode / encode (run with `--features ffmpeg`).
#![cfg(feature = "ffmpeg")]

use vidgen_video_core::Error;
use vidgen_video_io::sample::{bunny_file, BUNNY_FPS, BUNNY_FRAMES, BUNNY_HEIGHT, BUNNY_WIDTH};
use vidgen_video_io::synth::{seeded_rng, Action, Direction, MovingShapes, WorldConfig};
use vidgen_video_io::{
    count_frames, probe, read_video, write_mp4, write_video, EncodeOptions, Video, VideoCodec,
    VideoReader,
};

fn psnr(a: &Video, b: &Video) -> f64 {
    let mut se = 0f64;
    let mut n = 0usize;
    for (fa, fb) in a.frames().iter().zip(b.frames()) {
        for (x, y) in fa.data().iter().zip(fb.data()) {
            let d = *x as f64 - *y as f64;
            se += d * d;
            n += 1;
        }
    }
    10.0 * (255.0f64 * 255.0 / (se / n as f64).max(1e-12)).log10()
}

#[test]
fn sample_clip_has_the_documented_size_and_length() {
    let path = bunny_file().unwrap();
    let info = probe(&path).unwrap();
    assert_eq!((info.width, info.height), (BUNNY_WIDTH, BUNNY_HEIGHT));
    assert_eq!(info.fps, BUNNY_FPS);
    assert_eq!(info.frame_count, Some(BUNNY_FRAMES as u64));
    assert!(info.frame_count_is_exact);
    assert!((info.duration.unwrap() - 2.0).abs() < 1e-6);
    assert_eq!(info.codec, "h264");
    assert_eq!(count_frames(&path).unwrap(), BUNNY_FRAMES as u64);
    let v = vidgen_video_io::sample::bunny().unwrap();
    assert_eq!(v.len(), BUNNY_FRAMES);
    assert_eq!(
        (v.width(), v.height(), v.fps()),
        (BUNNY_WIDTH, BUNNY_HEIGHT, BUNNY_FPS)
    );
    // Real content: frames differ and are not flat.
    assert_ne!(v.frames()[0], v.frames()[49]);
}

#[test]
fn streaming_decode_gives_timestamps_and_seeks() {
    let path = bunny_file().unwrap();
    let all = read_video(&path, None).unwrap();
    let mut r = VideoReader::open(&path).unwrap();
    let mut times = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        times.push(f.time.unwrap());
    }
    assert_eq!(times.len(), BUNNY_FRAMES);
    for (k, t) in times.iter().enumerate() {
        assert!((t - k as f64 / BUNNY_FPS).abs() < 1e-6, "frame {k} at {t}");
    }
    // Seek back into the middle (not a keyframe: 1.08 s = frame 27; keyframes every 25).
    r.seek(1.08).unwrap();
    let f = r.next_frame().unwrap().unwrap();
    assert!((f.time.unwrap() - 1.08).abs() < 1e-6, "{:?}", f.time);
    assert_eq!(f.frame, all.frames()[27]);
    let rest: Vec<_> = r.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(rest.len(), BUNNY_FRAMES - 28);
    r.seek(0.0).unwrap();
    assert_eq!(r.next().unwrap().unwrap(), all.frames()[0]);
    r.seek(100.0).unwrap();
    assert!(r.next_frame().unwrap().is_none());
    assert!(r.seek(-1.0).is_err());
    // A bounded read takes only what it needs.
    assert_eq!(read_video(&path, Some(5)).unwrap().len(), 5);
}

#[test]
fn encode_then_decode_keeps_length_size_and_content() {
    let dir = tempfile::tempdir().unwrap();
    let world = MovingShapes::new(WorldConfig::new(64, 48, 12)).unwrap();
    let clip = world
        .clip_with_action(
            Action::Translate {
                direction: Direction::DownRight,
                speed: 2,
            },
            &mut seeded_rng(1),
        )
        .unwrap();
    for (name, codec, quality, min_psnr) in [
        ("h264.mp4", VideoCodec::H264, 10, 30.0),
        ("mpeg4.mp4", VideoCodec::Mpeg4, 2, 25.0),
        ("h264.mkv", VideoCodec::H264, 10, 30.0),
        ("mpeg4.avi", VideoCodec::Mpeg4, 2, 25.0),
        ("vp9.webm", VideoCodec::Vp9, 10, 28.0),
    ] {
        let p = dir.path().join(name);
        let opts = EncodeOptions {
            codec,
            quality,
            gop: 6,
        };
        let used = if name.ends_with(".mp4") {
            write_mp4(&p, &clip.video, &opts).unwrap()
        } else {
            write_video(&p, &clip.video, &opts).unwrap()
        };
        assert_eq!(used, codec, "{name}");
        let back = read_video(&p, None).unwrap();
        assert_eq!(back.len(), 12, "{name}");
        assert_eq!((back.width(), back.height()), (64, 48), "{name}");
        assert!(
            (back.fps() - 8.0).abs() < 1e-6,
            "{name}: fps {}",
            back.fps()
        );
        let q = psnr(&clip.video, &back);
        println!(
            "encode {name}: psnr {q:.1} dB, {} bytes",
            std::fs::metadata(&p).unwrap().len()
        );
        assert!(q > min_psnr, "{name}: psnr {q}");
    }
}

#[test]
fn bad_video_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Missing.
    let missing = dir.path().join("missing.mp4");
    assert!(matches!(VideoReader::open(&missing), Err(Error::Io { .. })));
    assert!(matches!(count_frames(&missing), Err(Error::Io { .. })));
    // Not a video.
    let text = dir.path().join("notes.mp4");
    std::fs::write(
        &text,
        "just some text, certainly not a video container\n".repeat(50),
    )
    .unwrap();
    assert!(matches!(
        VideoReader::open(&text),
        Err(Error::Malformed { .. })
    ));
    // An image is a container FFmpeg reads, but a PNG with no... it is a 1-frame video.
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        VideoReader::open(&empty),
        Err(Error::Malformed { .. })
    ));
    // Truncated: the header only (moov is at the front) gives zero frames; cuts anywhere give
    // fewer frames or a Malformed error, never a panic.
    let bytes = std::fs::read(bunny_file().unwrap()).unwrap();
    for frac in [0.02, 0.05, 0.1, 0.3, 0.5, 0.9] {
        let p = dir.path().join(format!("cut{frac}.mp4"));
        std::fs::write(&p, &bytes[..(bytes.len() as f64 * frac) as usize]).unwrap();
        match read_video(&p, None) {
            Ok(v) => assert!(v.len() < BUNNY_FRAMES, "cut {frac}: {} frames", v.len()),
            Err(Error::Malformed { reason, .. }) => println!("cut {frac}: {reason}"),
            Err(e) => panic!("cut {frac}: unexpected error {e}"),
        }
    }
    let tiny = dir.path().join("tiny.mp4");
    std::fs::write(&tiny, &bytes[..64]).unwrap();
    assert!(matches!(
        read_video(&tiny, None),
        Err(Error::Malformed { .. })
    ));
    // Odd sizes cannot be encoded as yuv420p; a missing folder is an I/O error.
    let odd = MovingShapes::new(WorldConfig::new(33, 32, 2))
        .unwrap()
        .clip(&mut seeded_rng(0))
        .unwrap();
    let err = write_mp4(dir.path().join("odd.mp4"), &odd.video, &Default::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    let even = odd.video.center_crop(32, 32).unwrap();
    let err = write_mp4(
        dir.path().join("no/such/dir.mp4"),
        &even,
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let err = write_video(dir.path().join("x.unknownext"), &even, &Default::default()).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

#[test]
fn raw_frames_carry_motion_vectors_when_asked() {
    let opts = vidgen_video_io::DecodeOptions {
        threads: 1,
        export_motion_vectors: true,
    };
    let mut r = VideoReader::open_with(bunny_file().unwrap(), &opts).unwrap();
    let mut with_mvs = 0;
    while let Some((raw, _t)) = r.next_raw().unwrap() {
        if raw
            .side_data(vidgen_video_io::ffmpeg_next::frame::side_data::Type::MotionVectors)
            .is_some()
        {
            with_mvs += 1;
        }
    }
    // Every frame but the two keyframes (0 and 25) is predicted.
    assert!(
        with_mvs >= BUNNY_FRAMES - 2,
        "{with_mvs} frames with motion vectors"
    );
}

#[test]
fn seeking_far_past_the_end_ends_the_iterator() {
    // Times whose pts overflow i64 used to overflow `start_pts + ticks` (a panic in debug, a
    // wrap to a time near the start in release); each now simply ends the iterator. MPEG-TS
    // streams start at a positive pts (1.4 s), which is what made the sum overflow.
    let dir = tempfile::tempdir().unwrap();
    let ts = dir.path().join("clip.ts");
    let clip = MovingShapes::new(WorldConfig::new(32, 32, 6))
        .unwrap()
        .clip(&mut seeded_rng(1))
        .unwrap();
    write_video(&ts, &clip.video, &EncodeOptions::default()).unwrap();
    for path in [bunny_file().unwrap(), ts] {
        seek_far(&path);
    }
}

fn seek_far(path: &std::path::Path) {
    let first = read_video(path, Some(1)).unwrap().frames()[0].clone();
    let mut r = VideoReader::open(path).unwrap();
    for s in [2.5, 100.0, 1e9, 1e15, 7.3e14, 1e20, 1e300, f64::MAX] {
        r.seek(s).unwrap_or_else(|e| panic!("seek({s}): {e}"));
        assert!(r.next_frame().unwrap().is_none(), "seek({s}) gave a frame");
        assert!(r.next().is_none());
        // And back: the reader is still usable.
        r.seek(0.0).unwrap();
        let again = r
            .next()
            .unwrap_or_else(|| panic!("{}: no frame after seek({s}) then seek(0)", path.display()));
        assert_eq!(again.unwrap(), first, "{}: after seek({s})", path.display());
    }
    for bad in [f64::INFINITY, f64::NAN, -0.5] {
        assert!(matches!(r.seek(bad), Err(Error::InvalidArgument { .. })));
    }
}

#[test]
fn zero_frames_requested_is_an_invalid_argument() {
    let path = bunny_file().unwrap();
    let e = read_video(&path, Some(0)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let mut r = VideoReader::open(&path).unwrap();
    let e = r.read_to_video(Some(0)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    // Nothing was consumed.
    assert!(r.next_frame().unwrap().unwrap().time.unwrap().abs() < 1e-9);
}

#[test]
fn seeking_in_mpeg_ts_lands_on_the_requested_frame() {
    // MPEG-TS has no index: FFmpeg's seek lands past the only keyframe of this clip and the
    // decoder then yields nothing. The reader notices and decodes from the start instead.
    let dir = tempfile::tempdir().unwrap();
    let ts = dir.path().join("clip.ts");
    let clip = MovingShapes::new(WorldConfig::new(32, 32, 6))
        .unwrap()
        .clip(&mut seeded_rng(2))
        .unwrap();
    write_video(&ts, &clip.video, &EncodeOptions::default()).unwrap();
    let all = read_video(&ts, None).unwrap();
    assert_eq!(all.len(), 6);
    let mut r = VideoReader::open(&ts).unwrap();
    for (s, k) in [(0.0, 0), (0.3, 3), (0.1, 1), (0.625, 5), (0.0, 0)] {
        r.seek(s).unwrap();
        let f = r.next_frame().unwrap().unwrap();
        assert!(
            (f.time.unwrap() - k as f64 / 8.0).abs() < 1e-6,
            "seek({s}): {:?}",
            f.time
        );
        assert_eq!(f.frame, all.frames()[k], "seek({s})");
        assert_eq!(r.by_ref().count(), 5 - k, "seek({s}): frames after");
    }
}
