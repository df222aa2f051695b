// Depthwise 3D convolution (forward, input / weight / bias gradients) and temporal (kT, 1, 1)
// convolution forward (vidgen, compiled at run time by NVRTC after common.cuh).
//
// Layouts (contiguous): x, dx [B, C, T, H, W]; depthwise weight [C*M, 1, kT, kH, kW] (channel
// multiplier M: output channel co reads input channel co / M); y, dy [B, C*M, T', H', W'].
// Temporal: weight [Cout, Cin/G, kT, 1, 1], y [B, Cout, T', H, W] (spatial stride 1, no spatial
// padding). Accumulation is f32; index arithmetic is 64-bit.
//
// Work split: forward and input gradient use one thread per output / input element in a
// grid-stride loop (consecutive threads walk the innermost W axis, so loads and stores
// coalesce, and the taps of neighbouring threads overlap in L1); the weight and bias gradients
// use one block per weight element (per channel for the bias), each block reducing over
// B x T' x H' x W' with a shared-memory tree, so nothing needs atomics.

struct VgConvArgs {
    int b, c, m;        // batch, input channels, channel multiplier
    int t, h, w;        // input size
    int to, ho, wo;     // output size
    int kt, kh, kw;     // kernel size
    int st, sh, sw;     // stride
    int pt, ph, pw;     // padding
    int dt, dh, dw;     // dilation
};

template <typename E>
static __device__ void vg_dw_fwd(const typename E::T* __restrict__ x,
                                 const typename E::T* __restrict__ w,
                                 const typename E::T* __restrict__ bias,
                                 typename E::T* __restrict__ y, VgConvArgs g) {
    const int co_n = g.c * g.m;
    const long long n = (long long)g.b * co_n * g.to * g.ho * g.wo;
    const int taps = g.kt * g.kh * g.kw;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        long long r = idx;
        const int ow = r % g.wo; r /= g.wo;
        const int oh = r % g.ho; r /= g.ho;
        const int ot = r % g.to; r /= g.to;
        const int co = r % co_n;
        const int bi = r / co_n;
        const int ci = co / g.m;
        const long long xb = ((long long)bi * g.c + ci) * g.t * g.h * g.w;
        const long long wb = (long long)co * taps;
        float acc = bias ? E::load(bias, co) : 0.f;
        for (int a = 0; a < g.kt; ++a) {
            const int it = ot * g.st - g.pt + a * g.dt;
            if (it < 0 || it >= g.t) continue;
            for (int bb = 0; bb < g.kh; ++bb) {
                const int ih = oh * g.sh - g.ph + bb * g.dh;
                if (ih < 0 || ih >= g.h) continue;
                for (int cc = 0; cc < g.kw; ++cc) {
                    const int iw = ow * g.sw - g.pw + cc * g.dw;
                    if (iw < 0 || iw >= g.w) continue;
                    acc += E::load(x, xb + ((long long)it * g.h + ih) * g.w + iw) *
                           E::load(w, wb + (a * g.kh + bb) * g.kw + cc);
                }
            }
        }
        E::store(y, idx, acc);
    }
}

// Output index along one axis that tap `k` of input position `i` lands on, or -1.
static __device__ __forceinline__ int vg_src_out(int i, int k, int s, int p, int d, int n_out) {
    const int num = i + p - k * d;
    if (num < 0 || num % s != 0) return -1;
    const int o = num / s;
    return o < n_out ? o : -1;
}

template <typename E>
static __device__ void vg_dw_bwd_input(const typename E::T* __restrict__ dy,
                                       const typename E::T* __restrict__ w,
                                       typename E::T* __restrict__ dx, VgConvArgs g) {
    const int co_n = g.c * g.m;
    const long long n = (long long)g.b * g.c * g.t * g.h * g.w;
    const int taps = g.kt * g.kh * g.kw;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        long long r = idx;
        const int iw = r % g.w; r /= g.w;
        const int ih = r % g.h; r /= g.h;
        const int it = r % g.t; r /= g.t;
        const int ci = r % g.c;
        const int bi = r / g.c;
        float acc = 0.f;
        for (int mm = 0; mm < g.m; ++mm) {
            const int co = ci * g.m + mm;
            const long long yb = ((long long)bi * co_n + co) * g.to * g.ho * g.wo;
            const long long wb = (long long)co * taps;
            for (int a = 0; a < g.kt; ++a) {
                const int ot = vg_src_out(it, a, g.st, g.pt, g.dt, g.to);
                if (ot < 0) continue;
                for (int bb = 0; bb < g.kh; ++bb) {
                    const int oh = vg_src_out(ih, bb, g.sh, g.ph, g.dh, g.ho);
                    if (oh < 0) continue;
                    for (int cc = 0; cc < g.kw; ++cc) {
                        const int ow = vg_src_out(iw, cc, g.sw, g.pw, g.dw, g.wo);
                        if (ow < 0) continue;
                        acc += E::load(dy, yb + ((long long)ot * g.ho + oh) * g.wo + ow) *
                               E::load(w, wb + (a * g.kh + bb) * g.kw + cc);
                    }
                }
            }
        }
        E::store(dx, idx, acc);
    }
}

#define VG_RED_THREADS 256

static __device__ __forceinline__ float vg_block_sum(float v) {
    __shared__ float red[VG_RED_THREADS];
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = VG_RED_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    return red[0];
}

// One block per weight element (co, a, bb, cc): dw = sum over b, ot, oh, ow of dy * x.
template <typename E>
static __device__ void vg_dw_bwd_weight(const typename E::T* __restrict__ x,
                                        const typename E::T* __restrict__ dy,
                                        typename E::T* __restrict__ dw, VgConvArgs g) {
    const int taps = g.kt * g.kh * g.kw;
    const int co = blockIdx.x / taps;
    const int tap = blockIdx.x % taps;
    const int a = tap / (g.kh * g.kw), bb = (tap / g.kw) % g.kh, cc = tap % g.kw;
    const int ci = co / g.m;
    const int co_n = g.c * g.m;
    const long long per = (long long)g.to * g.ho * g.wo;
    const long long n = (long long)g.b * per;
    float acc = 0.f;
    for (long long idx = threadIdx.x; idx < n; idx += blockDim.x) {
        long long r = idx;
        const int ow = r % g.wo; r /= g.wo;
        const int oh = r % g.ho; r /= g.ho;
        const int ot = r % g.to;
        const int bi = r / g.to;
        const int it = ot * g.st - g.pt + a * g.dt;
        const int ih = oh * g.sh - g.ph + bb * g.dh;
        const int iw = ow * g.sw - g.pw + cc * g.dw;
        if (it < 0 || it >= g.t || ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
        acc += E::load(dy, ((long long)bi * co_n + co) * per + ((long long)ot * g.ho + oh) * g.wo + ow) *
               E::load(x, (((long long)bi * g.c + ci) * g.t + it) * g.h * g.w + (long long)ih * g.w + iw);
    }
    acc = vg_block_sum(acc);
    if (threadIdx.x == 0) E::store(dw, (long long)co * taps + tap, acc);
}

// One block per output channel: dbias = sum over b, ot, oh, ow of dy.
template <typename E>
static __device__ void vg_bias_bwd(const typename E::T* __restrict__ dy,
                                   typename E::T* __restrict__ db, int b, int co_n,
                                   long long per) {
    const int co = blockIdx.x;
    float acc = 0.f;
    for (long long idx = threadIdx.x; idx < (long long)b * per; idx += blockDim.x) {
        const long long bi = idx / per, e = idx % per;
        acc += E::load(dy, (bi * co_n + co) * per + e);
    }
    acc = vg_block_sum(acc);
    if (threadIdx.x == 0) E::store(db, co, acc);
}

struct VgTconvArgs {
    int b, cin, cout, groups;
    int t, hw;          // input frames, H*W
    int to, kt;         // output frames, temporal taps
    int st, pt, dt;     // temporal stride, padding, dilation
};

// Temporal (kT, 1, 1) convolution: one thread per output element.
template <typename E>
static __device__ void vg_tconv_fwd(const typename E::T* __restrict__ x,
                                    const typename E::T* __restrict__ w,
                                    const typename E::T* __restrict__ bias,
                                    typename E::T* __restrict__ y, VgTconvArgs g) {
    const int cig = g.cin / g.groups, cog = g.cout / g.groups;
    const long long n = (long long)g.b * g.cout * g.to * g.hw;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        long long r = idx;
        const int s = r % g.hw; r /= g.hw;
        const int ot = r % g.to; r /= g.to;
        const int co = r % g.cout;
        const int bi = r / g.cout;
        const int gi = co / cog;
        float acc = bias ? E::load(bias, co) : 0.f;
        for (int a = 0; a < g.kt; ++a) {
            const int it = ot * g.st - g.pt + a * g.dt;
            if (it < 0 || it >= g.t) continue;
            for (int ci = 0; ci < cig; ++ci) {
                const int cin = gi * cig + ci;
                acc += E::load(x, (((long long)bi * g.cin + cin) * g.t + it) * g.hw + s) *
                       E::load(w, ((long long)co * cig + ci) * g.kt + a);
            }
        }
        E::store(y, idx, acc);
    }
}

#define VG_CONV_ENTRIES(E, NAME)                                                                \
    extern "C" __global__ void vg_dw_fwd_##NAME(const E::T* x, const E::T* w, const E::T* bias, \
                                                E::T* y, VgConvArgs g) {                        \
        vg_dw_fwd<E>(x, w, bias, y, g);                                                         \
    }                                                                                           \
    extern "C" __global__ void vg_dw_bwd_input_##NAME(const E::T* dy, const E::T* w, E::T* dx,  \
                                                      VgConvArgs g) {                           \
        vg_dw_bwd_input<E>(dy, w, dx, g);                                                       \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(VG_RED_THREADS)                                \
        vg_dw_bwd_weight_##NAME(const E::T* x, const E::T* dy, E::T* dw, VgConvArgs g) {        \
        vg_dw_bwd_weight<E>(x, dy, dw, g);                                                      \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(VG_RED_THREADS)                                \
        vg_bias_bwd_##NAME(const E::T* dy, E::T* db, int b, int co_n, long long per) {          \
        vg_bias_bwd<E>(dy, db, b, co_n, per);                                                   \
    }                                                                                           \
    extern "C" __global__ void vg_tconv_fwd_##NAME(const E::T* x, const E::T* w,                \
                                                   const E::T* bias, E::T* y, VgTconvArgs g) {  \
        vg_tconv_fwd<E>(x, w, bias, y, g);                                                      \
    }

VG_CONV_ENTRIES(VgF32, f32)
VG_CONV_ENTRIES(VgF16, f16)
VG_CONV_ENTRIES(VgBF16, bf16)
