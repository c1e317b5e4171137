//! What the sixteen-row prefill tiles (`q4_k_tile`, `q3_k_tile`,
//! `q2_k_tile`, `iq_tile`, `tile32`) share: the matmul's shape, the
//! walk over its tiles with the per-thread decoded tile, the walk over one
//! tile's blocks with the next tile's prefetch, and the broadcast of four
//! activation bytes.

use crate::avx2::q4_q5_tile::with_buf;
pub(super) use crate::simd_shared::{shape, Shape};
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::thread::LocalKey;

/// The Q8_K activation block the super-block tiles read: f32 d, then 256
/// i8 quants, then 16 i16 sums of 16 quants (`crate::q8_k`).
pub(super) mod q8k {
    /// Block bytes.
    pub(in crate::avx512) const AB: usize = crate::q8_k::BLOCK_BYTES;
    /// Offset of the quants.
    pub(in crate::avx512) const AB_QS: usize = 4;
    /// Offset of the 16-value sums.
    pub(in crate::avx512) const AB_BSUMS: usize = 4 + crate::q8_k::QK;
    /// Values per block.
    pub(in crate::avx512) const QK: usize = crate::q8_k::QK;
}

/// Weight rows per tile: one per 32-bit lane of a 512-bit vector.
pub(super) const ROWS: usize = 16;

/// Walks a matmul of shape `s` tile by tile: for each sixteen weight rows
/// of `w` (the last held row repeated past `s.held`), `decode` into the
/// thread's buffer `key` (`s.nb` entries) once, then `dot4(dec, j)` for
/// activation rows `j..j + 4` and `dot1(dec, j)` for the rest, row `r`'s
/// result of activation `j` going to `out[j * s.rows + r]`.
///
/// # Safety
/// All-zero bits are a valid `D` (the buffer grows with zeroed entries).
pub(super) unsafe fn run<D: Copy>(
    s: &Shape,
    w: &[u8],
    out: &mut [f32],
    key: &'static LocalKey<RefCell<Vec<D>>>,
    decode: impl Fn(&[*const u8; ROWS], &mut [D]),
    dot4: impl Fn(&[D], usize) -> [[f32; ROWS]; 4],
    dot1: impl Fn(&[D], usize) -> [f32; ROWS],
) {
    // SAFETY: the caller's contract.
    let zero: D = unsafe { std::mem::zeroed() };
    with_buf(key, s.nb, zero, |dec| {
        walk(s, w, out, dec, decode, dot4, dot1)
    })
}

thread_local! {
    /// Per-thread activation corrections of [`run_corr`], grown to the
    /// widest matmul once.
    static CORR: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

/// [`run`] for a tile whose dot takes, beside each activation row, `per`
/// i32 per activation block worked out once per matmul: `fill(block,
/// out)` from each Q8_K/Q8_0 block of `a` (`abytes` bytes). `dot4(dec,
/// acts, corrs)` and `dot1(dec, act, corr)` get the rows' pointers.
///
/// # Safety
/// As [`run`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn run_corr<D: Copy>(
    s: &Shape,
    w: &[u8],
    a: &[u8],
    abytes: usize,
    out: &mut [f32],
    key: &'static LocalKey<RefCell<Vec<D>>>,
    per: usize,
    fill: impl Fn(&[u8], &mut [i32]),
    decode: impl Fn(&[*const u8; ROWS], &mut [D]),
    dot4: impl Fn(&[D], &[*const u8; 4], &[*const i32; 4]) -> [[f32; ROWS]; 4],
    dot1: impl Fn(&[D], *const u8, *const i32) -> [f32; ROWS],
) {
    let nb = s.nb;
    with_buf(&CORR, s.t * nb * per, 0, |corr| {
        for (blk, c) in a.chunks_exact(abytes).zip(corr.chunks_exact_mut(per)) {
            fill(blk, c);
        }
        let act = |j: usize| a[j * s.ab..].as_ptr();
        let cor = |j: usize| corr[j * nb * per..].as_ptr();
        // SAFETY: the caller's contract.
        unsafe {
            run(
                s,
                w,
                out,
                key,
                decode,
                |dec, j| {
                    let acts = [act(j), act(j + 1), act(j + 2), act(j + 3)];
                    dot4(dec, &acts, &[cor(j), cor(j + 1), cor(j + 2), cor(j + 3)])
                },
                |dec, j| dot1(dec, act(j), cor(j)),
            )
        }
    })
}

/// [`run`] on a decoded-tile buffer `dec` of `s.nb` entries.
fn walk<D>(
    s: &Shape,
    w: &[u8],
    out: &mut [f32],
    dec: &mut [D],
    decode: impl Fn(&[*const u8; ROWS], &mut [D]),
    dot4: impl Fn(&[D], usize) -> [[f32; ROWS]; 4],
    dot1: impl Fn(&[D], usize) -> [f32; ROWS],
) {
    for r0 in (0..s.held).step_by(ROWS) {
        // Pointers into `w` only (later reads are the kernels' to bound).
        let rp = std::array::from_fn(|i| w.as_ptr().wrapping_add((r0 + i).min(s.held - 1) * s.rb));
        let nr = (s.held - r0).min(ROWS);
        decode(&rp, dec);
        let mut put = |j: usize, v: &[f32; ROWS]| {
            let at = j * s.rows + r0;
            out[at..at + nr].copy_from_slice(&v[..nr]);
        };
        let mut j = 0;
        while j + 4 <= s.t {
            for (i, v) in dot4(dec, j).iter().enumerate() {
                put(j + i, v);
            }
            j += 4;
        }
        while j < s.t {
            put(j, &dot1(dec, j));
            j += 1;
        }
    }
}

/// Lane r: `rows[r] - rows[0]` in bytes, the offsets of a tile's gathers.
///
/// # Safety
/// The CPU has AVX-512 F (inlined into the tile kernels); the rows are
/// within one matrix, at most sixteen rows apart (well within i32).
#[inline(always)]
pub(super) unsafe fn row_offsets(rows: &[*const u8; ROWS]) -> __m512i {
    let mut o = [0i32; ROWS];
    for (x, &row) in o.iter_mut().zip(rows) {
        *x = row.offset_from(rows[0]) as i32;
    }
    _mm512_loadu_si512(o.as_ptr() as *const _)
}

/// Calls `decode(b, &mut dst[b])` for each of the tile's blocks (`wb`
/// bytes per row each), first fetching into L2 the next tile's block `b`
/// (its sixteen rows follow this tile's in a contiguous matrix; prefetches
/// never fault).
///
/// # Safety
/// The CPU has SSE (every x86-64 CPU); `decode`'s own contract.
#[inline(always)]
pub(super) unsafe fn each_block<D>(
    rows: &[*const u8; ROWS],
    wb: usize,
    dst: &mut [D],
    mut decode: impl FnMut(usize, &mut D),
) {
    let nb = dst.len();
    for (b, d) in dst.iter_mut().enumerate() {
        let next = rows[0].wrapping_add(ROWS * nb * wb + b * ROWS * wb);
        for l in 0..(ROWS * wb).div_ceil(64) {
            _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(64 * l) as *const i8);
        }
        decode(b, d);
    }
}

/// The i32 at `p` in all sixteen lanes (a broadcast load, which LLVM folds
/// into the instruction that uses it).
///
/// # Safety
/// The CPU has AVX-512 F; `p` points at 4 readable bytes.
#[inline(always)]
pub(super) unsafe fn bc(p: *const u8) -> __m512i {
    _mm512_set1_epi32((p as *const i32).read_unaligned())
}

/// The sixteen lanes of each accumulator, as `tile_dot` returns them.
///
/// # Safety
/// The CPU has AVX-512 F (inlined into the tile kernels).
#[inline(always)]
pub(super) unsafe fn store<const A: usize>(acc: [__m512; A]) -> [[f32; ROWS]; A] {
    let mut out = [[0f32; ROWS]; A];
    for j in 0..A {
        _mm512_storeu_ps(out[j].as_mut_ptr(), acc[j]);
    }
    out
}

/// The K-quant reference's super-block term `d * da * isum - dmin * da *
/// msum` per lane (no FMA), `da` the f32 scale at the start of the Q8_K
/// activation block `ab`.
///
/// # Safety
/// The CPU has AVX-512 F (inlined into the tile kernels); `ab` points at 4
/// readable bytes.
#[inline(always)]
pub(super) unsafe fn d_dmin_term(
    ab: *const u8,
    d: __m512,
    dmin: __m512,
    isum: __m512i,
    msum: __m512i,
) -> __m512 {
    let da = _mm512_set1_ps((ab as *const f32).read_unaligned());
    let t1 = _mm512_mul_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(isum));
    let t2 = _mm512_mul_ps(_mm512_mul_ps(dmin, da), _mm512_cvtepi32_ps(msum));
    _mm512_sub_ps(t1, t2)
}

/// The per-thread decoded tile `DEC` of a tile module whose `tile_dot`
/// needs only the activation rows, and its matmul `gemm` (the module's
/// `QK`, `AB`, `decode_tile` and `tile_dot::<A>(dec, acts)`; `$dec` its
/// decoded block, `$wb` its block bytes).
macro_rules! plain_gemm {
    ($dec:ty, $wb:expr) => {
        thread_local! {
            /// Per-thread decoded tile, grown to the widest matmul once.
            static DEC: std::cell::RefCell<Vec<$dec>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }

        /// `out[j * rows + r] = dot(row r of w, activation row j of a)` for
        /// the rows and activation rows the buffers hold in full (others
        /// untouched).
        ///
        /// # Safety
        /// The CPU has AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
        pub(crate) unsafe fn gemm(
            n: usize,
            rows: usize,
            w: &[u8],
            t: usize,
            a: &[u8],
            out: &mut [f32],
        ) {
            let Some(s) = tiles::shape(n, QK, $wb, AB, rows, w, t, a, out) else {
                return;
            };
            let act = |j: usize| a[j * s.ab..].as_ptr();
            // SAFETY: for the walk and each closure, the CPU features are
            // the caller's contract; every row pointer is a held row of nb
            // blocks, every act pointer a held activation row (j + 3 < t,
            // j < t); all-zero bits are a valid decoded block (plain
            // vectors).
            unsafe {
                tiles::run(
                    &s,
                    w,
                    out,
                    &DEC,
                    |rp, dec| decode_tile(rp, dec),
                    |dec, j| tile_dot::<4>(dec, &[act(j), act(j + 1), act(j + 2), act(j + 3)]),
                    |dec, j| tile_dot::<1>(dec, &[act(j)])[0],
                )
            }
        }
    };
}
pub(super) use plain_gemm;

/// Per lane, `lo * scale_lo + hi * scale_hi` (i16 x i16, summed in i32):
/// `lo` into the low i16 of the lane, `hi` into the high one, and one
/// `vpmaddwd` with the lane's pair of scales. Exact when `lo` and `hi` fit
/// an i16.
///
/// # Safety
/// The CPU has AVX-512 F and BW (inlined into the tile kernels).
#[inline(always)]
pub(super) unsafe fn pair_madd(lo: __m512i, hi: __m512i, scales: __m512i) -> __m512i {
    let packed = _mm512_mask_blend_epi16(0xAAAA_AAAA, lo, _mm512_slli_epi32::<16>(hi));
    _mm512_madd_epi16(packed, scales)
}
