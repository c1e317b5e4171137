//! AVX-512 VNNI super-block sums for the IQ4_XS and Q3_K decode matvec
//! (`avx2::lowbit_matvec`): the same integer `isum` per super-block as its
//! AVX2 `iq4_block` and `q3_block`, spread over eight i32 lanes, from a
//! third to a half of the instructions. Each type's activation is laid out
//! once per matvec (`prepare_iq4_xs`, `prepare_q3_k`) in the 512 bytes per
//! super-block of the AVX2 matvec's buffer.
//!
//! ## IQ4_XS
//!
//! Weight super-block (136 bytes): fp16 d, u16 scales_h, 4 bytes scales_l,
//! then four pairs of sub-blocks, 32 index bytes each: byte i of pair k
//! holds, in its low nibble, value i of sub-block 2k (i < 16) or value i -
//! 16 of sub-block 2k + 1, and in its high nibble the value 16 later.
//!
//! Prepared activation ([`prepare_iq4_xs`]):
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
//!
//! ## Q3_K
//!
//! Weight super-block (110 bytes): hmask[32], qs[64], twelve bytes of
//! sixteen 6-bit scales, fp16 d. Value 128h + 32j + l has `level + 4 =
//! ((qs[32h + l] >> 2j) & 3) + 4 * ((hmask[l] >> (4h + j)) & 1)`, 0..7.
//! The 64 bytes of qs in one vector hold both halves h: shifted by 2j they
//! give the low bits of values 32j.. (h = 0, bytes 0..32) and 128 + 32j..
//! (h = 1, bytes 32..64); hmask in both 256-bit halves, rotated per 64-bit
//! lane so that bit j (4 + j above) lands on bit 2, gives the high bit.
//!
//! Prepared activation ([`prepare_q3_k`]):
//!
//! ```text
//!   [64j .. 64j + 64)          the quants of values 32j.. and 128 + 32j..
//!   [256 + 64j .. 320 + 64j)   16 x i32, lane l: -4 * the sum of the four
//!                              quants lane l meets above
//! ```
//!
//! `vpdpbusd` adds `(level + 4) * a` onto each lane's correction, leaving
//! the exact `sum(level * a)` of its four values, at most 4 * 4 * 128 in
//! magnitude: an i16. Its sub-block's stored scale `u` (0..64, put in the
//! lane's low byte by one `vpshufb`, the rest zero) is then applied by one
//! `vpdpwssd` into the accumulator (lane l's low half times `u`, its high
//! half of sign bits times zero), and the lanes are also summed as they
//! are, so that `isum = sum_s (u_s - 32) * sum(level * a)` is the first
//! total less 32 times the second: the reference's integer, exactly.

use std::arch::x86_64::*;

/// Lays out one activation super-block's 256 quants `y` (and each lane's
/// correction) as the module doc shows for IQ4_XS.
pub(crate) fn prepare_iq4_xs(y: &[u8], out: &mut [u8]) {
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

/// Lays out one activation super-block's 256 quants `y` (and each lane's
/// correction) as the module doc shows for Q3_K.
pub(crate) fn prepare_q3_k(y: &[u8], out: &mut [u8]) {
    for j in 0..4 {
        out[64 * j..64 * j + 32].copy_from_slice(&y[32 * j..32 * j + 32]);
        out[64 * j + 32..64 * j + 64].copy_from_slice(&y[128 + 32 * j..160 + 32 * j]);
    }
    for l in 0..64 {
        let sum: i32 = out[4 * l..4 * l + 4].iter().map(|&q| q as i8 as i32).sum();
        out[256 + 4 * l..260 + 4 * l].copy_from_slice(&(-4 * sum).to_le_bytes());
    }
}

/// `vpshufb` controls, one per 64-value vector j of a Q3_K super-block:
/// lane l's bytes are the index of its sub-block's scale byte (2j + l / 4
/// for l < 8, 8 + 2j + (l - 8) / 4 above), then three zeroing bytes.
const SCALE_PICK: [[u8; 64]; 4] = {
    let mut t = [[0x80u8; 64]; 4];
    let mut j = 0;
    while j < 4 {
        let mut l = 0;
        while l < 16 {
            let s = if l < 8 {
                2 * j + l / 4
            } else {
                8 + 2 * j + (l - 8) / 4
            };
            t[j][4 * l] = s as u8;
            l += 1;
        }
        j += 1;
    }
    t
};

/// The exact `isum` of the Q3_K super-block at `p`, spread over eight i32
/// lanes, against the prepared activation at `y`.
///
/// # Safety
/// The CPU has AVX-512 F, BW, VL and VNNI, and AVX2 (inlined into the
/// AVX-512 row kernel); `p` points at a whole super-block (110 bytes) and
/// `y` at 512 readable bytes.
#[inline(always)]
pub(crate) unsafe fn q3_k_block(p: *const u8, y: *const u8) -> __m256i {
    // The sixteen stored scales (0..64) as bytes, in every 128-bit lane.
    let raw = _mm512_broadcast_i32x4(crate::avx2::lowbit_matvec::q3_scales_raw(p));
    let qs = _mm512_loadu_si512(p.add(32) as *const _);
    let hm = _mm512_broadcast_i64x4(_mm256_loadu_si256(p as *const __m256i));
    let mut acc = _mm512_setzero_si512();
    let mut plain = _mm512_setzero_si512();
    for j in 0..4i64 {
        let low = match j {
            0 => qs,
            1 => _mm512_srli_epi16::<2>(qs),
            2 => _mm512_srli_epi16::<4>(qs),
            _ => _mm512_srli_epi16::<6>(qs),
        };
        // Bit j (lower half) and 4 + j (upper half) of each hmask byte to
        // bit 2 of that byte: a left rotation of 2 - b per 64-bit lane.
        let rot = |b: i64| (2 - b).rem_euclid(64);
        let lo_r = _mm512_set1_epi64(rot(j));
        let hi_r = _mm512_set1_epi64(rot(4 + j));
        let high = _mm512_rolv_epi64(hm, _mm512_mask_blend_epi64(0xF0, lo_r, hi_r));
        // (low & 3) | (high & 4), one vpternlogd over the byte mask 3.
        let lv = _mm512_and_si512(
            _mm512_ternarylogic_epi32::<0xD8>(high, low, _mm512_set1_epi8(3)),
            _mm512_set1_epi8(7),
        );
        let init = _mm512_loadu_si512(y.add(256 + 64 * j as usize) as *const _);
        let ya = _mm512_loadu_si512(y.add(64 * j as usize) as *const _);
        let v = _mm512_dpbusd_epi32(init, lv, ya);
        // Lanes 0..8: sub-blocks 2j, 2j + 1 (four lanes each); 8..16:
        // sub-blocks 8 + 2j, 9 + 2j: that scale byte, then three zeros.
        let scale = _mm512_shuffle_epi8(
            raw,
            _mm512_loadu_si512(SCALE_PICK[j as usize].as_ptr() as *const _),
        );
        acc = _mm512_dpwssd_epi32(acc, v, scale);
        plain = _mm512_add_epi32(plain, v);
    }
    let acc = _mm512_sub_epi32(acc, _mm512_slli_epi32::<5>(plain));
    _mm256_add_epi32(
        _mm512_castsi512_si256(acc),
        _mm512_extracti64x4_epi64::<1>(acc),
    )
}
