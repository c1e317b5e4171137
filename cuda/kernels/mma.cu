// Prefill and batched decode on int8 tensor cores (sm_80+): the product of
// matmul_<t> in matvec.cu, out[c][r] = dot(weight row r, activation row c)
// (+ add[c][r]) for any number of activation rows, with
// mma.sync.m16n8k32.s8 (mma.cuh) in place of dp4a.
//
// K = 32 is one unit: a weight unit (load_unit, matvec.cu: 32 int8 values
// with their scale dw, min mw, offset, per-16 scales lo/hi and per-8 mins
// m8) against one Q8A activation block (32 int8 with d and s). One MMA
// gives the integer dots of a 16-row x 8-column tile for one unit, and the
// epilogue applies the unit's scales, the value of matvec.cu's unit_acc
// (dw * (lo * dot_lo + hi * dot_hi + off * s) + mw * msum, times da) with
// the integer scales folded into float ones when the tile is staged:
//   t = rn(mw' * msum + rn(dhi * dot_hi + rn(dlo * dot_lo))),  acc = rn(da * t + acc)
// dlo = rn(dw * lo), dhi = rn(dw * hi), mw' = rn(dw * off + mw) (no type
// with per-8 mins has an offset, so msum = s wherever off != 0): about 4
// instructions an output where unit_acc's order would take 9. Types with
// two 16-value scales (Q2_K, Q3_K, Q6_K, IQ2_XS, IQ2_S, IQ1_M) take two
// MMAs a unit, one with each half of A zeroed; the others one (dot_lo the
// whole dot, lo = hi). The dots are the dp4a path's integers; the float
// roundings differ (here two per unit more, and the sum unit by unit rather
// than in lane slices), so the two agree to fp32 rounding, not bit for bit:
// the load-time self-test (selftest.rs, mma.rs) compares them within that.
//
// A block of MMA_WARPS warps takes MMA_ROWS weight rows (16 a warp) against
// MMA_COLS activation rows (grid.x walks the column tiles), MMA_KU units at
// a time: the block decodes the rows' units once into int8 tiles in shared
// memory (with their scales), stages the activations' Q8A tile, and each
// warp runs 4 column tiles x MMA_KU units of MMAs from there. A shared line
// is MMA_KU * 8 words + 4 of padding, so the 32 lanes' fragment loads (word
// 4g + t of a line) meet 32 different banks. Every thread reaches every
// barrier; rows and columns past the matrix are staged as zeros and never
// stored.
#define MATVEC_NO_KERNELS
#include "matvec.cu"
#include "mma.cuh"

#define MMA_WARPS 4
#define MMA_ROWS (16 * MMA_WARPS)
#define MMA_COLS 32
#define MMA_KU 4
#define MMA_LINE (MMA_KU * 8 + 4)

// The parameters (ops.rs builds them field by field; the same fields as the
// dp4a matmul's MatvecArgs + ncols, less the split-K slices, which only
// order the dp4a sums).
struct MmaArgs {
    const u8* w;       // rows x row_bytes, the device layout (ops::upload_weights)
    const i8* q;       // [ncols][n] Q8A values
    const float* d;    // [ncols][n / 32]
    const int* s;      // [ncols][n / 32]
    float* out;        // [ncols][rows]
    const float* add;  // null, or [ncols][rows] added (may be out)
    int n;
    int rows;
    int row_bytes;
    int ncols;
};

template <int T>
struct MmaTraits {
    // Two 16-value scales a unit (Unit::lo != Unit::hi).
    static constexpr bool split16 = T == T_Q2_K || T == T_Q3_K || T == T_Q6_K || T == T_IQ2_XS || T == T_IQ2_S ||
                                    T == T_IQ1_M;
    // Mins per 8 values through the activation block's group sums (Unit::m8on).
    static constexpr bool m8 = T == T_Q2_K || T == T_IQ1_M;
};

// M8: the per-8 mins and the activations' group sums (m8 types only: the
// others keep 6 KB of shared memory free for one more block per SM).
template <bool M8>
struct MmaTile {
    int wq[MMA_ROWS][MMA_LINE];
    int aq[MMA_COLS][MMA_LINE];
    // A unit's scales with its integer ones folded in (the epilogue below).
    float dlo[MMA_ROWS][MMA_KU], dhi[MMA_ROWS][MMA_KU], mw[MMA_ROWS][MMA_KU];
    int m8[M8 ? MMA_ROWS : 1][MMA_KU][4];
    float2 act[MMA_COLS][MMA_KU];          // d and (float) s of each Q8A block
    int ag[M8 ? MMA_COLS : 1][MMA_KU][4];  // sums of the block's 4 groups of 8
};

// BAD (emulator only): B's two registers swapped, a misread fragment
// layout for the tests to catch.
template <int T, bool BAD>
static __device__ __forceinline__ void mma_matmul_impl(const MmaArgs& a) {
    typedef MmaTraits<T> Tr;
    __shared__ MmaTile<Tr::m8> tile;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int g = lane >> 2, t = lane & 3;
    // Column tiles along x: the blocks of one row tile run together, so its
    // weights come from DRAM once and from L2 for the other column tiles.
    const int c0 = blockIdx.x * MMA_COLS, row0 = blockIdx.y * MMA_ROWS;
    const int nb = a.n / WARP, wr = warp * 16;
    float acc[4][4];
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[j][i] = 0.0f;
    for (int u0 = 0; u0 < nb; u0 += MMA_KU) {
        // The weights: MMA_ROWS x MMA_KU units, decoded once.
        for (int it = threadIdx.x; it < MMA_ROWS * MMA_KU; it += MMA_WARPS * WARP) {
            const int r = it / MMA_KU, k = it % MMA_KU, row = row0 + r, u = u0 + k;
            Unit un;
            if (row < a.rows && u < nb) {
                load_unit<T>(a.w + (long long)row * a.row_bytes, u, un);
            } else {
#pragma unroll
                for (int i = 0; i < 8; i++) un.q[i] = 0;
                un.dw = un.mw = 0.0f;
                un.off = un.lo = un.hi = 0;
#pragma unroll
                for (int i = 0; i < 4; i++) un.m8[i] = 0;
            }
#pragma unroll
            for (int i = 0; i < 8; i++) tile.wq[r][8 * k + i] = un.q[i];
            // dw * (lo * dot_lo + hi * dot_hi + off * s) + mw * s
            //   = dlo * dot_lo + dhi * dot_hi + (mw + dw * off) * s
            // (no type with per-8 mins has an offset).
            tile.dlo[r][k] = __fmul_rn(un.dw, (float)un.lo);
            tile.dhi[r][k] = __fmul_rn(un.dw, (float)un.hi);
            tile.mw[r][k] = __fmaf_rn(un.dw, (float)un.off, un.mw);
            if (Tr::m8) {
#pragma unroll
                for (int i = 0; i < 4; i++) tile.m8[r][k][i] = un.m8[i];
            }
        }
        // The activations: MMA_COLS rows x MMA_KU blocks of Q8A.
        for (int it = threadIdx.x; it < MMA_COLS * MMA_KU * 8; it += MMA_WARPS * WARP) {
            const int c = it / (MMA_KU * 8), kw = it % (MMA_KU * 8), col = c0 + c, u = u0 + kw / 8;
            tile.aq[c][kw] = col < a.ncols && u < nb ? ((const int*)(a.q + (long long)col * a.n))[8 * u + kw % 8] : 0;
        }
        for (int it = threadIdx.x; it < MMA_COLS * MMA_KU; it += MMA_WARPS * WARP) {
            const int c = it / MMA_KU, k = it % MMA_KU, col = c0 + c, u = u0 + k;
            const bool in = col < a.ncols && u < nb;
            const long long j = (long long)col * nb + u;
            tile.act[c][k] = make_float2(in ? a.d[j] : 0.0f, in ? (float)a.s[j] : 0.0f);
            if (Tr::m8) {
                const int* q = (const int*)(a.q + (long long)col * a.n) + 8 * u;
#pragma unroll
                for (int gr = 0; gr < 4; gr++)
                    tile.ag[c][k][gr] = in ? dot4(0x01010101, q[2 * gr + 1], dot4(0x01010101, q[2 * gr], 0)) : 0;
            }
        }
        __syncthreads();
        // The next stage's weight bytes on their way to L2 while this one
        // computes, so its decode waits on L2, not DRAM: the lines at the
        // start and the end of each row's next MMA_KU units (by the average
        // unit size) and one 64 bytes before the start (a K-quant
        // superblock's header).
        if (u0 + MMA_KU < nb && row0 + (threadIdx.x >> 1) < a.rows) {
            const u8* rp = a.w + (long long)(row0 + (threadIdx.x >> 1)) * a.row_bytes;
            const long long b0 = (long long)(u0 + MMA_KU) * a.row_bytes / nb;
            const long long b1 = (long long)(u0 + 2 * MMA_KU < nb ? u0 + 2 * MMA_KU : nb) * a.row_bytes / nb - 1;
            if (threadIdx.x & 1) {
                prefetch_l2(rp + b1);
            } else {
                prefetch_l2(rp + (b0 >= 64 ? b0 - 64 : 0));
                prefetch_l2(rp + b0);
            }
        }
#pragma unroll 1
        for (int k = 0; k < MMA_KU; k++) {
            const u32 af[4] = {(u32)tile.wq[wr + g][8 * k + t], (u32)tile.wq[wr + g + 8][8 * k + t],
                               (u32)tile.wq[wr + g][8 * k + 4 + t], (u32)tile.wq[wr + g + 8][8 * k + 4 + t]};
            const u32 alo[4] = {af[0], af[1], 0u, 0u};
            const u32 ahi[4] = {0u, 0u, af[2], af[3]};
            // This lane's two rows (g, g + 8) at unit k.
            float dlo[2], dhi[2], mw[2];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int r = wr + g + 8 * h;
                dlo[h] = tile.dlo[r][k];
                dhi[h] = tile.dhi[r][k];
                mw[h] = tile.mw[r][k];
            }
            const int zero[4] = {0, 0, 0, 0};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int cb = 8 * j + g;
                u32 bf[2] = {(u32)tile.aq[cb][8 * k + t], (u32)tile.aq[cb][8 * k + 4 + t]};
                if (BAD) {
                    const u32 x = bf[0];
                    bf[0] = bf[1];
                    bf[1] = x;
                }
                int xlo[4], xhi[4];
                if (Tr::split16) {
                    mma_s8_16832(xlo, alo, bf, zero);
                    mma_s8_16832(xhi, ahi, bf, zero);
                } else {
                    mma_s8_16832(xlo, af, bf, zero);
                }
                // Outputs i and i + 2 share a column: its d and s in one load.
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int c = 8 * j + 2 * t + e;
                    const float2 as = tile.act[c][k];
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const int i = 2 * h + e;
                        float tt = __fmul_rn(dlo[h], (float)xlo[i]);
                        if (Tr::split16) tt = __fmaf_rn(dhi[h], (float)xhi[i], tt);
                        float ms = as.y;
                        if (Tr::m8) {
                            const int r = wr + g + 8 * h;
                            int m = 0;
#pragma unroll
                            for (int gr = 0; gr < 4; gr++) m += tile.m8[r][k][gr] * tile.ag[c][k][gr];
                            ms = (float)m;
                        }
                        acc[j][i] = __fmaf_rn(as.x, __fmaf_rn(mw[h], ms, tt), acc[j][i]);
                    }
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int row = row0 + wr + g + 8 * (i >> 1), col = c0 + 8 * j + 2 * t + (i & 1);
            if (row < a.rows && col < a.ncols) {
                const long long o = (long long)col * a.rows + row;
                a.out[o] = a.add ? a.add[o] + acc[j][i] : acc[j][i];
            }
        }
    }
}

#define MMA_MM(name, T) \
    extern "C" __global__ void mma_matmul_##name(const MmaArgs a) { mma_matmul_impl<T, false>(a); }

MMA_MM(q4_0, T_Q4_0)
MMA_MM(q4_1, T_Q4_1)
MMA_MM(q5_0, T_Q5_0)
MMA_MM(q5_1, T_Q5_1)
MMA_MM(q8_0, T_Q8_0)
MMA_MM(q4_k, T_Q4_K)
MMA_MM(q5_k, T_Q5_K)
MMA_MM(q6_k, T_Q6_K)
MMA_MM(q2_k, T_Q2_K)
MMA_MM(q3_k, T_Q3_K)
MMA_MM(iq2_xxs, T_IQ2_XXS)
MMA_MM(iq2_xs, T_IQ2_XS)
MMA_MM(iq2_s, T_IQ2_S)
MMA_MM(tq2_0, T_TQ2_0)
MMA_MM(tq1_0, T_TQ1_0)
MMA_MM(iq1_s, T_IQ1_S)
MMA_MM(iq1_m, T_IQ1_M)
MMA_MM(iq3_xxs, T_IQ3_XXS)
MMA_MM(iq3_s, T_IQ3_S)
MMA_MM(iq4_nl, T_IQ4_NL)
MMA_MM(iq4_xs, T_IQ4_XS)

#ifdef MAMBA_EMU
// A deliberately misread layout (B's registers swapped), only in the
// emulator: the tests show the self-test catching it and switching it off.
extern "C" __global__ void mma_matmul_q8_0_badlayout(const MmaArgs a) { mma_matmul_impl<T_Q8_0, true>(a); }
#endif

// One MMA on given matrices, for the tests and the load-time self-test:
// A 16 x 32 row-major, B given as its 8 columns of 32 (B^T row-major: the
// way Q8A activation rows lie), C and D 16 x 8 row-major. One warp; each
// lane loads its fragments by the layout tables (mma_emu.h) and stores its
// part of D, so a misread layout shows as a wrong element of D.
struct MmaProbeArgs {
    const i8* a;
    const i8* b;
    const int* c;
    int* d;
};

extern "C" __global__ void mma_probe_s8(const MmaProbeArgs p) {
    const int lane = threadIdx.x % WARP, g = lane >> 2, t = lane & 3;
    const int* a = (const int*)p.a;  // 8 words a row
    const int* b = (const int*)p.b;  // 8 words a column
    const u32 af[4] = {(u32)a[8 * g + t], (u32)a[8 * (g + 8) + t], (u32)a[8 * g + 4 + t], (u32)a[8 * (g + 8) + 4 + t]};
    const u32 bf[2] = {(u32)b[8 * g + t], (u32)b[8 * g + 4 + t]};
    const int cf[4] = {p.c[8 * g + 2 * t], p.c[8 * g + 2 * t + 1], p.c[8 * (g + 8) + 2 * t], p.c[8 * (g + 8) + 2 * t + 1]};
    int df[4];
    mma_s8_16832(df, af, bf, cf);
    p.d[8 * g + 2 * t] = df[0];
    p.d[8 * g + 2 * t + 1] = df[1];
    p.d[8 * (g + 8) + 2 * t] = df[2];
    p.d[8 * (g + 8) + 2 * t + 1] = df[3];
}
