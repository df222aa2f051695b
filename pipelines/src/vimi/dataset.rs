//! VIMI's multimodal prompt dataset: for every (caption, clip) of a corpus, the `k` examples
//! its caption retrieves from the corpus index, the clip itself and its near-duplicates
//! excluded; written as JSON Lines, one row per clip, read back by the trainer
//! ([`mod@crate::vimi::train`]).
//!
//! Row: `{"id", "caption", "media"?, "labels"?, "examples": [{"id", "item", "score",
//! "caption", "media"?}]}` (`item` is the example's row in the index).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vidgen_adapters::retrieval::{IndexItem, RetrievalIndex};
use vidgen_video_core::{Error, Result};

use super::index::{search_text, TextRetrieval};
use super::text::SentenceStates;

/// One retrieved example of a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleRef {
    /// The example's id.
    pub id: String,
    /// Its row in the index.
    pub item: usize,
    /// Its retrieval score (BM25, or cosine).
    pub score: f32,
    /// Its caption.
    pub caption: String,
    /// Its media file, as in the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
}

/// One training clip with its retrieved examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// The clip's index item (id, caption, media, labels), its fields inline in the JSON line.
    #[serde(flatten)]
    pub item: IndexItem,
    /// The retrieved examples, best first.
    pub examples: Vec<ExampleRef>,
}

/// How the dataset is retrieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DatasetOptions {
    /// Examples per clip.
    pub k: usize,
    /// The ranking.
    pub method: TextRetrieval,
    /// Near-duplicate threshold in the `pixels` space (`None`: only the clip itself is
    /// excluded).
    pub dedup: Option<f32>,
}

impl Default for DatasetOptions {
    /// `k = 2`, BM25, near-duplicates at cosine ≥ 0.98.
    fn default() -> Self {
        Self {
            k: 2,
            method: TextRetrieval::Bm25,
            dedup: Some(0.98),
        }
    }
}

/// Rows for every item of `index` (its caption is the query; itself and, with `dedup`, its
/// near-duplicates are excluded).
///
/// # Errors
/// As [`search_text`].
pub fn build_manifest(
    index: &RetrievalIndex,
    states: Option<&SentenceStates>,
    opts: &DatasetOptions,
) -> Result<Vec<ManifestRow>> {
    let items = index.items();
    let mut rows = Vec::with_capacity(items.len());
    let all: Vec<usize> = (0..items.len()).collect();
    for chunk in all.chunks(512) {
        let queries: Vec<&str> = chunk.iter().map(|&i| items[i].caption.as_str()).collect();
        let hits = search_text(
            index,
            states,
            &queries,
            opts.k,
            opts.method,
            Some(chunk.to_vec()),
            opts.dedup,
        )?;
        for (&i, h) in chunk.iter().zip(hits) {
            let it = &items[i];
            rows.push(ManifestRow {
                item: it.clone(),
                examples: h
                    .iter()
                    .map(|x| ExampleRef {
                        id: items[x.item].id.clone(),
                        item: x.item,
                        score: x.score,
                        caption: items[x.item].caption.clone(),
                        media: items[x.item].media.clone(),
                    })
                    .collect(),
            });
        }
    }
    Ok(rows)
}

/// Writes rows as JSON Lines.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_manifest(path: &Path, rows: &[ManifestRow]) -> Result<()> {
    let io = |e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for r in rows {
        let line = serde_json::to_string(r).map_err(|e| Error::invalid("row", e.to_string()))?;
        writeln!(f, "{line}").map_err(io)?;
    }
    f.flush().map_err(io)
}

/// Parses JSON Lines rows (blank lines skipped).
///
/// # Errors
/// [`Error::Malformed`] naming the line.
pub fn parse_manifest(text: &str, path: &Path) -> Result<Vec<ManifestRow>> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: ManifestRow = serde_json::from_str(line).map_err(|e| Error::Malformed {
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", n + 1),
        })?;
        rows.push(r);
    }
    Ok(rows)
}

/// Reads a JSON Lines manifest.
///
/// # Errors
/// [`Error::Io`]; as [`parse_manifest`].
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    parse_manifest(&text, path)
}

/// Checks that every row's examples point into an index of `n` items and none is the row
/// itself (by id).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the row.
pub fn validate_rows(rows: &[ManifestRow], n: usize) -> Result<()> {
    for (i, r) in rows.iter().enumerate() {
        for e in &r.examples {
            if e.item >= n || e.id == r.item.id {
                return Err(Error::invalid(
                    "manifest",
                    format!(
                        "row {i} ({}): example {} (item {}) is out of range or the clip itself",
                        r.item.id, e.id, e.item
                    ),
                ));
            }
        }
    }
    Ok(())
}
