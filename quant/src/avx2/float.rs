//! AVX2 dots of F32/F16/BF16 weight rows with F32 activations. The scalar
//! reference (`crate::float`) keeps 8 partial sums over whole chunks of 64
//! values, adds them in order and then adds the remainder's sum; each of
//! its partial sums is one lane here (multiply then add, no FMA), so the
//! results are bit-identical. The prefill form (`gemm_rows`) converts each
//! 8 weights once for eight activation rows.

use super::{blocks, gemm_rows, wrappers};
use crate::float::{finish, CHUNK};
use std::arch::x86_64::*;

/// 8 weights at `p` as f32: `WS` = 4 (F32), 2 (F16, `BF` false) or 2 (BF16).
///
/// # Safety
/// The CPU has AVX2 and F16C; `p` points at `8 * WS` readable bytes.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn load8<const WS: usize, const BF: bool>(p: *const u8) -> __m256 {
    if WS == 4 {
        _mm256_loadu_ps(p as *const f32)
    } else if BF {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
    } else {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted: [`blocks`] clamps
/// `n` to the whole blocks that `w` and every `a[j]` hold.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot<const R: usize, const WS: usize, const BF: bool>(
    n: usize,
    w: &[u8],
    a: [&[u8]; R],
) -> [f32; R] {
    // Values every buffer holds in full (blocks of one value).
    let n = blocks(n, 1, w, WS, &a, 4);
    let chunks = n / CHUNK;
    let mut acc = [_mm256_setzero_ps(); R];
    let wp = w.as_ptr();
    for c in 0..chunks {
        for v in 0..CHUNK / 8 {
            let e = c * CHUNK + v * 8;
            let x = load8::<WS, BF>(wp.add(e * WS));
            for j in 0..R {
                let y = _mm256_loadu_ps(a[j].as_ptr().add(e * 4) as *const f32);
                acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(x, y));
            }
        }
    }
    let mut out = [0f32; R];
    for j in 0..R {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[j]);
        out[j] = finish::<WS, BF>(lanes, w, a[j], chunks * CHUNK, n);
    }
    out
}

/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted (see `dot`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot::<R, 4, false>(n, w, a)
}
wrappers!(f32_dot, f32_dot4, f32k);
gemm_rows!(f32_gemm, f32k, 4, 4, 1);

/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted (see `dot`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot::<R, 2, false>(n, w, a)
}
wrappers!(f16_dot, f16_dot4, f16k);
gemm_rows!(f16_gemm, f16k, 2, 4, 1);

/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted (see `dot`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bf16k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot::<R, 2, true>(n, w, a)
}
wrappers!(bf16_dot, bf16_dot4, bf16k);
gemm_rows!(bf16_gemm, bf16k, 2, 4, 1);
