//! Q4_0 and Q5_0 x Q8_0 on AVX2 in tiles of eight weight rows: the matvec
//! and matmul kernels behind [`crate::Kernel::gemm`], and the `dot`/`dot4`
//! built on the same tile so that every path gives the same bits.
//!
//! Layout of one 32-value block of one row: Q4_0 (18 bytes): fp16 d, then 16
//! bytes whose low nibbles are values 0..16 and high nibbles values 16..32;
//! value = (nibble - 8) * d. Q5_0 (22 bytes): fp16 d, a u32 whose bit i is
//! the fifth bit of value i, then the 16 nibble bytes; value = (nibble | bit
//! << 4) - 16) * d. Activation block (Q8_0, 34 bytes): fp16 d, 32 x i8.
//!
//! Per block, the 16 nibble bytes of eight rows are transposed in registers
//! so that vector `j` holds dword `j` (bytes 4j..4j+4) of every row, one row
//! per 32-bit lane:
//!
//! ```text
//!   lo[j] = T[j] & 0xF         lanes r = 0..8: values 4j..4j+4 of row r
//!   hi[j] = (T[j] >> 4) & 0xF  lanes r = 0..8: values 16+4j..16+4j+4
//! ```
//!
//! Against one activation block, broadcast 4 bytes at a time, eight
//! `maddubs` (unsigned level x signed activation) and a `madd` leave the
//! exact integer sum of level * activation of row r in lane r: for Q4_0 the
//! pair sums are <= 2*15*128, so all eight add up in i16; for Q5_0 (<=
//! 2*31*128) four at a time. Subtracting 8 (16) * sum(activation block)
//! gives the block's exact sum of (level - 8 (16)) * a.
//! Each lane then does what the scalar reference does, in the same order:
//! `sum += isum as f32 * (dw * da)` (multiply, round, add, round; no FMA),
//! so the results are bit for bit the scalar kernel's, and do not depend on
//! which tile, which lane or how many activations a row was computed with.

use super::f16_at;
use std::arch::x86_64::*;

const AB: usize = 34; // Q8_0 block bytes
const QK: usize = 32;

/// `vpshufb` indices that copy byte 0 of each 32-bit lane over the lane.
const SPREAD: [i8; 32] = [
    0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12, 0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12,
    12, 12,
];

/// Block bytes: Q4_0 18, Q5_0 22, Q4_1 20, Q5_1 24 (`min`: an fp16 min
/// after d, before the fifth bits and the nibbles).
const fn block_bytes(five: bool, min: bool) -> usize {
    2 + 2 * min as usize + 4 * five as usize + 16
}

/// Decodes block `b` of eight rows: `$w[0..4]` the low nibbles (values
/// 0..16), `$w[4..8]` the high ones (16..32), each transposed to one row per
/// 32-bit lane (with the fifth bits for Q5_0), and `$dw` the eight row scales.
macro_rules! decode_block {
    ($rows:expr, $off:expr, $five:expr, $min:expr) => {{
        let rows = $rows;
        let off = $off;
        let qh_at = if $min { 4 } else { 2 };
        let nib = block_bytes($five, $min) - 16;
        let mask = _mm256_set1_epi8(0x0F);
        // Eight fp16 row scales -> 8 x f32, lane r = row r.
        let dw = row_halves(rows, off);
        // Rows r and r+4 share a 256-bit vector (low / high 128 bits).
        let ld = |r: usize| rows[r].add(off + nib);
        let y0 = pair(ld(4), ld(0));
        let y1 = pair(ld(5), ld(1));
        let y2 = pair(ld(6), ld(2));
        let y3 = pair(ld(7), ld(3));
        // 4x4 dword transpose inside each 128-bit half.
        let t0 = _mm256_unpacklo_epi32(y0, y1); // r0d0 r1d0 r0d1 r1d1
        let t1 = _mm256_unpackhi_epi32(y0, y1); // r0d2 r1d2 r0d3 r1d3
        let t2 = _mm256_unpacklo_epi32(y2, y3); // r2d0 r3d0 r2d1 r3d1
        let t3 = _mm256_unpackhi_epi32(y2, y3); // r2d2 r3d2 r2d3 r3d3
        let d = [
            _mm256_unpacklo_epi64(t0, t2), // dword 0 of rows 0..4 | 4..8
            _mm256_unpackhi_epi64(t0, t2), // dword 1
            _mm256_unpacklo_epi64(t1, t3), // dword 2
            _mm256_unpackhi_epi64(t1, t3), // dword 3
        ];
        let mut lo = [
            _mm256_and_si256(d[0], mask),
            _mm256_and_si256(d[1], mask),
            _mm256_and_si256(d[2], mask),
            _mm256_and_si256(d[3], mask),
        ];
        let mut hi = [
            _mm256_and_si256(_mm256_srli_epi16::<4>(d[0]), mask),
            _mm256_and_si256(_mm256_srli_epi16::<4>(d[1]), mask),
            _mm256_and_si256(_mm256_srli_epi16::<4>(d[2]), mask),
            _mm256_and_si256(_mm256_srli_epi16::<4>(d[3]), mask),
        ];
        if $five {
            // Lane r = row r's u32 of fifth bits; group g (values 4g..4g+4,
            // lo[g] for g < 4, hi[g - 4] above) takes bits 4g..4g+4: byte
            // g / 2 of the lane spread over its 4 bytes, one bit per byte.
            let h = _mm256_setr_epi32(
                u32_at(rows[0].add(off + qh_at)),
                u32_at(rows[1].add(off + qh_at)),
                u32_at(rows[2].add(off + qh_at)),
                u32_at(rows[3].add(off + qh_at)),
                u32_at(rows[4].add(off + qh_at)),
                u32_at(rows[5].add(off + qh_at)),
                u32_at(rows[6].add(off + qh_at)),
                u32_at(rows[7].add(off + qh_at)),
            );
            let sixteen = _mm256_set1_epi8(0x10);
            // Byte k of each 32-bit lane picks that lane's own byte 0
            // (plus `byte`, added below) from the u32s in `h`.
            let spread = _mm256_loadu_si256(SPREAD.as_ptr() as *const __m256i);
            for g in 0..8 {
                let byte = (g / 2) as i8;
                let idx = _mm256_add_epi8(spread, _mm256_set1_epi8(byte));
                let bits = _mm256_set1_epi32(0x0804_0201 << (4 * (g % 2)));
                let set =
                    _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(h, idx), bits), bits);
                let fifth = _mm256_and_si256(set, sixteen);
                if g < 4 {
                    lo[g] = _mm256_or_si256(lo[g], fifth);
                } else {
                    hi[g - 4] = _mm256_or_si256(hi[g - 4], fifth);
                }
            }
        }
        // Q4_1/Q5_1: the eight rows' fp16 mins, lane r = row r.
        let mw = if $min {
            row_halves(rows, off + 2)
        } else {
            _mm256_setzero_ps()
        };
        (
            [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]],
            dw,
            mw,
        )
    }};
}

/// Adds block `b` of `A` activation rows against a decoded block (`$w`,
/// `$dw`, `$mw` from [`decode_block`]) to `$acc`, per lane `acc += isum *
/// (dw * da)`, for Q4_1/Q5_1 (`$min`) `acc += isum * (dw * da) + mw * (da *
/// sum(a))`: the scalar references' expressions.
macro_rules! dot_block {
    ($w:expr, $dw:expr, $mw:expr, $acts:expr, $pres:expr, $b:expr, $acc:expr, $a:expr, $five:expr, $min:expr) => {{
        let (lo, hi, dw, b) = (&$w[0..4], &$w[4..8], $dw, $b);
        let ones16 = _mm256_set1_epi16(1);
        let acts = $acts;
        let pres = $pres;
        for j in 0..$a {
            let ya = acts[j].add(b * AB + 2);
            let mut s = _mm256_maddubs_epi16(lo[0], bc(ya, 0));
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(lo[1], bc(ya, 1)));
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(lo[2], bc(ya, 2)));
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(lo[3], bc(ya, 3)));
            let mut s2 = _mm256_maddubs_epi16(hi[0], bc(ya, 4));
            s2 = _mm256_add_epi16(s2, _mm256_maddubs_epi16(hi[1], bc(ya, 5)));
            s2 = _mm256_add_epi16(s2, _mm256_maddubs_epi16(hi[2], bc(ya, 6)));
            s2 = _mm256_add_epi16(s2, _mm256_maddubs_epi16(hi[3], bc(ya, 7)));
            let isum = if $five {
                _mm256_add_epi32(_mm256_madd_epi16(s, ones16), _mm256_madd_epi16(s2, ones16))
            } else {
                _mm256_madd_epi16(_mm256_add_epi16(s, s2), ones16)
            };
            let pr = *pres[j].add(b);
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(pr.da));
            if $min {
                let t = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), scale);
                let m = _mm256_mul_ps($mw, _mm256_set1_ps(pr.dam));
                $acc[j] = _mm256_add_ps($acc[j], _mm256_add_ps(t, m));
            } else {
                let isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(pr.off));
                $acc[j] = _mm256_add_ps($acc[j], _mm256_mul_ps(_mm256_cvtepi32_ps(isum), scale));
            }
        }
    }};
}

/// Per-lane sums for up to eight rows (`rows[r]`, each `nb` blocks) against
/// `A` activation rows: `out[a][r] = dot(row r, act a)`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; every `rows[r]` points at `nb * 18`
/// (Q5_0: 22) readable bytes, every `acts[a]` at `nb * 34` and every
/// `pres[a]` at `nb` [`Pre`] of that activation row. With `prefetch`, the
/// eight rows of a later tile of a contiguous matrix are fetched into L1 on
/// the way ([`prefetch_next`]; prefetches never fault).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const A: usize, const FIVE: bool, const MIN: bool>(
    nb: usize,
    rows: &[*const u8; 8],
    acts: &[*const u8; A],
    pres: &[*const Pre; A],
    prefetch: bool,
) -> [[f32; 8]; A] {
    let mut acc = [_mm256_setzero_ps(); A];
    for b in 0..nb {
        if prefetch {
            prefetch_next(rows, nb, b, block_bytes(FIVE, MIN));
        }
        let (w, dw, mw) = decode_block!(rows, b * block_bytes(FIVE, MIN), FIVE, MIN);
        dot_block!(w, dw, mw, acts, pres, b, acc, A, FIVE, MIN);
    }
    store(acc)
}

/// A later tile's eight rows (contiguous after this tile's when called
/// from `gemm`) into L1, three lines per block: 8 * wb / 64 <= 2.75 lines
/// per block, so the whole tile arrives in time. Which tile:
/// [`tile_prefetch_distance`](crate::simd_shared::tile_prefetch_distance).
/// Into L1 (`T0`), not L2: eight rows read side by side are a pattern the
/// L1 prefetchers follow poorly, and a decode step's in_proj and out_proj
/// of a Q4_0 file streamed 5% faster so (bench --profile, alternated).
///
/// # Safety
/// The CPU has SSE (every x86-64 CPU). Any arguments: the addresses are
/// formed with wrapping arithmetic and prefetches never fault.
#[inline(always)]
unsafe fn prefetch_next(rows: &[*const u8; 8], nb: usize, b: usize, bytes: usize) {
    let ahead = crate::simd_shared::tile_prefetch_distance(8 * nb * bytes);
    let next = rows[0].wrapping_add(ahead + b * 192);
    _mm_prefetch::<_MM_HINT_T0>(next as *const i8);
    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64) as *const i8);
    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(128) as *const i8);
}

/// # Safety
/// The CPU has AVX (inlined into the AVX2 kernels).
#[inline(always)]
unsafe fn store<const A: usize>(acc: [__m256; A]) -> [[f32; 8]; A] {
    let mut out = [[0f32; 8]; A];
    for j in 0..A {
        _mm256_storeu_ps(out[j].as_mut_ptr(), acc[j]);
    }
    out
}

/// One decoded block of an eight-row tile, as [`decode_block`] leaves it.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Dec {
    w: [__m256i; 8],
    dw: __m256,
    mw: __m256,
}

/// Decodes the `dst.len()` blocks of a tile once, for [`tile_dec`] to dot
/// with every group of activation rows of a matmul (prefill), instead of
/// decoding them again per group.
///
/// # Safety
/// As [`tile`], for `dst.len()` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_tile<const FIVE: bool, const MIN: bool>(
    rows: &[*const u8; 8],
    prefetch: bool,
    dst: &mut [Dec],
) {
    let nb = dst.len();
    for (b, d) in dst.iter_mut().enumerate() {
        if prefetch {
            prefetch_next(rows, nb, b, block_bytes(FIVE, MIN));
        }
        let (w, dw, mw) = decode_block!(rows, b * block_bytes(FIVE, MIN), FIVE, MIN);
        *d = Dec { w, dw, mw };
    }
}

/// [`tile`] over a tile decoded by [`decode_tile`]: the same operations per
/// activation, so the same bits.
///
/// # Safety
/// AVX2, FMA and F16C; `acts[a]` and `pres[a]` as in [`tile`] for
/// `dec.len()` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_dec<const A: usize, const FIVE: bool, const MIN: bool>(
    dec: &[Dec],
    acts: &[*const u8; A],
    pres: &[*const Pre; A],
) -> [[f32; 8]; A] {
    let mut acc = [_mm256_setzero_ps(); A];
    for (b, d) in dec.iter().enumerate() {
        dot_block!(d.w, d.dw, d.mw, acts, pres, b, acc, A, FIVE, MIN);
    }
    store(acc)
}

/// What every tile needs of one activation block, worked out once per
/// matmul: its scale and the level offset times its quant sum.
#[derive(Clone, Copy, Default)]
struct Pre {
    /// fp16 d of the block as f32.
    da: f32,
    /// 8 (Q4_0) or 16 (Q5_0) * sum of the 32 quants (exact); 0 for the
    /// types with a min.
    off: i32,
    /// Q4_1/Q5_1: `da * sum` (the scalar reference's factor of the min).
    dam: f32,
}

/// Fills `dst` (one per block) for the activation row at `a`.
///
/// # Safety
/// AVX2 and F16C; `a` points at `dst.len() * 34` readable bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prep<const FIVE: bool, const MIN: bool>(a: *const u8, dst: &mut [Pre]) {
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    for (b, pr) in dst.iter_mut().enumerate() {
        let ab = a.add(b * AB);
        let y = _mm256_loadu_si256(ab.add(2) as *const __m256i);
        let sy = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, y), ones16);
        let sum = super::hsum_epi32(sy);
        let da = f16_at(ab);
        *pr = match (MIN, FIVE) {
            (true, _) => Pre {
                da,
                off: 0,
                dam: da * sum as f32,
            },
            (false, true) => Pre {
                da,
                off: sum << 4,
                dam: 0.0,
            },
            (false, false) => Pre {
                da,
                off: sum << 3,
                dam: 0.0,
            },
        };
    }
}

thread_local! {
    /// Per-thread [`Pre`] buffer: grows to the largest matmul once, then
    /// matmuls allocate nothing.
    static PRE: std::cell::RefCell<Vec<Pre>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with a [`Pre`] slice of `len` entries (the thread's buffer, or a
/// fresh one if that is already lent out).
fn with_pre<R>(len: usize, f: impl FnOnce(&mut [Pre]) -> R) -> R {
    with_buf(&PRE, len, Pre::default(), f)
}

/// Runs `f` with `len` entries of the thread's buffer `key`, grown with
/// `fill` when short (or a fresh vector if the buffer is already lent out,
/// as when a tile call nests in another).
pub(crate) fn with_buf<T: Copy, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>,
    len: usize,
    fill: T,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, fill);
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![fill; len]),
    })
}

/// Rows `lo` (low 128 bits) and `hi` (high), 16 bytes each.
///
/// # Safety
/// The CPU has AVX2; `hi` and `lo` each point at 16 readable bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn pair(hi: *const u8, lo: *const u8) -> __m256i {
    _mm256_set_m128i(
        _mm_loadu_si128(hi as *const __m128i),
        _mm_loadu_si128(lo as *const __m128i),
    )
}

/// Activation bytes 4k..4k+4 at `ya` in every 32-bit lane.
///
/// # Safety
/// The CPU has AVX2; `ya + 4 * k` points at 4 readable bytes.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn bc(ya: *const u8, k: usize) -> __m256i {
    _mm256_set1_epi32((ya.add(4 * k) as *const i32).read_unaligned())
}

/// The fp16 at byte `off` of each of eight rows as f32, lane r = row r.
///
/// The eight halves are packed into two u64 in general registers and moved
/// over in two steps: eight `vpinsrw` (two uops each on Intel's one
/// shuffle port, the bound of the eight-row tiles there) cost more than
/// the integer shifts.
///
/// # Safety
/// The CPU has F16C (inlined into the AVX2 kernels); every `rows[r] + off`
/// points at 2 readable bytes.
#[inline(always)]
pub(super) unsafe fn row_halves(rows: &[*const u8; 8], off: usize) -> __m256 {
    let h = |r: usize| u16_at(rows[r].add(off)) as u16 as i64;
    let lo = h(0) | h(1) << 16 | h(2) << 32 | h(3) << 48;
    let hi = h(4) | h(5) << 16 | h(6) << 32 | h(7) << 48;
    _mm256_cvtph_ps(_mm_set_epi64x(hi, lo))
}

/// # Safety
/// `p` points at 2 readable bytes (any alignment).
#[inline(always)]
unsafe fn u16_at(p: *const u8) -> i16 {
    (p as *const i16).read_unaligned()
}

/// # Safety
/// `p` points at 4 readable bytes (any alignment).
#[inline(always)]
unsafe fn u32_at(p: *const u8) -> i32 {
    (p as *const i32).read_unaligned()
}

/// Row pointers of rows `r0..r0+8` of `w` (row stride `rb`), the last valid
/// row repeated past `rows`.
#[inline]
pub(super) fn row_ptrs(w: &[u8], rb: usize, r0: usize, rows: usize) -> [*const u8; 8] {
    let base = w.as_ptr();
    std::array::from_fn(|i| {
        let r = (r0 + i).min(rows - 1);
        // SAFETY (of later reads): r < rows and the caller checked that w
        // holds `rows` rows of `rb` bytes.
        base.wrapping_add(r * rb)
    })
}

/// `out[j * rows + r] = dot(row r of w, activation row j of a)` for the rows
/// and activation rows the buffers hold in full (others untouched).
fn gemm<const FIVE: bool, const MIN: bool>(
    n: usize,
    rows: usize,
    w: &[u8],
    t: usize,
    a: &[u8],
    out: &mut [f32],
) {
    let nb = n / QK;
    let (rb, ab) = (nb * block_bytes(FIVE, MIN), nb * AB);
    if nb == 0 || rows == 0 || t == 0 {
        return;
    }
    // Clamp to what the buffers hold, so no read or write leaves them.
    let t = t.min(a.len() / ab).min(out.len() / rows);
    let rows_held = rows.min(w.len() / rb);
    if t == 0 || rows_held == 0 {
        return;
    }
    let act = |j: usize| a[j * ab..].as_ptr();
    with_pre(t * nb, |pre| {
        for (j, dst) in pre.chunks_exact_mut(nb).enumerate() {
            // SAFETY: AVX2/F16C checked by dispatch; act row j is held.
            unsafe { prep::<FIVE, MIN>(act(j), dst) };
        }
        let pr = |j: usize| pre[j * nb..].as_ptr();
        // Runs `$tile::<A>` over activation rows 4, 2, 1 at a time and
        // stores each group's eight row results.
        macro_rules! groups {
            ($r0:expr, $nr:expr, |$acts:ident, $pres:ident, $first:ident| $call:expr) => {{
                let (r0, nr) = ($r0, $nr);
                let mut j = 0;
                while j + 4 <= t {
                    let $acts = [act(j), act(j + 1), act(j + 2), act(j + 3)];
                    let $pres = [pr(j), pr(j + 1), pr(j + 2), pr(j + 3)];
                    let $first = j == 0;
                    let v: [[f32; 8]; 4] = $call;
                    for (i, vi) in v.iter().enumerate() {
                        put(out, (j + i) * rows + r0, vi, nr);
                    }
                    j += 4;
                }
                if j + 2 <= t {
                    let $acts = [act(j), act(j + 1)];
                    let $pres = [pr(j), pr(j + 1)];
                    let $first = j == 0;
                    let v: [[f32; 8]; 2] = $call;
                    for (i, vi) in v.iter().enumerate() {
                        put(out, (j + i) * rows + r0, vi, nr);
                    }
                    j += 2;
                }
                if j < t {
                    let $acts = [act(j)];
                    let $pres = [pr(j)];
                    let $first = j == 0;
                    let [v]: [[f32; 8]; 1] = $call;
                    put(out, j * rows + r0, &v, nr);
                }
            }};
        }
        // SAFETY (every `tile`/`decode_tile`/`tile_dec` call below): AVX2,
        // SAFETY (each unsafe block below): AVX2,
        // FMA and F16C are checked by dispatch; every row pointer is a held
        // row (nb blocks), every act pointer a held act row, every pre
        // pointer nb entries, and `dec` has nb entries.
        if t < DECODE_ONCE_MIN {
            for r0 in (0..rows_held).step_by(8) {
                let rp = row_ptrs(w, rb, r0, rows_held);
                let nr = (rows_held - r0).min(8);
                // SAFETY: as above.
                groups!(r0, nr, |acts, pres, first| unsafe {
                    tile::<_, FIVE, MIN>(nb, &rp, &acts, &pres, first)
                });
            }
        } else {
            with_dec(nb, |dec| {
                for r0 in (0..rows_held).step_by(8) {
                    let rp = row_ptrs(w, rb, r0, rows_held);
                    let nr = (rows_held - r0).min(8);
                    // SAFETY: as above.
                    unsafe { decode_tile::<FIVE, MIN>(&rp, true, dec) };
                    // SAFETY: as above.
                    groups!(r0, nr, |acts, pres, _first| unsafe {
                        tile_dec::<_, FIVE, MIN>(dec, &acts, &pres)
                    });
                }
            });
        }
    });
}

/// From this many activation rows on, `gemm` decodes each tile once into a
/// buffer and dots every group of rows with it, rather than decoding it
/// again for each group of four.
const DECODE_ONCE_MIN: usize = 8;

thread_local! {
    /// Per-thread decoded tile for [`gemm`], grown once like [`PRE`].
    static DEC: std::cell::RefCell<Vec<Dec>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with a [`Dec`] slice of `len` entries, as [`with_pre`].
fn with_dec<R>(len: usize, f: impl FnOnce(&mut [Dec]) -> R) -> R {
    // SAFETY: all-zero bits are a valid `Dec` (plain vectors).
    let zero: Dec = unsafe { std::mem::zeroed() };
    with_buf(&DEC, len, zero, f)
}

/// Stores the first `nr` of a tile's eight results at `out[at..]`; a whole
/// tile as a fixed-size copy (two vector stores, not a memmove call).
#[inline(always)]
pub(super) fn put(out: &mut [f32], at: usize, v: &[f32; 8], nr: usize) {
    if nr == 8 {
        out[at..at + 8].copy_from_slice(v);
    } else {
        out[at..at + nr].copy_from_slice(&v[..nr]);
    }
}

/// Whole blocks both buffers hold, at most `n / 32`.
fn held_blocks(n: usize, wb: usize, w: &[u8], a: &[&[u8]]) -> usize {
    a.iter()
        .fold((n / QK).min(w.len() / wb), |nb, s| nb.min(s.len() / AB))
}

/// One row against one activation (the tile with the row in every lane).
fn dot<const FIVE: bool, const MIN: bool>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = held_blocks(n, block_bytes(FIVE, MIN), w, &[a]);
    with_pre(nb, |pre| {
        // SAFETY: as in `gemm`; nb blocks are held by both buffers.
        unsafe {
            prep::<FIVE, MIN>(a.as_ptr(), pre);
            tile::<1, FIVE, MIN>(nb, &[w.as_ptr(); 8], &[a.as_ptr()], &[pre.as_ptr()], false)[0][0]
        }
    })
}

/// One row against four activations.
fn dot4<const FIVE: bool, const MIN: bool>(n: usize, w: &[u8], a: [&[u8]; 4], out: &mut [f32; 4]) {
    let nb = held_blocks(n, block_bytes(FIVE, MIN), w, &a);
    let acts = a.map(|s| s.as_ptr());
    with_pre(4 * nb, |pre| {
        for (j, dst) in pre.chunks_exact_mut(nb.max(1)).take(4).enumerate() {
            // SAFETY: as above.
            unsafe { prep::<FIVE, MIN>(acts[j], &mut dst[..nb]) };
        }
        let pres: [*const Pre; 4] = std::array::from_fn(|j| pre[j * nb..].as_ptr());
        // SAFETY: as above.
        let v = unsafe { tile::<4, FIVE, MIN>(nb, &[w.as_ptr(); 8], &acts, &pres, false) };
        for (o, vi) in out.iter_mut().zip(v) {
            *o = vi[0];
        }
    });
}

pub(crate) fn q4_0_gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    gemm::<false, false>(n, rows, w, t, a, out)
}
pub(super) fn q4_0_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot::<false, false>(n, w, a)
}
pub(super) fn q4_0_dot4(n: usize, w: &[u8], a: [&[u8]; 4], out: &mut [f32; 4]) {
    dot4::<false, false>(n, w, a, out)
}
pub(crate) fn q5_0_gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    gemm::<true, false>(n, rows, w, t, a, out)
}
pub(super) fn q5_0_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot::<true, false>(n, w, a)
}
pub(super) fn q5_0_dot4(n: usize, w: &[u8], a: [&[u8]; 4], out: &mut [f32; 4]) {
    dot4::<true, false>(n, w, a, out)
}
pub(crate) fn q4_1_gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    gemm::<false, true>(n, rows, w, t, a, out)
}
pub(super) fn q4_1_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot::<false, true>(n, w, a)
}
pub(super) fn q4_1_dot4(n: usize, w: &[u8], a: [&[u8]; 4], out: &mut [f32; 4]) {
    dot4::<false, true>(n, w, a, out)
}
pub(crate) fn q5_1_gemm(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    gemm::<true, true>(n, rows, w, t, a, out)
}
pub(super) fn q5_1_dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot::<true, true>(n, w, a)
}
pub(super) fn q5_1_dot4(n: usize, w: &[u8], a: [&[u8]; 4], out: &mut [f32; 4]) {
    dot4::<true, true>(n, w, a, out)
}
