//! Q4_K x Q8_K prefill matmul on AVX-512 VNNI in tiles of sixteen weight
//! rows: `avx2::q4_k_tile`'s scheme (each super-block of a tile decoded
//! once per matmul, one weight row per 32-bit lane, dotted with every
//! activation row) at twice the rows per vector, with `vpdpbusd` adding
//! four level x activation products straight into each row's i32 lane.
//!
//! Decoded super-block (`DecK16`, sixteen rows, lane r = row r):
//!
//! ```text
//!   q[s][k]  bytes 4k..4k+4 of sub-block s (values 32s+4k..32s+4k+4), levels 0..15
//!   sc[s]    i32 scale_r[s]                       6-bit sub-block scale
//!   mn[s]    i16 pair (min_r[s], min_r[s])        6-bit sub-block min
//!   d, dmin  the rows' fp16 super-block scales as f32
//! ```
//!
//! Against one activation super-block (Q8_K: f32 d, 256 x i8, 16 x i16 sums
//! of 16), broadcast 4 bytes at a time from memory, lane r ends with the
//! exact integers the scalar reference forms,
//!
//! ```text
//!   isum = sum_s sc[s] * sum(level * a)    (vpdpbusd per s, then vpmulld)
//!   msum = sum_s mn[s] * (bsum[2s] + bsum[2s+1])
//! ```
//!
//! (`sum(level * a)` over 32 values is at most 32 * 15 * 128 in magnitude,
//! `isum` at most 8 * 63 times that: exact in i32), and then does its f32
//! expression `sum += d * da * isum - dmin * da * msum` in the same order
//! (no FMA): bit for bit the scalar reference, as the AVX2 tile is.

use super::tiles::q8k::{AB, AB_BSUMS, AB_QS, QK};
use super::tiles::{self, bc, ROWS};
use crate::avx2::q4_k_tile::scales_mins;
use std::arch::x86_64::*;

const WB: usize = 144; // Q4_K super-block bytes

/// One super-block of a sixteen-row tile, decoded (layout in the module doc).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct DecK16 {
    q: [[__m512i; 8]; 8],
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
unsafe fn decode_sb(rows: &[*const u8; ROWS], offs: __m512i, b: usize, dst: &mut DecK16) {
    let off = b * WB;
    let low = _mm512_set1_epi8(0x0F);
    // The 128 nibble bytes: dword k of group g (32 bytes, low nibbles
    // sub-block 2g, high 2g + 1) of all sixteen rows by one gather.
    let base = rows[0].add(off + 16);
    for g in 0..4 {
        for k in 0..8 {
            let x = _mm512_i32gather_epi32::<1>(offs, base.add(32 * g + 4 * k) as *const _);
            dst.q[2 * g][k] = _mm512_and_si512(x, low);
            dst.q[2 * g + 1][k] = _mm512_and_si512(_mm512_srli_epi16::<4>(x), low);
        }
    }
    let mut sc = [[0i32; ROWS]; 8];
    let mut mn = [[0i32; ROWS]; 8];
    let mut d = [0u16; ROWS];
    let mut dmin = [0u16; ROWS];
    for (r, &row) in rows.iter().enumerate() {
        let p = row.add(off);
        let (s8, m8) = scales_mins(p);
        for s in 0..8 {
            sc[s][r] = ((s8 >> (8 * s)) & 0xFF) as i32;
            let m = ((m8 >> (8 * s)) & 0xFF) as i32;
            mn[s][r] = m | (m << 16);
        }
        d[r] = (p as *const u16).read_unaligned();
        dmin[r] = (p.add(2) as *const u16).read_unaligned();
    }
    for s in 0..8 {
        dst.sc[s] = _mm512_loadu_si512(sc[s].as_ptr() as *const _);
        dst.mn[s] = _mm512_loadu_si512(mn[s].as_ptr() as *const _);
    }
    dst.d = _mm512_cvtph_ps(_mm256_loadu_si256(d.as_ptr() as *const __m256i));
    dst.dmin = _mm512_cvtph_ps(_mm256_loadu_si256(dmin.as_ptr() as *const __m256i));
}

/// Decodes the tile's `dst.len()` super-blocks, the next tile's rows
/// fetched into L2 on the way (prefetches never fault).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `rows[r]` points
/// at `dst.len() * 144` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode_tile(rows: &[*const u8; ROWS], dst: &mut [DecK16]) {
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
unsafe fn tile_dot<const A: usize>(dec: &[DecK16], acts: &[*const u8; A]) -> [[f32; ROWS]; A] {
    let mut acc = [_mm512_setzero_ps(); A];
    for (b, dk) in dec.iter().enumerate() {
        let ab: [*const u8; A] = std::array::from_fn(|j| acts[j].add(b * AB));
        let mut isum = [_mm512_setzero_si512(); A];
        for s in 0..8 {
            let mut sub = [_mm512_setzero_si512(); A];
            for k in 0..8 {
                let w = dk.q[s][k];
                for j in 0..A {
                    let y = bc(ab[j].add(AB_QS + 32 * s + 4 * k));
                    sub[j] = _mm512_dpbusd_epi32(sub[j], w, y);
                }
            }
            for j in 0..A {
                isum[j] = _mm512_add_epi32(isum[j], _mm512_mullo_epi32(sub[j], dk.sc[s]));
            }
        }
        for j in 0..A {
            // bsum[2s], bsum[2s + 1] (i16) times (min, min): exact in i32.
            let mut msum = _mm512_setzero_si512();
            for s in 0..8 {
                let bs = bc(ab[j].add(AB_BSUMS + 4 * s));
                msum = _mm512_add_epi32(msum, _mm512_madd_epi16(bs, dk.mn[s]));
            }
            let t = tiles::d_dmin_term(ab[j], dk.d, dk.dmin, isum[j], msum);
            acc[j] = _mm512_add_ps(acc[j], t);
        }
    }
    tiles::store(acc)
}

tiles::plain_gemm!(DecK16, WB);
