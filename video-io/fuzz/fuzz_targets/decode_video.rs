//! The FFmpeg decode front end on arbitrary bytes: open, probe, decode a few frames, seek.
//! Any `Err` is fine; a crash, hang or out-of-bounds access is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // FFmpeg probes by content and by name: the file lives in memory-backed /dev/shm when
    // available, one per process.
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("video-io-fuzz-{}.bin", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(mut r) = vidgen_video_io::VideoReader::open(&path) {
        let _ = r.info();
        for _ in 0..4 {
            match r.next_frame() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        if r.seek(0.5).is_ok() {
            let _ = r.next_frame();
        }
    }
    let _ = vidgen_video_io::count_frames(&path);
    let _ = std::fs::remove_file(&path);
});
