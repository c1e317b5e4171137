//! Q2_K: super-blocks of 256 values, 84 bytes: 16 scale bytes (low nibble
//! the scale, high nibble the min, one pair per 16 values), 64 bytes of
//! 2-bit levels, fp16 d, fp16 dmin. Per 128 values (half h): value
//! 128h + 32j + l (j 0..4, l 0..32) has level (qs[32h + l] >> 2j) & 3.
//! value = d * (sc & 15) * q - dmin * (sc >> 4), sc = scales[value / 16].
//! Layout from ggml-common.h (block_q2_K).

use crate::fp16::{f16_le, f16_to_f32, f32_to_f16};
use crate::kquant_search::{
    importance_weights, make_qkx2_quants, make_qp_quants, nearest_int, sum_sq,
};
use crate::q8_k;

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 84;

const QS: usize = 16; // offset of the levels
const D: usize = 80; // offset of d (dmin follows)

/// ggml's quantize_row_q2_K_ref, which llama-quantize runs when no
/// importance matrix is given: per 16 values make_qkx2_quants (nmax 3,
/// weights |x|, rmin -0.5, rdelta 0.1, 15 steps, absolute error), 4-bit
/// scales and mins against their maxima, then every value re-quantized
/// against the stored scales.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let mut levels = [0u8; QK];
        let mut laux = [0u8; 16];
        let mut scales = [0f32; QK / 16];
        let mut mins = [0f32; QK / 16];
        let mut max_scale = 0f32;
        let mut max_min = 0f32;
        for (j, (xs, ls)) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .enumerate()
        {
            let mut weights = [0f32; 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (scale, min) =
                make_qkx2_quants(3, xs, &weights, ls, &mut laux, -0.5, 0.1, 15, true);
            scales[j] = scale;
            mins[j] = min;
            if scale > max_scale {
                max_scale = scale;
            }
            if min > max_min {
                max_min = min;
            }
        }
        let mut sc = [0u8; QK / 16];
        let mut d_bits = 0u16;
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for (o, &s) in sc.iter_mut().zip(&scales) {
                *o = nearest_int(iscale * s) as u8;
            }
            d_bits = f32_to_f16(max_scale / 15.0);
        }
        let mut dmin_bits = 0u16;
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for (o, &m) in sc.iter_mut().zip(&mins) {
                *o |= (nearest_int(iscale * m) << 4) as u8;
            }
            dmin_bits = f32_to_f16(max_min / 15.0);
        }
        finish_block(x, levels, &sc, d_bits, dmin_bits, blk);
    }
}

/// With an importance matrix `qw` (one weight per column of the row):
/// ggml's quantize_row_q2_K_impl. Per 16 values the asymmetric search with
/// weights `qw * sqrt(sigma2 + x^2)` (rmin -0.9, rdelta 0.05, 36 steps,
/// squared error), then the sixteen scales and mins each fitted to 4 bits
/// by make_qp_quants, weighted by each sub-block's total weight.
pub fn quantize_weighted(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    for ((x, qw), blk) in src
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let sigma2 = sum_sq(x) / QK as f32;
        let mut levels = [0u8; QK];
        let mut laux = [0u8; 16];
        let mut scales = [0f32; QK / 16];
        let mut mins = [0f32; QK / 16];
        let mut sw = [0f32; QK / 16];
        for (j, (xs, ls)) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .enumerate()
        {
            let mut w = [0f32; 16];
            importance_weights(xs, &qw[16 * j..], sigma2, &mut w);
            for &v in &w {
                sw[j] += v;
            }
            (scales[j], mins[j]) =
                make_qkx2_quants(3, xs, &w, ls, &mut laux, -0.9, 0.05, 36, false);
        }
        let mut ls = [0u8; QK / 16];
        let mut lm = [0u8; QK / 16];
        let dm = make_qp_quants(15, &scales, &mut ls, &sw);
        let mm = make_qp_quants(15, &mins, &mut lm, &sw);
        let mut sc = [0u8; QK / 16];
        for ((o, &s), &m) in sc.iter_mut().zip(&ls).zip(&lm) {
            *o = s | (m << 4);
        }
        finish_block(x, levels, &sc, f32_to_f16(dm), f32_to_f16(mm), blk);
    }
}

/// The shared tail: every value re-quantized against its stored scale and
/// min (a sub-block whose scale is zero keeps the levels from the search,
/// as ggml does), then packed.
fn finish_block(
    x: &[f32],
    mut levels: [u8; QK],
    sc: &[u8; QK / 16],
    d_bits: u16,
    dmin_bits: u16,
    blk: &mut [u8],
) {
    let (dd, dm) = (f16_to_f32(d_bits), f16_to_f32(dmin_bits));
    for ((xs, ls), &s) in x.chunks_exact(16).zip(levels.chunks_exact_mut(16)).zip(sc) {
        let d = dd * (s & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let m = dm * (s >> 4) as f32;
        for (q, &v) in ls.iter_mut().zip(xs) {
            *q = nearest_int((v + m) / d).clamp(0, 3) as u8;
        }
    }
    blk[..QS].copy_from_slice(sc);
    for (q, l) in blk[QS..D]
        .chunks_exact_mut(32)
        .zip(levels.chunks_exact(128))
    {
        for (k, b) in q.iter_mut().enumerate() {
            *b = l[k] | (l[k + 32] << 2) | (l[k + 64] << 4) | (l[k + 96] << 6);
        }
    }
    blk[D..D + 2].copy_from_slice(&d_bits.to_le_bytes());
    blk[D + 2..D + 4].copy_from_slice(&dmin_bits.to_le_bytes());
}

/// (d, dmin, scale bytes, levels 0..=3) of one block.
#[inline]
fn unpack(blk: &[u8]) -> (f32, f32, [u8; 16], [u8; QK]) {
    let d = f16_le(blk[D], blk[D + 1]);
    let dmin = f16_le(blk[D + 2], blk[D + 3]);
    let mut sc = [0u8; 16];
    sc.copy_from_slice(&blk[..QS]);
    let mut levels = [0u8; QK];
    for (l, q) in levels
        .chunks_exact_mut(128)
        .zip(blk[QS..D].chunks_exact(32))
    {
        for (k, &b) in q.iter().enumerate() {
            l[k] = b & 3;
            l[k + 32] = (b >> 2) & 3;
            l[k + 64] = (b >> 4) & 3;
            l[k + 96] = b >> 6;
        }
    }
    (d, dmin, sc, levels)
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let (d, dmin, sc, levels) = unpack(blk);
        for ((ys, ls), &s) in y.chunks_exact_mut(16).zip(levels.chunks_exact(16)).zip(&sc) {
            let dl = d * (s & 0xF) as f32;
            let ml = dmin * (s >> 4) as f32;
            for (o, &q) in ys.iter_mut().zip(ls) {
                *o = dl * q as f32 - ml;
            }
        }
    }
}

/// Scalar dot of a Q2_K weight row with Q8_K activations: integer sums per
/// 16 values, the mins through the activations' stored 16-value sums.
pub fn dot_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
        .take(n / QK)
    {
        let (d, dmin, sc, levels) = unpack(wb);
        let da = q8_k::act_d(ab);
        let aq = q8_k::act_qs(ab);
        let mut isum = 0i32;
        let mut msum = 0i32;
        for (j, ((ls, qa), &s)) in levels
            .chunks_exact(16)
            .zip(aq.chunks_exact(16))
            .zip(&sc)
            .enumerate()
        {
            isum += (s & 0xF) as i32 * q8_k::idot_u8(ls, qa);
            msum += (s >> 4) as i32 * q8_k::act_bsum(ab, j);
        }
        sum += d * da * isum as f32 - dmin * da * msum as f32;
    }
    sum
}
