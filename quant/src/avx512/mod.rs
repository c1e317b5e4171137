//! AVX-512 (F + BW + VL, and VNNI where the CPU has it) where it beats
//! AVX2 on an AVX-512 CPU, bit for bit the scalar reference as the AVX2
//! kernels are:
//!
//! - decode (one activation row): the Q4_K, Q5_K and Q6_K matvec of
//!   `avx2::kmatvec` on super-block sums that take 512-bit vectors
//!   (`ksums`); with VNNI IQ4_XS's and Q3_K's matvec of
//!   `avx2::lowbit_matvec` likewise (`lowsums`), and Q8_0's and IQ4_NL's
//!   eight-row tile with `vpdpbusd` (`avx2::signed_rows`); the IQ3 kernels
//!   in the form that gathers their grid entries (`avx2::iq3`);
//! - prefill, with VNNI, tiles of sixteen rows: Q4_K (`q4_k_tile`), Q3_K
//!   (`q3_k_tile`), Q2_K (`q2_k_tile`), IQ4_XS, IQ3_XXS, IQ3_S, IQ2_XXS,
//!   IQ2_XS and IQ2_S (`iq_tile`), the 32-value types Q8_0, Q4_0, Q4_1,
//!   Q5_0, Q5_1 and IQ4_NL (`tile32`), all on `tiles`; and the
//!   F32/F16/BF16 GEMM (`float`, two weight rows per vector).
//!
//! Everything else, the dots of these types included, is AVX2's. Built
//! with the `avx512` cargo feature (on by default).
//!
//! First run on AVX-512 hardware (an Intel Xeon with AVX-512 VNNI,
//! 2026-12-07): the row kernels this module held before for Q4_0, Q8_0,
//! Q4_K and Q6_K (two 32-value blocks per vector, one weight row at a
//! time) passed their tests but measured slower than AVX2's multi-row
//! kernels on the same machine (matvec in L2, GB/s of weights: Q4_0 6.3 vs
//! 19.2, Q8_0 15.1 vs 18.6, Q4_K 11.2 vs 19.2), so they are gone and those
//! types run AVX2's. `dispatch` still checks every SIMD kernel against the
//! scalar reference once before choosing it.

use crate::avx2::kmatvec::{self, Rows45};
use crate::avx2::lowbit_matvec::RowsLow;
use crate::{Dot4Fn, DotFn, GemmFn, GgmlType};
use std::arch::x86_64::*;

mod float;
mod iq_tile;
pub(crate) mod ksums;
pub(crate) mod lowsums;
mod q2_k_tile;
mod q3_k_tile;
mod q4_k_tile;
mod tile32;
mod tiles;

/// Environment variable that, set to `0`, keeps the AVX-512 kernels off
/// VNNI on a CPU that has it (how the non-VNNI variant, for CPUs such as
/// Skylake-SP, is tested on one that has VNNI).
pub const VNNI_ENV: &str = "MAMBA_GGUF_AVX512_VNNI";

/// Whether to use the VNNI instructions (`vpdpwssd`): the CPU has them and
/// [`VNNI_ENV`] is not `0`.
pub(crate) fn has_vnni() -> bool {
    std::is_x86_feature_detected!("avx512vnni")
        && std::env::var(VNNI_ENV).map_or(true, |v| v.trim() != "0")
}

/// The (matvec dot, four-activation dot) pair for `ty`, where this set
/// has a kernel for it: AVX2's (the decode matvec in [`gemm`] is this
/// set's).
pub(crate) fn kernels(ty: GgmlType) -> Option<(DotFn, Dot4Fn)> {
    match ty {
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => crate::avx2::kernels(ty),
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => crate::avx2::kernels(ty),
        GgmlType::IQ4_XS
        | GgmlType::Q3_K
        | GgmlType::Q2_K
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
            if has_vnni() =>
        {
            crate::avx2::kernels(ty)
        }
        GgmlType::IQ3_XXS | GgmlType::IQ3_S => crate::avx2::iq3::gather::kernels(ty),
        GgmlType::Q8_0
        | GgmlType::Q4_0
        | GgmlType::Q4_1
        | GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::IQ4_NL
            if has_vnni() =>
        {
            crate::avx2::kernels(ty)
        }
        _ => None,
    }
}

/// The multi-row kernel for `ty`, if written: the K-quants' decode step
/// (one activation row) on AVX-512 super-block sums, their prefill on
/// AVX2's kernels (both bit for bit the scalar reference).
pub(crate) fn gemm(ty: GgmlType) -> Option<GemmFn> {
    use GgmlType as T;
    Some(match (ty, has_vnni()) {
        (T::Q4_K, true) => vnni::q4_k_gemm,
        (T::Q4_K, false) => plain::q4_k_gemm,
        (T::Q5_K, true) => vnni::q5_k_gemm,
        (T::Q5_K, false) => plain::q5_k_gemm,
        (T::Q6_K, true) => vnni::q6_k_gemm,
        (T::Q6_K, false) => plain::q6_k_gemm,
        (T::F32, _) => float::f32_gemm,
        (T::F16, _) => float::f16_gemm,
        (T::BF16, _) => float::bf16_gemm,
        (T::IQ4_XS, true) => iq4_xs_gemm_512,
        (T::Q3_K, true) => q3_k_gemm_512,
        (T::Q2_K, true) => q2_k_gemm_vnni,
        (T::Q8_0, true) => q8_0_gemm_vnni,
        (T::Q4_0, true) => q4_0_gemm_vnni,
        (T::Q4_1, true) => q4_1_gemm_vnni,
        (T::Q5_0, true) => q5_0_gemm_vnni,
        (T::Q5_1, true) => q5_1_gemm_vnni,
        (T::IQ4_NL, true) => iq4_nl_gemm_vnni,
        (T::IQ3_XXS, true) => iq3_xxs_gemm_vnni,
        (T::IQ2_XXS, true) => iq2_xxs_gemm_vnni,
        (T::IQ2_XS, true) => iq2_xs_gemm_vnni,
        (T::IQ2_S, true) => iq2_s_gemm_vnni,
        (T::IQ3_S, true) => iq3_s_gemm_vnni,
        (T::IQ3_XXS | T::IQ3_S, false) => return crate::avx2::iq3::gather::gemm(ty),
        _ => return None,
    })
}

/// Two 256-bit halves as one 512-bit vector (`lo` in lanes 0..32 bytes).
///
/// # Safety
/// The CPU has AVX-512 F, BW and VL.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `acc + (i16 pairs of u * s) . scale` per i32 lane.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VL, and AVX-512 VNNI when `VNNI`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn scaled_dot<const VNNI: bool>(
    acc: __m512i,
    u: __m512i,
    s: __m512i,
    scale: __m512i,
) -> __m512i {
    let p = _mm512_maddubs_epi16(u, s);
    if VNNI {
        _mm512_dpwssd_epi32(acc, p, scale)
    } else {
        _mm512_add_epi32(acc, _mm512_madd_epi16(p, scale))
    }
}

/// The safe entry points of one instruction set variant.
macro_rules! variant {
    ($module:ident, $features:literal, $sums:path, $q4_k_prefill:path) => {
        mod $module {
            use super::*;

            /// `avx2::kmatvec::rows45` on this set's super-block sums.
            ///
            /// # Safety
            /// The CPU has this set's `target_feature`s; the pointers as
            /// `rows45` requires.
            #[target_feature(enable = $features)]
            unsafe fn rows45<const FIVE: bool>(
                nb: usize,
                w: *const u8,
                a: *const u8,
                bs2: *const i16,
                da4: *const f32,
                out: &mut [f32],
            ) {
                kmatvec::rows45_body::<FIVE, { $sums }>(nb, w, a, bs2, da4, out)
            }
            /// `avx2::lowbit_matvec::rows` of Q6_K on this set's
            /// super-block sums.
            ///
            /// # Safety
            /// The CPU has this set's `target_feature`s; the pointers as
            /// `rows_body` requires.
            #[target_feature(enable = $features)]
            unsafe fn rows6(
                nb: usize,
                w: *const u8,
                a: *const u8,
                da: *const f32,
                out: &mut [f32],
            ) {
                crate::avx2::lowbit_matvec::rows_body::<
                    { crate::avx2::lowbit_matvec::Q6_K },
                    { $sums },
                >(nb, w, a, da, out)
            }
            /// A decode step (`t == 1`) on this set's row kernels, else the
            /// AVX2 prefill kernel `$avx2`.
            macro_rules! k_gemm {
                ($name:ident, $kind:literal, $r45:expr, $avx2:path) => {
                    pub(super) fn $name(
                        n: usize,
                        rows: usize,
                        w: &[u8],
                        t: usize,
                        a: &[u8],
                        out: &mut [f32],
                    ) {
                        if t == 1 {
                            let (r45, r6): (Rows45, RowsLow) = ($r45, rows6);
                            // SAFETY: handed out by `dispatch` only on a CPU
                            // with this set's features (`SimdPath::cpu_has`,
                            // `has_vnni`).
                            unsafe { kmatvec::matvec_with::<$kind>(n, rows, w, a, out, r45, r6) }
                        } else {
                            $avx2(n, rows, w, t, a, out)
                        }
                    }
                };
            }
            k_gemm!(q4_k_gemm, 4, rows45::<false>, $q4_k_prefill);
            k_gemm!(
                q5_k_gemm,
                5,
                rows45::<true>,
                crate::avx2::kquants::q5_k_gemm
            );
            k_gemm!(
                q6_k_gemm,
                6,
                rows45::<false>,
                crate::avx2::kquants::q6_k_gemm
            );
        }
    };
}

variant!(
    plain,
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c",
    kmatvec::SUMS_512,
    crate::avx2::kquants::q4_k_gemm
);
variant!(
    vnni,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    kmatvec::SUMS_512_VNNI,
    q4_k_prefill_vnni
);

/// A type's matmul with VNNI: from `TILE_MIN` activation rows on its
/// sixteen-row tile, else `$avx2` (both bit for bit the scalar reference).
macro_rules! vnni_prefill {
    ($name:ident, $tile:expr, $avx2:path) => {
        fn $name(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
            if t >= crate::avx2::q4_k_tile::TILE_MIN {
                // SAFETY: handed out only where `has_vnni` (by `gemm`, or
                // as `vnni::q4_k_gemm`'s prefill), on a CPU dispatch found
                // to have AVX-512 F, BW and VL, AVX2, FMA and F16C.
                unsafe { $tile(n, rows, w, t, a, out) }
            } else {
                $avx2(n, rows, w, t, a, out)
            }
        }
    };
}
vnni_prefill!(
    q4_k_prefill_vnni,
    q4_k_tile::gemm,
    crate::avx2::kquants::q4_k_gemm
);
vnni_prefill!(
    iq3_xxs_gemm_vnni,
    iq_tile::gemm::<{ iq_tile::IQ3_XXS }>,
    crate::avx2::iq3::gather::iq3_xxs_rows
);
/// The IQ2 types below their tile: AVX2's eight-row matmul.
macro_rules! iq2_rows {
    ($name:ident, $ty:ident) => {
        fn $name(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
            if let Some(gemm) = crate::avx2::gemm(GgmlType::$ty) {
                gemm(n, rows, w, t, a, out)
            }
        }
    };
}
iq2_rows!(iq2_xxs_rows, IQ2_XXS);
iq2_rows!(iq2_xs_rows, IQ2_XS);
iq2_rows!(iq2_s_rows, IQ2_S);
vnni_prefill!(
    iq2_xxs_gemm_vnni,
    iq_tile::gemm::<{ iq_tile::IQ2_XXS }>,
    iq2_xxs_rows
);
vnni_prefill!(
    iq2_xs_gemm_vnni,
    iq_tile::gemm::<{ iq_tile::IQ2_XS }>,
    iq2_xs_rows
);
vnni_prefill!(
    iq2_s_gemm_vnni,
    iq_tile::gemm::<{ iq_tile::IQ2_S }>,
    iq2_s_rows
);
vnni_prefill!(
    iq3_s_gemm_vnni,
    iq_tile::gemm::<{ iq_tile::IQ3_S }>,
    crate::avx2::iq3::gather::iq3_s_rows
);
vnni_prefill!(
    q2_k_gemm_vnni,
    q2_k_tile::gemm,
    crate::avx2::lowbit::q2_k_gemm
);
vnni_prefill!(
    q3_k_gemm_vnni,
    q3_k_tile::gemm,
    crate::avx2::lowbit::q3_k_gemm
);
vnni_prefill!(
    iq4_xs_gemm_vnni,
    iq_tile::gemm::<{ iq_tile::IQ4_XS }>,
    crate::avx2::lowbit::iq4_xs_gemm
);
vnni_prefill!(
    q8_0_gemm_vnni,
    tile32::gemm::<{ tile32::Q8_0 }>,
    q8_0_rows_vnni
);
vnni_prefill!(
    q4_0_gemm_vnni,
    tile32::gemm::<{ tile32::Q4_0 }>,
    crate::avx2::q4_q5_tile::q4_0_gemm
);
vnni_prefill!(
    q4_1_gemm_vnni,
    tile32::gemm::<{ tile32::Q4_1 }>,
    crate::avx2::q4_q5_tile::q4_1_gemm
);
vnni_prefill!(
    q5_0_gemm_vnni,
    tile32::gemm::<{ tile32::Q5_0 }>,
    crate::avx2::q4_q5_tile::q5_0_gemm
);
vnni_prefill!(
    q5_1_gemm_vnni,
    tile32::gemm::<{ tile32::Q5_1 }>,
    crate::avx2::q4_q5_tile::q5_1_gemm
);
vnni_prefill!(
    iq4_nl_gemm_vnni,
    tile32::gemm::<{ tile32::IQ4_NL }>,
    iq4_nl_rows_vnni
);

/// Q8_0's and IQ4_NL's decode step and short matmuls on VNNI's
/// eight-row tile (`avx2::signed_rows`).
fn q8_0_rows_vnni(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    // SAFETY: handed out only where `has_vnni` (by `gemm`), on a CPU
    // dispatch found to have AVX-512 F, BW and VL, AVX2, FMA and F16C.
    unsafe { crate::avx2::signed_rows::gemm_vnni::<false>(n, rows, w, t, a, out) }
}
fn iq4_nl_rows_vnni(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
    // SAFETY: as in `q8_0_rows_vnni`.
    unsafe { crate::avx2::signed_rows::gemm_vnni::<true>(n, rows, w, t, a, out) }
}

/// With VNNI, a decode step of `$kind` (`avx2::lowbit_matvec`) on the
/// AVX-512 super-block sums (`lowsums`), else the prefill `$prefill`.
macro_rules! low_gemm {
    ($name:ident, $row:ident, $kind:path, $prefill:path) => {
        /// The decode rows kernel on the AVX-512 VNNI sums.
        ///
        /// # Safety
        /// The CPU has AVX-512 F, BW, VL and VNNI, AVX2, FMA and F16C; the
        /// pointers as `lowbit_matvec::rows_body` requires.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $row(nb: usize, w: *const u8, y: *const u8, da: *const f32, out: &mut [f32]) {
            crate::avx2::lowbit_matvec::rows_body::<{ $kind }, { kmatvec::SUMS_512_VNNI }>(
                nb, w, y, da, out,
            )
        }

        fn $name(n: usize, rows: usize, w: &[u8], t: usize, a: &[u8], out: &mut [f32]) {
            use crate::avx2::lowbit_matvec::matvec_with;
            if t == 1 {
                // SAFETY: handed out only where `has_vnni` (by `gemm`), on
                // a CPU dispatch found to have AVX-512 F, BW and VL, AVX2,
                // FMA and F16C.
                unsafe {
                    matvec_with::<{ $kind }, { kmatvec::SUMS_512_VNNI }>(n, rows, w, a, out, $row)
                }
            } else {
                $prefill(n, rows, w, t, a, out)
            }
        }
    };
}
low_gemm!(
    iq4_xs_gemm_512,
    iq4_xs_row,
    crate::avx2::lowbit_matvec::IQ4_XS,
    iq4_xs_gemm_vnni
);
low_gemm!(
    q3_k_gemm_512,
    q3_k_row,
    crate::avx2::lowbit_matvec::Q3_K,
    q3_k_gemm_vnni
);
