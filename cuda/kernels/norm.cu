// RMS norm per row: y = x / sqrt(mean(x^2) + eps) * (w ? w : 1).
// One block of RMS_THREADS threads per row (grid.x = rows). In place is fine.
#include "common.cuh"

#define RMS_THREADS 256

struct RmsNormArgs {
    const float* x;
    const float* w;  // null: weightless (Falcon's dt/B/C norm)
    float* y;
    int n;
    int stride_x;
    int stride_y;
    float eps;
};

extern "C" __global__ void rms_norm(const RmsNormArgs a) {
    __shared__ float part[RMS_THREADS / WARP];
    const float* x = a.x + (long long)blockIdx.x * a.stride_x;
    float* y = a.y + (long long)blockIdx.x * a.stride_y;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < a.n; i += blockDim.x) ss += x[i] * x[i];
    ss = warp_sum(ss);
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    if (lane == 0) part[warp] = ss;
    __syncthreads();
    float tot = 0.0f;
    for (int k = 0; k < (int)(blockDim.x / WARP); k++) tot += part[k];
    float scale = 1.0f / sqrtf(tot / (float)a.n + a.eps);
    for (int i = threadIdx.x; i < a.n; i += blockDim.x) {
        float v = x[i] * scale;
        y[i] = a.w ? v * a.w[i] : v;
    }
}
