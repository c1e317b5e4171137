//! F32/F16/BF16 prefill on AVX-512: `avx2::float`'s K-blocked GEMM with
//! two weight rows per 512-bit vector, row r in the lower eight lanes and
//! row r + 1 in the upper, each activation's eight values broadcast to
//! both halves from memory. Each half is exactly the AVX2 kernel's eight
//! lane sums of its row (multiply, then add, no FMA, values in order), and
//! `crate::float::finish` adds them as the scalar reference does, so the
//! results are bit for bit the scalar kernel's. A decode step (fewer than
//! four activations) stays on the AVX2 kernel, which is memory-bound there.

use crate::float::{finish, CHUNK};
use std::arch::x86_64::*;

/// Values per block: eight activation rows' slices (8 x 512 x 4 bytes =
/// 16 KiB) stay in L1 while a block of weight rows passes.
const KB: usize = 512;
/// Weight rows per block (eight pairs).
const RB: usize = 16;
const _: () = assert!(KB.is_multiple_of(CHUNK));

/// Eight weights at `p0` (lanes 0..8) and eight at `p1` (lanes 8..16) as
/// f32: `WS` = 4 (F32), 2 (F16, `BF` false) or 2 (BF16).
///
/// # Safety
/// The CPU has AVX-512 F, AVX2 and F16C (inlined into the kernel); `p0`
/// and `p1` point at `8 * WS` readable bytes.
#[inline(always)]
unsafe fn load16<const WS: usize, const BF: bool>(p0: *const u8, p1: *const u8) -> __m512 {
    if WS == 4 {
        let lo = _mm256_castps_pd(_mm256_loadu_ps(p0 as *const f32));
        let hi = _mm256_castps_pd(_mm256_loadu_ps(p1 as *const f32));
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(lo), hi))
    } else {
        let h = _mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_loadu_si128(p0 as *const __m128i)),
            _mm_loadu_si128(p1 as *const __m128i),
        );
        if BF {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        } else {
            _mm512_cvtph_ps(h)
        }
    }
}

/// The eight f32 at `p` in both halves (a broadcast load).
///
/// # Safety
/// The CPU has AVX-512 F (inlined into the kernel); `p` points at 32
/// readable bytes.
#[inline(always)]
unsafe fn bcast8(p: *const u8) -> __m512 {
    _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(p as *const f64)))
}

/// `out[j][r] = dot(row r, activation j)` for the `R` activation rows
/// `a[j0..j0 + R]` and the weight rows `rows`, bit for bit the scalar
/// reference (see the module doc).
///
/// # Safety
/// The CPU has AVX-512 F, AVX2, FMA and F16C; `w` holds every row of
/// `rows` in full (`n * WS` bytes each), `a` every activation row `j0..j0 +
/// R` (`n * 4` bytes each), `out` `(j0 + R) * total_rows` floats.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block<const R: usize, const WS: usize, const BF: bool>(
    n: usize,
    total_rows: usize,
    rows: std::ops::Range<usize>,
    w: &[u8],
    j0: usize,
    a: &[u8],
    out: &mut [f32],
) {
    let nk = (n / CHUNK) * CHUNK;
    let (rb, ab) = (n * WS, n * 4);
    let mut acc = [[_mm512_setzero_ps(); R]; RB / 2];
    let wp = w.as_ptr();
    let ap = a.as_ptr();
    let last = rows.end - 1;
    let mut k0 = 0;
    while k0 < nk {
        let k1 = (k0 + KB).min(nk);
        for (p, accp) in acc.iter_mut().enumerate().take(rows.len().div_ceil(2)) {
            // An odd block's last pair is its last row twice.
            let r = rows.start + 2 * p;
            let (w0, w1) = (wp.add(r * rb), wp.add((r + 1).min(last) * rb));
            let mut e = k0;
            while e < k1 {
                let x = load16::<WS, BF>(w0.add(e * WS), w1.add(e * WS));
                for (j, aj) in accp.iter_mut().enumerate() {
                    let y = bcast8(ap.add((j0 + j) * ab + e * 4));
                    *aj = _mm512_add_ps(*aj, _mm512_mul_ps(x, y));
                }
                e += 8;
            }
        }
        k0 = k1;
    }
    let start = rows.start;
    for r in rows {
        let (p, half) = ((r - start) / 2, (r - start) % 2);
        let wr = &w[r * rb..(r + 1) * rb];
        for (j, aj) in acc[p].iter().enumerate() {
            let mut lanes = [0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), *aj);
            let mut own = [0f32; 8];
            own.copy_from_slice(&lanes[8 * half..8 * half + 8]);
            let act = &a[(j0 + j) * ab..(j0 + j + 1) * ab];
            out[(j0 + j) * total_rows + r] = finish::<WS, BF>(own, wr, act, nk, n);
        }
    }
}

// `gemm`: blocks of `RB` weight rows (eight pairs) against eight
// activation rows at a time, then four, two, one; a decode step goes to
// AVX2's kernel before it (`float_gemm` below).
crate::avx2::float::float_gemm_driver!("avx512f,avx2,fma,f16c");

macro_rules! float_gemm {
    ($name:ident, $ws:expr, $bf:expr, $avx2:path) => {
        pub(super) fn $name(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
            if t < 4 {
                return $avx2(n, rows, w, t, a, out);
            }
            // SAFETY: handed out by `dispatch` only on a CPU with AVX-512 F,
            // BW and VL, AVX2, FMA and F16C; `gemm` bounds every access by
            // its buffers.
            unsafe { gemm::<$ws, $bf>(n, rows, w, t, a, out) }
        }
    };
}
float_gemm!(f32_gemm, 4, false, crate::avx2::float::f32_gemm);
float_gemm!(f16_gemm, 2, false, crate::avx2::float::f16_gemm);
float_gemm!(bf16_gemm, 2, true, crate::avx2::float::bf16_gemm);
