// CPU emulator of the CUDA execution model, enough for the kernels in
// ../kernels. Each block's threads are fibers (ucontext) on one OS thread, so
// __syncthreads and the *_sync warp shuffles are cooperative barriers; blocks
// run in parallel over a few OS threads. __shared__ is `static thread_local`:
// one copy per OS thread, shared by the fibers of the block it is running.
// What it checks and what it does not: see cuda/README.md.
#ifndef MAMBA_CUDA_EMU_H
#define MAMBA_CUDA_EMU_H

#include <math.h>
#include <stdint.h>
#include <string.h>

struct dim3 {
    unsigned x, y, z;
};

namespace emu {
struct Thread;
struct Block;
extern thread_local Thread* cur_thread;
extern thread_local Block* cur_block;
const dim3& thread_idx();
const dim3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void syncthreads();
// Reports a fault the GPU would raise (a misaligned vector load): the launch
// fails with this message.
void fault(const char* what);
// Exchanges 8 bytes among the lanes of `mask`; returns the value lane `src` put.
uint64_t warp_exchange(unsigned mask, uint64_t v, int src);
// All-gather among the lanes of `mask`: each puts `n` bytes (n <= 64) at v;
// `all` receives 32 * n bytes, lane l's at l * n (zeros for lanes outside
// the mask). A warp-collective instruction (mma.sync, mma_emu.h) is built
// on it: every lane sees every lane's operands.
void warp_gather(unsigned mask, const void* v, size_t n, void* all);
int lane_id();
}  // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::block_idx())
#define blockDim (emu::block_dim())
#define gridDim (emu::grid_dim())
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __syncthreads() emu::syncthreads()

template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    uint64_t got = emu::warp_exchange(mask, bits, emu::lane_id() ^ lane_mask);
    T r;
    memcpy(&r, &got, sizeof(T));
    return r;
}

static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
}
static inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
// Atomic for real: the fibers of a block take turns on one OS thread, but
// blocks run on several (the matvec's tail counts finished blocks in global
// memory; topk_f32 counts in __shared__ memory, one copy per OS thread).
static inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
// Orders this thread's writes before its later ones for every block.
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline float __int_as_float(int u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline float __fmul_rn(float a, float b) {
    volatile float r = a * b;  // never contracted into an fma
    return r;
}
// One rounding of a * b + c, as the device's fma.rn.f32 (C's fmaf is
// correctly rounded; glibc uses the FMA instruction where the CPU has one).
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __fadd_rn(float a, float b) {
    volatile float r = a + b;
    return r;
}

#endif
