//! IQ3_XXS and IQ3_S: super-blocks of 256 values whose levels come in
//! fours from a grid ([`crate::iq3_grids`]), with one sign bit per value.
//! Layouts from ggml-common.h (block_iq3_xxs, block_iq3_s).
//!
//! IQ3_XXS, 98 bytes: fp16 d, 64 grid indices (8 bits, 256-entry grid), 8
//! words (one per 32 values) of four 7-bit sign indices and a 4-bit scale s
//! in bits 28..32. The 7 sign bits of 8 values get an eighth making the
//! count of negatives even ([`signs7`]). value = d * (0.5 + s) / 2 * level.
//!
//! IQ3_S, 110 bytes: fp16 d, 64 low index bytes, 8 bytes of ninth index
//! bits (byte ib: one per index of the 32 values of sub-block ib), 32 sign
//! bytes (one per 8 values), 4 bytes of 4-bit scales (sub-block ib: nibble
//! ib % 2 of byte ib / 2). value = d * (1 + 2s) * level.
//!
//! Both dot with Q8_K activations. Only reading is implemented: there is no
//! quantizer for them here (llama-quantize makes them from an importance
//! matrix in practice).

use crate::fp16::f16_le;
use crate::iq3_grids::{IQ3S_GRID, IQ3XXS_GRID};
use crate::q8_k;

pub const QK: usize = 256;
pub const XXS_BLOCK_BYTES: usize = 98;
pub const S_BLOCK_BYTES: usize = 110;

/// The sign byte of 8 values from its 7 stored bits: bit 7 makes the number
/// of set bits even (ggml's `ksigns_iq2xs` table, here from its
/// definition).
#[inline]
pub(crate) const fn signs7(i: u32) -> u8 {
    let i = (i & 127) as u8;
    i | (((i.count_ones() & 1) as u8) << 7)
}

/// Levels of one block with their signs applied (-62..=62 for IQ3_XXS,
/// -15..=15 for IQ3_S), and the per-32-value integer multiplier ls (the
/// scale is ls * d / 4 for IQ3_XXS, ls * d for IQ3_S).
type Unpacked = (f32, [i32; 8], [i8; QK]);

/// Four grid levels at `v`, signed by bits `shift..shift + 4` of `signs`.
#[inline]
fn put4(out: &mut [i8], g: u32, signs: u8, shift: u32) {
    for (j, o) in out.iter_mut().enumerate() {
        let level = ((g >> (8 * j)) & 0xff) as i8;
        *o = if signs & (1 << (shift + j as u32)) != 0 {
            -level
        } else {
            level
        };
    }
}

fn unpack_xxs(blk: &[u8]) -> Unpacked {
    let d = f16_le(blk[0], blk[1]);
    let qs = &blk[2..66];
    let mut ls = [0i32; 8];
    let mut v = [0i8; QK];
    for ib in 0..8 {
        let o = 66 + 4 * ib;
        let aux = u32::from_le_bytes([blk[o], blk[o + 1], blk[o + 2], blk[o + 3]]);
        ls[ib] = 2 * (aux >> 28) as i32 + 1;
        for l in 0..4 {
            let signs = signs7(aux >> (7 * l));
            let base = 32 * ib + 8 * l;
            let g1 = IQ3XXS_GRID[qs[8 * ib + 2 * l] as usize];
            let g2 = IQ3XXS_GRID[qs[8 * ib + 2 * l + 1] as usize];
            put4(&mut v[base..base + 4], g1, signs, 0);
            put4(&mut v[base + 4..base + 8], g2, signs, 4);
        }
    }
    (d, ls, v)
}

fn unpack_s(blk: &[u8]) -> Unpacked {
    let d = f16_le(blk[0], blk[1]);
    let qs = &blk[2..66];
    let qh = &blk[66..74];
    let signs = &blk[74..106];
    let scales = &blk[106..110];
    let mut ls = [0i32; 8];
    let mut v = [0i8; QK];
    for ib in 0..8 {
        ls[ib] = 2 * ((scales[ib / 2] >> (4 * (ib % 2))) & 0xf) as i32 + 1;
        let h = qh[ib] as usize;
        for l in 0..4 {
            let i1 = qs[8 * ib + 2 * l] as usize | ((h << (8 - 2 * l)) & 256);
            let i2 = qs[8 * ib + 2 * l + 1] as usize | ((h << (7 - 2 * l)) & 256);
            let s = signs[4 * ib + l];
            let base = 32 * ib + 8 * l;
            put4(&mut v[base..base + 4], IQ3S_GRID[i1], s, 0);
            put4(&mut v[base + 4..base + 8], IQ3S_GRID[i2], s, 4);
        }
    }
    (d, ls, v)
}

/// ggml's dequantize_row_iq3_xxs: d * (0.5 + s) * 0.5 per 32 values, times
/// each signed level (products in its order).
pub fn dequantize_xxs(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src
        .chunks_exact(XXS_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK))
    {
        let (d, ls, v) = unpack_xxs(blk);
        for ((ys, vs), &l) in y.chunks_exact_mut(32).zip(v.chunks_exact(32)).zip(&ls) {
            let s = ((l - 1) / 2) as f32;
            let db = d * (0.5 + s) * 0.5;
            for (o, &q) in ys.iter_mut().zip(vs) {
                let m = db * q.unsigned_abs() as f32;
                *o = if q < 0 { -m } else { m };
            }
        }
    }
}

/// ggml's dequantize_row_iq3_s: d * (1 + 2s) per 32 values, times each
/// signed level.
pub fn dequantize_s(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src
        .chunks_exact(S_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK))
    {
        let (d, ls, v) = unpack_s(blk);
        for ((ys, vs), &l) in y.chunks_exact_mut(32).zip(v.chunks_exact(32)).zip(&ls) {
            let db = d * l as f32;
            for (o, &q) in ys.iter_mut().zip(vs) {
                let m = db * q.unsigned_abs() as f32;
                *o = if q < 0 { -m } else { m };
            }
        }
    }
}

/// Integer dot of one unpacked block with a Q8_K block: sum over
/// sub-blocks of ls * (signed levels . quants).
#[inline]
fn isum(ls: &[i32; 8], v: &[i8; QK], aq: &[u8]) -> i32 {
    let mut total = 0i32;
    for ((vs, qa), &l) in v.chunks_exact(32).zip(aq.chunks_exact(32)).zip(ls) {
        let part: i32 = vs
            .iter()
            .zip(qa)
            .map(|(&x, &y)| x as i32 * (y as i8) as i32)
            .sum();
        total += l * part;
    }
    total
}

/// Scalar dot of an IQ3_XXS row with Q8_K activations (ggml's: integer
/// sums with the odd multipliers 2s + 1, then a quarter of the total).
pub fn dot_xxs_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(XXS_BLOCK_BYTES)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
        .take(n / QK)
    {
        let (d, ls, v) = unpack_xxs(wb);
        sum += d * q8_k::act_d(ab) * isum(&ls, &v, q8_k::act_qs(ab)) as f32;
    }
    0.25 * sum
}

/// Scalar dot of an IQ3_S row with Q8_K activations.
pub fn dot_s_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(S_BLOCK_BYTES)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
        .take(n / QK)
    {
        let (d, ls, v) = unpack_s(wb);
        sum += d * q8_k::act_d(ab) * isum(&ls, &v, q8_k::act_qs(ab)) as f32;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::signs7;

    /// The first and last rows of ggml-common.h's ksigns_iq2xs.
    #[test]
    fn signs_follow_ggmls_table() {
        let head: Vec<u8> = (0..8).map(signs7).collect();
        assert_eq!(head, [0, 129, 130, 3, 132, 5, 6, 135]);
        let tail: Vec<u8> = (120..128).map(signs7).collect();
        assert_eq!(tail, [120, 249, 250, 123, 252, 125, 126, 255]);
    }
}
