//! IQ4_XS: super-blocks of 256 values, 136 bytes: fp16 d, u16 scales_h,
//! 4 bytes scales_l, 128 bytes of 4-bit codebook indices (per 32 values:
//! 16 bytes, low nibble = value l, high nibble = value l + 16). Sub-block
//! ib (0..8) has the 6-bit scale ls = low nibble ib % 2 of scales_l[ib / 2]
//! | ((scales_h >> 2ib) & 3) << 4. value = d * (ls - 32) * KVALUES[index]
//! (the IQ4_NL codebook). Layout from ggml-common.h (block_iq4_xs).

use crate::fp16::f16_le;
use crate::iq4_nl::{idot_block, quantize_superblock, Packed, KVALUES};
use crate::q8_k;

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 136;

/// What llama-quantize writes for IQ4_XS without an importance matrix
/// (ggml's quantize_iq4_xs, which its `_ref` row function also calls).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        write_block(blk, quantize_superblock::<128>(x, None, 7));
    }
}

/// With an importance matrix `qw` (one weight per column of the row): the
/// same search weighted by `qw * sqrt(sigma2 + x^2)`.
pub fn quantize_weighted(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    for ((x, qw), blk) in src
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        write_block(blk, quantize_superblock::<128>(x, Some(qw), 7));
    }
}

fn write_block(blk: &mut [u8], p: Packed<128>) {
    blk[..2].copy_from_slice(&p.d.to_le_bytes());
    blk[2..4].copy_from_slice(&p.scales_h.to_le_bytes());
    blk[4..8].copy_from_slice(&p.scales_l);
    blk[8..].copy_from_slice(&p.qs);
}

/// The eight sub-block scales of one block, minus 32 (-32..=31).
#[inline]
pub(crate) fn scales(blk: &[u8]) -> [i32; 8] {
    let h = u16::from_le_bytes([blk[2], blk[3]]);
    let mut out = [0i32; 8];
    for (ib, o) in out.iter_mut().enumerate() {
        let lo = (blk[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
        let hi = ((h >> (2 * ib)) & 3) as u8;
        *o = (lo | (hi << 4)) as i32 - 32;
    }
    out
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_le(blk[0], blk[1]);
        for ((ys, qs), ls) in y
            .chunks_exact_mut(32)
            .zip(blk[8..].chunks_exact(16))
            .zip(scales(blk))
        {
            let dl = d * ls as f32;
            let (lo, hi) = ys.split_at_mut(16);
            for ((&q, a), b) in qs.iter().zip(lo).zip(hi) {
                *a = dl * KVALUES[(q & 0xF) as usize] as f32;
                *b = dl * KVALUES[(q >> 4) as usize] as f32;
            }
        }
    }
}

/// Scalar dot of an IQ4_XS weight row with Q8_K activations.
pub fn dot_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
        .take(n / QK)
    {
        let d = f16_le(wb[0], wb[1]);
        let da = q8_k::act_d(ab);
        let aq = q8_k::act_qs(ab);
        let mut isum = 0i32;
        for ((qs, qa), ls) in wb[8..]
            .chunks_exact(16)
            .zip(aq.chunks_exact(32))
            .zip(scales(wb))
        {
            isum += ls * idot_block(qs, qa);
        }
        sum += d * da * isum as f32;
    }
    sum
}
