//! IQ1_S and IQ1_M: super-blocks of 256 values whose levels come in eights
//! from a ternary grid ([`crate::iq1_grid`], 11-bit indices), shifted by
//! +-1/8 and scaled by an odd multiplier: value = d * (2s + 1) * (level +
//! delta). Layouts from ggml-common.h (block_iq1_s, block_iq1_m).
//!
//! IQ1_S, 50 bytes: fp16 d, 32 low index bytes, 8 u16 per 32 values: three
//! index high bits per 8 values (bits 3l..3l + 3), s in bits 12..15, the
//! delta's sign in bit 15.
//! IQ1_M, 56 bytes: 32 low index bytes, 16 bytes of (3 index high bits, a
//! delta sign bit) per 8 values (nibbles), 8 scale bytes read as 4 u16: per
//! 32 values two 3-bit s (first and last 16 values) at bits 6(ib % 2) and
//! 6(ib % 2) + 3 of u16 ib / 2, and the fp16 d spread over the top nibbles
//! of the four u16.
//!
//! Both dot with Q8_K activations; only reading is implemented (llama-quantize
//! makes them from an importance matrix).

use crate::fp16::{f16_le, f16_to_f32};
use crate::iq1_grid::IQ1S_GRID;
use crate::q8_k;

pub const QK: usize = 256;
pub const S_BLOCK_BYTES: usize = 50;
pub const M_BLOCK_BYTES: usize = 56;
const DELTA: f32 = 0.125;

/// d, the odd multiplier of each 16 values, the delta sign (+-1) of each 8
/// values, and the 256 grid levels (-1, 0, 1).
type Unpacked = (f32, [i32; 16], [i32; 32], [i8; QK]);

#[inline]
fn put8(out: &mut [i8], g: u64) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = (g >> (8 * j)) as u8 as i8;
    }
}

fn unpack_s(blk: &[u8]) -> Unpacked {
    let d = f16_le(blk[0], blk[1]);
    let qs = &blk[2..34];
    let mut ls = [0i32; 16];
    let mut sign = [0i32; 32];
    let mut v = [0i8; QK];
    for ib in 0..8 {
        let qh = u16::from_le_bytes([blk[34 + 2 * ib], blk[35 + 2 * ib]]) as usize;
        let l16 = 2 * ((qh >> 12) & 7) as i32 + 1;
        let s = if qh & 0x8000 != 0 { -1 } else { 1 };
        ls[2 * ib] = l16;
        ls[2 * ib + 1] = l16;
        for l in 0..4 {
            sign[4 * ib + l] = s;
            let idx = qs[4 * ib + l] as usize | (((qh >> (3 * l)) & 7) << 8);
            put8(&mut v[32 * ib + 8 * l..32 * ib + 8 * l + 8], IQ1S_GRID[idx]);
        }
    }
    (d, ls, sign, v)
}

fn unpack_m(blk: &[u8]) -> Unpacked {
    let (qs, qh, scb) = (&blk[..32], &blk[32..48], &blk[48..56]);
    let sc: [u16; 4] = std::array::from_fn(|k| u16::from_le_bytes([scb[2 * k], scb[2 * k + 1]]));
    let dbits =
        (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
    let d = f16_to_f32(dbits);
    let mut ls = [0i32; 16];
    let mut sign = [0i32; 32];
    let mut v = [0i8; QK];
    for ib in 0..8 {
        let s = sc[ib / 2] as i32;
        ls[2 * ib] = 2 * ((s >> (6 * (ib % 2))) & 7) + 1;
        ls[2 * ib + 1] = 2 * ((s >> (6 * (ib % 2) + 3)) & 7) + 1;
        for l in 0..4 {
            let h = qh[2 * ib + l / 2] as usize;
            let nib = if l % 2 == 0 { h & 0xf } else { h >> 4 };
            sign[4 * ib + l] = if nib & 8 != 0 { -1 } else { 1 };
            let idx = qs[4 * ib + l] as usize | ((nib & 7) << 8);
            put8(&mut v[32 * ib + 8 * l..32 * ib + 8 * l + 8], IQ1S_GRID[idx]);
        }
    }
    (d, ls, sign, v)
}

/// ggml's dequantization: dl * (level + delta) per value, dl = d * (2s + 1).
fn dequantize(src: &[u8], dst: &mut [f32], bytes: usize, unpack: fn(&[u8]) -> Unpacked) {
    for (blk, y) in src.chunks_exact(bytes).zip(dst.chunks_exact_mut(QK)) {
        let (d, ls, sign, v) = unpack(blk);
        for (g, (ys, vs)) in y.chunks_exact_mut(8).zip(v.chunks_exact(8)).enumerate() {
            let dl = d * ls[g / 2] as f32;
            let delta = if sign[g] < 0 { -DELTA } else { DELTA };
            for (o, &q) in ys.iter_mut().zip(vs) {
                *o = dl * (q as f32 + delta);
            }
        }
    }
}

/// ggml's dot: per block the integer sums of (2s + 1) * (levels . quants)
/// and of (2s + 1) * delta sign * (sum of quants), combined as
/// dw * da * (sum1 + delta * sum2).
fn dot(n: usize, w: &[u8], a: &[u8], bytes: usize, unpack: fn(&[u8]) -> Unpacked) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(bytes)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
        .take(n / QK)
    {
        let (d, ls, sign, v) = unpack(wb);
        let aq = q8_k::act_qs(ab);
        let (mut s1, mut s2) = (0i32, 0i32);
        for (g, (vs, qa)) in v.chunks_exact(8).zip(aq.chunks_exact(8)).enumerate() {
            let dot: i32 = vs
                .iter()
                .zip(qa)
                .map(|(&x, &y)| x as i32 * (y as i8) as i32)
                .sum();
            let asum: i32 = qa.iter().map(|&y| (y as i8) as i32).sum();
            s1 += ls[g / 2] * dot;
            s2 += ls[g / 2] * sign[g] * asum;
        }
        sum += d * q8_k::act_d(ab) * (s1 as f32 + DELTA * s2 as f32);
    }
    sum
}

pub fn dequantize_s(src: &[u8], dst: &mut [f32]) {
    dequantize(src, dst, S_BLOCK_BYTES, unpack_s)
}
pub fn dequantize_m(src: &[u8], dst: &mut [f32]) {
    dequantize(src, dst, M_BLOCK_BYTES, unpack_m)
}
/// Scalar dot of an IQ1_S row with Q8_K activations.
pub fn dot_s_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot(n, w, a, S_BLOCK_BYTES, unpack_s)
}
/// Scalar dot of an IQ1_M row with Q8_K activations.
pub fn dot_m_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot(n, w, a, M_BLOCK_BYTES, unpack_m)
}
