// Mamba mixer kernels: causal depthwise conv1d + SiLU with its state, and the
// selective scan. One thread per channel, grid.y = sequence; a sequence's T
// tokens are rows seq * T .. seq * T + T - 1 of the inputs. Its state is
// entry slots[seq] of the state pool, or entry seq when slots is null.
// With q set (E % 32 == 0), each output row is also quantized to Q8A for the
// matmul that reads it next (row stride E): a warp holds 32 consecutive
// channels of a token, one Q8A block, so no extra launch is needed.
#include "common.cuh"

#define SSM_THREADS 128
#define CONV_K 4
#define SCAN_N 16

struct ConvArgs {
    const float* x;  // token rows, stride x_stride (in_proj's x half)
    const float* w;  // [E][K]
    const float* b;  // [E]
    float* state;    // [slot][E][K - 1], oldest input first
    const int* slots;  // [seqs] state entry of each sequence, or null (entry = seq)
    float* y;        // token rows, stride y_stride
    int E;
    int T;
    int x_stride;
    int y_stride;
    i8* q;      // null, or [rows][E] the outputs in Q8A
    float* qd;  // [rows][E / 32]
    int* qs;    // [rows][E / 32]
};

// y_t = silu(b + sum_k w[k] * in[t - K + 1 + k]); the state keeps the last K-1 inputs.
extern "C" __global__ void conv1d_silu_k4(const ConvArgs a) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= a.E) return;
    int seq = blockIdx.y;
    int slot = a.slots ? a.slots[seq] : seq;
    float* st = a.state + ((long long)slot * a.E + e) * (CONV_K - 1);
    float win[CONV_K], w[CONV_K];
#pragma unroll
    for (int k = 0; k < CONV_K; k++) w[k] = a.w[(long long)e * CONV_K + k];
#pragma unroll
    for (int k = 0; k < CONV_K - 1; k++) win[k] = st[k];
    float bias = a.b[e];
    for (int t = 0; t < a.T; t++) {
        long long r = (long long)seq * a.T + t;
        win[CONV_K - 1] = a.x[r * a.x_stride + e];
        float acc = bias;
#pragma unroll
        for (int k = 0; k < CONV_K; k++) acc += w[k] * win[k];
        float v = silu(acc);
        a.y[r * a.y_stride + e] = v;
        if (a.q) {  // uniform: every lane of the warp is here
            long long b = r * (a.E / WARP) + e / WARP;
            q8a_block(v, a.q + r * a.E + (e - e % WARP), a.qd + b, a.qs + b);
        }
#pragma unroll
        for (int k = 0; k < CONV_K - 1; k++) win[k] = win[k + 1];
    }
#pragma unroll
    for (int k = 0; k < CONV_K - 1; k++) st[k] = win[k];
}

struct ScanArgs {
    const float* x;    // conv output rows, stride E
    const float* dt;   // dt_proj output rows (before the bias), stride E
    const float* z;    // gate rows, stride z_stride
    const float* bc;   // x_proj rows (normalised), stride bc_stride; B at b_off, C at b_off + N
    const float* A;    // [E][N], already -exp(A_log)
    const float* D;    // [E]
    const float* dt_bias;  // [E]
    float* state;      // [slot][E][N]
    const int* slots;  // [seqs] state entry of each sequence, or null (entry = seq)
    float* y;          // rows, stride E
    int E;
    int T;
    int z_stride;
    int bc_stride;
    int b_off;
    i8* q;      // as ConvArgs
    float* qd;
    int* qs;
};

// dt = softplus(dt_raw + bias); s = exp(dt A) s + dt B x; y = (sum s C + D x) silu(z).
extern "C" __global__ void selective_scan_n16(const ScanArgs a) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= a.E) return;
    int seq = blockIdx.y;
    int slot = a.slots ? a.slots[seq] : seq;
    float* st = a.state + ((long long)slot * a.E + e) * SCAN_N;
    // A channel's state and A rows are 64 bytes at 64-byte aligned places
    // (ops.rs checks the views): four 16-byte loads each, all in flight.
    float s[SCAN_N], A[SCAN_N];
#pragma unroll
    for (int k = 0; k < SCAN_N / 4; k++) {
        const U4 sv = ld_u4(st + 4 * k), av = ld_u4(a.A + (long long)e * SCAN_N + 4 * k);
        s[4 * k] = __uint_as_float(sv.x), s[4 * k + 1] = __uint_as_float(sv.y);
        s[4 * k + 2] = __uint_as_float(sv.z), s[4 * k + 3] = __uint_as_float(sv.w);
        A[4 * k] = __uint_as_float(av.x), A[4 * k + 1] = __uint_as_float(av.y);
        A[4 * k + 2] = __uint_as_float(av.z), A[4 * k + 3] = __uint_as_float(av.w);
    }
    float D = a.D[e], bias = a.dt_bias[e];
    for (int t = 0; t < a.T; t++) {
        long long r = (long long)seq * a.T + t;
        float x = a.x[r * a.E + e];
        float dt = softplus(a.dt[r * a.E + e] + bias);
        const float* B = a.bc + r * a.bc_stride + a.b_off;
        const float* C = B + SCAN_N;
        float dx = dt * x, y = 0.0f;
#pragma unroll
        for (int n = 0; n < SCAN_N; n++) {
            s[n] = expf(dt * A[n]) * s[n] + dx * B[n];
            y += s[n] * C[n];
        }
        y += D * x;
        float v = y * silu(a.z[r * a.z_stride + e]);
        a.y[r * a.E + e] = v;
        if (a.q) {  // uniform: every lane of the warp is here
            long long b = r * (a.E / WARP) + e / WARP;
            q8a_block(v, a.q + r * a.E + (e - e % WARP), a.qd + b, a.qs + b);
        }
    }
#pragma unroll
    for (int k = 0; k < SCAN_N / 4; k++)
        st_u4(st + 4 * k, U4{__float_as_uint(s[4 * k]), __float_as_uint(s[4 * k + 1]), __float_as_uint(s[4 * k + 2]),
                             __float_as_uint(s[4 * k + 3])});
}
