//! NEON dots of IQ2_XXS, IQ2_XS and IQ2_S with Q8_K activations (layouts in
//! `crate::iq2`). As the IQ3 kernels (`super::iq3`): a super-block decoded
//! once into 16 vectors of signed levels, two 8-level grid entries per
//! vector, then per activation row exact pair sums (`idot16`) times each
//! 16 values' multiplier 2s + 1. The integer sum and the f32 expression
//! (`d * da * isum` per super-block, an eighth of the total) are the
//! scalar reference's, so the results are bit-identical to
//! `iq2::dot_{xxs,xs,s}_q8_k`; `R` activation rows share one decode (the
//! prefill form, through `gemm_rows`).

use super::iq3::{grid_rows, pair64, signed16, ACT, SIGNS7};
use crate::fp16::f16_le;
use crate::iq2_grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID};
use crate::simd_shared::{gemm_rows, wrappers};
use std::arch::aarch64::*;

/// IQ2_XXS (66 bytes): fp16 d, then per 32 values four grid index bytes
/// and a word of four 7-bit sign indices with s in bits 28..32.
///
/// # Safety
/// NEON (every aarch64 CPU). Lengths are not trusted: `blocks` (in
/// `grid_rows`) clamps `n` to the whole blocks that `w` and every `a[j]`
/// hold.
#[target_feature(enable = "neon")]
unsafe fn iq2_xxs<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let sum = grid_rows::<R, 66, 8>(n, w, &a, |wb| {
        let mut lv = [vdupq_n_s8(0); 16];
        let mut mul = [0i32; 8];
        for ib in 0..8 {
            let o = 2 + 8 * ib;
            let aux = u32::from_le_bytes([wb[o + 4], wb[o + 5], wb[o + 6], wb[o + 7]]);
            mul[ib] = 2 * (aux >> 28) as i32 + 1;
            for h in 0..2 {
                let (l0, l1) = (2 * h, 2 * h + 1);
                let g = pair64(
                    IQ2XXS_GRID[wb[o + l0] as usize],
                    IQ2XXS_GRID[wb[o + l1] as usize],
                );
                let s0 = SIGNS7[((aux >> (7 * l0)) & 127) as usize];
                let s1 = SIGNS7[((aux >> (7 * l1)) & 127) as usize];
                lv[2 * ib + h] = signed16(g, s0, s1);
            }
        }
        (f16_le(wb[0], wb[1]), lv, mul)
    });
    sum.map(|s| 0.125 * s)
}

/// IQ2_XS (74 bytes): fp16 d, per 8 values a u16 of a 9-bit grid index and
/// a 7-bit sign index, then a scale byte per 32 values (low nibble: the
/// first 16).
///
/// # Safety
/// As [`iq2_xxs`].
#[target_feature(enable = "neon")]
unsafe fn iq2_xs<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let sum = grid_rows::<R, 74, 16>(n, w, &a, |wb| {
        let mut lv = [vdupq_n_s8(0); 16];
        let mut mul = [0i32; 16];
        for (i, (v, m)) in lv.iter_mut().zip(&mut mul).enumerate() {
            // Vector i: values 16i..16i + 16, two u16 from byte 2 + 4i.
            let q: [usize; 2] = std::array::from_fn(|k| {
                let o = 2 + 4 * i + 2 * k;
                u16::from_le_bytes([wb[o], wb[o + 1]]) as usize
            });
            let g = pair64(IQ2XS_GRID[q[0] & 511], IQ2XS_GRID[q[1] & 511]);
            *v = signed16(g, SIGNS7[q[0] >> 9], SIGNS7[q[1] >> 9]);
            *m = 2 * ((wb[66 + i / 2] >> (4 * (i % 2))) & 0xf) as i32 + 1;
        }
        (f16_le(wb[0], wb[1]), lv, mul)
    });
    sum.map(|s| 0.125 * s)
}

/// IQ2_S (82 bytes): fp16 d, 32 low index bytes, 32 sign bytes, a byte of
/// two high index bits per grid entry (bits 2l..2l + 2 for entry l of the
/// 32 values), then the scale bytes as IQ2_XS's.
///
/// # Safety
/// As [`iq2_xxs`].
#[target_feature(enable = "neon")]
unsafe fn iq2_s<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let sum = grid_rows::<R, 82, 16>(n, w, &a, |wb| {
        let mut lv = [vdupq_n_s8(0); 16];
        let mut mul = [0i32; 16];
        for (i, (v, m)) in lv.iter_mut().zip(&mut mul).enumerate() {
            // Vector i: grid entries 2i, 2i + 1 (entries l = 2(i % 2) and
            // l + 1 of sub-block i / 2).
            let high = wb[66 + i / 2] as usize;
            let idx: [usize; 2] = std::array::from_fn(|k| {
                let l = 2 * (i % 2) + k;
                wb[2 + 2 * i + k] as usize | ((high >> (2 * l)) & 3) << 8
            });
            let g = pair64(IQ2S_GRID[idx[0]], IQ2S_GRID[idx[1]]);
            *v = signed16(g, wb[34 + 2 * i], wb[35 + 2 * i]);
            *m = 2 * ((wb[74 + i / 2] >> (4 * (i % 2))) & 0xf) as i32 + 1;
        }
        (f16_le(wb[0], wb[1]), lv, mul)
    });
    sum.map(|s| 0.125 * s)
}

wrappers!(iq2_xxs_dot, iq2_xxs_dot4, iq2_xxs);
wrappers!(iq2_xs_dot, iq2_xs_dot4, iq2_xs);
wrappers!(iq2_s_dot, iq2_s_dot4, iq2_s);
gemm_rows!(iq2_xxs_gemm, iq2_xxs, 66, ACT, 256);
gemm_rows!(iq2_xs_gemm, iq2_xs, 74, ACT, 256);
gemm_rows!(iq2_s_gemm, iq2_s, 82, ACT, 256);
