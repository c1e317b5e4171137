//! NEON dots of IQ1_S, IQ1_M (layouts in `crate::iq1`) and the ternary
//! TQ1_0, TQ2_0 (`crate::tq`) with Q8_K activations. Each super-block is
//! decoded once into 16 vectors of 16 signed levels shared by the `R`
//! activation rows; every integer sum is exact (`idot16`) and enters the
//! scalar reference's f32 expression in its order, so the results are
//! bit-identical to the scalar dots.
//!
//! - IQ1: the grid's levels (-1, 0, 1) two entries per vector, dotted as
//!   the IQ2/IQ3 kernels do (`iq3::scaled_dot`). The delta term's integer
//!   sum: for IQ1_S (one delta sign per 32 values) the Q8_K block sums,
//!   paired per 32 values, against the signed multipliers; for IQ1_M (a
//!   sign per 8 values) a second `scaled_dot` of +-1 vectors.
//! - TQ2_0: each 2-bit code minus one. TQ1_0: trit n of a byte q is
//!   `(q 3^n mod 256) * 3 >> 8`, which is 0 up to 85, 1 up to 170 and 2
//!   above: two unsigned compares on `q * 3^n` (wrapping byte multiplies).
//!   The values t - 1 then dot with the activations directly.

use super::idot16;
use super::iq3::{act_d, block, pair64, scaled_dot, ACT, ACT_QS};
use crate::fp16::{f16_le, f16_to_f32};
use crate::iq1_grid::IQ1S_GRID;
use crate::simd_shared::{blocks, gemm_rows, wrappers};
use std::arch::aarch64::*;

/// Offset of the 16 i16 block sums in a Q8_K block.
const ACT_BSUMS: usize = 260;
const DELTA: f32 = 0.125;

/// Two IQ1 grid entries (eight levels -1, 0, 1 each), by 11-bit index.
///
/// # Safety
/// NEON (every aarch64 CPU).
#[inline(always)]
unsafe fn grid2(i0: usize, i1: usize) -> int8x16_t {
    let g = |i: usize| IQ1S_GRID[i & (IQ1S_GRID.len() - 1)];
    vreinterpretq_s8_u8(pair64(g(i0), g(i1)))
}

/// IQ1_S (50 bytes): fp16 d, 32 low index bytes, then per 32 values a u16
/// of three high index bits per grid entry (bits 3l..3l + 3), s in bits
/// 12..15 and the delta's sign in bit 15.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted: [`blocks`] clamps `n`
/// to the whole blocks that `w` and every `a[j]` hold.
#[target_feature(enable = "neon")]
unsafe fn iq1_s<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 50;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let mut sum = [0f32; R];
    for b in 0..nb {
        let wb = block::<BYTES>(w, b);
        let mut lv = [vdupq_n_s8(0); 16];
        let mut mul = [0i32; 8];
        let mut signed = [0i16; 8];
        for ib in 0..8 {
            let qh = u16::from_le_bytes([wb[34 + 2 * ib], wb[35 + 2 * ib]]) as usize;
            let ls = 2 * ((qh >> 12) & 7) as i32 + 1;
            mul[ib] = ls;
            let sl = if qh & 0x8000 != 0 { -ls } else { ls };
            signed[ib] = sl as i16;
            let idx = |l: usize| wb[2 + 4 * ib + l] as usize | ((qh >> (3 * l)) & 7) << 8;
            lv[2 * ib] = grid2(idx(0), idx(1));
            lv[2 * ib + 1] = grid2(idx(2), idx(3));
        }
        let signed = vld1q_s16(signed.as_ptr());
        let d = f16_le(wb[0], wb[1]);
        for (s, row) in sum.iter_mut().zip(&a) {
            let q = row.as_ptr().add(b * ACT);
            let s1 = scaled_dot(&lv, &mul, q.add(ACT_QS) as *const i8);
            // The activation sum of each 32 values (two block sums of 16,
            // |sum| <= 4096) times its signed multiplier.
            let bs = q.add(ACT_BSUMS);
            let b0 = vreinterpretq_s16_u8(vld1q_u8(bs));
            let b1 = vreinterpretq_s16_u8(vld1q_u8(bs.add(16)));
            let pairs = vpaddq_s16(b0, b1);
            let prod = vaddq_s32(
                vmull_s16(vget_low_s16(pairs), vget_low_s16(signed)),
                vmull_high_s16(pairs, signed),
            );
            let s2 = vaddvq_s32(prod);
            *s += d * act_d(q) * (s1 as f32 + DELTA * s2 as f32);
        }
    }
    sum
}

/// IQ1_M (56 bytes): 32 low index bytes, a nibble per grid entry (three
/// high index bits, the delta's sign in bit 3), then four u16 holding two
/// 3-bit s per 32 values (first and last 16) and the fp16 d in their top
/// nibbles.
///
/// # Safety
/// As [`iq1_s`].
#[target_feature(enable = "neon")]
unsafe fn iq1_m<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 56;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let mut sum = [0f32; R];
    let (plus, minus) = (0x0101_0101_0101_0101u64, u64::MAX);
    for b in 0..nb {
        let wb = block::<BYTES>(w, b);
        let sc: [u16; 4] =
            std::array::from_fn(|k| u16::from_le_bytes([wb[48 + 2 * k], wb[49 + 2 * k]]));
        let dbits =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        let d = f16_to_f32(dbits);
        let mut lv = [vdupq_n_s8(0); 16];
        let mut sv = [vdupq_n_s8(0); 16];
        let mut mul = [0i32; 16];
        for (i, m) in mul.iter_mut().enumerate() {
            // Vector i: grid entries 2i, 2i + 1 (nibbles of byte 32 + i);
            // its s at bits 3i % 12 of u16 i / 4.
            *m = 2 * ((sc[i / 4] >> (3 * (i % 4))) & 7) as i32 + 1;
            let h = wb[32 + i] as usize;
            let (n0, n1) = (h & 0xf, h >> 4);
            lv[i] = grid2(
                wb[2 * i] as usize | (n0 & 7) << 8,
                wb[2 * i + 1] as usize | (n1 & 7) << 8,
            );
            let sign = |nib: usize| if nib & 8 != 0 { minus } else { plus };
            sv[i] = vreinterpretq_s8_u8(pair64(sign(n0), sign(n1)));
        }
        for (s, row) in sum.iter_mut().zip(&a) {
            let q = row.as_ptr().add(b * ACT);
            let aq = q.add(ACT_QS) as *const i8;
            let s1 = scaled_dot(&lv, &mul, aq);
            let s2 = scaled_dot(&sv, &mul, aq);
            *s += d * act_d(q) * (s1 as f32 + DELTA * s2 as f32);
        }
    }
    sum
}

/// The integer dot of 256 values (-1..=2) with the Q8_K quants at `aq`.
///
/// # Safety
/// NEON (every aarch64 CPU); `aq` points at 256 readable bytes.
#[inline(always)]
unsafe fn plain_dot(lv: &[int8x16_t; 16], aq: *const i8) -> i32 {
    // Two chains of independent adds; each lane stays far inside i32.
    let (mut x, mut y) = (vdupq_n_s32(0), vdupq_n_s32(0));
    for i in 0..8 {
        x = idot16(x, lv[2 * i], vld1q_s8(aq.add(32 * i)));
        y = idot16(y, lv[2 * i + 1], vld1q_s8(aq.add(32 * i + 16)));
    }
    vaddvq_s32(vaddq_s32(x, y))
}

/// TQ2_0 (66 bytes): 64 bytes of 2-bit codes (value 128h + 32l + m is bits
/// 2l..2l + 2 of byte 32h + m, minus one), then the fp16 d.
///
/// # Safety
/// As [`iq1_s`].
#[target_feature(enable = "neon")]
unsafe fn tq2<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 66;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let mut sum = [0f32; R];
    let (three, one) = (vdupq_n_u8(3), vdupq_n_s8(1));
    for b in 0..nb {
        let wb = block::<BYTES>(w, b);
        let mut lv = [vdupq_n_s8(0); 16];
        for h in 0..2 {
            for half in 0..2 {
                let x = vld1q_u8(wb.as_ptr().add(32 * h + 16 * half));
                let codes = [
                    x,
                    vshrq_n_u8::<2>(x),
                    vshrq_n_u8::<4>(x),
                    vshrq_n_u8::<6>(x),
                ];
                for (l, c) in codes.into_iter().enumerate() {
                    let t = vreinterpretq_s8_u8(vandq_u8(c, three));
                    lv[8 * h + 2 * l + half] = vsubq_s8(t, one);
                }
            }
        }
        let dw = f16_le(wb[64], wb[65]);
        for (s, row) in sum.iter_mut().zip(&a) {
            let q = row.as_ptr().add(b * ACT);
            let isum = plain_dot(&lv, q.add(ACT_QS) as *const i8);
            *s += isum as f32 * (act_d(q) * dw);
        }
    }
    sum
}

/// The values t - 1 (-1, 0, 1) of the leading trits t of the bytes `q`:
/// t = (q * 3) >> 8 is 1 from 86 and 2 from 171.
///
/// # Safety
/// NEON (every aarch64 CPU).
#[inline(always)]
unsafe fn trit_values(q: uint8x16_t) -> int8x16_t {
    let ge86 = vreinterpretq_s8_u8(vcgtq_u8(q, vdupq_n_u8(85)));
    let ge171 = vreinterpretq_s8_u8(vcgtq_u8(q, vdupq_n_u8(170)));
    // The masks are -1 where set: -1 - m86 - m171 = t - 1.
    vsubq_s8(vsubq_s8(vdupq_n_s8(-1), ge86), ge171)
}

/// TQ1_0 (54 bytes): 48 bytes of five trits, 4 bytes of four, the fp16 d.
/// Trit n of byte m (m < 32) is value 32n + m, of byte 32 + m (m < 16)
/// value 160 + 16n + m, of byte 48 + j (j < 4) value 240 + 4n + j.
///
/// # Safety
/// As [`iq1_s`].
#[target_feature(enable = "neon")]
unsafe fn tq1<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 54;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let mut sum = [0f32; R];
    let three = vdupq_n_u8(3);
    // Lanes 4n + j: byte j of the last four times 3^n.
    let tail_pow = vreinterpretq_u8_u32(vld1q_u32(
        [0x0101_0101, 0x0303_0303, 0x0909_0909, 0x1b1b_1b1b].as_ptr(),
    ));
    for b in 0..nb {
        let wb = block::<BYTES>(w, b);
        let p = wb.as_ptr();
        let mut lv = [vdupq_n_s8(0); 16];
        let (mut x0, mut x1, mut x2) = (vld1q_u8(p), vld1q_u8(p.add(16)), vld1q_u8(p.add(32)));
        for k in 0..5 {
            lv[2 * k] = trit_values(x0);
            lv[2 * k + 1] = trit_values(x1);
            lv[10 + k] = trit_values(x2);
            x0 = vmulq_u8(x0, three);
            x1 = vmulq_u8(x1, three);
            x2 = vmulq_u8(x2, three);
        }
        let last = u32::from_le_bytes([wb[48], wb[49], wb[50], wb[51]]);
        lv[15] = trit_values(vmulq_u8(vreinterpretq_u8_u32(vdupq_n_u32(last)), tail_pow));
        let dw = f16_le(wb[52], wb[53]);
        for (s, row) in sum.iter_mut().zip(&a) {
            let q = row.as_ptr().add(b * ACT);
            let isum = plain_dot(&lv, q.add(ACT_QS) as *const i8);
            *s += isum as f32 * (dw * act_d(q));
        }
    }
    sum
}

wrappers!(iq1_s_dot, iq1_s_dot4, iq1_s);
wrappers!(iq1_m_dot, iq1_m_dot4, iq1_m);
wrappers!(tq1_dot, tq1_dot4, tq1);
wrappers!(tq2_dot, tq2_dot4, tq2);
gemm_rows!(iq1_s_gemm, iq1_s, 50, ACT, 256);
gemm_rows!(iq1_m_gemm, iq1_m, 56, ACT, 256);
gemm_rows!(tq1_gemm, tq1, 54, ACT, 256);
gemm_rows!(tq2_gemm, tq2, 66, ACT, 256);
