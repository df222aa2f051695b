//! [`FolderSource`]: a folder of video files, frame folders and GIFs, with captions.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;
use vidgen_video_core::{Error, Result};
use vidgen_video_io::{natural_path_cmp, read_gif, read_png, sorted_frame_paths, Video};

use super::memory::cut;
use super::ClipSource;

/// The manifest file a dataset folder may hold: one JSON object per line.
pub const MANIFEST_NAME: &str = "manifest.jsonl";

/// File extensions read as video files (through FFmpeg; case ignored).
pub const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "flv", "wmv", "ogv",
];

#[derive(Debug, Clone)]
enum Media {
    Video(PathBuf),
    Frames(PathBuf, Vec<PathBuf>),
    Gif(PathBuf),
}

impl Media {
    fn path(&self) -> &Path {
        match self {
            Media::Video(p) | Media::Gif(p) | Media::Frames(p, _) => p,
        }
    }
}

#[derive(Debug)]
struct Item {
    media: Media,
    source: Option<Media>,
    caption: String,
    frames: Mutex<Option<usize>>,
}

/// A dataset folder.
///
/// Items, when the folder has no [`MANIFEST_NAME`]: every video file ([`VIDEO_EXTENSIONS`];
/// needs the `ffmpeg` feature), every `.gif`, and every sub-folder holding `.png` frames (read
/// in natural order: `2.png` before `10.png`), in natural order of their names; a folder that
/// itself holds only PNG frames is one item. Each item's caption is the text of a sidecar file:
/// `clip.mp4` → `clip.txt`; a frame folder `clip/` → `clip.txt` beside it or `caption.txt`
/// inside it (empty when there is none).
///
/// With a manifest, the items are its lines, in order, each a JSON object with the media path
/// (`"video"`, `"path"` or `"file"`, relative to the folder), optionally the caption
/// (`"caption"`, `"text"`, `"prompt"` or `"instruction"`) and a source video for editing pairs
/// (`"source"`, read at the same frames as the target):
///
/// ```text
/// {"video": "edits/0001_out.mp4", "source": "edits/0001_in.mp4", "instruction": "make it red"}
/// {"video": "walk/", "caption": "a person walks"}
/// ```
#[derive(Debug)]
pub struct FolderSource {
    root: PathBuf,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct ManifestLine {
    #[serde(alias = "path", alias = "file")]
    video: String,
    #[serde(default, alias = "text", alias = "prompt", alias = "instruction")]
    caption: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn has_ext(p: &Path, exts: &[&str]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn read_text(p: &Path) -> Result<Option<String>> {
    if !p.is_file() {
        return Ok(None);
    }
    let s = std::fs::read_to_string(p).map_err(|e| io_err(p, e))?;
    Ok(Some(s.trim().to_string()))
}

/// Classifies `p` as a media item, or `None` when it is not one.
fn media_of(p: &Path) -> Result<Option<Media>> {
    if p.is_dir() {
        let frames = sorted_frame_paths(p, &["png"])?;
        return Ok((!frames.is_empty()).then(|| Media::Frames(p.to_path_buf(), frames)));
    }
    if has_ext(p, &["gif"]) {
        return Ok(Some(Media::Gif(p.to_path_buf())));
    }
    if has_ext(p, VIDEO_EXTENSIONS) {
        if !vidgen_video_io::FFMPEG_ENABLED {
            return Err(Error::FeatureDisabled {
                what: format!("decoding the video file {}", p.display()),
                feature: "ffmpeg".into(),
                krate: "vidgen-trainer".into(),
            });
        }
        return Ok(Some(Media::Video(p.to_path_buf())));
    }
    Ok(None)
}

fn sidecar_caption(m: &Media) -> Result<String> {
    let p = m.path();
    if let Some(c) = read_text(&p.with_extension("txt"))? {
        return Ok(c);
    }
    if let Media::Frames(dir, _) = m {
        // `clip/` → `clip.txt` beside it (with_extension above handles `clip` without a dot).
        for name in ["caption.txt", "prompt.txt", "instruction.txt"] {
            if let Some(c) = read_text(&dir.join(name))? {
                return Ok(c);
            }
        }
    }
    Ok(String::new())
}

impl FolderSource {
    /// Scans `root` (see the type's docs).
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable folder; [`Error::Malformed`] for a bad manifest line
    /// (with its number); [`Error::FeatureDisabled`] for a video file without the `ffmpeg`
    /// feature; [`Error::InvalidArgument`] for a folder without any item.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(io_err(
                &root,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a folder"),
            ));
        }
        let manifest = root.join(MANIFEST_NAME);
        let items = if manifest.is_file() {
            Self::from_manifest(&root, &manifest)?
        } else {
            Self::scan(&root)?
        };
        if items.is_empty() {
            return Err(Error::invalid(
                "data",
                format!(
                    "{} holds no video file, GIF, frame folder or {MANIFEST_NAME}",
                    root.display()
                ),
            ));
        }
        Ok(Self { root, items })
    }

    fn from_manifest(root: &Path, manifest: &Path) -> Result<Vec<Item>> {
        let text = std::fs::read_to_string(manifest).map_err(|e| io_err(manifest, e))?;
        let mut items = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: String| Error::Malformed {
                path: manifest.to_path_buf(),
                reason: format!("line {}: {reason}", n + 1),
            };
            let l: ManifestLine = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            let media = |rel: &str| -> Result<Media> {
                let p = root.join(rel);
                if !p.exists() {
                    return Err(bad(format!("{} does not exist", p.display())));
                }
                media_of(&p)?.ok_or_else(|| {
                    bad(format!(
                        "{} is not a video file, GIF or folder of PNG frames",
                        p.display()
                    ))
                })
            };
            let m = media(&l.video)?;
            let source = l.source.as_deref().map(media).transpose()?;
            let caption = match l.caption {
                Some(c) => c,
                None => sidecar_caption(&m)?,
            };
            items.push(Item {
                media: m,
                source,
                caption,
                frames: Mutex::new(None),
            });
        }
        Ok(items)
    }

    fn scan(root: &Path) -> Result<Vec<Item>> {
        let mut paths = Vec::new();
        for e in std::fs::read_dir(root).map_err(|e| io_err(root, e))? {
            let p = e.map_err(|e| io_err(root, e))?.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !hidden {
                paths.push(p);
            }
        }
        paths.sort_by(|a, b| natural_path_cmp(a, b));
        let mut items = Vec::new();
        for p in &paths {
            if let Some(m) = media_of(p)? {
                items.push(Item {
                    caption: sidecar_caption(&m)?,
                    media: m,
                    source: None,
                    frames: Mutex::new(None),
                });
            }
        }
        if items.is_empty() {
            // The folder itself may be one clip of PNG frames.
            if let Some(m) = media_of(root)? {
                items.push(Item {
                    caption: sidecar_caption(&m)?,
                    media: m,
                    source: None,
                    frames: Mutex::new(None),
                });
            }
        }
        Ok(items)
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn item(&self, i: usize) -> Result<&Item> {
        self.items
            .get(i)
            .ok_or_else(|| Error::invalid("item", format!("{i} out of range")))
    }
}

fn count(m: &Media) -> Result<usize> {
    Ok(match m {
        Media::Frames(_, f) => f.len(),
        Media::Gif(p) => read_gif(p)?.len(),
        Media::Video(p) => {
            // The container's count when it states one (mp4's nb_frames); otherwise (an
            // estimate from the duration, or none) decode once to count exactly, so that
            // every clip the dataset asks for exists.
            let info = vidgen_video_io::probe(p)?;
            match info.frame_count {
                Some(n) if info.frame_count_is_exact => n as usize,
                _ => vidgen_video_io::count_frames(p)? as usize,
            }
        }
    })
}

/// Frames `start, start + stride, …` (`count`) of a media item.
fn read_media(m: &Media, start: usize, n: usize, stride: usize) -> Result<Video> {
    let name = m.path().display().to_string();
    match m {
        Media::Frames(_, paths) => {
            let need = n.saturating_sub(1) * stride + 1;
            if start + need > paths.len() {
                return Err(Error::invalid(
                    "clip",
                    format!(
                        "{name}: needs {} frames, it has {}",
                        start + need,
                        paths.len()
                    ),
                ));
            }
            let frames = (0..n)
                .map(|k| read_png(&paths[start + k * stride]))
                .collect::<Result<Vec<_>>>()?;
            // Frame folders carry no rate; 8 fps is the synthetic world's and a neutral default.
            Video::new(frames, 8.0)
        }
        Media::Gif(p) => cut(&read_gif(p)?, start, n, stride, &name),
        Media::Video(p) => read_video_clip(p, start, n, stride),
    }
}

/// Decodes `n` frames at `stride` from frame `start` of a video file: seeks to the start
/// (FFmpeg restarts at the keyframe before and discards the frames in between) and decodes
/// forward.
fn read_video_clip(p: &Path, start: usize, n: usize, stride: usize) -> Result<Video> {
    let need = n.saturating_sub(1) * stride + 1;
    let mut r = vidgen_video_io::VideoReader::open(p)?;
    let fps = r.info().fps;
    if start > 0 {
        // Half a frame early: the first frame at or after it is frame `start`, whatever the
        // rounding of the container's timestamps.
        r.seek(((start as f64 - 0.5) / fps).max(0.0))?;
    }
    let mut frames = Vec::with_capacity(n);
    for k in 0..need {
        match r.next_frame()? {
            Some(f) if k % stride == 0 => frames.push(f.frame),
            Some(_) => {}
            None => break,
        }
    }
    if frames.len() < n {
        return Err(Error::Malformed {
            path: p.to_path_buf(),
            reason: format!(
                "from frame {start}, decoded {} frames at stride {stride}; the clip needs {n}",
                frames.len()
            ),
        });
    }
    Video::new(frames, fps)
}

impl ClipSource for FolderSource {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn name(&self, item: usize) -> String {
        self.items
            .get(item)
            .map(|i| i.media.path().display().to_string())
            .unwrap_or_default()
    }

    fn frame_count(&self, item: usize) -> Result<usize> {
        let it = self.item(item)?;
        let mut g = it.frames.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = *g {
            return Ok(n);
        }
        let mut n = count(&it.media)?;
        if let Some(s) = &it.source {
            n = n.min(count(s)?);
        }
        *g = Some(n);
        Ok(n)
    }

    fn read(
        &self,
        item: usize,
        start: usize,
        count: usize,
        stride: usize,
    ) -> Result<(Video, Option<Video>)> {
        let it = self.item(item)?;
        let v = read_media(&it.media, start, count, stride)?;
        let s = it
            .source
            .as_ref()
            .map(|s| read_media(s, start, count, stride))
            .transpose()?;
        Ok((v, s))
    }

    fn caption(&self, item: usize) -> String {
        self.items
            .get(item)
            .map(|i| i.caption.clone())
            .unwrap_or_default()
    }

    fn has_source(&self, item: usize) -> bool {
        self.items.get(item).is_some_and(|i| i.source.is_some())
    }
}
