//! Byte identity with llama.cpp: for every fixture and type that
//! scripts/fixtures/make_llamacpp_refs.py recorded (convert_hf_to_gguf.py +
//! llama-quantize at commit 0c1e570), our `convert` writes the same tensors
//! (name, dims, type, sha256 of the bytes) and the same values for every
//! metadata key llama.cpp writes (except the few listed in
//! common::KEYS_WE_DIFFER_ON).

use crate::common::*;
use gguf::GgufFile;

fn manifests() -> Vec<(String, String, std::path::PathBuf)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root().join("tests/fixtures/llamacpp")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        // files.json describes llama.cpp's full GGUFs, not a manifest
        // (tests/support/llamacpp_gguf.rs).
        if name == "files.json" {
            continue;
        }
        if let Some(stem) = name.strip_suffix(".json") {
            let (fixture, ty) = stem.split_once('.').unwrap();
            out.push((fixture.to_string(), ty.to_string(), p));
        }
    }
    out.sort();
    out
}

#[test]
fn every_manifest_matches_our_conversion() {
    let ms = manifests();
    assert_eq!(
        ms.len(),
        57,
        "3 fixtures x (3 float + 8 quantized x {{mix, pure}}): run scripts/fixtures/make_llamacpp_refs.py"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (fixture, ty, path) in &ms {
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let (ft, pure) = type_from_manifest_name(ty);
        let out = tmp.path().join(format!("{fixture}.{ty}.gguf"));
        convert_to(&hf(fixture), &out, ft, pure).unwrap_or_else(|e| panic!("{fixture} {ty}: {e}"));
        let f = GgufFile::open(&out).unwrap();
        // mamba-tiny-tied is the F16 checkpoint.
        let d = diff_manifest(&f, &manifest, fixture == "mamba-tiny-tied");
        if !d.is_empty() {
            failures.push(format!("{fixture} {ty}:\n  {}", d.join("\n  ")));
        }
        std::fs::remove_file(&out).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        ms.len(),
        failures.join("\n")
    );
}
