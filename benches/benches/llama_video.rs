//! Criterion suite for `llama-video`: the registry cases of `benches/src/cases_models.rs`, with
//! candle's composed ops beside ours where a twin exists. PyTorch figures: `bench-report`.
// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

fn suite_fn(c: &mut Criterion) {
    benches::criterion_suite(c, "llama_video");
}

criterion_group!(suite, suite_fn);
criterion_main!(suite);
