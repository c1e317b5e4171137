//! AVX2 dots of the 32-value block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
//! with Q8_0 activations. Per block: decode the 32 weights into one
//! vector of bytes once, then for each activation row an exact i32 dot
//! (sign trick for signed weights), scaled by dw * da and accumulated with
//! FMA in 8 f32 lanes. Q4_1/Q5_1 add min * da * sum(activation quants).

use super::{bits32, blocks, dot_us8, f16_at, hsum_ps, nibbles16, wrappers};
use std::arch::x86_64::*;

const ACT: usize = 34; // Q8_0 block: fp16 d, 32 x i8

/// Shared body of the signed types: `decode(block) -> 32 signed i8`
/// (value / d), scale fp16 at offset 0.
macro_rules! signed_kernel {
    ($name:ident, $bytes:expr, |$wb:ident| $decode:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
            let nb = blocks(n, 32, w, $bytes, &a, ACT);
            let mut acc = [_mm256_setzero_ps(); R];
            let wp = w.as_ptr();
            for i in 0..nb {
                let wb = wp.add(i * $bytes);
                let dw = f16_at(wb);
                let $wb = wb;
                let q: __m256i = $decode;
                let ax = _mm256_abs_epi8(q);
                for j in 0..R {
                    let ab = a[j].as_ptr().add(i * ACT);
                    let y = _mm256_loadu_si256(ab.add(2) as *const __m256i);
                    let p = dot_us8(ax, _mm256_sign_epi8(y, q));
                    let d = _mm256_set1_ps(dw * f16_at(ab));
                    acc[j] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[j]);
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

/// Shared body of the types with a min: `decode(block) -> 32 unsigned
/// levels`, fp16 d at 0 and fp16 min at 2.
macro_rules! min_kernel {
    ($name:ident, $bytes:expr, |$wb:ident| $decode:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
            let nb = blocks(n, 32, w, $bytes, &a, ACT);
            let mut acc = [_mm256_setzero_ps(); R];
            let ones = _mm256_set1_epi8(1);
            let wp = w.as_ptr();
            for i in 0..nb {
                let wb = wp.add(i * $bytes);
                let dw = f16_at(wb);
                let mw = f16_at(wb.add(2));
                let $wb = wb;
                let q: __m256i = $decode;
                for j in 0..R {
                    let ab = a[j].as_ptr().add(i * ACT);
                    let y = _mm256_loadu_si256(ab.add(2) as *const __m256i);
                    let da = f16_at(ab);
                    let p = _mm256_cvtepi32_ps(dot_us8(q, y));
                    let s = _mm256_cvtepi32_ps(dot_us8(ones, y));
                    acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * da), p, acc[j]);
                    acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(mw * da), s, acc[j]);
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

// Q4_0 (18 bytes: d, 16 nibble bytes): q - 8.
signed_kernel!(q4_0, 18, |wb| _mm256_sub_epi8(
    nibbles16(wb.add(2)),
    _mm256_set1_epi8(8)
));
wrappers!(q4_0_dot, q4_0_dot4, q4_0);

// Q8_0 (34 bytes: d, 32 x i8).
signed_kernel!(q8_0, 34, |wb| _mm256_loadu_si256(
    wb.add(2) as *const __m256i
));
wrappers!(q8_0_dot, q8_0_dot4, q8_0);

// Q5_0 (22 bytes: d, u32 fifth bits, 16 nibble bytes): (nibble | bit << 4) - 16.
signed_kernel!(q5_0, 22, |wb| {
    let fifth = _mm256_and_si256(bits32(wb.add(2)), _mm256_set1_epi8(0x10));
    _mm256_sub_epi8(
        _mm256_or_si256(nibbles16(wb.add(6)), fifth),
        _mm256_set1_epi8(16),
    )
});
wrappers!(q5_0_dot, q5_0_dot4, q5_0);

// Q4_1 (20 bytes: d, m, 16 nibble bytes).
min_kernel!(q4_1, 20, |wb| nibbles16(wb.add(4)));
wrappers!(q4_1_dot, q4_1_dot4, q4_1);

// Q5_1 (24 bytes: d, m, u32 fifth bits, 16 nibble bytes).
min_kernel!(q5_1, 24, |wb| _mm256_or_si256(
    nibbles16(wb.add(8)),
    _mm256_and_si256(bits32(wb.add(4)), _mm256_set1_epi8(0x10))
));
wrappers!(q5_1_dot, q5_1_dot4, q5_1);
