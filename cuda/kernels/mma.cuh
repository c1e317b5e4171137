// The int8 tensor-core instruction, mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32
// (sm_80 and newer; PTX ISA 7.0): d = a * b + c for a warp's 16 x 32 A
// (4 registers a lane), 32 x 8 B (2) and 16 x 8 C/D (4), in the fragment
// layouts of the PTX ISA's "Matrix Fragments for mma.m16n8k32" (spelled out
// in ../emu/mma_emu.h, which is what the emulator runs instead). Only
// mma.cu includes it, and that module is compiled for compute_80 alone
// (scripts/cuda/build_ptx.py): a T4 (sm_75) never loads it and keeps the
// dp4a matmul of matvec.cu.
#ifndef MAMBA_MMA_CUH
#define MAMBA_MMA_CUH

#include "common.cuh"
#ifdef MAMBA_EMU
#include "mma_emu.h"
// CUDA's built-in float2 (8-byte aligned: one 64-bit shared load).
struct alignas(8) float2 {
    float x, y;
};
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
#endif

static __device__ __forceinline__ void mma_s8_16832(int (&d)[4], const u32 (&a)[4], const u32 (&b)[2],
                                                    const int (&c)[4]) {
#ifdef MAMBA_EMU
    emu::mma_m16n8k32_s8(d, a, b, c);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]), "r"(c[2]),
          "r"(c[3]));
#else
#error "mma.sync m16n8k32 s8 needs sm_80: compile mma.cu for compute_80 (the dp4a matmul serves older cards)"
#endif
}

// Starts a global line on its way to L2 (prefetch.global.L2, PTX ISA 2.0):
// no register waits on it. Nothing on the emulator.
static __device__ __forceinline__ void prefetch_l2(const void* p) {
#ifndef MAMBA_EMU
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
    (void)p;
#endif
}

#endif
