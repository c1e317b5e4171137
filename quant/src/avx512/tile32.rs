//! Prefill matmul of the 32-value block types (Q8_0, Q4_0, Q4_1, Q5_0,
//! Q5_1, IQ4_NL) against Q8_0 activations on AVX-512 VNNI, in tiles of sixteen
//! weight rows: each block of a tile decoded once per matmul and dotted
//! with every activation row.
//!
//! Weight blocks: fp16 d first; Q4_1/Q5_1 then an fp16 min m; Q5_0/Q5_1
//! then a u32 whose bit i is the fifth bit of value i; then the quants
//! (Q8_0: 32 x i8; the others 16 bytes whose low nibbles are values 0..16
//! and high nibbles 16..32; for IQ4_NL indices into the IQ4 codebook). Activation blocks (Q8_0, 34 bytes): fp16 d,
//! 32 x i8.
//!
//! Decoded block (`Dec`, sixteen rows, lane r = row r):
//!
//! ```text
//!   q[k]  values 4k..4k+4 of the row's block as u8: the level (0..15, with
//!         the fifth bit 0..31), for Q8_0 the quant plus 128 (w ^ 0x80),
//!         for IQ4_NL KVALUES[index] + 128 (one `vpshufb` of a biased table)
//!   d, m  the rows' fp16 d (and min) as f32
//! ```
//!
//! Against activation block `a`, broadcast four bytes at a time from
//! memory, `vpdpbusd` accumulates `sum u * a` exactly in i32 lane by lane
//! (at most 32 * 255 * 128); taking off `c * sum(a)` (c = 128 for Q8_0's
//! and IQ4_NL's bias, 8 for Q4_0, 16 for Q5_0, worked out once per
//! activation block)
//! leaves the block's exact `isum` for every byte of both operands. Each
//! lane then does the scalar reference's float expression in block order
//! (no FMA): `sum += isum as f32 * (dw * da)`, for Q4_1/Q5_1 `sum += isum
//! as f32 * (dw * da) + m * (da * sum(a))`. So the results are bit for bit
//! the scalar kernel's, as AVX2's kernels (which serve decode and short
//! matmuls) are.

use super::tiles::{self, ROWS};
use crate::avx2::q4_q5_tile::with_buf;
use crate::fp16::f16_le;
use crate::iq4_nl::KVALUES;
use std::arch::x86_64::*;

const AB: usize = 34; // Q8_0 activation block bytes
const QK: usize = 32;

/// The weight types, as `gemm`'s `KIND`.
pub(crate) const Q8_0: u8 = 0;
pub(crate) const Q4_0: u8 = 1;
pub(crate) const Q4_1: u8 = 2;
pub(crate) const Q5_0: u8 = 3;
pub(crate) const Q5_1: u8 = 4;
pub(crate) const IQ4_NL: u8 = 5;

/// Block bytes of `KIND`.
const fn block_bytes(kind: u8) -> usize {
    match kind {
        Q8_0 => 34,
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        Q5_1 => 24,
        _ => 18,
    }
}

/// Whether `KIND` has a min (Q4_1, Q5_1).
const fn has_min(kind: u8) -> bool {
    matches!(kind, Q4_1 | Q5_1)
}

/// The multiple of an activation block's quant sum taken off `isum`.
const fn offset(kind: u8) -> i32 {
    match kind {
        Q8_0 | IQ4_NL => 128,
        Q4_0 => 8,
        Q5_0 => 16,
        _ => 0,
    }
}

/// One block of a sixteen-row tile, decoded (layout in the module doc).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Dec {
    q: [__m512i; 8],
    d: __m512,
    m: __m512,
}

/// What every tile needs of one activation block, worked out once per
/// matmul.
#[derive(Clone, Copy, Default)]
struct Pre {
    /// fp16 d of the block as f32.
    da: f32,
    /// `offset(KIND)` * the sum of the block's 32 quants (exact).
    corr: i32,
    /// Q4_1/Q5_1: `da * sum` (the scalar reference's factor of the min).
    dam: f32,
}

/// Decodes the tile's `dst.len()` blocks, the next tile's rows fetched into
/// L2 on the way (prefetches never fault).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `rows[r]` points
/// at `dst.len()` blocks of `KIND`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode_tile<const KIND: u8>(rows: &[*const u8; ROWS], dst: &mut [Dec]) {
    let bb = block_bytes(KIND);
    let offs = tiles::row_offsets(rows);
    let gather = |p: *const u8| _mm512_i32gather_epi32::<1>(offs, p as *const _);
    let low = _mm512_set1_epi8(0x0F);
    // Byte 0 of each dword spread over the dword (`vpshufb`, per 128 bits).
    let spread = _mm512_set4_epi32(0x0C0C_0C0C, 0x0808_0808, 0x0404_0404, 0);
    let bit_of_byte = _mm512_set1_epi32(0x0804_0201);
    let biased: [u8; 16] = std::array::from_fn(|i| (KVALUES[i] as u8) ^ 0x80);
    let book = _mm512_broadcast_i32x4(_mm_loadu_si128(biased.as_ptr() as *const __m128i));
    let (qh_at, qs_at) = match KIND {
        Q5_0 => (2, 6),
        Q5_1 => (4, 8),
        Q4_1 => (0, 4),
        _ => (0, 2),
    };
    tiles::each_block(rows, bb, dst, |b, dec| {
        let base = rows[0].add(b * bb);
        // The u32 at byte 0 of each row's block: fp16 d, then (Q4_1, Q5_1)
        // the fp16 min.
        let head = gather(base);
        dec.d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(head));
        dec.m = if has_min(KIND) {
            _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(head)))
        } else {
            _mm512_setzero_ps()
        };
        if KIND == Q8_0 {
            for k in 0..8 {
                let x = gather(base.add(qs_at + 4 * k));
                dec.q[k] = _mm512_xor_si512(x, _mm512_set1_epi8(-128));
            }
            return;
        }
        for k in 0..4 {
            let x = gather(base.add(qs_at + 4 * k));
            dec.q[k] = _mm512_and_si512(x, low);
            dec.q[4 + k] = _mm512_and_si512(_mm512_srli_epi16::<4>(x), low);
        }
        if KIND == IQ4_NL {
            for q in dec.q.iter_mut() {
                *q = _mm512_shuffle_epi8(book, *q);
            }
        }
        if matches!(KIND, Q5_0 | Q5_1) {
            let qh = gather(base.add(qh_at));
            for (g, q) in dec.q.iter_mut().enumerate() {
                // Bits 4g..4g + 4 of the row's u32: the fifth bits of
                // values 4g..4g + 4, one per byte of q[g]'s lane.
                let x = _mm512_srlv_epi32(qh, _mm512_set1_epi32(4 * g as i32));
                let set = _mm512_test_epi8_mask(_mm512_shuffle_epi8(x, spread), bit_of_byte);
                *q = _mm512_mask_add_epi8(*q, set, *q, _mm512_set1_epi8(0x10));
            }
        }
    });
}

/// `out[j][r] = dot(row r, act j)` for a decoded tile and `A` activation
/// rows (`pres[j]` their blocks' [`Pre`]).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `acts[j]` points
/// at `dec.len() * 34` readable bytes, every `pres[j]` at `dec.len()`
/// entries.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_dot<const A: usize, const KIND: u8>(
    dec: &[Dec],
    acts: &[*const u8; A],
    pres: &[*const Pre; A],
) -> [[f32; ROWS]; A] {
    let mut acc = [_mm512_setzero_ps(); A];
    for (b, db) in dec.iter().enumerate() {
        let mut isum = [_mm512_setzero_si512(); A];
        for k in 0..8 {
            for j in 0..A {
                let y = acts[j].add(b * AB + 2 + 4 * k);
                let y = _mm512_set1_epi32((y as *const i32).read_unaligned());
                isum[j] = _mm512_dpbusd_epi32(isum[j], db.q[k], y);
            }
        }
        for j in 0..A {
            let pr = *pres[j].add(b);
            let scale = _mm512_mul_ps(db.d, _mm512_set1_ps(pr.da));
            if has_min(KIND) {
                let t = _mm512_mul_ps(_mm512_cvtepi32_ps(isum[j]), scale);
                let m = _mm512_mul_ps(db.m, _mm512_set1_ps(pr.dam));
                acc[j] = _mm512_add_ps(acc[j], _mm512_add_ps(t, m));
            } else {
                let is = _mm512_sub_epi32(isum[j], _mm512_set1_epi32(pr.corr));
                acc[j] = _mm512_add_ps(acc[j], _mm512_mul_ps(_mm512_cvtepi32_ps(is), scale));
            }
        }
    }
    tiles::store(acc)
}

thread_local! {
    /// Per-thread decoded tile and activation blocks' [`Pre`], grown to
    /// the largest matmul once.
    static DEC: std::cell::RefCell<Vec<Dec>> = const { std::cell::RefCell::new(Vec::new()) };
    static PRE: std::cell::RefCell<Vec<Pre>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[j * rows + r] = dot(row r of w, activation row j of a)` for the
/// rows and activation rows the buffers hold in full (others untouched),
/// `w` of the type `KIND`.
///
/// # Safety
/// The CPU has AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C.
pub(crate) unsafe fn gemm<const KIND: u8>(
    n: usize,
    rows: usize,
    w: &[u8],
    t: usize,
    a: &[u8],
    out: &mut [f32],
) {
    let Some(s) = tiles::shape(n, QK, block_bytes(KIND), AB, rows, w, t, a, out) else {
        return;
    };
    let (nb, act) = (s.nb, |j: usize| a[j * s.ab..].as_ptr());
    with_buf(&PRE, s.t * nb, Pre::default(), |pre| {
        for (blk, p) in a.chunks_exact(AB).zip(pre.iter_mut()) {
            let sum: i32 = blk[2..].iter().map(|&q| q as i8 as i32).sum();
            let da = f16_le(blk[0], blk[1]);
            *p = Pre {
                da,
                corr: offset(KIND) * sum,
                dam: da * sum as f32,
            };
        }
        let pres = |j: usize| pre[j * nb..].as_ptr();
        // SAFETY: for the walk and each closure, the CPU features are the
        // caller's contract; every row pointer is a held row of nb blocks,
        // every act pointer a held activation row with its nb Pre (j + 3 <
        // t, j < t); all-zero bits are a valid `Dec` (plain vectors).
        unsafe {
            tiles::run(
                &s,
                w,
                out,
                &DEC,
                |rp, dec| decode_tile::<KIND>(rp, dec),
                |dec, j| {
                    let acts = [act(j), act(j + 1), act(j + 2), act(j + 3)];
                    let ps = [pres(j), pres(j + 1), pres(j + 2), pres(j + 3)];
                    tile_dot::<4, KIND>(dec, &acts, &ps)
                },
                |dec, j| tile_dot::<1, KIND>(dec, &[act(j)], &[pres(j)])[0],
            )
        }
    })
}
