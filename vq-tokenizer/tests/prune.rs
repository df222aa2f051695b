//! Codebook pruning: near-duplicate codes go, the round trip stays within its bound, the
//! pruned folder loads strictly, bad input is an error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use proptest::prelude::*;
use vidgen_video_core::Result;
use vidgen_vq_tokenizer::{
    prune_codes, prune_vqmodel, write_folder_with_codebook, PruneSample, VQModel, VQModelConfig,
};

/// A decoder that shows a code as its vector, scaled to pixels: the squared error per frame of
/// `ids` against `latents`' rows.
fn lookup_err<'a>(
    codebook: &'a [f32],
    latents: &'a [f32],
    d: usize,
    cells: usize,
) -> impl FnMut(&[u32], &[usize]) -> Result<Vec<f64>> + 'a {
    move |ids, which| {
        Ok(which
            .iter()
            .enumerate()
            .map(|(j, &f)| {
                (0..cells)
                    .map(|c| {
                        let id = ids[j * cells + c] as usize;
                        let r = f * cells + c;
                        (0..d)
                            .map(|k| {
                                let e = f64::from(codebook[id * d + k] - latents[r * d + k]);
                                (e * 10.0).powi(2)
                            })
                            .sum::<f64>()
                    })
                    .sum()
            })
            .collect())
    }
}

#[test]
fn near_duplicates_go_and_distinct_codes_stay() {
    // Codes 0–2 are one value, 3–4 another; 5, 6, 7 are far apart.
    let e = [0.0f32, 0.001, 0.002, 10.0, 10.001, 20.0, 30.0, 40.0];
    // Two clips of three frames, two cells each, every code used; one cell (25) lies between
    // codes, so the round trip has an error to compare with.
    let z = [
        0.0f32, 10.0, 0.001, 10.001, 0.002, 20.0, //
        30.0, 40.0, 25.0, 10.0, 0.001, 40.0,
    ];
    let cb = Tensor::from_slice(&e, (8, 1), &Device::Cpu).unwrap();
    let lat = Tensor::from_slice(&z, (12, 1), &Device::Cpu).unwrap();
    let sample = PruneSample {
        codebook: &cb,
        latents: &lat,
        cells: 2,
        clip_lens: &[3, 3],
        values_per_frame: 2,
    };
    let mut err = lookup_err(&e, &z, 1, 2);
    let (kept, r) = prune_codes(&sample, 0.5, &mut err).unwrap();
    assert_eq!(r.codes_before, 8);
    assert_eq!(r.used_before, 8);
    assert_eq!(kept.len(), 5, "{kept:?}");
    assert!(kept.windows(2).all(|w| w[0] < w[1]));
    for far in [5u32, 6, 7] {
        assert!(kept.contains(&far));
    }
    assert!(r.psnr_after >= r.psnr_before - 0.5);
    // Frames whose near-duplicate cells moved between codes now keep their tokens.
    assert!(r.changed_per_frame_after < r.changed_per_frame_before);
}

#[test]
fn bad_samples_are_errors() {
    let cb = Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap();
    let lat = Tensor::zeros((5, 2), DType::F32, &Device::Cpu).unwrap();
    let mut never = |_: &[u32], _: &[usize]| -> Result<Vec<f64>> { Ok(vec![]) };
    let s = PruneSample {
        codebook: &cb,
        latents: &lat,
        cells: 2,
        clip_lens: &[2],
        values_per_frame: 1,
    };
    assert!(
        prune_codes(&s, 1.0, &mut never).is_err(),
        "5 rows for 4 cells"
    );
    let lat = Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap();
    let s = PruneSample { latents: &lat, ..s };
    assert!(prune_codes(&s, f64::NAN, &mut never).is_err());
    assert!(prune_codes(&s, -1.0, &mut never).is_err());
    // A decoder that returns the wrong number of errors.
    assert!(prune_codes(&s, 1.0, &mut never).is_err());
    let empty = PruneSample {
        clip_lens: &[],
        ..s
    };
    assert!(prune_codes(&empty, 1.0, &mut never).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn the_bound_holds_and_a_code_is_left(
        k in 1usize..12,
        d in 1usize..3,
        frames in 1usize..5,
        cells in 1usize..4,
        drop in 0.0f64..3.0,
        seed in 0u64..1000,
    ) {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 4.0 - 2.0
        };
        let e: Vec<f32> = (0..k * d).map(|_| next()).collect();
        let z: Vec<f32> = (0..frames * cells * d).map(|_| next()).collect();
        let cb = Tensor::from_slice(&e, (k, d), &Device::Cpu).unwrap();
        let lat = Tensor::from_slice(&z, (frames * cells, d), &Device::Cpu).unwrap();
        let lens = [frames];
        let sample = PruneSample { codebook: &cb, latents: &lat, cells, clip_lens: &lens, values_per_frame: cells * d };
        let mut err = lookup_err(&e, &z, d, cells);
        let (kept, r) = prune_codes(&sample, drop, &mut err).unwrap();
        prop_assert!(!kept.is_empty());
        prop_assert!(kept.len() <= r.used_before);
        prop_assert!(kept.iter().all(|&c| (c as usize) < k));
        prop_assert!(r.psnr_after >= r.psnr_before - drop - 1e-9);
    }
}

fn tiny_config() -> serde_json::Value {
    serde_json::json!({
        "block_out_channels": [8, 16],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
        "norm_num_groups": 4,
        "latent_channels": 4,
        "num_vq_embeddings": 32
    })
}

#[test]
fn a_pruned_model_folder_loads_strictly_and_keeps_its_bound() {
    let dev = Device::Cpu;
    let cfg_json = tiny_config();
    let cfg: VQModelConfig = serde_json::from_value(cfg_json.clone()).unwrap();
    let vm = VarMap::new();
    let model = VQModel::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
    // Two clips of 3 frames: a flat picture with a moving bright square.
    let clip = |shift: usize| -> Tensor {
        let mut v = vec![-0.5f32; 3 * 3 * 16 * 16];
        for t in 0..3 {
            for c in 0..3 {
                for y in 4..8 {
                    for x in (2 + t + shift)..(6 + t + shift) {
                        v[((t * 3 + c) * 16 + y) * 16 + x] = 0.8;
                    }
                }
            }
        }
        Tensor::from_vec(v, (3, 3, 16, 16), &dev).unwrap()
    };
    let clips = [clip(0), clip(5)];
    let (codebook, r) = prune_vqmodel(&model, &clips, 0.5).unwrap();
    assert_eq!(r.codes_before, 32);
    assert_eq!(r.frames, 6);
    assert_eq!(codebook.dims(), &[r.codes_after, 4]);
    assert!(r.codes_after >= 1 && r.codes_after <= r.used_before);
    assert!(r.psnr_after >= r.psnr_before - 0.5);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&cfg_json).unwrap(),
    )
    .unwrap();
    vm.save(dir.path().join("diffusion_pytorch_model.safetensors"))
        .unwrap();
    let out = dir.path().join("pruned");
    write_folder_with_codebook(dir.path(), &out, &codebook).unwrap();
    let (pruned, report) = VQModel::from_pretrained(&out, DType::F32, &dev).unwrap();
    assert!(
        report.missing.is_empty() && report.unused.is_empty(),
        "{report:?}"
    );
    assert_eq!(pruned.config().num_vq_embeddings, r.codes_after);
    let ids = pruned.tokenize(&clips[0]).unwrap();
    assert!(ids
        .flatten_all()
        .unwrap()
        .to_vec1::<u32>()
        .unwrap()
        .iter()
        .all(|&i| (i as usize) < r.codes_after));
    // A codebook of another width is refused; so is an empty sample.
    let wrong = Tensor::zeros((3, 5), DType::F32, &dev).unwrap();
    assert!(write_folder_with_codebook(dir.path(), &out, &wrong).is_err());
    assert!(prune_vqmodel(&model, &[], 0.5).is_err());
}
