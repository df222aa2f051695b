//! Residual adds and the SVD `AlphaBlender` mix on rayon's threads.
//!
//! candle 0.11 runs element-wise ops of 64 Ki elements or more on its own barrier pool, whose
//! workers spin for 25 000 iterations after every op before they park. Our other kernels run on
//! rayon's workers, so on a small machine those spinning threads take cores from the next
//! convolution or product: `perf` put 9% of the SVD UNet's forward in them. [`add`] and
//! [`blend`] do the UNets' large element-wise ops (the residual adds, the per-channel time
//! embedding, the spatial / temporal mix) on rayon's threads instead, writing each output once
//! (no zero fill), with the same f32 arithmetic as candle's ops (bit-identical results).

use std::mem::MaybeUninit;

use candle_core::{DType, Device, Storage, Tensor};
use rayon::prelude::*;
use vidgen_video_core::Result;

use crate::storage::f32_slice;

/// Below this many elements candle's ops run on one thread anyway; ours would only add a
/// dispatch.
const MIN_ELEMS: usize = 32 * 1024;
/// Elements per rayon task.
const CHUNK: usize = 16 * 1024;

/// How the second operand's elements map onto the first's (row-major, contiguous both): its
/// dims are `[leading (each 1 or equal), 1…1 (broadcast), trailing (equal)]`. Output `i` lies in
/// outer block `k = i / span` and reads `base[k] + i mod m`.
#[derive(Debug, Clone, PartialEq)]
struct Bcast {
    /// Elements of the trailing run both share (1 when there is none).
    m: usize,
    /// Elements per outer block: the broadcast run times `m`.
    span: usize,
    /// The second operand's offset for each outer block.
    base: Vec<usize>,
}

/// The mapping of `small` broadcast into `big` (right-aligned, as candle and NumPy do), when it
/// has the form above (residuals, per-channel embeddings `[B, C, 1, 1]`, biases `[C]`, per-frame
/// factors `[B, 1, F, 1, 1]`, per-frame rows `[B·F, 1, C]`); `None` otherwise.
fn bcast(big: &[usize], small: &[usize]) -> Option<Bcast> {
    if small.len() > big.len() {
        return None;
    }
    let mut s = vec![1usize; big.len() - small.len()];
    s.extend_from_slice(small);
    if s.iter().zip(big).any(|(&x, &y)| x != 1 && x != y) {
        return None;
    }
    let r = big.len();
    // Trailing run where the shapes agree, then the run where `small` is 1.
    let t0 = (0..r)
        .rev()
        .take_while(|&d| s[d] == big[d])
        .last()
        .unwrap_or(r);
    let m0 = (0..t0)
        .rev()
        .take_while(|&d| s[d] == 1)
        .last()
        .unwrap_or(t0);
    let m: usize = big[t0..].iter().product();
    let span: usize = big[m0..].iter().product();
    // Offsets of `small` over the leading dims (0 where it broadcasts).
    let mut stride = vec![0usize; m0];
    let mut acc = m;
    for d in (0..m0).rev() {
        if s[d] != 1 {
            stride[d] = acc;
        }
        acc *= s[d];
    }
    let blocks: usize = big[..m0].iter().product();
    let mut base = Vec::with_capacity(blocks);
    let mut pos = vec![0usize; m0];
    for _ in 0..blocks {
        base.push(pos.iter().zip(&stride).map(|(p, st)| p * st).sum());
        for d in (0..m0).rev() {
            pos[d] += 1;
            if pos[d] < big[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    Some(Bcast { m, span, base })
}

/// Whether `t` is a contiguous f32 CPU tensor without gradient tracking (and the fast paths are
/// not forced off).
fn plain(t: &Tensor) -> bool {
    !t.track_op()
        && t.dtype() == DType::F32
        && matches!(t.device(), Device::Cpu)
        && t.is_contiguous()
        && !crate::reference_forced()
}

/// Runs `f(offset, out_chunk)` over the output in parallel tasks and returns it as a tensor of
/// `shape`; `f` must write every element of its chunk.
fn fill(
    shape: &[usize],
    device: &Device,
    f: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, dst)| f(c * CHUNK, dst));
    // SAFETY: every task wrote each element of its chunk, and the chunks cover `0..n`.
    unsafe { out.set_len(n) };
    Ok(Tensor::from_vec(out, shape, device)?)
}

/// Calls `g(i0, i1, j, one)` for the runs `i0..i1` of `start..start + len` over which the
/// broadcast operand reads from `j` on: one value for the whole run (`one`), or consecutive
/// values.
#[inline(always)]
fn runs(bc: &Bcast, start: usize, len: usize, mut g: impl FnMut(usize, usize, usize, bool)) {
    let end = start + len;
    let mut i = start;
    while i < end {
        let k = i / bc.span;
        let block_end = ((k + 1) * bc.span).min(end);
        if bc.m == 1 {
            g(i, block_end, bc.base[k], true);
            i = block_end;
            continue;
        }
        while i < block_end {
            let j = i % bc.m;
            let e = (i + bc.m - j).min(block_end);
            g(i, e, bc.base[k] + j, false);
            i = e;
        }
    }
}

/// `a + b` with `b` broadcast into `a`'s shape, with candle's op (the definition [`add`] is
/// tested against; differentiable).
///
/// # Shapes
/// `a` any shape, `b` broadcastable into it → `a`'s shape.
pub fn add_reference(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.broadcast_add(b)?)
}

/// `a + b` with `b` broadcast into `a`'s shape (a residual, or a per-channel embedding
/// `[B, C, 1, 1]` onto `[B, C, H, W]`): on rayon's threads for large contiguous f32 CPU tensors
/// without gradient tracking, [`add_reference`] otherwise. Bit-identical to it.
///
/// # Shapes
/// `a` any shape, `b` broadcastable into it → `a`'s shape.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let bc = match (plain(a) && plain(b) && a.elem_count() >= MIN_ELEMS)
        .then(|| bcast(a.dims(), b.dims()))
        .flatten()
    {
        Some(bc) => bc,
        None => return add_reference(a, b),
    };
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let (Storage::Cpu(ca), Storage::Cpu(cb)) = (&*sa, &*sb) else {
        return add_reference(a, b);
    };
    let (xa, xb) = (f32_slice(ca, la, "add a")?, f32_slice(cb, lb, "add b")?);
    fill(a.dims(), a.device(), |start, dst| {
        runs(&bc, start, dst.len(), |i0, i1, j, one| {
            let o = &mut dst[i0 - start..i1 - start];
            let x = &xa[i0..i1];
            if one {
                let v = xb[j];
                for (o, &x) in o.iter_mut().zip(x) {
                    o.write(x + v);
                }
            } else {
                for ((o, &x), &y) in o.iter_mut().zip(x).zip(&xb[j..]) {
                    o.write(x + y);
                }
            }
        })
    })
}

/// `s·α + t·(1 − α)` with candle's ops (the definition [`blend`] is tested against;
/// differentiable).
///
/// # Shapes
/// `s`, `t` the same shape, `alpha` broadcastable into it → that shape.
pub fn blend_reference(s: &Tensor, t: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let one_minus = (1.0 - alpha)?;
    Ok((s.broadcast_mul(alpha)? + t.broadcast_mul(&one_minus)?)?)
}

/// `s·α + t·(1 − α)`, diffusers' `AlphaBlender` with `α` per frame (`[B, 1, F, 1, 1]` onto
/// `[B, C, F, H, W]`, or `[B·F, 1, 1]` onto `[B·F, N, C]`): on rayon's threads for large
/// contiguous f32 CPU tensors without gradient tracking, [`blend_reference`] otherwise.
/// Bit-identical to it.
///
/// # Shapes
/// `s`, `t` the same shape, `alpha` broadcastable into it → that shape.
pub fn blend(s: &Tensor, t: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let fast = plain(s)
        && plain(t)
        && !alpha.track_op()
        && alpha.dtype() == DType::F32
        && s.dims() == t.dims()
        && s.elem_count() >= MIN_ELEMS;
    let bc = match fast.then(|| bcast(s.dims(), alpha.dims())).flatten() {
        Some(bc) => bc,
        None => return blend_reference(s, t, alpha),
    };
    let al = alpha.flatten_all()?.to_vec1::<f32>()?;
    // candle's `1.0 - α` is the affine map `α·(−1) + 1` in f32.
    let om: Vec<f32> = al.iter().map(|&a| -a + 1.0).collect();
    let (ss, ls) = s.storage_and_layout();
    let (st, lt) = t.storage_and_layout();
    let (Storage::Cpu(cs), Storage::Cpu(ct)) = (&*ss, &*st) else {
        return blend_reference(s, t, alpha);
    };
    let (xs, xt) = (f32_slice(cs, ls, "blend s")?, f32_slice(ct, lt, "blend t")?);
    fill(s.dims(), s.device(), |start, dst| {
        runs(&bc, start, dst.len(), |i0, i1, j, one| {
            let o = &mut dst[i0 - start..i1 - start];
            let (x, y) = (&xs[i0..i1], &xt[i0..i1]);
            if one {
                let (a, b) = (al[j], om[j]);
                for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                    o.write(x * a + y * b);
                }
            } else {
                for (((o, &x), &y), (&a, &b)) in
                    o.iter_mut().zip(x).zip(y).zip(al[j..].iter().zip(&om[j..]))
                {
                    o.write(x * a + y * b);
                }
            }
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_patterns_of_the_unets() {
        // Equal shapes: one block, consecutive values.
        let b = bcast(&[8, 64, 32, 32], &[8, 64, 32, 32]).unwrap();
        assert_eq!(
            (b.m, b.span, b.base.len()),
            (8 * 64 * 32 * 32, 8 * 64 * 32 * 32, 1)
        );
        // Per-channel embedding: one value per 32×32 plane.
        let b = bcast(&[2, 3, 4, 4], &[2, 3, 1, 1]).unwrap();
        assert_eq!((b.m, b.span), (1, 16));
        assert_eq!(b.base, (0..6).collect::<Vec<_>>());
        // Per-frame factor on [B, C, F, H, W]: block (b, c, f) reads b·F + f.
        let b = bcast(&[2, 3, 4, 5, 5], &[2, 1, 4, 1, 1]).unwrap();
        assert_eq!((b.m, b.span), (1, 25));
        assert_eq!(b.base[..9], [0, 1, 2, 3, 0, 1, 2, 3, 0]);
        assert_eq!(b.base[12], 4);
        // Per-frame rows [B·F, 1, C] on [B·F, N, C]: block k reads row k.
        let b = bcast(&[4, 10, 8], &[4, 1, 8]).unwrap();
        assert_eq!((b.m, b.span, b.base.clone()), (8, 80, vec![0, 8, 16, 24]));
        // A bias [C] on [N, C].
        let b = bcast(&[10, 8], &[8]).unwrap();
        assert_eq!((b.m, b.span, b.base.clone()), (8, 80, vec![0]));
        // Not broadcastable.
        assert!(bcast(&[4, 8], &[3, 8]).is_none());
        assert!(bcast(&[8], &[2, 8]).is_none());
    }

    #[test]
    fn runs_cover_a_chunk_once_in_order() {
        let b = bcast(&[3, 5, 4], &[3, 1, 4]).unwrap();
        let mut seen = Vec::new();
        runs(&b, 7, 30, |i0, i1, j, one| {
            assert!(!one);
            for i in i0..i1 {
                seen.push((i, j + (i - i0)));
            }
        });
        let want: Vec<(usize, usize)> = (7..37).map(|i| (i, (i / 20) * 4 + i % 4)).collect();
        assert_eq!(seen, want);
    }
}
