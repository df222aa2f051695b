//! Criterion suite (being written).
use criterion::{criterion_group, criterion_main, Criterion};

fn none(_c: &mut Criterion) {}

criterion_group!(benches, none);
criterion_main!(benches);
