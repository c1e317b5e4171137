//! Q8_0 activation quantization on AVX2: the same bytes as the scalar
//! reference ([`crate::q8_0::quantize`], ggml's quantize_row_q8_0_ref),
//! eight lanes at a time.
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
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
        let amax = _mm_cvtss_f32(m);
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
