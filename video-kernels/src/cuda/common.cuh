// Shared by every vidgen CUDA source: element types stored as raw bits so that NVRTC needs no
// CUDA headers (cuda_fp16.h / cuda_bf16.h are not part of NVRTC), converted with PTX `cvt` or
// bit operations; all arithmetic is f32.

typedef unsigned short vg_u16;

struct VgF32 {
    typedef float T;
    static __device__ __forceinline__ float load(const float* p, long long i) { return p[i]; }
    static __device__ __forceinline__ void store(float* p, long long i, float v) { p[i] = v; }
};

struct VgF16 {
    typedef vg_u16 T;
    static __device__ __forceinline__ float load(const vg_u16* p, long long i) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i]));
        return f;
    }
    static __device__ __forceinline__ void store(vg_u16* p, long long i, float v) {
        vg_u16 h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
        p[i] = h;
    }
};

struct VgBF16 {
    typedef vg_u16 T;
    static __device__ __forceinline__ float load(const vg_u16* p, long long i) {
        return __uint_as_float(((unsigned int)p[i]) << 16);
    }
    // Round to nearest even, NaN kept quiet (what `cvt.rn.bf16.f32` does on sm_80+, written
    // out so that older targets compile too).
    static __device__ __forceinline__ void store(vg_u16* p, long long i, float v) {
        unsigned int u = __float_as_uint(v);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            p[i] = (vg_u16)((u >> 16) | 0x40u);
        } else {
            u += 0x7fffu + ((u >> 16) & 1u);
            p[i] = (vg_u16)(u >> 16);
        }
    }
};

#define VG_NEG_INF (__int_as_float(0xff800000))
