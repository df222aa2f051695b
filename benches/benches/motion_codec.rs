//! Criterion suite for `motion-codec`: block matching on 256×256 frames (diamond, full, half-pel) and the Video-LaVIT motion pipeline (cases: `benches/src/cases_misc.rs`).
// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

fn suite_fn(c: &mut Criterion) {
    benches::criterion_suite(c, "motion_codec");
}

criterion_group!(suite, suite_fn);
criterion_main!(suite);
