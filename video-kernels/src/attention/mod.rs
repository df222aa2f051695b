//! Fused attention (CPU), see the kernels issue.
