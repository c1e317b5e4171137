//! AVX2 dots of the K-quants (Q4_K, Q5_K, Q6_K) with Q8_K activations.
//! Per super-block of 256: the weight levels are decoded once per 64
//! values and dotted with each activation row in exact i32 arithmetic;
//! the super-block's integer sums are then reduced and scaled with the
//! scalar reference's own f32 expression, so results are bit-identical.

use super::{blocks, hsum_epi32, wrappers};
use crate::fp16::f16_le;
use crate::kquant_search::get_scale_min_k4;
use std::arch::x86_64::*;

const ACT: usize = 292; // Q8_K block: f32 d, 256 x i8, 16 x i16 sums
const ACT_QS: usize = 4;
const ACT_BSUMS: usize = 4 + 256;

#[inline]
unsafe fn act_d(p: *const u8) -> f32 {
    f32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

/// (d, dmin, scales, mins as i16 pairs [m0, m0, m1, m1, ...]) of a
/// Q4_K/Q5_K super-block header (bytes 0..16).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn k4_header(wb: &[u8]) -> (f32, f32, [i16; 8], __m256i) {
    let d = f16_le(wb[0], wb[1]);
    let dmin = f16_le(wb[2], wb[3]);
    let mut packed = [0u8; 12];
    packed.copy_from_slice(&wb[4..16]);
    let mut sc = [0i16; 8];
    let mut m = [0i16; 16];
    for j in 0..8 {
        let (s, mm) = get_scale_min_k4(j, &packed);
        sc[j] = s as i16;
        m[2 * j] = mm as i16;
        m[2 * j + 1] = mm as i16;
    }
    let mins = _mm256_loadu_si256(m.as_ptr() as *const __m256i);
    (d, dmin, sc, mins)
}

/// Q4_K / Q5_K body. `FIVE` selects Q5_K (qh at 16..48, nibbles at 48..).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn k45<const R: usize, const FIVE: bool>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let bytes = if FIVE { 176 } else { 144 };
    let nb = blocks(n, 256, w, bytes, &a, ACT);
    let mut sum = [0f32; R];
    let low = _mm256_set1_epi8(0x0F);
    let bit4 = _mm256_set1_epi8(0x10);
    for (i, wb) in w.chunks_exact(bytes).take(nb).enumerate() {
        let (d, dmin, sc, mins) = k4_header(wb);
        let ql = wb.as_ptr().add(if FIVE { 48 } else { 16 });
        // Q5_K: bit 2g of qh[l] is the fifth bit of value 64g + l, bit
        // 2g + 1 that of value 64g + 32 + l; shifted down 2 per group.
        let mut qh = if FIVE {
            _mm256_loadu_si256(wb.as_ptr().add(16) as *const __m256i)
        } else {
            _mm256_setzero_si256()
        };
        let mut isum = [_mm256_setzero_si256(); R];
        for g in 0..4 {
            let q = _mm256_loadu_si256(ql.add(32 * g) as *const __m256i);
            let mut lo = _mm256_and_si256(q, low);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
            if FIVE {
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16::<4>(qh), bit4));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16::<3>(qh), bit4));
                qh = _mm256_srli_epi16::<2>(qh);
            }
            let s_lo = _mm256_set1_epi16(sc[2 * g]);
            let s_hi = _mm256_set1_epi16(sc[2 * g + 1]);
            for j in 0..R {
                let y = a[j].as_ptr().add(i * ACT + ACT_QS + 64 * g);
                let y0 = _mm256_loadu_si256(y as *const __m256i);
                let y1 = _mm256_loadu_si256(y.add(32) as *const __m256i);
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), s_lo);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), s_hi);
                isum[j] = _mm256_add_epi32(isum[j], _mm256_add_epi32(p0, p1));
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

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    k45::<R, false>(n, w, a)
}
wrappers!(q4_k_dot, q4_k_dot4, q4_k);

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    k45::<R, true>(n, w, a)
}
wrappers!(q5_k_dot, q5_k_dot4, q5_k);

/// Q6_K (210 bytes: ql 0..128, qh 128..192, 16 x i8 scales 192..208, fp16
/// d at 208). Levels 0..63 are dotted unsigned; the -32 offset is applied
/// as 32 * sum(scale * activation block sum).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let nb = blocks(n, 256, w, 210, &a, ACT);
    let mut sum = [0f32; R];
    let low = _mm256_set1_epi8(0x0F);
    let high = _mm256_set1_epi8(0x30);
    for (i, wb) in w.chunks_exact(210).take(nb).enumerate() {
        let d = f16_le(wb[208], wb[209]);
        let mut sc = [0i16; 16];
        for (o, &b) in sc.iter_mut().zip(&wb[192..208]) {
            *o = b as i8 as i16;
        }
        let sc16 = _mm256_loadu_si256(sc.as_ptr() as *const __m256i);
        let p = wb.as_ptr();
        let mut isum = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            let ql0 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
            // Value 128h + 32k + l: low bits from ql0 (k even) / ql1 (k odd),
            // low nibble for k < 2, high for k >= 2; high bits (qh >> 2k) & 3.
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, low),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), high),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, low),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), high),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low),
                    _mm256_and_si256(qh, high),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), high),
                ),
            ];
            for (k, &qk) in q.iter().enumerate() {
                // Values 0..16 of this run use scale 8h + 2k, 16..32 the next.
                let s = 8 * h + 2 * k;
                let scale = _mm256_set_m128i(_mm_set1_epi16(sc[s + 1]), _mm_set1_epi16(sc[s]));
                for j in 0..R {
                    let y = a[j].as_ptr().add(i * ACT + ACT_QS + 128 * h + 32 * k);
                    let y = _mm256_loadu_si256(y as *const __m256i);
                    let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(qk, y), scale);
                    isum[j] = _mm256_add_epi32(isum[j], prod);
                }
            }
        }
        for j in 0..R {
            let ab = a[j].as_ptr().add(i * ACT);
            let da = act_d(ab);
            let bs = _mm256_loadu_si256(ab.add(ACT_BSUMS) as *const __m256i);
            let offset = hsum_epi32(_mm256_madd_epi16(bs, sc16));
            let is = hsum_epi32(isum[j]) - 32 * offset;
            sum[j] += d * da * is as f32;
        }
    }
    sum
}
wrappers!(q6_k_dot, q6_k_dot4, q6_k);
