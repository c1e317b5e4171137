//! Q8_0 x Q8_0 prefill matmul on AVX-512 VNNI in tiles of sixteen weight
//! rows, each block of a tile decoded once per matmul and dotted with
//! every activation row.
//!
//! Block (34 bytes, weights and activations alike): fp16 d, 32 x i8.
//!
//! Decoded block (`DecQ8`, sixteen rows, lane r = row r):
//!
//! ```text
//!   q[k]  bytes 4k..4k+4 of the row's block, each plus 128 (u8: w ^ 0x80)
//!   d     the rows' fp16 d as f32
//! ```
//!
//! `vpdpbusd` takes an unsigned and a signed operand, so the weights are
//! biased to u8 and the activations, broadcast four bytes at a time from
//! memory, stay i8: against activation block `a`, lane r accumulates
//! `sum (w + 128) * a` exactly in i32 (at most 32 * 255 * 128), and
//! subtracting `128 * sum(a)` (worked out once per activation block) leaves
//! the block's exact `isum`, for every byte value of both operands. Each
//! lane then does the scalar reference's `sum += isum as f32 * (dw * da)`
//! in block order (no FMA): bit for bit the scalar kernel, as AVX2's
//! `q8_0_rows` (the decode step and short matmuls) is.

use crate::avx2::q4_q5_tile::with_buf;
use crate::fp16::f16_le;
use std::arch::x86_64::*;

const BB: usize = 34; // block bytes
const QK: usize = 32;
/// Weight rows per tile: one per 32-bit lane of a 512-bit vector.
const ROWS: usize = 16;

/// One block of a sixteen-row tile, decoded (layout in the module doc).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct DecQ8 {
    q: [__m512i; 8],
    d: __m512,
}

/// What every tile needs of one activation block, worked out once per
/// matmul.
#[derive(Clone, Copy, Default)]
struct Pre {
    /// fp16 d of the block as f32.
    da: f32,
    /// 128 * the sum of the block's 32 quants (exact).
    corr: i32,
}

/// Decodes the tile's `dst.len()` blocks, the next tile's rows fetched into
/// L2 on the way (prefetches never fault).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `rows[r]` points
/// at `dst.len() * 34` readable bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode_tile(rows: &[*const u8; ROWS], dst: &mut [DecQ8]) {
    let nb = dst.len();
    let mut o = [0i32; ROWS];
    for (x, &row) in o.iter_mut().zip(rows) {
        // A tile spans at most 16 rows of one matrix: well within i32.
        *x = row.offset_from(rows[0]) as i32;
    }
    let offs = _mm512_loadu_si512(o.as_ptr() as *const _);
    let bias = _mm512_set1_epi8(-128);
    for (b, dec) in dst.iter_mut().enumerate() {
        let next = rows[0].wrapping_add(ROWS * nb * BB + b * ROWS * BB);
        for l in 0..9 {
            _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(64 * l) as *const i8);
        }
        let base = rows[0].add(b * BB);
        // The u32 at byte 0 of each row's block: fp16 d in its low half.
        let head = _mm512_i32gather_epi32::<1>(offs, base as *const _);
        dec.d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(head));
        for k in 0..8 {
            let x = _mm512_i32gather_epi32::<1>(offs, base.add(2 + 4 * k) as *const _);
            dec.q[k] = _mm512_xor_si512(x, bias);
        }
    }
}

/// `out[j][r] = dot(row r, act j)` for a decoded tile and `A` activation
/// rows (`pres[j]` their blocks' [`Pre`]).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `acts[j]` points
/// at `dec.len() * 34` readable bytes, every `pres[j]` at `dec.len()`
/// entries.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_dot<const A: usize>(
    dec: &[DecQ8],
    acts: &[*const u8; A],
    pres: &[*const Pre; A],
) -> [[f32; ROWS]; A] {
    let mut acc = [_mm512_setzero_ps(); A];
    for (b, db) in dec.iter().enumerate() {
        let mut isum = [_mm512_setzero_si512(); A];
        for k in 0..8 {
            for j in 0..A {
                let y = acts[j].add(b * BB + 2 + 4 * k);
                let y = _mm512_set1_epi32((y as *const i32).read_unaligned());
                isum[j] = _mm512_dpbusd_epi32(isum[j], db.q[k], y);
            }
        }
        for j in 0..A {
            let pr = *pres[j].add(b);
            let is = _mm512_sub_epi32(isum[j], _mm512_set1_epi32(pr.corr));
            let scale = _mm512_mul_ps(db.d, _mm512_set1_ps(pr.da));
            acc[j] = _mm512_add_ps(acc[j], _mm512_mul_ps(_mm512_cvtepi32_ps(is), scale));
        }
    }
    let mut out = [[0f32; ROWS]; A];
    for j in 0..A {
        _mm512_storeu_ps(out[j].as_mut_ptr(), acc[j]);
    }
    out
}

thread_local! {
    /// Per-thread decoded tile and activation blocks' [`Pre`], grown to
    /// the largest matmul once.
    static DEC: std::cell::RefCell<Vec<DecQ8>> = const { std::cell::RefCell::new(Vec::new()) };
    static PRE: std::cell::RefCell<Vec<Pre>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[j * rows + r] = dot(row r of w, activation row j of a)` for the
/// rows and activation rows the buffers hold in full (others untouched).
///
/// # Safety
/// The CPU has AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
pub(crate) unsafe fn gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    let nb = n / QK;
    let rb = nb * BB;
    if nb == 0 || rows == 0 || t == 0 {
        return;
    }
    let t = t.min(a.len() / rb).min(out.len() / rows);
    let held = rows.min(w.len() / rb);
    if t == 0 || held == 0 {
        return;
    }
    let act = |j: usize| a[j * rb..].as_ptr();
    with_buf(&PRE, t * nb, Pre::default(), |pre| {
        for (blk, p) in a.chunks_exact(BB).zip(pre.iter_mut()) {
            let sum: i32 = blk[2..].iter().map(|&q| q as i8 as i32).sum();
            *p = Pre {
                da: f16_le(blk[0], blk[1]),
                corr: sum << 7,
            };
        }
        let pres = |j: usize| pre[j * nb..].as_ptr();
        // SAFETY: all-zero bits are a valid `DecQ8` (plain vectors).
        let zero: DecQ8 = unsafe { std::mem::zeroed() };
        with_buf(&DEC, nb, zero, |dec| {
            for r0 in (0..held).step_by(ROWS) {
                let rp: [*const u8; ROWS] = std::array::from_fn(|i| {
                    // SAFETY (of later reads): the row is held, w holds it.
                    w.as_ptr().wrapping_add((r0 + i).min(held - 1) * rb)
                });
                let nr = (held - r0).min(ROWS);
                // SAFETY: here and below, the CPU features are the caller's
                // contract; every row pointer is a held row of nb blocks,
                // every act pointer a held activation row with nb Pre, and
                // dec has nb.
                unsafe { decode_tile(&rp, dec) };
                let mut j = 0;
                while j + 4 <= t {
                    let acts = [act(j), act(j + 1), act(j + 2), act(j + 3)];
                    let ps = [pres(j), pres(j + 1), pres(j + 2), pres(j + 3)];
                    // SAFETY: as above; j + 3 < t.
                    let v = unsafe { tile_dot::<4>(dec, &acts, &ps) };
                    for (i, vi) in v.iter().enumerate() {
                        let at = (j + i) * rows + r0;
                        out[at..at + nr].copy_from_slice(&vi[..nr]);
                    }
                    j += 4;
                }
                while j < t {
                    // SAFETY: as above; j < t.
                    let [v] = unsafe { tile_dot::<1>(dec, &[act(j)], &[pres(j)]) };
                    let at = j * rows + r0;
                    out[at..at + nr].copy_from_slice(&v[..nr]);
                    j += 1;
                }
            }
        })
    })
}
