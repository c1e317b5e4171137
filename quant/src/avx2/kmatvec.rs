//! K-quant matvec on AVX2: many weight rows against one Q8_K activation row
//! (a decode step), bit for bit the scalar reference.
//!
//! What it saves over the generic row kernel in `kquants` (which also
//! serves the prefill forms):
//! - the activation row is read once per call for what every weight row
//!   needs of it: the f32 scale of each super-block, stored contiguously so
//!   that eight of them load as one vector;
//! - a super-block's 6-bit scales and mins (Q4_K, Q5_K) are decoded with a
//!   few 128-bit shuffles and shifts, and each sub-block's scale is a
//!   `vpshufb` of them, instead of scalar bit-twiddling and broadcasts;
//! - the integer sums of eight super-blocks are reduced horizontally
//!   together (a `vphaddd` tree, lane b = super-block b) and their f32
//!   terms computed in eight lanes at once, rather than two horizontal sums
//!   and a scalar tail per super-block.
//!
//! Bit-identity: each super-block's integer sums are exact, and lane b
//! evaluates the scalar reference's f32 expression for super-block b with
//! the same operations in the same order (no FMA); the eight terms are
//! then added to the row's sum one after the other, in super-block order,
//! as the reference does.

use super::q4_q5_tile::with_buf;
use std::arch::x86_64::*;

const ACT: usize = 292; // Q8_K block: f32 d, 256 x i8, 16 x i16 sums
const ACT_QS: usize = 4;
const ACT_BSUMS: usize = 4 + 256;
const _: () = assert!(ACT_BSUMS + 32 == ACT);

/// Which K-quant a [`row`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Q4,
    Q5,
    Q6,
}

const fn block_bytes(kind: Kind) -> usize {
    match kind {
        Kind::Q4 => 144,
        Kind::Q5 => 176,
        Kind::Q6 => 210,
    }
}

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
unsafe fn scales_mins(p: *const u8) -> __m128i {
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

/// `vpshufb` indices: row `s` picks i16 element `s` (0..8) of each 128-bit
/// lane. Read through an opaque pointer ([`shuffles`]) so that LLVM keeps
/// one `vpshufb` per scale rather than rewriting it as a shift and a
/// broadcast (two instructions).
static PICK16: [[u8; 32]; 8] = {
    let mut t = [[0u8; 32]; 8];
    let mut s = 0;
    while s < 8 {
        let mut i = 0;
        while i < 32 {
            t[s][i] = (2 * s + i % 2) as u8;
            i += 1;
        }
        s += 1;
    }
    t
};

/// [`PICK16`], through a pointer LLVM cannot see into.
#[inline(always)]
fn shuffles() -> *const [u8; 32] {
    std::hint::black_box(PICK16.as_ptr())
}

/// Q4_K/Q5_K super-block at `p` against the activation quants at `y` (256
/// x i8, then the 16 x i16 sums), with `pick` = [`shuffles`]:
/// `[isum partials x4 | msum partials x4]`, where the four lanes of each
/// half add up to the reference's exact `isum = sum_s scale[s] *
/// dot(levels_s, a_s)` and `msum = sum_s min[s] * (bsum[2s] + bsum[2s +
/// 1])`.
///
/// # Safety
/// The CPU has AVX2 and F16C (inlined into the AVX2 kernels); `p` points
/// at a whole super-block (144 bytes, Q5_K 176), `y` at the 288 bytes
/// after a Q8_K block's scale (quants, sums) and `pick` at the eight
/// rows of `PICK16`.
#[inline(always)]
unsafe fn k45_block<const FIVE: bool>(
    p: *const u8,
    y: *const u8,
    pick: *const [u8; 32],
) -> __m256i {
    let low = _mm256_set1_epi8(0x0F);
    let s16 = _mm256_cvtepu8_epi16(scales_mins(p)); // [scales | mins] as i16
    let scl = _mm256_permute2x128_si256::<0x00>(s16, s16);
    let t1 = _mm256_unpackhi_epi16(s16, s16); // [.. | m4, m4, ..., m7, m7]
    let t0 = _mm256_unpacklo_epi16(s16, s16); // [.. | m0, m0, ..., m3, m3]
    let mdup = _mm256_permute2x128_si256::<0x31>(t0, t1);
    let bs = _mm256_loadu_si256(y.add(ACT_BSUMS - ACT_QS) as *const __m256i);
    let msum = _mm256_madd_epi16(bs, mdup);
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
        let s0 = _mm256_shuffle_epi8(scl, _mm256_loadu_si256(pick.add(2 * g) as *const __m256i));
        let s1 = _mm256_shuffle_epi8(
            scl,
            _mm256_loadu_si256(pick.add(2 * g + 1) as *const __m256i),
        );
        let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), s0);
        let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), s1);
        acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
    }
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(acc, msum),
        _mm256_permute2x128_si256::<0x31>(acc, msum),
    )
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

/// Lane b = the sum of the eight i32 lanes of `v[b]`.
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernels).
#[inline(always)]
unsafe fn hsum8(v: &[__m256i; 8]) -> __m256i {
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

/// For `v[b] = [four lanes of x_b | four lanes of z_b]`: (lane b = sum of
/// x_b's lanes, lane b = sum of z_b's lanes).
///
/// # Safety
/// The CPU has AVX2 (inlined into the AVX2 kernels).
#[inline(always)]
unsafe fn hsum4x2(v: &[__m256i; 8]) -> (__m256i, __m256i) {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    // [x0 x1 x2 x3 | z0 z1 z2 z3] and the same for 4..8.
    let q0 = _mm256_hadd_epi32(h01, h23);
    let q1 = _mm256_hadd_epi32(h45, h67);
    (
        _mm256_permute2x128_si256::<0x20>(q0, q1),
        _mm256_permute2x128_si256::<0x31>(q0, q1),
    )
}

/// Dot of the weight row at `w` (`nb` super-blocks of `kind`) with the
/// activation row at `a`, whose super-block scales are `da[..nb]`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` points at `nb` super-blocks, `a` at
/// `nb` Q8_K blocks and `da` at `nb` rounded up to a multiple of 8 floats.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row<const KIND: u8>(nb: usize, w: *const u8, a: *const u8, da: *const f32) -> f32 {
    let kind = match KIND {
        4 => Kind::Q4,
        5 => Kind::Q5,
        _ => Kind::Q6,
    };
    let wb = block_bytes(kind);
    let pick = shuffles();
    let mut sum = 0f32;
    let mut b0 = 0;
    while b0 < nb {
        let m = (nb - b0).min(8);
        let mut v = [_mm256_setzero_si256(); 8];
        // fp16 d (and dmin) of each super-block of the batch.
        for (b, vb) in v.iter_mut().enumerate().take(m) {
            let i = b0 + b;
            let p = w.add(i * wb);
            // Addresses past the matrix are harmless: prefetches never fault.
            let ahead = p.wrapping_add(PREFETCH_AHEAD);
            let mut o = 0;
            while o < wb {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(o) as *const i8);
                o += 64;
            }
            let y = a.add(i * ACT + ACT_QS);
            match kind {
                Kind::Q4 | Kind::Q5 => {
                    *vb = if KIND == 5 {
                        k45_block::<true>(p, y, pick)
                    } else {
                        k45_block::<false>(p, y, pick)
                    };
                }
                Kind::Q6 => *vb = q6_block(p, y),
            }
        }
        let das = _mm256_loadu_ps(da.add(b0));
        // The batch's fp16 d (Q4_K/Q5_K: and dmin, the u16 after it) as
        // (d, dmin): one gather of the u32 at byte 0 (Q6_K: 206, d its high
        // half) of each super-block, lanes past `m` masked off (not read).
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(m as i32), lanes);
        let at = if kind == Kind::Q6 { 206 } else { 0 };
        let g = _mm256_mask_i32gather_epi32::<1>(
            _mm256_setzero_si256(),
            w.add(b0 * wb + at) as *const i32,
            _mm256_mullo_epi32(lanes, _mm256_set1_epi32(wb as i32)),
            mask,
        );
        let (lo16, hi16) = if kind == Kind::Q6 {
            (_mm256_srli_epi32::<16>(g), _mm256_setzero_si256())
        } else {
            (
                _mm256_and_si256(g, _mm256_set1_epi32(0xFFFF)),
                _mm256_srli_epi32::<16>(g),
            )
        };
        // [d0..d4, dmin0..dmin4 | d4..d8, dmin4..dmin8] -> [d0..d8 | dmin0..dmin8]
        let dd = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(lo16, hi16));
        let d = _mm256_cvtph_ps(_mm256_castsi256_si128(dd));
        // Lane b: super-block b0 + b's term, as the reference writes it.
        let t = if kind == Kind::Q6 {
            // d * da * isum
            _mm256_mul_ps(_mm256_mul_ps(d, das), _mm256_cvtepi32_ps(hsum8(&v)))
        } else {
            // d * da * isum - dmin * da * msum
            let (is, ms) = hsum4x2(&v);
            let dmin = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(dd));
            _mm256_sub_ps(
                _mm256_mul_ps(_mm256_mul_ps(d, das), _mm256_cvtepi32_ps(is)),
                _mm256_mul_ps(_mm256_mul_ps(dmin, das), _mm256_cvtepi32_ps(ms)),
            )
        };
        if m == 8 {
            // In registers: lanes 0, 1, 2, 3 of each half in turn.
            for half in [_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t)] {
                sum += _mm_cvtss_f32(half);
                sum += _mm_cvtss_f32(_mm_movehdup_ps(half));
                sum += _mm_cvtss_f32(_mm_movehl_ps(half, half));
                sum += _mm_cvtss_f32(_mm_shuffle_ps::<0xFF>(half, half));
            }
        } else {
            let mut terms = [0f32; 8];
            _mm256_storeu_ps(terms.as_mut_ptr(), t);
            for &x in &terms[..m] {
                sum += x;
            }
        }
        b0 += m;
    }
    sum
}

thread_local! {
    /// Per-thread activation scales, grown to the widest matvec once.
    static DA: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[r] = dot(row r of w, a)` for the rows `w` and `out` hold in full,
/// when `a` holds `n / 256` Q8_K blocks (else nothing is written).
fn matvec<const KIND: u8>(n: usize, rows: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    let kind_bytes = match KIND {
        4 => block_bytes(Kind::Q4),
        5 => block_bytes(Kind::Q5),
        _ => block_bytes(Kind::Q6),
    };
    let nb = n / 256;
    let rb = nb * kind_bytes;
    if nb == 0 || a.len() < nb * ACT {
        return;
    }
    let held = rows.min(w.len() / rb).min(out.len());
    with_buf(&DA, nb.next_multiple_of(8), 0.0, |da| {
        for (d, blk) in da.iter_mut().zip(a.chunks_exact(ACT)) {
            *d = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
        }
        for (o, wr) in out[..held].iter_mut().zip(w.chunks_exact(rb)) {
            // SAFETY: AVX2, FMA and F16C are checked by dispatch; `wr` holds
            // nb super-blocks, `a` nb activation blocks (checked above) and
            // `da` nb rounded up to 8 floats.
            *o = unsafe { row::<KIND>(nb, wr.as_ptr(), a.as_ptr(), da.as_ptr()) };
        }
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
