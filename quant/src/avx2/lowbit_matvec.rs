//! IQ4_XS, Q3_K and Q2_K matvec on AVX2: many weight rows against one Q8_K
//! activation row (a decode step), bit for bit the scalar references
//! (`iq4_xs::dot_q8_k`, `q3_k::dot_q8_k`, `q2_k::dot_q8_k`). Q6_K's decode
//! (`kmatvec`) runs on the same rows driver with its own super-block sums.
//!
//! What they save over the generic row kernels in `lowbit` (which also
//! serve the prefill forms), per super-block of every row:
//! - IQ4_XS: the activation is laid out once per call in the weights' own
//!   order. A sub-block pair's 32 index bytes hold the low nibbles (values
//!   0..16) of both sub-blocks and, in their high nibbles, values 16..32, so
//!   the activation row is copied as `[a_A[0..16], a_B[0..16]]`,
//!   `[a_A[16..32], a_B[16..32]]` per pair, with `|a|` beside it: no lane
//!   permute of the weights, no `abs` per row, and one scale shuffle per
//!   pair (lane 0 sub-block A, lane 1 sub-block B) instead of two.
//! - Q3_K: the sixteen 6-bit scales are decoded with a few 128-bit shifts
//!   and masks ([`q3_scales`]) instead of sixteen scalar bit-fiddles and a
//!   trip through memory.
//! - All three: the integer sums of eight super-blocks (Q2_K: and their
//!   min sums) are reduced horizontally together (`kmatvec::hsum8`), lane b
//!   = super-block b, their fp16 d (and dmin) read with one gather and their
//!   f32 terms computed in those lanes; the weights are prefetched ahead as
//!   the K-quant matvec does.
//!
//! Bit-identity: each super-block's integer sum is exact (IQ4_XS: |a| <=
//! 128 against codebook magnitudes <= 127; Q3_K: levels + 4 <= 7, so
//! `maddubs` pairs stay within i16; Q2_K: levels <= 3), and lane b
//! evaluates the reference's `d * da * isum` (Q2_K: `d * da * isum - dmin *
//! da * msum`) with the same operations in the same order; the terms are
//! added to the row's sum one after the other, in super-block order, as the
//! references do.

#[cfg(feature = "avx512")]
use super::kmatvec::SUMS_512_VNNI;
use super::kmatvec::{add_terms, f16_lanes, gather_u32x8, hsum8, q8k_scales, sums6, SUMS_AVX2};
use super::lowbit::{codebook, iq4_xs_scales, pair_control, q3_hbit};
use super::q4_q5_tile::with_buf;
use std::arch::x86_64::*;

const ACT: usize = 292; // Q8_K block: f32 d, 256 x i8, 16 x i16 sums
const ACT_QS: usize = 4;
const ACT_BSUMS: usize = 4 + 256;
/// Per super-block of IQ4_XS's prepared activation: 256 quants in weight
/// order, then their magnitudes in the same order.
const PREP: usize = 512;
/// The same prefetch distance as the K-quant matvec's.
const PREFETCH_AHEAD: usize = 4096;

/// The layouts, as [`rows_body`]'s `KIND`.
pub(crate) const IQ4_XS: u8 = 0;
pub(crate) const Q3_K: u8 = 1;
const Q2_K: u8 = 2;
pub(crate) const Q6_K: u8 = 3;

/// Super-block bytes of `KIND`.
const fn block_bytes(kind: u8) -> usize {
    match kind {
        IQ4_XS => 136,
        Q3_K => 110,
        Q6_K => 210,
        _ => 84,
    }
}

/// Byte offset of the u32 that holds `KIND`'s fp16 d, and whether d is its
/// high half (Q2_K: d is the low half, dmin the high one).
const fn d_at(kind: u8) -> (usize, bool) {
    match kind {
        IQ4_XS => (0, false),
        Q3_K => (106, true),
        Q6_K => (206, true),
        _ => (80, false),
    }
}

/// The activation of one super-block (`y`: 256 quants) in IQ4_XS's weight
/// order, `out[..256]` the quants and `out[256..]` their magnitudes: pair k
/// (64 values from 64k) is `[y[64k..+16], y[64k+32..+16]]` (the low nibbles
/// of its 32 index bytes) then `[y[64k+16..+16], y[64k+48..+16]]` (the
/// high).
fn prepare_iq4(y: &[u8], out: &mut [u8]) {
    for k in 0..4 {
        let b = 64 * k;
        for (j, src) in [b, b + 32, b + 16, b + 48].into_iter().enumerate() {
            out[b + 16 * j..b + 16 * j + 16].copy_from_slice(&y[src..src + 16]);
        }
    }
    for i in 0..256 {
        out[256 + i] = (out[i] as i8).unsigned_abs();
    }
}

/// The exact `isum = sum_s ls[s] * dot(codebook[idx_s], a_s)` of the
/// IQ4_XS super-block at `p`, spread over eight i32 lanes, against the
/// prepared activation at `y` ([`prepare_iq4`]).
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernel); `p` points at a whole
/// super-block (136 bytes) and `y` at [`PREP`] readable bytes.
#[inline(always)]
unsafe fn iq4_block(p: *const u8, y: *const u8, book: __m256i) -> __m256i {
    let low = _mm256_set1_epi8(0x0F);
    // Scalar bit-fiddling here measured faster than a vector decode: it
    // runs on the integer units beside the vector work.
    let scales = iq4_xs_scales(std::slice::from_raw_parts(p, 8));
    let mut acc = _mm256_setzero_si256();
    for k in 0..4 {
        let q = _mm256_loadu_si256(p.add(8 + 32 * k) as *const __m256i);
        let w_lo = _mm256_shuffle_epi8(book, _mm256_and_si256(q, low));
        let w_hi = _mm256_shuffle_epi8(book, _mm256_and_si256(_mm256_srli_epi16::<4>(q), low));
        let y_lo = _mm256_loadu_si256(y.add(64 * k) as *const __m256i);
        let y_hi = _mm256_loadu_si256(y.add(64 * k + 32) as *const __m256i);
        let u_lo = _mm256_loadu_si256(y.add(256 + 64 * k) as *const __m256i);
        let u_hi = _mm256_loadu_si256(y.add(256 + 64 * k + 32) as *const __m256i);
        // Lane 0: sub-block 2k's scale; lane 1: sub-block 2k + 1's.
        let s = _mm256_shuffle_epi8(scales, pair_control(2 * k));
        let p_lo = _mm256_maddubs_epi16(u_lo, _mm256_sign_epi8(w_lo, y_lo));
        let p_hi = _mm256_maddubs_epi16(u_hi, _mm256_sign_epi8(w_hi, y_hi));
        // Each i16 is up to 32512 in magnitude: scaled apart.
        let prod = _mm256_add_epi32(_mm256_madd_epi16(p_lo, s), _mm256_madd_epi16(p_hi, s));
        acc = _mm256_add_epi32(acc, prod);
    }
    acc
}

/// The sixteen scales (s - 32) of the Q3_K super-block at `p` as i16, in
/// run order. Packed bytes p[96..108]: the low nibble of scale j is
/// `p[96 + j] & 15` for j < 8 and `p[88 + j] >> 4` after; its top two bits
/// `(p[104 + j % 4] >> 2 * (j / 4)) & 3` (dword lane j / 4 of the four
/// bytes broadcast, shifted by 2 * lane).
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernel); `p` points at a whole
/// super-block (110 bytes: read here are bytes 94..110).
#[inline(always)]
unsafe fn q3_scales(p: *const u8) -> __m256i {
    _mm256_sub_epi16(
        _mm256_cvtepu8_epi16(q3_scales_raw(p)),
        _mm256_set1_epi16(32),
    )
}

/// The sixteen 6-bit scales of the Q3_K super-block at `p` as bytes
/// (0..64, not yet minus 32), in run order (see [`q3_scales`]).
///
/// # Safety
/// As [`q3_scales`].
#[inline(always)]
pub(crate) unsafe fn q3_scales_raw(p: *const u8) -> __m128i {
    // Bytes 94..110: the 12 packed bytes are at 2..14.
    let v = _mm_loadu_si128(p.add(94) as *const __m128i);
    let lo8 = _mm_srli_si128::<2>(v);
    let nib = _mm_set1_epi8(0x0F);
    let low = _mm_unpacklo_epi64(
        _mm_and_si128(lo8, nib),
        _mm_and_si128(_mm_srli_epi16::<4>(lo8), nib),
    );
    // Bytes 104..108 (at 10..14) in every dword lane.
    let top = _mm_shuffle_epi32::<0x00>(_mm_srli_si128::<10>(v));
    let top = _mm_and_si128(
        _mm_srlv_epi32(top, _mm_setr_epi32(0, 2, 4, 6)),
        _mm_set1_epi8(3),
    );
    _mm_or_si128(low, _mm_slli_epi16::<4>(top))
}

/// The exact `isum = sum_r s[r] * dot(levels_r, a_r)` of the Q3_K
/// super-block at `p` (levels -4..=3, dotted as `w + 4`, the `- 4` taken
/// through the activation's 16-value sums at `y + 256`), spread over eight
/// i32 lanes, against the activation quants at `y`.
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernel); `p` points at a whole
/// super-block (110 bytes) and `y` at the 288 bytes after a Q8_K block's
/// scale (quants, sums).
#[inline(always)]
unsafe fn q3_block(p: *const u8, y: *const u8) -> __m256i {
    let three = _mm256_set1_epi8(3);
    let all = q3_scales(p);
    let halves = [
        _mm256_permute2x128_si256::<0x00>(all, all),
        _mm256_permute2x128_si256::<0x11>(all, all),
    ];
    let hm = _mm256_loadu_si256(p as *const __m256i);
    let mut acc = _mm256_setzero_si256();
    for (h, half) in halves.iter().enumerate() {
        let qs = _mm256_loadu_si256(p.add(32 + 32 * h) as *const __m256i);
        for jj in 0..4 {
            let lv = match jj {
                0 => qs,
                1 => _mm256_srli_epi16::<2>(qs),
                2 => _mm256_srli_epi16::<4>(qs),
                _ => _mm256_srli_epi16::<6>(qs),
            };
            let lv = _mm256_or_si256(_mm256_and_si256(lv, three), q3_hbit(hm, 4 * h + jj));
            let s = _mm256_shuffle_epi8(*half, pair_control(2 * jj));
            let ya = _mm256_loadu_si256(y.add(128 * h + 32 * jj) as *const __m256i);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(lv, ya), s));
        }
    }
    // sum over runs of s * (sum (w + 4) a) - 4 * s * bsum
    let bs = _mm256_loadu_si256(y.add(ACT_BSUMS - ACT_QS) as *const __m256i);
    _mm256_sub_epi32(acc, _mm256_slli_epi32::<2>(_mm256_madd_epi16(bs, all)))
}

/// The exact `(isum, msum)` of the Q2_K super-block at `p` (`isum = sum_r
/// (s[r] & 15) * dot(levels_r, a_r)`, `msum = sum_r (s[r] >> 4) *
/// bsum_r`), each spread over eight i32 lanes, against the activation
/// quants at `y` and their 16-value sums at `y + 256`.
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernel); `p` points at a whole
/// super-block (84 bytes) and `y` at the 288 bytes after a Q8_K block's
/// scale (quants, sums).
#[inline(always)]
unsafe fn q2_block(p: *const u8, y: *const u8) -> (__m256i, __m256i) {
    let three = _mm256_set1_epi8(3);
    let sc = _mm_loadu_si128(p as *const __m128i);
    let mins = _mm256_cvtepu8_epi16(_mm_srli_epi16::<4>(_mm_and_si128(
        sc,
        _mm_set1_epi8(0xF0u8 as i8),
    )));
    let all = _mm256_cvtepu8_epi16(_mm_and_si128(sc, _mm_set1_epi8(0x0F)));
    let halves = [
        _mm256_permute2x128_si256::<0x00>(all, all),
        _mm256_permute2x128_si256::<0x11>(all, all),
    ];
    let mut acc = _mm256_setzero_si256();
    for (h, half) in halves.iter().enumerate() {
        let qs = _mm256_loadu_si256(p.add(16 + 32 * h) as *const __m256i);
        for jj in 0..4 {
            let lv = match jj {
                0 => qs,
                1 => _mm256_srli_epi16::<2>(qs),
                2 => _mm256_srli_epi16::<4>(qs),
                _ => _mm256_srli_epi16::<6>(qs),
            };
            let lv = _mm256_and_si256(lv, three);
            let s = _mm256_shuffle_epi8(*half, pair_control(2 * jj));
            let ya = _mm256_loadu_si256(y.add(128 * h + 32 * jj) as *const __m256i);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(lv, ya), s));
        }
    }
    let bs = _mm256_loadu_si256(y.add(ACT_BSUMS - ACT_QS) as *const __m256i);
    (acc, _mm256_madd_epi16(bs, mins))
}

/// Super-block `i` of the row at `w` (`KIND`) against the activation `y`
/// (as [`row_body`] takes it): its integer sums spread over eight i32
/// lanes, and Q2_K's min sums likewise (else zero). The weights
/// [`PREFETCH_AHEAD`] bytes on are prefetched.
///
/// # Safety
/// As [`row_body`], with `i < nb`.
#[inline(always)]
unsafe fn block<const KIND: u8, const S: u8>(
    w: *const u8,
    y: *const u8,
    i: usize,
    book: __m256i,
) -> (__m256i, __m256i) {
    let wb = block_bytes(KIND);
    let p = w.add(i * wb);
    // Addresses past the matrix are harmless: prefetches never fault.
    let ahead = p.wrapping_add(PREFETCH_AHEAD);
    let mut o = 0;
    while o < wb {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(o) as *const i8);
        o += 64;
    }
    let zero = _mm256_setzero_si256();
    match KIND {
        Q6_K => (sums6::<S>(p, y.add(i * ACT + ACT_QS)), zero),
        #[cfg(feature = "avx512")]
        IQ4_XS if S == SUMS_512_VNNI => (
            crate::avx512::lowsums::iq4_xs_block(p, y.add(i * PREP)),
            zero,
        ),
        IQ4_XS => (iq4_block(p, y.add(i * PREP), book), zero),
        #[cfg(feature = "avx512")]
        Q3_K if S == SUMS_512_VNNI => {
            (crate::avx512::lowsums::q3_k_block(p, y.add(i * PREP)), zero)
        }
        Q3_K => (q3_block(p, y.add(i * ACT + ACT_QS)), zero),
        _ => q2_block(p, y.add(i * ACT + ACT_QS)),
    }
}

/// The terms `d * da * isum` (Q2_K: minus `dmin * da * msum`) of eight
/// super-blocks, lane l's sums `v[l]` (and `mv[l]`), its u32 holding d (and
/// dmin) in `g`, its activation scale in `das`: as the reference writes
/// each term.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C (inlined into a row kernel).
#[inline(always)]
unsafe fn terms<const KIND: u8>(
    v: &[__m256i; 8],
    mv: &[__m256i; 8],
    g: __m256i,
    das: __m256,
) -> __m256 {
    let high = d_at(KIND).1;
    let t = _mm256_mul_ps(
        _mm256_mul_ps(f16_lanes(g, high), das),
        _mm256_cvtepi32_ps(hsum8(v)),
    );
    if KIND == Q2_K {
        let dmin = f16_lanes(g, true);
        let m_t = _mm256_mul_ps(_mm256_mul_ps(dmin, das), _mm256_cvtepi32_ps(hsum8(mv)));
        _mm256_sub_ps(t, m_t)
    } else {
        t
    }
}

/// `out[r] = dot(row r, y)` for the rows at `w` (`out.len()` rows of `nb`
/// super-blocks of `KIND`, one after the other) against the activation
/// `y` (IQ4_XS: `nb` x [`PREP`] prepared bytes; Q3_K: the Q8_K row itself,
/// or on AVX-512 its prepared layout), whose super-block scales are
/// `da[..nb]`.
///
/// Rows of eight or more super-blocks go one at a time, their terms eight
/// super-blocks at a time (lane b: super-block b0 + b); shorter rows (a 7B
/// dt projection's are one super-block) eight rows at a time, lane r row
/// r's super-block b, so that no lane idles and no per-row epilogue runs.
/// Either way every row's terms are added to its sum one after the other,
/// from 0.0 and in super-block order, as the reference does.
///
/// `S` picks the super-block sums (`kmatvec::SUMS_AVX2`, or with
/// `SUMS_512_VNNI` IQ4_XS's and Q3_K's from `crate::avx512::lowsums`,
/// against their own prepared layouts).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C (and the AVX-512 features `S` names,
/// inlined into a rows kernel that has them); `w` points at `out.len()`
/// rows of `nb` super-blocks, `y` at `nb` activation blocks of its layout
/// and `da` at `nb` rounded up to a multiple of 8 floats.
#[inline(always)]
pub(crate) unsafe fn rows_body<const KIND: u8, const S: u8>(
    nb: usize,
    w: *const u8,
    y: *const u8,
    da: *const f32,
    out: &mut [f32],
) {
    let wb = block_bytes(KIND);
    let rb = nb * wb;
    let at = d_at(KIND).0;
    let book = codebook();
    let zero = _mm256_setzero_si256();
    if nb < 8 {
        for (g, o) in out.chunks_mut(8).enumerate() {
            let (w, m) = (w.add(8 * g * rb), o.len());
            let mut sum = _mm256_setzero_ps();
            for b in 0..nb {
                let (mut v, mut mv) = ([zero; 8], [zero; 8]);
                for r in 0..m {
                    (v[r], mv[r]) = block::<KIND, S>(w.add(r * rb), y, b, book);
                }
                let g = gather_u32x8(w.add(b * wb + at), rb, m);
                sum = _mm256_add_ps(sum, terms::<KIND>(&v, &mv, g, _mm256_set1_ps(*da.add(b))));
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
            o.copy_from_slice(&lanes[..m]);
        }
        return;
    }
    for (r, o) in out.iter_mut().enumerate() {
        let w = w.add(r * rb);
        let mut sum = 0f32;
        let mut b0 = 0;
        while b0 < nb {
            let m = (nb - b0).min(8);
            let (mut v, mut mv) = ([zero; 8], [zero; 8]);
            for b in 0..m {
                (v[b], mv[b]) = block::<KIND, S>(w, y, b0 + b, book);
            }
            // The batch's fp16 d (Q2_K: and dmin, the other half of its u32).
            let g = gather_u32x8(w.add(b0 * wb + at), wb, m);
            let t = terms::<KIND>(&v, &mv, g, _mm256_loadu_ps(da.add(b0)));
            add_terms(&mut sum, t, m);
            b0 += m;
        }
        *o = sum;
    }
}

/// [`rows_body`] on the AVX2 sums.
///
/// # Safety
/// As [`rows_body`]: the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rows<const KIND: u8>(
    nb: usize,
    w: *const u8,
    y: *const u8,
    da: *const f32,
    out: &mut [f32],
) {
    rows_body::<KIND, SUMS_AVX2>(nb, w, y, da, out)
}

/// A rows kernel of this module's shape ([`rows`] or an AVX-512 twin).
pub(crate) type RowsLow = unsafe fn(usize, *const u8, *const u8, *const f32, &mut [f32]);

thread_local! {
    /// Per-thread activation scales, grown to the widest matvec once.
    static DA: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread prepared activations (IQ4_XS), likewise.
    static Y: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[r] = dot(row r of w, a)` for the rows `w` and `out` hold in full,
/// when `a` holds `n / 256` Q8_K blocks (else nothing is written).
fn matvec<const KIND: u8>(n: usize, rows: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    // SAFETY: AVX2, FMA and F16C are checked by dispatch before any AVX2
    // kernel is handed out; they are all `row` needs.
    unsafe { matvec_with::<KIND, SUMS_AVX2>(n, rows, w, a, out, self::rows::<KIND>) }
}

/// [`matvec`] on the rows kernel `kernel`, built on the sums `S` (whose
/// IQ4_XS activation layout this prepares).
///
/// # Safety
/// The CPU has the target features of `kernel`.
pub(crate) unsafe fn matvec_with<const KIND: u8, const S: u8>(
    n: usize,
    rows: usize,
    w: &[u8],
    a: &[u8],
    out: &mut [f32],
    kernel: RowsLow,
) {
    let nb = n / 256;
    let rb = nb * block_bytes(KIND);
    if nb == 0 || a.len() < nb * ACT {
        return;
    }
    let held = rows.min(w.len() / rb).min(out.len());
    with_buf(&DA, nb.next_multiple_of(8), 0.0, |da| {
        q8k_scales(a, da);
        let mut rows = |y: &[u8]| {
            // SAFETY: the CPU has the kernel's features (the caller's
            // contract); `w` holds `held` rows of nb super-blocks, `y` nb
            // activation blocks of KIND's layout (checked above, or
            // prepared below) and `da` nb rounded up to 8 floats.
            unsafe { kernel(nb, w.as_ptr(), y.as_ptr(), da.as_ptr(), &mut out[..held]) };
        };
        if KIND == IQ4_XS || (KIND == Q3_K && S != SUMS_AVX2) {
            with_buf(&Y, nb * PREP, 0, |y| {
                for (blk, yp) in a.chunks_exact(ACT).zip(y.chunks_exact_mut(PREP)) {
                    prepare::<KIND, S>(&blk[ACT_QS..ACT_QS + 256], yp);
                }
                rows(y)
            })
        } else {
            rows(a)
        }
    });
}

/// The activation super-block `q` (256 quants) laid out for `KIND`'s
/// super-block sums `S`: [`prepare_iq4`] for AVX2's IQ4_XS, else the
/// AVX-512 layouts of `crate::avx512::lowsums`.
fn prepare<const KIND: u8, const S: u8>(q: &[u8], out: &mut [u8]) {
    #[cfg(feature = "avx512")]
    if S == SUMS_512_VNNI {
        if KIND == IQ4_XS {
            crate::avx512::lowsums::prepare_iq4_xs(q, out)
        } else {
            crate::avx512::lowsums::prepare_q3_k(q, out)
        }
        return;
    }
    prepare_iq4(q, out)
}

pub(super) fn iq4_xs_matvec(n: usize, rows: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    matvec::<IQ4_XS>(n, rows, w, a, out)
}

pub(super) fn q3_k_matvec(n: usize, rows: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    matvec::<Q3_K>(n, rows, w, a, out)
}

pub(super) fn q2_k_matvec(n: usize, rows: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    matvec::<Q2_K>(n, rows, w, a, out)
}
