//! The retrieval index: exact search equals brute force over random corpora (proptest), self-
//! exclusion with near-duplicates, dedup among hits, BM25, save / load round trips, and typed
//! errors for an index queried with another embedding model, for malformed folders.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use vidgen_adapters::retrieval::{
    Dedup, EmbeddingModel, IndexItem, Modality, Query, RetrievalIndex, SearchOptions,
    EMBEDDINGS_FILE, MANIFEST_FILE,
};
use vidgen_video_core::Error;

fn items(captions: &[&str]) -> Vec<IndexItem> {
    captions
        .iter()
        .enumerate()
        .map(|(i, c)| IndexItem {
            id: format!("item{i}"),
            caption: c.to_string(),
            media: Some(format!("clips/{i}.gif")),
            labels: serde_json::json!({ "n": i }),
        })
        .collect()
}

fn random_rows(rng: &mut impl Rng, n: usize, d: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| (0..d).map(|_| rng.random_range(-1f32..1.0)).collect())
        .collect()
}

fn tensor(rows: &[Vec<f32>]) -> Tensor {
    let d = rows[0].len();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (rows.len(), d), &Device::Cpu).unwrap()
}

fn cos(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b)).max(1e-300)
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(32))]
    /// With self-exclusion and dedup, the hits are exactly what a brute-force walk of the
    /// corpus in true-cosine order keeps: never the query's own item, never one of its
    /// near-duplicates, never two near-duplicates, and as many as the rules allow.
    #[test]
    fn search_with_exclusion_and_dedup_matches_brute_force(
        n in 2usize..50, d in 2usize..8, k in 1usize..6, seed in any::<u64>(),
        thr in 0.6f32..0.99, dups in 0usize..6,
    ) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut rows = random_rows(&mut rng, n, d);
        // plant near-duplicates: copies with tiny noise
        for i in 0..dups.min(n / 2) {
            let src = rows[i].clone();
            rows[n - 1 - i] = src.iter().map(|v| v + rng.random_range(-1e-3f32..1e-3)).collect();
        }
        let caps: Vec<String> = (0..n).map(|i| format!("caption {i}")).collect();
        let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
        let mut index = RetrievalIndex::new(items(&caps)).unwrap();
        let model = EmbeddingModel::new("rand", d);
        index.add_space("img", Modality::Image, model.clone(), &tensor(&rows)).unwrap();
        let nq = 3.min(n);
        let own: Vec<usize> = (0..nq).collect();
        let queries = tensor(&rows[..nq]);
        let opts = SearchOptions {
            k,
            exclude_items: Some(own.clone()),
            dedup: Some(Dedup { space: "img".into(), threshold: thr }),
        };
        let hits = index
            .search(Query::Embeddings { space: "img", model: &model, queries: &queries }, &opts)
            .unwrap();
        for (q, h) in hits.iter().enumerate() {
            // brute force: rows by true cosine to the query (ties: smaller index)
            let mut order: Vec<usize> = (0..n).collect();
            let s: Vec<f64> = rows.iter().map(|r| cos(&rows[q], r)).collect();
            order.sort_by(|&a, &b| s[b].partial_cmp(&s[a]).unwrap().then(a.cmp(&b)));
            let mut kept: Vec<usize> = Vec::new();
            for &r in &order {
                if kept.len() == k {
                    break;
                }
                if r == own[q] || cos(&rows[own[q]], &rows[r]) >= thr as f64 {
                    continue;
                }
                if kept.iter().any(|&c| cos(&rows[c], &rows[r]) >= thr as f64) {
                    continue;
                }
                kept.push(r);
            }
            let got: Vec<usize> = h.iter().map(|x| x.item).collect();
            // near-ties in f32 vs f64 could swap neighbours: compare scores, then sets
            prop_assert_eq!(got.len(), kept.len(), "query {}: {:?} vs {:?}", q, got, kept);
            for (g, w) in got.iter().zip(&kept) {
                prop_assert!((s[*g] - s[*w]).abs() < 1e-5, "query {}: {:?} vs {:?}", q, got, kept);
            }
            for x in h {
                prop_assert!(x.item != own[q]);
                prop_assert!((x.score as f64 - s[x.item]).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn self_exclusion_removes_the_clip_and_its_duplicates() {
    let rows = vec![
        vec![1.0, 0.0, 0.0],
        vec![0.999, 0.02, 0.0], // near-duplicate of 0
        vec![0.8, 0.6, 0.0],
        vec![0.0, 1.0, 0.0],
        vec![0.81, 0.59, 0.01], // near-duplicate of 2
    ];
    let mut index = RetrievalIndex::new(items(&["a", "b", "c", "d", "e"])).unwrap();
    let m = EmbeddingModel::new("m", 3);
    index
        .add_space("img", Modality::Image, m.clone(), &tensor(&rows))
        .unwrap();
    let q = tensor(&rows[..1]);
    let search = |exclude: Option<Vec<usize>>, dedup: bool| {
        index
            .search(
                Query::Embeddings {
                    space: "img",
                    model: &m,
                    queries: &q,
                },
                &SearchOptions {
                    k: 3,
                    exclude_items: exclude,
                    dedup: dedup.then(|| Dedup {
                        space: "img".into(),
                        threshold: 0.99,
                    }),
                },
            )
            .unwrap()[0]
            .iter()
            .map(|h| h.item)
            .collect::<Vec<_>>()
    };
    assert_eq!(search(None, false), vec![0, 1, 4]);
    assert_eq!(search(Some(vec![0]), false), vec![1, 4, 2]);
    // the clip, its near-duplicate, and one of the pair (2, 4)
    assert_eq!(search(Some(vec![0]), true), vec![4, 3]);
    assert_eq!(search(None, true), vec![0, 4, 3]);
    // BM25 with exclusion
    let bm = index
        .search(
            Query::Bm25(&["a b"]),
            &SearchOptions {
                k: 3,
                exclude_items: Some(vec![0]),
                dedup: None,
            },
        )
        .unwrap();
    assert_eq!(bm[0].iter().map(|h| h.item).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn save_load_round_trip_and_model_checks() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let caps = [
        "a red circle moving left",
        "a blue triangle moving up",
        "a blue square",
    ];
    let mut index = RetrievalIndex::new(items(&caps)).unwrap();
    let text = EmbeddingModel::new("all-minilm-l6-v2", 4);
    let image = EmbeddingModel::new("clip-vit-tiny", 6);
    index
        .add_space(
            "text",
            Modality::Text,
            text.clone(),
            &tensor(&random_rows(&mut rng, 3, 4)),
        )
        .unwrap();
    index
        .add_space(
            "image",
            Modality::Image,
            image.clone(),
            &tensor(&random_rows(&mut rng, 3, 6)),
        )
        .unwrap();
    index.save(dir.path()).unwrap();
    let back = RetrievalIndex::load(dir.path()).unwrap();
    assert_eq!(back.items(), index.items());
    assert_eq!(back.spaces().len(), 2);
    let q = tensor(&random_rows(&mut rng, 2, 4));
    let opts = SearchOptions {
        k: 2,
        ..SearchOptions::default()
    };
    let a = index
        .search(
            Query::Embeddings {
                space: "text",
                model: &text,
                queries: &q,
            },
            &opts,
        )
        .unwrap();
    let b = back
        .search(
            Query::Embeddings {
                space: "text",
                model: &text,
                queries: &q,
            },
            &opts,
        )
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(
        back.media_path(dir.path(), 1).unwrap(),
        dir.path().join("clips/1.gif")
    );
    // another model id, or another width, is a typed error
    let is_model_err = |r: vidgen_video_core::Result<Vec<Vec<vidgen_adapters::retrieval::Hit>>>| matches!(r, Err(Error::InvalidArgument { ref name, .. }) if name == "embedding_model");
    let other_id = EmbeddingModel::new("clip-vit-base-patch32", 4);
    assert!(is_model_err(back.search(
        Query::Embeddings {
            space: "text",
            model: &other_id,
            queries: &q
        },
        &opts
    )));
    let other_dim = EmbeddingModel::new("all-minilm-l6-v2", 6);
    let q6 = tensor(&random_rows(&mut rng, 1, 6));
    assert!(is_model_err(back.search(
        Query::Embeddings {
            space: "text",
            model: &other_dim,
            queries: &q6
        },
        &opts
    )));
    assert!(back.check_model("image", &image).is_ok());
    // the right model but the wrong query width
    assert!(matches!(
        back.search(
            Query::Embeddings {
                space: "text",
                model: &text,
                queries: &q6
            },
            &opts
        ),
        Err(Error::ShapeMismatch { .. })
    ));
    // unknown space, bad exclusion list
    assert!(back
        .search(
            Query::Embeddings {
                space: "audio",
                model: &text,
                queries: &q
            },
            &opts
        )
        .is_err());
    assert!(back
        .search(
            Query::Bm25(&["blue"]),
            &SearchOptions {
                k: 1,
                exclude_items: Some(vec![0, 1]),
                dedup: None
            }
        )
        .is_err());
}

#[test]
fn bad_folders_and_inputs_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    assert!(matches!(RetrievalIndex::load(p), Err(Error::Io { .. })));
    std::fs::write(p.join(MANIFEST_FILE), b"{ not json").unwrap();
    assert!(matches!(
        RetrievalIndex::load(p),
        Err(Error::Malformed { .. })
    ));
    std::fs::write(
        p.join(MANIFEST_FILE),
        br#"{"format": "something-else", "version": 1, "items": []}"#,
    )
    .unwrap();
    assert!(matches!(
        RetrievalIndex::load(p),
        Err(Error::Malformed { .. })
    ));
    // a space declared without its tensor, or with another width
    let mut index = RetrievalIndex::new(items(&["a", "b"])).unwrap();
    let m = EmbeddingModel::new("m", 3);
    let e = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
    index
        .add_space("img", Modality::Image, m.clone(), &e)
        .unwrap();
    index.save(p).unwrap();
    let manifest = std::fs::read_to_string(p.join(MANIFEST_FILE)).unwrap();
    std::fs::write(
        p.join(MANIFEST_FILE),
        manifest.replace("\"dim\": 3", "\"dim\": 5"),
    )
    .unwrap();
    assert!(matches!(
        RetrievalIndex::load(p),
        Err(Error::Malformed { .. })
    ));
    std::fs::write(p.join(MANIFEST_FILE), &manifest).unwrap();
    std::fs::write(p.join(EMBEDDINGS_FILE), b"garbage").unwrap();
    assert!(matches!(
        RetrievalIndex::load(p),
        Err(Error::Malformed { .. })
    ));
    // construction errors
    assert!(RetrievalIndex::new(vec![]).is_err());
    let mut twice = items(&["a", "b"]);
    twice[1].id = twice[0].id.clone();
    assert!(RetrievalIndex::new(twice).is_err());
    assert!(index
        .add_space("img", Modality::Image, m.clone(), &e)
        .is_err());
    assert!(index
        .add_space(
            "img2",
            Modality::Image,
            m,
            &Tensor::ones((3, 3), DType::F32, &Device::Cpu).unwrap()
        )
        .is_err());
    let nan = Tensor::new(&[[f32::NAN, 0.0, 0.0], [1.0, 0.0, 0.0]], &Device::Cpu).unwrap();
    assert!(index
        .add_space("img3", Modality::Image, EmbeddingModel::new("m", 3), &nan)
        .is_err());
}

#[test]
fn manifest_parser_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let index = RetrievalIndex::new(items(&["a red circle", "a blue square"])).unwrap();
    index.save(dir.path()).unwrap();
    let sample = std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap();
    video_testkit::assert_parser_never_panics("retrieval index manifest", &sample, |bytes| {
        let _ = RetrievalIndex::from_manifest_bytes(bytes, dir.path());
    });
}
