#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! LaVIT preprocessing, the motion tokenizer, the side-data parser.

use candle_core::{Device, Tensor};
use vidgen_motion_codec::*;
use vidgen_video_core::Codec;

fn bv(x: i32, y: i32, dx: f32, dy: f32) -> BlockVector {
    BlockVector {
        dst_x: x,
        dst_y: y,
        w: 16,
        h: 16,
        dx,
        dy,
    }
}

#[test]
fn pooled_grid_normalises_maxpools_and_zero_fills() {
    let cfg = LavitConfig::default();
    let fv = FrameVectors {
        width: 64,
        height: 32,
        frame_type: FrameType::P,
        vectors: vec![
            bv(8, 8, 6.4, -3.2),
            bv(12, 4, -6.4, 3.2), // same cell: max per channel
            bv(40, 24, 0.0, 0.0),
            bv(1000, 1000, 6.4, 6.4), // clamped into the last cell
        ],
    };
    let (gh, gw, g) = pooled_grid(&fv, &cfg).unwrap();
    assert_eq!((gh, gw), (2, 4));
    let nx = 6.4 / 64.0 / cfg.std[0];
    let ny = 3.2 / 32.0 / cfg.std[1];
    assert!((g[0] - nx).abs() < 1e-6 && (g[8] - ny).abs() < 1e-6);
    assert_eq!(g[1], 0.0); // missing → 0
    assert_eq!(g[4 + 2], 0.0); // (1, 2): a zero vector
    assert!((g[7] - nx).abs() < 1e-6); // clamped one
}

#[test]
fn bicubic_matches_torch_properties() {
    // Constant stays constant; a linear ramp upsampled keeps its mean and monotonicity.
    let c = bicubic_resize(&[2.5; 6], 2, 3, 20, 36).unwrap();
    assert!(c.iter().all(|v| (v - 2.5).abs() < 1e-5));
    // PyTorch's upsample_bicubic2d (A = -0.75, align_corners=False, border-clamped taps) of
    // [0, 1] to 4 samples, worked by hand from its coefficients:
    // out[0] = c2(1.25) = -0.10546875, out[1] = c1(0.75) + c2(1.75) = 0.2265625, ...
    let r = bicubic_resize(&[0.0, 1.0], 1, 2, 1, 4).unwrap();
    let want = [-0.105_468_75f64, 0.226_562_5, 0.773_437_5, 1.105_468_75];
    for k in 0..4 {
        assert!((r[k] as f64 - want[k]).abs() < 1e-6, "{r:?}");
    }
}

#[test]
fn preprocess_interpolates_i_frames_and_cuts_clips() {
    let cfg = LavitConfig::default();
    let mut frames = Vec::new();
    for t in 0..30 {
        let ft = if t % 12 == 0 {
            FrameType::I
        } else {
            FrameType::P
        };
        let vectors = if ft == FrameType::I {
            vec![]
        } else {
            (0..4)
                .flat_map(|r| (0..8).map(move |c| bv(c * 16 + 8, r * 16 + 8, t as f32, 0.0)))
                .collect()
        };
        frames.push(FrameVectors {
            width: 128,
            height: 64,
            frame_type: ft,
            vectors,
        });
    }
    let m = preprocess(&frames, &cfg).unwrap();
    let t = m.to_tensor(&Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[2, 30, 20, 36]);
    let v = |frame: usize| -> f32 {
        t.get(0)
            .unwrap()
            .get(frame)
            .unwrap()
            .get(10)
            .unwrap()
            .get(18)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let unit = 1.0 / 128.0 / cfg.std[0];
    assert!((v(5) - 5.0 * unit).abs() < 1e-4);
    assert!((v(12) - 12.0 * unit).abs() < 1e-4, "mean of 11 and 13"); // I-frame
    assert!(
        (v(0) - 1.0 * unit).abs() < 1e-4,
        "first I-frame copies frame 1"
    );
    let clips = m.tokenizer_clips(&Device::Cpu).unwrap();
    // I-frames at 0, 12, 24: clips of 24 start at 0 only (12 overlaps, 24 has 6 frames left).
    assert_eq!(clips.len(), 1);
    assert_eq!(clips[0].0, 0);
    assert_eq!(clips[0].1.dims(), &[1, 2, 24, 20, 36]);
    let c5 = clips[0]
        .1
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .get(5)
        .unwrap()
        .get(10)
        .unwrap()
        .get(18)
        .unwrap();
    assert!(
        (c5.to_scalar::<f32>().unwrap() - 0.5 * unit).abs() < 1e-5,
        "÷10"
    );
}

fn small_cfg() -> MotionTokenizerConfig {
    MotionTokenizerConfig {
        hidden: 32,
        heads: 2,
        ..Default::default()
    }
}

#[test]
fn tokenizer_gives_135_tokens_and_round_trips_through_safetensors() {
    let cfg = small_cfg();
    let dev = Device::Cpu;
    let tok = MotionTokenizer::random(&cfg, 3, &dev).unwrap();
    assert_eq!(cfg.code_dims(), (3, 5, 9));
    let x = Tensor::randn(0f32, 0.3, (2, 2, 24, 20, 36), &dev).unwrap();
    let ids = tok.encode(&x).unwrap();
    assert_eq!(ids.dims4(), (2, 3, 5, 9));
    assert_eq!(ids.tokens_per_frame() * 3, 135);
    ids.check_vocab(1024).unwrap();
    let y = tok.decode(&ids).unwrap();
    assert_eq!(y.dims(), &[2, 2, 24, 20, 36]);
    let s = tok.strides();
    assert_eq!((s.temporal, s.spatial), (8, 4));
    // Seeded: the same seed gives the same tokens.
    let again = MotionTokenizer::random(&cfg, 3, &dev)
        .unwrap()
        .encode(&x)
        .unwrap();
    assert_eq!(
        ids.ids().flatten_all().unwrap().to_vec1::<u32>().unwrap(),
        again.ids().flatten_all().unwrap().to_vec1::<u32>().unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    let (loaded, report) =
        MotionTokenizer::from_pretrained(dir.path(), candle_core::DType::F32, &dev).unwrap();
    assert!(report.is_clean() && report.unused.is_empty(), "{report}");
    // The parameter count of this configuration before the tokenizer moved to video-nn.
    assert_eq!(tok.num_parameters(), 417_890);
    assert_eq!(loaded.num_parameters(), tok.num_parameters());
    let z0 = tok.encode_continuous(&x).unwrap();
    let z1 = loaded.encode_continuous(&x).unwrap();
    let diff = (z0 - z1)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);
    // Wrong input shape and a corrupt checkpoint are typed errors.
    assert!(tok
        .encode(&Tensor::zeros((1, 2, 8, 20, 36), candle_core::DType::F32, &dev).unwrap())
        .is_err());
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    assert!(MotionTokenizer::from_pretrained(dir.path(), candle_core::DType::F32, &dev).is_err());
    let bad = MotionTokenizerConfig {
        heads: 3,
        ..small_cfg()
    };
    assert!(matches!(
        MotionTokenizer::random(&bad, 0, &dev),
        Err(vidgen_video_core::Error::BadConfig { .. })
    ));
}

#[test]
fn side_data_parser() {
    let mut bytes = vec![0u8; 2 * AV_MOTION_VECTOR_SIZE];
    let put = |b: &mut [u8], o: usize, v: &[u8]| b[o..o + v.len()].copy_from_slice(v);
    put(&mut bytes, 0, &(-1i32).to_ne_bytes());
    bytes[4] = 16;
    bytes[5] = 16;
    put(&mut bytes, 10, &24i16.to_ne_bytes());
    put(&mut bytes, 12, &8i16.to_ne_bytes());
    put(&mut bytes, 24, &(-6i32).to_ne_bytes()); // src − dst = −3 px (half-pel units)
    put(&mut bytes, 28, &4i32.to_ne_bytes());
    put(&mut bytes, 32, &2u16.to_ne_bytes());
    let v = parse_motion_vectors(&bytes).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].displacement(), Some((3.0, -2.0)));
    assert_eq!(v[1].displacement(), None); // zero scale
    let f = field_from_vectors(&v, 64, 32, 16, FrameType::P).unwrap();
    assert_eq!(f.get(0, 1), Some((3.0, -2.0)));
    assert!(f.valid[1] && !f.valid[0]);
    assert!(parse_motion_vectors(&bytes[..39]).is_err());
    assert!(field_from_vectors(&v, 8, 8, 16, FrameType::P).is_err());
}

#[test]
fn codec_functions_without_ffmpeg_say_so() {
    if vidgen_video_io::FFMPEG_ENABLED {
        return;
    }
    let err = read_codec_motion("x.mp4", 16, None).unwrap_err();
    assert!(
        matches!(err, vidgen_video_core::Error::FeatureDisabled { .. }),
        "{err}"
    );
}

#[test]
fn bicubic_resize_refuses_empty_sizes_and_short_buffers() {
    use vidgen_video_core::Error;
    for (h, w, oh, ow) in [(0, 3, 4, 4), (2, 0, 4, 4), (2, 3, 0, 4), (2, 3, 4, 0)] {
        let src = vec![1.0; h * w];
        assert!(
            matches!(
                bicubic_resize(&src, h, w, oh, ow),
                Err(Error::InvalidArgument { .. })
            ),
            "{h}x{w} → {oh}x{ow}"
        );
    }
    assert!(matches!(
        bicubic_resize(&[1.0; 5], 2, 3, 4, 4),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        bicubic_resize(&[], 2, 3, 4, 4),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        bicubic_resize(&[1.0], usize::MAX, 2, 1, 1),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn tokenizer_clips_refuses_a_type_list_of_the_wrong_length() {
    let cfg = LavitConfig {
        clip_len: 2,
        ..LavitConfig::default()
    };
    let m = LavitMotion {
        data: vec![0.0; 2 * 4 * cfg.out_h * cfg.out_w],
        frames: 4,
        types: vec![FrameType::I], // one type for four frames (indexing past it panicked)
        config: cfg,
    };
    let e = m.tokenizer_clips(&Device::Cpu).unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::InvalidArgument { .. }),
        "{e}"
    );
    let m = LavitMotion {
        types: vec![FrameType::P; 4],
        data: vec![0.0; 7], // short data: a typed error too
        ..m
    };
    assert!(m.tokenizer_clips(&Device::Cpu).is_err());
    let m = LavitMotion {
        data: vec![0.0; 2 * 4 * cfg.out_h * cfg.out_w],
        ..m
    };
    assert_eq!(m.tokenizer_clips(&Device::Cpu).unwrap().len(), 2);
}

#[test]
fn zero_frames_requested_is_an_invalid_argument_with_or_without_ffmpeg() {
    let e = read_codec_motion("never-opened.mp4", 16, Some(0)).unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::InvalidArgument { .. }),
        "{e}"
    );
    let e = read_codec_motion("never-opened.mp4", 0, None).unwrap_err();
    assert!(
        matches!(e, vidgen_video_core::Error::InvalidArgument { .. }),
        "{e}"
    );
}

#[test]
fn preprocessing_refuses_absurd_frame_sizes() {
    let fv = FrameVectors {
        width: usize::MAX,
        height: 64,
        frame_type: FrameType::P,
        vectors: vec![bv(3, 3, 1.0, 1.0)],
    };
    assert!(pooled_grid(&fv, &LavitConfig::default()).is_err());
    assert!(preprocess(&[fv], &LavitConfig::default()).is_err());
}

/// One `AVMotionVector` as FFmpeg lays it out (native byte order, 40 bytes).
fn encode_mv(v: &RawMotionVector) -> Vec<u8> {
    let mut b = vec![0u8; AV_MOTION_VECTOR_SIZE];
    b[0..4].copy_from_slice(&v.source.to_ne_bytes());
    b[4] = v.w;
    b[5] = v.h;
    b[6..8].copy_from_slice(&v.src_x.to_ne_bytes());
    b[8..10].copy_from_slice(&v.src_y.to_ne_bytes());
    b[10..12].copy_from_slice(&v.dst_x.to_ne_bytes());
    b[12..14].copy_from_slice(&v.dst_y.to_ne_bytes());
    b[16..24].copy_from_slice(&v.flags.to_ne_bytes());
    b[24..28].copy_from_slice(&v.motion_x.to_ne_bytes());
    b[28..32].copy_from_slice(&v.motion_y.to_ne_bytes());
    b[32..34].copy_from_slice(&v.motion_scale.to_ne_bytes());
    b
}

/// The side-data parser, grid placement and preprocessing on arbitrary bytes, truncations and
/// byte edits of a valid record array (seeded).
#[test]
fn side_data_never_panics_on_mutations_of_a_valid_sample() {
    let sample: Vec<u8> = (0..3)
        .flat_map(|k| {
            encode_mv(&RawMotionVector {
                source: -1,
                w: 16,
                h: 16,
                src_x: 8 + 16 * k,
                src_y: 8,
                dst_x: 8 + 16 * k,
                dst_y: 8,
                flags: 0,
                motion_x: 3,
                motion_y: -2,
                motion_scale: 2,
            })
        })
        .collect();
    video_testkit::assert_parser_never_panics("AVMotionVector side data", &sample, |b| {
        if let Ok(v) = parse_motion_vectors(b) {
            let _ = field_from_vectors(&v, 64, 48, 16, FrameType::P);
            let fv = frame_vectors(&v, 64, 48, FrameType::P);
            let _ = preprocess(&[fv], &LavitConfig::default());
        }
    });
}

/// `config.json` of the motion tokenizer: parse + validate never panics, on anything.
#[test]
fn tokenizer_config_never_panics() {
    let sample = serde_json::to_string(&MotionTokenizerConfig::default()).unwrap();
    video_testkit::assert_config_never_panics(&sample, |b| {
        let cfg: MotionTokenizerConfig = vidgen_video_core::loading::parse_config(b, None)?;
        cfg.validate()?;
        let _ = cfg.code_dims();
        Ok::<_, vidgen_video_core::Error>(cfg)
    });
}

mod side_data_props {
    use super::*;
    use proptest::prelude::*;

    fn raw_mv() -> impl Strategy<Value = RawMotionVector> {
        (
            (any::<i32>(), any::<u8>(), any::<u8>()),
            (any::<i16>(), any::<i16>(), any::<i16>(), any::<i16>()),
            (any::<u64>(), any::<i32>(), any::<i32>(), any::<u16>()),
        )
            .prop_map(
                |((source, w, h), (src_x, src_y, dst_x, dst_y), (flags, mx, my, scale))| {
                    RawMotionVector {
                        source,
                        w,
                        h,
                        src_x,
                        src_y,
                        dst_x,
                        dst_y,
                        flags,
                        motion_x: mx,
                        motion_y: my,
                        motion_scale: scale,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(video_testkit::proptest_config(256))]

        /// Arbitrary bytes: the side-data parser errs exactly when the length is not a whole
        /// number of records, and the grid placement and LaVIT preprocessing of whatever it
        /// parsed never panic.
        #[test]
        fn side_data_parser_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..(6 * AV_MOTION_VECTOR_SIZE)),
            w in 1usize..200, h in 1usize..120, bs in 0usize..40,
        ) {
            match parse_motion_vectors(&bytes) {
                Ok(v) => {
                    prop_assert!(bytes.len() % AV_MOTION_VECTOR_SIZE == 0);
                    prop_assert_eq!(v.len(), bytes.len() / AV_MOTION_VECTOR_SIZE);
                    for ft in [FrameType::P, FrameType::I] {
                        let _ = field_from_vectors(&v, w, h, bs, ft);
                        let fv = frame_vectors(&v, w, h, ft);
                        if let Ok(m) = preprocess(&[fv.clone(), fv], &LavitConfig::default()) {
                            prop_assert!(m.data.iter().all(|x| x.is_finite()));
                        }
                    }
                }
                Err(e) => {
                    prop_assert!(bytes.len() % AV_MOTION_VECTOR_SIZE != 0);
                    let malformed = matches!(e, vidgen_video_core::Error::Malformed { .. });
                    prop_assert!(malformed, "{}", e);
                }
            }
        }

        /// Records written in FFmpeg's layout parse back to the same values.
        #[test]
        fn side_data_parser_round_trips(vs in proptest::collection::vec(raw_mv(), 0..5)) {
            let bytes: Vec<u8> = vs.iter().flat_map(encode_mv).collect();
            prop_assert_eq!(parse_motion_vectors(&bytes).unwrap(), vs);
        }
    }
}
