//! Criterion suite for `video-kernels`: attention (forward, causal, backward) and conv3d
//! (depthwise forward / backward, temporal (3,1,1), general 3×3×3), each beside candle's
//! composed ops and our `*_reference` twins. Cases and shapes: `benches/src/cases.rs`.
// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

fn video_kernels(c: &mut Criterion) {
    benches::criterion_suite(c, "video_kernels");
}

criterion_group!(suite, video_kernels);
criterion_main!(suite);
