//! The towers beyond the fixtures: position-embedding interpolation and a full `CLIPModel`
//! against transformers (`tests/data/gen_model_cases.py`), the checkpoint layouts (v4
//! `text_model.` prefix, a transformers 5 `CLIPVisionModel`, a diffusers pipeline folder, a
//! `CLIPModel` folder), f16 / bf16, typed errors for bad checkpoints and bad inputs, the
//! legacy `eos_token_id == 2` pooling and the padding mask.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use video_testkit::{assert_close, fixtures_root};
use vidgen_clip_encoders::{
    CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
    CLIPTokenizer, CLIPVisionModel, CLIPVisionModelWithProjection, ImageU8,
};
use vidgen_video_core::Error;

const TOL: f64 = 2e-5;

fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(p)
}

fn text_fixture() -> PathBuf {
    fixtures_root().join("clip_text/base")
}

fn vision_fixture() -> PathBuf {
    fixtures_root().join("clip_vision/base")
}

fn load(p: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

/// Copies a model folder, renaming every key with `rename` and converting to `dtype`.
fn rewrite(src: &Path, dst: &Path, rename: impl Fn(&str) -> String, dtype: DType) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    let w = load(&src.join("model.safetensors"));
    let w: HashMap<String, Tensor> = w
        .into_iter()
        .map(|(k, v)| (rename(&k), v.to_dtype(dtype).unwrap()))
        .collect();
    candle_core::safetensors::save(&w, dst.join("model.safetensors")).unwrap();
}

#[test]
fn interpolated_position_embeddings_match_transformers() {
    let dev = Device::Cpu;
    let (m, _) = CLIPVisionModelWithProjection::from_pretrained(
        vision_fixture().join("model"),
        DType::F32,
        &dev,
    )
    .unwrap();
    let t = load(&data("interpolate_pos.safetensors"));
    let mut worst = 0f64;
    for size in ["48x40", "24x24", "32x40"] {
        let px = &t[&format!("{size}.pixel_values")];
        let out = m.forward_interpolated(px).unwrap();
        let a = assert_close(
            &format!("{size} image_embeds"),
            out.image_embeds.as_ref().unwrap(),
            &t[&format!("{size}.image_embeds")],
            TOL,
            0.0,
        );
        let b = assert_close(
            &format!("{size} last_hidden_state"),
            &out.last_hidden_state,
            &t[&format!("{size}.last_hidden_state")],
            TOL,
            0.0,
        );
        worst = worst.max(a.max_abs).max(b.max_abs);
        // Without interpolation another size is refused.
        assert!(matches!(
            m.forward(px).unwrap_err(),
            Error::InvalidArgument { .. }
        ));
    }
    println!("interpolate_pos_encoding: 3 sizes, max_abs={worst:e}");
}

#[test]
fn clip_model_tokenizer_and_processor_match_transformers() {
    let dev = Device::Cpu;
    let dir = data("tiny_clip");
    let t = load(&dir.join("cases.safetensors"));
    let (model, report) = CLIPModel::from_pretrained(&dir, DType::F32, &dev).unwrap();
    assert!(report.unused.is_empty(), "{report}");
    // Tokenizer: the pipelines' call.
    let tok = CLIPTokenizer::from_dir(&dir).unwrap();
    let texts = ["a photo of a cat", "the red square moves to the left"];
    let b = tok.encode_batch(&texts, &dev).unwrap();
    let want_ids = t["input_ids"].to_dtype(DType::U32).unwrap();
    assert_eq!(
        b.input_ids.to_vec2::<u32>().unwrap(),
        want_ids.to_vec2::<u32>().unwrap()
    );
    // Image processor.
    let imgs = &t["images"];
    let (n, h, w, _) = imgs.dims4().unwrap();
    let bytes = imgs.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let per = h * w * 3;
    let list: Vec<ImageU8> = (0..n)
        .map(|i| ImageU8::rgb(&bytes[i * per..(i + 1) * per], h, w))
        .collect();
    let proc = CLIPImageProcessor::from_dir(&dir).unwrap();
    let px = proc.preprocess(&list, &dev).unwrap();
    assert_close("pixel_values", &px, &t["pixel_values"], 1e-6, 0.0);
    // Features and logits.
    let te = model
        .get_text_features(&b.input_ids, Some(&b.attention_mask))
        .unwrap();
    assert_close("text_embeds", &te, &t["text_embeds"], TOL, 0.0);
    let ie = model.get_image_features(&px).unwrap();
    assert_close("image_embeds", &ie, &t["image_embeds"], TOL, 0.0);
    let out = model
        .forward(&b.input_ids, &px, Some(&b.attention_mask))
        .unwrap();
    assert_close(
        "logits_per_image",
        &out.logits_per_image,
        &t["logits_per_image"],
        1e-4,
        0.0,
    );
    let score = (out.text_embeds * out.image_embeds)
        .unwrap()
        .sum(1)
        .unwrap()
        .affine(100.0, 0.0)
        .unwrap();
    assert_close("clip_score", &score, &t["clip_score"], 1e-3, 0.0);

    // Each tower alone from the CLIPModel folder (combined config, prefixed keys).
    let (tp, _) = CLIPTextModelWithProjection::from_pretrained(&dir, DType::F32, &dev).unwrap();
    let o = tp
        .forward_masked(&b.input_ids, Some(&b.attention_mask))
        .unwrap();
    assert_close(
        "tower text_embeds",
        o.text_embeds.as_ref().unwrap(),
        &t["text_embeds"],
        TOL,
        0.0,
    );
    let (tm, _) = CLIPTextModel::from_pretrained(&dir, DType::F32, &dev).unwrap();
    assert_close(
        "CLIPTextModel pooled",
        &tm.forward(&b.input_ids).unwrap().pooler_output,
        &o.pooler_output,
        1e-6,
        0.0,
    );
    let (vp, _) = CLIPVisionModelWithProjection::from_pretrained(&dir, DType::F32, &dev).unwrap();
    let o = vp.forward(&px).unwrap();
    assert_close(
        "tower image_embeds",
        o.image_embeds.as_ref().unwrap(),
        &t["image_embeds"],
        TOL,
        0.0,
    );
    let (vm, _) = CLIPVisionModel::from_pretrained(&dir, DType::F32, &dev).unwrap();
    assert_close(
        "CLIPVisionModel pooled",
        &vm.forward(&px).unwrap().pooler_output,
        &o.pooler_output,
        1e-6,
        0.0,
    );
}

#[test]
fn every_checkpoint_layout_loads() {
    let dev = Device::Cpu;
    let f = text_fixture();
    let ids = &load(&f.join("inputs.safetensors"))["input_ids"];
    let want = load(&f.join("outputs.safetensors"));
    let tmp = tempfile::tempdir().unwrap();
    // v4 layout: `text_model.` prefix, as SD's text_encoder/, inside a pipeline folder.
    let pipe = tmp.path().join("pipe");
    rewrite(
        &f.join("model"),
        &pipe.join("text_encoder"),
        |k| format!("text_model.{k}"),
        DType::F32,
    );
    std::fs::write(pipe.join("model_index.json"), "{}").unwrap();
    let (m, report) = CLIPTextModel::from_pretrained(&pipe, DType::F32, &dev).unwrap();
    assert!(report.unused.is_empty(), "{report}");
    let out = m.forward(ids).unwrap();
    assert_close(
        "v4 last_hidden_state",
        &out.last_hidden_state,
        &want["last_hidden_state"],
        TOL,
        0.0,
    );

    // transformers 5 CLIPVisionModel: no `vision_model.` prefix, no projection.
    let v = vision_fixture();
    let px = &load(&v.join("inputs.safetensors"))["pixel_values"];
    let vwant = load(&v.join("outputs.safetensors"));
    let vdir = tmp.path().join("vision_v5");
    rewrite(
        &v.join("model"),
        &vdir,
        |k| k.trim_start_matches("vision_model.").to_string(),
        DType::F32,
    );
    // The projection key is left over: CLIPVisionModel reports it unused.
    let (vm, report) = CLIPVisionModel::from_pretrained(&vdir, DType::F32, &dev).unwrap();
    assert_eq!(report.unused.len(), 1, "{report}");
    let out = vm.forward(px).unwrap();
    assert_close(
        "v5 vision last_hidden_state",
        &out.last_hidden_state,
        &vwant["last_hidden_state"],
        TOL,
        0.0,
    );
    // A diffusers pipeline's image_encoder/.
    let pipe = tmp.path().join("svd");
    rewrite(
        &v.join("model"),
        &pipe.join("image_encoder"),
        |k| k.to_string(),
        DType::F32,
    );
    let (vp, _) = CLIPVisionModelWithProjection::from_pretrained(&pipe, DType::F32, &dev).unwrap();
    let out = vp.forward(px).unwrap();
    assert_close(
        "image_encoder image_embeds",
        out.image_embeds.as_ref().unwrap(),
        &vwant["image_embeds"],
        TOL,
        0.0,
    );
}

#[test]
fn half_precision_weights_run_with_f32_accumulation() {
    let dev = Device::Cpu;
    let f = text_fixture();
    let ids = &load(&f.join("inputs.safetensors"))["input_ids"];
    let want = load(&f.join("outputs.safetensors"));
    let v = vision_fixture();
    let px = &load(&v.join("inputs.safetensors"))["pixel_values"];
    let vwant = load(&v.join("outputs.safetensors"));
    let tmp = tempfile::tempdir().unwrap();
    for (dt, tol) in [(DType::F16, 1e-2), (DType::BF16, 8e-2)] {
        // Weights stored in the half dtype, run in it.
        let tdir = tmp.path().join(format!("text_{dt:?}"));
        rewrite(&f.join("model"), &tdir, |k| k.to_string(), dt);
        let (m, _) = CLIPTextModel::from_pretrained(&tdir, dt, &dev).unwrap();
        let out = m.forward(ids).unwrap();
        assert_eq!(out.last_hidden_state.dtype(), dt);
        let c = assert_close(
            "half text",
            &out.last_hidden_state,
            &want["last_hidden_state"],
            tol,
            0.0,
        );
        assert!(c.max_abs.is_finite());
        // The same half checkpoint loaded in f32.
        let (m32, _) = CLIPTextModel::from_pretrained(&tdir, DType::F32, &dev).unwrap();
        let o32 = m32.forward(ids).unwrap();
        assert_close(
            "half weights in f32",
            &o32.pooler_output,
            &want["pooler_output"],
            tol,
            0.0,
        );

        let vdir = tmp.path().join(format!("vision_{dt:?}"));
        rewrite(&v.join("model"), &vdir, |k| k.to_string(), dt);
        let (vm, _) = CLIPVisionModelWithProjection::from_pretrained(&vdir, dt, &dev).unwrap();
        let out = vm.forward(px).unwrap(); // f32 pixels are cast to the model's dtype
        assert_close(
            "half vision",
            out.image_embeds.as_ref().unwrap(),
            &vwant["image_embeds"],
            tol,
            0.0,
        );
    }
}

#[test]
fn bad_checkpoints_are_typed_errors() {
    let dev = Device::Cpu;
    let f = text_fixture();
    let tmp = tempfile::tempdir().unwrap();
    // A missing key names its nearest keys.
    let d = tmp.path().join("missing");
    rewrite(
        &f.join("model"),
        &d,
        |k| {
            if k == "encoder.layers.1.mlp.fc2.weight" {
                "encoder.layers.1.mlp.fc_2.weight".into()
            } else {
                k.to_string()
            }
        },
        DType::F32,
    );
    match CLIPTextModel::from_pretrained(&d, DType::F32, &dev).unwrap_err() {
        Error::MissingTensor { key, nearest, .. } => {
            assert_eq!(key, "encoder.layers.1.mlp.fc2.weight");
            assert!(
                nearest
                    .iter()
                    .any(|n| n == "encoder.layers.1.mlp.fc_2.weight"),
                "{nearest:?}"
            );
        }
        e => panic!("{e}"),
    }
    // A projection model from a checkpoint without projection.
    let e = CLIPTextModelWithProjection::from_pretrained(f.join("model"), DType::F32, &dev)
        .unwrap_err();
    assert!(
        matches!(e, Error::MissingTensor { ref key, .. } if key == "text_projection.weight"),
        "{e}"
    );
    // Wrong shape: a config that disagrees with the weights.
    let d = tmp.path().join("shape");
    rewrite(&f.join("model"), &d, |k| k.to_string(), DType::F32);
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48"),
    )
    .unwrap();
    let e = CLIPTextModel::from_pretrained(&d, DType::F32, &dev).unwrap_err();
    assert!(
        matches!(e, Error::Load(_) | Error::ShapeMismatch { .. }),
        "{e}"
    );
    // Unknown activation.
    std::fs::write(d.join("config.json"), cfg.replace("quick_gelu", "gelu_10")).unwrap();
    let e = CLIPTextModel::from_pretrained(&d, DType::F32, &dev).unwrap_err();
    assert!(
        matches!(e, Error::Unsupported { ref field, .. } if field == "hidden_act"),
        "{e}"
    );
    // No config at all.
    let e =
        CLIPTextModel::from_pretrained(tmp.path().join("nothing"), DType::F32, &dev).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let dev = Device::Cpu;
    let (m, _) =
        CLIPTextModel::from_pretrained(text_fixture().join("model"), DType::F32, &dev).unwrap();
    let long = Tensor::zeros((1, 17), DType::U32, &dev).unwrap(); // 16 positions
    let cases = [
        long,
        Tensor::zeros((1, 0), DType::U32, &dev).unwrap(),
        Tensor::zeros((0, 4), DType::U32, &dev).unwrap(),
        Tensor::new(&[[1u32, 99]], &dev).unwrap(), // vocab 99
        Tensor::zeros((1, 4), DType::F32, &dev).unwrap(),
        Tensor::zeros((1, 2, 4), DType::U32, &dev).unwrap(),
    ];
    for ids in &cases {
        let e = m.forward(ids).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { .. }),
            "{:?}: {e}",
            ids.dims()
        );
    }
    let ids = Tensor::new(&[[0u32, 5, 98]], &dev).unwrap();
    let mask = Tensor::ones((2, 3), DType::U32, &dev).unwrap();
    assert!(m.forward_masked(&ids, Some(&mask)).is_err());

    let (v, _) = CLIPVisionModelWithProjection::from_pretrained(
        vision_fixture().join("model"),
        DType::F32,
        &dev,
    )
    .unwrap();
    for dims in [[1, 4, 32, 32], [1, 3, 32, 31], [0, 3, 32, 32]] {
        let px = Tensor::zeros(&dims, DType::F32, &dev).unwrap();
        let e = v.forward(&px).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{dims:?}: {e}");
    }
    let tiny = Tensor::zeros((1, 3, 7, 40), DType::F32, &dev).unwrap(); // below one 8 px patch
    assert!(matches!(
        v.forward_interpolated(&tiny).unwrap_err(),
        Error::InvalidArgument { .. }
    ));
    let int = Tensor::zeros((1, 3, 32, 32), DType::U8, &dev).unwrap();
    assert!(matches!(
        v.forward(&int).unwrap_err(),
        Error::InvalidArgument { .. }
    ));
}

#[test]
fn legacy_eos_2_pools_at_the_largest_id_and_masks_compose() {
    let dev = Device::Cpu;
    let f = text_fixture();
    let ids = load(&f.join("inputs.safetensors"))["input_ids"].clone();
    let mut cfg = CLIPTextConfig::from_file(f.join("model/config.json")).unwrap();
    let md = vidgen_video_core::ModelDir::open(f.join("model")).unwrap();
    cfg.eos_token_id = vidgen_clip_encoders::config::TokenId(Some(2));
    let (m, _) = md
        .load(DType::F32, &dev, |vb| CLIPTextModel::new(&cfg, vb))
        .unwrap();
    let out = m.forward(&ids).unwrap();
    let rows = ids.to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap();
    for (b, row) in rows.iter().enumerate() {
        let max = *row.iter().max().unwrap();
        let p = row.iter().position(|&v| v == max).unwrap();
        let want = out.last_hidden_state.get(b).unwrap().get(p).unwrap();
        assert_close(
            "legacy pooled",
            &out.pooler_output.get(b).unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
    // An all-ones mask changes nothing; a right-padding mask leaves the earlier positions as
    // they were (causal attention never sees later keys).
    let (m, _) = CLIPTextModel::from_pretrained(f.join("model"), DType::F32, &dev).unwrap();
    let plain = m.forward(&ids).unwrap();
    let (b, n) = ids.dims2().unwrap();
    let ones = Tensor::ones((b, n), DType::U32, &dev).unwrap();
    let same = m.forward_masked(&ids, Some(&ones)).unwrap();
    assert_close(
        "ones mask",
        &same.last_hidden_state,
        &plain.last_hidden_state,
        0.0,
        0.0,
    );
    let keep = 10;
    let mask: Vec<u32> = (0..b * n).map(|i| u32::from(i % n < keep)).collect();
    let mask = Tensor::from_vec(mask, (b, n), &dev).unwrap();
    let masked = m.forward_masked(&ids, Some(&mask)).unwrap();
    assert_close(
        "right padding",
        &masked.last_hidden_state.narrow(1, 0, keep).unwrap(),
        &plain.last_hidden_state.narrow(1, 0, keep).unwrap(),
        1e-6,
        0.0,
    );
    assert_eq!(plain.penultimate().unwrap().dims(), &[b, n, 32]);
}
