//! The AVX-512 kernels without VNNI (the variant for CPUs such as
//! Skylake-SP), on a CPU that has VNNI: `MAMBA_GGUF_AVX512_VNNI=0` keeps
//! them off it. Its own test binary (one test, so setting the variable
//! races with nothing). tests/it/simd.rs holds the variant the CPU picks.
//! Without VNNI, Q4_K's prefill is AVX2's tile (tested there).
#![cfg(all(target_arch = "x86_64", feature = "avx512"))]

use quant::{kernel_for_path, matvec, quantize_row, GgmlType, SimdPath, VNNI_ENV};

#[test]
fn avx512_without_vnni_is_the_scalar_kernel_bit_for_bit() {
    if !SimdPath::Avx512.cpu_has() {
        eprintln!("note: skipped, this CPU lacks AVX-512 (F, BW, VL)");
        return;
    }
    std::env::set_var(VNNI_ENV, "0");
    // 4096 values: 16 super-blocks, so four whole batches of the Q4_K/Q5_K
    // matvec; 2304 + 512 a partial one.
    let mut seed = 0x5EED_1234_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
        for n in [4096, 2816] {
            let k = kernel_for_path(ty, SimdPath::Avx512).expect("avx512 kernel");
            let scalar = kernel_for_path(ty, SimdPath::Scalar).expect("scalar");
            let rows = 9;
            let rb = ty.row_bytes(n).expect("rb");
            let mut w = vec![0u8; rows * rb];
            for (r, row) in w.chunks_exact_mut(rb).enumerate() {
                let x: Vec<f32> = (0..n)
                    .map(|_| ((next() - 0.5) * (1.0 + r as f64)) as f32)
                    .collect();
                quantize_row(ty, &x, row).expect("quantize");
            }
            let y: Vec<f32> = (0..n).map(|_| (next() * 8.0 - 4.0) as f32).collect();
            let mut a = vec![0u8; k.act.row_bytes(n).expect("ab")];
            quantize_row(k.act, &y, &mut a).expect("quantize act");
            let mut out = vec![f32::NAN; rows];
            matvec(&k, n, &w, &a, &mut out).expect("valid buffers");
            for (r, got) in out.iter().enumerate() {
                let want = (scalar.dot)(n, &w[r * rb..(r + 1) * rb], &a);
                assert_eq!(got.to_bits(), want.to_bits(), "{ty} n={n} row {r}");
            }
        }
    }
    std::env::remove_var(VNNI_ENV);
}
