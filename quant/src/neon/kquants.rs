//! K-quants against Q8_K activations: Q4_K, Q5_K, Q6_K. Each super-block
//! of 256 weights is decoded once to 16 vectors of 16 signed levels, then
//! dotted with each activation row. Integer sums per super-block are exact
//! and the float tail is the scalar kernel's expression, so results are
//! bit-identical to it.

use super::{idot16, nibbles};
use crate::fp16::f16_le;
use crate::kquant_search::get_scale_min_k4;
use crate::simd_shared::{blocks, gemm_rows, wrappers};
use std::arch::aarch64::*;

/// Bytes of a Q8_K activation block: [f32 d][256 x i8][16 x i16 sums of 16].
const ACT: usize = 292;

/// The f32 scale of the Q8_K block at `p`.
///
/// # Safety
/// `p` points at 4 readable bytes (a Q8_K block's scale).
#[inline(always)]
unsafe fn act_d(p: *const u8) -> f32 {
    f32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

/// sum_j m[j] * (bsum[2j] + bsum[2j+1]) over the eight sub-blocks of 32,
/// from the block sums stored after the quants (each pair fits i16:
/// |sum| <= 32 * 128).
///
/// # Safety
/// NEON (every aarch64 CPU); `p` points at a whole Q8_K block (292 bytes).
#[inline(always)]
unsafe fn min_sum(p: *const u8, mins: int16x8_t) -> i32 {
    let s = p.add(4 + 256) as *const i16;
    let pairs = vpaddq_s16(vld1q_s16(s), vld1q_s16(s.add(8)));
    let prod = vaddq_s32(
        vmull_s16(vget_low_s16(pairs), vget_low_s16(mins)),
        vmull_high_s16(pairs, mins),
    );
    vaddvq_s32(prod)
}

/// Shared body of Q4_K and Q5_K: `dec` turns the super-block at its
/// pointer into 16 vectors of levels (sub-block j in vectors 2j, 2j + 1).
/// Header: [fp16 d][fp16 dmin][12 bytes of 6-bit (scale, min) pairs].
///
/// # Safety
/// NEON (every aarch64 CPU); `dec` reads at most `wbytes` bytes from its
/// pointer. Lengths are not trusted: `blocks` clamps `n` to the whole blocks
/// that `w` and every `a[j]` hold.
#[inline(always)]
unsafe fn scale_min_k<const R: usize>(
    n: usize,
    w: &[u8],
    a: [&[u8]; R],
    wbytes: usize,
    dec: impl Fn(*const u8) -> [int8x16_t; 16],
) -> [f32; R] {
    let nb = blocks(n, 256, w, wbytes, &a, ACT);
    let mut sum = [0f32; R];
    for b in 0..nb {
        let p = w.as_ptr().add(b * wbytes);
        let d = f16_le(*p, *p.add(1));
        let dmin = f16_le(*p.add(2), *p.add(3));
        let mut packed = [0u8; 12];
        std::ptr::copy_nonoverlapping(p.add(4), packed.as_mut_ptr(), 12);
        let mut sc = [0i32; 8];
        let mut mn = [0i16; 8];
        for j in 0..8 {
            let (s, m) = get_scale_min_k4(j, &packed);
            sc[j] = s as i32;
            mn[j] = m as i16;
        }
        let mins = vld1q_s16(mn.as_ptr());
        let lv = dec(p);
        for (s, row) in sum.iter_mut().zip(&a) {
            let q = row.as_ptr().add(b * ACT);
            let aq = q.add(4) as *const i8;
            let mut acc = vdupq_n_s32(0);
            for (j, &scj) in sc.iter().enumerate() {
                let part = idot16(vdupq_n_s32(0), lv[2 * j], vld1q_s8(aq.add(32 * j)));
                let part = idot16(part, lv[2 * j + 1], vld1q_s8(aq.add(32 * j + 16)));
                acc = vmlaq_n_s32(acc, part, scj);
            }
            let isum = vaddvq_s32(acc);
            let msum = min_sum(q, mins);
            let da = act_d(q);
            *s += d * da * isum as f32 - dmin * da * msum as f32;
        }
    }
    sum
}

/// Q4_K (144 bytes): header, then 128 bytes of nibbles: per 64 values, the
/// low nibbles of 32 bytes are values 0..32, the high ones 32..64.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `scale_min_k`).
#[target_feature(enable = "neon")]
unsafe fn q4_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    scale_min_k(n, w, a, 144, |p| {
        let mut lv = [vdupq_n_s8(0); 16];
        for g in 0..4 {
            let qs = p.add(16 + 32 * g);
            let (l0, h0) = nibbles(qs);
            let (l1, h1) = nibbles(qs.add(16));
            lv[4 * g] = vreinterpretq_s8_u8(l0);
            lv[4 * g + 1] = vreinterpretq_s8_u8(l1);
            lv[4 * g + 2] = vreinterpretq_s8_u8(h0);
            lv[4 * g + 3] = vreinterpretq_s8_u8(h1);
        }
        lv
    })
}

/// Q5_K (176 bytes): header, 32 bytes qh, 128 bytes of nibbles as Q4_K's;
/// bit 4 of value 64g + k is bit 2g of qh[k], of value 64g + 32 + k bit
/// 2g + 1.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted (see `scale_min_k`).
#[target_feature(enable = "neon")]
unsafe fn q5_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    scale_min_k(n, w, a, 176, |p| {
        let (qh0, qh1) = (vld1q_u8(p.add(16)), vld1q_u8(p.add(32)));
        let five = vdupq_n_u8(0x10);
        let high = |h: uint8x16_t, bit: u8| vandq_u8(vtstq_u8(h, vdupq_n_u8(1 << bit)), five);
        let mut lv = [vdupq_n_s8(0); 16];
        for g in 0..4u8 {
            let qs = p.add(48 + 32 * g as usize);
            let (l0, h0) = nibbles(qs);
            let (l1, h1) = nibbles(qs.add(16));
            let i = 4 * g as usize;
            lv[i] = vreinterpretq_s8_u8(vorrq_u8(l0, high(qh0, 2 * g)));
            lv[i + 1] = vreinterpretq_s8_u8(vorrq_u8(l1, high(qh1, 2 * g)));
            lv[i + 2] = vreinterpretq_s8_u8(vorrq_u8(h0, high(qh0, 2 * g + 1)));
            lv[i + 3] = vreinterpretq_s8_u8(vorrq_u8(h1, high(qh1, 2 * g + 1)));
        }
        lv
    })
}

/// Q6_K (210 bytes): [128 bytes ql][64 bytes qh][16 x i8 scales][fp16 d].
/// Per half of 128 values (ql 64 bytes, qh 32 bytes), value l (0..32) is
/// ql[l] & 15 with qh[l] bits 0-1 on top, l + 32 is ql[l + 32] & 15 with
/// bits 2-3, l + 64 is ql[l] >> 4 with bits 4-5, l + 96 is ql[l + 32] >> 4
/// with bits 6-7; minus 32. Scale i covers values 16i..16i + 16.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted: `blocks` clamps `n` to
/// the whole blocks that `w` and every `a[j]` hold.
#[target_feature(enable = "neon")]
unsafe fn q6_k<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let nb = blocks(n, 256, w, 210, &a, ACT);
    let mut sum = [0f32; R];
    let (m4, m30, m32) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x30), vdupq_n_s8(32));
    for b in 0..nb {
        let p = w.as_ptr().add(b * 210);
        let mut v = [vdupq_n_s8(0); 16];
        for half in 0..2 {
            let ql = p.add(64 * half);
            let qh = p.add(128 + 32 * half);
            let l = [
                vld1q_u8(ql),
                vld1q_u8(ql.add(16)),
                vld1q_u8(ql.add(32)),
                vld1q_u8(ql.add(48)),
            ];
            let h = [vld1q_u8(qh), vld1q_u8(qh.add(16))];
            // Bits 2k..2k+2 of qh moved to bits 4-5.
            let top = |x: uint8x16_t, k: usize| match k {
                0 => vandq_u8(vshlq_n_u8::<4>(x), m30),
                1 => vandq_u8(vshlq_n_u8::<2>(x), m30),
                2 => vandq_u8(x, m30),
                _ => vandq_u8(vshrq_n_u8::<2>(x), m30),
            };
            for i in 0..8 {
                // Vector i of this half: values 16i..16i + 16.
                let (src, k) = (l[i % 4], i / 2);
                let low = if i < 4 {
                    vandq_u8(src, m4)
                } else {
                    vshrq_n_u8::<4>(src)
                };
                let q = vorrq_u8(low, top(h[i % 2], k));
                v[8 * half + i] = vsubq_s8(vreinterpretq_s8_u8(q), m32);
            }
        }
        let sc = p.add(192) as *const i8;
        let d = f16_le(*p.add(208), *p.add(209));
        for (s, row) in sum.iter_mut().zip(&a) {
            let q = row.as_ptr().add(b * ACT);
            let aq = q.add(4) as *const i8;
            let mut acc = vdupq_n_s32(0);
            for (i, &vi) in v.iter().enumerate() {
                let part = idot16(vdupq_n_s32(0), vi, vld1q_s8(aq.add(16 * i)));
                acc = vmlaq_n_s32(acc, part, *sc.add(i) as i32);
            }
            let isum = vaddvq_s32(acc);
            *s += d * act_d(q) * isum as f32;
        }
    }
    sum
}

wrappers!(q4_k_dot, q4_k_dot4, q4_k);
wrappers!(q5_k_dot, q5_k_dot4, q5_k);
wrappers!(q6_k_dot, q6_k_dot4, q6_k);
gemm_rows!(q4_k_gemm, q4_k, 144, ACT, 256);
gemm_rows!(q5_k_gemm, q5_k, 176, ACT, 256);
gemm_rows!(q6_k_gemm, q6_k, 210, ACT, 256);
