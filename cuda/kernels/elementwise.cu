// Residual add, strided row copy, greedy argmax and top-k.
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

// 1024 threads, each with ARGMAX_UNROLL loads in flight per trip: a 65,024
// logit row is 16 trips a thread, not 254 dependent ones. The result does not
// depend on the order values are seen in (beats is a total order).
#define ARGMAX_THREADS 1024
#define ARGMAX_UNROLL 4

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
    const int step = blockDim.x;
    for (int i0 = threadIdx.x; i0 < p.n; i0 += ARGMAX_UNROLL * step) {
        float vs[ARGMAX_UNROLL];
#pragma unroll
        for (int k = 0; k < ARGMAX_UNROLL; k++) vs[k] = i0 + k * step < p.n ? x[i0 + k * step] : 0.0f;
#pragma unroll
        for (int k = 0; k < ARGMAX_UNROLL; k++) {
            const int i = i0 + k * step;
            const float v = vs[k];
            if (i >= p.n) break;
            if (v != v) {
                if (i < nan_i) nan_i = i;
            } else if (beats(v, i, best, bi)) {
                best = v;
                bi = i;
            }
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

#define TOPK_THREADS 256

struct TopkArgs {
    const float* x;  // rows x n
    float* val;      // rows x k: the k largest values of the row, in no order
    int* idx;        // rows x k: their indices (ties at the k-th value: the lowest indices)
    int* nan;        // rows: the first NaN index, or -1
    int n;           // < 2^24
    int k;           // 1..n
};

// A key whose unsigned order is the float order (-0 below +0, as Rust's
// total_cmp); NaN gets the lowest key (it is reported, not chosen).
static __device__ __forceinline__ unsigned order_key(float v) {
    if (v != v) return 0u;
    unsigned b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Radix selection, 8 bits per pass, over the values whose key (or index)
// matches the bits chosen so far: after the passes, *prefix is the key of the
// k-th largest value (value passes) or the index of the need-th lowest tie
// (index passes), and *need how many of the values with that key to take.
// `largest`: walk the bins from the top (values) or the bottom (indices).
static __device__ __forceinline__ void topk_pick(int* hist, unsigned* prefix, unsigned* mask, int* need,
                                                 int shift, bool largest) {
    if (threadIdx.x == 0) {
        int left = *need, b = largest ? 255 : 0;
        for (int s = 0; s < 255; s++, b += largest ? -1 : 1) {
            if (hist[b] >= left) break;
            left -= hist[b];
        }
        *prefix |= (unsigned)b << shift;
        *mask |= 255u << shift;
        *need = left;
    }
}

// One block per row. Four passes over the row's keys find the k-th largest
// key K; when more values share K than are needed, up to three passes over
// their indices find the highest index I to take; a last pass writes every
// value above K and those at K with index <= I (exactly k).
extern "C" __global__ void topk_f32(const TopkArgs p) {
    __shared__ int hist[256];
    __shared__ unsigned s_key, s_kmask, s_ix, s_imask;
    __shared__ int s_need, s_ties, s_count;
    __shared__ int s_nan[TOPK_THREADS / WARP];
    const float* x = p.x + (long long)blockIdx.x * p.n;
    int t = threadIdx.x;
    if (t == 0) {
        s_key = 0;
        s_kmask = 0;
        s_ix = 0;
        s_imask = 0;
        s_need = p.k;
        s_count = 0;
    }
    int nan_i = 0x7fffffff;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = t; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        unsigned key = s_key, mask = s_kmask;
        for (int i = t; i < p.n; i += blockDim.x) {
            float v = x[i];
            if (v != v && i < nan_i) nan_i = i;
            unsigned kv = order_key(v);
            if ((kv & mask) == key) atomicAdd(&hist[(kv >> shift) & 255], 1);
        }
        __syncthreads();
        topk_pick(hist, &s_key, &s_kmask, &s_need, shift, true);
        // How many values have the final key (the bin just chosen).
        if (t == 0 && shift == 0) s_ties = hist[s_key & 255];
        __syncthreads();
    }
    const unsigned K = s_key;
    if (s_ties > s_need) {
        for (int shift = 16; shift >= 0; shift -= 8) {
            for (int i = t; i < 256; i += blockDim.x) hist[i] = 0;
            __syncthreads();
            unsigned ix = s_ix, mask = s_imask;
            for (int i = t; i < p.n; i += blockDim.x) {
                if (order_key(x[i]) == K && ((unsigned)i & mask) == ix) atomicAdd(&hist[(i >> shift) & 255], 1);
            }
            __syncthreads();
            topk_pick(hist, &s_ix, &s_imask, &s_need, shift, false);
            __syncthreads();
        }
    } else {
        if (t == 0) s_ix = 0xffffffffu;
        __syncthreads();
    }
    const unsigned I = s_ix;
    float* val = p.val + (long long)blockIdx.x * p.k;
    int* idx = p.idx + (long long)blockIdx.x * p.k;
    for (int i = t; i < p.n; i += blockDim.x) {
        float v = x[i];
        unsigned kv = order_key(v);
        if (kv > K || (kv == K && (unsigned)i <= I)) {
            int at = atomicAdd(&s_count, 1);
            if (at < p.k) {
                val[at] = v;
                idx[at] = i;
            }
        }
    }
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) {
        int o = __shfl_xor_sync(FULL_MASK, nan_i, m);
        if (o < nan_i) nan_i = o;
    }
    if (t % WARP == 0) s_nan[t / WARP] = nan_i;
    __syncthreads();
    if (t == 0) {
        for (int w = 1; w < (int)(blockDim.x / WARP); w++)
            if (s_nan[w] < nan_i) nan_i = s_nan[w];
        p.nan[blockIdx.x] = nan_i == 0x7fffffff ? -1 : nan_i;
    }
}
