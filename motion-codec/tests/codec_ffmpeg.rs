#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Codec motion vectors through FFmpeg (`ffmpeg` feature).
#![cfg(feature = "ffmpeg")]

use std::path::PathBuf;

use candle_core::Device;
use vidgen_motion_codec::*;
use vidgen_video_io::{Frame, Video};

fn tex(x: f32, y: f32) -> u8 {
    let v = 128.0
        + 50.0 * (0.21 * x).sin() * (0.17 * y).cos()
        + 35.0 * (0.09 * (x + 1.7 * y)).sin()
        + 25.0 * (0.05 * x - 0.08 * y).cos();
    v.clamp(0.0, 255.0) as u8
}

/// A textured pattern moving `(vx, vy)` px per frame, grey RGB.
fn moving_pattern(w: u32, h: u32, n: usize, vx: i32, vy: i32) -> Video {
    let frames = (0..n)
        .map(|t| {
            let (sx, sy) = ((vx * t as i32) as f32, (vy * t as i32) as f32);
            let data = (0..(w * h) as usize)
                .flat_map(|i| {
                    let y = tex((i % w as usize) as f32 - sx, (i / w as usize) as f32 - sy);
                    [y, y, y]
                })
                .collect();
            Frame::new(w, h, data).unwrap()
        })
        .collect();
    Video::new(frames, 6.0).unwrap()
}

fn asset() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../video-io/assets/bigbuckbunny_320x180_50f.mp4")
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
fn mpeg4_vectors_agree_with_known_motion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pattern.mp4");
    let (vx, vy) = (2, -1);
    encode_mpeg4(&moving_pattern(160, 128, 12, vx, vy), &path, 6.0, 2, 12).unwrap();
    let m = read_codec_motion(&path, 16, None).unwrap();
    assert_eq!(m.fields.len(), 12);
    let types = m.frame_types();
    assert_eq!(types[0], FrameType::I);
    let mut checked = 0;
    for f in &m.fields[1..] {
        assert_ne!(f.frame_type, Some(FrameType::I));
        let v = f.vectors();
        assert!(
            v.len() > f.rows * f.cols / 2,
            "{} valid of {}",
            v.len(),
            f.rows * f.cols
        );
        let (mx, my) = (
            median(v.iter().map(|p| p.0).collect()),
            median(v.iter().map(|p| p.1).collect()),
        );
        assert_eq!((mx, my), (vx as f32, vy as f32), "{:?}", f.frame_type);
        let g = summarize_field(f, None, &GlobalMotionConfig::default()).unwrap();
        assert_eq!(g.direction, direction_of(vx as f32, vy as f32));
        checked += 1;
    }
    assert_eq!(checked, 11);
    // Block matching on the decoded frames agrees with the codec.
    let bm = estimate_motion(&m.luma[0], &m.luma[1], &BlockMatchConfig::default()).unwrap();
    let v = bm.vectors();
    assert_eq!(median(v.iter().map(|p| p.0).collect()), vx as f32);
}

#[test]
fn real_clip_vectors_reconstruction_and_lavit_clip() {
    let m = read_codec_motion(asset(), 16, None).unwrap();
    assert_eq!(m.fields.len(), 50);
    let types = m.frame_types();
    assert_eq!(types[0], FrameType::I);
    let (w, h) = (m.luma[0].width(), m.luma[0].height());
    let (cw, ch) = (w / 16 * 16, h / 16 * 16);
    let crop = |l: &LumaFrame| l.crop(cw, ch).unwrap();
    let (mut codec_psnr, mut zero_psnr, mut bm_psnr, mut n) = (0.0, 0.0, 0.0, 0);
    for t in 1..m.luma.len() {
        let f = &m.fields[t];
        if f.frame_type != Some(FrameType::P) {
            continue;
        }
        // Codec vectors may reference frames further back; use the previous frame as the
        // reference, as the LaVIT baseline detokenizer does.
        let mut cf = f.clone();
        cf.rows = ch / 16;
        cf.data = [
            &f.data[..cf.rows * f.cols],
            &f.data[f.rows * f.cols..f.rows * f.cols + cf.rows * f.cols],
        ]
        .concat();
        cf.valid.truncate(cf.rows * f.cols);
        let (prev, cur) = (crop(&m.luma[t - 1]), crop(&m.luma[t]));
        codec_psnr += psnr(&compensate_blocks(&prev, &cf).unwrap(), &cur).unwrap();
        zero_psnr += psnr(&prev, &cur).unwrap();
        let bm = estimate_motion(&prev, &cur, &BlockMatchConfig::default()).unwrap();
        bm_psnr += psnr(&compensate_blocks(&prev, &bm).unwrap(), &cur).unwrap();
        n += 1;
    }
    assert!(n > 0);
    let (codec_psnr, zero_psnr, bm_psnr) = (
        codec_psnr / n as f64,
        zero_psnr / n as f64,
        bm_psnr / n as f64,
    );
    println!(
        "bigbuckbunny {w}x{h}, {n} P-frames: reconstruction PSNR codec-vector block copy {codec_psnr:.2} dB, \
         block matching {bm_psnr:.2} dB, no motion {zero_psnr:.2} dB"
    );
    assert!(bm_psnr >= zero_psnr);
    // LaVIT preprocessing of the whole clip and one 24-frame tokenizer clip from the I-frame.
    let lm = preprocess(&m.vectors, &LavitConfig::default()).unwrap();
    let clips = lm.tokenizer_clips(&Device::Cpu).unwrap();
    assert_eq!(clips[0].0, 0);
    assert_eq!(clips[0].1.dims(), &[1, 2, 24, 20, 36]);
    let tok = MotionTokenizer::random(
        &MotionTokenizerConfig {
            hidden: 32,
            heads: 2,
            ..Default::default()
        },
        0,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(tok.tokenize(&clips[0].1).unwrap().dims4(), (1, 3, 5, 9));
}

#[test]
fn real_clip_reencoded_to_mpeg4_at_6fps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bbb_6fps.mp4");
    let video = vidgen_video_io::read_video(asset(), None).unwrap();
    encode_mpeg4(&video, &path, 6.0, 4, 12).unwrap();
    let info = vidgen_video_io::probe(&path).unwrap();
    assert_eq!(info.codec, "mpeg4");
    assert!((info.fps - 6.0).abs() < 1e-6);
    let m = read_codec_motion(&path, 16, None).unwrap();
    assert!(
        m.fields.len() >= 10 && m.fields.len() <= 14,
        "{}",
        m.fields.len()
    );
    assert_eq!(m.frame_types()[0], FrameType::I);
    assert!(m.fields.iter().skip(1).any(|f| !f.vectors().is_empty()));
}

#[test]
fn corrupt_truncated_empty_and_missing_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(asset()).unwrap();
    let trunc = dir.path().join("trunc.mp4");
    std::fs::write(&trunc, &bytes[..bytes.len() / 20]).unwrap();
    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(&garbage, b"this is not a video at all, just bytes...").unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    for p in [&trunc, &garbage, &empty] {
        let e = read_codec_motion(p, 16, None).unwrap_err();
        assert!(
            matches!(e, vidgen_video_core::Error::Malformed { .. }),
            "{}: {e}",
            p.display()
        );
    }
    let e = read_codec_motion(dir.path().join("missing.mp4"), 16, None).unwrap_err();
    assert!(matches!(e, vidgen_video_core::Error::Io { .. }), "{e}");
    // Zero frames requested is the caller's mistake, not a malformed file.
    let e = read_codec_motion(asset(), 16, Some(0)).unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::InvalidArgument { .. }),
        "{e}"
    );
}
