//! Nearest-code search: `argmin_k ‖z − e_k‖²` for every row `z`, without an `N × K` distance
//! matrix (vector quantisation, k-means assignment).
//!
//! For every row `z` the squared distance to code `e_k` is `‖z‖² − 2 z·e_k + ‖e_k‖²`; `‖z‖²` is
//! the same for all codes of a row, so the argmin only needs the *score*
//! `s_k = ‖e_k‖² − 2 z·e_k`. Two CPU paths compute it, both parallel over blocks of rows (rayon)
//! and both keeping a running minimum per row while walking the codes in tiles:
//!
//! - **small dims** (`D ≤ 32`, the LlamaGen / FSQ-style 8-dim codes): the codebook is stored
//!   transposed, `Eᵀ [D, K]`, padded to a multiple of 16 codes with `‖e‖² = +∞`. A register
//!   block of 4 rows × 16 codes accumulates the scores with `D` fused multiply-adds per lane and
//!   updates a per-lane running (min, tile) pair; lanes are reduced once per row. With `D = 8`
//!   a gemm would be starved (its inner dimension is 8), which is why PyTorch's `addmm + argmin`
//!   reaches only ~5 GFLOP/s there.
//! - **large dims**: a `[rows, codes]` tile of dot products from [`crate::gemm`] (256 rows ×
//!   512 codes, 512 KiB per task), then the same lane-wise running argmin over the tile.
//!
//! Memory is `O(N + K·D)` plus one tile per worker, whatever `K` is (2^14 – 2^18 codes). The
//! variant is chosen at run time ([`crate::simd::level`]): the small-dim kernel is written in
//! AVX-512 intrinsics (4 rows × 16 codes, `avx512.rs`) and in AVX2 + FMA intrinsics (4 rows × 8
//! codes, `avx2.rs`); elsewhere a portable version runs, which LLVM vectorises poorly (about 20×
//! slower at `D = 8`); the gemm path's tile scan is portable code compiled per variant.
//!
//! # Ties and exactness
//! The result is the argmin of the f32 scores `s_k` with **the lowest code index on ties**, as
//! `torch.argmin` (and candle's) pick the first minimum. [`nearest_code_reference`] computes the
//! definition directly, `argmin_k Σ_d (z_d − e_kd)²`, with plain candle ops. Where the arithmetic
//! is exact (e.g. values on a coarse binary grid) the two agree exactly, ties included; on
//! general data they agree except between codes whose distances differ by less than the f32
//! rounding of the expanded form (about `1e-7·(‖z‖² + ‖e‖²)`).
//!
//! The returned squared distance is `max(0, ‖z‖² + s_min)` in f32 (the reference returns the
//! direct sum).

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use vidgen_video_core::{Error, Result};

use crate::gemm::{gemm, Threads, View};
use crate::simd::{self, Level};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Lanes of the register block (one AVX-512 vector of f32).
const LANES: usize = 16;
/// Rows of the register block.
const MR: usize = 4;
/// Rows per parallel task (small-dim path).
const ROW_BLOCK: usize = 64;
/// Rows per parallel task (gemm path: larger, because each task packs the codebook tiles).
const GEMM_ROW_BLOCK: usize = 256;
/// Codes per tile (small-dim path: `D × CODE_TILE` floats of `Eᵀ` stay in L1/L2).
const CODE_TILE: usize = 1024;
/// Codes per tile of the gemm path.
const GEMM_CODE_TILE: usize = 512;
/// Largest code dimension that takes the register-blocked path.
pub const SMALL_DIM: usize = 32;

/// A codebook prepared for repeated nearest-code searches: `Eᵀ` padded to whole lane groups
/// and the squared norms `‖e_k‖²`.
#[derive(Debug, Clone)]
pub struct PreparedCodebook {
    k: usize,
    d: usize,
    /// Padded code count (a multiple of [`LANES`]).
    kp: usize,
    /// Row-major `[K, D]` copy (gemm path).
    rows: Vec<f32>,
    /// `Eᵀ [D, kp]`, zero-padded (small-dim path).
    cols: Vec<f32>,
    /// `‖e_k‖²`, `+∞` for padding codes.
    norms: Vec<f32>,
}

impl PreparedCodebook {
    /// Prepares a row-major `[k, d]` codebook.
    ///
    /// # Errors
    /// `k = 0`, `k ≥ 2³²` (ids are `u32`), `d = 0`, or `codebook.len() ≠ k·d`.
    pub fn new(codebook: &[f32], k: usize, d: usize) -> Result<Self> {
        if k == 0 || k > u32::MAX as usize || d == 0 {
            return Err(Error::invalid(
                "codebook",
                format!("need 1 ≤ K < 2^32 codes of dimension D ≥ 1, got K = {k}, D = {d}"),
            ));
        }
        if k.checked_mul(d) != Some(codebook.len()) {
            return Err(Error::invalid(
                "codebook",
                format!("{} values do not form [K, D] = [{k}, {d}]", codebook.len()),
            ));
        }
        let kp = k.div_ceil(LANES) * LANES;
        let mut cols = vec![0f32; d * kp];
        let mut norms = vec![f32::INFINITY; kp];
        for (c, row) in codebook.chunks_exact(d).enumerate() {
            let mut n = 0f32;
            for (j, &v) in row.iter().enumerate() {
                cols[j * kp + c] = v;
                n += v * v;
            }
            norms[c] = n;
        }
        Ok(PreparedCodebook {
            k,
            d,
            kp,
            rows: codebook.to_vec(),
            cols,
            norms,
        })
    }

    /// Prepares a `[K, D]` codebook tensor (any float dtype, any device; searched on the CPU).
    ///
    /// # Errors
    /// As [`PreparedCodebook::new`], and a tensor that is not rank 2.
    pub fn from_tensor(codebook: &Tensor) -> Result<Self> {
        let (k, d) = match *codebook.dims() {
            [k, d] => (k, d),
            _ => {
                return Err(Error::invalid(
                    "codebook",
                    format!("expected [K, D], found shape {:?}", codebook.dims()),
                ))
            }
        };
        let e = codebook
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::new(&e, k, d)
    }

    /// Number of codes.
    pub fn len(&self) -> usize {
        self.k
    }

    /// Whether the codebook has no codes (never: [`PreparedCodebook::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.k == 0
    }

    /// Code dimension.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Nearest code of every row of the row-major `[n, d]` matrix `z`: `(ids, squared
    /// distances)`, ties to the lowest id (see the module docs). Distances are
    /// `max(0, ‖z‖² + s_min)` in f32.
    ///
    /// Under [`crate::force_reference`] this runs [`nearest_code_reference`] instead.
    ///
    /// # Errors
    /// `z.len()` not a multiple of `d`.
    pub fn nearest(&self, z: &[f32]) -> Result<(Vec<u32>, Vec<f32>)> {
        let d = self.d;
        if !z.len().is_multiple_of(d) {
            return Err(Error::invalid(
                "z",
                format!("{} values are not rows of D = {d}", z.len()),
            ));
        }
        let n = z.len() / d;
        if crate::reference_forced() {
            let dev = Device::Cpu;
            let zt = Tensor::from_slice(z, (n, d), &dev)?;
            let et = Tensor::from_slice(&self.rows, (self.k, d), &dev)?;
            let (ids, dist) = nearest_code_reference(&zt, &et)?;
            return Ok((ids.to_vec1::<u32>()?, dist.to_vec1::<f32>()?));
        }
        let mut ids = vec![0u32; n];
        let mut dist = vec![0f32; n];
        if n == 0 {
            return Ok((ids, dist));
        }
        let kern = Kernel::detect();
        let rb = if d <= SMALL_DIM {
            ROW_BLOCK
        } else {
            GEMM_ROW_BLOCK
        };
        ids.par_chunks_mut(rb)
            .zip(dist.par_chunks_mut(rb))
            .enumerate()
            .try_for_each(|(blk, (ids, dist))| -> Result<()> {
                let r0 = blk * rb;
                let zb = &z[r0 * d..(r0 + ids.len()) * d];
                if d <= SMALL_DIM {
                    kern.small(self, zb, ids, dist);
                } else {
                    self.gemm_block(kern, zb, ids, dist)?;
                }
                for (r, dv) in dist.iter_mut().enumerate() {
                    let zr = &zb[r * d..(r + 1) * d];
                    let zz: f32 = zr.iter().map(|v| v * v).sum();
                    *dv = (*dv + zz).max(0.0);
                }
                Ok(())
            })?;
        Ok((ids, dist))
    }

    fn gemm_block(&self, kern: Kernel, z: &[f32], ids: &mut [u32], best: &mut [f32]) -> Result<()> {
        let d = self.d;
        let rows = ids.len();
        let mut buf = vec![0f32; rows * GEMM_CODE_TILE];
        let mut state = vec![RowBest::default(); rows];
        let mut c0 = 0;
        while c0 < self.k {
            let kt = GEMM_CODE_TILE.min(self.k - c0);
            // dots (rows × kt, row stride GEMM_CODE_TILE) = z (rows × d) · E[c0 .. c0 + kt]ᵀ,
            // the codes of the row-major [k, d] codebook read as a column-major d × kt matrix.
            gemm(
                rows,
                kt,
                d,
                &mut buf,
                View::row_major(GEMM_CODE_TILE),
                z,
                View::row_major(d),
                &self.rows,
                View::col_major(d).at(c0 * d),
                false,
                Threads::One,
            )?;
            for (r, st) in state.iter_mut().enumerate() {
                let dots = &buf[r * GEMM_CODE_TILE..r * GEMM_CODE_TILE + kt];
                kern.scan(dots, &self.norms[c0..c0 + kt], c0, st);
            }
            c0 += kt;
        }
        for ((st, id), b) in state.iter().zip(ids.iter_mut()).zip(best.iter_mut()) {
            *id = st.idx;
            *b = st.val;
        }
        Ok(())
    }
}

/// Checks `z [N, D]` against `codebook [K, D]`; returns `(N, D, K)`.
fn check(z: &Tensor, codebook: &Tensor) -> Result<(usize, usize, usize)> {
    let (n, d) = match *z.dims() {
        [n, d] => (n, d),
        _ => {
            return Err(Error::invalid(
                "z",
                format!("expected rows [N, D], found shape {:?}", z.dims()),
            ))
        }
    };
    let k = match *codebook.dims() {
        [k, dk] if dk == d && k > 0 && d > 0 && k <= u32::MAX as usize => k,
        _ => {
            return Err(Error::invalid(
                "codebook",
                format!(
                    "expected [K, D] with 1 ≤ K < 2^32 and D = {d} ≥ 1 (the last dim of z {:?}), \
                     found shape {:?}",
                    z.dims(),
                    codebook.dims()
                ),
            ))
        }
    };
    for (name, t) in [("z", z), ("codebook", codebook)] {
        if !t.dtype().is_float() {
            return Err(Error::DType {
                key: name.into(),
                expected: "a float dtype".into(),
                found: format!("{:?}", t.dtype()),
            });
        }
    }
    Ok((n, d, k))
}

/// Nearest code of every row: `argmin_k ‖z − e_k‖²`, ties to the lowest `k`, with the squared
/// distance (see the module docs for the algorithm and exactness). Searched on the CPU in f32;
/// for repeated searches against one codebook, [`PreparedCodebook`] saves its preparation.
///
/// # Shapes
/// `z`: `[N, D]`, `codebook`: `[K, D]` (any float dtypes, any device) → `(ids [N] u32,
/// squared distances [N] f32)` on the device of `z`.
///
/// # Errors
/// Ranks other than 2, different `D`, `K = 0`, `D = 0`, non-float dtypes.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use vidgen_video_kernels::nearest_code;
/// let dev = Device::Cpu;
/// let codes = Tensor::new(&[[0f32, 0.], [1., 1.], [0., 1.]], &dev)?;
/// let z = Tensor::new(&[[0.9f32, 0.8], [0.1, 0.6], [0.5, 0.5]], &dev)?;
/// let (ids, _dist) = nearest_code(&z, &codes)?;
/// // [0.5, 0.5] is equally far from all three codes: the lowest index wins.
/// assert_eq!(ids.to_vec1::<u32>()?, [1, 2, 0]);
/// # Ok::<(), vidgen_video_core::Error>(())
/// ```
pub fn nearest_code(z: &Tensor, codebook: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, _, _) = check(z, codebook)?;
    if crate::reference_forced() {
        return nearest_code_reference(z, codebook);
    }
    let cb = PreparedCodebook::from_tensor(codebook)?;
    let data = z.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let (ids, dist) = cb.nearest(&data)?;
    let dev = z.device();
    Ok((
        Tensor::from_vec(ids, n, dev)?,
        Tensor::from_vec(dist, n, dev)?,
    ))
}

/// Rows per step of [`nearest_code_reference`]: its `[rows, K, D]` difference tensor stays
/// below this many elements.
const REFERENCE_CHUNK: usize = 1 << 22;

/// [`nearest_code`] from plain candle ops, the readable definition:
///
/// ```text
/// dist[n, k] = Σ_d (z[n, d] − e[k, d])²       (f32, direct differences)
/// ids[n]     = argmin_k dist[n, k]             (first minimum on ties)
/// ```
///
/// Rows are processed in chunks so that the `[rows, K, D]` difference tensor stays below 2²²
/// elements. Meant for tests and small shapes.
///
/// # Shapes
/// As [`nearest_code`]: `z [N, D]`, `codebook [K, D]` → `(ids [N] u32, squared distances [N]
/// f32)` on the device of `z`.
///
/// # Errors
/// As [`nearest_code`].
pub fn nearest_code_reference(z: &Tensor, codebook: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, d, k) = check(z, codebook)?;
    let dev = z.device();
    if n == 0 {
        return Ok((
            Tensor::zeros(0, DType::U32, dev)?,
            Tensor::zeros(0, DType::F32, dev)?,
        ));
    }
    let z = z.to_dtype(DType::F32)?;
    // [1, K, D]
    let e = codebook
        .to_dtype(DType::F32)?
        .to_device(dev)?
        .unsqueeze(0)?;
    let chunk = (REFERENCE_CHUNK / (k * d)).max(1);
    let (mut ids, mut dists) = (Vec::new(), Vec::new());
    let mut r0 = 0;
    while r0 < n {
        let rows = chunk.min(n - r0);
        // [rows, 1, D] − [1, K, D] → [rows, K, D] → [rows, K]
        let dist = z
            .narrow(0, r0, rows)?
            .unsqueeze(1)?
            .broadcast_sub(&e)?
            .sqr()?
            .sum(2)?;
        let id = dist.argmin_keepdim(1)?; // [rows, 1]
        dists.push(dist.gather(&id, 1)?.squeeze(1)?);
        ids.push(id.squeeze(1)?);
        r0 += rows;
    }
    Ok((Tensor::cat(&ids, 0)?, Tensor::cat(&dists, 0)?))
}

/// Running best of one row.
#[derive(Debug, Clone, Copy)]
struct RowBest {
    val: f32,
    idx: u32,
}

impl Default for RowBest {
    fn default() -> Self {
        RowBest {
            val: f32::INFINITY,
            idx: 0,
        }
    }
}

impl RowBest {
    /// Merges a candidate; equal scores keep the lower index.
    #[inline(always)]
    fn merge(&mut self, val: f32, idx: u32) {
        if val < self.val || (val == self.val && idx < self.idx) {
            self.val = val;
            self.idx = idx;
        }
    }
}

/// Which compiled variant of the tile kernels to run.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Generic,
}

impl Kernel {
    fn detect() -> Self {
        match simd::level() {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => Kernel::Avx512,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2Fma => Kernel::Avx2,
            _ => Kernel::Generic,
        }
    }

    fn small(self, cb: &PreparedCodebook, z: &[f32], ids: &mut [u32], best: &mut [f32]) {
        match self {
            // SAFETY: the variant is only chosen after run-time detection of its features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { avx512::small(cb, z, ids, best) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::small(cb, z, ids, best) },
            Kernel::Generic => small_block::<false>(cb, z, ids, best),
        }
    }

    fn scan(self, dots: &[f32], norms: &[f32], base: usize, st: &mut RowBest) {
        match self {
            // SAFETY: the variant is only chosen after run-time detection of its features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { avx512::scan(dots, norms, base, st) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::scan(dots, norms, base, st) },
            Kernel::Generic => scan_tile(dots, norms, base, st),
        }
    }
}

#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Lane-wise running argmin over one tile of dot products: score = `norm − 2·dot`.
#[inline(always)]
fn scan_tile(dots: &[f32], norms: &[f32], base: usize, st: &mut RowBest) {
    let mut bv = [f32::INFINITY; LANES];
    let mut bg = [0u32; LANES];
    let groups = dots.len() / LANES;
    for g in 0..groups {
        let dch = &dots[g * LANES..(g + 1) * LANES];
        let nch = &norms[g * LANES..(g + 1) * LANES];
        for l in 0..LANES {
            let s = nch[l] - 2.0 * dch[l];
            let m = s < bv[l];
            bv[l] = if m { s } else { bv[l] };
            bg[l] = if m { g as u32 } else { bg[l] };
        }
    }
    for l in 0..LANES {
        if bv[l].is_finite() {
            st.merge(bv[l], (base + bg[l] as usize * LANES + l) as u32);
        }
    }
    for c in groups * LANES..dots.len() {
        st.merge(norms[c] - 2.0 * dots[c], (base + c) as u32);
    }
}

/// Register-blocked small-dim kernel over every code for a block of rows.
// Index loops over fixed-size register arrays are what LLVM turns into vector code here.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn small_block<const FMA: bool>(
    cb: &PreparedCodebook,
    z: &[f32],
    ids: &mut [u32],
    best: &mut [f32],
) {
    let d = cb.d;
    let rows = ids.len();
    let mut state = vec![RowBest::default(); rows];
    let mut c0 = 0;
    while c0 < cb.kp {
        let kt = CODE_TILE.min(cb.kp - c0);
        let mut r0 = 0;
        while r0 < rows {
            let mr = MR.min(rows - r0);
            // −2·z, so the accumulation is norms + Σ_d (−2 z_d) e_d.
            let mut zm = [[0f32; SMALL_DIM]; MR];
            for (i, zrow) in zm.iter_mut().enumerate().take(mr) {
                for (j, v) in zrow.iter_mut().enumerate().take(d) {
                    *v = -2.0 * z[(r0 + i) * d + j];
                }
            }
            let mut bv = [[f32::INFINITY; LANES]; MR];
            let mut bg = [[0u32; LANES]; MR];
            let groups = kt / LANES;
            for g in 0..groups {
                let col0 = c0 + g * LANES;
                let mut acc = [[0f32; LANES]; MR];
                let nrm = &cb.norms[col0..col0 + LANES];
                for a in acc.iter_mut() {
                    a.copy_from_slice(nrm);
                }
                for j in 0..d {
                    let e = &cb.cols[j * cb.kp + col0..j * cb.kp + col0 + LANES];
                    for i in 0..MR {
                        let zi = zm[i][j];
                        for l in 0..LANES {
                            acc[i][l] = fmadd::<FMA>(zi, e[l], acc[i][l]);
                        }
                    }
                }
                let gi = (col0 / LANES) as u32;
                for i in 0..MR {
                    for l in 0..LANES {
                        let m = acc[i][l] < bv[i][l];
                        bv[i][l] = if m { acc[i][l] } else { bv[i][l] };
                        bg[i][l] = if m { gi } else { bg[i][l] };
                    }
                }
            }
            for i in 0..mr {
                let st = &mut state[r0 + i];
                for l in 0..LANES {
                    if bv[i][l].is_finite() {
                        st.merge(bv[i][l], bg[i][l] * LANES as u32 + l as u32);
                    }
                }
            }
            r0 += mr;
        }
        c0 += kt;
    }
    for ((st, id), b) in state.iter().zip(ids.iter_mut()).zip(best.iter_mut()) {
        *id = st.idx;
        *b = st.val;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The plain, unblocked definition: `argmin_k ‖z − e_k‖²` by direct differences, lowest
    /// index on ties.
    fn nearest_naive(z: &[f32], codebook: &[f32], d: usize) -> Vec<u32> {
        z.chunks_exact(d)
            .map(|zr| {
                let mut best = (f32::INFINITY, 0u32);
                for (k, e) in codebook.chunks_exact(d).enumerate() {
                    let s: f32 = zr.iter().zip(e).map(|(a, b)| (a - b) * (a - b)).sum();
                    if s < best.0 {
                        best = (s, k as u32);
                    }
                }
                best.1
            })
            .collect()
    }

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn both_paths_match_naive() {
        for &(n, k, d) in &[
            (1, 1, 1),
            (7, 5, 3),
            (70, 33, 8),
            (130, 1100, 8),
            (65, 17, 32),
            (67, 40, 33),
            (129, 600, 64),
            (300, 700, 40),
        ] {
            let z = rand_vec(n * d, 1 + n as u64);
            let e = rand_vec(k * d, 2 + k as u64);
            let cb = PreparedCodebook::new(&e, k, d).unwrap();
            let (ids, dist) = cb.nearest(&z).unwrap();
            let want = nearest_naive(&z, &e, d);
            assert_eq!(ids, want, "n={n} k={k} d={d}");
            for (r, &id) in ids.iter().enumerate() {
                let zr = &z[r * d..(r + 1) * d];
                let er = &e[id as usize * d..(id as usize + 1) * d];
                let dd: f32 = zr.iter().zip(er).map(|(a, b)| (a - b) * (a - b)).sum();
                assert!((dd - dist[r]).abs() < 1e-4, "{dd} vs {}", dist[r]);
            }
        }
    }

    #[test]
    fn ties_pick_lowest_index() {
        for d in [4usize, 40] {
            // Codes 3, 20 and 700 are identical; the query equals them.
            let k = 800;
            let mut e = rand_vec(k * d, 9);
            for &c in &[20usize, 700] {
                let src: Vec<f32> = e[3 * d..4 * d].to_vec();
                e[c * d..(c + 1) * d].copy_from_slice(&src);
            }
            let z = e[700 * d..701 * d].to_vec();
            let cb = PreparedCodebook::new(&e, k, d).unwrap();
            assert_eq!(cb.nearest(&z).unwrap().0, vec![3], "d={d}");
        }
    }
}
