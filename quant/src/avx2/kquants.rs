//! AVX2 dots of the K-quants (Q4_K, Q5_K, Q6_K) with Q8_K activations.
//! Per super-block of 256: the weight levels are decoded once per 64
//! values and dotted with each activation row in exact i32 arithmetic;
//! the super-block's integer sums are then reduced and scaled with the
//! scalar reference's own f32 expression, so results are bit-identical.
//! A matvec (one activation row) goes to `kmatvec` instead, which does the
//! same arithmetic with less work per super-block.

use super::kmatvec::hsum8;
use super::{blocks, gemm_rows, hsum_epi32, wrappers};
use std::arch::x86_64::*;

const ACT: usize = 292; // Q8_K block: f32 d, 256 x i8, 16 x i16 sums
const ACT_QS: usize = 4;
const ACT_BSUMS: usize = 4 + 256;

/// Matvec streams the rows of a matrix one after the other: fetch the
/// lines `PREFETCH_AHEAD` bytes past this super-block into L1, as many as
/// one super-block spans, so that DRAM latency hides behind ~28 Q4_K
/// super-blocks of work (the hardware prefetcher alone left the kernel
/// stalled on its loads). Addresses past the matrix are harmless:
/// prefetches never fault. 4 KiB measured better than 1 KiB on 2 threads:
/// Q4_K_M decode 3.13/3.13 -> 3.40/3.44 tok/s (7B shape), +12% on average
/// over 8 alternated runs at the 1.4B shape; 8 KiB was no better.
///
/// # Safety
/// The CPU has SSE (every x86-64 CPU). Any `p` and `bytes`: the addresses are
/// formed with wrapping arithmetic and prefetches never fault.
#[inline(always)]
unsafe fn prefetch_ahead(p: *const u8, bytes: usize) {
    let ahead = p.wrapping_add(PREFETCH_AHEAD);
    let mut o = 0;
    while o < bytes {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(o) as *const i8);
        o += 64;
    }
}

const PREFETCH_AHEAD: usize = 4096;

/// # Safety
/// `p` points at 4 readable bytes (the f32 scale of a Q8_K block).
#[inline]
unsafe fn act_d(p: *const u8) -> f32 {
    f32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

/// (d, dmin, 8 six-bit scales as the bytes of a u64, mins as i16 pairs
/// [m0, m0, m1, m1, ...]) of a Q4_K/Q5_K super-block header (bytes 0..16).
/// The 12 packed bytes: bytes 0..4 and 4..8 hold scales/mins 0..4 in their
/// low 6 bits (and the top 2 bits of 4..8 in bits 6..8); bytes 8..12 hold
/// the low 4 bits of scales (low nibble) and mins (high nibble) 4..8.
///
/// # Safety
/// The CPU has AVX2 and F16C; `wb` holds at least 16 bytes (the header;
/// shorter panics on the index, it is not read past).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn k4_header(wb: &[u8]) -> (f32, f32, u64, __m256i) {
    let p = wb.as_ptr();
    let d = super::f16_at(p);
    let dmin = super::f16_at(p.add(2));
    let u = |o: usize| u32::from_le_bytes([wb[o], wb[o + 1], wb[o + 2], wb[o + 3]]);
    let (u0, u1, u2) = (u(4), u(8), u(12));
    let sc_lo = u0 & 0x3f3f_3f3f;
    let m_lo = u1 & 0x3f3f_3f3f;
    let sc_hi = (u2 & 0x0f0f_0f0f) | ((u0 >> 2) & 0x3030_3030);
    let m_hi = ((u2 >> 4) & 0x0f0f_0f0f) | ((u1 >> 2) & 0x3030_3030);
    let sc = sc_lo as u64 | (sc_hi as u64) << 32;
    let m = m_lo as u64 | (m_hi as u64) << 32;
    let dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_cvtsi64_si128(m as i64), dup));
    (d, dmin, sc, mins)
}

/// Q4_K / Q5_K body. `FIVE` selects Q5_K (qh at 16..48, nibbles at 48..).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted: [`blocks`] clamps
/// `n` to the whole blocks that `w` and every `a[j]` hold.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn k45<const R: usize, const FIVE: bool>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let bytes = if FIVE { 176 } else { 144 };
    let nb = blocks(n, 256, w, bytes, &a, ACT);
    let mut sum = [0f32; R];
    let mut sum8 = _mm256_setzero_ps();
    let low = _mm256_set1_epi8(0x0F);
    let bit4 = _mm256_set1_epi8(0x10);
    for (i, wb) in w.chunks_exact(bytes).take(nb).enumerate() {
        if R == 1 {
            prefetch_ahead(wb.as_ptr(), bytes);
        }
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
            let s_lo = _mm256_set1_epi16(((sc >> (16 * g)) & 0xff) as i16);
            let s_hi = _mm256_set1_epi16(((sc >> (16 * g + 8)) & 0xff) as i16);
            for j in 0..R {
                let y = a[j].as_ptr().add(i * ACT + ACT_QS + 64 * g);
                let y0 = _mm256_loadu_si256(y as *const __m256i);
                let y1 = _mm256_loadu_si256(y.add(32) as *const __m256i);
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), s_lo);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), s_hi);
                isum[j] = _mm256_add_epi32(isum[j], _mm256_add_epi32(p0, p1));
            }
        }
        if R == 8 {
            // The eight activations' tails side by side, lane j doing
            // activation j's scalar expression below in the same order.
            let ab: [*const u8; 8] = std::array::from_fn(|j| a[j].as_ptr().add(i * ACT));
            let ms: [__m256i; 8] = std::array::from_fn(|j| {
                let bs = _mm256_loadu_si256(ab[j].add(ACT_BSUMS) as *const __m256i);
                _mm256_madd_epi16(bs, mins)
            });
            let is8: [__m256i; 8] = std::array::from_fn(|j| isum[j]);
            let da = _mm256_setr_ps(
                act_d(ab[0]),
                act_d(ab[1]),
                act_d(ab[2]),
                act_d(ab[3]),
                act_d(ab[4]),
                act_d(ab[5]),
                act_d(ab[6]),
                act_d(ab[7]),
            );
            let t1 = _mm256_mul_ps(
                _mm256_mul_ps(_mm256_set1_ps(d), da),
                _mm256_cvtepi32_ps(hsum8(&is8)),
            );
            let t2 = _mm256_mul_ps(
                _mm256_mul_ps(_mm256_set1_ps(dmin), da),
                _mm256_cvtepi32_ps(hsum8(&ms)),
            );
            sum8 = _mm256_add_ps(sum8, _mm256_sub_ps(t1, t2));
            continue;
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
    if R == 8 {
        let mut v = [0f32; 8];
        _mm256_storeu_ps(v.as_mut_ptr(), sum8);
        for (s, x) in sum.iter_mut().zip(v) {
            *s = x;
        }
    }
    sum
}

/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted (see `k45`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    k45::<R, false>(n, w, a)
}
wrappers!(q4_k_dot, q4_k_dot4, q4_k);
gemm_rows!(q4_k_gemm_rows, q4_k, 144, ACT, 256);

/// Q4_K matmul: from [`super::q4_k_tile::TILE_MIN`] activation rows on, the
/// eight-row tile decoded once (same bits, fewer multiplies per value).
pub(crate) fn q4_k_gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    if t >= super::q4_k_tile::TILE_MIN {
        super::q4_k_tile::gemm(n, rows, w, t, a, out)
    } else if t == 1 {
        super::kmatvec::q4_k_matvec(n, rows, w, a, out)
    } else {
        q4_k_gemm_rows(n, rows, w, t, a, out)
    }
}

/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted (see `k45`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    k45::<R, true>(n, w, a)
}
wrappers!(q5_k_dot, q5_k_dot4, q5_k);
gemm_rows!(q5_k_gemm_rows, q5_k, 176, ACT, 256);

/// Q5_K matmul: one activation row (a decode step) by [`super::kmatvec`].
pub(crate) fn q5_k_gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    if t == 1 {
        super::kmatvec::q5_k_matvec(n, rows, w, a, out)
    } else {
        q5_k_gemm_rows(n, rows, w, t, a, out)
    }
}

/// Q6_K (210 bytes: ql 0..128, qh 128..192, 16 x i8 scales 192..208, fp16
/// d at 208). Levels 0..63 are dotted unsigned; the -32 offset is applied
/// as 32 * sum(scale * activation block sum).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted: [`blocks`] clamps
/// `n` to the whole blocks that `w` and every `a[j]` hold.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let nb = blocks(n, 256, w, 210, &a, ACT);
    let mut sum = [0f32; R];
    let low = _mm256_set1_epi8(0x0F);
    let high = _mm256_set1_epi8(0x30);
    for (i, wb) in w.chunks_exact(210).take(nb).enumerate() {
        if R == 1 {
            prefetch_ahead(wb.as_ptr(), 210);
        }
        let d = super::f16_at(wb.as_ptr().add(208));
        let sc8 = _mm_loadu_si128(wb.as_ptr().add(192) as *const __m128i);
        let sc16 = _mm256_cvtepi8_epi16(sc8);
        let p = wb.as_ptr();
        let mut isum = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            let ql0 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
            // The 8 scales of this half as i16, in both 128-bit lanes.
            let half = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(if h == 0 {
                sc8
            } else {
                _mm_unpackhi_epi64(sc8, sc8)
            }));
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
                // (i16 element 2k in the low lane, 2k + 1 in the high lane).
                let (e0, e1) = (4 * k as i8, 4 * k as i8 + 2);
                let pick = _mm256_setr_epi8(
                    e0,
                    e0 + 1,
                    e0,
                    e0 + 1,
                    e0,
                    e0 + 1,
                    e0,
                    e0 + 1,
                    e0,
                    e0 + 1,
                    e0,
                    e0 + 1,
                    e0,
                    e0 + 1,
                    e0,
                    e0 + 1,
                    e1,
                    e1 + 1,
                    e1,
                    e1 + 1,
                    e1,
                    e1 + 1,
                    e1,
                    e1 + 1,
                    e1,
                    e1 + 1,
                    e1,
                    e1 + 1,
                    e1,
                    e1 + 1,
                    e1,
                    e1 + 1,
                );
                let scale = _mm256_shuffle_epi8(half, pick);
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
gemm_rows!(q6_k_gemm_rows, q6_k, 210, ACT, 256);

/// Q6_K matmul: one activation row (a decode step) by [`super::kmatvec`].
pub(crate) fn q6_k_gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    if t == 1 {
        super::kmatvec::q6_k_matvec(n, rows, w, a, out)
    } else {
        q6_k_gemm_rows(n, rows, w, t, a, out)
    }
}
