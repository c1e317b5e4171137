//! Q4_K: super-blocks of 256 values, 144 bytes: fp16 d, fp16 dmin, 12 bytes
//! of packed 6-bit (scale, min) pairs for 8 sub-blocks of 32, 128 bytes of
//! nibbles (per 64 values: low nibble = value l, high nibble = value l + 32).
//! value = d * sc_j * q - dmin * m_j.

use crate::fp16::f16_le;
use crate::kquant_scale_min::{self, Unpacked};
use crate::kquant_search::{
    get_scale_min_k4, quantize_k_superblock, quantize_k_superblock_weighted,
};

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 144;

/// ggml's quantize_row_q4_K_ref (make_qkx2_quants with nmax 15, rmin -1,
/// rdelta 0.1, nstep 20 per 32 values).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let mut xs = [0f32; QK];
        xs.copy_from_slice(x);
        write_block(blk, quantize_k_superblock(&xs, 15, -1.0, 20));
    }
}

/// With an importance matrix `qw` (one weight per column of the row):
/// ggml's quantize_row_q4_K_impl.
pub fn quantize_weighted(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    for ((x, qw), blk) in src
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut xs = [0f32; QK];
        xs.copy_from_slice(x);
        write_block(blk, quantize_k_superblock_weighted(&xs, qw, 15, false));
    }
}

fn write_block(blk: &mut [u8], (d, dmin, scales, levels): (u16, u16, [u8; 12], [u8; QK])) {
    blk[0..2].copy_from_slice(&d.to_le_bytes());
    blk[2..4].copy_from_slice(&dmin.to_le_bytes());
    blk[4..16].copy_from_slice(&scales);
    for (q, l) in blk[16..].chunks_exact_mut(32).zip(levels.chunks_exact(64)) {
        for (k, b) in q.iter_mut().enumerate() {
            *b = l[k] | (l[k + 32] << 4);
        }
    }
}

/// (d, dmin, per-sub-block (scale, min), levels 0..=15) of one block.
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
    let mut levels = [0u8; QK];
    for (l, q) in levels.chunks_exact_mut(64).zip(blk[16..].chunks_exact(32)) {
        for (k, &b) in q.iter().enumerate() {
            l[k] = b & 0xF;
            l[k + 32] = b >> 4;
        }
    }
    (d, dmin, sm, levels)
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    kquant_scale_min::dequantize(src, dst, BLOCK_BYTES, unpack)
}

/// Scalar dot of a Q4_K weight row with Q8_K activations.
pub fn dot_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    kquant_scale_min::dot_q8_k(n, w, a, BLOCK_BYTES, unpack)
}
