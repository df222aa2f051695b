//! The motion-vector decoder front end on arbitrary bytes: decode with `export_mvs`, read side
//! data into fields, run LaVIT preprocessing. Any `Err` is fine; a crash, hang or
//! out-of-bounds access is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("motion-codec-fuzz-{}.bin", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(m) = vidgen_motion_codec::read_codec_motion(&path, 16, Some(8)) {
        let _ = vidgen_motion_codec::preprocess(&m.vectors, &vidgen_motion_codec::LavitConfig::default());
        for f in &m.fields {
            let _ = vidgen_motion_codec::summarize_field(f, None, &Default::default());
        }
    }
    let _ = std::fs::remove_file(&path);
});
