#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod buffer;
mod error;
mod finite;
pub mod hooks;
mod layout;
pub mod loading;
mod pool;
mod shape;
mod traits;

pub use error::{Error, Result};
pub use finite::check_finite;
pub use hooks::{AttentionSite, HookPoint, HookSite, NoHooks, UNetHooks};
pub use layout::contiguous;
pub use loading::{load_tracked, tracked_var_builder, LoadReport, ModelDir, TensorSource};
pub use pool::in_pool;
pub use shape::{TokenGrid, VideoShape};
pub use traits::{Codec, CodecStrides, CondDrop, Conditioning, Denoiser};
