//! IQ4_XS, IQ3_XXS, IQ3_S, IQ2_XXS, IQ2_XS and IQ2_S x Q8_K prefill
//! matmul on AVX-512 VNNI in tiles of sixteen weight rows: `q4_k_tile`'s
//! scheme with the types' codebook or grid (`KIND`).
//!
//! IQ4_XS super-block (136 bytes): fp16 d, u16 scales_h, 4 bytes
//! scales_l, 128 bytes of 4-bit codebook indices (per 32-value sub-block:
//! 16 bytes, low nibble value l, high nibble value l + 16); sub-block s has
//! the 6-bit scale ls_s (see `crate::iq4_xs::scales`) and value = d * (ls_s
//! - 32) * KVALUES[index].
//!
//! IQ3_XXS super-block (98 bytes, see `crate::iq3`): fp16 d, 64 grid
//! index bytes (index 8s + k: values 32s + 4k.. as one entry of four
//! levels), then per sub-block a u32 of four 7-bit sign indices (one per
//! eight values, the eighth sign their parity) and the scale in its top
//! four bits (ls = 2s + 1; value = d * ls / 4 * level). IQ3_S (110 bytes):
//! fp16 d, 64 index bytes, 8 bytes of ninth index bits (bit k of byte s),
//! 32 bytes of sign bits (one per value), 4 bytes of 4-bit scales (ls =
//! 2s + 1; value = d * ls * level). IQ2_XXS (66 bytes, see `crate::iq2`):
//! fp16 d, then per sub-block four grid index bytes (eight values each)
//! and a u32 laid out as IQ3_XXS's (value = d * ls / 8 * level). IQ2_XS
//! (74 bytes): fp16 d, per eight values a u16 of a 9-bit grid index and a
//! 7-bit sign index, then a scale byte per sub-block (low nibble the first
//! 16 values', high nibble the last 16's). IQ2_S (82 bytes): fp16 d, 32
//! low index bytes, 32 sign bytes, two high index bits per eight values
//! (8 bytes), a scale byte per sub-block as IQ2_XS's. The IQ2_XS/IQ2_S
//! sub-blocks are dotted in halves of 16, each with its own scale and
//! correction.
//!
//! Decoded super-block (`DecX16`, sixteen rows, lane r = row r):
//!
//! ```text
//!   q[s][k]  values 32s+4k..32s+4k+4 as u8: IQ4_XS KVALUES[index] + 128,
//!            IQ3/IQ2 the signed grid level + 64
//!   sc[s]    i32 ls_s - 32 (IQ4_XS), ls_s (IQ3, IQ2; IQ2_XS/IQ2_S: of
//!            the first 16 values, `sc_hi[s]` of the last 16)
//!   d        the rows' fp16 d as f32
//! ```
//!
//! `vpdpbusd` takes an unsigned and a signed operand, so the weights are
//! biased to u8 (IQ4_XS: one `vpshufb` of a biased table; IQ3: the grid
//! entry, gathered by index, plus 64, or 64 minus it where its sign bit is
//! set) and the activations, broadcast four bytes at a time from memory,
//! stay i8: per sub-block, lane r accumulates `sum (v + bias) * a`
//! exactly, and subtracting the bias (128, IQ3 64) times the sub-block's
//! activation sum (the Q8_K block sums, worked out once per activation
//! super-block) leaves its exact `sum v * a`; times the scale (`vpmulld`)
//! and summed, the reference's `isum`. Each lane then does the scalar
//! reference's `sum += d * da * isum as f32` in super-block order (no
//! FMA), IQ3_XXS times 0.25 and the IQ2 types times 0.125 at the end as
//! their references do: bit for bit the scalar kernel, as AVX2's kernels
//! (which serve decode and short matmuls) are.

use super::tiles::q8k::{AB, AB_BSUMS, AB_QS, QK};
use super::tiles::{self, bc, ROWS};
use crate::iq2_grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID};
use crate::iq3_grids::{IQ3S_GRID, IQ3XXS_GRID};
use crate::iq4_nl::KVALUES;
use crate::iq4_xs::scales;
use std::arch::x86_64::*;

/// The weight types, as `gemm`'s `KIND`.
pub(crate) const IQ4_XS: u8 = 0;
pub(crate) const IQ3_XXS: u8 = 1;
pub(crate) const IQ3_S: u8 = 2;
pub(crate) const IQ2_XXS: u8 = 3;
pub(crate) const IQ2_XS: u8 = 4;
pub(crate) const IQ2_S: u8 = 5;

/// Whether `KIND` scales each 16 values on its own (the IQ2_XS and IQ2_S
/// sub-blocks of 32 hold two scales).
const fn halves(kind: u8) -> bool {
    matches!(kind, IQ2_XS | IQ2_S)
}

/// Super-block bytes of `KIND`.
const fn block_bytes(kind: u8) -> usize {
    match kind {
        IQ4_XS => 136,
        IQ3_XXS => 98,
        IQ2_XXS => 66,
        IQ2_XS => 74,
        IQ2_S => 82,
        _ => 110,
    }
}

/// The bias of `KIND`'s decoded weights, as a shift (128 or 64).
const fn bias_shift(kind: u8) -> u32 {
    if kind == IQ4_XS {
        7
    } else {
        6
    }
}

const WB: usize = block_bytes(IQ4_XS);

/// One super-block of a sixteen-row tile, decoded (layout in the module doc).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct DecX16 {
    q: [[__m512i; 8]; 8],
    sc: [__m512i; 8],
    /// IQ2_XS and IQ2_S: the multipliers of the second 16 values of each
    /// sub-block (`sc` the first 16's).
    sc_hi: [__m512i; 8],
    d: __m512,
}

/// Decodes the tile's `dst.len()` super-blocks, the next tile's rows
/// fetched into L2 on the way (prefetches never fault).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `rows[r]` points
/// at `dst.len() * 136` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode_tile<const KIND: u8>(rows: &[*const u8; ROWS], dst: &mut [DecX16]) {
    if KIND != IQ4_XS {
        let offs = tiles::row_offsets(rows);
        tiles::each_block(rows, block_bytes(KIND), dst, |b, d| {
            decode_iq3::<KIND>(rows[0].add(b * block_bytes(KIND)), offs, d)
        });
        return;
    }
    let offs = tiles::row_offsets(rows);
    let low = _mm512_set1_epi8(0x0F);
    // The codebook plus 128, in each 128-bit quarter for `vpshufb`.
    let biased: [u8; 16] = std::array::from_fn(|i| (KVALUES[i] as u8) ^ 0x80);
    let table = _mm512_broadcast_i32x4(_mm_loadu_si128(biased.as_ptr() as *const __m128i));
    tiles::each_block(rows, WB, dst, |b, dst| {
        let off = b * WB;
        let base = rows[0].add(off);
        let head = _mm512_i32gather_epi32::<1>(offs, base as *const _);
        dst.d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(head));
        for s in 0..8 {
            for k in 0..4 {
                let p = base.add(8 + 16 * s + 4 * k);
                let x = _mm512_i32gather_epi32::<1>(offs, p as *const _);
                let lo = _mm512_and_si512(x, low);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(x), low);
                dst.q[s][k] = _mm512_shuffle_epi8(table, lo);
                dst.q[s][4 + k] = _mm512_shuffle_epi8(table, hi);
            }
        }
        let mut sc = [[0i32; ROWS]; 8];
        for (r, &row) in rows.iter().enumerate() {
            let ls = scales(std::slice::from_raw_parts(row.add(off), WB));
            for (col, l) in sc.iter_mut().zip(ls) {
                col[r] = l;
            }
        }
        for (v, col) in dst.sc.iter_mut().zip(&sc) {
            *v = _mm512_loadu_si512(col.as_ptr() as *const _);
        }
    });
}

/// Decodes one IQ3_XXS, IQ3_S or IQ2_XXS super-block of the sixteen rows whose
/// block starts at `base` (row 0) and `base + offs` lane r.
///
/// # Safety
/// The CPU has AVX-512 F and BW, AVX2 and F16C (inlined into the decode
/// kernel); every row's block is whole.
#[inline(always)]
unsafe fn decode_iq3<const KIND: u8>(base: *const u8, offs: __m512i, dst: &mut DecX16) {
    let gather = |at: usize| _mm512_i32gather_epi32::<1>(offs, base.add(at) as *const _);
    // The grid as u32 (the IQ2 types: each u64 entry as two, low half
    // first; a [u64; N] is 2N u32 in the same bytes, and u32's alignment
    // is less than u64's).
    let as_u32 =
        |g: &'static [u64]| std::slice::from_raw_parts(g.as_ptr() as *const u32, 2 * g.len());
    let grid: &[u32] = match KIND {
        IQ3_S => &IQ3S_GRID,
        IQ2_XXS => as_u32(&IQ2XXS_GRID),
        IQ2_XS => as_u32(&IQ2XS_GRID),
        IQ2_S => as_u32(&IQ2S_GRID),
        _ => &IQ3XXS_GRID,
    };
    let iq2 = matches!(KIND, IQ2_XXS | IQ2_XS | IQ2_S);
    let bias = _mm512_set1_epi8(64);
    let (byte, nibble) = (_mm512_set1_epi32(0xFF), _mm512_set1_epi32(0xF));
    let ls = |x: __m512i| _mm512_add_epi32(_mm512_slli_epi32::<1>(x), _mm512_set1_epi32(1));
    // Byte 0 of each dword spread over the dword (`vpshufb`, per 128 bits).
    let spread = _mm512_set4_epi32(0x0C0C_0C0C, 0x0808_0808, 0x0404_0404, 0);
    // A 7-bit sign index with its parity as bit 7 (ggml's ksigns).
    let with_parity = |i: __m512i| {
        let mut p = _mm512_xor_si512(i, _mm512_srli_epi32::<4>(i));
        p = _mm512_xor_si512(p, _mm512_srli_epi32::<2>(p));
        p = _mm512_xor_si512(p, _mm512_srli_epi32::<1>(p));
        _mm512_or_si512(
            i,
            _mm512_slli_epi32::<7>(_mm512_and_si512(p, _mm512_set1_epi32(1))),
        )
    };
    let shifted = |x: __m512i, n: usize| _mm512_srl_epi32(x, _mm_cvtsi32_si128(n as i32));
    dst.d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(gather(0)));
    let scales = match KIND {
        IQ3_S => [gather(106); 2],
        IQ2_XS => [gather(66), gather(70)],
        IQ2_S => [gather(74), gather(78)],
        _ => [_mm512_setzero_si512(); 2],
    };
    for s in 0..8 {
        // Lane r: the sign bits of the sub-block's 32 values (bit v: value
        // 32s + v negative), its multiplier ls (the IQ2_XS/IQ2_S: one per
        // 16 values), and (the IQ2 types) the grid entry of values 8l.. in
        // `entry[l]`.
        let mut entry = [_mm512_setzero_si512(); 4];
        let signs = match KIND {
            IQ3_S => {
                dst.sc[s] = ls(_mm512_and_si512(shifted(scales[0], 4 * s), nibble));
                gather(74 + 4 * s)
            }
            IQ2_S => {
                let b = _mm512_and_si512(shifted(scales[s / 4], 8 * (s % 4)), byte);
                dst.sc[s] = ls(_mm512_and_si512(b, nibble));
                dst.sc_hi[s] = ls(_mm512_srli_epi32::<4>(b));
                let (lo, qh) = (gather(2 + 4 * s), gather(66 + s));
                for (l, e) in entry.iter_mut().enumerate() {
                    let high = _mm512_and_si512(shifted(qh, 2 * l), _mm512_set1_epi32(3));
                    let low = _mm512_and_si512(shifted(lo, 8 * l), byte);
                    *e = _mm512_or_si512(low, _mm512_slli_epi32::<8>(high));
                }
                gather(34 + 4 * s)
            }
            IQ2_XS => {
                let b = _mm512_and_si512(shifted(scales[s / 4], 8 * (s % 4)), byte);
                dst.sc[s] = ls(_mm512_and_si512(b, nibble));
                dst.sc_hi[s] = ls(_mm512_srli_epi32::<4>(b));
                let q2 = [gather(2 + 8 * s), gather(6 + 8 * s)];
                let mut signs = _mm512_setzero_si512();
                for (l, e) in entry.iter_mut().enumerate() {
                    // u16 l: a 9-bit entry index, then a 7-bit sign index.
                    let q = _mm512_and_si512(
                        shifted(q2[l / 2], 16 * (l % 2)),
                        _mm512_set1_epi32(0xFFFF),
                    );
                    *e = _mm512_and_si512(q, _mm512_set1_epi32(511));
                    let sb = with_parity(_mm512_srli_epi32::<9>(q));
                    signs = _mm512_or_si512(
                        signs,
                        _mm512_sll_epi32(sb, _mm_cvtsi32_si128(8 * l as i32)),
                    );
                }
                signs
            }
            _ => {
                // IQ3_XXS and IQ2_XXS: four 7-bit sign indices and the
                // scale in one u32.
                let aux = gather(if KIND == IQ2_XXS {
                    6 + 8 * s
                } else {
                    66 + 4 * s
                });
                let mut signs = _mm512_setzero_si512();
                for g in 0..4 {
                    let i = _mm512_and_si512(shifted(aux, 7 * g), _mm512_set1_epi32(127));
                    let sb = with_parity(i);
                    signs = _mm512_or_si512(
                        signs,
                        _mm512_sll_epi32(sb, _mm_cvtsi32_si128(8 * g as i32)),
                    );
                }
                dst.sc[s] = ls(_mm512_srli_epi32::<28>(aux));
                if KIND == IQ2_XXS {
                    let x = gather(2 + 8 * s);
                    for (l, e) in entry.iter_mut().enumerate() {
                        *e = _mm512_and_si512(shifted(x, 8 * l), byte);
                    }
                }
                signs
            }
        };
        // The eight index bytes of the sub-block (IQ3_S: and byte s of qh
        // in the low byte of `qh`).
        let (x0, x1) = if iq2 {
            (_mm512_setzero_si512(), _mm512_setzero_si512())
        } else {
            (gather(2 + 8 * s), gather(6 + 8 * s))
        };
        let qh = if KIND == IQ3_S {
            gather(66 + s)
        } else {
            _mm512_setzero_si512()
        };
        for k in 0..8 {
            let mut idx = if iq2 {
                // Entry k / 2, its half k % 2.
                let e = _mm512_slli_epi32::<1>(entry[k / 2]);
                _mm512_or_si512(e, _mm512_set1_epi32((k % 2) as i32))
            } else {
                let x = if k < 4 { x0 } else { x1 };
                _mm512_and_si512(shifted(x, 8 * (k % 4)), byte)
            };
            if KIND == IQ3_S {
                let hb = _mm512_and_si512(shifted(qh, k), _mm512_set1_epi32(1));
                idx = _mm512_or_si512(idx, _mm512_slli_epi32::<8>(hb));
            }
            let idx = _mm512_and_si512(idx, _mm512_set1_epi32(grid.len() as i32 - 1));
            // SAFETY (of the reads): every lane indexes the grid (masked).
            let g = _mm512_i32gather_epi32::<4>(idx, grid.as_ptr() as *const _);
            // Values 4k..4k + 4: bits 4k.. of the lane's signs, in byte k / 2
            // at 4 (k % 2).
            let sb = shifted(signs, 8 * (k / 2));
            let bits = _mm512_set1_epi32(0x0804_0201 << (4 * (k % 2)));
            let neg = _mm512_test_epi8_mask(_mm512_shuffle_epi8(sb, spread), bits);
            // level + 64, or 64 - level where negative.
            let plus = _mm512_add_epi8(g, bias);
            dst.q[s][k] = _mm512_mask_sub_epi8(plus, neg, bias, g);
        }
    }
}

/// `out[j][r] = dot(row r, act j)` for a decoded tile and `A` activation
/// rows (`corr[j]`: the bias times each sub-block's activation sum, eight
/// per super-block).
///
/// # Safety
/// AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; every `acts[j]` points
/// at `dec.len() * 292` bytes, every `corr[j]` at `dec.len() * 8` i32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_dot<const A: usize, const KIND: u8>(
    dec: &[DecX16],
    acts: &[*const u8; A],
    corr: &[*const i32; A],
) -> [[f32; ROWS]; A] {
    let mut acc = [_mm512_setzero_ps(); A];
    for (b, dk) in dec.iter().enumerate() {
        let ab: [*const u8; A] = std::array::from_fn(|j| acts[j].add(b * AB));
        let mut isum = [_mm512_setzero_si512(); A];
        for s in 0..8 {
            if halves(KIND) {
                // Two scales per sub-block: each 16 values' sum, less its
                // own correction, times its own multiplier.
                for (h, sc) in [dk.sc[s], dk.sc_hi[s]].into_iter().enumerate() {
                    let mut sub = [_mm512_setzero_si512(); A];
                    for k in 4 * h..4 * h + 4 {
                        let w = dk.q[s][k];
                        for j in 0..A {
                            let y = bc(ab[j].add(AB_QS + 32 * s + 4 * k));
                            sub[j] = _mm512_dpbusd_epi32(sub[j], w, y);
                        }
                    }
                    for j in 0..A {
                        let c = _mm512_set1_epi32(*corr[j].add(16 * b + 2 * s + h));
                        let exact = _mm512_sub_epi32(sub[j], c);
                        isum[j] = _mm512_add_epi32(isum[j], _mm512_mullo_epi32(exact, sc));
                    }
                }
                continue;
            }
            let mut sub = [_mm512_setzero_si512(); A];
            for k in 0..8 {
                let w = dk.q[s][k];
                for j in 0..A {
                    let y = bc(ab[j].add(AB_QS + 32 * s + 4 * k));
                    sub[j] = _mm512_dpbusd_epi32(sub[j], w, y);
                }
            }
            for j in 0..A {
                let c = _mm512_set1_epi32(*corr[j].add(8 * b + s));
                let exact = _mm512_sub_epi32(sub[j], c);
                isum[j] = _mm512_add_epi32(isum[j], _mm512_mullo_epi32(exact, dk.sc[s]));
            }
        }
        for j in 0..A {
            let da = _mm512_set1_ps((ab[j] as *const f32).read_unaligned());
            let t = _mm512_mul_ps(_mm512_mul_ps(dk.d, da), _mm512_cvtepi32_ps(isum[j]));
            acc[j] = _mm512_add_ps(acc[j], t);
        }
    }
    if KIND != IQ4_XS && KIND != IQ3_S {
        // The reference's `0.25 * sum` (the IQ2 types: `0.125 * sum`) of
        // the row.
        let f = if KIND == IQ3_XXS { 0.25 } else { 0.125 };
        acc = acc.map(|v| _mm512_mul_ps(_mm512_set1_ps(f), v));
    }
    tiles::store(acc)
}

thread_local! {
    /// Per-thread decoded tile, grown to the widest matmul once.
    static DEC: std::cell::RefCell<Vec<DecX16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[j * rows + r] = dot(row r of w, activation row j of a)` for the
/// rows and activation rows the buffers hold in full (others untouched).
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
    // SAFETY: for the walk and each closure, the CPU features are the
    // caller's contract; every row pointer is a held row of nb blocks,
    // every act pointer a held activation row with its nb * 8 (or 16)
    // corrections; all-zero bits are a valid `DecX16` (plain vectors).
    unsafe {
        tiles::run_corr(
            &s,
            w,
            a,
            AB,
            out,
            &DEC,
            if halves(KIND) { 16 } else { 8 },
            |blk, c| {
                let bsum = |i: usize| {
                    let o = AB_BSUMS + 2 * i;
                    i16::from_le_bytes([blk[o], blk[o + 1]]) as i32
                };
                for (s, x) in c.iter_mut().enumerate() {
                    let sum = if halves(KIND) {
                        bsum(s)
                    } else {
                        bsum(2 * s) + bsum(2 * s + 1)
                    };
                    *x = sum << bias_shift(KIND);
                }
            },
            |rp, dec| decode_tile::<KIND>(rp, dec),
            |dec, acts, cs| tile_dot::<4, KIND>(dec, acts, cs),
            |dec, act, c| tile_dot::<1, KIND>(dec, &[act], &[c])[0],
        )
    }
}
