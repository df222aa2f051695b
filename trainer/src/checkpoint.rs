//! Checkpoints: everything a run needs to continue bit for bit.
//!
//! A checkpoint directory holds
//! - `trainable.safetensors`: the trained variables under the keys the model asked for (the
//!   model's own checkpoint keys, with the prefix of their part, e.g. `adapters.`);
//! - `optimizer.safetensors`: AdamW's moments (`exp_avg.<name>`, `exp_avg_sq.<name>`) and step;
//! - `ema.safetensors` (when the run keeps an EMA): the averaged variables, same keys;
//! - `state.json`: the step, the data position (epoch, index), the trainer's ChaCha8 generator
//!   (seed, stream, word position) and the EMA's update count.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};

use crate::data::DataPosition;

/// The file names inside a checkpoint directory.
pub const TRAINABLE_FILE: &str = "trainable.safetensors";
/// AdamW state.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// EMA weights.
pub const EMA_FILE: &str = "ema.safetensors";
/// Counters, data position, generator.
pub const STATE_FILE: &str = "state.json";

/// A ChaCha8 generator's exact position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte seed, hex.
    pub seed: String,
    /// The stream.
    pub stream: u64,
    /// The word position (a u128, decimal).
    pub word_pos: String,
}

impl RngState {
    /// Captures `rng`.
    pub fn of(rng: &ChaCha8Rng) -> Self {
        Self {
            seed: rng.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// The generator at this position.
    ///
    /// # Errors
    /// A malformed seed or word position ([`Error::Malformed`] naming `file`).
    pub fn restore(&self, file: &Path) -> Result<ChaCha8Rng> {
        use rand::SeedableRng;
        let bad = |r: &str| Error::Malformed {
            path: file.to_path_buf(),
            reason: format!("rng: {r}"),
        };
        if self.seed.len() != 64 {
            return Err(bad("seed must be 64 hex digits"));
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&self.seed[2 * i..2 * i + 2], 16)
                .map_err(|_| bad("seed is not hex"))?;
        }
        let pos: u128 = self
            .word_pos
            .parse()
            .map_err(|_| bad("word_pos is not an integer"))?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(pos);
        Ok(rng)
    }
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// Format version (1).
    pub format: u32,
    /// Optimiser steps completed.
    pub step: usize,
    /// The next sample.
    pub data: DataPosition,
    /// The trainer's generator.
    pub rng: RngState,
    /// EMA updates made (0 without EMA).
    pub ema_updates: u64,
}

/// What a checkpoint holds, in memory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Counters and positions.
    pub state: RunState,
    /// Trained variables.
    pub trainable: BTreeMap<String, Tensor>,
    /// AdamW state tensors.
    pub optimizer: BTreeMap<String, Tensor>,
    /// EMA weights, if any.
    pub ema: Option<BTreeMap<String, Tensor>>,
}

/// Writes a safetensors file from a name → tensor map (tensors moved to the CPU first).
///
/// # Errors
/// I/O.
pub fn save_tensors(map: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    let mut m = HashMap::with_capacity(map.len());
    for (k, t) in map {
        m.insert(k.clone(), t.to_device(&Device::Cpu)?.contiguous()?);
    }
    candle_core::safetensors::save(&m, path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Reads a safetensors file into a sorted map (on the CPU).
///
/// # Errors
/// [`Error::Io`] / [`Error::Malformed`] naming the file.
pub fn load_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    if !path.is_file() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let m = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(m.into_iter().collect())
}

impl Checkpoint {
    /// Writes the checkpoint into `dir` (created), through a temporary sibling renamed at the
    /// end, so an interrupted save never leaves a half-written checkpoint under `dir`.
    ///
    /// # Errors
    /// I/O.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.with_extension("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        save_tensors(&self.trainable, &tmp.join(TRAINABLE_FILE))?;
        save_tensors(&self.optimizer, &tmp.join(OPTIMIZER_FILE))?;
        if let Some(e) = &self.ema {
            save_tensors(e, &tmp.join(EMA_FILE))?;
        }
        let json = serde_json::to_string_pretty(&self.state)
            .map_err(|e| Error::invalid("state", e.to_string()))?;
        std::fs::write(tmp.join(STATE_FILE), json).map_err(|e| io(&tmp, e))?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| io(dir, e))?;
        Ok(())
    }

    /// Reads a checkpoint directory.
    ///
    /// # Errors
    /// Missing files ([`Error::Io`]); malformed ones ([`Error::Malformed`]), each naming the
    /// file.
    pub fn load(dir: &Path) -> Result<Self> {
        let sp = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&sp).map_err(|e| io(&sp, e))?;
        let state: RunState = serde_json::from_str(&text).map_err(|e| Error::Malformed {
            path: sp.clone(),
            reason: e.to_string(),
        })?;
        if state.format != 1 {
            return Err(Error::Malformed {
                path: sp,
                reason: format!("format {} (this build reads 1)", state.format),
            });
        }
        let ema_path = dir.join(EMA_FILE);
        Ok(Self {
            state,
            trainable: load_tensors(&dir.join(TRAINABLE_FILE))?,
            optimizer: load_tensors(&dir.join(OPTIMIZER_FILE))?,
            ema: if ema_path.is_file() {
                Some(load_tensors(&ema_path)?)
            } else {
                None
            },
        })
    }
}

fn io(p: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: p.to_path_buf(),
        source: e,
    }
}

/// `<out>/checkpoints/step-000123`.
pub fn checkpoint_dir(out: &Path, step: usize) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step:06}"))
}

/// The checkpoint with the highest step under `<out>/checkpoints/`, if any.
///
/// # Errors
/// An unreadable folder.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>> {
    let d = out.join("checkpoints");
    if !d.is_dir() {
        return Ok(None);
    }
    let mut best: Option<(usize, PathBuf)> = None;
    for e in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
        let p = e.map_err(|e| io(&d, e))?.path();
        let step = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(s) = step {
            if p.join(STATE_FILE).is_file() && best.as_ref().is_none_or(|(b, _)| s > *b) {
                best = Some((s, p));
            }
        }
    }
    Ok(best.map(|(_, p)| p))
}
