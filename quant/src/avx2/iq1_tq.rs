//! AVX2 dots of IQ1_S, IQ1_M (layouts in `crate::iq1`) and the ternary
//! TQ1_0, TQ2_0 (`crate::tq`) with Q8_K activations. Every super-block's
//! integer sums are exact and enter the scalar reference's f32 expression
//! in its order, so the results are bit-identical to the scalar dots; `R`
//! activation rows share one decode of the weights (the prefill form,
//! through `gemm_rows`).
//!
//! - IQ1: the grid levels (-1, 0, 1) of 32 values in one vector by four
//!   scalar loads, dotted as the IQ2 kernels do (`iq3::accumulate_signed`,
//!   the levels as sign multipliers of magnitude-1 weights); the
//!   delta term's sum is IQ1_S's per-32 activation sums (the Q8_K block
//!   sums, two per 32 values) times the signed multiplier, and IQ1_M's a
//!   second `accumulate` of a +-1 vector (one sign per 8 values).
//! - TQ: the codes t in 0..=2 (value t - 1) against the activations in
//!   `maddubs`, the pair sums of a whole super-block added in i16 (at most
//!   8 x 2 x 3 x 128 = 6144 for TQ2_0's codes 0..=3), minus the activation
//!   block sums. TQ1_0's
//!   trits come from `byte * 3^k mod 256` (three wrapping byte adds per
//!   power) compared against 85 and 170: `(q * 3) >> 8` is 0 below 86, 2
//!   from 171.

use super::iq3::{accumulate_signed, act_d};
use super::{blocks, f16_at, gemm_rows, hsum_epi32, wrappers};
use crate::iq1_grid::IQ1S_GRID;
use std::arch::x86_64::*;

const ACT: usize = 292; // Q8_K block: f32 d, 256 x i8, 16 x i16 sums
const ACT_QS: usize = 4;
const ACT_BSUMS: usize = 260;
const DELTA: f32 = 0.125;

/// Four IQ1 grid entries (eight levels each), by 11-bit index, in value
/// order.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn grid4(idx: [usize; 4]) -> __m256i {
    let g = |k: usize| IQ1S_GRID[idx[k] & (IQ1S_GRID.len() - 1)] as i64;
    _mm256_setr_epi64x(g(0), g(1), g(2), g(3))
}

/// Q8_K block sum `k` (16 values) of the activation block at `p`.
///
/// # Safety
/// `p` points at a whole Q8_K block.
#[inline(always)]
unsafe fn bsum(p: *const u8, k: usize) -> i32 {
    let o = p.add(ACT_BSUMS + 2 * k);
    i16::from_le_bytes([*o, *o.add(1)]) as i32
}

/// IQ1_S (50 bytes).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted: [`blocks`]
/// clamps `n` to the whole blocks that `w` and every `a[j]` hold.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq1_s<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 50;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let mut sum = [0f32; R];
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let d = f16_at(wb.as_ptr());
        let mut s1 = [_mm256_setzero_si256(); R];
        let mut s2 = [0i32; R];
        for ib in 0..8 {
            let qh = u16::from_le_bytes([wb[34 + 2 * ib], wb[35 + 2 * ib]]) as usize;
            let ls = 2 * ((qh >> 12) & 7) as i32 + 1;
            let idx: [usize; 4] =
                std::array::from_fn(|l| wb[2 + 4 * ib + l] as usize | (((qh >> (3 * l)) & 7) << 8));
            let m = _mm256_set1_epi16(ls as i16);
            let o = i * ACT + ACT_QS + 32 * ib;
            accumulate_signed(&mut s1, _mm256_set1_epi8(1), grid4(idx), m, &a, o);
            let signed = if qh & 0x8000 != 0 { -ls } else { ls };
            for j in 0..R {
                let p = a[j].as_ptr().add(i * ACT);
                s2[j] += signed * (bsum(p, 2 * ib) + bsum(p, 2 * ib + 1));
            }
        }
        for j in 0..R {
            let da = act_d(a[j].as_ptr().add(i * ACT));
            sum[j] += d * da * (hsum_epi32(s1[j]) as f32 + DELTA * s2[j] as f32);
        }
    }
    sum
}
wrappers!(iq1_s_dot, iq1_s_dot4, iq1_s);
gemm_rows!(iq1_s_gemm, iq1_s, 50, ACT, 256);

/// IQ1_M (56 bytes).
///
/// # Safety
/// As [`iq1_s`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq1_m<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 56;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let mut sum = [0f32; R];
    // i16 lane k: bit 4 (k / 4) + 3, group k / 4's delta sign.
    let bit3 = _mm256_setr_epi16(
        8, 8, 8, 8, 0x80, 0x80, 0x80, 0x80, 0x800, 0x800, 0x800, 0x800, -0x8000, -0x8000, -0x8000,
        -0x8000,
    );
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let sc: [u16; 4] =
            std::array::from_fn(|k| u16::from_le_bytes([wb[48 + 2 * k], wb[49 + 2 * k]]));
        let dbits =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        let d = f16_at(dbits.to_le_bytes().as_ptr());
        let mut s1 = [_mm256_setzero_si256(); R];
        let mut s2 = [_mm256_setzero_si256(); R];
        for ib in 0..8 {
            let s = sc[ib / 2] as i32;
            let shift = 6 * (ib % 2);
            let lo = 2 * ((s >> shift) & 7) + 1;
            let hi = 2 * ((s >> (shift + 3)) & 7) + 1;
            let m = _mm256_set_m128i(_mm_set1_epi16(hi as i16), _mm_set1_epi16(lo as i16));
            // Nibble l: three high index bits and the delta's sign bit of
            // values 8l..8l + 8.
            let nib: [usize; 4] = std::array::from_fn(|l| {
                let h = wb[32 + 2 * ib + l / 2] as usize;
                if l % 2 == 0 {
                    h & 0xf
                } else {
                    h >> 4
                }
            });
            let idx: [usize; 4] =
                std::array::from_fn(|l| wb[4 * ib + l] as usize | ((nib[l] & 7) << 8));
            let o = i * ACT + ACT_QS + 32 * ib;
            accumulate_signed(&mut s1, _mm256_set1_epi8(1), grid4(idx), m, &a, o);
            // The delta's sign of 8-value group l is bit 4l + 3 of the two
            // nibble bytes: onto the multipliers (i16 lanes 4l..4l + 4 hold
            // group l's pairs), so that each activation row takes plain
            // pair sums, `sum_l sign_l * m_l * sum(a of group l)`.
            let hh = u16::from_le_bytes([wb[32 + 2 * ib], wb[33 + 2 * ib]]) as i16;
            let neg = _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16(hh), bit3), bit3);
            let ms = _mm256_sign_epi16(m, _mm256_or_si256(neg, _mm256_set1_epi16(1)));
            for j in 0..R {
                let y = _mm256_loadu_si256(a[j].as_ptr().add(o) as *const __m256i);
                let p = _mm256_maddubs_epi16(_mm256_set1_epi8(1), y);
                s2[j] = _mm256_add_epi32(s2[j], _mm256_madd_epi16(p, ms));
            }
        }
        for j in 0..R {
            let da = act_d(a[j].as_ptr().add(i * ACT));
            let (t1, t2) = (hsum_epi32(s1[j]), hsum_epi32(s2[j]));
            sum[j] += d * da * (t1 as f32 + DELTA * t2 as f32);
        }
    }
    sum
}
wrappers!(iq1_m_dot, iq1_m_dot4, iq1_m);
gemm_rows!(iq1_m_gemm, iq1_m, 56, ACT, 256);

/// The activation row `j`'s integer dot with the codes `t` (0..=2) of a
/// whole super-block, minus its activation sum: `sum (t - 1) * a`, from
/// `acc`, the i16 pair sums of `maddubs(t, a)` over the super-block.
///
/// # Safety
/// The CPU has AVX2; `p` points at a whole Q8_K block.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn ternary_sum(acc: __m256i, p: *const u8) -> i32 {
    let ones = _mm256_set1_epi16(1);
    let bs = _mm256_loadu_si256(p.add(ACT_BSUMS) as *const __m256i);
    hsum_epi32(_mm256_sub_epi32(
        _mm256_madd_epi16(acc, ones),
        _mm256_madd_epi16(bs, ones),
    ))
}

/// `acc[j] += maddubs(t, a[j])` over the 32 activations at `o`.
///
/// # Safety
/// The CPU has AVX2; every `a[j]` holds 32 bytes from `o`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn add_codes<const R: usize>(acc: &mut [__m256i; R], t: __m256i, a: &[&[u8]; R], o: usize) {
    for j in 0..R {
        let y = _mm256_loadu_si256(a[j].as_ptr().add(o) as *const __m256i);
        acc[j] = _mm256_add_epi16(acc[j], _mm256_maddubs_epi16(t, y));
    }
}

/// TQ2_0 (66 bytes).
///
/// # Safety
/// As [`iq1_s`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tq2<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 66;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let mut sum = [0f32; R];
    let three = _mm256_set1_epi8(3);
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let dw = f16_at(wb.as_ptr().add(64));
        let mut acc = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            let q = _mm256_loadu_si256(wb.as_ptr().add(32 * h) as *const __m256i);
            // Value 128h + 32l + m: bits 2l..2l + 2 of byte 32h + m.
            let codes = [
                _mm256_and_si256(q, three),
                _mm256_and_si256(_mm256_srli_epi16::<2>(q), three),
                _mm256_and_si256(_mm256_srli_epi16::<4>(q), three),
                _mm256_and_si256(_mm256_srli_epi16::<6>(q), three),
            ];
            for (l, t) in codes.into_iter().enumerate() {
                add_codes(&mut acc, t, &a, i * ACT + ACT_QS + 128 * h + 32 * l);
            }
        }
        for j in 0..R {
            let p = a[j].as_ptr().add(i * ACT);
            sum[j] += ternary_sum(acc[j], p) as f32 * (act_d(p) * dw);
        }
    }
    sum
}
wrappers!(tq2_dot, tq2_dot4, tq2);
gemm_rows!(tq2_gemm, tq2, 66, ACT, 256);

/// `3 q mod 256` per byte.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn times3(q: __m256i) -> __m256i {
    _mm256_add_epi8(_mm256_add_epi8(q, q), q)
}

/// The trit `(q * 3) >> 8` (0, 1, 2) of each byte q.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn trits(q: __m256i) -> __m256i {
    // Unsigned compares as signed ones of q ^ 0x80.
    let x = _mm256_xor_si256(q, _mm256_set1_epi8(-128));
    let ge86 = _mm256_cmpgt_epi8(x, _mm256_set1_epi8((85u8 ^ 0x80) as i8));
    let ge171 = _mm256_cmpgt_epi8(x, _mm256_set1_epi8((170u8 ^ 0x80) as i8));
    _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), ge86), ge171)
}

/// TQ1_0 (54 bytes).
///
/// # Safety
/// As [`iq1_s`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tq1<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 54;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let mut sum = [0f32; R];
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let p = wb.as_ptr();
        let dw = f16_at(p.add(52));
        let base = i * ACT + ACT_QS;
        let mut acc = [_mm256_setzero_si256(); R];
        // Bytes 0..32: trit k of byte m is value 32k + m.
        let mut q = _mm256_loadu_si256(p as *const __m256i);
        for k in 0..5 {
            add_codes(&mut acc, trits(q), &a, base + 32 * k);
            q = times3(q);
        }
        // Bytes 32..48: trit k of byte m is value 160 + 16k + m, so powers
        // k and k + 1 side by side give 32 consecutive values.
        let b = _mm_loadu_si128(p.add(32) as *const __m128i);
        let b3 = _mm_add_epi8(_mm_add_epi8(b, b), b);
        let b9 = _mm_add_epi8(_mm_add_epi8(b3, b3), b3);
        let b27 = _mm_add_epi8(_mm_add_epi8(b9, b9), b9);
        let b81 = _mm_add_epi8(_mm_add_epi8(b27, b27), b27);
        // Bytes 48..52: trit k of byte j is value 240 + 4k + j: dword k of
        // the four bytes times 3^k.
        let h = _mm_set1_epi32(i32::from_le_bytes([
            *p.add(48),
            *p.add(49),
            *p.add(50),
            *p.add(51),
        ]));
        let h3 = _mm_add_epi8(_mm_add_epi8(h, h), h);
        let h9 = _mm_add_epi8(_mm_add_epi8(h3, h3), h3);
        let h27 = _mm_add_epi8(_mm_add_epi8(h9, h9), h9);
        let tail = _mm_blend_epi32::<0b1100>(
            _mm_blend_epi32::<0b0010>(h, h3),
            _mm_blend_epi32::<0b1000>(h9, h27),
        );
        for (k, v) in [
            _mm256_set_m128i(b3, b),
            _mm256_set_m128i(b27, b9),
            _mm256_set_m128i(tail, b81),
        ]
        .into_iter()
        .enumerate()
        {
            add_codes(&mut acc, trits(v), &a, base + 160 + 32 * k);
        }
        for j in 0..R {
            let pa = a[j].as_ptr().add(i * ACT);
            sum[j] += ternary_sum(acc[j], pa) as f32 * (dw * act_d(pa));
        }
    }
    sum
}
wrappers!(tq1_dot, tq1_dot4, tq1);
gemm_rows!(tq1_gemm, tq1, 54, ACT, 256);
