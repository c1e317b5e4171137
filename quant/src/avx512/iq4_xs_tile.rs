//! IQ4_XS x Q8_K prefill matmul on AVX-512 VNNI in tiles of sixteen
//! weight rows: `q4_k_tile`'s scheme with IQ4_XS's codebook.
//!
//! IQ4_XS super-block (136 bytes): fp16 d, u16 scales_h, 4 bytes
//! scales_l, 128 bytes of 4-bit codebook indices (per 32-value sub-block:
//! 16 bytes, low nibble value l, high nibble value l + 16); sub-block s has
//! the 6-bit scale ls_s (see `crate::iq4_xs::scales`) and value = d * (ls_s
//! - 32) * KVALUES[index].
//!
//! Decoded super-block (`DecX16`, sixteen rows, lane r = row r):
//!
//! ```text
//!   q[s][k]  values 32s+4k..32s+4k+4 as KVALUES[index] + 128 (u8)
//!   sc[s]    i32 ls_s - 32
//!   d        the rows' fp16 d as f32
//! ```
//!
//! `vpdpbusd` takes an unsigned and a signed operand, so the codebook
//! values are biased to u8 (one `vpshufb` of a biased table) and the
//! activations, broadcast four bytes at a time from memory, stay i8:
//! per sub-block, lane r accumulates `sum (v + 128) * a` exactly, and
//! subtracting 128 times the sub-block's activation sum (the Q8_K block
//! sums, worked out once per activation super-block) leaves its exact
//! `sum v * a`; times the scale (`vpmulld`) and summed, the reference's
//! `isum`. Each lane then does the scalar reference's `sum += d * da *
//! isum as f32` in super-block order (no FMA): bit for bit the scalar
//! kernel, as AVX2's kernels (which serve decode and short matmuls) are.

use super::tiles::{self, bc, ROWS};
use crate::iq4_nl::KVALUES;
use crate::iq4_xs::scales;
use std::arch::x86_64::*;

const WB: usize = 136; // IQ4_XS super-block bytes
const AB: usize = 292; // Q8_K block bytes
const AB_QS: usize = 4;
const AB_BSUMS: usize = 4 + 256;
const QK: usize = 256;

/// One super-block of a sixteen-row tile, decoded (layout in the module doc).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct DecX16 {
    q: [[__m512i; 8]; 8],
    sc: [__m512i; 8],
    d: __m512,
}

/// Decodes the tile's `dst.len()` super-blocks, the next tile's rows
/// fetched into L2 on the way (prefetches never fault).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `rows[r]` points
/// at `dst.len() * 136` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode_tile(rows: &[*const u8; ROWS], dst: &mut [DecX16]) {
    let offs = tiles::row_offsets(rows);
    let low = _mm512_set1_epi8(0x0F);
    // The codebook plus 128, in each 128-bit quarter for `vpshufb`.
    let biased: [u8; 16] = std::array::from_fn(|i| (KVALUES[i] as u8) ^ 0x80);
    let table = _mm512_broadcast_i32x4(_mm_loadu_si128(biased.as_ptr() as *const __m128i));
    tiles::each_block(rows, WB, dst, |b, dst| {
        let off = b * WB;
        let base = rows[0].add(off);
        let head = _mm512_i32gather_epi32::<1>(offs, base as *const _);
        dst.d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(head));
        for s in 0..8 {
            for k in 0..4 {
                let p = base.add(8 + 16 * s + 4 * k);
                let x = _mm512_i32gather_epi32::<1>(offs, p as *const _);
                let lo = _mm512_and_si512(x, low);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(x), low);
                dst.q[s][k] = _mm512_shuffle_epi8(table, lo);
                dst.q[s][4 + k] = _mm512_shuffle_epi8(table, hi);
            }
        }
        let mut sc = [[0i32; ROWS]; 8];
        for (r, &row) in rows.iter().enumerate() {
            let ls = scales(std::slice::from_raw_parts(row.add(off), WB));
            for (col, l) in sc.iter_mut().zip(ls) {
                col[r] = l;
            }
        }
        for (v, col) in dst.sc.iter_mut().zip(&sc) {
            *v = _mm512_loadu_si512(col.as_ptr() as *const _);
        }
    });
}

/// `out[j][r] = dot(row r, act j)` for a decoded tile and `A` activation
/// rows (`corr[j]`: 128 times each sub-block's activation sum, eight per
/// super-block).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `acts[j]` points
/// at `dec.len() * 292` bytes, every `corr[j]` at `dec.len() * 8` i32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_dot<const A: usize>(
    dec: &[DecX16],
    acts: &[*const u8; A],
    corr: &[*const i32; A],
) -> [[f32; ROWS]; A] {
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
                let c = _mm512_set1_epi32(*corr[j].add(8 * b + s));
                let exact = _mm512_sub_epi32(sub[j], c);
                isum[j] = _mm512_add_epi32(isum[j], _mm512_mullo_epi32(exact, dk.sc[s]));
            }
        }
        for j in 0..A {
            let da = _mm512_set1_ps((ab[j] as *const f32).read_unaligned());
            let t = _mm512_mul_ps(_mm512_mul_ps(dk.d, da), _mm512_cvtepi32_ps(isum[j]));
            acc[j] = _mm512_add_ps(acc[j], t);
        }
    }
    tiles::store(acc)
}

thread_local! {
    /// Per-thread decoded tile, grown to the widest matmul once.
    static DEC: std::cell::RefCell<Vec<DecX16>> = const { std::cell::RefCell::new(Vec::new()) };
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
    // every act pointer a held activation row with its nb * 8
    // corrections; all-zero bits are a valid `DecX16` (plain vectors).
    unsafe {
        tiles::run_corr(
            &s,
            w,
            a,
            AB,
            out,
            &DEC,
            8,
            |blk, c| {
                let bsum = |i: usize| {
                    let o = AB_BSUMS + 2 * i;
                    i16::from_le_bytes([blk[o], blk[o + 1]]) as i32
                };
                for (s, x) in c.iter_mut().enumerate() {
                    *x = (bsum(2 * s) + bsum(2 * s + 1)) << 7;
                }
            },
            |rp, dec| decode_tile(rp, dec),
            |dec, acts, cs| tile_dot::<4>(dec, acts, cs),
            |dec, act, c| tile_dot::<1>(dec, &[act], &[c])[0],
        )
    }
}
