//! AVX2 dots of IQ3_XXS and IQ3_S with Q8_K activations (layouts in
//! `crate::iq3`). Per 32 values: the eight grid entries in one vector of
//! unsigned levels (eight scalar loads), the 32 sign bits applied to the
//! levels (IQ3_XXS: four 7-bit sign indices looked up as eight `sign`
//! multipliers each; IQ3_S: its sign bytes expanded to byte masks), then |a|
//! against the signed levels
//! (`maddubs`, exact for every activation byte: |a| <= 128, |level| <= 62)
//! and the sub-block's odd multiplier 2s + 1 in `madd`. The super-block's
//! integer sum is scaled with the scalar reference's f32 expression, so the
//! results are bit-identical to `iq3::dot_xxs_q8_k` and `iq3::dot_s_q8_k`.
//!
//! Each kernel comes in two forms that differ only in how the eight grid
//! entries are fetched (`GATHER`): eight scalar loads put together with
//! `vpinsrd` (the AVX2 path's, for Zen 3, where `vpgatherdd` is
//! micro-coded and slower), or one `vpgatherdd` on an index vector widened
//! from the eight index bytes (the AVX-512 path's: on Intel's cores the
//! inserts queue on the one shuffle port, and the gather took IQ3_S's
//! matvec from 2.9 to 4.1 GB/s and IQ3_XXS's from 3.2 to 3.6 on an
//! AVX-512 Xeon).

use super::{blocks, gemm_rows, hsum_epi32, wrappers};
use crate::iq3_grids::{IQ3S_GRID, IQ3XXS_GRID};
use std::arch::x86_64::*;

const ACT: usize = 292; // Q8_K block: f32 d, 256 x i8, 16 x i16 sums
const ACT_QS: usize = 4;

/// # Safety
/// `p` points at 4 readable bytes (the f32 scale of a Q8_K block).
#[inline]
pub(super) unsafe fn act_d(p: *const u8) -> f32 {
    f32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

/// Byte j of entry i: 0xFF (-1) where bit j of the sign byte `signs7(i)`
/// is set, else 1: the eight sign multipliers of a 7-bit sign index
/// (ggml's ksigns_iq2xs as `sign` operands), built at compile time from
/// their definition.
pub(super) const KSIGNS64: [u64; 128] = {
    let mut t = [0u64; 128];
    let mut i = 0;
    while i < 128 {
        let s = crate::iq3::signs7(i as u32);
        let mut j = 0;
        while j < 8 {
            let b: u64 = if (s >> j) & 1 == 1 { 0xFF } else { 0x01 };
            t[i] |= b << (8 * j);
            j += 1;
        }
        i += 1;
    }
    t
};

/// The sign multipliers of 32 values from four 7-bit sign indices (index
/// l: values 8l..8l + 8), for `_mm256_sign_epi8` on levels of at most 127.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn sign_mults(sidx: [usize; 4]) -> __m256i {
    let s = |k: usize| KSIGNS64[sidx[k] & 127] as i64;
    _mm256_setr_epi64x(s(0), s(1), s(2), s(3))
}

/// Eight grid entries, by index, in one vector: eight scalar loads, which
/// Zen 3 runs several times faster than its micro-coded `vpgatherdd` (as
/// llama.cpp's AVX2 IQ3 kernels also load them).
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn grid8(grid: &[u32], idx: [usize; 8]) -> __m256i {
    let g = |k: usize| grid[idx[k] & (grid.len() - 1)] as i32;
    _mm256_setr_epi32(g(0), g(1), g(2), g(3), g(4), g(5), g(6), g(7))
}

/// Eight grid entries by one `vpgatherdd`, entry k at the index in lane k
/// of `vi` (masked to the grid, whose length is a power of two).
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn gather8(grid: &[u32], vi: __m256i) -> __m256i {
    let vi = _mm256_and_si256(vi, _mm256_set1_epi32(grid.len() as i32 - 1));
    // SAFETY (of the reads): every lane indexes the grid (masked).
    _mm256_i32gather_epi32::<4>(grid.as_ptr() as *const i32, vi)
}

/// The eight index bytes at `p` widened to i32 lanes.
///
/// # Safety
/// The CPU has AVX2; `p` points at 8 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn idx8(p: *const u8) -> __m256i {
    _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))
}

/// The `sign` multipliers (-1 where the value is negative, else 1) of the
/// four sign bytes in `signs` (byte l: values 8l..8l + 8, bit j: value 8l
/// + j).
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn sign_bytes_mults(signs: u32) -> __m256i {
    // Byte l of `signs` to the 8 bytes of values 8l..8l + 8, then each
    // byte's own bit: 0xff where the value is negative.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(signs as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        ),
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let neg = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
    _mm256_or_si256(neg, _mm256_set1_epi8(1))
}

/// `R` activation rows' i32 lanes += m * (w . a) over 32 values at `o`,
/// the weights given as magnitudes `u` (at most 127) and `sign` multipliers
/// `s` (each byte 1, -1, or 0 for a zero weight): the signs go onto the
/// activations, `maddubs(u, sign(a, s))`, one `sign` per row where signed
/// weights take an `abs` and a `sign`. `m` holds the i16 multiplier of each pair of values (lanes
/// 0..8: values 0..16, lanes 8..16: values 16..32). Exact while each
/// pair's `u0 |a0| + u1 |a1|` (|a| <= 127, as `quantize_row` makes them)
/// fits i16 (u <= 128) and times `m` fits i32.
///
/// # Safety
/// The CPU has AVX2; every `a[j]` holds 32 bytes from `o`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn accumulate_signed<const R: usize>(
    isum: &mut [__m256i; R],
    u: __m256i,
    s: __m256i,
    m: __m256i,
    a: &[&[u8]; R],
    o: usize,
) {
    for j in 0..R {
        let y = _mm256_loadu_si256(a[j].as_ptr().add(o) as *const __m256i);
        let p = _mm256_maddubs_epi16(u, _mm256_sign_epi8(y, s));
        isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(p, m));
    }
}

/// IQ3_XXS (98 bytes).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted: [`blocks`]
/// clamps `n` to the whole blocks that `w` and every `a[j]` hold.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq3_xxs<const R: usize, const GATHER: bool>(
    n: usize,
    w: &[u8],
    a: [&[u8]; R],
) -> [f32; R] {
    const BYTES: usize = 98;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let mut sum = [0f32; R];
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let d = super::f16_at(wb.as_ptr());
        let qs = &wb[2..66];
        let mut isum = [_mm256_setzero_si256(); R];
        for ib in 0..8 {
            let o = 66 + 4 * ib;
            let aux = u32::from_le_bytes([wb[o], wb[o + 1], wb[o + 2], wb[o + 3]]);
            let g = if GATHER {
                gather8(&IQ3XXS_GRID, idx8(qs.as_ptr().add(8 * ib)))
            } else {
                grid8(
                    &IQ3XXS_GRID,
                    std::array::from_fn(|k| qs[8 * ib + k] as usize),
                )
            };
            let sidx: [usize; 4] = std::array::from_fn(|l| ((aux >> (7 * l)) & 127) as usize);
            let ls = 2 * (aux >> 28) as i16 + 1;
            let m = _mm256_set1_epi16(ls);
            let o = i * ACT + ACT_QS + 32 * ib;
            accumulate_signed(&mut isum, g, sign_mults(sidx), m, &a, o);
        }
        for j in 0..R {
            let da = act_d(a[j].as_ptr().add(i * ACT));
            sum[j] += d * da * hsum_epi32(isum[j]) as f32;
        }
    }
    sum.map(|s| 0.25 * s)
}
wrappers!(iq3_xxs_dot, iq3_xxs_dot4, iq3_xxs, false);
gemm_rows!(iq3_xxs_gemm, iq3_xxs, 98, ACT, 256, false);

/// IQ3_S (110 bytes).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C. Lengths are not trusted (see [`iq3_xxs`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq3_s<const R: usize, const GATHER: bool>(n: usize, w: &[u8], a: [&[u8]; R]) -> [f32; R] {
    const BYTES: usize = 110;
    let nb = blocks(n, 256, w, BYTES, &a, ACT);
    let mut sum = [0f32; R];
    for (i, wb) in w.chunks_exact(BYTES).take(nb).enumerate() {
        let d = super::f16_at(wb.as_ptr());
        let (qs, qh, sg, sc) = (&wb[2..66], &wb[66..74], &wb[74..106], &wb[106..110]);
        let mut isum = [_mm256_setzero_si256(); R];
        for ib in 0..8 {
            // Index k: its low byte, and bit k of qh[ib] as bit 8.
            let g = if GATHER {
                let high = _mm256_srlv_epi32(
                    _mm256_set1_epi32(qh[ib] as i32),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                );
                let high = _mm256_slli_epi32::<8>(_mm256_and_si256(high, _mm256_set1_epi32(1)));
                gather8(
                    &IQ3S_GRID,
                    _mm256_or_si256(idx8(qs.as_ptr().add(8 * ib)), high),
                )
            } else {
                grid8(
                    &IQ3S_GRID,
                    std::array::from_fn(|k| {
                        qs[8 * ib + k] as usize | (((qh[ib] >> k) & 1) as usize) << 8
                    }),
                )
            };
            let signs =
                u32::from_le_bytes([sg[4 * ib], sg[4 * ib + 1], sg[4 * ib + 2], sg[4 * ib + 3]]);
            let ls = 2 * ((sc[ib / 2] >> (4 * (ib % 2))) & 0xf) as i16 + 1;
            let m = _mm256_set1_epi16(ls);
            let o = i * ACT + ACT_QS + 32 * ib;
            accumulate_signed(&mut isum, g, sign_bytes_mults(signs), m, &a, o);
        }
        for j in 0..R {
            let da = act_d(a[j].as_ptr().add(i * ACT));
            sum[j] += d * da * hsum_epi32(isum[j]) as f32;
        }
    }
    sum
}
wrappers!(iq3_s_dot, iq3_s_dot4, iq3_s, false);
gemm_rows!(iq3_s_gemm, iq3_s, 110, ACT, 256, false);

/// The forms that gather their grid entries (the AVX-512 path's).
#[cfg(feature = "avx512")]
pub(crate) mod gather {
    use super::{gemm_rows, iq3_s, iq3_xxs, wrappers, ACT};

    wrappers!(iq3_xxs_dot, iq3_xxs_dot4, iq3_xxs, true);
    wrappers!(iq3_s_dot, iq3_s_dot4, iq3_s, true);
    gemm_rows!(iq3_xxs_gemm, iq3_xxs, 98, ACT, 256, true);
    gemm_rows!(iq3_s_gemm, iq3_s, 110, ACT, 256, true);

    /// The gathering (dot, four-activation dot), if `ty` is an IQ3 type.
    pub(crate) fn kernels(ty: crate::GgmlType) -> Option<(crate::DotFn, crate::Dot4Fn)> {
        match ty {
            crate::GgmlType::IQ3_XXS => Some((iq3_xxs_dot, iq3_xxs_dot4)),
            crate::GgmlType::IQ3_S => Some((iq3_s_dot, iq3_s_dot4)),
            _ => None,
        }
    }

    /// The matmul of the AVX-512 path below its tile, if `ty` is an IQ3
    /// type: a decode step (one activation row) gathers, more rows take the
    /// scalar loads (with eight activation rows per weight row, the
    /// one-by-one loads measured faster on the Xeon: 2.16 against 2.53 ms
    /// for IQ3_XXS at 256x4096 x 64). Both give the same bits.
    pub(crate) fn gemm(ty: crate::GgmlType) -> Option<crate::GemmFn> {
        match ty {
            crate::GgmlType::IQ3_XXS => Some(iq3_xxs_rows),
            crate::GgmlType::IQ3_S => Some(iq3_s_rows),
            _ => None,
        }
    }

    /// IQ3_XXS: see [`gemm`].
    pub(crate) fn iq3_xxs_rows(
        n: usize,
        rows: usize,
        w: &[u8],
        t: usize,
        a: &[u8],
        out: &mut [f32],
    ) {
        if t == 1 {
            iq3_xxs_gemm(n, rows, w, t, a, out)
        } else {
            super::iq3_xxs_gemm(n, rows, w, t, a, out)
        }
    }

    /// IQ3_S: see [`gemm`].
    pub(crate) fn iq3_s_rows(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
        if t == 1 {
            iq3_s_gemm(n, rows, w, t, a, out)
        } else {
            super::iq3_s_gemm(n, rows, w, t, a, out)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sign_table_is_signs7() {
        for i in 0..128u32 {
            let s = crate::iq3::signs7(i);
            for j in 0..8 {
                let b = (super::KSIGNS64[i as usize] >> (8 * j)) as u8;
                assert_eq!(b, if (s >> j) & 1 == 1 { 0xFF } else { 1 }, "{i} {j}");
            }
        }
    }
}
