//! The feature networks' pooling and in-place ReLU on contiguous f32 CPU tensors, parallel
//! over channel planes (rayon).
//!
//! candle 0.11's CPU `max_pool2d` / `avg_pool2d` run on one thread and take no padding (the
//! networks padded with two `cat`s per side first), and its `relu` allocates a new tensor and
//! splits the pass on its own spinning thread pool, which competes with rayon's workers on a
//! small machine; together they were ~20% of an Inception-v3 forward on 2 cores. These
//! functions compute the same values (tests compare them with the candle formulation).
//!
//! They belong next to the convolutions in `vidgen-video-kernels` (a pooling module with a
//! reference twin, and a fused ReLU epilogue in `conv2d` / `conv3d`); they live here until then.

use candle_core::{CpuStorage, CustomOp1, DType, InplaceOp1, Layout, Shape, Tensor};
use rayon::prelude::*;
use vidgen_video_core::{Error, Result};

/// Which reduction a [`Pool`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    /// Maximum over the window's in-bounds taps (= `−∞` padding).
    Max,
    /// Mean over the window's in-bounds taps (`count_include_pad=False`).
    AvgExcludePad,
}

/// A pooling window over the last `D` dims of a contiguous f32 tensor: kernel, stride, and
/// padding before / after per dim. Out-of-bounds taps are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pool<const D: usize> {
    pub kind: PoolKind,
    pub k: [usize; D],
    pub s: [usize; D],
    pub pad: [(usize, usize); D],
}

impl<const D: usize> Pool<D> {
    /// Output size of one dim, or `None` when the window does not fit.
    fn out_len(&self, d: usize, n: usize) -> Option<usize> {
        let padded = n + self.pad[d].0 + self.pad[d].1;
        if self.s[d] == 0 || self.k[d] == 0 || self.k[d] > padded {
            return None;
        }
        Some((padded - self.k[d]) / self.s[d] + 1)
    }

    /// Applies the pool to `x` `[…, n_1, …, n_D]` (f32): every leading index is one plane.
    ///
    /// # Shapes
    /// `[…, n_1, …, n_D]` → `[…, o_1, …, o_D]`, `o = ⌊(n + before + after − k) / s⌋ + 1`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() != DType::F32 || x.rank() < D {
            return Err(Error::invalid(
                "pool input",
                format!(
                    "expected f32 with at least {D} dims, found {:?} {:?}",
                    x.dtype(),
                    x.dims()
                ),
            ));
        }
        let x = x.contiguous()?;
        Ok(x.apply_op1_no_bwd(self)?)
    }
}

/// The positions `[lo, hi)` of input taps of output `o` along one dim (clipped to the input).
#[inline]
fn taps(o: usize, s: usize, k: usize, before: usize, n: usize) -> (usize, usize) {
    let start = o * s;
    let lo = start.saturating_sub(before).min(n);
    let hi = (start + k).saturating_sub(before).min(n);
    (lo, hi)
}

/// One axis of a separable pool: `x` viewed as `[outer, n, inner]` → `[outer, o, inner]`, each
/// output the max (or mean) of its window's in-bounds taps. The window's rows are combined
/// elementwise over `inner` (vectorisable); parallel over `outer`.
fn pool_axis(
    x: &[f32],
    n: usize,
    inner: usize,
    o: usize,
    (k, s, before): (usize, usize, usize),
    kind: PoolKind,
) -> Vec<f32> {
    let outer = x.len() / (n * inner).max(1);
    let mut y = vec![0f32; outer * o * inner];
    if y.is_empty() {
        return y;
    }
    let max = kind == PoolKind::Max;
    let one = |xa: &[f32], ya: &mut [f32]| {
        if inner == 1 {
            // The last axis: a window of scalars per output.
            let window = |oi: usize| {
                let (lo, hi) = taps(oi, s, k, before, n);
                let w = &xa[lo..hi];
                if max {
                    w.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
                } else {
                    w.iter().sum::<f32>() / (hi - lo).max(1) as f32
                }
            };
            // With stride 1, the outputs whose window lies inside are `k` shifted slices
            // combined elementwise (vectorisable); the edges take the general path.
            let oa = before.min(o);
            let ob = if n + before >= k {
                (n + before - k + 1).min(o).max(oa)
            } else {
                oa
            };
            if s == 1 && ob > oa {
                let len = ob - oa;
                let base = oa - before;
                let dst = &mut ya[oa..ob];
                dst.copy_from_slice(&xa[base..base + len]);
                for t in 1..k {
                    let src = &xa[base + t..base + t + len];
                    if max {
                        dst.iter_mut().zip(src).for_each(|(d, &v)| *d = d.max(v));
                    } else {
                        dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                    }
                }
                if !max {
                    let inv = 1.0 / k as f32;
                    dst.iter_mut().for_each(|d| *d *= inv);
                }
                for oi in (0..oa).chain(ob..o) {
                    ya[oi] = window(oi);
                }
            } else {
                for (oi, dst) in ya.iter_mut().enumerate() {
                    *dst = window(oi);
                }
            }
            return;
        }
        for (oi, dst) in ya.chunks_exact_mut(inner).enumerate() {
            let (lo, hi) = taps(oi, s, k, before, n);
            if lo >= hi {
                dst.fill(if kind == PoolKind::Max {
                    f32::NEG_INFINITY
                } else {
                    0.0
                });
                continue;
            }
            dst.copy_from_slice(&xa[lo * inner..(lo + 1) * inner]);
            for i in lo + 1..hi {
                let row = &xa[i * inner..(i + 1) * inner];
                match kind {
                    PoolKind::Max => dst.iter_mut().zip(row).for_each(|(d, &v)| *d = d.max(v)),
                    PoolKind::AvgExcludePad => dst.iter_mut().zip(row).for_each(|(d, &v)| *d += v),
                }
            }
            if kind == PoolKind::AvgExcludePad && hi - lo > 1 {
                let inv = 1.0 / (hi - lo) as f32;
                dst.iter_mut().for_each(|d| *d *= inv);
            }
        }
    };
    // Enough work per task to amortise the split (rows of small planes are grouped).
    let per = (n * inner).max(1);
    let group = (16 * 1024 / per).max(1);
    y.par_chunks_mut(o * inner * group)
        .zip(x.par_chunks(n * inner * group))
        .for_each(|(yg, xg)| {
            for (ya, xa) in yg.chunks_mut(o * inner).zip(xg.chunks(n * inner)) {
                one(xa, ya);
            }
        });
    y
}

impl<const D: usize> CustomOp1 for Pool<D> {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "eval-metrics-max-pool",
            PoolKind::AvgExcludePad => "eval-metrics-avg-pool",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("pool: f32 only");
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("pool: contiguous input only");
        };
        let dims = l.dims();
        let r = dims.len();
        let mut cur: Vec<usize> = dims[r - D..].to_vec();
        let mut out = Vec::with_capacity(D);
        for (d, &n) in cur.iter().enumerate() {
            match self.out_len(d, n) {
                Some(o) => out.push(o),
                None => candle_core::bail!("pool: window {:?} does not fit {:?}", self.k, dims),
            }
        }
        // Max and the mean over a box are separable: one 1-D pass per axis. The leading axes go
        // first (rows combined elementwise, vectorised), so the scalar pass over the last axis
        // runs on data the strides have already reduced.
        // The mean of means is the box mean because the in-bounds box is a product of
        // intervals (`count_include_pad=False`).
        let mut data: Option<Vec<f32>> = None;
        for d in 0..D {
            let inner: usize = cur[d + 1..].iter().product();
            let src: &[f32] = match &data {
                Some(v) => v,
                None => &v[a..b],
            };
            let y = pool_axis(
                src,
                cur[d],
                inner,
                out[d],
                (self.k[d], self.s[d], self.pad[d].0),
                self.kind,
            );
            cur[d] = out[d];
            data = Some(y);
        }
        let y = data.unwrap_or_else(|| v[a..b].to_vec());
        let mut shape = dims[..r - D].to_vec();
        shape.extend_from_slice(&out);
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }
}

/// `max(x, 0)` in place, in parallel chunks.
struct ReluInPlace;

impl InplaceOp1 for ReluInPlace {
    fn name(&self) -> &'static str {
        "eval-metrics-relu-inplace"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("relu: f32 only");
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("relu: contiguous input only");
        };
        // Branch-free (`maxps`), as candle's `relu`: NaN becomes 0.
        v[a..b].par_chunks_mut(32 * 1024).for_each(|c| {
            for x in c {
                *x = x.max(0.0);
            }
        });
        Ok(())
    }
}

/// `max(x, 0)` in place on channels `lo..hi` of a contiguous `[N, C, …]` f32 tensor.
struct ReluChannels {
    lo: usize,
    hi: usize,
}

impl InplaceOp1 for ReluChannels {
    fn name(&self) -> &'static str {
        "eval-metrics-relu-channels"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("relu: f32 only");
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("relu: contiguous input only");
        };
        let dims = l.dims();
        if dims.len() < 2 || self.lo > self.hi || self.hi > dims[1] {
            candle_core::bail!("relu: channels {}..{} of {dims:?}", self.lo, self.hi);
        }
        let plane: usize = dims[2..].iter().product();
        let per_item = dims[1] * plane;
        if per_item == 0 {
            return Ok(());
        }
        v[a..b].par_chunks_mut(per_item).for_each(|item| {
            item[self.lo * plane..self.hi * plane]
                .par_chunks_mut(32 * 1024)
                .for_each(|c| c.iter_mut().for_each(|x| *x = x.max(0.0)));
        });
        Ok(())
    }
}

/// ReLU on channels `lo..hi` of a freshly computed contiguous f32 `[N, C, …]` CPU tensor, in
/// place (the other channels are left as they are). Only for tensors nothing else holds.
pub(crate) fn relu_channels_owned(x: &Tensor, lo: usize, hi: usize) -> Result<()> {
    if x.dtype() != DType::F32 || !x.is_contiguous() || !x.device().is_cpu() {
        return Err(Error::invalid(
            "relu input",
            format!(
                "expected a contiguous f32 CPU tensor, found {:?} {:?}",
                x.dtype(),
                x.dims()
            ),
        ));
    }
    Ok(x.inplace_op1(&ReluChannels { lo, hi })?)
}

/// ReLU of a freshly computed f32 tensor, in place when it is contiguous and on the CPU
/// (else candle's `relu`). Only for tensors nothing else holds: a layer's own output.
pub(crate) fn relu_owned(x: Tensor) -> Result<Tensor> {
    if x.dtype() == DType::F32 && x.is_contiguous() && x.device().is_cpu() {
        x.inplace_op1(&ReluInPlace)?;
        return Ok(x);
    }
    Ok(x.relu()?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn pad_hw(x: &Tensor, p: usize, v: f32) -> Tensor {
        let (n, c, h, w) = x.dims4().unwrap();
        let side = Tensor::full(v, (n, c, h, p), x.device()).unwrap();
        let x = Tensor::cat(&[&side, x, &side], 3).unwrap();
        let top = Tensor::full(v, (n, c, p, w + 2 * p), x.device()).unwrap();
        Tensor::cat(&[&top, &x, &top], 2).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor) {
        assert_eq!(a.dims(), b.dims());
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d <= 1e-6, "max diff {d}");
    }

    #[test]
    fn pools_match_the_candle_formulation() {
        let dev = Device::Cpu;
        for (h, w) in [(9, 7), (17, 17), (35, 35), (8, 8), (3, 5)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev).unwrap();
            // 3×3 stride-2 max pool, no padding.
            let p = Pool::<2> {
                kind: PoolKind::Max,
                k: [3, 3],
                s: [2, 2],
                pad: [(0, 0); 2],
            };
            close(
                &p.forward(&x).unwrap(),
                &x.max_pool2d_with_stride(3, 2).unwrap(),
            );
            // 3×3 stride-1 max pool padded with −∞.
            let p = Pool::<2> {
                pad: [(1, 1); 2],
                s: [1, 1],
                ..p
            };
            let want = pad_hw(&x, 1, f32::NEG_INFINITY)
                .max_pool2d_with_stride(3, 1)
                .unwrap();
            close(&p.forward(&x).unwrap(), &want);
            // 3×3 stride-1 average, count_include_pad=False: zero-padded sum / in-image taps.
            let p = Pool::<2> {
                kind: PoolKind::AvgExcludePad,
                ..p
            };
            let sum = (pad_hw(&x, 1, 0.0).avg_pool2d_with_stride(3, 1).unwrap() * 9.0).unwrap();
            let ones = Tensor::ones((1, 1, h, w), DType::F32, &dev).unwrap();
            let cnt = (pad_hw(&ones, 1, 0.0).avg_pool2d_with_stride(3, 1).unwrap() * 9.0).unwrap();
            close(&p.forward(&x).unwrap(), &sum.broadcast_div(&cnt).unwrap());
        }
    }

    #[test]
    fn pool_3d_with_asymmetric_padding() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 2, 5, 6, 7), &dev).unwrap();
        let p = Pool::<3> {
            kind: PoolKind::Max,
            k: [3, 3, 3],
            s: [2, 2, 2],
            pad: [(1, 1), (0, 1), (1, 1)],
        };
        let y = p.forward(&x).unwrap();
        assert_eq!(y.dims(), &[1, 2, 3, 3, 4]);
        // Brute force over the padded index space.
        let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let yv = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (n, o) = ([5usize, 6, 7], [3usize, 3, 4]);
        for c in 0..2 {
            for a in 0..o[0] {
                for b in 0..o[1] {
                    for d in 0..o[2] {
                        let mut m = f32::NEG_INFINITY;
                        for i in 0..3 {
                            for j in 0..3 {
                                for k in 0..3 {
                                    let (ti, tj, tk) = (
                                        (a * 2 + i) as isize - 1,
                                        (b * 2 + j) as isize,
                                        (d * 2 + k) as isize - 1,
                                    );
                                    if ti < 0 || tj < 0 || tk < 0 {
                                        continue;
                                    }
                                    let (ti, tj, tk) = (ti as usize, tj as usize, tk as usize);
                                    if ti >= n[0] || tj >= n[1] || tk >= n[2] {
                                        continue;
                                    }
                                    m = m.max(xv[((c * n[0] + ti) * n[1] + tj) * n[2] + tk]);
                                }
                            }
                        }
                        let got = yv[((c * o[0] + a) * o[1] + b) * o[2] + d];
                        assert_eq!(got, m);
                    }
                }
            }
        }
    }

    /// The pool by definition: every output position, every in-bounds tap.
    fn brute<const D: usize>(x: &[f32], n: [usize; D], p: &Pool<D>) -> Vec<f32> {
        let o: Vec<usize> = (0..D).map(|d| p.out_len(d, n[d]).unwrap()).collect();
        let count: usize = o.iter().product();
        let mut y = Vec::with_capacity(count);
        for flat in 0..count {
            let mut idx = [0usize; D];
            let mut r = flat;
            for d in (0..D).rev() {
                idx[d] = r % o[d];
                r /= o[d];
            }
            let (mut acc, mut taps_in) = (
                if p.kind == PoolKind::Max {
                    f32::NEG_INFINITY
                } else {
                    0.0
                },
                0usize,
            );
            let wins: usize = p.k.iter().product();
            for w in 0..wins {
                let mut t = [0usize; D];
                let mut r = w;
                for d in (0..D).rev() {
                    t[d] = r % p.k[d];
                    r /= p.k[d];
                }
                let mut off = 0usize;
                let mut inside = true;
                for d in 0..D {
                    let pos = (idx[d] * p.s[d] + t[d]) as isize - p.pad[d].0 as isize;
                    if pos < 0 || pos >= n[d] as isize {
                        inside = false;
                        break;
                    }
                    off = off * n[d] + pos as usize;
                }
                if inside {
                    taps_in += 1;
                    acc = match p.kind {
                        PoolKind::Max => acc.max(x[off]),
                        PoolKind::AvgExcludePad => acc + x[off],
                    };
                }
            }
            y.push(match p.kind {
                PoolKind::Max => acc,
                PoolKind::AvgExcludePad => acc / taps_in.max(1) as f32,
            });
        }
        y
    }

    proptest::proptest! {
        #![proptest_config(video_testkit::proptest_config(256))]

        /// Any 2-D window, stride and padding (smaller than the window, as a pool requires)
        /// against the definition, on 1–3 planes.
        #[test]
        fn pool_matches_the_definition(
            planes in 1usize..4,
            h in 1usize..12, w in 1usize..12,
            kh in 1usize..5, kw in 1usize..5,
            sh in 1usize..4, sw in 1usize..4,
            p in (0usize..3, 0usize..3, 0usize..3, 0usize..3),
            max in proptest::bool::ANY,
            seed in 0u64..1000,
        ) {
            let pad = [(p.0.min(kh - 1), p.1.min(kh - 1)), (p.2.min(kw - 1), p.3.min(kw - 1))];
            let pool = Pool::<2> {
                kind: if max { PoolKind::Max } else { PoolKind::AvgExcludePad },
                k: [kh, kw],
                s: [sh, sw],
                pad,
            };
            if pool.out_len(0, h).is_none() || pool.out_len(1, w).is_none() {
                return Ok(());
            }
            let n = planes * h * w;
            let xv: Vec<f32> = (0..n)
                .map(|i| (((i as u64 + 1) * (seed * 2 + 7919)) % 1013) as f32 / 101.0 - 5.0)
                .collect();
            let x = Tensor::from_vec(xv.clone(), (planes, h, w), &Device::Cpu).unwrap();
            let got = pool.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let plane_out = got.len() / planes;
            for (pl, chunk) in got.chunks(plane_out).enumerate() {
                let want = brute(&xv[pl * h * w..(pl + 1) * h * w], [h, w], &pool);
                for (g, w) in chunk.iter().zip(&want) {
                    proptest::prop_assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn relu_on_a_channel_range() {
        let x = Tensor::randn(0f32, 1.0, (2, 5, 3, 4), &Device::Cpu).unwrap();
        let y = x.affine(1.0, 0.0).unwrap();
        relu_channels_owned(&y, 1, 3).unwrap();
        let want = Tensor::cat(
            &[
                x.narrow(1, 0, 1).unwrap(),
                x.narrow(1, 1, 2).unwrap().relu().unwrap(),
                x.narrow(1, 3, 2).unwrap(),
            ],
            1,
        )
        .unwrap();
        close(&y, &want);
        assert!(relu_channels_owned(&y, 2, 9).is_err());
    }

    #[test]
    fn relu_in_place_matches_candle() {
        let x = Tensor::randn(0f32, 1.0, (3, 70_000), &Device::Cpu).unwrap();
        let want = x.relu().unwrap();
        let got = relu_owned(x.affine(1.0, 0.0).unwrap()).unwrap();
        close(&got, &want);
        // Not contiguous: falls back to candle.
        let t = Tensor::randn(0f32, 1.0, (4, 5), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap();
        close(&relu_owned(t.clone()).unwrap(), &t.relu().unwrap());
    }
}
