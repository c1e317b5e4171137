//! Q8_K: blocks of 256 values, 292 bytes: f32 LE scale d, 256 x i8 quants,
//! 16 x i16 LE sums of each run of 16 quants. value = d * q. The activation
//! format paired with the K-quant weight types.

use crate::kquant_search::nearest_int;

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 292;

/// ggml's quantize_row_q8_K_ref: iscale = -127 / (signed value of largest
/// magnitude), q = min(127, nearest_int(iscale * x)), d = 1 / iscale.
/// An all-zero block is written as zeros (ggml leaves its sums unwritten).
/// On x86-64 with AVX2 an eight-lane version, on aarch64 a NEON one, writes
/// the same bytes.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { crate::avx2::quantize::quantize_q8_k(src, dst) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { crate::neon::quantize::quantize_q8_k(src, dst) };
    }
    #[cfg(not(target_arch = "aarch64"))]
    quantize_scalar(src, dst)
}

/// The scalar reference behind [`quantize`].
pub fn quantize_scalar(src: &[f32], dst: &mut [u8]) {
    for (x, blk) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in x {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            blk.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        let (head, rest) = blk.split_at_mut(4);
        let (qs, bsums) = rest.split_at_mut(QK);
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for (s, run) in bsums.chunks_exact_mut(2).zip(qs.chunks_exact(16)) {
            let sum: i32 = run.iter().map(|&q| (q as i8) as i32).sum();
            s.copy_from_slice(&(sum as i16).to_le_bytes());
        }
        head.copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (blk, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = act_d(blk);
        for (o, &q) in y.iter_mut().zip(&blk[4..4 + QK]) {
            *o = d * (q as i8) as f32;
        }
    }
}

/// The f32 scale of a Q8_K block.
#[inline]
pub(crate) fn act_d(blk: &[u8]) -> f32 {
    f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]])
}

/// The 256 quants of a Q8_K block.
#[inline]
pub(crate) fn act_qs(blk: &[u8]) -> &[u8] {
    &blk[4..4 + QK]
}

/// The stored sum of quants of run `j` (0..16) of 16 values.
#[inline]
pub(crate) fn act_bsum(blk: &[u8], j: usize) -> i32 {
    let o = 4 + QK + 2 * j;
    i16::from_le_bytes([blk[o], blk[o + 1]]) as i32
}

/// Integer dot of 32 unsigned weight levels with 32 activation quants.
#[inline]
pub(crate) fn idot_u8(w: &[u8], a: &[u8]) -> i32 {
    w.iter()
        .zip(a)
        .map(|(&x, &y)| x as i32 * (y as i8) as i32)
        .sum()
}

/// Scalar dot of a Q8_K row with Q8_K activations.
pub fn dot_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(BLOCK_BYTES))
        .take(n / QK)
    {
        let isum: i32 = act_qs(wb)
            .iter()
            .zip(act_qs(ab))
            .map(|(&x, &y)| (x as i8) as i32 * (y as i8) as i32)
            .sum();
        sum += act_d(wb) * act_d(ab) * isum as f32;
    }
    sum
}

/// A super-block unpacked as d, one signed scale per 16 values and 256
/// signed levels, value = d * scale * level: what Q3_K and Q6_K share.
pub(crate) type Scaled16 = (f32, [i8; 16], [i8; QK]);

/// Dequantizes whole blocks of `bytes` with the format's `unpack` (the
/// products in the reference's order: (d * scale) * level).
pub(crate) fn dequantize_scaled16(
    src: &[u8],
    dst: &mut [f32],
    bytes: usize,
    unpack: fn(&[u8]) -> Scaled16,
) {
    for (blk, y) in src.chunks_exact(bytes).zip(dst.chunks_exact_mut(QK)) {
        let (d, sc, q) = unpack(blk);
        for ((ys, qs), &s) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).zip(&sc) {
            let ds = d * s as f32;
            for (o, &v) in ys.iter_mut().zip(qs) {
                *o = ds * v as f32;
            }
        }
    }
}

/// Scalar dot of a row of such blocks with Q8_K activations: the integer
/// sum of scale * (levels . quants), times d * da per block.
pub(crate) fn dot_scaled16(
    n: usize,
    w: &[u8],
    a: &[u8],
    bytes: usize,
    unpack: fn(&[u8]) -> Scaled16,
) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(bytes)
        .zip(a.chunks_exact(BLOCK_BYTES))
        .take(n / QK)
    {
        let (d, sc, q) = unpack(wb);
        let mut isum = 0i32;
        for ((qs, qa), &s) in q.chunks_exact(16).zip(act_qs(ab).chunks_exact(16)).zip(&sc) {
            let part: i32 = qs
                .iter()
                .zip(qa)
                .map(|(&x, &y)| x as i32 * (y as i8) as i32)
                .sum();
            isum += s as i32 * part;
        }
        sum += d * act_d(ab) * isum as f32;
    }
    sum
}
