//! Video files through FFmpeg (the `ffmpeg` feature): streaming decode of anything FFmpeg
//! demuxes (mp4, avi, webm, mkv, mpg, ...), seeking, metadata, and mp4 encode.
//!
//! Decoding is a pull iterator: [`VideoReader`] holds one demuxer, one decoder and one
//! scaler, and converts one frame per call, so memory stays at a few frames whatever the
//! video's length. The same front end serves motion-vector extraction: open with
//! [`DecodeOptions::export_motion_vectors`] and pull raw FFmpeg frames (which carry the
//! `AV_FRAME_DATA_MOTION_VECTORS` side data) with `VideoReader::next_raw` (`ffmpeg` feature).
//!
//! Without the feature every entry point here returns [`vidgen_video_core::Error::FeatureDisabled`].

use std::path::{Path, PathBuf};

use vidgen_video_core::{Error, Result};

use crate::frames::{Frame, Video};

/// What a container says about its (best) video stream.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// Frame width in pixels (of the decoded picture).
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second: the stream's average frame rate, else its base rate, else 25.
    pub fps: f64,
    /// Duration in seconds, when the stream or container states one.
    pub duration: Option<f64>,
    /// Number of frames as stated by the container (`nb_frames`), when it states one; else an
    /// estimate `round(duration × fps)`, see [`VideoInfo::frame_count_is_exact`]. For an exact
    /// count without decoding, use [`count_frames`].
    pub frame_count: Option<u64>,
    /// Whether `frame_count` was stated by the container rather than estimated.
    pub frame_count_is_exact: bool,
    /// FFmpeg's short name of the codec (`h264`, `mpeg4`, `vp9`, ...).
    pub codec: String,
}

/// How to set up the decoder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Decoder threads; 0 lets FFmpeg choose.
    pub threads: usize,
    /// Ask the decoder to attach motion vectors to each frame (`flags2=+export_mvs`), read
    /// from the raw frames by motion-codec.
    pub export_motion_vectors: bool,
}

/// One decoded frame and where it sits in the video.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedFrame {
    /// The picture, RGB, at the size of [`VideoInfo`].
    pub frame: Frame,
    /// Presentation time in seconds from the start of the stream (`None` when the file gives
    /// no timestamp).
    pub time: Option<f64>,
}

/// The video codec used by [`write_mp4`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VideoCodec {
    /// H.264 through libx264 (yuv420p, `crf` quality); falls back to MPEG-4 Part 2 when this
    /// FFmpeg has no H.264 encoder.
    #[default]
    H264,
    /// MPEG-4 Part 2 (FFmpeg's native `mpeg4` encoder, quantiser `qscale`).
    Mpeg4,
    /// VP9 through libvpx (`crf` quality, constant-quality mode), for webm / mkv.
    Vp9,
}

/// Settings of [`write_mp4`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Which codec.
    pub codec: VideoCodec,
    /// Quality: x264's CRF for H.264 (0 = lossless luma, 18 ≈ visually lossless, 23 default),
    /// the quantiser 1–31 for MPEG-4, or libvpx's CRF 0–63 for VP9 (values are clamped).
    pub quality: u32,
    /// Keyframe interval in frames.
    pub gop: u32,
}

impl Default for EncodeOptions {
    /// H.264, CRF 18, a keyframe every 12 frames.
    fn default() -> Self {
        Self {
            codec: VideoCodec::H264,
            quality: 18,
            gop: 12,
        }
    }
}

/// A streaming decoder over one video file: an iterator of RGB frames.
///
/// ```no_run
/// # fn main() -> vidgen_video_core::Result<()> {
/// let mut reader = vidgen_video_io::VideoReader::open("clip.mp4")?;
/// println!("{:?}", reader.info());
/// let width = reader.info().width;
/// reader.seek(1.5)?; // the next frame is the first shown at or after 1.5 s
/// for frame in reader.by_ref().take(8) {
///     assert_eq!(frame?.width(), width); // [H, W, 3] RGB u8
/// }
/// # Ok(()) }
/// ```
pub struct VideoReader {
    inner: imp::Reader,
    path: PathBuf,
}

impl std::fmt::Debug for VideoReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VideoReader({})", self.path.display())
    }
}

/// Checks that `path` is an existing, non-empty file before handing it to FFmpeg, so that a
/// missing file is an [`Error::Io`] and an empty one [`Error::Malformed`], whatever FFmpeg says.
fn check_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    if meta.len() == 0 {
        return Err(Error::Malformed {
            path: path.to_path_buf(),
            reason: "empty file".into(),
        });
    }
    Ok(())
}

impl VideoReader {
    /// Opens `path` with default [`DecodeOptions`].
    ///
    /// Errors: [`Error::Io`] for a missing file, [`Error::Malformed`] for a file that is not a
    /// video FFmpeg can demux or that has no video stream, [`Error::Unsupported`] for a codec
    /// this FFmpeg cannot decode, [`Error::FeatureDisabled`] without the `ffmpeg` feature.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &DecodeOptions::default())
    }

    /// Opens `path` with `options` (see [`VideoReader::open`] for the errors).
    pub fn open_with(path: impl AsRef<Path>, options: &DecodeOptions) -> Result<Self> {
        let path = path.as_ref();
        check_file(path)?;
        Ok(Self {
            inner: imp::Reader::open(path, options)?,
            path: path.to_path_buf(),
        })
    }

    /// The stream's size, fps, duration, frame count and codec.
    pub fn info(&self) -> &VideoInfo {
        self.inner.info()
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves to `seconds` from the start: the next frame returned is the first whose
    /// presentation time is at or after it (the decoder restarts at the keyframe before and
    /// discards the frames in between). Where the demuxer cannot seek, or lands after the
    /// target (MPEG-TS and other formats without an index), the reader decodes from the start
    /// instead: slower, never wrong.
    ///
    /// Seeking past the end makes the iterator end, however far (times whose timestamp does
    /// not fit FFmpeg's 64-bit counters included); a later seek back works as usual.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a negative or non-finite `seconds`; [`Error::Malformed`]
    /// when the file cannot be reopened for the fallback.
    pub fn seek(&mut self, seconds: f64) -> Result<()> {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return Err(Error::invalid(
                "seconds",
                format!("{seconds}: must be >= 0"),
            ));
        }
        self.inner.seek(seconds)
    }

    /// The next frame with its time, or `None` at the end of the stream.
    ///
    /// # Shapes
    /// Each frame is `[H, W, 3]` RGB u8 with `H × W` from [`VideoReader::info`] (a stream whose
    /// size changes midway is scaled back to it).
    pub fn next_frame(&mut self) -> Result<Option<DecodedFrame>> {
        self.inner.next_frame()
    }

    /// The next decoded FFmpeg frame in the decoder's own pixel format, with its side data
    /// (motion vectors when opened with [`DecodeOptions::export_motion_vectors`]), and its
    /// time in seconds; `None` at the end.
    #[cfg(feature = "ffmpeg")]
    pub fn next_raw(&mut self) -> Result<Option<(ffmpeg_next::frame::Video, Option<f64>)>> {
        self.inner.next_raw()
    }

    /// Reads the remaining frames (at most `max_frames` when given) into one [`Video`] at the
    /// stream's fps.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `max_frames == Some(0)` (a [`Video`] has at least one
    /// frame; nothing is read); [`Error::Malformed`] when no frame can be decoded.
    pub fn read_to_video(&mut self, max_frames: Option<usize>) -> Result<Video> {
        check_max_frames(max_frames)?;
        let mut frames = Vec::new();
        while max_frames.is_none_or(|m| frames.len() < m) {
            match self.next_frame()? {
                Some(f) => frames.push(f.frame),
                None => break,
            }
        }
        if frames.is_empty() {
            return Err(Error::Malformed {
                path: self.path.clone(),
                reason: "zero frames: no video frame could be decoded".into(),
            });
        }
        Video::new(frames, self.info().fps)
    }
}

impl Iterator for VideoReader {
    type Item = Result<Frame>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame().transpose().map(|r| r.map(|f| f.frame))
    }
}

/// Whether this build can read and write video files (the `ffmpeg` feature).
pub const FFMPEG_ENABLED: bool = cfg!(feature = "ffmpeg");

/// The metadata of the video at `path` (see [`VideoReader::open`] for the errors).
pub fn probe(path: impl AsRef<Path>) -> Result<VideoInfo> {
    Ok(VideoReader::open(path)?.info().clone())
}

/// Decodes the video at `path` (its first `max_frames` frames when given) into memory. For long
/// videos prefer iterating a [`VideoReader`].
///
/// # Errors
/// [`Error::InvalidArgument`] for `max_frames == Some(0)`, checked before the file is opened:
/// asking for zero frames is a caller's mistake, not a property of the file (motion-codec's
/// `read_codec_motion` answers the same). Otherwise as [`VideoReader::open`] and
/// [`VideoReader::read_to_video`].
pub fn read_video(path: impl AsRef<Path>, max_frames: Option<usize>) -> Result<Video> {
    check_max_frames(max_frames)?;
    VideoReader::open(path)?.read_to_video(max_frames)
}

/// `Some(0)` frames cannot make a [`Video`]: refuse it as an argument, whatever the file.
fn check_max_frames(max_frames: Option<usize>) -> Result<()> {
    if max_frames == Some(0) {
        return Err(Error::invalid(
            "max_frames",
            "Some(0): a video has at least one frame; pass None for all frames",
        ));
    }
    Ok(())
}

/// The exact number of video packets (= frames, for every common codec) in `path`, found by
/// demuxing the whole file without decoding it.
pub fn count_frames(path: impl AsRef<Path>) -> Result<u64> {
    let path = path.as_ref();
    check_file(path)?;
    imp::count_frames(path)
}

/// Encodes `video` into an mp4 file at `path` (yuv420p; see [`EncodeOptions`]) and returns
/// the codec actually used.
///
/// Errors with [`Error::InvalidArgument`] for odd widths or heights (yuv420p needs even sides:
/// crop or resize first), [`Error::Io`] when the file cannot be created or written.
pub fn write_mp4(
    path: impl AsRef<Path>,
    video: &Video,
    options: &EncodeOptions,
) -> Result<VideoCodec> {
    check_even(video, path.as_ref())?;
    imp::write(path.as_ref(), video, options, Some("mp4"))
}

/// Encodes `video` into `path`, the container chosen from the file extension by FFmpeg
/// (`.mp4`, `.mov`, `.mkv`, `.avi`, `.webm`, ...). Use [`VideoCodec::Vp9`] for `.webm`.
/// Errors as [`write_mp4`], plus [`Error::Unsupported`] for an unknown extension.
pub fn write_video(
    path: impl AsRef<Path>,
    video: &Video,
    options: &EncodeOptions,
) -> Result<VideoCodec> {
    check_even(video, path.as_ref())?;
    imp::write(path.as_ref(), video, options, None)
}

fn check_even(video: &Video, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the parent folder does not exist",
                ),
            });
        }
    }
    if !video.width().is_multiple_of(2) || !video.height().is_multiple_of(2) {
        return Err(Error::invalid(
            "video",
            format!(
                "{}x{}: yuv420p video needs an even width and height; crop or resize first",
                video.width(),
                video.height()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(feature = "ffmpeg"))]
mod imp {
    use super::*;

    fn disabled(what: &str) -> Error {
        Error::FeatureDisabled {
            what: what.into(),
            feature: "ffmpeg".into(),
            krate: "video-io".into(),
        }
    }

    /// Uninhabited without FFmpeg: `open` never succeeds, so the methods are unreachable.
    pub(super) struct Reader(std::convert::Infallible);

    impl Reader {
        pub(super) fn open(_: &Path, _: &DecodeOptions) -> Result<Self> {
            Err(disabled("decoding video files"))
        }
        pub(super) fn info(&self) -> &VideoInfo {
            match self.0 {}
        }
        pub(super) fn seek(&mut self, _: f64) -> Result<()> {
            match self.0 {}
        }
        pub(super) fn next_frame(&mut self) -> Result<Option<DecodedFrame>> {
            match self.0 {}
        }
    }

    pub(super) fn count_frames(_: &Path) -> Result<u64> {
        Err(disabled("counting video frames"))
    }

    pub(super) fn write(
        _: &Path,
        _: &Video,
        _: &EncodeOptions,
        _: Option<&str>,
    ) -> Result<VideoCodec> {
        Err(disabled("encoding video files"))
    }
}

#[cfg(feature = "ffmpeg")]
mod imp {
    use super::*;
    use ff::format::Pixel;
    use ff::software::scaling;
    use ffmpeg_next as ff;

    fn init() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // `init` only registers codecs on old FFmpeg and cannot fail on 5.x; ignore.
            let _ = ff::init();
            ff::util::log::set_level(ff::util::log::Level::Error);
        });
    }

    fn malformed(path: &Path, reason: impl Into<String>) -> Error {
        Error::Malformed {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn secs(ts: i64, tb: ff::Rational) -> f64 {
        ts as f64 * tb.numerator() as f64 / tb.denominator().max(1) as f64
    }

    /// `x` (an integral f64) as an i64 when it is within range; `None` for NaN or overflow
    /// (`as` would saturate silently).
    fn fits_i64(x: f64) -> Option<i64> {
        // -2^63 and 2^63 are exact in f64; i64 holds [-2^63, 2^63).
        (x >= i64::MIN as f64 && x < i64::MAX as f64).then_some(x as i64)
    }

    fn ratio(r: ff::Rational) -> Option<f64> {
        (r.numerator() > 0 && r.denominator() > 0)
            .then(|| r.numerator() as f64 / r.denominator() as f64)
    }

    /// Demuxer + decoder for the best video stream: the reusable front end.
    pub(super) struct Reader {
        path: PathBuf,
        input: ff::format::context::Input,
        stream: usize,
        time_base: ff::Rational,
        start_pts: i64,
        decoder: ff::decoder::Video,
        scaler: Option<(scaling::Context, Pixel, u32, u32)>,
        info: VideoInfo,
        /// Frames before this pts (stream time base) are dropped: set by `seek`.
        skip_before: Option<i64>,
        /// The last seek, `(target pts, seconds)`, until its first decoded frame shows that the
        /// demuxer landed at or before the target (see `rewind`).
        pending_seek: Option<(i64, f64)>,
        options: DecodeOptions,
        eof_sent: bool,
        done: bool,
    }

    /// Consecutive demux errors tolerated before giving up (a damaged file can make
    /// `av_read_frame` fail repeatedly without reaching EOF).
    const MAX_READ_ERRORS: usize = 64;

    impl Reader {
        pub(super) fn open(path: &Path, options: &DecodeOptions) -> Result<Self> {
            init();
            let input = ff::format::input(&path)
                .map_err(|e| malformed(path, format!("not a video FFmpeg can read: {e}")))?;
            let stream = input
                .streams()
                .best(ff::media::Type::Video)
                .ok_or_else(|| malformed(path, "no video stream"))?;
            let index = stream.index();
            let time_base = stream.time_base();
            let start_pts = match stream.start_time() {
                s if s == ff::ffi::AV_NOPTS_VALUE => 0,
                s => s,
            };
            let fps = ratio(stream.avg_frame_rate())
                .or_else(|| ratio(stream.rate()))
                .filter(|f| f.is_finite() && *f > 0.0 && *f < 1e4)
                .unwrap_or(25.0);
            let stream_dur = stream.duration();
            let duration = if stream_dur > 0 && stream_dur != ff::ffi::AV_NOPTS_VALUE {
                Some(secs(stream_dur, time_base))
            } else if input.duration() > 0 {
                Some(input.duration() as f64 / ff::ffi::AV_TIME_BASE as f64)
            } else {
                None
            };
            let stated = stream.frames();
            let (frame_count, exact) = if stated > 0 {
                (Some(stated as u64), true)
            } else {
                (duration.map(|d| (d * fps).round().max(0.0) as u64), false)
            };
            let mut ctx = ff::codec::context::Context::from_parameters(stream.parameters())
                .map_err(|e| malformed(path, format!("bad codec parameters: {e}")))?;
            let codec_id = ctx.id();
            let codec = ff::decoder::find(codec_id).ok_or_else(|| Error::Unsupported {
                field: "codec".into(),
                value: format!("{codec_id:?}"),
                supported: "the decoders of the linked FFmpeg".into(),
            })?;
            if options.threads != 1 {
                ctx.set_threading(ff::codec::threading::Config {
                    kind: ff::codec::threading::Type::Frame,
                    count: options.threads,
                    ..Default::default()
                });
            }
            let mut dict = ff::Dictionary::new();
            if options.export_motion_vectors {
                dict.set("flags2", "+export_mvs");
            }
            let mut dec = ctx.decoder();
            dec.set_packet_time_base(time_base);
            let decoder = dec
                .open_as_with(codec, dict)
                .and_then(|o| o.video())
                .map_err(|e| Error::Unsupported {
                    field: "codec".into(),
                    value: format!("{} ({e})", codec.name()),
                    supported: "the decoders of the linked FFmpeg".into(),
                })?;
            let (width, height) = (decoder.width(), decoder.height());
            crate::frames::check_size(width, height)
                .map_err(|e| malformed(path, format!("video stream size: {e}")))?;
            let info = VideoInfo {
                width,
                height,
                fps,
                duration,
                frame_count,
                frame_count_is_exact: exact,
                codec: codec.name().to_string(),
            };
            Ok(Self {
                path: path.to_path_buf(),
                input,
                stream: index,
                time_base,
                start_pts,
                decoder,
                scaler: None,
                info,
                skip_before: None,
                pending_seek: None,
                options: options.clone(),
                eof_sent: false,
                done: false,
            })
        }

        pub(super) fn info(&self) -> &VideoInfo {
            &self.info
        }

        pub(super) fn seek(&mut self, seconds: f64) -> Result<()> {
            let tb = self.time_base;
            let ticks = (seconds * tb.denominator() as f64 / tb.numerator().max(1) as f64).round();
            // `seconds` is finite and >= 0 (checked by the caller). A time whose pts, or whose
            // AV_TIME_BASE form, does not fit an i64 lies past the end of any stream: end the
            // iterator instead of wrapping around to a time near the start.
            let target = fits_i64(ticks).and_then(|t| self.start_pts.checked_add(t));
            let ts_us =
                target.and_then(|t| fits_i64((secs(t, tb) * ff::ffi::AV_TIME_BASE as f64).round()));
            let (Some(target), Some(ts_us)) = (target, ts_us) else {
                self.end();
                return Ok(());
            };
            // Stream -1 seeks in AV_TIME_BASE units; max_ts = ts asks for a keyframe at or before.
            if self.input.seek(ts_us, ..ts_us).is_err() {
                return if self.past_end(seconds) {
                    self.end();
                    Ok(())
                } else {
                    self.rewind(target)
                };
            }
            self.decoder.flush();
            self.skip_before = Some(target);
            self.pending_seek = Some((target, seconds));
            self.eof_sent = false;
            self.done = false;
            Ok(())
        }

        /// Ends the iterator (a seek past the end).
        fn end(&mut self) {
            self.decoder.flush();
            self.skip_before = None;
            self.pending_seek = None;
            self.eof_sent = true;
            self.done = true;
        }

        /// Whether `seconds` is at or after the stated duration (unknown: not past the end).
        fn past_end(&self, seconds: f64) -> bool {
            self.info.duration.is_some_and(|d| seconds >= d)
        }

        /// Restarts from the first packet, dropping frames before `target`: the fallback when
        /// the demuxer cannot seek, or landed after the target. Demuxers without an index
        /// (MPEG-TS) seek by a binary search on packet dts that can land past the keyframe,
        /// after which the decoder yields nothing; decoding from the start is always right.
        fn rewind(&mut self, target: i64) -> Result<()> {
            let mut fresh = Reader::open(&self.path, &self.options)?;
            fresh.skip_before = Some(target);
            *self = fresh;
            Ok(())
        }

        /// At the end of the stream after a seek that produced no frame at all: rewinds and
        /// returns `true` when the seek time is within the stream (the demuxer overshot).
        fn rewind_if_overshot(&mut self) -> Result<bool> {
            match self.pending_seek.take() {
                Some((target, seconds)) if !self.past_end(seconds) => {
                    self.rewind(target)?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }

        fn time_of(&self, f: &ff::frame::Video) -> Option<f64> {
            f.timestamp()
                .or(f.pts())
                .map(|ts| secs(ts.saturating_sub(self.start_pts), self.time_base))
        }

        pub(super) fn next_raw(&mut self) -> Result<Option<(ff::frame::Video, Option<f64>)>> {
            let mut frame = ff::frame::Video::empty();
            let mut read_errors = 0usize;
            loop {
                if self.done {
                    return Ok(None);
                }
                match self.decoder.receive_frame(&mut frame) {
                    Ok(()) => {
                        let ts = frame.timestamp().or(frame.pts());
                        if let Some((target, _)) = self.pending_seek.take() {
                            // The first frame after a seek must be at or before the target
                            // (the keyframe the decoder restarted at); a later one means the
                            // demuxer overshot and frames in between would be lost.
                            if ts.is_some_and(|ts| ts > target) {
                                self.rewind(target)?;
                                continue;
                            }
                        }
                        if let (Some(skip), Some(ts)) = (self.skip_before, ts) {
                            if ts < skip {
                                continue;
                            }
                        }
                        self.skip_before = None;
                        let t = self.time_of(&frame);
                        return Ok(Some((frame, t)));
                    }
                    Err(ff::Error::Eof) => {
                        if self.rewind_if_overshot()? {
                            continue;
                        }
                        self.done = true;
                        return Ok(None);
                    }
                    Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {}
                    Err(e) => {
                        // A corrupt frame: drop it and keep going, as ffmpeg(1) does.
                        read_errors += 1;
                        if read_errors > MAX_READ_ERRORS {
                            return Err(malformed(&self.path, format!("decoding failed: {e}")));
                        }
                        continue;
                    }
                }
                if self.eof_sent {
                    // Draining returned EAGAIN: nothing more will come.
                    if self.rewind_if_overshot()? {
                        continue;
                    }
                    self.done = true;
                    return Ok(None);
                }
                let mut packet = ff::Packet::empty();
                match packet.read(&mut self.input) {
                    Ok(()) => {
                        read_errors = 0;
                        if packet.stream() != self.stream {
                            continue;
                        }
                        // Damaged packets are skipped (the decoder resyncs at the next one).
                        if self.decoder.send_packet(&packet).is_err() {
                            continue;
                        }
                    }
                    Err(ff::Error::Eof) => {
                        self.eof_sent = true;
                        // Fails only if already draining; then receive_frame reports EOF.
                        let _ = self.decoder.send_eof();
                    }
                    Err(e) => {
                        read_errors += 1;
                        if read_errors > MAX_READ_ERRORS {
                            return Err(malformed(&self.path, format!("demuxing failed: {e}")));
                        }
                    }
                }
            }
        }

        pub(super) fn next_frame(&mut self) -> Result<Option<DecodedFrame>> {
            let Some((raw, time)) = self.next_raw()? else {
                return Ok(None);
            };
            let (w, h) = (self.info.width, self.info.height);
            let (fmt, fw, fh) = (raw.format(), raw.width(), raw.height());
            if fw == 0 || fh == 0 || fmt == Pixel::None {
                return Err(malformed(&self.path, "decoder returned an empty frame"));
            }
            let stale =
                !matches!(&self.scaler, Some((_, f, sw, sh)) if (*f, *sw, *sh) == (fmt, fw, fh));
            if stale {
                let ctx = scaling::Context::get(
                    fmt,
                    fw,
                    fh,
                    Pixel::RGB24,
                    w,
                    h,
                    scaling::Flags::BILINEAR,
                )
                .map_err(|e| {
                    malformed(&self.path, format!("cannot convert {fmt:?} to RGB: {e}"))
                })?;
                self.scaler = Some((ctx, fmt, fw, fh));
            }
            let mut rgb = ff::frame::Video::empty();
            if let Some((ctx, ..)) = self.scaler.as_mut() {
                ctx.run(&raw, &mut rgb)
                    .map_err(|e| malformed(&self.path, format!("pixel conversion failed: {e}")))?;
            }
            let stride = rgb.stride(0);
            let src = rgb.data(0);
            let row = w as usize * 3;
            let mut data = Vec::with_capacity(row * h as usize);
            for y in 0..h as usize {
                let Some(line) = src.get(y * stride..y * stride + row) else {
                    return Err(malformed(&self.path, "converted frame is short"));
                };
                data.extend_from_slice(line);
            }
            Ok(Some(DecodedFrame {
                frame: Frame::new(w, h, data)?,
                time,
            }))
        }
    }

    pub(super) fn count_frames(path: &Path) -> Result<u64> {
        init();
        let mut input = ff::format::input(&path)
            .map_err(|e| malformed(path, format!("not a video FFmpeg can read: {e}")))?;
        let index = input
            .streams()
            .best(ff::media::Type::Video)
            .ok_or_else(|| malformed(path, "no video stream"))?
            .index();
        let (mut n, mut errors) = (0u64, 0usize);
        loop {
            // A fresh packet each time: `av_read_frame` does not unref the one it is given.
            let mut packet = ff::Packet::empty();
            match packet.read(&mut input) {
                Ok(()) => {
                    errors = 0;
                    if packet.stream() == index {
                        n += 1;
                    }
                }
                Err(ff::Error::Eof) => return Ok(n),
                Err(e) => {
                    errors += 1;
                    if errors > MAX_READ_ERRORS {
                        return Err(malformed(path, format!("demuxing failed: {e}")));
                    }
                }
            }
        }
    }

    fn enc_err(path: &Path, what: &str) -> impl Fn(ff::Error) -> Error {
        let (path, what) = (path.to_path_buf(), what.to_string());
        move |e| Error::Io {
            path: path.clone(),
            source: std::io::Error::other(format!("{what}: {e}")),
        }
    }

    pub(super) fn write(
        path: &Path,
        video: &Video,
        opts: &EncodeOptions,
        container: Option<&str>,
    ) -> Result<VideoCodec> {
        init();
        let (w, h) = (video.width(), video.height());
        let h264 =
            ff::encoder::find_by_name("libx264").or_else(|| ff::encoder::find(ff::codec::Id::H264));
        let vp9 = ff::encoder::find_by_name("libvpx-vp9");
        let (codec, used) = match (opts.codec, h264, vp9) {
            (VideoCodec::H264, Some(c), _) => (c, VideoCodec::H264),
            (VideoCodec::Vp9, _, Some(c)) => (c, VideoCodec::Vp9),
            (VideoCodec::Vp9, _, None) => {
                return Err(Error::Unsupported {
                    field: "codec".into(),
                    value: "vp9".into(),
                    supported: "this FFmpeg has no libvpx-vp9 encoder".into(),
                })
            }
            _ => (
                ff::encoder::find(ff::codec::Id::MPEG4).ok_or_else(|| Error::Unsupported {
                    field: "codec".into(),
                    value: format!("{:?}", opts.codec),
                    supported: "none: this FFmpeg has neither an H.264 nor an MPEG-4 encoder"
                        .into(),
                })?,
                VideoCodec::Mpeg4,
            ),
        };
        let created = match container {
            Some(name) => ff::format::output_as(&path, name),
            None => ff::format::output(&path),
        };
        let mut octx = created.map_err(|e| Error::Unsupported {
            field: "container".into(),
            value: format!("{} ({e})", path.display()),
            supported: "the muxers of the linked FFmpeg (.mp4, .mov, .mkv, .avi, .webm, ...)"
                .into(),
        })?;
        let global_header = octx
            .format()
            .flags()
            .contains(ff::format::Flags::GLOBAL_HEADER);
        let rate = ff::Rational::from(video.fps());
        let time_base = rate.invert();
        let mut enc = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(enc_err(path, "encoder setup"))?;
        enc.set_width(w);
        enc.set_height(h);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(time_base);
        enc.set_frame_rate(Some(rate));
        enc.set_gop(opts.gop.max(1));
        let mut dict = ff::Dictionary::new();
        let mut flags = ff::codec::Flags::empty();
        match used {
            VideoCodec::H264 => {
                dict.set("crf", &opts.quality.min(51).to_string());
                dict.set("preset", "medium");
            }
            VideoCodec::Vp9 => {
                dict.set("crf", &opts.quality.min(63).to_string());
                dict.set("b", "0");
                dict.set("deadline", "good");
                dict.set("cpu-used", "4");
            }
            VideoCodec::Mpeg4 => {
                let q = opts.quality.clamp(1, 31) as i32;
                enc.set_qmin(q);
                enc.set_qmax(q);
                flags |= ff::codec::Flags::QSCALE;
                enc.set_global_quality(q * ff::ffi::FF_QP2LAMBDA);
            }
        }
        if global_header {
            flags |= ff::codec::Flags::GLOBAL_HEADER;
        }
        enc.set_flags(flags);
        let mut encoder = enc
            .open_as_with(codec, dict)
            .map_err(enc_err(path, "opening the encoder"))?;
        {
            let mut ost = octx
                .add_stream(codec)
                .map_err(enc_err(path, "adding a stream"))?;
            ost.set_parameters(&encoder);
            ost.set_time_base(time_base);
            ost.set_rate(rate);
            ost.set_avg_frame_rate(rate);
        }
        octx.write_header()
            .map_err(enc_err(path, "writing the mp4 header"))?;
        let ost_tb = octx.stream(0).map(|s| s.time_base()).unwrap_or(time_base);
        let mut scaler = scaling::Context::get(
            Pixel::RGB24,
            w,
            h,
            Pixel::YUV420P,
            w,
            h,
            scaling::Flags::BILINEAR,
        )
        .map_err(enc_err(path, "RGB to YUV conversion"))?;
        let mut src = ff::frame::Video::new(Pixel::RGB24, w, h);
        let mut yuv = ff::frame::Video::empty();
        let mut packet = ff::Packet::empty();
        let drain = |encoder: &mut ff::encoder::Video,
                     octx: &mut ff::format::context::Output,
                     packet: &mut ff::Packet|
         -> Result<()> {
            while encoder.receive_packet(packet).is_ok() {
                packet.set_stream(0);
                packet.rescale_ts(time_base, ost_tb);
                packet
                    .write_interleaved(octx)
                    .map_err(enc_err(path, "writing a packet"))?;
            }
            Ok(())
        };
        let row = w as usize * 3;
        for (i, f) in video.frames().iter().enumerate() {
            let stride = src.stride(0);
            let dst = src.data_mut(0);
            for y in 0..h as usize {
                let (Some(d), Some(s)) = (
                    dst.get_mut(y * stride..y * stride + row),
                    f.data().get(y * row..(y + 1) * row),
                ) else {
                    return Err(Error::invalid(
                        "frame",
                        "frame buffer smaller than its size",
                    ));
                };
                d.copy_from_slice(s);
            }
            scaler
                .run(&src, &mut yuv)
                .map_err(enc_err(path, "RGB to YUV conversion"))?;
            yuv.set_pts(Some(i as i64));
            encoder
                .send_frame(&yuv)
                .map_err(enc_err(path, "encoding a frame"))?;
            drain(&mut encoder, &mut octx, &mut packet)?;
        }
        encoder
            .send_eof()
            .map_err(enc_err(path, "flushing the encoder"))?;
        drain(&mut encoder, &mut octx, &mut packet)?;
        octx.write_trailer()
            .map_err(enc_err(path, "writing the mp4 trailer"))?;
        Ok(used)
    }
}
