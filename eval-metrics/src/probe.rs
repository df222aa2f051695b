//! Probe and classification accuracy with Wilson confidence intervals.

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use vidgen_video_core::{Error, Result};

use crate::stats::features_f64;

/// An accuracy with its Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    /// Correct predictions.
    pub correct: usize,
    /// Predictions made.
    pub total: usize,
    /// `correct / total`.
    pub value: f64,
    /// Lower end of the Wilson interval.
    pub ci_low: f64,
    /// Upper end of the Wilson interval.
    pub ci_high: f64,
    /// The normal quantile used (1.959963984540054 for 95 %).
    pub z: f64,
}

/// The 95 % normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval of `successes` out of `n` at normal quantile `z`:
/// `(p + z²/2n ± z√(p(1−p)/n + z²/4n²)) / (1 + z²/n)`, clipped to `[0, 1]`.
pub fn wilson_interval(successes: usize, n: usize, z: f64) -> Result<(f64, f64)> {
    if n == 0 {
        return Err(Error::invalid("n", "a proportion needs at least one trial"));
    }
    if successes > n {
        return Err(Error::invalid(
            "successes",
            format!("{successes} > {n} trials"),
        ));
    }
    if !(z.is_finite() && z > 0.0) {
        return Err(Error::invalid(
            "z",
            format!("must be positive and finite, is {z}"),
        ));
    }
    let nf = n as f64;
    let p = successes as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    Ok(((centre - half).max(0.0), (centre + half).min(1.0)))
}

fn accuracy_of(pred: &[usize], labels: &[usize], z: f64) -> Result<Accuracy> {
    let correct = pred.iter().zip(labels).filter(|(a, b)| a == b).count();
    let total = labels.len();
    let (ci_low, ci_high) = wilson_interval(correct, total, z)?;
    Ok(Accuracy {
        correct,
        total,
        value: correct as f64 / total as f64,
        ci_low,
        ci_high,
        z,
    })
}

/// Classification accuracy of a classifier's outputs (argmax of each row) against labels,
/// with a Wilson interval at quantile `z` (use [`Z95`]).
///
/// # Shapes
/// `logits`: `[N, K]` (logits or probabilities), `labels`: `N` values `< K`.
pub fn classification_accuracy(logits: &Tensor, labels: &[usize], z: f64) -> Result<Accuracy> {
    let (v, n, k) = features_f64(logits, "logits")?;
    check_labels(labels, n, k)?;
    let pred: Vec<usize> = v.chunks_exact(k).map(argmax).collect();
    accuracy_of(&pred, labels, z)
}

fn argmax(r: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in r.iter().enumerate() {
        if x > r[best] {
            best = i;
        }
    }
    best
}

fn check_labels(labels: &[usize], n: usize, k: usize) -> Result<()> {
    if labels.len() != n {
        return Err(Error::shape("labels", &[n], &[labels.len()]));
    }
    if n == 0 {
        return Err(Error::invalid("labels", "no samples"));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= k) {
        return Err(Error::invalid(
            "labels",
            format!("label {bad} ≥ number of classes {k}"),
        ));
    }
    Ok(())
}

/// Training settings of [`LinearProbe::fit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeOptions {
    /// Passes over the training set (default 100).
    pub epochs: usize,
    /// SGD learning rate on standardised features (default 0.1).
    pub learning_rate: f64,
    /// Momentum (default 0.9).
    pub momentum: f64,
    /// L2 penalty on the weights (default 1e-4).
    pub weight_decay: f64,
    /// Mini-batch size (default 64).
    pub batch_size: usize,
    /// Seed of the mini-batch shuffling (ChaCha8).
    pub seed: u64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            epochs: 100,
            learning_rate: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            batch_size: 64,
            seed: 0,
        }
    }
}

/// A linear probe: multinomial logistic regression on standardised features, trained by
/// seeded mini-batch SGD with momentum (deterministic for a seed), in f64.
#[derive(Debug, Clone)]
pub struct LinearProbe {
    dim: usize,
    classes: usize,
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    /// `[classes, dim]` row-major.
    weight: Vec<f64>,
    bias: Vec<f64>,
}

impl LinearProbe {
    /// Fits the probe.
    ///
    /// # Shapes
    /// `features`: `[N, D]`, `labels`: `N` values `< classes`, `classes ≥ 2`.
    pub fn fit(
        features: &Tensor,
        labels: &[usize],
        classes: usize,
        opts: &ProbeOptions,
    ) -> Result<Self> {
        let (x, n, d) = features_f64(features, "features")?;
        if classes < 2 {
            return Err(Error::invalid(
                "classes",
                format!("need at least 2, have {classes}"),
            ));
        }
        check_labels(labels, n, classes)?;
        if opts.batch_size == 0 {
            return Err(Error::invalid("batch_size", "must be at least 1"));
        }
        let mut mean = vec![0.0; d];
        for r in x.chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut var = vec![0.0; d];
        for r in x.chunks_exact(d) {
            for ((s, v), m) in var.iter_mut().zip(r).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        let inv_std: Vec<f64> = var
            .iter()
            .map(|s| {
                let sd = (s / n as f64).sqrt();
                if sd > 1e-12 {
                    1.0 / sd
                } else {
                    1.0
                }
            })
            .collect();
        let xs: Vec<f64> = x
            .chunks_exact(d)
            .flat_map(|r| {
                r.iter()
                    .zip(&mean)
                    .zip(&inv_std)
                    .map(|((v, m), s)| (v - m) * s)
                    .collect::<Vec<_>>()
            })
            .collect();
        let k = classes;
        let mut w = vec![0.0; k * d];
        let mut b = vec![0.0; k];
        let mut vw = vec![0.0; k * d];
        let mut vb = vec![0.0; k];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
        let mut order: Vec<usize> = (0..n).collect();
        let mut p = vec![0.0; k];
        for _ in 0..opts.epochs {
            order.shuffle(&mut rng);
            for batch in order.chunks(opts.batch_size) {
                let mut gw = vec![0.0; k * d];
                let mut gb = vec![0.0; k];
                for &i in batch {
                    let xi = &xs[i * d..(i + 1) * d];
                    softmax_logits(&w, &b, xi, &mut p);
                    p[labels[i]] -= 1.0;
                    for c in 0..k {
                        gb[c] += p[c];
                        let g = &mut gw[c * d..(c + 1) * d];
                        for (gj, xj) in g.iter_mut().zip(xi) {
                            *gj += p[c] * xj;
                        }
                    }
                }
                let inv = 1.0 / batch.len() as f64;
                for j in 0..k * d {
                    let g = gw[j] * inv + opts.weight_decay * w[j];
                    vw[j] = opts.momentum * vw[j] + g;
                    w[j] -= opts.learning_rate * vw[j];
                }
                for c in 0..k {
                    vb[c] = opts.momentum * vb[c] + gb[c] * inv;
                    b[c] -= opts.learning_rate * vb[c];
                }
            }
        }
        if w.iter().chain(&b).any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                location: "linear probe weights (lower the learning rate)".into(),
                nan: w.iter().chain(&b).filter(|v| v.is_nan()).count(),
                inf: w.iter().chain(&b).filter(|v| v.is_infinite()).count(),
                total: w.len() + b.len(),
            });
        }
        Ok(Self {
            dim: d,
            classes: k,
            mean,
            inv_std,
            weight: w,
            bias: b,
        })
    }

    /// Predicted class of each row.
    ///
    /// # Shapes
    /// `features`: `[N, D]`; returns `N` labels.
    pub fn predict(&self, features: &Tensor) -> Result<Vec<usize>> {
        let (x, n, d) = features_f64(features, "features")?;
        if d != self.dim {
            return Err(Error::shape("features", &[n, self.dim], &[n, d]));
        }
        let mut p = vec![0.0; self.classes];
        Ok(x.chunks_exact(d)
            .map(|r| {
                let xs: Vec<f64> = r
                    .iter()
                    .zip(&self.mean)
                    .zip(&self.inv_std)
                    .map(|((v, m), s)| (v - m) * s)
                    .collect();
                softmax_logits(&self.weight, &self.bias, &xs, &mut p);
                argmax(&p)
            })
            .collect())
    }

    /// Accuracy of the probe on labelled features with a Wilson interval at quantile `z`.
    ///
    /// # Shapes
    /// `features`: `[N, D]`, `labels`: `N` values.
    pub fn accuracy(&self, features: &Tensor, labels: &[usize], z: f64) -> Result<Accuracy> {
        let pred = self.predict(features)?;
        check_labels(labels, pred.len(), self.classes)?;
        accuracy_of(&pred, labels, z)
    }
}

/// Softmax of `W x + b` into `p`.
fn softmax_logits(w: &[f64], b: &[f64], x: &[f64], p: &mut [f64]) {
    let d = x.len();
    for (c, pc) in p.iter_mut().enumerate() {
        *pc = b[c]
            + w[c * d..(c + 1) * d]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum::<f64>();
    }
    let m = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for pc in p.iter_mut() {
        *pc = (*pc - m).exp();
        s += *pc;
    }
    p.iter_mut().for_each(|pc| *pc /= s);
}
