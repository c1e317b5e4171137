//! AVX2 dots of IQ2_XXS, IQ2_XS and IQ2_S with Q8_K activations (layouts
//! in `crate::iq2`). Per 32 values: the four grid entries (eight unsigned
//! levels each, at most 43) in one vector by four scalar loads, signed by
//! `sign` multipliers (IQ2_XXS, IQ2_XS: four 7-bit sign indices looked up,
//! `iq3::sign_mults`; IQ2_S: its sign bytes as IQ3_S's) put on the
//! activations, the levels against them (`maddubs`, exact: levels <= 43,
//! |a| <= 127) and each 16 values' odd multiplier 2s + 1 in `madd`. A super-block's integer sum
//! is exact and scaled with the scalar reference's f32 expression, so the
//! results are bit-identical to `iq2::dot_{xxs,xs,s}_q8_k`; `R` activation
//! rows share one decode of the weights (the prefill form, through
//! `gemm_rows`).

use super::iq3::{accumulate_signed, act_d, sign_bytes_mults, sign_mults};
use super::{blocks, f16_at, gemm_rows, hsum_epi32, wrappers};
use crate::iq2_grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID};
use std::arch::x86_64::*;

const ACT: usize = 292; // Q8_K block: f32 d, 256 x i8, 16 x i16 sums
const ACT_QS: usize = 4;

/// Four grid entries, by index, in value order (the index masked to the
/// grid, which every caller's index already fits).
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn grid4(grid: &[u64], idx: [usize; 4]) -> __m256i {
    let g = |k: usize| grid[idx[k] & (grid.len() - 1)] as i64;
    _mm256_setr_epi64x(g(0), g(1), g(2), g(3))
}

/// The `madd` multipliers of 32 values whose first 16 have the 4-bit scale
/// `lo` and last 16 `hi`: 2s + 1 in the pair lanes of each half.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn halves(lo: u8, hi: u8) -> __m256i {
    let m = |s: u8| _mm_set1_epi16(2 * (s & 0xf) as i16 + 1);
    _mm256_set_m128i(m(hi), m(lo))
}

/// One weight row's super-block sums against `R` activation rows, each
/// block's unpacking left to `sub`: `sub(block, ib)` gives sub-block ib's
/// level magnitudes, their sign multipliers and the scale multipliers. `sum[j] += d * da * isum` per block, as
/// the reference; the caller scales the total.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `sub` reads only inside its block.
#[inline(always)]
unsafe fn rows<const R: usize, const BYTES: usize>(
    n: usize,
    w: &[u8],
    a: &[&[u8]; R],
    sub: impl Fn(&[u8], usize) -> (__m256i, __m256i, __m256i),
) -> [f32; R] {
    let nb = blocks(n, 256, w, BYTES, a, ACT);
    let mut sum = [0f32; R];
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let d = f16_at(wb.as_ptr());
        let mut isum = [_mm256_setzero_si256(); R];
        for ib in 0..8 {
            let (u, s, m) = sub(wb, ib);
            accumulate_signed(&mut isum, u, s, m, a, i * ACT + ACT_QS + 32 * ib);
        }
        for j in 0..R {
            let da = act_d(a[j].as_ptr().add(i * ACT));
            sum[j] += d * da * hsum_epi32(isum[j]) as f32;
        }
    }
    sum
}

/// IQ2_XXS (66 bytes): per 32 values four index bytes and a word of four
/// 7-bit sign indices with s in bits 28..32.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted: [`blocks`]
/// clamps `n` to the whole blocks that `w` and every `a[j]` hold.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq2_xxs<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let sum = rows::<R, 66>(n, w, &a, |wb, ib| {
        let o = 2 + 8 * ib;
        // Four index bytes, then four 7-bit sign indices and s (bits 28..32).
        let q = u64::from_le_bytes(std::array::from_fn(|k| wb[o + k]));
        let idx: [usize; 4] = std::array::from_fn(|l| ((q >> (8 * l)) & 0xff) as usize);
        let aux = (q >> 32) as usize;
        let sidx: [usize; 4] = std::array::from_fn(|l| (aux >> (7 * l)) & 127);
        let s = (aux >> 28) as u8;
        let m = _mm256_set1_epi16(2 * (s & 0xf) as i16 + 1);
        (grid4(&IQ2XXS_GRID, idx), sign_mults(sidx), m)
    });
    sum.map(|s| 0.125 * s)
}
wrappers!(iq2_xxs_dot, iq2_xxs_dot4, iq2_xxs);
gemm_rows!(iq2_xxs_gemm, iq2_xxs, 66, ACT, 256);

/// `vpshufb` table: 0x80 where the 4-bit index has odd parity. Indexed by
/// `s ^ (s >> 4)` of a 7-bit sign index s (only the low nibble counts),
/// it gives s's eighth sign bit (`iq3::signs7`: the parity of the seven).
const ODD_PARITY_HIGH_BIT: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        if (i as u32).count_ones() % 2 == 1 {
            t[i] = 0x80;
        }
        i += 1;
    }
    t
};

/// `vpshufb` controls spreading sign byte l (at byte 2l of a 128-bit lane
/// of u16 entries, the lane in both halves) over the 8 bytes of values
/// 8l..8l + 8: the first for entries 0..4 of the lane, the second for 4..8.
const SPREAD_SIGNS: [[u8; 32]; 2] = {
    let mut t = [[0u8; 32]; 2];
    let mut h = 0;
    while h < 2 {
        let mut i = 0;
        while i < 32 {
            t[h][i] = (8 * h + 2 * (i / 8)) as u8;
            i += 1;
        }
        h += 1;
    }
    t
};

/// IQ2_XS (74 bytes): per 8 values a u16 of a 9-bit index and a 7-bit
/// sign index; a scale byte per 32 values (low nibble: first 16).
///
/// Sixteen entries (128 values) at a time in one vector: their grid
/// indices masked out and read back through memory, their sign indices
/// completed with the parity bit by one `vpshufb` ([`ODD_PARITY_HIGH_BIT`])
/// and spread to one byte per value, where the 7-bit index table took
/// four loads and four inserts per 32 values.
///
/// # Safety
/// As [`iq2_xxs`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq2_xs<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 74;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let parity = _mm256_broadcastsi128_si256(_mm_loadu_si128(
        ODD_PARITY_HIGH_BIT.as_ptr() as *const __m128i
    ));
    let spread = SPREAD_SIGNS.map(|c| _mm256_loadu_si256(c.as_ptr() as *const __m256i));
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let mut sum = [0f32; R];
    let mut idx = [0u16; 16];
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let d = f16_at(wb.as_ptr());
        let mut isum = [_mm256_setzero_si256(); R];
        for half in 0..2 {
            let q = _mm256_loadu_si256(wb.as_ptr().add(2 + 32 * half) as *const __m256i);
            _mm256_storeu_si256(
                idx.as_mut_ptr() as *mut __m256i,
                _mm256_and_si256(q, _mm256_set1_epi16(511)),
            );
            let s7 = _mm256_srli_epi16::<9>(q);
            let odd = _mm256_shuffle_epi8(parity, _mm256_xor_si256(s7, _mm256_srli_epi16::<13>(q)));
            let s8 = _mm256_or_si256(s7, odd);
            // Entries 0..8 (values 0..64) in both halves, then 8..16.
            let lanes = [
                _mm256_permute2x128_si256::<0x00>(s8, s8),
                _mm256_permute2x128_si256::<0x11>(s8, s8),
            ];
            for k in 0..4 {
                let ib = 4 * half + k;
                let e = 4 * k;
                let u = grid4(
                    &IQ2XS_GRID,
                    [e, e + 1, e + 2, e + 3].map(|j| idx[j] as usize),
                );
                let spread = _mm256_shuffle_epi8(lanes[k / 2], spread[k % 2]);
                let neg = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
                let sm = _mm256_or_si256(neg, _mm256_set1_epi8(1));
                let sc = wb[66 + ib];
                let o = i * ACT + ACT_QS + 32 * ib;
                accumulate_signed(&mut isum, u, sm, halves(sc & 0xf, sc >> 4), &a, o);
            }
        }
        for j in 0..R {
            let da = act_d(a[j].as_ptr().add(i * ACT));
            sum[j] += d * da * hsum_epi32(isum[j]) as f32;
        }
    }
    sum.map(|s| 0.125 * s)
}
wrappers!(iq2_xs_dot, iq2_xs_dot4, iq2_xs);
gemm_rows!(iq2_xs_gemm, iq2_xs, 74, ACT, 256);

/// IQ2_S (82 bytes): 32 low index bytes, 32 sign bytes, two high index
/// bits per 8 values, a scale byte per 32 values.
///
/// # Safety
/// As [`iq2_xxs`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq2_s<const R: usize>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    let sum = rows::<R, 82>(n, w, &a, |wb, ib| {
        let qh = wb[66 + ib] as usize;
        let idx: [usize; 4] =
            std::array::from_fn(|l| wb[2 + 4 * ib + l] as usize | ((qh << (8 - 2 * l)) & 0x300));
        let o = 34 + 4 * ib;
        let signs = u32::from_le_bytes([wb[o], wb[o + 1], wb[o + 2], wb[o + 3]]);
        let s = wb[74 + ib];
        (
            grid4(&IQ2S_GRID, idx),
            sign_bytes_mults(signs),
            halves(s & 0xf, s >> 4),
        )
    });
    sum.map(|s| 0.125 * s)
}
wrappers!(iq2_s_dot, iq2_s_dot4, iq2_s);
gemm_rows!(iq2_s_gemm, iq2_s, 82, ACT, 256);
