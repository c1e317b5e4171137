//! Q5_1: blocks of 32 values, 24 bytes: fp16 scale d, fp16 min m, u32 LE of
//! fifth bits, 16 bytes of low nibbles (as Q5_0). value = d * q + m.

use crate::fp16::{f16_le, f32_to_f16};
use crate::q5_0::unpack5;
use crate::q8_0;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 24;

/// ggml's quantize_row_q5_1_ref: d = (max - min) / 31,
/// q = trunc((x - min) / d + 0.5).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (head, qs) = blk.split_at_mut(8);
        let mut qh = 0u32;
        let (lo, hi) = x.split_at(QK / 2);
        for (j, ((q, &x0), &x1)) in qs.iter_mut().zip(lo).zip(hi).enumerate() {
            let q0 = ((x0 - min) * id + 0.5) as u8;
            let q1 = ((x1 - min) * id + 0.5) as u8;
            *q = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        head[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        head[2..4].copy_from_slice(&f32_to_f16(min).to_le_bytes());
        head[4..].copy_from_slice(&qh.to_le_bytes());
    }
}

/// With an importance matrix `qw` (one weight per column of the row):
/// ggml's quantize_row_q5_1_impl (the Q4_1 search with nmax 31).
pub fn quantize_weighted(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    crate::q4_1::weighted_asymmetric(src, qw, dst, BLOCK_BYTES, 31, |blk, l| {
        crate::q5_0::store5(blk, 8, *l);
    });
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_le(blk[0], blk[1]);
        let m = f16_le(blk[2], blk[3]);
        let q = unpack5(&blk[4..8], &blk[8..]);
        for (o, &v) in y.iter_mut().zip(&q) {
            *o = v as f32 * d + m;
        }
    }
}

/// Scalar dot of a Q5_1 weight row with Q8_0 activations (the min applied
/// through the activation block's integer sum, see `q4_1::dot_q8_0`).
pub fn dot_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(q8_0::BLOCK_BYTES))
        .take(n / QK)
    {
        let dw = f16_le(wb[0], wb[1]);
        let mw = f16_le(wb[2], wb[3]);
        let q = unpack5(&wb[4..8], &wb[8..]);
        let (da, aq) = q8_0::act_block(ab);
        let isum: i32 = q
            .iter()
            .zip(aq)
            .map(|(&x, &y)| x as i32 * (y as i8) as i32)
            .sum();
        sum += isum as f32 * (dw * da) + mw * (da * q8_0::act_sum(aq) as f32);
    }
    sum
}
