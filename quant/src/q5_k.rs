//! Q5_K: super-blocks of 256 values, 176 bytes: fp16 d, fp16 dmin, 12 bytes
//! of packed 6-bit (scale, min) pairs, 32 bytes qh of fifth bits (bit 2g of
//! qh\[l\] = value 64g + l, bit 2g+1 = value 64g + 32 + l), 128 bytes of low
//! nibbles laid out as Q4_K. value = d * sc_j * q - dmin * m_j.

use crate::fp16::f16_le;
use crate::kquant_scale_min::{self, Unpacked};
use crate::kquant_search::{
    get_scale_min_k4, quantize_k_superblock, quantize_k_superblock_weighted,
};

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 176;

/// ggml's quantize_row_q5_K_ref (make_qkx2_quants with nmax 31, rmin -0.5,
/// rdelta 0.1, nstep 15 per 32 values).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let mut xs = [0f32; QK];
        xs.copy_from_slice(x);
        write_block(blk, quantize_k_superblock(&xs, 31, -0.5, 15));
    }
}

/// With an importance matrix `qw` (one weight per column of the row):
/// ggml's quantize_row_q5_K_impl.
pub fn quantize_weighted(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    for ((x, qw), blk) in src
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut xs = [0f32; QK];
        xs.copy_from_slice(x);
        write_block(blk, quantize_k_superblock_weighted(&xs, qw, 31, true));
    }
}

fn write_block(blk: &mut [u8], (d, dmin, scales, levels): (u16, u16, [u8; 12], [u8; QK])) {
    blk[0..2].copy_from_slice(&d.to_le_bytes());
    blk[2..4].copy_from_slice(&dmin.to_le_bytes());
    blk[4..16].copy_from_slice(&scales);
    let (qh, ql) = blk[16..].split_at_mut(32);
    qh.fill(0);
    for (g, (q, l)) in ql
        .chunks_exact_mut(32)
        .zip(levels.chunks_exact(64))
        .enumerate()
    {
        let m1 = 1u8 << (2 * g);
        let m2 = 2u8 << (2 * g);
        for (k, (b, h)) in q.iter_mut().zip(qh.iter_mut()).enumerate() {
            let mut l1 = l[k];
            if l1 > 15 {
                l1 -= 16;
                *h |= m1;
            }
            let mut l2 = l[k + 32];
            if l2 > 15 {
                l2 -= 16;
                *h |= m2;
            }
            *b = l1 | (l2 << 4);
        }
    }
}

/// (d, dmin, per-sub-block (scale, min), levels 0..=31) of one block.
#[inline]
fn unpack(blk: &[u8]) -> Unpacked {
    let d = f16_le(blk[0], blk[1]);
    let dmin = f16_le(blk[2], blk[3]);
    let mut packed = [0u8; 12];
    packed.copy_from_slice(&blk[4..16]);
    let mut sm = [(0u8, 0u8); 8];
    for (j, s) in sm.iter_mut().enumerate() {
        *s = get_scale_min_k4(j, &packed);
    }
    let qh = &blk[16..48];
    let mut levels = [0u8; QK];
    for (g, (l, q)) in levels
        .chunks_exact_mut(64)
        .zip(blk[48..].chunks_exact(32))
        .enumerate()
    {
        for (k, (&b, &h)) in q.iter().zip(qh).enumerate() {
            l[k] = (b & 0xF) | (((h >> (2 * g)) & 1) << 4);
            l[k + 32] = (b >> 4) | (((h >> (2 * g + 1)) & 1) << 4);
        }
    }
    (d, dmin, sm, levels)
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    kquant_scale_min::dequantize(src, dst, BLOCK_BYTES, unpack)
}

/// Scalar dot of a Q5_K weight row with Q8_K activations.
pub fn dot_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    kquant_scale_min::dot_q8_k(n, w, a, BLOCK_BYTES, unpack)
}
