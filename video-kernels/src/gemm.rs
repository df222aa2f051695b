//! The one checked wrapper over the `gemm` crate (f32 and f64) that every matrix product of the
//! workspace goes through.
//!
//! The `gemm` crate's entry point takes raw pointers and signed strides and trusts them: a wrong
//! stride or a short buffer is undefined behaviour. [`gemm()`] takes slices and strided [`View`]s
//! instead and checks, before the call, that
//!
//! - every view stays inside its slice (the largest index touched,
//!   `offset + (rows − 1)·row_stride + (cols − 1)·col_stride`, in checked arithmetic, is below
//!   the slice's length; every stride fits an `isize`);
//! - the destination view maps distinct `(i, j)` to distinct elements (a self-overlapping
//!   destination would race with itself inside the product);
//!
//! and returns a typed [`Error::InvalidArgument`] naming the offending view otherwise. The
//! destination is an exclusive borrow, so it cannot alias the operands. With these checks the
//! `unsafe` call below is sound for any arguments.
//!
//! ```
//! use vidgen_video_kernels::gemm::{gemm, Threads, View};
//! // [2×3]·[3×2], row-major, into a fresh 2×2 destination.
//! let a = [1., 2., 3., 4., 5., 6.];
//! let b = [1., 0., 0., 1., 1., 1.];
//! let mut c = [0f64; 4];
//! gemm(2, 2, 3, &mut c, View::row_major(2), &a, View::row_major(3), &b, View::row_major(2),
//!      false, Threads::One)?;
//! assert_eq!(c, [4., 5., 10., 11.]);
//! // A view past the end of its slice is an error, not undefined behaviour.
//! assert!(gemm(2, 2, 3, &mut c, View::row_major(2).at(1), &a, View::row_major(3), &b,
//!              View::row_major(2), false, Threads::One).is_err());
//! # Ok::<(), vidgen_video_core::Error>(())
//! ```

use std::mem::MaybeUninit;

use rayon::prelude::*;
use vidgen_video_core::{Error, Result};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The element types [`gemm()`] multiplies: `f32` and `f64`.
pub trait Scalar: sealed::Sealed + Copy + Send + Sync + 'static {
    /// `0`.
    const ZERO: Self;
    /// `1`.
    const ONE: Self;
}

impl Scalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl Scalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// A strided matrix view into a slice: element `(i, j)` is `data[offset + i·row_stride +
/// j·col_stride]`. The matrix's size comes from the product's `m`, `n`, `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct View {
    /// Index of element `(0, 0)`.
    pub offset: usize,
    /// Step between rows.
    pub row_stride: usize,
    /// Step between columns.
    pub col_stride: usize,
}

impl View {
    /// A view with the given offset and strides.
    pub const fn new(offset: usize, row_stride: usize, col_stride: usize) -> Self {
        View {
            offset,
            row_stride,
            col_stride,
        }
    }

    /// A row-major matrix at offset 0 with `ld` elements between rows.
    pub const fn row_major(ld: usize) -> Self {
        View::new(0, ld, 1)
    }

    /// A column-major matrix at offset 0 with `ld` elements between columns (the transpose of
    /// a row-major `ld`-wide matrix).
    pub const fn col_major(ld: usize) -> Self {
        View::new(0, 1, ld)
    }

    /// The same strides starting at `offset`.
    pub const fn at(self, offset: usize) -> Self {
        View { offset, ..self }
    }

    /// Largest index touched by a `rows × cols` matrix (both ≥ 1), `None` on overflow.
    fn last(&self, rows: usize, cols: usize) -> Option<usize> {
        let r = (rows - 1).checked_mul(self.row_stride)?;
        let c = (cols - 1).checked_mul(self.col_stride)?;
        self.offset.checked_add(r)?.checked_add(c)
    }

    fn check(&self, what: &str, rows: usize, cols: usize, len: usize) -> Result<()> {
        let strides_fit =
            self.row_stride <= isize::MAX as usize && self.col_stride <= isize::MAX as usize;
        match self.last(rows, cols) {
            Some(last) if last < len && strides_fit => Ok(()),
            _ => Err(Error::invalid(
                "gemm",
                format!(
                    "{what} view {rows}×{cols} at offset {} with strides ({}, {}) exceeds its \
                     buffer of {len}",
                    self.offset, self.row_stride, self.col_stride
                ),
            )),
        }
    }

    /// Whether distinct `(i, j)` of a `rows × cols` matrix are distinct elements.
    fn distinct(&self, rows: usize, cols: usize) -> bool {
        let (rs, cs) = (self.row_stride, self.col_stride);
        (rows == 1 || rs >= 1)
            && (cols == 1 || cs >= 1)
            && (rows == 1
                || cols == 1
                || rs >= cols.saturating_mul(cs)
                || cs >= rows.saturating_mul(rs))
    }
}

/// Who runs a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Threads {
    /// The calling thread only (the caller parallelises over independent products).
    One,
    /// The `gemm` crate's own split over rayon's pool.
    All,
    /// [`Threads::All`] for products of at least 2¹⁸ multiply-adds, [`Threads::One`] below
    /// (small products are faster on one thread than split).
    Auto,
    /// The output columns in blocks of this many, one single-threaded product per rayon task:
    /// each task packs only its part of the right-hand side (for wide, short products such as
    /// a linear layer's `x · Wᵀ`). `0` is taken as one block.
    ColumnBlocks(usize),
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`: overwrites the destination view, or adds the product to
/// it when `accumulate`.
///
/// Every view is checked first (see the module docs); `k = 0` writes zeros (or leaves `dst` as
/// it is when accumulating) and `m = 0` or `n = 0` does nothing.
///
/// # Errors
/// [`Error::InvalidArgument`] when a view leaves its slice, a stride exceeds `isize::MAX`, or the
/// destination view overlaps itself.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Scalar>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    d: View,
    lhs: &[T],
    l: View,
    rhs: &[T],
    r: View,
    accumulate: bool,
    threads: Threads,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    check_dst(m, n, d, dst.len())?;
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[d.offset + i * d.row_stride + j * d.col_stride] = T::ZERO;
                }
            }
        }
        return Ok(());
    }
    check_operands(m, n, k, lhs, l, rhs, r)?;
    // SAFETY: `dst` was checked to hold the `m × n` view without self-overlap, and `lhs`, `rhs`
    // to hold theirs; `dst` is an exclusive borrow, so it aliases neither operand.
    unsafe {
        raw(
            (m, n, k),
            dst.as_mut_ptr(),
            d,
            lhs,
            l,
            rhs,
            r,
            accumulate,
            threads,
        )
    };
    Ok(())
}

/// [`gemm()`] into uninitialised memory: `dst[m×n] = lhs[m×k] · rhs[k×n]` (never read). After
/// `Ok`, every element of the destination view is initialised (and only those).
///
/// Used where zero-filling a fresh output first would cost a memory pass (a linear layer's
/// output).
///
/// # Errors
/// As [`gemm()`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_uninit<T: Scalar>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [MaybeUninit<T>],
    d: View,
    lhs: &[T],
    l: View,
    rhs: &[T],
    r: View,
    threads: Threads,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    check_dst(m, n, d, dst.len())?;
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                dst[d.offset + i * d.row_stride + j * d.col_stride] = MaybeUninit::new(T::ZERO);
            }
        }
        return Ok(());
    }
    check_operands(m, n, k, lhs, l, rhs, r)?;
    // SAFETY: as in `gemm`; with `accumulate = false` the product writes every element of the
    // destination view without reading it (`read_dst = false`), so uninitialised memory is
    // never read. `MaybeUninit<T>` has the layout of `T`.
    unsafe {
        raw(
            (m, n, k),
            dst.as_mut_ptr().cast::<T>(),
            d,
            lhs,
            l,
            rhs,
            r,
            false,
            threads,
        )
    };
    Ok(())
}

fn check_dst(m: usize, n: usize, d: View, len: usize) -> Result<()> {
    d.check("dst", m, n, len)?;
    if !d.distinct(m, n) {
        return Err(Error::invalid(
            "gemm",
            format!(
                "dst strides ({}, {}) overlap for {m}×{n}",
                d.row_stride, d.col_stride
            ),
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn check_operands<T>(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[T],
    l: View,
    rhs: &[T],
    r: View,
) -> Result<()> {
    l.check("lhs", m, k, lhs.len())?;
    r.check("rhs", k, n, rhs.len())
}

/// A destination pointer shared by tasks that write disjoint column blocks of it.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: only handed to rayon tasks that write disjoint elements (distinct column blocks of a
// checked, non-overlapping view).
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

/// The unchecked product.
///
/// # Safety
/// `m, n, k ≥ 1`; `dst` is valid for reads (when `accumulate`) and writes of the `m × n` view
/// `d`, which maps distinct elements to distinct addresses; `lhs` and `rhs` hold their views
/// (`m × k`, `k × n`); no stride exceeds `isize::MAX`; `dst` aliases neither operand.
#[allow(clippy::too_many_arguments)]
unsafe fn raw<T: Scalar>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    d: View,
    lhs: &[T],
    l: View,
    rhs: &[T],
    r: View,
    accumulate: bool,
    threads: Threads,
) {
    // One call on columns `j0 .. j0 + cols` of the product.
    let call = |dst: SendPtr<T>, j0: usize, cols: usize, par: ::gemm::Parallelism| {
        // SAFETY: the caller's contract; columns `j0 .. j0 + cols ≤ n` of views that hold all
        // `n` columns, so every offset below stays inside its buffer.
        unsafe {
            ::gemm::gemm(
                m,
                cols,
                k,
                dst.0.add(d.offset + j0 * d.col_stride),
                d.col_stride as isize,
                d.row_stride as isize,
                accumulate,
                lhs.as_ptr().add(l.offset),
                l.col_stride as isize,
                l.row_stride as isize,
                rhs.as_ptr().add(r.offset + j0 * r.col_stride),
                r.col_stride as isize,
                r.row_stride as isize,
                T::ONE,
                T::ONE,
                false,
                false,
                false,
                par,
            )
        }
    };
    let dst = SendPtr(dst);
    match threads {
        Threads::One => call(dst, 0, n, ::gemm::Parallelism::None),
        Threads::All => call(dst, 0, n, ::gemm::Parallelism::Rayon(0)),
        Threads::Auto => {
            let par = if m.saturating_mul(n).saturating_mul(k) < 1 << 18 {
                ::gemm::Parallelism::None
            } else {
                ::gemm::Parallelism::Rayon(0)
            };
            call(dst, 0, n, par)
        }
        Threads::ColumnBlocks(block) => {
            let block = if block == 0 { n } else { block.min(n) };
            if block == n {
                return call(dst, 0, n, ::gemm::Parallelism::None);
            }
            // Distinct column blocks of a non-overlapping view are disjoint sets of elements.
            (0..n)
                .step_by(block)
                .collect::<Vec<_>>()
                .into_par_iter()
                .for_each(|j0| call(dst, j0, block.min(n - j0), ::gemm::Parallelism::None));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn small_product_and_bounds_checks() {
        // [2×3]·[3×2]
        let a = [1., 2., 3., 4., 5., 6.];
        let b = [1., 0., 0., 1., 1., 1.];
        let mut c = [10f32; 4];
        let (rm2, rm3) = (View::row_major(2), View::row_major(3));
        gemm(2, 2, 3, &mut c, rm2, &a, rm3, &b, rm2, true, Threads::One).unwrap();
        assert_eq!(c, [14., 15., 20., 21.]);
        gemm(2, 2, 3, &mut c, rm2, &a, rm3, &b, rm2, false, Threads::All).unwrap();
        assert_eq!(c, [4., 5., 10., 11.]);
        let one = Threads::One;
        // Out-of-bounds views and self-overlapping destinations are errors, not UB.
        let bad = [
            (View::new(1, 2, 1), rm3, rm2),
            (rm2, View::new(0, 3, 2), rm2),
            (rm2, rm3, View::new(1, 2, 1)),
            (View::new(0, 1, 1), rm3, rm2),
            (View::new(usize::MAX, 1, 1), rm3, rm2),
            (View::new(0, usize::MAX, 1), rm3, rm2),
        ];
        for (d, l, r) in bad {
            let e = gemm(2, 2, 3, &mut c, d, &a, l, &b, r, true, one);
            assert!(
                matches!(e, Err(Error::InvalidArgument { .. })),
                "{d:?} {l:?} {r:?}"
            );
        }
        // Empty products.
        gemm(0, 2, 3, &mut c, rm2, &a, rm3, &b, rm2, false, one).unwrap();
        gemm(2, 2, 0, &mut c, rm2, &a, rm3, &b, rm2, false, one).unwrap();
        assert_eq!(c, [0.; 4]);
    }

    #[test]
    fn f64_column_blocks_and_transposed_views_match_naive() {
        let (m, n, k) = (5, 37, 7);
        let a: Vec<f64> = (0..m * k).map(|i| (i % 11) as f64 - 5.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i % 7) as f64 * 0.5 - 1.0).collect();
        let want = naive(m, n, k, &a, &b);
        for threads in [
            Threads::One,
            Threads::All,
            Threads::ColumnBlocks(8),
            Threads::ColumnBlocks(0),
        ] {
            let mut c = vec![0f64; m * n];
            gemm(
                m,
                n,
                k,
                &mut c,
                View::row_major(n),
                &a,
                View::row_major(k),
                &b,
                View::row_major(n),
                false,
                threads,
            )
            .unwrap();
            assert_eq!(c, want, "{threads:?}");
        }
        // Bᵀ stored row-major (n × k) read as a column-major k × n view; C stored transposed.
        let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut ct = vec![0f64; n * m];
        gemm(
            m,
            n,
            k,
            &mut ct,
            View::col_major(m),
            &a,
            View::row_major(k),
            &bt,
            View::col_major(k),
            false,
            Threads::ColumnBlocks(5),
        )
        .unwrap();
        for i in 0..m {
            for j in 0..n {
                assert_eq!(ct[j * m + i], want[i * n + j]);
            }
        }
    }

    #[test]
    fn uninit_destination_is_fully_written() {
        let (m, n, k) = (3, 20, 4);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32).collect();
        let mut y: Vec<f32> = Vec::with_capacity(m * n);
        gemm_uninit(
            m,
            n,
            k,
            &mut y.spare_capacity_mut()[..m * n],
            View::row_major(n),
            &a,
            View::row_major(k),
            &b,
            View::row_major(n),
            Threads::ColumnBlocks(6),
        )
        .unwrap();
        // SAFETY: the call above initialised the whole m × n row-major view.
        unsafe { y.set_len(m * n) };
        let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
        let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        let want = naive(m, n, k, &a64, &b64);
        for (g, w) in y.iter().zip(&want) {
            assert_eq!(*g as f64, *w);
        }
    }
}
