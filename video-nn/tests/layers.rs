//! Every layer of video-nn: the fast path (video-kernels' fused ops) against the reference
//! twins (plain candle ops, forced with `force_reference`) over random shapes and f32 / f16 /
//! bf16; and the checkpoint keys each constructor asks for, against the reference's names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use proptest::prelude::*;
use video_testkit::{proptest_config, seeded_var_builder};
use vidgen_video_nn::{
    Activation, Attention, AttentionConfig, Conv2d, Conv2dConfig, Conv3d, Conv3dConfig, Decoder,
    DecoderConfig, Embedding, Encoder, EncoderConfig, GroupNorm, LayerNorm, Linear, MhaConfig,
    MultiHeadAttention, ResnetBlock2D, ResnetBlock2DConfig, RmsNorm,
};

/// `force_reference` is process-wide: tests that flip it run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// `f()` on the fast path and on the reference twins, as f32.
fn fast_and_reference(f: impl Fn() -> Tensor) -> (Tensor, Tensor) {
    let _lock = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fast = f();
    let reference = {
        let _g = vidgen_video_kernels::force_reference();
        f()
    };
    (
        fast.to_dtype(DType::F32).unwrap(),
        reference.to_dtype(DType::F32).unwrap(),
    )
}

/// Worst absolute difference and the reference's largest magnitude.
fn diff(a: &Tensor, b: &Tensor) -> (f32, f32) {
    assert_eq!(a.dims(), b.dims());
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let m = b.abs().unwrap().max_all().unwrap();
    (d.to_scalar::<f32>().unwrap(), m.to_scalar::<f32>().unwrap())
}

/// Tolerance relative to the output's scale, per dtype: f32 round-off of different summation
/// orders, or half-precision rounding of the output (both paths accumulate in f32).
fn check(what: &str, dt: DType, f: impl Fn() -> Tensor) {
    let (fast, reference) = fast_and_reference(f);
    let (d, m) = diff(&fast, &reference);
    let tol = match dt {
        DType::F32 => 2e-5,
        DType::F16 => 4e-3,
        _ => 2e-2,
    } * m.max(1.0);
    assert!(
        d <= tol,
        "{what} ({dt:?}): fast vs reference max_abs {d} > {tol}"
    );
}

fn dtype_of(i: u8) -> DType {
    [DType::F32, DType::F16, DType::BF16][i as usize % 3]
}

fn randn(dims: &[usize], seed: u64, dt: DType) -> Tensor {
    // Deterministic values from the seeded builder (one tensor named by the seed).
    let vb = seeded_var_builder(seed, DType::F32, &Device::Cpu);
    vb.get_with_hints(
        dims,
        "x",
        candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        },
    )
    .unwrap()
    .to_dtype(dt)
    .unwrap()
}

fn vb(seed: u64, dt: DType) -> VarBuilder<'static> {
    seeded_var_builder(seed, dt, &Device::Cpu)
}

proptest! {
    #![proptest_config(proptest_config(64))]

    #[test]
    fn linear_fast_matches_reference(rows in 1usize..40, i in 1usize..48, o in 1usize..40,
                                     bias in any::<bool>(), d in 0u8..3, seed in 0u64..1000) {
        let dt = dtype_of(d);
        let l = Linear::new(i, o, bias, vb(seed, dt)).unwrap();
        let x = randn(&[2, rows, i], seed + 1, dt);
        check("linear", dt, || l.forward(&x).unwrap());
    }

    #[test]
    fn conv2d_fast_matches_reference(cin in 1usize..6, cout in 1usize..6, kh in 1usize..4,
                                     kw in 1usize..4, sh in 1usize..3, sw in 1usize..3,
                                     ph in 0usize..2, pw in 0usize..2, h in 4usize..10,
                                     w in 4usize..10, d in 0u8..3, seed in 0u64..1000) {
        let dt = dtype_of(d);
        let cfg = Conv2dConfig { stride: [sh, sw], padding: [ph, pw], ..Default::default() };
        let c = Conv2d::with_config(cin, cout, [kh, kw], &cfg, vb(seed, dt)).unwrap();
        let x = randn(&[2, cin, h, w], seed + 1, dt);
        check("conv2d", dt, || c.forward(&x).unwrap());
    }

    #[test]
    fn conv3d_fast_matches_reference(c in 1usize..5, depthwise in any::<bool>(), kt in 1usize..4,
                                     k in 1usize..4, t in 2usize..6, h in 3usize..8,
                                     d in 0u8..3, seed in 0u64..1000) {
        let dt = dtype_of(d);
        let cfg = Conv3dConfig {
            padding: [kt / 2, k / 2, k / 2],
            groups: if depthwise { c } else { 1 },
            ..Default::default()
        };
        let conv = Conv3d::new(c, c, [kt, k, k], &cfg, vb(seed, dt)).unwrap();
        let x = randn(&[1, c, t, h, h + 1], seed + 1, dt);
        check("conv3d", dt, || conv.forward(&x).unwrap());
    }

    #[test]
    fn norms_fast_match_reference(g in 1usize..4, cpg in 1usize..5, sp in 1usize..30,
                                  silu in any::<bool>(), d in 0u8..3, seed in 0u64..1000) {
        let dt = dtype_of(d);
        let c = g * cpg;
        let gn = GroupNorm::new(g, c, 1e-5, vb(seed, dt)).unwrap();
        let x = randn(&[2, c, sp, 3], seed + 1, dt);
        check("group_norm", dt, || if silu { gn.forward_silu(&x).unwrap() } else { gn.forward(&x).unwrap() });
        let ln = LayerNorm::new(c, 1e-5, true, vb(seed + 2, dt)).unwrap();
        let y = randn(&[3, sp, c], seed + 3, dt);
        check("layer_norm", dt, || ln.forward(&y).unwrap());
        let rn = RmsNorm::new(c, 1e-6, vb(seed + 4, dt)).unwrap();
        check("rms_norm", dt, || rn.forward(&y).unwrap());
    }

    #[test]
    fn activations_fast_match_reference(n in 1usize..200, d in 0u8..3, seed in 0u64..1000) {
        let dt = dtype_of(d);
        let x = (randn(&[3, 2 * n], seed, dt) * 4.0).unwrap();
        for a in [Activation::Silu, Activation::Gelu, Activation::Relu, Activation::Mish,
                  Activation::QuickGelu, Activation::GeluTanh] {
            check(&format!("{a:?}"), dt, || a.forward(&x).unwrap());
        }
        check("geglu", dt, || vidgen_video_nn::geglu(&x).unwrap());
        check("swiglu", dt, || vidgen_video_nn::swiglu(&x).unwrap());
    }

    #[test]
    fn attention_fast_matches_reference(heads in 1usize..4, hd in 1usize..9, n in 1usize..24,
                                        m in 1usize..24, cross in any::<bool>(),
                                        causal in any::<bool>(), d in 0u8..3,
                                        seed in 0u64..1000) {
        let dt = dtype_of(d);
        let e = heads * hd;
        let mut cfg = MhaConfig::clip(e, heads);
        cfg.kv_dim = cross.then_some(5);
        let mha = MultiHeadAttention::new(&cfg, vb(seed, dt)).unwrap();
        let x = randn(&[2, n, e], seed + 1, dt);
        let ctx = randn(&[2, m, 5], seed + 2, dt);
        let c = cross.then_some(&ctx);
        check("mha", dt, || mha.forward(&x, c, None, causal && !cross).unwrap());
        let acfg = AttentionConfig::new(e, cross.then_some(5), heads, hd);
        let att = Attention::new(&acfg, vb(seed + 3, dt)).unwrap();
        check("diffusers attention", dt, || att.forward(&x, c).unwrap());
    }
}

#[test]
fn resnet_and_vae_fast_match_reference() {
    for (d, seed) in [(0u8, 1u64), (1, 2), (2, 3)] {
        let dt = dtype_of(d);
        let cfg = ResnetBlock2DConfig::new(8, 16).temb(Some(12)).groups(4);
        let r = ResnetBlock2D::new(&cfg, vb(seed, dt)).unwrap();
        let x = randn(&[2, 8, 6, 5], seed, dt);
        let t = randn(&[2, 12], seed + 9, dt);
        check("resnet", dt, || r.forward(&x, Some(&t)).unwrap());
        let (enc, dec) = vae_configs(true);
        let e = Encoder::new(&enc, vb(seed, dt).pp("encoder")).unwrap();
        let img = randn(&[1, 3, 16, 12], seed + 4, dt);
        check("vae encoder", dt, || e.forward(&img).unwrap());
        let dcd = Decoder::new(&dec, vb(seed, dt).pp("decoder")).unwrap();
        let z = randn(&[1, 4, 8, 6], seed + 5, dt);
        check("vae decoder", dt, || dcd.forward(&z).unwrap());
    }
}

#[test]
fn embedding_looks_up_rows_and_rejects_bad_ids() {
    let e = Embedding::new(10, 4, vb(1, DType::F32)).unwrap();
    let ids = Tensor::new(&[[3u32, 0], [9, 3]], &Device::Cpu).unwrap();
    let y = e.forward(&ids).unwrap();
    assert_eq!(y.dims(), &[2, 2, 4]);
    let w = e.weight().to_vec2::<f32>().unwrap();
    assert_eq!(
        y.get(1).unwrap().get(0).unwrap().to_vec1::<f32>().unwrap(),
        w[9]
    );
    let bad = Tensor::new(&[10u32], &Device::Cpu).unwrap();
    assert!(e.forward(&bad).is_err());
    let float = Tensor::new(&[1f32], &Device::Cpu).unwrap();
    assert!(e.forward(&float).is_err());
}

/// A builder backend that records every key a constructor asks for (values: zeros).
#[derive(Clone, Default)]
struct Keys(Arc<Mutex<BTreeSet<String>>>);

impl SimpleBackend for Keys {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.lock().unwrap().insert(name.to_string());
        Tensor::zeros(s, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no shape for {name}")
    }
    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}

fn keys_of(build: impl FnOnce(VarBuilder)) -> BTreeSet<String> {
    let k = Keys::default();
    build(VarBuilder::from_backend(
        Box::new(k.clone()),
        DType::F32,
        Device::Cpu,
    ));
    let out = k.0.lock().unwrap().clone();
    out
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn layer_keys_are_the_references() {
    // torch.nn / diffusers / transformers parameter names.
    assert_eq!(
        keys_of(|vb| drop(Linear::new(3, 2, true, vb).unwrap())),
        set(&["weight", "bias"])
    );
    assert_eq!(
        keys_of(|vb| drop(Linear::new(3, 2, false, vb).unwrap())),
        set(&["weight"])
    );
    assert_eq!(
        keys_of(|vb| drop(RmsNorm::new(3, 1e-6, vb).unwrap())),
        set(&["weight"])
    );
    assert_eq!(
        keys_of(|vb| drop(Embedding::new(3, 2, vb).unwrap())),
        set(&["weight"])
    );
    assert_eq!(
        keys_of(|vb| drop(MultiHeadAttention::new(&MhaConfig::clip(4, 2), vb).unwrap())),
        set(&[
            "q_proj.weight",
            "q_proj.bias",
            "k_proj.weight",
            "k_proj.bias",
            "v_proj.weight",
            "v_proj.bias",
            "out_proj.weight",
            "out_proj.bias"
        ])
    );
    assert_eq!(
        keys_of(|vb| drop(Attention::new(&AttentionConfig::new(4, Some(6), 2, 2), vb).unwrap())),
        set(&[
            "to_q.weight",
            "to_k.weight",
            "to_v.weight",
            "to_out.0.weight",
            "to_out.0.bias"
        ])
    );
}

fn vae_configs(attn: bool) -> (EncoderConfig, DecoderConfig) {
    let enc = EncoderConfig {
        in_channels: 3,
        latent_channels: 4,
        block_out_channels: vec![8, 16],
        attention: if attn { vec![false, true] } else { vec![] },
        layers_per_block: 1,
        norm_num_groups: 4,
        act: Activation::Silu,
        double_z: true,
        mid_block_add_attention: true,
    };
    let dec = DecoderConfig {
        latent_channels: 4,
        out_channels: 3,
        block_out_channels: vec![8, 16],
        attention: if attn { vec![true, false] } else { vec![] },
        layers_per_block: 1,
        norm_num_groups: 4,
        act: Activation::Silu,
        mid_block_add_attention: true,
        spatial_norm: None,
    };
    (enc, dec)
}

/// The keys of a real diffusers checkpoint (a vendored fixture) under `prefix`.
fn checkpoint_keys(file: &str, prefix: &str) -> BTreeSet<String> {
    let path = video_testkit::fixtures_root().join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (n, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let _ = n;
    meta.tensors()
        .keys()
        .filter_map(|k| k.strip_prefix(prefix).map(String::from))
        .collect()
}

#[test]
fn vae_encoder_decoder_keys_are_diffusers() {
    // The sd_vae fixture is an AutoencoderKL saved by diffusers (2 levels, 8 / 16 channels,
    // 4 groups): its encoder / decoder keys are what Encoder / Decoder must ask for.
    let (enc, dec) = vae_configs(false);
    let want_e = checkpoint_keys(
        "sd_vae/base/model/diffusion_pytorch_model.safetensors",
        "encoder.",
    );
    assert!(!want_e.is_empty());
    assert_eq!(keys_of(|vb| drop(Encoder::new(&enc, vb).unwrap())), want_e);
    let want_d = checkpoint_keys(
        "sd_vae/base/model/diffusion_pytorch_model.safetensors",
        "decoder.",
    );
    assert_eq!(keys_of(|vb| drop(Decoder::new(&dec, vb).unwrap())), want_d);
    // VQModel's encoder (no double_z) from the vqmodel fixture.
    let vq_enc = EncoderConfig {
        double_z: false,
        ..enc
    };
    let want = checkpoint_keys(
        "vqmodel/base/model/diffusion_pytorch_model.safetensors",
        "encoder.",
    );
    assert_eq!(keys_of(|vb| drop(Encoder::new(&vq_enc, vb).unwrap())), want);
}
