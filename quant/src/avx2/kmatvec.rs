//! K-quant matvec on AVX2: many weight rows against one Q8_K activation row
//! (a decode step), bit for bit the scalar reference.
//!
//! What it saves over the generic row kernel in `kquants` (which also
//! serves the prefill forms):
//! - the activation row is read once per call for what every weight row
//!   needs of it: the f32 scale of each super-block, stored contiguously so
//!   that a batch's scales load as one vector, and (Q4_K, Q5_K) the sums of
//!   each pair of 16-value block sums, one i16 per 32-value sub-block, so
//!   that a super-block's min term is one `vpmaddwd` of its mins;
//! - a super-block's 6-bit scales and mins (Q4_K, Q5_K) are decoded with a
//!   few 128-bit shuffles and shifts, and each sub-block's scale is one
//!   immediate `vpshufd` of them (no index register, no table load),
//!   instead of scalar bit-twiddling and broadcasts;
//! - the integer sums of a batch of super-blocks (Q4_K/Q5_K: four, reduced
//!   by an unpack transpose; Q6_K: eight, by a `vphaddd` tree) are reduced
//!   horizontally together, lane b = super-block b, and their f32 terms
//!   computed in those lanes at once, rather than two horizontal sums and
//!   a scalar tail per super-block; Q4_K/Q5_K read their fp16 d and dmin
//!   with one 4-byte load per super-block (a `vpgatherdd` measured slower).
//!
//! Bit-identity: each super-block's integer sums are exact, and lane b
//! evaluates the scalar reference's f32 expression for super-block b with
//! the same operations in the same order (no FMA); the terms are then
//! added to the row's sum one after the other, in super-block order, as
//! the reference does.

use super::lowbit_matvec::RowsLow;
use super::q4_q5_tile::with_buf;
use std::arch::x86_64::*;

const ACT: usize = 292; // Q8_K block: f32 d, 256 x i8, 16 x i16 sums
const ACT_QS: usize = 4;
const ACT_BSUMS: usize = 4 + 256;
const _: () = assert!(ACT_BSUMS + 32 == ACT);

/// The same prefetch as the row kernel's (see `kquants::prefetch_ahead`).
const PREFETCH_AHEAD: usize = 4096;

/// The eight 6-bit scales (bytes 0..8) and mins (bytes 8..16) of the
/// Q4_K/Q5_K super-block header at `p` (fp16 d, fp16 dmin, 12 packed
/// bytes). With u0, u1, u2 the packed bytes' three little-endian u32s:
/// scales 0..4 = u0 & 0x3f.., mins 0..4 = u1 & 0x3f.., scales 4..8 =
/// (u2 & 0x0f..) | ((u0 >> 2) & 0x30..), mins 4..8 = ((u2 >> 4) & 0x0f..) |
/// ((u1 >> 2) & 0x30..), each byte one sub-block.
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernels); `p` points at 16
/// readable bytes.
#[inline(always)]
pub(crate) unsafe fn scales_mins(p: *const u8) -> __m128i {
    let h = _mm_loadu_si128(p as *const __m128i);
    // Dwords u0, u2, u1, u2 >> 4.
    let x = _mm_shuffle_epi8(
        h,
        _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15),
    );
    let x = _mm_srlv_epi32(x, _mm_setr_epi32(0, 0, 0, 4));
    let x = _mm_and_si128(
        x,
        _mm_setr_epi32(0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f),
    );
    // Dwords 0, u0, 0, u1, then their top two bits of each byte at 4..6.
    let y = _mm_shuffle_epi8(
        h,
        _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11),
    );
    let y = _mm_and_si128(
        _mm_srli_epi32::<2>(y),
        _mm_setr_epi32(0, 0x3030_3030, 0, 0x3030_3030),
    );
    _mm_or_si128(x, y)
}

/// Of the Q4_K/Q5_K super-block at `p`: its eight scales as dwords (scale
/// k twice as i16 in dword k, for a broadcast from memory per sub-block:
/// a load-port op, where register broadcasts of each i16 cost the vector
/// pipes one or two shuffles apiece, and these pipes are what the kernels
/// are short of) and its four partial min sums against the activation's
/// pair sums `bs2` (lanes adding up to `sum_s min[s] * bs2[s]`).
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 and AVX-512 kernels); `p`
/// points at a super-block header (16 bytes), `bs2` at 8 readable i16.
#[inline(always)]
pub(crate) unsafe fn header_sums(p: *const u8, bs2: *const i16) -> ([i32; 8], __m128i) {
    let sm = scales_mins(p);
    let scl = _mm_cvtepu8_epi16(sm);
    let mut dw = [0i32; 8];
    _mm_storeu_si128(
        dw.as_mut_ptr() as *mut __m128i,
        _mm_unpacklo_epi16(scl, scl),
    );
    _mm_storeu_si128(
        dw.as_mut_ptr().add(4) as *mut __m128i,
        _mm_unpackhi_epi16(scl, scl),
    );
    let mins = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(sm, sm));
    let msum = _mm_madd_epi16(mins, _mm_loadu_si128(bs2 as *const __m128i));
    (dw, msum)
}

/// `vpshufb` index for Q6_K run `k` of a half: i16 element 2k in the low
/// 128-bit lane (values 0..16 of the run), 2k + 1 in the high lane.
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernels).
#[inline(always)]
unsafe fn pick6(k: usize) -> __m256i {
    let (e0, e1) = (4 * k as i16, 4 * k as i16 + 2);
    let (lo, hi) = (e0 | ((e0 + 1) << 8), e1 | ((e1 + 1) << 8));
    _mm256_setr_epi16(
        lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi,
    )
}

/// Q5_K: bit `j` of each byte of `qh` moved to bit 4 (other bits masked).
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernels).
#[inline(always)]
unsafe fn bit_to_4(qh: __m256i, j: usize) -> __m256i {
    let v = match j {
        0 => _mm256_slli_epi16::<4>(qh),
        1 => _mm256_slli_epi16::<3>(qh),
        2 => _mm256_slli_epi16::<2>(qh),
        3 => _mm256_slli_epi16::<1>(qh),
        4 => qh,
        5 => _mm256_srli_epi16::<1>(qh),
        6 => _mm256_srli_epi16::<2>(qh),
        _ => _mm256_srli_epi16::<3>(qh),
    };
    _mm256_and_si256(v, _mm256_set1_epi8(0x10))
}

/// Q6_K super-block at `p` (ql 0..128, qh 128..192, 16 x i8 scales
/// 192..208, fp16 d at 208) against the activation quants at `y`: eight
/// i32 lanes adding up to the reference's exact `isum = sum_s scale[s] *
/// dot(levels_s - 32, a_s)`. Levels 0..63 are dotted unsigned; the -32 is
/// applied as 32 * sum(scale * activation block sum).
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernels); `p` points at a whole
/// Q6_K super-block (210 bytes) and `y` at the 288 bytes after a Q8_K
/// block's scale (quants, sums).
#[inline(always)]
unsafe fn q6_block(p: *const u8, y: *const u8) -> __m256i {
    let low = _mm256_set1_epi8(0x0F);
    let high = _mm256_set1_epi8(0x30);
    let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i));
    let bs = _mm256_loadu_si256(y.add(ACT_BSUMS - ACT_QS) as *const __m256i);
    let offset = _mm256_madd_epi16(bs, sc16);
    let halves = [
        _mm256_permute2x128_si256::<0x00>(sc16, sc16),
        _mm256_permute2x128_si256::<0x11>(sc16, sc16),
    ];
    let mut acc = _mm256_setzero_si256();
    for (h, &half) in halves.iter().enumerate() {
        let ql0 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
        let ql1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
        let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
        // Value 128h + 32k + l: low bits from ql0 (k even) / ql1 (k odd),
        // low nibble for k < 2, high for k >= 2; high bits (qh >> 2k) & 3.
        let q = [
            _mm256_or_si256(
                _mm256_and_si256(ql0, low),
                _mm256_and_si256(_mm256_slli_epi16::<4>(qh), high),
            ),
            _mm256_or_si256(
                _mm256_and_si256(ql1, low),
                _mm256_and_si256(_mm256_slli_epi16::<2>(qh), high),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low),
                _mm256_and_si256(qh, high),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low),
                _mm256_and_si256(_mm256_srli_epi16::<2>(qh), high),
            ),
        ];
        for (k, &qk) in q.iter().enumerate() {
            let yk = _mm256_loadu_si256(y.add(128 * h + 32 * k) as *const __m256i);
            let scale = _mm256_shuffle_epi8(half, pick6(k));
            let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(qk, yk), scale);
            acc = _mm256_add_epi32(acc, prod);
        }
    }
    _mm256_sub_epi32(acc, _mm256_slli_epi32::<5>(offset))
}

/// `*sum += t[0]; *sum += t[1]; ...` for the first `m` lanes of `t`, one
/// after the other (the scalar reference's order of super-blocks).
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernels).
#[inline(always)]
pub(super) unsafe fn add_terms(sum: &mut f32, t: __m256, m: usize) {
    if m == 8 {
        // In registers: lanes 0, 1, 2, 3 of each half in turn.
        for half in [_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t)] {
            *sum += _mm_cvtss_f32(half);
            *sum += _mm_cvtss_f32(_mm_movehdup_ps(half));
            *sum += _mm_cvtss_f32(_mm_movehl_ps(half, half));
            *sum += _mm_cvtss_f32(_mm_shuffle_ps::<0xFF>(half, half));
        }
    } else {
        let mut terms = [0f32; 8];
        _mm256_storeu_ps(terms.as_mut_ptr(), t);
        for &x in &terms[..m] {
            *sum += x;
        }
    }
}

/// Lane b = the sum of the eight i32 lanes of `v[b]`.
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernels).
#[inline(always)]
pub(super) unsafe fn hsum8(v: &[__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    let lo = _mm256_hadd_epi32(h01, h23);
    let hi = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(lo, hi),
        _mm256_permute2x128_si256::<0x31>(lo, hi),
    )
}

/// Q4_K/Q5_K super-block at `p` against the activation quants at `y` (256
/// x i8) and the activation's pair sums `bs2` (8 x i16, `bsum[2s] +
/// bsum[2s + 1]`, see [`matvec`]): `[isum
/// partials x4 | msum partials x4]`, where the four lanes of each half add
/// up to the reference's exact `isum = sum_s scale[s] * dot(levels_s,
/// a_s)` and `msum = sum_s min[s] * (bsum[2s] + bsum[2s + 1])` (the pair
/// sums are exact in i16: each block sum is at most 16 * 128).
///
/// # Safety
/// The CPU has AVX2 and F16C (inlined into the AVX2 kernels); `p` points
/// at a whole super-block (144 bytes, Q5_K 176), `y` at 256 readable
/// bytes and `bs2` at 8 readable i16.
#[inline(always)]
unsafe fn k45_sums<const FIVE: bool>(p: *const u8, y: *const u8, bs2: *const i16) -> __m256i {
    let low = _mm256_set1_epi8(0x0F);
    let (dw, msum) = header_sums(p, bs2);
    let ql = p.add(if FIVE { 48 } else { 16 });
    let qh = if FIVE {
        _mm256_loadu_si256(p.add(16) as *const __m256i)
    } else {
        _mm256_setzero_si256()
    };
    let mut acc = _mm256_setzero_si256();
    for g in 0..4 {
        // Low nibbles: values 64g.. (sub-block 2g); high: 64g + 32.. (2g + 1).
        let q = _mm256_loadu_si256(ql.add(32 * g) as *const __m256i);
        let mut lo = _mm256_and_si256(q, low);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
        if FIVE {
            // Bit 2g of qh[l] is the fifth bit of value 64g + l, bit 2g + 1
            // that of value 64g + 32 + l.
            lo = _mm256_or_si256(lo, bit_to_4(qh, 2 * g));
            hi = _mm256_or_si256(hi, bit_to_4(qh, 2 * g + 1));
        }
        let y0 = _mm256_loadu_si256(y.add(64 * g) as *const __m256i);
        let y1 = _mm256_loadu_si256(y.add(64 * g + 32) as *const __m256i);
        let (s0, s1) = (
            bcast32(dw.as_ptr().add(2 * g)),
            bcast32(dw.as_ptr().add(2 * g + 1)),
        );
        let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), s0);
        let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), s1);
        acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
    }
    let is = _mm_add_epi32(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256::<1>(acc),
    );
    _mm256_set_m128i(msum, is)
}

/// Which super-block sums a row kernel is built on: this module's AVX2
/// ones ([`k45_sums`], [`q6_block`]), or AVX-512's with or without VNNI
/// (`crate::avx512::ksums`, the same lanes once folded).
pub(crate) const SUMS_AVX2: u8 = 0;
#[cfg(feature = "avx512")]
pub(crate) const SUMS_512_VNNI: u8 = 1;
#[cfg(feature = "avx512")]
pub(crate) const SUMS_512: u8 = 2;

/// [`k45_sums`] of the set `S` (see [`SUMS_AVX2`]).
///
/// # Safety
/// As [`k45_sums`], and the CPU has the AVX-512 features `S` names.
#[inline(always)]
unsafe fn sums45<const FIVE: bool, const S: u8>(
    p: *const u8,
    y: *const u8,
    bs2: *const i16,
) -> __m256i {
    #[cfg(feature = "avx512")]
    {
        if S == SUMS_512_VNNI {
            return crate::avx512::ksums::k45_sums::<FIVE, true>(p, y, bs2);
        }
        if S == SUMS_512 {
            return crate::avx512::ksums::k45_sums::<FIVE, false>(p, y, bs2);
        }
    }
    k45_sums::<FIVE>(p, y, bs2)
}

/// [`q6_block`] of the set `S` (see [`SUMS_AVX2`]).
///
/// # Safety
/// As [`q6_block`], and the CPU has the AVX-512 features `S` names.
#[inline(always)]
pub(super) unsafe fn sums6<const S: u8>(p: *const u8, y: *const u8) -> __m256i {
    #[cfg(feature = "avx512")]
    {
        if S == SUMS_512_VNNI {
            return crate::avx512::ksums::q6_block::<true>(p, y);
        }
        if S == SUMS_512 {
            return crate::avx512::ksums::q6_block::<false>(p, y);
        }
    }
    q6_block(p, y)
}

/// The i32 at `p` in all eight lanes, by `vpbroadcastd` from memory
/// (written by hand: from the intrinsics LLVM forwards a just-stored value
/// through register shuffles instead).
///
/// # Safety
/// The CPU has AVX2; `p` points at 4 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bcast32(p: *const i32) -> __m256i {
    let y: __m256i;
    std::arch::asm!(
        "vpbroadcastd {y}, dword ptr [{p}]",
        p = in(reg) p,
        y = out(ymm_reg) y,
        options(pure, readonly, nostack, preserves_flags),
    );
    y
}

/// The four lanes of `x` (i32) summed pairwise with those of `y`:
/// `[x0 + x2, y0 + y2, x1 + x3, y1 + y3]` per 128-bit half (a step of
/// [`k45_batch`]'s transpose).
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernels).
#[inline(always)]
unsafe fn pair_sums(x: __m256i, y: __m256i) -> __m256i {
    _mm256_add_epi32(_mm256_unpacklo_epi32(x, y), _mm256_unpackhi_epi32(x, y))
}

/// Super-block `i` of the row at `w`: its [`k45_sums`] and its fp16 d and
/// dmin (the u32 at byte 0); zeros, nothing read, unless `live`.
///
/// # Safety
/// The CPU has AVX2 and F16C (inlined into [`rows45`]); `w`, `a` and `bs2`
/// as [`rows45`] requires, and `i < nb` when `live`.
#[inline(always)]
unsafe fn k45_one<const FIVE: bool, const S: u8>(
    w: *const u8,
    a: *const u8,
    bs2: *const i16,
    i: usize,
    live: bool,
) -> (__m256i, __m128i) {
    if !live {
        return (_mm256_setzero_si256(), _mm_setzero_si128());
    }
    let wb = if FIVE { 176 } else { 144 };
    let p = w.add(i * wb);
    // Addresses past the matrix are harmless: prefetches never fault.
    let ahead = p.wrapping_add(PREFETCH_AHEAD);
    let mut o = 0;
    while o < wb {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(o) as *const i8);
        o += 64;
    }
    (
        sums45::<FIVE, S>(p, a.add(i * ACT + ACT_QS), bs2.add(8 * i)),
        _mm_cvtsi32_si128((p as *const i32).read_unaligned()),
    )
}

/// Terms `d * da * isum - dmin * da * msum` of the `m` (1..=4) Q4_K/Q5_K
/// super-blocks `b0..b0 + m` of the weight row at `w` (lanes past `m`:
/// 0.0, nothing read for them), each as the scalar reference evaluates it.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C (inlined into [`rows45`]); `w`, `a`,
/// `bs2` and `da4` as [`rows45`] requires, and `b0 + m <= nb`.
#[inline(always)]
unsafe fn k45_batch<const FIVE: bool, const S: u8>(
    w: *const u8,
    a: *const u8,
    bs2: *const i16,
    da4: *const f32,
    b0: usize,
    m: usize,
) -> __m128 {
    let blk = |b: usize| k45_one::<FIVE, S>(w, a, bs2, b0 + b, b < m);
    k45_terms(
        [blk(0), blk(1), blk(2), blk(3)],
        _mm256_loadu_ps(da4.add(2 * b0)),
    )
}

/// The terms of four super-blocks, `blk[l]` lane l's sums and header (as
/// [`k45_one`] gives them), `da` its activation scale in lanes l and 4 + l.
/// (An array, not a closure: LLVM left such closures out of line, without
/// the target features, at 25 times the cost.)
///
/// # Safety
/// The CPU has AVX2, FMA and F16C (inlined into [`rows45`]).
#[inline(always)]
unsafe fn k45_terms(blk: [(__m256i, __m128i); 4], da: __m256) -> __m128 {
    // Lane b of r: super-block b's isum, lane 4 + b its msum (a transpose
    // by unpacks, cheaper than `vphaddd`).
    let [(v0, d0), (v1, d1), (v2, d2), (v3, d3)] = blk;
    let s01 = pair_sums(v0, v1);
    let s23 = pair_sums(v2, v3);
    let r = _mm256_add_epi32(
        _mm256_unpacklo_epi64(s01, s23),
        _mm256_unpackhi_epi64(s01, s23),
    );
    // [d0 dmin0 d1 dmin1 d2 dmin2 d3 dmin3] -> [d0 d1 d2 d3 dmin0 .. dmin3].
    let h = _mm_unpacklo_epi64(_mm_unpacklo_epi32(d0, d1), _mm_unpacklo_epi32(d2, d3));
    let h = _mm_shuffle_epi8(
        h,
        _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15),
    );
    // Lane b: d_b * da_b * isum_b; lane 4 + b: dmin_b * da_b * msum_b.
    let f = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtph_ps(h), da), _mm256_cvtepi32_ps(r));
    _mm_sub_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps::<1>(f))
}

/// `out[r] = dot(row r, a)` for the Q4_K (Q5_K with `FIVE`) rows at `w`
/// (`out.len()` rows of `nb` super-blocks, one after the other) against
/// the Q8_K activation row at `a`, whose pair sums are `bs2` and whose
/// scales are `da4` (see [`matvec`]).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` points at `out.len()` rows of `nb`
/// super-blocks, `a` at `nb` Q8_K blocks, `bs2` at `8 * nb` i16 and `da4`
/// at `2 * nb` rounded up to a multiple of 8 floats.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows45<const FIVE: bool>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    bs2: *const i16,
    da4: *const f32,
    out: &mut [f32],
) {
    rows45_body::<FIVE, SUMS_AVX2>(nb, w, a, bs2, da4, out)
}

/// [`rows45`] on the super-block sums `S`, inlined into each set's entry.
/// Rows of four or more super-blocks go one at a time, their terms four
/// super-blocks at a time ([`row45_body`]); shorter rows (a 7B dt
/// projection's are one super-block) four rows at a time, lane l one row's
/// super-block b, so that no lane idles and no per-row epilogue runs. Every
/// row's terms are added to its sum one after the other, from 0.0 and in
/// super-block order, as the reference does, so both forms give its bits.
///
/// # Safety
/// As [`rows45`], and the CPU has the AVX-512 features `S` names.
#[inline(always)]
pub(crate) unsafe fn rows45_body<const FIVE: bool, const S: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    bs2: *const i16,
    da4: *const f32,
    out: &mut [f32],
) {
    let rb = nb * if FIVE { 176 } else { 144 };
    if nb >= 4 {
        for (r, o) in out.iter_mut().enumerate() {
            *o = row45_body::<FIVE, S>(nb, w.add(r * rb), a, bs2, da4);
        }
        return;
    }
    for (g, o) in out.chunks_mut(4).enumerate() {
        let (w, m) = (w.add(4 * g * rb), o.len());
        let mut sum = _mm_setzero_ps();
        for b in 0..nb {
            let da = _mm256_set1_ps(*da4.add(8 * (b / 4) + b % 4));
            let blk = |r: usize| k45_one::<FIVE, S>(w.add(r * rb), a, bs2, b, r < m);
            let t = k45_terms([blk(0), blk(1), blk(2), blk(3)], da);
            sum = _mm_add_ps(sum, t);
        }
        let mut lanes = [0f32; 4];
        _mm_storeu_ps(lanes.as_mut_ptr(), sum);
        o.copy_from_slice(&lanes[..m]);
    }
}

/// Dot of one Q4_K (Q5_K with `FIVE`) weight row at `w` (`nb` super-blocks)
/// with the activation as [`rows45`] takes it: the terms of four
/// super-blocks at a time added to the sum one after the other, in
/// super-block order, as the reference does.
///
/// # Safety
/// As [`rows45_body`] for one row.
#[inline(always)]
unsafe fn row45_body<const FIVE: bool, const S: u8>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    bs2: *const i16,
    da4: *const f32,
) -> f32 {
    let mut sum = 0f32;
    let mut b0 = 0;
    while b0 + 4 <= nb {
        let t = k45_batch::<FIVE, S>(w, a, bs2, da4, b0, 4);
        sum += _mm_cvtss_f32(t);
        sum += _mm_cvtss_f32(_mm_movehdup_ps(t));
        sum += _mm_cvtss_f32(_mm_movehl_ps(t, t));
        sum += _mm_cvtss_f32(_mm_shuffle_ps::<0xFF>(t, t));
        b0 += 4;
    }
    if b0 < nb {
        let m = nb - b0;
        let mut terms = [0f32; 4];
        _mm_storeu_ps(
            terms.as_mut_ptr(),
            k45_batch::<FIVE, S>(w, a, bs2, da4, b0, m),
        );
        for &x in &terms[..m] {
            sum += x;
        }
    }
    sum
}

/// The u32 at `p`, `p + stride`, ... of `m` (<= 8) consecutive blocks, one
/// lane each, by one gather; lanes past `m` are masked off (not read) and 0.
///
/// # Safety
/// The CPU has AVX2; the `m` words are readable.
#[inline(always)]
pub(super) unsafe fn gather_u32x8(p: *const u8, stride: usize, m: usize) -> __m256i {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(m as i32), lanes);
    _mm256_mask_i32gather_epi32::<1>(
        _mm256_setzero_si256(),
        p as *const i32,
        _mm256_mullo_epi32(lanes, _mm256_set1_epi32(stride as i32)),
        mask,
    )
}

/// The fp16 in each u32 lane of `g` (its high half if `high`, else its low
/// half) as f32, exactly.
///
/// # Safety
/// The CPU has AVX2 and F16C.
#[inline(always)]
pub(super) unsafe fn f16_lanes(g: __m256i, high: bool) -> __m256 {
    let h16 = if high {
        _mm256_srli_epi32::<16>(g)
    } else {
        _mm256_and_si256(g, _mm256_set1_epi32(0xFFFF))
    };
    let x = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(h16, h16));
    _mm256_cvtph_ps(_mm256_castsi256_si128(x))
}

/// The f32 scale of each Q8_K block of `a` into `da` (as many as both hold).
pub(super) fn q8k_scales(a: &[u8], da: &mut [f32]) {
    for (d, blk) in da.iter_mut().zip(a.chunks_exact(ACT)) {
        *d = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
    }
}

thread_local! {
    /// Per-thread activation scales, grown to the widest matvec once.
    static DA: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread activation pair sums (Q4_K/Q5_K), likewise.
    static BS2: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A Q4_K/Q5_K rows kernel ([`rows45`] or an AVX-512 twin).
pub(crate) type Rows45 = unsafe fn(usize, *const u8, *const u8, *const i16, *const f32, &mut [f32]);

/// `out[r] = dot(row r of w, a)` for the rows `w` and `out` hold in full,
/// when `a` holds `n / 256` Q8_K blocks (else nothing is written), on this
/// module's AVX2 row kernels.
fn matvec<const KIND: u8>(n: usize, rows: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    let r45: Rows45 = if KIND == 5 {
        rows45::<true>
    } else {
        rows45::<false>
    };
    let r6: RowsLow = super::lowbit_matvec::rows::<{ super::lowbit_matvec::Q6_K }>;
    // SAFETY: AVX2, FMA and F16C are checked by dispatch before any AVX2
    // kernel is handed out; they are all these row kernels need.
    unsafe { matvec_with::<KIND>(n, rows, w, a, out, r45, r6) }
}

/// [`matvec`] on the given row kernels: `r45` must be the Q5_K one when
/// `KIND` is 5, the Q4_K one when 4; `r6`, a `lowbit_matvec` rows kernel
/// of its `Q6_K` layout (super-block sums [`sums6`]), is used when 6.
///
/// # Safety
/// The CPU has the target features of `r45` and `r6`.
pub(crate) unsafe fn matvec_with<const KIND: u8>(
    n: usize,
    rows: usize,
    w: &[u8],
    a: &[u8],
    out: &mut [f32],
    r45: Rows45,
    r6: RowsLow,
) {
    let kind_bytes = match KIND {
        4 => 144,
        5 => 176,
        _ => 210,
    };
    let nb = n / 256;
    let rb = nb * kind_bytes;
    if nb == 0 || a.len() < nb * ACT {
        return;
    }
    if KIND == 6 {
        // SAFETY: the CPU has r6's features (the caller's contract); Q6_K
        // takes the Q8_K row as it is (SUMS_AVX2: nothing prepared).
        unsafe {
            super::lowbit_matvec::matvec_with::<{ super::lowbit_matvec::Q6_K }, SUMS_AVX2>(
                n, rows, w, a, out, r6,
            )
        };
        return;
    }
    let held = rows.min(w.len() / rb).min(out.len());
    // Once per call, for every weight row: each super-block's scale twice
    // per group of four (`[da_4k .. da_4k+3, da_4k .. da_4k+3]`, the lanes
    // of `k45_batch`) and the sums of each pair of 16-value block sums,
    // one per 32-value sub-block.
    with_buf(&DA, 2 * nb.next_multiple_of(4), 0.0, |da4| {
        with_buf(&BS2, 8 * nb, 0, |bs2| {
            for (i, blk) in a.chunks_exact(ACT).take(nb).enumerate() {
                let d = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
                let (k, j) = (i / 4, i % 4);
                da4[8 * k + j] = d;
                da4[8 * k + 4 + j] = d;
                let bsum = |j: usize| {
                    let o = ACT_BSUMS + 2 * j;
                    i16::from_le_bytes([blk[o], blk[o + 1]])
                };
                for (s, x) in bs2[8 * i..8 * i + 8].iter_mut().enumerate() {
                    // At most 2 * 16 * 128 in magnitude: exact in i16.
                    *x = bsum(2 * s).wrapping_add(bsum(2 * s + 1));
                }
            }
            // SAFETY: the CPU has r45's features (the caller's contract);
            // `w` holds `held` rows of nb super-blocks, `a` nb activation
            // blocks (checked above), `bs2` 8 * nb i16 and `da4` 2 * nb
            // rounded up to 8 floats.
            unsafe {
                r45(
                    nb,
                    w.as_ptr(),
                    a.as_ptr(),
                    bs2.as_ptr(),
                    da4.as_ptr(),
                    &mut out[..held],
                )
            };
        })
    });
}

pub(super) fn q4_k_matvec(n: usize, rows: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    matvec::<4>(n, rows, w, a, out)
}

pub(super) fn q5_k_matvec(n: usize, rows: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    matvec::<5>(n, rows, w, a, out)
}

pub(super) fn q6_k_matvec(n: usize, rows: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    matvec::<6>(n, rows, w, a, out)
}
