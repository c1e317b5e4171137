// The emulator's int8 tensor-core instruction:
//
//   mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 d, a, b, c
//
// D (16 x 8, s32) = A (16 x 32, s8) * B (32 x 8, s8) + C (16 x 8, s32), a
// warp-collective operation: all 32 lanes take part (a warp_gather over the
// full mask, so an exited lane is reported as a deadlock, as a missing lane
// is undefined on a GPU), each holding a fragment of each matrix. The
// layouts follow the PTX ISA, section "Matrix Fragments for mma.m16n8k32"
// (anchor #warp-level-matrix-fragment-mma-16832; 9.7.13.4.10 in ISA 8.x),
// with groupID g = laneid >> 2 and threadID_in_group t = laneid % 4, and
// element i of a fragment in byte i % 4 of register i / 4 (low bytes first):
//
// - A, the figure "MMA .m16n8k32 fragment layout for matrix A with .u8/.s8
//   type": a0..a15 in four .b32 registers;
//   row = g for i < 4 or 8 <= i < 12, g + 8 otherwise;
//   col = 4t + (i & 3) for i < 8, 4t + (i & 3) + 16 otherwise.
//   So register 0 = row g, k 4t..4t+3; 1 = row g+8, the same k;
//   2 = row g, k 16+4t..; 3 = row g+8, k 16+4t...
// - B, the figure "MMA .m16n8k32 fragment layout for matrix B with .u8/.s8
//   type": b0..b7 in two .b32 registers;
//   row (k) = 4t + (i & 3) for i < 4, 4t + (i & 3) + 16 otherwise; col = g.
//   So register 0 = column g, k 4t..4t+3; 1 = column g, k 16+4t...
// - C and D, the figure "MMA .m16n8k32 fragment layout for accumulator
//   matrix C/D with .s32 type": c0..c3, one per register;
//   row = g for i < 2, g + 8 otherwise; col = 2t + (i & 1).
//
// The sums wrap modulo 2^32 (the instruction without .satfinite); the
// kernels' sums are far from that. cuda/tests/mma.rs checks every lane and
// element of this against a plain integer matrix product, through the
// mma_probe_s8 kernel (mma.cu), which the load-time self-test also runs on
// the device.
#ifndef MAMBA_MMA_EMU_H
#define MAMBA_MMA_EMU_H

#include "cuda_emu.h"

namespace emu {

struct MmaFrag {
    uint32_t a[4];
    uint32_t b[2];
    int32_t c[4];
};

static inline int8_t frag_byte(uint32_t w, int i) { return (int8_t)(uint8_t)(w >> (8 * (i & 3))); }

static inline void mma_m16n8k32_s8(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const int (&c)[4]) {
    MmaFrag mine;
    for (int i = 0; i < 4; i++) mine.a[i] = a[i], mine.c[i] = c[i];
    mine.b[0] = b[0];
    mine.b[1] = b[1];
    MmaFrag all[32];
    warp_gather(0xffffffffu, &mine, sizeof mine, all);
    int8_t A[16][32], B[32][8];
    int32_t C[16][8];
    for (int lane = 0; lane < 32; lane++) {
        const int g = lane >> 2, t = lane & 3;
        for (int i = 0; i < 16; i++) {
            const int row = (i < 4 || (i >= 8 && i < 12)) ? g : g + 8;
            const int col = i < 8 ? 4 * t + (i & 3) : 4 * t + (i & 3) + 16;
            A[row][col] = frag_byte(all[lane].a[i / 4], i);
        }
        for (int i = 0; i < 8; i++) {
            const int row = i < 4 ? 4 * t + (i & 3) : 4 * t + (i & 3) + 16;
            B[row][g] = frag_byte(all[lane].b[i / 4], i);
        }
        for (int i = 0; i < 4; i++) C[i < 2 ? g : g + 8][2 * t + (i & 1)] = all[lane].c[i];
    }
    const int g = lane_id() >> 2, t = lane_id() & 3;
    for (int i = 0; i < 4; i++) {
        const int row = i < 2 ? g : g + 8, col = 2 * t + (i & 1);
        uint32_t acc = (uint32_t)C[row][col];
        for (int k = 0; k < 32; k++) acc += (uint32_t)((int32_t)A[row][k] * (int32_t)B[k][col]);
        d[i] = (int)acc;
    }
}

}  // namespace emu

#endif
