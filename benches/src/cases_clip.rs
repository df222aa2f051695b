//! Registry cases of `clip-encoders`: the CLIP text encoder on 8 prompts and the vision
//! encoder on 8 images at ViT-B/32's sizes (random weights), against transformers 5.23 in the
//! same run (`benches/peers/clip_peers.py`, which builds the same configs).

use candle_core::{DType, Device, Tensor};
use vidgen_clip_encoders::{
    CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection,
};
use vidgen_video_core::Result;

use crate::{consume, randn, random_model, Amount, Case, Work};

/// The text and vision towers of `openai/clip-vit-base-patch32` (transformers' defaults).
pub fn clip_encoders() -> Vec<Case> {
    vec![
        Case {
            krate: "clip_encoders",
            name: "clip_text_b8_vitb32",
            shape: "CLIPTextModel, ViT-B/32 text tower (d 512, 12 layers × 8 heads, ffn 2048, quick_gelu, vocab 49408): ids [8, 77] -> last_hidden_state [8, 77, 512] + pooled",
            amount: Some(Amount::Flops(text_flops())),
            ours: clip_text,
            twins: vec![],
            torch: Some("clip_text_b8_vitb32"),
        },
        Case {
            krate: "clip_encoders",
            name: "clip_vision_b8_vitb32",
            shape: "CLIPVisionModelWithProjection, ViT-B/32 (d 768, 12 layers × 12 heads, ffn 3072, 224 px, patch 32, proj 512): pixels [8, 3, 224, 224] -> image_embeds [8, 512]",
            amount: Some(Amount::Flops(vision_flops())),
            ours: clip_vision,
            twins: vec![],
            torch: Some("clip_vision_b8_vitb32"),
        },
    ]
}

/// Matmul FLOPs of one encoder pass (2 per multiply-add): per layer q / k / v / out
/// (`4·2·T·d²`), the MLP (`2·2·T·d·f`), and attention scores + values over the full `n × n`
/// (`2·2·B·n²·d`, the causal half not subtracted); `T = B·n` tokens.
fn encoder_flops(b: f64, n: f64, d: f64, f: f64, layers: f64) -> f64 {
    let t = b * n;
    layers * (8.0 * t * d * d + 4.0 * t * d * f + 4.0 * b * n * n * d)
}

fn text_flops() -> f64 {
    encoder_flops(8.0, 77.0, 512.0, 2048.0, 12.0)
}

/// The encoder, the patch embedding (`2·B·49·3072·768`) and the projection.
fn vision_flops() -> f64 {
    encoder_flops(8.0, 50.0, 768.0, 3072.0, 12.0)
        + 2.0 * 8.0 * 49.0 * 3072.0 * 768.0
        + 2.0 * 8.0 * 768.0 * 512.0
}

fn clip_text(d: &Device) -> Result<Work> {
    let cfg = CLIPTextConfig::default();
    let model = random_model(d, |vb| CLIPTextModel::new(&cfg, vb))?;
    // 8 prompts of 5..=40 tokens: BOS, words, EOS, EOS padding (as the tokenizer pads).
    let mut ids = vec![49407u32; 8 * 77];
    for b in 0..8 {
        let len = 5 + 5 * b;
        ids[b * 77] = 49406;
        for t in 1..len {
            ids[b * 77 + t] = ((b * 7919 + t * 104_729) % 49_000) as u32 + 256;
        }
    }
    let ids = Tensor::from_vec(ids, (8, 77), d)?;
    Ok(Box::new(move || {
        let out = model.forward(&ids)?;
        consume(&out.last_hidden_state)?;
        consume(&out.pooler_output)
    }))
}

fn clip_vision(d: &Device) -> Result<Work> {
    let cfg = CLIPVisionConfig::default();
    let model = random_model(d, |vb| CLIPVisionModelWithProjection::new(&cfg, vb))?;
    let px = randn(&[8, 3, 224, 224], 51, 1.0, d)?.to_dtype(DType::F32)?;
    Ok(Box::new(move || {
        let out = model.forward(&px)?;
        match &out.image_embeds {
            Some(e) => consume(e),
            None => consume(&out.pooler_output),
        }
    }))
}
