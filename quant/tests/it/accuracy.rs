//! Error bounds in the manner of ggml's tests/test-quantize-fns.cpp (same
//! synthetic data and thresholds), dots checked against an f64 dot of the
//! dequantized operands, and the matvec/matmul/dispatch plumbing.

use quant::{
    check_matmul, dequantize_row, kernel, kernel_for_path, kernel_with, matmul, matvec,
    quantize_row, vec_dot_type, GgmlType, Kernel, SimdPath,
};

const TYPES: [GgmlType; 16] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

// test-quantize-fns.cpp thresholds (per type, as there).
const MAX_QUANTIZATION_TOTAL_ERROR: f64 = 0.002;
const MAX_QUANTIZATION_TOTAL_ERROR_2BITS: f64 = 0.0075;
const MAX_QUANTIZATION_TOTAL_ERROR_3BITS: f64 = 0.0040;
const MAX_DOT_PRODUCT_ERROR: f64 = 0.02;
const MAX_DOT_PRODUCT_ERROR_LOWBIT: f64 = 0.04;

fn max_total_error(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::Q2_K => MAX_QUANTIZATION_TOTAL_ERROR_2BITS,
        GgmlType::Q3_K => MAX_QUANTIZATION_TOTAL_ERROR_3BITS,
        _ => MAX_QUANTIZATION_TOTAL_ERROR,
    }
}

fn max_dot_error(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::Q2_K => MAX_DOT_PRODUCT_ERROR_LOWBIT,
        _ => MAX_DOT_PRODUCT_ERROR,
    }
}
const MAX_QUANTIZATION_REFERENCE_ERROR: f64 = 0.0001;

/// ggml's generate_data: 0.1 + amplitude * cos(i + offset).
fn generate_data(offset: f32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (0.1f64 + (amplitude * (i as f32 + offset).cos()) as f64) as f32)
        .collect()
}

/// ggml's array_rmse (sqrt of the summed squares over n, as ggml writes it).
fn array_rmse(a: &[f32], b: &[f32]) -> f64 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    sum.sqrt() / a.len() as f64
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_bytes(x.len()).expect("block multiple")];
    quantize_row(ty, x, &mut q).expect("quantize");
    q
}

fn dequantize(ty: GgmlType, q: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    dequantize_row(ty, q, &mut y).expect("dequantize");
    y
}

fn f64_dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

const TEST_SIZE: usize = 32 * 128;

#[test]
fn total_quantization_error_within_ggml_threshold() {
    let data = generate_data(0.0, TEST_SIZE, 2.0);
    for ty in TYPES {
        let back = dequantize(ty, &quantize(ty, &data), TEST_SIZE);
        let err = array_rmse(&data, &back);
        assert!(
            err < max_total_error(ty),
            "{ty}: total quantization error {err}"
        );
    }
}

#[test]
fn dot_product_error_within_ggml_threshold() {
    let x = generate_data(0.0, TEST_SIZE, 2.0);
    let y = generate_data(1.0, TEST_SIZE, 2.0);
    let reference: f64 = x.iter().zip(&y).map(|(a, b)| (*a * *b) as f64).sum();
    for ty in TYPES {
        let k = kernel_for_path(ty, SimdPath::Scalar).expect("scalar kernel");
        assert_eq!(Some(k.act), vec_dot_type(ty));
        let w = quantize(ty, &x);
        let a = quantize(k.act, &y);
        let got = (k.dot)(TEST_SIZE, &w, &a) as f64;
        let err = (got - reference).abs() / TEST_SIZE as f64;
        assert!(
            err < max_dot_error(ty),
            "{ty}: dot error {err} (got {got}, ref {reference})"
        );
    }
}

#[test]
fn f32_dot_matches_f64_for_odd_lengths() {
    for n in [
        1usize, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 67, 127, 129, 193, 255, 1023,
    ] {
        let a = generate_data(0.0, n, 2.0);
        let b = generate_data(1.0, n, 2.0);
        let k = kernel_for_path(GgmlType::F32, SimdPath::Scalar).expect("f32 kernel");
        let got = (k.dot)(
            n,
            &quantize(GgmlType::F32, &a),
            &quantize(GgmlType::F32, &b),
        ) as f64;
        let err = (got - f64_dot(&a, &b)).abs() / n as f64;
        assert!(err < MAX_QUANTIZATION_REFERENCE_ERROR, "n={n}: err {err}");
    }
}

/// Deterministic pseudo-normal values (xorshift + Box-Muller), no rand API drift.
fn normals(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next(), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32 * scale
        })
        .collect()
}

#[test]
fn dot_equals_f64_dot_of_dequantized_operands() {
    // The integer kernels must compute exactly sum(deq(w) * deq(a)) up to
    // f32 rounding of the per-block partial sums.
    let n = 1024;
    for ty in TYPES {
        let k = kernel_for_path(ty, SimdPath::Scalar).expect("kernel");
        for seed in 0..4u64 {
            let x = normals(seed + 1, n, 0.5);
            let y = normals(seed + 100, n, 1.5);
            let w = quantize(ty, &x);
            let a = quantize(k.act, &y);
            let wd = dequantize(ty, &w, n);
            let ad = dequantize(k.act, &a, n);
            let reference = f64_dot(&wd, &ad);
            let magnitude: f64 = wd
                .iter()
                .zip(&ad)
                .map(|(p, q)| (*p as f64 * *q as f64).abs())
                .sum();
            let got = (k.dot)(n, &w, &a) as f64;
            let tol = 1e-5 * magnitude + 1e-6;
            assert!(
                (got - reference).abs() <= tol,
                "{ty} seed {seed}: dot {got} vs dequantized f64 dot {reference} (tol {tol})"
            );
        }
    }
}

#[test]
fn round_trip_error_is_bounded_per_type() {
    // Max abs round-trip error relative to the block's largest magnitude, on
    // normal data: loose per-bit-width bounds that a layout bug would break.
    let n = 4096;
    let x = normals(7, n, 1.0);
    for (ty, rel) in [
        (GgmlType::F32, 0.0),
        (GgmlType::F16, 1e-3),
        (GgmlType::BF16, 8e-3),
        (GgmlType::Q8_0, 1.0 / 127.0),
        (GgmlType::Q8_K, 1.0 / 127.0),
        (GgmlType::Q6_K, 0.05),
        (GgmlType::Q5_0, 1.0 / 16.0),
        (GgmlType::Q5_1, 1.0 / 31.0),
        (GgmlType::Q5_K, 0.1),
        (GgmlType::Q4_0, 1.0 / 8.0),
        (GgmlType::Q4_1, 1.0 / 15.0),
        (GgmlType::Q4_K, 0.2),
        (GgmlType::IQ4_NL, 0.2),
        (GgmlType::IQ4_XS, 0.25),
        (GgmlType::Q3_K, 0.35),
        (GgmlType::Q2_K, 0.6),
    ] {
        let back = dequantize(ty, &quantize(ty, &x), n);
        let bs = ty.block_size().max(32);
        for (blk, (xs, ys)) in x.chunks(bs).zip(back.chunks(bs)).enumerate() {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in xs.iter().zip(ys) {
                let err = (a - b).abs();
                assert!(
                    err <= rel * amax * 1.01 + 1e-30,
                    "{ty} block {blk}: {a} -> {b} (err {err}, amax {amax})"
                );
            }
        }
    }
}

#[test]
fn special_inputs_never_panic() {
    let mut x = normals(3, 512, 1.0);
    x[0] = f32::NAN;
    x[40] = f32::INFINITY;
    x[300] = f32::NEG_INFINITY;
    x[301] = f32::MAX;
    x[400] = f32::MIN_POSITIVE / 8.0;
    for ty in TYPES {
        let q = quantize(ty, &x);
        let _ = dequantize(ty, &q, x.len());
        let k = kernel(ty).expect("kernel");
        let a = quantize(k.act, &x);
        let _ = (k.dot)(x.len(), &q, &a);
    }
    let big: Vec<f32> = (0..512)
        .map(|i| 1e30 * if i % 3 == 0 { -1.0 } else { 0.5 })
        .collect();
    for ty in TYPES {
        let _ = dequantize(ty, &quantize(ty, &big), big.len());
    }
}

fn reference_matmul(k: &Kernel, n: usize, rows: usize, w: &[u8], t: usize, a: &[u8]) -> Vec<f32> {
    let rb = k.weight.row_bytes(n).expect("rb");
    let ab = k.act.row_bytes(n).expect("ab");
    let mut out = vec![0f32; t * rows];
    for j in 0..t {
        for r in 0..rows {
            out[j * rows + r] = (k.dot)(n, &w[r * rb..(r + 1) * rb], &a[j * ab..(j + 1) * ab]);
        }
    }
    out
}

#[test]
fn matvec_and_matmul_match_per_row_dots_and_layout() {
    let (n, rows, t) = (512, 5, 3);
    for ty in TYPES {
        let k = kernel(ty).expect("kernel");
        let wf = normals(11, n * rows, 0.3);
        let mut w = Vec::new();
        for row in wf.chunks(n) {
            w.extend(quantize(ty, row));
        }
        let af = normals(12, n * t, 1.0);
        let mut a = Vec::new();
        for row in af.chunks(n) {
            a.extend(quantize(k.act, row));
        }
        let expected = reference_matmul(&k, n, rows, &w, t, &a);
        let mut out = vec![f32::NAN; t * rows];
        check_matmul(&k, n, rows, &w, t, &a, &out).expect("valid sizes");
        matmul(&k, n, rows, &w, t, &a, &mut out).expect("valid buffers");
        assert_eq!(out, expected, "{ty}: matmul");
        // The layout really is [t][rows]: activation 1, row 2 against f64.
        let wd = dequantize(
            ty,
            &w[2 * ty.row_bytes(n).unwrap()..3 * ty.row_bytes(n).unwrap()],
            n,
        );
        let ab = k.act.row_bytes(n).unwrap();
        let ad = dequantize(k.act, &a[ab..2 * ab], n);
        let r = f64_dot(&wd, &ad);
        assert!(
            (out[rows + 2] as f64 - r).abs() < 1e-3 * r.abs().max(1.0),
            "{ty}: layout"
        );
        let mut mv = vec![f32::NAN; rows];
        matvec(&k, n, &w, &a[..ab], &mut mv).expect("valid buffers");
        assert_eq!(&mv[..], &expected[..rows], "{ty}: matvec");
    }
}

#[test]
fn every_available_path_agrees_with_scalar() {
    let n = 1024;
    for ty in TYPES {
        let scalar = kernel_for_path(ty, SimdPath::Scalar).expect("scalar");
        let x = normals(21, n, 0.4);
        let y = normals(22, n, 1.0);
        let w = quantize(ty, &x);
        let a = quantize(scalar.act, &y);
        let s = (scalar.dot)(n, &w, &a);
        for path in SimdPath::ALL {
            if let Some(k) = kernel_for_path(ty, path) {
                assert_eq!(k.path, path);
                assert_eq!(k.weight, ty);
                assert_eq!(k.act, scalar.act, "{ty} {path:?}: activation type");
                let v = (k.dot)(n, &w, &a);
                assert!(
                    (v - s).abs() <= 1e-4 * s.abs().max(1.0),
                    "{ty} {path:?}: {v} vs scalar {s}"
                );
            }
        }
    }
}

#[test]
fn dispatch_picks_supported_paths_only() {
    for ty in GgmlType::all() {
        assert_eq!(kernel(ty).is_some(), ty.is_supported(), "{ty}");
        assert_eq!(vec_dot_type(ty).is_some(), ty.is_supported(), "{ty}");
    }
    assert_eq!(vec_dot_type(GgmlType::Q4_0), Some(GgmlType::Q8_0));
    assert_eq!(vec_dot_type(GgmlType::Q5_1), Some(GgmlType::Q8_0));
    assert_eq!(vec_dot_type(GgmlType::Q6_K), Some(GgmlType::Q8_K));
    assert_eq!(vec_dot_type(GgmlType::BF16), Some(GgmlType::F32));
    for ty in TYPES {
        let forced = kernel_with(ty, Some(SimdPath::Scalar)).expect("scalar forced");
        assert_eq!(forced.path, SimdPath::Scalar);
        for p in SimdPath::ALL {
            let k = kernel_with(ty, Some(p)).expect("falls back to scalar");
            // The forced path, or a slower one (avx512 -> avx2 -> scalar).
            let slower =
                k.path == SimdPath::Scalar || (p == SimdPath::Avx512 && k.path == SimdPath::Avx2);
            assert!(
                k.path == p || slower,
                "{ty}: forced {p:?} gave {:?}",
                k.path
            );
            assert!(k.path.cpu_has());
        }
        assert!(kernel_with(ty, None).expect("auto").path.cpu_has());
    }
    assert_eq!(SimdPath::from_name("AVX2"), Some(SimdPath::Avx2));
    assert_eq!(SimdPath::from_name("avx512"), Some(SimdPath::Avx512));
    assert_eq!(SimdPath::from_name("sse"), None);
    assert!(kernel_for_path(GgmlType::MXFP4, SimdPath::Scalar).is_none());
}
