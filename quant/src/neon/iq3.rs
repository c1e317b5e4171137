//! NEON dots of IQ3_XXS and IQ3_S with Q8_K activations (layouts in
//! `crate::iq3`), and the pieces the IQ2 and IQ1 kernels share with them.
//!
//! A super-block is decoded once into 16 vectors of 16 signed levels: the
//! grid entries by scalar loads (four per vector), the sign bits spread to
//! byte masks (`vtst`) and applied as `(x ^ m) - m`. Each activation row
//! then takes 16 exact products-and-pair-sums (`idot16`) times the integer
//! multiplier of their values (`vmla`), so the super-block's integer sum is
//! the scalar's, and enters the scalar reference's f32 expression in its
//! order: bit-identical to `iq3::dot_xxs_q8_k` and `iq3::dot_s_q8_k`.

use super::idot16;
use crate::fp16::f16_le;
use crate::iq3_grids::{IQ3S_GRID, IQ3XXS_GRID};
use crate::simd_shared::{blocks, gemm_rows, wrappers};
use std::arch::aarch64::*;

/// Bytes of a Q8_K activation block: [f32 d][256 x i8][16 x i16 sums of 16].
pub(super) const ACT: usize = 292;
/// Offset of the quants in a Q8_K block.
pub(super) const ACT_QS: usize = 4;

/// The f32 scale of the Q8_K block at `p`.
///
/// # Safety
/// `p` points at 4 readable bytes.
#[inline(always)]
pub(super) unsafe fn act_d(p: *const u8) -> f32 {
    f32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

/// The weight block `b` of `BYTES` bytes at `w` as an array reference, so
/// that constant offsets into it need no bounds checks.
///
/// # Safety
/// `w` holds at least `(b + 1) * BYTES` bytes.
#[inline(always)]
pub(super) unsafe fn block<const BYTES: usize>(w: &[u8], b: usize) -> &[u8; BYTES] {
    &*(w.as_ptr().add(b * BYTES) as *const [u8; BYTES])
}

/// Sign byte of 8 values for each 7-bit index: the stored 7 bits, and
/// bit 7 set when they hold an odd number of ones (so that every group
/// has an even count of negatives; `crate::iq3::signs7`).
pub(super) const SIGNS7: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = i as u8 | (((i as u32).count_ones() as u8 & 1) << 7);
        i += 1;
    }
    t
};

/// 16 unsigned levels with signs applied: value j (0..8) is negated when
/// bit j of `s0` is set, value 8 + j when bit j of `s1` is.
///
/// # Safety
/// NEON (every aarch64 CPU).
#[inline(always)]
pub(super) unsafe fn signed16(levels: uint8x16_t, s0: u8, s1: u8) -> int8x16_t {
    let spread = vcombine_u8(vdup_n_u8(s0), vdup_n_u8(s1));
    let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    // 0xff (-1) in the bytes to negate: (x ^ -1) - (-1) = -x.
    let m = vreinterpretq_s8_u8(vtstq_u8(spread, bit));
    vsubq_s8(veorq_s8(vreinterpretq_s8_u8(levels), m), m)
}

/// Two 8-byte grid entries side by side: bytes 0..8 from `lo`, 8..16 from
/// `hi`.
///
/// # Safety
/// NEON (every aarch64 CPU).
#[inline(always)]
pub(super) unsafe fn pair64(lo: u64, hi: u64) -> uint8x16_t {
    vcombine_u8(vcreate_u8(lo), vcreate_u8(hi))
}

/// Four 4-byte grid entries in order, as 16 bytes.
///
/// # Safety
/// NEON (every aarch64 CPU).
#[inline(always)]
unsafe fn quad32(g: [u32; 4]) -> uint8x16_t {
    pair64(
        g[0] as u64 | (g[1] as u64) << 32,
        g[2] as u64 | (g[3] as u64) << 32,
    )
}

/// `sum_i mul[i * M / 16] * (lv[i] . aq[16i..16i + 16])`: the 256 signed
/// levels of a super-block against the Q8_K quants at `aq`, each of the
/// `M` multipliers covering 16 / M consecutive vectors. Exact while the
/// total fits i32 (|level| <= 62, |mul| <= 31: at most 2^24).
///
/// # Safety
/// NEON (every aarch64 CPU); `aq` points at 256 readable bytes; `M`
/// divides 16.
#[inline(always)]
pub(super) unsafe fn scaled_dot<const M: usize>(
    lv: &[int8x16_t; 16],
    mul: &[i32; M],
    aq: *const i8,
) -> i32 {
    let per = 16 / M;
    let mut acc = vdupq_n_s32(0);
    for (k, (group, &m)) in lv.chunks_exact(per).zip(mul).enumerate() {
        let mut part = vdupq_n_s32(0);
        for (i, &v) in group.iter().enumerate() {
            part = idot16(part, v, vld1q_s8(aq.add(16 * (per * k + i))));
        }
        acc = vmlaq_n_s32(acc, part, m);
    }
    vaddvq_s32(acc)
}

/// One weight row's super-blocks against `R` activation rows, for the
/// grid types whose dot is `d * da * isum` per super-block (IQ2, IQ3):
/// `dec` gives a block's d, 16 vectors of signed levels and `M` integer
/// multipliers (see [`scaled_dot`]). The caller applies the reference's
/// final factor, if any.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted: [`blocks`] clamps `n`
/// to the whole blocks that `w` and every `a[j]` hold.
#[inline(always)]
pub(super) unsafe fn grid_rows<const R: usize, const BYTES: usize, const M: usize>(
    n: usize,
    w: &[u8],
    a: &[&[u8]; R],
    dec: impl Fn(&[u8; BYTES]) -> (f32, [int8x16_t; 16], [i32; M]),
) -> [f32; R] {
    let nb = blocks(n, 256, w, BYTES, a, ACT);
    let mut sum = [0f32; R];
    for b in 0..nb {
        let (d, lv, mul) = dec(block::<BYTES>(w, b));
        for (s, row) in sum.iter_mut().zip(a) {
            let q = row.as_ptr().add(b * ACT);
            let isum = scaled_dot(&lv, &mul, q.add(ACT_QS) as *const i8);
            *s += d * act_d(q) * isum as f32;
        }
    }
    sum
}

/// IQ3_XXS (98 bytes): fp16 d, 64 grid indices, then per 32 values a word
/// of four 7-bit sign indices and the scale s in bits 28..32; the
/// multiplier 2s + 1 per 32 values and a quarter of the total.
///
/// # Safety
/// As [`grid_rows`].
#[target_feature(enable = "neon")]
unsafe fn iq3_xxs<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let sum = grid_rows::<R, 98, 8>(n, w, &a, |wb| {
        let mut lv = [vdupq_n_s8(0); 16];
        let mut mul = [0i32; 8];
        for ib in 0..8 {
            let o = 66 + 4 * ib;
            let aux = u32::from_le_bytes([wb[o], wb[o + 1], wb[o + 2], wb[o + 3]]);
            mul[ib] = 2 * (aux >> 28) as i32 + 1;
            let sg: [u8; 4] = std::array::from_fn(|l| SIGNS7[((aux >> (7 * l)) & 127) as usize]);
            for h in 0..2 {
                // Values 16h..16h + 16 of the 32: grid entries 4h..4h + 4.
                let g = std::array::from_fn(|k| IQ3XXS_GRID[wb[2 + 8 * ib + 4 * h + k] as usize]);
                lv[2 * ib + h] = signed16(quad32(g), sg[2 * h], sg[2 * h + 1]);
            }
        }
        (f16_le(wb[0], wb[1]), lv, mul)
    });
    sum.map(|s| 0.25 * s)
}

/// IQ3_S (110 bytes): fp16 d, 64 low index bytes, 8 bytes of ninth index
/// bits (bit k of byte ib: index k of sub-block ib), 32 sign bytes, four
/// bytes of 4-bit scales (sub-block ib: nibble ib % 2 of byte ib / 2); the
/// multiplier 2s + 1 per 32 values.
///
/// # Safety
/// As [`grid_rows`].
#[target_feature(enable = "neon")]
unsafe fn iq3_s<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    grid_rows::<R, 110, 8>(n, w, &a, |wb| {
        let mut lv = [vdupq_n_s8(0); 16];
        let mut mul = [0i32; 8];
        for ib in 0..8 {
            mul[ib] = 2 * ((wb[106 + ib / 2] >> (4 * (ib % 2))) & 0xf) as i32 + 1;
            let high = wb[66 + ib] as usize;
            for h in 0..2 {
                let g = std::array::from_fn(|k| {
                    let i = 4 * h + k;
                    IQ3S_GRID[wb[2 + 8 * ib + i] as usize | ((high >> i) & 1) << 8]
                });
                let s = 74 + 4 * ib + 2 * h;
                lv[2 * ib + h] = signed16(quad32(g), wb[s], wb[s + 1]);
            }
        }
        (f16_le(wb[0], wb[1]), lv, mul)
    })
}

wrappers!(iq3_xxs_dot, iq3_xxs_dot4, iq3_xxs);
wrappers!(iq3_s_dot, iq3_s_dot4, iq3_s);
gemm_rows!(iq3_xxs_gemm, iq3_xxs, 98, ACT, 256);
gemm_rows!(iq3_s_gemm, iq3_s, 110, ACT, 256);

#[cfg(test)]
mod tests {
    #[test]
    fn sign_table_is_signs7() {
        for i in 0..128u32 {
            assert_eq!(super::SIGNS7[i as usize], crate::iq3::signs7(i));
        }
    }
}
