//! Fused nearest-code search: `argmin_k ‖z − e_k‖²` without an `N × K` distance matrix.
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
//! - **large dims**: a `[rows, codes]` tile of dot products from the `gemm` crate (256 rows ×
//!   512 codes, 512 KiB per task), then the same lane-wise running argmin over the tile.
//!
//! Memory is `O(N + K·D)` plus one tile per worker, whatever `K` is (2^14 – 2^18 codes).
//! Ties pick the lowest code index, as `torch.argmin` does. The variant is chosen at run time:
//! the small-dim kernel is written in AVX-512 intrinsics (4 rows × 16 codes) and in AVX2 + FMA
//! intrinsics (4 rows × 8 codes); elsewhere a portable version runs, which LLVM vectorises
//! poorly (about 20× slower at `D = 8`); the gemm path's tile scan is portable code compiled per
//! variant.

use rayon::prelude::*;

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
    /// Prepares a row-major `[k, d]` codebook. `codebook.len()` must be `k·d` (checked by the
    /// caller, which owns the error type).
    pub fn new(codebook: &[f32], k: usize, d: usize) -> Self {
        let kp = k.div_ceil(LANES) * LANES;
        let mut cols = vec![0f32; d * kp];
        let mut norms = vec![f32::INFINITY; kp];
        for (c, row) in codebook.chunks_exact(d.max(1)).take(k).enumerate() {
            let mut n = 0f32;
            for (j, &v) in row.iter().enumerate() {
                cols[j * kp + c] = v;
                n += v * v;
            }
            norms[c] = n;
        }
        PreparedCodebook {
            k,
            d,
            kp,
            rows: codebook.to_vec(),
            cols,
            norms,
        }
    }

    /// Number of codes.
    pub fn len(&self) -> usize {
        self.k
    }

    /// Whether the codebook has no codes.
    pub fn is_empty(&self) -> bool {
        self.k == 0
    }

    /// Code dimension.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Nearest code of every row of the row-major `[n, d]` matrix `z`: `(ids, squared
    /// distances)`. Distances are `max(0, ‖z‖² + s_min)` in f32.
    pub fn nearest(&self, z: &[f32]) -> (Vec<u32>, Vec<f32>) {
        let d = self.d.max(1);
        let n = z.len() / d;
        let mut ids = vec![0u32; n];
        let mut dist = vec![0f32; n];
        if self.k == 0 || n == 0 {
            return (ids, dist);
        }
        let kern = Kernel::detect();
        let rb = if self.d <= SMALL_DIM {
            ROW_BLOCK
        } else {
            GEMM_ROW_BLOCK
        };
        ids.par_chunks_mut(rb)
            .zip(dist.par_chunks_mut(rb))
            .enumerate()
            .for_each(|(blk, (ids, dist))| {
                let r0 = blk * rb;
                let zb = &z[r0 * d..(r0 + ids.len()) * d];
                if self.d <= SMALL_DIM {
                    kern.small(self, zb, ids, dist);
                } else {
                    self.gemm_block(kern, zb, ids, dist);
                }
                for (r, dv) in dist.iter_mut().enumerate() {
                    let zr = &zb[r * d..(r + 1) * d];
                    let zz: f32 = zr.iter().map(|v| v * v).sum();
                    *dv = (*dv + zz).max(0.0);
                }
            });
        (ids, dist)
    }

    fn gemm_block(&self, kern: Kernel, z: &[f32], ids: &mut [u32], best: &mut [f32]) {
        let d = self.d;
        let rows = ids.len();
        let mut buf = vec![0f32; rows * GEMM_CODE_TILE];
        let mut state = vec![RowBest::default(); rows];
        let mut c0 = 0;
        while c0 < self.k {
            let kt = GEMM_CODE_TILE.min(self.k - c0);
            // SAFETY: every pointer/stride pair addresses memory inside its slice:
            // dst is `rows × kt` with row stride GEMM_CODE_TILE ≤ buf.len()/rows;
            // lhs is `rows × d` row-major (`z.len() == rows·d`); rhs is codes c0..c0+kt of the
            // row-major `[k, d]` codebook read as `d × kt` (column stride d, row stride 1).
            unsafe {
                gemm::gemm(
                    rows,
                    kt,
                    d,
                    buf.as_mut_ptr(),
                    1,
                    GEMM_CODE_TILE as isize,
                    false,
                    z.as_ptr(),
                    1,
                    d as isize,
                    self.rows.as_ptr().add(c0 * d),
                    d as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
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
    }
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
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Kernel::Avx2;
            }
        }
        Kernel::Generic
    }

    fn small(self, cb: &PreparedCodebook, z: &[f32], ids: &mut [u32], best: &mut [f32]) {
        match self {
            // SAFETY: the variant is only chosen after run-time detection of its features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { small_avx512(cb, z, ids, best) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { small_avx2(cb, z, ids, best) },
            Kernel::Generic => small_block::<false>(cb, z, ids, best),
        }
    }

    fn scan(self, dots: &[f32], norms: &[f32], base: usize, st: &mut RowBest) {
        match self {
            // SAFETY: the variant is only chosen after run-time detection of its features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { scan_avx512(dots, norms, base, st) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { scan_avx2(dots, norms, base, st) },
            Kernel::Generic => scan_tile(dots, norms, base, st),
        }
    }
}

/// The small-dim kernel in AVX-512 intrinsics: LLVM does not vectorise the portable version's
/// 4 × 16 accumulator block across lanes on its own (measured ~20× slower).
// AVX-512 intrinsics are stable since Rust 1.89; the workspace `rust-version` (1.85) needs
// raising for this (video-kernels' attention has the same requirement).
#[allow(clippy::incompatible_msrv, clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn small_avx512(cb: &PreparedCodebook, z: &[f32], ids: &mut [u32], best: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = cb.d;
    let kp = cb.kp;
    let rows = ids.len();
    let cols = cb.cols.as_ptr();
    let norms = cb.norms.as_ptr();
    let mut state = vec![RowBest::default(); rows];
    let mut c0 = 0;
    while c0 < kp {
        let kt = CODE_TILE.min(kp - c0);
        let mut r0 = 0;
        while r0 < rows {
            let mr = MR.min(rows - r0);
            let mut zm = [[0f32; SMALL_DIM]; MR];
            for (i, zrow) in zm.iter_mut().enumerate().take(mr) {
                for (j, v) in zrow.iter_mut().enumerate().take(d) {
                    *v = -2.0 * z[(r0 + i) * d + j];
                }
            }
            let mut bv = [_mm512_set1_ps(f32::INFINITY); MR];
            let mut bg = [_mm512_setzero_si512(); MR];
            for g in 0..kt / LANES {
                let col0 = c0 + g * LANES;
                // SAFETY: kp and kt are multiples of LANES, so col0 + LANES ≤ kp: the 16 floats
                // read from `norms` [kp] and from row j of `cols` [d, kp] are in bounds.
                let nv = unsafe { _mm512_loadu_ps(norms.add(col0)) };
                let mut acc = [nv; MR];
                for j in 0..d {
                    // SAFETY: as above, j < d.
                    let e = unsafe { _mm512_loadu_ps(cols.add(j * kp + col0)) };
                    for (a, zr) in acc.iter_mut().zip(zm.iter()) {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(zr[j]), e, *a);
                    }
                }
                let gi = _mm512_set1_epi32((col0 / LANES) as i32);
                for i in 0..MR {
                    let m = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(acc[i], bv[i]);
                    bv[i] = _mm512_mask_blend_ps(m, bv[i], acc[i]);
                    bg[i] = _mm512_mask_blend_epi32(m, bg[i], gi);
                }
            }
            for i in 0..mr {
                let mut v = [0f32; LANES];
                let mut gv = [0u32; LANES];
                // SAFETY: both arrays hold exactly 16 lanes.
                unsafe {
                    _mm512_storeu_ps(v.as_mut_ptr(), bv[i]);
                    _mm512_storeu_si512(gv.as_mut_ptr().cast(), bg[i]);
                }
                let st = &mut state[r0 + i];
                for l in 0..LANES {
                    if v[l].is_finite() {
                        st.merge(v[l], gv[l] * LANES as u32 + l as u32);
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

/// The small-dim kernel in AVX2 + FMA: register block of [`MR`] rows × 8 codes (one `ymm` of
/// scores per row, plus its running min and group index: 12 of the 16 registers).
#[allow(clippy::needless_range_loop)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn small_avx2(cb: &PreparedCodebook, z: &[f32], ids: &mut [u32], best: &mut [f32]) {
    use std::arch::x86_64::*;
    const L8: usize = 8;
    let d = cb.d;
    let kp = cb.kp;
    let rows = ids.len();
    let cols = cb.cols.as_ptr();
    let norms = cb.norms.as_ptr();
    let mut state = vec![RowBest::default(); rows];
    let mut c0 = 0;
    while c0 < kp {
        let kt = CODE_TILE.min(kp - c0);
        let mut r0 = 0;
        while r0 < rows {
            let mr = MR.min(rows - r0);
            let mut zm = [[0f32; SMALL_DIM]; MR];
            for (i, zrow) in zm.iter_mut().enumerate().take(mr) {
                for (j, v) in zrow.iter_mut().enumerate().take(d) {
                    *v = -2.0 * z[(r0 + i) * d + j];
                }
            }
            let mut bv = [_mm256_set1_ps(f32::INFINITY); MR];
            let mut bg = [_mm256_setzero_si256(); MR];
            for g in 0..kt / L8 {
                let col0 = c0 + g * L8;
                // SAFETY: kp and kt are multiples of 16, so col0 + 8 ≤ kp: the 8 floats read
                // from `norms` [kp] and from row j of `cols` [d, kp] are in bounds.
                let nv = unsafe { _mm256_loadu_ps(norms.add(col0)) };
                let mut acc = [nv; MR];
                for j in 0..d {
                    // SAFETY: as above, j < d.
                    let e = unsafe { _mm256_loadu_ps(cols.add(j * kp + col0)) };
                    for (a, zr) in acc.iter_mut().zip(zm.iter()) {
                        *a = _mm256_fmadd_ps(_mm256_set1_ps(zr[j]), e, *a);
                    }
                }
                let gi = _mm256_set1_epi32((col0 / L8) as i32);
                for i in 0..MR {
                    let m = _mm256_cmp_ps::<_CMP_LT_OQ>(acc[i], bv[i]);
                    bv[i] = _mm256_blendv_ps(bv[i], acc[i], m);
                    bg[i] = _mm256_blendv_epi8(bg[i], gi, _mm256_castps_si256(m));
                }
            }
            for i in 0..mr {
                let mut v = [0f32; L8];
                let mut gv = [0u32; L8];
                // SAFETY: both arrays hold exactly 8 lanes.
                unsafe {
                    _mm256_storeu_ps(v.as_mut_ptr(), bv[i]);
                    _mm256_storeu_si256(gv.as_mut_ptr().cast(), bg[i]);
                }
                let st = &mut state[r0 + i];
                for l in 0..L8 {
                    if v[l].is_finite() {
                        st.merge(v[l], gv[l] * L8 as u32 + l as u32);
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn scan_avx512(dots: &[f32], norms: &[f32], base: usize, st: &mut RowBest) {
    scan_tile(dots, norms, base, st)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_avx2(dots: &[f32], norms: &[f32], base: usize, st: &mut RowBest) {
    scan_tile(dots, norms, base, st)
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

/// The plain, unblocked definition: `argmin_k ‖z − e_k‖²` by direct differences, lowest index
/// on ties. Used by tests as the oracle of [`PreparedCodebook::nearest`].
pub fn nearest_naive(z: &[f32], codebook: &[f32], d: usize) -> Vec<u32> {
    let d = d.max(1);
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

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
            let cb = PreparedCodebook::new(&e, k, d);
            let (ids, dist) = cb.nearest(&z);
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
            let cb = PreparedCodebook::new(&e, k, d);
            assert_eq!(cb.nearest(&z).0, vec![3], "d={d}");
        }
    }
}
