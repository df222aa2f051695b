#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The weight-file and statistics readers on hostile input: a few hundred bytes that describe
//! gigabytes (pickle "doubling", a zip entry that claims or inflates to more than it may), deep
//! nesting, and arbitrary bytes for the pickle, zip (TorchScript) and npy / npz readers. Every
//! case is a typed error naming the file, fast, and nothing panics.

use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use vidgen_eval_metrics::weights::read_weights;
use vidgen_eval_metrics::{npy::parse_npy, GaussianStats};
use vidgen_video_core::Error;

/// `[]`, then 27 times `GET 0, GET 0, TUPLE2, PUT 0`: 199 bytes describing 2^27 nodes.
fn doubling_pickle() -> Vec<u8> {
    let mut d = b"\x80\x04]\x94".to_vec();
    for _ in 0..27 {
        d.extend_from_slice(b"h\x00h\x00\x86q\x00");
    }
    d.push(b'.');
    d
}

fn assert_malformed_naming(e: &Error, path: &Path) {
    match e {
        Error::Malformed { path: p, .. } => assert_eq!(p, path, "{e}"),
        other => panic!("expected Malformed naming {}, got {other}", path.display()),
    }
}

#[test]
fn doubling_and_deep_pickles_are_malformed_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("doubling.ckpt");
    std::fs::write(&p, doubling_pickle()).unwrap();
    let t = std::time::Instant::now();
    let e = read_weights(&p).unwrap_err();
    assert_malformed_naming(&e, &p);
    assert!(e.to_string().contains("expands"), "{e}");
    println!("doubling pickle rejected in {:?}: {e}", t.elapsed());
    let p = dir.path().join("deep.ckpt");
    let mut d = b"\x80\x04N".to_vec();
    d.extend(std::iter::repeat_n(0x85u8, 200_000));
    d.push(b'.');
    std::fs::write(&p, d).unwrap();
    let e = read_weights(&p).unwrap_err();
    assert_malformed_naming(&e, &p);
}

/// A pickle of `{'w': torch._utils._rebuild_tensor_v2(<storage '0'>, 0, (2, 2), (2, 1))}`, as
/// a TorchScript / torch.save archive's `data.pkl` has it.
fn torch_pickle(numel: u8) -> Vec<u8> {
    let mut d = b"\x80\x02}(X\x01\x00\x00\x00w".to_vec();
    d.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    d.extend_from_slice(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n");
    d.extend_from_slice(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK");
    d.push(numel);
    d.extend_from_slice(b"tQK\x00K\x02K\x02\x86K\x02K\x01\x86tRu.");
    d
}

/// A zip with `arch/data.pkl` and `arch/data/0`, entries stored or deflated.
fn torch_zip(pkl: &[u8], storage: &[u8], deflate: bool) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let method = if deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let o = zip::write::SimpleFileOptions::default().compression_method(method);
        z.start_file("arch/data.pkl", o).unwrap();
        z.write_all(pkl).unwrap();
        z.start_file("arch/data/0", o).unwrap();
        z.write_all(storage).unwrap();
        z.finish().unwrap();
    }
    buf.into_inner()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn small_torch_archive_reads_and_lies_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.pt");
    std::fs::write(
        &p,
        torch_zip(&torch_pickle(4), &f32_bytes(&[1.0, 2.0, 3.0, 4.0]), true),
    )
    .unwrap();
    let m = read_weights(&p).unwrap();
    assert_eq!(
        m["w"].to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 2.0], vec![3.0, 4.0]]
    );
    // A storage shorter than the tensor.
    std::fs::write(
        &p,
        torch_zip(&torch_pickle(4), &f32_bytes(&[1.0, 2.0]), false),
    )
    .unwrap();
    assert_malformed_naming(&read_weights(&p).unwrap_err(), &p);
    // A storage that inflates past what the file may produce (a zip bomb: 100 MiB of zeros
    // deflate to ~100 kB; the budget is 4x the file + 64 MiB): refused before reading.
    let bomb = vec![0u8; 100 << 20];
    std::fs::write(&p, torch_zip(&torch_pickle(4), &bomb, true)).unwrap();
    let t = std::time::Instant::now();
    let e = read_weights(&p).unwrap_err();
    assert_malformed_naming(&e, &p);
    assert!(e.to_string().contains("declares"), "{e}");
    println!("zip bomb rejected in {:?}: {e}", t.elapsed());
    // The doubling pickle as data.pkl.
    std::fs::write(&p, torch_zip(&doubling_pickle(), b"", true)).unwrap();
    assert_malformed_naming(&read_weights(&p).unwrap_err(), &p);
}

/// Sets the uncompressed size of every central-directory entry of a zip to `size`.
fn patch_declared_sizes(z: &mut [u8], size: u32) {
    let mut i = 0;
    while i + 28 <= z.len() {
        if z[i..i + 4] == *b"PK\x01\x02" {
            z[i + 24..i + 28].copy_from_slice(&size.to_le_bytes());
        }
        i += 1;
    }
}

#[test]
fn npz_lies_and_cuts_are_malformed_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stats.npz");
    let mu = vidgen_eval_metrics::npy::write_npy(&[0.0, 1.0], &[2]).unwrap();
    let sigma = vidgen_eval_metrics::npy::write_npy(&[1.0, 0.0, 0.0, 1.0], &[2, 2]).unwrap();
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let o = zip::write::SimpleFileOptions::default();
        z.start_file("mu.npy", o).unwrap();
        z.write_all(&mu).unwrap();
        z.start_file("sigma.npy", o).unwrap();
        z.write_all(&sigma).unwrap();
        z.finish().unwrap();
    }
    let bytes = buf.into_inner();
    std::fs::write(&p, &bytes).unwrap();
    assert_eq!(GaussianStats::load_npz(&p).unwrap().dim(), 2);
    for cut in [10, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert_malformed_naming(&GaussianStats::load_npz(&p).unwrap_err(), &p);
    }
    // Entries that declare 4 GB: refused before any allocation of that size.
    let mut lying = bytes.clone();
    patch_declared_sizes(&mut lying, u32::MAX - 1);
    std::fs::write(&p, &lying).unwrap();
    assert_malformed_naming(&GaussianStats::load_npz(&p).unwrap_err(), &p);
}

proptest! {
    #![proptest_config(video_testkit::proptest_config(256))]

    /// Arbitrary bytes behind each magic the reader dispatches on.
    #[test]
    fn read_weights_never_panics(
        magic in 0usize..4,
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.bin");
        let mut b: Vec<u8> = match magic {
            0 => b"PK\x03\x04".to_vec(),
            1 => b"\x80\x04".to_vec(),
            2 => (body.len() as u64).to_le_bytes().to_vec(),
            _ => Vec::new(),
        };
        b.extend_from_slice(&body);
        std::fs::write(&p, &b).unwrap();
        let _ = read_weights(&p);
    }

    /// A valid small archive with a few bytes changed or cut.
    #[test]
    fn torch_archive_mutations_never_panic(
        deflate in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut b = torch_zip(&torch_pickle(4), &f32_bytes(&[1.0, 2.0, 3.0, 4.0]), deflate);
        for (i, v) in edits {
            let i = i.index(b.len());
            b[i] = v;
        }
        if do_cut {
            b.truncate(cut.index(b.len()));
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.pt");
        std::fs::write(&p, &b).unwrap();
        if let Err(e) = read_weights(&p) {
            prop_assert!(matches!(e, Error::Malformed { .. } | Error::Io { .. } | Error::DType { .. } | Error::Candle(_)), "{e}");
        }
    }

    /// npy headers and bodies with a few bytes changed, and npz archives likewise.
    #[test]
    fn npy_and_npz_mutations_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut b = vidgen_eval_metrics::npy::write_npy(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        for (i, v) in &edits {
            let i = i.index(b.len());
            b[i] = *v;
        }
        let _ = parse_npy(&b);
        let _ = parse_npy(&b[..cut.index(b.len())]);
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut buf);
            let o = zip::write::SimpleFileOptions::default();
            z.start_file("mu.npy", o).unwrap();
            z.write_all(&b).unwrap();
            z.start_file("sigma.npy", o).unwrap();
            z.write_all(&b).unwrap();
            z.finish().unwrap();
        }
        let mut z = buf.into_inner();
        for (i, v) in edits {
            let i = i.index(z.len());
            z[i] = v;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.npz");
        std::fs::write(&p, &z).unwrap();
        let _ = GaussianStats::load_npz(&p);
    }
}
