//! Measured proportions with their Wilson intervals, and what an `eval --out DIR` writes: one
//! GIF per generated clip and `episodes.json` describing them, so that anyone can re-score the
//! clips with their own tools.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vidgen_eval_metrics::{wilson_interval, Z95};
use vidgen_video_core::Result;
use vidgen_video_io::{Frame, Video};

use super::{mkdir, write_json};

/// `hits` out of `n`, with its 95 % Wilson interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Proportion {
    /// Successes.
    pub hits: usize,
    /// Trials.
    pub n: usize,
    /// Lower end of the 95 % Wilson interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

impl Proportion {
    /// `hits / n` with its interval (`n = 0` gives an empty `[0, 1]`).
    pub fn new(hits: usize, n: usize) -> Self {
        let (low, high) = wilson_interval(hits, n, Z95).unwrap_or((0.0, 1.0));
        Self { hits, n, low, high }
    }

    /// The rate.
    pub fn rate(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.hits as f64 / self.n as f64
        }
    }

    /// `"93.5% [89.3, 96.2]"`.
    pub fn display(&self) -> String {
        format!(
            "{:.1}% [{:.1}, {:.1}]",
            100.0 * self.rate(),
            100.0 * self.low,
            100.0 * self.high
        )
    }
}

/// One generated clip as `episodes.json` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    /// The GIF of the generated frames (relative to the output folder).
    pub file: String,
    /// The condition (`instructed`, `no-text`, …).
    pub condition: String,
    /// The instruction or prompt, `null` where none was given.
    pub instruction: Option<String>,
    /// The direction the object should move in, `[dx, dy]` (x right, y down); `[0, 0]` for
    /// "at rest"; `null` where the task fixes none.
    pub expected_direction: Option<[i32; 2]>,
    /// The object colour the task fixes, `[r, g, b]`.
    pub expected_color: Option<[u8; 3]>,
    /// The object shape the task fixes.
    pub expected_shape: Option<String>,
    /// What the evaluation's own scorer read off the clip (direction found, colour, shape,
    /// whether the episode counted as a success), for comparison with other scorers.
    pub scored: serde_json::Value,
}

/// Writes generated clips and `episodes.json` into a folder.
#[derive(Debug)]
pub struct ClipWriter {
    dir: PathBuf,
    records: Vec<EpisodeRecord>,
    fps: f64,
}

impl ClipWriter {
    /// A writer into `dir` (created).
    ///
    /// # Errors
    /// The folder cannot be created.
    pub fn new(dir: &Path, fps: f64) -> Result<Self> {
        mkdir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            records: Vec::new(),
            fps,
        })
    }

    /// Writes `frames` as `<condition>/<name>.gif` and records it.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn add(&mut self, name: &str, frames: Vec<Frame>, mut record: EpisodeRecord) -> Result<()> {
        let sub = self.dir.join(&record.condition);
        mkdir(&sub)?;
        let rel = format!("{}/{name}.gif", record.condition);
        vidgen_video_io::write_gif(self.dir.join(&rel), &Video::new(frames, self.fps)?)?;
        record.file = rel;
        self.records.push(record);
        Ok(())
    }

    /// Writes `episodes.json`; returns its path.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn finish(self) -> Result<PathBuf> {
        let p = self.dir.join("episodes.json");
        write_json(&p, &self.records)?;
        Ok(p)
    }
}

/// A plain-text table: a header row, then rows, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i].saturating_sub(c.chars().count());
            s.push(' ');
            s.push_str(c);
            s.push_str(&" ".repeat(pad));
            s.push_str(" |");
        }
        s.pop();
        s.trim_end().to_string()
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    out.push('\n');
    out.push_str(&line(w.iter().map(|&k| "-".repeat(k)).collect()));
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn proportions_and_tables() {
        let p = Proportion::new(180, 200);
        assert!((p.rate() - 0.9).abs() < 1e-12);
        assert!(p.low < 0.9 && p.high > 0.9 && p.low > 0.84 && p.high < 0.94);
        assert_eq!(Proportion::new(0, 0).display(), "0.0% [0.0, 100.0]");
        let t = table(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t.lines().count(), 3);
        assert!(t.lines().all(|l| l.contains('|')));
    }

    #[test]
    fn writer_writes_gifs_and_episodes() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ClipWriter::new(dir.path(), 4.0).unwrap();
        let f = Frame::filled(8, 8, [10, 20, 30]).unwrap();
        let rec = EpisodeRecord {
            file: String::new(),
            condition: "instructed".into(),
            instruction: Some("move left".into()),
            expected_direction: Some([-1, 0]),
            expected_color: Some([230, 40, 40]),
            expected_shape: Some("circle".into()),
            scored: serde_json::json!({"direction": [-1, 0]}),
        };
        w.add("0000", vec![f.clone(), f], rec).unwrap();
        let p = w.finish().unwrap();
        let recs: Vec<EpisodeRecord> = crate::minis::read_json(&p).unwrap();
        assert_eq!(recs[0].file, "instructed/0000.gif");
        assert_eq!(
            vidgen_video_io::read_gif(dir.path().join(&recs[0].file))
                .unwrap()
                .len(),
            2
        );
    }
}
