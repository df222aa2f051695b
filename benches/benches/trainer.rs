//! Criterion suite for `trainer`: one training step (forward + backward + AdamW) of the peers' small UNets (cases: `benches/src/cases_trainer.rs`).
// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

fn suite(c: &mut Criterion) {
    benches::criterion_suite(c, "trainer");
}

criterion_group!(benches, suite);
criterion_main!(benches);
