//! Q4_0: blocks of 32 values, 18 bytes: fp16 scale d, 16 bytes of nibbles
//! (low nibble = value j, high nibble = value j + 16). value = d * (q - 8).

use crate::fp16::{f16_le, f32_to_f16};
use crate::q8_0;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 18;

/// The value of largest magnitude, with its sign (the first one on ties), as
/// ggml's Q4_0/Q5_0 reference quantizers pick it.
pub(crate) fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// ggml's quantize_row_q4_0_ref: d = (signed value of largest magnitude) / -8,
/// q = min(15, trunc(x / d + 8.5)).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let max = signed_absmax(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (head, qs) = blk.split_at_mut(2);
        head.copy_from_slice(&f32_to_f16(d).to_le_bytes());
        let (lo, hi) = x.split_at(QK / 2);
        for ((q, &x0), &x1) in qs.iter_mut().zip(lo).zip(hi) {
            let q0 = ((x0 * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x1 * id + 8.5) as i8).min(15) as u8;
            *q = q0 | (q1 << 4);
        }
    }
}

/// With an importance matrix `qw` (one weight per column of the row):
/// ggml's quantize_row_q4_0_impl, per 32 values the weighted symmetric
/// search (weights `qw * sqrt(sigma2 + x^2)`, sigma2 over the whole row).
pub fn quantize_weighted(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    weighted_symmetric(src, qw, dst, BLOCK_BYTES, 8, |blk, d, l| {
        blk[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        for (j, q) in blk[2..].iter_mut().enumerate() {
            *q = l[j] as u8 | ((l[j + 16] as u8) << 4);
        }
    });
}

/// The weighted search Q4_0 and Q5_0 share: per 32-value block
/// make_qx_quants(nmax) with the importance weights, then `store` writes
/// the block from its scale and levels (0..2 nmax).
pub(crate) fn weighted_symmetric(
    src: &[f32],
    qw: &[f32],
    dst: &mut [u8],
    block_bytes: usize,
    nmax: i32,
    store: impl Fn(&mut [u8], f32, &[i8; QK]),
) {
    use crate::kquant_search::{importance_weights, make_qx_quants, sum_sq};
    let sigma2 = sum_sq(src) / src.len().max(1) as f32;
    for ((x, qw), blk) in src
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(dst.chunks_exact_mut(block_bytes))
    {
        let mut w = [0f32; QK];
        importance_weights(x, qw, sigma2, &mut w);
        let mut l = [0i8; QK];
        let d = make_qx_quants(nmax, x, &mut l, &w);
        store(blk, d, &l);
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_le(blk[0], blk[1]);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for ((&q, a), b) in blk[2..].iter().zip(lo).zip(hi) {
            *a = ((q & 0x0F) as i32 - 8) as f32 * d;
            *b = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Scalar dot of a Q4_0 weight row with Q8_0 activations.
pub fn dot_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(q8_0::BLOCK_BYTES))
        .take(n / QK)
    {
        let dw = f16_le(wb[0], wb[1]);
        let (da, aq) = q8_0::act_block(ab);
        let (alo, ahi) = aq.split_at(QK / 2);
        let mut isum = 0i32;
        for ((&q, &y0), &y1) in wb[2..].iter().zip(alo).zip(ahi) {
            isum += ((q & 0x0F) as i32 - 8) * (y0 as i8) as i32;
            isum += ((q >> 4) as i32 - 8) * (y1 as i8) as i32;
        }
        sum += isum as f32 * (dw * da);
    }
    sum
}
