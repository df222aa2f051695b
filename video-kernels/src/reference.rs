//! Forcing the `*_reference` twins in place of the fast paths, for a scope or a whole process.
//!
//! Every fused op of this crate (attention, conv3d / conv2d, linear, rms_norm / add_rms_norm,
//! group_norm, layer_norm, swiglu / geglu / gelu_erf / silu, nearest_code and
//! [`PreparedCodebook::nearest`](crate::PreparedCodebook::nearest)) asks [`reference_forced`]
//! after checking its arguments; when it answers `true`, the op returns exactly what its twin
//! returns. Two switches turn it on:
//!
//! - [`force_reference`] returns a guard; the twins are forced while at least one guard lives.
//!   The switch is **process-wide** (a counter, not a thread-local): models run their forwards
//!   on rayon worker threads, and a thread-local switch would not reach them. A test that holds
//!   a guard therefore affects every test running at the same time in its process: put such
//!   tests in their own test binary (a file of their own under `tests/`), or hold the guard in
//!   one test only.
//! - the environment variable [`REFERENCE_ENV`] (`VIDGEN_REFERENCE_KERNELS=1`, also `true`,
//!   `yes`, `on`), read once, on the first call of [`reference_forced`].
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use vidgen_video_kernels::{force_reference, silu, silu_reference};
//! let x = Tensor::randn(0f32, 1.0, (4, 33), &Device::Cpu)?;
//! let (fast, twin) = {
//!     let _g = force_reference();
//!     (silu(&x)?, silu_reference(&x)?)
//! };
//! assert_eq!(fast.to_vec2::<f32>()?, twin.to_vec2::<f32>()?);
//! # Ok::<(), vidgen_video_core::Error>(())
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The environment variable that forces the twins for the whole process when set to `1`
/// (or `true`, `yes`, `on`; case-insensitive). Read once.
pub const REFERENCE_ENV: &str = "VIDGEN_REFERENCE_KERNELS";

/// Live [`ReferenceGuard`]s.
static GUARDS: AtomicUsize = AtomicUsize::new(0);
/// The environment switch, read on first use.
static FROM_ENV: OnceLock<bool> = OnceLock::new();

/// Keeps the reference twins forced until dropped (see [`force_reference`]).
#[derive(Debug)]
#[must_use = "the twins are forced only while the guard lives"]
pub struct ReferenceGuard {
    _private: (),
}

impl Drop for ReferenceGuard {
    fn drop(&mut self) {
        GUARDS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Forces every fused op of this crate to run its `*_reference` twin until the returned guard
/// is dropped, on every thread of the process (guards nest; the twins stay forced while any
/// lives).
pub fn force_reference() -> ReferenceGuard {
    GUARDS.fetch_add(1, Ordering::SeqCst);
    ReferenceGuard { _private: () }
}

/// Whether the fused ops run their twins now: a [`ReferenceGuard`] lives, or
/// [`REFERENCE_ENV`] was set when first read.
#[inline]
pub fn reference_forced() -> bool {
    GUARDS.load(Ordering::Relaxed) > 0 || *FROM_ENV.get_or_init(env_switch)
}

fn env_switch() -> bool {
    std::env::var(REFERENCE_ENV).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}
