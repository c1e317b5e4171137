//! IQ4_NL: blocks of 32 values, 18 bytes: fp16 d, 16 bytes of 4-bit
//! indices into a fixed non-linear codebook of 16 signed levels (low
//! nibble = value l, high nibble = value l + 16, as Q4_0).
//! value = d * KVALUES[index]. Layout from ggml-common.h (block_iq4_nl).
//! Also the search both IQ4 types share ([`quantize_superblock`]).

use crate::fp16::{f16_le, f32_to_f16};
use crate::kquant_search::{nearest_int, GROUP_MAX_EPS};
use crate::q8_0;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 18;

/// The IQ4 codebook: ggml-common.h's `kvalues_iq4nl` (format data, copied
/// as such; llama.cpp commit 0c1e570).
pub const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Index of the codebook level nearest `x` (the lower one on a tie), by
/// ggml's bisection (best_index_int8).
#[inline]
pub(crate) fn best_index(x: f32) -> u8 {
    let v = |i: usize| KVALUES[i] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut lo, mut hi) = (0usize, 15usize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < v(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - v(hi - 1) < v(hi) - x {
        (hi - 1) as u8
    } else {
        hi as u8
    }
}

/// What one super-block's search writes: the fp16 d bits, the 4-bit
/// indices packed as the blocks store them, and (IQ4_XS) the 6-bit
/// sub-block scales split into their low and high bits.
pub(crate) struct Packed<const N: usize> {
    pub d: u16,
    pub qs: [u8; N],
    pub scales_h: u16,
    pub scales_l: [u8; 4],
}

/// ggml's quantize_row_iq4_nl_impl for one super-block of `x.len()` values
/// (32 for IQ4_NL, 256 for IQ4_XS) in sub-blocks of 32: per sub-block the
/// scale with the best weighted fit among `2 ntry + 2` trials (weights x^2,
/// or the importance `qw` times sqrt(sigma2 + x^2)); for several sub-blocks
/// 6-bit scales relative to the largest, then every value re-indexed
/// against its stored scale. `N = x.len() / 2`.
pub(crate) fn quantize_superblock<const N: usize>(
    x: &[f32],
    qw: Option<&[f32]>,
    ntry: i32,
) -> Packed<N> {
    let n = x.len();
    let nsub = n / 32;
    let mut sigma2 = 0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0 / n as f32;
    let mut out = Packed {
        d: 0,
        qs: [0u8; N],
        scales_h: 0,
        scales_l: [0u8; 4],
    };
    let mut levels = vec![0u8; n];
    let mut scales = [0f32; 8];
    let mut max_scale = 0f32;
    let mut amax_scale = 0f32;
    let k0 = KVALUES[0] as f32;
    for ib in 0..nsub {
        let xb = &x[32 * ib..32 * ib + 32];
        let lb = &mut levels[32 * ib..32 * ib + 32];
        let mut weight = [0f32; 32];
        match qw {
            Some(qw) => {
                for ((w, &q), &v) in weight.iter_mut().zip(&qw[32 * ib..]).zip(xb) {
                    *w = q * (sigma2 + v * v).sqrt();
                }
            }
            None => {
                for (w, &v) in weight.iter_mut().zip(xb) {
                    *w = v * v;
                }
            }
        }
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let mut d = if ntry > 0 { -max / k0 } else { max / k0 };
        let id = 1.0 / d;
        let mut sumqx = 0f32;
        let mut sumq2 = 0f32;
        for ((l, &v), &w) in lb.iter_mut().zip(xb).zip(&weight) {
            *l = best_index(id * v);
            let q = KVALUES[*l as usize] as f32;
            sumqx += w * q * v;
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -ntry..=ntry {
            let id = (itry + KVALUES[0] as i32) as f32 / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for (&v, &w) in xb.iter().zip(&weight) {
                let q = KVALUES[best_index(id * v) as usize] as f32;
                sumqx += w * q * v;
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }
    if nsub > 1 {
        let d = -max_scale / 32.0;
        out.d = f32_to_f16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nsub {
            let l = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for (q, &v) in levels[32 * ib..32 * ib + 32]
                .iter_mut()
                .zip(&x[32 * ib..32 * ib + 32])
            {
                *q = best_index(idl * v);
            }
            let l = (l + 32) as u8;
            out.scales_l[ib / 2] |= (l & 0xF) << (4 * (ib % 2));
            out.scales_h |= ((l >> 4) as u16) << (2 * (ib % 8));
        }
    } else {
        out.d = f32_to_f16(scales[0]);
        if ntry > 0 {
            let id = if scales[0] != 0.0 {
                1.0 / scales[0]
            } else {
                0.0
            };
            for (q, &v) in levels.iter_mut().zip(x) {
                *q = best_index(id * v);
            }
        }
    }
    for (q, l) in out.qs.chunks_exact_mut(16).zip(levels.chunks_exact(32)) {
        for (j, b) in q.iter_mut().enumerate() {
            *b = l[j] | (l[j + 16] << 4);
        }
    }
    out
}

/// What llama-quantize writes for IQ4_NL without an importance matrix
/// (ggml's quantize_iq4_nl: the search with 7 trials each side; the
/// `_ref` row function, with none, is not what files are made with).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        write_block(blk, quantize_superblock::<16>(x, None, 7));
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
        write_block(blk, quantize_superblock::<16>(x, Some(qw), 7));
    }
}

fn write_block(blk: &mut [u8], p: Packed<16>) {
    blk[..2].copy_from_slice(&p.d.to_le_bytes());
    blk[2..].copy_from_slice(&p.qs);
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_le(blk[0], blk[1]);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for ((&q, a), b) in blk[2..].iter().zip(lo).zip(hi) {
            *a = d * KVALUES[(q & 0xF) as usize] as f32;
            *b = d * KVALUES[(q >> 4) as usize] as f32;
        }
    }
}

/// Integer dot of 16 index bytes (32 values) with 32 activation quants.
#[inline]
pub(crate) fn idot_block(qs: &[u8], aq: &[u8]) -> i32 {
    let (alo, ahi) = aq.split_at(16);
    let mut isum = 0i32;
    for ((&q, &y0), &y1) in qs.iter().zip(alo).zip(ahi) {
        isum += KVALUES[(q & 0xF) as usize] as i32 * (y0 as i8) as i32;
        isum += KVALUES[(q >> 4) as usize] as i32 * (y1 as i8) as i32;
    }
    isum
}

/// Scalar dot of an IQ4_NL weight row with Q8_0 activations (ggml's
/// pairing).
pub fn dot_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(q8_0::BLOCK_BYTES))
        .take(n / QK)
    {
        let dw = f16_le(wb[0], wb[1]);
        let (da, aq) = q8_0::act_block(ab);
        sum += idot_block(&wb[2..], aq) as f32 * (dw * da);
    }
    sum
}
