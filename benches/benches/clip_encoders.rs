//! Criterion suite for `clip-encoders`: the registry cases of `benches/src/cases_clip.rs` (the
//! ViT-B/32 text tower on 8 prompts, the vision tower on 8 images). PyTorch figures beside
//! ours: `bench-report --filter clip`.
// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

fn suite_fn(c: &mut Criterion) {
    benches::criterion_suite(c, "clip_encoders");
}

criterion_group!(suite, suite_fn);
criterion_main!(suite);
