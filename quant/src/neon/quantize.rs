//! Q8_0 and Q8_K activation quantization on NEON: the same bytes as the
//! scalar references ([`crate::q8_0::quantize_scalar`],
//! [`crate::q8_k::quantize_scalar`]), four lanes at a time.
//!
//! Q8_0 rounds half away from zero (`roundf`), which is `fcvtas`
//! (`vcvtaq_s32_f32`); Q8_K's `nearest_int` is round-half-even for |y| <
//! 2^22 (here |y| <= 127), which is `fcvtns` (`vcvtnq_s32_f32`). The scale
//! arithmetic is the reference's, in scalar f32. Blocks holding an infinity
//! or a NaN, all-zero Q8_K blocks and blocks whose inverse scale overflows
//! go to the scalar code, which owns those edge cases.

use std::arch::aarch64::*;

use crate::fp16::f32_to_f16;

/// Sixteen i32 lanes (four vectors) narrowed to 16 i8, saturating.
///
/// # Safety
/// NEON (every aarch64 CPU).
#[inline(always)]
unsafe fn narrow16(q: [int32x4_t; 4]) -> int8x16_t {
    let lo = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
    let hi = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
    vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi))
}

/// Quantizes whole 32-value blocks of `src` into Q8_0 `dst` (34 bytes each).
///
/// # Safety
/// NEON (every aarch64 CPU).
#[target_feature(enable = "neon")]
pub(crate) unsafe fn quantize_q8_0(src: &[f32], dst: &mut [u8]) {
    use crate::q8_0::{BLOCK_BYTES, QK};
    let inf = vdupq_n_f32(f32::INFINITY);
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let p = x.as_ptr();
        let v: [float32x4_t; 8] = std::array::from_fn(|i| vld1q_f32(p.add(4 * i)));
        let mut m = vdupq_n_f32(0.0);
        let mut fin = vdupq_n_u32(u32::MAX);
        for vi in v {
            let a = vabsq_f32(vi);
            m = vmaxq_f32(m, a);
            fin = vandq_u32(fin, vcltq_f32(a, inf));
        }
        if vminvq_u32(fin) == 0 {
            crate::q8_0::quantize_scalar(x, blk);
            continue;
        }
        let amax = vmaxvq_f32(m);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        if !id.is_finite() {
            crate::q8_0::quantize_scalar(x, blk);
            continue;
        }
        let q: [int32x4_t; 8] = std::array::from_fn(|i| vcvtaq_s32_f32(vmulq_n_f32(v[i], id)));
        let (head, qs) = blk.split_at_mut(2);
        head.copy_from_slice(&f32_to_f16(d).to_le_bytes());
        let out = qs.as_mut_ptr() as *mut i8;
        vst1q_s8(out, narrow16([q[0], q[1], q[2], q[3]]));
        vst1q_s8(out.add(16), narrow16([q[4], q[5], q[6], q[7]]));
    }
}

/// Quantizes whole 256-value blocks of `src` into Q8_K `dst` (292 bytes
/// each): iscale = -127 / (the first value of largest magnitude, with its
/// sign), q = min(127, round-half-even(iscale * x)), then the 16 sums.
///
/// # Safety
/// NEON (every aarch64 CPU).
#[target_feature(enable = "neon")]
pub(crate) unsafe fn quantize_q8_k(src: &[f32], dst: &mut [u8]) {
    use crate::q8_k::{BLOCK_BYTES, QK};
    let inf = vdupq_n_f32(f32::INFINITY);
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let p = x.as_ptr();
        let mut m = vdupq_n_f32(0.0);
        let mut fin = vdupq_n_u32(u32::MAX);
        for k in 0..QK / 4 {
            let a = vabsq_f32(vld1q_f32(p.add(4 * k)));
            m = vmaxq_f32(m, a);
            fin = vandq_u32(fin, vcltq_f32(a, inf));
        }
        let amax = vmaxvq_f32(m);
        if vminvq_u32(fin) == 0 || amax == 0.0 {
            crate::q8_k::quantize_scalar(x, blk);
            continue;
        }
        // The reference keeps the first value of largest magnitude.
        let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        if !iscale.is_finite() {
            crate::q8_k::quantize_scalar(x, blk);
            continue;
        }
        let cap = vdupq_n_s32(127);
        let (head, rest) = blk.split_at_mut(4);
        let (qs, bsums) = rest.split_at_mut(QK);
        for (g, s) in bsums.chunks_exact_mut(2).enumerate() {
            // 16 values: four vectors of four i32 quants.
            let q: [int32x4_t; 4] = std::array::from_fn(|i| {
                let y = vmulq_n_f32(vld1q_f32(p.add(16 * g + 4 * i)), iscale);
                vminq_s32(vcvtnq_s32_f32(y), cap)
            });
            let sum = vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3])));
            s.copy_from_slice(&(sum as i16).to_le_bytes());
            vst1q_s8(qs.as_mut_ptr().add(16 * g) as *mut i8, narrow16(q));
        }
        head.copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
