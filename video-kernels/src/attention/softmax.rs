//! The row helpers of the online softmax (portable versions; the AVX-512 and AVX2 twins are in
//! `avx512.rs` and `avx2.rs`).

use crate::simd::{exp2_f32, exp_f32, sum8};

/// `row[j] ← 2^(row[j] − m)`; returns the sum of the new values.
#[inline]
pub(crate) fn exp2_sub_sum(row: &mut [f32], m: f32) -> f32 {
    for x in row.iter_mut() {
        *x = exp2_f32(*x - m);
    }
    sum8(row, |x| x)
}

/// Largest value of `row` (`-inf` when empty).
#[inline]
pub(crate) fn row_max(row: &[f32]) -> f32 {
    row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// `row[j] ← exp(row[j] − m)`; returns the sum of the new values.
#[inline]
pub(crate) fn exp_sub_sum(row: &mut [f32], m: f32) -> f32 {
    for x in row.iter_mut() {
        *x = exp_f32(*x - m);
    }
    // A separate pass keeps the exp loop free of a loop-carried dependency.
    sum8(row, |x| x)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn row_helpers() {
        let mut row = vec![
            0.0f32,
            1.0,
            f32::NEG_INFINITY,
            -1.0,
            2.0,
            0.5,
            0.25,
            3.0,
            -3.0,
        ];
        let m = row_max(&row);
        assert_eq!(m, 3.0);
        let s = exp_sub_sum(&mut row, m);
        let want: f64 = [0.0f64, 1.0, -1.0, 2.0, 0.5, 0.25, 3.0, -3.0]
            .iter()
            .map(|x| (x - 3.0).exp())
            .sum();
        assert!((s as f64 - want).abs() < 1e-6);
        assert_eq!(row[2], 0.0);
    }
}
