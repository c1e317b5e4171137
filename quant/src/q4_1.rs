//! Q4_1: blocks of 32 values, 20 bytes: fp16 scale d, fp16 min m, 16 bytes
//! of nibbles (low = value j, high = value j + 16). value = d * q + m.

use crate::fp16::{f16_le, f32_to_f16};
use crate::q8_0;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 20;

/// ggml's quantize_row_q4_1_ref: d = (max - min) / 15,
/// q = min(15, trunc((x - min) / d + 0.5)).
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
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (head, qs) = blk.split_at_mut(4);
        head[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        head[2..].copy_from_slice(&f32_to_f16(min).to_le_bytes());
        let (lo, hi) = x.split_at(QK / 2);
        for ((q, &x0), &x1) in qs.iter_mut().zip(lo).zip(hi) {
            let q0 = (((x0 - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((x1 - min) * id + 0.5) as i8).min(15) as u8;
            *q = q0 | (q1 << 4);
        }
    }
}

/// With an importance matrix `qw` (one weight per column of the row):
/// ggml's quantize_row_q4_1_impl, per 32 values the weighted asymmetric
/// search (nmax 15, rmin -0.9, rdelta 0.05, 36 steps).
pub fn quantize_weighted(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    weighted_asymmetric(src, qw, dst, BLOCK_BYTES, 15, |blk, l| {
        for (j, q) in blk[4..].iter_mut().enumerate() {
            *q = l[j] | (l[j + 16] << 4);
        }
    });
}

/// The weighted search Q4_1 and Q5_1 share: per 32-value block
/// make_qkx3_quants(nmax) with the importance weights; d and m (the
/// negated minimum) go to the first four bytes, then `store` writes the
/// levels (0..=nmax).
pub(crate) fn weighted_asymmetric(
    src: &[f32],
    qw: &[f32],
    dst: &mut [u8],
    block_bytes: usize,
    nmax: i32,
    store: impl Fn(&mut [u8], &[u8; QK]),
) {
    use crate::kquant_search::{importance_weights, make_qkx2_quants, sum_sq};
    let sigma2 = sum_sq(src) / src.len().max(1) as f32;
    for ((x, qw), blk) in src
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(dst.chunks_exact_mut(block_bytes))
    {
        let mut w = [0f32; QK];
        importance_weights(x, qw, sigma2, &mut w);
        let mut l = [0u8; QK];
        let mut laux = [0u8; QK];
        let (d, min) = make_qkx2_quants(nmax, x, &w, &mut l, &mut laux, -0.9, 0.05, 36, false);
        blk[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        blk[2..4].copy_from_slice(&f32_to_f16(-min).to_le_bytes());
        store(blk, &l);
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_le(blk[0], blk[1]);
        let m = f16_le(blk[2], blk[3]);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for ((&q, a), b) in blk[4..].iter().zip(lo).zip(hi) {
            *a = (q & 0x0F) as f32 * d + m;
            *b = (q >> 4) as f32 * d + m;
        }
    }
}

/// Scalar dot of a Q4_1 weight row with Q8_0 activations. ggml pairs Q4_1
/// with Q8_1 (whose blocks carry d * sum(q)); we use Q8_0 and add the min
/// term from the integer sum of each activation block instead, which is
/// exact rather than rounded to fp16.
pub fn dot_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(q8_0::BLOCK_BYTES))
        .take(n / QK)
    {
        let dw = f16_le(wb[0], wb[1]);
        let mw = f16_le(wb[2], wb[3]);
        let (da, aq) = q8_0::act_block(ab);
        let (alo, ahi) = aq.split_at(QK / 2);
        let mut isum = 0i32;
        for ((&q, &y0), &y1) in wb[4..].iter().zip(alo).zip(ahi) {
            isum += (q & 0x0F) as i32 * (y0 as i8) as i32;
            isum += (q >> 4) as i32 * (y1 as i8) as i32;
        }
        sum += isum as f32 * (dw * da) + mw * (da * q8_0::act_sum(aq) as f32);
    }
    sum
}
