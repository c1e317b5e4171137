//! AVX-512 (F + BW + VL, and VNNI where the CPU has it) kernels for the
//! types that Q4_0 and Q4_K_M files hold: Q4_0, Q8_0, Q4_K, Q6_K. Built only
//! with the `avx512` cargo feature: the intrinsics need Rust 1.89 while the
//! workspace's MSRV is 1.80. NOT YET RUN ON AVX-512 HARDWARE (written on an
//! AVX2-only machine): `cargo test -p quant --features avx512` on an AVX-512
//! CPU runs tests/it/simd.rs against them, and [`crate::dispatch`] checks every
//! SIMD kernel against the scalar reference once before choosing it.
//!
//! Same structure and accuracy contract as [`crate::avx2`]: generic over
//! `R` activation rows, exact integer sums, K-quants bit-identical to
//! scalar, 32-value types within f32 rounding of the partial sums. Two
//! 32-value blocks share one 512-bit vector.
#![allow(clippy::incompatible_msrv)]

use crate::avx2::{blocks, f16_at, k4_header, nibbles16};
use crate::{Dot4Fn, DotFn, GgmlType};
use std::arch::x86_64::*;

/// Whether this CPU has the VNNI instructions (`vpdpbusd`, `vpdpwssd`).
pub(crate) fn has_vnni() -> bool {
    std::is_x86_feature_detected!("avx512vnni")
}

/// The (matvec dot, four-activation dot) pair for `ty`, if written.
pub(crate) fn kernels(ty: GgmlType) -> Option<(DotFn, Dot4Fn)> {
    use GgmlType as T;
    let vnni = has_vnni();
    Some(match (ty, vnni) {
        (T::Q4_0, false) => (plain::q4_0_dot, plain::q4_0_dot4),
        (T::Q4_0, true) => (vnni::q4_0_dot, vnni::q4_0_dot4),
        (T::Q8_0, false) => (plain::q8_0_dot, plain::q8_0_dot4),
        (T::Q8_0, true) => (vnni::q8_0_dot, vnni::q8_0_dot4),
        (T::Q4_K, false) => (plain::q4_k_dot, plain::q4_k_dot4),
        (T::Q4_K, true) => (vnni::q4_k_dot, vnni::q4_k_dot4),
        (T::Q6_K, false) => (plain::q6_k_dot, plain::q6_k_dot4),
        (T::Q6_K, true) => (vnni::q6_k_dot, vnni::q6_k_dot4),
        _ => return None,
    })
}

const Q8_0_ACT: usize = 34;
const Q8_K_ACT: usize = 292;

/// Two 256-bit halves as one 512-bit vector (`lo` in lanes 0..32 bytes).
///
/// # Safety
/// The CPU has AVX-512 F, BW and VL.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `acc + sum of each 4 adjacent u8 * i8 products` per i32 lane, exact
/// (the maddubs form needs its i16 pair sums not to saturate, see avx2).
///
/// # Safety
/// The CPU has AVX-512 F, BW and VL, and AVX-512 VNNI when `VNNI`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn dpbusd<const VNNI: bool>(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
    if VNNI {
        _mm512_dpbusd_epi32(acc, u, s)
    } else {
        let p = _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
        _mm512_add_epi32(acc, p)
    }
}

/// `acc + (i16 pairs of u * s) . scale` per i32 lane.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VL, and AVX-512 VNNI when `VNNI`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn scaled_dot<const VNNI: bool>(
    acc: __m512i,
    u: __m512i,
    s: __m512i,
    scale: __m512i,
) -> __m512i {
    let p = _mm512_maddubs_epi16(u, s);
    if VNNI {
        _mm512_dpwssd_epi32(acc, p, scale)
    } else {
        _mm512_add_epi32(acc, _mm512_madd_epi16(p, scale))
    }
}

/// Q4_0 / Q8_0 with Q8_0 activations: `Q8` selects Q8_0 weights.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VL, FMA and F16C, and AVX-512 VNNI when
/// `VNNI`. Lengths are not trusted: `blocks` clamps `n` to the whole blocks
/// that `w` and every `a[j]` hold.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn legacy<const R: usize, const VNNI: bool, const Q8: bool>(
    n: usize,
    w: &[u8],
    a: [&[u8]; R],
) -> [f32; R] {
    let bytes = if Q8 { 34 } else { 18 };
    let nb = blocks(n, 32, w, bytes, &a, Q8_0_ACT);
    let wp = w.as_ptr();
    // 32 weights of block i as i8.
    let decode = |i: usize| -> __m256i {
        let wb = wp.add(i * bytes);
        if Q8 {
            _mm256_loadu_si256(wb.add(2) as *const __m256i)
        } else {
            _mm256_sub_epi8(nibbles16(wb.add(2)), _mm256_set1_epi8(8))
        }
    };
    let mut acc = [_mm512_setzero_ps(); R];
    let mut i = 0;
    while i < nb {
        // Blocks i and i + 1 (or i alone, the upper half then zero).
        let two = i + 1 < nb;
        let q = join(
            decode(i),
            if two {
                decode(i + 1)
            } else {
                _mm256_setzero_si256()
            },
        );
        let ax = _mm512_abs_epi8(q);
        let neg = _mm512_movepi8_mask(q);
        let dw0 = f16_at(wp.add(i * bytes));
        let dw1 = if two {
            f16_at(wp.add((i + 1) * bytes))
        } else {
            0.0
        };
        for j in 0..R {
            let ab = a[j].as_ptr().add(i * Q8_0_ACT);
            let y0 = _mm256_loadu_si256(ab.add(2) as *const __m256i);
            let (y1, da1) = if two {
                let ab1 = ab.add(Q8_0_ACT);
                (
                    _mm256_loadu_si256(ab1.add(2) as *const __m256i),
                    f16_at(ab1),
                )
            } else {
                (_mm256_setzero_si256(), 0.0)
            };
            let y = join(y0, y1);
            // a * sign(w): negate where w < 0 (|w| is 0 where w is).
            let sy = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
            let p = dpbusd::<VNNI>(_mm512_setzero_si512(), ax, sy);
            let d = _mm512_mask_blend_ps(
                0xFF00,
                _mm512_set1_ps(dw0 * f16_at(ab)),
                _mm512_set1_ps(dw1 * da1),
            );
            acc[j] = _mm512_add_ps(acc[j], _mm512_mul_ps(d, _mm512_cvtepi32_ps(p)));
        }
        i += 2;
    }
    let mut out = [0f32; R];
    for j in 0..R {
        out[j] = _mm512_reduce_add_ps(acc[j]);
    }
    out
}

/// Q4_K with Q8_K activations; bit-identical to the scalar kernel.
///
/// # Safety
/// As [`legacy`]: the CPU features; lengths are not trusted.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn q4_k<const R: usize, const VNNI: bool>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let nb = blocks(n, 256, w, 144, &a, Q8_K_ACT);
    let mut sum = [0f32; R];
    let low = _mm512_set1_epi8(0x0F);
    // Shift counts: low nibbles in the lower half, high in the upper.
    let shifts = join(_mm256_setzero_si256(), _mm256_set1_epi16(4));
    for (i, wb) in w.chunks_exact(144).take(nb).enumerate() {
        let (d, dmin, sc, mins) = k4_header(wb);
        let ql = wb.as_ptr().add(16);
        let mut isum = [_mm512_setzero_si512(); R];
        for g in 0..4 {
            let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(ql.add(32 * g) as *const __m256i));
            let lev = _mm512_and_si512(_mm512_srlv_epi16(q, shifts), low);
            let scale = join(
                _mm256_set1_epi16(((sc >> (16 * g)) & 0xff) as i16),
                _mm256_set1_epi16(((sc >> (16 * g + 8)) & 0xff) as i16),
            );
            for j in 0..R {
                let y = a[j].as_ptr().add(i * Q8_K_ACT + 4 + 64 * g);
                let y = _mm512_loadu_si512(y as *const _);
                isum[j] = scaled_dot::<VNNI>(isum[j], lev, y, scale);
            }
        }
        for j in 0..R {
            let ab = a[j].as_ptr().add(i * Q8_K_ACT);
            let da = f32::from_le_bytes([*ab, *ab.add(1), *ab.add(2), *ab.add(3)]);
            let bs = _mm256_loadu_si256(ab.add(260) as *const __m256i);
            let msum = crate::avx2::hsum_epi32(_mm256_madd_epi16(bs, mins));
            let is = _mm512_reduce_add_epi32(isum[j]);
            sum[j] += d * da * is as f32 - dmin * da * msum as f32;
        }
    }
    sum
}

/// Q6_K with Q8_K activations; bit-identical to the scalar kernel.
///
/// # Safety
/// As [`legacy`]: the CPU features; lengths are not trusted.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
unsafe fn q6_k<const R: usize, const VNNI: bool>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let nb = blocks(n, 256, w, 210, &a, Q8_K_ACT);
    let mut sum = [0f32; R];
    let low = _mm512_set1_epi8(0x0F);
    let high = _mm512_set1_epi8(0x30);
    // Runs k = 0, 1 (low nibbles, high bits qh << 4 and << 2) and k = 2, 3
    // (high nibbles, qh >> 0 and >> 2) share a vector, k even in the low half.
    let shl01 = join(_mm256_set1_epi16(4), _mm256_set1_epi16(2));
    let shr23 = join(_mm256_setzero_si256(), _mm256_set1_epi16(2));
    let nib_shift = _mm512_set1_epi16(4);
    for (i, wb) in w.chunks_exact(210).take(nb).enumerate() {
        let p = wb.as_ptr();
        let d = f16_at(p.add(208));
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i));
        let sc512 = _mm512_castsi256_si512(sc16);
        let mut isum = [_mm512_setzero_si512(); R];
        for h in 0..2 {
            let ql = _mm512_loadu_si512(p.add(64 * h) as *const _);
            let qh =
                _mm512_broadcast_i64x4(_mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i));
            let q01 = _mm512_or_si512(
                _mm512_and_si512(ql, low),
                _mm512_and_si512(_mm512_sllv_epi16(qh, shl01), high),
            );
            let q23 = _mm512_or_si512(
                _mm512_and_si512(_mm512_srlv_epi16(ql, nib_shift), low),
                _mm512_and_si512(_mm512_srlv_epi16(qh, shr23), high),
            );
            // Each 128-bit quarter (16 values) takes one scale: quarters of
            // q01 are sub-blocks 8h + 0..4, of q23 8h + 4..8.
            let pick = |base: i16| {
                _mm512_set_epi16(
                    base + 3,
                    base + 3,
                    base + 3,
                    base + 3,
                    base + 3,
                    base + 3,
                    base + 3,
                    base + 3,
                    base + 2,
                    base + 2,
                    base + 2,
                    base + 2,
                    base + 2,
                    base + 2,
                    base + 2,
                    base + 2,
                    base + 1,
                    base + 1,
                    base + 1,
                    base + 1,
                    base + 1,
                    base + 1,
                    base + 1,
                    base + 1,
                    base,
                    base,
                    base,
                    base,
                    base,
                    base,
                    base,
                    base,
                )
            };
            let base = 8 * h as i16;
            let s01 = _mm512_permutexvar_epi16(pick(base), sc512);
            let s23 = _mm512_permutexvar_epi16(pick(base + 4), sc512);
            for j in 0..R {
                let y = a[j].as_ptr().add(i * Q8_K_ACT + 4 + 128 * h);
                let y01 = _mm512_loadu_si512(y as *const _);
                let y23 = _mm512_loadu_si512(y.add(64) as *const _);
                isum[j] = scaled_dot::<VNNI>(isum[j], q01, y01, s01);
                isum[j] = scaled_dot::<VNNI>(isum[j], q23, y23, s23);
            }
        }
        for j in 0..R {
            let ab = a[j].as_ptr().add(i * Q8_K_ACT);
            let da = f32::from_le_bytes([*ab, *ab.add(1), *ab.add(2), *ab.add(3)]);
            let bs = _mm256_loadu_si256(ab.add(260) as *const __m256i);
            let offset = crate::avx2::hsum_epi32(_mm256_madd_epi16(bs, sc16));
            let is = _mm512_reduce_add_epi32(isum[j]) - 32 * offset;
            sum[j] += d * da * is as f32;
        }
    }
    sum
}

/// The safe entry points of one instruction set variant.
macro_rules! variant {
    ($module:ident, $features:literal, $vnni:literal) => {
        mod $module {
            use super::*;

            /// # Safety
            /// The CPU has this set's `target_feature`s. Lengths are not trusted (`blocks`
            /// clamps them).
            #[target_feature(enable = $features)]
            unsafe fn q4_0k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
                legacy::<R, $vnni, false>(n, w, a)
            }
            /// # Safety
            /// The CPU has this set's `target_feature`s. Lengths are not trusted (`blocks`
            /// clamps them).
            #[target_feature(enable = $features)]
            unsafe fn q8_0k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
                legacy::<R, $vnni, true>(n, w, a)
            }
            /// # Safety
            /// The CPU has this set's `target_feature`s. Lengths are not trusted (`blocks`
            /// clamps them).
            #[target_feature(enable = $features)]
            unsafe fn q4_kk<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
                q4_k::<R, $vnni>(n, w, a)
            }
            /// # Safety
            /// The CPU has this set's `target_feature`s. Lengths are not trusted (`blocks`
            /// clamps them).
            #[target_feature(enable = $features)]
            unsafe fn q6_kk<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
                q6_k::<R, $vnni>(n, w, a)
            }
            crate::avx2::wrappers!(q4_0_dot, q4_0_dot4, q4_0k);
            crate::avx2::wrappers!(q8_0_dot, q8_0_dot4, q8_0k);
            crate::avx2::wrappers!(q4_k_dot, q4_k_dot4, q4_kk);
            crate::avx2::wrappers!(q6_k_dot, q6_k_dot4, q6_kk);
        }
    };
}

variant!(plain, "avx512f,avx512bw,avx512vl,fma,f16c", false);
variant!(vnni, "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c", true);
