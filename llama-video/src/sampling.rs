//! Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty,
//! classifier-free guidance.
//!
//! The order is transformers' logits-processor order: guidance → repetition penalty →
//! allowed-token range → temperature → top-k → top-p → draw. Randomness comes only from the
//! RNG the caller passes in, so a seeded RNG gives the same tokens every run.

use std::ops::Range;

use candle_core::{DType, Tensor};
use rand::Rng;
use vidgen_video_core::{Error, Result};

/// How [`sample`] picks a token. `Default` is greedy decoding with every option off.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature; `0` means greedy (argmax). Default 0.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (`None`: off).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p`, `0 < p ≤ 1`
    /// (`None`: off).
    pub top_p: Option<f64>,
    /// CTRL-style repetition penalty on tokens already in the sequence: positive logits are
    /// divided by it, negative ones multiplied. `1.0` (default) is off.
    pub repetition_penalty: f64,
    /// Classifier-free guidance scale on log-probabilities:
    /// `uncond + scale · (cond − uncond)`. `1.0` (default) is off: no unconditional pass.
    pub cfg_scale: f64,
    /// Only tokens in this id range may be drawn (e.g. the codebook part of a vocabulary that
    /// also holds text tokens). `None` (default): every id.
    pub allowed: Option<Range<u32>>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            cfg_scale: 1.0,
            allowed: None,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding (argmax).
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Sampling at `temperature` with no truncation.
    pub fn with_temperature(temperature: f64) -> Self {
        SamplingConfig {
            temperature,
            ..Self::default()
        }
    }

    /// Sets top-k.
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }

    /// Sets top-p.
    pub fn top_p(mut self, p: f64) -> Self {
        self.top_p = Some(p);
        self
    }

    /// Sets the repetition penalty.
    pub fn repetition_penalty(mut self, penalty: f64) -> Self {
        self.repetition_penalty = penalty;
        self
    }

    /// Sets the classifier-free guidance scale.
    pub fn cfg_scale(mut self, scale: f64) -> Self {
        self.cfg_scale = scale;
        self
    }

    /// Restricts draws to `range`.
    pub fn allowed(mut self, range: Range<u32>) -> Self {
        self.allowed = Some(range);
        self
    }

    /// Whether guidance needs an unconditional pass.
    pub fn uses_cfg(&self) -> bool {
        self.cfg_scale != 1.0
    }

    /// Checks every field against a vocabulary of `vocab` tokens; the error names the field.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        let bad = |f: &str, r: String| Err(Error::invalid(format!("sampling.{f}"), r));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "temperature",
                format!("must be >= 0, got {}", self.temperature),
            );
        }
        if self.top_k == Some(0) {
            return bad("top_k", "must be >= 1".into());
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad("top_p", format!("must be in (0, 1], got {p}"));
            }
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(
                "repetition_penalty",
                format!("must be > 0, got {}", self.repetition_penalty),
            );
        }
        if !self.cfg_scale.is_finite() {
            return bad(
                "cfg_scale",
                format!("must be finite, got {}", self.cfg_scale),
            );
        }
        if let Some(r) = &self.allowed {
            if r.start >= r.end || r.end as usize > vocab {
                return bad(
                    "allowed",
                    format!("{r:?} must be a non-empty range inside 0..{vocab}"),
                );
            }
        }
        Ok(())
    }
}

/// `log_softmax` of one row, in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// Combines conditional and unconditional logits rows as transformers'
/// `UnbatchedClassifierFreeGuidanceLogitsProcessor`: `u + s·(c − u)` on log-probabilities.
///
/// A token at `-inf` in either row (masked) stays at `-inf` (`u + s·(c − u)` would be NaN or
/// an unbounded value there).
pub fn guide(cond: &[f32], uncond: &[f32], scale: f64) -> Result<Vec<f32>> {
    if cond.len() != uncond.len() {
        return Err(Error::shape(
            "unconditional logits",
            &[cond.len()],
            &[uncond.len()],
        ));
    }
    let (c, u) = (log_softmax(cond), log_softmax(uncond));
    Ok(c.iter()
        .zip(&u)
        .map(|(&c, &u)| {
            if c == f64::NEG_INFINITY || u == f64::NEG_INFINITY {
                f32::NEG_INFINITY
            } else {
                (u + scale * (c - u)) as f32
            }
        })
        .collect())
}

/// [`Error::NonFinite`] when `row` holds NaN or `+inf` (`-inf` is a masked token and allowed).
fn check_row(row: &[f32], what: &str) -> Result<()> {
    let nan = row.iter().filter(|x| x.is_nan()).count();
    let inf = row.iter().filter(|&&x| x == f32::INFINITY).count();
    if nan + inf > 0 {
        return Err(Error::NonFinite {
            location: format!("{what} passed to sampling (NaN or +inf; -inf marks a masked token)"),
            nan,
            inf,
            total: row.len(),
        });
    }
    Ok(())
}

/// Picks one token id from a row of logits.
///
/// `history` is the token sequence so far (for the repetition penalty; ids outside the row are
/// ignored). `uncond` is the unconditional row when `cfg.uses_cfg()`.
///
/// # Errors
/// Invalid settings (see [`SamplingConfig::validate`]), a missing / mismatched unconditional
/// row, logits that are all `-inf` after filtering; [`Error::NonFinite`] for a NaN or `+inf`
/// in `logits` or `uncond` (`-inf` marks a masked token).
pub fn sample(
    logits: &[f32],
    uncond: Option<&[f32]>,
    history: &[u32],
    cfg: &SamplingConfig,
    rng: &mut impl Rng,
) -> Result<u32> {
    let vocab = logits.len();
    cfg.validate(vocab)?;
    check_row(logits, "logits")?;
    if let (true, Some(u)) = (cfg.uses_cfg(), uncond) {
        check_row(u, "unconditional logits")?;
    }
    let mut row: Vec<f32> = match (cfg.uses_cfg(), uncond) {
        (true, Some(u)) => guide(logits, u, cfg.cfg_scale)?,
        (true, None) => {
            return Err(Error::invalid(
                "sampling.cfg_scale",
                "guidance is on but no unconditional logits were given",
            ))
        }
        (false, _) => logits.to_vec(),
    };
    if cfg.repetition_penalty != 1.0 {
        let p = cfg.repetition_penalty as f32;
        let mut seen = vec![false; vocab];
        for &t in history {
            if let Some(s) = seen.get_mut(t as usize) {
                *s = true;
            }
        }
        for (x, s) in row.iter_mut().zip(&seen) {
            if *s {
                *x = if *x < 0.0 { *x * p } else { *x / p };
            }
        }
    }
    if let Some(r) = &cfg.allowed {
        for (i, x) in row.iter_mut().enumerate() {
            if !r.contains(&(i as u32)) {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    let argmax = || -> Result<u32> {
        let mut best: Option<(usize, f32)> = None;
        for (i, &x) in row.iter().enumerate() {
            if best.is_none_or(|(_, b)| x > b) {
                best = Some((i, x));
            }
        }
        match best {
            Some((i, x)) if x > f32::NEG_INFINITY => Ok(i as u32),
            _ => Err(Error::invalid("logits", "no finite logit to choose from")),
        }
    };
    if cfg.temperature == 0.0 {
        return argmax();
    }
    // Candidates sorted by logit, best first (ties by id for determinism).
    let t = cfg.temperature;
    let mut cand: Vec<(u32, f64)> = row
        .iter()
        .enumerate()
        .filter(|(_, x)| x.is_finite())
        .map(|(i, &x)| (i as u32, x as f64 / t))
        .collect();
    if cand.is_empty() {
        return Err(Error::invalid("logits", "no finite logit to sample from"));
    }
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(k) = cfg.top_k {
        cand.truncate(k.max(1));
    }
    let m = cand[0].1;
    let mut probs: Vec<f64> = cand.iter().map(|(_, x)| (x - m).exp()).collect();
    let z: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= z);
    if let Some(p) = cfg.top_p {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, q) in probs.iter().enumerate() {
            acc += q;
            if acc >= p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        cand.truncate(keep);
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= z);
    }
    let u: f64 = rng.random::<f64>();
    let mut acc = 0.0;
    for (i, q) in probs.iter().enumerate() {
        acc += q;
        if u < acc {
            return Ok(cand[i].0);
        }
    }
    Ok(cand[cand.len() - 1].0)
}

/// Reads the logits of the last position of every batch row as f32 rows.
///
/// # Shapes
/// `logits`: `[B, T, vocab]` or `[B, vocab]` → `B` rows of `vocab` values.
///
/// # Errors
/// Another rank, or `T = 0`.
pub fn last_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let l = match logits.rank() {
        3 => {
            let t = logits.dim(1)?;
            if t == 0 {
                return Err(Error::invalid(
                    "logits",
                    format!("no position to read: shape {:?} has T = 0", logits.dims()),
                ));
            }
            logits.narrow(1, t - 1, 1)?.squeeze(1)?
        }
        2 => logits.clone(),
        _ => {
            return Err(Error::invalid(
                "logits",
                format!(
                    "expected [B, T, vocab] or [B, vocab], got {:?}",
                    logits.dims()
                ),
            ))
        }
    };
    Ok(l.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn greedy_is_argmax_and_ignores_rng() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let l = [0.1, 3.0, -1.0, 2.9];
        assert_eq!(
            sample(&l, None, &[], &SamplingConfig::greedy(), &mut rng).unwrap(),
            1
        );
    }

    #[test]
    fn repetition_penalty_changes_the_choice() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let l = [0.1, 3.0, -1.0, 2.9];
        let c = SamplingConfig::greedy().repetition_penalty(1.5);
        assert_eq!(sample(&l, None, &[1], &c, &mut rng).unwrap(), 3);
    }

    #[test]
    fn top_k_one_is_greedy_and_allowed_range_is_respected() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let l = [0.1, 3.0, -1.0, 2.9];
        let c = SamplingConfig::with_temperature(5.0).top_k(1);
        for _ in 0..20 {
            assert_eq!(sample(&l, None, &[], &c, &mut rng).unwrap(), 1);
        }
        let c = SamplingConfig::with_temperature(1.0).allowed(2..4);
        for _ in 0..50 {
            assert!(sample(&l, None, &[], &c, &mut rng).unwrap() >= 2);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        // probabilities ~ [0.665, 0.245, 0.09]: p = 0.5 keeps only the first.
        let l = [2.0f32, 1.0, 0.0];
        let c = SamplingConfig::with_temperature(1.0).top_p(0.5);
        for _ in 0..50 {
            assert_eq!(sample(&l, None, &[], &c, &mut rng).unwrap(), 0);
        }
    }

    #[test]
    fn temperature_sampling_follows_the_distribution() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let l = [0.0f32, (3.0f32).ln()];
        let c = SamplingConfig::with_temperature(1.0);
        let n = 4000;
        let ones = (0..n)
            .filter(|_| sample(&l, None, &[], &c, &mut rng).unwrap() == 1)
            .count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.03, "{frac}");
    }

    #[test]
    fn cfg_needs_uncond_and_pushes_towards_cond() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let cond = [1.0f32, 1.2, 0.0];
        let uncond = [0.0f32, 1.5, 0.0];
        let c = SamplingConfig::greedy().cfg_scale(3.0);
        assert!(sample(&cond, None, &[], &c, &mut rng).is_err());
        assert_eq!(sample(&cond, Some(&uncond), &[], &c, &mut rng).unwrap(), 0);
        let g = guide(&cond, &uncond, 1.0).unwrap();
        let ls = log_softmax(&cond);
        for (a, b) in g.iter().zip(&ls) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let l = [0.0f32; 4];
        for (c, name) in [
            (SamplingConfig::with_temperature(-1.0), "temperature"),
            (SamplingConfig::with_temperature(1.0).top_p(0.0), "top_p"),
            (SamplingConfig::with_temperature(1.0).top_k(0), "top_k"),
            (SamplingConfig::greedy().allowed(2..9), "allowed"),
            (
                SamplingConfig::greedy().repetition_penalty(0.0),
                "repetition_penalty",
            ),
        ] {
            let e = sample(&l, None, &[], &c, &mut rng).unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
        }
    }

    proptest! {
        #![proptest_config(video_testkit::proptest_config(256))]
        #[test]
        fn draws_are_in_range_and_seeded(
            logits in proptest::collection::vec(-10f32..10.0, 1..40),
            seed in 0u64..1000,
            temp in 0.1f64..3.0,
            k in 1usize..10,
            p in 0.05f64..1.0,
        ) {
            let c = SamplingConfig::with_temperature(temp).top_k(k).top_p(p);
            let a = sample(&logits, None, &[], &c, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
            let b = sample(&logits, None, &[], &c, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
            prop_assert_eq!(a, b);
            prop_assert!((a as usize) < logits.len());
            // top-k: the draw is among the k best.
            let better = logits.iter().filter(|&&x| x > logits[a as usize]).count();
            prop_assert!(better < k);
        }
    }
}
