//! Training data: clips sampled from video sources, resized and cropped to the model's size,
//! optionally flipped, captioned, shuffled with a seed (a new order every epoch, the same for
//! the same seed), batched, and decoded on a worker thread ahead of the model.
//!
//! - [`ClipSource`]: what a dataset reads from. [`FolderSource`] scans a folder of video files
//!   (FFmpeg feature), frame folders (PNG, natural order) and GIFs, with a caption per clip from
//!   a sidecar `.txt` or a `manifest.jsonl`; [`MemorySource`] holds videos in memory (e.g. the
//!   synthetic moving-shapes world, [`MemorySource::synthetic`]).
//! - [`ClipSpec`]: frames per clip, stride, random or first start, output size, flip
//!   probability.
//! - [`Dataset`]: a source and a spec; [`Dataset::batch_at`] makes the batch at a
//!   [`DataPosition`] deterministically (every random choice of a sample comes from a
//!   generator keyed by `(seed, epoch, position)`).
//! - [`Loader`]: runs `batch_at` on a worker thread, `prefetch` batches ahead, through a
//!   bounded channel.

mod folder;
mod memory;

pub use folder::{FolderSource, MANIFEST_NAME, VIDEO_EXTENSIONS};
pub use memory::MemorySource;

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::{videos_to_tensor, Frame, PixelRange, ResizeFilter, Video};

/// Where a dataset's items come from: a list of videos, each with a caption and optionally a
/// source video (the input of an editing pair, read at the same frames).
pub trait ClipSource: Send + Sync {
    /// Number of items.
    fn len(&self) -> usize;

    /// True when there is no item.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A name for messages (the file or folder).
    fn name(&self, item: usize) -> String;

    /// Frames in `item` (as far as it can tell without decoding everything; video files use
    /// the container's count).
    ///
    /// # Errors
    /// Unreadable media.
    fn frame_count(&self, item: usize) -> Result<usize>;

    /// Frames `start, start + stride, …` (`count` of them) of `item`, and of its source video
    /// when it has one.
    ///
    /// # Errors
    /// Unreadable media, or fewer frames than asked for.
    fn read(
        &self,
        item: usize,
        start: usize,
        count: usize,
        stride: usize,
    ) -> Result<(Video, Option<Video>)>;

    /// The caption / instruction of `item` (empty when it has none).
    fn caption(&self, item: usize) -> String;

    /// Whether `item` has a source video (editing pairs).
    fn has_source(&self, item: usize) -> bool {
        let _ = item;
        false
    }
}

/// How clips are cut from the items and shaped for the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipSpec {
    /// Frames per clip.
    pub frames: usize,
    /// Take every `stride`-th frame.
    pub stride: usize,
    /// Start at a uniformly random frame (else at the first).
    pub random_start: bool,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Probability of a horizontal flip of a clip (0 disables).
    pub flip: f64,
}

impl Default for ClipSpec {
    fn default() -> Self {
        Self {
            frames: 8,
            stride: 1,
            random_start: true,
            width: 64,
            height: 64,
            flip: 0.0,
        }
    }
}

impl ClipSpec {
    /// Frames of an item a clip spans: `(frames − 1)·stride + 1`.
    pub fn span(&self) -> usize {
        self.frames.saturating_sub(1) * self.stride + 1
    }

    /// Checks the fields.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.frames == 0 {
            return Err(Error::config("clip.frames", "must be >= 1"));
        }
        if self.stride == 0 {
            return Err(Error::config("clip.stride", "must be >= 1"));
        }
        if self.width == 0 || self.height == 0 {
            return Err(Error::config(
                "clip.width/height",
                format!("{}x{}: must be >= 1", self.width, self.height),
            ));
        }
        if !(0.0..=1.0).contains(&self.flip) {
            return Err(Error::config(
                "clip.flip",
                format!("{} is not a probability", self.flip),
            ));
        }
        Ok(())
    }
}

/// The next sample of a run: epoch and position in that epoch's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataPosition {
    /// Epoch (0-based).
    pub epoch: u64,
    /// Index into the epoch's shuffled order.
    pub index: usize,
}

/// One clip, ready for batching.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `frames` frames of `width × height`.
    pub video: Video,
    /// The source video (editing pairs), cut and transformed like `video`.
    pub source: Option<Video>,
    /// Caption / instruction.
    pub caption: String,
    /// The item it was cut from.
    pub item: usize,
    /// First frame taken.
    pub start: usize,
    /// Whether it was flipped.
    pub flipped: bool,
}

/// A batch of clips.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, 3, T, H, W]` f32 in `[-1, 1]`.
    pub video: Tensor,
    /// Source videos `[B, 3, T, H, W]`, when the items have them.
    pub source: Option<Tensor>,
    /// One caption per clip.
    pub captions: Vec<String>,
    /// The items, in batch order.
    pub items: Vec<usize>,
    /// First frame of each clip.
    pub starts: Vec<usize>,
    /// fps of each clip after the stride (for SVD's `fps` time id).
    pub fps: Vec<f64>,
    /// Where the next batch starts.
    pub next: DataPosition,
    /// Which rows of the step's global batch these are (data-parallel training); the whole
    /// batch in one process.
    pub shard: BatchShard,
}

/// The rows a rank holds of one global batch: rows `offset..offset + len` of `global`. Random
/// draws per sample (noise, σ, dropout, noise augmentation) are made for all `global` rows
/// from the generator that every rank holds in the same state, and each rank keeps its rows:
/// so `N` ranks with batch `B / N` compute what one process with batch `B` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShard {
    /// The first row of this rank's part.
    pub offset: usize,
    /// This rank's rows.
    pub len: usize,
    /// Rows of the global batch.
    pub global: usize,
}

impl BatchShard {
    /// All `n` rows (one process).
    pub fn whole(n: usize) -> Self {
        Self {
            offset: 0,
            len: n,
            global: n,
        }
    }

    /// Rank `rank`'s rows of a global batch of `global` split over `world` ranks (contiguous,
    /// balanced: [`vidgen_collective::shard_range`]).
    pub fn of(global: usize, rank: usize, world: usize) -> Self {
        let r = vidgen_collective::shard_range(global, rank, world);
        Self {
            offset: r.start,
            len: r.len(),
            global,
        }
    }

    /// Whether this is the whole batch.
    pub fn is_whole(&self) -> bool {
        self.offset == 0 && self.len == self.global
    }

    /// Draws `per_row` values for each of the `global` rows with `draw` (in row order) and
    /// keeps this shard's rows: the same values one process drawing the whole batch would give
    /// these rows.
    pub fn draw<T>(&self, per_row: usize, mut draw: impl FnMut() -> T) -> Vec<T> {
        let all: Vec<T> = (0..self.global * per_row).map(|_| draw()).collect();
        all.into_iter()
            .skip(self.offset * per_row)
            .take(self.len * per_row)
            .collect()
    }
}

/// `(seed, epoch, order)` of the epoch being read.
type CachedOrder = (u64, u64, Arc<Vec<usize>>);

/// A [`ClipSource`] with a [`ClipSpec`] and the items long enough for it.
pub struct Dataset {
    source: Arc<dyn ClipSource>,
    spec: ClipSpec,
    items: Vec<usize>,
    skipped: Vec<(String, usize)>,
    order: std::sync::Mutex<Option<CachedOrder>>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("items", &self.items.len())
            .field("skipped", &self.skipped.len())
            .field("spec", &self.spec)
            .finish()
    }
}

const ORDER_DOMAIN: u64 = 0x6f72_6465_7273_6565; // "orderssee"
const SAMPLE_DOMAIN: u64 = 0x7361_6d70_6c65_7373; // "samples"

/// The shuffled order of epoch `epoch` of `n` items: a Fisher–Yates permutation from a ChaCha8
/// generator keyed by `(seed, epoch)`.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ORDER_DOMAIN);
    rng.set_stream(epoch);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
    v
}

/// The generator of the sample at `(epoch, index)`.
fn sample_rng(seed: u64, pos: DataPosition) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SAMPLE_DOMAIN);
    rng.set_stream(
        pos.epoch
            .wrapping_mul(0x1_0000_0000)
            .wrapping_add(pos.index as u64),
    );
    rng
}

impl Dataset {
    /// The items of `source` that span at least a clip; shorter ones are skipped (listed by
    /// [`Dataset::skipped`]).
    ///
    /// # Errors
    /// An invalid spec; no usable item; unreadable media.
    pub fn new(source: Arc<dyn ClipSource>, spec: ClipSpec) -> Result<Self> {
        spec.validate()?;
        let mut items = Vec::new();
        let mut skipped = Vec::new();
        for i in 0..source.len() {
            let n = source.frame_count(i)?;
            if n >= spec.span() {
                items.push(i);
            } else {
                skipped.push((source.name(i), n));
            }
        }
        if items.is_empty() {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "no item has the {} frames a clip of {} frames at stride {} spans ({} items, all shorter)",
                    spec.span(),
                    spec.frames,
                    spec.stride,
                    source.len()
                ),
            ));
        }
        Ok(Self {
            source,
            spec,
            items,
            skipped,
            order: std::sync::Mutex::new(None),
        })
    }

    /// Usable items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there is no usable item (never, for a constructed dataset).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items too short for a clip: `(name, frames)`.
    pub fn skipped(&self) -> &[(String, usize)] {
        &self.skipped
    }

    /// The clip spec.
    pub fn spec(&self) -> &ClipSpec {
        &self.spec
    }

    /// The source.
    pub fn source(&self) -> &Arc<dyn ClipSource> {
        &self.source
    }

    /// The sample at `pos` for `seed`: item `order(epoch)[index]`, with its start frame and
    /// flip drawn from the sample's own generator (so the result depends on nothing else).
    ///
    /// # Errors
    /// `pos.index` past the epoch; unreadable media.
    pub fn sample_at(&self, seed: u64, pos: DataPosition) -> Result<Sample> {
        let order = self.order(seed, pos.epoch);
        let k = *order.get(pos.index).ok_or_else(|| {
            Error::invalid(
                "data position",
                format!("index {} past an epoch of {}", pos.index, order.len()),
            )
        })?;
        self.sample_item(self.items[k], &mut sample_rng(seed, pos))
    }

    /// The order of `epoch`, cached for the epoch being read.
    fn order(&self, seed: u64, epoch: u64) -> Arc<Vec<usize>> {
        let mut g = self.order.lock().unwrap_or_else(|p| p.into_inner());
        match &*g {
            Some((s, e, o)) if *s == seed && *e == epoch => o.clone(),
            _ => {
                let o = Arc::new(epoch_order(seed, epoch, self.items.len()));
                *g = Some((seed, epoch, o.clone()));
                o
            }
        }
    }

    fn sample_item(&self, item: usize, rng: &mut ChaCha8Rng) -> Result<Sample> {
        let spec = &self.spec;
        let n = self.source.frame_count(item)?;
        let span = spec.span();
        // Both draws happen whatever the options, so one option does not shift the other.
        let u: u64 = rng.random();
        let flip_u: f64 = rng.random();
        let start = if spec.random_start && n > span {
            (u % (n - span + 1) as u64) as usize
        } else {
            0
        };
        let (video, source) = self.source.read(item, start, spec.frames, spec.stride)?;
        let flipped = flip_u < spec.flip;
        let prep = |v: &Video| -> Result<Video> {
            let v = if (v.width(), v.height()) == (spec.width, spec.height) {
                v.clone()
            } else {
                v.resize_and_crop(spec.width, spec.height, ResizeFilter::Bilinear)?
            };
            if flipped {
                flip_video(&v)
            } else {
                Ok(v)
            }
        };
        let video = prep(&video)?;
        let source = source.as_ref().map(prep).transpose()?;
        Ok(Sample {
            video,
            source,
            caption: self.source.caption(item),
            item,
            start,
            flipped,
        })
    }

    /// The `batch` samples from `pos` on (crossing into the next epoch when this one ends),
    /// stacked, and the position after them.
    ///
    /// # Errors
    /// `batch == 0`; as [`Dataset::sample_at`]; items of which some have a source video and
    /// some not.
    pub fn batch_at(
        &self,
        seed: u64,
        pos: DataPosition,
        batch: usize,
        device: &Device,
    ) -> Result<Batch> {
        self.batch_at_shard(seed, pos, batch, BatchShard::whole(batch), device)
    }

    /// One rank's part of the global batch of `global` samples from `pos`: the samples of rows
    /// `shard.offset..` of it (exactly those [`Dataset::batch_at`] would put there), with
    /// `next` the position after the whole global batch. Over the ranks of a step the parts
    /// are disjoint, and every clip comes once per epoch across ranks.
    ///
    /// # Errors
    /// As [`Dataset::batch_at`]; a shard outside the global batch.
    pub fn batch_at_shard(
        &self,
        seed: u64,
        pos: DataPosition,
        global: usize,
        shard: BatchShard,
        device: &Device,
    ) -> Result<Batch> {
        if global == 0 || shard.len == 0 {
            return Err(Error::config("batch", "must be >= 1"));
        }
        if shard.global != global || shard.offset + shard.len > global {
            return Err(Error::invalid(
                "shard",
                format!(
                    "rows {}..{} of a batch of {global}",
                    shard.offset,
                    shard.offset + shard.len
                ),
            ));
        }
        let mut p = pos;
        let mut samples = Vec::with_capacity(shard.len);
        for row in 0..global {
            if p.index >= self.items.len() {
                p = DataPosition {
                    epoch: p.epoch + 1,
                    index: 0,
                };
            }
            if (shard.offset..shard.offset + shard.len).contains(&row) {
                samples.push(self.sample_at(seed, p)?);
            }
            p.index += 1;
        }
        if p.index >= self.items.len() {
            p = DataPosition {
                epoch: p.epoch + 1,
                index: 0,
            };
        }
        let videos: Vec<Video> = samples.iter().map(|s| s.video.clone()).collect();
        let video = videos_to_tensor(&videos, PixelRange::MinusOneToOne, device)?;
        let with_source = samples.iter().filter(|s| s.source.is_some()).count();
        let source = if with_source == 0 {
            None
        } else if with_source == samples.len() {
            let src: Vec<Video> = samples.iter().filter_map(|s| s.source.clone()).collect();
            Some(videos_to_tensor(&src, PixelRange::MinusOneToOne, device)?)
        } else {
            return Err(Error::invalid(
                "dataset",
                "some items have a source video and some do not; a batch needs all or none",
            ));
        };
        Ok(Batch {
            video,
            source,
            captions: samples.iter().map(|s| s.caption.clone()).collect(),
            items: samples.iter().map(|s| s.item).collect(),
            starts: samples.iter().map(|s| s.start).collect(),
            fps: samples
                .iter()
                .map(|s| s.video.fps() / self.spec.stride as f64)
                .collect(),
            next: p,
            shard,
        })
    }
}

/// Mirrors every frame left–right.
pub fn flip_video(v: &Video) -> Result<Video> {
    let frames = v
        .frames()
        .iter()
        .map(|f| {
            let (w, h) = (f.width() as usize, f.height() as usize);
            let src = f.data();
            let mut out = vec![0u8; src.len()];
            for y in 0..h {
                let row = y * w * 3;
                for x in 0..w {
                    let s = row + x * 3;
                    let d = row + (w - 1 - x) * 3;
                    out[d..d + 3].copy_from_slice(&src[s..s + 3]);
                }
            }
            Frame::new(f.width(), f.height(), out)
        })
        .collect::<Result<Vec<_>>>()?;
    Video::new(frames, v.fps())
}

/// How a [`Loader`] batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Clips per batch.
    pub batch: usize,
    /// The shuffling / sampling seed.
    pub seed: u64,
    /// Batches decoded ahead (the channel's bound, ≥ 1).
    pub prefetch: usize,
}

/// Which part of each global batch a [`Loader`] makes: rank `rank` of `world` data-parallel
/// ranks, each with [`LoaderConfig::batch`] clips of a global batch of `batch · world`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataShard {
    /// This rank.
    pub rank: usize,
    /// The number of ranks.
    pub world: usize,
}

impl Default for DataShard {
    fn default() -> Self {
        Self { rank: 0, world: 1 }
    }
}

/// Batches made on a worker thread, in order, `prefetch` ahead of the consumer.
///
/// ```
/// use std::sync::Arc;
/// use candle_core::Device;
/// use vidgen_trainer::data::{ClipSpec, DataPosition, Dataset, Loader, LoaderConfig, MemorySource};
/// use vidgen_video_io::synth::WorldConfig;
/// # fn main() -> vidgen_video_core::Result<()> {
/// let src = MemorySource::synthetic(&WorldConfig::new(32, 32, 8), 6, 0)?;
/// let spec = ClipSpec { frames: 4, stride: 2, width: 16, height: 16, ..ClipSpec::default() };
/// let ds = Arc::new(Dataset::new(Arc::new(src), spec)?);
/// let cfg = LoaderConfig { batch: 4, seed: 1, prefetch: 2 };
/// let mut loader = Loader::spawn(ds, cfg, DataPosition::default(), Device::Cpu)?;
/// let b = loader.next_batch()?;
/// assert_eq!(b.video.dims(), &[4, 3, 4, 16, 16]); // [B, 3, T, H, W]
/// assert_eq!(b.next, DataPosition { epoch: 0, index: 4 });
/// let b = loader.next_batch()?; // 2 from epoch 0, 2 from epoch 1
/// assert_eq!(b.next, DataPosition { epoch: 1, index: 2 });
/// # Ok(()) }
/// ```
pub struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    worker: Option<JoinHandle<()>>,
    position: DataPosition,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Loader(at {:?})", self.position)
    }
}

impl Loader {
    /// Starts the worker at `start`.
    ///
    /// # Errors
    /// `batch == 0`; the thread could not be spawned.
    pub fn spawn(
        dataset: Arc<Dataset>,
        cfg: LoaderConfig,
        start: DataPosition,
        device: Device,
    ) -> Result<Self> {
        Self::spawn_shard(dataset, cfg, start, device, DataShard::default())
    }

    /// [`Loader::spawn`] for one rank of data-parallel training: batches of `cfg.batch` clips,
    /// this rank's rows of global batches of `cfg.batch · shard.world` (see
    /// [`Dataset::batch_at_shard`]); positions count global batches, so every rank is at the
    /// same position after each step.
    ///
    /// # Errors
    /// `batch == 0`; a rank outside the world; the thread could not be spawned.
    pub fn spawn_shard(
        dataset: Arc<Dataset>,
        cfg: LoaderConfig,
        start: DataPosition,
        device: Device,
        shard: DataShard,
    ) -> Result<Self> {
        if cfg.batch == 0 {
            return Err(Error::config("batch", "must be >= 1"));
        }
        if shard.world == 0 || shard.rank >= shard.world {
            return Err(Error::invalid(
                "rank",
                format!("rank {} of a world of {}", shard.rank, shard.world),
            ));
        }
        let global = cfg.batch * shard.world;
        let rows = BatchShard {
            offset: shard.rank * cfg.batch,
            len: cfg.batch,
            global,
        };
        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        let worker = std::thread::Builder::new()
            .name("vidgen-data".into())
            .spawn(move || {
                let mut pos = start;
                loop {
                    let b = dataset.batch_at_shard(cfg.seed, pos, global, rows, &device);
                    let failed = b.is_err();
                    if let Ok(b) = &b {
                        pos = b.next;
                    }
                    // A closed channel means the loader was dropped: stop.
                    if tx.send(b).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| Error::backend("data worker thread", e.to_string()))?;
        Ok(Self {
            rx: Some(rx),
            worker: Some(worker),
            position: start,
        })
    }

    /// The next batch (waits for the worker when it is behind).
    ///
    /// # Errors
    /// The worker's error (unreadable media); a worker that stopped.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let rx = self
            .rx
            .as_ref()
            .ok_or_else(|| Error::invalid("loader", "closed"))?;
        let b = rx
            .recv()
            .map_err(|_| Error::invalid("loader", "the data worker stopped after an error"))??;
        self.position = b.next;
        Ok(b)
    }

    /// Where the next batch starts.
    pub fn position(&self) -> DataPosition {
        self.position
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel first unblocks a worker waiting to send.
        drop(self.rx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
