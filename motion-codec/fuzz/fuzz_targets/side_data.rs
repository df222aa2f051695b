//! The `AV_FRAME_DATA_MOTION_VECTORS` parser and grid placement on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = motion_codec::parse_motion_vectors(data) {
        let _ = motion_codec::field_from_vectors(&v, 64, 48, 16, motion_codec::FrameType::P);
        let fv = motion_codec::frame_vectors(&v, 64, 48, motion_codec::FrameType::P);
        let _ = motion_codec::preprocess(&[fv], &motion_codec::LavitConfig::default());
    }
});
