//! The cases, one function per crate. Shapes and seeds mirror `../shared/peers/README.md`.

use candle_core::{Device, Tensor};
use vidgen_video_kernels::{
    attention, attention_reference, conv3d, conv3d_reference, AttentionOpts, Conv3dOpts,
};

use crate::{consume, randn, randn_var, Amount, Case, Work};

macro_rules! attn_case {
    ($name:literal, $shape:literal, $n:expr, $causal:expr) => {
        Case {
            krate: "video_kernels",
            name: $name,
            shape: $shape,
            amount: Some(Amount::Flops(attn_flops($n, $causal))),
            ours: |d| attn_fwd(d, $n, $causal, Impl::Ours),
            twins: vec![
                ("candle_flash_attn", |d| {
                    attn_fwd(d, $n, $causal, Impl::CandleFlash)
                }),
                ("reference", |d| attn_fwd(d, $n, $causal, Impl::Reference)),
            ],
            torch: Some($name),
        }
    };
}

/// Attention and conv3d.
pub fn video_kernels() -> Vec<Case> {
    vec![
        attn_case!(
            "attn_f32_b1h8n256d64",
            "q, k, v [1, 8, 256, 64]",
            256,
            false
        ),
        attn_case!(
            "attn_f32_b1h8n256d64_causal",
            "q, k, v [1, 8, 256, 64], causal",
            256,
            true
        ),
        attn_case!(
            "attn_f32_b1h8n1024d64",
            "q, k, v [1, 8, 1024, 64]",
            1024,
            false
        ),
        attn_case!(
            "attn_f32_b1h8n1024d64_causal",
            "q, k, v [1, 8, 1024, 64], causal",
            1024,
            true
        ),
        attn_case!(
            "attn_f32_b1h8n4096d64",
            "q, k, v [1, 8, 4096, 64]",
            4096,
            false
        ),
        attn_case!(
            "attn_f32_b1h8n4096d64_causal",
            "q, k, v [1, 8, 4096, 64], causal",
            4096,
            true
        ),
        Case {
            krate: "video_kernels",
            name: "attn_bwd_f32_b1h8n1024d64",
            shape: "q, k, v, dout [1, 8, 1024, 64]; forward + backward (dq, dk, dv)",
            amount: Some(Amount::Flops(3.5 * attn_flops(1024, false))),
            ours: |d| attn_bwd(d, Impl::Ours),
            twins: vec![("reference", |d| attn_bwd(d, Impl::Reference))],
            torch: Some("attn_bwd_f32_b1h8n1024d64"),
        },
        Case {
            krate: "video_kernels",
            name: "dwconv3d_c320t16h32w32k3",
            shape: "x [1, 320, 16, 32, 32], w [320, 1, 3, 3, 3], pad 1, groups 320",
            amount: Some(Amount::Flops(2.0 * 27.0 * 320.0 * 16.0 * 1024.0)),
            ours: |d| conv_fwd(d, ConvKind::Depthwise, false),
            twins: vec![("reference", |d| conv_fwd(d, ConvKind::Depthwise, true))],
            torch: Some("dwconv3d_c320t16h32w32k3"),
        },
        Case {
            krate: "video_kernels",
            name: "dwconv3d_bwd_c320t16h32w32k3",
            shape: "same as dwconv3d, forward + backward (dx, dw, dbias)",
            amount: Some(Amount::Flops(3.0 * 2.0 * 27.0 * 320.0 * 16.0 * 1024.0)),
            ours: |d| conv_bwd(d, ConvKind::Depthwise, false),
            twins: vec![("reference", |d| conv_bwd(d, ConvKind::Depthwise, true))],
            torch: Some("dwconv3d_bwd_c320t16h32w32k3"),
        },
        Case {
            krate: "video_kernels",
            name: "tconv3d_c320t16h32w32k311",
            shape: "x [1, 320, 16, 32, 32], w [320, 320, 3, 1, 1], pad (1, 0, 0)",
            amount: Some(Amount::Flops(2.0 * 3.0 * 320.0 * 320.0 * 16.0 * 1024.0)),
            ours: |d| conv_fwd(d, ConvKind::Temporal, false),
            twins: vec![("reference", |d| conv_fwd(d, ConvKind::Temporal, true))],
            torch: Some("tconv3d_c320t16h32w32k311"),
        },
        Case {
            krate: "video_kernels",
            name: "conv3d_c64t16h32w32k3",
            shape: "x [1, 64, 16, 32, 32], w [64, 64, 3, 3, 3], pad 1",
            amount: Some(Amount::Flops(2.0 * 27.0 * 64.0 * 64.0 * 16.0 * 1024.0)),
            ours: |d| conv_fwd(d, ConvKind::General, false),
            twins: vec![("reference", |d| conv_fwd(d, ConvKind::General, true))],
            torch: Some("conv3d_c64t16h32w32k3"),
        },
    ]
}

fn attn_flops(n: usize, causal: bool) -> f64 {
    let f = 4.0 * 8.0 * (n as f64) * (n as f64) * 64.0;
    if causal {
        f / 2.0
    } else {
        f
    }
}

#[derive(Clone, Copy)]
enum Impl {
    Ours,
    CandleFlash,
    Reference,
}

fn attn_fwd(d: &Device, n: usize, causal: bool, which: Impl) -> vidgen_video_core::Result<Work> {
    let shape = [1, 8, n, 64];
    let q = randn(&shape, 1, 1.0, d)?;
    let k = randn(&shape, 2, 1.0, d)?;
    let v = randn(&shape, 3, 1.0, d)?;
    let opts = AttentionOpts {
        causal,
        ..Default::default()
    };
    Ok(match which {
        Impl::Ours => Box::new(move || consume(&attention(&q, &k, &v, &opts)?)),
        Impl::Reference => Box::new(move || consume(&attention_reference(&q, &k, &v, &opts)?)),
        Impl::CandleFlash => {
            // candle's kernel takes (B, S, H, D): transpose once, outside the clock
            let t = |x: &Tensor| x.transpose(1, 2).and_then(|x| x.contiguous());
            let (q, k, v) = (t(&q)?, t(&k)?, t(&v)?);
            Box::new(move || {
                let mask = if causal {
                    candle_nn::attention::AttnMask::Causal { kv_offset: 0 }
                } else {
                    candle_nn::attention::AttnMask::None
                };
                let o =
                    candle_nn::attention::flash_attn::<f32>(&q, &k, &v, 0.125, mask, None, None)?;
                consume(&o)
            })
        }
    })
}

fn attn_bwd(d: &Device, which: Impl) -> vidgen_video_core::Result<Work> {
    let shape = [1, 8, 1024, 64];
    let q = randn_var(&shape, 1, 1.0, d)?;
    let k = randn_var(&shape, 2, 1.0, d)?;
    let v = randn_var(&shape, 3, 1.0, d)?;
    let dout = randn(&shape, 4, 1.0, d)?;
    let opts = AttentionOpts::default();
    Ok(Box::new(move || {
        let out = match which {
            Impl::Reference => {
                attention_reference(q.as_tensor(), k.as_tensor(), v.as_tensor(), &opts)?
            }
            _ => attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), &opts)?,
        };
        let grads = (out * &dout)?.sum_all()?.backward()?;
        if let Some(g) = grads.get(q.as_tensor()) {
            consume(g)?;
        }
        Ok(())
    }))
}

#[derive(Clone, Copy)]
enum ConvKind {
    Depthwise,
    Temporal,
    General,
}

fn conv_setup(
    d: &Device,
    kind: ConvKind,
) -> vidgen_video_core::Result<(Tensor, Tensor, Tensor, Conv3dOpts)> {
    let (c, wshape, padding, groups): (usize, [usize; 5], [usize; 3], usize) = match kind {
        ConvKind::Depthwise => (320, [320, 1, 3, 3, 3], [1, 1, 1], 320),
        ConvKind::Temporal => (320, [320, 320, 3, 1, 1], [1, 0, 0], 1),
        ConvKind::General => (64, [64, 64, 3, 3, 3], [1, 1, 1], 1),
    };
    let fan_in: usize = wshape[1..].iter().product();
    let x = randn(&[1, c, 16, 32, 32], 1, 1.0, d)?;
    let w = randn(&wshape, 2, 1.0 / (fan_in as f32).sqrt(), d)?;
    let b = randn(&[wshape[0]], 3, 0.1, d)?;
    let opts = Conv3dOpts {
        padding,
        groups,
        ..Default::default()
    };
    Ok((x, w, b, opts))
}

fn conv_fwd(d: &Device, kind: ConvKind, reference: bool) -> vidgen_video_core::Result<Work> {
    let (x, w, b, opts) = conv_setup(d, kind)?;
    Ok(Box::new(move || {
        let y = if reference {
            conv3d_reference(&x, &w, Some(&b), &opts)?
        } else {
            conv3d(&x, &w, Some(&b), &opts)?
        };
        consume(&y)
    }))
}

fn conv_bwd(d: &Device, kind: ConvKind, reference: bool) -> vidgen_video_core::Result<Work> {
    let (x, w, b, opts) = conv_setup(d, kind)?;
    let (x, w, b) = (
        candle_core::Var::from_tensor(&x)?,
        candle_core::Var::from_tensor(&w)?,
        candle_core::Var::from_tensor(&b)?,
    );
    let dout = randn(x.dims(), 4, 1.0, d)?;
    Ok(Box::new(move || {
        let y = if reference {
            conv3d_reference(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), &opts)?
        } else {
            conv3d(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), &opts)?
        };
        let grads = (y * &dout)?.sum_all()?.backward()?;
        if let Some(g) = grads.get(w.as_tensor()) {
            consume(g)?;
        }
        Ok(())
    }))
}
