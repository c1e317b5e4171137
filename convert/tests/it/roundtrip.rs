//! Every tensor of every output type dequantizes back to the checkpoint's
//! values within the type's error bound; F32 output is exact; ssm_a is
//! -exp(A_log); conv1d is squeezed; the head is Q6_K (or its fallback).

use crate::common::*;
use convert::checkpoint::{to_f32, Checkpoint};
use convert::mix::ALL_TYPES;
use convert::FileType;
use gguf::{GgmlType, GgufFile};

/// Max |error| allowed, as a fraction of the row's largest |value|.
fn bound(t: GgmlType) -> f32 {
    match t {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => 1e-3,
        GgmlType::BF16 => 8e-3,
        GgmlType::Q8_0 => 0.01,
        GgmlType::Q6_K => 0.05,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 0.08,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => 0.16,
        GgmlType::IQ4_NL | GgmlType::IQ4_XS => 0.2,
        GgmlType::Q3_K => 0.35,
        // Grid points of 4 values: each group snaps to its nearest point.
        GgmlType::IQ3_S => 0.5,
        GgmlType::Q2_K => 0.6,
        // Ternary: every value becomes -d, 0 or d (d the block's largest).
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => 0.51,
        other => panic!("unexpected type {other:?}"),
    }
}

fn hf_name(gguf: &str) -> String {
    let map = [
        ("attn_norm.weight", "norm.weight"),
        ("ssm_in.weight", "mixer.in_proj.weight"),
        ("ssm_conv1d.weight", "mixer.conv1d.weight"),
        ("ssm_conv1d.bias", "mixer.conv1d.bias"),
        ("ssm_x.weight", "mixer.x_proj.weight"),
        ("ssm_dt.weight", "mixer.dt_proj.weight"),
        ("ssm_dt.bias", "mixer.dt_proj.bias"),
        ("ssm_a", "mixer.A_log"),
        ("ssm_d", "mixer.D"),
        ("ssm_out.weight", "mixer.out_proj.weight"),
    ];
    match gguf {
        "token_embd.weight" => "backbone.embeddings.weight".into(),
        "output_norm.weight" => "backbone.norm_f.weight".into(),
        "output.weight" => "lm_head.weight".into(),
        _ => {
            let rest = gguf.strip_prefix("blk.").unwrap();
            let (i, t) = rest.split_once('.').unwrap();
            let hf = map.iter().find(|(g, _)| *g == t).unwrap().1;
            format!("backbone.layers.{i}.{hf}")
        }
    }
}

fn check_fixture(fixture: &str) {
    let dir = hf(fixture);
    let ck = Checkpoint::open(&dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The types that need an importance matrix (refused without one) are
    // covered by the llama-quantize identity and gguf-py tests.
    for &ft in ALL_TYPES.iter().filter(|t| !needs_imatrix(**t)) {
        let out = tmp.path().join(format!("{}.gguf", ft.name()));
        let s = convert_to(&dir, &out, ft, false).unwrap();
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(s.tensors, f.tensors().len());
        assert_eq!(f.get_u32("general.file_type").unwrap(), ft.ftype_id());
        for t in f.tensors() {
            let e = ck
                .get(&hf_name(&t.name))
                .unwrap_or_else(|| panic!("{}", t.name));
            let mut src = vec![0f32; e.n_elements()];
            to_f32(e.dtype, ck.bytes(e), &mut src);
            if t.name.ends_with("ssm_a") {
                for v in &mut src {
                    *v = -v.exp();
                }
            }
            assert_eq!(t.n_elements as usize, src.len(), "{}", t.name);
            let n = t.row_len() as usize;
            let data = f.tensor_data(t);
            let rb = t.ty.row_bytes(n).unwrap();
            let mut got = vec![0f32; n];
            let b = bound(t.ty);
            for (r, (row, want)) in data.chunks_exact(rb).zip(src.chunks_exact(n)).enumerate() {
                quant::dequantize_row(t.ty, row, &mut got).unwrap();
                let amax = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (g, w) in got.iter().zip(want) {
                    // ssm_a: llama.cpp computes -exp in the source's precision
                    // (F16 stays F16), then stores F32.
                    let tol = if t.name.ends_with("ssm_a") {
                        let rel = if e.dtype == convert::checkpoint::SrcDtype::F16 {
                            1e-3
                        } else {
                            1e-6
                        };
                        w.abs() * rel
                    } else {
                        b * amax
                    };
                    assert!(
                        (g - w).abs() <= tol,
                        "{fixture} {} {}: row {r}: {g} vs {w} (bound {tol})",
                        ft.name(),
                        t.name
                    );
                }
            }
        }
        // The head: Q6_K for the 4/5-bit types when rows fill 256-blocks.
        if let Some(h) = f.tensor("output.weight") {
            let want = match ft {
                FileType::F32 => GgmlType::F32,
                FileType::F16 => GgmlType::F16,
                FileType::BF16 => GgmlType::BF16,
                FileType::Q8_0 => GgmlType::Q8_0,
                _ if h.row_len() % 256 == 0 => GgmlType::Q6_K,
                _ => GgmlType::Q8_0,
            };
            assert_eq!(h.ty, want, "{fixture} {}", ft.name());
        }
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn falcon_small_bf16_all_types() {
    check_fixture("falcon-mamba-small-bf16");
}

#[test]
fn mamba_tied_f16_all_types() {
    check_fixture("mamba-tiny-tied");
    // Tied: no output.weight; the embeddings take the head's type.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q4.gguf");
    convert_to(&hf("mamba-tiny-tied"), &out, FileType::Q4_0, false).unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert!(f.tensor("output.weight").is_none());
    assert_eq!(f.tensor("token_embd.weight").unwrap().ty, GgmlType::Q6_K);
    assert!(!f.get_bool("mamba.ssm.dt_b_c_rms").unwrap());
}

#[test]
fn falcon_tiny_f32_is_exact_and_has_our_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f32.gguf");
    convert_to(&hf("falcon-mamba-tiny"), &out, FileType::F32, false).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let ck = Checkpoint::open(&hf("falcon-mamba-tiny")).unwrap();
    let e = ck.get("backbone.embeddings.weight").unwrap();
    let t = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        f.tensor_data(t),
        ck.bytes(e),
        "F32 embeddings copied bit for bit"
    );
    assert_eq!(t.dims, vec![64, 65024]);
    assert_eq!(
        f.tensor("blk.0.ssm_conv1d.weight").unwrap().dims,
        vec![4, 128]
    );
    assert!(f.get_bool("mamba.ssm.dt_b_c_rms").unwrap());
    assert_eq!(f.get_f32("mamba.ssm.dt_b_c_rms_eps").unwrap(), 1e-6);
    assert_eq!(f.get_u32("mamba.context_length").unwrap(), 8192);
    let eos = f
        .get_array("tokenizer.ggml.eos_token_ids")
        .unwrap()
        .to_u32_vec()
        .unwrap();
    assert_eq!(eos, vec![11, 10]);
    let hfjson = f.get_str("tokenizer.huggingface.json").unwrap();
    let orig = std::fs::read_to_string(hf("falcon-mamba-tiny").join("tokenizer.json")).unwrap();
    assert_eq!(hfjson, orig);
    assert!(f
        .get_str("tokenizer.chat_template")
        .unwrap()
        .contains("<|im_start|>"));
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "falcon");
}
