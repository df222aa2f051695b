#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod aid;
pub mod folder;
pub mod image;
pub mod planner;
pub mod svd;
// InstructPix2Pix, AnimateDiff, VIDiff (issue 28).
pub mod animatediff;
pub mod denoise;
pub mod ip2p;
// Video-LaVIT (issue 30).
pub mod lavit;
pub mod prompt;
// Vid-ICL (issue 33).
pub mod vidicl;
pub mod vidiff;
// VIMI (issue 32).
pub mod vimi;

pub use aid::{
    dual_guidance, AidCall, AidConfig, AidOutput, AidPipeline, AidWeights, StagePlanner,
    TemplatePlanner, TextEncoderSource,
};
pub use folder::{ComponentReport, ComponentSpec, PipelineFolder, TensorOverrides};
pub use image::{rgb_to_tensor, tensor_to_rgb, ImageNormalize};
pub use planner::{parse_steps, LlmPlanner};
pub use svd::{DecodeMode, SvdCall, SvdOutput, SvdPipeline, SvdTrace};
// InstructPix2Pix, AnimateDiff, VIDiff (issue 28).
pub use animatediff::{AnimateDiffCall, AnimateDiffOutput, AnimateDiffPipeline};
pub use denoise::{DenoiseTrace, Guidance};
pub use ip2p::{InstructPix2PixPipeline, Ip2pCall, Ip2pOutput};
pub use prompt::PromptEncoder;
pub use vidicl::{
    load_video_lm, prepare_video, VidIclCall, VidIclOutput, VidIclPipeline, VidIclTimings,
};
pub use vidiff::{VidiffCall, VidiffOutput, VidiffPipeline};

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use vidgen_video_core::Result;

/// Progress of a denoising loop, passed to the step callback after each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// The step just taken (0-based).
    pub index: usize,
    /// Steps in all.
    pub total: usize,
    /// The scheduler's timestep of this step.
    pub timestep: f64,
}

/// Standard normal noise of `shape` from a ChaCha8 stream seeded by `seed` (f32).
///
/// # Errors
/// Candle errors building the tensor.
pub fn randn_seeded(seed: u64, shape: &[usize], device: &Device) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}
