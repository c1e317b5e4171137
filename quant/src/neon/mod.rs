//! NEON kernels (aarch64), chosen at run time by [`crate::dispatch`] after
//! `SimdPath::Neon.cpu_has()` (NEON is part of every aarch64 CPU). Written
//! with the base ARMv8.0 instruction set only, so they run on any aarch64
//! machine: no `sdot` (ARMv8.2 dotprod), no fp16 arithmetic.
//!
//! Kernels for every supported weight type except Q8_K: F32, F16, BF16
//! (`float`); Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (`legacy`); Q4_K, Q5_K, Q6_K
//! (`kquants`); IQ4_NL, IQ4_XS, Q3_K, Q2_K (`lowbit`); IQ3_XXS, IQ3_S
//! (`iq3`); IQ2_XXS, IQ2_XS, IQ2_S (`iq2`); IQ1_S, IQ1_M, TQ1_0, TQ2_0
//! (`iq1_tq`). Each quantized type has a dot, a four-activation dot and a
//! matmul (`gemm`). The grid types (IQ1, IQ2, IQ3) look their grid entries
//! up by scalar loads, two or four per vector of 16 levels.
//!
//! As in the AVX2 path, every kernel is one function generic over `R`, the
//! number of activation rows it dots one weight row with (`R = 1` the
//! matvec dot, `R = 4` and `R = 8` the prefill forms that decode each
//! weight block once for four or eight activations), doing the same
//! operations per activation for every `R`.
//!
//! Accuracy: bit-identical to the scalar reference for every type, also
//! on raw weight and activation bytes (tests/it/simd.rs checks this where it
//! runs on aarch64):
//! - quantized types: each block's integer sum is exact (products widened
//!   to i16 by `smull` and added pairwise into i32 by `sadalp`, which cannot
//!   overflow for any bytes), and the float arithmetic per block or
//!   super-block is the scalar kernel's expression, in its order;
//! - F32/F16/BF16: the scalar kernel's eight partial sums are the lanes of
//!   two vectors (multiply, then add: no fused multiply-add), with the same
//!   64-value chunks, tail and final order; halves are widened by the
//!   scalar's own branch-free formula, lane by lane.
//!
//! Tested under qemu-aarch64 on an x86-64 host (see .ci/run); no figures
//! on real ARM hardware yet.

mod float;
mod iq1_tq;
mod iq2;
mod iq3;
mod kquants;
mod legacy;
mod lowbit;
pub(crate) mod quantize;

use crate::{Dot4Fn, DotFn, GemmFn, GgmlType};
use std::arch::aarch64::*;

/// The (matvec dot, four-activation dot) pair for `ty`, if written.
pub(crate) fn kernels(ty: GgmlType) -> Option<(DotFn, Dot4Fn)> {
    use GgmlType as T;
    Some(match ty {
        T::F32 => (float::f32_dot, float::f32_dot4),
        T::F16 => (float::f16_dot, float::f16_dot4),
        T::BF16 => (float::bf16_dot, float::bf16_dot4),
        T::Q4_0 => (legacy::q4_0_dot, legacy::q4_0_dot4),
        T::Q4_1 => (legacy::q4_1_dot, legacy::q4_1_dot4),
        T::Q5_0 => (legacy::q5_0_dot, legacy::q5_0_dot4),
        T::Q5_1 => (legacy::q5_1_dot, legacy::q5_1_dot4),
        T::Q8_0 => (legacy::q8_0_dot, legacy::q8_0_dot4),
        T::Q4_K => (kquants::q4_k_dot, kquants::q4_k_dot4),
        T::Q5_K => (kquants::q5_k_dot, kquants::q5_k_dot4),
        T::Q6_K => (kquants::q6_k_dot, kquants::q6_k_dot4),
        T::IQ4_NL => (lowbit::iq4_nl_dot, lowbit::iq4_nl_dot4),
        T::IQ4_XS => (lowbit::iq4_xs_dot, lowbit::iq4_xs_dot4),
        T::Q3_K => (lowbit::q3_k_dot, lowbit::q3_k_dot4),
        T::Q2_K => (lowbit::q2_k_dot, lowbit::q2_k_dot4),
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

/// The matmul for `ty`: each weight row against eight activation rows at a
/// time (each block decoded once per eight), in L2-sized row blocks; the
/// same kernels as `kernels`, so the same bits.
pub(crate) fn gemm(ty: GgmlType) -> Option<GemmFn> {
    use GgmlType as T;
    Some(match ty {
        T::Q4_0 => legacy::q4_0_gemm,
        T::Q4_1 => legacy::q4_1_gemm,
        T::Q5_0 => legacy::q5_0_gemm,
        T::Q5_1 => legacy::q5_1_gemm,
        T::Q8_0 => legacy::q8_0_gemm,
        T::Q4_K => kquants::q4_k_gemm,
        T::Q5_K => kquants::q5_k_gemm,
        T::Q6_K => kquants::q6_k_gemm,
        T::IQ4_NL => lowbit::iq4_nl_gemm,
        T::IQ4_XS => lowbit::iq4_xs_gemm,
        T::Q3_K => lowbit::q3_k_gemm,
        T::Q2_K => lowbit::q2_k_gemm,
        T::IQ3_XXS => iq3::iq3_xxs_gemm,
        T::IQ3_S => iq3::iq3_s_gemm,
        T::IQ2_XXS => iq2::iq2_xxs_gemm,
        T::IQ2_XS => iq2::iq2_xs_gemm,
        T::IQ2_S => iq2::iq2_s_gemm,
        T::IQ1_S => iq1_tq::iq1_s_gemm,
        T::IQ1_M => iq1_tq::iq1_m_gemm,
        T::TQ1_0 => iq1_tq::tq1_gemm,
        T::TQ2_0 => iq1_tq::tq2_gemm,
        _ => return None,
    })
}

/// `acc` plus the products `w[i] * a[i]` of 16 signed bytes, added
/// pairwise into four i32 lanes. Exact for every input: each product is
/// widened to i16 (|p| <= 2^14) and each pair is added in i32.
///
/// # Safety
/// NEON (every aarch64 CPU).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn idot16(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(w), vget_low_s8(a));
    let hi = vmull_high_s8(w, a);
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

/// 16 bytes, 0x10 where bit j of the 16-bit little-endian mask at `p` is
/// set (byte j for bit j): the fifth bit of Q5_0/Q5_1 levels.
///
/// # Safety
/// NEON (every aarch64 CPU); `p` points at 2 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn bit4_of_16(p: *const u8) -> uint8x16_t {
    let spread = vcombine_u8(vdup_n_u8(*p), vdup_n_u8(*p.add(1)));
    let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    vandq_u8(vtstq_u8(spread, bit), vdupq_n_u8(0x10))
}

/// Low and high nibbles of the 16 bytes at `p`, as two vectors.
///
/// # Safety
/// NEON (every aarch64 CPU); `p` points at 16 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    let x = vld1q_u8(p);
    (vandq_u8(x, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(x))
}
