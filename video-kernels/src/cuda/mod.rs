//! CUDA kernels (feature `cuda`): flash-style attention forward and backward, depthwise 3D
//! convolution forward and backward, and temporal `(kT, 1, 1)` convolution, for f32, f16 and
//! bf16 storage with f32 accumulation.
//!
//! The kernels are CUDA C sources compiled **at run time by NVRTC** and launched through
//! `cudarc`'s driver API; both libraries are opened at run time, so this feature builds and
//! type-checks on machines without CUDA. [`compile_ptx`] / [`compile_cubin`] compile every
//! source without a GPU (CI does so for sm_80 and sm_90), and [`CudaKernels`] runs them on a
//! device.
//!
//! Buffers are `cudarc` device slices in the same contiguous layouts as the CPU kernels:
//! attention q / o `[B, Hq, Nq, D]`, k / v `[B, Hkv, Nk, D]`; convolution x `[B, C, T, H, W]`.
//! f16 / bf16 buffers are `CudaSlice<half::f16>` / `CudaSlice<half::bf16>`.
//!
//! Not yet wired into [`crate::attention()`] / [`crate::conv3d()`] for candle CUDA tensors: that
//! needs candle's own `cuda` feature (an nvcc toolchain at build time), which this workspace
//! does not enable.
//!
//! # Launch configurations
//! - Attention (every kernel): 128 threads = 32 rows × 4 lanes; grid `(⌈N/32⌉, B·H)` with
//!   N = Nq and H = Hq (forward, row dots, dQ) or N = Nk and H = Hkv (dK/dV, which loops over
//!   the Hq/Hkv query heads sharing a KV head). Static shared memory `2 · 32 · D · 4` bytes
//!   (32 KiB at D = 128). Head dims 32, 64, 80, 128.
//! - Depthwise forward / input gradient, temporal forward: 256 threads, one element per thread
//!   in a grid-stride loop, grid `min(⌈n/256⌉, 65535)`.
//! - Depthwise weight / bias gradients: 256 threads per block, one block per weight element
//!   (per output channel for the bias), reduced in shared memory.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchArgs,
    LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::{CompileOptions, Ptx};
use vidgen_video_core::{Error, Result};

const COMMON: &str = include_str!("common.cuh");
const ATTENTION: &str = include_str!("attention.cu");
const CONV3D: &str = include_str!("conv3d.cu");

/// The kernel sources by name (`attention`, `conv3d`); each is compiled as its own program.
pub const SOURCES: [&str; 2] = ["attention", "conv3d"];

/// Head dims the attention kernels are instantiated for.
pub const ATTENTION_HEAD_DIMS: [usize; 4] = [32, 64, 80, 128];

/// The full CUDA C text of source `name` (the shared prelude first), or `None`.
pub fn source(name: &str) -> Option<String> {
    let body = match name {
        "attention" => ATTENTION,
        "conv3d" => CONV3D,
        _ => return None,
    };
    Some(format!("{COMMON}\n{body}"))
}

/// Element types the kernels store (computation is f32).
pub trait CudaElem: DeviceRepr + ValidAsZeroBits + Copy + Unpin + 'static {
    /// Suffix of the kernel names (`f32`, `f16`, `bf16`).
    const NAME: &'static str;
}
impl CudaElem for f32 {
    const NAME: &'static str = "f32";
}
impl CudaElem for half::f16 {
    const NAME: &'static str = "f16";
}
impl CudaElem for half::bf16 {
    const NAME: &'static str = "bf16";
}

/// Whether NVRTC (`libnvrtc.so`) can be opened (`LD_LIBRARY_PATH` is searched).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the shared library; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver (`libcuda.so`) can be opened.
pub fn driver_available() -> bool {
    // SAFETY: as `nvrtc_available`.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

fn need_nvrtc() -> Result<()> {
    if nvrtc_available() {
        Ok(())
    } else {
        Err(Error::backend(
            "NVRTC",
            "libnvrtc.so (CUDA 13) not found: install the CUDA toolkit or the PyPI package \
             nvidia-cuda-nvrtc and put its lib directory on LD_LIBRARY_PATH",
        ))
    }
}

fn source_or_err(name: &str) -> Result<String> {
    source(name).ok_or_else(|| {
        Error::invalid(
            "cuda source",
            format!("no kernel source named `{name}` (have {SOURCES:?})"),
        )
    })
}

/// Compiles source `name` to PTX for a virtual architecture such as `compute_80` (what
/// [`CudaKernels`] loads; the driver JIT-compiles it for the device).
pub fn compile_ptx(name: &str, arch: &'static str) -> Result<Ptx> {
    need_nvrtc()?;
    let src = source_or_err(name)?;
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some(format!("{name}.cu")),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(src, opts)
        .map_err(|e| Error::backend(format!("NVRTC compile of {name} for {arch}"), e.to_string()))
}

/// Compiles source `name` all the way to machine code (a cubin) for a real architecture such as
/// `sm_90`, so that register allocation and instruction selection (ptxas) run too.
pub fn compile_cubin(name: &str, arch: &str) -> Result<Vec<u8>> {
    need_nvrtc()?;
    let src = source_or_err(name)?;
    let what = || format!("NVRTC compile of {name} for {arch}");
    let csrc = CString::new(src).map_err(|e| Error::backend(what(), e.to_string()))?;
    let cname =
        CString::new(format!("{name}.cu")).map_err(|e| Error::backend(what(), e.to_string()))?;
    let prog = cudarc::nvrtc::result::create_program(&csrc, Some(&cname))
        .map_err(|e| Error::backend(what(), format!("{e:?}")))?;
    let options = [format!("--gpu-architecture={arch}")];
    // SAFETY: `prog` was just created from `csrc` / `cname`, which outlive it, and is destroyed
    // exactly once below; the size queries precede the copies into buffers of that size.
    let result = unsafe {
        let compiled = cudarc::nvrtc::result::compile_program(prog, &options);
        let out = match compiled {
            Err(e) => {
                let log = cudarc::nvrtc::result::get_program_log(prog)
                    .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
                    .unwrap_or_default();
                Err(Error::backend(what(), format!("{e:?}\n{log}")))
            }
            Ok(()) => {
                let mut size = 0usize;
                let r = cudarc::nvrtc::sys::nvrtcGetCUBINSize(prog, &mut size);
                if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
                    Err(Error::backend(what(), format!("nvrtcGetCUBINSize: {r:?}")))
                } else {
                    let mut buf = vec![0u8; size];
                    let r =
                        cudarc::nvrtc::sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char);
                    if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
                        Err(Error::backend(what(), format!("nvrtcGetCUBIN: {r:?}")))
                    } else {
                        Ok(buf)
                    }
                }
            }
        };
        let _ = cudarc::nvrtc::result::destroy_program(prog);
        out
    };
    result
}

fn drv(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::backend(format!("CUDA driver ({what})"), e.to_string())
}

/// Attention problem size: q `[b, hq, nq, d]`, k / v `[b, hkv, nk, d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    /// Batch.
    pub b: usize,
    /// Query heads (a multiple of `hkv`).
    pub hq: usize,
    /// Key / value heads.
    pub hkv: usize,
    /// Query rows.
    pub nq: usize,
    /// Key rows.
    pub nk: usize,
    /// Head dim (one of [`ATTENTION_HEAD_DIMS`]).
    pub d: usize,
}

/// An additive f32 mask on the device: element `(b, h, i, j)` at
/// `b·strides[0] + h·strides[1] + i·strides[2] + j` (a zero stride broadcasts that dim).
#[derive(Debug, Clone, Copy)]
pub struct CudaMask<'a> {
    /// The mask values.
    pub data: &'a CudaSlice<f32>,
    /// Element strides of the batch, head and query dims.
    pub strides: [usize; 3],
}

/// Options of the CUDA attention kernels (those of [`crate::AttentionOpts`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CudaAttnOpts<'a> {
    /// Score multiplier; `None` is `1/√D`.
    pub scale: Option<f32>,
    /// Bottom-right aligned causal mask.
    pub causal: bool,
    /// Additive mask.
    pub mask: Option<CudaMask<'a>>,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct AttnArgs {
    hq: i32,
    hkv: i32,
    nq: i32,
    nk: i32,
    scale: f32,
    causal: i32,
    mask_sb: i64,
    mask_sh: i64,
    mask_sq: i64,
}
// SAFETY: plain `repr(C)` data laid out as the kernels' `VgAttnArgs`.
unsafe impl DeviceRepr for AttnArgs {}

/// Depthwise conv3d geometry: x `[b, c, t, h, w]`, weight `[c·m, 1, k…]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwConvShape {
    /// Batch.
    pub b: usize,
    /// Input channels.
    pub c: usize,
    /// Channel multiplier (output channels `c·m`).
    pub m: usize,
    /// Input `[T, H, W]`.
    pub input: [usize; 3],
    /// Kernel `[kT, kH, kW]`.
    pub kernel: [usize; 3],
    /// Stride, padding, dilation as [`crate::Conv3dOpts`].
    pub stride: [usize; 3],
    /// Zero padding per side.
    pub padding: [usize; 3],
    /// Tap spacing.
    pub dilation: [usize; 3],
}

impl DwConvShape {
    /// Output `[T', H', W']`, or an error when the kernel does not fit.
    pub fn output(&self) -> Result<[usize; 3]> {
        let opts = crate::Conv3dOpts {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.c,
        };
        opts.output_size(self.input, self.kernel).ok_or_else(|| {
            Error::invalid(
                "depthwise conv3d",
                format!(
                    "kernel {:?} (dilation {:?}) does not fit input {:?} padded by {:?}, or a stride is 0",
                    self.kernel, self.dilation, self.input, self.padding
                ),
            )
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ConvArgs([i32; 21]);
// SAFETY: 21 `int`s, as the kernels' `VgConvArgs`.
unsafe impl DeviceRepr for ConvArgs {}

/// Temporal `(kT, 1, 1)` conv3d geometry: x `[b, cin, t, h, w]`, weight `[cout, cin/g, kT, 1, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TconvShape {
    /// Batch.
    pub b: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Channel groups.
    pub groups: usize,
    /// Input frames.
    pub t: usize,
    /// Input height × width.
    pub hw: usize,
    /// Temporal taps.
    pub kt: usize,
    /// Temporal stride.
    pub stride: usize,
    /// Temporal zero padding per side.
    pub padding: usize,
    /// Temporal dilation.
    pub dilation: usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct TconvArgs([i32; 11]);
// SAFETY: 11 `int`s, as the kernels' `VgTconvArgs`.
unsafe impl DeviceRepr for TconvArgs {}

fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::invalid(what, format!("{v} exceeds the kernels' 32-bit index range")))
}

fn check_len<T>(what: &str, s: &CudaSlice<T>, want: usize, shape: &[usize]) -> Result<()> {
    if s.len() != want {
        return Err(Error::invalid(
            what,
            format!(
                "buffer of {} elements, shape {shape:?} needs {want}",
                s.len()
            ),
        ));
    }
    Ok(())
}

const ELEMWISE_THREADS: u32 = 256;

fn elementwise_cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(ELEMWISE_THREADS as usize).clamp(1, 65535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (ELEMWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `(dx, dw, dbias)` of [`CudaKernels::depthwise_conv3d_backward`].
pub type DwConvGrads<T> = (CudaSlice<T>, CudaSlice<T>, Option<CudaSlice<T>>);

/// A CUDA device with the kernels compiled for it (lazily, once per source).
pub struct CudaKernels {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: &'static str,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl std::fmt::Debug for CudaKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaKernels")
            .field("ordinal", &self.ctx.ordinal())
            .field("arch", &self.arch)
            .finish()
    }
}

impl CudaKernels {
    /// Opens device `ordinal`. Errors (never panics) when the driver or NVRTC is missing, the
    /// device does not exist, or it is older than sm_80.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !driver_available() {
            return Err(Error::backend(
                "CUDA driver",
                "libcuda.so not found (no NVIDIA driver)",
            ));
        }
        need_nvrtc()?;
        let ctx = CudaContext::new(ordinal).map_err(drv("open device"))?;
        let (major, _) = ctx
            .compute_capability()
            .map_err(drv("compute capability"))?;
        let arch = match major {
            m if m >= 9 => "compute_90",
            8 => "compute_80",
            m => {
                return Err(Error::backend(
                    "CUDA driver",
                    format!("device {ordinal} has compute capability {m}.x; the kernels need sm_80 or newer"),
                ))
            }
        };
        let stream = ctx.default_stream();
        Ok(CudaKernels {
            ctx,
            stream,
            arch,
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// The stream every kernel is launched on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device's name.
    pub fn device_name(&self) -> Result<String> {
        self.ctx.name().map_err(drv("device name"))
    }

    fn function(&self, source: &'static str, name: &str) -> Result<CudaFunction> {
        let module = {
            let mut mods = self
                .modules
                .lock()
                .map_err(|_| Error::backend("CUDA", "module cache poisoned by a panic"))?;
            match mods.get(source) {
                Some(m) => m.clone(),
                None => {
                    let ptx = compile_ptx(source, self.arch)?;
                    let m = self.ctx.load_module(ptx).map_err(drv("load module"))?;
                    mods.insert(source, m.clone());
                    m
                }
            }
        };
        module.load_function(name).map_err(drv(name))
    }

    fn attn_args(&self, s: &AttnShape, o: &CudaAttnOpts) -> Result<AttnArgs> {
        if !ATTENTION_HEAD_DIMS.contains(&s.d) {
            return Err(Error::Unsupported {
                field: "attention head dim".into(),
                value: s.d.to_string(),
                supported: format!("{ATTENTION_HEAD_DIMS:?}"),
            });
        }
        if s.hkv == 0 || !s.hq.is_multiple_of(s.hkv) {
            return Err(Error::invalid(
                "attention heads",
                format!("Hq = {} is not a multiple of Hkv = {}", s.hq, s.hkv),
            ));
        }
        if s.b * s.hq > 65535 {
            return Err(Error::invalid(
                "attention",
                format!("B·Hq = {} exceeds 65535 blocks", s.b * s.hq),
            ));
        }
        let scale = o.scale.unwrap_or(1.0 / (s.d as f32).sqrt());
        let [sb, sh, sq] = o.mask.map(|m| m.strides).unwrap_or([0; 3]);
        if let Some(m) = o.mask {
            if s.b > 0 && s.hq > 0 && s.nq > 0 && s.nk > 0 {
                let last = (s.b - 1) * sb + (s.hq - 1) * sh + (s.nq - 1) * sq + s.nk;
                if last > m.data.len() {
                    return Err(Error::invalid(
                        "attention mask",
                        format!(
                            "{} elements, strides {:?} over [{}, {}, {}, {}] reach {last}",
                            m.data.len(),
                            m.strides,
                            s.b,
                            s.hq,
                            s.nq,
                            s.nk
                        ),
                    ));
                }
            }
        }
        Ok(AttnArgs {
            hq: to_i32("Hq", s.hq)?,
            hkv: to_i32("Hkv", s.hkv)?,
            nq: to_i32("Nq", s.nq)?,
            nk: to_i32("Nk", s.nk)?,
            scale,
            causal: i32::from(o.causal),
            mask_sb: sb as i64,
            mask_sh: sh as i64,
            mask_sq: sq as i64,
        })
    }

    /// Attention forward: returns `o` `[B, Hq, Nq, D]` and the per-row log-sum-exp of the
    /// scaled, masked scores `[B, Hq, Nq]` (f32, `-inf` for rows that see no key), which
    /// [`CudaKernels::attention_backward`] takes.
    pub fn attention_forward<T: CudaElem>(
        &self,
        q: &CudaSlice<T>,
        k: &CudaSlice<T>,
        v: &CudaSlice<T>,
        s: AttnShape,
        opts: &CudaAttnOpts,
    ) -> Result<(CudaSlice<T>, CudaSlice<f32>)> {
        let args = self.attn_args(&s, opts)?;
        check_len(
            "attention q",
            q,
            s.b * s.hq * s.nq * s.d,
            &[s.b, s.hq, s.nq, s.d],
        )?;
        check_len(
            "attention k",
            k,
            s.b * s.hkv * s.nk * s.d,
            &[s.b, s.hkv, s.nk, s.d],
        )?;
        check_len(
            "attention v",
            v,
            s.b * s.hkv * s.nk * s.d,
            &[s.b, s.hkv, s.nk, s.d],
        )?;
        let mut o = self
            .stream
            .alloc_zeros::<T>(q.len())
            .map_err(drv("alloc"))?;
        let mut lse = self
            .stream
            .alloc_zeros::<f32>(s.b * s.hq * s.nq)
            .map_err(drv("alloc"))?;
        if s.nq == 0 || s.b * s.hq == 0 {
            return Ok((o, lse));
        }
        let f = self.function("attention", &format!("vg_attn_fwd_{}_d{}", T::NAME, s.d))?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(q).arg(k).arg(v);
        arg_or_null(&mut l, opts.mask.map(|m| m.data));
        l.arg(&mut o).arg(&mut lse).arg(&args);
        // SAFETY: argument order and types match `vg_attn_fwd_*`; every buffer was checked to
        // hold the elements the shape implies, and the grid covers exactly [⌈Nq/32⌉, B·Hq].
        unsafe { l.launch(attn_cfg(s.nq, s.b * s.hq)) }.map_err(drv("attention forward"))?;
        Ok((o, lse))
    }

    /// Attention backward: `(dq, dk, dv)` from the forward's inputs, output `o`, `lse` and the
    /// output gradient `dout` (layouts as the forward; dk / dv sum over the query heads that
    /// share a KV head).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_backward<T: CudaElem>(
        &self,
        q: &CudaSlice<T>,
        k: &CudaSlice<T>,
        v: &CudaSlice<T>,
        o: &CudaSlice<T>,
        lse: &CudaSlice<f32>,
        dout: &CudaSlice<T>,
        s: AttnShape,
        opts: &CudaAttnOpts,
    ) -> Result<(CudaSlice<T>, CudaSlice<T>, CudaSlice<T>)> {
        let args = self.attn_args(&s, opts)?;
        let qs = [s.b, s.hq, s.nq, s.d];
        let ks = [s.b, s.hkv, s.nk, s.d];
        check_len("attention q", q, qs.iter().product(), &qs)?;
        check_len("attention k", k, ks.iter().product(), &ks)?;
        check_len("attention v", v, ks.iter().product(), &ks)?;
        check_len("attention o", o, qs.iter().product(), &qs)?;
        check_len("attention dout", dout, qs.iter().product(), &qs)?;
        check_len("attention lse", lse, s.b * s.hq * s.nq, &qs[..3])?;
        let mut dq = self
            .stream
            .alloc_zeros::<T>(q.len())
            .map_err(drv("alloc"))?;
        let mut dk = self
            .stream
            .alloc_zeros::<T>(k.len())
            .map_err(drv("alloc"))?;
        let mut dv = self
            .stream
            .alloc_zeros::<T>(v.len())
            .map_err(drv("alloc"))?;
        if s.nq == 0 || s.nk == 0 || s.b * s.hq == 0 {
            return Ok((dq, dk, dv));
        }
        let mut delta = self
            .stream
            .alloc_zeros::<f32>(s.b * s.hq * s.nq)
            .map_err(drv("alloc"))?;
        let sfx = format!("{}_d{}", T::NAME, s.d);
        let f = self.function("attention", &format!("vg_attn_bwd_delta_{sfx}"))?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(o).arg(dout).arg(&mut delta).arg(&args);
        // SAFETY: as the forward; `delta` holds B·Hq·Nq floats.
        unsafe { l.launch(attn_cfg(s.nq, s.b * s.hq)) }
            .map_err(drv("attention backward (row dots)"))?;

        let f = self.function("attention", &format!("vg_attn_bwd_dkdv_{sfx}"))?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(q).arg(k).arg(v);
        arg_or_null(&mut l, opts.mask.map(|m| m.data));
        l.arg(dout)
            .arg(lse)
            .arg(&delta)
            .arg(&mut dk)
            .arg(&mut dv)
            .arg(&args);
        // SAFETY: as the forward, over key rows: grid [⌈Nk/32⌉, B·Hkv].
        unsafe { l.launch(attn_cfg(s.nk, s.b * s.hkv)) }
            .map_err(drv("attention backward (dK, dV)"))?;

        let f = self.function("attention", &format!("vg_attn_bwd_dq_{sfx}"))?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(q).arg(k).arg(v);
        arg_or_null(&mut l, opts.mask.map(|m| m.data));
        l.arg(dout).arg(lse).arg(&delta).arg(&mut dq).arg(&args);
        // SAFETY: as the forward.
        unsafe { l.launch(attn_cfg(s.nq, s.b * s.hq)) }.map_err(drv("attention backward (dQ)"))?;
        Ok((dq, dk, dv))
    }

    fn conv_args(&self, g: &DwConvShape) -> Result<(ConvArgs, [usize; 3])> {
        let out = g.output()?;
        let v = [
            g.b,
            g.c,
            g.m,
            g.input[0],
            g.input[1],
            g.input[2],
            out[0],
            out[1],
            out[2],
            g.kernel[0],
            g.kernel[1],
            g.kernel[2],
            g.stride[0],
            g.stride[1],
            g.stride[2],
            g.padding[0],
            g.padding[1],
            g.padding[2],
            g.dilation[0],
            g.dilation[1],
            g.dilation[2],
        ];
        let mut a = [0i32; 21];
        for (dst, &x) in a.iter_mut().zip(v.iter()) {
            *dst = to_i32("depthwise conv3d size", x)?;
        }
        Ok((ConvArgs(a), out))
    }

    /// Depthwise conv3d forward: y `[B, C·M, T', H', W']`.
    pub fn depthwise_conv3d_forward<T: CudaElem>(
        &self,
        x: &CudaSlice<T>,
        w: &CudaSlice<T>,
        bias: Option<&CudaSlice<T>>,
        g: &DwConvShape,
    ) -> Result<CudaSlice<T>> {
        let (args, out) = self.conv_args(g)?;
        let co = g.c * g.m;
        let taps: usize = g.kernel.iter().product();
        let xs = [g.b, g.c, g.input[0], g.input[1], g.input[2]];
        check_len("depthwise conv3d x", x, xs.iter().product(), &xs)?;
        check_len(
            "depthwise conv3d weight",
            w,
            co * taps,
            &[co, 1, g.kernel[0], g.kernel[1], g.kernel[2]],
        )?;
        if let Some(b) = bias {
            check_len("depthwise conv3d bias", b, co, &[co])?;
        }
        let n = g.b * co * out.iter().product::<usize>();
        let mut y = self.stream.alloc_zeros::<T>(n).map_err(drv("alloc"))?;
        if n == 0 {
            return Ok(y);
        }
        let f = self.function("conv3d", &format!("vg_dw_fwd_{}", T::NAME))?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(w);
        arg_or_null(&mut l, bias);
        l.arg(&mut y).arg(&args);
        // SAFETY: argument order and types match `vg_dw_fwd_*`; buffer sizes were checked; the
        // grid-stride loop stays below n.
        unsafe { l.launch(elementwise_cfg(n)) }.map_err(drv("depthwise conv3d forward"))?;
        Ok(y)
    }

    /// Depthwise conv3d backward: `(dx, dw, dbias)` (dbias when `with_bias`).
    pub fn depthwise_conv3d_backward<T: CudaElem>(
        &self,
        x: &CudaSlice<T>,
        w: &CudaSlice<T>,
        dy: &CudaSlice<T>,
        g: &DwConvShape,
        with_bias: bool,
    ) -> Result<DwConvGrads<T>> {
        let (args, out) = self.conv_args(g)?;
        let co = g.c * g.m;
        let taps: usize = g.kernel.iter().product();
        let xs = [g.b, g.c, g.input[0], g.input[1], g.input[2]];
        let ys = [g.b, co, out[0], out[1], out[2]];
        check_len("depthwise conv3d x", x, xs.iter().product(), &xs)?;
        check_len(
            "depthwise conv3d weight",
            w,
            co * taps,
            &[co, 1, g.kernel[0], g.kernel[1], g.kernel[2]],
        )?;
        check_len("depthwise conv3d dy", dy, ys.iter().product(), &ys)?;
        let mut dx = self
            .stream
            .alloc_zeros::<T>(x.len())
            .map_err(drv("alloc"))?;
        let mut dw = self
            .stream
            .alloc_zeros::<T>(w.len())
            .map_err(drv("alloc"))?;
        let mut db = if with_bias {
            Some(self.stream.alloc_zeros::<T>(co).map_err(drv("alloc"))?)
        } else {
            None
        };
        if x.is_empty() || dy.is_empty() {
            return Ok((dx, dw, db));
        }
        let f = self.function("conv3d", &format!("vg_dw_bwd_input_{}", T::NAME))?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(dy).arg(w).arg(&mut dx).arg(&args);
        // SAFETY: as the forward, over input elements.
        unsafe { l.launch(elementwise_cfg(x.len())) }
            .map_err(drv("depthwise conv3d input gradient"))?;

        let f = self.function("conv3d", &format!("vg_dw_bwd_weight_{}", T::NAME))?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(dy).arg(&mut dw).arg(&args);
        let cfg = LaunchConfig {
            grid_dim: (to_i32("weight elements", co * taps)? as u32, 1, 1),
            block_dim: (ELEMWISE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: one block per weight element, 256 threads as the kernel's reduction assumes.
        unsafe { l.launch(cfg) }.map_err(drv("depthwise conv3d weight gradient"))?;

        if let Some(db) = db.as_mut() {
            let f = self.function("conv3d", &format!("vg_bias_bwd_{}", T::NAME))?;
            let per = out.iter().product::<usize>() as i64;
            let (b, con) = (to_i32("batch", g.b)?, to_i32("channels", co)?);
            let mut l = self.stream.launch_builder(&f);
            l.arg(dy).arg(db).arg(&b).arg(&con).arg(&per);
            let cfg = LaunchConfig {
                grid_dim: (con as u32, 1, 1),
                block_dim: (ELEMWISE_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: one block per output channel; dy holds B·C·M·per elements.
            unsafe { l.launch(cfg) }.map_err(drv("depthwise conv3d bias gradient"))?;
        }
        Ok((dx, dw, db))
    }

    /// Temporal `(kT, 1, 1)` conv3d forward: y `[B, Cout, T', H, W]`.
    pub fn temporal_conv3d_forward<T: CudaElem>(
        &self,
        x: &CudaSlice<T>,
        w: &CudaSlice<T>,
        bias: Option<&CudaSlice<T>>,
        g: &TconvShape,
    ) -> Result<CudaSlice<T>> {
        if g.groups == 0 || !g.cin.is_multiple_of(g.groups) || !g.cout.is_multiple_of(g.groups) {
            return Err(Error::invalid(
                "temporal conv3d groups",
                format!(
                    "{} groups do not divide Cin = {} and Cout = {}",
                    g.groups, g.cin, g.cout
                ),
            ));
        }
        let opts = crate::Conv3dOpts {
            stride: [g.stride, 1, 1],
            padding: [g.padding, 0, 0],
            dilation: [g.dilation, 1, 1],
            groups: g.groups,
        };
        let to = opts.output_size([g.t, 1, 1], [g.kt, 1, 1]).ok_or_else(|| {
            Error::invalid(
                "temporal conv3d",
                format!("{} taps do not fit {} frames", g.kt, g.t),
            )
        })?[0];
        check_len(
            "temporal conv3d x",
            x,
            g.b * g.cin * g.t * g.hw,
            &[g.b, g.cin, g.t, g.hw],
        )?;
        check_len(
            "temporal conv3d weight",
            w,
            g.cout * (g.cin / g.groups) * g.kt,
            &[g.cout, g.cin / g.groups, g.kt, 1, 1],
        )?;
        if let Some(b) = bias {
            check_len("temporal conv3d bias", b, g.cout, &[g.cout])?;
        }
        let v = [
            g.b, g.cin, g.cout, g.groups, g.t, g.hw, to, g.kt, g.stride, g.padding, g.dilation,
        ];
        let mut a = [0i32; 11];
        for (dst, &x) in a.iter_mut().zip(v.iter()) {
            *dst = to_i32("temporal conv3d size", x)?;
        }
        let args = TconvArgs(a);
        let n = g.b * g.cout * to * g.hw;
        let mut y = self.stream.alloc_zeros::<T>(n).map_err(drv("alloc"))?;
        if n == 0 {
            return Ok(y);
        }
        let f = self.function("conv3d", &format!("vg_tconv_fwd_{}", T::NAME))?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(x).arg(w);
        arg_or_null(&mut l, bias);
        l.arg(&mut y).arg(&args);
        // SAFETY: argument order and types match `vg_tconv_fwd_*`; sizes checked above.
        unsafe { l.launch(elementwise_cfg(n)) }.map_err(drv("temporal conv3d forward"))?;
        Ok(y)
    }
}

/// The device address kernels read as a null pointer (no mask, no bias).
static NULL_PTR: u64 = 0;

/// Pushes `s`, or a null pointer for an absent optional buffer.
fn arg_or_null<'a, T>(l: &mut LaunchArgs<'a>, s: Option<&'a CudaSlice<T>>) {
    match s {
        Some(s) => l.arg(s),
        None => l.arg(&NULL_PTR),
    };
}

fn attn_cfg(rows: usize, heads: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(32) as u32, heads as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}
