// Shared helpers for the mamba-gguf CUDA kernels. Self-contained: no toolkit
// headers. Under MAMBA_EMU the same source is compiled as C++ by the host
// compiler against emu/cuda_emu.h (see cuda/README.md).
#ifndef MAMBA_COMMON_CUH
#define MAMBA_COMMON_CUH

#ifdef MAMBA_EMU
#include "cuda_emu.h"
#endif

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;

#define WARP 32
#define FULL_MASK 0xffffffffu

// fp16 bits -> f32, exact (subnormals, inf and NaN included).
static __device__ __forceinline__ float f16_to_f32(u32 h) {
    u32 sign = (h & 0x8000u) << 16;
    u32 exp = (h >> 10) & 0x1fu;
    u32 man = h & 0x3ffu;
    u32 bits;
    if (exp == 0x1fu) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        // subnormal: value = man * 2^-24, exact in f32
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return __uint_as_float(bits);
}

// fp16 bits -> f32 in one instruction (cvt.f32.f16: exact for every finite
// value and infinity, no branches, so the loads around it can all be in
// flight at once); the emulator uses f16_to_f32. For the matvec's scales,
// where a NaN gives a NaN whatever its payload.
static __device__ __forceinline__ float f16_to_f32_cvt(u32 h) {
#ifdef MAMBA_EMU
    return f16_to_f32(h);
#else
    float r;
    asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"((unsigned short)h));
    return r;
#endif
}

static __device__ __forceinline__ float bf16_to_f32(u32 h) { return __uint_as_float((h & 0xffffu) << 16); }

// Little-endian loads from byte pointers. `a2`: the address is 2-byte aligned
// (every ggml block size is even); two 16-bit loads make one word.
static __device__ __forceinline__ u32 ld_u16(const u8* p) { return *(const u16*)p; }
static __device__ __forceinline__ u32 ld_u32_a2(const u8* p) {
    const u16* q = (const u16*)p;
    return (u32)q[0] | ((u32)q[1] << 16);
}

// Sixteen bytes in one load (LDG.128): `p` must be 16-byte aligned (the
// emulator checks it, as the GPU would fault).
struct alignas(16) U4 {
    u32 x, y, z, w;
};
static __device__ __forceinline__ U4 ld_u4(const void* p) {
#ifdef MAMBA_EMU
    if ((uintptr_t)p & 15u) {
        emu::fault("misaligned 16-byte load");
        return U4{0, 0, 0, 0};
    }
#endif
    return *(const U4*)p;
}

static __device__ __forceinline__ void st_u4(void* p, U4 v) {
#ifdef MAMBA_EMU
    if ((uintptr_t)p & 15u) {
        emu::fault("misaligned 16-byte store");
        return;
    }
#endif
    *(U4*)p = v;
}

// Four signed byte products added to c (sm_61+ on the device). NVRTC has no
// __dp4a without the toolkit's headers, so the device form is the PTX
// instruction itself; the emulator's __dp4a is its definition in C++.
static __device__ __forceinline__ int dot4(int a, int b, int c) {
#ifdef MAMBA_EMU
    return __dp4a(a, b, c);
#else
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
#endif
}

// prmt.b32 in its default mode: byte i of the result is byte (s >> 4i) & 7
// of the eight bytes b:a (a's bytes are 0..3), or, where bit 3 of that
// selector nibble is set, that byte's sign bit in all eight bits. One
// instruction on the device; the emulator spells it out.
static __device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 s) {
#ifdef MAMBA_EMU
    const unsigned long long ab = ((unsigned long long)b << 32) | a;
    u32 r = 0;
    for (int i = 0; i < 4; i++) {
        const u32 sel = (s >> (4 * i)) & 0xfu;
        u32 byte = (u32)(ab >> (8 * (sel & 7u))) & 0xffu;
        if (sel & 8u) byte = (byte & 0x80u) ? 0xffu : 0u;
        r |= byte << (8 * i);
    }
    return r;
#else
    u32 r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(s));
    return r;
#endif
}

// The IQ4 codebook (ggml-common.h's kvalues_iq4nl: -127, -104, -83, -65,
// -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113) as four little-endian
// words of signed bytes.
#define IQ4_K0 0xBFAD9881u
#define IQ4_K1 0xF6EADDCFu
#define IQ4_K2 0x26190D01u
#define IQ4_K3 0x71594535u

// Four codebook look-ups: `x` holds four indices, one per byte (0..15);
// the result holds their signed levels, byte for byte. The indices are
// packed into the nibbles of a selector; each half of the codebook gives
// a candidate per byte, and bit 3 of each index picks between them.
static __device__ __forceinline__ u32 iq4_lookup4(u32 x) {
    const u32 t = x | (x >> 4);
    const u32 sel = (t & 0xffu) | ((t >> 8) & 0xff00u);
    const u32 lo = prmt(IQ4_K0, IQ4_K1, sel & 0x7777u);
    const u32 hi = prmt(IQ4_K2, IQ4_K3, sel & 0x7777u);
    return prmt(lo, hi, 0x3210u | ((sel & 0x8888u) >> 1));
}

// Bytewise x - k for bytes x < 0x80 and k <= 0x80, no borrow across bytes.
static __device__ __forceinline__ u32 bytes_sub(u32 x, u32 k) {
    return ((x | 0x80808080u) - k) ^ 0x80808080u;
}

// Product without fused multiply-add contraction (bit-exact with the CPU).
static __device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
static __device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(FULL_MASK, v, m);
    return v;
}
static __device__ __forceinline__ int warp_sum_i(int v) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(FULL_MASK, v, m);
    return v;
}
// Max of |values| where a NaN wins (so a NaN in the input is never lost).
static __device__ __forceinline__ float nan_max(float a, float b) { return (b > a || b != b) ? b : a; }
static __device__ __forceinline__ float warp_absmax(float v) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v = nan_max(v, __shfl_xor_sync(FULL_MASK, v, m));
    return v;
}

// One Q8A block (quantize.cu's exact math): the calling warp's 32 lanes hold
// the block's 32 values, lane l value l. Writes q[l] (lane l), and *d and *s
// (lane 0). Every lane of the warp must call it.
static __device__ __forceinline__ void q8a_block(float x, i8* q, float* d, int* s) {
    float amax = warp_absmax(fabsf(x));
    float dd = amax / 127.0f;
    float id = dd != 0.0f ? 1.0f / dd : 0.0f;
    float r = roundf(x * id);
    int qi = r != r ? 0 : (int)fminf(fmaxf(r, -127.0f), 127.0f);
    int lane = threadIdx.x % WARP;
    q[lane] = (i8)qi;
    int sum = warp_sum_i(qi);
    if (lane == 0) {
        *d = dd;
        *s = sum;
    }
}

// Threads that sum a row of n values in the RMS norms (ops.rs's
// norm_threads, which launches at least this many): about RMS_UNROLL values
// each, a multiple of 32, from 32 to RMS_MAX_THREADS. A function of n alone,
// so a row's sum runs in one order whichever kernel (rms_norm, rms_norm_q8a,
// a segment of rms_norm3, the x-projection's norm tail in matvec.cu) and
// however many threads its launch has.
#define RMS_MAX_THREADS 1024
// Values a thread keeps in flight per trip.
#define RMS_UNROLL 4
static __device__ __forceinline__ int norm_threads(int n) {
    int t = (n + RMS_UNROLL * WARP - 1) / (RMS_UNROLL * WARP) * WARP;
    return t < WARP ? WARP : t > RMS_MAX_THREADS ? RMS_MAX_THREADS : t;
}

// A load that bypasses L1 (ld.global.cg), for values that other blocks of
// the same launch wrote (L1 is not coherent between SMs). Volatile, so it
// stays after the __threadfence that orders it.
static __device__ __forceinline__ float ld_cg(const float* p) {
#ifdef MAMBA_EMU
    return *(const volatile float*)p;
#else
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
#endif
}

// Overflow-free forms (the CPU's quant::math uses the same algebra).
static __device__ __forceinline__ float silu(float x) {
    float t = expf(-fabsf(x));
    return x >= 0.0f ? x / (1.0f + t) : x * t / (1.0f + t);
}
static __device__ __forceinline__ float softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

#endif
