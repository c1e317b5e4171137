//! The types of published low-bit files: IQ4_NL (against Q8_0), IQ4_XS,
//! Q3_K and Q2_K (against Q8_K). Each weight block is decoded once to
//! vectors of 16 signed levels (IQ4 through a 16-entry table look-up,
//! `tbl`), then dotted with each activation row; integer sums are exact and
//! the float step is the scalar kernel's expression, so results are
//! bit-identical to it.

use super::{idot16, nibbles};
use crate::fp16::f16_le;
use crate::iq4_nl::KVALUES;
use crate::simd_shared::{blocks, gemm_rows, wrappers};
use std::arch::aarch64::*;

/// Bytes of a Q8_0 / Q8_K activation block.
const ACT0: usize = 34;
const ACTK: usize = 292;

/// The IQ4 codebook as a table for `vqtbl1q_s8`.
///
/// # Safety
/// NEON (every aarch64 CPU).
#[inline(always)]
unsafe fn codebook() -> int8x16_t {
    vld1q_s8(KVALUES.as_ptr())
}

/// The f32 scale of the Q8_K block at `p`.
///
/// # Safety
/// `p` points at 4 readable bytes.
#[inline(always)]
unsafe fn act_d(p: *const u8) -> f32 {
    f32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

/// IQ4_NL (18 bytes): [fp16 d][16 bytes: low nibble = value j, high =
/// j + 16], value = d * KVALUES[q].
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted: `blocks` clamps `n`
/// to the whole blocks that `w` and every `a[j]` hold.
#[target_feature(enable = "neon")]
unsafe fn iq4_nl<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let nb = blocks(n, 32, w, 18, &a, ACT0);
    let tbl = codebook();
    let mut sum = [0f32; R];
    for b in 0..nb {
        let p = w.as_ptr().add(b * 18);
        let (lo, hi) = nibbles(p.add(2));
        let (lo, hi) = (vqtbl1q_s8(tbl, lo), vqtbl1q_s8(tbl, hi));
        let dw = f16_le(*p, *p.add(1));
        for (s, row) in sum.iter_mut().zip(&a) {
            let q = row.as_ptr().add(b * ACT0);
            let da = f16_le(*q, *q.add(1));
            let a0 = vld1q_s8(q.add(2) as *const i8);
            let a1 = vld1q_s8(q.add(18) as *const i8);
            let isum = vaddvq_s32(idot16(idot16(vdupq_n_s32(0), lo, a0), hi, a1));
            *s += isum as f32 * (dw * da);
        }
    }
    sum
}

/// IQ4_XS (136 bytes): [fp16 d][u16 scales_h][4 bytes scales_l][8 x 16
/// bytes of nibbles, low = value j, high = j + 16 of each 32]; 6-bit
/// sub-block scales minus 32.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `iq4_nl`).
#[target_feature(enable = "neon")]
unsafe fn iq4_xs<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let nb = blocks(n, 256, w, 136, &a, ACTK);
    let tbl = codebook();
    let mut sum = [0f32; R];
    for b in 0..nb {
        let p = w.as_ptr().add(b * 136);
        let blk = std::slice::from_raw_parts(p, 136);
        let ls = crate::iq4_xs::scales(blk);
        let mut lv = [vdupq_n_s8(0); 16];
        for ib in 0..8 {
            let (lo, hi) = nibbles(p.add(8 + 16 * ib));
            lv[2 * ib] = vqtbl1q_s8(tbl, lo);
            lv[2 * ib + 1] = vqtbl1q_s8(tbl, hi);
        }
        let d = f16_le(*p, *p.add(1));
        for (s, row) in sum.iter_mut().zip(&a) {
            let q = row.as_ptr().add(b * ACTK);
            let aq = q.add(4) as *const i8;
            let mut acc = vdupq_n_s32(0);
            for (ib, &l) in ls.iter().enumerate() {
                let part = idot16(vdupq_n_s32(0), lv[2 * ib], vld1q_s8(aq.add(32 * ib)));
                let part = idot16(part, lv[2 * ib + 1], vld1q_s8(aq.add(32 * ib + 16)));
                acc = vmlaq_n_s32(acc, part, l);
            }
            *s += d * act_d(q) * vaddvq_s32(acc) as f32;
        }
    }
    sum
}

/// The 2-bit field `j` (0..4) of the 16 bytes at `p`: bits 2j..2j + 2.
///
/// # Safety
/// NEON (every aarch64 CPU); `p` points at 16 readable bytes.
#[inline(always)]
unsafe fn crumbs(p: *const u8, j: usize) -> uint8x16_t {
    let x = vld1q_u8(p);
    let shifted = match j {
        0 => x,
        1 => vshrq_n_u8::<2>(x),
        2 => vshrq_n_u8::<4>(x),
        _ => vshrq_n_u8::<6>(x),
    };
    vandq_u8(shifted, vdupq_n_u8(3))
}

/// Q3_K (110 bytes): [32 bytes hmask][64 bytes of 2-bit lows][12 bytes of
/// sixteen 6-bit scales][fp16 d]. Per 128 values (half h), value 128h +
/// 32j + l has low bits (qs[32h + l] >> 2j) & 3 and high bit hmask[l] >>
/// (4h + j); level = low - 4 where the high bit is clear.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `iq4_nl`).
#[target_feature(enable = "neon")]
unsafe fn q3_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let nb = blocks(n, 256, w, 110, &a, ACTK);
    let four = vdupq_n_u8(4);
    let mut sum = [0f32; R];
    for b in 0..nb {
        let p = w.as_ptr().add(b * 110);
        let blk = std::slice::from_raw_parts(p, 110);
        let sc = crate::q3_k::scales(blk);
        // Vector i: values 16i..16i + 16: half h = i / 8, field j = i % 8 / 2,
        // bytes 16 (i % 2) onwards.
        let mut lv = [vdupq_n_s8(0); 16];
        for (i, v) in lv.iter_mut().enumerate() {
            let (h, j, o) = (i / 8, i % 8 / 2, 16 * (i % 2));
            let low = crumbs(p.add(32 + 32 * h + o), j);
            let set = vtstq_u8(vld1q_u8(p.add(o)), vdupq_n_u8(1 << (4 * h + j)));
            *v = vsubq_s8(
                vreinterpretq_s8_u8(low),
                vreinterpretq_s8_u8(vbicq_u8(four, set)),
            );
        }
        let d = f16_le(*p.add(108), *p.add(109));
        for (s, row) in sum.iter_mut().zip(&a) {
            let q = row.as_ptr().add(b * ACTK);
            let aq = q.add(4) as *const i8;
            let mut acc = vdupq_n_s32(0);
            for (i, &vi) in lv.iter().enumerate() {
                let part = idot16(vdupq_n_s32(0), vi, vld1q_s8(aq.add(16 * i)));
                acc = vmlaq_n_s32(acc, part, sc[i] as i32);
            }
            *s += d * act_d(q) * vaddvq_s32(acc) as f32;
        }
    }
    sum
}

/// Q2_K (84 bytes): [16 scale bytes: low nibble scale, high nibble min,
/// per 16 values][64 bytes of 2-bit levels, laid out as Q3_K's lows][fp16
/// d][fp16 dmin]; value = d * sc * q - dmin * m.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `iq4_nl`).
#[target_feature(enable = "neon")]
unsafe fn q2_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let nb = blocks(n, 256, w, 84, &a, ACTK);
    let mut sum = [0f32; R];
    for b in 0..nb {
        let p = w.as_ptr().add(b * 84);
        let scb = vld1q_u8(p);
        let mins = vreinterpretq_s8_u8(vshrq_n_u8::<4>(scb));
        let (m0, m1) = (vmovl_s8(vget_low_s8(mins)), vmovl_high_s8(mins));
        let mut sc = [0u8; 16];
        vst1q_u8(sc.as_mut_ptr(), vandq_u8(scb, vdupq_n_u8(0x0F)));
        let mut lv = [vdupq_n_s8(0); 16];
        for (i, v) in lv.iter_mut().enumerate() {
            let (h, j, o) = (i / 8, i % 8 / 2, 16 * (i % 2));
            *v = vreinterpretq_s8_u8(crumbs(p.add(16 + 32 * h + o), j));
        }
        let d = f16_le(*p.add(80), *p.add(81));
        let dmin = f16_le(*p.add(82), *p.add(83));
        for (s, row) in sum.iter_mut().zip(&a) {
            let q = row.as_ptr().add(b * ACTK);
            let aq = q.add(4) as *const i8;
            let mut acc = vdupq_n_s32(0);
            for (i, &vi) in lv.iter().enumerate() {
                let part = idot16(vdupq_n_s32(0), vi, vld1q_s8(aq.add(16 * i)));
                acc = vmlaq_n_s32(acc, part, sc[i] as i32);
            }
            let bs = q.add(4 + 256) as *const i16;
            let (b0, b1) = (vld1q_s16(bs), vld1q_s16(bs.add(8)));
            let mprod = vaddq_s32(
                vaddq_s32(
                    vmull_s16(vget_low_s16(m0), vget_low_s16(b0)),
                    vmull_high_s16(m0, b0),
                ),
                vaddq_s32(
                    vmull_s16(vget_low_s16(m1), vget_low_s16(b1)),
                    vmull_high_s16(m1, b1),
                ),
            );
            let isum = vaddvq_s32(acc);
            let msum = vaddvq_s32(mprod);
            let da = act_d(q);
            *s += d * da * isum as f32 - dmin * da * msum as f32;
        }
    }
    sum
}

wrappers!(iq4_nl_dot, iq4_nl_dot4, iq4_nl);
wrappers!(iq4_xs_dot, iq4_xs_dot4, iq4_xs);
wrappers!(q3_k_dot, q3_k_dot4, q3_k);
wrappers!(q2_k_dot, q2_k_dot4, q2_k);
gemm_rows!(iq4_nl_gemm, iq4_nl, 18, ACT0, 32);
gemm_rows!(iq4_xs_gemm, iq4_xs, 136, ACTK, 256);
gemm_rows!(q3_k_gemm, q3_k, 110, ACTK, 256);
gemm_rows!(q2_k_gemm, q2_k, 84, ACTK, 256);
