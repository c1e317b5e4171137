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
//! No software prefetch in these row kernels: they lost speed with it (1.4B
//! shape, 2 threads, tg32: Q3_K_M 17.0 -> 5.7 tok/s, Q2_K 22.2 -> 19.1,
//! IQ4_XS 14.5 -> 14.0). The decode matvec of IQ4_XS, Q3_K and Q2_K
//! (`lowbit_matvec`, one activation row, batches of eight super-blocks)
//! prefetches as the K-quant matvec does, and gains by it.
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
    // The 16 bytes in both halves (a load, no shuffle), the upper half
    // shifted right by 4 (`vpsrlvq`): no `vinserti128` on the shuffle port.
    let x = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
    let x = _mm256_srlv_epi64(x, _mm256_set_epi64x(4, 4, 0, 0));
    _mm256_shuffle_epi8(book, _mm256_and_si256(x, _mm256_set1_epi8(0x0F)))
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

/// Eight i16 multipliers, both 128-bit lanes holding the same eight.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dup_lanes(x: __m128i) -> __m256i {
    _mm256_set_m128i(x, x)
}

/// `pshufb` control that puts i16 lane `lo` of a [`dup_lanes`] vector in
/// every i16 of the low 128 bits and lane `lo + 1` in the high 128 bits:
/// the two scales of a 32-value run, as `madd` multipliers.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn pair_control(lo: usize) -> __m256i {
    let (a, b) = ((2 * lo) as i8, (2 * lo + 2) as i8);
    let l = _mm_set1_epi16(i16::from_le_bytes([a as u8, (a + 1) as u8]));
    let h = _mm_set1_epi16(i16::from_le_bytes([b as u8, (b + 1) as u8]));
    _mm256_set_m128i(h, l)
}

/// IQ4_XS (136 bytes: fp16 d, u16 scales_h, 4 bytes scales_l, 128 bytes of
/// indices). Two sub-blocks of 32 per step: their 32 index bytes give the
/// low nibbles of both (values 0..16 of each) and the high nibbles (values
/// 16..32), put back in value order by a 128-bit permute of the indices
/// (once for all activation rows). Signed weights by look-up; |a| on
/// `maddubs`'s unsigned side; the eight scales (ls - 32) as `madd`
/// multipliers picked by [`same_control`].
///
/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted: [`blocks`]
/// clamps `n` to the whole blocks that `w` and every `a[j]` hold.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_xs<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 136;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let book = codebook();
    let low = _mm256_set1_epi8(0x0F);
    let mut sum = [0f32; R];
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let d = super::f16_at(wb.as_ptr());
        let scales = iq4_xs_scales(wb);
        let mut isum = [_mm256_setzero_si256(); R];
        for pair in 0..4 {
            let q = _mm256_loadu_si256(wb.as_ptr().add(8 + 32 * pair) as *const __m256i);
            let i_lo = _mm256_and_si256(q, low);
            let i_hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
            // Sub-block 2 pair: its low nibbles then its high nibbles (the
            // low 128 bits of each); sub-block 2 pair + 1: the high 128 bits.
            let w_a = _mm256_shuffle_epi8(book, _mm256_permute2x128_si256::<0x20>(i_lo, i_hi));
            let w_b = _mm256_shuffle_epi8(book, _mm256_permute2x128_si256::<0x31>(i_lo, i_hi));
            let s_a = _mm256_shuffle_epi8(scales, same_control(2 * pair));
            let s_b = _mm256_shuffle_epi8(scales, same_control(2 * pair + 1));
            for j in 0..R {
                let o = i * ACT + ACT_QS + 64 * pair;
                let (y_a, y_b) = (act32(a[j], o), act32(a[j], o + 32));
                let p_a = _mm256_maddubs_epi16(_mm256_abs_epi8(y_a), _mm256_sign_epi8(w_a, y_a));
                let p_b = _mm256_maddubs_epi16(_mm256_abs_epi8(y_b), _mm256_sign_epi8(w_b, y_b));
                // Each i16 of p_a, p_b is up to 32512 in magnitude: scale
                // them apart (their sum could leave i16).
                let p = _mm256_add_epi32(_mm256_madd_epi16(p_a, s_a), _mm256_madd_epi16(p_b, s_b));
                isum[j] = _mm256_add_epi32(isum[j], p);
            }
        }
        for j in 0..R {
            let da = act_d(a[j].as_ptr().add(i * ACT));
            sum[j] += d * da * hsum_epi32(isum[j]) as f32;
        }
    }
    sum
}

/// The eight sub-block scales (ls - 32) of an IQ4_XS block as i16, in both
/// 128-bit lanes: the low nibbles of bytes 4..8 and the 2-bit fields of the
/// u16 at 2 spread to one byte each with shifts and masks.
///
/// # Safety
/// The CPU has AVX2; `wb` holds at least 8 bytes (indexing panics
/// otherwise, nothing is read past it).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn iq4_xs_scales(wb: &[u8]) -> __m256i {
    // Byte k of scales_l holds sub-blocks 2k (low nibble), 2k + 1 (high).
    let mut l = u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]]) as u64;
    l = (l | (l << 16)) & 0x0000_FFFF_0000_FFFF;
    l = (l | (l << 8)) & 0x00FF_00FF_00FF_00FF;
    let l = (l & 0x000F_000F_000F_000F) | ((l & 0x00F0_00F0_00F0_00F0) << 4);
    // Field ib of scales_h (bits 2ib, 2ib + 1) to byte ib.
    let mut h = u16::from_le_bytes([wb[2], wb[3]]) as u64;
    h = (h | (h << 24)) & 0x0000_00FF_0000_00FF;
    h = (h | (h << 12)) & 0x000F_000F_000F_000F;
    h = (h | (h << 6)) & 0x0303_0303_0303_0303;
    let bytes = _mm_cvtsi64_si128((l | (h << 4)) as i64);
    let ls = _mm_sub_epi16(_mm_cvtepu8_epi16(bytes), _mm_set1_epi16(32));
    dup_lanes(ls)
}

/// `pshufb` control that puts i16 lane `k` of a [`dup_lanes`] vector in
/// every i16 of both 128-bit halves.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn same_control(k: usize) -> __m256i {
    let b = (2 * k) as u8;
    _mm256_set1_epi16(i16::from_le_bytes([b, b + 1]))
}
wrappers!(iq4_xs_dot, iq4_xs_dot4, iq4_xs);
gemm_rows!(iq4_xs_gemm_rows, iq4_xs, 136, ACT, 256);

/// IQ4_XS matmul: one activation row (a decode step) by
/// [`super::lowbit_matvec`].
pub(crate) fn iq4_xs_gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    if t == 1 {
        super::lowbit_matvec::iq4_xs_matvec(n, rows, w, a, out)
    } else {
        iq4_xs_gemm_rows(n, rows, w, t, a, out)
    }
}

/// Q3_K's hmask bit of run b = 4h + j (h the 128-value half, j the 2-bit
/// field), moved to bit 2 of each byte of the 32 hmask bytes `hm`.
///
/// # Safety
/// The CPU has AVX2.
#[inline(always)]
pub(super) unsafe fn q3_hbit(hm: __m256i, b: usize) -> __m256i {
    let v = match b {
        0 => _mm256_slli_epi16::<2>(hm),
        1 => _mm256_slli_epi16::<1>(hm),
        2 => hm,
        3 => _mm256_srli_epi16::<1>(hm),
        4 => _mm256_srli_epi16::<2>(hm),
        5 => _mm256_srli_epi16::<3>(hm),
        6 => _mm256_srli_epi16::<4>(hm),
        _ => _mm256_srli_epi16::<5>(hm),
    };
    _mm256_and_si256(v, _mm256_set1_epi8(4))
}

/// Q3_K (110 bytes: hmask 32, low bits 64, packed scales 12, fp16 d).
/// Value 128h + 32j + l: low = (qs[32h + l] >> 2j) & 3, minus 4 where bit
/// 4h + j of hmask[l] is clear. Dotted as `w + 4` (0..=7, unsigned: low
/// bits with the hmask bit moved to bit 2), the `- 4` applied once per
/// super-block through the activations' 16-value sums; the sixteen scales
/// (s - 32) as `madd` multipliers picked by [`pair_control`].
///
/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted (see [`iq4_xs`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 110;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let three = _mm256_set1_epi8(3);
    let mut sum = [0f32; R];
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let d = super::f16_at(wb.as_ptr().add(108));
        let packed = &wb[96..108];
        let sc: [i16; 16] = std::array::from_fn(|j| {
            let low = if j < 8 {
                packed[j] & 0xF
            } else {
                packed[j - 8] >> 4
            };
            let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
            (low | (high << 4)) as i16 - 32
        });
        let all = _mm256_loadu_si256(sc.as_ptr() as *const __m256i);
        let halves = [
            dup_lanes(_mm256_castsi256_si128(all)),
            dup_lanes(_mm256_extracti128_si256::<1>(all)),
        ];
        let hm = _mm256_loadu_si256(wb.as_ptr() as *const __m256i);
        let mut isum = [_mm256_setzero_si256(); R];
        for (h, half) in halves.iter().enumerate() {
            let qs = _mm256_loadu_si256(wb.as_ptr().add(32 + 32 * h) as *const __m256i);
            for jj in 0..4 {
                let lv = match jj {
                    0 => qs,
                    1 => _mm256_srli_epi16::<2>(qs),
                    2 => _mm256_srli_epi16::<4>(qs),
                    _ => _mm256_srli_epi16::<6>(qs),
                };
                let lv = _mm256_or_si256(_mm256_and_si256(lv, three), q3_hbit(hm, 4 * h + jj));
                let s = _mm256_shuffle_epi8(*half, pair_control(2 * jj));
                for j in 0..R {
                    let y = act32(a[j], i * ACT + ACT_QS + 128 * h + 32 * jj);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(lv, y), s);
                    isum[j] = _mm256_add_epi32(isum[j], p);
                }
            }
        }
        for j in 0..R {
            let ab = a[j].as_ptr().add(i * ACT);
            let da = act_d(ab);
            let bs = _mm256_loadu_si256(ab.add(ACT_BSUMS) as *const __m256i);
            // sum over runs of s * (sum (w + 4) a) - 4 * s * bsum
            let off = _mm256_slli_epi32::<2>(_mm256_madd_epi16(bs, all));
            sum[j] += d * da * hsum_epi32(_mm256_sub_epi32(isum[j], off)) as f32;
        }
    }
    sum
}
wrappers!(q3_k_dot, q3_k_dot4, q3_k);
gemm_rows!(q3_k_gemm_rows, q3_k, 110, ACT, 256);

/// Q3_K matmul: one activation row (a decode step) by
/// [`super::lowbit_matvec`].
pub(crate) fn q3_k_gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    if t == 1 {
        super::lowbit_matvec::q3_k_matvec(n, rows, w, a, out)
    } else {
        q3_k_gemm_rows(n, rows, w, t, a, out)
    }
}

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
        let sc = _mm_loadu_si128(wb.as_ptr() as *const __m128i);
        let mins = _mm256_cvtepu8_epi16(_mm_srli_epi16::<4>(_mm_and_si128(
            sc,
            _mm_set1_epi8(0xF0u8 as i8),
        )));
        let all = _mm256_cvtepu8_epi16(_mm_and_si128(sc, _mm_set1_epi8(0x0F)));
        let halves = [
            dup_lanes(_mm256_castsi256_si128(all)),
            dup_lanes(_mm256_extracti128_si256::<1>(all)),
        ];
        let mut isum = [_mm256_setzero_si256(); R];
        for (h, half) in halves.iter().enumerate() {
            let qs = _mm256_loadu_si256(wb.as_ptr().add(16 + 32 * h) as *const __m256i);
            for jj in 0..4 {
                let lv = match jj {
                    0 => qs,
                    1 => _mm256_srli_epi16::<2>(qs),
                    2 => _mm256_srli_epi16::<4>(qs),
                    _ => _mm256_srli_epi16::<6>(qs),
                };
                let lv = _mm256_and_si256(lv, three);
                let s = _mm256_shuffle_epi8(*half, pair_control(2 * jj));
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
gemm_rows!(q2_k_gemm_rows, q2_k, 84, ACT, 256);

/// Q2_K matmul: one activation row (a decode step) by
/// [`super::lowbit_matvec`].
pub(crate) fn q2_k_gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    if t == 1 {
        super::lowbit_matvec::q2_k_matvec(n, rows, w, a, out)
    } else {
        q2_k_gemm_rows(n, rows, w, t, a, out)
    }
}
