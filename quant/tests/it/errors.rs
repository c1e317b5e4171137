//! Bad sizes and unsupported types are reported as errors, never panics.

use quant::{check_matmul, dequantize_row, kernel, quantize_row, row_size, GgmlType, QuantError};

#[test]
fn length_not_multiple_of_block_is_an_error() {
    for (ty, n) in [
        (GgmlType::Q4_0, 33usize),
        (GgmlType::Q8_0, 31),
        (GgmlType::Q4_K, 255),
        (GgmlType::Q6_K, 288),
    ] {
        let src = vec![0.5f32; n];
        let mut dst = vec![0u8; 4096];
        let e = quantize_row(ty, &src, &mut dst).unwrap_err();
        assert!(
            matches!(e, QuantError::NotBlockMultiple { n: m, .. } if m == n),
            "{ty}: {e:?}"
        );
        assert!(e.to_string().contains("not a multiple"), "{e}");
        let mut out = vec![0f32; n];
        let e = dequantize_row(ty, &dst, &mut out).unwrap_err();
        assert!(
            matches!(e, QuantError::NotBlockMultiple { .. }),
            "{ty}: {e:?}"
        );
    }
}

#[test]
fn wrong_buffer_size_is_an_error() {
    let src = vec![1.0f32; 256];
    for ty in [
        GgmlType::F32,
        GgmlType::BF16,
        GgmlType::Q5_1,
        GgmlType::Q5_K,
        GgmlType::Q8_K,
    ] {
        let good = ty.row_bytes(256).unwrap();
        for bad in [0, good - 1, good + 1, 2 * good] {
            let mut dst = vec![0u8; bad];
            let e = quantize_row(ty, &src, &mut dst).unwrap_err();
            assert_eq!(
                e,
                QuantError::BufferSize {
                    ty,
                    what: "quantized output",
                    expected: good,
                    got: bad
                }
            );
            let mut out = vec![0f32; 256];
            let e = dequantize_row(ty, &dst, &mut out).unwrap_err();
            assert!(
                matches!(e, QuantError::BufferSize { got, .. } if got == bad),
                "{e:?}"
            );
        }
        let msg = quantize_row(ty, &src, &mut [0u8; 3])
            .unwrap_err()
            .to_string();
        assert!(msg.contains(ty.name()) && msg.contains("expected"), "{msg}");
    }
}

#[test]
fn unsupported_types_are_errors() {
    for ty in [
        GgmlType::Q8_1,
        GgmlType::I32,
        GgmlType::MXFP4,
        GgmlType::NVFP4,
        GgmlType::Q1_0,
        GgmlType::Q2_0,
    ] {
        let e = quantize_row(ty, &[0.0; 256], &mut [0u8; 4096]).unwrap_err();
        assert_eq!(e, QuantError::Unsupported { ty });
        assert!(e.to_string().contains(ty.name()));
        assert!(dequantize_row(ty, &[0u8; 84], &mut [0f32; 256]).is_err());
        assert!(kernel(ty).is_none());
        assert!(row_size(ty, 256).is_err());
    }
}

#[test]
fn empty_rows_are_fine() {
    for ty in [GgmlType::F32, GgmlType::Q4_0, GgmlType::Q6_K] {
        quantize_row(ty, &[], &mut []).expect("empty quantize");
        dequantize_row(ty, &[], &mut []).expect("empty dequantize");
    }
}

#[test]
fn check_matmul_reports_each_bad_buffer() {
    let k = kernel(GgmlType::Q4_0).unwrap();
    let (n, rows, t) = (64, 3, 2);
    let w = vec![0u8; 3 * 36];
    let a = vec![0u8; 2 * 68];
    let out = vec![0f32; 6];
    check_matmul(&k, n, rows, &w, t, &a, &out).expect("valid");
    let e = check_matmul(&k, n, rows, &w[1..], t, &a, &out).unwrap_err();
    assert!(
        matches!(e, QuantError::BufferSize { what: "weight", .. }),
        "{e:?}"
    );
    let e = check_matmul(&k, n, rows, &w, t, &a[..67], &out).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::BufferSize {
                what: "activation",
                ..
            }
        ),
        "{e:?}"
    );
    let e = check_matmul(&k, n, rows, &w, t, &a, &out[..5]).unwrap_err();
    assert!(
        matches!(e, QuantError::BufferSize { what: "output", .. }),
        "{e:?}"
    );
    let e = check_matmul(&k, 48, rows, &w, t, &a, &out).unwrap_err();
    assert!(matches!(e, QuantError::NotBlockMultiple { .. }), "{e:?}");
    let e = check_matmul(&k, n, usize::MAX, &w, t, &a, &out).unwrap_err();
    assert!(matches!(e, QuantError::Overflow { .. }), "{e:?}");
}

/// The checked entry points refuse a short or long buffer with an error that
/// names it, and leave `out` as it was (no partial result).
#[test]
fn matvec_and_matmul_refuse_short_buffers() {
    let k = kernel(GgmlType::Q4_K).unwrap();
    let (n, rows, t) = (256, 4, 3);
    let w = vec![0u8; GgmlType::Q4_K.row_bytes(n).unwrap() * rows];
    let a = vec![0u8; k.act.row_bytes(n).unwrap() * t];
    let mut out = vec![7f32; rows];
    quant::matvec(&k, n, &w, &a[..a.len() / t], &mut out).expect("valid");
    assert_eq!(out, vec![0f32; rows]);

    let mut out = vec![7f32; rows];
    let e = quant::matvec(&k, n, &w[..w.len() - 1], &a[..a.len() / t], &mut out).unwrap_err();
    assert!(
        matches!(e, QuantError::BufferSize { what: "weight", .. }),
        "{e:?}"
    );
    let e = quant::matvec(&k, n, &w, &a[..10], &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::BufferSize {
                what: "activation",
                ..
            }
        ),
        "{e:?}"
    );
    let e = quant::matvec(&k, 100, &w, &a, &mut out).unwrap_err();
    assert!(matches!(e, QuantError::NotBlockMultiple { .. }), "{e:?}");
    assert_eq!(out, vec![7f32; rows], "a refused call wrote to out");

    let mut out = vec![7f32; rows * t];
    quant::matmul(&k, n, rows, &w, t, &a, &mut out).expect("valid");
    let mut out = vec![7f32; rows * t];
    let e = quant::matmul(&k, n, rows, &w[..100], t, &a, &mut out).unwrap_err();
    assert!(
        matches!(e, QuantError::BufferSize { what: "weight", .. }),
        "{e:?}"
    );
    let e = quant::matmul(&k, n, rows, &w, t, &a, &mut out[..5]).unwrap_err();
    assert!(
        matches!(e, QuantError::BufferSize { what: "output", .. }),
        "{e:?}"
    );
    let e = quant::matmul(&k, n, usize::MAX, &w, t, &a, &mut out).unwrap_err();
    assert!(matches!(e, QuantError::Overflow { .. }), "{e:?}");
    assert_eq!(out, vec![7f32; rows * t], "a refused call wrote to out");
}

#[test]
fn kernels_with_short_buffers_do_not_panic() {
    // DotFn and the unchecked matvec/matmul trust the caller, but a short
    // buffer must still not panic (it yields a partial result).
    let k = kernel(GgmlType::Q4_K).unwrap();
    let w = vec![0u8; 100];
    let a = vec![0u8; 10];
    let _ = (k.dot)(256, &w, &a);
    let mut out = vec![0f32; 4];
    quant::matvec_unchecked(&k, 256, &w, &a, &mut out);
    quant::matmul_unchecked(&k, 256, 4, &w, 3, &a, &mut out);
    quant::matvec_unchecked(&k, 100, &w, &a, &mut out);
    let f = kernel(GgmlType::F16).unwrap();
    let _ = (f.dot)(1000, &[1u8; 7], &[2u8; 9]);
}

#[test]
fn newest_ggml_ids_are_known_with_ggml_sizes() {
    // ggml 0c1e570, ggml.h ids and ggml-common.h static_asserts (gguf-py
    // 0.19's GGML_QUANT_SIZES agrees for 40 and 41): a file holding them is
    // sized and refused as unsupported, not as an unknown type id.
    for (id, ty, block, bytes) in [
        (40, GgmlType::NVFP4, 64, 36),
        (41, GgmlType::Q1_0, 128, 18),
        (42, GgmlType::Q2_0, 64, 18),
    ] {
        assert_eq!(GgmlType::from_id(id), Some(ty));
        assert_eq!((ty.block_size(), ty.type_size()), (block, bytes), "{ty}");
    }
    assert_eq!(GgmlType::from_id(43), None);
}
