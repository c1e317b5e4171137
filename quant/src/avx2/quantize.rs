//! Q8_0 and Q8_K activation quantization on AVX2: the same bytes as the
//! scalar references ([`crate::q8_0::quantize`], ggml's
//! quantize_row_q8_0_ref; [`crate::q8_k::quantize`] below), eight lanes at
//! a time.
//!
//! Per block: amax = max |x| (order does not matter for a max), d = amax /
//! 127 and id = 1 / d in scalar f32 as the reference does, then q = x * id
//! rounded half away from zero. The rounding is exact: t = trunc(y), and
//! y - t is exact for every f32 (|y| < 2^23 has a fractional part the
//! subtraction keeps; larger y are integers), so adding sign(y) where
//! |y - t| >= 0.5 is `roundf`. Blocks holding an infinity or a NaN go to
//! the scalar code, which owns those edge cases, as do blocks so small that
//! 1 / d overflows.

use std::arch::x86_64::*;

use crate::fp16::f32_to_f16;
use crate::q8_0::{BLOCK_BYTES, QK};

/// Quantizes whole 32-value blocks of `src` into `dst` (34 bytes each).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    let sign = _mm256_set1_ps(-0.0);
    let inf = _mm256_set1_ps(f32::INFINITY);
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    // packs leaves dwords in the order 0 4 1 5 2 6 3 7; this puts them back.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let p = x.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let a = v.map(|vi| _mm256_andnot_ps(sign, vi));
        // All finite (NaN compares false): else the scalar reference.
        let fin = _mm256_and_ps(
            _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_LT_OQ>(a[0], inf),
                _mm256_cmp_ps::<_CMP_LT_OQ>(a[1], inf),
            ),
            _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_LT_OQ>(a[2], inf),
                _mm256_cmp_ps::<_CMP_LT_OQ>(a[3], inf),
            ),
        );
        if _mm256_movemask_ps(fin) != 0xFF {
            crate::q8_0::quantize_scalar(x, blk);
            continue;
        }
        let amax = hmax_ps(_mm256_max_ps(
            _mm256_max_ps(a[0], a[1]),
            _mm256_max_ps(a[2], a[3]),
        ));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        if !id.is_finite() {
            // A subnormal d: x * id is infinite or NaN, which the scalar
            // code saturates ('as i8') and cvttps would not.
            crate::q8_0::quantize_scalar(x, blk);
            continue;
        }
        let idv = _mm256_set1_ps(id);
        let q = v.map(|vi| {
            let y = _mm256_mul_ps(vi, idv);
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
            let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(y, t));
            let away = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, half);
            let step = _mm256_and_ps(away, _mm256_or_ps(one, _mm256_and_ps(sign, y)));
            _mm256_cvttps_epi32(_mm256_add_ps(t, step))
        });
        let w = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let w = _mm256_permutevar8x32_epi32(w, order);
        let (head, qs) = blk.split_at_mut(2);
        head.copy_from_slice(&f32_to_f16(d).to_le_bytes());
        _mm256_storeu_si256(qs.as_mut_ptr() as *mut __m256i, w);
    }
}

/// Quantizes whole 256-value blocks of `src` into Q8_K `dst` (292 bytes
/// each): the bytes of the scalar reference ([`crate::q8_k::quantize`],
/// ggml's quantize_row_q8_K_ref). The signed value of the first element of
/// largest magnitude sets iscale = -127 / max; `nearest_int` is
/// round-half-even for |y| < 2^22, which `_mm256_round_ps` does (|y| <=
/// 127 here); the 16 sums come from the same i32 quants. Blocks with an
/// infinity or NaN, and all-zero blocks, go to the scalar code.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_q8_k(src: &[f32], dst: &mut [u8]) {
    use crate::q8_k::{BLOCK_BYTES as KB, QK as K};
    let sign = _mm256_set1_ps(-0.0);
    let inf = _mm256_set1_ps(f32::INFINITY);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let cap = _mm256_set1_epi32(127);
    for (x, blk) in src.chunks_exact(K).zip(dst.chunks_exact_mut(KB)) {
        let p = x.as_ptr();
        let mut m = _mm256_setzero_ps();
        let mut fin = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        for k in 0..32 {
            let a = _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * k)));
            m = _mm256_max_ps(m, a);
            fin = _mm256_and_ps(fin, _mm256_cmp_ps::<_CMP_LT_OQ>(a, inf));
        }
        let amax = hmax_ps(m);
        if _mm256_movemask_ps(fin) != 0xFF || amax == 0.0 {
            crate::q8_k::quantize_scalar(x, blk);
            continue;
        }
        // The first element whose magnitude is amax (the reference keeps the
        // first on ties, with its sign).
        let am = _mm256_set1_ps(amax);
        let mut max = amax;
        for k in 0..32 {
            let a = _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * k)));
            let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(a, am));
            if hit != 0 {
                max = x[8 * k + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        if !iscale.is_finite() {
            // A subnormal max: the reference's integer tricks on inf/NaN.
            crate::q8_k::quantize_scalar(x, blk);
            continue;
        }
        let isv = _mm256_set1_ps(iscale);
        let (head, rest) = blk.split_at_mut(4);
        let (qs, bsums) = rest.split_at_mut(K);
        let mut sums = [_mm256_setzero_si256(); 16];
        for g in 0..8 {
            // 32 values: four vectors of eight i32 quants.
            let q: [__m256i; 4] = std::array::from_fn(|i| {
                let y = _mm256_mul_ps(isv, _mm256_loadu_ps(p.add(32 * g + 8 * i)));
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
                _mm256_min_epi32(_mm256_cvtps_epi32(r), cap)
            });
            sums[2 * g] = _mm256_add_epi32(q[0], q[1]);
            sums[2 * g + 1] = _mm256_add_epi32(q[2], q[3]);
            let w = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let w = _mm256_permutevar8x32_epi32(w, order);
            _mm256_storeu_si256(qs.as_mut_ptr().add(32 * g) as *mut __m256i, w);
        }
        for (s, &v) in bsums.chunks_exact_mut(2).zip(&sums) {
            s.copy_from_slice(&(super::hsum_epi32(v) as i16).to_le_bytes());
        }
        head.copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

/// The largest of the eight lanes (of non-negative, non-NaN values here).
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hmax_ps(v: __m256) -> f32 {
    let m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps::<1>(m2, m2)))
}
