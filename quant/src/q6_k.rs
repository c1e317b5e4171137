//! Q6_K: super-blocks of 256 values, 210 bytes: 128 bytes ql (low 4 bits),
//! 64 bytes qh (high 2 bits), 16 x i8 scales (one per 16 values), fp16 d
//! LAST. Per 128 values (half h): value 128h + 32k + l (k 0..4, l 0..32)
//! has low bits in ql[64h + l + 32(k&1)] (low nibble for k < 2, high for
//! k >= 2) and high bits (qh[32h + l] >> 2k) & 3. value = d * sc * (q - 32).

use crate::fp16::{f16_le, f32_to_f16};
use crate::kquant_search::{make_qx_quants, make_qx_quants_rmse1_x16, nearest_int, GROUP_MAX_EPS};
use crate::q8_k;

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 210;

/// ggml's quantize_row_q6_K_ref (make_qx_quants with nmax 32, rmse_type 1
/// per 16 values, i8 scales against the scale of largest magnitude).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let mut levels = [0i8; QK];
        let mut scales = [0f32; QK / 16];
        let mut xs = [0f32; QK];
        xs.copy_from_slice(x);
        make_qx_quants_rmse1_x16(32, &xs, &mut levels, &mut scales);
        finish_block(x, levels, &scales, blk);
    }
}

/// With an importance matrix `qw` (one weight per column of the row):
/// ggml's quantize_row_q6_K_impl, which fits each 16 values with the
/// importances themselves as weights (not times sqrt(sigma2 + x^2), unlike
/// the other K types).
pub fn quantize_weighted(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    for ((x, qw), blk) in src
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut levels = [0i8; QK];
        let mut scales = [0f32; QK / 16];
        for (((xs, ws), ls), s) in x
            .chunks_exact(16)
            .zip(qw.chunks_exact(16))
            .zip(levels.chunks_exact_mut(16))
            .zip(scales.iter_mut())
        {
            *s = make_qx_quants(32, xs, ls, ws);
        }
        finish_block(x, levels, &scales, blk);
    }
}

/// The shared tail: i8 scales against the scale of largest magnitude, every
/// value re-quantized against its stored scale, then packed.
fn finish_block(x: &[f32], mut levels: [i8; QK], scales: &[f32; QK / 16], blk: &mut [u8]) {
    let mut max_scale = 0f32;
    let mut max_abs_scale = 0f32;
    for &scale in scales {
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    blk.fill(0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    let d_bits = f32_to_f16(1.0 / iscale);
    blk[208..210].copy_from_slice(&d_bits.to_le_bytes());
    let d_all = f16_le(blk[208], blk[209]);
    let mut sc = [0i8; QK / 16];
    for (o, &s) in sc.iter_mut().zip(scales) {
        *o = nearest_int(iscale * s).min(127) as i8;
    }
    for (b, &s) in blk[192..208].iter_mut().zip(&sc) {
        *b = s as u8;
    }
    for ((xs, ls), &s) in x.chunks_exact(16).zip(levels.chunks_exact_mut(16)).zip(&sc) {
        let d = d_all * s as f32;
        if d == 0.0 {
            continue; // keeps the levels from the search, as ggml does
        }
        for (q, &v) in ls.iter_mut().zip(xs) {
            *q = (nearest_int(v / d).clamp(-32, 31) + 32) as i8;
        }
    }
    let (ql, rest) = blk.split_at_mut(128);
    let qh = &mut rest[..64];
    for ((ql, qh), l) in ql
        .chunks_exact_mut(64)
        .zip(qh.chunks_exact_mut(32))
        .zip(levels.chunks_exact(128))
    {
        for k in 0..32 {
            let (l0, l1, l2, l3) = (
                l[k] as u8,
                l[k + 32] as u8,
                l[k + 64] as u8,
                l[k + 96] as u8,
            );
            ql[k] = (l0 & 0xF) | ((l2 & 0xF) << 4);
            ql[k + 32] = (l1 & 0xF) | ((l3 & 0xF) << 4);
            qh[k] = (l0 >> 4) | ((l1 >> 4) << 2) | ((l2 >> 4) << 4) | ((l3 >> 4) << 6);
        }
    }
}

/// (d, 16 scales, values q - 32 in -32..=31) of one block.
#[inline]
fn unpack(blk: &[u8]) -> q8_k::Scaled16 {
    let d = f16_le(blk[208], blk[209]);
    let mut sc = [0i8; 16];
    for (o, &b) in sc.iter_mut().zip(&blk[192..208]) {
        *o = b as i8;
    }
    let mut q = [0i8; QK];
    let ql = &blk[..128];
    let qh = &blk[128..192];
    for ((q, ql), qh) in q
        .chunks_exact_mut(128)
        .zip(ql.chunks_exact(64))
        .zip(qh.chunks_exact(32))
    {
        for l in 0..32 {
            let h = qh[l];
            q[l] = ((ql[l] & 0xF) | ((h & 3) << 4)) as i8 - 32;
            q[l + 32] = ((ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4)) as i8 - 32;
            q[l + 64] = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
            q[l + 96] = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    (d, sc, q)
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    q8_k::dequantize_scaled16(src, dst, BLOCK_BYTES, unpack)
}

/// Scalar dot of a Q6_K weight row with Q8_K activations.
pub fn dot_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    q8_k::dot_scaled16(n, w, a, BLOCK_BYTES, unpack)
}
