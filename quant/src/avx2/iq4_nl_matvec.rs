//! IQ4_NL matvec on AVX2: many weight rows against one Q8_0 activation row
//! (a decode step), bit for bit `legacy`'s row kernel (`iq4_nl::<1>`,
//! which also serves the prefill forms).
//!
//! Layout of one weight block (18 bytes): fp16 d, then 16 bytes of 4-bit
//! codebook indices (low nibbles values 0..16, high nibbles 16..32).
//! Activation block (Q8_0, 34 bytes): fp16 d, 32 x i8.
//!
//! What it saves over the row kernel, per block of every row:
//! - the activation's scales are converted from fp16 once per call (the
//!   row kernel converts one per block per row, a scalar round trip);
//! - the weights' fp16 scales of eight blocks are converted with one
//!   `vcvtph2ps` and multiplied by the activation scales in one
//!   `vmulps` (each lane the row kernel's scalar `dw * da`, rounded the
//!   same), then picked per block with one `vpermps`;
//! - the weights are prefetched ahead as the other matvecs do.
//!
//! The integer dot is the row kernel's `maddubs(|w|, sign(a, w))`, the
//! same operations (so also the same result for a raw activation quant of
//! -128, which `quantize_row` never writes and the sign trick does not
//! negate). The f32 arithmetic is the row kernel's, in its order: per block the
//! eight lanes `dw * da * isum_lane`, two blocks' lanes added together
//! before they reach the accumulator, a last odd block added alone, and
//! the eight lanes summed by `hsum_ps` at the end.

use super::kmatvec::{f16_lanes, gather_u32x8};
use super::lowbit::{codebook, iq4_lookup};
use super::q4_q5_tile::with_buf;
use super::{dot_us8, hsum_ps};
use std::arch::x86_64::*;

const WB: usize = 18; // IQ4_NL block bytes
const AB: usize = 34; // Q8_0 block bytes
/// The same prefetch distance as the other matvecs'.
const PREFETCH_AHEAD: usize = 4096;

/// The integer dot of the block at `p` with the activation block at `y`,
/// over eight i32 lanes, as the row kernel computes it.
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernel); `p` points at a whole
/// block and `y` at a whole Q8_0 block.
#[inline(always)]
unsafe fn block(p: *const u8, y: *const u8, book: __m256i) -> __m256i {
    let w = iq4_lookup(p.add(2), book);
    let a = _mm256_loadu_si256(y.add(2) as *const __m256i);
    dot_us8(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w))
}

/// The f32 lanes block `k` of a batch adds: `dw * da` of that block (lane
/// k of `prod`) times its integer lanes.
///
/// # Safety
/// The CPU has AVX2.
#[inline(always)]
unsafe fn term(prod: __m256, k: i32, isum: __m256i) -> __m256 {
    let s = _mm256_permutevar8x32_ps(prod, _mm256_set1_epi32(k));
    _mm256_mul_ps(s, _mm256_cvtepi32_ps(isum))
}

/// Dot of the weight row at `w` (`nb` blocks) with the Q8_0 activation
/// row `y` whose block scales are `da[..nb]`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` points at `nb` blocks, `y` at `nb`
/// activation blocks and `da` at `nb` rounded up to a multiple of 8 floats.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row(nb: usize, w: *const u8, y: *const u8, da: *const f32) -> f32 {
    let book = codebook();
    let mut acc = _mm256_setzero_ps();
    let mut b0 = 0;
    while b0 < nb {
        let m = (nb - b0).min(8);
        let p = w.add(b0 * WB);
        // Addresses past the matrix are harmless: prefetches never fault.
        let ahead = p.wrapping_add(PREFETCH_AHEAD);
        for o in [0, 64, 128] {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(o) as *const i8);
        }
        // The batch's fp16 d: the low half of the u32 that starts each block.
        let dw = f16_lanes(gather_u32x8(p, WB, m), false);
        let prod = _mm256_mul_ps(dw, _mm256_loadu_ps(da.add(b0)));
        let yb = y.add(b0 * AB);
        let mut k = 0;
        while k + 2 <= m {
            let i0 = block(p.add(k * WB), yb.add(k * AB), book);
            let i1 = block(p.add((k + 1) * WB), yb.add((k + 1) * AB), book);
            let t0 = term(prod, k as i32, i0);
            let t1 = term(prod, k as i32 + 1, i1);
            acc = _mm256_add_ps(acc, _mm256_add_ps(t0, t1));
            k += 2;
        }
        if k < m {
            // Only the row's last batch can be odd (the others hold 8).
            let i0 = block(p.add(k * WB), yb.add(k * AB), book);
            acc = _mm256_add_ps(acc, term(prod, k as i32, i0));
        }
        b0 += m;
    }
    hsum_ps(acc)
}

thread_local! {
    /// Per-thread activation scales, grown to the widest matvec once.
    static DA: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[r] = dot(row r of w, a)` for the rows `w` and `out` hold in full,
/// when `a` holds `n / 32` Q8_0 blocks (else nothing is written).
pub(super) fn iq4_nl_matvec(n: usize, rows: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    let nb = n / 32;
    let rb = nb * WB;
    if nb == 0 || a.len() < nb * AB {
        return;
    }
    let held = rows.min(w.len() / rb).min(out.len());
    with_buf(&DA, nb.next_multiple_of(8), 0.0, |da| {
        for (d, blk) in da.iter_mut().zip(a.chunks_exact(AB)) {
            *d = crate::fp16::f16_le(blk[0], blk[1]);
        }
        for (o, wr) in out[..held].iter_mut().zip(w.chunks_exact(rb)) {
            // SAFETY: AVX2, FMA and F16C are checked by dispatch; `wr` holds
            // nb blocks, `a` nb activation blocks (checked above) and `da`
            // nb rounded up to 8 floats.
            *o = unsafe { row(nb, wr.as_ptr(), a.as_ptr(), da.as_ptr()) };
        }
    });
}
