//! Criterion suite for `pipelines`: the registry cases of `benches/src/cases_pipelines.rs`
//! (Stable Video Diffusion end to end at the peers' `unet_svd_small` size). PyTorch figures
//! beside ours: `bench-report --filter pipeline`.
// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

fn suite_fn(c: &mut Criterion) {
    benches::criterion_suite(c, "pipelines");
}

criterion_group!(suite, suite_fn);
criterion_main!(suite);
