//! IQ2_XXS, IQ2_XS and IQ2_S: super-blocks of 256 values whose levels come
//! in eights from a grid ([`crate::iq2_grids`]), one sign bit per value,
//! and a 4-bit scale s per 32 (XXS) or 16 (XS, S) values:
//! value = d * (0.5 + s) / 4 * level. Layouts from ggml-common.h.
//!
//! IQ2_XXS, 66 bytes: fp16 d, then per 32 values 8 bytes: four grid
//! indices, and a word of four 7-bit sign indices (see `iq3::signs7`) with
//! s in bits 28..32.
//! IQ2_XS, 74 bytes: fp16 d, 32 u16 (a 9-bit grid index and a 7-bit sign
//! index each, per 8 values), 8 scale bytes (low nibble: the first 16
//! values of the 32, high: the last 16).
//! IQ2_S, 82 bytes: fp16 d, 32 low index bytes, 32 sign bytes, 8 bytes of
//! index high bits (2 per index), 8 scale bytes as IQ2_XS.
//!
//! All dot with Q8_K activations; only reading is implemented (llama-quantize
//! makes them from an importance matrix).

use crate::fp16::f16_le;
use crate::iq2_grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID};
use crate::iq3::signs7;
use crate::q8_k;

pub const QK: usize = 256;
pub const XXS_BLOCK_BYTES: usize = 66;
pub const XS_BLOCK_BYTES: usize = 74;
pub const S_BLOCK_BYTES: usize = 82;

/// d, the 4-bit scale of each 16 values, and the 256 signed levels.
type Unpacked = (f32, [u8; 16], [i8; QK]);

/// Eight grid levels, signed by the bits of `signs`.
#[inline]
fn put8(out: &mut [i8], g: u64, signs: u8) {
    for (j, o) in out.iter_mut().enumerate() {
        let level = ((g >> (8 * j)) & 0xff) as i8;
        *o = if signs & (1 << j) != 0 { -level } else { level };
    }
}

fn unpack_xxs(blk: &[u8]) -> Unpacked {
    let d = f16_le(blk[0], blk[1]);
    let mut sc = [0u8; 16];
    let mut v = [0i8; QK];
    for ib in 0..8 {
        let o = 2 + 8 * ib;
        let aux = u32::from_le_bytes([blk[o + 4], blk[o + 5], blk[o + 6], blk[o + 7]]);
        let s = (aux >> 28) as u8;
        sc[2 * ib] = s;
        sc[2 * ib + 1] = s;
        for l in 0..4 {
            let base = 32 * ib + 8 * l;
            put8(
                &mut v[base..base + 8],
                IQ2XXS_GRID[blk[o + l] as usize],
                signs7(aux >> (7 * l)),
            );
        }
    }
    (d, sc, v)
}

fn unpack_xs(blk: &[u8]) -> Unpacked {
    let d = f16_le(blk[0], blk[1]);
    let mut sc = [0u8; 16];
    let mut v = [0i8; QK];
    for ib in 0..8 {
        let s = blk[66 + ib];
        sc[2 * ib] = s & 0xf;
        sc[2 * ib + 1] = s >> 4;
        for l in 0..4 {
            let o = 2 + 8 * ib + 2 * l;
            let q = u16::from_le_bytes([blk[o], blk[o + 1]]);
            let base = 32 * ib + 8 * l;
            put8(
                &mut v[base..base + 8],
                IQ2XS_GRID[(q & 511) as usize],
                signs7((q >> 9) as u32),
            );
        }
    }
    (d, sc, v)
}

fn unpack_s(blk: &[u8]) -> Unpacked {
    let d = f16_le(blk[0], blk[1]);
    let (qs, signs, qh, scales) = (&blk[2..34], &blk[34..66], &blk[66..74], &blk[74..82]);
    let mut sc = [0u8; 16];
    let mut v = [0i8; QK];
    for ib in 0..8 {
        sc[2 * ib] = scales[ib] & 0xf;
        sc[2 * ib + 1] = scales[ib] >> 4;
        for l in 0..4 {
            let idx = qs[4 * ib + l] as usize | ((qh[ib] as usize) << (8 - 2 * l) & 0x300);
            let base = 32 * ib + 8 * l;
            put8(&mut v[base..base + 8], IQ2S_GRID[idx], signs[4 * ib + l]);
        }
    }
    (d, sc, v)
}

/// ggml's dequantization: d * (0.5 + s) * 0.25 per 16 values, times each
/// signed level.
fn dequantize(src: &[u8], dst: &mut [f32], bytes: usize, unpack: fn(&[u8]) -> Unpacked) {
    for (blk, y) in src.chunks_exact(bytes).zip(dst.chunks_exact_mut(QK)) {
        let (d, sc, v) = unpack(blk);
        for ((ys, vs), &s) in y.chunks_exact_mut(16).zip(v.chunks_exact(16)).zip(&sc) {
            let db = d * (0.5 + s as f32) * 0.25;
            for (o, &q) in ys.iter_mut().zip(vs) {
                let m = db * q.unsigned_abs() as f32;
                *o = if q < 0 { -m } else { m };
            }
        }
    }
}

/// ggml's dot: per block the integer sum of (2s + 1) * (levels . quants)
/// times dw * da, and an eighth of the total.
fn dot(n: usize, w: &[u8], a: &[u8], bytes: usize, unpack: fn(&[u8]) -> Unpacked) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(bytes)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
        .take(n / QK)
    {
        let (d, sc, v) = unpack(wb);
        let aq = q8_k::act_qs(ab);
        let mut bsum = 0i32;
        for ((vs, qa), &s) in v.chunks_exact(16).zip(aq.chunks_exact(16)).zip(&sc) {
            let part: i32 = vs
                .iter()
                .zip(qa)
                .map(|(&x, &y)| x as i32 * (y as i8) as i32)
                .sum();
            bsum += (2 * s as i32 + 1) * part;
        }
        sum += d * q8_k::act_d(ab) * bsum as f32;
    }
    0.125 * sum
}

pub fn dequantize_xxs(src: &[u8], dst: &mut [f32]) {
    dequantize(src, dst, XXS_BLOCK_BYTES, unpack_xxs)
}
pub fn dequantize_xs(src: &[u8], dst: &mut [f32]) {
    dequantize(src, dst, XS_BLOCK_BYTES, unpack_xs)
}
pub fn dequantize_s(src: &[u8], dst: &mut [f32]) {
    dequantize(src, dst, S_BLOCK_BYTES, unpack_s)
}
/// Scalar dot of an IQ2_XXS row with Q8_K activations.
pub fn dot_xxs_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot(n, w, a, XXS_BLOCK_BYTES, unpack_xxs)
}
/// Scalar dot of an IQ2_XS row with Q8_K activations.
pub fn dot_xs_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot(n, w, a, XS_BLOCK_BYTES, unpack_xs)
}
/// Scalar dot of an IQ2_S row with Q8_K activations.
pub fn dot_s_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot(n, w, a, S_BLOCK_BYTES, unpack_s)
}
