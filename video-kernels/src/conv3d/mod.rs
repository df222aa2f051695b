//! 3D convolution for video tensors `[B, C, T, H, W]` (CPU), with autograd.
//!
//! [`conv3d`] computes exactly `torch.nn.functional.conv3d(x, w, bias, stride, padding, dilation,
//! groups)` (symmetric zero padding, weight in PyTorch layout `[Cout, Cin/groups, kT, kH, kW]`).
//! [`conv3d_reference`] computes the same from plain candle ops (pad, gather taps with
//! `index_select`, one matmul per group) and is the readable definition; tests compare the two.
//!
//! # Fast paths
//! `conv3d` picks one of four kernel families (all in f32, on contiguous CPU buffers, the bias
//! added inside every kernel as it writes the output: no extra pass, no extra buffer):
//! * **depthwise** (`groups == Cin`, `Cout = m·Cin`, including channel multipliers `m > 1`):
//!   one output-channel plane per task. With unit W stride on an AVX2 / AVX-512 CPU, a
//!   register-blocked correlation (`depthwise/`): the input plane is copied once into W-padded
//!   rows, and `R` output rows × `NV` vectors of 16 positions stay in registers over every tap as
//!   independent FMA chains (`depthwise/avx512.rs` in intrinsics, because LLVM splits the generic
//!   version's accumulators; the AVX2 build is the generic code re-compiled). Otherwise direct
//!   loops whose inner loop is a vectorisable sweep over a row of `W`. Backward: the unit-stride
//!   input gradient is the same correlation with the flipped taps (other strides scatter per
//!   input plane); the weight gradient is dot products per output channel, an AVX-512 kernel for
//!   unit W stride.
//! * **temporal** `(kT, 1, 1)` with unit spatial stride and no spatial padding, which includes
//!   **pointwise** `(1, 1, 1)`: one gemm per temporal tap, straight from the `[B, C, T, H, W]`
//!   buffer (all frames of a tap in one gemm when the temporal stride is 1).
//! * **general, direct** (one group, unit H and W stride, AVX-512: `direct/`): the input is
//!   copied once into a zero-padded channels-first buffer; output positions are numbered on the
//!   padded grid, so that every tap of 16 consecutive positions reads one contiguous vector, and
//!   a microkernel keeps 8 output channels × 3 vectors of positions in 24 registers over the
//!   whole reduction (`Cin·kT·kH·kW`), storing each output once. The unit-stride input gradient
//!   is the same kernel on `dy` with the flipped, transposed weight.
//! * **general, implicit gemm** (everything else): a zero-padded channels-last copy of the input
//!   (no im2col buffer); one gemm `[Cout/g, kW·Cin/g] · [kW·Cin/g, positions]` per `(kt, kh)`
//!   tap row, output tiles written back in parallel. The input gradient runs the same kernel on
//!   the zero-upsampled, padded `dy` with the flipped, transposed weight; the weight gradient is
//!   `dy · X_tapᵀ` per tile.
//!
//! Parallelism is rayon's global pool (the pool candle uses too): over channel planes, output
//! tiles, frames, or inside the gemm. CPU features are detected once ([`crate::simd`]).
//!
//! # Dtypes and autograd
//! f32, f16 and bf16 are accepted (all operands of one call share a dtype); f16 / bf16 are
//! converted to f32, computed with f32 accumulation, and the output is converted back. The kernel
//! is a [`candle_core::CustomOp2`] on `(x, w)`, or a [`candle_core::CustomOp3`] on
//! `(x, w, bias)` when there is a bias; its backward returns `dx`, `dw` and `dbias` (the bias
//! gradient summed per channel in f64 partial sums). Gradients are not themselves
//! differentiable (no double backward). Tensors on a non-CPU device, and every call under
//! [`crate::force_reference`], go through [`conv3d_reference`].
//!
//! # Safety
//! The kernels index slices with safe Rust (bounds-checked) except in three places:
//! * the matrix products, through the one checked wrapper [`crate::gemm`]: before each call it
//!   checks (checked arithmetic) that the largest index each strided view touches lies inside
//!   its slice and that the destination view maps distinct elements to distinct addresses; a
//!   failed check is an error, not a panic;
//! * the AVX-512 intrinsics kernels (`depthwise/avx512.rs`, `direct/avx512.rs`): called only
//!   when [`crate::simd::has_avx512f`] says so, after a check that the buffers cover every
//!   address they read and write (`covers`, or asserts that stop with a panic rather than read
//!   out of bounds);
//! * the depthwise plane kernels re-compiled with `#[target_feature(enable = "avx2,fma")]` (and
//!   AVX-512), called only on the matching [`crate::simd::level`]; their bodies are the same
//!   safe, slice-indexed code as the baseline version.
//!
//! Shapes are validated up front ([`conv3d`] returns a typed error naming both shapes for wrong
//! ranks, channel mismatches, groups that do not divide the channels, a dilated kernel
//! larger than the padded input, zero stride / dilation, or empty tensors). The tests run with
//! debug assertions on (the dev profile), so integer overflow in index arithmetic would panic
//! there rather than wrap.

mod dense;
mod depthwise;
mod direct;
mod geom;
mod op;

use candle_core::{DType, Tensor};
use vidgen_video_core::{Error, Result};

use geom::Geom;

/// Options of a 3D convolution, PyTorch semantics, each array in `[T, H, W]` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv3dOpts {
    /// Step between output positions, per dim (≥ 1).
    pub stride: [usize; 3],
    /// Zeros added on both sides of each dim.
    pub padding: [usize; 3],
    /// Spacing between kernel taps, per dim (≥ 1).
    pub dilation: [usize; 3],
    /// Channel groups: input channels `[g·Cin/G, (g+1)·Cin/G)` feed output channels
    /// `[g·Cout/G, (g+1)·Cout/G)`. `groups == Cin` is a depthwise convolution.
    pub groups: usize,
}

impl Default for Conv3dOpts {
    fn default() -> Self {
        Conv3dOpts {
            stride: [1, 1, 1],
            padding: [0, 0, 0],
            dilation: [1, 1, 1],
            groups: 1,
        }
    }
}

impl Conv3dOpts {
    /// Output size `[T', H', W']` for input `[T, H, W]` and kernel `[kT, kH, kW]`:
    /// `floor((n + 2p − d(k−1) − 1) / s) + 1` per dim, or `None` when the dilated kernel does not
    /// fit in the padded input or a stride / dilation is zero.
    pub fn output_size(&self, input: [usize; 3], kernel: [usize; 3]) -> Option<[usize; 3]> {
        let mut out = [0; 3];
        for d in 0..3 {
            let span = kernel[d].checked_sub(1)?.checked_mul(self.dilation[d])? + 1;
            let padded = input[d].checked_add(self.padding[d].checked_mul(2)?)?;
            if self.stride[d] == 0 || span > padded {
                return None;
            }
            out[d] = (padded - span) / self.stride[d] + 1;
        }
        Some(out)
    }
}

fn check_dtypes(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<()> {
    let float = |t: &Tensor, key: &str| -> Result<()> {
        if matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            Ok(())
        } else {
            Err(Error::DType {
                key: key.into(),
                expected: "f32, f16 or bf16".into(),
                found: format!("{:?}", t.dtype()),
            })
        }
    };
    float(x, "x")?;
    let mut others = vec![("weight", w)];
    if let Some(b) = bias {
        others.push(("bias", b));
    }
    for (key, t) in others {
        float(t, key)?;
        if t.dtype() != x.dtype() {
            return Err(Error::DType {
                key: key.into(),
                expected: format!("{:?} (the dtype of x)", x.dtype()),
                found: format!("{:?}", t.dtype()),
            });
        }
    }
    Ok(())
}

/// Validates every argument, returning the geometry.
fn validate(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &Conv3dOpts) -> Result<Geom> {
    let g = Geom::new(x.dims(), w.dims(), cfg)?;
    check_dtypes(x, w, bias)?;
    if let Some(b) = bias {
        if b.dims() != [g.cout] {
            return Err(Error::invalid(
                "bias",
                format!(
                    "bias must be [Cout] = [{}], found {:?} (weight shape {:?})",
                    g.cout,
                    b.dims(),
                    w.dims()
                ),
            ));
        }
    }
    if !x.device().same_device(w.device()) {
        return Err(Error::invalid(
            "weight",
            "x and weight are on different devices",
        ));
    }
    Ok(g)
}

fn add_bias(y: Tensor, bias: Option<&Tensor>, cout: usize) -> Result<Tensor> {
    Ok(match bias {
        Some(b) => y.broadcast_add(&b.to_dtype(DType::F32)?.reshape((1, cout, 1, 1, 1))?)?,
        None => y,
    })
}

/// 3D convolution, `torch.nn.functional.conv3d` semantics, with fast CPU kernels and backward.
///
/// Differentiable with respect to `x`, `w` and `bias` through candle's autograd.
///
/// # Shapes
/// * `x`: `[B, Cin, T, H, W]`
/// * `w`: `[Cout, Cin/groups, kT, kH, kW]` (PyTorch layout)
/// * `bias`: `[Cout]`
/// * returns `[B, Cout, T', H', W']`, each output dim `floor((n + 2p − d(k−1) − 1) / s) + 1`
///
/// f32, f16 or bf16 (one dtype for all operands); computed in f32, returned in the input dtype.
///
/// # Errors
/// A typed error naming both shapes for wrong ranks, channel mismatch, groups not dividing the
/// channels, a kernel larger than the padded input, zero stride or dilation, empty tensors, a
/// bias that is not `[Cout]`, or mismatched / non-float dtypes.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use vidgen_video_kernels::{conv3d, Conv3dOpts};
/// # fn main() -> vidgen_video_core::Result<()> {
/// let x = Tensor::randn(0f32, 1., (1, 4, 5, 8, 8), &Device::Cpu)?;
/// let w = Tensor::randn(0f32, 0.1, (4, 1, 3, 3, 3), &Device::Cpu)?; // depthwise
/// let opts = Conv3dOpts { padding: [1, 1, 1], groups: 4, ..Default::default() };
/// let y = conv3d(&x, &w, None, &opts)?;
/// assert_eq!(y.dims(), &[1, 4, 5, 8, 8]);
/// # Ok(())
/// # }
/// ```
pub fn conv3d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &Conv3dOpts) -> Result<Tensor> {
    let g = validate(x, w, bias, cfg)?;
    if !x.device().is_cpu() || crate::reference_forced() {
        return conv3d_reference(x, w, bias, cfg);
    }
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?.contiguous()?;
    let wf = w.to_dtype(DType::F32)?.contiguous()?;
    let y = match bias {
        Some(b) => {
            let bf = b.to_dtype(DType::F32)?.contiguous()?;
            xf.apply_op3(&wf, &bf, op::Conv3dBiasOp { geom: g })?
        }
        None => xf.apply_op2(&wf, op::Conv3dOp { geom: g })?,
    };
    Ok(y.to_dtype(dtype)?)
}

/// Options of a 2D convolution, PyTorch semantics, each array in `[H, W]` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dOpts {
    /// Step between output positions, per dim (≥ 1).
    pub stride: [usize; 2],
    /// Zeros added on both sides of each dim.
    pub padding: [usize; 2],
    /// Spacing between kernel taps, per dim (≥ 1).
    pub dilation: [usize; 2],
    /// Channel groups (as [`Conv3dOpts::groups`]).
    pub groups: usize,
}

impl Default for Conv2dOpts {
    fn default() -> Self {
        Conv2dOpts {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl Conv2dOpts {
    /// The same convolution as a [`Conv3dOpts`] over a one-frame video.
    pub fn as_3d(&self) -> Conv3dOpts {
        Conv3dOpts {
            stride: [1, self.stride[0], self.stride[1]],
            padding: [0, self.padding[0], self.padding[1]],
            dilation: [1, self.dilation[0], self.dilation[1]],
            groups: self.groups,
        }
    }
}

/// `torch.nn.functional.conv2d(x, w, bias, stride, padding, dilation, groups)` on the CPU
/// kernels of [`conv3d`] (a one-frame video with a `(1, kH, kW)` kernel), with autograd.
///
/// candle 0.11's own CPU `conv2d` gathers its im2col tiles element by element (most of the time
/// of a VAE decode goes there), takes one stride / padding for both axes, and its backward gets
/// the output padding wrong when `H ≠ W` with stride 2; this one has per-axis options, the
/// implicit-gemm kernel of [`conv3d`] (no im2col buffer) and a correct backward.
///
/// # Shapes
/// `x [B, Cin, H, W]`, `w [Cout, Cin/groups, kH, kW]`, `bias [Cout]` → `[B, Cout, H', W']`
/// with `H' = floor((H + 2p − d(kH − 1) − 1) / s) + 1` (same for `W'`).
///
/// # Errors
/// Inputs not of rank 4, and every error of [`conv3d`] (channel mismatches, groups, a kernel
/// larger than the padded input, zero stride / dilation, dtypes), with both shapes named.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use vidgen_video_kernels::{conv2d, Conv2dOpts};
/// # fn main() -> vidgen_video_core::Result<()> {
/// let x = Tensor::randn(0f32, 1., (2, 3, 9, 7), &Device::Cpu)?;
/// let w = Tensor::randn(0f32, 0.1, (8, 3, 3, 3), &Device::Cpu)?;
/// let opts = Conv2dOpts { stride: [2, 2], padding: [1, 1], ..Default::default() };
/// assert_eq!(conv2d(&x, &w, None, &opts)?.dims(), &[2, 8, 5, 4]);
/// # Ok(())
/// # }
/// ```
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: &Conv2dOpts) -> Result<Tensor> {
    check_rank4(x, w)?;
    let y = conv3d(&x.unsqueeze(2)?, &w.unsqueeze(2)?, bias, &cfg.as_3d())?;
    Ok(y.squeeze(2)?)
}

/// [`conv2d`] from plain candle ops: [`conv3d_reference`] on the one-frame video (the
/// definition [`conv2d`] is tested against).
///
/// # Shapes
/// As [`conv2d`].
///
/// # Errors
/// As [`conv2d`].
pub fn conv2d_reference(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv2dOpts,
) -> Result<Tensor> {
    check_rank4(x, w)?;
    let y = conv3d_reference(&x.unsqueeze(2)?, &w.unsqueeze(2)?, bias, &cfg.as_3d())?;
    Ok(y.squeeze(2)?)
}

fn check_rank4(x: &Tensor, w: &Tensor) -> Result<()> {
    if x.rank() != 4 || w.rank() != 4 {
        return Err(Error::invalid(
            "conv2d",
            format!(
                "expected x [B, Cin, H, W] and w [Cout, Cin/groups, kH, kW], found {:?} and {:?}",
                x.dims(),
                w.dims()
            ),
        ));
    }
    Ok(())
}

/// [`conv3d`] from plain candle ops: the readable definition it is tested against.
///
/// 1. zero-pad `T`, `H`, `W` by `padding`;
/// 2. for every tap `(kt, kh, kw)`, gather the input samples it meets,
///    `x_pad[.., o·s + k·d, ..]` for every output position (`index_select` per dim);
/// 3. stack the taps under the channels (`[B, Cin/g·kT·kH·kW, T'·H'·W']`, the same order as a
///    flattened weight row) and multiply by the weight `[Cout/g, Cin/g·kT·kH·kW]`, per group;
/// 4. add the bias.
///
/// Computed in f32 (memory `O(kT·kH·kW)` times the input: meant for tests and small shapes);
/// differentiable through candle's autograd.
///
/// # Shapes
/// As [`conv3d`]: `x [B, Cin, T, H, W]`, `w [Cout, Cin/groups, kT, kH, kW]`, `bias [Cout]`,
/// output `[B, Cout, T', H', W']`.
pub fn conv3d_reference(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv3dOpts,
) -> Result<Tensor> {
    let g = validate(x, w, bias, cfg)?;
    let dtype = x.dtype();
    let dev = x.device();
    let x = x.to_dtype(DType::F32)?;
    let w = w.to_dtype(DType::F32)?;
    // 1. zero padding
    let mut xp = x;
    for d in 0..3 {
        xp = xp.pad_with_zeros(d + 2, g.pad[d], g.pad[d])?;
    }
    // 2. the samples tap j of dim d meets: j·dilation + o·stride for each output o
    let index = |d: usize, j: usize| -> Result<Tensor> {
        let v: Vec<u32> = (0..g.out[d])
            .map(|o| (o * g.stride[d] + j * g.dil[d]) as u32)
            .collect();
        Ok(Tensor::from_vec(v, g.out[d], dev)?)
    };
    let taps = g.taps();
    let positions: usize = g.out.iter().product();
    let mut per_group = Vec::with_capacity(g.groups);
    for gi in 0..g.groups {
        let xg = xp.narrow(1, gi * g.cin_g, g.cin_g)?.contiguous()?;
        let mut cols = Vec::with_capacity(taps);
        for jt in 0..g.k[0] {
            let at = xg.index_select(&index(0, jt)?, 2)?;
            for jh in 0..g.k[1] {
                let ath = at.index_select(&index(1, jh)?, 3)?;
                for jw in 0..g.k[2] {
                    // [B, Cin/g, T', H', W']
                    cols.push(ath.index_select(&index(2, jw)?, 4)?);
                }
            }
        }
        // 3. [B, Cin/g, taps, T', H', W'] → [B, Cin/g·taps, T'·H'·W']
        let cols = Tensor::stack(&cols, 2)?.reshape((g.b, g.cin_g * taps, positions))?;
        let wg = w
            .narrow(0, gi * g.cout_g, g.cout_g)?
            .reshape((g.cout_g, g.cin_g * taps))?;
        per_group.push(wg.broadcast_matmul(&cols)?); // [B, Cout/g, T'·H'·W']
    }
    let y = Tensor::cat(&per_group, 1)?.reshape(g.out_dims().to_vec())?;
    // 4. bias
    Ok(add_bias(y, bias, g.cout)?.to_dtype(dtype)?)
}

/// Configuration of a 3D convolution layer (the arguments of PyTorch's `nn.Conv3d` other than
/// the channel counts and kernel size; the layer itself is `vidgen_video_nn::Conv3d`), each
/// array in `[T, H, W]` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv3dConfig {
    /// Zeros added on both sides of each dim.
    pub padding: [usize; 3],
    /// Step between output positions, per dim.
    pub stride: [usize; 3],
    /// Spacing between kernel taps, per dim.
    pub dilation: [usize; 3],
    /// Channel groups (`in_channels` for a depthwise convolution).
    pub groups: usize,
    /// Whether the layer has a bias (`nn.Conv3d(bias=True)`, the default). When `false`, a
    /// `bias` present in the checkpoint is still loaded.
    pub bias: bool,
}

impl Default for Conv3dConfig {
    fn default() -> Self {
        Conv3dConfig {
            padding: [0, 0, 0],
            stride: [1, 1, 1],
            dilation: [1, 1, 1],
            groups: 1,
            bias: true,
        }
    }
}

impl Conv3dConfig {
    /// The functional options of this configuration.
    pub fn opts(&self) -> Conv3dOpts {
        Conv3dOpts {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
        }
    }
}
