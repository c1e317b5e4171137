//! AVX2 dots of F32/F16/BF16 weight rows with F32 activations. The scalar
//! reference (`crate::float`) keeps 8 partial sums over whole chunks of 64
//! values, adds them in order and then adds the remainder's sum; each of
//! its partial sums is one lane here (multiply then add, no FMA), so the
//! results are bit-identical. The prefill form ([`gemm`]) converts each 8
//! weights once for eight activation rows and walks the values in blocks
//! of [`KB`], so that the eight rows' slices stay in L1 across a block of
//! weight rows; each lane still adds its products in value order.

use super::{blocks, wrappers};
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

/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted (see `dot`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot::<R, 2, false>(n, w, a)
}
wrappers!(f16_dot, f16_dot4, f16k);

/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted (see `dot`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bf16k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot::<R, 2, true>(n, w, a)
}
wrappers!(bf16_dot, bf16_dot4, bf16k);

/// Values per block of [`gemm`]: eight activation rows' slices (8 x 512 x
/// 4 bytes = 16 KiB) stay in L1 while a block of weight rows passes.
const KB: usize = 512;
/// Weight rows per block of [`gemm`].
const RB: usize = 16;
const _: () = assert!(KB.is_multiple_of(CHUNK));

/// `out[j][r] = dot(row r, activation j)` for the `R` activation rows
/// `a[j0..j0 + R]` and the weight rows `rows`, bit for bit [`dot`]: each
/// (row, activation) pair keeps its eight lane sums across the blocks of
/// values and adds its products in value order, then [`finish`] adds the
/// lanes and the tail.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` holds every row of `rows` in full
/// (`n * WS` bytes each), `a` every activation row `j0..j0 + R` (`n * 4`
/// bytes each), `out` `(j0 + R) * total_rows` floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block<const R: usize, const WS: usize, const BF: bool>(
    n: usize,
    total_rows: usize,
    rows: std::ops::Range<usize>,
    w: &[u8],
    j0: usize,
    a: &[u8],
    out: &mut [f32],
) {
    let nk = (n / CHUNK) * CHUNK;
    let (rb, ab) = (n * WS, n * 4);
    let mut acc = [[_mm256_setzero_ps(); R]; RB];
    let wp = w.as_ptr();
    let ap = a.as_ptr();
    let mut k0 = 0;
    while k0 < nk {
        let k1 = (k0 + KB).min(nk);
        let mut i = 0;
        if R < 4 {
            // Few activations (a decode step): four rows at a time, so
            // that four rows' add chains overlap (one row's alone is bound
            // by the latency of its adds), each row's weights fetched 4
            // KiB ahead (the step streams them from memory).
            while i + 4 <= rows.len() {
                let wr: [*const u8; 4] = std::array::from_fn(|q| wp.add((rows.start + i + q) * rb));
                let mut e = k0;
                while e < k1 {
                    if (e * WS).is_multiple_of(64) {
                        for p in wr {
                            let ahead = p.wrapping_add(e * WS + 4096);
                            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                        }
                    }
                    let y: [__m256; R] = std::array::from_fn(|j| {
                        _mm256_loadu_ps(ap.add((j0 + j) * ab + e * 4) as *const f32)
                    });
                    for (q, p) in wr.iter().enumerate() {
                        let x = load8::<WS, BF>(p.add(e * WS));
                        for (j, yj) in y.iter().enumerate() {
                            acc[i + q][j] = _mm256_add_ps(acc[i + q][j], _mm256_mul_ps(x, *yj));
                        }
                    }
                    e += 8;
                }
                i += 4;
            }
        }
        for (r, accr) in rows.clone().zip(acc.iter_mut()).skip(i) {
            let wr = wp.add(r * rb);
            let mut e = k0;
            while e < k1 {
                let x = load8::<WS, BF>(wr.add(e * WS));
                for (j, aj) in accr.iter_mut().enumerate() {
                    let y = _mm256_loadu_ps(ap.add((j0 + j) * ab + e * 4) as *const f32);
                    *aj = _mm256_add_ps(*aj, _mm256_mul_ps(x, y));
                }
                e += 8;
            }
        }
        k0 = k1;
    }
    for (r, accr) in rows.zip(acc.iter()) {
        let wr = &w[r * rb..(r + 1) * rb];
        for (j, aj) in accr.iter().enumerate() {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), *aj);
            let act = &a[(j0 + j) * ab..(j0 + j + 1) * ab];
            out[(j0 + j) * total_rows + r] = finish::<WS, BF>(lanes, wr, act, nk, n);
        }
    }
}

/// Defines `gemm`, the float types' matmul over the module's own
/// `gemm_block` and `RB` (AVX2's here, AVX-512's in `avx512::float`):
/// blocks of `RB` weight rows against eight activation rows at a time,
/// then four, two, one.
macro_rules! float_gemm_driver {
    ($features:literal) => {
        /// The float types' `GemmFn` over this module's `gemm_block`.
        ///
        /// # Safety
        /// The CPU has the target features. Lengths are not trusted: only
        /// the rows and activations that `w`, `a` and `out` hold in full
        /// are computed.
        #[target_feature(enable = $features)]
        unsafe fn gemm<const WS: usize, const BF: bool>(
            n: usize,
            rows: usize,
            w: &[u8],
            t: usize,
            a: &[u8],
            out: &mut [f32],
        ) {
            let (rb, ab) = (n * WS, n * 4);
            if rb == 0 || rows == 0 {
                return;
            }
            let t = t.min(a.len() / ab).min(out.len() / rows);
            let held = rows.min(w.len() / rb);
            for r0 in (0..held).step_by(RB) {
                let block = r0..(r0 + RB).min(held);
                let mut j = 0;
                while j + 8 <= t {
                    gemm_block::<8, WS, BF>(n, rows, block.clone(), w, j, a, out);
                    j += 8;
                }
                if j + 4 <= t {
                    gemm_block::<4, WS, BF>(n, rows, block.clone(), w, j, a, out);
                    j += 4;
                }
                if j + 2 <= t {
                    gemm_block::<2, WS, BF>(n, rows, block.clone(), w, j, a, out);
                    j += 2;
                }
                if j < t {
                    gemm_block::<1, WS, BF>(n, rows, block.clone(), w, j, a, out);
                }
            }
        }
    };
}
#[cfg(feature = "avx512")]
pub(crate) use float_gemm_driver;
float_gemm_driver!("avx2,fma,f16c");

macro_rules! float_gemm {
    ($name:ident, $ws:expr, $bf:expr) => {
        pub(crate) fn $name(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
            // SAFETY: handed out by `dispatch` only when the CPU has AVX2,
            // FMA and F16C; `gemm` bounds every access by its buffers.
            unsafe { gemm::<$ws, $bf>(n, rows, w, t, a, out) }
        }
    };
}
float_gemm!(f32_gemm, 4, false);
float_gemm!(f16_gemm, 2, false);
float_gemm!(bf16_gemm, 2, true);
