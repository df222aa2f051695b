#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! PNG folders, GIF, grids, tensors: round trips and bad input.

use std::path::Path;

use candle_core::Device;
use proptest::prelude::*;
use vidgen_video_core::Error;
use vidgen_video_io::synth::{seeded_rng, MovingShapes, WorldConfig};
use vidgen_video_io::{
    decode_gif, decode_png, encode_gif, encode_png, read_gif, read_png, read_png_folder,
    tensor_to_videos, videos_to_tensor, write_gif, write_png_folder, Frame, GridStyle, PixelRange,
    Video,
};

fn synth_video(seed: u64) -> Video {
    MovingShapes::new(WorldConfig::new(48, 32, 6))
        .unwrap()
        .clip(&mut seeded_rng(seed))
        .unwrap()
        .video
}

#[test]
fn png_folder_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let v = synth_video(1);
    let paths = write_png_folder(dir.path().join("frames"), &v).unwrap();
    assert_eq!(paths.len(), 6);
    assert!(paths[0].ends_with("frame_000000.png"));
    let back = read_png_folder(dir.path().join("frames"), v.fps()).unwrap();
    assert_eq!(back, v);
}

#[test]
fn tensor_gif_tensor_is_exact_for_palette_safe_content() {
    let dir = tempfile::tempdir().unwrap();
    let videos = [synth_video(2), synth_video(3)];
    let x = videos_to_tensor(&videos, PixelRange::MinusOneToOne, &Device::Cpu).unwrap();
    assert_eq!(x.dims(), &[2, 3, 6, 32, 48]);
    for (i, v) in tensor_to_videos(&x, PixelRange::MinusOneToOne, 8.0)
        .unwrap()
        .iter()
        .enumerate()
    {
        let p = dir.path().join(format!("v{i}.gif"));
        write_gif(&p, v).unwrap();
        let back = read_gif(&p).unwrap();
        assert_eq!(back.frames(), videos[i].frames());
        // 8 fps -> delay round(12.5) = 13 cs -> 7.69 fps: GIF stores centiseconds.
        assert!((back.fps() - 100.0 / 13.0).abs() < 1e-9);
        let y = back
            .to_tensor(PixelRange::MinusOneToOne, &Device::Cpu)
            .unwrap();
        let diff = (y - x.get(i).unwrap().unsqueeze(0).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
    }
}

#[test]
fn comparison_strip_and_sheet_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (synth_video(4), synth_video(5), synth_video(6));
    let style = GridStyle::default();
    vidgen_video_io::grid::write_side_by_side_gif(dir.path().join("cmp.gif"), &[&a, &b, &c], style)
        .unwrap();
    let strip = read_gif(dir.path().join("cmp.gif")).unwrap();
    assert_eq!(
        (strip.width(), strip.height(), strip.len()),
        (3 * 48 + 2 * 2, 32, 6)
    );
    // The middle cell is video b, exactly.
    let f = &strip.frames()[3];
    assert_eq!(f.crop(50, 0, 48, 32).unwrap(), b.frames()[3]);
    assert_eq!(f.get(48, 5), Some([255, 255, 255]));
    vidgen_video_io::grid::write_contact_sheet_png(dir.path().join("sheet.png"), &[&a, &b], style)
        .unwrap();
    let sheet = read_png(dir.path().join("sheet.png")).unwrap();
    assert_eq!(
        (sheet.width(), sheet.height()),
        (6 * 48 + 5 * 2, 2 * 32 + 2)
    );
    assert_eq!(sheet.crop(50, 34, 48, 32).unwrap(), b.frames()[1]);
}

#[test]
fn missing_files_are_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    assert!(matches!(
        read_png(missing.join("a.png")),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        read_gif(missing.join("a.gif")),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        read_png_folder(&missing, 8.0),
        Err(Error::Io { .. })
    ));
}

#[test]
fn wrong_format_truncation_and_zero_frames_are_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fake.png");
    std::fs::write(&p, b"this is not an image at all").unwrap();
    assert!(matches!(read_png(&p), Err(Error::Malformed { .. })));
    let g = dir.path().join("fake.gif");
    std::fs::write(&g, b"GIF89a but then nothing useful").unwrap();
    assert!(matches!(read_gif(&g), Err(Error::Malformed { .. })));
    std::fs::write(&g, b"").unwrap();
    assert!(matches!(read_gif(&g), Err(Error::Malformed { .. })));

    // A PNG cut in half.
    let png = encode_png(&synth_video(7).frames()[0]).unwrap();
    let cut = &png[..png.len() / 2];
    assert!(matches!(
        decode_png(cut, Path::new("cut.png")),
        Err(Error::Malformed { .. })
    ));

    // A GIF cut inside its data: malformed, never a panic or a silent short video.
    let gif = encode_gif(&synth_video(8)).unwrap();
    let cut = &gif[..gif.len() / 2];
    assert!(matches!(
        decode_gif(cut, Path::new("cut.gif")),
        Err(Error::Malformed { .. })
    ));
    // Header and logical screen only, no image: zero frames.
    let zero = [&gif[..13], &[0x3B][..]].concat();
    match decode_gif(&zero, Path::new("zero.gif")) {
        Err(Error::Malformed { reason, .. }) => {
            assert!(reason.contains("zero frames") || !reason.is_empty())
        }
        other => panic!("expected Malformed, got {other:?}"),
    }

    // A screen descriptor asking for a 30000x30000 canvas (a fuzzing find): refused up front.
    let huge = [
        &b"GIF89a"[..],
        &[0x30, 0x75, 0x30, 0x75, 0x80, 0, 0], // 30000x30000, 2-colour global table
        &[0, 0, 0, 255, 255, 255],
        &[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0], // one 1x1 image
        &[0x02, 0x02, 0x44, 0x01, 0x00, 0x3B],
    ]
    .concat();
    match decode_gif(&huge, Path::new("huge.gif")) {
        Err(Error::Malformed { reason, .. }) => assert!(reason.contains("canvas"), "{reason}"),
        other => panic!("expected Malformed, got {other:?}"),
    }

    // An empty folder, and a folder with no PNG in it.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), b"hi").unwrap();
    match read_png_folder(&empty, 8.0) {
        Err(Error::Malformed { reason, .. }) => assert!(reason.contains("zero frames")),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn frames_of_different_sizes_in_a_folder_are_a_shape_error() {
    let dir = tempfile::tempdir().unwrap();
    vidgen_video_io::write_png(
        dir.path().join("a.png"),
        &Frame::filled(4, 4, [1, 2, 3]).unwrap(),
    )
    .unwrap();
    vidgen_video_io::write_png(
        dir.path().join("b.png"),
        &Frame::filled(5, 3, [1, 2, 3]).unwrap(),
    )
    .unwrap();
    match read_png_folder(dir.path(), 8.0) {
        Err(Error::ShapeMismatch {
            file: Some(f),
            expected,
            found,
            ..
        }) => {
            assert!(f.ends_with("b.png"));
            assert_eq!((expected, found), (vec![4, 4, 3], vec![3, 5, 3]));
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}

#[test]
fn odd_sizes_round_trip_through_png_and_gif() {
    let frames: Vec<Frame> = (0..3)
        .map(|k| {
            let data = (0..7 * 3 * 3)
                .map(|i| ((i * 5 + k * 40) % 200) as u8)
                .collect();
            Frame::new(7, 3, data).unwrap()
        })
        .collect();
    let v = Video::new(frames, 20.0).unwrap();
    let back = decode_gif(&encode_gif(&v).unwrap(), Path::new("odd.gif")).unwrap();
    assert_eq!(back, v);
    let f = decode_png(&encode_png(&v.frames()[1]).unwrap(), Path::new("odd.png")).unwrap();
    assert_eq!(f, v.frames()[1]);
}

#[test]
fn mp4_encode_rejects_odd_sizes_even_without_ffmpeg() {
    let v = Video::new(vec![Frame::filled(7, 4, [0, 0, 0]).unwrap()], 10.0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err =
        vidgen_video_io::write_mp4(dir.path().join("x.mp4"), &v, &Default::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

#[cfg(not(feature = "ffmpeg"))]
#[test]
fn video_files_need_the_ffmpeg_feature() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.mp4");
    std::fs::write(&p, b"....").unwrap();
    assert!(matches!(
        vidgen_video_io::VideoReader::open(&p),
        Err(Error::FeatureDisabled { .. })
    ));
    assert!(matches!(
        vidgen_video_io::probe(&p),
        Err(Error::FeatureDisabled { .. })
    ));
    let v = Video::new(vec![Frame::filled(8, 4, [0, 0, 0]).unwrap()], 10.0).unwrap();
    let err = vidgen_video_io::write_mp4(&p, &v, &Default::default()).unwrap_err();
    assert!(matches!(err, Error::FeatureDisabled { .. }));
    // A missing file is still reported as missing.
    assert!(matches!(
        vidgen_video_io::VideoReader::open(dir.path().join("no.mp4")),
        Err(Error::Io { .. })
    ));
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(64))]

    /// Arbitrary bytes: the readers return errors, never panic.
    #[test]
    fn readers_survive_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_png(&bytes, Path::new("r.png"));
        let _ = decode_gif(&bytes, Path::new("r.gif"));
        let mut gif = b"GIF89a".to_vec();
        gif.extend_from_slice(&bytes);
        let _ = decode_gif(&gif, Path::new("r.gif"));
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&bytes);
        let _ = decode_png(&png, Path::new("r.png"));
    }

    /// Valid files cut anywhere or with a byte flipped: errors or (for a cut at a frame
    /// boundary) fewer frames, never a panic.
    #[test]
    fn readers_survive_truncation_and_corruption(
        seed in 0u64..4, cut in 0.0f64..1.0, flip in 0.0f64..1.0, xor in 1u8..=255
    ) {
        let v = synth_video(seed);
        let gif = encode_gif(&v).unwrap();
        let n = (gif.len() as f64 * cut) as usize;
        if let Ok(back) = decode_gif(&gif[..n], Path::new("t.gif")) {
            prop_assert!(back.len() <= v.len());
        }
        let mut bad = gif.clone();
        let i = ((bad.len() - 1) as f64 * flip) as usize;
        bad[i] ^= xor;
        let _ = decode_gif(&bad, Path::new("c.gif"));
        let png = encode_png(&v.frames()[0]).unwrap();
        let n = (png.len() as f64 * cut) as usize;
        // Only the 12-byte IEND chunk may go missing without losing pixels.
        if n + 12 < png.len() {
            prop_assert!(decode_png(&png[..n], Path::new("t.png")).is_err());
        }
        let mut bad = png.clone();
        let i = ((bad.len() - 1) as f64 * flip) as usize;
        bad[i] ^= xor;
        let _ = decode_png(&bad, Path::new("c.png"));
    }
}

#[test]
fn frame_folders_are_read_in_natural_order() {
    // 1.png .. 12.png, frame k filled with grey level k: lexicographic order would read
    // 1, 10, 11, 12, 2, ...
    let dir = tempfile::tempdir().unwrap();
    for k in 1..=12u8 {
        vidgen_video_io::write_png(
            dir.path().join(format!("{k}.png")),
            &Frame::filled(2, 2, [k; 3]).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), b"not a frame").unwrap();
    let v = read_png_folder(dir.path(), 8.0).unwrap();
    let levels: Vec<u8> = v.frames().iter().map(|f| f.data()[0]).collect();
    assert_eq!(levels, (1..=12).collect::<Vec<u8>>());
    let paths = vidgen_video_io::sorted_frame_paths(dir.path(), &["PNG"]).unwrap();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[..3], ["1.png", "2.png", "3.png"]);
    assert_eq!(names.len(), 12);
    assert_eq!(
        vidgen_video_io::sorted_frame_paths(dir.path(), &[])
            .unwrap()
            .len(),
        13
    );
    assert!(matches!(
        vidgen_video_io::sorted_frame_paths(dir.path().join("missing"), &["png"]),
        Err(Error::Io { .. })
    ));
}

#[test]
fn corrupt_frames_in_a_folder_are_malformed_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let png = encode_png(&Frame::filled(3, 2, [9, 8, 7]).unwrap()).unwrap();
    std::fs::write(dir.path().join("1.png"), &png).unwrap();
    std::fs::write(dir.path().join("2.png"), &png[..png.len() / 2]).unwrap();
    match read_png_folder(dir.path(), 8.0) {
        Err(Error::Malformed { path, .. }) => assert!(path.ends_with("2.png"), "{path:?}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

/// Names built from a small alphabet (digits, letters, dot, underscore) so that digit runs and
/// ties on equal numbers (`01` vs `1`) are common.
fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("0"),
            Just("1"),
            Just("2"),
            Just("9"),
            Just("10"),
            Just("a"),
            Just("b"),
            Just("."),
            Just("_")
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    /// `natural_cmp` is a total order consistent with `==`: antisymmetric, transitive, and
    /// `Equal` only for equal strings; and numbers in the same frame compare as numbers.
    #[test]
    fn natural_cmp_is_a_consistent_total_order(a in name(), b in name(), c in name(),
                                               m in 0u64..100_000, n in 0u64..100_000) {
        use std::cmp::Ordering::*;
        use vidgen_video_io::natural_cmp;
        let ab = natural_cmp(&a, &b);
        prop_assert_eq!(ab, natural_cmp(&b, &a).reverse());
        prop_assert_eq!(ab == Equal, a == b);
        prop_assert_eq!(natural_cmp(&a, &a), Equal);
        let bc = natural_cmp(&b, &c);
        if ab != Greater && bc != Greater {
            prop_assert_ne!(natural_cmp(&a, &c), Greater, "{} {} {}", a, b, c);
        }
        let (x, y) = (format!("{a}_{m}.png"), format!("{a}_{n}.png"));
        prop_assert_eq!(natural_cmp(&x, &y), m.cmp(&n));
        // Sorting with it is deterministic whatever the input order.
        let mut v1 = vec![a.clone(), b.clone(), c.clone()];
        let mut v2 = vec![c.clone(), a.clone(), b.clone()];
        v1.sort_by(|p, q| natural_cmp(p, q));
        v2.sort_by(|p, q| natural_cmp(p, q));
        prop_assert_eq!(v1, v2);
    }
}

#[test]
fn non_finite_tensors_are_an_error_not_black_pixels() {
    use candle_core::Tensor;
    let mut data = vec![0.5f32; 3 * 2 * 2 * 2];
    data[5] = f32::NAN;
    let x = Tensor::from_vec(data.clone(), (1, 3, 2, 2, 2), &Device::Cpu).unwrap();
    match tensor_to_videos(&x, PixelRange::ZeroToOne, 8.0) {
        Err(Error::NonFinite {
            location, nan, inf, ..
        }) => {
            assert!(location.contains("tensor_to_videos"), "{location}");
            assert_eq!((nan, inf), (1, 0));
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    data[5] = f32::INFINITY;
    let x = Tensor::from_vec(data, (1, 3, 2, 2, 2), &Device::Cpu).unwrap();
    assert!(matches!(
        tensor_to_videos(&x, PixelRange::MinusOneToOne, 8.0),
        Err(Error::NonFinite { inf: 1, .. })
    ));
    // f16 and a strided (non-contiguous) view are checked too.
    let h = x
        .to_dtype(candle_core::DType::F16)
        .unwrap()
        .transpose(3, 4)
        .unwrap();
    assert!(matches!(
        tensor_to_videos(&h, PixelRange::ZeroToOne, 8.0),
        Err(Error::NonFinite { .. })
    ));
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(48))]

    /// The file entry points on arbitrary or damaged contents: a frame folder whose files are
    /// random bytes, valid PNGs with a byte flipped, or cut short; a `.gif` / `.png` file of
    /// random bytes. Errors (naming a file), never a panic.
    #[test]
    fn file_readers_survive_corrupt_files(
        junk in proptest::collection::vec(any::<u8>(), 0..256),
        flip in 0.0f64..1.0, xor in 1u8..=255, cut in 0.0f64..1.0, which in 0usize..3
    ) {
        let dir = tempfile::tempdir().unwrap();
        let good = encode_png(&Frame::filled(4, 3, [10, 20, 30]).unwrap()).unwrap();
        let mut flipped = good.clone();
        let i = ((flipped.len() - 1) as f64 * flip) as usize;
        flipped[i] ^= xor;
        let short = good[..(good.len() as f64 * cut) as usize].to_vec();
        let mut files = [good.clone(), good.clone(), good];
        files[which] = [junk.clone(), flipped, short][which].clone();
        for (k, bytes) in files.iter().enumerate() {
            std::fs::write(dir.path().join(format!("{}.png", k + 1)), bytes).unwrap();
        }
        match read_png_folder(dir.path(), 8.0) {
            Ok(v) => prop_assert!(v.len() == 3),
            Err(Error::Malformed { path, .. }) => {
                prop_assert!(path.starts_with(dir.path()), "{:?}", path)
            }
            Err(Error::ShapeMismatch { file, .. }) => prop_assert!(file.is_some()),
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
        let g = dir.path().join("x.gif");
        std::fs::write(&g, &junk).unwrap();
        let _ = read_gif(&g);
        let p = dir.path().join("x.png");
        std::fs::write(&p, &junk).unwrap();
        let _ = read_png(&p);
    }
}

/// The byte-level decoders on arbitrary bytes, every truncation of a valid file, and valid
/// files with bytes overwritten or inserted (seeded: a failure reproduces).
#[test]
fn png_and_gif_decoders_never_panic() {
    let v = synth_video(9);
    let png = encode_png(&v.frames()[0]).unwrap();
    video_testkit::assert_parser_never_panics("decode_png", &png, |b| {
        decode_png(b, Path::new("p.png"))
    });
    let small = v.slice(0, 2).unwrap();
    let gif = encode_gif(&small).unwrap();
    video_testkit::assert_parser_never_panics("decode_gif", &gif, |b| {
        decode_gif(b, Path::new("g.gif"))
    });
}
