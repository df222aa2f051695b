//! Criterion suite for `eval-metrics`: the registry cases of `benches/src/cases_models.rs`
//! (Fréchet distance and KID at d = 2048 as the numpy / torch-fidelity peers compute them,
//! PSNR + SSIM on a 16-frame clip, and the real-weight FID Inception-v3 / FVD I3D networks,
//! which are skipped with a message when `fetch_weights` has not been run). PyTorch figures
//! beside ours: `bench-report --filter fid --filter kid --filter inception --filter i3d`.
// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

fn suite_fn(c: &mut Criterion) {
    benches::criterion_suite(c, "eval_metrics");
}

criterion_group!(suite, suite_fn);
criterion_main!(suite);
