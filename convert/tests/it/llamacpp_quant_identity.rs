//! Byte identity with llama-quantize for the 2- and 3-bit K types, the
//! `_S`/`_L` mixes, IQ4_NL/IQ4_XS, the IQ3 files and the ternary TQ1_0/TQ2_0,
//! with and without an importance matrix: scripts/fixtures/make_quant_manifests.py
//! recorded what llama-quantize (llama-cpp-python 0.3.36's llama.cpp) makes
//! of each fixture's F32 GGUF, with and without `--pure`, after proving that
//! F32 file equal to convert_hf_to_gguf.py's. Our one-pass `convert` from
//! the checkpoint must give the same tensors and metadata.

use crate::common::*;
use convert::FileType;

#[test]
fn every_low_bit_manifest_matches_our_conversion() {
    let ms: Vec<_> = manifests_in(&root().join("tests/fixtures/llamacpp-quant"))
        .into_iter()
        .filter(|(_, ty, _)| !ty.ends_with(".imatrix"))
        .collect();
    assert_eq!(
        ms.len(),
        52,
        "2 fixtures x 13 types x {{mix, pure}}: run scripts/fixtures/make_quant_manifests.py"
    );
    assert_conversions_match(&ms);
}

/// With an importance matrix (each fixture's, made by llama-imatrix):
/// `convert --imatrix` gives the tensors and metadata `llama-quantize
/// --imatrix` gave, for every type we write, Q2_K_S among them (which
/// needs one), the quantize.imatrix.* keys included.
#[test]
fn every_type_with_an_imatrix_matches_llama_quantize() {
    let ms: Vec<_> = manifests_in(&root().join("tests/fixtures/llamacpp-quant"))
        .into_iter()
        .filter(|(_, ty, _)| ty.ends_with(".imatrix"))
        .collect();
    assert_eq!(
        ms.len(),
        58,
        "2 fixtures x 29 types: run scripts/fixtures/make_quant_manifests.py"
    );
    assert_conversions_match(&ms);
}

/// The same through `quantize`: our F32 file of the fixture requantized with
/// the matrix equals llama-quantize's output from its F32 file (which ours
/// equals), for a K mix and an IQ4 type.
#[test]
fn requantizing_with_an_imatrix_matches_llama_quantize() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = "falcon-mamba-small-bf16";
    let f32 = tmp.path().join("f32.gguf");
    convert_to(&hf(fx), &f32, FileType::F32, false).unwrap();
    for ty in ["q3_k_m", "iq4_xs"] {
        let out = tmp.path().join(format!("{ty}.gguf"));
        let opts = convert::QuantizeOptions {
            file_type: FileType::parse(ty).unwrap(),
            pure: false,
            allow_requantize: false,
            force: false,
            threads: Some(2),
            imatrix: Some(fixture_imatrix(fx)),
        };
        let cancel = std::sync::atomic::AtomicBool::new(false);
        convert::quantize(&f32, &out, &opts, &cancel, &mut |_| {}).unwrap();
        let path = root().join(format!(
            "tests/fixtures/llamacpp-quant/{fx}.{ty}.imatrix.json"
        ));
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let f = gguf::GgufFile::open(&out).unwrap();
        let d = diff_manifest(&f, &manifest, false);
        // Requantizing copies the F32 file's metadata, which carries one key
        // beyond llama.cpp's (tokenizer.huggingface.json); the manifest
        // lists llama.cpp's keys, each of which must match.
        assert!(d.is_empty(), "{ty}:\n  {}", d.join("\n  "));
    }
}

/// An imatrix whose entry does not fit its tensor is refused, naming both;
/// a type that needs one is refused when the matrix lacks the tensor.
#[test]
fn a_mismatched_imatrix_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    let m = fixture_imatrix("mamba-tiny-tied");
    // An entry cut short: llama-quantize aborts on it, so do we.
    let mut short = m.clone();
    let e = short.matrix.entries.get_mut("blk.1.ssm_x.weight").unwrap();
    e.in_sum2.truncate(e.in_sum2.len() - 32);
    let msg = convert_with(
        &hf("mamba-tiny-tied"),
        &out,
        FileType::Q4_K_M,
        false,
        Some(short),
    )
    .expect_err("an entry of the wrong size")
    .to_string();
    assert!(
        msg.contains("blk.1.ssm_x.weight") && msg.contains("imatrix has 480 values"),
        "{msg}"
    );
    assert!(!out.exists());
    // Without the in_proj entries, Q2_K_S stops at that tensor.
    let mut partial = m;
    partial
        .matrix
        .entries
        .retain(|k, _| !k.ends_with("ssm_in.weight"));
    let msg = convert_with(
        &hf("mamba-tiny-tied"),
        &out,
        FileType::Q2_K_S,
        false,
        Some(partial),
    )
    .expect_err("no entry for ssm_in")
    .to_string();
    assert!(
        msg.contains("importance matrix") && msg.contains("ssm_in.weight"),
        "{msg}"
    );
    assert!(!out.exists());
}

/// llama-quantize refuses Q2_K_S without an importance matrix (its Q2_K
/// tensors other than the embedding and head need one); so do we, naming
/// the tensor, and nothing is written.
#[test]
fn q2_k_s_without_an_imatrix_is_refused_like_llama_quantize() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    let e = convert_to(
        &hf("falcon-mamba-small-bf16"),
        &out,
        FileType::Q2_K_S,
        false,
    )
    .expect_err("Q2_K_S needs an imatrix");
    let msg = e.to_string();
    assert!(msg.contains("importance matrix"), "{msg}");
    assert!(msg.contains("blk.0.ssm_in.weight"), "{msg}");
    assert!(!out.exists());
    // With --pure every matrix is Q2_K, the head included; still refused.
    assert!(convert_to(&hf("falcon-mamba-small-bf16"), &out, FileType::Q2_K_S, true).is_err());
    // IQ3_XXS and the IQ2 and IQ1 files likewise (their tensors need one).
    for (ft, ty) in [
        (FileType::IQ3_XXS, "IQ3_XXS"),
        (FileType::IQ2_XXS, "IQ2_XXS"),
        (FileType::IQ2_XS, "IQ2_XS"),
        (FileType::IQ2_S, "IQ2_XS"),
        (FileType::IQ2_M, "IQ2_S"),
        (FileType::IQ1_S, "IQ1_S"),
        (FileType::IQ1_M, "IQ1_M"),
    ] {
        let msg = convert_to(&hf("mamba-tiny-tied"), &out, ft, false)
            .expect_err("needs an imatrix")
            .to_string();
        assert!(
            msg.contains("importance matrix") && msg.contains(ty),
            "{msg}"
        );
        assert!(!out.exists());
    }
}
