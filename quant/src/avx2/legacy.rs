//! AVX2 dots of IQ4_NL weights with Q8_0 activations (the other 32-value
//! types are in `q4_q5_tile` and `q8_0_rows`). Per block: the 32
//! weights as one vector of bytes, then for each activation row an exact
//! i32 dot (sign trick), scaled by dw * da and accumulated in 8 f32 lanes.

use super::{blocks, dot_us8, f16_at, gemm_rows, hsum_ps, wrappers};
use std::arch::x86_64::*;

const ACT: usize = 34; // Q8_0 block: fp16 d, 32 x i8

/// The f32 lanes one weight block adds for each activation row:
/// `decode(block)` gives the 32 weights as i8, fp16 d at 0. Integer sums
/// are exact; the lanes are `dw * da * isum`.
macro_rules! block_terms {
    ($signed:tt, $bytes:expr, $wp:ident, $a:ident, $i:expr, |$wb:ident| $decode:expr) => {{
        let wb = $wp.add($i * $bytes);
        let dw = f16_at(wb);
        let $wb = wb;
        let q: __m256i = $decode;
        let mut t = [_mm256_setzero_ps(); R];
        block_terms!(@body $signed, wb, q, dw, $a, $i, t);
        t
    }};
    (@body signed, $wb:ident, $q:ident, $dw:ident, $a:ident, $i:expr, $t:ident) => {
        let ax = _mm256_abs_epi8($q);
        for j in 0..R {
            let ab = $a[j].as_ptr().add($i * ACT);
            let y = _mm256_loadu_si256(ab.add(2) as *const __m256i);
            let p = dot_us8(ax, _mm256_sign_epi8(y, $q));
            $t[j] = _mm256_mul_ps(_mm256_set1_ps($dw * f16_at(ab)), _mm256_cvtepi32_ps(p));
        }
    };
}

/// A kernel over blocks of 32: the terms of two blocks are added together
/// before they reach the accumulator, halving its dependency chain.
macro_rules! kernel32 {
    ($name:ident, $signed:tt, $bytes:expr, |$wb:ident| $decode:expr) => {
        /// # Safety
        /// The CPU has AVX2, FMA and F16C. Lengths are not trusted: `blocks`
        /// clamps `n` to the whole blocks that `w` and every `a[j]` hold.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
            let nb = blocks(n, 32, w, $bytes, &a, ACT);
            let mut acc = [_mm256_setzero_ps(); R];
            let wp = w.as_ptr();
            let mut i = 0;
            while i + 2 <= nb {
                if R == 1 {
                    // A decode step streams the matrix from memory: the
                    // lines 4 KiB ahead of this pair of blocks (kquants'
                    // distance), which the hardware prefetcher alone left
                    // Q8_0 decode at about half the read loop.
                    let ahead = wp.add(i * $bytes).wrapping_add(4096);
                    _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(2 * $bytes - 1) as *const i8);
                }
                let t0 = block_terms!($signed, $bytes, wp, a, i, |$wb| $decode);
                let t1 = block_terms!($signed, $bytes, wp, a, i + 1, |$wb| $decode);
                for j in 0..R {
                    acc[j] = _mm256_add_ps(acc[j], _mm256_add_ps(t0[j], t1[j]));
                }
                i += 2;
            }
            if i < nb {
                let t0 = block_terms!($signed, $bytes, wp, a, i, |$wb| $decode);
                for j in 0..R {
                    acc[j] = _mm256_add_ps(acc[j], t0[j]);
                }
            }
            let mut out = [0f32; R];
            for j in 0..R {
                out[j] = hsum_ps(acc[j]);
            }
            out
        }
    };
}

// IQ4_NL (18 bytes: fp16 d, 16 bytes of codebook indices): Q4_0's layout
// with the IQ4 codebook instead of q - 8.
kernel32!(iq4_nl, signed, 18, |wb| super::lowbit::iq4_lookup(
    wb.add(2),
    super::lowbit::codebook()
));
wrappers!(iq4_nl_dot, iq4_nl_dot4, iq4_nl);
gemm_rows!(iq4_nl_gemm_rows, iq4_nl, 18, ACT, 32);

/// IQ4_NL matmul: one activation row (a decode step) by
/// [`super::iq4_nl_matvec`], bit for bit this row kernel; more rows by the
/// row kernel itself.
pub(super) fn iq4_nl_gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    if t == 1 {
        super::iq4_nl_matvec::iq4_nl_matvec(n, rows, w, a, out)
    } else {
        iq4_nl_gemm_rows(n, rows, w, t, a, out)
    }
}
