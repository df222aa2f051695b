// Flash-style attention, forward and backward (vidgen, compiled at run time by NVRTC after
// common.cuh).
//
// Layouts (contiguous): q, o, dq, do [B, Hq, Nq, D]; k, v, dk, dv [B, Hkv, Nk, D]; lse and the
// backward's row dots [B, Hq, Nq] f32; the optional additive mask is f32 with element
// (b, h, i, j) at b*mask_sb + h*mask_sh + i*mask_sq + j (a zero stride broadcasts).
// Causal masking is bottom-right aligned: row i sees keys j <= i + (Nk - Nq).
//
// Work split: a block of 128 threads owns 32 rows (query rows in the forward and dQ kernels,
// key rows in the dK/dV kernel); each row is owned by a group of 4 adjacent lanes, lane g
// holding head dims g, g+4, g+8, ... in registers, and a row's dot products are finished with
// two xor-shuffles inside the group. The other operand streams through shared memory in tiles
// of 32 rows as f32, read as broadcasts (the 8 groups of a warp read the same row, the 4 lanes
// of a group 4 consecutive words): no bank conflicts. The softmax is the online one (running
// max and sum per row), so no N x N buffer exists; the backward recomputes probabilities from
// the saved log-sum-exp, FlashAttention-2 style, with dK/dV and dQ in separate kernels so that
// nothing needs atomics (each output row is owned by exactly one thread group).

#define VG_GROUP 4
#define VG_ROWS 32
#define VG_TILE 32
#define VG_THREADS (VG_GROUP * VG_ROWS)

struct VgAttnArgs {
    int hq;
    int hkv;
    int nq;
    int nk;
    float scale;
    int causal;
    long long mask_sb;
    long long mask_sh;
    long long mask_sq;
};

static __device__ __forceinline__ float vg_group_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    return x;
}

// Loads rows [r0, r0 + VG_TILE) of a [rows, D] matrix at `base` into shared f32, zero past `n`.
template <typename E, int D>
static __device__ __forceinline__ void vg_load_tile(float (*dst)[D], const typename E::T* src,
                                                    long long base, int r0, int n) {
    for (int idx = threadIdx.x; idx < VG_TILE * D; idx += blockDim.x) {
        int j = idx / D, d = idx % D;
        dst[j][d] = (r0 + j < n) ? E::load(src, base + (long long)(r0 + j) * D + d) : 0.f;
    }
}

template <typename E, int D>
static __device__ void vg_attn_fwd(const typename E::T* __restrict__ q,
                                   const typename E::T* __restrict__ k,
                                   const typename E::T* __restrict__ v,
                                   const float* __restrict__ mask, typename E::T* __restrict__ o,
                                   float* __restrict__ lse, VgAttnArgs a) {
    constexpr int PER = D / VG_GROUP;
    __shared__ float ks[VG_TILE][D];
    __shared__ float vs[VG_TILE][D];
    const int g = threadIdx.x % VG_GROUP;
    const int row = blockIdx.x * VG_ROWS + threadIdx.x / VG_GROUP;
    const int bh = blockIdx.y;
    const int b = bh / a.hq, h = bh % a.hq;
    const int hk = h / (a.hq / a.hkv);
    const bool active = row < a.nq;
    const long long qoff = ((long long)bh * a.nq + (active ? row : 0)) * D;
    const long long kvbase = ((long long)b * a.hkv + hk) * (long long)a.nk * D;
    const int off = a.nk - a.nq;
    const float* mrow =
        mask ? mask + b * a.mask_sb + h * a.mask_sh + (long long)(active ? row : 0) * a.mask_sq
             : nullptr;

    float qr[PER], acc[PER];
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        qr[i] = active ? E::load(q, qoff + g + VG_GROUP * i) * a.scale : 0.f;
        acc[i] = 0.f;
    }
    float m = VG_NEG_INF, l = 0.f;
    // Block-uniform end of the key loop: past the last visible key of the block's last row.
    int kend = a.nk;
    if (a.causal) {
        int last = min(a.nq - 1, (int)blockIdx.x * VG_ROWS + VG_ROWS - 1);
        kend = max(0, min(a.nk, last + off + 1));
    }
    for (int k0 = 0; k0 < kend; k0 += VG_TILE) {
        __syncthreads();
        vg_load_tile<E, D>(ks, k, kvbase, k0, a.nk);
        vg_load_tile<E, D>(vs, v, kvbase, k0, a.nk);
        __syncthreads();
        float s[VG_TILE];
        float tmax = VG_NEG_INF;
#pragma unroll
        for (int j = 0; j < VG_TILE; ++j) {
            float dot = 0.f;
#pragma unroll
            for (int i = 0; i < PER; ++i) dot += qr[i] * ks[j][g + VG_GROUP * i];
            dot = vg_group_sum(dot);
            const int key = k0 + j;
            const bool ok = active && key < a.nk && (!a.causal || key <= row + off);
            if (ok && mrow) dot += mrow[key];
            s[j] = ok ? dot : VG_NEG_INF;
            tmax = fmaxf(tmax, s[j]);
        }
        const float mnew = fmaxf(m, tmax);
        if (mnew == VG_NEG_INF) continue;  // nothing visible to this row yet
        const float alpha = expf(m - mnew);
        float psum = 0.f;
#pragma unroll
        for (int j = 0; j < VG_TILE; ++j) {
            s[j] = expf(s[j] - mnew);
            psum += s[j];
        }
        l = l * alpha + psum;
#pragma unroll
        for (int i = 0; i < PER; ++i) acc[i] *= alpha;
#pragma unroll
        for (int j = 0; j < VG_TILE; ++j) {
#pragma unroll
            for (int i = 0; i < PER; ++i) acc[i] += s[j] * vs[j][g + VG_GROUP * i];
        }
        m = mnew;
    }
    if (active) {
        const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
        for (int i = 0; i < PER; ++i) E::store(o, qoff + g + VG_GROUP * i, acc[i] * inv);
        if (g == 0) lse[(long long)bh * a.nq + row] = l > 0.f ? m + logf(l) : VG_NEG_INF;
    }
}

// delta[b, h, i] = sum_d dO[b, h, i, d] * O[b, h, i, d]: the softmax backward's row term.
template <typename E, int D>
static __device__ void vg_attn_bwd_delta(const typename E::T* __restrict__ o,
                                         const typename E::T* __restrict__ dout,
                                         float* __restrict__ delta, VgAttnArgs a) {
    constexpr int PER = D / VG_GROUP;
    const int g = threadIdx.x % VG_GROUP;
    const int row = blockIdx.x * VG_ROWS + threadIdx.x / VG_GROUP;
    const int bh = blockIdx.y;
    const bool active = row < a.nq;
    const long long off = ((long long)bh * a.nq + (active ? row : 0)) * D;
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const long long idx = off + g + VG_GROUP * i;
        s += active ? E::load(o, idx) * E::load(dout, idx) : 0.f;
    }
    s = vg_group_sum(s);
    if (active && g == 0) delta[(long long)bh * a.nq + row] = s;
}

// dK, dV for 32 key rows of one KV head, summed over the query heads that share it (GQA).
template <typename E, int D>
static __device__ void vg_attn_bwd_dkdv(const typename E::T* __restrict__ q,
                                        const typename E::T* __restrict__ k,
                                        const typename E::T* __restrict__ v,
                                        const float* __restrict__ mask,
                                        const typename E::T* __restrict__ dout,
                                        const float* __restrict__ lse,
                                        const float* __restrict__ delta,
                                        typename E::T* __restrict__ dk,
                                        typename E::T* __restrict__ dv, VgAttnArgs a) {
    constexpr int PER = D / VG_GROUP;
    __shared__ float qs[VG_TILE][D];
    __shared__ float dos[VG_TILE][D];
    __shared__ float ls[VG_TILE];
    __shared__ float ds_[VG_TILE];
    const int g = threadIdx.x % VG_GROUP;
    const int key = blockIdx.x * VG_ROWS + threadIdx.x / VG_GROUP;
    const int bhk = blockIdx.y;
    const int b = bhk / a.hkv, hk = bhk % a.hkv;
    const int rep = a.hq / a.hkv;
    const bool active = key < a.nk;
    const long long koff = ((long long)bhk * a.nk + (active ? key : 0)) * D;
    const int off = a.nk - a.nq;
    float kr[PER], vr[PER], dkr[PER], dvr[PER];
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        kr[i] = active ? E::load(k, koff + g + VG_GROUP * i) : 0.f;
        vr[i] = active ? E::load(v, koff + g + VG_GROUP * i) : 0.f;
        dkr[i] = 0.f;
        dvr[i] = 0.f;
    }
    // Block-uniform first query row that can see the block's first key.
    int qstart = 0;
    if (a.causal) qstart = max(0, (int)blockIdx.x * VG_ROWS - off);
    qstart = (qstart / VG_TILE) * VG_TILE;
    for (int h = hk * rep; h < (hk + 1) * rep; ++h) {
        const int bh = b * a.hq + h;
        const long long qbase = (long long)bh * a.nq * D;
        for (int q0 = qstart; q0 < a.nq; q0 += VG_TILE) {
            __syncthreads();
            vg_load_tile<E, D>(qs, q, qbase, q0, a.nq);
            vg_load_tile<E, D>(dos, dout, qbase, q0, a.nq);
            if (threadIdx.x < VG_TILE) {
                const int r = q0 + threadIdx.x;
                ls[threadIdx.x] = r < a.nq ? lse[(long long)bh * a.nq + r] : VG_NEG_INF;
                ds_[threadIdx.x] = r < a.nq ? delta[(long long)bh * a.nq + r] : 0.f;
            }
            __syncthreads();
            for (int r = 0; r < VG_TILE; ++r) {
                const int qi = q0 + r;
                float s = 0.f, dp = 0.f;
#pragma unroll
                for (int i = 0; i < PER; ++i) {
                    s += qs[r][g + VG_GROUP * i] * kr[i];
                    dp += dos[r][g + VG_GROUP * i] * vr[i];
                }
                s = vg_group_sum(s) * a.scale;
                dp = vg_group_sum(dp);
                const bool ok = active && qi < a.nq && ls[r] != VG_NEG_INF &&
                                (!a.causal || key <= qi + off);
                if (ok && mask) s += mask[b * a.mask_sb + h * a.mask_sh + qi * a.mask_sq + key];
                const float p = ok ? expf(s - ls[r]) : 0.f;
                const float dsc = p * (dp - ds_[r]) * a.scale;
#pragma unroll
                for (int i = 0; i < PER; ++i) {
                    dvr[i] += p * dos[r][g + VG_GROUP * i];
                    dkr[i] += dsc * qs[r][g + VG_GROUP * i];
                }
            }
        }
    }
    if (active) {
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            E::store(dk, koff + g + VG_GROUP * i, dkr[i]);
            E::store(dv, koff + g + VG_GROUP * i, dvr[i]);
        }
    }
}

// dQ for 32 query rows of one query head.
template <typename E, int D>
static __device__ void vg_attn_bwd_dq(const typename E::T* __restrict__ q,
                                      const typename E::T* __restrict__ k,
                                      const typename E::T* __restrict__ v,
                                      const float* __restrict__ mask,
                                      const typename E::T* __restrict__ dout,
                                      const float* __restrict__ lse,
                                      const float* __restrict__ delta,
                                      typename E::T* __restrict__ dq, VgAttnArgs a) {
    constexpr int PER = D / VG_GROUP;
    __shared__ float ks[VG_TILE][D];
    __shared__ float vs[VG_TILE][D];
    const int g = threadIdx.x % VG_GROUP;
    const int row = blockIdx.x * VG_ROWS + threadIdx.x / VG_GROUP;
    const int bh = blockIdx.y;
    const int b = bh / a.hq, h = bh % a.hq;
    const int hk = h / (a.hq / a.hkv);
    const bool active = row < a.nq;
    const long long qoff = ((long long)bh * a.nq + (active ? row : 0)) * D;
    const long long kvbase = ((long long)b * a.hkv + hk) * (long long)a.nk * D;
    const int off = a.nk - a.nq;
    const float l = active ? lse[(long long)bh * a.nq + row] : VG_NEG_INF;
    const float dl = active ? delta[(long long)bh * a.nq + row] : 0.f;
    float qr[PER], dor[PER], dqr[PER];
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        qr[i] = active ? E::load(q, qoff + g + VG_GROUP * i) : 0.f;
        dor[i] = active ? E::load(dout, qoff + g + VG_GROUP * i) : 0.f;
        dqr[i] = 0.f;
    }
    int kend = a.nk;
    if (a.causal) {
        int last = min(a.nq - 1, (int)blockIdx.x * VG_ROWS + VG_ROWS - 1);
        kend = max(0, min(a.nk, last + off + 1));
    }
    for (int k0 = 0; k0 < kend; k0 += VG_TILE) {
        __syncthreads();
        vg_load_tile<E, D>(ks, k, kvbase, k0, a.nk);
        vg_load_tile<E, D>(vs, v, kvbase, k0, a.nk);
        __syncthreads();
        for (int j = 0; j < VG_TILE; ++j) {
            const int key = k0 + j;
            float s = 0.f, dp = 0.f;
#pragma unroll
            for (int i = 0; i < PER; ++i) {
                s += qr[i] * ks[j][g + VG_GROUP * i];
                dp += dor[i] * vs[j][g + VG_GROUP * i];
            }
            s = vg_group_sum(s) * a.scale;
            dp = vg_group_sum(dp);
            const bool ok =
                active && key < a.nk && l != VG_NEG_INF && (!a.causal || key <= row + off);
            if (ok && mask) s += mask[b * a.mask_sb + h * a.mask_sh + row * a.mask_sq + key];
            const float p = ok ? expf(s - l) : 0.f;
            const float dsc = p * (dp - dl) * a.scale;
#pragma unroll
            for (int i = 0; i < PER; ++i) dqr[i] += dsc * ks[j][g + VG_GROUP * i];
        }
    }
    if (active) {
#pragma unroll
        for (int i = 0; i < PER; ++i) E::store(dq, qoff + g + VG_GROUP * i, dqr[i]);
    }
}

// extern "C" entry points: vg_attn_{fwd,bwd_delta,bwd_dkdv,bwd_dq}_{f32,f16,bf16}_d{32,64,80,128}.
#define VG_ATTN_ENTRIES(E, NAME, D)                                                           \
    extern "C" __global__ void __launch_bounds__(VG_THREADS)                                  \
        vg_attn_fwd_##NAME##_d##D(const E::T* q, const E::T* k, const E::T* v,                \
                                  const float* mask, E::T* o, float* lse, VgAttnArgs a) {     \
        vg_attn_fwd<E, D>(q, k, v, mask, o, lse, a);                                          \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(VG_THREADS)                                  \
        vg_attn_bwd_delta_##NAME##_d##D(const E::T* o, const E::T* dout, float* delta,        \
                                        VgAttnArgs a) {                                       \
        vg_attn_bwd_delta<E, D>(o, dout, delta, a);                                           \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(VG_THREADS) vg_attn_bwd_dkdv_##NAME##_d##D(  \
        const E::T* q, const E::T* k, const E::T* v, const float* mask, const E::T* dout,     \
        const float* lse, const float* delta, E::T* dk, E::T* dv, VgAttnArgs a) {             \
        vg_attn_bwd_dkdv<E, D>(q, k, v, mask, dout, lse, delta, dk, dv, a);                   \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(VG_THREADS) vg_attn_bwd_dq_##NAME##_d##D(    \
        const E::T* q, const E::T* k, const E::T* v, const float* mask, const E::T* dout,     \
        const float* lse, const float* delta, E::T* dq, VgAttnArgs a) {                       \
        vg_attn_bwd_dq<E, D>(q, k, v, mask, dout, lse, delta, dq, a);                         \
    }

#define VG_ATTN_DIMS(E, NAME)     \
    VG_ATTN_ENTRIES(E, NAME, 32)  \
    VG_ATTN_ENTRIES(E, NAME, 64)  \
    VG_ATTN_ENTRIES(E, NAME, 80)  \
    VG_ATTN_ENTRIES(E, NAME, 128)

VG_ATTN_DIMS(VgF32, f32)
VG_ATTN_DIMS(VgF16, f16)
VG_ATTN_DIMS(VgBF16, bf16)
