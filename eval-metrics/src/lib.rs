#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

#[cfg(feature = "clip")]
pub mod clip;
mod embed;
mod frame;
mod frechet;
mod i3d;
mod inception;
mod kid;
mod linalg;
pub mod npy;
pub(crate) mod pickle;
mod pool;
mod probe;
mod resize;
pub mod shard;
mod stats;
pub mod weights;

/// A per-layer callback of the feature networks: `(layer name, its output)`.
pub(crate) type LayerHook<'a> =
    dyn FnMut(&str, &candle_core::Tensor) -> vidgen_video_core::Result<()> + 'a;

pub use embed::{
    clip_score, frame_consistency, frame_consistency_with, ImageEmbedder, LpipsBackbone, LpipsHead,
    LPIPS_SCALE, LPIPS_SHIFT,
};
pub use frame::{
    colour_distribution_consistency, colourfulness, js_divergence, psnr, ssim, DataRange,
    PsnrReport, SsimFlavour, SsimReport,
};
pub use frechet::{
    frechet_distance, frechet_distance_features, frechet_distance_with, EpsOffset, FrechetOptions,
    SqrtMethod,
};
pub use i3d::{i3d_preprocess, I3d, I3dConfig, I3D_ENDPOINTS};
pub use inception::{
    fid_preprocess, FidInceptionV3, InceptionV3, InceptionV3Config, INCEPTION_LAYERS,
};
pub use kid::{
    kernel_distance, kernel_distance_with_subsets, mmd2_unbiased, KidOptions, KidResult,
    NumpyRandomState, PolynomialKernel,
};
pub use probe::{
    classification_accuracy, wilson_interval, Accuracy, LinearProbe, ProbeOptions, Z95,
};
pub use stats::{FeatureStats, GaussianStats};
