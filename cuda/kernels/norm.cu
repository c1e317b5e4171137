// RMS norms, one block per row (grid.x = rows) of blockDim.x threads, a
// multiple of 32 up to RMS_MAX_THREADS that the host picks from the row
// length (about 4 values a thread: ops.rs's norm_threads), so that at batch 1
// every load of a row is in flight at once rather than a chain of
// dependent trips. Every kernel of one row length uses the same count, so
// rms_norm and rms_norm_q8a stay bit for bit equal.
//   rms_norm      y = x / sqrt(mean(x^2) + eps) * (w ? w : 1); in place is fine.
//   rms_norm_q8a  the same, and y also quantized to Q8A (quantize.cu's exact
//                 math, row stride n), for the matmul that reads y next: one
//                 launch instead of two, bit for bit the same outputs.
//   rms_norm3     Falcon's weightless dt/B/C norm: in place, three segments
//                 of each row (grid.y = segment), one launch instead of three;
//                 with q set, the first segment (dt_in, the dt matmul's input,
//                 n0 % 32 == 0) also quantized to Q8A (row stride n0).
#include "common.cuh"

// RMS_MAX_THREADS, RMS_UNROLL and norm_threads(n), the threads that sum a
// row of n values, are in common.cuh (the x-projection's tail in matvec.cu
// sums rows in the same order).

struct RmsNormArgs {
    const float* x;
    const float* w;  // null: weightless (Falcon's dt/B/C norm)
    float* y;
    int n;
    int stride_x;
    int stride_y;
    float eps;
};

// 1 / sqrt(mean(x^2) + eps) of one row of n values, for the whole block.
// Each thread sums its values i = t, t + blockDim, ... in that order, RMS_UNROLL
// loads issued before the first add; the squares are fused (__fmaf_rn: one
// rounding, on the device and the emulator alike).
static __device__ __forceinline__ float rms_scale(const float* x, int n, float eps) {
    __shared__ float part[RMS_MAX_THREADS / WARP];
    float ss = 0.0f;
    const int step = norm_threads(n);  // <= blockDim.x; threads past it add nothing
    for (int i0 = threadIdx.x; i0 < n && (int)threadIdx.x < step; i0 += RMS_UNROLL * step) {
        float v[RMS_UNROLL];
#pragma unroll
        for (int k = 0; k < RMS_UNROLL; k++) v[k] = i0 + k * step < n ? x[i0 + k * step] : 0.0f;
#pragma unroll
        for (int k = 0; k < RMS_UNROLL; k++)
            if (i0 + k * step < n) ss = __fmaf_rn(v[k], v[k], ss);
    }
    ss = warp_sum(ss);
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    if (lane == 0) part[warp] = ss;
    __syncthreads();
    float tot = 0.0f;
    for (int k = 0; k < (int)(blockDim.x / WARP); k++) tot += part[k];
    return 1.0f / sqrtf(tot / (float)n + eps);
}

extern "C" __global__ void rms_norm(const RmsNormArgs a) {
    const float* x = a.x + (long long)blockIdx.x * a.stride_x;
    float* y = a.y + (long long)blockIdx.x * a.stride_y;
    float scale = rms_scale(x, a.n, a.eps);
    for (int i = threadIdx.x; i < a.n; i += blockDim.x) {
        float v = x[i] * scale;
        y[i] = a.w ? v * a.w[i] : v;
    }
}

struct RmsNormQ8aArgs {
    RmsNormArgs r;  // y must not overlap x
    i8* q;          // [rows][n]
    float* d;       // [rows][n / 32]
    int* s;         // [rows][n / 32]
};

// n % 32 == 0. Each warp takes 32-value blocks: lane l the block's value l.
extern "C" __global__ void rms_norm_q8a(const RmsNormQ8aArgs a) {
    const RmsNormArgs& r = a.r;
    long long row = blockIdx.x;
    const float* x = r.x + row * r.stride_x;
    float* y = r.y + row * r.stride_y;
    float scale = rms_scale(x, r.n, r.eps);
    const int nb = r.n / WARP, lane = threadIdx.x % WARP, nw = blockDim.x / WARP;
    // A warp's blocks b, b + nw, ...: RMS_UNROLL of them loaded (x and w)
    // before the first is quantized.
    for (int b0 = threadIdx.x / WARP; b0 < nb; b0 += RMS_UNROLL * nw) {  // warp-uniform
        float v[RMS_UNROLL];
#pragma unroll
        for (int k = 0; k < RMS_UNROLL; k++) {
            const int b = b0 + k * nw, i = (b < nb ? b : b0) * WARP + lane;
            const float xs = x[i] * scale;
            v[k] = r.w ? xs * r.w[i] : xs;
        }
#pragma unroll
        for (int k = 0; k < RMS_UNROLL; k++) {
            const int b = b0 + k * nw;
            if (b >= nb) break;  // warp-uniform
            y[b * WARP + lane] = v[k];
            q8a_block(v[k], a.q + row * r.n + b * WARP, a.d + row * nb + b, a.s + row * nb + b);
        }
    }
}

struct RmsNorm3Args {
    float* x;  // rows, stride `stride`; normed in place
    int stride;
    int off0, off1, off2;  // segment starts within a row
    int n0, n1, n2;        // segment lengths
    float eps;
    i8* q;     // null, or [rows][n0]: segment 0 in Q8A
    float* d;  // [rows][n0 / 32]
    int* s;    // [rows][n0 / 32]
};

extern "C" __global__ void rms_norm3(const RmsNorm3Args a) {
    // Selected, not indexed: an indexed parameter array would go to local memory.
    int seg = blockIdx.y;
    int off = seg == 0 ? a.off0 : seg == 1 ? a.off1 : a.off2;
    int n = seg == 0 ? a.n0 : seg == 1 ? a.n1 : a.n2;
    float* x = a.x + (long long)blockIdx.x * a.stride + off;
    float scale = rms_scale(x, n, a.eps);
    if (seg == 0 && a.q) {
        long long row = blockIdx.x;
        int nb = n / WARP, lane = threadIdx.x % WARP;
        for (int b = threadIdx.x / WARP; b < nb; b += blockDim.x / WARP) {  // warp-uniform
            int i = b * WARP + lane;
            float v = x[i] * scale;
            x[i] = v;
            q8a_block(v, a.q + row * n + b * WARP, a.d + row * nb + b, a.s + row * nb + b);
        }
        return;
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] = x[i] * scale;
}
