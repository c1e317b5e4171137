//! AVX-512 super-block sums for the K-quant decode matvec
//! (`avx2::kmatvec`): the same results as its AVX2 `k45_sums` and
//! `q6_block`, lane for lane once folded, from half the instructions. A
//! 512-bit vector holds the 64 values of two 32-value runs, each run's
//! scale in its half (Q4_K, Q5_K) or quarter (Q6_K), where AVX2 takes two
//! 256-bit vectors and a scale broadcast apiece; with VNNI the scaled i16
//! pair sums are added by one `vpdpwssd`.
//!
//! Exactness, as in AVX2: levels (0..32, Q6_K 0..64) times activations
//! (-127..=127) summed in pairs fit i16 (`vpmaddubsw` does not saturate),
//! those times the scale (6-bit, Q6_K i8) and summed fit i32.

use super::{join, scaled_dot};
use crate::avx2::kmatvec::header_sums;
use std::arch::x86_64::*;

/// Offset of the Q8_K block sums from the block's quants.
const BSUMS_FROM_QS: usize = 256;

/// `vpermw` index: the 128-bit quarter `k` of the result takes word `base +
/// k` of the source (Q6_K: 16 values, one scale).
///
/// # Safety
/// The CPU has AVX-512 F and BW (inlined into the AVX-512 kernels).
#[inline(always)]
unsafe fn quarters_of(base: i16) -> __m512i {
    let lo = _mm256_set_m128i(_mm_set1_epi16(base + 1), _mm_set1_epi16(base));
    let hi = _mm256_set_m128i(_mm_set1_epi16(base + 3), _mm_set1_epi16(base + 2));
    join(lo, hi)
}

/// `acc + (i16 pairs of p) . (the i16 pair at s)` in the i32 lanes of
/// `mask`, the others kept: one `vpdpwssd` with its scale broadcast from
/// memory, written by hand (from the intrinsics LLVM splits a masked one
/// into `vpmaddwd`, adds and register broadcasts of each scale, the
/// port-5 shuffles this kernel is short of).
///
/// # Safety
/// The CPU has AVX-512 F and VNNI; `s` points at 4 readable bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dpwssd_bcast(acc: __m512i, mask: __mmask16, p: __m512i, s: *const i32) -> __m512i {
    let mut acc = acc;
    std::arch::asm!(
        "vpdpwssd {acc}{{{k}}}, {p}, dword ptr [{s}]{{1to16}}",
        acc = inout(zmm_reg) acc,
        k = in(kreg) mask,
        p = in(zmm_reg) p,
        s = in(reg) s,
        options(pure, readonly, nostack, preserves_flags),
    );
    acc
}

/// Sum of the two 256-bit halves of `v` (i32 lanes).
///
/// # Safety
/// The CPU has AVX-512 F (inlined into the AVX-512 kernels).
#[inline(always)]
unsafe fn fold(v: __m512i) -> __m256i {
    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
}

/// Q4_K/Q5_K super-block at `p` against the activation quants at `y` and
/// the activation's pair sums `bs2`: `[isum partials x4 | msum partials
/// x4]`, as `avx2::kmatvec::k45_sums` returns them (see there).
///
/// # Safety
/// The CPU has AVX-512 F, BW and VL, AVX2 and F16C, and AVX-512 VNNI when
/// `VNNI` (inlined into the AVX-512 kernels); `p` points at a whole
/// super-block (144 bytes, Q5_K 176), `y` at 256 readable bytes and `bs2`
/// at 8 readable i16.
#[inline(always)]
pub(crate) unsafe fn k45_sums<const FIVE: bool, const VNNI: bool>(
    p: *const u8,
    y: *const u8,
    bs2: *const i16,
) -> __m256i {
    let low = _mm512_set1_epi8(0x0F);
    // The scales as dwords, broadcast from memory per sub-block (a
    // `vpermw` per group costs two port-5 uops, the port that 512-bit
    // shuffles share).
    let (dw, msum) = header_sums(p, bs2);
    let ql = p.add(if FIVE { 48 } else { 16 });
    // Q5_K's fifth bits, and the same shifted down 4 for groups 2 and 3.
    let (qh, qh4) = if FIVE {
        let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(p.add(16) as *const __m256i));
        (qh, _mm512_srli_epi16::<4>(qh))
    } else {
        (_mm512_setzero_si512(), _mm512_setzero_si512())
    };
    // Lanes 0..8 (sub-blocks 2g) and 8..16 (2g + 1) in separate sums.
    let mut acc = [_mm512_setzero_si512(); 2];
    for g in 0..4 {
        // The 32 bytes of group g in both halves: low nibbles (values
        // 64g.., sub-block 2g) kept in the lower half, high nibbles (64g +
        // 32.., 2g + 1) shifted down in the upper: values 64g..64g + 64 in
        // order, as the activations lie.
        let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(ql.add(32 * g) as *const __m256i));
        let q = _mm512_mask_srli_epi16::<4>(q, 0xFFFF_0000, q);
        let lev = if FIVE {
            // Bit 2g of qh[l] is the fifth bit of value 64g + l, bit 2g + 1
            // that of value 64g + 32 + l: moved to bit 4 by a left shift
            // of 4 - 2 (g % 2), one less in the upper half (of qh4 from g
            // = 2). (q & 0x0F) | fifth: ternary-logic 0xEA, (A & B) | C.
            let src = if g < 2 { qh } else { qh4 };
            let cnt = if g % 2 == 0 { (4, 3) } else { (2, 1) };
            let cnt = join(_mm256_set1_epi16(cnt.0), _mm256_set1_epi16(cnt.1));
            let fifth = _mm512_and_si512(_mm512_sllv_epi16(src, cnt), _mm512_set1_epi8(0x10));
            _mm512_ternarylogic_epi32::<0xEA>(q, low, fifth)
        } else {
            _mm512_and_si512(q, low)
        };
        let yv = _mm512_loadu_si512(y.add(64 * g) as *const _);
        let pr = _mm512_maddubs_epi16(lev, yv);
        if VNNI {
            acc[0] = dpwssd_bcast(acc[0], 0x00FF, pr, dw.as_ptr().add(2 * g));
            acc[1] = dpwssd_bcast(acc[1], 0xFF00, pr, dw.as_ptr().add(2 * g + 1));
        } else {
            let scale = _mm512_mask_blend_epi32(
                0xFF00,
                _mm512_set1_epi32(dw[2 * g]),
                _mm512_set1_epi32(dw[2 * g + 1]),
            );
            acc[g % 2] = _mm512_add_epi32(acc[g % 2], _mm512_madd_epi16(pr, scale));
        }
    }
    let acc = _mm512_add_epi32(acc[0], acc[1]);
    let a8 = fold(acc);
    let is = _mm_add_epi32(
        _mm256_castsi256_si128(a8),
        _mm256_extracti128_si256::<1>(a8),
    );
    _mm256_set_m128i(msum, is)
}

/// Q6_K super-block at `p` against the activation quants at `y` (and the
/// block sums after them): eight i32 lanes adding up to the reference's
/// exact `isum`, as `avx2::kmatvec::q6_block` returns them (see there).
///
/// # Safety
/// The CPU has AVX-512 F, BW and VL and AVX2, and AVX-512 VNNI when `VNNI`
/// (inlined into the AVX-512 kernels); `p` points at a whole Q6_K
/// super-block (210 bytes) and `y` at the 288 bytes after a Q8_K block's
/// scale (quants, sums).
#[inline(always)]
pub(crate) unsafe fn q6_block<const VNNI: bool>(p: *const u8, y: *const u8) -> __m256i {
    let low = _mm512_set1_epi8(0x0F);
    let high = _mm512_set1_epi8(0x30);
    let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i));
    let bs = _mm256_loadu_si256(y.add(BSUMS_FROM_QS) as *const __m256i);
    let offset = _mm256_madd_epi16(bs, sc16);
    let sc = _mm512_castsi256_si512(sc16);
    // Runs k = 0, 1 (low nibbles, high bits qh << 4 and << 2) share a
    // vector, k = 0 in its lower half; so do k = 2, 3 (high nibbles, qh >> 0
    // and >> 2).
    let shl01 = join(_mm256_set1_epi16(4), _mm256_set1_epi16(2));
    let shr23 = join(_mm256_setzero_si256(), _mm256_set1_epi16(2));
    let mut acc = _mm512_setzero_si512();
    for h in 0..2 {
        let ql = _mm512_loadu_si512(p.add(64 * h) as *const _);
        let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i));
        // (a & 0x0F) | b, b already masked to 0x30: ternary-logic 0xEA is
        // (A & B) | C with A = a, B = low, C = b.
        let q01 = _mm512_ternarylogic_epi32::<0xEA>(
            ql,
            low,
            _mm512_and_si512(_mm512_sllv_epi16(qh, shl01), high),
        );
        let q23 = _mm512_ternarylogic_epi32::<0xEA>(
            _mm512_srli_epi16::<4>(ql),
            low,
            _mm512_and_si512(_mm512_srlv_epi16(qh, shr23), high),
        );
        // Each 128-bit quarter (16 values) takes one scale: the quarters
        // of q01 are 16-value blocks 8h + 0..4, of q23 8h + 4..8.
        let base = 8 * h as i16;
        let s01 = _mm512_permutexvar_epi16(quarters_of(base), sc);
        let s23 = _mm512_permutexvar_epi16(quarters_of(base + 4), sc);
        let yq = y.add(128 * h);
        let y01 = _mm512_loadu_si512(yq as *const _);
        let y23 = _mm512_loadu_si512(yq.add(64) as *const _);
        acc = scaled_dot::<VNNI>(acc, q01, y01, s01);
        acc = scaled_dot::<VNNI>(acc, q23, y23, s23);
    }
    _mm256_sub_epi32(fold(acc), _mm256_slli_epi32::<5>(offset))
}
