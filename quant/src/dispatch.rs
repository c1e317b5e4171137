//! Kernel selection: one dot function per (weight type, SIMD path). A SIMD
//! path plugs in by returning its functions from [`simd_dot`] for the types
//! it implements; every other type keeps using the scalar kernel. Written
//! today: AVX2 (+FMA, F16C) for every supported type except Q8_K weights.

use crate::formats::format;
use crate::{Dot4Fn, DotFn, GgmlType, Kernel, SimdPath};

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
/// path is used when it has a kernel for `ty` and the CPU supports it;
/// otherwise (and for `scalar`) the scalar reference.
pub fn kernel(ty: GgmlType) -> Option<Kernel> {
    kernel_with(ty, forced_path())
}

/// [`kernel`] with the override given explicitly instead of read from the
/// environment: `Some(path)` uses `path` where it has a kernel for `ty` and
/// the CPU supports it, else scalar; `None` picks the fastest available.
pub fn kernel_with(ty: GgmlType, forced: Option<SimdPath>) -> Option<Kernel> {
    match forced {
        Some(p) => kernel_for_path(ty, p).or_else(|| kernel_for_path(ty, SimdPath::Scalar)),
        None => SimdPath::ALL.iter().find_map(|&p| kernel_for_path(ty, p)),
    }
}
