//! The tiled CPU kernels: forward with online softmax, and the two-pass backward.
//!
//! All buffers are contiguous f32 in the public layouts: `q`, `out`, `dout` `[B, Hq, Nq, D]`,
//! `k`, `v` `[B, Hkv, Nk, D]`, `lse` `[B, Hq, Nq]`. See the module docs of `attention` for the
//! algorithm.

use candle_core::{DType, Error as CError, Result as CResult, Tensor};
use rayon::prelude::*;

use super::{softmax, Dims};
use crate::simd::{self, dot, Level};

/// Queries per task (a multiple of the 6-row register block of the micro-kernel).
pub(crate) const Q_BLOCK: usize = 48;
/// Keys per tile: the score tile is `Q_BLOCK × K_BLOCK` f32 (48 KiB).
pub(crate) const K_BLOCK: usize = 256;
/// Row stride of the key tiles and score tiles: `K_BLOCK` plus one 64-byte line, so that the
/// rows of a tile do not all fall into the same few L1 sets (a 1 KiB stride maps 64 rows onto 4
/// of the 64 sets and evicts the tile while a micro-kernel walks down it).
pub(crate) const TILE_LD: usize = K_BLOCK + 16;

fn internal(what: impl std::fmt::Display) -> CError {
    CError::Msg(format!("video-kernels attention: {what}"))
}

/// Which implementation of the tile products and the softmax rows runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// Hand-written AVX-512F micro-kernels.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// Hand-written AVX2 + FMA micro-kernels (x86-64 without AVX-512).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// The `gemm` crate (its own runtime SIMD dispatch, through [`crate::gemm`]) and
    /// auto-vectorised loops.
    Portable,
}

impl Backend {
    /// The fastest backend this CPU supports.
    pub(crate) fn detect() -> Self {
        match simd::level() {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => Backend::Avx512,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2Fma => Backend::Avx2,
            _ => Backend::Portable,
        }
    }

    /// `C (+)= A · B` (`m × k` times `k × n`), `A[r, p] = a[r·a_rs + p·a_cs]`,
    /// `B[p, c] = b[p·ldb + c]`, `C[r, c] = c[r·ldc + c]`. Ranges are checked here, once per tile,
    /// so that the unsafe kernels below never read or write outside the slices.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        self,
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        a_rs: usize,
        a_cs: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) -> CResult<()> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            if !accumulate {
                for r in 0..m {
                    if let Some(row) = c.get_mut(r * ldc..r * ldc + n) {
                        row.fill(0.0);
                    }
                }
            }
            return Ok(());
        }
        let a_need = (m - 1) * a_rs + (k - 1) * a_cs + 1;
        let b_need = (k - 1) * ldb + n;
        let c_need = (m - 1) * ldc + n;
        if a_need > a.len() || b_need > b.len() || c_need > c.len() || (m > 1 && ldc < n) {
            return Err(internal(format!(
                "tile product {m}x{k}x{n} out of range (a {a_need}/{}, b {b_need}/{}, c {c_need}/{})",
                a.len(),
                b.len(),
                c.len()
            )));
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F was detected; the ranges were checked just above and `c` is a
            // distinct `&mut` slice, so it aliases neither `a` nor `b`.
            Backend::Avx512 => unsafe {
                super::avx512::matmul(
                    m,
                    n,
                    k,
                    a.as_ptr(),
                    a_rs,
                    a_cs,
                    b.as_ptr(),
                    ldb,
                    c.as_mut_ptr(),
                    ldc,
                    accumulate,
                )
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA were detected; ranges checked above, `c` distinct from `a`, `b`.
            Backend::Avx2 => unsafe {
                super::avx2::matmul(
                    m,
                    n,
                    k,
                    a.as_ptr(),
                    a_rs,
                    a_cs,
                    b.as_ptr(),
                    ldb,
                    c.as_mut_ptr(),
                    ldc,
                    accumulate,
                )
            },
            Backend::Portable => {
                use crate::gemm::{gemm, Threads, View};
                gemm(
                    m,
                    n,
                    k,
                    c,
                    View::row_major(ldc),
                    a,
                    View::new(0, a_rs, a_cs),
                    b,
                    View::row_major(ldb),
                    accumulate,
                    Threads::One,
                )
                .map_err(internal)?
            }
        }
        Ok(())
    }

    fn row_max(self, row: &[f32]) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F was detected.
            Backend::Avx512 => unsafe { super::avx512::row_max(row) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA were detected.
            Backend::Avx2 => unsafe { super::avx2::row_max(row) },
            Backend::Portable => softmax::row_max(row),
        }
    }

    /// `S = A · B` (`m × k` times `k × n`, overwriting, layouts as [`Backend::matmul`]) and
    /// `row_max[r] = max_c S[r, c]`. AVX-512 folds the maximum into the product's register
    /// block; `scratch` holds its `16·m` running lanes.
    #[allow(clippy::too_many_arguments)]
    fn matmul_rowmax(
        self,
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        a_rs: usize,
        a_cs: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        row_max: &mut [f32],
        scratch: &mut [f32],
    ) -> CResult<()> {
        #[cfg(target_arch = "x86_64")]
        if self == Backend::Avx512 && m > 0 && n > 0 && k > 0 {
            let a_need = (m - 1) * a_rs + (k - 1) * a_cs + 1;
            let b_need = (k - 1) * ldb + n;
            let c_need = (m - 1) * ldc + n;
            if a_need > a.len()
                || b_need > b.len()
                || c_need > c.len()
                || (m > 1 && ldc < n)
                || row_max.len() < m
                || scratch.len() < 16 * m
            {
                return Err(internal(format!(
                    "tile product {m}x{k}x{n} out of range (a {a_need}/{}, b {b_need}/{}, c {c_need}/{})",
                    a.len(),
                    b.len(),
                    c.len()
                )));
            }
            scratch[..16 * m].fill(f32::NEG_INFINITY);
            // SAFETY: AVX-512F was detected; the ranges were checked just above, `scratch` holds
            // 16·m values and `c` aliases neither `a` nor `b`.
            unsafe {
                super::avx512::matmul_rowmax(
                    m,
                    n,
                    k,
                    a.as_ptr(),
                    a_rs,
                    a_cs,
                    b.as_ptr(),
                    ldb,
                    c.as_mut_ptr(),
                    ldc,
                    scratch.as_mut_ptr(),
                )
            };
            for (mx, lanes) in row_max.iter_mut().zip(scratch.chunks_exact(16)) {
                *mx = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            }
            return Ok(());
        }
        let _ = scratch;
        self.matmul((m, n, k), a, a_rs, a_cs, b, ldb, c, ldc, false)?;
        for (r, mx) in row_max.iter_mut().take(m).enumerate() {
            *mx = self.row_max(&c[r * ldc..r * ldc + n]);
        }
        Ok(())
    }

    /// `row[j] ← 2^(row[j] − m)`; returns the sum of the new values.
    fn exp2_sub_sum(self, row: &mut [f32], m: f32) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F was detected.
            Backend::Avx512 => unsafe { super::avx512::exp2_sub_sum(row, m) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA were detected.
            Backend::Avx2 => unsafe { super::avx2::exp2_sub_sum(row, m) },
            Backend::Portable => softmax::exp2_sub_sum(row, m),
        }
    }

    fn exp_sub_sum(self, row: &mut [f32], m: f32) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F was detected.
            Backend::Avx512 => unsafe { super::avx512::exp_sub_sum(row, m) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA were detected.
            Backend::Avx2 => unsafe { super::avx2::exp_sub_sum(row, m) },
            Backend::Portable => softmax::exp_sub_sum(row, m),
        }
    }
}

/// The additive mask as contiguous f32 `[Bm, Hm, Nqm, Nk]` (`Bm ∈ {1, B}`, `Hm ∈ {1, Hq}`,
/// `Nqm ∈ {1, Nq}`), read through zero strides on the broadcast dimensions.
#[derive(Debug)]
pub(crate) struct MaskData {
    data: Vec<f32>,
    nk: usize,
    stride_b: usize,
    stride_h: usize,
    stride_q: usize,
}

impl MaskData {
    /// `mask` of rank ≤ 4 with `shape` its dims left-padded to rank 4 (already checked to
    /// broadcast to `[B, Hq, Nq, Nk]`).
    pub(crate) fn new(
        mask: &Tensor,
        shape: [usize; 4],
        dims: &Dims,
    ) -> vidgen_video_core::Result<Self> {
        let [bm, hm, qm, _] = shape;
        let nk = dims.nk;
        let data = mask
            .to_dtype(DType::F32)?
            .reshape(shape.to_vec())?
            .broadcast_as(vec![bm, hm, qm, nk])?
            .contiguous()?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let stride_q = if qm == 1 { 0 } else { nk };
        let stride_h = if hm == 1 { 0 } else { qm * nk };
        let stride_b = if bm == 1 { 0 } else { hm * qm * nk };
        Ok(Self {
            data,
            nk,
            stride_b,
            stride_h,
            stride_q,
        })
    }

    /// The `Nk` biases of query row `i` of batch `b`, head `h`.
    fn row(&self, b: usize, h: usize, i: usize) -> CResult<&[f32]> {
        let o = b * self.stride_b + h * self.stride_h + i * self.stride_q;
        self.data
            .get(o..o + self.nk)
            .ok_or_else(|| internal(format!("mask row ({b}, {h}, {i}) out of range")))
    }
}

/// One attention problem over contiguous f32 buffers.
pub(crate) struct Problem<'a> {
    pub dims: Dims,
    pub scale: f32,
    pub causal: bool,
    pub mask: Option<&'a MaskData>,
    pub q: &'a [f32],
    pub k: Heads<'a>,
    pub v: Heads<'a>,
    pub backend: Backend,
}

/// The `[Nk, D]` row-major block of every (batch, kv head) of `k` or `v`, in `b · Hkv + h` order.
/// Heads may lie anywhere in the storage: a KV cache narrowed to its filled length has
/// row-contiguous heads spaced `max_len · D` apart, and reading them in place saves a copy of the
/// whole cache per decoding step.
#[derive(Debug, Clone)]
pub(crate) struct Heads<'a> {
    heads: Vec<&'a [f32]>,
}

impl<'a> Heads<'a> {
    /// `x` contiguous `[n_heads, head_len]`.
    pub(crate) fn contiguous(x: &'a [f32], n_heads: usize, head_len: usize) -> CResult<Self> {
        if x.len() != n_heads * head_len {
            return Err(internal(format!(
                "buffer of {} values is not {n_heads} heads of {head_len}",
                x.len()
            )));
        }
        let heads = (0..n_heads)
            .map(|i| &x[i * head_len..(i + 1) * head_len])
            .collect();
        Ok(Self { heads })
    }

    /// Head `(bi, hi)` starts at `start + bi · stride_b + hi · stride_h` and holds `head_len`
    /// consecutive values; every head is range-checked here.
    pub(crate) fn strided(
        data: &'a [f32],
        start: usize,
        (b, h): (usize, usize),
        (stride_b, stride_h): (usize, usize),
        head_len: usize,
    ) -> CResult<Self> {
        let mut heads = Vec::with_capacity(b * h);
        for bi in 0..b {
            for hi in 0..h {
                let o = start + bi * stride_b + hi * stride_h;
                let head = data
                    .get(o..o + head_len)
                    .ok_or_else(|| internal("strided key / value head out of range"))?;
                heads.push(head);
            }
        }
        Ok(Self { heads })
    }

    fn get(&self, i: usize) -> CResult<&'a [f32]> {
        self.heads
            .get(i)
            .copied()
            .ok_or_else(|| internal("kv head out of range"))
    }

    fn len(&self) -> usize {
        self.heads.len()
    }
}

/// Query rows per head up to which the forward skips the key tiles and reads `k` / `v` rows in
/// place (decoding: one new query against a long cache, where transposing every key would cost
/// more than the products).
const DIRECT_ROWS: usize = 4;

/// Row stride of the key / value tiles of a problem with `nk` keys: [`TILE_LD`] once a tile can
/// be full, else `nk` rounded up to whole vectors (plus one 64-byte line when that is a multiple
/// of 64 floats, for the L1 sets as above). Temporal attention has 8–25 keys per position over
/// thousands of heads: full-width tiles there were 17× the floats, nearly all zeros, each
/// written and faulted in.
pub(crate) fn kv_ld(nk: usize) -> usize {
    if nk >= K_BLOCK {
        return TILE_LD;
    }
    let ld = nk.next_multiple_of(16);
    if ld.is_multiple_of(64) {
        ld + 16
    } else {
        ld
    }
}

/// Re-lays `x` (`[n, d]`, one kv head) as tiles of `K_BLOCK` rows transposed: tile `t` holds
/// `xᵀ[:, t·K_BLOCK ..]` as a `d × K_BLOCK` block with row stride [`kv_ld`]`(n)` (zero padded),
/// so that a tile product reads `K_BLOCK` consecutive keys per head-dim index.
fn transpose_tiles(x: &[f32], n: usize, d: usize) -> Vec<f32> {
    let tiles = n.div_ceil(K_BLOCK);
    let ld = kv_ld(n);
    let mut out = vec![0f32; tiles * d * ld];
    for (t, dst) in out.chunks_exact_mut(d * ld).enumerate() {
        for (c, src) in x
            .chunks_exact(d)
            .skip(t * K_BLOCK)
            .take(K_BLOCK)
            .enumerate()
        {
            for (p, &val) in src.iter().enumerate() {
                dst[p * ld + c] = val;
            }
        }
    }
    out
}

impl<'a> Problem<'a> {
    /// Checks the buffer lengths against `dims`.
    pub(crate) fn validate(&self) -> CResult<()> {
        let Dims {
            b,
            hq,
            hkv,
            nq,
            nk,
            d,
        } = self.dims;
        let heads_ok =
            |x: &Heads<'_>| x.len() == b * hkv && x.heads.iter().all(|h| h.len() == nk * d);
        if self.q.len() != b * hq * nq * d || !heads_ok(&self.k) || !heads_ok(&self.v) {
            return Err(internal(format!(
                "buffer sizes q {} k {} heads v {} heads do not match {:?}",
                self.q.len(),
                self.k.len(),
                self.v.len(),
                self.dims
            )));
        }
        if hkv == 0 || hq % hkv != 0 || d == 0 || nk == 0 {
            return Err(internal(format!("invalid sizes {:?}", self.dims)));
        }
        Ok(())
    }

    /// How many keys query row `i` sees (a prefix of the keys).
    fn visible(&self, i: usize) -> usize {
        if self.causal {
            (i as isize + self.dims.causal_offset() + 1).clamp(0, self.dims.nk as isize) as usize
        } else {
            self.dims.nk
        }
    }

    /// Adds `unit ·` the mask and the causal `-inf` to the score tile `s` (`rows × TILE_LD`,
    /// keys `j0 .. j0 + bk` of query rows `i0 ..`). `unit` is 1 for natural-log scores and
    /// `log₂ e` for the forward's base-2 scores.
    #[allow(clippy::too_many_arguments)]
    fn apply_bias(
        &self,
        s: &mut [f32],
        b: usize,
        h: usize,
        i0: usize,
        rows: usize,
        (j0, bk): (usize, usize),
        unit: f32,
    ) -> CResult<()> {
        for (r, srow) in s.chunks_exact_mut(TILE_LD).take(rows).enumerate() {
            let srow = &mut srow[..bk];
            if let Some(mask) = self.mask {
                let mrow = &mask.row(b, h, i0 + r)?[j0..j0 + bk];
                if unit == 1.0 {
                    for (x, &m) in srow.iter_mut().zip(mrow) {
                        *x += m;
                    }
                } else {
                    for (x, &m) in srow.iter_mut().zip(mrow) {
                        *x += m * unit;
                    }
                }
            }
            if self.causal {
                let vis = self.visible(i0 + r);
                if vis < j0 + bk {
                    srow[vis.saturating_sub(j0)..].fill(f32::NEG_INFINITY);
                }
            }
        }
        Ok(())
    }

    /// `factor · q` rows `i0 .. i0 + rows` of head `(b, h)` and the unscaled slice.
    fn q_rows(
        &self,
        b: usize,
        h: usize,
        i0: usize,
        rows: usize,
        factor: f32,
    ) -> (Vec<f32>, &'a [f32]) {
        let d = self.dims.d;
        let o = ((b * self.dims.hq + h) * self.dims.nq + i0) * d;
        let q = &self.q[o..o + rows * d];
        (q.iter().map(|x| x * factor).collect(), q)
    }

    fn kv_tiles(&self, x: &Heads<'_>) -> Vec<Vec<f32>> {
        let Dims { nk, d, .. } = self.dims;
        x.heads
            .par_iter()
            .map(|h| transpose_tiles(h, nk, d))
            .collect()
    }

    /// The forward of query rows `out.len() / D` of head `(b, h)` without key tiles: scores are
    /// dot products with the key rows in place, then one softmax and a weighted sum of value rows.
    fn forward_direct(&self, b: usize, h: usize, out: &mut [f32], lse: &mut [f32]) -> CResult<()> {
        let Dims { hq, hkv, nq, d, .. } = self.dims;
        let be = self.backend;
        let kvh = b * hkv + h / self.dims.group();
        let (kh, vh) = (self.k.get(kvh)?, self.v.get(kvh)?);
        let mut s = vec![0f32; self.dims.nk];
        for (i, (orow, lse)) in out.chunks_exact_mut(d).zip(lse.iter_mut()).enumerate() {
            let q = &self.q[((b * hq + h) * nq + i) * d..][..d];
            let vis = self.visible(i);
            let srow = &mut s[..vis];
            for (sj, krow) in srow.iter_mut().zip(kh.chunks_exact(d)) {
                *sj = dot(q, krow) * self.scale;
            }
            if let Some(mask) = self.mask {
                for (x, &m) in srow.iter_mut().zip(mask.row(b, h, i)?) {
                    *x += m;
                }
            }
            orow.fill(0.0);
            let m = if vis == 0 {
                f32::NEG_INFINITY
            } else {
                be.row_max(srow)
            };
            if m == f32::NEG_INFINITY {
                *lse = f32::NEG_INFINITY;
                continue;
            }
            let l = be.exp_sub_sum(srow, m);
            let inv = 1.0 / l;
            for (&p, vrow) in srow.iter().zip(vh.chunks_exact(d)) {
                let w = p * inv;
                for (o, &x) in orow.iter_mut().zip(vrow) {
                    *o += w * x;
                }
            }
            *lse = m + l.ln();
        }
        Ok(())
    }

    /// The forward pass: returns `out` `[B, Hq, Nq, D]` and `lse` `[B, Hq, Nq]`.
    pub(crate) fn forward(&self) -> CResult<(Vec<f32>, Vec<f32>)> {
        self.validate()?;
        let Dims { b, hq, nq, d, .. } = self.dims;
        let mut out = vec![0f32; b * hq * nq * d];
        let mut lse = vec![0f32; b * hq * nq];
        if out.is_empty() {
            return Ok((out, lse));
        }
        if nq <= DIRECT_ROWS {
            out.par_chunks_mut(nq * d)
                .zip(lse.par_chunks_mut(nq))
                .enumerate()
                .try_for_each(|(bh, (o, l))| self.forward_direct(bh / hq, bh % hq, o, l))?;
            return Ok((out, lse));
        }
        let kt = self.kv_tiles(&self.k);
        out.par_chunks_mut(nq * d)
            .zip(lse.par_chunks_mut(nq))
            .enumerate()
            .try_for_each(|(bh, (o_h, l_h))| {
                o_h.par_chunks_mut(Q_BLOCK * d)
                    .zip(l_h.par_chunks_mut(Q_BLOCK))
                    .enumerate()
                    .try_for_each(|(qb, (o, l))| {
                        self.forward_block(&kt, bh / hq, bh % hq, qb * Q_BLOCK, o, l)
                    })
            })?;
        Ok((out, lse))
    }

    /// One task of the forward: query rows `i0 .. i0 + lse.len()` of head `(b, h)`.
    fn forward_block(
        &self,
        kt: &[Vec<f32>],
        b: usize,
        h: usize,
        i0: usize,
        out: &mut [f32],
        lse: &mut [f32],
    ) -> CResult<()> {
        let Dims { hkv, d, .. } = self.dims;
        let be = self.backend;
        let rows = lse.len();
        let kvh = b * hkv + h / self.dims.group();
        let kt = kt
            .get(kvh)
            .ok_or_else(|| internal("kv head out of range"))?;
        let vh = self.v.get(kvh)?;
        // Scores in base 2 (`log₂ e` folded into q): the softmax then needs `2^x`, which skips
        // the `exp` range reduction's multiply and two-step `ln 2` subtraction.
        let (qs, _) = self.q_rows(b, h, i0, rows, self.scale * std::f32::consts::LOG2_E);
        let mut s = vec![0f32; rows * TILE_LD];
        let mut tmax = vec![f32::NEG_INFINITY; rows];
        let mut scratch = vec![0f32; 16 * rows];
        let mut m = vec![f32::NEG_INFINITY; rows];
        let mut l = vec![0f32; rows];
        out.fill(0.0);
        // Keys past what the block's last (most-seeing) row sees are skipped entirely.
        let kend = self.visible(i0 + rows - 1);
        let ld = kv_ld(self.dims.nk);
        for t in 0..kend.div_ceil(K_BLOCK) {
            let j0 = t * K_BLOCK;
            let bk = K_BLOCK.min(kend - j0);
            let ktile = &kt[t * d * ld..(t + 1) * d * ld];
            // Without a mask, and on tiles every row sees whole, nothing changes the scores
            // between the product and the softmax: the product reports each row's maximum.
            if self.mask.is_none() && self.visible(i0) >= j0 + bk {
                be.matmul_rowmax(
                    (rows, bk, d),
                    &qs,
                    d,
                    1,
                    ktile,
                    ld,
                    &mut s,
                    TILE_LD,
                    &mut tmax,
                    &mut scratch,
                )?;
            } else {
                be.matmul((rows, bk, d), &qs, d, 1, ktile, ld, &mut s, TILE_LD, false)?;
                self.apply_bias(&mut s, b, h, i0, rows, (j0, bk), std::f32::consts::LOG2_E)?;
                for (mx, srow) in tmax.iter_mut().zip(s.chunks_exact(TILE_LD)) {
                    *mx = be.row_max(&srow[..bk]);
                }
            }
            for (r, (srow, orow)) in s
                .chunks_exact_mut(TILE_LD)
                .zip(out.chunks_exact_mut(d))
                .enumerate()
            {
                let srow = &mut srow[..bk];
                let m_new = tmax[r].max(m[r]);
                if m_new == f32::NEG_INFINITY {
                    // Nothing visible to this row yet: contributes nothing.
                    srow.fill(0.0);
                    continue;
                }
                let alpha = (m[r] - m_new).exp2();
                let sum = be.exp2_sub_sum(srow, m_new);
                l[r] = l[r] * alpha + sum;
                m[r] = m_new;
                if alpha != 1.0 {
                    orow.iter_mut().for_each(|x| *x *= alpha);
                }
            }
            be.matmul(
                (rows, d, bk),
                &s,
                TILE_LD,
                1,
                &vh[j0 * d..],
                d,
                out,
                d,
                true,
            )?;
        }
        for ((orow, lse), (&m, &l)) in out
            .chunks_exact_mut(d)
            .zip(lse.iter_mut())
            .zip(m.iter().zip(&l))
        {
            if l > 0.0 {
                let inv = 1.0 / l;
                orow.iter_mut().for_each(|x| *x *= inv);
                // Back from base 2: ln Σ eˢ = ln 2 · (m₂ + log₂ l).
                *lse = (m + l.log2()) * std::f32::consts::LN_2;
            } else {
                orow.fill(0.0);
                *lse = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// The backward pass from `out`, the upstream gradient `dout` and the forward's `lse`:
    /// returns `(dq, dk, dv)` in the layouts of `q`, `k`, `v`.
    pub(crate) fn backward(
        &self,
        out: &[f32],
        dout: &[f32],
        lse: &[f32],
    ) -> CResult<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        // One pass per (batch, kv head) computes each score tile once (5 tile products: S, dP,
        // dV, dK, dQ); the two-pass schedule recomputes S and dP for dQ (7) but splits the work
        // by key tile and query block, which only pays when there are fewer heads than threads.
        let fused = self.dims.b * self.dims.hkv >= rayon::current_num_threads();
        self.backward_with(out, dout, lse, fused)
    }

    /// [`Problem::backward`] with the schedule chosen: `fused` (one task per kv head) or two
    /// passes (dK / dV by key tile, then dQ by query block).
    fn backward_with(
        &self,
        out: &[f32],
        dout: &[f32],
        lse: &[f32],
        fused: bool,
    ) -> CResult<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        self.validate()?;
        let Dims {
            b,
            hq,
            hkv,
            nq,
            nk,
            d,
        } = self.dims;
        if out.len() != self.q.len() || dout.len() != self.q.len() || lse.len() != b * hq * nq {
            return Err(internal("backward buffers do not match the forward sizes"));
        }
        let mut dq = vec![0f32; self.q.len()];
        let mut dk = vec![0f32; b * hkv * nk * d];
        let mut dv = vec![0f32; b * hkv * nk * d];
        if dq.is_empty() {
            return Ok((dq, dk, dv));
        }
        // Δᵢ = Σ_d dOᵢ_d · Oᵢ_d = Σ_j Pᵢⱼ dPᵢⱼ: the softmax Jacobian's row term.
        let delta: Vec<f32> = out
            .par_chunks_exact(d)
            .zip(dout.par_chunks_exact(d))
            .map(|(o, g)| o.iter().zip(g).map(|(a, b)| a * b).sum())
            .collect();
        let kt = self.kv_tiles(&self.k);
        let vt = self.kv_tiles(&self.v);
        let ctx = BwdCtx {
            dout,
            lse,
            delta: &delta,
            kt: &kt,
            vt: &vt,
        };
        if fused {
            let g = self.dims.group();
            dq.par_chunks_mut(g * nq * d)
                .zip(dk.par_chunks_mut(nk * d))
                .zip(dv.par_chunks_mut(nk * d))
                .enumerate()
                .try_for_each(|(bkv, ((dq_g, dk_h), dv_h))| {
                    self.backward_head(&ctx, bkv / hkv, bkv % hkv, dq_g, dk_h, dv_h)
                })?;
            return Ok((dq, dk, dv));
        }
        // Pass 1: dK, dV, one task per (batch, kv head, key tile).
        dk.par_chunks_mut(nk * d)
            .zip(dv.par_chunks_mut(nk * d))
            .enumerate()
            .try_for_each(|(bkv, (dk_h, dv_h))| {
                dk_h.par_chunks_mut(K_BLOCK * d)
                    .zip(dv_h.par_chunks_mut(K_BLOCK * d))
                    .enumerate()
                    .try_for_each(|(t, (dkt, dvt))| {
                        self.backward_kv_block(&ctx, bkv / hkv, bkv % hkv, t, dkt, dvt)
                    })
            })?;
        // Pass 2: dQ, one task per (batch, query head, query block).
        dq.par_chunks_mut(nq * d)
            .enumerate()
            .try_for_each(|(bh, dq_h)| {
                dq_h.par_chunks_mut(Q_BLOCK * d)
                    .enumerate()
                    .try_for_each(|(qb, dqb)| {
                        self.backward_q_block(&ctx, bh / hq, bh % hq, qb * Q_BLOCK, dqb)
                    })
            })?;
        Ok((dq, dk, dv))
    }

    /// Recomputes `P` of one tile from `lse` and turns `dP` into `dS = scale · P ∘ (dP − Δ)`:
    /// on return `s` holds `P` and `dp` holds `dS` (`rows × TILE_LD`, first `bk` columns).
    #[allow(clippy::too_many_arguments)]
    fn tile_grads(
        &self,
        ctx: &BwdCtx<'_>,
        (b, h, i0, rows): (usize, usize, usize, usize),
        (t, bk): (usize, usize),
        qs: &[f32],
        s: &mut [f32],
        dp: &mut [f32],
    ) -> CResult<()> {
        let Dims { hq, hkv, nq, d, .. } = self.dims;
        let be = self.backend;
        let kvh = b * hkv + h / self.dims.group();
        let ld = kv_ld(self.dims.nk);
        let ktile = ctx
            .kt
            .get(kvh)
            .and_then(|x| x.get(t * d * ld..(t + 1) * d * ld))
            .ok_or_else(|| internal("key tile out of range"))?;
        let vtile = ctx
            .vt
            .get(kvh)
            .and_then(|x| x.get(t * d * ld..(t + 1) * d * ld))
            .ok_or_else(|| internal("value tile out of range"))?;
        let row0 = (b * hq + h) * nq + i0;
        let dout = &ctx.dout[row0 * d..(row0 + rows) * d];
        be.matmul((rows, bk, d), qs, d, 1, ktile, ld, s, TILE_LD, false)?;
        self.apply_bias(s, b, h, i0, rows, (t * K_BLOCK, bk), 1.0)?;
        be.matmul((rows, bk, d), dout, d, 1, vtile, ld, dp, TILE_LD, false)?;
        for (r, (srow, dprow)) in s
            .chunks_exact_mut(TILE_LD)
            .zip(dp.chunks_exact_mut(TILE_LD))
            .take(rows)
            .enumerate()
        {
            let (srow, dprow) = (&mut srow[..bk], &mut dprow[..bk]);
            let lse = ctx.lse[row0 + r];
            if lse == f32::NEG_INFINITY {
                srow.fill(0.0);
            } else {
                be.exp_sub_sum(srow, lse);
            }
            let delta = ctx.delta[row0 + r];
            for (g, &p) in dprow.iter_mut().zip(srow.iter()) {
                *g = self.scale * p * (*g - delta);
            }
        }
        Ok(())
    }

    /// Pass 1 task: `dK`, `dV` of key tile `t` of kv head `(b, kvh)`, summed over the query heads
    /// of its group and over all query blocks.
    fn backward_kv_block(
        &self,
        ctx: &BwdCtx<'_>,
        b: usize,
        kvh: usize,
        t: usize,
        dk: &mut [f32],
        dv: &mut [f32],
    ) -> CResult<()> {
        let Dims { hq, nq, d, .. } = self.dims;
        let be = self.backend;
        let bk = dk.len() / d;
        let j0 = t * K_BLOCK;
        let g = self.dims.group();
        let mut s = vec![0f32; Q_BLOCK * TILE_LD];
        let mut dp = vec![0f32; Q_BLOCK * TILE_LD];
        dk.fill(0.0);
        dv.fill(0.0);
        for h in kvh * g..(kvh + 1) * g {
            for i0 in (0..nq).step_by(Q_BLOCK) {
                let rows = Q_BLOCK.min(nq - i0);
                if self.visible(i0 + rows - 1) <= j0 {
                    continue;
                }
                let (qs, q) = self.q_rows(b, h, i0, rows, self.scale);
                self.tile_grads(ctx, (b, h, i0, rows), (t, bk), &qs, &mut s, &mut dp)?;
                let row0 = (b * hq + h) * nq + i0;
                let dout = &ctx.dout[row0 * d..(row0 + rows) * d];
                // dV += Pᵀ · dO and dK += dSᵀ · Q: the tiles are read transposed (a_rs = 1).
                be.matmul((bk, d, rows), &s, 1, TILE_LD, dout, d, dv, d, true)?;
                be.matmul((bk, d, rows), &dp, 1, TILE_LD, q, d, dk, d, true)?;
            }
        }
        Ok(())
    }

    /// Fused task: `dQ` of every query head of kv head `(b, kvh)`'s group (`dq`: their rows,
    /// contiguous), and that kv head's `dK`, `dV`; each score tile is computed once.
    fn backward_head(
        &self,
        ctx: &BwdCtx<'_>,
        b: usize,
        kvh: usize,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
    ) -> CResult<()> {
        let Dims { hq, hkv, nq, d, .. } = self.dims;
        let be = self.backend;
        let g = self.dims.group();
        let kh = self.k.get(b * hkv + kvh)?;
        let mut s = vec![0f32; Q_BLOCK * TILE_LD];
        let mut dp = vec![0f32; Q_BLOCK * TILE_LD];
        dq.fill(0.0);
        dk.fill(0.0);
        dv.fill(0.0);
        for (hi, h) in (kvh * g..(kvh + 1) * g).enumerate() {
            for i0 in (0..nq).step_by(Q_BLOCK) {
                let rows = Q_BLOCK.min(nq - i0);
                let (qs, q) = self.q_rows(b, h, i0, rows, self.scale);
                let row0 = (b * hq + h) * nq + i0;
                let dout = &ctx.dout[row0 * d..(row0 + rows) * d];
                let dqb = dq
                    .get_mut((hi * nq + i0) * d..(hi * nq + i0 + rows) * d)
                    .ok_or_else(|| internal("dq block out of range"))?;
                let kend = self.visible(i0 + rows - 1);
                for t in 0..kend.div_ceil(K_BLOCK) {
                    let j0 = t * K_BLOCK;
                    let bk = K_BLOCK.min(kend - j0);
                    self.tile_grads(ctx, (b, h, i0, rows), (t, bk), &qs, &mut s, &mut dp)?;
                    let (dvt, dkt) = (
                        &mut dv[j0 * d..(j0 + bk) * d],
                        &mut dk[j0 * d..(j0 + bk) * d],
                    );
                    // dV += Pᵀ · dO, dK += dSᵀ · Q (tiles read transposed), dQ += dS · K.
                    be.matmul((bk, d, rows), &s, 1, TILE_LD, dout, d, dvt, d, true)?;
                    be.matmul((bk, d, rows), &dp, 1, TILE_LD, q, d, dkt, d, true)?;
                    be.matmul(
                        (rows, d, bk),
                        &dp,
                        TILE_LD,
                        1,
                        &kh[j0 * d..],
                        d,
                        dqb,
                        d,
                        true,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Pass 2 task: `dQ` of query rows `i0 ..` of head `(b, h)`.
    fn backward_q_block(
        &self,
        ctx: &BwdCtx<'_>,
        b: usize,
        h: usize,
        i0: usize,
        dq: &mut [f32],
    ) -> CResult<()> {
        let Dims { hkv, d, .. } = self.dims;
        let be = self.backend;
        let rows = dq.len() / d;
        let kvh = b * hkv + h / self.dims.group();
        let kh = self.k.get(kvh)?;
        let (qs, _) = self.q_rows(b, h, i0, rows, self.scale);
        let mut s = vec![0f32; rows * TILE_LD];
        let mut dp = vec![0f32; rows * TILE_LD];
        dq.fill(0.0);
        let kend = self.visible(i0 + rows - 1);
        for t in 0..kend.div_ceil(K_BLOCK) {
            let j0 = t * K_BLOCK;
            let bk = K_BLOCK.min(kend - j0);
            self.tile_grads(ctx, (b, h, i0, rows), (t, bk), &qs, &mut s, &mut dp)?;
            // dQ += dS · K
            be.matmul(
                (rows, d, bk),
                &dp,
                TILE_LD,
                1,
                &kh[j0 * d..],
                d,
                dq,
                d,
                true,
            )?;
        }
        Ok(())
    }
}

/// Read-only inputs shared by the backward tasks.
struct BwdCtx<'a> {
    dout: &'a [f32],
    lse: &'a [f32],
    delta: &'a [f32],
    kt: &'a [Vec<f32>],
    vt: &'a [Vec<f32>],
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Deterministic values in [-2, 2).
    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() })
            .fold(0.0, f32::max)
    }

    /// Seeded inputs of one problem: q, k, v, the upstream gradient and a `[B, 1, 1, Nk]`
    /// additive mask with `-inf` at `inf_at`.
    struct Inputs {
        dims: Dims,
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
        dout: Vec<f32>,
        mask: MaskData,
    }

    impl Inputs {
        fn new(dims: Dims, seed: u64, inf_at: usize) -> Self {
            let q = data(dims.b * dims.hq * dims.nq * dims.d, seed);
            let kv = dims.b * dims.hkv * dims.nk * dims.d;
            let mut bias = data(dims.b * dims.nk, seed + 4);
            bias[inf_at] = f32::NEG_INFINITY;
            let mask =
                Tensor::from_vec(bias, (dims.b, 1, 1, dims.nk), &candle_core::Device::Cpu).unwrap();
            Self {
                dims,
                dout: data(q.len(), seed + 3),
                q,
                k: data(kv, seed + 1),
                v: data(kv, seed + 2),
                mask: MaskData::new(&mask, [dims.b, 1, 1, dims.nk], &dims).unwrap(),
            }
        }

        fn problem(&self, scale: f32, causal: bool, backend: Backend) -> Problem<'_> {
            let (d, heads) = (self.dims, self.dims.b * self.dims.hkv);
            Problem {
                dims: d,
                scale,
                causal,
                mask: Some(&self.mask),
                q: &self.q,
                k: Heads::contiguous(&self.k, heads, d.nk * d.d).unwrap(),
                v: Heads::contiguous(&self.v, heads, d.nk * d.d).unwrap(),
                backend,
            }
        }
    }

    /// The portable backend (the one non-AVX-512 CPUs run) agrees with the detected one, forward
    /// and backward, on ragged tiles, GQA, a mask with `-inf` and bottom-right causal.
    #[test]
    fn portable_backend_matches_detected() {
        let dims = Dims {
            b: 2,
            hq: 4,
            hkv: 2,
            nq: 53,
            nk: 300,
            d: 40,
        };
        let x = Inputs::new(dims, 1, 7);
        let run = |backend| {
            let p = x.problem(0.2, true, backend);
            let (out, lse) = p.forward().unwrap();
            let (dq, dk, dv) = p.backward(&out, &x.dout, &lse).unwrap();
            [out, lse, dq, dk, dv]
        };
        let portable = run(Backend::Portable);
        let mut backends = vec![Backend::detect()];
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx2_fma() {
            backends.push(Backend::Avx2);
        }
        for be in backends {
            let fast = run(be);
            for (name, (a, b)) in ["out", "lse", "dq", "dk", "dv"]
                .iter()
                .zip(fast.iter().zip(portable.iter()))
            {
                let d = max_diff(a, b);
                assert!(d < 2e-5, "{be:?} {name}: backends differ by {d}");
            }
        }
    }

    /// The fused backward (one task per kv head) and the two-pass one agree: causal with a
    /// query offset, GQA, a mask with `-inf`, ragged tiles; and without causality.
    #[test]
    fn fused_backward_matches_two_passes() {
        for causal in [true, false] {
            let dims = Dims {
                b: 2,
                hq: 4,
                hkv: 2,
                nq: 101,
                nk: 530,
                d: 24,
            };
            let x = Inputs::new(dims, 11, 300);
            let p = x.problem(0.3, causal, Backend::detect());
            let (out, lse) = p.forward().unwrap();
            let (a, b) = (
                p.backward_with(&out, &x.dout, &lse, true).unwrap(),
                p.backward_with(&out, &x.dout, &lse, false).unwrap(),
            );
            for (name, (x, y)) in [
                ("dq", (&a.0, &b.0)),
                ("dk", (&a.1, &b.1)),
                ("dv", (&a.2, &b.2)),
            ] {
                let dd = max_diff(x, y);
                let m = y.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(
                    dd <= 1e-5 * m.max(1.0),
                    "causal {causal} {name}: {dd} (max {m})"
                );
            }
        }
    }

    #[test]
    fn transpose_tiles_layout() {
        let (n, d) = (K_BLOCK + 3, 2);
        let x: Vec<f32> = (0..n * d).map(|i| i as f32).collect();
        let t = transpose_tiles(&x, n, d);
        assert_eq!(t.len(), 2 * d * TILE_LD);
        // Key K_BLOCK + 1, dim 1 lives in tile 1, row 1, column 1.
        assert_eq!(t[d * TILE_LD + TILE_LD + 1], x[(K_BLOCK + 1) * d + 1]);
        assert_eq!(t[d * TILE_LD + 5], 0.0);
        // Short problems get narrow tiles: 8 keys in rows of 16 floats.
        let (n, d) = (8, 3);
        let x: Vec<f32> = (0..n * d).map(|i| i as f32).collect();
        let t = transpose_tiles(&x, n, d);
        assert_eq!(t.len(), d * 16);
        assert_eq!(t[2 * 16 + 5], x[5 * d + 2]);
        assert_eq!(t[16 + 9], 0.0);
    }

    #[test]
    fn kv_ld_is_whole_vectors_and_never_wider_than_a_full_tile() {
        for nk in 1..600 {
            let ld = kv_ld(nk);
            assert!(
                ld.is_multiple_of(16) && ld >= nk.min(K_BLOCK) && ld <= TILE_LD,
                "{nk}"
            );
            assert_ne!(ld % 64, 0, "{nk}: a stride of whole 256-byte lines");
        }
    }
}
