//! Byte identity with llama.cpp: for every fixture and type that
//! scripts/fixtures/make_llamacpp_refs.py recorded (convert_hf_to_gguf.py +
//! llama-quantize at commit 0c1e570), our `convert` writes the same tensors
//! (name, dims, type, sha256 of the bytes) and the same values for every
//! metadata key llama.cpp writes (except the few listed in
//! common::KEYS_WE_DIFFER_ON).

use crate::common::*;

#[test]
fn every_manifest_matches_our_conversion() {
    let ms = manifests_in(&root().join("tests/fixtures/llamacpp"));
    assert_eq!(
        ms.len(),
        57,
        "3 fixtures x (3 float + 8 quantized x {{mix, pure}}): run scripts/fixtures/make_llamacpp_refs.py"
    );
    assert_conversions_match(&ms);
}
