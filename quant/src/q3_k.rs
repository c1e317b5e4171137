//! Q3_K: super-blocks of 256 values, 110 bytes: 32 bytes hmask (the third
//! bit), 64 bytes of 2-bit low parts, 12 bytes of sixteen packed 6-bit
//! scales, fp16 d LAST. Per 128 values (half h): value 128h + 32j + l
//! (j 0..4, l 0..32) has low bits (qs[32h + l] >> 2j) & 3 and high bit
//! hmask[l] >> (4h + j) & 1; level q = low - 4 * (1 - high), in -4..=3.
//! Scale s of 16 values (index s 0..16): low 4 bits in byte s (s < 8, low
//! nibble) or s - 8 (high nibble), high 2 bits at bit 2(s / 4) of byte
//! 8 + s % 4. value = d * (scale - 32) * q. Layout from ggml-common.h
//! (block_q3_K).

use crate::fp16::{f16_le, f32_to_f16};
use crate::kquant_search::{
    importance_weights, make_qx_quants, nearest_int, sum_sq, GROUP_MAX_EPS,
};
use crate::q8_k;

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 110;

const QS: usize = 32; // offset of the low bits
const SC: usize = 96; // offset of the packed scales
const D: usize = 108; // offset of d

/// ggml's make_q3_quants with do_rmse: symmetric levels in [-nmax, nmax-1]
/// (returned offset by nmax), refined by up to five passes that move one
/// level at a time while the x^2-weighted fit improves. Returns the scale.
fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.iter_mut().for_each(|q| *q = 0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let clamp = |q: i32| q.clamp(-nmax, nmax - 1);
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for (&v, q) in x.iter().zip(l.iter_mut()) {
        let li = clamp(nearest_int(iscale * v));
        *q = li as i8;
        let w = v * v;
        sumlx += w * v * li as f32;
        suml2 += w * li as f32 * li as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (&v, q) in x.iter().zip(l.iter_mut()) {
            let w = v * v;
            let cur = *q as i32;
            let mut slx = sumlx - w * v * cur as f32;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur as f32 * cur as f32;
                let new_l = clamp(nearest_int(v * sl2 / slx));
                if new_l != cur {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *q = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for q in l.iter_mut() {
        *q += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The 6-bit scale `j` (0..16) of the 12 packed bytes, as stored (0..64).
#[inline]
fn scale6(packed: &[u8], j: usize) -> i32 {
    let low = if j < 8 {
        packed[j] & 0xF
    } else {
        packed[j - 8] >> 4
    };
    let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32
}

/// Store the 6-bit `l` (0..64) as scale `j` of the packed bytes (which
/// start zeroed).
#[inline]
fn put_scale6(packed: &mut [u8], j: usize, l: u8) {
    if j < 8 {
        packed[j] = l & 0xF;
    } else {
        packed[j - 8] |= (l & 0xF) << 4;
    }
    packed[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
}

/// ggml's quantize_row_q3_K_ref, which llama-quantize runs when no
/// importance matrix is given.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let mut levels = [0i8; QK];
        let mut scales = [0f32; QK / 16];
        let mut max_scale = 0f32;
        let mut amax = 0f32;
        for ((xs, ls), s) in x
            .chunks_exact(16)
            .zip(levels.chunks_exact_mut(16))
            .zip(scales.iter_mut())
        {
            *s = make_q3_quants(4, xs, ls);
            if s.abs() > amax {
                amax = s.abs();
                max_scale = *s;
            }
        }
        blk.fill(0);
        let mut d_bits = 0u16;
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                let l = nearest_int(iscale * s).clamp(-32, 31) + 32;
                put_scale6(&mut blk[SC..D], j, l as u8);
            }
            d_bits = f32_to_f16(1.0 / iscale);
        }
        blk[D..D + 2].copy_from_slice(&d_bits.to_le_bytes());
        finish_block(x, levels, blk);
    }
}

/// With an importance matrix `qw` (one weight per column of the row):
/// ggml's quantize_row_q3_K_impl. Per 16 values the weighted symmetric
/// search (weights `qw * sqrt(sigma2 + x^2)`), then the sixteen scales
/// themselves fitted to 6 bits by the same search, weighted by each
/// sub-block's total weight.
pub fn quantize_weighted(src: &[f32], qw: &[f32], dst: &mut [u8]) {
    for ((x, qw), blk) in src
        .chunks_exact(QK)
        .zip(qw.chunks_exact(QK))
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let sigma2 = 2.0 * sum_sq(x) / QK as f32;
        let mut levels = [0i8; QK];
        let mut scales = [0f32; QK / 16];
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
            scales[j] = make_qx_quants(4, xs, ls, &w);
        }
        blk.fill(0);
        let mut ls = [0i8; QK / 16];
        let d_block = make_qx_quants(32, &scales, &mut ls, &sw);
        for (j, &l) in ls.iter().enumerate() {
            put_scale6(&mut blk[SC..D], j, l as u8);
        }
        blk[D..D + 2].copy_from_slice(&f32_to_f16(d_block).to_le_bytes());
        finish_block(x, levels, blk);
    }
}

/// The shared tail, once the scales and d are stored: every value
/// re-quantized against its stored scale, then the high bits and the low
/// bits packed.
fn finish_block(x: &[f32], mut levels: [i8; QK], blk: &mut [u8]) {
    let d_all = f16_le(blk[D], blk[D + 1]);
    for (j, (xs, ls)) in x
        .chunks_exact(16)
        .zip(levels.chunks_exact_mut(16))
        .enumerate()
    {
        let d = d_all * (scale6(&blk[SC..D], j) - 32) as f32;
        if d == 0.0 {
            continue; // keeps the levels from the search, as ggml does
        }
        for (q, &v) in ls.iter_mut().zip(xs) {
            *q = (nearest_int(v / d).clamp(-4, 3) + 4) as i8;
        }
    }
    // The high bit of value j goes to bit j / 32 of hmask[j % 32].
    for (j, q) in levels.iter_mut().enumerate() {
        if *q > 3 {
            blk[j % 32] |= 1 << (j / 32);
            *q -= 4;
        }
    }
    for (qs, l) in blk[QS..SC]
        .chunks_exact_mut(32)
        .zip(levels.chunks_exact(128))
    {
        for (k, b) in qs.iter_mut().enumerate() {
            *b = (l[k] | (l[k + 32] << 2) | (l[k + 64] << 4) | (l[k + 96] << 6)) as u8;
        }
    }
}

/// (d, 16 scales minus 32, levels in -4..=3) of one block.
#[inline]
/// The sixteen sub-block scales of one block, minus 32 (-32..=31).
pub(crate) fn scales(blk: &[u8]) -> [i8; 16] {
    let mut sc = [0i8; 16];
    for (j, s) in sc.iter_mut().enumerate() {
        *s = (scale6(&blk[SC..D], j) - 32) as i8;
    }
    sc
}

fn unpack(blk: &[u8]) -> q8_k::Scaled16 {
    let d = f16_le(blk[D], blk[D + 1]);
    let sc = scales(blk);
    let hm = &blk[..QS];
    let mut q = [0i8; QK];
    for (h, (qh, low)) in q
        .chunks_exact_mut(128)
        .zip(blk[QS..SC].chunks_exact(32))
        .enumerate()
    {
        for j in 0..4 {
            let bit = 4 * h + j;
            for l in 0..32 {
                let lo = (low[l] >> (2 * j)) & 3;
                let hi = (hm[l] >> bit) & 1;
                qh[32 * j + l] = lo as i8 - if hi == 0 { 4 } else { 0 };
            }
        }
    }
    (d, sc, q)
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    q8_k::dequantize_scaled16(src, dst, BLOCK_BYTES, unpack)
}

/// Scalar dot of a Q3_K weight row with Q8_K activations.
pub fn dot_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    q8_k::dot_scaled16(n, w, a, BLOCK_BYTES, unpack)
}
