//! 3D convolution (CPU), see the kernels issue.
