//! AVX2 dots of the 2-, 3- and non-linear 4-bit types: Q2_K, Q3_K and
//! IQ4_XS with Q8_K activations, IQ4_NL with Q8_0 activations.
//!
//! The super-block types decode each 32 weights once into a byte vector
//! and dot it with every activation row in exact i32 arithmetic (scales
//! applied as i16 multipliers in `madd`); the super-block's integer sums are
//! then scaled with the scalar reference's own f32 expression, so results
//! are bit-identical to `q2_k::dot_q8_k`, `q3_k::dot_q8_k` and
//! `iq4_xs::dot_q8_k`. IQ4_NL goes through `legacy`'s 32-value kernel
//! (eight f32 lanes, as Q8_0: equal up to the rounding of partial sums).
//!
//! Ranges (no i16 saturation in `maddubs`): IQ4 codebook magnitudes are at
//! most 127, so |a| * |w| pairs reach 2 * 128 * 127 = 32512; Q3_K and Q2_K
//! levels are at most 4 and 3. The super-block kernels are exact for any
//! activation byte (IQ4_XS puts |a| on the unsigned side); IQ4_NL uses the
//! sign trick, exact for quants in -127..=127 (all `quantize_row` makes).

use super::{blocks, gemm_rows, hsum_epi32, wrappers};
use crate::iq4_nl::KVALUES;
use std::arch::x86_64::*;

const ACT: usize = 292; // Q8_K block: f32 d, 256 x i8, 16 x i16 sums
const ACT_QS: usize = 4;
const ACT_BSUMS: usize = 4 + 256;

/// # Safety
/// `p` points at 4 readable bytes (the f32 scale of a Q8_K block).
#[inline]
unsafe fn act_d(p: *const u8) -> f32 {
    f32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

/// The IQ4 codebook in both 128-bit lanes, for `pshufb` look-ups.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn codebook() -> __m256i {
    let t = _mm_loadu_si128(KVALUES.as_ptr() as *const __m128i);
    _mm256_set_m128i(t, t)
}

/// 16 bytes of 4-bit codebook indices at `p` -> the 32 signed weights in
/// value order (low nibbles are values 0..16, high nibbles 16..32).
///
/// # Safety
/// The CPU has AVX2; `p` points at 16 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn iq4_lookup(p: *const u8, book: __m256i) -> __m256i {
    let x = _mm_loadu_si128(p as *const __m128i);
    let idx = _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16::<4>(x), x),
        _mm256_set1_epi8(0x0F),
    );
    _mm256_shuffle_epi8(book, idx)
}

/// 32 activation quants of row `a` at byte `o` of its Q8_K data.
///
/// # Safety
/// The CPU has AVX2; `a` holds 32 bytes from `o`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn act32(a: &[u8], o: usize) -> __m256i {
    _mm256_loadu_si256(a.as_ptr().add(o) as *const __m256i)
}

/// IQ4_XS (136 bytes: fp16 d, u16 scales_h, 4 bytes scales_l, 128 bytes of
/// indices). Per sub-block of 32: signed weights by look-up, the sign
/// trick, and the sub-block's scale (ls - 32) as the `madd` multiplier.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted: [`blocks`]
/// clamps `n` to the whole blocks that `w` and every `a[j]` hold.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_xs<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 136;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let book = codebook();
    let mut sum = [0f32; R];
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let d = super::f16_at(wb.as_ptr());
        let h = u16::from_le_bytes([wb[2], wb[3]]);
        let mut isum = [_mm256_setzero_si256(); R];
        for ib in 0..8 {
            let lo = (wb[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
            let hi = ((h >> (2 * ib)) & 3) as u8;
            let ls = _mm256_set1_epi16((lo | (hi << 4)) as i16 - 32);
            let q = iq4_lookup(wb.as_ptr().add(8 + 16 * ib), book);
            for j in 0..R {
                // |a| unsigned, w with a's sign: exact for every activation
                // byte, -128 included (|-128| is 128 as u8; the codebook
                // has no -128 to negate).
                let y = act32(a[j], i * ACT + ACT_QS + 32 * ib);
                let p = _mm256_maddubs_epi16(_mm256_abs_epi8(y), _mm256_sign_epi8(q, y));
                isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(p, ls));
            }
        }
        for j in 0..R {
            let da = act_d(a[j].as_ptr().add(i * ACT));
            sum[j] += d * da * hsum_epi32(isum[j]) as f32;
        }
    }
    sum
}
wrappers!(iq4_xs_dot, iq4_xs_dot4, iq4_xs);
gemm_rows!(iq4_xs_gemm, iq4_xs, 136, ACT, 256);

/// Two 16-value scales as `madd` multipliers: `s0` for the first 16
/// values of a 32-value run (the low 128-bit lane of `maddubs`'s result),
/// `s1` for the last 16.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scale_pair(s0: i32, s1: i32) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(s1 as i16), _mm_set1_epi16(s0 as i16))
}

/// Q3_K (110 bytes: hmask 32, low bits 64, packed scales 12, fp16 d).
/// Value 128h + 32j + l: low = (qs[32h + l] >> 2j) & 3, minus 4 where bit
/// 4h + j of hmask[l] is clear; `maddubs(low, a) - maddubs(4 or 0, a)`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted (see [`iq4_xs`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 110;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let three = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    let mut sum = [0f32; R];
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let d = super::f16_at(wb.as_ptr().add(108));
        let packed = &wb[96..108];
        let scale = |j: usize| {
            let low = if j < 8 {
                packed[j] & 0xF
            } else {
                packed[j - 8] >> 4
            };
            let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
            (low | (high << 4)) as i32 - 32
        };
        let hm = _mm256_loadu_si256(wb.as_ptr() as *const __m256i);
        let mut isum = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            let qs = _mm256_loadu_si256(wb.as_ptr().add(32 + 32 * h) as *const __m256i);
            for jj in 0..4 {
                let bit = _mm256_set1_epi8((1u8 << (4 * h + jj)) as i8);
                let low = match jj {
                    0 => qs,
                    1 => _mm256_srli_epi16::<2>(qs),
                    2 => _mm256_srli_epi16::<4>(qs),
                    _ => _mm256_srli_epi16::<6>(qs),
                };
                let low = _mm256_and_si256(low, three);
                let clear = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), _mm256_setzero_si256());
                let sub = _mm256_and_si256(clear, four);
                let sc = scale_pair(scale(8 * h + 2 * jj), scale(8 * h + 2 * jj + 1));
                for j in 0..R {
                    let y = act32(a[j], i * ACT + ACT_QS + 128 * h + 32 * jj);
                    let p = _mm256_sub_epi16(
                        _mm256_maddubs_epi16(low, y),
                        _mm256_maddubs_epi16(sub, y),
                    );
                    isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(p, sc));
                }
            }
        }
        for j in 0..R {
            let da = act_d(a[j].as_ptr().add(i * ACT));
            sum[j] += d * da * hsum_epi32(isum[j]) as f32;
        }
    }
    sum
}
wrappers!(q3_k_dot, q3_k_dot4, q3_k);
gemm_rows!(q3_k_gemm, q3_k, 110, ACT, 256);

/// Q2_K (84 bytes: 16 scale/min bytes, 64 bytes of 2-bit levels, fp16 d,
/// fp16 dmin). Levels dotted with their 4-bit scales; the mins through the
/// activations' 16-value sums.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted (see [`iq4_xs`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q2_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 84;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let three = _mm256_set1_epi8(3);
    let mut sum = [0f32; R];
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let d = super::f16_at(wb.as_ptr().add(80));
        let dmin = super::f16_at(wb.as_ptr().add(82));
        let sc = &wb[..16];
        let mins = _mm256_cvtepu8_epi16(_mm_srli_epi16::<4>(_mm_and_si128(
            _mm_loadu_si128(sc.as_ptr() as *const __m128i),
            _mm_set1_epi8(0xF0u8 as i8),
        )));
        let mut isum = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            let qs = _mm256_loadu_si256(wb.as_ptr().add(16 + 32 * h) as *const __m256i);
            for jj in 0..4 {
                let lv = match jj {
                    0 => qs,
                    1 => _mm256_srli_epi16::<2>(qs),
                    2 => _mm256_srli_epi16::<4>(qs),
                    _ => _mm256_srli_epi16::<6>(qs),
                };
                let lv = _mm256_and_si256(lv, three);
                let g = 8 * h + 2 * jj;
                let s = scale_pair((sc[g] & 0xF) as i32, (sc[g + 1] & 0xF) as i32);
                for j in 0..R {
                    let y = act32(a[j], i * ACT + ACT_QS + 128 * h + 32 * jj);
                    let p = _mm256_maddubs_epi16(lv, y);
                    isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(p, s));
                }
            }
        }
        for j in 0..R {
            let ab = a[j].as_ptr().add(i * ACT);
            let da = act_d(ab);
            let bs = _mm256_loadu_si256(ab.add(ACT_BSUMS) as *const __m256i);
            let msum = hsum_epi32(_mm256_madd_epi16(bs, mins));
            let is = hsum_epi32(isum[j]);
            sum[j] += d * da * is as f32 - dmin * da * msum as f32;
        }
    }
    sum
}
wrappers!(q2_k_dot, q2_k_dot4, q2_k);
gemm_rows!(q2_k_gemm, q2_k, 84, ACT, 256);
