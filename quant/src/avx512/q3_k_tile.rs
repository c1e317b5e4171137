//! Q3_K x Q8_K prefill matmul on AVX-512 VNNI in tiles of sixteen weight
//! rows (one row per 32-bit lane): each super-block of a tile decoded once
//! per matmul and dotted with every activation row, as `q4_k_tile`.
//!
//! Weight super-block (110 bytes, see `crate::q3_k`): hmask[32] (the third
//! bit), qs[64] (2-bit low parts), scales[12] (sixteen 6-bit scales), fp16
//! d last. Value 128h + 32j + l has level `((qs[32h + l] >> 2j) & 3) - 4 *
//! (1 - ((hmask[l] >> (4h + j)) & 1))`, in -4..=3.
//!
//! Decoded super-block (`DecQ3`, sixteen rows, lane r = row r):
//!
//! ```text
//!   q[s][k]  values 16s+4k..16s+4k+4 as level + 4 (u8 0..7): low | high << 2
//!   sc[t]    i16 pair (scale[2t] - 32, scale[2t+1] - 32)
//!   d        the rows' fp16 d as f32
//! ```
//!
//! Against one activation super-block (Q8_K: f32 d, 256 x i8, 16 x i16
//! sums of 16), broadcast four bytes at a time from memory, `vpdpbusd`
//! adds `(level + 4) * a` onto `-4 * bsum[s]` (worked out once per
//! activation super-block), which leaves each sub-block's exact
//! `sum(level * a)`: at most 16 * 4 * 128 in magnitude, so it fits an i16.
//! Two sub-blocks' sums are packed into the halves of a lane and one
//! `vpmaddwd` with the scale pair gives `scale[2t] * sum_2t + scale[2t+1] *
//! sum_2t+1` exactly, so lane r ends with the scalar reference's `isum`
//! (exact in i32) and does its f32 expression `sum += d * da * isum` (no
//! FMA): bit for bit the scalar kernel, as AVX2's kernels (which serve
//! decode and short matmuls) are.

use super::tiles::q8k::{AB, AB_BSUMS, AB_QS, QK};
use super::tiles::{self, bc, ROWS};
use std::arch::x86_64::*;

const WB: usize = 110; // Q3_K super-block bytes
const HM: usize = 0; // offset of hmask
const QS: usize = 32; // offset of the low bits
const D: usize = 108; // offset of d

/// One super-block of a sixteen-row tile, decoded (layout in the module doc).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct DecQ3 {
    q: [[__m512i; 4]; 16],
    sc: [__m512i; 8],
    d: __m512,
}

/// Decodes super-block `b` of the sixteen rows `rows` into `dst`.
///
/// # Safety
/// The CPU has AVX-512 F and BW, AVX2 and F16C (inlined into the tile
/// kernels); every `rows[r]` points at a row of at least `b + 1`
/// super-blocks, and `offs` lane r is `rows[r] - rows[0]` (bytes).
#[inline(always)]
unsafe fn decode_sb(rows: &[*const u8; ROWS], offs: __m512i, b: usize, dst: &mut DecQ3) {
    let base = rows[0].add(b * WB);
    let gather = |at: usize| _mm512_i32gather_epi32::<1>(offs, base.add(at) as *const _);
    let (three, one) = (_mm512_set1_epi8(3), _mm512_set1_epi8(1));
    // Dword m of the hmask: the high bits of values l = 4m..4m+4 of every
    // (h, j), bit 4h + j.
    let hm: [__m512i; 8] = std::array::from_fn(|m| gather(HM + 4 * m));
    for h in 0..2 {
        for (m, &hm_m) in hm.iter().enumerate() {
            let x = gather(QS + 32 * h + 4 * m);
            for j in 0..4 {
                // Values 128h + 32j + 4m..+4: sub-block 8h + 2j + m / 4,
                // dword m % 4 of it. Shifts stay within each byte (2j + 1
                // and 4h + j are at most 7).
                let sh = _mm_cvtsi32_si128(2 * j as i32);
                let low = _mm512_and_si512(_mm512_srl_epi32(x, sh), three);
                let sh = _mm_cvtsi32_si128((4 * h + j) as i32);
                let high = _mm512_and_si512(_mm512_srl_epi32(hm_m, sh), one);
                dst.q[8 * h + 2 * j + m / 4][m % 4] =
                    _mm512_or_si512(low, _mm512_slli_epi32::<2>(high));
            }
        }
    }
    let mut sc = [[0i32; ROWS]; 8];
    for (r, &row) in rows.iter().enumerate() {
        // SAFETY (of the slice): the caller's contract, a whole block.
        let s16 = crate::q3_k::scales(std::slice::from_raw_parts(row.add(b * WB), WB));
        for (t, pair) in s16.chunks_exact(2).enumerate() {
            sc[t][r] = (pair[0] as i16 as u16 as i32) | ((pair[1] as i32) << 16);
        }
    }
    for (v, s) in dst.sc.iter_mut().zip(&sc) {
        *v = _mm512_loadu_si512(s.as_ptr() as *const _);
    }
    // fp16 d in the upper half of the dword at byte 106 (the dword at 108
    // would end past the block).
    let d = _mm512_srli_epi32::<16>(gather(D - 2));
    dst.d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d));
}

/// Decodes the tile's `dst.len()` super-blocks, the next tile's rows
/// fetched into L2 on the way (prefetches never fault).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `rows[r]` points
/// at `dst.len() * 110` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode_tile(rows: &[*const u8; ROWS], dst: &mut [DecQ3]) {
    let offs = tiles::row_offsets(rows);
    tiles::each_block(rows, WB, dst, |b, d| decode_sb(rows, offs, b, d));
}

/// `out[j][r] = dot(row r, act j)` for a decoded tile and `A` activation
/// rows, `pres[j]` their super-blocks' `-4 * bsum[s]` (16 per
/// super-block).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `acts[j]` points
/// at `dec.len() * 292` bytes and every `pres[j]` at `dec.len() * 16` i32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_dot<const A: usize>(
    dec: &[DecQ3],
    acts: &[*const u8; A],
    pres: &[*const i32; A],
) -> [[f32; ROWS]; A] {
    let mut acc = [_mm512_setzero_ps(); A];
    for (b, dq) in dec.iter().enumerate() {
        let ab: [*const u8; A] = std::array::from_fn(|j| acts[j].add(b * AB));
        let mut isum = [_mm512_setzero_si512(); A];
        for t in 0..8 {
            let mut pair = [[_mm512_setzero_si512(); 2]; A];
            for (h, s) in [2 * t, 2 * t + 1].into_iter().enumerate() {
                for j in 0..A {
                    let mut sub = _mm512_set1_epi32(*pres[j].add(16 * b + s));
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
            }
        }
        for j in 0..A {
            let da = _mm512_set1_ps((ab[j] as *const f32).read_unaligned());
            let t = _mm512_mul_ps(_mm512_mul_ps(dq.d, da), _mm512_cvtepi32_ps(isum[j]));
            acc[j] = _mm512_add_ps(acc[j], t);
        }
    }
    tiles::store(acc)
}

thread_local! {
    /// Per-thread decoded tile, grown to the widest matmul once.
    static DEC: std::cell::RefCell<Vec<DecQ3>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[j * rows + r] = dot(row r of w, activation row j of a)` for the
/// rows and activation rows the buffers hold in full (others untouched).
///
/// # Safety
/// The CPU has AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
pub(crate) unsafe fn gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    let Some(s) = tiles::shape(n, QK, WB, AB, rows, w, t, a, out) else {
        return;
    };
    // SAFETY: for the walk and each closure, the CPU features are the
    // caller's contract; every row pointer is a held row of nb blocks,
    // every act pointer a held activation row with its nb * 16
    // corrections; all-zero bits are a valid `DecQ3` (plain vectors).
    unsafe {
        tiles::run_corr(
            &s,
            w,
            a,
            AB,
            out,
            &DEC,
            16,
            |blk, p| {
                for (x, bs) in p.iter_mut().zip(blk[AB_BSUMS..].chunks_exact(2)) {
                    *x = -4 * i16::from_le_bytes([bs[0], bs[1]]) as i32;
                }
            },
            |rp, dec| decode_tile(rp, dec),
            |dec, acts, ps| tile_dot::<4>(dec, acts, ps),
            |dec, act, p| tile_dot::<1>(dec, &[act], &[p])[0],
        )
    }
}
