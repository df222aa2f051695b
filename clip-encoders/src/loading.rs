//! Finding a tower's checkpoint: a transformers folder, or the component folder of a diffusers
//! pipeline.

use std::path::{Path, PathBuf};

use vidgen_video_core::{Error, ModelDir, Result};

/// Which tower is being loaded (decides the pipeline component folders searched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tower {
    Text,
    Vision,
}

impl Tower {
    /// The component folders of a diffusers pipeline holding this tower, in search order.
    fn components(self) -> &'static [&'static str] {
        match self {
            Tower::Text => &["text_encoder"],
            Tower::Vision => &["image_encoder"],
        }
    }
}

/// The folder holding the checkpoint: `dir` itself when it has a `config.json`, else the
/// tower's component folder of a diffusers pipeline (`text_encoder/`, `image_encoder/`).
pub(crate) fn resolve(dir: &Path, tower: Tower) -> PathBuf {
    if dir.join("config.json").is_file() {
        return dir.to_path_buf();
    }
    for c in tower.components() {
        let sub = dir.join(c);
        if sub.join("config.json").is_file() {
            return sub;
        }
    }
    dir.to_path_buf()
}

/// Opens the checkpoint of `tower` found from `dir`, with the path of its `config.json`.
pub(crate) fn open_tower(dir: &Path, tower: Tower) -> Result<(ModelDir, PathBuf)> {
    let root = resolve(dir, tower);
    let cfg = root.join("config.json");
    if !cfg.is_file() {
        let also = tower
            .components()
            .iter()
            .map(|c| format!(" or {}/config.json", c))
            .collect::<String>();
        return Err(Error::Io {
            path: cfg,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no config.json{also}: not a transformers / diffusers model folder"),
            ),
        });
    }
    Ok((ModelDir::open(&root)?, cfg))
}
