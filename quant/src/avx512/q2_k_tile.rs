//! Q2_K x Q8_K prefill matmul on AVX-512 VNNI in tiles of sixteen weight
//! rows (one row per 32-bit lane): each super-block of a tile decoded once
//! per matmul and dotted with every activation row, as `q3_k_tile`.
//!
//! Weight super-block (84 bytes, see `crate::q2_k`): scales[16] (low
//! nibble the scale, high nibble the min of each 16 values), qs[64] (2-bit
//! levels), fp16 d, fp16 dmin. Value 128h + 32j + l has level
//! `(qs[32h + l] >> 2j) & 3`.
//!
//! Decoded super-block (`DecQ2`, sixteen rows, lane r = row r):
//!
//! ```text
//!   q[s][k]  values 16s+4k..16s+4k+4 as levels (u8 0..3)
//!   sc[t]    i16 pair (scale[2t], scale[2t+1])
//!   mn[t]    i16 pair (min[2t], min[2t+1])
//!   d, dmin  the rows' fp16 d and dmin as f32
//! ```
//!
//! Against one activation super-block (Q8_K: f32 d, 256 x i8, 16 x i16
//! sums of 16), broadcast four bytes at a time from memory, `vpdpbusd`
//! gives each sub-block's exact `sum(level * a)` (at most 16 * 3 * 128 in
//! magnitude: an i16); two sub-blocks' sums packed into the halves of a
//! lane meet their scale pair in one `vpmaddwd`, and the block sums meet
//! the min pairs in another, so lane r ends with the scalar reference's
//! `isum` and `msum` (exact in i32) and does its f32 expression `sum += d *
//! da * isum - dmin * da * msum` (no FMA): bit for bit the scalar kernel,
//! as AVX2's kernels (which serve decode and short matmuls) are.

use super::tiles::q8k::{AB, AB_BSUMS, AB_QS, QK};
use super::tiles::{self, bc, ROWS};
use std::arch::x86_64::*;

const WB: usize = 84; // Q2_K super-block bytes
const QS: usize = 16; // offset of the levels
const D: usize = 80; // offset of d (dmin follows)

/// One super-block of a sixteen-row tile, decoded (layout in the module doc).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct DecQ2 {
    q: [[__m512i; 4]; 16],
    sc: [__m512i; 8],
    mn: [__m512i; 8],
    d: __m512,
    dmin: __m512,
}

/// Decodes super-block `b` of the sixteen rows `rows` into `dst`.
///
/// # Safety
/// The CPU has AVX-512 F and BW, AVX2 and F16C (inlined into the tile
/// kernels); every `rows[r]` points at a row of at least `b + 1`
/// super-blocks, and `offs` lane r is `rows[r] - rows[0]` (bytes).
#[inline(always)]
unsafe fn decode_sb(rows: &[*const u8; ROWS], offs: __m512i, b: usize, dst: &mut DecQ2) {
    let base = rows[0].add(b * WB);
    let gather = |at: usize| _mm512_i32gather_epi32::<1>(offs, base.add(at) as *const _);
    let three = _mm512_set1_epi8(3);
    for h in 0..2 {
        for m in 0..8 {
            let x = gather(QS + 32 * h + 4 * m);
            for j in 0..4 {
                // Values 128h + 32j + 4m..+4: sub-block 8h + 2j + m / 4,
                // dword m % 4 of it (2j + 1 <= 7: within each byte).
                let sh = _mm_cvtsi32_si128(2 * j as i32);
                dst.q[8 * h + 2 * j + m / 4][m % 4] =
                    _mm512_and_si512(_mm512_srl_epi32(x, sh), three);
            }
        }
    }
    let mut sc = [[0i32; ROWS]; 8];
    let mut mn = [[0i32; ROWS]; 8];
    for (r, &row) in rows.iter().enumerate() {
        let p = row.add(b * WB);
        for t in 0..8 {
            let (lo, hi) = (*p.add(2 * t) as i32, *p.add(2 * t + 1) as i32);
            sc[t][r] = (lo & 0xF) | ((hi & 0xF) << 16);
            mn[t][r] = (lo >> 4) | ((hi >> 4) << 16);
        }
    }
    for t in 0..8 {
        dst.sc[t] = _mm512_loadu_si512(sc[t].as_ptr() as *const _);
        dst.mn[t] = _mm512_loadu_si512(mn[t].as_ptr() as *const _);
    }
    // d in the low half of the dword at byte 80, dmin in the high half.
    let dd = gather(D);
    dst.d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd));
    dst.dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(dd)));
}

/// Decodes the tile's `dst.len()` super-blocks, the next tile's rows
/// fetched into L2 on the way (prefetches never fault).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `rows[r]` points
/// at `dst.len() * 84` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode_tile(rows: &[*const u8; ROWS], dst: &mut [DecQ2]) {
    let offs = tiles::row_offsets(rows);
    tiles::each_block(rows, WB, dst, |b, d| decode_sb(rows, offs, b, d));
}

/// `out[j][r] = dot(row r, act j)` for a decoded tile and `A` activation
/// rows.
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `acts[j]` points
/// at `dec.len() * 292` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_dot<const A: usize>(dec: &[DecQ2], acts: &[*const u8; A]) -> [[f32; ROWS]; A] {
    let mut acc = [_mm512_setzero_ps(); A];
    for (b, dq) in dec.iter().enumerate() {
        let ab: [*const u8; A] = std::array::from_fn(|j| acts[j].add(b * AB));
        let mut isum = [_mm512_setzero_si512(); A];
        let mut msum = [_mm512_setzero_si512(); A];
        for t in 0..8 {
            let mut pair = [[_mm512_setzero_si512(); 2]; A];
            for (h, s) in [2 * t, 2 * t + 1].into_iter().enumerate() {
                for j in 0..A {
                    let mut sub = _mm512_setzero_si512();
                    for k in 0..4 {
                        let y = bc(ab[j].add(AB_QS + 16 * s + 4 * k));
                        sub = _mm512_dpbusd_epi32(sub, dq.q[s][k], y);
                    }
                    pair[j][h] = sub;
                }
            }
            for j in 0..A {
                // Both sums fit an i16 (see the module doc).
                let scaled = tiles::pair_madd(pair[j][0], pair[j][1], dq.sc[t]);
                isum[j] = _mm512_add_epi32(isum[j], scaled);
                // bsum[2t], bsum[2t + 1] (i16) times the min pair.
                let bs = bc(ab[j].add(AB_BSUMS + 4 * t));
                msum[j] = _mm512_add_epi32(msum[j], _mm512_madd_epi16(bs, dq.mn[t]));
            }
        }
        for j in 0..A {
            let t = tiles::d_dmin_term(ab[j], dq.d, dq.dmin, isum[j], msum[j]);
            acc[j] = _mm512_add_ps(acc[j], t);
        }
    }
    tiles::store(acc)
}

tiles::plain_gemm!(DecQ2, WB);
