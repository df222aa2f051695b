//! [`RetrievalIndex`]: a corpus of captioned examples (images or clips) with one or more
//! embedding spaces (CLIP image / text, a sentence encoder, …) and BM25 over the captions,
//! searched exactly, with self-exclusion and near-duplicate removal, saved as a JSON manifest
//! plus one safetensors file.
//!
//! # Files
//! - `index.json`: `{"format": "vidgen-retrieval-index", "version": 1, "items": [{"id",
//!   "caption", "media"?, "labels"?}], "spaces": [{"name", "modality", "model": {"id",
//!   "dim"}}], "bm25": {"k1", "b"}}`.
//! - `embeddings.safetensors`: one f32 tensor `[N, dim]` per space, named as the space, rows
//!   L2-normalised, row `i` embedding item `i`.
//!
//! Every space records the embedding model that made it. A query names the model its
//! embeddings come from, and a model id or width other than the space's is
//! [`Error::InvalidArgument`] `embedding_model`, never a silent search in the wrong space.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};

use super::bank::ExampleBank;
use super::bm25::{Bm25, Bm25Params};

/// The manifest's `format` value.
pub const INDEX_FORMAT: &str = "vidgen-retrieval-index";
/// The manifest's version.
pub const INDEX_VERSION: u32 = 1;
/// The manifest file in an index folder.
pub const MANIFEST_FILE: &str = "index.json";
/// The embeddings file in an index folder.
pub const EMBEDDINGS_FILE: &str = "embeddings.safetensors";

/// One example of the corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexItem {
    /// A unique id (a file name, a dataset key).
    pub id: String,
    /// The caption (what BM25 and text embeddings index).
    pub caption: String,
    /// The image / clip file, relative to the index folder or absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
    /// Free-form labels (e.g. the synthetic world's colour / shape / direction), for
    /// evaluation.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub labels: serde_json::Value,
}

/// The model that made a space's embeddings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EmbeddingModel {
    /// The model's id (a folder name, a hub id, a description of a fixed embedding).
    pub id: String,
    /// Width of its embeddings.
    pub dim: usize,
}

impl EmbeddingModel {
    /// A model id and width.
    pub fn new(id: impl Into<String>, dim: usize) -> Self {
        Self { id: id.into(), dim }
    }
}

impl std::fmt::Display for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` (dim {})", self.id, self.dim)
    }
}

/// What a space embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    /// Captions.
    Text,
    /// Images (or a clip's key frame).
    Image,
    /// Clips.
    Video,
}

/// One embedding space of an index.
#[derive(Debug, Clone)]
pub struct Space {
    /// Its name (the tensor name in `embeddings.safetensors`).
    pub name: String,
    /// What it embeds.
    pub modality: Modality,
    /// The model that made it.
    pub model: EmbeddingModel,
    /// The normalised embeddings, searchable.
    pub bank: ExampleBank,
}

/// A search hit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The item's row.
    pub item: usize,
    /// Cosine similarity (embedding search) or BM25 score.
    pub score: f32,
}

/// What to search with.
#[derive(Debug, Clone, Copy)]
pub enum Query<'a> {
    /// Query embeddings `[Q, dim]` made by `model`, searched in the space `space`.
    Embeddings {
        /// The space searched.
        space: &'a str,
        /// The model that made the queries (checked against the space's).
        model: &'a EmbeddingModel,
        /// `[Q, dim]`.
        queries: &'a Tensor,
    },
    /// Query texts ranked by BM25 over the captions.
    Bm25(&'a [&'a str]),
}

/// Near-duplicate rule: two items whose embeddings in `space` have cosine similarity ≥
/// `threshold` are duplicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dedup {
    /// The space compared in (usually an image space).
    pub space: String,
    /// Cosine similarity at or above which two items are duplicates.
    pub threshold: f32,
}

/// How a search filters its hits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOptions {
    /// Hits per query.
    pub k: usize,
    /// Per query, the item it was made from: excluded, with its near-duplicates when `dedup`
    /// is set (dataset construction: a caption must not retrieve its own clip). Length `Q`.
    pub exclude_items: Option<Vec<usize>>,
    /// Near-duplicate removal among the hits (and of the excluded items).
    pub dedup: Option<Dedup>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpaceEntry {
    name: String,
    modality: Modality,
    model: EmbeddingModel,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    items: Vec<IndexItem>,
    #[serde(default)]
    spaces: Vec<SpaceEntry>,
    #[serde(default)]
    bm25: Option<Bm25Params>,
}

/// A retrieval index (see the module docs).
#[derive(Debug, Clone)]
pub struct RetrievalIndex {
    items: Vec<IndexItem>,
    spaces: Vec<Space>,
    bm25: Bm25,
}

impl RetrievalIndex {
    /// An index of `items` without embedding spaces yet (BM25 over their captions with the
    /// default parameters).
    ///
    /// # Errors
    /// No item; a repeated id.
    pub fn new(items: Vec<IndexItem>) -> Result<Self> {
        Self::with_bm25(items, Bm25Params::default())
    }

    /// [`RetrievalIndex::new`] with BM25 parameters.
    ///
    /// # Errors
    /// As [`RetrievalIndex::new`]; bad BM25 parameters.
    pub fn with_bm25(items: Vec<IndexItem>, params: Bm25Params) -> Result<Self> {
        if items.is_empty() {
            return Err(Error::invalid("items", "an index needs at least one item"));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = items.iter().find(|it| !seen.insert(it.id.as_str())) {
            return Err(Error::invalid(
                "items",
                format!("the id `{}` appears twice", dup.id),
            ));
        }
        let captions: Vec<&str> = items.iter().map(|i| i.caption.as_str()).collect();
        let bm25 = Bm25::new(&captions, params)?;
        Ok(Self {
            items,
            spaces: Vec::new(),
            bm25,
        })
    }

    /// Adds the space `name`: `embeddings [N, model.dim]`, row `i` for item `i`.
    ///
    /// # Errors
    /// A name already used or empty; a shape other than `[N, model.dim]`; non-finite values.
    pub fn add_space(
        &mut self,
        name: &str,
        modality: Modality,
        model: EmbeddingModel,
        embeddings: &Tensor,
    ) -> Result<()> {
        if name.is_empty() || self.spaces.iter().any(|s| s.name == name) {
            return Err(Error::invalid(
                "space",
                format!("`{name}`: empty or already in the index"),
            ));
        }
        if embeddings.dims() != [self.items.len(), model.dim] {
            return Err(Error::shape(
                format!("embeddings of space `{name}`"),
                &[self.items.len(), model.dim],
                embeddings.dims(),
            ));
        }
        self.spaces.push(Space {
            name: name.to_string(),
            modality,
            model,
            bank: ExampleBank::new(embeddings)?,
        });
        Ok(())
    }

    /// The items.
    pub fn items(&self) -> &[IndexItem] {
        &self.items
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Never true (an index has at least one item).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The spaces.
    pub fn spaces(&self) -> &[Space] {
        &self.spaces
    }

    /// The BM25 index of the captions.
    pub fn bm25(&self) -> &Bm25 {
        &self.bm25
    }

    /// The space `name`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] `space` naming the spaces there are.
    pub fn space(&self, name: &str) -> Result<&Space> {
        self.spaces.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.spaces.iter().map(|s| s.name.as_str()).collect();
            Error::invalid(
                "space",
                format!("no space `{name}` in this index (it has {names:?})"),
            )
        })
    }

    /// Checks that `model` is the one that made space `name`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] `space` for an unknown space; `embedding_model` when the id
    /// or the width differ.
    pub fn check_model(&self, name: &str, model: &EmbeddingModel) -> Result<()> {
        let s = self.space(name)?;
        if s.model != *model {
            return Err(Error::invalid(
                "embedding_model",
                format!(
                    "the index's space `{name}` was built with {}, the query embeddings come \
                     from {model}: rebuild the index with that model or query with the index's",
                    s.model
                ),
            ));
        }
        Ok(())
    }

    /// Searches (see [`Query`] and [`SearchOptions`]): up to `k` hits per query, best first.
    /// With `exclude_items`, query `q` never returns item `exclude_items[q]`, nor (with
    /// `dedup`) an item that is its near-duplicate; with `dedup`, no two hits of a query are
    /// near-duplicates (the better one is kept). Fewer than `k` hits come back only when the
    /// corpus has no more acceptable items (or, for BM25, no more items sharing a term).
    ///
    /// # Shapes
    /// `Query::Embeddings { queries: [Q, dim] }` or `Q` texts → `Q` lists.
    ///
    /// # Errors
    /// An unknown space; another embedding model ([`RetrievalIndex::check_model`]); wrong
    /// query shapes or non-finite values; `exclude_items` of another length than `Q` or out of
    /// range.
    pub fn search(&self, query: Query<'_>, opts: &SearchOptions) -> Result<Vec<Vec<Hit>>> {
        let nq = match query {
            Query::Embeddings {
                space,
                model,
                queries,
            } => {
                self.check_model(space, model)?;
                match queries.dims() {
                    &[q, d] if d == model.dim => q,
                    other => return Err(Error::shape("queries", &[1, model.dim], other)),
                }
            }
            Query::Bm25(texts) => texts.len(),
        };
        if let Some(ex) = &opts.exclude_items {
            if ex.len() != nq {
                return Err(Error::invalid(
                    "exclude_items",
                    format!("{} entries for {nq} queries", ex.len()),
                ));
            }
            if let Some(bad) = ex.iter().find(|&&i| i >= self.len()) {
                return Err(Error::invalid(
                    "exclude_items",
                    format!("item {bad} out of range for {} items", self.len()),
                ));
            }
        }
        let dedup = match &opts.dedup {
            Some(d) => {
                if !(d.threshold.is_finite()) {
                    return Err(Error::invalid("dedup.threshold", "must be finite"));
                }
                Some((&self.space(&d.space)?.bank, d.threshold))
            }
            None => None,
        };
        let excluded = |q: usize, row: usize| -> bool {
            match &opts.exclude_items {
                Some(ex) => {
                    let own = ex[q];
                    row == own
                        || dedup.is_some_and(|(bank, thr)| {
                            bank.cosine(own, row).is_some_and(|c| c >= thr)
                        })
                }
                None => false,
            }
        };
        // Over-fetch, filter, and fetch more while duplicates ate the list.
        let mut fetch = if dedup.is_some() {
            (4 * opts.k + 8).min(self.len())
        } else {
            opts.k.min(self.len())
        };
        let mut done: Vec<Option<Vec<Hit>>> = vec![None; nq];
        loop {
            let pending: Vec<usize> = (0..nq).filter(|&q| done[q].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            let raw: Vec<Vec<Hit>> = match query {
                Query::Embeddings { space, queries, .. } => {
                    let bank = &self.space(space)?.bank;
                    let idx = Tensor::from_vec(
                        pending.iter().map(|&q| q as u32).collect::<Vec<_>>(),
                        pending.len(),
                        queries.device(),
                    )?;
                    let qs = queries.index_select(&idx, 0)?;
                    let keep = |qi: usize, row: usize| !excluded(pending[qi], row);
                    bank.top_k_where(&qs, fetch, &keep)?
                        .into_iter()
                        .map(|t| {
                            t.indices
                                .into_iter()
                                .zip(t.scores)
                                .map(|(item, score)| Hit { item, score })
                                .collect()
                        })
                        .collect()
                }
                Query::Bm25(texts) => pending
                    .iter()
                    .map(|&q| {
                        self.bm25
                            .top_k(texts[q], fetch, &|row| !excluded(q, row))
                            .into_iter()
                            .map(|(item, score)| Hit { item, score })
                            .collect()
                    })
                    .collect(),
            };
            for (&q, hits) in pending.iter().zip(raw) {
                let exhausted = hits.len() < fetch || fetch >= self.len();
                let kept = match dedup {
                    Some((bank, thr)) => {
                        let order: Vec<usize> = hits.iter().map(|h| h.item).collect();
                        let keep = bank.dedup(&order, thr, opts.k);
                        let by_item: HashMap<usize, f32> =
                            hits.iter().map(|h| (h.item, h.score)).collect();
                        keep.into_iter()
                            .map(|item| Hit {
                                item,
                                score: by_item.get(&item).copied().unwrap_or(0.0),
                            })
                            .collect::<Vec<_>>()
                    }
                    None => hits.into_iter().take(opts.k).collect(),
                };
                if kept.len() >= opts.k || exhausted {
                    done[q] = Some(kept);
                }
            }
            fetch = (fetch * 4).min(self.len());
        }
        Ok(done.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Writes `index.json` and `embeddings.safetensors` into `dir` (created if needed).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let manifest = Manifest {
            format: INDEX_FORMAT.into(),
            version: INDEX_VERSION,
            items: self.items.clone(),
            spaces: self
                .spaces
                .iter()
                .map(|s| SpaceEntry {
                    name: s.name.clone(),
                    modality: s.modality,
                    model: s.model.clone(),
                })
                .collect(),
            bm25: Some(self.bm25.params()),
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::invalid("manifest", e.to_string()))?;
        let mpath = dir.join(MANIFEST_FILE);
        std::fs::write(&mpath, json).map_err(|e| io(&mpath, e))?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for s in &self.spaces {
            tensors.insert(
                s.name.clone(),
                s.bank.embeddings()?.to_device(&Device::Cpu)?,
            );
        }
        let epath = dir.join(EMBEDDINGS_FILE);
        candle_core::safetensors::save(&tensors, &epath).map_err(|e| Error::Io {
            path: epath.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(())
    }

    /// Reads an index folder written by [`RetrievalIndex::save`].
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable files; [`Error::Malformed`] for another format or version,
    /// bad JSON, a space without its tensor or with another shape, non-finite values.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mpath = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&mpath).map_err(|e| io(&mpath, e))?;
        Self::from_manifest_bytes(&bytes, dir)
    }

    /// [`RetrievalIndex::load`] with the manifest's bytes given (the embeddings are read from
    /// `dir` when the manifest declares spaces).
    ///
    /// # Errors
    /// As [`RetrievalIndex::load`].
    pub fn from_manifest_bytes(bytes: &[u8], dir: &Path) -> Result<Self> {
        let mpath = dir.join(MANIFEST_FILE);
        let bad = |reason: String| Error::Malformed {
            path: mpath.clone(),
            reason,
        };
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not an index manifest: {e}")))?;
        if m.format != INDEX_FORMAT || m.version != INDEX_VERSION {
            return Err(bad(format!(
                "format `{}` version {}; expected `{INDEX_FORMAT}` version {INDEX_VERSION}",
                m.format, m.version
            )));
        }
        let mut index =
            Self::with_bm25(m.items, m.bm25.unwrap_or_default()).map_err(|e| bad(e.to_string()))?;
        if m.spaces.is_empty() {
            return Ok(index);
        }
        let epath = dir.join(EMBEDDINGS_FILE);
        let tensors = candle_core::safetensors::load(&epath, &Device::Cpu).map_err(|e| {
            if epath.is_file() {
                Error::Malformed {
                    path: epath.clone(),
                    reason: e.to_string(),
                }
            } else {
                io(
                    &epath,
                    std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
                )
            }
        })?;
        for s in m.spaces {
            let t = tensors.get(&s.name).ok_or_else(|| Error::Malformed {
                path: epath.clone(),
                reason: format!("no tensor for the space `{}`", s.name),
            })?;
            let t = t.to_dtype(DType::F32)?;
            index
                .add_space(&s.name, s.modality, s.model, &t)
                .map_err(|e| Error::Malformed {
                    path: epath.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(index)
    }

    /// The folder an item's relative `media` path is taken from, given the index folder.
    pub fn media_path(&self, dir: impl AsRef<Path>, item: usize) -> Option<PathBuf> {
        let m = self.items.get(item)?.media.as_ref()?;
        let p = PathBuf::from(m);
        Some(if p.is_absolute() {
            p
        } else {
            dir.as_ref().join(p)
        })
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}
