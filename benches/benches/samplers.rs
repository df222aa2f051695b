//! Criterion suite for `samplers`: one solver step on an SVD-sized latent, network excluded (cases: `benches/src/cases_misc.rs`).
// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

fn suite_fn(c: &mut Criterion) {
    benches::criterion_suite(c, "samplers");
}

criterion_group!(suite, suite_fn);
criterion_main!(suite);
