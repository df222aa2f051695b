//! Criterion suite for `diffusion-unet3d`: one denoiser evaluation of the SVD UNet (parity
//! fixture, and the peers' `unet_svd_small` config), of the inflated SD `UNet3DConditionModel`
//! (`unet3d_small`), and the SVD temporal VAE decoding 25 frames in one pass and streamed one
//! frame at a time. Cases: `benches/src/cases_diffusion.rs`; diffusers figures beside ours:
//! `bench-report --filter unet --filter vae`.
// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

fn suite_fn(c: &mut Criterion) {
    benches::criterion_suite(c, "diffusion_unet3d");
}

criterion_group!(suite, suite_fn);
criterion_main!(suite);
