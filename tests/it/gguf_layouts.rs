//! GGUF files in the layouts older converters wrote for Mamba (no
//! `mamba.ssm.dt_b_c_rms` key, 3-D `ssm_conv1d`, a tied head stored anyway,
//! F16 `ssm_conv1d`, alignment 64), written by the `gguf` Python package
//! straight from the Hugging Face fixtures
//! (scripts/fixtures/make_gguf_layouts.py): each must load and compute what
//! transformers computes on the same weights.
//!
//! The .gguf files are not committed (16 MB; issue 24): layouts.json holds,
//! for each, what the script read back from the file it wrote (size, sha256,
//! version, alignment, every metadata key and value in file order, every
//! tensor's name, dims, type and sha256 in file order). [`layout_file`]
//! rebuilds the file from that record, taking each tensor's bytes from our
//! converter's F32/F16/BF16 output of the source fixture (or its F16
//! rounding of an F32 tensor) by sha256, and requires the whole file's
//! recorded sha256: the test reads exactly the bytes the `gguf` package
//! wrote.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::runtime_common::*;
use gguf::{GgmlType, GgufFile, TensorSpec, Value};
use mamba_gguf::Model;
use sha2::{Digest, Sha256};

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A record's scalar value (`{"uint32": 64}`) as a GGUF value.
fn scalar(key: &str, v: &serde_json::Value) -> Value {
    let (ty, x) = v.as_object().and_then(|o| o.iter().next()).expect(key);
    match ty.as_str() {
        "string" => Value::String(x.as_str().expect(key).to_string()),
        "bool" => Value::Bool(x.as_bool().expect(key)),
        "uint32" => Value::U32(x.as_u64().expect(key) as u32),
        "int32" => Value::I32(x.as_i64().expect(key) as i32),
        "uint64" => Value::U64(x.as_u64().expect(key)),
        // gguf-py read the f32 back and widened it to f64: exact.
        "float32" => Value::F32(x.as_f64().expect(key) as f32),
        other => panic!("{key}: type {other} not expected in a layout file"),
    }
}

/// Every tensor of our conversions of `src` to F32, F16 and BF16, and the
/// F16 rounding of each F32 one, by the sha256 of its bytes.
fn tensor_pool(src: &str) -> HashMap<String, Vec<u8>> {
    let mut pool = HashMap::new();
    for ft in [
        convert::FileType::F32,
        convert::FileType::F16,
        convert::FileType::BF16,
    ] {
        let f = GgufFile::open(ours_gguf(src, ft)).expect("our conversion");
        for t in f.tensors() {
            let b = f.tensor_data(t).to_vec();
            if t.ty == GgmlType::F32 {
                let h: Vec<u8> = b
                    .chunks_exact(4)
                    .flat_map(|c| {
                        half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .to_le_bytes()
                    })
                    .collect();
                pool.insert(sha256_hex(&h), h);
            }
            pool.insert(sha256_hex(&b), b);
        }
    }
    pool
}

fn rebuild(src: &str, rec: &serde_json::Value, out: &Path) {
    assert_eq!(rec["version"].as_u64(), Some(3));
    let pool = tensor_pool(src);
    let meta: Vec<(String, Value)> = rec["metadata"]
        .as_array()
        .expect("metadata")
        .iter()
        .map(|kv| {
            let k = kv[0].as_str().expect("key");
            (k.to_string(), scalar(k, &kv[1]))
        })
        .collect();
    let mut tensors = Vec::new();
    for t in rec["tensors"].as_array().expect("tensors") {
        let name = t["name"].as_str().expect("name");
        let sha = t["sha256"].as_str().expect("sha256");
        let ty = GgmlType::from_name(t["type"].as_str().expect("type")).expect("ggml type");
        let dims: Vec<u64> = t["dims"]
            .as_array()
            .expect("dims")
            .iter()
            .map(|d| d.as_u64().expect("dim"))
            .collect();
        let bytes = pool
            .get(sha)
            .unwrap_or_else(|| panic!("{name}: no tensor of ours has sha256 {sha}"));
        tensors.push((TensorSpec::new(name, dims, ty), bytes.as_slice()));
    }
    gguf::write_file(out, &meta, &tensors).expect("write the layout file");
}

/// The layout file `name` (see the module doc), rebuilt once per process.
fn layout_file(name: &str, spec: &serde_json::Value) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = DIR
        .get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
        .join(format!("{name}.gguf"));
    if !out.exists() {
        let rec = &spec["file"];
        rebuild(spec["src"].as_str().expect("src"), rec, &out);
        let bytes = std::fs::read(&out).expect("read back");
        assert_eq!(
            (bytes.len() as u64, sha256_hex(&bytes)),
            (
                rec["size"].as_u64().expect("size"),
                rec["sha256"].as_str().expect("sha256").to_string()
            ),
            "{name}: the rebuilt file is not the one the gguf package wrote"
        );
    }
    out
}

/// fp32 in another summation order (as runtime_reference's F32 bound).
const F32_BOUND: f64 = 1e-4;
/// A Falcon Mamba file without `mamba.ssm.dt_b_c_rms_eps` normalises dt/B/C
/// with layer_norm_rms_epsilon (1e-5, as llama.cpp does) instead of the
/// checkpoint's mixer_rms_eps (1e-6): runtime_reference measured the gap at
/// 5.2e-5 against the true reference.
const EPS_GAP_BOUND: f64 = 2e-4;

#[test]
fn every_older_layout_matches_transformers() {
    let dir = root().join("tests/fixtures/gguf-layouts");
    let layouts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("layouts.json")).unwrap()).unwrap();
    let layouts = layouts.as_object().unwrap();
    assert_eq!(
        layouts.len(),
        6,
        "run scripts/fixtures/make_gguf_layouts.py"
    );
    for (name, spec) in layouts {
        let src = spec["src"].as_str().unwrap();
        let r = reference(src);
        let m = Model::load(layout_file(name, spec)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let falcon = spec["falcon_key"].as_bool() == Some(true);
        assert_eq!(m.hp.dt_b_c_rms, falcon, "{name}");
        assert_eq!(
            m.hp.tied,
            !spec["write_output"].as_bool().unwrap_or(false) && src.starts_with("mamba"),
            "{name}"
        );
        let ours = all_logits(&m, &r.prompt_ids, 64);
        let rel = rel_max_diff(&ours, &r.logits, r.std);
        let bound = if falcon { EPS_GAP_BOUND } else { F32_BOUND };
        eprintln!("{name} ({src}): rel {rel:.3e} (bound {bound:e})");
        assert!(rel <= bound, "{name}: rel {rel:e} > {bound:e}");
        if falcon {
            // Against the reference taken with eps 1e-5: fp32 reordering only.
            let (first, eps) = r.eps_logits.as_ref().expect("eps reference");
            let rel = rel_max_diff(&ours[first * r.vocab..], eps, r.std);
            eprintln!("{name} vs eps=1e-5 reference: rel {rel:.3e}");
            assert!(rel <= F32_BOUND, "{name}: eps-matched rel {rel:e}");
        }
    }
}
