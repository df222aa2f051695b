//! Fused nearest-code search. The kernel lives in `vidgen_video_kernels` (module docs of
//! [`vidgen_video_kernels::nearest_code`]: the register-blocked small-dim path, the gemm path,
//! ties to the lowest id, the reference twin); it is re-exported here for this crate's users.

pub use vidgen_video_kernels::{nearest_code, nearest_code_reference, PreparedCodebook, SMALL_DIM};
