//! What the shipped diffusion miniatures share: reading the object back out of generated
//! frames ([`score`]), measured proportions with Wilson intervals and the `episodes.json` /
//! GIF output of their evaluations ([`report`]), the synthetic-world sprites their episodes are
//! drawn from ([`sprites`]), and the small training loop helpers ([`train`]).

pub mod report;
pub mod score;
pub mod sprites;
pub mod train;

use std::path::{Path, PathBuf};

use vidgen_video_core::Error;

/// An I/O error naming `path`.
pub fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `examples/assets/<name>` in this source tree.
pub fn asset_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}

/// Writes `value` as pretty JSON to `path`.
///
/// # Errors
/// I/O errors naming the file.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> vidgen_video_core::Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| io_err(path, e))
}

/// Reads JSON from `path`.
///
/// # Errors
/// I/O or parse errors naming the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> vidgen_video_core::Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Creates `dir` and its parents.
///
/// # Errors
/// I/O errors naming the folder.
pub fn mkdir(dir: &Path) -> vidgen_video_core::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))
}

/// The components of a loaded pipeline whose weights did not load strictly (a missing,
/// mismatched or unused key), each described with its keys; empty when every one did.
pub fn unclean_loads(report: &[vidgen_pipelines::ComponentReport]) -> Vec<String> {
    report
        .iter()
        .filter_map(|c| {
            let r = c.load.as_ref()?;
            (!(r.missing.is_empty() && r.mismatched.is_empty() && r.unused.is_empty())).then(|| {
                format!(
                    "{}: missing {:?}, mismatched {:?}, unused {:?}",
                    c.name, r.missing, r.mismatched, r.unused
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    /// Bytes of every file under `dir`.
    fn folder_bytes(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let md = e.metadata().unwrap();
                if md.is_dir() {
                    folder_bytes(&e.path())
                } else {
                    md.len()
                }
            })
            .sum()
    }

    /// The issues cap each shipped miniature at 10 MB (10⁶ bytes each): a retrained, wider
    /// model must not grow a folder past it unnoticed.
    #[test]
    fn every_shipped_miniature_is_at_most_10_mb() {
        let root = super::asset_dir("");
        let mut seen = 0;
        for e in std::fs::read_dir(&root).unwrap() {
            let e = e.unwrap();
            if !e.metadata().unwrap().is_dir() {
                continue;
            }
            let bytes = folder_bytes(&e.path());
            println!("{}: {bytes} bytes", e.file_name().to_string_lossy());
            assert!(
                bytes <= 10_000_000,
                "{} holds {bytes} bytes, over 10 MB",
                e.path().display()
            );
            seen += 1;
        }
        assert!(seen >= 7, "only {seen} miniatures under {}", root.display());
    }
}
