//! The `AV_FRAME_DATA_MOTION_VECTORS` parser and grid placement on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = vidgen_motion_codec::parse_motion_vectors(data) {
        let _ = vidgen_motion_codec::field_from_vectors(&v, 64, 48, 16, vidgen_motion_codec::FrameType::P);
        let fv = vidgen_motion_codec::frame_vectors(&v, 64, 48, vidgen_motion_codec::FrameType::P);
        let _ = vidgen_motion_codec::preprocess(&[fv], &vidgen_motion_codec::LavitConfig::default());
    }
});
