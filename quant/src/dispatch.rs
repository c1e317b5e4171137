//! Kernel selection: one dot function per (weight type, SIMD path). A SIMD
//! path plugs in by returning its functions from `simd_dot` for the types
//! it implements; every other type falls back to the next slower path.
//! Written today: AVX2 (+FMA, F16C) for every supported type except Q8_K
//! weights; with the `avx512` cargo feature (default), AVX-512 for the
//! Q4_K, Q5_K and Q6_K decode matvec, the F32/F16/BF16 prefill GEMM and,
//! with VNNI, the prefill tiles of Q4_K, IQ4_XS, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1
//! (their other kernels AVX2's); NEON (aarch64) for every supported type except
//! Q8_K weights (the IQ1, IQ2, IQ3 and TQ types included).
//!
//! [`kernel`]/[`kernel_with`] only hand out a SIMD kernel after it has
//! agreed with the scalar reference once on fixed data (see [`self_check`]):
//! a kernel that has not been run on a given instruction set before (the
//! AVX-512 ones) then costs speed, not correctness, if it is wrong.
//! [`kernel_for_path`] does not check, so that tests see every kernel.

use crate::formats::format;
use crate::{Dot4Fn, DotFn, GemmFn, GgmlType, Kernel, SimdPath};
use std::sync::Mutex;

/// Environment variable that forces a path: `scalar`, `avx2`, `avx512`, `neon`.
pub const SIMD_ENV: &str = "MAMBA_GGUF_SIMD";

impl SimdPath {
    /// Every path, fastest first.
    pub const ALL: [SimdPath; 4] = [
        SimdPath::Avx512,
        SimdPath::Avx2,
        SimdPath::Neon,
        SimdPath::Scalar,
    ];

    /// Parse a path name as `MAMBA_GGUF_SIMD` spells it (case-insensitive).
    pub fn from_name(name: &str) -> Option<SimdPath> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(SimdPath::Scalar),
            "avx2" => Some(SimdPath::Avx2),
            "avx512" => Some(SimdPath::Avx512),
            "neon" => Some(SimdPath::Neon),
            _ => None,
        }
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            SimdPath::Scalar => "scalar",
            SimdPath::Avx2 => "avx2",
            SimdPath::Avx512 => "avx512",
            SimdPath::Neon => "neon",
        }
    }

    /// Whether this CPU can run the path's instructions.
    pub fn cpu_has(self) -> bool {
        match self {
            SimdPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx2 => {
                std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && std::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx512 => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && std::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "aarch64")]
            SimdPath::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// The SIMD dots (matvec, four-activation) for `ty` on `path`, when written.
fn simd_dot(ty: GgmlType, path: SimdPath) -> Option<(DotFn, Dot4Fn)> {
    match path {
        SimdPath::Scalar => None,
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx2 => crate::avx2::kernels(ty),
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        SimdPath::Avx512 => crate::avx512::kernels(ty),
        #[cfg(target_arch = "aarch64")]
        SimdPath::Neon => crate::neon::kernels(ty),
        _ => {
            let _ = ty;
            None
        }
    }
}

/// The multi-row SIMD kernel for `ty` on `path`, when written.
fn simd_gemm(ty: GgmlType, path: SimdPath) -> Option<GemmFn> {
    match path {
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx2 => crate::avx2::gemm(ty),
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        SimdPath::Avx512 => crate::avx512::gemm(ty),
        #[cfg(target_arch = "aarch64")]
        SimdPath::Neon => crate::neon::gemm(ty),
        _ => {
            let _ = ty;
            None
        }
    }
}

/// The kernel for `ty` on exactly `path`, or `None` when the type is not
/// supported, the path has no kernel for it, or this CPU lacks the path.
pub fn kernel_for_path(ty: GgmlType, path: SimdPath) -> Option<Kernel> {
    let f = format(ty)?;
    let (dot, dot4) = match path {
        SimdPath::Scalar => (f.dot, None),
        _ if !path.cpu_has() => return None,
        _ => {
            let (dot, dot4) = simd_dot(ty, path)?;
            (dot, Some(dot4))
        }
    };
    Some(Kernel {
        weight: ty,
        act: f.act,
        dot,
        dot4,
        gemm: simd_gemm(ty, path),
        path,
    })
}

/// The path forced by `MAMBA_GGUF_SIMD`, if it is set to a known name.
pub fn forced_path() -> Option<SimdPath> {
    std::env::var(SIMD_ENV)
        .ok()
        .as_deref()
        .and_then(SimdPath::from_name)
}

/// The best kernel for `ty` on this CPU. With `MAMBA_GGUF_SIMD` set, that
/// path is used where it has a kernel for `ty` and the CPU supports it,
/// else the next slower one (avx512 -> avx2 -> scalar).
pub fn kernel(ty: GgmlType) -> Option<Kernel> {
    kernel_with(ty, forced_path())
}

/// [`kernel`] with the override given explicitly instead of read from the
/// environment: `Some(path)` uses the first of `path` and the paths slower
/// than it (avx512 -> avx2 -> scalar; neon -> scalar) that has a kernel for
/// `ty` on this CPU; `None` picks the fastest available. A SIMD kernel is
/// used only once it has passed [`self_check`].
pub fn kernel_with(ty: GgmlType, forced: Option<SimdPath>) -> Option<Kernel> {
    let order: &[SimdPath] = match forced {
        None => &SimdPath::ALL,
        Some(SimdPath::Avx512) => &[SimdPath::Avx512, SimdPath::Avx2, SimdPath::Scalar],
        Some(SimdPath::Avx2) => &[SimdPath::Avx2, SimdPath::Scalar],
        Some(SimdPath::Neon) => &[SimdPath::Neon, SimdPath::Scalar],
        Some(SimdPath::Scalar) => &[SimdPath::Scalar],
    };
    order
        .iter()
        .filter_map(|&p| kernel_for_path(ty, p))
        .find(passes_self_check)
}

/// Results of [`self_check`] so far, per (type, path).
static CHECKED: Mutex<Vec<(GgmlType, SimdPath, bool)>> = Mutex::new(Vec::new());

fn passes_self_check(k: &Kernel) -> bool {
    if k.path == SimdPath::Scalar {
        return true;
    }
    let mut done = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, _, ok)) = done.iter().find(|e| e.0 == k.weight && e.1 == k.path) {
        return ok;
    }
    let ok = self_check(k);
    done.push((k.weight, k.path, ok));
    ok
}

/// Whether SIMD kernel `k` agrees with the scalar reference of its type on
/// fixed pseudo-random data (one weight row, four activation rows, an odd
/// number of 32-value blocks), through `dot`, `dot4` and `gemm`: bit for bit
/// for the K-quants and float types, within (blocks + 8) * 2^-23 *
/// sum |w_i a_i| for the 32-value types, and `dot4` and `gemm` exactly as
/// `dot`.
pub fn self_check(k: &Kernel) -> bool {
    let (Some(f), Some(scalar)) = (
        format(k.weight),
        kernel_for_path(k.weight, SimdPath::Scalar),
    ) else {
        return false;
    };
    let Some(act) = format(k.act) else {
        return false;
    };
    let n = if k.weight.block_size() == 256 {
        768
    } else {
        800
    };
    let (Some(rb), Some(ab)) = (k.weight.row_bytes(n), k.act.row_bytes(n)) else {
        return false;
    };
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ k.weight.id() as u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let x: Vec<f32> = (0..n).map(|_| next() * 3.0).collect();
    let mut w = vec![0u8; rb];
    match f.quantize {
        Some(quantize) => quantize(&x, &mut w),
        None => {
            // A type read but not written (IQ3_XXS, IQ3_S): pseudo-random
            // blocks, each with its fp16 scale (bytes 0..2) set finite.
            for (b, v) in w.iter_mut().zip(&x) {
                *b = (v.to_bits() >> 7) as u8;
            }
            let d = crate::fp16::f32_to_f16(0.0123).to_le_bytes();
            for blk in w.chunks_exact_mut(k.weight.type_size()) {
                blk[..2].copy_from_slice(&d);
            }
        }
    }
    let mut wd = vec![0f32; n];
    (f.dequantize)(&w, &mut wd);
    let mut a = vec![0u8; 4 * ab];
    for row in a.chunks_exact_mut(ab) {
        let y: Vec<f32> = (0..n).map(|_| next() * 5.0).collect();
        if let Some(q) = act.quantize {
            q(&y, row);
        }
    }
    let exact = k.weight.block_size() != 32;
    let acts: Vec<&[u8]> = a.chunks_exact(ab).collect();
    let mut four = [f32::NAN; 4];
    if let Some(dot4) = k.dot4 {
        dot4(n, &w, [acts[0], acts[1], acts[2], acts[3]], &mut four);
    }
    // The multi-row kernel as prefill (four activations at once) and as a
    // decode step (one at a time: kernels may take another route for it).
    let (mut tiled, mut step) = ([f32::NAN; 4], [f32::NAN; 4]);
    if let Some(gemm) = k.gemm {
        gemm(n, 1, &w, 4, &a, &mut tiled);
        for (j, o) in step.iter_mut().enumerate() {
            gemm(
                n,
                1,
                &w,
                1,
                &a[j * ab..(j + 1) * ab],
                std::slice::from_mut(o),
            );
        }
    }
    acts.iter().enumerate().all(|(j, row)| {
        let want = (scalar.dot)(n, &w, row);
        let got = (k.dot)(n, &w, row);
        let same_as_dot = (k.dot4.is_none() || four[j].to_bits() == got.to_bits())
            && (k.gemm.is_none()
                || (tiled[j].to_bits() == got.to_bits() && step[j].to_bits() == got.to_bits()));
        let close = if exact {
            got.to_bits() == want.to_bits()
        } else {
            let mut ad = vec![0f32; n];
            (act.dequantize)(row, &mut ad);
            let mag: f64 = wd
                .iter()
                .zip(&ad)
                .map(|(p, q)| (*p as f64 * *q as f64).abs())
                .sum();
            let blocks = (n / k.weight.block_size()) as f64;
            ((got - want) as f64).abs() <= (blocks + 8.0) * f32::EPSILON as f64 * mag
        };
        same_as_dot && close
    })
}
