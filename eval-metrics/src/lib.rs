//! # eval-metrics
//!
//! Video generation metrics (planned; see the two eval-metrics issues): streaming f64 feature
//! statistics with merge, Fréchet distance (FID / FVD), KID / KVD, PSNR, SSIM, LPIPS, CLIP score,
//! frame consistency, colourfulness, CDC, probe / classification accuracy, and the Inception-v3
//! and I3D feature extractors loading user-supplied weights.
