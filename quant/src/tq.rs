//! The ternary types TQ1_0 and TQ2_0: super-blocks of 256 values in
//! {-1, 0, 1} times one fp16 d (stored LAST). Layouts from ggml-common.h
//! (block_tq1_0, block_tq2_0).
//!
//! TQ2_0, 66 bytes: 64 bytes of 2-bit codes q (value q - 1): value
//! 128h + 32l + m (h 0..2, l 0..4, m 0..32) is (qs[32h + m] >> 2l) & 3.
//!
//! TQ1_0, 54 bytes: 48 bytes of five trits each, 4 bytes of four trits
//! each. A byte holds its trits as the fixed-point fraction
//! ceil(t * 256 / 243) of t = sum t_n 3^(4 - n); trit n is recovered as
//! ((byte * 3^n mod 256) * 3) >> 8. Value order: bytes 0..32 give values
//! 32n + m (trit n of byte m), bytes 32..48 values 160 + 16n + m, and the
//! four last bytes values 240 + 4n + j (trit n of byte 48 + j).
//!
//! Both dot with Q8_K activations. Quantizers reproduce ggml's
//! quantize_row_tq{1,2}_0_ref (what llama-quantize writes: no importance
//! matrix is used by these types).

use crate::fp16::{f16_le, f32_to_f16};
use crate::q8_k;

pub const QK: usize = 256;
pub const TQ1_BLOCK_BYTES: usize = 54;
pub const TQ2_BLOCK_BYTES: usize = 66;

const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];

/// (d, 1 / d or 0) of a block: d is the largest magnitude (ggml's amax).
fn scale(x: &[f32]) -> (f32, f32) {
    let mut amax = 0f32;
    for &v in x {
        // MAX(amax, fabsf(v)) as ggml writes it: a NaN never wins.
        if v.abs() > amax {
            amax = v.abs();
        }
    }
    (amax, if amax != 0.0 { 1.0 / amax } else { 0.0 })
}

/// The trit code (0, 1, 2) of `v`: lroundf(v * id) + 1.
#[inline]
fn trit(v: f32, id: f32) -> i32 {
    (v * id).round() as i32 + 1
}

pub fn quantize_tq2(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(TQ2_BLOCK_BYTES))
    {
        let (d, id) = scale(x);
        blk[64..66].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        for (h, xs) in x.chunks_exact(128).enumerate() {
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    q = q.wrapping_add(((trit(xs[m + 32 * n], id) & 3) << (2 * n)) as u8);
                }
                blk[32 * h + m] = q;
            }
        }
    }
}

/// Pack trits (0..=2, most significant first) into a byte as ggml does.
#[inline]
fn pack_trits(trits: impl Iterator<Item = i32>) -> u8 {
    let mut q = 0u8;
    for t in trits {
        q = q.wrapping_mul(3).wrapping_add(t as u8);
    }
    (q as u16 * 256).div_ceil(243) as u8
}

pub fn quantize_tq1(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(TQ1_BLOCK_BYTES))
    {
        let (d, id) = scale(x);
        blk[52..54].copy_from_slice(&f32_to_f16(d).to_le_bytes());
        for m in 0..32 {
            blk[m] = pack_trits((0..5).map(|n| trit(x[m + 32 * n], id)));
        }
        for m in 0..16 {
            blk[32 + m] = pack_trits((0..5).map(|n| trit(x[160 + m + 16 * n], id)));
        }
        for j in 0..4 {
            // Four trits, then the first shifted to the top trit.
            let mut q = 0u8;
            for m in 0..4 {
                q = q
                    .wrapping_mul(3)
                    .wrapping_add(trit(x[240 + j + 4 * m], id) as u8);
            }
            q = q.wrapping_mul(3);
            blk[48 + j] = (q as u16 * 256).div_ceil(243) as u8;
        }
    }
}

/// Trit n (0..5) of a packed byte, as -1, 0 or 1.
#[inline]
fn unpack_trit(b: u8, n: usize) -> i8 {
    let q = b.wrapping_mul(POW3[n]);
    (((q as u16) * 3) >> 8) as i8 - 1
}

/// The 256 values of a TQ1_0 block as -1, 0, 1, in value order.
fn tq1_values(blk: &[u8]) -> [i8; QK] {
    let mut v = [0i8; QK];
    for n in 0..5 {
        for m in 0..32 {
            v[32 * n + m] = unpack_trit(blk[m], n);
        }
        for m in 0..16 {
            v[160 + 16 * n + m] = unpack_trit(blk[32 + m], n);
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            v[240 + 4 * n + j] = unpack_trit(blk[48 + j], n);
        }
    }
    v
}

/// The 256 values of a TQ2_0 block as q - 1 (-1..=2), in value order.
fn tq2_values(blk: &[u8]) -> [i8; QK] {
    let mut v = [0i8; QK];
    for h in 0..2 {
        for l in 0..4 {
            for m in 0..32 {
                v[128 * h + 32 * l + m] = ((blk[32 * h + m] >> (2 * l)) & 3) as i8 - 1;
            }
        }
    }
    v
}

pub fn dequantize_tq1(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src
        .chunks_exact(TQ1_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK))
    {
        let d = f16_le(blk[52], blk[53]);
        for (o, &q) in y.iter_mut().zip(tq1_values(blk).iter()) {
            *o = q as f32 * d;
        }
    }
}

pub fn dequantize_tq2(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src
        .chunks_exact(TQ2_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK))
    {
        let d = f16_le(blk[64], blk[65]);
        for (o, &q) in y.iter_mut().zip(tq2_values(blk).iter()) {
            *o = q as f32 * d;
        }
    }
}

fn isum(v: &[i8; QK], aq: &[u8]) -> i32 {
    v.iter()
        .zip(aq)
        .map(|(&x, &y)| x as i32 * (y as i8) as i32)
        .sum()
}

/// Scalar dot of a TQ1_0 row with Q8_K activations (ggml's: the integer
/// sum times dw * da).
pub fn dot_tq1_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(TQ1_BLOCK_BYTES)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
        .take(n / QK)
    {
        let s = isum(&tq1_values(wb), q8_k::act_qs(ab));
        sum += s as f32 * (f16_le(wb[52], wb[53]) * q8_k::act_d(ab));
    }
    sum
}

/// Scalar dot of a TQ2_0 row with Q8_K activations (ggml's: the integer
/// sum times da * dw).
pub fn dot_tq2_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(TQ2_BLOCK_BYTES)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
        .take(n / QK)
    {
        let s = isum(&tq2_values(wb), q8_k::act_qs(ab));
        sum += s as f32 * (q8_k::act_d(ab) * f16_le(wb[64], wb[65]));
    }
    sum
}
