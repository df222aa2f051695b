//! `CLIPImageProcessor` against transformers 5.23 (torchvision backend) and
//! `CLIPImageProcessorPil` (Pillow), on the cases of `tests/data/gen_image_processor_cases.py`:
//! the uint8 image after resize + crop exactly, the pixel values to 1e-6; typed errors for bad
//! images; and SVD's CLIP preprocessing chain against the `svd_pipeline` fixture's
//! intermediates when that fixture is vendored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use vidgen_clip_encoders::{
    resize_with_antialiasing, CLIPImageProcessor, CLIPVisionModelWithProjection,
    ImageProcessorConfig, ImageU8, ResizeBackend,
};
use vidgen_video_core::Error;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

#[test]
fn both_backends_match_transformers() {
    let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(
        data_dir().join("image_processor_cases.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data_dir().join("image_processor_cases.json")).unwrap(),
    )
    .unwrap();
    let mut worst = 0f32;
    let mut cases = 0;
    for case in meta["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let img = &tensors[&format!("{name}.image")];
        let (h, w, c) = img.dims3().unwrap();
        let bytes = img.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let image = ImageU8 {
            data: &bytes,
            height: h,
            width: w,
            channels: c,
        };
        let cfg =
            ImageProcessorConfig::from_json_bytes(case["config"].to_string().as_bytes(), None)
                .unwrap();
        for (tag, backend) in [
            ("tv", ResizeBackend::Torchvision),
            ("pil", ResizeBackend::Pil),
        ] {
            let p = CLIPImageProcessor::new(cfg.clone()).with_backend(backend);
            let want = &tensors[&format!("{name}.{tag}.u8")];
            let got = p.resize_and_crop(&image).unwrap();
            assert_eq!([3, got.height, got.width], want.dims(), "{name} {tag}");
            let want_u8 = want.flatten_all().unwrap().to_vec1::<u8>().unwrap();
            let diff: Vec<(usize, u8, u8)> = got
                .data
                .iter()
                .zip(&want_u8)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, (a, b))| (i, *a, *b))
                .take(5)
                .collect();
            assert!(
                diff.is_empty(),
                "{name} {tag}: uint8 differs at (index, got, want) {diff:?}"
            );
            if let Some(want) = tensors.get(&format!("{name}.{tag}.pixel_values")) {
                let got = p.preprocess(&[image], &Device::Cpu).unwrap();
                let d = (got.squeeze(0).unwrap() - want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(d <= 1e-6, "{name} {tag}: pixel values differ by {d}");
                worst = worst.max(d);
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 20);
    println!("image processor: 10 cases × 2 backends, uint8 exact, pixel values max_abs={worst:e}");
}

#[test]
fn bad_images_are_typed_errors() {
    let p = CLIPImageProcessor::default();
    let px = [0u8; 2 * 2 * 3];
    for (h, w, c, n) in [
        (0, 4, 3, 0),
        (4, 0, 3, 0),
        (2, 2, 2, 8),
        (2, 2, 5, 20),
        (2, 2, 3, 11),
    ] {
        let data = vec![0u8; n];
        let img = ImageU8 {
            data: &data,
            height: h,
            width: w,
            channels: c,
        };
        let e = p.preprocess(&[img], &Device::Cpu).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { .. }),
            "{h}×{w}×{c}: {e}"
        );
    }
    assert!(p.preprocess(&[], &Device::Cpu).is_err());
    let no_convert = CLIPImageProcessor::new(ImageProcessorConfig {
        do_convert_rgb: false,
        ..Default::default()
    });
    let gray = ImageU8 {
        data: &px[..4],
        height: 2,
        width: 2,
        channels: 1,
    };
    assert!(no_convert.preprocess(&[gray], &Device::Cpu).is_err());
    // A 1-pixel-high panorama resizes to a zero-height image: refused, not a panic.
    let wide = vec![0u8; 3 * 1000];
    let img = ImageU8::rgb(&wide, 1, 1000);
    let p = CLIPImageProcessor::new(ImageProcessorConfig {
        size: vidgen_clip_encoders::ResizeTo::ShortestEdge(1),
        do_center_crop: false,
        ..Default::default()
    });
    assert!(p.preprocess(&[img], &Device::Cpu).is_ok());
    let x = Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(CLIPImageProcessor::default().normalize(&x).is_err());
}

#[test]
fn config_parsing_reads_v4_and_v5_files() {
    let v4 = br#"{"crop_size": 224, "do_center_crop": true, "do_normalize": true, "do_resize": true,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}"#;
    let c = ImageProcessorConfig::from_json_bytes(v4, None).unwrap();
    assert_eq!(c, ImageProcessorConfig::default());
    let e = ImageProcessorConfig::from_json_bytes(br#"{"resample": 1}"#, None).unwrap_err();
    assert!(
        matches!(e, Error::Unsupported { ref field, .. } if field == "resample"),
        "{e}"
    );
    let e =
        ImageProcessorConfig::from_json_bytes(br#"{"image_std": [1, 0, 1]}"#, None).unwrap_err();
    assert!(
        matches!(e, Error::BadConfig { ref field, .. } if field == "image_std"),
        "{e}"
    );
    let e = ImageProcessorConfig::from_json_bytes(br#"{"size": {"width": 3}}"#, None).unwrap_err();
    assert!(
        matches!(e, Error::BadConfig { ref field, .. } if field == "size"),
        "{e}"
    );
}

/// The SVD pipeline's image conditioning: `image/255·2 − 1` → `_resize_with_antialiasing(224)`
/// → `(x + 1)/2` → the feature extractor's normalisation → `image_encoder(…).image_embeds`.
#[test]
fn svd_pipeline_clip_conditioning() {
    let dir = video_testkit::fixtures_root().join("svd_pipeline/base");
    if !dir.join("intermediates.safetensors").is_file() {
        eprintln!("svd_pipeline fixture not vendored: skipped");
        return;
    }
    let dev = Device::Cpu;
    let inputs = candle_core::safetensors::load(dir.join("inputs.safetensors"), &dev).unwrap();
    let inter =
        candle_core::safetensors::load(dir.join("intermediates.safetensors"), &dev).unwrap();
    // pil_to_numpy (u8 / 255 in f32), numpy_to_pt ([1, 3, H, W]), then `* 2 - 1`.
    let image = &inputs["image"]; // [H, W, 3] u8
    let (h, w, _) = image.dims3().unwrap();
    let hwc = image.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let x: Vec<f32> = hwc
        .iter()
        .map(|&v| f32::from(v) / 255.0 * 2.0 - 1.0)
        .collect();
    let x = Tensor::from_vec(x, (1, h, w, 3), &dev)
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap()
        .contiguous()
        .unwrap();
    let x = resize_with_antialiasing(&x, (224, 224)).unwrap();
    let x = ((x + 1.0).unwrap() / 2.0).unwrap();
    let fe = CLIPImageProcessor::from_dir(dir.join("pipeline")).unwrap();
    let px = fe.normalize(&x).unwrap();
    let c = video_testkit::assert_close(
        "clip_pixel_values",
        &px,
        &inter["clip_pixel_values"],
        1e-5,
        0.0,
    );
    let (enc, _) =
        CLIPVisionModelWithProjection::from_pretrained(dir.join("pipeline"), DType::F32, &dev)
            .unwrap();
    let emb = enc.forward(&px).unwrap().image_embeds.unwrap();
    let e = video_testkit::assert_close("image_embeds", &emb, &inter["image_embeds"], 1e-5, 0.0);
    println!(
        "svd_pipeline CLIP conditioning: clip_pixel_values max_abs={:e}, image_embeds max_abs={:e}",
        c.max_abs, e.max_abs
    );
}
