//! [`Bm25`]: Okapi BM25 over captions, the lexical ranking VIMI retrieves its in-context
//! examples with (over image–text pairs, by caption).
//!
//! ```text
//! score(q, d) = Σ_{t ∈ q} idf(t) · tf(t, d)·(k1 + 1) / (tf(t, d) + k1·(1 − b + b·|d| / avgdl))
//! idf(t)      = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))          (never negative)
//! ```
//!
//! Terms are lower-cased runs of letters and digits (Unicode); a query term counts once per
//! occurrence in the query. Documents without any query term are not returned.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};

use super::bank::{better, insert_top};

/// BM25's two parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bm25Params {
    /// Term-frequency saturation (1.2–2.0 usual).
    pub k1: f32,
    /// Length normalisation (0 = none, 1 = full).
    pub b: f32,
}

impl Default for Bm25Params {
    /// `k1 = 1.2`, `b = 0.75` (Lucene / Elasticsearch's defaults).
    fn default() -> Self {
        Self { k1: 1.2, b: 0.75 }
    }
}

/// The terms of `text`: lower-cased runs of alphanumeric characters.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A BM25 index over a list of documents (captions).
#[derive(Debug, Clone)]
pub struct Bm25 {
    params: Bm25Params,
    /// term → postings `(doc, tf)`.
    postings: HashMap<String, Vec<(u32, u32)>>,
    doc_len: Vec<u32>,
    avgdl: f32,
}

impl Bm25 {
    /// Indexes `docs` (document `i` is row `i` of the results).
    ///
    /// # Errors
    /// Parameters out of range (`k1 < 0`, `b ∉ [0, 1]`, non-finite); more than `u32::MAX`
    /// documents.
    pub fn new<S: AsRef<str>>(docs: &[S], params: Bm25Params) -> Result<Self> {
        if !(params.k1.is_finite() && params.k1 >= 0.0) {
            return Err(Error::config(
                "bm25.k1",
                format!("{} must be ≥ 0", params.k1),
            ));
        }
        if !(params.b.is_finite() && (0.0..=1.0).contains(&params.b)) {
            return Err(Error::config(
                "bm25.b",
                format!("{} must be in [0, 1]", params.b),
            ));
        }
        if docs.len() > u32::MAX as usize {
            return Err(Error::invalid("docs", "more than u32::MAX documents"));
        }
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut doc_len = Vec::with_capacity(docs.len());
        for (i, d) in docs.iter().enumerate() {
            let ts = terms(d.as_ref());
            doc_len.push(ts.len() as u32);
            let mut tf: HashMap<String, u32> = HashMap::new();
            for t in ts {
                *tf.entry(t).or_insert(0) += 1;
            }
            for (t, c) in tf {
                postings.entry(t).or_default().push((i as u32, c));
            }
        }
        let total: u64 = doc_len.iter().map(|&l| l as u64).sum();
        let avgdl = if doc_len.is_empty() {
            0.0
        } else {
            (total as f64 / doc_len.len() as f64) as f32
        };
        Ok(Self {
            params,
            postings,
            doc_len,
            avgdl,
        })
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.doc_len.len()
    }

    /// True without documents.
    pub fn is_empty(&self) -> bool {
        self.doc_len.is_empty()
    }

    /// The parameters.
    pub fn params(&self) -> Bm25Params {
        self.params
    }

    /// `idf(t)` of a (lower-case) term; 0 for a term no document has.
    pub fn idf(&self, term: &str) -> f32 {
        let n = self.len() as f32;
        match self.postings.get(term) {
            Some(p) => {
                let df = p.len() as f32;
                (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
            }
            None => 0.0,
        }
    }

    /// The BM25 score of every document for `query` (0 for documents without a query term).
    pub fn scores(&self, query: &str) -> Vec<f32> {
        let mut s = vec![0f32; self.len()];
        let Bm25Params { k1, b } = self.params;
        let avg = self.avgdl.max(f32::MIN_POSITIVE);
        for t in terms(query) {
            let Some(p) = self.postings.get(&t) else {
                continue;
            };
            let idf = self.idf(&t);
            for &(doc, tf) in p {
                let tf = tf as f32;
                let dl = self.doc_len[doc as usize] as f32;
                let norm = k1 * (1.0 - b + b * dl / avg);
                s[doc as usize] += idf * tf * (k1 + 1.0) / (tf + norm);
            }
        }
        s
    }

    /// The `k` best documents with a positive score for `query`, best first (ties: the smaller
    /// index), among those `keep(doc)` accepts.
    pub fn top_k(&self, query: &str, k: usize, keep: &dyn Fn(usize) -> bool) -> Vec<(usize, f32)> {
        let mut list: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
        for (i, &s) in self.scores(query).iter().enumerate() {
            if s <= 0.0 {
                continue;
            }
            if list.len() == k && list.last().is_some_and(|&l| !better((s, i), l)) {
                continue;
            }
            if keep(i) {
                insert_top(&mut list, k, (s, i));
            }
        }
        list.into_iter().map(|(s, i)| (i, s)).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn known_ranking_and_values() {
        let docs = [
            "a blue triangle moving left",
            "a red square moving up",
            "a blue square moving left",
            "the the the",
        ];
        let bm = Bm25::new(&docs, Bm25Params::default()).unwrap();
        let hits = bm.top_k("blue triangle", 4, &|_| true);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0, 2]);
        // by hand: N = 4; "triangle" df 1, "blue" df 2; doc 0 has 5 terms, avgdl = 18/4
        let idf = |df: f32| (1.0f32 + (4.0 - df + 0.5) / (df + 0.5)).ln();
        let norm = 1.2 * (1.0 - 0.75 + 0.75 * 5.0 / 4.5);
        let want = (idf(1.0) + idf(2.0)) * 2.2 / (1.0 + norm);
        assert!((hits[0].1 - want).abs() < 1e-5, "{} vs {want}", hits[0].1);
        // no shared term: nothing
        assert!(bm.top_k("zebra", 3, &|_| true).is_empty());
        // filter and k
        let f = bm.top_k("moving", 2, &|d| d != 0);
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|h| h.0 != 0));
        assert_eq!(
            terms("A Blue-TRIANGLE, moving_left!"),
            ["a", "blue", "triangle", "moving", "left"]
        );
        assert!(Bm25::new(&docs, Bm25Params { k1: -1.0, b: 0.5 }).is_err());
        assert!(Bm25::new(&docs, Bm25Params { k1: 1.0, b: 1.5 }).is_err());
        let empty: [&str; 0] = [];
        assert!(Bm25::new(&empty, Bm25Params::default())
            .unwrap()
            .top_k("a", 3, &|_| true)
            .is_empty());
    }
}
