//! Criterion suite for `adapters`: the cost of AID adapters inside the peers' small SVD UNet, beside the same UNet without them (cases: `benches/src/cases_misc.rs`).
// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

fn suite_fn(c: &mut Criterion) {
    benches::criterion_suite(c, "adapters");
}

criterion_group!(suite, suite_fn);
criterion_main!(suite);
