// Activation quantization to Q8A, the device's int8 activation format.
// Per row of n values (n % 32 == 0), nb = n / 32 blocks:
//   q: i8[rows][n], d: f32[rows][nb], s: i32[rows][nb]
// Block exact math (documented in README.md, mirrored by the tests):
//   amax = max |x| (a NaN wins), d = amax / 127,
//   id = d != 0 ? 1 / d : 0, q = clamp(round_half_away(x * id), -127, 127)
//   (a NaN product gives 0), s = sum of the 32 q.
// A non-finite block yields d = inf or NaN, so every dot touching it is NaN.
#include "common.cuh"

#define QUANT_THREADS 256

struct QuantizeArgs {
    const float* x;  // rows x n, row stride `stride`
    i8* q;
    float* d;
    int* s;
    int n;
    int stride;
};

// grid = (ceil(nb / 8), rows), block = 256: one warp per 32-value block.
extern "C" __global__ void quantize_q8a(const QuantizeArgs a) {
    int nb = a.n / WARP;
    int b = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (b >= nb) return;  // warp-uniform
    int lane = threadIdx.x % WARP;
    long long row = blockIdx.y;
    float x = a.x[row * a.stride + b * WARP + lane];
    q8a_block(x, a.q + row * a.n + b * WARP, a.d + row * nb + b, a.s + row * nb + b);
}
