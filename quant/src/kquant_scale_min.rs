//! What Q4_K and Q5_K share once a block is unpacked: per super-block of 256
//! values an f16 `d` and `dmin`, eight (scale, min) 6-bit pairs for the
//! sub-blocks of 32, and one level per value (4 bits for Q4_K, 5 for Q5_K).
//! value = d * scale * level - dmin * min.

use crate::q8_k;

/// Values per super-block.
pub const QK: usize = 256;

/// A super-block unpacked: (d, dmin, [(scale, min); 8], levels[256]).
pub type Unpacked = (f32, f32, [(u8, u8); 8], [u8; QK]);

/// Dequantizes whole blocks of `block_bytes` with the format's `unpack`.
pub fn dequantize(src: &[u8], dst: &mut [f32], block_bytes: usize, unpack: fn(&[u8]) -> Unpacked) {
    for (blk, y) in src.chunks_exact(block_bytes).zip(dst.chunks_exact_mut(QK)) {
        let (d, dmin, sm, levels) = unpack(blk);
        for ((ys, ls), &(sc, m)) in y.chunks_exact_mut(32).zip(levels.chunks_exact(32)).zip(&sm) {
            let d1 = d * sc as f32;
            let m1 = dmin * m as f32;
            for (o, &q) in ys.iter_mut().zip(ls) {
                *o = d1 * q as f32 - m1;
            }
        }
    }
}

/// Scalar dot of a weight row (blocks of `block_bytes`) with Q8_K
/// activations: integer sums per sub-block, the mins through the
/// activations' 16-value block sums.
pub fn dot_q8_k(
    n: usize,
    w: &[u8],
    a: &[u8],
    block_bytes: usize,
    unpack: fn(&[u8]) -> Unpacked,
) -> f32 {
    let mut sum = 0f32;
    for (wb, ab) in w
        .chunks_exact(block_bytes)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
        .take(n / QK)
    {
        let (d, dmin, sm, levels) = unpack(wb);
        let da = q8_k::act_d(ab);
        let aq = q8_k::act_qs(ab);
        let mut isum = 0i32;
        let mut msum = 0i32;
        for (j, ((ls, qa), &(sc, m))) in levels
            .chunks_exact(32)
            .zip(aq.chunks_exact(32))
            .zip(&sm)
            .enumerate()
        {
            isum += sc as i32 * q8_k::idot_u8(ls, qa);
            msum += m as i32 * (q8_k::act_bsum(ab, 2 * j) + q8_k::act_bsum(ab, 2 * j + 1));
        }
        sum += d * da * isum as f32 - dmin * da * msum as f32;
    }
    sum
}
