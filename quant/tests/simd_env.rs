//! `MAMBA_GGUF_SIMD` forces a path through `kernel()`. Its own test binary
//! (one test, so setting the variable races with nothing).

use quant::{kernel, GgmlType, SimdPath, SIMD_ENV};

#[test]
fn env_var_forces_each_path_or_falls_back_to_scalar() {
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::F16,
    ];
    for p in SimdPath::ALL {
        std::env::set_var(SIMD_ENV, p.name().to_uppercase());
        for ty in types {
            let k = kernel(ty).expect("kernel");
            let has = quant::kernel_for_path(ty, p).is_some();
            if has {
                assert_eq!(k.path, p, "{ty}: {} forced", p.name());
            } else {
                eprintln!(
                    "note: {ty} {}: no kernel on this CPU, forced falls back",
                    p.name()
                );
                // avx512 falls back to avx2 where that has one, else scalar.
                let next = if p == SimdPath::Avx512 {
                    quant::kernel_for_path(ty, SimdPath::Avx2).map_or(SimdPath::Scalar, |k| k.path)
                } else {
                    SimdPath::Scalar
                };
                assert_eq!(k.path, next, "{ty}: {} fallback", p.name());
            }
        }
    }
    std::env::set_var(SIMD_ENV, "scalar");
    assert_eq!(kernel(GgmlType::Q4_K).expect("k").path, SimdPath::Scalar);
    std::env::set_var(SIMD_ENV, "nonsense");
    let auto = quant::kernel_with(GgmlType::Q4_K, None).expect("auto").path;
    assert_eq!(kernel(GgmlType::Q4_K).expect("k").path, auto);
    std::env::remove_var(SIMD_ENV);
}
