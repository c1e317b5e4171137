//! Q8_0: blocks of 32 values, 34 bytes: fp16 scale d, then 32 x i8.
//! value = d * q. Also the activation format paired with the 32-value
//! weight types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).

use crate::fp16::{f16_le, f32_to_f16};

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 34;

/// ggml's quantize_row_q8_0_ref: d = amax / 127, q = round-half-away(x / d).
/// On x86-64 with AVX2 an eight-lane version, on aarch64 a NEON one, writes
/// the same bytes (so it also serves the converter's Q8_0 weights).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { crate::avx2::quantize::quantize_q8_0(src, dst) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { crate::neon::quantize::quantize_q8_0(src, dst) };
    }
    #[cfg(not(target_arch = "aarch64"))]
    quantize_scalar(src, dst)
}

/// The scalar reference behind [`quantize`].
pub fn quantize_scalar(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let mut amax = 0f32;
        for &v in x {
            let a = v.abs();
            amax = if amax > a { amax } else { a };
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (head, qs) = blk.split_at_mut(2);
        head.copy_from_slice(&f32_to_f16(d).to_le_bytes());
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = ((v * id).round() as i8) as u8;
        }
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_le(blk[0], blk[1]);
        for (o, &q) in y.iter_mut().zip(&blk[2..]) {
            *o = (q as i8) as f32 * d;
        }
    }
}

/// The scale and quants of one Q8_0 activation block.
#[inline]
pub(crate) fn act_block(blk: &[u8]) -> (f32, &[u8]) {
    (f16_le(blk[0], blk[1]), &blk[2..])
}

/// Integer sum of the 32 quants of an activation block (used to apply the
/// min of Q4_1/Q5_1 weights without Q8_1 activations).
#[inline]
pub(crate) fn act_sum(qs: &[u8]) -> i32 {
    qs.iter().map(|&q| (q as i8) as i32).sum()
}

/// Scalar dot of a Q8_0 weight row with Q8_0 activations.
pub fn dot_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(BLOCK_BYTES))
        .take(n / QK)
    {
        let (dw, wq) = act_block(wb);
        let (da, aq) = act_block(ab);
        let isum: i32 = wq
            .iter()
            .zip(aq)
            .map(|(&x, &y)| (x as i8) as i32 * (y as i8) as i32)
            .sum();
        sum += isum as f32 * (dw * da);
    }
    sum
}
