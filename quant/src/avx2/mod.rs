//! AVX2 + FMA + F16C kernels (x86-64), chosen at run time by
//! [`crate::dispatch`] only after `SimdPath::Avx2.cpu_has()`.
//!
//! Every kernel is one `#[target_feature]` function generic over `R`, the
//! number of activation rows it dots one weight row with: `R = 1` is the
//! matvec dot, `R = 4` the prefill micro-kernel that decodes each weight
//! block once for four activations. Per activation both do the same
//! operations in the same order, so a matmul gives bit for bit the matvec
//! result.
//!
//! Accuracy against the scalar reference (tests/it/simd.rs):
//! - K-quants: integer sums per super-block are exact and the float
//!   arithmetic per super-block is the reference's, so results are
//!   bit-identical (Q6_K uses the activation block sums, as Q4_K's scalar
//!   kernel does; they must be the ones `quantize_row` writes);
//! - Q4_0, Q4_1, Q5_0, Q5_1 (eight-row tiles, `q4_q5_tile`): exact integer
//!   block sums and, per lane, the scalar reference's f32 expression in its
//!   order, so bit-identical;
//! - Q2_K, Q3_K, IQ4_XS (`lowbit`, and `lowbit_matvec` for the decode
//!   step), IQ3_XXS and IQ3_S (`iq3`), IQ2_XXS, IQ2_XS, IQ2_S (`iq2`),
//!   IQ1_S, IQ1_M, TQ1_0 and TQ2_0 (`iq1_tq`): exact
//!   integer sums per super-block and the scalar reference's f32
//!   expression, so bit-identical;
//! - Q8_0 and IQ4_NL (`signed_rows`, eight rows at a time): exact integer
//!   block sums and, per lane, the scalar reference's f32 expression in
//!   its order, so bit-identical (for activations in -127..=127, see
//!   below);
//! - F32/F16/BF16: the scalar kernel's 8 partial sums are exactly the 8
//!   lanes here (multiply, then add, no FMA), so results are bit-identical.
//!
//! The sign trick (`maddubs(|w|, sign(a, w))`) is exact for activation
//! quants in -127..=127, which is all `quantize_row` produces for Q8_0 and
//! Q8_K; weight bytes may be anything.

pub(crate) mod float;
mod iq1_tq;
mod iq2;
pub(crate) mod iq3;
pub(crate) mod kmatvec;
pub(crate) mod kquants;
pub(crate) mod lowbit;
pub(crate) mod lowbit_matvec;
pub(crate) mod q4_k_tile;
pub(crate) mod q4_q5_tile;
pub(crate) mod quantize;
pub(crate) mod signed_rows;

use crate::{Dot4Fn, DotFn, GemmFn, GgmlType};
use std::arch::x86_64::*;

/// The (matvec dot, four-activation dot) pair for `ty`, if written.
pub(crate) fn kernels(ty: GgmlType) -> Option<(DotFn, Dot4Fn)> {
    use GgmlType as T;
    Some(match ty {
        T::F32 => (float::f32_dot, float::f32_dot4),
        T::F16 => (float::f16_dot, float::f16_dot4),
        T::BF16 => (float::bf16_dot, float::bf16_dot4),
        T::Q4_0 => (q4_q5_tile::q4_0_dot, q4_q5_tile::q4_0_dot4),
        T::Q4_1 => (q4_q5_tile::q4_1_dot, q4_q5_tile::q4_1_dot4),
        T::Q5_0 => (q4_q5_tile::q5_0_dot, q4_q5_tile::q5_0_dot4),
        T::Q5_1 => (q4_q5_tile::q5_1_dot, q4_q5_tile::q5_1_dot4),
        T::Q8_0 => (signed_rows::q8_0_dot, signed_rows::q8_0_dot4),
        T::Q4_K => (kquants::q4_k_dot, kquants::q4_k_dot4),
        T::Q5_K => (kquants::q5_k_dot, kquants::q5_k_dot4),
        T::Q6_K => (kquants::q6_k_dot, kquants::q6_k_dot4),
        T::Q2_K => (lowbit::q2_k_dot, lowbit::q2_k_dot4),
        T::Q3_K => (lowbit::q3_k_dot, lowbit::q3_k_dot4),
        T::IQ4_XS => (lowbit::iq4_xs_dot, lowbit::iq4_xs_dot4),
        T::IQ4_NL => (signed_rows::iq4_nl_dot, signed_rows::iq4_nl_dot4),
        T::IQ3_XXS => (iq3::iq3_xxs_dot, iq3::iq3_xxs_dot4),
        T::IQ3_S => (iq3::iq3_s_dot, iq3::iq3_s_dot4),
        T::IQ2_XXS => (iq2::iq2_xxs_dot, iq2::iq2_xxs_dot4),
        T::IQ2_XS => (iq2::iq2_xs_dot, iq2::iq2_xs_dot4),
        T::IQ2_S => (iq2::iq2_s_dot, iq2::iq2_s_dot4),
        T::IQ1_S => (iq1_tq::iq1_s_dot, iq1_tq::iq1_s_dot4),
        T::IQ1_M => (iq1_tq::iq1_m_dot, iq1_tq::iq1_m_dot4),
        T::TQ1_0 => (iq1_tq::tq1_dot, iq1_tq::tq1_dot4),
        T::TQ2_0 => (iq1_tq::tq2_dot, iq1_tq::tq2_dot4),
        _ => return None,
    })
}

/// The multi-row kernel for `ty`, if written (its `dot`/`dot4` above are
/// built on the same tile, so all three agree bit for bit).
pub(crate) fn gemm(ty: GgmlType) -> Option<GemmFn> {
    match ty {
        GgmlType::F32 => Some(float::f32_gemm),
        GgmlType::F16 => Some(float::f16_gemm),
        GgmlType::BF16 => Some(float::bf16_gemm),
        GgmlType::Q4_0 => Some(q4_q5_tile::q4_0_gemm),
        GgmlType::Q5_0 => Some(q4_q5_tile::q5_0_gemm),
        GgmlType::Q4_1 => Some(q4_q5_tile::q4_1_gemm),
        GgmlType::Q5_1 => Some(q4_q5_tile::q5_1_gemm),
        GgmlType::Q8_0 => Some(signed_rows::q8_0_gemm),
        GgmlType::Q4_K => Some(kquants::q4_k_gemm),
        GgmlType::Q5_K => Some(kquants::q5_k_gemm),
        GgmlType::Q6_K => Some(kquants::q6_k_gemm),
        GgmlType::Q2_K => Some(lowbit::q2_k_gemm),
        GgmlType::Q3_K => Some(lowbit::q3_k_gemm),
        GgmlType::IQ4_XS => Some(lowbit::iq4_xs_gemm),
        GgmlType::IQ4_NL => Some(signed_rows::iq4_nl_gemm),
        GgmlType::IQ3_XXS => Some(iq3::iq3_xxs_gemm),
        GgmlType::IQ3_S => Some(iq3::iq3_s_gemm),
        GgmlType::IQ2_XXS => Some(iq2::iq2_xxs_gemm),
        GgmlType::IQ2_XS => Some(iq2::iq2_xs_gemm),
        GgmlType::IQ2_S => Some(iq2::iq2_s_gemm),
        GgmlType::IQ1_S => Some(iq1_tq::iq1_s_gemm),
        GgmlType::IQ1_M => Some(iq1_tq::iq1_m_gemm),
        GgmlType::TQ1_0 => Some(iq1_tq::tq1_gemm),
        GgmlType::TQ2_0 => Some(iq1_tq::tq2_gemm),
        _ => None,
    }
}

pub(crate) use crate::simd_shared::{blocks, gemm_rows, wrappers};

/// Little-endian fp16 at `p` as f32 (exact, as `crate::fp16::f16_le`).
/// Written as `vmovd` + `vcvtph2ps` by hand: from the intrinsics LLVM
/// loads the half with `vpinsrw` into whatever register it likes (the
/// other lanes being unused), often the accumulator, which chains every
/// block's scale onto the previous block's sum.
///
/// # Safety
/// The CPU has F16C; `p` points at 2 readable bytes.
#[inline]
pub(crate) unsafe fn f16_at(p: *const u8) -> f32 {
    let h = u16::from_le_bytes([*p, *p.add(1)]) as u32;
    let x: __m128;
    std::arch::asm!(
        "vmovd {x}, {h:e}",
        "vcvtph2ps {x}, {x}",
        h = in(reg) h,
        x = out(xmm_reg) x,
        options(pure, nomem, nostack, preserves_flags),
    );
    _mm_cvtss_f32(x)
}

/// Sum of the 8 i32 lanes (wrapping, never overflows for our kernels).
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
    _mm_cvtsi128_si32(s)
}
