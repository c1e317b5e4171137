//! Q5_0: blocks of 32 values, 22 bytes: fp16 scale d, u32 LE of fifth bits
//! (bit j = value j), 16 bytes of low nibbles (low = value j, high = value
//! j + 16). value = d * (q - 16).

use crate::fp16::{f16_le, f32_to_f16};
use crate::q8_0;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 22;

/// ggml's quantize_row_q5_0_ref: d = (signed value of largest magnitude) / -16,
/// q = min(31, trunc(x / d + 16.5)).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let max = crate::q4_0::signed_absmax(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (head, qs) = blk.split_at_mut(6);
        let mut qh = 0u32;
        let (lo, hi) = x.split_at(QK / 2);
        for (j, ((q, &x0), &x1)) in qs.iter_mut().zip(lo).zip(hi).enumerate() {
            let q0 = ((x0 * id + 16.5) as i8).min(31) as u8;
            let q1 = ((x1 * id + 16.5) as i8).min(31) as u8;
            *q = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        head[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        head[2..].copy_from_slice(&qh.to_le_bytes());
    }
}

/// With an importance matrix `qw` (one weight per column of the row):
/// ggml's quantize_row_q5_0_impl (the Q4_0 search with nmax 16).
pub fn quantize_weighted(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    crate::q4_0::weighted_symmetric(src, qw, dst, BLOCK_BYTES, 16, |blk, d, l| {
        blk[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        store5(blk, 6, l.map(|v| v as u8));
    });
}

/// Store 32 five-bit levels as Q5_0/Q5_1 do: low nibbles from byte
/// `qs_at` (value j low, j + 16 high), fifth bits in the u32 before them.
pub(crate) fn store5(blk: &mut [u8], qs_at: usize, l: [u8; QK]) {
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let (x0, x1) = (l[j], l[j + QK / 2]);
        blk[qs_at + j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
        qh |= (((x0 & 0x10) >> 4) as u32) << j;
        qh |= (((x1 & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    blk[qs_at - 4..qs_at].copy_from_slice(&qh.to_le_bytes());
}

/// The 32 five-bit values (0..=31) of a Q5_0/Q5_1 block body (qh, qs).
#[inline]
pub(crate) fn unpack5(qh_bytes: &[u8], qs: &[u8]) -> [u8; 32] {
    let mut qh = [0u8; 4];
    qh.copy_from_slice(&qh_bytes[..4]);
    let qh = u32::from_le_bytes(qh);
    let mut out = [0u8; 32];
    for (j, &q) in qs.iter().take(16).enumerate() {
        out[j] = (q & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        out[j + 16] = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    out
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_le(blk[0], blk[1]);
        let q = unpack5(&blk[2..6], &blk[6..]);
        for (o, &v) in y.iter_mut().zip(&q) {
            *o = (v as i32 - 16) as f32 * d;
        }
    }
}

/// Scalar dot of a Q5_0 weight row with Q8_0 activations.
pub fn dot_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(q8_0::BLOCK_BYTES))
        .take(n / QK)
    {
        let dw = f16_le(wb[0], wb[1]);
        let q = unpack5(&wb[2..6], &wb[6..]);
        let (da, aq) = q8_0::act_block(ab);
        let isum: i32 = q
            .iter()
            .zip(aq)
            .map(|(&x, &y)| (x as i32 - 16) * (y as i8) as i32)
            .sum();
        sum += isum as f32 * (dw * da);
    }
    sum
}
