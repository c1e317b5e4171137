//! AVX-512 VNNI super-block sums for the IQ4_XS decode matvec
//! (`avx2::lowbit_matvec`): the same integer `isum` per super-block as its
//! AVX2 `iq4_block`, spread over eight i32 lanes, from a third of the
//! instructions.
//!
//! Weight super-block (136 bytes): fp16 d, u16 scales_h, 4 bytes scales_l,
//! then four pairs of sub-blocks, 32 index bytes each: byte i of pair k
//! holds, in its low nibble, value i of sub-block 2k (i < 16) or value i -
//! 16 of sub-block 2k + 1, and in its high nibble the value 16 later.
//!
//! Prepared activation ([`prepare`], once per matvec, in the 512 bytes per
//! super-block of the AVX2 matvec's buffer):
//!
//! ```text
//!   [128m .. 128m + 64)        the quants under the low nibbles of pairs
//!                              2m and 2m + 1 (the 64 index bytes at 8 + 64m)
//!   [128m + 64 .. 128m + 128)  the quants under their high nibbles
//!   [256 + 64m .. 320 + 64m)   16 x i32, lane l: -128 * the sum of the
//!                              eight quants lane l of `vpdpbusd` meets in
//!                              the two halves above
//! ```
//!
//! Per 64 index bytes the nibbles are looked up in the codebook biased to
//! u8 (`KVALUES + 128`, one `vpshufb` each) and `vpdpbusd` adds four
//! `(level + 128) * a` per lane onto the lane's `-128 * sum(a)`, which
//! leaves `sum(level * a)` of its eight values; lanes 4s'..4s' + 4 belong to
//! one sub-block, so each lane is multiplied by its sub-block's scale and
//! all are summed: exact integers throughout (a lane's eight products are
//! at most 8 * 255 * 128 in magnitude, times a scale of at most 32), so the
//! total is the scalar reference's `isum`.

use std::arch::x86_64::*;

/// Lays out one activation super-block's 256 quants `y` (and their
/// sub-block sums) as the module doc shows.
pub(crate) fn prepare(y: &[u8], out: &mut [u8]) {
    for m in 0..2 {
        for (h, half) in [0usize, 16].into_iter().enumerate() {
            for p in 0..2 {
                // Pair k = 2m + p: bytes 0..16 are sub-block 2k's values
                // half..half + 16, bytes 16..32 sub-block 2k + 1's.
                let k = 2 * m + p;
                let dst = 128 * m + 64 * h + 32 * p;
                for (j, sub) in [2 * k, 2 * k + 1].into_iter().enumerate() {
                    let src = 32 * sub + half;
                    out[dst + 16 * j..dst + 16 * j + 16].copy_from_slice(&y[src..src + 16]);
                }
            }
        }
    }
    for m in 0..2 {
        for l in 0..16 {
            let at = |o: usize| &out[128 * m + o + 4 * l..128 * m + o + 4 * l + 4];
            let sum: i32 = at(0).iter().chain(at(64)).map(|&q| q as i8 as i32).sum();
            let dst = 256 + 64 * m + 4 * l;
            out[dst..dst + 4].copy_from_slice(&(-128 * sum).to_le_bytes());
        }
    }
}

/// The exact `isum` of the IQ4_XS super-block at `p`, spread over eight
/// i32 lanes, against the prepared activation at `y`.
///
/// # Safety
/// The CPU has AVX-512 F, BW, VL and VNNI, and AVX2 (inlined into the
/// AVX-512 row kernel); `p` points at a whole super-block (136 bytes) and
/// `y` at 384 readable bytes.
#[inline(always)]
pub(crate) unsafe fn iq4_xs_block(p: *const u8, y: *const u8) -> __m256i {
    let biased: [u8; 16] = std::array::from_fn(|i| (crate::iq4_nl::KVALUES[i] as u8) ^ 0x80);
    let book = _mm512_broadcast_i32x4(_mm_loadu_si128(biased.as_ptr() as *const __m128i));
    let low = _mm512_set1_epi8(0x0F);
    // ls - 32 of sub-blocks 0..8 as i32 lanes.
    let sc = crate::avx2::lowbit::iq4_xs_scales(std::slice::from_raw_parts(p, 8));
    let sc = _mm512_castsi256_si512(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(sc)));
    let mut acc = _mm512_setzero_si512();
    for m in 0..2 {
        let q = _mm512_loadu_si512(p.add(8 + 64 * m) as *const _);
        let lo = _mm512_shuffle_epi8(book, _mm512_and_si512(q, low));
        let hi = _mm512_shuffle_epi8(book, _mm512_and_si512(_mm512_srli_epi16::<4>(q), low));
        let ylo = _mm512_loadu_si512(y.add(128 * m) as *const _);
        let yhi = _mm512_loadu_si512(y.add(128 * m + 64) as *const _);
        let init = _mm512_loadu_si512(y.add(256 + 64 * m) as *const _);
        let s = _mm512_dpbusd_epi32(init, lo, ylo);
        let s = _mm512_dpbusd_epi32(s, hi, yhi);
        // Lanes 4j..4j + 4: sub-block 4m + j.
        let idx = _mm512_srli_epi32::<2>(_mm512_setr_epi32(
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
        ));
        let scale =
            _mm512_permutexvar_epi32(_mm512_add_epi32(idx, _mm512_set1_epi32(4 * m as i32)), sc);
        acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(s, scale));
    }
    _mm256_add_epi32(
        _mm512_castsi512_si256(acc),
        _mm512_extracti64x4_epi64::<1>(acc),
    )
}
