// Residual add, strided row copy and greedy argmax.
#include "common.cuh"

struct AddArgs {
    const float* a;
    const float* b;
    float* out;
    int n;
};

// out[i] = a[i] + b[i] (out may alias a or b).
extern "C" __global__ void add_f32(const AddArgs p) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.n) p.out[i] = p.a[i] + p.b[i];
}

struct CopyRowsArgs {
    const float* src;  // rows, stride src_stride
    float* dst;        // rows, stride dst_stride
    int n;             // values per row
    int src_stride;
    int dst_stride;
};

// dst row r = src row r (n values); grid.y = row. Rows must not overlap.
extern "C" __global__ void copy_rows_f32(const CopyRowsArgs p) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    long long r = blockIdx.y;
    if (i < p.n) p.dst[r * p.dst_stride + i] = p.src[r * p.src_stride + i];
}

#define ARGMAX_THREADS 256

struct ArgmaxArgs {
    const float* x;  // rows x n
    int* out;        // per row: [index of the max (first wins ties), first NaN index or -1]
    int n;
};

// (v, i) beats (w, j) when larger, or equal with a smaller index.
static __device__ __forceinline__ bool beats(float v, int i, float w, int j) { return v > w || (v == w && i < j); }

extern "C" __global__ void argmax_f32(const ArgmaxArgs p) {
    __shared__ float sv[ARGMAX_THREADS / WARP];
    __shared__ int si[ARGMAX_THREADS / WARP];
    __shared__ int sn[ARGMAX_THREADS / WARP];
    const float* x = p.x + (long long)blockIdx.x * p.n;
    float best = -__int_as_float(0x7f800000);
    int bi = 0x7fffffff, nan_i = 0x7fffffff;
    for (int i = threadIdx.x; i < p.n; i += blockDim.x) {
        float v = x[i];
        if (v != v) {
            if (i < nan_i) nan_i = i;
        } else if (beats(v, i, best, bi)) {
            best = v;
            bi = i;
        }
    }
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) {
        float ov = __shfl_xor_sync(FULL_MASK, best, m);
        int oi = __shfl_xor_sync(FULL_MASK, bi, m);
        int on = __shfl_xor_sync(FULL_MASK, nan_i, m);
        if (beats(ov, oi, best, bi)) {
            best = ov;
            bi = oi;
        }
        if (on < nan_i) nan_i = on;
    }
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = bi;
        sn[warp] = nan_i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < (int)(blockDim.x / WARP); k++) {
            if (beats(sv[k], si[k], best, bi)) {
                best = sv[k];
                bi = si[k];
            }
            if (sn[k] < nan_i) nan_i = sn[k];
        }
        p.out[2 * blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
        p.out[2 * blockIdx.x + 1] = nan_i == 0x7fffffff ? -1 : nan_i;
    }
}
