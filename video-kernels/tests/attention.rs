#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `attention` against the PyTorch fixtures (forward and gradients), against
//! `attention_reference` on random shapes (proptest), and its argument errors.

use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use video_testkit::{assert_close, fixtures, take};
use vidgen_video_kernels::{attention, attention_reference, AttentionOpts};

type AttnFn = fn(&Tensor, &Tensor, &Tensor, &AttentionOpts) -> vidgen_video_core::Result<Tensor>;

/// Output and the gradients of `Σ out ∘ dout` w.r.t. q, k, v.
fn run_with_grads(
    f: AttnFn,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    dout: &Tensor,
    opts: &AttentionOpts,
) -> [Tensor; 4] {
    let (qv, kv, vv) = (
        Var::from_tensor(q).unwrap(),
        Var::from_tensor(k).unwrap(),
        Var::from_tensor(v).unwrap(),
    );
    let out = f(qv.as_tensor(), kv.as_tensor(), vv.as_tensor(), opts).unwrap();
    let grads = (&out * dout)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = |x: &Var| grads.get(x.as_tensor()).expect("no gradient").clone();
    [out, g(&qv), g(&kv), g(&vv)]
}

#[test]
fn fixture_parity_forward_and_backward() {
    let all = fixtures("attention");
    for fx in &all {
        let inputs = fx.inputs();
        let outputs = fx.outputs();
        let what = fx.id();
        let opts = AttentionOpts {
            scale: fx.meta_at("opts/scale").and_then(|s| s.as_f64()),
            causal: fx
                .meta_at("opts/causal")
                .and_then(|c| c.as_bool())
                .unwrap_or(false),
            mask: match fx.meta_at("opts/mask").and_then(|m| m.as_bool()) {
                Some(true) => Some(take(&inputs, "mask", &what).clone()),
                _ => {
                    assert!(
                        !inputs.contains_key("mask"),
                        "{what}: a mask is stored but opts.mask is not true"
                    );
                    None
                }
            },
        };
        // The one causal convention `attention` implements.
        if let Some(a) = fx.meta_at("opts/causal_alignment").and_then(|a| a.as_str()) {
            assert_eq!(
                a, "bottom_right",
                "{what}: causal alignment `{a}` is not supported"
            );
        }
        let atol = fx
            .meta_at("tolerance/atol")
            .and_then(|x| x.as_f64())
            .unwrap_or(1e-5);
        let rtol = fx
            .meta_at("tolerance/rtol")
            .and_then(|x| x.as_f64())
            .unwrap_or(1e-5);
        let [q, k, v, dout] = ["q", "k", "v", "dout"].map(|n| take(&inputs, n, &what).clone());
        let got = run_with_grads(attention, &q, &k, &v, &dout, &opts);
        let twin = run_with_grads(attention_reference, &q, &k, &v, &dout, &opts);
        let names = ["out", "dq", "dk", "dv"];
        // Every output the fixture records is one of the four compared here.
        for listed in listed_outputs(fx) {
            assert!(
                names.contains(&listed.as_str()),
                "{what}: output `{listed}` is listed in meta.json but not compared"
            );
        }
        let mut parity = fx.parity();
        let (mut ref_abs, mut ref_rel) = (0f64, 0f64);
        for ((name, g), r) in names.iter().zip(got.iter()).zip(twin.iter()) {
            let want = take(&outputs, name, &what);
            // The fixtures' rule: max_abs ≤ atol + rtol · max|ref|.
            let ref_max = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            let tol = atol + rtol * ref_max;
            parity.check(name, g, want, tol, 0.0);
            // The reference twin against PyTorch too, on its own line.
            let c = assert_close(&format!("{what} reference {name}"), r, want, tol, 0.0);
            ref_abs = ref_abs.max(c.max_abs);
            ref_rel = ref_rel.max(c.max_rel);
        }
        parity.finish();
        println!("reference-parity {what} max_abs={ref_abs:.3e} max_rel={ref_rel:.3e}");
    }
}

/// The output tensors a fixture's meta.json lists (`files/outputs.safetensors`).
fn listed_outputs(f: &video_testkit::Fixture) -> Vec<String> {
    f.meta_at("files/outputs.safetensors")
        .and_then(|m| m.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Seeded N(0, 1) tensor.
fn randn(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| {
            // Box–Muller: rand_distr is not a dependency of this crate.
            let (u1, u2): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

#[derive(Debug, Clone)]
struct Case {
    b: usize,
    hkv: usize,
    group: usize,
    nq: usize,
    nk: usize,
    d: usize,
    causal: bool,
    /// 0: none, 1: random `[B, 1, Nq, Nk]`, 2: random `[1, Hq, Nq, Nk]`, 3: key padding `[B, 1, 1, Nk]` with -inf.
    mask: u8,
    scale: Option<f64>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            1usize..=2,
            1usize..=2,
            prop::sample::select(vec![1usize, 2, 3, 4]),
        ),
        (1usize..=70, 1usize..=300),
        prop::sample::select(vec![1usize, 3, 8, 16, 17, 40, 64, 80]),
        (
            any::<bool>(),
            0u8..4,
            prop::option::of(0.05f64..0.5),
            any::<u64>(),
        ),
    )
        .prop_map(
            |((b, hkv, group), (nq, nk), d, (causal, mask, scale, seed))| {
                // Bottom-right causal with Nq > Nk leaves the first rows without keys, where the
                // reference softmax gives NaN (the fused kernel gives 0): keep Nq ≤ Nk when causal.
                let (nq, nk) = if causal && nq > nk {
                    (nk, nq)
                } else {
                    (nq, nk)
                };
                Case {
                    b,
                    hkv,
                    group,
                    nq,
                    nk,
                    d,
                    causal,
                    mask,
                    scale,
                    seed,
                }
            },
        )
}

fn build(c: &Case) -> (Tensor, Tensor, Tensor, Tensor, AttentionOpts) {
    let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
    let hq = c.hkv * c.group;
    let q = randn(&mut rng, &[c.b, hq, c.nq, c.d]);
    let k = randn(&mut rng, &[c.b, c.hkv, c.nk, c.d]);
    let v = randn(&mut rng, &[c.b, c.hkv, c.nk, c.d]);
    let dout = randn(&mut rng, &[c.b, hq, c.nq, c.d]);
    let mask = match c.mask {
        1 => Some(randn(&mut rng, &[c.b, 1, c.nq, c.nk])),
        2 => Some(randn(&mut rng, &[1, hq, c.nq, c.nk])),
        3 => {
            // Batch b masks its last (b·3 mod Nk) keys; key 0 always stays visible.
            let data: Vec<f32> = (0..c.b)
                .flat_map(|b| {
                    let masked = (b * 3) % c.nk;
                    (0..c.nk).map(move |j| {
                        if j >= c.nk - masked {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            Some(Tensor::from_vec(data, (c.b, 1, 1, c.nk), &Device::Cpu).unwrap())
        }
        _ => None,
    };
    let opts = AttentionOpts {
        scale: c.scale,
        causal: c.causal,
        mask,
    };
    (q, k, v, dout, opts)
}

/// `|got − want| ≤ tol · max(1, max|want|)` everywhere.
fn close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    let got = got.to_dtype(DType::F32).unwrap();
    let want = want.to_dtype(DType::F32).unwrap();
    let ref_max = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    assert_close(what, &got, &want, tol * ref_max.max(1.0), 0.0);
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    #[test]
    fn matches_reference_forward_and_backward_f32(c in case()) {
        let (q, k, v, dout, opts) = build(&c);
        let got = run_with_grads(attention, &q, &k, &v, &dout, &opts);
        let want = run_with_grads(attention_reference, &q, &k, &v, &dout, &opts);
        for (name, (g, w)) in ["out", "dq", "dk", "dv"].iter().zip(got.iter().zip(want.iter())) {
            close(&format!("{c:?} {name}"), g, w, 1e-5);
        }
    }

    #[test]
    fn matches_reference_half_precision(c in case()) {
        let (q, k, v, _, opts) = build(&c);
        for (dt, tol) in [(DType::F16, 4e-3), (DType::BF16, 3e-2)] {
            let (qh, kh, vh) = (q.to_dtype(dt).unwrap(), k.to_dtype(dt).unwrap(), v.to_dtype(dt).unwrap());
            let got = attention(&qh, &kh, &vh, &opts).unwrap();
            assert_eq!(got.dtype(), dt);
            // The reference on the same rounded inputs, in f32.
            let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let want = attention_reference(&f(&qh), &f(&kh), &f(&vh), &opts).unwrap();
            close(&format!("{c:?} {dt:?}"), &got, &want, tol);
        }
    }

}

proptest! {
    // Two dtypes × two backward passes per case: 256 cases took 8.6 s (dev profile, on the
    // shared 2-core machine), 64 take about 2 s. The f32 backward above runs 256.
    #![proptest_config(video_testkit::proptest_config(64))]

    /// Backward in f16 / bf16: gradients come back in the input dtype and agree with the f32
    /// reference on the same rounded inputs within the dtype's precision.
    #[test]
    fn matches_reference_half_precision_backward(c in case()) {
        let (q, k, v, dout, opts) = build(&c);
        for (dt, tol) in [(DType::F16, 4e-3), (DType::BF16, 3e-2)] {
            let h = |t: &Tensor| t.to_dtype(dt).unwrap();
            let f = |t: &Tensor| h(t).to_dtype(DType::F32).unwrap();
            let got = run_with_grads(attention, &h(&q), &h(&k), &h(&v), &h(&dout), &opts);
            let want = run_with_grads(attention_reference, &f(&q), &f(&k), &f(&v), &f(&dout), &opts);
            for (name, (g, w)) in ["out", "dq", "dk", "dv"].iter().zip(got.iter().zip(want.iter())) {
                prop_assert_eq!(g.dtype(), dt);
                close(&format!("{c:?} {dt:?} {name}"), g, w, tol);
            }
        }
    }
}

#[test]
fn non_contiguous_inputs_and_broadcast_mask_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // [B, N, H, D] storage viewed as [B, H, N, D].
    let q = randn(&mut rng, &[2, 33, 4, 24]).transpose(1, 2).unwrap();
    let k = randn(&mut rng, &[2, 50, 2, 24]).transpose(1, 2).unwrap();
    let v = randn(&mut rng, &[2, 50, 2, 24]).transpose(1, 2).unwrap();
    assert!(!q.is_contiguous());
    for mask in [
        None,
        Some(randn(&mut rng, &[33, 50])),
        Some(randn(&mut rng, &[2, 4, 1, 50])),
        Some(randn(&mut rng, &[1, 1, 33, 1])),
    ] {
        let opts = AttentionOpts {
            scale: None,
            causal: true,
            mask,
        };
        let got = attention(&q, &k, &v, &opts).unwrap();
        let want = attention_reference(
            &q.contiguous().unwrap(),
            &k.contiguous().unwrap(),
            &v.contiguous().unwrap(),
            &opts,
        )
        .unwrap();
        close("non-contiguous", &got, &want, 1e-5);
    }
}

#[test]
fn causal_rows_without_keys_are_zero() {
    // Nq > Nk bottom-right: the first Nq − Nk queries see no key.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let q = randn(&mut rng, &[1, 1, 6, 8]);
    let k = randn(&mut rng, &[1, 1, 4, 8]);
    let v = randn(&mut rng, &[1, 1, 4, 8]);
    let out = attention(&q, &k, &v, &AttentionOpts::causal()).unwrap();
    let rows = out
        .squeeze(0)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert!(rows[0].iter().chain(rows[1].iter()).all(|&x| x == 0.0));
    let want = attention_reference(&q, &k, &v, &AttentionOpts::causal()).unwrap();
    close(
        "visible rows",
        &out.narrow(2, 2, 4).unwrap(),
        &want.narrow(2, 2, 4).unwrap(),
        1e-5,
    );
    let dout = q.ones_like().unwrap();
    let [_, dq, dk, dv] = run_with_grads(attention, &q, &k, &v, &dout, &AttentionOpts::causal());
    for g in [dq, dk, dv] {
        let finite = g
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|x| x.is_finite());
        assert!(finite);
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu).unwrap();
    let ok = AttentionOpts::default();
    let expect_err =
        |q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOpts, needles: &[&str]| {
            for f in [attention as AttnFn, attention_reference as AttnFn] {
                let e = f(q, k, v, opts).expect_err("must fail").to_string();
                for n in needles {
                    assert!(e.contains(n), "error `{e}` should mention `{n}`");
                }
            }
        };
    // Wrong rank.
    expect_err(
        &z(&[2, 5, 8]),
        &z(&[2, 1, 5, 8]),
        &z(&[2, 1, 5, 8]),
        &ok,
        &["q", "[2, 5, 8]"],
    );
    expect_err(
        &z(&[2, 1, 5, 8]),
        &z(&[1, 5, 8]),
        &z(&[1, 5, 8]),
        &ok,
        &["k", "[1, 5, 8]"],
    );
    // Hq not a multiple of Hkv.
    expect_err(
        &z(&[1, 3, 5, 8]),
        &z(&[1, 2, 5, 8]),
        &z(&[1, 2, 5, 8]),
        &ok,
        &["[1, 3, 5, 8]", "[1, 2, 5, 8]"],
    );
    // D mismatch, batch mismatch, k/v mismatch.
    expect_err(
        &z(&[1, 2, 5, 8]),
        &z(&[1, 2, 5, 9]),
        &z(&[1, 2, 5, 9]),
        &ok,
        &["[1, 2, 5, 8]", "[1, 2, 5, 9]"],
    );
    expect_err(
        &z(&[2, 2, 5, 8]),
        &z(&[1, 2, 5, 8]),
        &z(&[1, 2, 5, 8]),
        &ok,
        &["[2, 2, 5, 8]", "[1, 2, 5, 8]"],
    );
    expect_err(
        &z(&[1, 2, 5, 8]),
        &z(&[1, 2, 5, 8]),
        &z(&[1, 2, 6, 8]),
        &ok,
        &["[1, 2, 5, 8]", "[1, 2, 6, 8]"],
    );
    // Mask not broadcastable.
    let bad_mask = AttentionOpts {
        mask: Some(z(&[1, 2, 5, 7])),
        ..AttentionOpts::default()
    };
    expect_err(
        &z(&[1, 2, 5, 8]),
        &z(&[1, 2, 6, 8]),
        &z(&[1, 2, 6, 8]),
        &bad_mask,
        &["mask", "[1, 2, 5, 7]", "[1, 2, 5, 6]"],
    );
    let rank5 = AttentionOpts {
        mask: Some(z(&[1, 1, 1, 5, 6])),
        ..AttentionOpts::default()
    };
    expect_err(
        &z(&[1, 2, 5, 8]),
        &z(&[1, 2, 6, 8]),
        &z(&[1, 2, 6, 8]),
        &rank5,
        &["mask"],
    );
    // Dtype mismatch and unsupported dtype.
    let kh = z(&[1, 2, 5, 8]).to_dtype(DType::F16).unwrap();
    expect_err(&z(&[1, 2, 5, 8]), &kh, &kh, &ok, &["k", "F16", "F32"]);
    let q64 = z(&[1, 2, 5, 8]).to_dtype(DType::F64).unwrap();
    expect_err(&q64, &q64, &q64, &ok, &["q", "F64"]);
    // No keys.
    expect_err(
        &z(&[1, 2, 5, 8]),
        &z(&[1, 2, 0, 8]),
        &z(&[1, 2, 0, 8]),
        &ok,
        &["[1, 2, 0, 8]"],
    );
    // Empty queries are fine.
    assert_eq!(
        attention(&z(&[1, 2, 0, 8]), &z(&[1, 2, 5, 8]), &z(&[1, 2, 5, 8]), &ok)
            .unwrap()
            .dims(),
        &[1, 2, 0, 8]
    );
}

/// Keys and values read in place from a KV cache narrowed to its filled length (heads spaced
/// `max_len · D` apart) equal the contiguous computation, for decoding (one query, the direct
/// path) and for chunked prefill (the tiled path), and their gradients reach the cache buffers.
#[test]
fn narrowed_kv_cache_views_are_read_in_place() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (b, hkv, hq, max_len, d) = (2, 2, 4, 300, 24);
    let kbuf = randn(&mut rng, &[b, hkv, max_len, d]);
    let vbuf = randn(&mut rng, &[b, hkv, max_len, d]);
    for (nq, filled) in [(1, 1), (1, 257), (3, 100), (9, 299)] {
        let q = randn(&mut rng, &[b, hq, nq, d]);
        let k = kbuf.narrow(2, 0, filled).unwrap();
        let v = vbuf.narrow(2, 0, filled).unwrap();
        assert!(!k.is_contiguous() || filled == max_len);
        let opts = AttentionOpts::causal();
        let got = attention(&q, &k, &v, &opts).unwrap();
        let want = attention_reference(
            &q,
            &k.contiguous().unwrap(),
            &v.contiguous().unwrap(),
            &opts,
        )
        .unwrap();
        close(
            &format!("cache view nq {nq} filled {filled}"),
            &got,
            &want,
            1e-5,
        );
    }
    // Gradients through the view land in the right rows of the buffers.
    let (kv, vv) = (
        Var::from_tensor(&kbuf).unwrap(),
        Var::from_tensor(&vbuf).unwrap(),
    );
    let q = randn(&mut rng, &[b, hq, 2, d]);
    let out = attention(
        &q,
        &kv.as_tensor().narrow(2, 0, 40).unwrap(),
        &vv.as_tensor().narrow(2, 0, 40).unwrap(),
        &AttentionOpts::default(),
    )
    .unwrap();
    let g = out.sum_all().unwrap().backward().unwrap();
    let gk = g.get(kv.as_tensor()).unwrap();
    let tail = gk
        .narrow(2, 40, max_len - 40)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap();
    assert_eq!(tail.to_scalar::<f32>().unwrap(), 0.0);
    let head = gk
        .narrow(2, 0, 40)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap();
    assert!(head.to_scalar::<f32>().unwrap() > 0.0);
}
