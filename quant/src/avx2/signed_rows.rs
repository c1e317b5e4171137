//! The 32-value types whose weights are signed bytes, Q8_0 and IQ4_NL,
//! against Q8_0 activations on AVX2, eight weight rows at a time: the
//! matvec and matmul kernels behind [`crate::Kernel::gemm`], and the
//! `dot`/`dot4` built on them, so that every path gives the same bits.
//!
//! Q8_0 block (34 bytes): fp16 d, then 32 x i8; value = q * d.
//! IQ4_NL block (18 bytes): fp16 d, then 16 bytes of 4-bit indices into
//! the IQ4 codebook (low nibbles values 0..16, high nibbles 16..32);
//! value = d * KVALUES[index], the index looked up by one `vpshufb`.
//! Activation blocks are Q8_0's layout.
//!
//! Per block, each of the eight rows' 32 weights is dotted with the
//! activation block in the row's own vector (sign trick: `maddubs(|w|,
//! sign(a, w))`, exact for activations in -127..=127, all that
//! `quantize_row` writes; the pair sums then `madd` into eight i32 lanes),
//! and one `vphaddd` tree turns the eight rows' vectors into one whose lane
//! r is row r's exact block sum. Each lane then does what the scalar
//! reference does, in its order: `sum += isum as f32 * (dw * da)`
//! (multiply, round, add, round; no FMA). So the results are bit for bit
//! the scalar kernel's, whichever tile, lane or number of activations a
//! row was computed with; the row kernels this replaces (for both types)
//! summed each row's block terms in eight lanes and were held only to
//! themselves.
//!
//! Against those row kernels (per block and activation: a scale
//! conversion, a broadcast and a horizontal sum's share per row) this does
//! a block's float work once for eight rows; a decode step streams the
//! next eight rows into L2 as it goes.

use super::f16_at;
use super::kmatvec::hsum8;
use super::lowbit::{codebook, iq4_lookup};
use super::q4_q5_tile::{row_halves, row_ptrs};
use std::arch::x86_64::*;

const AB: usize = 34; // Q8_0 activation block bytes
const QK: usize = 32;

/// Weight block bytes: IQ4_NL (`NL`) or Q8_0.
const fn block_bytes(nl: bool) -> usize {
    if nl {
        18
    } else {
        34
    }
}

/// `out[j][r] = dot(row r, act j)` over `nb` blocks for eight rows of
/// IQ4_NL (`NL`) or Q8_0 and `A` activation rows, lane r of each result
/// row r.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; every `rows[r]` points at `nb` readable
/// weight blocks, every `acts[j]` at `nb * 34` readable bytes. With
/// `prefetch`, a later tile of a contiguous matrix (`tile_prefetch_distance`
/// past `rows[0]`) is fetched into L2 on the way (prefetches never fault).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const A: usize, const NL: bool>(
    nb: usize,
    rows: &[*const u8; 8],
    acts: &[*const u8; A],
    prefetch: bool,
) -> [[f32; 8]; A] {
    tile_body::<A, NL, false>(nb, rows, acts, prefetch)
}

/// [`tile`] with AVX-512 VNNI's `vpdpbusd` on 256-bit vectors: the
/// weights biased to u8 (Q8_0: `w ^ 0x80`; IQ4_NL: the codebook plus 128,
/// one `vpshufb`), each row's four-byte products added onto the lanes of
/// `-128 * sum(a)` (one `vpdpbusd` of 128s per activation block, shared by
/// the eight rows): the same exact block sums from half the instructions
/// (no `abs`, `sign` or `madd`), and exact for every activation byte.
///
/// # Safety
/// As [`tile`], and the CPU has AVX-512 F, VL and VNNI.
#[cfg(feature = "avx512")]
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_vnni<const A: usize, const NL: bool>(
    nb: usize,
    rows: &[*const u8; 8],
    acts: &[*const u8; A],
    prefetch: bool,
) -> [[f32; 8]; A] {
    tile_body::<A, NL, true>(nb, rows, acts, prefetch)
}

/// The body of [`tile`] (`VNNI` false) and `tile_vnni`.
///
/// # Safety
/// As [`tile`], inlined into a kernel with AVX2, FMA and F16C (with
/// `VNNI`, AVX-512 F, VL and VNNI too).
#[inline(always)]
unsafe fn tile_body<const A: usize, const NL: bool, const VNNI: bool>(
    nb: usize,
    rows: &[*const u8; 8],
    acts: &[*const u8; A],
    prefetch: bool,
) -> [[f32; 8]; A] {
    let bb = block_bytes(NL);
    let book = if VNNI {
        _mm256_xor_si256(codebook(), _mm256_set1_epi8(-128))
    } else {
        codebook()
    };
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); A];
    for b in 0..nb {
        let off = b * bb;
        if prefetch {
            // 8 blocks of a later tile per block: five lines (Q8_0's 272
            // bytes) or three (IQ4_NL's 144).
            let ahead = crate::simd_shared::tile_prefetch_distance(8 * nb * bb);
            let next = rows[0].wrapping_add(ahead + 8 * off);
            for l in 0..(8 * bb).div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(64 * l) as *const i8);
            }
        }
        // The eight rows' scales, lane r = row r.
        let dw = row_halves(rows, off);
        let q: [__m256i; 8] = std::array::from_fn(|r| {
            if NL {
                iq4_lookup(rows[r].add(off + 2), book)
            } else {
                let w = _mm256_loadu_si256(rows[r].add(off + 2) as *const __m256i);
                if VNNI {
                    _mm256_xor_si256(w, _mm256_set1_epi8(-128))
                } else {
                    w
                }
            }
        });
        let ax: [__m256i; 8] =
            std::array::from_fn(|r| if VNNI { q[r] } else { _mm256_abs_epi8(q[r]) });
        for j in 0..A {
            let ab = acts[j].add(b * AB);
            let y = _mm256_loadu_si256(ab.add(2) as *const __m256i);
            let p: [__m256i; 8] = if VNNI {
                #[cfg(feature = "avx512")]
                {
                    let zero = _mm256_setzero_si256();
                    let c = _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(-128), y);
                    let neg = _mm256_sub_epi32(zero, c);
                    std::array::from_fn(|r| _mm256_dpbusd_epi32(neg, ax[r], y))
                }
                #[cfg(not(feature = "avx512"))]
                unreachable!("VNNI tiles are built with the avx512 feature only")
            } else {
                std::array::from_fn(|r| {
                    _mm256_madd_epi16(_mm256_maddubs_epi16(ax[r], _mm256_sign_epi8(y, q[r])), ones)
                })
            };
            let isum = hsum8(&p);
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(f16_at(ab)));
            acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(_mm256_cvtepi32_ps(isum), scale));
        }
    }
    let mut out = [[0f32; 8]; A];
    for j in 0..A {
        _mm256_storeu_ps(out[j].as_mut_ptr(), acc[j]);
    }
    out
}

/// Whole blocks that `w` and every activation row hold, at most `n / 32`.
fn held_blocks<const NL: bool>(n: usize, w: &[u8], a: &[&[u8]]) -> usize {
    a.iter()
        .fold((n / QK).min(w.len() / block_bytes(NL)), |nb, s| {
            nb.min(s.len() / AB)
        })
}

/// One row against one activation (the tile with the row in every lane).
fn dot<const NL: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = held_blocks::<NL>(n, w, &[a]);
    // SAFETY: AVX2, FMA and F16C are checked by dispatch; both buffers
    // hold nb blocks.
    unsafe { tile::<1, NL>(nb, &[w.as_ptr(); 8], &[a.as_ptr()], false)[0][0] }
}

/// One row against four activations.
fn dot4<const NL: bool>(n: usize, w: &[u8], a: [&[u8]; 4], out: &mut [f32; 4]) {
    let nb = held_blocks::<NL>(n, w, &a);
    let acts = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
    // SAFETY: as in `dot`; every buffer holds nb blocks.
    let v = unsafe { tile::<4, NL>(nb, &[w.as_ptr(); 8], &acts, false) };
    for (o, vj) in out.iter_mut().zip(v) {
        *o = vj[0];
    }
}

/// `out[j * rows + r] = dot(row r of w, activation row j of a)` for the rows
/// and activation rows the buffers hold in full (others untouched).
///
/// # Safety
/// With `VNNI`, the CPU has AVX-512 F, VL and VNNI (AVX2, FMA and F16C are
/// checked by dispatch before any of these kernels is handed out).
unsafe fn gemm<const NL: bool, const VNNI: bool>(
    n: usize,
    rows: usize,
    w: &[u8],
    t: usize,
    a: &[u8],
    out: &mut [f32],
) {
    let Some(crate::simd_shared::Shape {
        nb,
        rb,
        ab,
        t,
        held,
        rows,
    }) = crate::simd_shared::shape(n, QK, block_bytes(NL), AB, rows, w, t, a, out)
    else {
        return;
    };
    let act = |j: usize| a[j * ab..].as_ptr();
    let put = |out: &mut [f32], at: usize, v: &[f32; 8], nr: usize| {
        out[at..at + nr].copy_from_slice(&v[..nr]);
    };
    for r0 in (0..held).step_by(8) {
        let rp = row_ptrs(w, rb, r0, held);
        let nr = (held - r0).min(8);
        let mut j = 0;
        while j + 4 <= t {
            let acts = [act(j), act(j + 1), act(j + 2), act(j + 3)];
            // SAFETY: AVX2, FMA and F16C are checked by dispatch; every row
            // pointer is a held row of nb blocks and every act pointer a
            // held activation row (j + 3 < t).
            let v = unsafe { tile_of::<4, NL, VNNI>(nb, &rp, &acts, false) };
            for (i, vi) in v.iter().enumerate() {
                put(out, (j + i) * rows + r0, vi, nr);
            }
            j += 4;
        }
        while j < t {
            // SAFETY: as above; j < t.
            let [v] = unsafe { tile_of::<1, NL, VNNI>(nb, &rp, &[act(j)], t == 1) };
            put(out, j * rows + r0, &v, nr);
            j += 1;
        }
    }
}

/// [`tile`] or, with `VNNI`, `tile_vnni`.
///
/// # Safety
/// As those.
#[inline(always)]
unsafe fn tile_of<const A: usize, const NL: bool, const VNNI: bool>(
    nb: usize,
    rows: &[*const u8; 8],
    acts: &[*const u8; A],
    prefetch: bool,
) -> [[f32; 8]; A] {
    #[cfg(feature = "avx512")]
    if VNNI {
        return tile_vnni::<A, NL>(nb, rows, acts, prefetch);
    }
    tile::<A, NL>(nb, rows, acts, prefetch)
}

/// The safe dot, four-activation dot and matmul of one type (`$nl`:
/// IQ4_NL, else Q8_0).
macro_rules! entry_points {
    ($nl:literal, $dot:ident, $dot4:ident, $gemm:ident) => {
        pub(super) fn $dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
            dot::<$nl>(n, w, a)
        }
        pub(super) fn $dot4(n: usize, w: &[u8], a: [&[u8]; 4], out: &mut [f32; 4]) {
            dot4::<$nl>(n, w, a, out)
        }
        pub(crate) fn $gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
            // SAFETY: no VNNI: AVX2, FMA and F16C, which dispatch checks.
            unsafe { gemm::<$nl, false>(n, rows, w, t, a, out) }
        }
    };
}
entry_points!(false, q8_0_dot, q8_0_dot4, q8_0_gemm);
entry_points!(true, iq4_nl_dot, iq4_nl_dot4, iq4_nl_gemm);

/// Q8_0's and IQ4_NL's matmul on `tile_vnni` (the AVX-512 path's decode
/// step and short matmuls).
///
/// # Safety
/// The CPU has AVX-512 F, VL and VNNI, AVX2, FMA and F16C.
#[cfg(feature = "avx512")]
pub(crate) unsafe fn gemm_vnni<const NL: bool>(
    n: usize,
    rows: usize,
    w: &[u8],
    t: usize,
    a: &[u8],
    out: &mut [f32],
) {
    gemm::<NL, true>(n, rows, w, t, a, out)
}
