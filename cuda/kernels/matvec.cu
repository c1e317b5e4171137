// Decode matvec: out[c][r] = dot(weight row r, activation row c) for
// c < NC (1..8 rows at once), weights in ggml's block layout as stored in
// the GGUF, activations in Q8A (see quantize.cu). Every weight type is read
// in units of 32 values; unit u pairs with activation block u, so one lane
// decodes a unit once and dots it with all NC activation rows via dp4a.
// One warp per weight row, or `splits` warps per row (split-K, below);
// MATVEC_WARPS / splits rows per block (grid.x = ceil(rows / that)).
// With `add` set, out = add + dot instead (add may be out itself: the
// residual X += W y in one launch; each element is read and written by one lane).
// mma.cu includes this file for its unit decoders (load_unit) with
// MATVEC_NO_KERNELS defined: the definitions without the kernels.
#ifndef MAMBA_MATVEC_CU
#define MAMBA_MATVEC_CU
#include "common.cuh"
#include "iq1_grid.cuh"
#include "iq2_grids.cuh"
#include "iq3_grids.cuh"

#define MATVEC_WARPS 4

// The x-projection's tail: Falcon's weightless dt/B/C norm of its output
// rows, done by the launch's last block to finish instead of an rms_norm3
// launch of its own (see norm3_tail below). In device memory, written once
// per workspace (ops::Norm3Tail); `count` is the one field a launch changes.
struct MvTail {
    int count;  // blocks of the launch done; the last one puts 0 back
    int nbc;    // B's and C's length: a row is dt (rows - 2 nbc), B, C
    float eps;
    int pad_;
    i8* q;      // null, or [NC][rows - 2 nbc]: the normed dt also in Q8A
    float* d;   // [NC][(rows - 2 nbc) / 32]
    int* s;
};

struct MatvecArgs {
    const u8* w;
    const i8* q;
    const float* d;
    const int* s;
    float* out;  // [NC][rows]
    int n;
    int rows;
    int row_bytes;
    const float* add;  // null, or [NC][rows] added to the dots
    // Slices of each row's units (1, 2 or 4; nb % (32 * splits) == 0): the
    // order every kernel sums a row in (see "Split-K" below), and at decode
    // the warps a row gets.
    int splits;
};

// The parameters of matvec_<t>_n3_<c>, the matvec with the x-projection's
// norm tail: MatvecArgs, then the tail.
struct MatvecTArgs {
    MatvecArgs m;
    MvTail* tail;  // the x-projection's norm tail (norm3_tail)
};

// One decoded unit: 32 int8 values (8 words), contribution for an activation
// block (da, sa, dot) = da * (dw * isum + mw * msum) with
// isum = lo * dot(q[0..4]) + hi * dot(q[4..8]) + off * sa and msum = sa, or
// for a type with a min or delta per 16 or 8 values (Q2_K, IQ1_M: `m8on`)
// msum = sum over groups g of m8[g] * (sum of the block's activations
// 8g..8g + 8).
struct Unit {
    int q[8];
    float dw, mw;
    int off, lo, hi;
    bool m8on;
    int m8[4];
};

// Spread 4 bits into bit 4 of four bytes.
static __device__ __forceinline__ u32 spread4(u32 x) {
    return ((x & 1u) << 4) | ((x & 2u) << 11) | ((x & 4u) << 18) | ((x & 8u) << 25);
}

#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q5_0 6
#define T_Q5_1 7
#define T_Q8_0 8
#define T_Q4_K 12
#define T_Q5_K 13
#define T_Q6_K 14
#define T_Q2_K 10
#define T_Q3_K 11
#define T_IQ2_XXS 16
#define T_IQ2_XS 17
#define T_IQ2_S 22
#define T_TQ2_0 35
#define T_TQ1_0 34
#define T_IQ1_S 19
#define T_IQ1_M 29
#define T_IQ3_XXS 18
#define T_IQ3_S 21
#define T_IQ4_NL 20
#define T_IQ4_XS 23

// Bytes of a Q6_K superblock in device memory: the GGUF's 210, padded with
// zeros to a multiple of 16 (ops.rs Q6K_DEV_BYTES).
#define Q6K_DEV_BYTES 224
// An IQ4_XS superblock in device memory (ops.rs IQ4XS_DEV_BYTES): the 128
// index bytes first, then d, scales_h, scales_l and 8 zero bytes, so that
// each unit's 16 index bytes and the header are single 16-byte loads.
#define IQ4XS_DEV_BYTES 144
// Q2_K and Q3_K superblocks in device memory (ops.rs Q2K_DEV_BYTES,
// Q3K_DEV_BYTES): the GGUF's 84 and 110 bytes zero-padded to 96 and 112, so
// every field starts 16-byte aligned (Q2_K: scales 0, levels 16, d and dmin
// 80; Q3_K: hmask 0, low bits 32, scales 96, d 108 in the scales' load).
#define Q2K_DEV_BYTES 96
#define Q3K_DEV_BYTES 112

// Byte k (0..12) of three little-endian words, by selects (no indexed
// register array, which would go to local memory).
static __device__ __forceinline__ u32 byte_of3(u32 x, u32 y, u32 z, int k) {
    const u32 w = k < 4 ? x : k < 8 ? y : z;
    return (w >> (8 * (k & 3))) & 0xffu;
}

// Four grid levels (unsigned, 1..62 in each byte) negated where the four
// low bits of `sb` are set (bit i: byte i): (x ^ 0xff) + 1 per byte, which
// carries into no neighbour for x >= 1.
static __device__ __forceinline__ u32 sign4(u32 g, u32 sb) {
    const u32 m = ((sb & 0xfu) * 0x00204081u) & 0x01010101u;  // bit i -> bit 8i
    return (g ^ (m * 0xffu)) + m;
}

// Q3_K's 6-bit scale s (0..16) from its 12 packed bytes (words x, y, z):
// low 4 bits in byte s (s < 8, low nibble) or s - 8 (high nibble), high 2
// bits at bit 2(s / 4) of byte 8 + s % 4.
static __device__ __forceinline__ int q3k_scale(u32 x, u32 y, u32 z, int s) {
    const u32 lo = s < 8 ? byte_of3(x, y, z, s) & 0xfu : byte_of3(x, y, z, s - 8) >> 4;
    const u32 hi = (byte_of3(x, y, z, 8 + (s & 3)) >> (2 * (s >> 2))) & 3u;
    return (int)(lo | (hi << 4));
}

template <int T>
static __device__ __forceinline__ void load_unit(const u8* row, int u, Unit& o) {
    o.mw = 0.0f;
    o.off = 0;
    o.lo = 1;
    o.hi = 1;
    o.m8on = false;
#pragma unroll
    for (int g = 0; g < 4; g++) o.m8[g] = 0;
    if (T == T_Q4_0 || T == T_Q4_1) {
        const int bb = T == T_Q4_0 ? 18 : 20;
        const u8* b = row + (long long)u * bb;
        const u8* qs = b + (T == T_Q4_0 ? 2 : 4);
        o.dw = f16_to_f32_cvt(ld_u16(b));
        if (T == T_Q4_1) o.mw = f16_to_f32_cvt(ld_u16(b + 2));
        else o.off = -8;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            u32 w = ld_u32_a2(qs + 4 * i);
            o.q[i] = (int)(w & 0x0f0f0f0fu);
            o.q[4 + i] = (int)((w >> 4) & 0x0f0f0f0fu);
        }
    } else if (T == T_Q5_0 || T == T_Q5_1) {
        const int bb = T == T_Q5_0 ? 22 : 24;
        const u8* b = row + (long long)u * bb;
        const int hoff = T == T_Q5_0 ? 2 : 4;
        o.dw = f16_to_f32_cvt(ld_u16(b));
        if (T == T_Q5_1) o.mw = f16_to_f32_cvt(ld_u16(b + 2));
        else o.off = -16;
        u32 qh = ld_u32_a2(b + hoff);
        const u8* qs = b + hoff + 4;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            u32 w = ld_u32_a2(qs + 4 * i);
            o.q[i] = (int)((w & 0x0f0f0f0fu) | spread4(qh >> (4 * i)));
            o.q[4 + i] = (int)(((w >> 4) & 0x0f0f0f0fu) | spread4(qh >> (16 + 4 * i)));
        }
    } else if (T == T_Q8_0) {
        const u8* b = row + (long long)u * 34;
        o.dw = f16_to_f32_cvt(ld_u16(b));
#pragma unroll
        for (int i = 0; i < 8; i++) o.q[i] = (int)ld_u32_a2(b + 2 + 4 * i);
    } else if (T == T_Q4_K || T == T_Q5_K) {
        // Superblock of 8 units: d, dmin (f16), 12 bytes of 6-bit scales and
        // mins, [Q5_K: 32 bytes of high bits], 128 bytes of nibbles (unit j
        // = the low (j even) or high nibbles of 32-byte group j / 2). The
        // block sizes (144, 176), the row strides (multiples of them) and the
        // buffer base (cuMemAlloc: 256) are 16-byte aligned, so the header is
        // one 16-byte load and each 32-byte run two: 3 loads a unit for Q4_K
        // (5 for Q5_K), every one issued before the first is used.
        const int bb = T == T_Q4_K ? 144 : 176;
        const u8* b = row + (long long)(u / 8) * bb;
        const int j = u % 8, g = j / 2, sh = 4 * (j & 1);
        const U4 hd = ld_u4(b);
        const u8* qs = b + (T == T_Q4_K ? 16 : 48) + 32 * g;
        const U4 q0 = ld_u4(qs), q1 = ld_u4(qs + 16);
        U4 h0 = U4{0, 0, 0, 0}, h1 = U4{0, 0, 0, 0};
        if (T == T_Q5_K) {
            h0 = ld_u4(b + 16);
            h1 = ld_u4(b + 32);
        }
        // Scale bytes sc[0..12] are hd.y, hd.z, hd.w (little-endian): sc[j],
        // sc[j + 4] for j < 4; sc[j + 4], sc[j - 4], sc[j] for j >= 4 are
        // byte j % 4 of hd.w, hd.y, hd.z. Shifts and a select, no indexing
        // (an indexed register array would go to local memory).
        const int bs = 8 * (j & 3);
        const int b1 = (hd.y >> bs) & 0xff, b2 = (hd.z >> bs) & 0xff, b3 = (hd.w >> bs) & 0xff;
        const int s = j < 4 ? (b1 & 63) : ((b3 & 0xf) | ((b1 >> 6) << 4));
        const int m = j < 4 ? (b2 & 63) : ((b3 >> 4) | ((b2 >> 6) << 4));
        o.dw = mul_rn(f16_to_f32_cvt(hd.x & 0xffffu), (float)s);
        o.mw = -mul_rn(f16_to_f32_cvt(hd.x >> 16), (float)m);
        const u32 qw[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
        const u32 hw[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
#pragma unroll
        for (int i = 0; i < 8; i++) {
            u32 w = (qw[i] >> sh) & 0x0f0f0f0fu;
            if (T == T_Q5_K) w |= ((hw[i] >> j) & 0x01010101u) << 4;
            o.q[i] = (int)w;
        }
    } else if (T == T_Q2_K) {
        // Unit j = values 32j..: levels (byte l of the 32 level bytes of
        // half h = j / 4) >> 2(j % 4) & 3; scale and min of each 16 values
        // in the low and high nibble of scale byte 8h + 2(j % 4) (+ 1).
        const u8* b = row + (long long)(u / 8) * Q2K_DEV_BYTES;
        const int j = u % 8, h = j / 4, jj = j % 4;
        const U4 sc = ld_u4(b), l0 = ld_u4(b + 16 + 32 * h), l1 = ld_u4(b + 32 + 32 * h), dd = ld_u4(b + 80);
        o.dw = f16_to_f32_cvt(dd.x & 0xffffu);
        o.mw = -f16_to_f32_cvt(dd.x >> 16);
        const int si = 8 * h + 2 * jj;
        const u32 sw = si < 4 ? sc.x : si < 8 ? sc.y : si < 12 ? sc.z : sc.w;
        const u32 s0 = (sw >> (8 * (si & 3))) & 0xffu, s1 = (sw >> (8 * (si & 3) + 8)) & 0xffu;
        o.lo = (int)(s0 & 0xfu);
        o.hi = (int)(s1 & 0xfu);
        o.m8on = true;
        o.m8[0] = o.m8[1] = (int)(s0 >> 4);
        o.m8[2] = o.m8[3] = (int)(s1 >> 4);
        const u32 lw[8] = {l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w};
#pragma unroll
        for (int i = 0; i < 8; i++) o.q[i] = (int)((lw[i] >> (2 * jj)) & 0x03030303u);
    } else if (T == T_Q3_K) {
        // Unit j: low bits (byte l of half h's 32 bytes) >> 2(j % 4) & 3,
        // plus 4 where bit 4h + j % 4 of hmask[l] is set, minus 4: -4..3.
        const u8* b = row + (long long)(u / 8) * Q3K_DEV_BYTES;
        const int j = u % 8, h = j / 4, jj = j % 4;
        const U4 m0 = ld_u4(b), m1 = ld_u4(b + 16), q0 = ld_u4(b + 32 + 32 * h), q1 = ld_u4(b + 48 + 32 * h);
        const U4 sc = ld_u4(b + 96);
        o.dw = f16_to_f32_cvt(sc.w & 0xffffu);
        const int si = 8 * h + 2 * jj;
        o.lo = q3k_scale(sc.x, sc.y, sc.z, si) - 32;
        o.hi = q3k_scale(sc.x, sc.y, sc.z, si + 1) - 32;
        const u32 qw[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
        const u32 mw[8] = {m0.x, m0.y, m0.z, m0.w, m1.x, m1.y, m1.z, m1.w};
        const int bit = 4 * h + jj;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const u32 low = (qw[i] >> (2 * jj)) & 0x03030303u;
            const u32 high = ((mw[i] >> bit) & 0x01010101u) << 2;
            o.q[i] = (int)bytes_sub(low | high, 0x04040404u);
        }
    } else if (T == T_IQ2_XXS || T == T_IQ2_XS || T == T_IQ2_S) {
        // The file's layout (66-, 74- and 82-byte superblocks, 2-byte
        // aligned). Unit j: four grid entries of eight levels (words q[2l],
        // q[2l + 1]) with eight sign bits each, and the odd multipliers
        // 2s + 1 of the first and last 16 values (IQ2_XXS: one s per 32);
        // the scale per unit of multiplier is d / 8.
        const int bb = T == T_IQ2_XXS ? 66 : T == T_IQ2_XS ? 74 : 82;
        const u8* b = row + (long long)(u / 8) * bb;
        const int j = u % 8;
        o.dw = mul_rn(f16_to_f32_cvt(ld_u16(b)), 0.125f);
        u32 idx[4], sg[4];
        if (T == T_IQ2_XXS) {
            const u32 ids = ld_u32_a2(b + 2 + 8 * j), aux = ld_u32_a2(b + 6 + 8 * j);
#pragma unroll
            for (int l = 0; l < 4; l++) {
                idx[l] = (ids >> (8 * l)) & 0xffu;
                const u32 s7 = (aux >> (7 * l)) & 127u;
                sg[l] = s7 | ((__popc(s7) & 1u) << 7);
            }
            o.lo = o.hi = (int)(2u * (aux >> 28) + 1u);
        } else if (T == T_IQ2_XS) {
#pragma unroll
            for (int l = 0; l < 4; l++) {
                const u32 q = ld_u16(b + 2 + 8 * j + 2 * l);
                idx[l] = q & 511u;
                const u32 s7 = q >> 9;
                sg[l] = s7 | ((__popc(s7) & 1u) << 7);
            }
            const u32 sc = (ld_u16(b + 66 + (j & ~1)) >> (8 * (j & 1))) & 0xffu;
            o.lo = (int)(2u * (sc & 0xfu) + 1u);
            o.hi = (int)(2u * (sc >> 4) + 1u);
        } else {
            const u32 lo4 = ld_u32_a2(b + 2 + 4 * j), s4 = ld_u32_a2(b + 34 + 4 * j);
            const u32 qh = (ld_u16(b + 66 + (j & ~1)) >> (8 * (j & 1))) & 0xffu;
#pragma unroll
            for (int l = 0; l < 4; l++) {
                idx[l] = ((lo4 >> (8 * l)) & 0xffu) | ((qh << (8 - 2 * l)) & 0x300u);
                sg[l] = (s4 >> (8 * l)) & 0xffu;
            }
            const u32 sc = (ld_u16(b + 74 + (j & ~1)) >> (8 * (j & 1))) & 0xffu;
            o.lo = (int)(2u * (sc & 0xfu) + 1u);
            o.hi = (int)(2u * (sc >> 4) + 1u);
        }
#pragma unroll
        for (int l = 0; l < 4; l++) {
            const unsigned long long g = T == T_IQ2_XXS ? IQ2XXS_GRID[idx[l]]
                                         : T == T_IQ2_XS ? IQ2XS_GRID[idx[l]]
                                                         : IQ2S_GRID[idx[l]];
            o.q[2 * l] = (int)sign4((u32)g, sg[l]);
            o.q[2 * l + 1] = (int)sign4((u32)(g >> 32), sg[l] >> 4);
        }
    } else if (T == T_IQ1_S || T == T_IQ1_M) {
        // The file's layout (50- and 56-byte superblocks, 2-byte aligned).
        // Unit j: four grid entries of eight levels in -1..1 (11-bit
        // indices), the odd multipliers 2s + 1 (IQ1_S: one per 32 values;
        // IQ1_M: first and last 16), and the delta +-1/8 per 32 (IQ1_S) or
        // per 8 values (IQ1_M), applied through the activation sums.
        const u8* b = row + (long long)(u / 8) * (T == T_IQ1_S ? 50 : 56);
        const int j = u % 8;
        u32 idx[4];
        if (T == T_IQ1_S) {
            const u32 qs = ld_u32_a2(b + 2 + 4 * j), qh = ld_u16(b + 34 + 2 * j);
#pragma unroll
            for (int l = 0; l < 4; l++) idx[l] = ((qs >> (8 * l)) & 0xffu) | (((qh >> (3 * l)) & 7u) << 8);
            const int ls = (int)(2u * ((qh >> 12) & 7u) + 1u);
            o.lo = o.hi = ls;
            const float d = f16_to_f32_cvt(ld_u16(b));
            o.dw = d;
            o.mw = mul_rn(mul_rn(d, 0.125f), (float)((qh & 0x8000u) ? -ls : ls));
        } else {
            const u32 qs = ld_u32_a2(b + 4 * j), qh = ld_u16(b + 32 + 2 * j);
            const u32 s0 = ld_u16(b + 48), s1 = ld_u16(b + 50), s2 = ld_u16(b + 52), s3 = ld_u16(b + 54);
            const u32 dbits = (s0 >> 12) | ((s1 >> 8) & 0x00f0u) | ((s2 >> 4) & 0x0f00u) | (s3 & 0xf000u);
            const u32 sc = j / 2 == 0 ? s0 : j / 2 == 1 ? s1 : j / 2 == 2 ? s2 : s3;
            o.lo = (int)(2u * ((sc >> (6 * (j % 2))) & 7u) + 1u);
            o.hi = (int)(2u * ((sc >> (6 * (j % 2) + 3)) & 7u) + 1u);
            const float d = f16_to_f32_cvt(dbits);
            o.dw = d;
            o.mw = mul_rn(d, 0.125f);
            o.m8on = true;
#pragma unroll
            for (int l = 0; l < 4; l++) {
                const u32 nib = (qh >> (4 * l)) & 0xfu;
                idx[l] = ((qs >> (8 * l)) & 0xffu) | ((nib & 7u) << 8);
                const int ls = l < 2 ? o.lo : o.hi;
                o.m8[l] = (nib & 8u) ? -ls : ls;
            }
        }
#pragma unroll
        for (int l = 0; l < 4; l++) {
            const unsigned long long g = IQ1S_GRID[idx[l]];
            o.q[2 * l] = (int)(u32)g;
            o.q[2 * l + 1] = (int)(u32)(g >> 32);
        }
    } else if (T == T_TQ1_0) {
        // 54-byte superblocks: 48 bytes of five trits, 4 of four, fp16 d
        // last (layout in quant/src/tq.rs). Unit j's 32 values one byte at a
        // time: trit n of byte k is ((k * 3^n mod 256) * 3) >> 8, minus 1.
        const u8* b = row + (long long)(u / 8) * 54;
        const int j = u % 8;
        o.dw = f16_to_f32_cvt(ld_u16(b + 52));
#pragma unroll
        for (int i = 0; i < 8; i++) {
            u32 w = 0;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int v = 32 * j + 4 * i + e;  // value index in the superblock
                u32 byte, n;
                if (v < 160) {
                    byte = b[v % 32];
                    n = (u32)(v / 32);
                } else if (v < 240) {
                    byte = b[32 + (v - 160) % 16];
                    n = (u32)((v - 160) / 16);
                } else {
                    byte = b[48 + (v - 240) % 4];
                    n = (u32)((v - 240) / 4);
                }
                const u32 p3 = n == 0 ? 1u : n == 1 ? 3u : n == 2 ? 9u : n == 3 ? 27u : 81u;
                const u32 t = ((((byte * p3) & 0xffu) * 3u) >> 8);
                w |= ((t - 1u) & 0xffu) << (8 * e);
            }
            o.q[i] = (int)w;
        }
    } else if (T == T_TQ2_0) {
        // 66-byte superblocks (64 bytes of 2-bit codes, fp16 d last): unit
        // j's code of byte l of half j / 4's 32 bytes at bits 2(j % 4).
        const u8* b = row + (long long)(u / 8) * 66;
        const int j = u % 8, h = j / 4, sh = 2 * (j % 4);
        o.dw = f16_to_f32_cvt(ld_u16(b + 64));
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const u32 w = ld_u32_a2(b + 32 * h + 4 * i);
            o.q[i] = (int)bytes_sub((w >> sh) & 0x03030303u, 0x01010101u);
        }
    } else if (T == T_IQ3_XXS || T == T_IQ3_S) {
        // The file's layout (98- and 110-byte superblocks, 2-byte aligned).
        // Unit j: eight grid indices (qs[8j..8j + 8], IQ3_S with a ninth bit
        // each from qh[j]), 32 sign bits (IQ3_XXS: four 7-bit indices in
        // the word at 66 + 4j, an eighth bit making each byte's count even;
        // IQ3_S: the word at 74 + 4j), and the odd multiplier 2s + 1 (s:
        // bits 28..32 of that IQ3_XXS word, or nibble j % 2 of byte
        // 106 + j / 2). IQ3_XXS's scale is d / 4 per unit of multiplier.
        const int bb = T == T_IQ3_XXS ? 98 : 110;
        const u8* b = row + (long long)(u / 8) * bb;
        const int j = u % 8;
        const float d = f16_to_f32_cvt(ld_u16(b));
        const u32 i0 = ld_u32_a2(b + 2 + 8 * j), i1 = ld_u32_a2(b + 6 + 8 * j);
        u32 signs, ls;
        if (T == T_IQ3_XXS) {
            const u32 aux = ld_u32_a2(b + 66 + 4 * j);
            signs = 0;
#pragma unroll
            for (int l = 0; l < 4; l++) {
                const u32 s7 = (aux >> (7 * l)) & 127u;
                signs |= (s7 | ((__popc(s7) & 1u) << 7)) << (8 * l);
            }
            ls = 2u * (aux >> 28) + 1u;
            o.dw = mul_rn(d, 0.25f);
        } else {
            signs = ld_u32_a2(b + 74 + 4 * j);
            ls = 2u * ((ld_u16(b + 106 + 2 * (j / 4)) >> (4 * (j % 4))) & 0xfu) + 1u;
            o.dw = d;
        }
        o.lo = (int)ls;
        o.hi = (int)ls;
        const u32 qh = T == T_IQ3_S ? (ld_u16(b + 66 + (j & ~1)) >> (8 * (j & 1))) & 0xffu : 0u;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const u32 idx = ((k < 4 ? i0 : i1) >> (8 * (k & 3))) & 0xffu;
            const u32 g = T == T_IQ3_XXS ? IQ3XXS_GRID[idx] : IQ3S_GRID[idx | (((qh >> k) & 1u) << 8)];
            o.q[k] = (int)sign4(g, signs >> (4 * k));
        }
    } else if (T == T_IQ4_NL) {
        // Q4_0's layout (18 bytes: d, 16 bytes of indices) with codebook
        // levels for q - 8.
        const u8* b = row + (long long)u * 18;
        o.dw = f16_to_f32_cvt(ld_u16(b));
#pragma unroll
        for (int i = 0; i < 4; i++) {
            u32 w = ld_u32_a2(b + 2 + 4 * i);
            o.q[i] = (int)iq4_lookup4(w & 0x0f0f0f0fu);
            o.q[4 + i] = (int)iq4_lookup4((w >> 4) & 0x0f0f0f0fu);
        }
    } else if (T == T_IQ4_XS) {
        // Unit j of a superblock: its 16 index bytes (low nibbles values
        // 0..16, high nibbles 16..32) and the 6-bit scale ls of sub-block
        // j (low 4 bits: nibble j of scales_l, high 2: bits 2j of scales_h),
        // applied as the integer multiplier ls - 32 of both halves.
        const u8* b = row + (long long)(u / 8) * IQ4XS_DEV_BYTES;
        const int j = u % 8;
        const U4 q = ld_u4(b + 16 * j), hd = ld_u4(b + 128);
        o.dw = f16_to_f32_cvt(hd.x & 0xffffu);
        const int ls = (int)(((hd.y >> (4 * j)) & 0xfu) | (((hd.x >> (16 + 2 * j)) & 3u) << 4));
        o.lo = ls - 32;
        o.hi = ls - 32;
        const u32 qw[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            o.q[i] = (int)iq4_lookup4(qw[i] & 0x0f0f0f0fu);
            o.q[4 + i] = (int)iq4_lookup4((qw[i] >> 4) & 0x0f0f0f0fu);
        }
    } else if (T == T_Q6_K) {
        // The device layout (ops.rs upload_weights): each 210-byte superblock
        // padded to Q6K_DEV_BYTES, so ql (128 bytes), qh (64), the 16 scales
        // and d sit at 16-byte aligned offsets 0, 128, 192, 208: six 16-byte
        // loads a unit instead of 33 two-byte ones.
        const u8* b = row + (long long)(u / 8) * Q6K_DEV_BYTES;
        const int j = u % 8, h = j / 4, k = j % 4;
        const u8* ql = b + 64 * h + 32 * (k & 1);
        const u8* qh = b + 128 + 32 * h;
        const U4 l0 = ld_u4(ql), l1 = ld_u4(ql + 16), h0 = ld_u4(qh), h1 = ld_u4(qh + 16);
        const U4 sc = ld_u4(b + 192), dd = ld_u4(b + 208);
        o.dw = f16_to_f32_cvt(dd.x & 0xffffu);
        // The two 16-value scales, bytes si and si + 1 of sc (si = 8h + 2k,
        // even: both in word si / 4), chosen by selects, not an index.
        const int si = 8 * h + 2 * k, wi = si >> 2, sb = 8 * (si & 3);
        const u32 sw = wi == 0 ? sc.x : wi == 1 ? sc.y : wi == 2 ? sc.z : sc.w;
        o.lo = (int)(i8)(sw >> sb);
        o.hi = (int)(i8)(sw >> (sb + 8));
        const u32 lw[8] = {l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w};
        const u32 hw[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
#pragma unroll
        for (int i = 0; i < 8; i++) {
            u32 w = (lw[i] >> (4 * (k >> 1))) & 0x0f0f0f0fu;
            w |= ((hw[i] >> (2 * k)) & 0x03030303u) << 4;
            o.q[i] = (int)bytes_sub(w, 0x20202020u);
        }
    }
}

// acc + one unit's contribution against one activation block's 8 words aq
// (loaded by the caller: from global memory, or the matmul's shared tile).
// Every kernel adds a unit through this one expression, so a
// column's sum is the same bits whichever kernel computes it. Its roundings
// are spelled out (__fmul_rn, __fmaf_rn: the emulator's are the same IEEE
// operations) so that neither ptxas nor a driver's JIT can contract the
// products differently in two kernels: t = rn(mw * sa + rn(dw * isum)),
// acc' = rn(da * t + acc).
static __device__ __forceinline__ float unit_acc(float acc, const Unit& un, const int (&aq)[8], int sa, float da) {
    int lo = 0, hi = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) lo = dot4(un.q[i], aq[i], lo);
#pragma unroll
    for (int i = 4; i < 8; i++) hi = dot4(un.q[i], aq[i], hi);
    int isum = un.lo * lo + un.hi * hi + un.off * sa;
    int msum = sa;
    if (un.m8on) {  // a constant per weight type: folded away elsewhere
        msum = 0;
#pragma unroll
        for (int g = 0; g < 4; g++) msum += un.m8[g] * dot4(0x01010101, aq[2 * g + 1], dot4(0x01010101, aq[2 * g], 0));
    }
    const float t = __fmaf_rn(un.mw, (float)msum, __fmul_rn(un.dw, (float)isum));
    return __fmaf_rn(da, t, acc);
}

// One activation block (32 int8 = 8 words, 32-byte aligned: Q8A rows start
// at multiples of n, n % 32 == 0) in two 16-byte loads.
static __device__ __forceinline__ void load_act(const i8* q, int (&aq)[8]) {
    const U4 a0 = ld_u4(q), a1 = ld_u4(q + 16);
    aq[0] = (int)a0.x, aq[1] = (int)a0.y, aq[2] = (int)a0.z, aq[3] = (int)a0.w;
    aq[4] = (int)a1.x, aq[5] = (int)a1.y, aq[6] = (int)a1.z, aq[7] = (int)a1.w;
}

// Split-K. A row's nb units are summed in `splits` slices of L = nb / splits
// units (a multiple of 32): in slice k lane l adds units kL + l, kL + l + 32,
// ... in that order, the slice's sum is the warp's butterfly sum of its
// lanes, and the row's dot is slice 0 + slice 1 + ... from the left. With
// one slice this is the plain one-warp-per-row sum. The matvec gives each
// slice its own warp (a matrix with few rows, x_proj's 288, then fills more
// of the card); the matmul walks the slices in turn; both add in this one
// order, so they still agree bit for bit.
//
// NC activation rows against one weight row per `splits` warps (a block's
// MATVEC_WARPS warps take MATVEC_WARPS / splits rows). With one or two
// activation rows a lane takes two units per trip (both units' loads in
// flight before either is used: the decode step streams its weights here);
// it still adds them in the order l, l + 32.
// Short rows (nb < 32 units dividing 32: dt_proj's 256 values are 8 units)
// would leave most lanes of a warp idle: at one or two activation rows a
// warp takes 32 / nb rows, a unit
// per lane, and sums each row's nb lanes by the butterfly's last steps. The
// one-row-per-warp butterfly's first steps add only zeros (lanes past nb
// hold +0): adding +0 once (which turns a -0 into +0, as they would) gives
// the same bits, so this still equals the matmul (one row per warp).
template <int T, int NC>
static __device__ __forceinline__ void matvec_short_rows(const MatvecArgs& a, int nb) {
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int row = (blockIdx.x * MATVEC_WARPS + warp) * (WARP / nb) + lane / nb, u = lane % nb;
    const bool on = row < a.rows;
    float acc[NC];
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = 0.0f;
    if (on) {
        Unit un;
        load_unit<T>(a.w + (long long)row * a.row_bytes, u, un);
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int aq[8];
            load_act(a.q + (long long)c * a.n + 32 * u, aq);
            acc[c] = unit_acc(0.0f, un, aq, a.s[c * nb + u], a.d[c * nb + u]);
        }
    }
#pragma unroll
    for (int c = 0; c < NC; c++) {
        float v = acc[c] + 0.0f;
        for (int m = nb / 2; m > 0; m >>= 1) v += __shfl_xor_sync(FULL_MASK, v, m);
        long long o = (long long)c * a.rows + row;
        if (on && u == 0) a.out[o] = a.add ? a.add[o] + v : v;
    }
}

template <int T, int NC>
static __device__ __forceinline__ void matvec_impl(const MatvecArgs& a) {
    constexpr int UNR = NC <= 2 ? 2 : 1;
    // Decode (one or two activation rows) only: more rows keep the general
    // path, which gives the same bits, and the code stays smaller.
    if (NC <= 2 && a.n / WARP < WARP && WARP % (a.n / WARP) == 0) {  // uniform
        matvec_short_rows<T, NC>(a, a.n / WARP);
        return;
    }
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int S = a.splits, slice = warp % S;
    const int row = blockIdx.x * (MATVEC_WARPS / S) + warp / S;
    const bool live = row < a.rows;  // warp-uniform
    const int nb = a.n / WARP, len = nb / S, u_end = (slice + 1) * len;
    const u8* w = a.w + (long long)(live ? row : 0) * a.row_bytes;
    float acc[NC];
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = 0.0f;
    for (int u0 = slice * len + lane; live && u0 < u_end; u0 += UNR * WARP) {
        Unit un[UNR];
        int us[UNR];
#pragma unroll
        for (int k = 0; k < UNR; k++) {
            // A unit past the slice loads unit u0 again (always valid) and
            // is not added: no branch around the loads.
            us[k] = u0 + k * WARP < u_end ? u0 + k * WARP : u0;
            load_unit<T>(w, us[k], un[k]);
        }
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int aq[UNR][8];
            int sa[UNR];
            float da[UNR];
#pragma unroll
            for (int k = 0; k < UNR; k++) {
                load_act(a.q + (long long)c * a.n + 32 * us[k], aq[k]);
                sa[k] = a.s[c * nb + us[k]];
                da[k] = a.d[c * nb + us[k]];
            }
#pragma unroll
            for (int k = 0; k < UNR; k++)
                if (k == 0 || u0 + k * WARP < u_end) acc[c] = unit_acc(acc[c], un[k], aq[k], sa[k], da[k]);
        }
    }
    if (S == 1) {  // uniform: the plain path, no barrier
        if (!live) return;
#pragma unroll
        for (int c = 0; c < NC; c++) {
            float v = warp_sum(acc[c]);
            long long o = (long long)c * a.rows + row;
            if (lane == 0) a.out[o] = a.add ? a.add[o] + v : v;
        }
        return;
    }
    // Each slice's sum to shared memory; the row's first warp adds them in
    // slice order. Every thread reaches the barrier (dead rows included).
    __shared__ float part[MATVEC_WARPS][8];
#pragma unroll
    for (int c = 0; c < NC; c++) {
        float v = warp_sum(acc[c]);
        if (lane == 0) part[warp][c] = v;
    }
    __syncthreads();
    if (live && slice == 0 && lane == 0) {
        // S is 2 or 4 here; one lane, a few adds: kept small, not unrolled.
#pragma unroll 1
        for (int c = 0; c < NC; c++) {
            float v = part[warp][c] + part[warp + 1][c];
            if (S == 4) v = (v + part[warp + 2][c]) + part[warp + 3][c];
            long long o = (long long)c * a.rows + row;
            a.out[o] = a.add ? a.add[o] + v : v;
        }
    }
}

// Partial sums of squares per row segment kept by the norm tail: dt's
// virtual warps, then B's, then C's (ops::norm3_tail checks the shape fits).
#define TAIL_PARTS 16

// Thread t's share of a row's sum of squares in norm.cu's rms_scale with
// step = norm_threads(n) threads: x[t], x[t + step], ... in that order,
// RMS_UNROLL loads before the first add, the squares fused. Loads past L1.
static __device__ __forceinline__ float rms_share(const float* x, int n, int t, int step) {
    float ss = 0.0f;
    for (int i0 = t; i0 < n; i0 += RMS_UNROLL * step) {
        float v[RMS_UNROLL];
#pragma unroll
        for (int k = 0; k < RMS_UNROLL; k++) v[k] = i0 + k * step < n ? ld_cg(x + i0 + k * step) : 0.0f;
#pragma unroll
        for (int k = 0; k < RMS_UNROLL; k++)
            if (i0 + k * step < n) ss = __fmaf_rn(v[k], v[k], ss);
    }
    return ss;
}

// 1 / sqrt(mean(x^2) + eps) from a segment's warp parts, added from the
// first as rms_scale adds them (its extra warps only add +0).
static __device__ __forceinline__ float rms_from_parts(const float* part, int k, int n, float eps) {
    float tot = 0.0f;
    for (int j = 0; j < k; j++) tot += part[j];
    return 1.0f / sqrtf(tot / (float)n + eps);
}

// The x-projection's output rows normed in place as rms_norm3 does (dt, B
// and C each by its own RMS, no weight), the dt segment also in Q8A when
// t->q is set: bit for bit the rms_norm3 launch it replaces. Every block
// counts itself once its outputs are written (__threadfence first, so they
// are visible to every SM); the block that counts last runs the norm,
// reading the other blocks' outputs past L1, and puts the count back to 0
// for the next launch. Its work is spread over the block's warps with one
// barrier: each warp sum of rms_norm3 (a segment's "virtual" warp of
// norm_threads(n) threads; lane l stands for its thread l) is one task of
// one of our warps, all rows and segments at once; then the Q8A blocks of
// dt, a warp each, and B and C, a thread per value. Every thread of every
// block calls it. One or two activation rows only (ops::matvec_norm3): the
// one block's serial work grows with the rows, and past two, rms_norm3's
// launch of a block per row and segment is the faster (the cost model).
template <int NC>
static __device__ __forceinline__ void norm3_tail(const MatvecArgs& a, MvTail* t) {
    __shared__ int last;
    __shared__ float part[NC][TAIL_PARTS];
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&t->count, 1) == (int)(gridDim.x - 1);
    __syncthreads();
    if (!last) return;  // uniform
    __threadfence();
    const int nbc = t->nbc, n0 = a.rows - 2 * nbc, nb0 = n0 / WARP;
    const int s0 = norm_threads(n0), s1 = norm_threads(nbc), v0 = s0 / WARP, v1 = s1 / WARP;
    const int per = v0 + 2 * v1, lane = threadIdx.x % WARP, nw = blockDim.x / WARP;
    const float eps = t->eps;
    for (int k = threadIdx.x / WARP; k < NC * per; k += nw) {  // warp-uniform
        const int c = k / per, j = k % per;
        const float* x = a.out + (long long)c * a.rows;
        float ss;
        if (j < v0) ss = rms_share(x, n0, j * WARP + lane, s0);
        else if (j < v0 + v1) ss = rms_share(x + n0, nbc, (j - v0) * WARP + lane, s1);
        else ss = rms_share(x + n0 + nbc, nbc, (j - v0 - v1) * WARP + lane, s1);
        ss = warp_sum(ss);
        if (lane == 0) part[c][j] = ss;
    }
    __syncthreads();
    // dt: a Q8A block per warp (as rms_norm3), or a value per thread.
    if (t->q) {
        for (int k = threadIdx.x / WARP; k < NC * nb0; k += nw) {  // warp-uniform
            const int c = k / nb0, b = k % nb0, i = b * WARP + lane;
            float* x = a.out + (long long)c * a.rows;
            const float v = ld_cg(x + i) * rms_from_parts(part[c], v0, n0, eps);
            x[i] = v;
            q8a_block(v, t->q + (long long)c * n0 + b * WARP, t->d + c * nb0 + b, t->s + c * nb0 + b);
        }
    } else {
        for (int k = threadIdx.x; k < NC * n0; k += blockDim.x) {
            const int c = k / n0;
            float* x = a.out + (long long)c * a.rows + k % n0;
            *x = ld_cg(x) * rms_from_parts(part[c], v0, n0, eps);
        }
    }
    // B and C.
    for (int k = threadIdx.x; k < NC * 2 * nbc; k += blockDim.x) {
        const int c = k / (2 * nbc), j = k % (2 * nbc), seg = j / nbc;
        float* x = a.out + (long long)c * a.rows + n0 + j;
        *x = ld_cg(x) * rms_from_parts(part[c] + v0 + seg * v1, v1, nbc, eps);
    }
    if (threadIdx.x == 0) t->count = 0;
}

// Prefill: all `ncols` activation rows of a chunk in one launch, tiled.
// A block of MM_WARPS warps takes MM_WARPS consecutive weight rows, one per
// warp, and walks the chunk MM_COLS activation rows at a time; within such a
// group it walks the units in tiles of WARP (lane l takes unit u0 + l, as in
// matvec_impl, so each column's sum runs in matvec's order and equals its bits).
// Each tile of the group's Q8A activations (MM_COLS rows x 32 units x 32
// int8, with their d and s) is staged in shared memory once and read by all
// the block's warps, so the chunk's activations come from L2 once per
// MM_WARPS weight rows rather than once per row, and a weight unit is
// decoded once per MM_COLS activation rows.
//
// The staged q is word-transposed, tile.q[c][k][u] = word k of unit u, with
// lines padded to MM_PAD words: lane u reading word k of its unit hits bank
// (k * MM_PAD + u) % 32, 32 lanes 32 banks. The staging writes (consecutive
// threads, consecutive global words) meet at most 4 to a bank.
// Every thread reaches every barrier: a warp past the last row still stages
// its share and skips only the dots.
#define MM_WARPS 8
#define MM_COLS 16
#define MM_PAD 33

struct MatmulArgs {
    MatvecArgs m;
    int ncols;
};

struct MmTile {
    int q[MM_COLS][8][MM_PAD];
    float d[MM_COLS][WARP];
    int s[MM_COLS][WARP];
};

template <int T>
static __device__ __forceinline__ void matmul_impl(const MatmulArgs& a) {
    __shared__ MmTile tile;
    // The row's running total over the slices done (split-K, above); each
    // entry is written and read by its warp's lane 0 alone.
    __shared__ float tot[MM_WARPS][MM_COLS];
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int row = blockIdx.x * MM_WARPS + warp;
    const bool live = row < a.m.rows;  // warp-uniform
    const int nb = a.m.n / WARP, S = a.m.splits, len = nb / S;
    const u8* w = a.m.w + (long long)(live ? row : 0) * a.m.row_bytes;
    for (int c0 = 0; c0 < a.ncols; c0 += MM_COLS) {
        const int nc = a.ncols - c0 < MM_COLS ? a.ncols - c0 : MM_COLS;
        float acc[MM_COLS];
#pragma unroll
        for (int c = 0; c < MM_COLS; c++) acc[c] = 0.0f;
        for (int u0 = 0; u0 < nb; u0 += WARP) {
            const int nu = nb - u0 < WARP ? nb - u0 : WARP;
            for (int i = threadIdx.x; i < MM_COLS * WARP * 8; i += MM_WARPS * WARP) {
                const int c = i / (WARP * 8), u = (i / 8) % WARP, k = i % 8;
                int v = 0;
                if (c < nc && u < nu) v = ((const int*)(a.m.q + (long long)(c0 + c) * a.m.n))[8 * (u0 + u) + k];
                tile.q[c][k][u] = v;
            }
            for (int i = threadIdx.x; i < MM_COLS * WARP; i += MM_WARPS * WARP) {
                const int c = i / WARP, u = i % WARP;
                const bool in = c < nc && u < nu;
                const long long j = (long long)(c0 + c) * nb + u0 + u;
                tile.d[c][u] = in ? a.m.d[j] : 0.0f;
                tile.s[c][u] = in ? a.m.s[j] : 0;
            }
            __syncthreads();
            if (live && lane < nu) {
                Unit un;
                load_unit<T>(w, u0 + lane, un);
#pragma unroll
                for (int c = 0; c < MM_COLS; c++) {
                    if (c >= nc) break;
                    int aq[8];
#pragma unroll
                    for (int k = 0; k < 8; k++) aq[k] = tile.q[c][k][lane];
                    acc[c] = unit_acc(acc[c], un, aq, tile.s[c][lane], tile.d[c][lane]);
                }
            }
            __syncthreads();
            // The end of a slice other than the last (len is a multiple of
            // 32 when S > 1): its sum joins the total, left to right.
            if (S > 1 && live && u0 + WARP < nb && (u0 + WARP) % len == 0) {
#pragma unroll
                for (int c = 0; c < MM_COLS; c++) {
                    if (c >= nc) break;
                    float v = warp_sum(acc[c]);
                    if (lane == 0) tot[warp][c] = u0 + WARP == len ? v : tot[warp][c] + v;
                    acc[c] = 0.0f;
                }
            }
        }
        if (live) {
#pragma unroll
            for (int c = 0; c < MM_COLS; c++) {
                if (c >= nc) break;
                float v = warp_sum(acc[c]);
                if (S > 1 && lane == 0) v = tot[warp][c] + v;
                long long o = (long long)(c0 + c) * a.m.rows + row;
                if (lane == 0) a.m.out[o] = a.m.add ? a.m.add[o] + v : v;
            }
        }
    }
}

#define MV1(name, T, NC) \
    extern "C" __global__ void matvec_##name##_##NC(const MatvecArgs a) { matvec_impl<T, NC>(a); }
// The x-projection's form with the norm tail (one or two rows): kernels of
// their own, so the tail's registers and shared memory never lower the
// occupancy of the plain matvecs that stream the other weights.
#define MVN3(name, T, NC)                                                     \
    extern "C" __global__ void matvec_##name##_n3_##NC(const MatvecTArgs a) { \
        matvec_impl<T, NC>(a.m);                                              \
        norm3_tail<NC>(a.m, a.tail);                                          \
    }
#define MV(name, T)                                                                                              \
    MV1(name, T, 1) MV1(name, T, 2) MV1(name, T, 3) MV1(name, T, 4) MV1(name, T, 5) MV1(name, T, 6) MV1(name, T, 7) \
        MV1(name, T, 8) MVN3(name, T, 1) MVN3(name, T, 2)

#define MM(name, T) \
    extern "C" __global__ void matmul_##name(const MatmulArgs a) { matmul_impl<T>(a); }
#define MVM(name, T) MV(name, T) MM(name, T)

#ifndef MATVEC_NO_KERNELS
MVM(q4_0, T_Q4_0)
MVM(q4_1, T_Q4_1)
MVM(q5_0, T_Q5_0)
MVM(q5_1, T_Q5_1)
MVM(q8_0, T_Q8_0)
MVM(q4_k, T_Q4_K)
MVM(q5_k, T_Q5_K)
MVM(q6_k, T_Q6_K)
MVM(q2_k, T_Q2_K)
MVM(q3_k, T_Q3_K)
MVM(iq2_xxs, T_IQ2_XXS)
MVM(iq2_xs, T_IQ2_XS)
MVM(iq2_s, T_IQ2_S)
MVM(tq2_0, T_TQ2_0)
MVM(tq1_0, T_TQ1_0)
MVM(iq1_s, T_IQ1_S)
MVM(iq1_m, T_IQ1_M)
MVM(iq3_xxs, T_IQ3_XXS)
MVM(iq3_s, T_IQ3_S)
MVM(iq4_nl, T_IQ4_NL)
MVM(iq4_xs, T_IQ4_XS)
#endif

// Float weights (F32, F16, BF16) against f32 activations, as the CPU pairs
// them: out[c][r] = sum_k w[r][k] * x[c][k] for any n (no block size). One
// warp per row; lane l takes k = l, l + 32, ... so each warp load is contiguous.
struct MatvecFArgs {
    const u8* w;
    const float* x;  // [NC] rows of n, `x_stride` apart
    float* out;      // [NC][rows]
    int n;
    int rows;
    int x_stride;
    const float* add;  // as MatvecArgs::add
};

#define T_F32 0
#define T_F16 1
#define T_BF16 30

template <int T>
static __device__ __forceinline__ float load_wf(const u8* row, int k) {
    if (T == T_F32) return ((const float*)row)[k];
    u32 h = ((const u16*)row)[k];
    return T == T_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

template <int T, int NC>
static __device__ __forceinline__ void matvec_f_impl(const MatvecFArgs& a) {
    const int row = blockIdx.x * MATVEC_WARPS + threadIdx.x / WARP;
    if (row >= a.rows) return;  // warp-uniform
    const int lane = threadIdx.x % WARP;
    const u8* w = a.w + (long long)row * a.n * (T == T_F32 ? 4 : 2);
    float acc[NC];
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = 0.0f;
    for (int k = lane; k < a.n; k += WARP) {
        float wv = load_wf<T>(w, k);
#pragma unroll
        for (int c = 0; c < NC; c++) acc[c] = __fmaf_rn(wv, a.x[(long long)c * a.x_stride + k], acc[c]);
    }
#pragma unroll
    for (int c = 0; c < NC; c++) {
        float v = warp_sum(acc[c]);
        long long o = (long long)c * a.rows + row;
        if (lane == 0) a.out[o] = a.add ? a.add[o] + v : v;
    }
}

#define MVF1(name, T, NC) \
    extern "C" __global__ void matvec_##name##_##NC(const MatvecFArgs a) { matvec_f_impl<T, NC>(a); }
#define MVF(name, T) \
    MVF1(name, T, 1) MVF1(name, T, 2) MVF1(name, T, 3) MVF1(name, T, 4) MVF1(name, T, 5) MVF1(name, T, 6) MVF1(name, T, 7) MVF1(name, T, 8)

#ifndef MATVEC_NO_KERNELS
MVF(f32, T_F32)
MVF(f16, T_F16)
MVF(bf16, T_BF16)
#endif
#endif  // MAMBA_MATVEC_CU
