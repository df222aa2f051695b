//! Registry cases of the model crates: vq-tokenizer's nearest-code search, eval-metrics' Fréchet
//! distance and KID, llama-video's prefill and decode. Shapes mirror `../shared/peers/README.md`.

use candle_core::{DType, Device, Tensor};
use vidgen_eval_metrics::weights::{weights_dir, FID_INCEPTION_FILE, I3D_FILE};
use vidgen_eval_metrics::{
    frechet_distance_with, kernel_distance, psnr, ssim, DataRange, FidInceptionV3, FrechetOptions,
    GaussianStats, I3d, KidOptions, SqrtMethod, SsimFlavour,
};
use vidgen_llama_video::{LlamaConfig, LlamaForCausalLM, LogitsToKeep};
use vidgen_video_core::{Error, Result};
use vidgen_vq_tokenizer::nearest_composed;
use vidgen_vq_tokenizer::search::PreparedCodebook;

use crate::{consume, randn, random_model, Amount, Case, Work};

/// Nearest-code search.
pub fn vq_tokenizer() -> Vec<Case> {
    vec![
        Case {
            krate: "vq_tokenizer",
            name: "vq_nn_n4096_k16384_d8",
            shape: "z [4096, 8] vs codebook [16384, 8], f32; includes codebook norms",
            amount: Some(Amount::Flops(2.0 * 4096.0 * 16384.0 * 8.0)),
            ours: |d| vq_nn(d, 16384, 8, false),
            twins: vec![("candle_matmul_argmin", |d| vq_nn(d, 16384, 8, true))],
            torch: Some("vq_nn_n4096_k16384_d8"),
        },
        Case {
            krate: "vq_tokenizer",
            name: "vq_nn_n4096_k1024_d256",
            shape: "z [4096, 256] vs codebook [1024, 256], f32; includes codebook norms",
            amount: Some(Amount::Flops(2.0 * 4096.0 * 1024.0 * 256.0)),
            ours: |d| vq_nn(d, 1024, 256, false),
            twins: vec![("candle_matmul_argmin", |d| vq_nn(d, 1024, 256, true))],
            torch: Some("vq_nn_n4096_k1024_d256"),
        },
        Case {
            krate: "vq_tokenizer",
            name: "vqmodel_encode_b16h64",
            shape: "vqmodel/base fixture VQModel: 16 frames [3, 64, 64] -> code ids [16, 32, 32]",
            amount: None,
            ours: |d| vqmodel(d, false),
            twins: vec![],
            torch: Some("vqmodel_encode_b16h64"),
        },
        Case {
            krate: "vq_tokenizer",
            name: "vqmodel_decode_b16h64",
            shape: "same model: 16 frames of code ids -> [3, 64, 64] (diffusers: latents -> quantize -> decode)",
            amount: None,
            ours: |d| vqmodel(d, true),
            twins: vec![],
            torch: Some("vqmodel_decode_b16h64"),
        },
    ]
}

fn vqmodel(d: &Device, decode: bool) -> Result<Work> {
    use vidgen_video_core::Codec;
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/vqmodel/base/model");
    let (model, _) = vidgen_vq_tokenizer::VQModel::from_pretrained(&dir, DType::F32, d)?;
    let tok = vidgen_vq_tokenizer::FrameTokenizer::new(model, 16)?;
    let video = (randn(&[1, 3, 16, 64, 64], 13, 0.5, d)?).clamp(-1f32, 1f32)?;
    let grid = tok.encode(&video)?;
    Ok(if decode {
        Box::new(move || consume(&tok.decode(&grid)?))
    } else {
        Box::new(move || {
            std::hint::black_box(tok.encode(&video)?);
            Ok(())
        })
    })
}

fn vq_nn(d: &Device, k: usize, dim: usize, composed: bool) -> Result<Work> {
    let z = randn(&[4096, dim], 11, 1.0, d)?;
    let e = randn(&[k, dim], 12, 1.0, d)?;
    if composed {
        return Ok(Box::new(move || consume(&nearest_composed(&z, &e)?)));
    }
    let zv = z.flatten_all()?.to_vec1::<f32>()?;
    let ev = e.flatten_all()?.to_vec1::<f32>()?;
    Ok(Box::new(move || {
        let book = PreparedCodebook::new(&ev, k, dim)?;
        std::hint::black_box(book.nearest(&zv)?);
        Ok(())
    }))
}

/// Fréchet distance and KID on 2048-d statistics.
pub fn eval_metrics() -> Vec<Case> {
    vec![
        Case {
            krate: "eval_metrics",
            name: "fid_sqrtm_d2048",
            shape: "mu [2048], sigma [2048, 2048] f64 from 4096 features each; default method",
            amount: None,
            ours: |d| fid(d, SqrtMethod::Auto),
            twins: vec![("eigh", |d| fid(d, SqrtMethod::Eigh))],
            torch: Some("fid_sqrtm_d2048"),
        },
        Case {
            krate: "eval_metrics",
            name: "fid_eigh_d2048",
            shape: "same statistics, our default method (peer: torch-fidelity's Σ √eigvals(Σa Σb))",
            amount: None,
            ours: |d| fid(d, SqrtMethod::Auto),
            twins: vec![],
            torch: Some("fid_eigh_d2048"),
        },
        Case {
            krate: "eval_metrics",
            name: "kid_d2048_100x1000",
            shape: "features 2 × [5000, 2048] f32, 100 subsets of 1000, cubic polynomial kernel",
            amount: None,
            ours: kid,
            twins: vec![],
            torch: Some("kid_d2048_100x1000"),
        },
        Case {
            krate: "eval_metrics",
            name: "psnr_ssim_b1c3t16h64w64",
            shape: "[1, 3, 16, 64, 64] in [0, 1]: per-frame PSNR + the three SSIM flavours (no peer)",
            amount: Some(Amount::Bytes(2.0 * 4.0 * 3.0 * 16.0 * 64.0 * 64.0)),
            ours: psnr_ssim,
            twins: vec![],
            torch: None,
        },
        Case {
            krate: "eval_metrics",
            name: "inception_features_b1",
            shape: "FID Inception-v3 (real weights), one preprocessed [1, 3, 299, 299] image -> 2048-d pool3",
            amount: None,
            ours: inception,
            twins: vec![],
            torch: Some("inception_features_b1"),
        },
        Case {
            krate: "eval_metrics",
            name: "i3d_logits_b1t16",
            shape: "FVD I3D (real Kinetics-400 weights), one [1, 3, 16, 224, 224] clip -> 400 logits",
            amount: None,
            ours: i3d,
            twins: vec![],
            torch: Some("i3d_logits_b1t16"),
        },
    ]
}

fn psnr_ssim(d: &Device) -> Result<Work> {
    let a = (randn(&[1, 3, 16, 64, 64], 5, 0.15, d)? + 0.5)?.clamp(0f32, 1f32)?;
    let b = (&a + randn(&[1, 3, 16, 64, 64], 6, 0.05, d)?)?.clamp(0f32, 1f32)?;
    Ok(Box::new(move || {
        let mut acc = psnr(&a, &b, DataRange::UNIT)?.global;
        for f in [
            SsimFlavour::SkimageGaussian,
            SsimFlavour::SkimageDefault,
            SsimFlavour::Torchmetrics,
        ] {
            acc += ssim(&a, &b, DataRange::UNIT, f)?.mean;
        }
        std::hint::black_box(acc);
        Ok(())
    }))
}

/// A converted real-weight file, or an error saying how to get it.
fn weight_file(name: &str) -> Result<std::path::PathBuf> {
    let p = weights_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::invalid(
            "weights",
            format!(
                "{} absent (cargo run --release -p eval-metrics --example fetch_weights)",
                p.display()
            ),
        ))
    }
}

fn inception(d: &Device) -> Result<Work> {
    let net = FidInceptionV3::load(weight_file(FID_INCEPTION_FILE)?)?;
    let x = randn(&[1, 3, 299, 299], 7, 0.4, d)?.clamp(-1f32, 0.99f32)?;
    Ok(Box::new(move || consume(&net.features(&x)?)))
}

fn i3d(d: &Device) -> Result<Work> {
    let net = I3d::load(weight_file(I3D_FILE)?)?;
    let x = randn(&[1, 3, 16, 224, 224], 8, 0.4, d)?.clamp(-1f32, 1f32)?;
    Ok(Box::new(move || consume(&net.logits(&x)?)))
}

/// Gaussian statistics of `n` seeded features of dimension `dim` (`shift` moves the second set
/// as the peer does: `0.9·N(0,1) + 0.05`).
fn stats(d: &Device, seed: u64, scale: f32, shift: f64) -> Result<GaussianStats> {
    let (n, dim) = (4096usize, 2048usize);
    let f = (randn(&[n, dim], seed, scale, d)?.to_dtype(DType::F64)? + shift)?;
    let mu = f.mean_keepdim(0)?;
    let c = f.broadcast_sub(&mu)?;
    let sigma = (c.t()?.matmul(&c)? / (n as f64 - 1.0))?;
    GaussianStats::from_tensors(&mu.squeeze(0)?, &sigma)
}

fn fid(d: &Device, method: SqrtMethod) -> Result<Work> {
    let a = stats(d, 21, 1.0, 0.0)?;
    let b = stats(d, 22, 0.9, 0.05)?;
    let opts = FrechetOptions {
        method,
        ..FrechetOptions::default()
    };
    Ok(Box::new(move || {
        std::hint::black_box(frechet_distance_with(&a, &b, &opts)?);
        Ok(())
    }))
}

fn kid(d: &Device) -> Result<Work> {
    let a = randn(&[5000, 2048], 31, 1.0, d)?;
    let b = (randn(&[5000, 2048], 32, 1.1, d)? + 0.05)?;
    let opts = KidOptions::default();
    Ok(Box::new(move || {
        std::hint::black_box(kernel_distance(&a, &b, &opts)?);
        Ok(())
    }))
}

const LLAMA_PROMPT: usize = 512;
const LLAMA_NEW: usize = 128;

/// The ~25M-parameter Llama of the peers: prefill and greedy decode with a KV cache.
pub fn llama_video() -> Vec<Case> {
    vec![
        Case {
            krate: "llama_video",
            name: "llama_prefill_25m",
            shape: "vocab 16384, hidden 512, ffn 1376, 8 layers × 8 heads; 512 prompt tokens, last logits",
            amount: None,
            ours: |d| llama(d, false),
            twins: vec![],
            torch: Some("llama_prefill_25m"),
        },
        Case {
            krate: "llama_video",
            name: "llama_decode_25m",
            shape: "same model; 128 greedy steps on a 512-token KV cache (cache rewound each call)",
            amount: None,
            ours: |d| llama(d, true),
            twins: vec![],
            torch: Some("llama_decode_25m"),
        },
    ]
}

fn llama(d: &Device, decode: bool) -> Result<Work> {
    let cfg = LlamaConfig {
        vocab_size: 16384,
        hidden_size: 512,
        intermediate_size: 1376,
        num_hidden_layers: 8,
        num_attention_heads: 8,
        num_key_value_heads: Some(8),
        max_position_embeddings: 1024,
        rms_norm_eps: 1e-5,
        rope_theta: Some(10000.0),
        ..Default::default()
    };
    let model = random_model(d, |vb| LlamaForCausalLM::new(&cfg, vb))?;
    let ids = (randn(&[1, LLAMA_PROMPT], 41, 1.0, d)?.abs()? * 4000.0)?
        .floor()?
        .to_dtype(DType::U32)?;
    let argmax =
        |l: &Tensor| -> Result<u32> { Ok(l.flatten_all()?.argmax(0)?.to_scalar::<u32>()?) };
    if !decode {
        return Ok(Box::new(move || {
            let mut cache = model.new_cache(1, LLAMA_PROMPT + LLAMA_NEW)?;
            let l = model.forward(&ids, Some(&mut cache), LogitsToKeep::Last)?;
            std::hint::black_box(argmax(&l)?);
            Ok(())
        }));
    }
    let mut cache = model.new_cache(1, LLAMA_PROMPT + LLAMA_NEW + 1)?;
    let first = argmax(&model.forward(&ids, Some(&mut cache), LogitsToKeep::Last)?)?;
    let device = d.clone();
    Ok(Box::new(move || {
        cache.truncate(LLAMA_PROMPT);
        let mut tok = first;
        for _ in 0..LLAMA_NEW {
            let x = Tensor::from_vec(vec![tok], (1, 1), &device)?;
            tok = argmax(&model.forward(&x, Some(&mut cache), LogitsToKeep::Last)?)?;
        }
        std::hint::black_box(tok);
        Ok(())
    }))
}
