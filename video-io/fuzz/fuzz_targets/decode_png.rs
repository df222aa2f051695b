//! The PNG reader on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vidgen_video_io::decode_png(data, std::path::Path::new("fuzz.png"));
});
