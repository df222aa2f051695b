//! Dense linear algebra on row-major `Vec<f64>` matrices, through `faer`.
//!
//! Why faer: its blocked symmetric eigensolver, Cholesky, SVD and AVX-512 GEMM are pure Rust
//! and fast enough at d = 2048 (figures in the crate docs); a hand-written cyclic Jacobi would
//! need ~8–10 sweeps of O(d³) work each. The matrices here are symmetric, so
//! row-major and column-major storage are the same matrix and no transposes are needed.

use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, MatMut, MatRef, Par, Side};
use vidgen_video_core::{Error, Result};
use vidgen_video_kernels::gemm::{Threads, View};

/// The parallelism of every faer call: all rayon threads.
pub(crate) fn par() -> Par {
    Par::rayon(0)
}

/// Views a row-major `rows × cols` slice as a faer matrix.
pub(crate) fn view(a: &[f64], rows: usize, cols: usize) -> MatRef<'_, f64> {
    MatRef::from_row_major_slice(a, rows, cols)
}

/// `dst (rows × cols, row-major) = alpha · lhs · rhs + beta·dst`.
pub(crate) fn gemm(
    dst: &mut [f64],
    lhs: MatRef<'_, f64>,
    rhs: MatRef<'_, f64>,
    alpha: f64,
    accumulate: bool,
) {
    let (m, n) = (lhs.nrows(), rhs.ncols());
    let dst = MatMut::from_row_major_slice_mut(dst, m, n);
    let acc = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    faer::linalg::matmul::matmul(dst, acc, lhs, rhs, alpha, par());
}

/// `dst += alpha · aᵀ a` for a row-major `n × d` matrix `a`, computing only the lower
/// triangle (half the flops) and mirroring it. `dst` is `d × d`.
pub(crate) fn syrk_add(dst: &mut [f64], a: &[f64], n: usize, d: usize, alpha: f64) {
    let av = view(a, n, d);
    let mut tmp = vec![0.0f64; d * d];
    {
        let t = MatMut::from_row_major_slice_mut(&mut tmp, d, d);
        faer::linalg::matmul::triangular::matmul(
            t,
            BlockStructure::TriangularLower,
            Accum::Replace,
            av.transpose(),
            BlockStructure::Rectangular,
            av,
            BlockStructure::Rectangular,
            alpha,
            par(),
        );
    }
    for i in 0..d {
        for j in 0..=i {
            let v = tmp[i * d + j];
            dst[i * d + j] += v;
            if i != j {
                dst[j * d + i] += v;
            }
        }
    }
}

/// Symmetric eigendecomposition `a = V diag(w) Vᵀ` of a `d × d` matrix (lower triangle read).
/// Returns `(w ascending, V row-major with eigenvectors as columns)`.
pub(crate) fn eigh(a: &[f64], d: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let m = view(a, d, d);
    let evd = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::invalid("covariance", format!("eigensolver failed: {e:?}")))?;
    let s = evd.S();
    let w: Vec<f64> = (0..d).map(|i| s.column_vector()[i]).collect();
    let u = evd.U();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            v[i * d + j] = u[(i, j)];
        }
    }
    Ok((w, v))
}

/// Eigenvalues (ascending) of a symmetric `d × d` matrix (lower triangle read).
pub(crate) fn eigvalsh(a: &[f64], d: usize) -> Result<Vec<f64>> {
    view(a, d, d)
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| Error::invalid("matrix", format!("eigensolver failed: {e:?}")))
}

/// Lower Cholesky factor `L` (row-major) of a symmetric positive-definite matrix, or `None`
/// when the matrix is not numerically positive definite.
pub(crate) fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let llt = view(a, d, d).llt(Side::Lower).ok()?;
    let l = llt.L();
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            out[i * d + j] = l[(i, j)];
        }
    }
    Some(out)
}

/// Singular values of a row-major `m × n` matrix.
pub(crate) fn singular_values(a: &[f64], m: usize, n: usize) -> Result<Vec<f64>> {
    view(a, m, n)
        .singular_values()
        .map_err(|e| Error::invalid("matrix", format!("SVD failed: {e:?}")))
}

/// Replaces `a` by `(a + aᵀ)/2`, removing the rounding asymmetry of a product.
pub(crate) fn symmetrise(a: &mut [f64], d: usize) {
    for i in 0..d {
        for j in 0..i {
            let v = 0.5 * (a[i * d + j] + a[j * d + i]);
            a[i * d + j] = v;
            a[j * d + i] = v;
        }
    }
}

macro_rules! gemm_abt_impl {
    ($name:ident, $imp:ident, $t:ty) => {
        /// `dst[i·ldd + j] = Σ_p a[i·k + p] · b[j·k + p]` for `i < m`, `j < n`: `A · Bᵀ` of
        /// row-major `a` (`m × k`) and `b` (`n × k`) into the row-major `m × n` block of `dst`
        /// with row stride `ldd`. Through the `gemm` crate rather than faer: its x86-v4 kernels
        /// use AVX-512 where the CPU has it (faer 0.22's gemm needs a nightly compiler for
        /// that), which doubles KID's Gram matrices on such machines.
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name(
            dst: &mut [$t],
            ldd: usize,
            a: &[$t],
            m: usize,
            b: &[$t],
            n: usize,
            k: usize,
            threads: bool,
        ) -> Result<()> {
            $imp(dst, ldd, a, m, b, n, k, true, threads)
        }
    };
}

macro_rules! gemm_impl {
    ($name:ident, $t:ty) => {
        /// `A · Bᵀ` (`b` is `n × k`) when `b_transposed`, else `A · B` (`b` is `k × n`), of
        /// row-major `a` (`m × k`) into the row-major `m × n` block of `dst` (row stride `ldd`).
        #[allow(clippy::too_many_arguments)]
        fn $name(
            dst: &mut [$t],
            ldd: usize,
            a: &[$t],
            m: usize,
            b: &[$t],
            n: usize,
            k: usize,
            b_transposed: bool,
            threads: bool,
        ) -> Result<()> {
            if m == 0 || n == 0 {
                return Ok(());
            }
            let fits = |len: usize, rows: usize, stride: usize, cols: usize| {
                (rows - 1)
                    .checked_mul(stride)
                    .and_then(|x| x.checked_add(cols))
                    .is_some_and(|last| last <= len)
            };
            if n > ldd
                || !fits(dst.len(), m, ldd, n)
                || !fits(a.len(), m, k, k)
                || !(k == 0
                    || if b_transposed {
                        fits(b.len(), n, k, k)
                    } else {
                        fits(b.len(), k, n, n)
                    })
            {
                return Err(Error::invalid(
                    "gemm",
                    format!(
                        "{m}×{k} · ({n}×{k} transposed: {b_transposed}) into stride {ldd} does not fit buffers of {}, {}, {}",
                        a.len(),
                        b.len(),
                        dst.len()
                    ),
                ));
            }
            if k == 0 {
                for i in 0..m {
                    dst[i * ldd..i * ldd + n].fill(0.0);
                }
                return Ok(());
            }
            // The rhs element (p, j) is b[j·k + p] transposed, b[p·n + j] otherwise.
            let rhs = if b_transposed {
                View::col_major(k)
            } else {
                View::row_major(n)
            };
            let threads = if threads { Threads::All } else { Threads::One };
            vidgen_video_kernels::gemm::gemm(
                m,
                n,
                k,
                dst,
                View::row_major(ldd),
                a,
                View::row_major(k),
                b,
                rhs,
                false,
                threads,
            )?;
            Ok(())
        }
    };
}
gemm_impl!(gemm_f32, f32);
gemm_impl!(gemm_f64, f64);
gemm_abt_impl!(gemm_abt_f32, gemm_f32, f32);
gemm_abt_impl!(gemm_abt_f64, gemm_f64, f64);

/// `dst (m × n, row stride ldd) = a (m × k) · b (k × n)`, all row-major f64.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_ab_f64(
    dst: &mut [f64],
    ldd: usize,
    a: &[f64],
    m: usize,
    b: &[f64],
    n: usize,
    k: usize,
    threads: bool,
) -> Result<()> {
    gemm_f64(dst, ldd, a, m, b, n, k, false, threads)
}
