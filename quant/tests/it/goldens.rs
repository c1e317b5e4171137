//! Byte-for-byte checks against goldens made by ggml itself (and cross-checked
//! with the `gguf` Python package): scripts/quant_goldens/make_goldens.py wrote
//! tests/fixtures/quant/<TYPE>.bin. Each holds f32 inputs full of edge cases,
//! ggml's quantized bytes and ggml's dequantization of those bytes.

use quant::{dequantize_row, quantize_row, GgmlType};
use std::path::PathBuf;

struct Golden {
    ty: GgmlType,
    flags: u32,
    input: Vec<f32>,
    bytes: Vec<u8>,
    dequant: Vec<f32>,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/quant")
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn load(ty: GgmlType) -> Golden {
    let path = fixture_dir().join(format!("{}.bin", ty.name()));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert_eq!(&raw[..4], b"QGLD", "{}: bad magic", path.display());
    let u =
        |i: usize| u32::from_le_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]]);
    assert_eq!(u(1), 1, "{}: golden version", path.display());
    assert_eq!(u(2), ty.id(), "{}: type id", path.display());
    let n = u(3) as usize;
    let nbytes = u(4) as usize;
    let flags = u(5);
    let h = 24;
    assert_eq!(
        raw.len(),
        h + 4 * n + nbytes + 4 * n,
        "{}: file size",
        path.display()
    );
    Golden {
        ty,
        flags,
        input: f32s(&raw[h..h + 4 * n]),
        bytes: raw[h + 4 * n..h + 4 * n + nbytes].to_vec(),
        dequant: f32s(&raw[h + 4 * n + nbytes..]),
    }
}

const TYPES: [GgmlType; 25] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::IQ3_XXS,
    GgmlType::IQ3_S,
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ2_S,
    GgmlType::IQ1_S,
    GgmlType::IQ1_M,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
];

fn check_quantize(ty: GgmlType) {
    let g = load(ty);
    assert_eq!(g.ty.row_bytes(g.input.len()), Some(g.bytes.len()));
    let mut out = vec![0xAAu8; g.bytes.len()];
    quantize_row(ty, &g.input, &mut out).expect("quantize_row");
    if out != g.bytes {
        let bs = ty.type_size();
        let first = out
            .iter()
            .zip(&g.bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let blk = first / bs;
        let vals = ty.block_size();
        panic!(
            "{ty}: {} of {} bytes differ from ggml; first at byte {first} (block {blk}, inputs {:?}...)\nours : {:?}\nggml : {:?}",
            out.iter().zip(&g.bytes).filter(|(a, b)| a != b).count(),
            out.len(),
            &g.input[blk * vals..(blk * vals + 8.min(vals))],
            &out[blk * bs..(blk + 1) * bs],
            &g.bytes[blk * bs..(blk + 1) * bs],
        );
    }
}

fn check_dequantize(ty: GgmlType) {
    let g = load(ty);
    let mut out = vec![f32::NAN; g.dequant.len()];
    dequantize_row(ty, &g.bytes, &mut out).expect("dequantize_row");
    for (i, (a, b)) in out.iter().zip(&g.dequant).enumerate() {
        let same = a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        assert!(
            same,
            "{ty}: dequantized value {i}: ours {a:e} ({:#x}), ggml {b:e} ({:#x})",
            a.to_bits(),
            b.to_bits()
        );
    }
}

macro_rules! golden_tests {
    ($($q:ident, $d:ident, $ty:expr;)*) => {$(
        #[test]
        fn $q() { check_quantize($ty); }
        #[test]
        fn $d() { check_dequantize($ty); }
    )*};
}

golden_tests! {
    quantize_f32_matches_ggml, dequantize_f32_matches_ggml, GgmlType::F32;
    quantize_f16_matches_ggml, dequantize_f16_matches_ggml, GgmlType::F16;
    quantize_bf16_matches_ggml, dequantize_bf16_matches_ggml, GgmlType::BF16;
    quantize_q4_0_matches_ggml, dequantize_q4_0_matches_ggml, GgmlType::Q4_0;
    quantize_q4_1_matches_ggml, dequantize_q4_1_matches_ggml, GgmlType::Q4_1;
    quantize_q5_0_matches_ggml, dequantize_q5_0_matches_ggml, GgmlType::Q5_0;
    quantize_q5_1_matches_ggml, dequantize_q5_1_matches_ggml, GgmlType::Q5_1;
    quantize_q8_0_matches_ggml, dequantize_q8_0_matches_ggml, GgmlType::Q8_0;
    quantize_q4_k_matches_ggml, dequantize_q4_k_matches_ggml, GgmlType::Q4_K;
    quantize_q5_k_matches_ggml, dequantize_q5_k_matches_ggml, GgmlType::Q5_K;
    quantize_q6_k_matches_ggml, dequantize_q6_k_matches_ggml, GgmlType::Q6_K;
    quantize_q8_k_matches_ggml, dequantize_q8_k_matches_ggml, GgmlType::Q8_K;
    quantize_q2_k_matches_ggml, dequantize_q2_k_matches_ggml, GgmlType::Q2_K;
    quantize_q3_k_matches_ggml, dequantize_q3_k_matches_ggml, GgmlType::Q3_K;
    quantize_iq4_nl_matches_ggml, dequantize_iq4_nl_matches_ggml, GgmlType::IQ4_NL;
    quantize_iq4_xs_matches_ggml, dequantize_iq4_xs_matches_ggml, GgmlType::IQ4_XS;
    quantize_tq1_0_matches_ggml, dequantize_tq1_0_matches_ggml, GgmlType::TQ1_0;
    quantize_tq2_0_matches_ggml, dequantize_tq2_0_matches_ggml, GgmlType::TQ2_0;
    quantize_iq3_xxs_matches_ggml, dequantize_iq3_xxs_matches_ggml, GgmlType::IQ3_XXS;
    quantize_iq3_s_matches_ggml, dequantize_iq3_s_matches_ggml, GgmlType::IQ3_S;
    quantize_iq2_s_matches_ggml, dequantize_iq2_s_matches_ggml, GgmlType::IQ2_S;
    quantize_iq1_m_matches_ggml, dequantize_iq1_m_matches_ggml, GgmlType::IQ1_M;
}

/// IQ2_XXS, IQ2_XS and IQ1_S: ggml made their goldens with a uniform
/// importance matrix (it refuses them without one); ours with the same must
/// be the same bytes, and without one it is a clear error.
#[test]
fn iq2_xxs_xs_and_iq1_s_quantize_like_ggml_given_an_importance_matrix() {
    for ty in [GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ1_S] {
        check_dequantize(ty);
        let g = load(ty);
        let ones = vec![1f32; g.input.len()];
        let mut out = vec![0u8; g.bytes.len()];
        quant::quantize_row_weighted(ty, &g.input, Some(&ones), &mut out).unwrap();
        let bad = out.iter().zip(&g.bytes).filter(|(a, b)| a != b).count();
        assert_eq!(
            bad,
            0,
            "{ty}: {bad} of {} bytes differ from ggml",
            out.len()
        );
        let e = quantize_row(ty, &g.input, &mut out).unwrap_err();
        assert_eq!(e, quant::QuantError::NeedsImatrix { ty });
        assert!(e.to_string().contains("importance matrix"), "{e}");
    }
}

#[test]
fn every_supported_type_has_a_golden_checked_by_two_references_where_possible() {
    let supported: Vec<GgmlType> = GgmlType::all().filter(|t| t.is_supported()).collect();
    assert_eq!(supported.len(), TYPES.len());
    for ty in TYPES {
        assert!(supported.contains(&ty));
        let g = load(ty);
        // gguf-py quantizes these; the generator recorded that it agreed.
        let gguf_quantizes = matches!(
            ty,
            GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::TQ1_0
                | GgmlType::TQ2_0
        );
        if gguf_quantizes {
            assert_eq!(
                g.flags & 1,
                1,
                "{ty}: gguf-py quantize did not agree with ggml"
            );
        }
        // Inputs are a few thousand values and not all trivially zero.
        assert!(g.input.len() >= 3000, "{ty}: only {} inputs", g.input.len());
        assert!(g.input.iter().filter(|v| **v != 0.0).count() > g.input.len() / 2);
    }
}

/// imatrix.bin: what ggml_quantize_chunk writes given an importance matrix
/// (llama-quantize --imatrix), several rows per type. Ours, through
/// `quantize_row_weighted`, must be the same bytes; and for the types
/// whose result depends on the matrix, differ from the plain quantizer
/// (so the matrix is really used).
#[test]
fn importance_matrix_quantization_matches_ggml_byte_for_byte() {
    use quant::quantize_row_weighted;
    let path = fixture_dir().join("imatrix.bin");
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert_eq!(&raw[..4], b"QIMX", "{}: bad magic", path.display());
    let mut at = 4;
    let mut u = || {
        let v = u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        at += 4;
        v as usize
    };
    assert_eq!(u(), 1, "imatrix.bin version");
    let entries = u();
    let mut seen = Vec::new();
    let mut pos = 12;
    for _ in 0..entries {
        let word = |i: usize| {
            let o = pos + 4 * i;
            u32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]) as usize
        };
        let (id, rows, n, nbytes) = (word(0), word(1), word(2), word(3));
        pos += 16;
        let ty = GgmlType::from_id(id as u32).expect("known type id");
        let qw = f32s(&raw[pos..pos + 4 * n]);
        pos += 4 * n;
        let x = f32s(&raw[pos..pos + 4 * rows * n]);
        pos += 4 * rows * n;
        let want = &raw[pos..pos + nbytes];
        pos += nbytes;
        let rb = nbytes / rows;
        let mut got = vec![0u8; nbytes];
        let mut plain = vec![0u8; nbytes];
        // IQ2_XXS and IQ2_XS: ggml quantizes them only with a matrix.
        let needs = matches!(ty, GgmlType::IQ2_XXS | GgmlType::IQ2_XS | GgmlType::IQ1_S);
        for r in 0..rows {
            let (src, dst) = (&x[r * n..(r + 1) * n], &mut got[r * rb..(r + 1) * rb]);
            quantize_row_weighted(ty, src, Some(&qw), dst).unwrap();
            let p = quantize_row(ty, src, &mut plain[r * rb..(r + 1) * rb]);
            if needs {
                assert_eq!(p, Err(quant::QuantError::NeedsImatrix { ty }));
            } else {
                p.unwrap();
            }
        }
        let bad: Vec<usize> = (0..nbytes).filter(|&i| got[i] != want[i]).collect();
        assert!(
            bad.is_empty(),
            "{}: {} of {nbytes} bytes differ from ggml with an imatrix (first at {:?}, block of {} bytes)",
            ty.name(),
            bad.len(),
            bad.first(),
            ty.type_size()
        );
        let ignores = matches!(ty, GgmlType::Q8_0 | GgmlType::TQ1_0 | GgmlType::TQ2_0);
        if !needs {
            assert_eq!(
                got == plain,
                ignores,
                "{}: the imatrix changed nothing",
                ty.name()
            );
        }
        seen.push(ty);
    }
    assert_eq!(pos, raw.len(), "imatrix.bin: trailing bytes");
    assert_eq!(seen.len(), 21, "{seen:?}");
    // A row of the wrong length is refused, naming the importance matrix.
    let mut dst = vec![0u8; GgmlType::Q4_K.type_size()];
    let e = quantize_row_weighted(GgmlType::Q4_K, &[0.5; 256], Some(&[1.0; 255]), &mut dst)
        .unwrap_err()
        .to_string();
    assert!(e.contains("importance matrix"), "{e}");
}
