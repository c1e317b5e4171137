//! The 32-value types against Q8_0 activations: Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0. Each weight block is decoded to 32 signed levels (two vectors of
//! 16: values 0..16 and 16..32) once, then dotted with each activation
//! block; the float step is the scalar kernel's.

use super::{bit4_of_16, idot16, nibbles};
use crate::fp16::f16_le;
use crate::simd_shared::{blocks, gemm_rows, wrappers};
use std::arch::aarch64::*;

/// Bytes of a Q8_0 activation block.
const ACT: usize = 34;

/// One decoded weight block: levels 0..16 and 16..32 as i8, scale `d`
/// and (Q4_1/Q5_1) min `m`.
struct Block {
    lo: int8x16_t,
    hi: int8x16_t,
    d: f32,
    m: f32,
}

/// Shared loop: `dec` decodes the weight block at its pointer; `MIN`
/// types add `m * (da * sum(a))` as the scalar `q4_1::dot_q8_0` does.
///
/// # Safety
/// NEON (every aarch64 CPU); `dec` reads at most `wbytes` bytes from its
/// pointer. Lengths are not trusted: `blocks` clamps `n` to the whole blocks
/// that `w` and every `a[j]` hold.
#[inline(always)]
unsafe fn dot32<const R: usize, const MIN: bool>(
    n: usize,
    w: &[u8],
    a: [&[u8]; R],
    wbytes: usize,
    dec: impl Fn(*const u8) -> Block,
) -> [f32; R] {
    let nb = blocks(n, 32, w, wbytes, &a, ACT);
    let mut sum = [0f32; R];
    for b in 0..nb {
        let blk = dec(w.as_ptr().add(b * wbytes));
        for (s, row) in sum.iter_mut().zip(&a) {
            // [fp16 d][32 x i8]
            let p = row.as_ptr().add(b * ACT);
            let da = f16_le(*p, *p.add(1));
            let a0 = vld1q_s8(p.add(2) as *const i8);
            let a1 = vld1q_s8(p.add(18) as *const i8);
            let acc = idot16(idot16(vdupq_n_s32(0), blk.lo, a0), blk.hi, a1);
            let isum = vaddvq_s32(acc);
            if MIN {
                let asum = vaddlvq_s8(a0) as i32 + vaddlvq_s8(a1) as i32;
                *s += isum as f32 * (blk.d * da) + blk.m * (da * asum as f32);
            } else {
                *s += isum as f32 * (blk.d * da);
            }
        }
    }
    sum
}

/// Q4_0 (18 bytes): [fp16 d][16 bytes: low nibble = value j, high = j + 16];
/// value = (q - 8) * d.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `dot32`).
#[target_feature(enable = "neon")]
unsafe fn q4_0<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot32::<R, false>(n, w, a, 18, |p| {
        let (lo, hi) = nibbles(p.add(2));
        let eight = vdupq_n_s8(8);
        Block {
            lo: vsubq_s8(vreinterpretq_s8_u8(lo), eight),
            hi: vsubq_s8(vreinterpretq_s8_u8(hi), eight),
            d: f16_le(*p, *p.add(1)),
            m: 0.0,
        }
    })
}

/// Q4_1 (20 bytes): [fp16 d][fp16 m][16 bytes of nibbles]; value = q * d + m.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `dot32`).
#[target_feature(enable = "neon")]
unsafe fn q4_1<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot32::<R, true>(n, w, a, 20, |p| {
        let (lo, hi) = nibbles(p.add(4));
        Block {
            lo: vreinterpretq_s8_u8(lo),
            hi: vreinterpretq_s8_u8(hi),
            d: f16_le(*p, *p.add(1)),
            m: f16_le(*p.add(2), *p.add(3)),
        }
    })
}

/// The five-bit levels 0..=31 of a Q5 block: nibbles at `qs`, bit 4 of
/// value j from bit j of the little-endian u32 at `qh`.
///
/// # Safety
/// NEON (every aarch64 CPU); `qh` points at 4 and `qs` at 16 readable bytes.
#[inline(always)]
unsafe fn levels5(qh: *const u8, qs: *const u8) -> (uint8x16_t, uint8x16_t) {
    let (lo, hi) = nibbles(qs);
    (
        vorrq_u8(lo, bit4_of_16(qh)),
        vorrq_u8(hi, bit4_of_16(qh.add(2))),
    )
}

/// Q5_0 (22 bytes): [fp16 d][u32 qh][16 bytes of nibbles]; value = (q - 16) * d.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `dot32`).
#[target_feature(enable = "neon")]
unsafe fn q5_0<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot32::<R, false>(n, w, a, 22, |p| {
        let (lo, hi) = levels5(p.add(2), p.add(6));
        let sixteen = vdupq_n_s8(16);
        Block {
            lo: vsubq_s8(vreinterpretq_s8_u8(lo), sixteen),
            hi: vsubq_s8(vreinterpretq_s8_u8(hi), sixteen),
            d: f16_le(*p, *p.add(1)),
            m: 0.0,
        }
    })
}

/// Q5_1 (24 bytes): [fp16 d][fp16 m][u32 qh][16 bytes of nibbles];
/// value = q * d + m.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `dot32`).
#[target_feature(enable = "neon")]
unsafe fn q5_1<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot32::<R, true>(n, w, a, 24, |p| {
        let (lo, hi) = levels5(p.add(4), p.add(8));
        Block {
            lo: vreinterpretq_s8_u8(lo),
            hi: vreinterpretq_s8_u8(hi),
            d: f16_le(*p, *p.add(1)),
            m: f16_le(*p.add(2), *p.add(3)),
        }
    })
}

/// Q8_0 (34 bytes): [fp16 d][32 x i8]; value = q * d.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `dot32`).
#[target_feature(enable = "neon")]
unsafe fn q8_0<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    dot32::<R, false>(n, w, a, 34, |p| Block {
        lo: vld1q_s8(p.add(2) as *const i8),
        hi: vld1q_s8(p.add(18) as *const i8),
        d: f16_le(*p, *p.add(1)),
        m: 0.0,
    })
}

wrappers!(q4_0_dot, q4_0_dot4, q4_0);
wrappers!(q4_1_dot, q4_1_dot4, q4_1);
wrappers!(q5_0_dot, q5_0_dot4, q5_0);
wrappers!(q5_1_dot, q5_1_dot4, q5_1);
wrappers!(q8_0_dot, q8_0_dot4, q8_0);
gemm_rows!(q4_0_gemm, q4_0, 18, ACT, 32);
gemm_rows!(q4_1_gemm, q4_1, 20, ACT, 32);
gemm_rows!(q5_0_gemm, q5_0, 22, ACT, 32);
gemm_rows!(q5_1_gemm, q5_1, 24, ACT, 32);
gemm_rows!(q8_0_gemm, q8_0, 34, ACT, 32);
