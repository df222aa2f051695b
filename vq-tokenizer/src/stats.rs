//! Codebook usage statistics: histogram, perplexity, dead codes.

use vidgen_video_core::{Error, Result};

/// How a set of token ids uses a codebook of `K` codes.
#[derive(Debug, Clone, PartialEq)]
pub struct CodebookUsage {
    /// Count of every code, `[K]`.
    pub histogram: Vec<u64>,
    /// Number of ids counted.
    pub total: u64,
}

impl CodebookUsage {
    /// Counts `ids` against a codebook of `k` codes.
    ///
    /// # Errors
    /// An id `≥ k` (named with the codebook size).
    pub fn from_ids(ids: &[u32], k: usize) -> Result<Self> {
        let mut histogram = vec![0u64; k];
        for &id in ids {
            let slot = histogram.get_mut(id as usize).ok_or_else(|| {
                Error::invalid(
                    "ids",
                    format!("code id {id} is out of range for a codebook of {k} codes"),
                )
            })?;
            *slot += 1;
        }
        Ok(CodebookUsage {
            histogram,
            total: ids.len() as u64,
        })
    }

    /// Adds the counts of another usage over the same codebook (streaming statistics).
    pub fn merge(&mut self, other: &CodebookUsage) -> Result<()> {
        if other.histogram.len() != self.histogram.len() {
            return Err(Error::shape(
                "usage histogram",
                &[self.histogram.len()],
                &[other.histogram.len()],
            ));
        }
        for (a, b) in self.histogram.iter_mut().zip(&other.histogram) {
            *a += b;
        }
        self.total += other.total;
        Ok(())
    }

    /// Codebook perplexity `exp(−Σ p_k ln p_k)` with `p_k = count_k / total`: the effective
    /// number of codes in use (1 when one code takes everything, `K` when usage is uniform).
    /// 0 when nothing was counted.
    pub fn perplexity(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let t = self.total as f64;
        let h: f64 = self
            .histogram
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / t;
                -p * p.ln()
            })
            .sum();
        h.exp()
    }

    /// Number of codes that were never used.
    pub fn dead_codes(&self) -> usize {
        self.histogram.iter().filter(|&&c| c == 0).count()
    }

    /// Fraction of codes that were never used, in `[0, 1]`.
    pub fn dead_fraction(&self) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.dead_codes() as f64 / self.histogram.len() as f64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn perplexity_and_dead() {
        let u = CodebookUsage::from_ids(&[0, 1, 2, 3], 8).unwrap();
        assert!((u.perplexity() - 4.0).abs() < 1e-12);
        assert_eq!(u.dead_codes(), 4);
        assert!((u.dead_fraction() - 0.5).abs() < 1e-12);
        let one = CodebookUsage::from_ids(&[5, 5, 5], 8).unwrap();
        assert!((one.perplexity() - 1.0).abs() < 1e-12);
        let mut m = u.clone();
        m.merge(&one).unwrap();
        assert_eq!(m.total, 7);
        assert_eq!(m.histogram[5], 3);
        assert!(CodebookUsage::from_ids(&[8], 8).is_err());
    }
}
