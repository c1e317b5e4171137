//! Q4_K x Q8_K prefill matmul on AVX2 in tiles of eight weight rows, each
//! super-block of a tile decoded once per matmul and dotted with every
//! activation row of the chunk.
//!
//! Why a tile: the row kernel in `kquants` applies each 6-bit sub-block
//! scale with a `madd` per 32 values per activation, and reduces its eight
//! i32 lanes horizontally at the end of every super-block. With one weight
//! row per 32-bit lane instead, a lane's values all share one scale per
//! sub-block, so the 8 `maddubs` of a sub-block add up in i16 first (levels
//! <= 15, pair sums <= 2*15*128, eight of them <= 30720) and one `madd`
//! scales all eight rows; the super-block's result is already in lane r
//! for row r, with no horizontal sum.
//!
//! Decoded super-block (`DecK`, eight rows, lane r = row r):
//!
//! ```text
//!   q[s][k]  bytes 4k..4k+4 of sub-block s (values 32s+4k..32s+4k+4), levels 0..15
//!   sc[s]    i16 pair (scale_r[s], scale_r[s])   6-bit sub-block scale
//!   mn[s]    i16 pair (min_r[s], min_r[s])       6-bit sub-block min
//!   d, dmin  the rows' fp16 super-block scales as f32
//! ```
//!
//! Against one activation super-block (Q8_K: f32 d, 256 x i8, 16 x i16 sums
//! of 16), broadcast 4 bytes at a time, lane r ends with the exact integers
//! the scalar reference forms,
//!
//! ```text
//!   isum = sum_s sc[s] * sum(level * a)
//!   msum = sum_s mn[s] * (bsum[2s] + bsum[2s+1]),
//! ```
//!
//! and then does its f32 expression `sum += d * da * isum - dmin * da *
//! msum` in the same order (no FMA): bit for bit the scalar and row
//! kernels' result.

use super::q4_q5_tile::{bc, put, row_ptrs, with_buf};
use std::arch::x86_64::*;

const WB: usize = 144; // Q4_K super-block bytes
const AB: usize = 292; // Q8_K block bytes
const AB_QS: usize = 4;
const AB_BSUMS: usize = 4 + 256;
const QK: usize = 256;

/// One super-block of an eight-row tile, decoded (layout in the module doc).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct DecK {
    q: [[__m256i; 8]; 8],
    sc: [__m256i; 8],
    mn: [__m256i; 8],
    d: __m256,
    dmin: __m256,
}

/// The 12 packed scale/min bytes of a super-block header (at `p + 4`) as
/// (eight 6-bit scales, eight 6-bit mins), byte s = sub-block s. Bytes
/// 0..4 and 4..8 hold scales/mins 0..4 in their low 6 bits (and the top 2
/// bits of 4..8 in bits 6..8); bytes 8..12 the low 4 bits of scales (low
/// nibble) and mins (high nibble) 4..8.
///
/// # Safety
/// `p + 4` points at 12 readable bytes (a super-block header).
#[inline(always)]
pub(crate) unsafe fn scales_mins(p: *const u8) -> (u64, u64) {
    let u = |o: usize| (p.add(o) as *const u32).read_unaligned();
    let (u0, u1, u2) = (u(4), u(8), u(12));
    let sc_lo = u0 & 0x3f3f_3f3f;
    let m_lo = u1 & 0x3f3f_3f3f;
    let sc_hi = (u2 & 0x0f0f_0f0f) | ((u0 >> 2) & 0x3030_3030);
    let m_hi = ((u2 >> 4) & 0x0f0f_0f0f) | ((u1 >> 2) & 0x3030_3030);
    (
        sc_lo as u64 | (sc_hi as u64) << 32,
        m_lo as u64 | (m_hi as u64) << 32,
    )
}

/// Eight rows' eight bytes (`b[r]` byte s) as eight vectors, vector s
/// holding (b[r] byte s) as an i16 pair in 32-bit lane r: an 8x8 byte
/// transpose, then widening.
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernels).
#[inline(always)]
unsafe fn columns(b: &[u64; 8]) -> [__m256i; 8] {
    let row = |r: usize| _mm_cvtsi64_si128(b[r] as i64);
    let a = _mm_unpacklo_epi8(row(0), row(1)); // r0b0 r1b0 r0b1 r1b1 ...
    let bb = _mm_unpacklo_epi8(row(2), row(3));
    let c = _mm_unpacklo_epi8(row(4), row(5));
    let d = _mm_unpacklo_epi8(row(6), row(7));
    let e = _mm_unpacklo_epi16(a, bb); // dword s: rows 0..4 of byte s, s < 4
    let f = _mm_unpackhi_epi16(a, bb); // s = 4..8
    let g = _mm_unpacklo_epi16(c, d); // rows 4..8
    let h = _mm_unpackhi_epi16(c, d);
    // Qword 0 / 1: byte s / s + 1 of rows 0..8.
    let pairs = [
        _mm_unpacklo_epi32(e, g),
        _mm_unpackhi_epi32(e, g),
        _mm_unpacklo_epi32(f, h),
        _mm_unpackhi_epi32(f, h),
    ];
    let widen = |x: __m128i| {
        let v = _mm256_cvtepu8_epi32(x);
        _mm256_or_si256(v, _mm256_slli_epi32::<16>(v))
    };
    std::array::from_fn(|s| {
        let p = pairs[s / 2];
        widen(if s % 2 == 0 {
            p
        } else {
            _mm_unpackhi_epi64(p, p)
        })
    })
}

/// Decodes super-block `b` of the eight rows `rows` into `dst`.
///
/// # Safety
/// The CPU has AVX2 and F16C (inlined into the AVX2 kernels); every `rows[r]`
/// points at a row of at least `b + 1` super-blocks (144 bytes each).
#[inline(always)]
unsafe fn decode_sb(rows: &[*const u8; 8], b: usize, dst: &mut DecK) {
    let off = b * WB;
    let mut sc = [0u64; 8];
    let mut mn = [0u64; 8];
    let mut dh = [0u16; 8];
    let mut mh = [0u16; 8];
    for r in 0..8 {
        let p = rows[r].add(off);
        (sc[r], mn[r]) = scales_mins(p);
        dh[r] = (p as *const u16).read_unaligned();
        mh[r] = (p.add(2) as *const u16).read_unaligned();
    }
    dst.d = _mm256_cvtph_ps(_mm_loadu_si128(dh.as_ptr() as *const __m128i));
    dst.dmin = _mm256_cvtph_ps(_mm_loadu_si128(mh.as_ptr() as *const __m128i));
    dst.sc = columns(&sc);
    dst.mn = columns(&mn);
    let mask = _mm256_set1_epi8(0x0F);
    for g in 0..4 {
        // 32 bytes per row: low nibbles values 64g.., high 64g+32...
        let ld = |r: usize| _mm256_loadu_si256(rows[r].add(off + 16 + 32 * g) as *const __m256i);
        let (r0, r1, r2, r3) = (ld(0), ld(1), ld(2), ld(3));
        let (r4, r5, r6, r7) = (ld(4), ld(5), ld(6), ld(7));
        // 8x8 dword transpose: dword k of row r to lane r of vector k.
        let t0 = _mm256_unpacklo_epi32(r0, r1); // r0d0 r1d0 r0d1 r1d1 | d4 d5
        let t1 = _mm256_unpackhi_epi32(r0, r1); // d2 d3 | d6 d7
        let t2 = _mm256_unpacklo_epi32(r2, r3);
        let t3 = _mm256_unpackhi_epi32(r2, r3);
        let t4 = _mm256_unpacklo_epi32(r4, r5);
        let t5 = _mm256_unpackhi_epi32(r4, r5);
        let t6 = _mm256_unpacklo_epi32(r6, r7);
        let t7 = _mm256_unpackhi_epi32(r6, r7);
        let u0 = _mm256_unpacklo_epi64(t0, t2); // rows 0..4: d0 | d4
        let u1 = _mm256_unpackhi_epi64(t0, t2); // d1 | d5
        let u2 = _mm256_unpacklo_epi64(t1, t3); // d2 | d6
        let u3 = _mm256_unpackhi_epi64(t1, t3); // d3 | d7
        let u4 = _mm256_unpacklo_epi64(t4, t6); // rows 4..8
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        let dw = [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ];
        for (k, &v) in dw.iter().enumerate() {
            dst.q[2 * g][k] = _mm256_and_si256(v, mask);
            dst.q[2 * g + 1][k] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
        }
    }
}

/// Decodes the `dst.len()` super-blocks of the tile `rows`; with
/// `prefetch`, the next tile (eight rows on, contiguous in a matrix) is
/// fetched into L2 on the way (prefetches never fault).
///
/// # Safety
/// AVX2, FMA and F16C; every `rows[r]` points at `dst.len() * 144` bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_tile(rows: &[*const u8; 8], prefetch: bool, dst: &mut [DecK]) {
    let nb = dst.len();
    for (b, d) in dst.iter_mut().enumerate() {
        if prefetch {
            // 8 rows x 144 bytes = 18 lines per super-block.
            let next = rows[0].wrapping_add(8 * nb * WB + b * 8 * WB);
            for l in 0..18 {
                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(64 * l) as *const i8);
            }
        }
        decode_sb(rows, b, d);
    }
}

/// `out[j][r] = dot(row r, act j)` for a decoded tile and `A` activation
/// rows.
///
/// # Safety
/// AVX2, FMA and F16C; every `acts[j]` points at `dec.len() * 292` bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_dot<const A: usize>(dec: &[DecK], acts: &[*const u8; A]) -> [[f32; 8]; A] {
    let mut acc = [_mm256_setzero_ps(); A];
    for (b, dk) in dec.iter().enumerate() {
        let ab: [*const u8; A] = std::array::from_fn(|j| acts[j].add(b * AB));
        let mut isum = [_mm256_setzero_si256(); A];
        for s in 0..8 {
            let mut s16 = [_mm256_setzero_si256(); A];
            for k in 0..8 {
                let w = dk.q[s][k];
                for j in 0..A {
                    let y = bc(ab[j].add(AB_QS + 32 * s), k);
                    s16[j] = _mm256_add_epi16(s16[j], _mm256_maddubs_epi16(w, y));
                }
            }
            for j in 0..A {
                isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(s16[j], dk.sc[s]));
            }
        }
        for j in 0..A {
            // bsum[2s], bsum[2s + 1] (i16) times (min, min): exact in i32.
            let mut msum = _mm256_setzero_si256();
            for s in 0..8 {
                let bs = bc(ab[j].add(AB_BSUMS), s);
                msum = _mm256_add_epi32(msum, _mm256_madd_epi16(bs, dk.mn[s]));
            }
            let da = _mm256_set1_ps((ab[j] as *const f32).read_unaligned());
            let t1 = _mm256_mul_ps(_mm256_mul_ps(dk.d, da), _mm256_cvtepi32_ps(isum[j]));
            let t2 = _mm256_mul_ps(_mm256_mul_ps(dk.dmin, da), _mm256_cvtepi32_ps(msum));
            acc[j] = _mm256_add_ps(acc[j], _mm256_sub_ps(t1, t2));
        }
    }
    let mut out = [[0f32; 8]; A];
    for j in 0..A {
        _mm256_storeu_ps(out[j].as_mut_ptr(), acc[j]);
    }
    out
}

thread_local! {
    /// Per-thread decoded tile, grown to the widest matmul once.
    static DEC: std::cell::RefCell<Vec<DecK>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// From this many activation rows on, [`super::kquants`]' Q4_K gemm hands
/// the matmul to [`gemm`] (fewer rows do not repay decoding the tile).
pub(crate) const TILE_MIN: usize = 8;

/// `out[j * rows + r] = dot(row r of w, activation row j of a)` for the rows
/// and activation rows the buffers hold in full (others untouched).
pub(super) fn gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    let nb = n / QK;
    let (rb, ab) = (nb * WB, nb * AB);
    if nb == 0 || rows == 0 || t == 0 {
        return;
    }
    let t = t.min(a.len() / ab).min(out.len() / rows);
    let held = rows.min(w.len() / rb);
    if t == 0 || held == 0 {
        return;
    }
    let act = |j: usize| a[j * ab..].as_ptr();
    // SAFETY: all-zero bits are a valid `DecK` (plain vectors).
    let zero: DecK = unsafe { std::mem::zeroed() };
    with_buf(&DEC, nb, zero, |dec| {
        for r0 in (0..held).step_by(8) {
            let rp = row_ptrs(w, rb, r0, held);
            let nr = (held - r0).min(8);
            // SAFETY: here and below, AVX2, FMA and F16C are checked by
            // dispatch; every row pointer is a held row of nb super-blocks,
            // every act pointer a held activation row, and dec has nb.
            unsafe { decode_tile(&rp, true, dec) };
            let mut j = 0;
            while j + 4 <= t {
                // SAFETY: as above; j + 3 < t.
                let v =
                    unsafe { tile_dot::<4>(dec, &[act(j), act(j + 1), act(j + 2), act(j + 3)]) };
                for (i, vi) in v.iter().enumerate() {
                    put(out, (j + i) * rows + r0, vi, nr);
                }
                j += 4;
            }
            while j < t {
                // SAFETY: as above; j < t.
                let [v] = unsafe { tile_dot::<1>(dec, &[act(j)]) };
                put(out, j * rows + r0, &v, nr);
                j += 1;
            }
        }
    });
}
