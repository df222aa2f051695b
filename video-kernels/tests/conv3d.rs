//! conv3d: PyTorch parity on every `conv3d` fixture (forward and backward), fast kernels against
//! the plain-ops reference over random shapes (proptest), and bad-input errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use video_testkit::{assert_close, fixtures, take};
use vidgen_video_kernels::{conv3d, conv3d_reference, Conv3dOpts};

fn max_abs(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn arr3(f: &video_testkit::Fixture, key: &str, default: usize) -> [usize; 3] {
    match f.meta_at(&format!("opts/{key}")) {
        Some(v) => {
            let a: Vec<usize> = v
                .as_array()
                .unwrap_or_else(|| panic!("{}: opts.{key} not an array", f.id()))
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            [a[0], a[1], a[2]]
        }
        None => [default; 3],
    }
}

/// The output of `op(x, w, bias)` and the gradients of `Σ y·dy` w.r.t. x, w and bias.
type Grads = (Tensor, Tensor, Tensor, Option<Tensor>);

fn run_with_grads(
    op: fn(&Tensor, &Tensor, Option<&Tensor>, &Conv3dOpts) -> vidgen_video_core::Result<Tensor>,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    dy: &Tensor,
    opts: &Conv3dOpts,
) -> (Tensor, Grads) {
    let xv = Var::from_tensor(x).unwrap();
    let wv = Var::from_tensor(w).unwrap();
    let bv = bias.map(|b| Var::from_tensor(b).unwrap());
    let y = op(
        xv.as_tensor(),
        wv.as_tensor(),
        bv.as_ref().map(|b| b.as_tensor()),
        opts,
    )
    .unwrap();
    let loss = (&y * dy).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let dx = grads.get(xv.as_tensor()).expect("no dx").clone();
    let dw = grads.get(wv.as_tensor()).expect("no dw").clone();
    let db = bv.map(|b| grads.get(b.as_tensor()).expect("no dbias").clone());
    (y.clone(), (y, dx, dw, db))
}

/// The fixture rule: `max_abs(got − ref) ≤ atol + rtol·max_abs(ref)` per tensor.
fn tensor_tol(want: &Tensor, atol: f64, rtol: f64) -> f64 {
    atol + rtol * max_abs(want)
}

#[test]
fn conv3d_matches_pytorch_fixtures() {
    let all = fixtures("conv3d");
    for f in &all {
        let inp = f.inputs();
        let out = f.outputs();
        let what = f.id();
        let x = take(&inp, "x", &what);
        let w = take(&inp, "w", &what);
        let dy = take(&inp, "dy", &what);
        let bias = match f.meta_at("opts/bias").and_then(|v| v.as_bool()) {
            Some(true) => Some(take(&inp, "bias", &what)),
            Some(false) => {
                assert!(
                    !inp.contains_key("bias"),
                    "{what}: opts.bias is false but a bias is stored"
                );
                None
            }
            None => inp.get("bias"),
        };
        let opts = Conv3dOpts {
            stride: arr3(f, "stride", 1),
            padding: arr3(f, "padding", 0),
            dilation: arr3(f, "dilation", 1),
            groups: f
                .meta_at("opts/groups")
                .and_then(|v| v.as_u64())
                .unwrap_or(1) as usize,
        };
        let rtol = f
            .meta_at("tolerance/rtol")
            .and_then(|v| v.as_f64())
            .unwrap_or(1e-5);
        let atol = f
            .meta_at("tolerance/atol")
            .and_then(|v| v.as_f64())
            .unwrap_or(1e-5);
        let (_, (y, dx, dw, db)) = run_with_grads(conv3d, x, w, bias, dy, &opts);
        let (_, (ry, rdx, rdw, rdb)) = run_with_grads(conv3d_reference, x, w, bias, dy, &opts);
        let mut fast = vec![("y", y), ("dx", dx), ("dw", dw)];
        let mut twin = vec![("y", ry), ("dx", rdx), ("dw", rdw)];
        fast.extend(db.map(|t| ("dbias", t)));
        twin.extend(rdb.map(|t| ("dbias", t)));
        // Every output the fixture records is compared: one we do not compute fails the test.
        let listed = listed_outputs(f);
        assert!(!listed.is_empty(), "{what}: meta.json lists no outputs");
        let mut p = f.parity();
        let mut r = Worst::default();
        for name in &listed {
            let want = take(&out, name, &what);
            let tol = tensor_tol(want, atol, rtol);
            let find = |v: &[(&str, Tensor)]| {
                v.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.clone())
                    .unwrap_or_else(|| {
                        panic!("{what}: output `{name}` is listed in meta.json but not computed")
                    })
            };
            p.check(name, &find(&fast), want, tol, 0.0);
            // The reference twin must agree with PyTorch too.
            r.check(&format!("{what} reference {name}"), &find(&twin), want, tol);
        }
        p.finish();
        r.finish(&what);
    }
}

/// The output tensors a fixture's meta.json lists (`files/outputs.safetensors`), sorted.
fn listed_outputs(f: &video_testkit::Fixture) -> Vec<String> {
    let mut v: Vec<String> = f
        .meta_at("files/outputs.safetensors")
        .and_then(|m| m.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The worst figures of the reference twin over one fixture's tensors; prints a
/// `reference-parity <kind>/<name> …` line (not a `parity` line: that one is the fast path's).
#[derive(Default)]
struct Worst {
    max_abs: f64,
    max_rel: f64,
    compared: usize,
}

impl Worst {
    fn check(&mut self, what: &str, got: &Tensor, want: &Tensor, tol: f64) {
        let c = assert_close(what, got, want, tol, 0.0);
        self.max_abs = self.max_abs.max(c.max_abs);
        self.max_rel = self.max_rel.max(c.max_rel);
        self.compared += 1;
    }

    fn finish(self, id: &str) {
        assert!(
            self.compared > 0,
            "{id}: the reference twin compared nothing"
        );
        println!(
            "reference-parity {id} max_abs={:.3e} max_rel={:.3e}",
            self.max_abs, self.max_rel
        );
    }
}

/// One random conv3d problem.
#[derive(Debug, Clone)]
struct Case {
    x: [usize; 5],
    w: [usize; 5],
    bias: bool,
    opts: Conv3dOpts,
}

/// `kind`: 0 general, 1 depthwise (with channel multiplier), 2 temporal `(k,1,1)`, 3 pointwise.
fn make_case(kind: usize, seed: u64, wide: bool) -> Case {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let b: usize = r.random_range(1..=2);
    let mut n: [usize; 3] = [
        r.random_range(1..=5),
        r.random_range(1..=7),
        r.random_range(1..=7),
    ];
    let mut k: [usize; 3] = [
        r.random_range(1..=3),
        r.random_range(1..=3),
        r.random_range(1..=3),
    ];
    let mut stride: [usize; 3] = [
        r.random_range(1..=2),
        r.random_range(1..=2),
        r.random_range(1..=3),
    ];
    let mut dil: [usize; 3] = [
        r.random_range(1..=2),
        r.random_range(1..=2),
        r.random_range(1..=2),
    ];
    let mut pad: [usize; 3] = [
        r.random_range(0..=2),
        r.random_range(0..=2),
        r.random_range(0..=2),
    ];
    let (cin, cout, groups) = match kind {
        1 => {
            let c = r.random_range(1..=5);
            (c, c * r.random_range(1..=2), c)
        }
        _ => {
            let g = r.random_range(1..=2);
            (g * r.random_range(1..=3), g * r.random_range(1..=3), g)
        }
    };
    if kind == 2 || kind == 3 {
        k[1] = 1;
        k[2] = 1;
        stride[1] = 1;
        stride[2] = 1;
        pad[1] = 0;
        pad[2] = 0;
        dil[1] = 1;
        dil[2] = 1;
        n[1] = r.random_range(1..=9);
        if kind == 3 {
            k[0] = 1;
            pad[0] = 0;
            stride[0] = r.random_range(1..=2);
        }
    }
    // Make the dilated kernel fit: grow the padding (or, failing that, the input).
    for d in 0..3 {
        let span = dil[d] * (k[d] - 1) + 1;
        if span > n[d] + 2 * pad[d] {
            if kind >= 2 && d > 0 {
                n[d] = span;
            } else {
                pad[d] = (span - n[d]).div_ceil(2);
            }
        }
    }
    if kind == 1 && wide {
        // The register-blocked depthwise kernel: rows of 1–4 vectors of 16 and several blocks,
        // unit W stride, padding up to past the kernel span (a cropping input gradient), and
        // 1–9 taps along W (the weight-gradient kernel unrolls up to 8 and falls back above).
        n[2] = r.random_range(1..=80);
        k[2] = r.random_range(1..=9);
        stride[2] = 1;
        pad[2] = r.random_range(0..=3);
        let span = dil[2] * (k[2] - 1) + 1;
        if span > n[2] + 2 * pad[2] {
            pad[2] = (span - n[2]).div_ceil(2);
        }
    }
    Case {
        x: [b, cin, n[0], n[1], n[2]],
        w: [cout, cin / groups, k[0], k[1], k[2]],
        bias: r.random_bool(0.5),
        opts: Conv3dOpts {
            stride,
            padding: pad,
            dilation: dil,
            groups,
        },
    }
}

fn tensors(c: &Case, seed: u64) -> (Tensor, Tensor, Option<Tensor>, Tensor) {
    let dev = Device::Cpu;
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut randn = |dims: &[usize], scale: f32| {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (r.random::<f32>() * 2.0 - 1.0) * scale)
            .collect();
        Tensor::from_vec(v, dims, &dev).unwrap()
    };
    let x = randn(&c.x, 1.0);
    let w = randn(&c.w, 0.5);
    let bias = c.bias.then(|| randn(&[c.w[0]], 0.5));
    let o = c
        .opts
        .output_size([c.x[2], c.x[3], c.x[4]], [c.w[2], c.w[3], c.w[4]])
        .unwrap();
    let dy = randn(&[c.x[0], c.w[0], o[0], o[1], o[2]], 1.0);
    (x, w, bias, dy)
}

fn check_case(c: &Case, seed: u64) {
    let (x, w, bias, dy) = tensors(c, seed);
    let (_, (y, dx, dw, db)) = run_with_grads(conv3d, &x, &w, bias.as_ref(), &dy, &c.opts);
    let (_, (ry, rdx, rdw, rdb)) =
        run_with_grads(conv3d_reference, &x, &w, bias.as_ref(), &dy, &c.opts);
    let ctx = format!("{c:?}");
    for (name, got, want) in [("y", &y, &ry), ("dx", &dx, &rdx), ("dw", &dw, &rdw)] {
        let tol = tensor_tol(want, 1e-6, 1e-5);
        assert_close(&format!("{ctx} {name}"), got, want, tol, 0.0);
    }
    if let (Some(db), Some(_)) = (db, rdb) {
        // dbias is Σ dy over batch and positions: the truth is that sum in f64 (the reference's
        // f32 sum of hundreds of terms of both signs is itself off by ~1e-5 relative).
        let truth = dy
            .to_dtype(DType::F64)
            .unwrap()
            .sum(4)
            .unwrap()
            .sum(3)
            .unwrap()
            .sum(2)
            .unwrap()
            .sum(0)
            .unwrap();
        let db64 = db.to_dtype(DType::F64).unwrap();
        assert_close(
            &format!("{ctx} dbias"),
            &db64,
            &truth,
            tensor_tol(&truth, 1e-6, 1e-5),
            0.0,
        );
    }
    // Half precision forward: same (rounded) inputs, computed in f32 by the reference.
    for (dt, rel) in [(DType::F16, 2e-3), (DType::BF16, 1.6e-2)] {
        let xh = x.to_dtype(dt).unwrap();
        let wh = w.to_dtype(dt).unwrap();
        let bh = bias.as_ref().map(|b| b.to_dtype(dt).unwrap());
        let got = conv3d(&xh, &wh, bh.as_ref(), &c.opts).unwrap();
        assert_eq!(got.dtype(), dt);
        let want = conv3d_reference(
            &xh.to_dtype(DType::F32).unwrap(),
            &wh.to_dtype(DType::F32).unwrap(),
            bh.map(|b| b.to_dtype(DType::F32).unwrap()).as_ref(),
            &c.opts,
        )
        .unwrap();
        let tol = tensor_tol(&want, 1e-6, rel);
        assert_close(&format!("{ctx} {dt:?} y"), &got, &want, tol, 0.0);
        // Half precision backward: gradients in the input dtype, f32 accumulation inside.
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let dyh = dy.to_dtype(dt).unwrap();
        let bf = bh_f32(&bias, dt);
        let (_, (_, dx, dw, db)) = run_with_grads(
            conv3d,
            &xh,
            &wh,
            bias.as_ref().map(|b| b.to_dtype(dt).unwrap()).as_ref(),
            &dyh,
            &c.opts,
        );
        let (_, (_, rdx, rdw, rdb)) = run_with_grads(
            conv3d_reference,
            &f(&xh),
            &f(&wh),
            bf.as_ref(),
            &f(&dyh),
            &c.opts,
        );
        for (name, got, want) in [("dx", &dx, &rdx), ("dw", &dw, &rdw)] {
            assert_eq!(got.dtype(), dt, "{name}");
            let tol = tensor_tol(want, 1e-6, rel);
            assert_close(&format!("{ctx} {dt:?} {name}"), &f(got), want, tol, 0.0);
        }
        if let (Some(db), Some(rdb)) = (db, rdb) {
            let tol = tensor_tol(&rdb, 1e-6, rel);
            assert_close(&format!("{ctx} {dt:?} dbias"), &f(&db), &rdb, tol, 0.0);
        }
    }
}

/// `bias` rounded to `dt`, back in f32 (the reference's view of a half-precision bias).
fn bh_f32(bias: &Option<Tensor>, dt: DType) -> Option<Tensor> {
    bias.as_ref()
        .map(|b| b.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap())
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    #[test]
    fn conv3d_matches_reference(kind in 0usize..4, seed in any::<u64>()) {
        let c = make_case(kind, seed, false);
        check_case(&c, seed);
    }

    #[test]
    fn depthwise_wide_rows_match_reference(seed in any::<u64>()) {
        let c = make_case(1, seed, true);
        check_case(&c, seed);
    }
}

/// Cases proptest once shrank failures to (formerly `conv3d.proptest-regressions`, which the
/// seeded configuration no longer reads): `(kind, seed, wide)`.
#[test]
fn conv3d_matches_reference_past_failures() {
    for (kind, seed, wide) in [
        (1, 12_469_361_806_348_965_757u64, false),
        (1, 515_280_867_452_295_838, true),
        (0, 1_771_139_008_709_528_523, false),
    ] {
        check_case(&make_case(kind, seed, wide), seed);
    }
}

#[test]
fn conv3d_matches_reference_fixed_cases() {
    // Shapes a random draw may miss: 1-frame videos, larger channel counts (several gemm
    // blocks), spatial sizes above the general path's tile width, odd strides.
    let cases = [
        Case {
            x: [1, 3, 1, 5, 4],
            w: [4, 3, 3, 3, 3],
            bias: true,
            opts: Conv3dOpts {
                padding: [1, 1, 1],
                ..Default::default()
            },
        },
        Case {
            x: [2, 20, 3, 9, 40],
            w: [18, 10, 2, 3, 3],
            bias: true,
            opts: Conv3dOpts {
                padding: [1, 1, 1],
                groups: 2,
                ..Default::default()
            },
        },
        Case {
            x: [1, 17, 5, 6, 7],
            w: [34, 1, 3, 3, 3],
            bias: false,
            opts: Conv3dOpts {
                padding: [1, 2, 1],
                stride: [1, 2, 3],
                groups: 17,
                ..Default::default()
            },
        },
        Case {
            x: [1, 24, 7, 5, 6],
            w: [40, 24, 3, 1, 1],
            bias: true,
            opts: Conv3dOpts {
                padding: [1, 0, 0],
                stride: [2, 1, 1],
                dilation: [2, 1, 1],
                ..Default::default()
            },
        },
        Case {
            x: [2, 33, 2, 5, 3],
            w: [31, 33, 1, 1, 1],
            bias: true,
            opts: Conv3dOpts::default(),
        },
        Case {
            x: [1, 4, 6, 9, 9],
            w: [6, 4, 3, 3, 3],
            bias: false,
            opts: Conv3dOpts {
                padding: [2, 0, 3],
                stride: [2, 2, 2],
                dilation: [2, 1, 3],
                ..Default::default()
            },
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        check_case(c, i as u64);
    }
}

fn err_text(x: &[usize], w: &[usize], bias: Option<&[usize]>, opts: &Conv3dOpts) -> String {
    let dev = Device::Cpu;
    let xt = Tensor::zeros(x, DType::F32, &dev).unwrap();
    let wt = Tensor::zeros(w, DType::F32, &dev).unwrap();
    let bt = bias.map(|b| Tensor::zeros(b, DType::F32, &dev).unwrap());
    let e = conv3d(&xt, &wt, bt.as_ref(), opts).expect_err("expected an error");
    let e2 = conv3d_reference(&xt, &wt, bt.as_ref(), opts).expect_err("expected an error");
    assert_eq!(e.to_string(), e2.to_string());
    e.to_string()
}

#[test]
fn bad_inputs_are_typed_errors_naming_both_shapes() {
    let d = Conv3dOpts::default();
    let both = |m: &str, x: &[usize], w: &[usize]| {
        assert!(m.contains(&format!("{x:?}")), "{m} lacks {x:?}");
        assert!(m.contains(&format!("{w:?}")), "{m} lacks {w:?}");
    };
    // wrong ranks
    let m = err_text(&[1, 2, 3, 4], &[2, 2, 1, 1, 1], None, &d);
    both(&m, &[1, 2, 3, 4], &[2, 2, 1, 1, 1]);
    assert!(m.contains("rank 5"), "{m}");
    let m = err_text(&[1, 2, 3, 4, 4], &[2, 2, 1, 1], None, &d);
    both(&m, &[1, 2, 3, 4, 4], &[2, 2, 1, 1]);
    // channel mismatch
    let m = err_text(&[1, 3, 3, 4, 4], &[2, 2, 1, 1, 1], None, &d);
    both(&m, &[1, 3, 3, 4, 4], &[2, 2, 1, 1, 1]);
    assert!(m.contains("channel mismatch"), "{m}");
    // groups not dividing channels
    let g = Conv3dOpts { groups: 2, ..d };
    let m = err_text(&[1, 3, 3, 4, 4], &[2, 1, 1, 1, 1], None, &g);
    both(&m, &[1, 3, 3, 4, 4], &[2, 1, 1, 1, 1]);
    assert!(m.contains("groups"), "{m}");
    let m = err_text(&[1, 4, 3, 4, 4], &[3, 2, 1, 1, 1], None, &g);
    assert!(m.contains("divide"), "{m}");
    let m = err_text(
        &[1, 4, 3, 4, 4],
        &[4, 2, 1, 1, 1],
        None,
        &Conv3dOpts { groups: 0, ..d },
    );
    assert!(m.contains("groups"), "{m}");
    // kernel larger than the padded input
    let m = err_text(&[1, 2, 2, 4, 4], &[2, 2, 3, 3, 3], None, &d);
    both(&m, &[1, 2, 2, 4, 4], &[2, 2, 3, 3, 3]);
    assert!(m.contains("kernel larger than padded input"), "{m}");
    let dil = Conv3dOpts {
        dilation: [1, 3, 1],
        padding: [1, 1, 1],
        ..d
    };
    let m = err_text(&[1, 2, 3, 4, 4], &[2, 2, 3, 3, 3], None, &dil);
    assert!(m.contains("kernel larger than padded input"), "{m}");
    // zero stride / dilation
    let m = err_text(
        &[1, 2, 3, 4, 4],
        &[2, 2, 1, 1, 1],
        None,
        &Conv3dOpts {
            stride: [1, 0, 1],
            ..d
        },
    );
    assert!(m.contains("stride"), "{m}");
    let m = err_text(
        &[1, 2, 3, 4, 4],
        &[2, 2, 1, 1, 1],
        None,
        &Conv3dOpts {
            dilation: [0, 1, 1],
            ..d
        },
    );
    assert!(m.contains("dilation"), "{m}");
    // empty tensors
    let m = err_text(&[1, 2, 0, 4, 4], &[2, 2, 1, 1, 1], None, &d);
    both(&m, &[1, 2, 0, 4, 4], &[2, 2, 1, 1, 1]);
    // bias of the wrong shape
    let m = err_text(&[1, 2, 3, 4, 4], &[2, 2, 1, 1, 1], Some(&[3]), &d);
    assert!(m.contains("[3]") && m.contains("[2, 2, 1, 1, 1]"), "{m}");
    // dtypes
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 2, 3, 4, 4), DType::F16, &dev).unwrap();
    let w = Tensor::zeros((2, 2, 1, 1, 1), DType::F32, &dev).unwrap();
    assert!(conv3d(&x, &w, None, &d)
        .unwrap_err()
        .to_string()
        .contains("dtype"));
    let xi = Tensor::zeros((1, 2, 3, 4, 4), DType::U32, &dev).unwrap();
    let wi = Tensor::zeros((2, 2, 1, 1, 1), DType::U32, &dev).unwrap();
    assert!(conv3d(&xi, &wi, None, &d)
        .unwrap_err()
        .to_string()
        .contains("dtype"));
}

#[test]
fn output_size_formula() {
    let o = Conv3dOpts {
        stride: [2, 1, 3],
        padding: [0, 1, 2],
        dilation: [1, 2, 1],
        groups: 1,
    };
    // floor((n + 2p − d(k−1) − 1)/s) + 1
    assert_eq!(o.output_size([6, 7, 8], [2, 3, 3]), Some([3, 5, 4]));
    assert_eq!(o.output_size([1, 7, 8], [2, 3, 3]), None);
    assert_eq!(
        Conv3dOpts {
            stride: [0, 1, 1],
            ..o
        }
        .output_size([6, 7, 8], [1, 1, 1]),
        None
    );
}

/// A frozen kernel and bias (plain tensors) get no gradient; the input's is unchanged.
#[test]
fn frozen_weights_skip_the_weight_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut r = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        Tensor::from_vec(
            (0..n)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect::<Vec<_>>(),
            shape,
            &Device::Cpu,
        )
        .unwrap()
    };
    let x = r(&[1, 3, 3, 5, 5]);
    let w = r(&[4, 3, 3, 3, 3]);
    let b = r(&[4]);
    let opts = Conv3dOpts {
        padding: [1, 1, 1],
        ..Conv3dOpts::default()
    };
    let xv = Var::from_tensor(&x).unwrap();
    let (wv, bv) = (Var::from_tensor(&w).unwrap(), Var::from_tensor(&b).unwrap());
    let frozen = conv3d(xv.as_tensor(), &w, Some(&b), &opts)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    let tracked = conv3d(xv.as_tensor(), wv.as_tensor(), Some(bv.as_tensor()), &opts)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    let (gf, gt) = (frozen.backward().unwrap(), tracked.backward().unwrap());
    assert!(gf.get(&w).is_none() && gf.get(&b).is_none());
    assert!(gt.get(wv.as_tensor()).is_some() && gt.get(bv.as_tensor()).is_some());
    let (a, c) = (
        gf.get(xv.as_tensor()).unwrap(),
        gt.get(xv.as_tensor()).unwrap(),
    );
    assert_eq!(
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        c.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}
