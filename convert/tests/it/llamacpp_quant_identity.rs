//! Byte identity with llama-quantize for the 2- and 3-bit K types, the
//! `_S`/`_L` mixes, IQ4_NL/IQ4_XS and the ternary TQ1_0/TQ2_0: scripts/fixtures/make_quant_manifests.py
//! recorded what llama-quantize (llama-cpp-python 0.3.36's llama.cpp) makes
//! of each fixture's F32 GGUF, with and without `--pure`, after proving that
//! F32 file equal to convert_hf_to_gguf.py's. Our one-pass `convert` from
//! the checkpoint must give the same tensors and metadata.

use crate::common::*;
use convert::FileType;

#[test]
fn every_low_bit_manifest_matches_our_conversion() {
    let ms = manifests_in(&root().join("tests/fixtures/llamacpp-quant"));
    assert_eq!(
        ms.len(),
        40,
        "2 fixtures x 10 types x {{mix, pure}}: run scripts/fixtures/make_quant_manifests.py"
    );
    assert_conversions_match(&ms);
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
}
