//! [`MemorySource`]: videos held in memory, e.g. the synthetic moving-shapes world.

use vidgen_video_core::{Error, Result};
use vidgen_video_io::synth::{seeded_rng, Clip, MovingShapes, WorldConfig};
use vidgen_video_io::Video;

use super::ClipSource;

/// Videos (with captions and optional source videos) held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    items: Vec<(Video, Option<Video>, String)>,
}

impl MemorySource {
    /// From `(video, caption)` pairs.
    pub fn new(items: Vec<(Video, String)>) -> Self {
        Self {
            items: items.into_iter().map(|(v, c)| (v, None, c)).collect(),
        }
    }

    /// From `(target, source, instruction)` editing triples.
    ///
    /// # Errors
    /// A source with fewer frames or another size than its target.
    pub fn pairs(items: Vec<(Video, Video, String)>) -> Result<Self> {
        for (i, (t, s, _)) in items.iter().enumerate() {
            if s.len() < t.len() || (s.width(), s.height()) != (t.width(), t.height()) {
                return Err(Error::invalid(
                    format!("pair {i}"),
                    format!(
                        "source {}x{}x{} does not cover target {}x{}x{}",
                        s.len(),
                        s.width(),
                        s.height(),
                        t.len(),
                        t.width(),
                        t.height()
                    ),
                ));
            }
        }
        Ok(Self {
            items: items.into_iter().map(|(t, s, c)| (t, Some(s), c)).collect(),
        })
    }

    /// `n` clips of the synthetic moving-shapes world (clip `i` from
    /// `seeded_rng(seed·1_000_003 + i)`), captioned `"<colour> <shape> <action>"`, e.g.
    /// `"red circle translate up left"`.
    ///
    /// # Errors
    /// An invalid world config.
    pub fn synthetic(world: &WorldConfig, n: usize, seed: u64) -> Result<Self> {
        let w = MovingShapes::new(world.clone())?;
        let mut items = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let clip = w.clip(&mut seeded_rng(
                seed.wrapping_mul(1_000_003).wrapping_add(i),
            ))?;
            let cap = synthetic_caption(&clip);
            items.push((clip.video, None, cap));
        }
        Ok(Self { items })
    }

    /// Adds an item.
    pub fn push(&mut self, video: Video, caption: impl Into<String>) {
        self.items.push((video, None, caption.into()));
    }
}

/// `"<colour> <shape> <action words>"` for a synthetic clip.
pub fn synthetic_caption(clip: &Clip) -> String {
    format!(
        "{} {} {}",
        clip.label.appearance.colour.name(),
        clip.label.appearance.shape.name(),
        clip.label.action.name().replace('_', " ")
    )
}

/// Frames `start, start + stride, …` of `v`.
pub(crate) fn cut(
    v: &Video,
    start: usize,
    count: usize,
    stride: usize,
    name: &str,
) -> Result<Video> {
    let need = count.saturating_sub(1) * stride + 1;
    if start + need > v.len() {
        return Err(Error::invalid(
            "clip",
            format!(
                "{name}: a clip from frame {start} ({count} frames at stride {stride}) needs {} frames, it has {}",
                start + need,
                v.len()
            ),
        ));
    }
    let frames = (0..count)
        .map(|k| v.frames()[start + k * stride].clone())
        .collect();
    Video::new(frames, v.fps())
}

impl ClipSource for MemorySource {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn name(&self, item: usize) -> String {
        format!("memory item {item}")
    }

    fn frame_count(&self, item: usize) -> Result<usize> {
        self.items
            .get(item)
            .map(|(v, _, _)| v.len())
            .ok_or_else(|| Error::invalid("item", format!("{item} out of range")))
    }

    fn read(
        &self,
        item: usize,
        start: usize,
        count: usize,
        stride: usize,
    ) -> Result<(Video, Option<Video>)> {
        let (v, s, _) = self
            .items
            .get(item)
            .ok_or_else(|| Error::invalid("item", format!("{item} out of range")))?;
        let name = self.name(item);
        Ok((
            cut(v, start, count, stride, &name)?,
            s.as_ref()
                .map(|s| cut(s, start, count, stride, &name))
                .transpose()?,
        ))
    }

    fn caption(&self, item: usize) -> String {
        self.items
            .get(item)
            .map(|(_, _, c)| c.clone())
            .unwrap_or_default()
    }

    fn has_source(&self, item: usize) -> bool {
        self.items.get(item).is_some_and(|(_, s, _)| s.is_some())
    }
}
