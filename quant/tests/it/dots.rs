//! Our dot kernels against ggml-cpu's own vec_dot (tests/fixtures/quant/
//! dots.bin, made by scripts/quant_goldens/make_goldens.py). ggml sums in its
//! SIMD order, so results agree to f32 rounding of the partial sums; for
//! Q4_1/Q5_1 ggml pairs Q8_1 activations whose block sums are rounded to
//! fp16, so those agree to that rounding (and ours must be closer to the
//! exact dot of the dequantized operands).

use quant::{dequantize_row, kernel_for_path, quantize_row, GgmlType, SimdPath};
use std::path::PathBuf;

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
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

#[test]
fn dots_agree_with_ggml_cpu_vec_dot() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/quant/dots.bin");
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert_eq!(&raw[..4], b"QDOT");
    let u = |o: usize| u32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]) as usize;
    assert_eq!(u(4), 2, "version");
    let entries = u(8);
    let mut off = 12;
    let mut seen = Vec::new();
    for _ in 0..entries {
        let ty = GgmlType::from_id(u(off) as u32).expect("weight type");
        let ggml_act = GgmlType::from_id(u(off + 4) as u32).expect("act type");
        let (n, rows, t, rb) = (u(off + 8), u(off + 12), u(off + 16), u(off + 20));
        off += 24;
        let w = f32s(&raw[off..off + 4 * rows * n]);
        off += 4 * rows * n;
        let ggml_wq = raw[off..off + rows * rb].to_vec();
        off += rows * rb;
        let a = f32s(&raw[off..off + 4 * t * n]);
        off += 4 * t * n;
        let expected = f32s(&raw[off..off + 4 * t * rows]);
        off += 4 * t * rows;

        let k = kernel_for_path(ty, SimdPath::Scalar).expect("kernel");
        // Same pairing as ggml except Q8_1 -> Q8_0 (documented in lib.rs).
        let loose = ggml_act == GgmlType::Q8_1;
        assert_eq!(k.act, if loose { GgmlType::Q8_0 } else { ggml_act }, "{ty}");
        let tol_rel = if loose { 2e-3 } else { 1e-5 };
        for r in 0..rows {
            // ggml's bytes; where we quantize too, ours must be the same.
            let wq = ggml_wq[r * rb..(r + 1) * rb].to_vec();
            let mut ours_q = vec![0u8; rb];
            match quant::quantize_row(ty, &w[r * n..(r + 1) * n], &mut ours_q) {
                Ok(()) => assert_eq!(ours_q, wq, "{ty} row {r}: quantized bytes"),
                Err(e) => assert!(
                    matches!(
                        e,
                        quant::QuantError::NoQuantizer { .. }
                            | quant::QuantError::NeedsImatrix { .. }
                    ),
                    "{ty}: {e}"
                ),
            }
            let wd = dequantize(ty, &wq, n);
            for j in 0..t {
                let aq = quantize(k.act, &a[j * n..(j + 1) * n]);
                let ad = dequantize(k.act, &aq, n);
                let magnitude: f64 = wd
                    .iter()
                    .zip(&ad)
                    .map(|(x, y)| (*x as f64 * *y as f64).abs())
                    .sum();
                let ours = (k.dot)(n, &wq, &aq);
                let theirs = expected[j * rows + r];
                if loose {
                    // Q8_1 has Q8_0's d and quants; only its fp16 block sums
                    // differ, so the exact value is the f64 dot of the
                    // dequantized operands, and ours must be at least as close.
                    let exact: f64 = wd.iter().zip(&ad).map(|(x, y)| *x as f64 * *y as f64).sum();
                    let (e_ours, e_ggml) =
                        ((ours as f64 - exact).abs(), (theirs as f64 - exact).abs());
                    assert!(
                        e_ours <= e_ggml + 1e-5 * magnitude,
                        "{ty} row {r} act {j}: ours {ours} off by {e_ours:e}, ggml {theirs} by {e_ggml:e}"
                    );
                }
                let tol = tol_rel * magnitude + 1e-6;
                assert!(
                    ((ours - theirs) as f64).abs() <= tol,
                    "{ty} row {r} act {j}: ours {ours}, ggml {theirs} (tol {tol:e})"
                );
            }
        }
        seen.push(ty);
    }
    assert_eq!(off, raw.len(), "trailing bytes");
    for ty in [
        GgmlType::F32,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
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
    ] {
        assert!(seen.contains(&ty), "no ggml dot golden for {ty}");
    }
}
