// Embedding lookup: out[t] = dequantize(row ids[t] of the table), for every
// weight type the CPU runs, bit-exact with quant's dequantizers (products and
// sums are unfused, as on the CPU). An id outside the vocabulary gives a row
// of NaN (the host checks ids first; this only keeps reads in bounds).
#include "common.cuh"
#include "iq1_grid.cuh"
#include "iq2_grids.cuh"
#include "iq3_grids.cuh"

struct EmbedArgs {
    const u8* table;
    const int* ids;
    float* out;  // [tokens][n]
    int n;
    int row_bytes;
    int vocab;
    int ty;  // ggml type id
};

static __device__ float dequant_value(int ty, const u8* row, int k) {
    switch (ty) {
    case 0: return ((const float*)row)[k];
    case 1: return f16_to_f32(((const u16*)row)[k]);
    case 30: return bf16_to_f32(((const u16*)row)[k]);
    case 2: case 3: case 6: case 7: case 8: {
        const int bb = ty == 2 ? 18 : ty == 3 ? 20 : ty == 6 ? 22 : ty == 7 ? 24 : 34;
        const u8* b = row + (long long)(k / 32) * bb;
        const int j = k % 32;
        float d = f16_to_f32(ld_u16(b));
        if (ty == 8) return mul_rn((float)(i8)b[2 + j], d);
        const int hoff = (ty == 3 || ty == 7) ? 4 : 2;
        const u8* qs = b + hoff + ((ty == 6 || ty == 7) ? 4 : 0);
        int q = j < 16 ? (qs[j] & 0xf) : (qs[j - 16] >> 4);
        if (ty == 6 || ty == 7) q |= ((ld_u32_a2(b + hoff) >> j) & 1) << 4;
        if (ty == 2) return mul_rn((float)(q - 8), d);
        if (ty == 6) return mul_rn((float)(q - 16), d);
        return add_rn(mul_rn((float)q, d), f16_to_f32(ld_u16(b + 2)));
    }
    case 12: case 13: {
        const u8* b = row + (long long)(k / 256) * (ty == 12 ? 144 : 176);
        const int i = k % 256, j = i / 32, l = i % 32, g = j / 2;
        const u8* sc = b + 4;
        int s, m;
        if (j < 4) {
            s = sc[j] & 63;
            m = sc[j + 4] & 63;
        } else {
            s = (sc[j + 4] & 0xf) | ((sc[j - 4] >> 6) << 4);
            m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        }
        const u8* qs = b + (ty == 12 ? 16 : 48) + 32 * g;
        int q = (qs[l] >> (4 * (j & 1))) & 0xf;
        if (ty == 13) q |= ((b[16 + l] >> j) & 1) << 4;
        float d1 = mul_rn(f16_to_f32(ld_u16(b)), (float)s);
        float m1 = mul_rn(f16_to_f32(ld_u16(b + 2)), (float)m);
        return add_rn(mul_rn(d1, (float)q), -m1);
    }
    case 14: {
        const u8* b = row + (long long)(k / 256) * 210;
        const int i = k % 256, h = i / 128, kk = (i % 128) / 32, l = i % 32;
        int q = (b[64 * h + l + 32 * (kk & 1)] >> (4 * (kk >> 1))) & 0xf;
        q |= ((b[128 + 32 * h + l] >> (2 * kk)) & 3) << 4;
        float ds = mul_rn(f16_to_f32(ld_u16(b + 208)), (float)(i8)b[192 + i / 16]);
        return mul_rn(ds, (float)(q - 32));
    }
    case 10: {
        // Q2_K (84-byte superblocks, the file's layout).
        const u8* b = row + (long long)(k / 256) * 84;
        const int i = k % 256, h = i / 128, jj = (i % 128) / 32, l = i % 32;
        const int q = (b[16 + 32 * h + l] >> (2 * jj)) & 3;
        const int sc = b[i / 16];
        const float dl = mul_rn(f16_to_f32(ld_u16(b + 80)), (float)(sc & 0xf));
        const float ml = mul_rn(f16_to_f32(ld_u16(b + 82)), (float)(sc >> 4));
        return add_rn(mul_rn(dl, (float)q), -ml);
    }
    case 11: {
        // Q3_K (110-byte superblocks, the file's layout).
        const u8* b = row + (long long)(k / 256) * 110;
        const int i = k % 256, h = i / 128, jj = (i % 128) / 32, l = i % 32, s = i / 16;
        const int lo = (b[32 + 32 * h + l] >> (2 * jj)) & 3;
        const int q = lo - (((b[l] >> (4 * h + jj)) & 1) ? 0 : 4);
        const u8* p = b + 96;
        const int s4 = s < 8 ? (p[s] & 0xf) : (p[s - 8] >> 4);
        const int sc = (s4 | (((p[8 + s % 4] >> (2 * (s / 4))) & 3) << 4)) - 32;
        const float dl = mul_rn(f16_to_f32(ld_u16(b + 108)), (float)sc);
        return mul_rn(dl, (float)q);
    }
    case 16: case 17: case 22: {
        // IQ2_XXS (66-byte superblocks), IQ2_XS (74), IQ2_S (82): a grid
        // level, its sign, and d * (0.5 + s) * 0.25, as the CPU computes.
        const int bb = ty == 16 ? 66 : ty == 17 ? 74 : 82;
        const u8* b = row + (long long)(k / 256) * bb;
        const int i = k % 256, ib = i / 32, l = (i % 32) / 8, jj = i % 8;
        const float d = f16_to_f32(ld_u16(b));
        u32 idx, sb, s;
        if (ty == 16) {
            const u32 aux = ld_u32_a2(b + 6 + 8 * ib);
            idx = b[2 + 8 * ib + l];
            const u32 s7 = (aux >> (7 * l)) & 127u;
            sb = s7 | ((__popc(s7) & 1u) << 7);
            s = aux >> 28;
        } else if (ty == 17) {
            const u32 q = ld_u16(b + 2 + 8 * ib + 2 * l);
            idx = q & 511u;
            const u32 s7 = q >> 9;
            sb = s7 | ((__popc(s7) & 1u) << 7);
            s = (b[66 + ib] >> (4 * (l / 2))) & 0xfu;
        } else {
            idx = b[2 + 4 * ib + l] | (((u32)b[66 + ib] << (8 - 2 * l)) & 0x300u);
            sb = b[34 + 4 * ib + l];
            s = (b[74 + ib] >> (4 * (l / 2))) & 0xfu;
        }
        const unsigned long long g = ty == 16 ? IQ2XXS_GRID[idx] : ty == 17 ? IQ2XS_GRID[idx] : IQ2S_GRID[idx];
        const float level = (float)((g >> (8 * jj)) & 0xffu);
        const float db = mul_rn(mul_rn(d, add_rn(0.5f, (float)s)), 0.25f);
        const float m = mul_rn(db, level);
        return (sb >> jj) & 1u ? -m : m;
    }
    case 19: case 29: {
        // IQ1_S (50-byte superblocks) and IQ1_M (56): dl * (level + delta),
        // dl = d * (2s + 1), as the CPU computes.
        const bool s_ty = ty == 19;
        const u8* b = row + (long long)(k / 256) * (s_ty ? 50 : 56);
        const int i = k % 256, ib = i / 32, l = (i % 32) / 8, jj = i % 8;
        u32 idx;
        float d, delta;
        int ls;
        if (s_ty) {
            const u32 qh = ld_u16(b + 34 + 2 * ib);
            idx = b[2 + 4 * ib + l] | (((qh >> (3 * l)) & 7u) << 8);
            ls = (int)(2u * ((qh >> 12) & 7u) + 1u);
            d = f16_to_f32(ld_u16(b));
            delta = (qh & 0x8000u) ? -0.125f : 0.125f;
        } else {
            const u32 s0 = ld_u16(b + 48), s1 = ld_u16(b + 50), s2 = ld_u16(b + 52), s3 = ld_u16(b + 54);
            d = f16_to_f32((s0 >> 12) | ((s1 >> 8) & 0x00f0u) | ((s2 >> 4) & 0x0f00u) | (s3 & 0xf000u));
            const u32 sc = ld_u16(b + 48 + 2 * (ib / 2));
            ls = (int)(2u * ((sc >> (6 * (ib % 2) + 3 * (l / 2))) & 7u) + 1u);
            const u32 nib = (b[32 + 2 * ib + l / 2] >> (4 * (l % 2))) & 0xfu;
            idx = b[4 * ib + l] | ((nib & 7u) << 8);
            delta = (nib & 8u) ? -0.125f : 0.125f;
        }
        const float level = (float)(i8)(u8)((IQ1S_GRID[idx] >> (8 * jj)) & 0xffu);
        return mul_rn(mul_rn(d, (float)ls), add_rn(level, delta));
    }
    case 34: {
        // TQ1_0: trit of a packed byte, minus 1, times d.
        const u8* b = row + (long long)(k / 256) * 54;
        const int v = k % 256;
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
        const int t = (int)((((byte * p3) & 0xffu) * 3u) >> 8);
        return mul_rn((float)(t - 1), f16_to_f32(ld_u16(b + 52)));
    }
    case 35: {
        // TQ2_0: (q - 1) * d.
        const u8* b = row + (long long)(k / 256) * 66;
        const int i = k % 256, h = i / 128, l = (i % 128) / 32, m = i % 32;
        const int q = (b[32 * h + m] >> (2 * l)) & 3;
        return mul_rn((float)(q - 1), f16_to_f32(ld_u16(b + 64)));
    }
    case 18: case 21: {
        // IQ3_XXS (98-byte superblocks) and IQ3_S (110): a grid level, its
        // sign, and the sub-block's scale d * (0.5 + s) / 2 or d * (1 + 2s),
        // products in the CPU's order.
        const bool xxs = ty == 18;
        const u8* b = row + (long long)(k / 256) * (xxs ? 98 : 110);
        const int i = k % 256, ib = i / 32, g = i / 4, jj = i % 4;
        const float d = f16_to_f32(ld_u16(b));
        u32 level;
        bool neg;
        float db;
        if (xxs) {
            const u32 aux = ld_u32_a2(b + 66 + 4 * ib);
            const u32 s7 = (aux >> (7 * ((i % 32) / 8))) & 127u;
            const u32 sb = s7 | ((__popc(s7) & 1u) << 7);
            level = (IQ3XXS_GRID[b[2 + g]] >> (8 * jj)) & 0xffu;
            neg = (sb >> (i % 8)) & 1u;
            db = mul_rn(mul_rn(d, add_rn(0.5f, (float)(aux >> 28))), 0.5f);
        } else {
            const u32 idx = b[2 + g] | (((b[66 + ib] >> (g % 8)) & 1u) << 8);
            level = (IQ3S_GRID[idx] >> (8 * jj)) & 0xffu;
            neg = (b[74 + i / 8] >> (i % 8)) & 1u;
            db = mul_rn(d, (float)(1 + 2 * ((b[106 + ib / 2] >> (4 * (ib % 2))) & 0xf)));
        }
        const float m = mul_rn(db, (float)level);
        return neg ? -m : m;
    }
    case 20: case 23: {
        // IQ4_NL (18-byte blocks of 32) and IQ4_XS (136-byte superblocks,
        // the file's layout): d * [ls - 32] * codebook[index].
        const int j = k % 32;
        const u8* b = ty == 20 ? row + (long long)(k / 32) * 18 : row + (long long)(k / 256) * 136;
        const u8* qs = ty == 20 ? b + 2 : b + 8 + 16 * ((k % 256) / 32);
        const u32 idx = j < 16 ? (qs[j] & 0xfu) : (qs[j - 16] >> 4);
        const float v = (float)(i8)iq4_lookup4(idx);
        const float d = f16_to_f32(ld_u16(b));
        if (ty == 20) return mul_rn(d, v);
        const int ib = (k % 256) / 32;
        const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) | (((ld_u16(b + 2) >> (2 * ib)) & 3) << 4);
        return mul_rn(mul_rn(d, (float)(ls - 32)), v);
    }
    default: return __int_as_float(0x7fc00000);
    }
}

// grid.x = tokens, 128 threads per block.
extern "C" __global__ void embed_rows(const EmbedArgs a) {
    int id = a.ids[blockIdx.x];
    float* out = a.out + (long long)blockIdx.x * a.n;
    bool ok = id >= 0 && id < a.vocab;
    const u8* row = a.table + (long long)(ok ? id : 0) * a.row_bytes;
    for (int k = threadIdx.x; k < a.n; k += blockDim.x)
        out[k] = ok ? dequant_value(a.ty, row, k) : __int_as_float(0x7fc00000);
}
