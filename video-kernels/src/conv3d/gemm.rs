//! The one place this module calls `unsafe` code: a bounds-checked wrapper over `gemm::gemm`.

use vidgen_video_core::{Error, Result};

/// A strided matrix view into a slice: element `(i, j)` is `data[off + i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

impl View {
    pub fn new(off: usize, rs: usize, cs: usize) -> Self {
        View { off, rs, cs }
    }

    /// Largest index touched by a `rows × cols` matrix, `None` on overflow.
    fn last(&self, rows: usize, cols: usize) -> Option<usize> {
        let r = (rows - 1).checked_mul(self.rs)?;
        let c = (cols - 1).checked_mul(self.cs)?;
        self.off.checked_add(r)?.checked_add(c)
    }

    fn check(&self, what: &str, rows: usize, cols: usize, len: usize) -> Result<()> {
        match self.last(rows, cols) {
            Some(last) if last < len && self.rs <= isize::MAX as usize && self.cs <= isize::MAX as usize => {
                Ok(())
            }
            _ => Err(Error::invalid(
                "conv3d internal gemm",
                format!(
                    "{what} view {rows}×{cols} at offset {} strides ({}, {}) exceeds its buffer of {len}",
                    self.off, self.rs, self.cs
                ),
            )),
        }
    }
}

/// Whether the gemm may use rayon threads itself.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// Single-threaded (the caller parallelises over tiles).
    One,
    /// rayon's global pool.
    All,
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` in f32, accumulating into `dst` when `accumulate`.
///
/// Every view is checked against its slice before the call, and `dst` is checked to map distinct
/// `(i, j)` to distinct elements, so the unsafe `gemm::gemm` call never reads or writes out of
/// bounds and never races with itself. `dst` cannot alias `lhs` / `rhs` (borrow rules).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    d: View,
    lhs: &[f32],
    l: View,
    rhs: &[f32],
    r: View,
    accumulate: bool,
    threads: Threads,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    d.check("dst", m, n, dst.len())?;
    let distinct = (m == 1 || d.rs >= 1)
        && (n == 1 || d.cs >= 1)
        && (m == 1 || n == 1 || d.rs >= n.saturating_mul(d.cs) || d.cs >= m.saturating_mul(d.rs));
    if !distinct {
        return Err(Error::invalid(
            "conv3d internal gemm",
            format!("dst strides ({}, {}) overlap for {m}×{n}", d.rs, d.cs),
        ));
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[d.off + i * d.rs + j * d.cs] = 0.0;
                }
            }
        }
        return Ok(());
    }
    l.check("lhs", m, k, lhs.len())?;
    r.check("rhs", k, n, rhs.len())?;
    let par = match threads {
        Threads::One => gemm::Parallelism::None,
        Threads::All => {
            // Small products are faster on one thread than split.
            if m * n * k < 1 << 18 {
                gemm::Parallelism::None
            } else {
                gemm::Parallelism::Rayon(0)
            }
        }
    };
    // SAFETY: the three views were checked above to stay inside their slices (the largest index
    // touched is `off + (rows−1)·rs + (cols−1)·cs`, all strides non-negative and ≤ isize::MAX,
    // so the `as isize` casts are exact), `dst` is an exclusive borrow that maps distinct
    // elements to distinct addresses, and `lhs` / `rhs` are shared borrows that cannot alias it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(d.off),
            d.cs as isize,
            d.rs as isize,
            accumulate,
            lhs.as_ptr().add(l.off),
            l.cs as isize,
            l.rs as isize,
            rhs.as_ptr().add(r.off),
            r.cs as isize,
            r.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn small_product_and_bounds_checks() {
        // [2×3]·[3×2]
        let a = [1., 2., 3., 4., 5., 6.];
        let b = [1., 0., 0., 1., 1., 1.];
        let mut c = [10f32; 4];
        gemm(
            2,
            2,
            3,
            &mut c,
            View::new(0, 2, 1),
            &a,
            View::new(0, 3, 1),
            &b,
            View::new(0, 2, 1),
            true,
            Threads::One,
        )
        .unwrap();
        assert_eq!(c, [14., 15., 20., 21.]);
        gemm(
            2,
            2,
            3,
            &mut c,
            View::new(0, 2, 1),
            &a,
            View::new(0, 3, 1),
            &b,
            View::new(0, 2, 1),
            false,
            Threads::All,
        )
        .unwrap();
        assert_eq!(c, [4., 5., 10., 11.]);
        // Out-of-bounds views and self-overlapping destinations are errors, not UB.
        assert!(gemm(
            2,
            2,
            3,
            &mut c,
            View::new(1, 2, 1),
            &a,
            View::new(0, 3, 1),
            &b,
            View::new(0, 2, 1),
            true,
            Threads::One
        )
        .is_err());
        assert!(gemm(
            2,
            2,
            3,
            &mut c,
            View::new(0, 2, 1),
            &a,
            View::new(0, 3, 2),
            &b,
            View::new(0, 2, 1),
            true,
            Threads::One
        )
        .is_err());
        assert!(gemm(
            2,
            2,
            3,
            &mut c,
            View::new(0, 2, 1),
            &a,
            View::new(0, 3, 1),
            &b,
            View::new(1, 2, 1),
            true,
            Threads::One
        )
        .is_err());
        assert!(gemm(
            2,
            2,
            3,
            &mut c,
            View::new(0, 1, 1),
            &a,
            View::new(0, 3, 1),
            &b,
            View::new(0, 2, 1),
            true,
            Threads::One
        )
        .is_err());
        assert!(gemm(
            2,
            2,
            3,
            &mut c,
            View::new(usize::MAX, 1, 1),
            &a,
            View::new(0, 3, 1),
            &b,
            View::new(0, 2, 1),
            true,
            Threads::One
        )
        .is_err());
    }
}
